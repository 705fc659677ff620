#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Suite proxy-topologies: ipvsbpf-proxy in ipvs-bpf mode on nodes whose
# pods are not all behind the uplink, and behind a stateful firewall.
#   - overlay: node and node2 reach each other's pods only over VXLAN
#     (flannel's way: a point-to-point VXLAN device, pod CIDR routes on
#     it); a SNAT NodePort to node2's pods works and they see the node;
#     then over IPIP (Calico's way: tunl0, routes via the peer node) and
#     WireGuard, devices without a link-layer header that take the
#     programs' L3 pair; the same checks; an IPsec vti device, which
#     neither pair can serve, is refused and named;
#   - a second uplink: the pod CIDR routes go over a second link between
#     node and node2; the same checks; a device that stopped routing the
#     cluster CIDR while no proxy ran loses the programs at the next start;
#   - a stateful FORWARD firewall (policy drop, ESTABLISHED,RELATED
#     accepted, new connections to the pods' port allowed, as a CNI's
#     policy or a host firewall would have it): Service replies are
#     untracked in ipvs-bpf mode and are dropped, until the rule
#     docs/operations.md gives (`-m ipvs --ipvs -j ACCEPT`) is added;
#     `ct state untracked accept` in nftables works the same. In ipvs mode
#     (conntrack) the same firewall lets Service traffic through as is.
# Each case asserts on traffic, and that it took the path it is about.
# The replies come back over eth0 (node2 reaches the node's address
# directly), so the L3 ingress program is proved by the host test
# snat_tun, not here.
MODE=ipvs-bpf
. "$(dirname "$0")/lib.sh"
need ipvsadm curl nginx conntrack dig dnsmasq iptables-save ipset bc bpftool wg

. "$(dirname "$0")/proxy-lib.bash"

proxy_cluster_up
step "ipvsbpf-proxy --proxy-mode ipvs-bpf on node"
start_proxy

# ours_on DEV: node's DEV has our program on egress; no_filter_on DEV:
# it has no egress filter at all
ours_on() { topo_exec node tc filter show dev "$1" egress | grep -q ipvsbpf; }
no_filter_on() { ! topo_exec node tc filter show dev "$1" egress | grep -q .; }

# tx_packets NS DEV
tx_packets() { topo_exec "$1" cat "/sys/class/net/$2/statistics/tx_packets"; }

# via_node2 DEV: 16 NodePort requests from client reach node2's pods over
# DEV (node's route to 198.18.2.0/24 uses it, and its packet counter
# moves), every request is answered, and node2's pods see the node.
via_node2() {
	local dev=$1 before after ans
	topo_exec node ip route get 198.18.2.2 | grep -q "dev $dev" ||
		fail "node does not route node2's pods over $dev: $(topo_exec node ip route get 198.18.2.2)"
	# The route change itself wakes the proxy (its route watch): nothing
	# in the Services changed, and the next full sync is 30 s away.
	poll ours_on "$dev" || fail "no tc program on $dev"
	before=$(tx_packets node "$dev")
	ans=$(hits client "http://$NODE:30080/ip" 16 | sort | uniq -c)
	after=$(tx_packets node "$dev")
	echo "$ans" | sed 's/^/      /'
	echo "      $dev sent $((after - before)) packets"
	echo "$ans" | grep -q '<error>' && fail "a NodePort request failed with node2's pods over $dev"
	echo "$ans" | grep -qE "pod2. $CLIENT\$" && fail "node2's pods saw the client: not source-NATed on $dev"
	echo "$ans" | grep -qE "pod2. $NODE\$" || fail "node2's pods never answered over $dev"
	[ "$((after - before))" -ge 16 ] || fail "$dev carried $((after - before)) packets: not the path"
}

# pod_routes_via NODE_GW NODE2_GW DEV: point each node's route to the
# other's pods at GW on DEV (node's side, node2's side).
pod_routes_via() {
	topo_exec node ip route replace 198.18.2.0/24 via "$1" dev "$3" onlink
	topo_exec node2 ip route replace 198.18.1.0/24 via "$2" dev "$3" onlink
}

step "overlay: node2's pods only over VXLAN (a flannel-like vxlan device per node)"
for n in node node2; do
	[ "$n" = node ] && { me=$(topo_ip node 4); peer=$(topo_ip node2 4); a=198.18.1.0; } ||
		{ me=$(topo_ip node2 4); peer=$(topo_ip node 4); a=198.18.2.0; }
	topo_exec "$n" ip link add vxlan0 type vxlan id 42 dstport 4789 local "$me" remote "$peer" dev eth0 ||
		fail "vxlan0 in $n"
	topo_exec "$n" ip link set vxlan0 mtu 1450 up
	topo_exec "$n" ip addr add "$a/32" dev vxlan0
done
pod_routes_via 198.18.2.0 198.18.1.0 vxlan0
via_node2 vxlan0

# l3_pair DEV: the device carries the programs' L3 pair, not the Ethernet
# one (tc shows the kernel's names, cut to 15 characters)
l3_pair() {
	topo_exec node tc filter show dev "$1" egress | grep -q 'ipvsbpf_l3_egre' ||
		fail "$1 has no link-layer header but does not carry ipvsbpf_l3_egress: $(topo_exec node tc filter show dev "$1" egress)"
	topo_exec node tc filter show dev "$1" ingress | grep -q 'ipvsbpf_l3_ingr' ||
		fail "$1 does not carry ipvsbpf_l3_ingress"
}

step "overlay: node2's pods only over IPIP (Calico's IPIP mode: tunl0, no link-layer header)"
# ipip's fallback device tunl0 appears in every namespace once the module
# is in; with no remote of its own it sends to the route's gateway.
modprobe ipip || fail "modprobe ipip"
for n in node node2; do
	[ "$n" = node ] && a=198.18.1.0 || a=198.18.2.0
	topo_exec "$n" ip link set tunl0 up || fail "tunl0 in $n"
	topo_exec "$n" ip addr add "$a/32" dev tunl0
done
pod_routes_via "$(topo_ip node2 4)" "$(topo_ip node 4)" tunl0
via_node2 tunl0
l3_pair tunl0

step "overlay: node2's pods only over WireGuard (ARPHRD_NONE)"
wgdir=$(mktemp -d)
for n in node node2; do
	(umask 077 && wg genkey >"$wgdir/$n.key") || fail "wg genkey"
	wg pubkey <"$wgdir/$n.key" >"$wgdir/$n.pub"
done
for n in node node2; do
	if [ "$n" = node ]; then
		peer=node2 a=198.18.1.0 theirs=198.18.2.0/24
	else
		peer=node a=198.18.2.0 theirs=198.18.1.0/24
	fi
	topo_exec "$n" ip link add wg0 type wireguard || fail "wg0 in $n (module wireguard)"
	# The peer's node address too: the SNATed requests come from it, and
	# WireGuard drops what arrives from outside a peer's allowed IPs.
	topo_exec "$n" wg set wg0 listen-port 51820 private-key "$wgdir/$n.key" \
		peer "$(cat "$wgdir/$peer.pub")" endpoint "$(topo_ip "$peer" 4):51820" \
		allowed-ips "$theirs,$(topo_ip "$peer" 4)/32" || fail "wg set in $n"
	topo_exec "$n" ip link set wg0 up
	topo_exec "$n" ip addr add "$a/32" dev wg0
done
rm -rf "$wgdir"
pod_routes_via 198.18.2.0 198.18.1.0 wg0
via_node2 wg0
l3_pair wg0

step "an IPsec vti device routing cluster addresses is refused and named, not given a pair"
# xfrm puts a 14-byte MAC header back in front of what it decapsulates:
# neither pair could read the replies there (docs/proxy.md).
modprobe ip_vti || fail "modprobe ip_vti"
topo_exec node ip link add vti0 type vti local "$(topo_ip node 4)" remote 203.0.113.9 key 7 ||
	fail "vti0 in node"
topo_exec node ip link set vti0 up
topo_exec node ip route add 198.18.251.0/24 dev vti0
poll grep -q 'cannot carry the tc programs.*device=vti0' "$LOG" ||
	fail "the proxy did not name vti0 as a device it cannot serve"
grep 'device=vti0' "$LOG" | tail -n 1 | sed 's/^.*WARN /      proxy: /'
no_filter_on vti0 ||
	fail "vti0 got tc programs"
topo_exec node ip link del vti0

step "a second uplink: node2's pods over a link of their own (eth1)"
ip link add eth1 netns node type veth peer name eth1 netns node2
topo_exec node ip addr add 198.51.100.1/24 dev eth1
topo_exec node2 ip addr add 198.51.100.2/24 dev eth1
topo_exec node ip link set eth1 up
topo_exec node2 ip link set eth1 up
pod_routes_via 198.51.100.2 198.51.100.1 eth1
via_node2 eth1
# The overlay devices no longer route cluster addresses: their programs
# go after two reads of the routes without them, that is two route
# changes.
topo_exec node ip route add 198.18.250.0/24 dev eth1
sleep 1
topo_exec node ip route del 198.18.250.0/24 dev eth1
for dev in vxlan0 tunl0 wg0; do
	poll no_filter_on "$dev" ||
		fail "$dev routes no cluster address any more but keeps the programs"
done

step "a device that stopped routing cluster addresses while no proxy ran loses the programs"
# An update stops the proxy (SIGTERM, the programs stay); the pods move
# back to eth0 before the next one starts. eth1's programs are the
# earlier run's: with another SNAT configuration their ingress would
# pass the new sessions' replies untranslated.
end_proxy
pod_routes_via "$(topo_ip node2 4)" "$(topo_ip node 4)" eth0
ours_on eth1 ||
	fail "eth1 lost its programs with the proxy: nothing left to test"
start_proxy
ours_on eth1 &&
	fail "eth1 routes no cluster address any more but keeps the earlier run's programs"
# and a device that does route them keeps its programs: pod1a's
pod_dev=$(topo_exec node ip route get "$(topo_ip pod1a 4)" | grep -o 'dev [^ ]*' | cut -d' ' -f2)
ours_on "$pod_dev" ||
	fail "pod1a's device ($pod_dev) lost its programs at the proxy's start"
via_node2 eth0

# firewall: the stateful FORWARD policy on node, in iptables.
firewall() {
	topo_exec node iptables -P FORWARD DROP
	topo_exec node iptables -A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
	topo_exec node iptables -A FORWARD -d 198.18.0.0/16 -p tcp --dport 80 -j ACCEPT
}
firewall_off() {
	topo_exec node iptables -P FORWARD ACCEPT
	topo_exec node iptables -D FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT 2>/dev/null
	topo_exec node iptables -D FORWARD -d 198.18.0.0/16 -p tcp --dport 80 -j ACCEPT 2>/dev/null
	topo_exec node nft delete table inet ipvsbpf-test-fw 2>/dev/null
	return 0
}

# served N: how many of N NodePort requests from client were answered
# (short timeouts: an unanswered one is a dropped reply).
served() {
	hits client "http://$NODE:30080/" "$1" 2 | grep -cvx '<error>'
}

step "stateful FORWARD firewall, ipvs-bpf mode: untracked replies are dropped without the rule"
firewall
n=$(served 4)
echo "      answered: $n of 4"
[ "$n" = 0 ] || fail "$n requests answered through a stateful firewall that should drop untracked replies"
step "  ... and pass with iptables -m ipvs --ipvs -j ACCEPT (docs/operations.md)"
topo_exec node iptables -I FORWARD 1 -m ipvs --ipvs -j ACCEPT || fail "the xt_ipvs match"
reach client "http://$NODE:30080/" pod1a pod1b pod2a pod2b
topo_exec node iptables -D FORWARD -m ipvs --ipvs -j ACCEPT
# xt_ipvs holds ip_vs, which later suites unload; nft may drop its last
# reference a moment after the rule goes.
for i in $(seq 1 20); do
	lsmod | grep -q '^xt_ipvs ' || break
	rmmod xt_ipvs 2>/dev/null && break
	sleep 0.2
done
lsmod | grep -q '^xt_ipvs ' && fail "xt_ipvs still loaded after its rule went"
step "  ... or with nftables' ct state untracked accept, in the filter's own table"
# An accept in another table does not stop iptables' policy drop: the
# rule must sit where the drop is. This firewall is nftables' own.
firewall_off
topo_exec node nft -f - <<'NFT' || fail "nftables firewall"
table inet ipvsbpf-test-fw {
	chain forward {
		type filter hook forward priority 0; policy drop;
		ct state established,related accept
		ip daddr 198.18.0.0/16 tcp dport 80 accept
		ct state untracked accept
	}
}
NFT
reach client "http://$NODE:30080/" pod1a pod1b pod2a pod2b
firewall_off

step "stateful FORWARD firewall, ipvs mode: conntrack lets Service traffic through as is"
stop_proxy
proxy_set_mode ipvs
start_proxy
firewall
reach client "http://$NODE:30080/" pod1a pod1b pod2a pod2b
firewall_off

step "PASS: overlays (VXLAN, IPIP, WireGuard), second uplink and stateful firewall"
