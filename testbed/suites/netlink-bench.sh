#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Suite netlink-bench: ipvs-netlink's restore benchmark at full size,
# 1,000 and 10,000 services x 10 destinations, against `ipvsadm -R` in the
# same run (`make bench-netlink`; `make test` runs the 1,000 size in suite
# netlink). The benchmark checks the rule set each way leaves behind.
. "$(dirname "$0")/lib.sh"
need ipvsadm

bench=$TOP/build/netlink/bench
[ -x "$bench" ] || fail "no $bench (run testbed/build-netlink)"
[ -d /proc/sys/net/ipv4/vs ] || modprobe ip_vs || fail "modprobe ip_vs"
modprobe ip_vs_rr || fail "modprobe ip_vs_rr"

for n in 1000 10000; do
	step "restore benchmark: $n services x 10 destinations"
	"$bench" --services "$n" --dests 10 --rounds "${BENCH_ROUNDS:-3}" | sed 's/^/      /'
	[ "${PIPESTATUS[0]}" = 0 ] || fail "benchmark at $n services failed"
done
