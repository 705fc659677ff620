#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Suite bench-profile (make bench-profile): where the guest's CPU goes on
# the benchmark's paths, classic IPVS against ipvs-bpf. For each mode and
# path, ab runs short connections for BENCH_SECONDS (10) while perf samples
# every CPU of the guest (cpu-clock: there is no PMU under TCG) with call
# graphs; the report keeps the kernel symbols by self time, and the
# callers of the top ones. Client, node and backend share one kernel, so
# the profile is the whole guest's; what differs between the modes is the
# node's. Shares are of the busy samples: the idle loop is left out (the
# header says how much of the time it held). Reports:
# $IPVSBPF_RESULTS/profile-<mode>-<path>.txt.
. "$(dirname "$0")/lib.sh"
need ab perf
MODE=ipvs-bpf
. "$(dirname "$0")/proxy-lib.bash"

SECS=${BENCH_SECONDS:-10}
PORTS=61000-65000
OUT=${IPVSBPF_RESULTS:-/tmp}

# perf resolves kernel symbols from /proc/kallsyms, which shows addresses
# only with kptr_restrict 0 (put back at the end; the guest is thrown away)
kptr=$(sysctl -n kernel.kptr_restrict)
sysctl -qw kernel.kptr_restrict=0
proxy_cluster_up
rm -f "$MAN"/*.yaml
cp "$TOP"/testbed/manifests/bench/*.yaml "$MAN/"
for m in ipvs ipvs-bpf; do
	proxy_set_mode "$m"
	start_proxy
	for path in nodeport clusterip; do
		if [ "$path" = nodeport ]; then
			from=client url="http://$NODE:30090/"
		else
			from=pod1a url=http://198.19.0.20/
		fi
		poll sh -c "[ \"\$(ip netns exec $from curl -s -m 3 $url)\" = pod2a ]" ||
			fail "$m does not serve $path"
		data=$OUT/perf-$m-$path.data
		perf record -q -a -g -e cpu-clock -F 499 -o "$data" -- sleep "$SECS" &
		rec=$!
		topo_exec "$from" ab -q -r -s 5 -c 8 -t "$SECS" -n 500000 "$url" >"$OUT/ab-$m-$path.txt" 2>&1
		wait "$rec" || fail "perf record failed ($m $path)"
		perf report -i "$data" --kallsyms=/proc/kallsyms --stdio --no-children \
			--sort sym -g none --percent-limit 0.01 2>/dev/null | grep -v '^[#]' |
			grep -v '^$' >"$data.txt"
		idle=$(awk '$NF == "pv_native_safe_halt" { sub("%", "", $1); print $1 }' "$data.txt")
		{
			echo "# $m $path: $(grep -E '^Complete requests' "$OUT/ab-$m-$path.txt")"
			echo "# share of the busy samples (the idle loop, ${idle:-0}% of all, left out)"
			awk -v idle="${idle:-0}" 'idle < 100 && $NF != "pv_native_safe_halt" {
				p = $1; sub("%", "", p); r = p * 100 / (100 - idle)
				$1 = ""
				if (r >= 0.3) printf "%7.2f%% %s\n", r, $0
			}' "$data.txt"
		} >"$OUT/profile-$m-$path.txt"
		rm -f "$data.txt"
		step "$m $path: $(grep -E '^Complete requests' "$OUT/ab-$m-$path.txt")"
		head -25 "$OUT/profile-$m-$path.txt" | sed 's/^/      /'
		rm -f "$data"
	done
	stop_proxy
done
sysctl -qw kernel.kptr_restrict="$kptr"
exit 0
