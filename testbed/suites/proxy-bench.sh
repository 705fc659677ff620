#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Suite proxy-bench: the control plane of ipvsbpf-proxy at 1,000 and 10,000
# ClusterIP Services x 10 endpoints, ipvs-bpf and ipvs modes side by side in
# the same run (`make bench-proxy`). Manifests come from
# testbed/proxy-bench-manifests.py through the file source. Per mode and
# size, in a fresh network namespace:
#   - full sync: from the proxy's start until its first successful sync
#     (kubeproxy_sync_proxy_rules_last_timestamp_seconds, checked against
#     IPVS holding N TCP virtual servers), with the proxy's own full-sync
#     duration next to it (IPVS and the mode's rules; the rest is start-up,
#     parsing and the model);
#   - memory: VmRSS and VmHWM once synced; CPU time (user: the proxy's
#     own work; system: mostly the kernel programming IPVS) up to then;
#   - change latency: one endpoint added to service 0's slice, until
#     ipvsadm shows it (includes up to 250 ms of the file source's poll);
#   - partial sync cost: kubeproxy_sync_partial_proxy_rules_duration_seconds
#     over those changes. A change must cost the same whatever the number of
#     Services (O(change)): the suite fails if it costs more than 10 times
#     as much at the largest size as at the smallest.
# Results: a table, also as proxy-bench.tsv in the run's results directory.
# BENCH_SIZES (1000 10000), BENCH_MODES (ipvs-bpf ipvs; ipvs alone runs on
# an unpatched kernel) and BENCH_CHANGES (5) change the run.
#
#   +-------------------------------+        +-----------------+
#   | bench                         |  veth  | bench-peer      |
#   | ipvsbpf-proxy   eth0 192.0.2.1+--------+ eth0 192.0.2.254|
#   | default via 192.0.2.254       |        |                 |
#   +-------------------------------+        +-----------------+
#
# The periodic full sync is set to 1 h so that none lands among the changes
# (at 10,000 Services a full sync under TCG can outlast the default 30 s).
. "$(dirname "$0")/lib.sh"
export LC_ALL=C # a '.' in $EPOCHREALTIME and in awk's numbers
need ipvsadm curl ip nsenter iptables ipset awk sort
[ -x /usr/bin/python3 ] || skip "/usr/bin/python3 is not installed: run testbed/setup (Debian package python3)"

proxy=$TOP/build/proxy/ipvsbpf-proxy
gen=$TOP/testbed/proxy-bench-manifests.py
[ -x "$proxy" ] || fail "no $proxy (run testbed/build-proxy)"

SIZES=${BENCH_SIZES:-1000 10000}
MODES=${BENCH_MODES:-ipvs-bpf ipvs}
CHANGES=${BENCH_CHANGES:-5}
E=10
NS=bench
PEER=bench-peer
ADDR=192.0.2.1
GW=192.0.2.254
CIDR=192.0.2.0/24
PIN=/sys/fs/bpf/ipvsbpf-bench
PORTS=61000-61999
METRICS=127.0.0.1:10249
SYNC_TIMEOUT=1500
CHANGE_TIMEOUT=30
TSV=${IPVSBPF_RESULTS:-/tmp}/proxy-bench.tsv
WORK=$(mktemp -d /tmp/ipvsbpf-bench.XXXXXX)
BPFFS=$(mktemp -d /tmp/ipvsbpf-bench-bpffs.XXXXXX)
PID=

# bench_net CMD...: CMD in the netns, for the polls: nsenter switches the
# network namespace only, much cheaper than `ip netns exec`'s mounts.
bench_net() {
	nsenter --net="/run/netns/$NS" "$@"
}

# bench_exec CMD...: CMD in the netns with the root bpffs on /sys/fs/bpf.
# `ip netns exec` mounts the netns's own sysfs on /sys, which hides the
# bpffs mounted on /sys/fs/bpf; the same bpffs, bind-mounted on $BPFFS
# beforehand, goes back on top, so the proxy and --cleanup share its pins.
bench_exec() {
	# shellcheck disable=SC2016 # $0 and $@ are the inner shell's
	ip netns exec "$NS" sh -c 'mount --bind "$0" /sys/fs/bpf && exec "$@"' "$BPFFS" "$@"
}

ns_down() {
	ip netns del "$NS" 2>/dev/null
	ip netns del "$PEER" 2>/dev/null
	return 0
}

ns_up() {
	ns_down
	ip netns add "$NS" && ip netns add "$PEER" &&
		ip -n "$NS" link set lo up &&
		ip -n "$PEER" link set lo up &&
		ip link add eth0 netns "$NS" type veth peer name eth0 netns "$PEER" &&
		ip -n "$NS" addr add "$ADDR/24" dev eth0 &&
		ip -n "$PEER" addr add "$GW/24" dev eth0 &&
		ip -n "$NS" link set eth0 up &&
		ip -n "$PEER" link set eth0 up &&
		ip -n "$NS" route add default via "$GW" &&
		# the default, said aloud: the SNAT ports must stay out of it
		bench_net sysctl -qw net.ipv4.ip_local_port_range="32768 60999"
}

stop_proxy() {
	local i
	[ -n "$PID" ] || return 0
	kill "$PID" 2>/dev/null
	for i in $(seq 1 100); do
		kill -0 "$PID" 2>/dev/null || break
		sleep 0.1
	done
	kill -9 "$PID" 2>/dev/null
	wait "$PID" 2>/dev/null
	PID=
}

cleanup() {
	stop_proxy
	if [ -e "/run/netns/$NS" ]; then
		bench_exec "$proxy" --cleanup --bpf-pin-path "$PIN" --snat-port-range "$PORTS" \
			>/dev/null 2>&1
	fi
	ns_down
	# Never rm -r here: $BPFFS may still be the root bpffs.
	umount "$BPFFS" 2>/dev/null
	rmdir "$BPFFS" 2>/dev/null
	rm -rf "$WORK"
}
trap cleanup EXIT

# scrape: the proxy's metrics into $SCRAPE (empty if it does not answer).
scrape() {
	SCRAPE=$(bench_net curl -s -m 5 "http://$METRICS/metrics" 2>/dev/null)
}

# proxy_pid: the proxy's pid ($PID, which `ip netns exec` and sh exec into).
proxy_pid() {
	local p
	if [ "$(cat "/proc/$PID/comm" 2>/dev/null)" = ipvsbpf-proxy ]; then
		echo "$PID"
		return
	fi
	for p in $(ip netns pids "$NS"); do
		[ "$(cat "/proc/$p/comm" 2>/dev/null)" = ipvsbpf-proxy ] && echo "$p" && return
	done
}

show_log() {
	tail -n 20 "$1" | sed 's/^/      log: /'
}

# run MODE N: one measurement; appends its row to $ROWS.
run() {
	local mode=$1 n=$2 man log vip0 t0 ts vs i deadline synced=0 pid rss hwm
	local fsum fcount psum0 pcount0 psum pcount k added t1 seen lats=() lat_med lat_max
	local full full_polled proxy_full partial t files
	man=$WORK/man-$mode-$n
	# kept with the run's results: the proxy's own account of its syncs
	log=${IPVSBPF_RESULTS:-$WORK}/proxy-$mode-$n.log
	step "$mode: $n Services x $E endpoints"
	ns_up || fail "netns $NS with its uplink"
	if [ "$mode" = ipvs-bpf ] && ! bench_net test -e /proc/sys/net/ipv4/vs/bpf_mode; then
		fail "no net.ipv4.vs.bpf_mode: this IPVS is not the patched one (BENCH_MODES=ipvs runs the rest)"
	fi
	vip0=$(/usr/bin/python3 "$gen" --services "$n" --endpoints "$E" --out "$man" \
		--node-ip "$ADDR" | sed -n 's/^vip0=//p')
	[ -n "$vip0" ] || fail "generating the manifests"
	files=("$man"/*)
	echo "      manifests: $(du -sh "$man" | cut -f1) in ${#files[@]} files"

	t0=$EPOCHREALTIME
	bench_exec "$proxy" --source file --manifests "$man" --hostname-override node \
		--proxy-mode "$mode" --nodeport-addresses "$CIDR" \
		--metrics-bind-address "$METRICS" --healthz-bind-address 127.0.0.1:10256 \
		--bpf-pin-path "$PIN" --snat-port-range "$PORTS" \
		--ipvs-min-sync-period 0s --ipvs-sync-period 1h --v 2 >"$log" 2>&1 &
	PID=$!

	# (a) the first sync: its timestamp set, then IPVS holds N services
	# (counted only then: listing 110,000 lines competes with the proxy).
	deadline=$((SECONDS + SYNC_TIMEOUT))
	for ((i = 0; i < SYNC_TIMEOUT * 10 && SECONDS < deadline; i++)); do
		if ! kill -0 "$PID" 2>/dev/null; then
			show_log "$log"
			fail "$mode: the proxy exited before its first sync"
		fi
		scrape
		ts=$(sample kubeproxy_sync_proxy_rules_last_timestamp_seconds)
		if [ "$(calc "$ts > 0" 0)" = 1 ]; then
			vs=$(bench_net ipvsadm -Ln | grep -c '^TCP')
			if [ "$vs" = "$n" ]; then
				synced=1
				break
			fi
		fi
		sleep 0.1
	done
	full_polled=$(calc "$EPOCHREALTIME - $t0" 2)
	if [ "$synced" != 1 ]; then
		show_log "$log"
		fail "$mode: no complete sync of $n Services in ${SYNC_TIMEOUT}s (IPVS has ${vs:-?})"
	fi
	full=$(calc "$ts - $t0" 2)
	fsum=$(sample kubeproxy_sync_full_proxy_rules_duration_seconds_sum)
	fcount=$(sample kubeproxy_sync_full_proxy_rules_duration_seconds_count)
	proxy_full=$(calc "$fcount > 0 ? $fsum / $fcount : 0" 2)
	echo "      synced ${full}s after start (seen at ${full_polled}s);" \
		"proxy's full sync ${proxy_full}s over $(calc "$fcount" 0) sync(s)"

	# (b) memory once synced. The first sync may be followed by an empty
	# partial one (a change queued while it ran): let it pass first, so
	# that it counts neither in the memory figures nor among the changes.
	sleep 1
	pid=$(proxy_pid)
	[ -n "$pid" ] || fail "$mode: cannot find the proxy's process"
	rss=$(awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$pid/status")
	hwm=$(awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$pid/status")
	echo "      VmRSS ${rss} MiB, VmHWM ${hwm} MiB"
	# CPU the proxy used up to here (start, parsing, the model, the first
	# sync): user time is the proxy's own work, system time mostly the
	# kernel programming IPVS for it (netlink requests run in its context).
	# Fields 14 and 15 of /proc/PID/stat, after the ')' that ends comm.
	read -r cpu_user cpu_sys < <(sed 's/.*) //' "/proc/$pid/stat" |
		awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f %.2f\n", $12 / hz, $13 / hz }')
	echo "      CPU so far: user ${cpu_user}s, system ${cpu_sys}s"

	# (c) change latency, (d) partial sync cost over the same changes
	scrape
	psum0=$(sample kubeproxy_sync_partial_proxy_rules_duration_seconds_sum)
	pcount0=$(sample kubeproxy_sync_partial_proxy_rules_duration_seconds_count)
	for k in $(seq 1 "$CHANGES"); do
		added=$(/usr/bin/python3 "$gen" --change-only --extra "$k" --endpoints "$E" \
			--out "$man" | sed -n 's/^added=//p')
		[ -n "$added" ] || fail "rewriting change.yaml"
		t1=$EPOCHREALTIME
		seen=
		deadline=$((SECONDS + CHANGE_TIMEOUT + 1))
		for ((i = 0; i < CHANGE_TIMEOUT * 50 && SECONDS < deadline; i++)); do
			if bench_net ipvsadm -Ln -t "$vip0:80" | grep -qF -- "-> $added:80 "; then
				seen=$EPOCHREALTIME
				break
			fi
			sleep 0.02
		done
		if [ -z "$seen" ]; then
			show_log "$log"
			fail "$mode: endpoint $added of $vip0:80 not in IPVS after ${CHANGE_TIMEOUT}s"
		fi
		lats+=("$(calc "($seen - $t1) * 1000" 0)")
		# apart, so that each change is a sync of its own
		sleep 0.5
	done
	# The sync's duration is recorded after it programmed IPVS: wait for
	# the last one (10 s at most).
	for ((i = 0; i < 100; i++)); do
		scrape
		pcount=$(sample kubeproxy_sync_partial_proxy_rules_duration_seconds_count)
		[ "$(calc "$pcount - $pcount0 >= $CHANGES" 0)" = 1 ] && break
		sleep 0.1
	done
	psum=$(sample kubeproxy_sync_partial_proxy_rules_duration_seconds_sum)
	pcount=$(calc "$pcount - $pcount0" 0)
	[ "$pcount" -ge 1 ] || fail "$mode: $CHANGES changes made no partial sync"
	partial=$(calc "($psum - $psum0) / $pcount * 1000" 3)
	lat_med=$(median "${lats[@]}")
	lat_max=$(printf '%s\n' "${lats[@]}" | sort -n | tail -n 1)
	echo "      change latency (ms): ${lats[*]}; partial sync ${partial} ms mean over $pcount"
	PARTIAL[$mode/$n]=$partial

	stop_proxy
	t=$SECONDS
	bench_exec "$proxy" --cleanup --bpf-pin-path "$PIN" --snat-port-range "$PORTS" >>"$log" 2>&1 ||
		{ show_log "$log"; fail "$mode: --cleanup failed"; }
	echo "      --cleanup took $((SECONDS - t))s"
	[ -e "$PIN" ] && fail "$mode: --cleanup left pins under $PIN"
	ns_down
	rm -rf "$man"
	ROWS+=("$(printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s' "$mode" "$n" "$full" \
		"$proxy_full" "$cpu_user" "$cpu_sys" "$rss" "$hwm" "$lat_med" "$lat_max" "$partial")")
}

load_modules ip_vs ip_vs_rr
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf || fail "mount bpffs"
mount --bind /sys/fs/bpf "$BPFFS" || fail "bind-mount bpffs on $BPFFS"
[ -e "$PIN" ] && fail "$PIN exists: another proxy's pins?"

declare -A PARTIAL=()
ROWS=()
order=$MODES
for n in $SIZES; do
	for mode in $order; do
		run "$mode" "$n"
	done
	# alternate which mode goes first, so neither always runs on a fresh guest
	order=$(awk '{ for (i = NF; i > 0; i--) printf "%s%s", $i, (i > 1 ? " " : "\n") }' <<<"$order")
done

cols=(mode services full_sync_s proxy_full_sync_s cpu_user_s cpu_sys_s rss_mib hwm_mib
	change_median_ms change_max_ms partial_sync_mean_ms)
{
	(IFS=$'\t' && echo "${cols[*]}")
	printf '%s\n' "${ROWS[@]}" | sort -t "$(printf '\t')" -k2,2n -k1,1
} >"$TSV"
step "results (also in $TSV)"
printf '      %-8s %8s %8s %12s %7s %7s %8s %8s %10s %10s %10s\n' mode services "full s" \
	"proxy full s" "user s" "sys s" "RSS MiB" "HWM MiB" "chg med ms" "chg max ms" "partial ms"
tail -n +2 "$TSV" | while IFS=$'\t' read -r mode n full pfull usr sys rss hwm med max partial; do
	printf '      %-8s %8s %8s %12s %7s %7s %8s %8s %10s %10s %10s\n' "$mode" "$n" "$full" \
		"$pfull" "$usr" "$sys" "$rss" "$hwm" "$med" "$max" "$partial"
done

step "O(change): partial sync at the largest size against the smallest"
small=$(awk '{ print $1 }' <<<"$SIZES")
large=$(awk '{ print $NF }' <<<"$SIZES")
bad=
for mode in $MODES; do
	a=${PARTIAL[$mode/$small]}
	b=${PARTIAL[$mode/$large]}
	ratio=$(calc "$a > 0 ? $b / $a : 0" 2)
	echo "      $mode: ${a} ms at $small, ${b} ms at $large: x$ratio"
	[ "$(calc "$b > 10 * $a" 0)" = 1 ] && bad="$bad $mode"
done
[ -z "$bad" ] || fail "a change costs more than 10x at $large Services than at $small:$bad"
step "PASS: proxy control-plane benchmark"
