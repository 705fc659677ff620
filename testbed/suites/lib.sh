# SPDX-License-Identifier: GPL-2.0
# testbed/suites/lib.sh: shared by the suites (sourced). Exit codes follow
# kselftest: 0 pass, 1 fail, 4 skip.
set -u
KSFT_PASS=0
KSFT_FAIL=1
KSFT_SKIP=4
TOP=${IPVSBPF_TOP:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
. "$TOP/testbed/guest/topology.sh"

# step MSG: a step's heading, with the seconds since the suite began (a
# CI log then shows where a suite's time goes).
step() { printf '  * [+%ds] %s\n' "$SECONDS" "$*"; }
fail() { printf '  FAIL: %s\n' "$*"; exit $KSFT_FAIL; }

# calc EXPR [N]: awk arithmetic, printed with N decimals (3); comparisons
# give 1 or 0. The parentheses keep awk from reading `>` as a redirection.
calc() { awk "BEGIN { printf \"%.${2:-3}f\n\", ($1) }"; }

# sample NAME: NAME's value in $SCRAPE (a metrics page the suite fetched),
# summed over labels (0 if absent).
sample() {
	awk -v m="$1" '$1 == m || index($1, m "{") == 1 { s += $2 } END { printf "%.6f\n", s }' \
		<<<"${SCRAPE:-}"
}

# median N...: the median of integers (of the middle two, their mean
# rounded down).
median() {
	printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 }
		END { m = NR % 2 ? v[(NR + 1) / 2] : int((v[NR / 2] + v[NR / 2 + 1]) / 2); print m }'
}

# strict: a `make test` or CI run (IPVSBPF_STRICT=1, which testbed/test-all
# exports and testbed/vm-run passes to the guest, or CI=true). A strict run
# never skips: what would be a skip is a failure.
strict() { [ "${IPVSBPF_STRICT:-}" = 1 ] || [ "${CI:-}" = true ]; }
skip() {
	strict && fail "$* (a strict run does not skip)"
	printf '  SKIP: %s\n' "$*"
	exit $KSFT_SKIP
}

# note_skip WHY: a part of the suite was skipped and the suite goes on. In a
# strict run that is a failure; otherwise the guest runner reports the
# suite, if it exits 0, as skipped (4), not passed.
note_skip() {
	strict && fail "$* (a strict run does not skip)"
	printf '  SKIP: %s\n' "$*"
	if [ -n "${IPVSBPF_RESULTS:-}" ] && [ -n "${IPVSBPF_SUITE:-}" ]; then
		echo "$*" >>"$IPVSBPF_RESULTS/$IPVSBPF_SUITE.skipped"
	fi
}

# debian_package TOOL: the Debian package testbed/setup installs it from.
debian_package() {
	case $1 in
	ip | ss) echo iproute2 ;;
	iptables* | ip6tables*) echo iptables ;;
	nginx) echo nginx-light ;;
	dig) echo dnsutils ;;
	dnsmasq) echo dnsmasq-base ;;
	wg) echo wireguard-tools ;;
	setpriv | nsenter | unshare) echo util-linux ;;
	awk) echo mawk ;;
	sort | timeout) echo coreutils ;;
	busybox) echo busybox-static ;;
	*) echo "$1" ;;
	esac
}

# need TOOL...: skip (fail, when strict) unless every TOOL is installed,
# naming the set-up step that installs it.
need() {
	local t
	for t in "$@"; do
		command -v "$t" >/dev/null ||
			skip "$t is not installed: run testbed/setup (Debian package $(debian_package "$t"))"
	done
}

# run_test_list LIST MIN [ARGS...]: run each test binary of LIST ("name
# path" lines, built on the host: the guest cannot run cargo) with ARGS,
# show each test's line, and fail on a failing binary (with its failure
# report) or one that passed fewer than MIN tests. A test that printed a
# SKIP line (Rust's harness counts it as passed) fails a strict run and
# makes the suite a skip otherwise (note_skip).
run_test_list() {
	local list=$1 min=$2 name bin out rc ran
	shift 2
	while read -r name bin; do
		step "cargo test --test $name -- $* on $(uname -r)"
		[ -x "$bin" ] || fail "$bin missing"
		out=$("$bin" "$@" 2>&1)
		rc=$?
		grep -E '^test |^test result' <<<"$out" | sed 's/^/      /'
		if [ "$rc" != 0 ]; then
			sed -n '/^failures:$/,$p' <<<"$out" | sed 's/^/      /'
			fail "$name failed on $(uname -r)"
		fi
		ran=$(grep -c '^test .* ok$' <<<"$out")
		[ "$ran" -ge "$min" ] || fail "$name ran only $ran tests"
		if grep -q 'SKIP: ' <<<"$out"; then
			grep 'SKIP: ' <<<"$out" | sed 's/^/      /'
			note_skip "$name: $(grep -c 'SKIP: ' <<<"$out") test(s) skipped"
		fi
	done <"$list"
}

# http_get NS URL [SECS]: URL's body, fetched from namespace NS within SECS
# seconds (2); fails on a refused connection or an HTTP error status.
# busybox's wget, not curl: under TCG curl's start (its dozens of shared
# libraries) costs three to four times as much, and the proxy suites and
# the benchmark fetch health and metrics pages hundreds of times. The
# timeout is coreutils': Debian's busybox wget crashes on its own -T.
http_get() { topo_exec "$1" timeout "${3:-2}" busybox wget -q -O - "$2"; }

# poll CMD...: up to 10 s for CMD to succeed.
poll() {
	local i
	for i in $(seq 1 50); do
		"$@" && return 0
		sleep 0.2
	done
	return 1
}

# tcp_counter NS NAME: one of NS's TCP counters since boot (nstat)
tcp_counter() {
	topo_exec "$1" nstat -az "$2" | awk -v n="$2" '$1 == n { print $2 }'
}

# syn_retrans NS: the SYNs NS has retransmitted since boot: each one is a
# connection that waited at least a second
syn_retrans() { tcp_counter "$1" TcpExtTCPSynRetrans; }

# tcp_snap NS: NS's TCP counters now, "name value" per line (nstat)
tcp_snap() {
	topo_exec "$1" nstat -az | awk '/^(Tcp|TcpExt)/ { print $1, $2 }'
}

# tcp_moved BEFORE AFTER: the counters of two tcp_snap outputs that moved
# and tell why a connection waited (resets, PAWS, challenge ACKs,
# TIME_WAIT and FIN_WAIT2 answers, listen queue drops), "name +delta"
tcp_moved() {
	awk 'NR == FNR { b[$1] = $2; next }
	     $2 != b[$1] && $1 ~ /Rst|PAWS|Challenge|TW|TimeWait|FinWait|Listen|SynRetrans|Drop/ {
		printf "%s +%d\n", $1, $2 - b[$1] }' <(echo "$1") <(echo "$2")
}

# unload_ipvs: every ip_vs module, schedulers first.
unload_ipvs() {
	local m
	# xt_ipvs (iptables' -m ipvs) holds ip_vs too
	if lsmod | grep -q '^xt_ipvs '; then rmmod xt_ipvs || return 1; fi
	for m in $(lsmod | awk 'NR > 1 && $1 ~ /^ip_vs_/ { print $1 }'); do
		rmmod "$m" || return 1
	done
	if lsmod | grep -q '^ip_vs '; then rmmod ip_vs || return 1; fi
}

# load_modules M...: modprobe each module, failing on the first that does
# not load; on a kernel without a module tree (a whole-kernel build booted
# by vm-run, `make vm-full`/`vm-debug`, with IPVS built in) there is
# nothing to load, and IPVS must be there already.
load_modules() {
	local m
	if [ ! -d "/lib/modules/$(uname -r)" ]; then
		[ -d /proc/sys/net/ipv4/vs ] || fail "no module tree for $(uname -r) and no IPVS built in"
		return 0
	fi
	for m in "$@"; do
		modprobe "$m" || fail "modprobe $m"
	done
}
