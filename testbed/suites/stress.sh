#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Suite stress: bpf_mode and the session map under churn, for the kernel
# log to judge (the runner fails the run on any oops, WARN, KASAN, lockdep
# or kmemleak report). Meant for the debug kernel; runs on any.
#
# The shared topology: client -> node (the director, VIP on kube-ipvs0) ->
# pod1a (NAT). While the client makes TCP and UDP connections in a loop,
# the director, round after round:
#   - flips net.ipv4.vs.bpf_mode,
#   - attaches and detaches the session map (SNAT and not),
#   - flushes services and adds them back,
# and, when IPVS is a module, unloads it with live connections and an
# attached map (module unload = netns exit for IPVS) and loads it again.
# Every loop is bounded in rounds (STRESS_ROUNDS, 12; 6 in make test)
# and time.
. "$(dirname "$0")/lib.sh"

need ipvsadm socat
tool=$TOP/build/linux-6.12/tools/testing/selftests/net/netfilter/ipvs_bpf_tool
[ -x "$tool" ] || fail "no ipvs_bpf_tool (run testbed/build-selftests)"
rounds=${STRESS_ROUNDS:-12}
vip=198.19.9.10
port=8080
rip=$(topo_ip pod1a 4)
snat_addr=$(topo_ip node 4)

[ -d /proc/sys/net/ipv4/vs ] || modprobe ip_vs || fail "modprobe ip_vs"
[ -f /proc/sys/net/ipv4/vs/bpf_mode ] || fail "this IPVS has no bpf_mode"
modular=0
[ -e /sys/module/ip_vs/initstate ] && modular=1

bpffs=$(mktemp -d)
cleanup() {
	# Also the server children whose connections died with a flush or an
	# unload: they wait forever for data and hold the suite's output.
	topo_kill_ns
	topo_down
	umount "$bpffs" 2>/dev/null
	rmdir "$bpffs" 2>/dev/null
}
trap cleanup EXIT

mount -t bpf none "$bpffs" || fail "mount bpffs"
topo_up
topo_check || fail "topology connectivity"
topo_exec node ip link add kube-ipvs0 type dummy
topo_exec node ip addr add "$vip/32" dev kube-ipvs0

topo_exec pod1a socat -u TCP-LISTEN:$port,fork,reuseaddr,backlog=1024 OPEN:/dev/null \
	</dev/null >/dev/null 2>&1 &
topo_exec pod1a socat -u UDP-RECVFROM:$port,fork OPEN:/dev/null </dev/null >/dev/null 2>&1 &
sleep 1

services() {
	topo_exec node ipvsadm -A -t $vip:$port -s rr &&
	topo_exec node ipvsadm -a -t $vip:$port -r $rip:$port -m &&
	topo_exec node ipvsadm -A -u $vip:$port -s rr &&
	topo_exec node ipvsadm -a -u $vip:$port -r $rip:$port -m
}

d_tool() { topo_exec node "$tool" "$@"; }

services || fail "adding services"
d_tool mkmap "$bpffs/sessions" --entries 4096 >/dev/null ||
	fail "creating the session map"

# Client load: bounded by time; failures are expected while services come
# and go, the kernel log is what this suite judges.
topo_exec client timeout 600 bash -c '
	end=$((SECONDS + 540))
	while [ $SECONDS -lt $end ]; do
		exec 3<>/dev/tcp/'$vip'/'$port' 2>/dev/null && exec 3>&-
		echo x >/dev/udp/'$vip'/'$port' 2>/dev/null
	done' </dev/null >/dev/null 2>&1 &
load=$!

step "client load running; $rounds rounds of churn (IPVS is $([ $modular = 1 ] && echo a module || echo built in))"
for ((r = 1; r <= rounds; r++)); do
	snat=""
	((r % 2)) && snat="--snat4 $snat_addr --ports 20000-20063"
	# shellcheck disable=SC2086
	d_tool attach "$bpffs/sessions" $snat || fail "round $r: attach"
	for i in 1 2 3 4 5 6; do
		topo_exec node sysctl -qw net.ipv4.vs.bpf_mode=$((i % 2)) ||
			fail "round $r: bpf_mode=$((i % 2))"
		sleep 0.2
	done
	if ((r % 3 == 0)); then
		topo_exec node ipvsadm -C
		services || fail "round $r: re-adding services"
	fi
	if ((r % 4 == 0)) && [ $modular = 1 ]; then
		# Unload with services, live connections and the map attached
		topo_exec node sysctl -qw net.ipv4.vs.bpf_mode=1
		sleep 0.5
		topo_exec node ipvsadm -C
		unload_ipvs || fail "round $r: rmmod ip_vs ($(lsmod | awk '$1 ~ /ip_vs/ { print $1 "(" $3 ")" }' | xargs))"
		modprobe ip_vs || fail "round $r: modprobe ip_vs"
		services || fail "round $r: services after reload"
		step "round $r: ip_vs unloaded with the map attached and loaded again"
		continue
	fi
	d_tool show | sed 's/^/      /'
	d_tool detach || fail "round $r: detach"
	n=$(d_tool count "$bpffs/sessions")
	[ "$n" = 0 ] || fail "round $r: $n entries left in the map after detach"
	step "round $r done"
done
kill $load 2>/dev/null
wait $load 2>/dev/null
d_tool detach 2>/dev/null
topo_exec node ipvsadm -C
step "PASS: $rounds rounds of churn; the kernel log decides the rest"
