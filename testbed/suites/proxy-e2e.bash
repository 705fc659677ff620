# SPDX-License-Identifier: GPL-2.0
# The proxy end to end, in the mode $MODE (ipvs-bpf or ipvs); sourced by
# proxy-ipvs-bpf.sh and proxy-ipvs.sh. ipvsbpf-proxy runs on `node` from
# the manifests in testbed/manifests (file source, copied so the test can
# edit them), nginx in all four pods, dnsmasq in pod1b and pod2b.
#   - ClusterIP (from a pod), NodePort, LoadBalancer IP and external IP
#     (from `client`) reach pods on node and on node2; in ipvs mode also
#     a ClusterIP from off-cluster and from one of its own backends;
#   - eTP=Local: only the local pod, which sees the real client address;
#     the health-check node port answers with one local endpoint;
#   - ClientIP affinity sticks; an endpoint removed from its slice drains;
#   - UDP DNS through a ClusterIP keeps answering while a backend goes;
#   - kill -9 of the proxy during a bounded wrk run loses no request and
#     the restarted proxy adopts IPVS without a single change;
#   - ipvs-bpf: conntrack stays empty; --cleanup leaves nothing behind.
. "$(dirname "$0")/lib.sh"
need ipvsadm curl nginx conntrack wrk dig dnsmasq iptables-save ipset

proxy=$TOP/build/proxy/ipvsbpf-proxy
[ -x "$proxy" ] || fail "no $proxy (run testbed/build-proxy)"
MAN=$(mktemp -d /tmp/ipvsbpf-e2e.XXXXXX)
LOG=$MAN.log
# `ip netns exec` mounts a fresh /sys, hiding /sys/fs/bpf: pin on a bpffs
# of our own, outside /sys.
BPFFS=/run/ipvsbpf-e2e-bpffs
PIN=$BPFFS/pins
PORTS=61000-61999
PID=
NODE=$(topo_ip node 4)
CLIENT=$(topo_ip client 4)

proxy_args=(--proxy-mode "$MODE" --source file --manifests "$MAN"
	--hostname-override node --cluster-cidr 198.18.0.0/16,2001:db8:1::/48
	--nodeport-addresses 192.0.2.0/24,2001:db8::/64
	--healthz-bind-address "$NODE:10256" --metrics-bind-address 127.0.0.1:10249
	--bpf-pin-path "$PIN" --snat-port-range "$PORTS" --uplink eth0
	--ipvs-min-sync-period 200ms --ipvs-sync-period 30s)

cleanup() {
	local rc=$?
	if [ "$rc" != 0 ]; then
		echo "      --- proxy log (last 30 lines)"
		tail -30 "$LOG" | sed 's/^/      /'
		echo "      --- node: addresses, local routes, KUBE rules"
		topo_exec node ip -br addr | sed 's/^/      /'
		topo_exec node ip -6 route show table local | grep -v fe80 | sed 's/^/      /'
		topo_exec node ip6tables-save 2>/dev/null | grep -c KUBE | sed 's/^/      ip6tables KUBE lines: /'
	fi
	[ -n "$PID" ] && kill -9 "$PID" 2>/dev/null
	topo_exec node "$proxy" --cleanup --bpf-pin-path "$PIN" --snat-port-range "$PORTS" --uplink eth0 \
		>/dev/null 2>&1
	topo_kill_ns
	topo_down
	rm -rf "$MAN"
	umount "$BPFFS" 2>/dev/null && rmdir "$BPFFS"
}
trap cleanup EXIT

start_proxy() {
	# ip netns exec execs the proxy in place: $! is the proxy itself
	# (topo_exec, a function, would put a subshell in between)
	ip netns exec node "$proxy" "${proxy_args[@]}" >>"$LOG" 2>&1 &
	PID=$!
	local i
	# healthy, and a first sync done (the last-sync timestamp is set)
	for i in $(seq 1 300); do
		if topo_exec client curl -s -m 1 -o /dev/null -w '%{http_code}' \
			"http://$NODE:10256/healthz" 2>/dev/null | grep -qx 200 &&
			[ "$(metric kubeproxy_sync_proxy_rules_last_timestamp_seconds)" != 0 ]; then
			return 0
		fi
		kill -0 "$PID" 2>/dev/null || break
		sleep 0.2
	done
	sed 's/^/      log: /' "$LOG" | tail -20
	fail "the proxy did not become healthy"
}

# metric NAME: the sum of NAME's samples over all labels (0 if none).
metric() {
	topo_exec node curl -s -m 2 http://127.0.0.1:10249/metrics |
		awk -v m="$1" '$1 == m || index($1, m "{") == 1 { s += $2 } END { printf "%g\n", s }'
}

# poll CMD...: up to 10 s for CMD to succeed.
poll() {
	local i
	for i in $(seq 1 50); do
		"$@" && return 0
		sleep 0.2
	done
	return 1
}

# drop_endpoint FILE ADDR: remove ADDR's endpoint entry from an
# EndpointSlice manifest (the "  - addresses: [ADDR]" item and its
# indented lines), written to a temporary file and renamed, as a
# ConfigMap update or kubectl would replace it.
drop_endpoint() {
	awk -v a="  - addresses: [$2]" '
		$0 == a { skip = 1; next }
		skip && /^    / { next }
		{ skip = 0; print }' "$1" >"$1.tmp" && mv "$1.tmp" "$1"
	grep -q "$2" "$1" && fail "drop_endpoint: $2 still in $1"
	return 0
}

# hits FROM URL N: N requests; prints the answers, one per line.
hits() {
	local from=$1 url=$2 n=$3 i
	for i in $(seq 1 "$n"); do
		topo_exec "$from" curl -s -m 3 "$url" || echo "<error>"
	done
}

# reach FROM URL POD...: 24 requests, no error, and every POD answers.
reach() {
	local from=$1 url=$2 ans p
	shift 2
	ans=$(hits "$from" "$url" 24)
	echo "$ans" | sort | uniq -c | tr '\n' ' ' | sed 's/^/      /;s/$/\n/'
	echo "$ans" | grep -qx '<error>' && fail "a request from $from to $url failed"
	for p in "$@"; do
		echo "$ans" | grep -qx "$p" || fail "$p never answered $url from $from"
	done
	return 0
}

[ -d /proc/sys/net/ipv4/vs ] || modprobe ip_vs || fail "modprobe ip_vs"
mkdir -p "$BPFFS"
mountpoint -q "$BPFFS" || mount -t bpf bpf "$BPFFS" || fail "mount bpffs on $BPFFS"
step "topology; nginx in every pod, dnsmasq in pod1b and pod2b"
topo_up
topo_check || fail "topology connectivity"
for p in pod1a pod1b pod2a pod2b; do
	topo_nginx "$p" || fail "nginx in $p"
done
for p in pod1b pod2b; do
	topo_exec "$p" dnsmasq --no-resolv --no-hosts --bind-interfaces \
		--listen-address="$(topo_ip $p 4)" --address="/which.test/$(topo_ip $p 4)" \
		--pid-file="/tmp/ipvsbpf-dnsmasq-$p.pid" || fail "dnsmasq in $p"
done
cp "$TOP"/testbed/manifests/*.yaml "$MAN/"

step "ipvsbpf-proxy --proxy-mode $MODE on node"
: >"$LOG"
start_proxy
topo_exec node ipvsadm -Ln | sed 's/^/      /'
n=$(topo_exec node ipvsadm -Ln | grep -cE '^(TCP|UDP)')
# web: 2 cluster IPs + NodePort on 192.0.2.1 and 2001:db8::1 + external +
# LB = 6; web-local: cluster, NodePort, LB = 3; web-sticky 1; dns 1.
# other-proxy belongs to someone else.
[ "$n" = 11 ] || fail "IPVS has $n virtual servers, expected 11"
topo_exec node ipvsadm -Ln | grep -q 198.19.0.99 && fail "programmed other-proxy's Service"

ALL="pod1a pod1b pod2a pod2b"
step "ClusterIP from pod1b to pods on node and node2 (v4 and v6)"
reach pod1b http://198.19.0.11/ pod1a pod2a
reach pod1b "http://[2001:db8:2::10]/" pod1a pod2a
if [ "$MODE" = ipvs ]; then
	# ipvs-bpf mode does not translate hairpin yet: docs/proxy.md
	step "ClusterIP from pod1a, one of the backends (hairpin)"
	reach pod1a http://198.19.0.10/ $ALL
fi
step "NodePort, LoadBalancer IP and external IP from client"
reach client "http://$NODE:30080/" $ALL
reach client "http://[2001:db8::1]:30080/" pod1a pod2a
reach client http://198.19.200.10/ $ALL
reach client http://198.19.100.10/ $ALL
if [ "$MODE" = ipvs ]; then
	step "ClusterIP from client (off-cluster: masqueraded by --cluster-cidr)"
	reach client http://198.19.0.10/ $ALL
fi

step "externalTrafficPolicy=Local: the local pod only, with the client's address"
reach client "http://$NODE:30081/" pod1a
ans=$(hits client "http://$NODE:30081/ip" 4 | sort -u)
[ "$ans" = "$CLIENT" ] || fail "pod1a saw '$ans', expected the client $CLIENT"
body=$(topo_exec client curl -s -m 3 "http://$NODE:30900/")
echo "      health check: $body"
echo "$body" | grep -q '"localEndpoints": *1' || fail "health-check node port: $body"
ans=$(hits client "http://$NODE:30080/ip" 8 | sort -u)
echo "$ans" | grep -qx "$CLIENT" && fail "eTP=Cluster NodePort traffic was not source-NATed"

step "ClientIP affinity: 12 requests from pod1b stick to one pod"
ans=$(hits pod1b http://198.19.0.12/ 12 | sort -u)
[ "$(echo "$ans" | wc -l)" = 1 ] || fail "affinity broken: $(echo $ans)"

step "UDP DNS through 198.19.0.53 from pod1a, while pod2b leaves"
dns() { topo_exec pod1a dig +short +time=2 +tries=1 @198.19.0.53 which.test A; }
ans=$(for i in $(seq 1 8); do dns || echo "<error>"; done | sort | uniq -c)
echo "$ans" | sed 's/^/      /'
echo "$ans" | grep -q '<error>\|timed out' && fail "a DNS query failed"
drop_endpoint "$MAN/slice-dns-1.yaml" 198.18.2.3
poll sh -c "! ip netns exec node ipvsadm -Ln -u 198.19.0.53:53 | grep -q 198.18.2.3" ||
	fail "pod2b still a DNS backend after its removal"
ans=$(for i in $(seq 1 8); do dns || echo "<error>"; done | sort | uniq -c)
echo "$ans" | sed 's/^/      /'
echo "$ans" | grep -q '<error>\|timed out' && fail "a DNS query failed after the removal"

step "draining: pod2b leaves web (web-v4 slice); no new connection reaches it"
drop_endpoint "$MAN/slice-web-v4.yaml" 198.18.2.3
poll sh -c "! ip netns exec node ipvsadm -Ln -t 198.19.0.10:80 | grep -q '198.18.2.3:80 *Masq *1 '" ||
	fail "pod2b kept weight 1"
ans=$(hits client "http://$NODE:30080/" 24)
echo "$ans" | grep -qx pod2b && fail "pod2b still got new connections"
echo "$ans" | grep -qx '<error>' && fail "a request failed while pod2b drained"

step "kill -9 during a bounded wrk run (8 s, 4 connections) on the NodePort"
topo_exec client wrk -t 1 -c 4 -d 8s --timeout 3s "http://$NODE:30080/" >"$MAN/wrk" 2>&1 &
wrk=$!
sleep 2
kill -9 "$PID"
wait "$PID" 2>/dev/null
kill -0 "$PID" 2>/dev/null && fail "the proxy survived kill -9"
PID=
sleep 1
start_proxy
wait "$wrk"
sed 's/^/      /' "$MAN/wrk"
grep -q 'requests in' "$MAN/wrk" || fail "wrk did not run"
grep -qE 'Socket errors|Non-2xx' "$MAN/wrk" && fail "requests were lost across the restart"
req=$(metric ipvsbpf_ipvs_requests_total)
echo "      IPVS requests after the restart's first sync: ${req:-none}"
[ "$req" = 0 ] || fail "the restarted proxy changed IPVS ($req requests) instead of adopting it"

if [ "$MODE" = ipvs-bpf ]; then
	step "conntrack on node: nothing from Service traffic"
	ct=$(topo_exec node conntrack -L 2>/dev/null | grep -c 'dport=80\|dport=30080\|dport=53' || true)
	topo_exec node conntrack -C
	[ "$ct" = 0 ] || fail "$ct conntrack entries for Service traffic in ipvs-bpf mode"
	topo_exec node tc filter show dev eth0 egress | grep -q ipvsbpf || fail "no egress filter"
fi

step "--cleanup leaves nothing"
kill "$PID"
wait "$PID" 2>/dev/null
PID=
topo_exec node "$proxy" --cleanup --bpf-pin-path "$PIN" --snat-port-range "$PORTS" --uplink eth0 ||
	fail "--cleanup failed"
left=$(topo_exec node ipvsadm -Ln | grep -cE '^(TCP|UDP)' || true)
[ "$left" = 0 ] || fail "$left virtual servers left"
topo_exec node iptables-save | grep -q 'KUBE-' && fail "KUBE- iptables rules left"
topo_exec node ipset list -n 2>/dev/null | grep -q '^KUBE-' && fail "ipsets left"
topo_exec node ip link show kube-ipvs0 >/dev/null 2>&1 && fail "kube-ipvs0 left"
topo_exec node tc filter show dev eth0 egress | grep -q . && fail "tc filters left"
[ -e "$PIN" ] && fail "pins left under $PIN"
[ "$(topo_exec node cat /proc/sys/net/ipv4/vs/bpf_mode 2>/dev/null || echo 0)" = 0 ] ||
	fail "bpf_mode still on"
step "PASS: $MODE end to end"
