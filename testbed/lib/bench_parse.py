#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0
"""testbed/lib/bench_parse.py: a benchmark cell's raw output (ab, wrk,
iperf3 or dnsperf) and counters -> one JSON line. Used by the guest suite
bench.sh; unit-tested in testbed/tests/test_bench_parse.py.

With a cell's arguments it prints the cell's JSON line. With --batch it
parses many cells in one run: each ARGS file holds one cell's arguments,
NUL-terminated; their JSON lines are appended to --jsonl, a line per cell
is printed for the log, and each cell's problems are appended to
--problems. bench.sh parses a mode's cells at once after they have run:
under TCG a Python start costs about a second, which per cell added
minutes to `make bench`.

A cell's "problems" are what makes its figures untrustworthy: the tool
failed, ran no request, or lost connections or requests. bench.sh fails
the run when any cell has one.
"""

import argparse
import json
import re
import sys

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def wrk_time_ms(text):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(f"wrk time {text!r}")
    return float(m.group(1)) * UNITS[m.group(2)]


def num(pattern, text, default=None, cast=float):
    m = re.search(pattern, text, re.M)
    return cast(m.group(1)) if m else default


def parse_ab(text):
    """ApacheBench: one request per connection; its times are whole
    connections (connect + request + response), in whole ms."""
    r = {
        "requests": num(r"^Complete requests:\s+(\d+)", text, 0, int),
        "rps": num(r"^Requests per second:\s+([0-9.]+)", text, 0.0),
        "errors": {
            "failed": num(r"^Failed requests:\s+(\d+)", text, 0, int),
            "non2xx": num(r"^Non-2xx responses:\s+(\d+)", text, 0, int),
        },
    }
    m = re.search(r"^\s+\(Connect: (\d+), Receive: (\d+), Length: (\d+), Exceptions: (\d+)\)", text, re.M)
    if m:
        for k, v in zip(("connect", "receive", "length", "exceptions"), m.groups()):
            r["errors"][k] = int(v)
    pct = {int(p): float(v) for p, v in re.findall(r"^\s+(\d+)%\s+(\d+)", text, re.M)}
    r["lat_p50_ms"] = pct.get(50)
    r["lat_p99_ms"] = pct.get(99)
    r["lat_max_ms"] = pct.get(100)
    m = re.search(r"^Connect:\s+(\d+)\s+(\d+)\s+([0-9.]+)\s+(\d+)\s+(\d+)", text, re.M)
    if m:
        r["connect_mean_ms"] = float(m.group(2))
        r["connect_max_ms"] = float(m.group(5))
    r["latency"] = "whole connection"
    return r


def parse_wrk(text):
    """wrk: keep-alive; its latency starts when a request is written."""
    r = {
        "requests": num(r"^\s+(\d+) requests in", text, 0, int),
        "rps": num(r"^Requests/sec:\s+([0-9.]+)", text, 0.0),
        "errors": {"connect": 0, "read": 0, "write": 0, "timeout": 0, "non2xx": 0},
    }
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        for k, v in zip(("connect", "read", "write", "timeout"), m.groups()):
            r["errors"][k] = int(v)
    r["errors"]["non2xx"] = num(r"Non-2xx or 3xx responses: (\d+)", text, 0, int)
    dist = dict(re.findall(r"^\s+(\d+)%\s+([0-9.]+(?:us|ms|s|m))$", text, re.M))
    r["lat_p50_ms"] = wrk_time_ms(dist["50"]) if "50" in dist else None
    r["lat_p99_ms"] = wrk_time_ms(dist["99"]) if "99" in dist else None
    m = re.search(r"^\s+Latency\s+\S+\s+\S+\s+(\S+)", text, re.M)
    r["lat_max_ms"] = wrk_time_ms(m.group(1)) if m else None
    r["latency"] = "from request write"
    return r


def parse_iperf(text):
    r = {"errors": {}}
    try:
        j = json.loads(text)
    except json.JSONDecodeError:
        r["errors"]["output"] = 1
        return r
    if j.get("error"):
        r["errors"]["iperf3"] = 1
        r["error_text"] = j["error"]
    end = j.get("end", {})
    recv = end.get("sum_received", {})
    r["gbps"] = recv.get("bits_per_second", 0.0) / 1e9
    r["bytes"] = recv.get("bytes", 0)
    r["retransmits"] = end.get("sum_sent", {}).get("retransmits")
    return r


def parse_dnsperf(text):
    """dnsperf: UDP request/response (DNS queries, a socket per client,
    each reused); its latency is per query, mean and max only."""
    sent = num(r"^\s+Queries sent:\s+(\d+)", text, 0, int)
    done = num(r"^\s+Queries completed:\s+(\d+)", text, 0, int)
    r = {
        "requests": done,
        "rps": num(r"^\s+Queries per second:\s+([0-9.]+)", text, 0.0),
        "errors": {"lost": num(r"^\s+Queries lost:\s+(\d+)", text, 0, int)},
    }
    if sent != done + r["errors"]["lost"]:
        r["errors"]["unaccounted"] = abs(sent - done - r["errors"]["lost"])
    m = re.search(r"^\s+Response codes:\s+(.*)$", text, re.M)
    if m:
        bad = sum(int(n) for code, n in re.findall(r"([A-Z]+) (\d+)", m.group(1)) if code != "NOERROR")
        r["errors"]["not_noerror"] = bad
    m = re.search(r"^\s+Average Latency \(s\):\s+([0-9.]+) \(min [0-9.]+, max ([0-9.]+)\)", text, re.M)
    if m:
        r["lat_mean_ms"] = float(m.group(1)) * 1e3
        r["lat_max_ms"] = float(m.group(2)) * 1e3
    r["lat_p50_ms"] = r["lat_p99_ms"] = None
    r["latency"] = "per query"
    return r


PARSERS = {"short": parse_ab, "ka": parse_wrk, "iperf": parse_iperf, "udp": parse_dnsperf}


def parse_ab_keepalive(text):
    """ab -k (the icount cells' keep-alive: a fixed number of requests)."""
    r = parse_ab(text)
    r["latency"] = "per request, keep-alive"
    return r


# the data path's samples: the session map attachment's counters, the tc
# programs' packets and bytes by reason, SNAT's and the fragments'
METRIC = re.compile(r"(ipvsbpf_(?:bpf|snat|frags)[a-z_]*)(\{[^}]*\})? ([0-9.e+]+)$")


def bpf_metrics(path):
    """The data path's samples from a scrape of the proxy's metrics page
    (a file; none outside ipvs-bpf mode): {"name{labels}": value}."""
    out = {}
    if not path:
        return out
    with open(path, errors="replace") as f:
        for line in f:
            m = METRIC.match(line.strip())
            if m:
                out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def counter_delta(b, a):
    return {k: a[k] - b.get(k, 0.0) for k in a if a[k] != b.get(k, 0.0)}


def cell(args, text):
    c = {}
    for kv in args.meta:
        k, _, v = kv.partition("=")
        c[k] = int(v) if v.isdigit() else v
    c["workload"] = args.workload
    c["rc"] = args.rc
    parse = PARSERS[args.workload]
    if args.workload == "ka" and re.search(r"^Complete requests:", text, re.M):
        parse = parse_ab_keepalive
    c.update(parse(text))
    c0, c1 = [list(map(int, s.split())) for s in args.cpu]
    c["cpu_busy_s"] = (c1[0] - c0[0]) / args.hz
    c["cpu_softirq_s"] = (c1[1] - c0[1]) / args.hz
    c["syn_retrans"] = int(args.syn_retrans[1]) - int(args.syn_retrans[0])
    if args.proxy_cpu:
        # of cpu_busy_s, the mode's proxy's own (with its children)
        c["proxy_cpu_s"] = (int(args.proxy_cpu[1]) - int(args.proxy_cpu[0])) / args.hz
    c["counters"] = counter_delta(*map(bpf_metrics, args.metrics))
    units = c.get("requests") or 0
    if units:
        c["cpu_us_per_req"] = c["cpu_busy_s"] * 1e6 / units
        c["softirq_us_per_req"] = c["cpu_softirq_s"] * 1e6 / units
    elif args.workload == "iperf" and c.get("bytes"):
        c["cpu_s_per_gb"] = c["cpu_busy_s"] * 1e9 / c["bytes"]
    if args.instructions:
        # busy ns under -icount shift 0 = instructions: the cell's window
        # less the same window sending base_units (the tool's least), per
        # extra unit
        window, base = args.instructions
        c["instr_window"], c["instr_baseline"] = window, base
        c["instr_base_units"] = args.base_units
        c["sessions_before"], c["sessions_left"] = args.before, args.left
        if units and units > args.base_units:
            c["instr_per_req"] = (window - base) / (units - args.base_units)
        elif args.workload == "iperf" and c.get("bytes", 0) > args.base_units:
            c["instr_per_gb"] = (window - base) * 1e9 / (c["bytes"] - args.base_units)

    problems = []
    if args.rc != 0:
        problems.append(f"the tool exited {args.rc}")
    if args.workload == "iperf":
        if not c.get("gbps"):
            problems.append("no data moved")
    elif not units:
        problems.append("no request completed")
    lost = {k: v for k, v in c["errors"].items() if v}
    if lost:
        problems.append("lost: " + ", ".join(f"{k} {v}" for k, v in sorted(lost.items())))
    if args.instructions and args.left > max(1, units // 100):
        # a few stragglers (an entry kube-proxy's one-day established
        # timeout keeps) cost nothing worth counting; more mean the
        # window missed a real part of the connections' expiry
        problems.append(f"{args.left} sessions outlived the window: their expiry is not counted")
    c["problems"] = problems

    if args.workload == "iperf":
        c["summary"] = f"{c.get('gbps', 0):.2f} Gbit/s, retransmits {c.get('retransmits')}"
    elif args.workload == "udp":
        c["summary"] = (f"{c['rps']:.0f} queries/s, mean {c.get('lat_mean_ms', 0):.2f} ms, "
                        f"max {c.get('lat_max_ms', 0):.2f} ms ({c['latency']}), "
                        f"cpu {c.get('cpu_us_per_req', 0):.0f} us/query")
    else:
        c["summary"] = (f"{c['rps']:.0f} req/s, p50 {c['lat_p50_ms']} ms, p99 {c['lat_p99_ms']} ms "
                        f"({c['latency']}), cpu {c.get('cpu_us_per_req', 0):.0f} us/req")
    if "instr_per_req" in c:
        c["summary"] += f", {c['instr_per_req'] / 1e3:.0f}k instructions/req"
    elif "instr_per_gb" in c:
        c["summary"] += f", {c['instr_per_gb'] / 1e9:.2f}G instructions/GB"
    if args.instructions and (args.before or args.left):
        c["summary"] += f", sessions {args.before} before / {args.left} after the window"
    if c.get("proxy_cpu_s"):
        c["summary"] += f" (proxy {c['proxy_cpu_s']:.2f} s)"
    c["summary"] += f", SYN retransmissions {c['syn_retrans']}"
    return c


def cell_parser():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workload", choices=sorted(PARSERS), required=True)
    ap.add_argument("--output", required=True)
    ap.add_argument("--rc", type=int, required=True)
    ap.add_argument("--meta", nargs="*", default=[])
    ap.add_argument("--cpu", nargs=2, required=True, metavar=("BEFORE", "AFTER"),
                    help='"busy softirq" jiffies before and after')
    ap.add_argument("--hz", type=int, default=100)
    ap.add_argument("--syn-retrans", nargs=2, default=["0", "0"])
    ap.add_argument("--proxy-cpu", nargs=2, metavar=("BEFORE", "AFTER"),
                    help="the proxy's CPU ticks (with its waited-for children) before and after")
    ap.add_argument("--metrics", nargs=2, default=["", ""], metavar=("BEFORE", "AFTER"),
                    help="the proxy's metrics pages before and after (files; ipvs-bpf mode)")
    ap.add_argument("--instructions", nargs=2, type=int, metavar=("WINDOW", "BASELINE"),
                    help="busy guest ns under -icount (instructions) of the cell's window and "
                         "of the same window sending only --base-units")
    ap.add_argument("--left", type=int, default=0,
                    help="sessions toward the target left on the node after the window")
    ap.add_argument("--base-units", type=int, default=0,
                    help="requests (bytes for iperf3) the BASELINE window sent")
    ap.add_argument("--before", type=int, default=0,
                    help="sessions toward the target on the node when the window opened")
    return ap


def parse_cell(argv):
    args = cell_parser().parse_args(argv)
    with open(args.output, errors="replace") as f:
        text = f.read()
    return cell(args, text)


def label(argv):
    """ "mode path workload (round N)" from a cell's arguments, for a cell
    that did not parse."""
    meta = dict(a.partition("=")[::2] for a in argv if "=" in a and not a.startswith("-"))
    wl = argv[argv.index("--workload") + 1] if "--workload" in argv[:-1] else "?"
    return f"{meta.get('mode', '?')} {meta.get('path', '?')} {wl} (round {meta.get('round', '?')})"


def batch(argv):
    ap = argparse.ArgumentParser(description="many cells, one run")
    ap.add_argument("--jsonl", required=True, help="append each cell's JSON line here")
    ap.add_argument("--problems", required=True, help="append each cell's problems here")
    ap.add_argument("args", nargs="*", help="files of one cell's arguments, NUL-terminated")
    opts = ap.parse_args(argv)
    with open(opts.jsonl, "a") as out, open(opts.problems, "a") as bad:
        for path in opts.args:
            cell_argv = []
            try:
                with open(path, "rb") as f:
                    cell_argv = [a.decode(errors="replace") for a in f.read().split(b"\0")[:-1]]
                c = parse_cell(cell_argv)
                name = f"{c.get('mode')} {c.get('path')} {c.get('workload')} (round {c.get('round')})"
            except (Exception, SystemExit) as e:  # noqa: B902
                # whatever one cell's files hold (argparse exits on bad
                # arguments) is that cell's problem: the others still count
                what = f"{label(cell_argv)}: unparsable ({type(e).__name__}: {e})"
                print("      PROBLEM: " + what)
                bad.write(what + "\n")
                continue
            out.write(json.dumps(c, sort_keys=True) + "\n")
            print("      %-9s %-9s %-5s %s" % (c.get("mode"), c.get("path"), c.get("workload"),
                                            c["summary"]))
            for p in c["problems"]:
                print("      PROBLEM: " + p)
            if c["problems"]:
                bad.write(f"{name}: " + "; ".join(c["problems"]) + "\n")
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--batch"]:
        return batch(argv[1:])
    print(json.dumps(parse_cell(argv), sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
