#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Suite proxy-ipvs: ipvsbpf-proxy end to end in `ipvs` mode (proxy-e2e.bash).
MODE=ipvs
. "$(dirname "$0")/proxy-e2e.bash"
