#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Suite snat-capacity: new connections through the SNAT path as fast as
# the guest goes, against one backend, with the proxy's default SNAT
# range: many more connections than the range has ports. ipvsbpf-proxy in
# ipvs-bpf mode (tc programs on node's uplink), ab from client to Service
# `bench` (testbed/manifests/bench), whose only endpoint is pod2a on
# node2; nginx closes first (HTTP/1.0), so every port comes back with the
# backend's socket in TIME_WAIT on it. Two phases:
#   1. the NodePort, for a minute (SNAT_CAPACITY_SECONDS; 30 s in make
#      test);
#   2. right after, the LoadBalancer address for 10 s (SNAT_TWIN_SECONDS).
#      The client draws its ports anew for each destination, so many of
#      these connections come from a client addr:port whose NodePort
#      session IPVS still holds: after DNAT both look the same, and IPVS
#      makes the new one a twin (translated by IPVS itself, with a SNAT
#      port of its own, reclaimed like any other).
#
# Each phase passes only with no failed request, no SYN retransmitted by
# the client (a SYN IPVS refused, or one the backend's TIME_WAIT socket
# turned away, costs a 1 s retransmission that ab's rate would hide), no
# connection refused by IPVS (snat_exhausted) and the ports reclaimed only
# where the backend takes the new SYN (snat_reused, never
# snat_reused_unsafe); the second also needs twins to have been made.
. "$(dirname "$0")/lib.sh"
need ab nstat curl
MODE=ipvs-bpf
. "$(dirname "$0")/proxy-lib.bash"

SECS=${SNAT_CAPACITY_SECONDS:-60}
TWIN_SECS=${SNAT_TWIN_SECONDS:-10}
# the proxy's default range (cli.rs DEFAULT_SNAT_PORT_RANGE)
PORTS=61000-65000
RANGE=4001
proxy_set_mode ipvs-bpf

proxy_cluster_up
bench_manifests
step "ipvsbpf-proxy --proxy-mode ipvs-bpf --snat-port-range $PORTS"
start_proxy
nodeport="http://$NODE:30090/"
lb="http://$BENCH_LB_IP/"
for url in "$nodeport" "$lb"; do
	poll sh -c "[ \"\$(ip netns exec client curl -s -m 3 $url)\" = pod2a ]" ||
		fail "$url does not reach pod2a"
done

# phase URL SECS MIN: ab -c 8 against URL for SECS seconds, at least MIN
# connections; the checks above. Sets TWINS, the twins it made.
phase() {
	local url=$1 secs=$2 min=$3 out rc done failed syns exhausted reused unsafe
	local s0 c0 b0 e0 r0 u0 t0
	s0=$(syn_retrans client)
	c0=$(tcp_snap client)
	b0=$(tcp_snap pod2a)
	e0=$(metric ipvsbpf_snat_exhausted_total)
	r0=$(metric ipvsbpf_snat_reused_total)
	u0=$(metric ipvsbpf_snat_reused_unsafe_total)
	t0=$(metric ipvsbpf_bpf_twins_total)
	out=$(topo_exec client timeout $((secs + 30)) ab -q -r -s 5 -c 8 -t "$secs" -n 500000 "$url" 2>&1)
	rc=$?
	grep -E '^(Complete|Failed) requests|^Requests per second|^Non-2xx|^  (50|99|100)%' <<<"$out" |
		sed 's/^/      /'
	[ "$rc" = 0 ] || fail "ab exited $rc: $(tail -3 <<<"$out")"
	done=$(awk '/^Complete requests:/ { print $3 }' <<<"$out")
	failed=$(awk '/^Failed requests:/ { print $3 }' <<<"$out")
	syns=$(( $(syn_retrans client) - s0 ))
	exhausted=$(( $(metric ipvsbpf_snat_exhausted_total) - e0 ))
	reused=$(( $(metric ipvsbpf_snat_reused_total) - r0 ))
	unsafe=$(( $(metric ipvsbpf_snat_reused_unsafe_total) - u0 ))
	TWINS=$(( $(metric ipvsbpf_bpf_twins_total) - t0 ))
	echo "      connections $done, SYN retransmissions $syns, snat_exhausted +$exhausted," \
		"snat_reused +$reused, snat_reused_unsafe +$unsafe, twins +$TWINS"
	[ "${failed:-1}" = 0 ] || fail "$failed requests failed"
	grep -q '^Non-2xx' <<<"$out" && fail "non-2xx answers"
	[ "${done:-0}" -gt "$min" ] ||
		fail "only $done connections in ${secs}s: too few to use the $RANGE ports over"
	[ "$exhausted" = 0 ] || fail "IPVS refused $exhausted connections (snat_exhausted)"
	if [ "$syns" != 0 ]; then
		echo "      client's counters that moved:" $(tcp_moved "$c0" "$(tcp_snap client)")
		echo "      backend's (pod2a) counters that moved:" $(tcp_moved "$b0" "$(tcp_snap pod2a)")
		fail "$syns SYN retransmissions at the client"
	fi
	[ "$reused" -gt 0 ] || fail "no SNAT port was reclaimed"
	[ "$unsafe" = 0 ] || fail "$unsafe ports reclaimed where the backend might refuse the SYN"
}

step "ab -c 8 -t $SECS against $nodeport (short connections, one backend)"
phase "$nodeport" "$SECS" $((RANGE + RANGE / 2))
step "ab -c 8 -t $TWIN_SECS against $lb (the same backend: twins of the NodePort's sessions)"
phase "$lb" "$TWIN_SECS" "$RANGE"
[ "$TWINS" -gt 0 ] || fail "no twin made: the LoadBalancer connections met no NodePort session"
exit 0
