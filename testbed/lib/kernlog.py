# SPDX-License-Identifier: GPL-2.0
"""kernlog: find kernel error reports in a console log or dmesg dump.

A run of the testbed fails on any oops, BUG, WARNING, KASAN/UBSAN/KFENCE,
lockdep, RCU stall, hung task, panic or kmemleak report. The patterns are
matched only on kernel log lines ("[    1.234567] ..." as the console and
dmesg print them), so a test that echoes the word WARNING cannot trip them,
and a kernel line cannot hide behind a test's output.
"""

import re

# A printk line: optional syslog level, timestamp in brackets, message.
_KLINE = re.compile(r"^(?:<\d+>)?\[\s*\d+\.\d+\]\s?(?:\[\s*[CT]\d+\]\s?)?(?P<msg>.*)$")

# (name, regex) on the message part of a kernel line; the first match names
# the line, so the specific kinds come before BUG/WARNING which they print.
REPORTS = [
    ("kasan", re.compile(r"KASAN:")),
    ("ubsan", re.compile(r"UBSAN:")),
    ("kfence", re.compile(r"KFENCE:")),
    ("lockdep", re.compile(r"possible (?:circular|recursive) locking|inconsistent lock state"
                           r"|suspicious RCU usage|lock held when returning to user space")),
    ("rcu-stall", re.compile(r"rcu_(?:sched|preempt) (?:self-)?detected (?:stalls|stall)"
                             r"|INFO: rcu_\w+ detected stalls")),
    ("hung-task", re.compile(r"^INFO: task .* blocked for more than")),
    ("kmemleak", re.compile(r"^kmemleak: \d+ new suspected memory leaks")),
    ("panic", re.compile(r"^Kernel panic")),
    ("oops", re.compile(r"^Oops\b|^general protection fault|^stack segment:|^double fault:")),
    ("bug", re.compile(r"^(?:kernel )?BUG[: ]|^BUG at ")),
    ("warning", re.compile(r"^WARNING: ")),
    ("call-trace", re.compile(r"^Call Trace:")),
]

# kmemleak's own report format (debugfs /sys/kernel/debug/kmemleak).
_KMEMLEAK_OBJ = re.compile(r"^unreferenced object 0x[0-9a-f]+")


def is_kernel_line(line):
    """True for a printk line as the console and dmesg print it."""
    return _KLINE.match(line) is not None


def scan_kernel_lines(lines):
    """Return [(kind, line)] for every report found in kernel log lines."""
    found = []
    for raw in lines:
        m = _KLINE.match(raw.rstrip("\r\n"))
        if not m:
            continue
        msg = m.group("msg")
        for kind, rx in REPORTS:
            if rx.search(msg):
                found.append((kind, raw.rstrip("\r\n")))
                break
    return found


def scan_kmemleak(lines):
    """Return [("kmemleak", line)] for each object in a kmemleak dump."""
    return [("kmemleak", l.rstrip("\n")) for l in lines if _KMEMLEAK_OBJ.match(l)]
