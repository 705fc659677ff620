# SPDX-License-Identifier: GPL-2.0
"""Unit tests of testbed/lib/kernlog.py against real report shapes."""

import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import kernlog  # noqa: E402

WARN = """\
[   20.123456] ------------[ cut here ]------------
[   20.123460] ipvsbpf testbed: injected warning (runner self-test)
[   20.123470] WARNING: CPU: 1 PID: 321 at /tmp/w.c:14 ipvsbpf_testbed_warn_init+0x15/0x20 [ipvsbpf_testbed_warn]
[   20.123500] Call Trace:
""".splitlines()

KASAN = ["[   31.000001] BUG: KASAN: slab-use-after-free in ip_vs_conn_expire+0x1/0x2"]
LOCKDEP = ["[    9.1] WARNING: possible circular locking dependency detected"]
RCU = ["[   50.000000] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:"]
OOPS = ["[    5.000000] Oops: general protection fault, probably for non-canonical address"]
GPF = ["[    5.000000] general protection fault, probably for non-canonical address 0xdead: 0000 [#1] SMP"]
BUG = ["[    6.000000] kernel BUG at net/netfilter/ipvs/ip_vs_conn.c:123!"]
SLEEP = ["[    7.000000] BUG: sleeping function called from invalid context at mm/slab.h:1"]
LEAK_LINE = ["[  100.000000] kmemleak: 2 new suspected memory leaks (see /sys/kernel/debug/kmemleak)"]
HUNG = ["[  200.000000] INFO: task kworker/0:1:12 blocked for more than 120 seconds."]
PANIC = ["[    1.000000] Kernel panic - not syncing: VFS: Unable to mount root fs"]
CALLER_ID = ["[   20.123470] [  T321] WARNING: CPU: 1 PID: 321 at x.c:1 f+0x1/0x2"]

CLEAN = """\
[    2.816878] Invalid ELF header magic: != ELF
[    3.356024] virtio-fs: tag <ROOTFS> not found
[   10.000000] ipvsbpf_testbed_warn: loading out-of-tree module taints kernel.
[   10.000001] ipvsbpf_testbed_warn: module verification failed: signature and/or required key missing - tainting kernel
[   11.000000] IPVS: Registered protocols (TCP, UDP, SCTP, AH, ESP)
[   12.000000] IPVS: [rr] scheduler registered.
WARNING: this line is a test printing, not the kernel
BUG: neither is this one
""".splitlines()

KMEMLEAK_DUMP = """\
unreferenced object 0xffff888003a1c000 (size 64):
  comm "ipvsadm", pid 200, jiffies 4294937296
  hex dump (first 32 bytes):
  backtrace (crc 0):
""".splitlines()


class ScanTest(unittest.TestCase):
    def kinds(self, lines):
        return [k for k, _ in kernlog.scan_kernel_lines(lines)]

    def test_each_report_kind_is_caught(self):
        cases = {
            "warning": WARN, "kasan": KASAN, "lockdep": LOCKDEP, "rcu-stall": RCU,
            "oops": OOPS + GPF, "bug": BUG + SLEEP, "kmemleak": LEAK_LINE,
            "hung-task": HUNG, "panic": PANIC,
        }
        for kind, lines in cases.items():
            with self.subTest(kind=kind):
                self.assertIn(kind, self.kinds(lines))

    def test_warning_splat_names_the_line(self):
        found = kernlog.scan_kernel_lines(WARN)
        self.assertEqual([k for k, _ in found], ["warning", "call-trace"])
        self.assertIn("ipvsbpf_testbed_warn_init", found[0][1])

    def test_caller_id_prefix(self):
        self.assertEqual(self.kinds(CALLER_ID), ["warning"])

    def test_clean_log_and_non_kernel_lines_pass(self):
        self.assertEqual(kernlog.scan_kernel_lines(CLEAN), [])

    def test_kmemleak_dump(self):
        found = kernlog.scan_kmemleak(KMEMLEAK_DUMP)
        self.assertEqual(len(found), 1)
        self.assertEqual(kernlog.scan_kmemleak(["", "nothing here"]), [])


if __name__ == "__main__":
    unittest.main()
