# SPDX-License-Identifier: GPL-2.0
"""Unit tests for the counted profiles' layout (testbed/lib/bench_profile.py),
on perf report's own line format."""

import os
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "lib"))
import bench_profile  # noqa: E402

# perf report --stdio --no-children -n --sort dso,sym, as perf 6.1 prints it
DIRECT = """# units=3000 period=20000
    40.00%          12000  [kernel.kallsyms]  [k] pv_native_safe_halt
    30.00%           9000  [kernel.kallsyms]  [k] tcp_v4_rcv
    20.00%           6000  libc.so.6          [.] _int_free
    10.00%           3000  [kernel.kallsyms]  [k] __htab_map_lookup_elem
"""
BPF = """# units=3000 period=20000
    25.00%           9000  [kernel.kallsyms]  [k] tcp_v4_rcv
    25.00%           9000  [kernel.kallsyms]  [k] __htab_map_lookup_elem
    16.67%           6000  libc.so.6          [.] _int_free
    12.50%           4500  bpf_prog_ada18aeaf33f116e_ipvsbpf_egress  [k] bpf_prog_ada18aeaf33f116e_ipvsbpf_egress
    16.67%           6000  [kernel.kallsyms]  [k] pv_native_safe_halt
"""


class Layout(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        for name, text in (("profile-direct-nodeport-short-0-1.txt", DIRECT),
                           ("profile-ipvs-bpf-nodeport-short-0-1.txt", BPF)):
            with open(os.path.join(self.dir.name, name), "w", encoding="utf-8") as f:
                f.write(text)

    def tearDown(self):
        self.dir.cleanup()

    def test_idle_left_out_and_samples_scaled_by_the_period(self):
        units, period, syms, idle = bench_profile.parse(
            os.path.join(self.dir.name, "profile-direct-nodeport-short-0-1.txt"))
        self.assertEqual((units, period, idle), (3000, 20000, 12000))
        cost = bench_profile.per_unit(units, period, syms)
        # 9000 samples of 20,000 instructions over 3000 connections
        self.assertAlmostEqual(cost["tcp_v4_rcv"], 60000)
        self.assertAlmostEqual(cost["_int_free (libc.so.6)"], 40000)
        self.assertNotIn("pv_native_safe_halt", cost)

    def test_modes_side_by_side_sorted_by_what_ipvs_bpf_adds(self):
        cells = bench_profile.load(self.dir.name)
        self.assertEqual(set(cells), {("nodeport", "short", 0)})
        modes = cells[("nodeport", "short", 0)]
        self.assertEqual(set(modes), {"direct", "ipvs-bpf"})
        lines = bench_profile.table(("nodeport", "short", 0), modes, 10)
        rows = [ln for ln in lines if ln.startswith("| `")]
        # 20,000 / 3000 instructions per sample and connection: the
        # hash lookups add most (9000 - 3000 samples), then the program
        self.assertTrue(rows[0].startswith("| `__htab_map_lookup_elem` | 20.0k | 60.0k | 40.0k |"),
                        rows[0])
        self.assertTrue(rows[1].startswith("| `ipvsbpf_egress (BPF program)` | 0 | 30.0k | 30.0k |"),
                        rows[1])
        self.assertIn("| **all (busy)** | 120.0k | 190.0k | 70.0k |", lines)

    def test_symbols_grouped_by_part_of_the_path(self):
        for sym, group in (("ipvsbpf_egress (BPF program)", "tc programs (SNAT)"),
                           ("cls_bpf_classify", "tc programs (SNAT)"),
                           ("htab_map_hash", "BPF hash maps (session map)"),
                           ("ip_vs_in_hook", "IPVS"),
                           ("tcp_state_transition", "IPVS"),
                           ("nf_conntrack_in", "conntrack and NAT"),
                           ("nft_do_chain", "nftables, iptables, ipset"),
                           ("nf_hook_slow", "netfilter hooks"),
                           ("tcp_v4_rcv", bench_profile.OTHER)):
            self.assertEqual(bench_profile.group_of(sym), group, sym)
        modes = bench_profile.load(self.dir.name)[("nodeport", "short", 0)]
        lines = bench_profile.table(("nodeport", "short", 0), modes, 10)
        self.assertIn("| *tc programs (SNAT)* | 0 | 30.0k | 30.0k |", lines)
        self.assertIn("| *BPF hash maps (session map)* | 20.0k | 60.0k | 40.0k |", lines)

    def test_iperf_bytes_with_a_suffix_per_gb_and_other_services_apart(self):
        # suite bench writes iperf3's amount as it hands it to iperf3 -n
        for name in ("profile-ipvs-bpf-nodeport-iperf-0-1.txt",
                     "profile-ipvs-bpf-nodeport-iperf-1000-1.txt"):
            with open(os.path.join(self.dir.name, name), "w", encoding="utf-8") as f:
                f.write("# units=512M period=20000\n"
                        "    100.00%          26844  [kernel.kallsyms]  [k] tcp_v4_rcv\n")
        self.assertEqual(bench_profile.amount("512M"), 512 << 20)
        with self.assertRaises(ValueError):
            bench_profile.amount("1.5G")
        cells = bench_profile.load(self.dir.name)
        self.assertIn(("nodeport", "iperf", 1000), cells)
        costs = cells[("nodeport", "iperf", 0)]["ipvs-bpf"][0]
        # 26844 samples of 20,000 over 0.537 GB: 1.0G instructions per GB
        self.assertAlmostEqual(costs["tcp_v4_rcv"] / 1e9, 26844 * 20000 / (512 << 20), places=6)
        lines = bench_profile.table(("nodeport", "iperf", 1000), cells[("nodeport", "iperf", 1000)], 5)
        self.assertEqual(lines[0], "### nodeport iperf, 1000 other Services: instructions per GB")

    def test_a_profile_without_its_header_is_an_error(self):
        with open(os.path.join(self.dir.name, "profile-ipvs-clusterip-short-0-1.txt"), "w",
                  encoding="utf-8") as f:
            f.write("    100.00%   5  [kernel.kallsyms]  [k] tcp_v4_rcv\n")
        with self.assertRaises(bench_profile.ProfileError):
            bench_profile.load(self.dir.name)
        self.assertEqual(bench_profile.main([self.dir.name]), 1)


if __name__ == "__main__":
    unittest.main()
