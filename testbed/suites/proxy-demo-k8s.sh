#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Suite proxy-demo-k8s (make demo-k8s): the real control plane on `control`,
# ipvsbpf-proxy (ipvs-bpf mode) on `node` watching it with its
# ServiceAccount, and then, one file at a time, `kubectl apply -f` of the
# manifests testbed/demo-k8s staged in build/demo-k8s/ (testbed/k8s/demo/ or
# the user's): after each, what IPVS holds and how long the change took to
# get there, and traffic to every ClusterIP and NodePort it holds.
MODE=ipvs-bpf
. "$(dirname "$0")/lib.sh"
need ipvsadm curl nginx dnsmasq openssl python3
. "$(dirname "$0")/proxy-lib.bash"
. "$(dirname "$0")/k8s-lib.bash"
DEMO=$TOP/build/demo-k8s
ls "$DEMO"/*.y*ml >/dev/null 2>&1 || fail "no manifests in $DEMO (testbed/demo-k8s stages them)"
LOG=$K8S_LOGS/ipvsbpf-proxy.log
k8s_exit() {
	local rc=$?
	k8s_down
	(exit "$rc")
	cleanup
}
trap k8s_exit EXIT

proxy_cluster_up
mkdir -p "$K8S_LOGS"
: >"$LOG"
k8s_up
kc apply -f - <"$TOP/deploy/base/rbac.yaml" >/dev/null || fail "applying deploy/base/rbac.yaml"
k8s_token_kubeconfig ipvsbpf-proxy "$K8S/ipvsbpf-proxy.conf"
k8s_proxy_source "$K8S/ipvsbpf-proxy.conf"
step "ipvsbpf-proxy --source kube on node (ServiceAccount ipvsbpf-proxy, deploy/base/rbac.yaml)"
start_proxy
echo "      IPVS holds the API server's own Service:"
topo_exec node ipvsadm -Ln | sed 's/^/      /'

# What a kubelet would report for the Pods bound to the topology's nodes.
kubelet_pass() {
	local pod node
	kc get pods -o jsonpath='{range .items[*]}{.metadata.name} {.spec.nodeName} {.status.podIP}{"\n"}{end}' |
		while read -r pod node ip; do
			[ -n "$node" ] && [ -z "${ip:-}" ] || continue
			if [[ " $(topo_pods "$node" 2>/dev/null) " == *" $pod "* ]]; then
				k8s_ready "$pod" True
				echo "      (kubelet stand-in: Pod $pod Running and Ready on $node, $(topo_ip "$pod" 4))"
			else
				echo "      (Pod $pod: not a pod of the topology on '$node'; it stays Pending)"
			fi
		done
}

for f in "$DEMO"/*.y*ml; do
	step "kubectl apply -f ${f##*/}"
	before=$(topo_exec node ipvsadm -S -n)
	t0=$(date +%s.%N)
	kc apply -f - <"$f" | sed 's/^/      /'
	kubelet_pass
	if wait_for 30 eval '[ "$(topo_exec node ipvsadm -S -n)" != "$before" ]'; then
		sleep 1
		echo "      IPVS changed $(echo "$(date +%s.%N) - $t0 - 1" | bc | xargs printf '%.1f') s after the apply:"
	else
		echo "      IPVS unchanged after 30 s:"
	fi
	diff <(echo "$before") <(topo_exec node ipvsadm -S -n) | grep '^[<>]' |
		sed 's/^</      removed /;s/^>/      added   /'
	topo_exec node ipvsadm -S -n | awk '$1 == "-A" { print $3 }' | while read -r vs; do
		case $vs in 198.19.0.1:443) continue ;; esac
		url=http://$vs/
		from=pod1b
		[[ $vs == 192.0.2.* || $vs == \[2001:db8::* ]] && from=client
		printf '      curl %s from %s: %s\n' "$url" "$from" "$(hits "$from" "$url" 6 | sort | uniq -c | tr -s ' \n' ' ')"
	done
done
step "conntrack on node (Service traffic bypasses it in ipvs-bpf mode): $(topo_exec node conntrack -C) entries"
step "done: the proxy followed every kubectl apply"
