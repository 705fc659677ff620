# SPDX-License-Identifier: GPL-2.0
# clean: the control for the runner's self-test. Loads and unloads the
# patched ip_vs without traffic; a run of it must pass.
. "$(dirname "$0")/lib.sh"

modprobe ip_vs || fail "modprobe ip_vs"
step "ip_vs loaded from $(modinfo -n ip_vs)"
modprobe -r ip_vs || fail "modprobe -r ip_vs"
step "ip_vs unloaded"
