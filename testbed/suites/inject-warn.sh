# SPDX-License-Identifier: GPL-2.0
# inject-warn: the runner's self-test. Loads a module that raises one
# kernel WARNING; the suite itself exits 0, so only the runner's kernel-log
# scan can turn the run into a failure (testbed/tests/runner-selftest
# checks that it does).
. "$(dirname "$0")/lib.sh"

modprobe ipvsbpf_testbed_warn || fail "modprobe ipvsbpf_testbed_warn (run testbed/build-modules)"
step "WARNING injected; the suite exits 0 and leaves the verdict to the runner"
