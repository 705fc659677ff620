#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Suite proxy-ipvs-bpf: ipvsbpf-proxy end to end in `ipvs-bpf` mode (proxy-e2e.bash).
MODE=ipvs-bpf
. "$(dirname "$0")/proxy-e2e.bash"
