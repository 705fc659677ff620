#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Suite modules-deb-remove: the last of a run that began with modules-deb.
# dpkg -r of the module package brings Debian's own IPVS back: nothing of
# the package left, modprobe resolves ip_vs to kernel/ again, and the
# loaded ip_vs is Debian's signed one, without the series.
. "$(dirname "$0")/lib.sh"
need dpkg dpkg-query modinfo modprobe
. "$(dirname "$0")/modules-deb-lib.bash"
trap 'rm -rf "$tmp"' EXIT

step "dpkg -r $pkg"
dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q 'ok installed' ||
	fail "$pkg is not installed: run modules-deb first in the same boot"
timed dpkg -r "$pkg" || fail "dpkg -r"
[ ! -e "$kdir/updates/ipvs-bpf" ] || fail "$kdir/updates/ipvs-bpf left: $(ls "$kdir/updates/ipvs-bpf")"
case $(ip_vs_path) in
"$kdir"/kernel/*) ;;
*) fail "after dpkg -r, ip_vs resolves to $(ip_vs_path)" ;;
esac
reload_ipvs
[ ! -e /proc/sys/net/ipv4/vs/bpf_mode ] || fail "Debian's ip_vs has bpf_mode"
grep -q E /sys/module/ip_vs/taint && fail "the ip_vs loaded after dpkg -r is unsigned: not Debian's"
echo "      ip_vs from $(ip_vs_path), taint '$(cat /sys/module/ip_vs/taint)'"
step "PASS: dpkg -r brought Debian's IPVS back"
