#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Suite bench: the data-plane comparison (`make bench`; a short version in
# `make test`). One guest boot, one topology; only the Service
# implementation changes between cells, and the modes are interleaved over
# rounds, rotated each round, so that a drifting machine hits all alike.
#
# Paths (testbed/manifests/bench: Service `bench`, one endpoint, pod2a):
#   nodeport   client -> 192.0.2.1:30090 (node, SNAT) -> pod2a on node2
#   clusterip  pod1a -> 198.19.0.20:80 (node, no SNAT) -> pod2a on node2
#   lb         client -> 198.19.200.20:80, the LoadBalancer address
#              (routed to node, SNAT) -> pod2a on node2; not by default
#   (mode `direct` addresses pod2a itself: the floor, no Service at all)
# Modes: direct; ipvs and ipvs-bpf (ipvsbpf-proxy from the manifests);
# kube-proxy-iptables, kube-proxy-nftables and kube-proxy-ipvs, the real
# kube-proxy (testbed/k8s) on node, fed by a control plane on `control`
# (k8s-lib.bash, started once when such a mode is asked for) that holds
# the same Service, with pod2a's Pod made Ready so that the real
# EndpointSlice controller writes its slice.
# Workloads:
#   short  ab, one request per connection: requests/s and the latency of
#          the whole connection (connect + request + response), so that a
#          SYN that waited for a retransmission shows
#   ka     wrk, keep-alive: requests/s and wrk's latency
#   iperf  iperf3, one TCP flow: Gbit/s
#   udp    dnsperf against dnsmasq, UDP request/response (DNS): a socket
#          per client, reused, CONC queries outstanding; queries/s and
#          mean latency (dnsperf gives no percentiles)
# For every cell: the client's SYN retransmissions (nstat), connection
# errors, the guest's CPU time (/proc/stat) per request and, of it, the
# proxy's own (its periodic syncs: not the data path's), and in ipvs-bpf
# mode the kernel's and the tc programs' counters.
#
# Environment: BENCH_MODES (direct ipvs ipvs-bpf), BENCH_ROUNDS (5),
# BENCH_SECONDS (6), BENCH_PATHS (nodeport clusterip; lb), BENCH_WORKLOADS
# (short ka iperf), BENCH_CONC (8). Raw figures: $IPVSBPF_RESULTS/bench.jsonl,
# one JSON object per cell, read by testbed/bench-report.
#
# Scale axis: BENCH_OTHERS ("0"; `make bench-scale`: "0 1000 10000"), the
# number of other ClusterIP Services (one endpoint each, cluster IPs from
# 198.19.128.1) present beside `bench`; every cell is measured at each.
# ipvsbpf-proxy's modes read them from files; kube-proxy's iptables and
# nftables modes from the API server, which restarts on an etcd seeded
# with the same Services (BENCH_SEEDS: "N:DIR ...", made on the host by
# testbed/k8s/seed --first-vip 198.19.128.1). `direct` runs at 0 only (the
# floor holds no Service), and kube-proxy's ipvs mode too: it adds ipset
# entries one `ipset add` process at a time and does not finish a first
# sync of 1,000 Services under TCG.
#
# Instructions per request (vm-run --icount, one vCPU; IPVSBPF_ICOUNT=1):
# the guest's clock then advances one nanosecond per emulated instruction
# while the vCPU runs, so busy guest time (monotonic time less the idle
# and iowait time of /proc/timer_list) counts instructions. Each cell
# sends a fixed amount (BENCH_REQUESTS, 3000, with ab; four times as many
# with ab -k for keep-alive, whose requests cost a quarter; BENCH_IPERF_BYTES,
# 512M, with iperf3 -n) while the control plane and
# the proxies are frozen (cgroup v2 freezer: only the kernel's data path,
# the client and the backend run), then waits BENCH_DRAIN (200) seconds so
# that the sessions' expiry (IPVS, conntrack, the session map) falls in
# the window too. Each cell runs that window twice, first with the least
# the tool sends (one request per connection, 1 MiB), and counts the
# difference per extra unit: the tool's start, its first connections and
# the background cancel out.
#
# Where the instructions go (BENCH_PROFILE=PERIOD, counted runs only;
# `make bench-profile`): the full window's tool runs under perf, which
# samples the guest's one CPU every PERIOD ns of its clock (cpu-clock:
# there is no PMU under TCG), i.e. every PERIOD instructions. A symbol's
# samples times PERIOD over the units sent is its cost per unit:
# $IPVSBPF_RESULTS/profile-<mode>-<path>-<workload>-<others>-<round>.txt, laid
# side by side by testbed/lib/bench_profile.py. perf's start and end fall
# inside that window, so a profiled cell's count is a diagnostic, not the
# benchmark's figure.
#
# The run fails (after measuring everything) when a cell lost connections
# or requests, when a mode did not serve a path before its cells, or when
# a mode left the node unclean after its own cleanup.
. "$(dirname "$0")/lib.sh"
need ab wrk iperf3 dnsperf dnsmasq nginx ipvsadm nstat tc iptables-save nft python3
MODE=ipvs-bpf
. "$(dirname "$0")/proxy-lib.bash"

# freeze / thaw: stop and resume, with the cgroup v2 freezer, the control
# plane and the proxy of the current mode with all their descendants
# (kube-proxy runs iptables-restore and ipset), so that a cell, timed or
# counted, holds only the data path: the kernel, the client and the
# backend. A proxy's own work is the control-plane benchmark's
# (bench-proxy): under TCG kube-proxy's periodic syncs cost 2-5 s of CPU
# each, and landed in the timed cells they happened to meet (up to 4.8 s
# of a 6 s cell's 12 CPU-seconds), so the baseline's figures depended on
# how long the harness took between cells. Children forked while frozen
# are born in the cgroup; those already running are moved with their
# parents.
CG=/sys/fs/cgroup/ipvsbpf-bench
# descendants PID...: the PIDs and all their descendants' PIDs.
descendants() {
	local p
	for p in "$@"; do
		echo "$p"
		descendants $(pgrep -P "$p")
	done
}
FROZEN_SET=
freeze() {
	local p i key line
	mkdir -p "$CG" || fail "cgroup $CG"
	# Processes stay in the cgroup when thawed, and their children are
	# born in it: move them only when the set of processes changed (a
	# mode's proxy started, the control plane restarted).
	key="$(cat "${K8S:-/nonexistent}"/run/*.pid 2>/dev/null | xargs) ${PID:-} ${KPID:-}"
	if [ "$key" != "$FROZEN_SET" ]; then
		# shellcheck disable=SC2086
		for p in $(descendants $key); do
			# a process that has just exited cannot be moved, and needs not be
			echo "$p" >"$CG/cgroup.procs" 2>/dev/null ||
				! kill -0 "$p" 2>/dev/null || fail "could not move process $p into $CG"
		done
		FROZEN_SET=$key
	fi
	echo 1 >"$CG/cgroup.freeze"
	for ((i = 0; i < 100; i++)); do
		while read -r line; do
			[ "$line" = "frozen 1" ] && return 0
		done <"$CG/cgroup.events"
		sleep 0.1
	done
	fail "the processes of $MODE did not freeze"
}
thaw() {
	[ -f "$CG/cgroup.freeze" ] && echo 0 >"$CG/cgroup.freeze"
	return 0
}

MODES=${BENCH_MODES:-direct ipvs ipvs-bpf}
K8S_MODES=$(tr ' ' '\n' <<<"$MODES" | grep '^kube-proxy-' | xargs)
on_exit=cleanup
if [ -n "$K8S_MODES" ]; then
	need openssl
	. "$(dirname "$0")/k8s-lib.bash"
	on_exit=k8s_exit
fi
# the cells run but not parsed yet (run_cell, parse_cells)
CELLS=()
# thaw first: a frozen process would not die of k8s_down's SIGTERM; the
# cells of a mode the suite failed in are still parsed, and kept
trap 'rc=$?; thaw; rmdir "$CG" 2>/dev/null; parse_cells; (exit $rc); $on_exit' EXIT
ROUNDS=${BENCH_ROUNDS:-5}
SECS=${BENCH_SECONDS:-6}
PATHS=${BENCH_PATHS:-nodeport clusterip}
for p in $PATHS; do
	case $p in nodeport | clusterip | lb) ;; *) fail "BENCH_PATHS: no path '$p' (nodeport clusterip lb)" ;; esac
done
WORKLOADS=${BENCH_WORKLOADS:-short ka iperf}
CONC=${BENCH_CONC:-8}
ICOUNT=${IPVSBPF_ICOUNT:-0}
OTHERS=${BENCH_OTHERS:-0}
REQUESTS=${BENCH_REQUESTS:-3000}
IPERF_BYTES=${BENCH_IPERF_BYTES:-512M}
DRAIN=${BENCH_DRAIN:-200}
# A warm-up window above this (M instructions per DRAIN seconds) fails a
# counted run: something ran that was not the data path (normal: 80-130 M;
# 420 M with 10,000 other Services, IPVS's estimator walking them), and
# twice a boot's warm-up counted ~750,000 M with inflated cells after it.
MAX_BACKGROUND=${BENCH_MAX_BACKGROUND:-5000}
PROFILE=${BENCH_PROFILE:-}
WRAP=()
# the freezer (freeze, thaw): every cell, timed or counted
[ -f /sys/fs/cgroup/cgroup.controllers ] || mount -t cgroup2 cgroup2 /sys/fs/cgroup ||
	fail "cannot mount cgroup v2 on /sys/fs/cgroup (the freezer)"
if [ "$ICOUNT" = 1 ]; then
	[ "$(nproc)" = 1 ] || fail "instructions are counted with one vCPU (vm-run --icount --cpus 1), not $(nproc)"
	need conntrack
	# Quiet the kernel's own background, which lands in windows at
	# random: khugepaged scanning the frozen processes' memory, and
	# proactive compaction. The guest is thrown away after the run.
	echo never >/sys/kernel/mm/transparent_hugepage/enabled
	echo never >/sys/kernel/mm/transparent_hugepage/defrag
	sysctl -qw vm.compaction_proactiveness=0
fi
if [ -n "$PROFILE" ]; then
	[ "$ICOUNT" = 1 ] || fail "BENCH_PROFILE samples instructions: it needs a counted run (IPVSBPF_ICOUNT=1)"
	need perf
	# perf resolves kernel symbols from /proc/kallsyms, which shows
	# addresses only with kptr_restrict 0, and the JITed tc programs
	# only with bpf_jit_kallsyms (the guest is thrown away)
	sysctl -qw kernel.kptr_restrict=0 net.core.bpf_jit_kallsyms=1
fi
# The proxy's own default SNAT range: what an operator gets.
PORTS=61000-65000
HZ=$(getconf CLK_TCK)
RAW=${IPVSBPF_RESULTS:-/tmp}/bench.jsonl
OUT=$(mktemp -d /tmp/ipvsbpf-bench.XXXXXX)
POD=$(topo_ip pod2a 4)
problems=()

# target PATH MODE WORKLOAD: "from addr port" for a cell.
target() {
	local port=80
	[ "$3" = iperf ] && port=5201
	[ "$3" = udp ] && port=53
	case "$1:$2" in
	nodeport:direct) echo "client $POD $port" ;;
	nodeport:*)
		case $3 in iperf) port=30091 ;; udp) port=30092 ;; *) port=30090 ;; esac
		echo "client $NODE $port" ;;
	clusterip:direct) echo "pod1a $POD $port" ;;
	clusterip:*) echo "pod1a 198.19.0.20 $port" ;;
	lb:direct) echo "client $POD $port" ;;
	lb:*) echo "client $BENCH_LB_IP $port" ;;
	esac
}

# cpu_jiffies: "busy softirq" over all CPUs, in USER_HZ ticks.
cpu_jiffies() {
	awk '$1 == "cpu" { print $2 + $3 + $4 + $6 + $7 + $8 + $9, $8 }' /proc/stat
}

# proxy_ticks: the CPU time, in USER_HZ ticks, that the current mode's
# proxy (ipvsbpf-proxy or kube-proxy) has used so far, with that of the
# children it waited for (iptables-restore, ipset); 0 without a proxy.
# The part of a cell's guest CPU that is the proxy's background (its
# periodic syncs), not the data path's. Bash builtins only.
proxy_ticks() {
	local pid=${KPID:-${PID:-}} line
	if [ -z "$pid" ] || ! read -r line 2>/dev/null <"/proc/$pid/stat"; then
		echo 0
		return
	fi
	# the fields after the last ')': utime, stime, cutime and cstime are
	# the 12th to 15th of them
	# shellcheck disable=SC2086
	set -- ${line##*) }
	echo $((${12} + ${13} + ${14} + ${15}))
}

# busy_ns: sets BUSY to the guest's busy nanoseconds since boot: the
# monotonic clock ("now at") less the idle and iowait times, all three in
# ns from one read of /proc/timer_list (unlike /proc/stat's ticks). Bash
# builtins only, so that a reading costs the same instructions every
# time. Under -icount with one vCPU, busy nanoseconds are instructions.
busy_ns() {
	local now= idle=0 seen=0 line v
	while read -r line; do
		case $line in
		"now at "*)
			v=${line#now at }
			now=${v% nsecs} ;;
		.idle_sleeptime* | .iowait_sleeptime*)
			v=${line#*:}
			idle=$((idle + ${v% nsecs}))
			seen=$((seen + 1)) ;;
		esac
	done </proc/timer_list
	[ -n "$now" ] && [ "$seen" -gt 0 ] || fail "/proc/timer_list: no clock or idle times"
	BUSY=$((now - idle))
}

# sessions ADDR: the node's IPVS connections and conntrack entries toward
# ADDR, the traffic of a cell.
sessions() {
	local ipvs ct
	ipvs=$(topo_exec node ipvsadm -Lnc 2>/dev/null | tail -n +3 | wc -l)
	ct=$(topo_exec node conntrack -L -d "$1" 2>/dev/null | wc -l)
	echo $((ipvs + ct))
}

# drained ADDR: wait (frozen, so idle time passes at once under
# -icount sleep=off) until the node holds no session toward ADDR, up to
# 600 s; prints what is left.
drained() {
	local i n
	for i in $(seq 1 60); do
		n=$(sessions "$1")
		[ "$n" = 0 ] && break
		[ "$i" = 60 ] || sleep 10
	done
	echo "$n"
}

# warm_up: a window without traffic after a mode starts, reported as
# the mode's background (instructions per DRAIN seconds): one-off work
# after a start (IPVS's estimator calibrates itself when its first
# service appears) falls in it rather than in the first cell.
warm_up() {
	local a left m before
	freeze
	left=$(drained "$(target nodeport "$MODE" short | cut -d' ' -f2)")
	before=$(task_ticks)
	busy_ns; a=$BUSY
	sleep "$DRAIN"
	busy_ns
	m=$(((BUSY - a) / 1000000))
	echo "      $MODE: $m M instructions in ${DRAIN} s without traffic (${left} sessions before it)"
	if [ "$m" -gt "$MAX_BACKGROUND" ]; then
		echo "      more than BENCH_MAX_BACKGROUND ($MAX_BACKGROUND M); the tasks that ran most in it:"
		top_tasks "$before" "$(task_ticks)" | sed 's/^/        /'
		problems+=("$MODE: $m M instructions of background in ${DRAIN} s (limit $MAX_BACKGROUND M)")
	fi
	thaw
}

# task_ticks: "tid comm utime+stime" (clock ticks) of every task, kernel
# threads included; spaces in comm become '_'.
task_ticks() {
	local f line comm
	for f in /proc/[0-9]*/task/[0-9]*/stat; do
		read -r line 2>/dev/null <"$f" || continue
		# comm may hold spaces and parentheses: the fields follow the
		# last ')', utime and stime 12th and 13th of them
		comm=${line#*(}
		comm=${comm%) *}
		# shellcheck disable=SC2086
		set -- ${line##*) }
		echo "${line%% *} ${comm// /_} $((${12} + ${13}))"
	done
}

# top_tasks BEFORE AFTER: the five tasks whose CPU time grew most between
# two task_ticks snapshots ("ticks tid comm").
top_tasks() {
	awk 'NR == FNR { t[$1] = $3; next }
	     { d = $3 - ($1 in t ? t[$1] : 0); if (d > 0) print d, $1, $2 }' \
		<(echo "$1") <(echo "$2") | sort -rn | head -n 5
}

# scrape_metrics FILE CELL: the proxy's metrics page into FILE in ipvs-bpf
# mode (bench_parse.py takes the session map's and the tc programs'
# counters from it); nothing outside it. A cell without both scrapes has
# no true counters: a problem.
scrape_metrics() {
	[ "$MODE" = ipvs-bpf ] || return 0
	http_get node http://127.0.0.1:10249/metrics 10 >"$1" ||
		problems+=("$2: could not read the proxy's metrics")
}

# others_manifests N: N other ClusterIP Services, one endpoint each, in
# the proxy's manifests beside the benchmark's own (none for 0).
others_manifests() {
	local d=$OUT/others-$1 f
	rm -f "$MAN"/others-*
	[ "$1" = 0 ] && return 0
	[ -d "$d" ] || python3 "$TOP/testbed/proxy-bench-manifests.py" --services "$1" --endpoints 1 \
		--first-vip 198.19.128.1 --out "$d" >/dev/null || fail "generating $1 other Services"
	for f in "$d"/services-*.json "$d"/slices-*.json "$d"/change.yaml; do
		[ -e "$f" ] || continue
		cp "$f" "$MAN/others-${f##*/}" || fail "copying $f"
	done
}

# amount WORKLOAD min|full: what a counted window sends: requests, or
# bytes for iperf3 (a number, or one with iperf3's K/M/G suffix). The
# smaller window sends the least the tool can: one request per
# connection, 1 MiB.
amount() {
	case $1:$2 in
	short:min | ka:min | udp:min) echo "$CONC" ;;
	short:full) echo "$REQUESTS" ;;
	ka:full | udp:full) echo "$((REQUESTS * 4))" ;;
	iperf:min) echo 1048576 ;;
	iperf:full) echo "$IPERF_BYTES" ;;
	esac
}

# counted_window FROM ADDR PORT WORKLOAD min|full OUT: sets WINDOW, the
# busy nanoseconds (instructions) of sending that amount, then
# BENCH_DRAIN seconds in which the sessions expire; RC, the tool's exit
# status. The processes are frozen by the caller (run_cell, whose round
# and path name a profile).
counted_window() {
	local w0 n
	n=$(amount "$4" "$5")
	# perf runs the tool itself, and samples from its start to its
	# exit (stopped from outside, perf kept next to no sample). No
	# build-id pass at the end: it reads every binary over 9p.
	[ -n "$PROFILE" ] && [ "$5" = full ] &&
		WRAP=(perf record -q -a -B -N -e cpu-clock -c "$PROFILE" -o "$6.perf" --)
	busy_ns; w0=$BUSY
	send "$1" "$2" "$3" "$4" "$6" "$n"
	RC=$?
	if [ "${#WRAP[@]}" -gt 0 ]; then
		WRAP=()
		if [ -s "$6.perf" ]; then
			profile_report "$6.perf" "$n" \
				>"${IPVSBPF_RESULTS:-/tmp}/profile-$MODE-$path-$4-$others-$round.txt"
		else
			problems+=("$MODE $path $4: perf record wrote nothing")
		fi
		rm -f "$6.perf"
	fi
	sleep "$DRAIN"
	busy_ns
	WINDOW=$((BUSY - w0))
}

# profile_report DATA UNITS: perf's samples by symbol, with the units the
# sampled traffic sent.
profile_report() {
	echo "# units=$2 period=$PROFILE"
	perf report -i "$1" --kallsyms=/proc/kallsyms --stdio --no-children -n \
		--sort dso,sym --percent-limit 0 2>/dev/null | grep -vE '^#|^$'
}

# usec: the clock in microseconds (bash's EPOCHREALTIME, whose decimal
# point follows the locale)
usec() { echo "${EPOCHREALTIME//[!0-9]/}"; }

# secs FROM [TO]: the seconds between two usec readings (TO: now), "12.3"
secs() {
	local d=$(( ${2:-$(usec)} - $1 ))
	printf '%d.%d' $((d / 1000000)) $((d % 1000000 / 100000))
}

# run_cell ROUND PATH WORKLOAD: one measurement. Its raw figures go to
# $OUT, its arguments to bench_parse.py to CELLS; parse_cells makes the
# JSON lines, once per mode when timed, after each cell when counted (a
# counted cell takes minutes; a Python start is nothing beside it). Adds
# the time of the tool and of everything around it to TOOL_US and
# AROUND_US: where a round's time goes (the line per mode).
run_cell() {
	local round=$1 path=$2 wl=$3 from addr port c0 c1 s0 s1 p0=0 p1=0 rc out wmin before icount=() metrics=()
	local t0 t1= t2 cell="$MODE $path $wl (round $round)"
	t0=$(usec)
	read -r from addr port <<<"$(target "$path" "$MODE" "$wl")"
	out=$OUT/$round-$MODE-$path-$wl.txt
	s0=$(syn_retrans "$from")
	[ "$MODE" = ipvs-bpf ] && metrics=(--metrics "$out.metrics0" "$out.metrics1")
	scrape_metrics "$out.metrics0" "$cell"
	if [ "$ICOUNT" = 1 ]; then
		freeze
		# what the thawed gap started (the counters' scrape, deferred
		# frees) settles before the window opens
		sleep 5
		before=$(sessions "$addr")
		# the same window twice: with the least the tool sends (one
		# request per connection, 1 MiB), then with the cell's amount;
		# the difference is what the extra units cost, without the
		# tool's start, its first connections and the background
		counted_window "$from" "$addr" "$port" "$wl" min "$out.min"
		wmin=$WINDOW
		[ "$RC" = 0 ] || problems+=("$MODE $path $wl: the smaller window's tool exited $RC")
		c0=$(cpu_jiffies)
		counted_window "$from" "$addr" "$port" "$wl" full "$out"
		rc=$RC
		c1=$(cpu_jiffies)
		icount=(--instructions "$WINDOW" "$wmin" --base-units "$(amount "$wl" min)"
			--before "$before" --left "$(drained "$addr")")
		thaw
	else
		# only the data path runs: the kernel, the client and the
		# backend, as in a counted cell
		freeze
		p0=$(proxy_ticks)
		c0=$(cpu_jiffies)
		t1=$(usec)
		send "$from" "$addr" "$port" "$wl" "$out"
		rc=$?
		t2=$(usec)
		c1=$(cpu_jiffies)
		p1=$(proxy_ticks)
		thaw
		[ "$p0" = "$p1" ] || problems+=("$cell: the proxy ran in the cell, frozen")
	fi
	scrape_metrics "$out.metrics1" "$cell"
	s1=$(syn_retrans "$from")
	printf '%s\0' --workload "$wl" --output "$out" --rc "$rc" \
		--meta "round=$round" "mode=$MODE" "path=$path" "others=$others" "seconds=$SECS" "conc=$CONC" \
		--cpu "$c0" "$c1" --hz "$HZ" --syn-retrans "$s0" "$s1" --proxy-cpu "$p0" "$p1" \
		"${metrics[@]}" "${icount[@]}" \
		>"$out.args" || fail "writing $out.args"
	CELLS+=("$out.args")
	[ "$ICOUNT" = 1 ] && parse_cells
	if [ -n "$t1" ]; then
		TOOL_US=$((TOOL_US + t2 - t1))
		AROUND_US=$((AROUND_US + $(usec) - t0 - (t2 - t1)))
	fi
}

# parse_cells: the JSON lines of the cells run since the last call, with a
# line each in the log; each cell's problems join the run's.
parse_cells() {
	local p
	[ "${#CELLS[@]}" -gt 0 ] || return 0
	: >"$OUT/problems"
	python3 "$TOP/testbed/lib/bench_parse.py" --batch --jsonl "$RAW" --problems "$OUT/problems" \
		"${CELLS[@]}" || problems+=("the cells of $MODE could not be parsed")
	while read -r p; do
		problems+=("$p")
	done <"$OUT/problems"
	CELLS=()
}

# send FROM ADDR PORT WORKLOAD OUT [AMOUNT]: the workload's tool from FROM
# for $SECS seconds, or, in a counted cell, for AMOUNT (requests; bytes
# for iperf3), started by the command in WRAP if any (perf, which cannot
# start a shell function such as topo_exec). Keep-alive is wrk when timed
# and ab -k when counted: wrk cannot stop after a number of requests.
send() {
	local from=$1 addr=$2 port=$3 out=$5 n=${6:-} limit=$((SECS + 20)) run
	[ -z "$n" ] || limit=600
	run=("${WRAP[@]}" ip netns exec "$from" timeout "$limit")
	case $4 in
	short)
		# -r: go on after a receive error (counted); -s: a connection
		# that waits 5 s fails. Timed, -n bounds -t's run and sizes ab's
		# per-request table (~32 bytes each).
		if [ -n "$n" ]; then set -- -n "$n"; else set -- -t "$SECS" -n 500000; fi
		"${run[@]}" ab -q -r -s 5 -c "$CONC" "$@" "http://$addr:$port/" >"$out" 2>&1 ;;
	ka)
		if [ -n "$n" ]; then
			"${run[@]}" ab -q -r -s 5 -k -c "$CONC" -n "$n" "http://$addr:$port/" >"$out" 2>&1
		else
			"${run[@]}" wrk -t 1 -c "$CONC" -d "${SECS}s" --timeout 5s --latency \
				"http://$addr:$port/" >"$out" 2>&1
		fi ;;
	iperf)
		if [ -n "$n" ]; then set -- -n "$n"; else set -- -t "$SECS"; fi
		"${run[@]}" iperf3 -c "$addr" -p "$port" "$@" -J >"$out" 2>&1 ;;
	udp)
		# -n: runs through the one-query file; -t: a query unanswered
		# for 2 s is lost (counted)
		if [ -n "$n" ]; then set -- -n "$n"; else set -- -l "$SECS"; fi
		"${run[@]}" dnsperf -s "$addr" -p "$port" -d "$OUT/dns-queries" -c "$CONC" -q "$CONC" \
			-t 2 "$@" >"$out" 2>&1 ;;
	esac
}

mode_up() {
	case $1 in
	direct) MODE=direct ;;
	ipvs | ipvs-bpf)
		proxy_set_mode "$1"
		start_proxy ;;
	kube-proxy-iptables | kube-proxy-nftables | kube-proxy-ipvs)
		MODE=$1
		kube_proxy_start node "${1#kube-proxy-}" ;;
	*) fail "unknown benchmark mode $1" ;;
	esac
}

mode_down() {
	case $MODE in
	ipvs | ipvs-bpf) stop_proxy || problems+=("$MODE: --cleanup failed") ;;
	kube-proxy-*) kube_proxy_stop node || problems+=("$MODE: kube-proxy --cleanup failed")
		kube_proxy_residue ;;
	esac
	sysctl_restore
}

# kube_proxy_residue: kube-proxy's --cleanup (v1.36) removes its proxy
# rules but leaves chains of its own behind (its iptables monitor's
# KUBE-PROXY-CANARY, KUBE-FIREWALL with the jumps to it, and ipsets
# when its ipvs mode's cleanup stopped half-way); the benchmark says
# what was left and removes it, so that the next mode starts from a
# clean node.
kube_proxy_residue() {
	local f t left rules
	for f in iptables ip6tables; do
		left=$(topo_exec node "$f-save" | grep -E '^:KUBE-|KUBE-' | grep -vE '^#')
		[ -n "$left" ] || continue
		echo "      kube-proxy --cleanup left in $f (removed by the benchmark):"
		echo "$left" | sed 's/^/        /'
		for t in raw mangle nat filter; do
			rules=$(topo_exec node "$f-save" -t "$t" 2>/dev/null)
			[ -n "$rules" ] || continue
			{
				echo "*$t"
				grep -E '^-A [A-Z]+ .*-j KUBE-' <<<"$rules" | grep -vE '^-A KUBE-' | sed 's/^-A /-D /'
				sed -n 's/^:\(KUBE-[^ ]*\) .*/-F \1/p' <<<"$rules"
				sed -n 's/^:\(KUBE-[^ ]*\) .*/-X \1/p' <<<"$rules"
				echo COMMIT
			} | topo_exec node "$f-restore" --noflush ||
				problems+=("could not remove kube-proxy's leftovers from $f $t")
		done
	done
	left=$(topo_exec node ipset list -n 2>/dev/null | grep '^KUBE-' | xargs)
	if [ -n "$left" ]; then
		echo "      kube-proxy --cleanup left ipsets (removed by the benchmark): $left"
		for t in $left; do
			topo_exec node ipset destroy "$t" || problems+=("could not destroy ipset $t")
		done
	fi
}

# The node's IPVS and conntrack sysctls as the benchmark found them; each
# implementation sets some of them (kube-proxy: vs.conntrack,
# expire_nodest_conn, the TCP timeouts...), and the next must not
# inherit them. sysctl_restore puts them back after each mode.
SYSCTLS="net.ipv4.vs.conntrack net.ipv4.vs.conn_reuse_mode net.ipv4.vs.expire_nodest_conn
	net.ipv4.vs.expire_quiescent_template net.netfilter.nf_conntrack_tcp_timeout_established
	net.netfilter.nf_conntrack_tcp_timeout_close_wait net.netfilter.nf_conntrack_tcp_be_liberal"
sysctl_save() {
	local k v
	modprobe ip_vs || fail "modprobe ip_vs"
	modprobe nf_conntrack || fail "modprobe nf_conntrack"
	: >"$OUT/sysctls"
	for k in $SYSCTLS; do
		v=$(topo_exec node sysctl -n "$k") || fail "reading $k on node"
		echo "$k=$v" >>"$OUT/sysctls"
	done
}
sysctl_restore() {
	local kv
	while read -r kv; do
		topo_exec node sysctl -q -w "$kv" >/dev/null ||
			problems+=("could not put back $kv on node")
	done <"$OUT/sysctls"
}

# serves PATH: one request through PATH in the current mode succeeds.
serves() {
	local from addr port
	read -r from addr port <<<"$(target "$1" "$MODE" short)"
	[ "$(http_get "$from" "http://$addr:$port/" 3 2>/dev/null)" = pod2a ]
}

# node_clean: what a mode's own cleanup must leave; prints what is left.
node_clean() {
	local left=() f
	[ -z "$(topo_exec node ipvsadm -Sn 2>/dev/null)" ] || left+=("IPVS services")
	for f in iptables-save ip6tables-save; do
		topo_exec node "$f" 2>/dev/null | grep -q 'KUBE-' && left+=("KUBE chains ($f)")
	done
	topo_exec node ipset list -n 2>/dev/null | grep -q '^KUBE-' && left+=("KUBE ipsets")
	topo_exec node nft list tables 2>/dev/null | grep -qE 'ipvsbpf|kube-proxy' && left+=("nft tables")
	topo_exec node ip link show kube-ipvs0 >/dev/null 2>&1 && left+=("kube-ipvs0")
	for f in ingress egress; do
		[ -z "$(topo_exec node tc filter show dev eth0 "$f" 2>/dev/null)" ] ||
			left+=("tc $f filters on eth0")
	done
	[ "$(topo_exec node sysctl -n net.ipv4.vs.bpf_mode 2>/dev/null || echo 0)" = 0 ] ||
		left+=("bpf_mode 1")
	[ "${#left[@]}" = 0 ] || echo "${left[*]}"
}

# backend_fresh: no TIME_WAIT socket left in the backend and the clients
# (ss -K, SOCK_DESTROY), so that a mode does not meet the previous mode's.
# The backend (nginx closes first: ab speaks HTTP/1.0) keeps TIME_WAIT
# for 60 s on each tuple it saw, and a mode reaches it from other
# addresses and ports than the one before (direct: the client's own,
# through a Service: the SNAT address and ports), so a new SYN on an old
# tuple carries unrelated sequence numbers and timestamps and is refused
# by PAWS about half the time: a 1 s retransmission charged to the wrong
# mode (568 in one cell of `ipvs` after `direct`). Within a mode the
# sockets stay: what its cells leave to each other is its own doing.
backend_fresh() {
	local ns left
	for ns in pod2a pod1a client; do
		topo_exec "$ns" ss -K -t state time-wait >/dev/null ||
			fail "ss -K in $ns (SOCK_DESTROY: CONFIG_INET_DIAG_DESTROY)"
	done
	left=$(topo_exec pod2a ss -Htn state time-wait | wc -l)
	[ "$left" = 0 ] || fail "$left TIME_WAIT sockets left in pod2a after ss -K"
}

# seed_of N: the etcd seed holding N other Services (BENCH_SEEDS); fails
# quietly without one
seed_of() {
	local kv
	for kv in ${BENCH_SEEDS:-}; do
		[ "${kv%%:*}" = "$1" ] && { echo "${kv#*:}"; return 0; }
	done
	return 1
}

# api_level N: the control plane holds Service bench, pod2a's slice and
# N other Services (from a seed); restarted when N changes.
API_LEVEL=
api_level() {
	local n=$1 held m scaled=
	# kube-proxy's ipvs mode runs at 0 only: so does its control plane
	for m in $K8S_MODES; do at_scale "$m" && scaled=1; done
	[ -n "$scaled" ] || n=0
	[ -n "$K8S_MODES" ] && [ "$API_LEVEL" != "$n" ] || return 0
	K8S_SEED=
	if [ "$n" != 0 ]; then
		K8S_SEED=$(seed_of "$n") ||
			fail "no seed of $n other Services for kube-proxy's modes in BENCH_SEEDS ('${BENCH_SEEDS:-}'; testbed/bench makes them)"
	fi
	[ -z "$API_LEVEL" ] || k8s_down
	k8s_up
	if [ "$n" != 0 ]; then
		held=$(k8s_services_held bench)
		[ "${held:-1}" = "$n" ] || fail "the seeded API server holds ${held:-1} other Services, not $n"
		# where ipvsbpf-proxy's files put them, clear of bench's 198.19.0.20
		[ "$(kc get service -n bench svc-00000 -o jsonpath='{.spec.clusterIP}')" = 198.19.128.1 ] ||
			fail "the seed's first Service is not at 198.19.128.1 (testbed/k8s/seed --first-vip)"
	fi
	kc apply -f - <"$MAN/services.yaml" >/dev/null || fail "applying Service bench"
	k8s_api PATCH /api/v1/namespaces/default/services/bench/status \
		"{\"status\": {\"loadBalancer\": {\"ingress\": [{\"ip\": \"$BENCH_LB_IP\"}]}}}" >/dev/null ||
		fail "writing Service bench's LoadBalancer address"
	k8s_pod pod2a app=bench
	wait_for 120 eval '[ "$(k8s_slices bench)" = "$POD" ]' ||
		fail "the EndpointSlice controller wrote no slice with pod2a for bench"
	echo "      Service bench, pod2a's slice and $n other Services in the API server for $K8S_MODES"
	API_LEVEL=$n
}

# at_scale MODE: whether MODE runs with other Services present
at_scale() {
	case $1 in
	ipvs | ipvs-bpf | kube-proxy-iptables | kube-proxy-nftables) return 0 ;;
	*) return 1 ;;
	esac
}

proxy_cluster_up
bench_manifests
topo_exec pod2a iperf3 -s -D -p 5201 --pidfile /tmp/ipvsbpf-bench-iperf3.pid ||
	fail "iperf3 server in pod2a"
topo_exec pod2a dnsmasq --no-resolv --no-hosts --bind-interfaces --listen-address="$POD" \
	--address=/bench.test/192.0.2.99 --pid-file=/tmp/ipvsbpf-bench-dnsmasq.pid ||
	fail "dnsmasq in pod2a"
echo "bench.test A" >"$OUT/dns-queries"
# direct mode: client reaches pods through node both ways, as a NodePort
# connection does, so that the floor differs from the Services only by
# the Service. Node forwards the request out of the interface it came in
# by, and would send client an ICMP redirect that moves the flow off node
# (client to node2 directly); node2 would answer client on the LAN.
# Neither happens: no redirects, and node2 routes client via node (only
# direct mode's replies go to client: every Service path SNATs).
topo_exec client ip route add "$TOPO_CLUSTER4_CIDR" via "$NODE"
topo_sysctl node net.ipv4.conf.all.send_redirects=0 net.ipv4.conf.eth0.send_redirects=0
topo_sysctl client net.ipv4.conf.all.accept_redirects=0 net.ipv4.conf.eth0.accept_redirects=0
topo_exec node2 ip route add "$(topo_ip client 4)/32" via "$NODE"
sysctl_save
: >"$RAW"
{
	echo "kernel=$(uname -r)"
	echo "tree=$(cut -c1-12 "$IPVSBPF_RESULTS/../../modules/$(uname -r)/.tree-head" 2>/dev/null)"
	echo "rounds=$ROUNDS"
	echo "seconds=$SECS"
	echo "conc=$CONC"
	echo "modes=$MODES"
	echo "others=$OTHERS"
	echo "paths=$PATHS"
	echo "workloads=$WORKLOADS"
	echo "snat_port_range=$PORTS"
	echo "cpus=$(nproc)"
	[ "$ICOUNT" = 1 ] && echo "icount=shift 0: 1 ns of busy guest time per instruction; $REQUESTS requests ($((REQUESTS * 4)) keep-alive) or $IPERF_BYTES per cell, ${DRAIN} s drain in the window"
	[ -n "$K8S_MODES" ] && echo "kubernetes=$(sed -n 's/^Client Version: //p' "$K8S_BIN/VERSIONS"), etcd $(sed -n 's/^etcd Version: //p' "$K8S_BIN/VERSIONS")"
} >"${RAW%.jsonl}.meta"

left=$(node_clean)
[ -z "$left" ] || fail "node not clean before the benchmark: $left"
read -r -a modes <<<"$MODES"
# kube-proxy's first sync of 10,000 Services (one iptables-restore or nft
# run) takes minutes under TCG, and so may ipvsbpf-proxy's in ipvs mode
# (docs/proxy.md)
[ "$OTHERS" = 0 ] || KP_SYNC_TIMEOUT=1800 PROXY_START_TIMEOUT=1800
for others in $OTHERS; do
	others_manifests "$others"
	if [ "$others" != 0 ]; then
		step "$others other Services: $(for m in "${modes[@]}"; do at_scale "$m" && echo "$m"; done | xargs)"
	fi
	api_level "$others"
	for round in $(seq 1 "$ROUNDS"); do
		# rotate the order each round
		k=$(( (round - 1) % ${#modes[@]} ))
		order=("${modes[@]:k}" "${modes[@]:0:k}")
		step "round $round/$ROUNDS: ${order[*]}"
		for m in "${order[@]}"; do
			[ "$others" = 0 ] || at_scale "$m" || continue
			t_up=$(usec) TOOL_US=0 AROUND_US=0
			backend_fresh
			mode_up "$m"
			t_cells=$(usec)
			ok=1
			for path in $PATHS; do
				poll serves "$path" || { problems+=("$m does not serve $path"); ok=0; }
			done
			if [ "$ok" = 1 ]; then
				[ "$ICOUNT" = 1 ] && warm_up
				for path in $PATHS; do
					for wl in $WORKLOADS; do
						run_cell "$round" "$path" "$wl"
					done
				done
			fi
			t_parse=$(usec)
			parse_cells
			t_down=$(usec)
			mode_down
			left=$(node_clean)
			if [ -n "$left" ]; then
				problems+=("$m left the node unclean: $left")
				fail "$m left the node unclean after its cleanup: $left"
			fi
			# where the mode's time went: its start, its cells (the
			# tools' own time and the harness's around them), the
			# parsing, its cleanup and the check that the node is
			# clean. Not when counted: the guest's clock then runs
			# ahead while it idles.
			[ "$ICOUNT" = 1 ] ||
				echo "      $m took $(secs "$t_up") s: up $(secs "$t_up" "$t_cells"), cells $(secs "$t_cells" "$t_parse") (tools $(secs 0 "$TOOL_US"), around them $(secs 0 "$AROUND_US")), parsing $(secs "$t_parse" "$t_down"), down $(secs "$t_down")"
		done
	done
done

step "raw figures: $RAW ($(wc -l <"$RAW") cells)"
if [ "${#problems[@]}" -gt 0 ]; then
	printf '  problem: %s\n' "${problems[@]}"
	fail "${#problems[@]} problem(s); the figures above are not a clean run"
fi
exit 0
