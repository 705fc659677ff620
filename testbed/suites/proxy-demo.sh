#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Suite proxy-demo (make demo): ipvsbpf-proxy in ipvs-bpf mode on `node`,
# from the bundled manifests in testbed/manifests; traffic through a
# ClusterIP (from a pod) and a NodePort (from the outside client) reaches
# pods on both nodes, and conntrack on node stays empty.
MODE=ipvs-bpf
. "$(dirname "$0")/lib.sh"
need ipvsadm curl nginx conntrack dnsmasq
. "$(dirname "$0")/proxy-lib.bash"

proxy_cluster_up
step "ipvsbpf-proxy --proxy-mode ipvs-bpf --source file --manifests testbed/manifests (a copy)"
start_proxy
topo_exec node conntrack -F 2>/dev/null
step "IPVS on node, programmed by the proxy (first lines of ipvsadm -Ln)"
topo_exec node ipvsadm -Ln | head -14 | sed 's/^/      /'

step "ClusterIP 198.19.0.11:80 from pod1b: 24 requests"
reach pod1b http://198.19.0.11/ pod1a pod2a
step "NodePort $NODE:30080 from the client: 24 requests"
reach client "http://$NODE:30080/" pod1a pod1b pod2a pod2b
step "which pod answered one more NodePort request, and the client address it saw"
topo_exec client curl -s -m 3 "http://$NODE:30080/ip" | sed 's/^/      /'

step "conntrack on node"
n=$(topo_exec node conntrack -C)
echo "      $n entries"
[ "$n" = 0 ] || fail "conntrack has $n entries: Service traffic went through conntrack"
step "session map and tc counters (from /metrics)"
topo_exec node curl -s -m 2 http://127.0.0.1:10249/metrics |
	grep -E '^ipvsbpf_bpf_(sessions|session_map_capacity|packets_total)' | head -8 | sed 's/^/      /'
step "PASS: Service traffic through IPVS-BPF, no conntrack"
