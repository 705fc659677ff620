# SPDX-License-Identifier: GPL-2.0
# testbed/suites/lib.sh: shared by the suites (sourced). Exit codes follow
# kselftest: 0 pass, 1 fail, 4 skip.
set -u
KSFT_PASS=0
KSFT_FAIL=1
KSFT_SKIP=4
TOP=${IPVSBPF_TOP:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
. "$TOP/testbed/guest/topology.sh"

step() { printf '  * %s\n' "$*"; }
fail() { printf '  FAIL: %s\n' "$*"; exit $KSFT_FAIL; }
skip() { printf '  SKIP: %s\n' "$*"; exit $KSFT_SKIP; }
need() {
	local t
	for t in "$@"; do
		command -v "$t" >/dev/null || skip "$t is not installed"
	done
}

# run_test_list LIST MIN [ARGS...]: run each test binary of LIST ("name
# path" lines, built on the host: the guest cannot run cargo) with ARGS,
# show each test's line, and fail on a failing binary (with its failure
# report) or one that passed fewer than MIN tests.
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
	done <"$list"
}
