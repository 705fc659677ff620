# SPDX-License-Identifier: GPL-2.0
# clean: the control run for the runner's self-test: IPVS comes up (and,
# when modular, goes away again) without traffic. A run of it must pass.
. "$(dirname "$0")/lib.sh"

if [ -d /sys/module/ip_vs ] && [ ! -e /sys/module/ip_vs/initstate ]; then
	step "ip_vs is built into $(uname -r)"
	[ -r /proc/net/ip_vs ] || fail "/proc/net/ip_vs missing"
	exit 0
fi
modprobe ip_vs || fail "modprobe ip_vs"
step "ip_vs loaded from $(modinfo -n ip_vs)"
modprobe -r ip_vs || fail "modprobe -r ip_vs"
step "ip_vs unloaded"
