# SPDX-License-Identifier: GPL-2.0
# ipvs-selftest: the kernel's own IPVS selftest from the patched tree
# (tools/testing/selftests/net/netfilter/ipvs.sh: DR, NAT and tunnel
# modes) against the IPVS module the guest has loaded.
. "$(dirname "$0")/lib.sh"

dir=$TOP/build/linux-6.12/tools/testing/selftests/net/netfilter
[ -x "$dir/ipvs.sh" ] || [ -f "$dir/ipvs.sh" ] || fail "no ipvs.sh in $dir (run testbed/kernel-tree)"

[ -d /proc/sys/net/ipv4/vs ] || modprobe ip_vs || fail "modprobe ip_vs"
if [ -e /sys/module/ip_vs/initstate ]; then
	step "ip_vs module: $(modinfo -n ip_vs) (vermagic $(modinfo -F vermagic ip_vs))"
else
	step "ip_vs: built into $(uname -r)"
fi
step "/proc/net/ip_vs:"
sed 's/^/      /' /proc/net/ip_vs
cd "$dir" || fail "cd $dir"
bash ./ipvs.sh
