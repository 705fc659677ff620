#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Suite ipvs-bpf-selftest: the series' own kselftest, ipvs_bpf.sh, from
# the patched tree: bpf_mode hooks ahead of conntrack (300 connections
# here, 0 conntrack entries), session map attach validation and hostile input,
# mirroring against ipvsadm -Lnc, SNAT allocation, fragments and ICMP,
# SNAT for clients outside the local nets, ICMP errors and path MTU
# discovery through twins, and flipping the switch under traffic.
. "$(dirname "$0")/lib.sh"

dir=$TOP/build/linux-6.12/tools/testing/selftests/net/netfilter
[ -f "$dir/ipvs_bpf.sh" ] || fail "no ipvs_bpf.sh in $dir (run testbed/kernel-tree)"
[ -x "$dir/ipvs_bpf_tool" ] || fail "no ipvs_bpf_tool in $dir (run testbed/build-selftests)"

need ipvsadm socat conntrack iptables setpriv ss
[ -d /proc/sys/net/ipv4/vs ] || modprobe ip_vs || fail "modprobe ip_vs"
cd "$dir" || fail "cd $dir"
# make test's budget: the conntrack check with 300 connections a mode
# (1,000 by default) and the SNAT port reuse case for 20 s through 100
# ports (60 s through 500), which still runs the range out ten times over
# (about 4,000 connections under TCG). An --env setting wins.
IPVS_BPF_CONNS=${IPVS_BPF_CONNS:-300} \
IPVS_BPF_REUSE_SECS=${IPVS_BPF_REUSE_SECS:-20} \
IPVS_BPF_REUSE_PORTS=${IPVS_BPF_REUSE_PORTS:-100} \
	bash ./ipvs_bpf.sh
