#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Suite modules-deb: the Debian package of the patched IPVS modules
# (packaging/build-modules-deb) on the stock Debian kernel, installed with
# dpkg as a provider would on its node image, in place of the modules
# testbed/guest/run-suites staged, and left installed: the suites after it
# run on the package's modules. modules-deb-remove, the last suite of a
# run, removes it.
#   - dpkg -i: Depends met by the node's kernel image; postinst's depmod
#     makes modprobe resolve every module of the package to
#     updates/ipvs-bpf/, and the loaded ip_vs has the series
#     (net.ipv4.vs.bpf_mode) and serves a NAT virtual server in bpf_mode.
# The guest's /lib and /var are copy-on-write overlays: the host's module
# tree and dpkg database are never touched. (dpkg and depmod over the 9p
# root take about a minute each under TCG.)
. "$(dirname "$0")/lib.sh"
need dpkg dpkg-query modinfo modprobe depmod ipvsadm curl nginx
. "$(dirname "$0")/modules-deb-lib.bash"
cleanup() {
	local rc=$?
	topo_kill_ns
	topo_down
	rm -rf "$tmp"
	# On failure, put the staged modules back so later suites still run
	# on the series.
	if [ "$rc" != 0 ] && [ -d "$saved" ]; then
		dpkg -r "$pkg" >/dev/null 2>&1
		rm -rf "$kdir/updates" && cp -r "$saved/updates" "$kdir/" &&
			cp "$saved"/modules.* "$kdir/" && unload_ipvs && modprobe ip_vs
	fi
}
trap cleanup EXIT

step "the package: $(basename "$deb")"
dpkg-deb -f "$deb" Package Version Depends | sed 's/^/      /'
dpkg-query -W -f='${Status}\n' "linux-image-$kver" 2>/dev/null | grep -q 'ok installed' ||
	fail "linux-image-$kver is not installed: the package's Depends cannot be met"

step "dpkg -i, the testbed's staged modules put aside"
# (the testbed's own test module, ipvsbpf_testbed_warn, goes with them:
# only testbed/tests/runner-selftest loads it, in a boot of its own)
rm -rf "$saved" && mkdir -p "$saved" && cp -r "$kdir/updates" "$kdir"/modules.* "$saved/" ||
	fail "saving the staged modules"
rm -rf "$kdir/updates"
timed dpkg -i "$deb" || fail "dpkg -i $deb"
[ "$(ip_vs_path)" = "$kdir/updates/ipvs-bpf/ip_vs.ko.xz" ] ||
	fail "after dpkg -i, ip_vs resolves to $(ip_vs_path)"
reload_ipvs
[ -e /proc/sys/net/ipv4/vs/bpf_mode ] || fail "the installed ip_vs has no bpf_mode"
n=$(dpkg -L "$pkg" | grep -c '\.ko\.xz$')
echo "      $n modules installed; ip_vs from $(ip_vs_path), taint '$(cat /sys/module/ip_vs/taint)'"
[ "$n" -ge 10 ] || fail "only $n modules in the package"
# Every module of the package is one modprobe finds (none shadowed).
for ko in $(dpkg -L "$pkg" | grep '\.ko\.xz$'); do
	m=$(basename "$ko" .ko.xz)
	[ "$(modinfo -n "$m")" = "$ko" ] || fail "modprobe finds $m at $(modinfo -n "$m"), not $ko"
done
# Debian's xt_ipvs does not load against a patched ip_vs (symbol
# versions): the package's must, or `iptables -m ipvs` breaks on the node.
modprobe xt_ipvs || fail "the package's xt_ipvs does not load"
echo "      xt_ipvs from $(modinfo -n xt_ipvs) loads"
# and goes again: it holds ip_vs, which later suites unload
rmmod xt_ipvs || fail "rmmod xt_ipvs"

step "the package's ip_vs serves a NAT virtual server with bpf_mode on"
topo_up
topo_check || fail "topology connectivity"
topo_nginx pod1a || fail "nginx in pod1a"
topo_exec node sysctl -qw net.ipv4.vs.bpf_mode=1 || fail "bpf_mode=1"
topo_exec node ipvsadm -A -t 198.19.0.10:80 -s rr || fail "ipvsadm -A"
topo_exec node ipvsadm -a -t 198.19.0.10:80 -r "$(topo_ip pod1a 4):80" -m || fail "ipvsadm -a"
# client routes the Service CIDR to node; in bpf_mode the VIP is on no
# device: IPVS takes the packet at PREROUTING.
ans=$(topo_exec client curl -s -m 5 http://198.19.0.10/) || fail "no answer through the VIP"
[ "$ans" = pod1a ] || fail "the VIP answered '$ans', expected pod1a"
echo "      client -> 198.19.0.10:80 -> $ans (bpf_mode 1)"
topo_exec node ipvsadm -C
topo_kill_ns
topo_down

step "PASS: the module package installs and serves; the suites after this one use it"
