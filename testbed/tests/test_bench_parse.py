# SPDX-License-Identifier: GPL-2.0
"""Unit tests for the benchmark's cell parser (testbed/lib/bench_parse.py)
and report (testbed/bench-report), on real ab, wrk and iperf3 output."""

import importlib.machinery
import importlib.util
import json
import os
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
TESTBED = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(TESTBED, "lib"))
import bench_parse  # noqa: E402


def load_report():
    path = os.path.join(TESTBED, "bench-report")
    loader = importlib.machinery.SourceFileLoader("bench_report", path)
    spec = importlib.util.spec_from_loader("bench_report", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def data(name):
    return os.path.join(HERE, "data", name)


def parse(workload, path, rc=0, **kw):
    argv = ["--workload", workload, "--output", path, "--rc", str(rc),
            "--meta", "round=1", "mode=ipvs-bpf", "path=nodeport",
            "--cpu", "1000 100", "1300 160", "--hz", "100"]
    if "syn" in kw:
        argv += ["--syn-retrans", "5", str(5 + kw["syn"])]
    if "proxy" in kw:
        argv += ["--proxy-cpu", "400", str(400 + kw["proxy"])]
    if "instructions" in kw:
        argv += ["--instructions", *map(str, kw["instructions"]), "--left", str(kw.get("left", 0)),
                 "--before", str(kw.get("before", 0)), "--base-units", str(kw.get("base_units", 0))]
    # main() prints the cell: capture it
    out = tempfile.TemporaryFile(mode="w+")
    old = sys.stdout
    sys.stdout = out
    try:
        bench_parse.main(argv)
    finally:
        sys.stdout = old
    out.seek(0)
    return json.loads(out.read())


class ParseTest(unittest.TestCase):
    def test_ab_whole_connection_figures(self):
        c = parse("short", data("bench-ab.txt"), syn=2)
        self.assertEqual(c["requests"], 479)
        self.assertAlmostEqual(c["rps"], 475.88)
        self.assertEqual((c["lat_p50_ms"], c["lat_p99_ms"], c["lat_max_ms"]), (2.0, 20.0, 79.0))
        self.assertEqual(c["latency"], "whole connection")
        self.assertEqual(c["connect_max_ms"], 5.0)
        self.assertEqual(c["syn_retrans"], 2)
        self.assertAlmostEqual(c["cpu_busy_s"], 3.0)
        self.assertAlmostEqual(c["cpu_softirq_s"], 0.6)
        self.assertAlmostEqual(c["cpu_us_per_req"], 3.0e6 / 479)
        self.assertEqual(c["problems"], [])
        self.assertEqual((c["round"], c["mode"], c["path"]), (1, "ipvs-bpf", "nodeport"))

    def test_proxy_cpu_is_its_share_of_the_guest(self):
        c = parse("short", data("bench-ab.txt"), proxy=45)
        self.assertAlmostEqual(c["proxy_cpu_s"], 0.45)
        self.assertIn("(proxy 0.45 s)", c["summary"])
        self.assertNotIn("proxy_cpu_s", parse("short", data("bench-ab.txt")))

    def test_wrk_units_and_no_errors(self):
        c = parse("ka", data("bench-wrk.txt"))
        self.assertEqual(c["requests"], 306)
        self.assertAlmostEqual(c["lat_p50_ms"], 4.68)
        self.assertAlmostEqual(c["lat_p99_ms"], 265.23)
        self.assertAlmostEqual(c["lat_max_ms"], 279.68)
        self.assertEqual(c["problems"], [])

    def test_wrk_socket_errors_are_a_problem(self):
        with tempfile.NamedTemporaryFile("w", suffix=".txt") as f:
            text = open(data("bench-wrk.txt")).read().replace(
                "Requests/sec:", "  Socket errors: connect 0, read 3, write 0, timeout 2\n"
                "  Non-2xx or 3xx responses: 4\nRequests/sec:")
            f.write(text)
            f.flush()
            c = parse("ka", f.name)
        self.assertEqual(c["errors"], {"connect": 0, "read": 3, "write": 0, "timeout": 2,
                                       "non2xx": 4})
        self.assertEqual(c["problems"], ["lost: non2xx 4, read 3, timeout 2"])

    def test_ab_failures_and_exit_status_are_problems(self):
        with tempfile.NamedTemporaryFile("w", suffix=".txt") as f:
            f.write(open(data("bench-ab.txt")).read().replace(
                "Failed requests:        0", "Failed requests:        7\n"
                "   (Connect: 0, Receive: 7, Length: 0, Exceptions: 0)"))
            f.flush()
            c = parse("short", f.name, rc=1)
        self.assertIn("the tool exited 1", c["problems"])
        self.assertIn("lost: failed 7, receive 7", c["problems"])

    def test_iperf3(self):
        with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
            json.dump({"end": {"sum_received": {"bits_per_second": 1.5e9, "bytes": 1125000000},
                               "sum_sent": {"retransmits": 12}}}, f)
            f.flush()
            c = parse("iperf", f.name)
        self.assertAlmostEqual(c["gbps"], 1.5)
        self.assertEqual(c["retransmits"], 12)
        self.assertAlmostEqual(c["cpu_s_per_gb"], 3.0 * 1e9 / 1125000000)
        self.assertEqual(c["problems"], [])

    def test_dnsperf(self):
        c = parse("udp", data("bench-dnsperf.txt"))
        self.assertEqual(c["requests"], 3000)
        self.assertAlmostEqual(c["rps"], 14027.868699)
        self.assertAlmostEqual(c["lat_mean_ms"], 0.313)
        self.assertAlmostEqual(c["lat_max_ms"], 1.406)
        self.assertIsNone(c["lat_p99_ms"])
        self.assertEqual(c["latency"], "per query")
        self.assertAlmostEqual(c["cpu_us_per_req"], 3.0e6 / 3000)
        self.assertEqual(c["problems"], [])
        self.assertIn("queries/s", c["summary"])

    def test_dnsperf_lost_and_refused_queries_are_problems(self):
        with tempfile.NamedTemporaryFile("w", suffix=".txt") as f:
            f.write(open(data("bench-dnsperf.txt")).read()
                    .replace("Queries completed:    3000 (100.00%)", "Queries completed:    2990 (99.67%)")
                    .replace("Queries lost:         0 (0.00%)", "Queries lost:         10 (0.33%)")
                    .replace("NOERROR 3000 (100.00%)", "NOERROR 2985 (99.50%), REFUSED 5 (0.17%)"))
            f.flush()
            c = parse("udp", f.name)
        self.assertEqual(c["requests"], 2990)
        self.assertEqual(c["problems"], ["lost: lost 10, not_noerror 5"])

    def test_icount_instructions_less_the_baseline(self):
        c = parse("short", data("bench-ab.txt"), instructions=(479 * 250000 + 40000000, 40000000),
                  left=3)
        self.assertAlmostEqual(c["instr_per_req"], 250000)
        self.assertEqual((c["instr_window"], c["instr_baseline"], c["sessions_left"]),
                         (479 * 250000 + 40000000, 40000000, 3))
        self.assertIn("250k instructions/req", c["summary"])
        self.assertIn("sessions 0 before / 3 after the window", c["summary"])
        # a few stragglers are noted; more than 1 % of the connections is a problem
        self.assertEqual(c["problems"], [])
        many = parse("short", data("bench-ab.txt"), instructions=(1, 0), left=5)
        self.assertEqual(many["problems"],
                         ["5 sessions outlived the window: their expiry is not counted"])
        # ab -k stands in for wrk in an icount cell (a fixed request count)
        k = parse("ka", data("bench-ab.txt"), instructions=(479 * 1000, 0))
        self.assertEqual(k["requests"], 479)
        self.assertEqual(k["latency"], "per request, keep-alive")
        self.assertAlmostEqual(k["instr_per_req"], 1000)
        # no --instructions: no instruction figures
        self.assertNotIn("instr_per_req", parse("short", data("bench-ab.txt")))

    def test_icount_per_extra_unit(self):
        # the smaller window sent 8 requests: 479 - 8 extra ones
        argv_c = parse("short", data("bench-ab.txt"), instructions=(471 * 200000 + 9, 9),
                       base_units=8)
        self.assertAlmostEqual(argv_c["instr_per_req"], 200000)

    def test_icount_iperf_per_gb(self):
        with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
            json.dump({"end": {"sum_received": {"bits_per_second": 1e9, "bytes": 268435456}}}, f)
            f.flush()
            c = parse("iperf", f.name, instructions=(3 * 268435456 + 5, 5))
        self.assertAlmostEqual(c["instr_per_gb"], 3e9)

    def test_no_output_is_a_problem(self):
        with tempfile.NamedTemporaryFile("w", suffix=".txt") as f:
            f.write("connect: Connection refused\n")
            f.flush()
            c = parse("short", f.name, rc=1)
        self.assertIn("no request completed", c["problems"])


class BatchTest(unittest.TestCase):
    """--batch: a mode's cells parsed in one run, as bench.sh does."""

    def write_args(self, d, name, argv):
        path = os.path.join(d, name)
        with open(path, "wb") as f:
            f.write(b"".join(a.encode() + b"\0" for a in argv))
        return path

    def cell_argv(self, workload, output, rnd, extra=()):
        return ["--workload", workload, "--output", output, "--rc", "0",
                "--meta", f"round={rnd}", "mode=ipvs-bpf", "path=nodeport",
                "--cpu", "1000 100", "1300 160", "--hz", "100", *extra]

    def test_cells_lines_and_problems(self):
        with tempfile.TemporaryDirectory() as d:
            before = os.path.join(d, "m0")
            after = os.path.join(d, "m1")
            with open(before, "w") as f:
                f.write('# HELP ipvsbpf_bpf_sessions ...\nipvsbpf_bpf_sessions 3\n'
                        'ipvsbpf_bpf_packets_total{direction="egress",reason="xlated"} 10\n'
                        'ipvsbpf_sync_proxy_rules_total 7\n')
            with open(after, "w") as f:
                f.write('ipvsbpf_bpf_sessions 5\n'
                        'ipvsbpf_bpf_packets_total{direction="egress",reason="xlated"} 2.5e+01\n'
                        'ipvsbpf_sync_proxy_rules_total 9\n')
            args = [
                self.write_args(d, "1.args", self.cell_argv(
                    "short", data("bench-ab.txt"), 1, ["--metrics", before, after])),
                # a cell whose tool wrote nothing: a problem, and the
                # cells after it are still parsed
                self.write_args(d, "2.args", self.cell_argv("short", os.path.join(d, "none"), 2)),
                self.write_args(d, "3.args", self.cell_argv("ka", data("bench-wrk.txt"), 3)),
                # arguments argparse refuses (no --cpu figures)
                self.write_args(d, "4.args", [a for a in self.cell_argv("short", data("bench-ab.txt"), 4)
                                              if a not in ("--cpu", "1000 100", "1300 160")]),
                # no arguments file at all
                os.path.join(d, "5.args"),
            ]
            jsonl = os.path.join(d, "bench.jsonl")
            problems = os.path.join(d, "problems")
            with open(jsonl, "w") as f:
                f.write('{"earlier": 1}\n')
            out = tempfile.TemporaryFile(mode="w+")
            old = sys.stdout, sys.stderr
            # argparse's complaint about cell 4 goes to stderr
            sys.stdout, sys.stderr = out, tempfile.TemporaryFile(mode="w+")
            try:
                rc = bench_parse.main(["--batch", "--jsonl", jsonl, "--problems", problems, *args])
            finally:
                sys.stdout, sys.stderr = old
            out.seek(0)
            printed = out.read()
            with open(jsonl) as f:
                cells = [json.loads(line) for line in f]
            with open(problems) as f:
                bad = f.read().splitlines()
        self.assertEqual(rc, 0)
        self.assertEqual(cells[0], {"earlier": 1})
        self.assertEqual([(c["round"], c["workload"]) for c in cells[1:]], [(1, "short"), (3, "ka")])
        # the data path's samples that moved, as deltas
        self.assertEqual(cells[1]["counters"], {
            "ipvsbpf_bpf_sessions": 2.0,
            'ipvsbpf_bpf_packets_total{direction="egress",reason="xlated"}': 15.0})
        self.assertEqual(cells[2]["counters"], {})
        self.assertEqual(len(bad), 3, bad)
        self.assertTrue(bad[0].startswith("ipvs-bpf nodeport short (round 2): unparsable"), bad)
        self.assertTrue(bad[1].startswith("ipvs-bpf nodeport short (round 4): unparsable (SystemExit"),
                        bad)
        self.assertTrue(bad[2].startswith("? ? ? (round ?): unparsable (FileNotFoundError"), bad)
        self.assertIn("PROBLEM: ipvs-bpf nodeport short (round 2)", printed)
        self.assertIn("ipvs-bpf  nodeport  ka    ", printed)


class ReportTest(unittest.TestCase):
    def cells(self):
        out = []
        for r in (1, 2, 3):
            for mode, rps, p99, cpu in (("direct", 1200, 4, 900), ("ipvs", 700, 12, 1600),
                                        ("ipvs-bpf", 1100 + r, 6, 1000)):
                out.append({"round": r, "mode": mode, "path": "nodeport", "workload": "short",
                            "rps": rps, "lat_p99_ms": p99, "cpu_us_per_req": cpu,
                            "syn_retrans": 0, "problems": []})
        return out

    def test_medians_ratios_and_targets(self):
        rep = load_report()
        summary = rep.summarize(self.cells())
        s = summary[("nodeport", "short", "ipvs-bpf")]["rps"]
        self.assertEqual((s["median"], s["min"], s["max"], s["n"]), (1102, 1101, 1103, 3))
        self.assertEqual(rep.baseline_mode(["direct", "ipvs", "ipvs-bpf"]), "ipvs")
        self.assertEqual(rep.baseline_mode(["kube-proxy-ipvs", "ipvs", "ipvs-bpf"]),
                         "kube-proxy-ipvs")
        self.assertAlmostEqual(rep.ratio(summary, "nodeport", "short", "ipvs-bpf", "ipvs", "rps"),
                               1102 / 700)
        t = {(x["metric"]): x for x in rep.targets(summary, "ipvs")}
        self.assertFalse(t["rps"]["met"])          # 1.57 < 1.70
        self.assertTrue(t["lat_p99_ms"]["met"])    # 0.5 <= 0.5
        share = (1 / 1102 - 1 / 1200) / (1 / 700 - 1 / 1200)
        self.assertAlmostEqual(t["overhead over direct"]["ratio"], share)

    def test_icount_cells_are_judged_by_instructions(self):
        rep = load_report()
        cells = []
        for r in (1, 2):
            for mode, instr in (("direct", 200e3), ("kube-proxy-ipvs", 300e3), ("ipvs-bpf", 240e3)):
                cells.append({"round": r, "mode": mode, "path": "nodeport", "workload": "short",
                              "rps": 500, "instr_per_req": instr, "problems": []})
        summary = rep.summarize(cells)
        self.assertEqual(rep.headline(summary, "short")[0], "instr_per_req")
        t = {x["metric"]: x for x in rep.targets(summary, "kube-proxy-ipvs")}
        self.assertAlmostEqual(t["instr_per_req"]["ratio"], 0.8)
        self.assertFalse(t["instr_per_req"]["met"])
        # the Service's own cost: 40k over direct against 100k
        self.assertAlmostEqual(t["overhead over direct"]["ratio"], 0.4)
        self.assertEqual(rep.fmt(240e3, "instr_per_req"), "240k")
        # without instructions, throughput
        self.assertEqual(rep.headline(rep.summarize(self.cells()), "short")[0], "rps")

    def test_scale_axis(self):
        rep = load_report()
        cells = []
        for others in (0, 1000, 10000):
            for mode, instr in (("direct", 200e3), ("ipvs", 300e3 + others), ("ipvs-bpf", 250e3)):
                cells.append({"round": 1, "mode": mode, "path": "nodeport", "workload": "short",
                              "others": others, "rps": 100, "instr_per_req": instr,
                              "problems": []})
        summary = rep.summarize(cells)
        self.assertIn(("nodeport+10000", "short", "ipvs"), summary)
        axis = rep.scale_axis(summary)
        self.assertEqual(axis[("nodeport", "short")]["ipvs"], {0: 300e3, 1000: 301e3, 10000: 310e3})
        text = rep.scale_table(axis, summary, ["direct", "ipvs", "ipvs-bpf"])
        self.assertIn("| ipvs | 300k | 301k | 310k | 1.03 |", text)
        # the targets are judged without other Services
        t = {x["metric"]: x for x in rep.targets(summary, "ipvs")}
        self.assertAlmostEqual(t["instr_per_req"]["ratio"], 250 / 300)
        self.assertEqual(rep.scale_axis(rep.summarize(self.cells())), {})
        # a counted run is judged by instructions alone
        counted = {x["metric"] for x in rep.targets(summary, "ipvs", counted=True)}
        self.assertEqual(counted, {"instr_per_req", "overhead over direct"})

    def report(self, d, cells):
        """bench-report over CELLS in directory D, quietly; returns its out dir."""
        raw = os.path.join(d, "bench.jsonl")
        with open(raw, "w") as f:
            for c in cells:
                f.write(json.dumps(c) + "\n")
        out = os.path.join(d, "out")
        old, olderr = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = open(os.devnull, "w")
        try:
            load_report().main([raw, "--out", out])
        finally:
            sys.stdout.close()
            sys.stdout, sys.stderr = old, olderr
        return out

    def test_report_without_cells_at_zero_other_services(self):
        with tempfile.TemporaryDirectory() as d:
            self.report(d, [dict(c, others=1000) for c in self.cells()])
            self.assertFalse(os.path.exists(os.path.join(d, "out", "chart.png")))
            self.assertTrue(os.path.exists(os.path.join(d, "out", "table.md")))

    def test_writes_table_json_and_chart(self):
        with tempfile.TemporaryDirectory() as d:
            out = self.report(d, self.cells())
            table = open(os.path.join(out, "table.md")).read()
            self.assertIn("| short connections, req/s | 1200 | 700 | 1102 (1101–1103) | 1.57 |",
                          table)
            res = json.load(open(os.path.join(out, "results.json")))
            self.assertEqual(res["baseline"], "ipvs")
            self.assertEqual(len(res["cells"]), 9)
            with open(os.path.join(out, "chart.png"), "rb") as f:
                self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")


if __name__ == "__main__":
    unittest.main()
