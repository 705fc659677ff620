#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Suite datapath: the tc SNAT programs (bpf/snat.bpf.c) on the testbed's
# 6.12 kernel.
#  1. The host's datapath tests, run here: the programs load and pass the
#     verifier of 6.12, and every table, fragment, property, veth and
#     TUN test holds on it (testbed/build-datapath builds them on the
#     host).
#  2. End to end with the patched IPVS in bpf_mode: ipvsbpf-datapath
#     attaches the programs to node's uplink and pins the session map,
#     ipvs_bpf_tool hands it to IPVS with node's address for SNAT, and
#     client connects to SNAT services backed by pod2a on node2. pod2a
#     must see node's address and a port from the SNAT range, client
#     every byte back, the programs' counters the translations, and
#     conntrack nothing.
#  3. SNAT ports: one whose real server is still in FIN_WAIT2 (a FIN held
#     back after IPVS) is never taken as a safe reuse, only as a last
#     resort when the range is full.
. "$(dirname "$0")/lib.sh"
need ipvsadm curl nginx conntrack ethtool python3 ss socat nstat iptables

list=$TOP/build/datapath/tests.list
tool=$TOP/build/linux-6.12/tools/testing/selftests/net/netfilter/ipvs_bpf_tool
dpt=$(cat "$TOP/build/datapath/tool" 2>/dev/null || true)
peer=$TOP/ipvsbpf-proxy/tests/veth_peer.py
[ -f "$list" ] || fail "no $list (run testbed/build-datapath)"
[ -x "$tool" ] || fail "no $tool (run testbed/build-selftests)"
[ -n "$dpt" ] && [ -x "$dpt" ] || fail "no ipvsbpf-datapath in build/datapath/tool (run testbed/build-datapath)"

VIP4=198.19.0.20
VIP6=2001:db8:2::20
PORTS=40000-40999
bpffs=

cleanup() {
	topo_kill_ns
	topo_down
	[ -n "$bpffs" ] && umount "$bpffs" 2>/dev/null && rmdir "$bpffs"
}
trap cleanup EXIT

# 1. the host's tests on this kernel (snat_tun opens /dev/net/tun)
modprobe tun || fail "modprobe tun"
run_test_list "$list" 1 --test-threads=2

# 2. end to end with IPVS
[ -d /proc/sys/net/ipv4/vs ] || modprobe ip_vs || fail "modprobe ip_vs"
step "topology; nginx and the peer server in pod2a (behind node2)"
topo_up
topo_check || fail "topology connectivity"
topo_nginx pod2a || fail "nginx in pod2a"
topo_exec pod2a /usr/bin/python3 "$peer" tcp-server 8080 </dev/null >/dev/null 2>&1 &
for i in $(seq 1 100); do
	topo_exec pod2a ss -ltnH 'sport = :8080' | grep -q . &&
		topo_exec pod2a curl -s -m 1 -o /dev/null http://127.0.0.1/ && break
	sleep 0.1
done

bpffs=$(mktemp -d)
mount -t bpf none "$bpffs" || fail "mount bpffs"
step "programs on node's eth0, session map handed to IPVS, bpf_mode on"
topo_exec node "$dpt" attach --dev eth0 --pin "$bpffs/dp" --sessions 4096 ||
	fail "ipvsbpf-datapath attach"
topo_exec node "$tool" attach "$bpffs/dp/ipvs_sessions" --snat4 "$(topo_ip node 4)" \
	--snat6 "$(topo_ip node 6)" --ports "$PORTS" || fail "IPVS_CMD_NEW_BPF"
topo_sysctl node net.ipv4.ip_local_reserved_ports="$PORTS" net.ipv4.vs.bpf_mode=1
topo_exec node ip link add kube-ipvs0 type dummy
topo_exec node ip addr add "$VIP4/32" dev kube-ipvs0
topo_exec node ip addr add "$VIP6/128" dev kube-ipvs0 nodad
for vip in "$VIP4" "$VIP6"; do
	fam=4
	[ "$vip" = "$VIP6" ] && fam=6
	for port in 80 8080; do
		topo_exec node "$tool" service tcp "$vip" "$port" --snat || fail "SNAT service $vip $port"
		rip=$(topo_ip pod2a "$fam")
		[ "$fam" = 6 ] && rip="[$rip]" && svc="[$vip]:$port" || svc="$vip:$port"
		topo_exec node ipvsadm -a -t "$svc" -r "$rip:$port" -m || fail "real server for $svc"
	done
done
topo_exec node ipvsadm -Ln | sed 's/^/      /'
# conntrack live in node (a conntrack match in FORWARD and INPUT), proved
# by a tracked ping; Service connections must add nothing to it
# (built into the whole-kernel builds: nothing to load there)
[ -e /proc/sys/net/netfilter/nf_conntrack_max ] || modprobe nf_conntrack ||
	fail "modprobe nf_conntrack"
topo_exec node iptables -A FORWARD -m conntrack --ctstate NEW,ESTABLISHED,UNTRACKED -j ACCEPT
topo_exec node iptables -A INPUT -m conntrack --ctstate NEW,ESTABLISHED,UNTRACKED -j ACCEPT
topo_ping client node 4 || fail "ping node"
ct_before=$(topo_exec node conntrack -C) || fail "conntrack -C"
[ "$ct_before" -ge 1 ] || fail "conntrack is not tracking in node (ping left $ct_before entries)"

for fam in 4 6; do
	vip=$VIP4
	[ "$fam" = 6 ] && vip=$VIP6
	url="http://$vip/"
	[ "$fam" = 6 ] && url="http://[$vip]/"
	step "IPv$fam: curl $url from client"
	got=$(topo_exec client curl -s -m 10 "$url") || fail "curl $url"
	[ "$got" = pod2a ] || fail "curl $url answered '$got'"

	step "IPv$fam: 1 MB each way through $vip:8080; pod2a must see node's address"
	ans=$(topo_exec client timeout 60 /usr/bin/python3 "$peer" tcp-client \
		"$(topo_ip client "$fam")" 4500$fam "$vip" 8080 1000000 1000000) ||
		fail "tcp client over IPv$fam"
	echo "      pod2a saw: $ans"
	read -r addr port up down <<<"$ans"
	[ "$addr" = "$(topo_ip node "$fam")" ] || fail "pod2a saw $addr, not node's address"
	[ "$port" -ge "${PORTS%-*}" ] && [ "$port" -le "${PORTS#*-}" ] ||
		fail "SNAT port $port outside $PORTS"
	[ "$up $down" = "1000000 1000000" ] || fail "bytes lost: $up up, $down down"
done

step "counters of the programs (ipvsbpf-datapath stats)"
stats=$("$dpt" stats --pin "$bpffs/dp") || fail "ipvsbpf-datapath stats"
echo "$stats" | sed 's/^/      /'
for want in "egress xlated" "ingress xlated"; do
	n=$(awk -v k="$want" '$1 " " $2 == k { print $3 }' <<<"$stats")
	[ "${n:-0}" -gt 0 ] || fail "no '$want' packets"
done
grep -q '^[a-z]* drop_' <<<"$stats" && fail "the programs dropped packets"
ct_after=$(topo_exec node conntrack -C) || fail "conntrack -C"
step "conntrack entries on node: $ct_before before the Service traffic, $ct_after after"
# by address too: no entry may name a VIP or the pod
svc_ct=$(topo_exec node conntrack -L 2>/dev/null |
	grep -c -e "$VIP4" -e "$VIP6" -e "$(topo_ip pod2a 4)" -e "$(topo_ip pod2a 6)")
[ "$svc_ct" -eq 0 ] || fail "$svc_ct conntrack entries for Service connections"
[ "$ct_after" -le "$ct_before" ] || fail "Service connections reached conntrack"
topo_exec node "$tool" show | sed 's/^/      /'

# 3. A SNAT port is reclaimed as safe only once its real server has left
# FIN_WAIT2. Two SNAT ports; a live session holds one. pod2a answers A and
# closes first; A's client closes in turn, and its FIN, which IPVS sees, is
# dropped after IPVS until the client retransmits it: pod2a's socket on
# the SNAT tuple is in FIN_WAIT2, where a new SYN gets an ACK that the
# client resets before it retries. B, from another client port, finds the
# range full: A's port is its last resort (snat_reused_unsafe), never a
# safe reuse (snat_reused), and B still connects.
dp_stat() { topo_exec node "$tool" show | awk -v n="$1" '$1 == n { print $2 }'; }
# B has a port: A's, as a last resort (or, wrongly, as a safe reuse)
b_has_port() { [ "$(dp_stat snat_reused_unsafe)" -ge 1 ] || [ "$(dp_stat snat_reused)" -ge 1 ]; }
step "a SNAT port whose real server is in FIN_WAIT2 is only a last resort"
topo_exec node "$tool" detach || fail "IPVS_CMD_DEL_BPF"
topo_exec node "$tool" attach "$bpffs/dp/ipvs_sessions" --snat4 "$(topo_ip node 4)" \
	--ports 41000-41001 || fail "IPVS_CMD_NEW_BPF with two ports"
topo_exec pod2a socat TCP-LISTEN:8081,fork,reuseaddr \
	SYSTEM:'echo hello; [ "$SOCAT_PEERPORT" != 41000 ] || sleep 120' </dev/null >/dev/null 2>&1 &
poll sh -c "ip netns exec pod2a ss -Hltn 'sport = :8081' | grep -q ." ||
	fail "no server on pod2a:8081"
topo_exec node "$tool" service tcp "$VIP4" 8081 --snat || fail "SNAT service $VIP4:8081"
topo_exec node ipvsadm -a -t "$VIP4:8081" -r "$(topo_ip pod2a 4):8081" -m ||
	fail "real server for $VIP4:8081"
cip=$(topo_ip client 4)
topo_exec client socat -u EXEC:"sleep 120" TCP:"$VIP4":8081,bind="$cip":41000 \
	</dev/null >/dev/null 2>&1 &
poll sh -c "ip netns exec pod2a ss -Htn state established | grep -q ':41000'" ||
	fail "the live session does not reach pod2a from port 41000"
fin="OUTPUT -p tcp --dport 8081 --tcp-flags FIN FIN -j DROP"
topo_exec node iptables -I $fin || fail "iptables $fin"
r0=$(tcp_counter client TcpOutRsts)
a=$(topo_exec client timeout 30 socat -u TCP:"$VIP4":8081,bind="$cip":47001 -) ||
	fail "connection A failed"
poll sh -c "ip netns exec node ipvsadm -Lnc | grep '$cip:47001' | grep -q TIME_WAIT" ||
	fail "IPVS did not see A's FIN: $(topo_exec node ipvsadm -Lnc)"
topo_exec pod2a ss -Htn state fin-wait-2 | grep -q "$(topo_ip node 4):41001" ||
	fail "pod2a is not in FIN_WAIT2 on SNAT port 41001: $(topo_exec pod2a ss -Htan)"
bout=$(mktemp)
topo_exec client timeout 30 socat -u TCP:"$VIP4":8081,bind="$cip":47002 - >"$bout" &
b=$!
poll b_has_port
echo "      while A's FIN is held back: snat_exhausted $(dp_stat snat_exhausted)," \
	"snat_reused $(dp_stat snat_reused), snat_reused_unsafe $(dp_stat snat_reused_unsafe)"
[ "$(dp_stat snat_reused)" = 0 ] || fail "A's port was reclaimed as safe while pod2a was in FIN_WAIT2"
[ "$(dp_stat snat_reused_unsafe)" -ge 1 ] ||
	fail "B did not take A's port as a last resort while A's FIN was held back"
topo_exec node iptables -D $fin || fail "iptables -D $fin"
wait $b || fail "connection B failed"
[ "$a" = hello ] && [ "$(cat "$bout")" = hello ] ||
	fail "answers: A '$a', B '$(cat "$bout")'"
rm -f "$bout"
[ "$(dp_stat snat_exhausted)" = 0 ] || fail "B was refused"
echo "      the client reset $(($(tcp_counter client TcpOutRsts) - r0)) segment(s) (pod2a's FIN_WAIT2 answering B's SYN)"
topo_exec node "$tool" show | sed 's/^/      /'

topo_exec node "$tool" detach || fail "IPVS_CMD_DEL_BPF"
topo_exec node "$dpt" detach --dev eth0 --pin "$bpffs/dp" || fail "ipvsbpf-datapath detach"
step "PASS: the SNAT programs run on $(uname -r) and translate real IPVS sessions"
