#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Suite proxy-fallback: ipvsbpf-proxy on Debian's own, unpatched IPVS
# modules, as on a node whose kernel lacks the series.
#   - --proxy-mode ipvs-bpf alone: exits non-zero naming what is missing,
#     and leaves nothing on the node (no virtual server, tc filter, pin,
#     nftables table or kube-ipvs0);
#   - with --fallback-to-ipvs: says so, runs ipvs mode and serves a
#     ClusterIP from a pod and a NodePort from the client;
#   - --cleanup on that kernel succeeds and leaves nothing;
#   - --probe-kernel, the node labeller's test, says unpatched (exit 3).
# The patched modules are loaded again at the end for the suites after it.
MODE=ipvs-bpf
. "$(dirname "$0")/lib.sh"
need ipvsadm curl nginx dnsmasq iptables-save ipset nft tc modinfo
kdir=/lib/modules/$(uname -r)
stock=$kdir/kernel/net/netfilter/ipvs

restore_modules() {
	unload_ipvs && modprobe ip_vs && [ -e /proc/sys/net/ipv4/vs/bpf_mode ] ||
		echo "  FAIL: the patched ip_vs did not come back; later suites will fail"
}

step "Debian's unpatched ip_vs and ip_vs_rr in place of the patched ones"
[ -f "$stock/ip_vs.ko.xz" ] || fail "no Debian ip_vs module in $stock (package linux-image-$(uname -r))"
unload_ipvs || fail "cannot unload the patched ip_vs modules: $(lsmod | grep ip_vs | xargs)"
modprobe -a nf_conntrack nf_defrag_ipv6 libcrc32c || fail "ip_vs's dependencies"
# The scheduler too: request_module() would find the patched ip_vs_rr,
# which must not meet a stock ip_vs.
insmod "$stock/ip_vs.ko.xz" && insmod "$stock/ip_vs_rr.ko.xz" || fail "insmod Debian's ip_vs"
[ ! -e /proc/sys/net/ipv4/vs/bpf_mode ] || fail "the stock ip_vs has bpf_mode: not Debian's module?"
# Debian signs its modules, the testbed's are not: the kernel marks an
# unsigned module with taint E.
grep -q E /sys/module/ip_vs/taint && fail "the loaded ip_vs is unsigned: not Debian's"
echo "      loaded: $(lsmod | awk '$1 ~ /^ip_vs/ { print $1 }' | xargs)" \
	"(signed: Debian's ${stock#"$kdir"/}; module taint '$(cat /sys/module/ip_vs/taint)')"

. "$(dirname "$0")/proxy-lib.bash"
trap 'cleanup; restore_modules' EXIT

step "--probe-kernel (what the node labeller sets): unpatched, why, exit 3"
rc=0
probe=$("$proxy" --probe-kernel) || rc=$?
echo "      $probe (exit $rc)"
[ "$rc" = 3 ] && [[ $probe == "unpatched: "*"net.ipv4.vs.bpf_mode"* ]] ||
	fail "--probe-kernel on Debian's ip_vs: '$probe', exit $rc"
proxy_cluster_up

# nothing_left: the node holds nothing of the proxy's.
nothing_left() {
	local n
	n=$(topo_exec node ipvsadm -Sn | wc -l)
	[ "$n" = 0 ] || fail "$1: IPVS holds $n lines"
	topo_exec node tc filter show dev eth0 egress | grep -q . && fail "$1: a tc filter on eth0"
	topo_exec node nft list tables | grep -q ipvsbpf-proxy && fail "$1: the nftables table"
	[ -z "$(ls -A "$PIN" 2>/dev/null)" ] || fail "$1: pins in $PIN: $(ls "$PIN")"
	topo_exec node ip link show kube-ipvs0 >/dev/null 2>&1 && fail "$1: kube-ipvs0"
	return 0
}

step "--proxy-mode ipvs-bpf without the series: refused, with the reason"
rc=0
timeout 60 ip netns exec node "$proxy" "${proxy_args[@]}" >>"$LOG" 2>&1 || rc=$?
tail -n 1 "$LOG" | cut -c1-300 | fold -w 100 | sed 's/^/      /'
[ "$rc" != 0 ] && [ "$rc" != 124 ] || fail "the proxy exited $rc, expected an error exit"
grep -q "no net.ipv4.vs.bpf_mode or no IPVS_CMD_GET_BPF" "$LOG" ||
	fail "the error does not name the missing series"
nothing_left "after the refusal"

step "--fallback-to-ipvs: ipvs mode, serving"
proxy_args+=(--fallback-to-ipvs)
start_proxy
grep -F 'falling back to --proxy-mode=ipvs' "$LOG" | cut -c1-200 | sed 's/^/      /'
grep -qF 'falling back to --proxy-mode=ipvs' "$LOG" || fail "no word of the fallback"
topo_exec node ip link show kube-ipvs0 >/dev/null 2>&1 || fail "no kube-ipvs0: not ipvs mode"
n=$(topo_exec node ipvsadm -Ln | grep -cE '^(TCP|UDP)')
echo "      $n virtual servers"
[ "$n" -ge 10 ] || fail "IPVS has $n virtual servers"
reach pod1b http://198.19.0.11/ pod1a pod2a
reach client "http://$NODE:30080/" pod1a pod1b pod2a pod2b

step "--cleanup on the unpatched kernel"
stop_proxy || fail "--cleanup failed on a kernel without the series: $(tail -n 3 "$LOG" | xargs)"
nothing_left "after --cleanup"
step "PASS: the proxy refuses or falls back on an unpatched kernel"
