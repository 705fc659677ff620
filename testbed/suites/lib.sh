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
