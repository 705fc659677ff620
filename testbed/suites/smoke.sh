# SPDX-License-Identifier: GPL-2.0
# smoke: an IPVS NAT service made with ipvsadm on `node`, two nginx
# backends in pod namespaces on that node, curl from `client`: both
# backends must answer, over IPv4 and IPv6.
. "$(dirname "$0")/lib.sh"
need ipvsadm nginx curl

VIP4=198.19.0.10
VIP6=2001:db8:2::10
REQUESTS=8

cleanup() {
	topo_kill_ns
	topo_down
}
trap cleanup EXIT

step "building the topology (client, node, node2, pods)"
topo_up
topo_check || fail "topology connectivity"

step "starting nginx in pod1a and pod1b"
topo_nginx pod1a || fail "nginx in pod1a"
topo_nginx pod1b || fail "nginx in pod1b"

step "IPVS NAT services $VIP4:80 and [$VIP6]:80 (rr) on node"
topo_exec node ip link add kube-ipvs0 type dummy
topo_exec node ip addr add "$VIP4/32" dev kube-ipvs0
topo_exec node ip addr add "$VIP6/128" dev kube-ipvs0 nodad
topo_exec node ipvsadm -A -t "$VIP4:80" -s rr || fail "ipvsadm -A v4"
topo_exec node ipvsadm -A -t "[$VIP6]:80" -s rr || fail "ipvsadm -A v6"
for p in pod1a pod1b; do
	topo_exec node ipvsadm -a -t "$VIP4:80" -r "$(topo_ip $p 4):80" -m || fail "ipvsadm -a $p v4"
	topo_exec node ipvsadm -a -t "[$VIP6]:80" -r "[$(topo_ip $p 6)]:80" -m || fail "ipvsadm -a $p v6"
done

# Backends must be up before the first request.
for p in pod1a pod1b; do
	for i in $(seq 1 50); do
		topo_exec "$p" curl -s -m 1 -o /dev/null http://127.0.0.1/ && break
		sleep 0.1
	done
done

for url in "http://$VIP4/" "http://[$VIP6]/"; do
	step "curl $url from client, $REQUESTS requests"
	answers=$(for i in $(seq 1 $REQUESTS); do topo_exec client curl -s -m 5 "$url" || echo "<error>"; done)
	echo "$answers" | sort | uniq -c | sed 's/^/      /'
	echo "$answers" | grep -qx '<error>' && fail "a request to $url failed"
	for p in pod1a pod1b; do
		echo "$answers" | grep -qx "$p" || fail "$p never answered on $url"
	done
done

# IPVS folds its per-CPU counters into the totals ipvsadm reads from the
# estimator, every two seconds: poll briefly before judging them.
want=$((2 * REQUESTS))
for i in $(seq 1 12); do
	conns=$(topo_exec node ipvsadm -Ln --stats | awk '$1 == "TCP" { s += $3 } END { print s + 0 }')
	[ "$conns" -ge "$want" ] && break
	sleep 0.5
done
step "ipvsadm -Ln --stats on node"
topo_exec node ipvsadm -Ln --stats | sed 's/^/      /'
[ "$conns" -ge "$want" ] || fail "IPVS counted $conns connections, expected at least $want"
step "PASS: both backends answered through IPVS over IPv4 and IPv6"
