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
for m in ip_vs ip_vs_rr; do
	modprobe "$m" || fail "modprobe $m"
done

while read -r name bin; do
	step "cargo test --test $name -- --ignored on $(uname -r)"
	[ -x "$bin" ] || fail "$bin missing"
	out=$("$bin" --ignored --test-threads=1 2>&1)
	rc=$?
	grep -E '^test |^test result' <<<"$out" | sed 's/^/      /'
	if [ "$rc" != 0 ]; then
		sed -n '/^failures:$/,$p' <<<"$out" | sed 's/^/      /'
		fail "$name failed on $(uname -r)"
	fi
	ran=$(grep -c '^test .* ok$' <<<"$out")
	[ "$ran" -ge 5 ] || fail "$name ran only $ran tests"
done <"$list"
