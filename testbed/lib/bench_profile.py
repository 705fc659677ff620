#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""bench_profile.py: the counted profiles of suite bench (BENCH_PROFILE)
side by side: instructions per unit (connection, request, byte) by symbol
and mode, for each path and workload, sorted by what ipvs-bpf spends over
`direct`.

Each profile-<mode>-<path>-<workload>-<round>.txt holds a header line
("# units=N period=N": the units the sampled traffic sent, and the
instructions between two samples) and perf report's lines (percent,
samples, dso, [k]/[.], symbol). Under -icount, one vCPU, perf's cpu-clock
fires every `period` instructions, so a symbol's cost per unit is its
samples times period / units; rounds are averaged. Samples in the idle
loop are left out: with sleep=off they stand for skipped time, not
instructions. perf's own interrupt is never sampled: its cost is not
shown, and nothing else is inflated by it.
"""
import argparse
import collections
import glob
import os
import re
import sys

IDLE = {
    "pv_native_safe_halt", "native_safe_halt", "default_idle",
    "acpi_safe_halt", "acpi_idle_do_entry", "mwait_idle_with_hints",
    "intel_idle", "poll_idle",
}
JIT = re.compile(r"bpf_prog_[0-9a-f]{16}_(\w+)")
NAME = re.compile(r"profile-(.+)-(nodeport|clusterip)-([a-z]+)-(\d+)-(\d+)\.txt$")
SUFFIX = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


# What a symbol belongs to, first match wins: the parts a Service
# implementation adds to a forwarded packet's way.
GROUPS = [
    ("tc programs (SNAT)", re.compile(
        r".*\(BPF program\)|cls_bpf_classify|tc_run|__tcf_classify.*|tcf_classify|"
        r"bpf_skb_.*|bpf_l[34]_csum_replace|bpf_csum_diff|sch_handle_.*|tcx_.*")),
    ("BPF hash maps (session map)", re.compile(
        r"htab_.*|__htab_.*|jhash.*|lookup_nulls_elem_raw|lookup_elem_raw|"
        r"alloc_htab_elem|free_htab_elem|pcpu_freelist_.*|___pcpu_freelist_.*|bpf_map_.*")),
    # the static functions are ip_vs_proto_tcp.c's and ip_vs_core.c's
    ("IPVS", re.compile(r"ip_vs_.*|__ip_vs_.*|handle_response.*|tcp_state_transition|"
                        r"tcp_snat_handler|tcp_dnat_handler|tcp_conn_schedule|set_tcp_state")),
    ("conntrack and NAT", re.compile(r"nf_conntrack_.*|__nf_conntrack_.*|nf_ct_.*|__nf_ct_.*|"
                                     r"nf_nat_.*|__nf_nat_.*|hash_conntrack.*|tcp_packet|"
                                     r"nf_confirm|ipv4_confirm|nf_checksum.*|masquerade_.*|"
                                     r"nf_tcp_.*|tcp_in_window|get_unique_tuple|init_conntrack.*|"
                                     r"ipv[46]_conntrack_.*")),
    ("nftables, iptables, ipset", re.compile(r"nft_.*|__nft_.*|nf_tables_.*|ipt_do_table|"
                                             r"ip6t_do_table|xt_.*|ip_set_.*|hash_ip.*|"
                                             r"nft_do_chain.*|set_match_.*|bitmap_.*")),
    ("netfilter hooks", re.compile(r"nf_hook_slow|nf_hook_slow_list|nf_hook.*")),
]
OTHER = "everything else"


def group_of(sym):
    for name, rx in GROUPS:
        if rx.fullmatch(sym):
            return name
    return OTHER


class ProfileError(Exception):
    pass


def parse(path):
    """(units, period, {symbol: samples}, idle samples) of one profile."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    if not lines or not lines[0].startswith("# units="):
        raise ProfileError(f"{path}: no '# units=' header")
    try:
        head = dict(kv.split("=", 1) for kv in lines[0][2:].split())
        units, period = amount(head["units"]), int(head["period"])
    except (KeyError, ValueError) as e:
        raise ProfileError(f"{path}: bad header {lines[0]!r}") from e
    if units <= 0 or period <= 0:
        raise ProfileError(f"{path}: units {units}, period {period}")
    syms = collections.Counter()
    idle = 0
    for line in lines[1:]:
        f = line.split()
        if len(f) < 5 or not f[0].endswith("%"):
            continue
        try:
            n = int(f[1])
        except ValueError:
            continue
        dso, sym = f[2], " ".join(f[4:])
        if sym in IDLE:
            idle += n
            continue
        jit = JIT.fullmatch(sym)
        if jit:
            # a JITed BPF program, its own "dso"; the tag changes with
            # every build of the object
            syms[f"{jit.group(1)} (BPF program)"] += n
            continue
        if not dso.startswith("["):
            sym = f"{sym} ({os.path.basename(dso)})"
        elif dso != "[kernel.kallsyms]":
            sym = f"{sym} {dso}"
        syms[sym] += n
    if not syms:
        raise ProfileError(f"{path}: no busy samples")
    return units, period, syms, idle


def amount(text):
    """Units as suite bench writes them: a count, or bytes with iperf3's
    K/M/G/T suffix (binary)."""
    m = re.fullmatch(r"(\d+)([KMGT]?)", text)
    if not m:
        raise ValueError(f"not an amount: {text!r}")
    return int(m.group(1)) * SUFFIX[m.group(2)]


def per_unit(units, period, syms):
    return {s: n * period / units for s, n in syms.items()}


def load(directory):
    """{(path, workload, others): {mode: (cost by symbol, busy samples, idle,
    total per unit)}}; iperf3's unit is 10^9 bytes, as in the benchmark's table."""
    acc = collections.defaultdict(lambda: collections.defaultdict(list))
    for p in sorted(glob.glob(os.path.join(directory, "profile-*.txt"))):
        m = NAME.search(os.path.basename(p))
        if not m:
            continue
        mode, path, wl, others, _ = m.groups()
        units, period, syms, idle = parse(p)
        if wl == "iperf":
            units /= 1e9
        acc[(path, wl, int(others))][mode].append((units, period, syms, idle))
    out = {}
    for cell, modes in acc.items():
        out[cell] = {}
        for mode, runs in modes.items():
            costs = collections.Counter()
            for units, period, syms, _ in runs:
                for s, c in per_unit(units, period, syms).items():
                    costs[s] += c / len(runs)
            samples = sum(sum(r[2].values()) for r in runs)
            idle = sum(r[3] for r in runs)
            total = sum(costs.values())
            out[cell][mode] = (costs, samples, idle, total)
    return out


def fmt(v):
    for scale, suffix in ((1e9, "G"), (1e6, "M")):
        if abs(v) >= scale:
            return f"{v / scale:.2f}{suffix}"
    return f"{v / 1000:.1f}k" if abs(v) >= 100 else f"{v:.0f}"


def table(cell, modes, top):
    order = [m for m in ("direct", "kube-proxy-ipvs", "ipvs", "ipvs-bpf") if m in modes]
    order += sorted(m for m in modes if m not in order)
    base = "direct" if "direct" in modes else None
    lead = "ipvs-bpf" if "ipvs-bpf" in modes else order[-1]
    syms = set()
    for m in order:
        syms |= set(modes[m][0])

    def cost(m, s):
        return modes[m][0].get(s, 0.0)

    def row(label, value):
        """One table row: value(mode) for each mode, and lead − base."""
        cells = [fmt(value(m)) for m in order]
        if base:
            cells.append(fmt(value(lead) - value(base)))
        return "| " + " | ".join([label] + cells) + " |"

    path, wl, others = cell
    unit = {"short": "connection", "ka": "request", "iperf": "GB"}.get(wl, "unit")
    beside = f", {others} other Services" if others else ""
    lines = [f"### {path} {wl}{beside}: instructions per {unit}", ""]
    lines.append("| | " + " | ".join(order) + (f" | {lead} − {base}" if base else "") + " |")
    lines.append("|---|" + "---:|" * (len(order) + (1 if base else 0)))
    lines.append(row("**all (busy)**", lambda m: modes[m][3]))
    groups = {m: collections.Counter() for m in order}
    for m in order:
        for s, c in modes[m][0].items():
            groups[m][group_of(s)] += c
    for g in [name for name, _ in GROUPS] + [OTHER]:
        lines.append(row(f"*{g}*", lambda m, g=g: groups[m][g]))
    apart = (lambda s: cost(lead, s) - cost(base, s)) if base else (lambda s: cost(lead, s))
    # ties in name order: a set's order changes from run to run
    for s in sorted(syms, key=lambda s: (-abs(apart(s)), s))[:top]:
        lines.append(row(f"`{s}`", lambda m, s=s: cost(m, s)))
    lines.append("")
    lines.append("busy samples (idle left out): " + ", ".join(
        f"{m} {modes[m][1]} ({modes[m][2]} idle)" for m in order))
    lines.append("")
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("directory")
    ap.add_argument("--top", type=int, default=25,
                    help="symbols shown per table, those that differ most (25)")
    a = ap.parse_args(argv)
    try:
        cells = load(a.directory)
    except (OSError, ProfileError) as e:
        print(f"bench_profile: {e}", file=sys.stderr)
        return 1
    if not cells:
        print(f"bench_profile: no profile-*.txt in {a.directory}", file=sys.stderr)
        return 1
    out = ["# Where the instructions go", "",
           "Counted profile (perf cpu-clock under QEMU -icount, one vCPU, a sample every "
           "`period` instructions): a symbol's samples times the period, per unit, the "
           "idle loop left out. The whole guest: client, node and backend share one "
           "kernel; what differs between modes is the node's.", ""]
    for cell in sorted(cells):
        out += table(cell, cells[cell], a.top)
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
