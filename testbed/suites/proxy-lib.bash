# SPDX-License-Identifier: GPL-2.0
# testbed/suites/proxy-lib.bash: what the proxy suites (proxy-e2e.bash,
# proxy-demo.sh) share; sourced after lib.sh with MODE set (ipvs-bpf or
# ipvs). proxy_cluster_up builds the topology with nginx in every pod,
# dnsmasq in pod1b and pod2b, default routes on node and a copy of
# testbed/manifests in $MAN that tests may edit; start_proxy runs
# ipvsbpf-proxy on node from it. The EXIT trap kills the proxy, runs
# --cleanup and removes everything.
proxy=$TOP/build/proxy/ipvsbpf-proxy
[ -x "$proxy" ] || fail "no $proxy (run testbed/build-proxy)"
# health and metrics pages (http_get)
need busybox timeout
MAN=$(mktemp -d /tmp/ipvsbpf-proxy.XXXXXX)
LOG=$MAN.log
# `ip netns exec` mounts a fresh /sys, hiding /sys/fs/bpf: pin on a bpffs
# of our own, outside /sys.
BPFFS=/run/ipvsbpf-proxy-bpffs
PIN=$BPFFS/pins
PORTS=61000-61999
PID=
NODE=$(topo_ip node 4)
CLIENT=$(topo_ip client 4)

# proxy_set_mode MODE: the flags start_proxy runs the proxy with, in MODE.
proxy_set_mode() {
	MODE=$1
	proxy_args=(--proxy-mode "$MODE" --source file --manifests "$MAN"
		--hostname-override node --cluster-cidr 198.18.0.0/16,2001:db8:1::/48
		--nodeport-addresses 192.0.2.0/24,2001:db8::/64
		--healthz-bind-address "$NODE:10256" --metrics-bind-address 127.0.0.1:10249
		--bpf-pin-path "$PIN" --snat-port-range "$PORTS"
		--ipvs-min-sync-period 200ms --ipvs-sync-period 30s)
}
proxy_set_mode "$MODE"

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
	stop_proxy
	topo_kill_ns
	topo_down
	rm -rf "$MAN"
	umount "$BPFFS" 2>/dev/null && rmdir "$BPFFS"
}
trap cleanup EXIT

# stop_proxy: kill the proxy, if running, and undo what it programmed
# (--cleanup); its exit status is --cleanup's.
stop_proxy() {
	if [ -n "$PID" ]; then
		kill -9 "$PID" 2>/dev/null
		wait "$PID" 2>/dev/null
		PID=
	fi
	topo_exec node "$proxy" --cleanup --bpf-pin-path "$PIN" --snat-port-range "$PORTS" \
		>>"$LOG" 2>&1
}

# end_proxy: stop the proxy as a DaemonSet update does (SIGTERM) and
# wait for it; what it programmed stays.
end_proxy() {
	kill "$PID"
	wait "$PID" 2>/dev/null
	PID=
}

start_proxy() { start_proxy_with "$proxy" "${proxy_args[@]}"; }

# start_proxy_with CMD...: run CMD in node's namespace as the proxy (it
# must exec the proxy in place), and wait until it is healthy.
start_proxy_with() {
	# ip netns exec execs the proxy in place: $! is the proxy itself
	# (topo_exec, a function, would put a subshell in between)
	ip netns exec node "$@" >>"$LOG" 2>&1 &
	PID=$!
	local end=$((SECONDS + ${PROXY_START_TIMEOUT:-180}))
	# healthy, and a first sync done (the last-sync timestamp is set),
	# within PROXY_START_TIMEOUT seconds
	while [ "$SECONDS" -lt "$end" ]; do
		if http_get client "http://$NODE:10256/healthz" 1 >/dev/null 2>&1 &&
			[ "$(metric kubeproxy_sync_proxy_rules_last_timestamp_seconds)" != 0 ]; then
			return 0
		fi
		kill -0 "$PID" 2>/dev/null || break
		sleep 0.2
	done
	sed 's/^/      log: /' "$LOG" | tail -20
	fail "the proxy did not become healthy"
}

# Service bench's LoadBalancer address (testbed/manifests/bench)
BENCH_LB_IP=198.19.200.20

# bench_manifests: the proxy's manifests are testbed/manifests/bench's
# alone (Service bench, one endpoint: pod2a), with its LoadBalancer address
bench_manifests() {
	rm -f "$MAN"/*.yaml
	cp "$TOP"/testbed/manifests/bench/*.yaml "$MAN/" || fail "copying testbed/manifests/bench"
	grep -q "ip: $BENCH_LB_IP\$" "$MAN/services.yaml" ||
		fail "Service bench's manifest lacks the LB address $BENCH_LB_IP"
}

# metric NAME: the sum of NAME's samples over all labels (0 if none).
metric() {
	http_get node http://127.0.0.1:10249/metrics 2>/dev/null |
		awk -v m="$1" '$1 == m || index($1, m "{") == 1 { s += $2 } END { printf "%g\n", s }'
}

# drop_endpoint FILE ADDR: remove ADDR's endpoint entry from an
# EndpointSlice manifest (the "  - addresses: [ADDR]" item and its
# indented lines), written to a temporary file and renamed, as a
# ConfigMap update or kubectl would replace it. Like the EndpointSlice
# controller, it stamps the change's trigger time on the slice.
drop_endpoint() {
	local now
	now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
	awk -v a="  - addresses: [$2]" -v t="$now" '
		$0 == a { skip = 1; next }
		skip && /^    / { next }
		/^  annotations: / { next }
		{ skip = 0; print }
		$0 == "metadata:" {
			print "  annotations: {endpoints.kubernetes.io/last-change-trigger-time: \"" t "\"}"
		}' "$1" >"$1.tmp" && mv "$1.tmp" "$1"
	grep -q "$2" "$1" && fail "drop_endpoint: $2 still in $1"
	return 0
}

# hits FROM URL N [SECS]: N requests, each on a connection of its own
# and given SECS (3) to finish; prints the answers, one per line, and
# <error> for each that failed. One curl process makes them all in turn:
# under TCG a process per request cost ~0.4 s each.
hits() {
	local from=$1 url=$2 n=$3 secs=${4:-3} urls=() i
	for ((i = 0; i < n; i++)); do
		urls+=("$url")
	done
	topo_exec "$from" curl -s -g -m "$secs" -H 'Connection: close' \
		-w '%{onerror}<error>\n' "${urls[@]}"
	return 0
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

proxy_cluster_up() {
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
	# A node has a default route; ipvs-bpf mode finds its uplink by it.
	topo_exec node ip route add default via "$CLIENT"
	topo_exec node ip -6 route add default via "$(topo_ip client 6)"
	: >"$LOG"
}
