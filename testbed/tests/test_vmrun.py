# SPDX-License-Identifier: GPL-2.0
"""Unit tests of testbed/vm-run's one narrow retry: a guest that died of
QEMU TCG's text_poke int3 race before run-suites began is booted again;
anything else is judged as it stands."""

import importlib.machinery
import importlib.util
import os
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
_loader = importlib.machinery.SourceFileLoader("vmrun", os.path.join(HERE, "..", "vm-run"))
_spec = importlib.util.spec_from_loader("vmrun", _loader)
vmrun = importlib.util.module_from_spec(_spec)
_loader.exec_module(vmrun)

INT3 = "[    1.614773] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI"
GUEST = "[guest] kernel 6.12.118+deb12-amd64, 2 CPUs, 4014592 kB"
OTHER = "[    1.700000] Oops: general protection fault, probably for non-canonical address"


class Int3AtBoot(unittest.TestCase):
    def check(self, lines):
        with tempfile.NamedTemporaryFile("w", delete=False) as f:
            f.write("\n".join(lines) + "\n")
        try:
            return vmrun.int3_at_boot(f.name)
        finally:
            os.unlink(f.name)

    def test_int3_before_the_runner_is_a_boot_death(self):
        self.assertEqual(self.check(["Booting", INT3, "Call Trace:"]), INT3)

    def test_int3_once_the_runner_began_is_judged(self):
        self.assertIsNone(self.check([GUEST, INT3]))

    def test_other_deaths_are_judged(self):
        self.assertIsNone(self.check(["Booting", OTHER]))
        self.assertIsNone(self.check(["Booting", "[    1.0] ok"]))


if __name__ == "__main__":
    unittest.main()
