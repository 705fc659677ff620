#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Suite netlink: the ipvs-netlink crate against the real (patched) IPVS,
# side by side with ipvsadm (ipvs-netlink/tests/kernel.rs, built on the
# host by testbed/build-netlink). Each test runs in a network namespace of
# its own: whatever the crate writes ipvsadm reads back identically (-S -n,
# -Ln, --thresholds, --stats, --timeout) and the other way round, deletes
# and flushes through one are seen by the other, a batch of a few hundred
# requests fails only where it should, every error has its kind, an
# unprivileged caller is refused, the ipvs-bpf session map attaches and
# detaches, and the tokio client does a round trip. Then the
# restore benchmark at 1,000 services x 10 destinations.
. "$(dirname "$0")/lib.sh"
need ipvsadm ip

list=$TOP/build/netlink/tests.list
bench=$TOP/build/netlink/bench
[ -f "$list" ] || fail "no $list (run testbed/build-netlink)"

# The schedulers and persistence engine the tests use, loaded up front
# rather than by request_module() in the middle of a test.
load_modules ip_vs ip_vs_rr ip_vs_wrr ip_vs_lc ip_vs_sh ip_vs_mh ip_vs_pe_sip
step "IPVS and its schedulers loaded (ip_vs from $(modinfo -n ip_vs 2>/dev/null || echo 'the kernel'))"

run_test_list "$list" 10 --ignored --test-threads=1

[ -x "$bench" ] || fail "no $bench (run testbed/build-netlink)"
step "restore benchmark: 1000 services x 10 destinations, against ipvsadm -R"
# Bounded, so a hung benchmark is named rather than killing the suite.
timeout -k 5 400 "$bench" --services 1000 --dests 10 2>&1 | sed 's/^/      /'
rc=${PIPESTATUS[0]}
[ "$rc" = 124 ] && fail "the restore benchmark did not finish in 400 s"
[ "$rc" = 0 ] || fail "the restore benchmark failed (exit $rc)"
step "PASS: ipvs-netlink and ipvsadm agree on $(uname -r)"
