#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Suite proxy: the reconciler against the real (patched) IPVS
# (ipvsbpf-proxy/tests/reconcile_kernel.rs, built on the host by
# testbed/build-proxy), each test in a network namespace of its own:
# programming from scratch read back with ipvsadm -S -n, adopting a
# previous run without a write, a change, a removal, and a TCP real
# server draining under a live connection.
. "$(dirname "$0")/lib.sh"
need ipvsadm ip

list=$TOP/build/proxy/tests.list
[ -f "$list" ] || fail "no $list (run testbed/build-proxy)"
load_modules ip_vs ip_vs_rr

run_test_list "$list" 5 --ignored --test-threads=1
