# SPDX-License-Identifier: GPL-2.0
# testbed/suites/k8s-lib.bash: a real Kubernetes control plane for the
# suites (sourced after lib.sh and proxy-lib.bash). k8s_up starts etcd,
# kube-apiserver and kube-controller-manager (testbed/k8s/cluster, built by
# testbed/k8s/build) in the `control` namespace, the API server on
# https://192.0.2.10:6443, and registers the testbed's two nodes; kc is
# kubectl as the cluster admin, from the control-plane host. There are no
# kubelets: k8s_pod writes a Pod bound to a node with the addresses of the
# topology's pod of that name, and k8s_ready sets its Ready condition, so the
# real EndpointSlice controller writes the slices. The components' logs
# (and the API server's audit log of the proxies' lists and watches) go to
# $IPVSBPF_RESULTS/<suite>-k8s/.
K8S_BIN=$TOP/build/k8s/bin
[ -x "$K8S_BIN/kube-apiserver" ] || fail "no $K8S_BIN/kube-apiserver (run testbed/k8s/build)"
# vm-run attaches the same binaries as a disk (build/k8s/bin.img): started
# from there they load in seconds, from the 9p root in tens of seconds.
k8s_disk_bin() {
	local dev mnt=/run/ipvsbpf-k8s-bin
	if ! mountpoint -q "$mnt"; then
		modprobe -q virtio_blk 2>/dev/null
		modprobe -q ext4 2>/dev/null
		dev=$(blkid -L ipvsbpf-k8s 2>/dev/null) || return 1
		mkdir -p "$mnt"
		mount -o ro "$dev" "$mnt" || return 1
	fi
	cmp -s "$mnt/VERSIONS" "$K8S_BIN/VERSIONS" && [ -f "$mnt/.complete" ] || return 1
	K8S_BIN=$mnt
}
k8s_disk_bin || echo "      (no Kubernetes disk image attached: the binaries start from 9p, slowly)"
export IPVSBPF_K8S_BIN=$K8S_BIN
K8S=/tmp/ipvsbpf-k8s
K8S_SUITE=$(basename "$0" .sh)
K8S_LOGS=${IPVSBPF_RESULTS:-/tmp}/$K8S_SUITE-k8s
rm -rf "$K8S" "$K8S_LOGS"
mkdir -p "$K8S_LOGS"
K8S_ADDR=$(topo_ip control 4)
K8S_URL=https://$K8S_ADDR:6443

# (the guest's /root is read-only: kubectl's discovery cache goes to $K8S)
kc() { topo_exec control "$K8S_BIN/kubectl" --kubeconfig "$K8S/admin.conf" --cache-dir "$K8S/kubectl-cache" "$@"; }
k8s_cluster() { "$TOP/testbed/k8s/cluster" "$1" "$K8S" "${@:2}"; }

# k8s_proxy_source KUBECONFIG: switch proxy-lib.bash's proxy_args from the
# file source to the API server, with KUBECONFIG.
k8s_proxy_source() {
	local a=() i=0
	while [ "$i" -lt "${#proxy_args[@]}" ]; do
		case ${proxy_args[$i]} in
		--source | --manifests) i=$((i + 2)) ;;
		*) a+=("${proxy_args[$i]}"); i=$((i + 1)) ;;
		esac
	done
	proxy_args=(--source kube --kubeconfig "$1" "${a[@]}")
}

# wait_for SECS CMD...: poll CMD every 0.2 s for up to SECS seconds.
wait_for() {
	local end=$(( $(date +%s) + $1 ))
	shift
	while :; do
		"$@" && return 0
		[ "$(date +%s)" -lt "$end" ] || return 1
		sleep 0.2
	done
}

k8s_up() {
	local t0=$(date +%s)
	# The control-plane host is on the cluster network: it reaches pods
	# (and answers them) through their nodes.
	topo_exec control ip route replace 198.18.1.0/24 via "$(topo_ip node 4)"
	topo_exec control ip route replace 198.18.2.0/24 via "$(topo_ip node2 4)"
	step "control plane on control ($K8S_URL): etcd, kube-apiserver, kube-controller-manager"
	k8s_cluster up --address "$K8S_ADDR" --netns control --logs "$K8S_LOGS" ${K8S_SEED:+--etcd-seed "$K8S_SEED"} 2>&1 | sed -u 's/^/      /'
	[ "${PIPESTATUS[0]}" = 0 ] || fail "the control plane did not come up (logs in $K8S_LOGS)"
	echo "      server: $(k8s_api GET /version | grep -o '"gitVersion": *"[^"]*"')"
	local n
	for n in $TOPO_NODES; do
		k8s_node "$n"
	done | kc apply -f - >/dev/null || fail "registering the nodes"
	# Pods need their namespace's default ServiceAccount (the controller
	# manager makes it).
	wait_for 120 k8s_api GET /api/v1/namespaces/default/serviceaccounts/default >/dev/null ||
		fail "no default ServiceAccount"
	echo "      control plane ready in $(( $(date +%s) - t0 ))s"
}

k8s_down() {
	local c
	for c in etcd kube-apiserver kube-controller-manager; do
		[ -f "$K8S/run/$c.pid" ] && ps -o rss=,args= -p "$(cat "$K8S/run/$c.pid")" 2>/dev/null |
			awk -v c="$c" '{ printf "      %s: %d MiB RSS at the end\n", c, $1 / 1024 }'
	done
	k8s_cluster down 2>&1 | sed -u 's/^/      /'
}

# k8s_node NAME: the Node object of a topology node (addresses, pod CIDRs).
k8s_node() {
	local idx=${TOPO_NODE_IDX[$1]}
	cat <<NODE
apiVersion: v1
kind: Node
metadata:
  name: $1
  labels: {kubernetes.io/hostname: $1, kubernetes.io/os: linux}
spec:
  podCIDR: 198.18.$idx.0/24
  podCIDRs: [198.18.$idx.0/24, "2001:db8:1:$idx::/64"]
status:
  addresses:
  - {type: InternalIP, address: $(topo_ip "$1" 4)}
  - {type: InternalIP, address: "$(topo_ip "$1" 6)"}
  - {type: Hostname, address: $1}
---
NODE
}

# k8s_pod POD LABEL: a Pod object for the topology pod POD (its node, its
# two addresses), labelled LABEL (k=v), then made Ready.
k8s_pod() {
	local pod=$1 label=$2 node
	for node in $TOPO_NODES; do
		[[ " $(topo_pods "$node") " == *" $pod "* ]] && break
	done
	kc apply -f - >/dev/null <<POD || fail "creating Pod $pod"
apiVersion: v1
kind: Pod
metadata:
  name: $pod
  namespace: default
  labels: {${label%%=*}: ${label#*=}}
spec:
  nodeName: $node
  containers: [{name: nginx, image: nginx, ports: [{containerPort: 80}]}]
POD
	k8s_ready "$pod" True
}

# k8s_api METHOD PATH [BODY [CONTENT-TYPE]]: one API request as the admin,
# with curl (tens of times cheaper than a kubectl start under TCG): what
# the suites use to poll and, as the kubelet stand-in, to write Pod status.
k8s_api() {
	local p=$K8S/pki
	# (a curl user agent gets pretty-printed JSON; the suites grep it compact)
	topo_exec control curl -sf -m 30 -A ipvsbpf-testbed --cacert "$p/ca.crt" --cert "$p/admin.crt" --key "$p/admin.key" \
		-X "$1" ${3:+-H "Content-Type: ${4:-application/merge-patch+json}" --data-binary "$3"} \
		"$K8S_URL$2"
}

# k8s_ready POD True|False: what a kubelet would report.
k8s_ready() {
	local ip4 ip6
	ip4=$(topo_ip "$1" 4)
	ip6=$(topo_ip "$1" 6)
	k8s_api PATCH "/api/v1/namespaces/default/pods/$1/status" "{\"status\": {\"phase\": \"Running\",
		\"podIP\": \"$ip4\", \"podIPs\": [{\"ip\": \"$ip4\"}, {\"ip\": \"$ip6\"}],
		\"conditions\": [{\"type\": \"Ready\", \"status\": \"$2\"},
			{\"type\": \"ContainersReady\", \"status\": \"$2\"}]}}" >/dev/null ||
		fail "setting Pod $1 Ready=$2"
}

# k8s_services_held NS: how many Services namespace NS holds, from one
# page of one (the server's remainingItemCount, plus that one)
k8s_services_held() {
	k8s_api GET "/api/v1/namespaces/$1/services?limit=1" |
		grep -o '"remainingItemCount": *[0-9]*' | grep -o '[0-9]*$' | awk '{ print $1 + 1 }'
}

# k8s_slices SERVICE: the addresses in SERVICE's EndpointSlices, one a line
k8s_slices() {
	k8s_api GET "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3D$1" |
		grep -o '"addresses":\["[^"]*"' | cut -d'"' -f4
}

# A DaemonSet's container, as a command (for ip netns exec and the like):
#   unshare -m -- sh -c "$K8S_CONTAINER" sh SADIR CONFDIR BPFFS ENV... -- CMD...
# runs CMD in a mount namespace of its own with SADIR's files as the
# ServiceAccount volume (/var/run/secrets/kubernetes.io/serviceaccount),
# CONFDIR's config.conf as the ConfigMap volume (/var/lib/ipvsbpf-proxy)
# and BPFFS as the host's /sys/fs/bpf (CONFDIR, BPFFS: - for none), and
# only ENV (NAME=value) in its environment: no kubeconfig anywhere. It
# execs CMD, so its PID is CMD's. /run/secrets must exist.
K8S_CONTAINER='
	set -e
	sa=$1 conf=$2 bpffs=$3
	shift 3
	if [ "$conf" != - ]; then
		mount -t tmpfs tmpfs /var/lib
		mkdir /var/lib/ipvsbpf-proxy
		cp "$conf/config.conf" /var/lib/ipvsbpf-proxy/
	fi
	mount -t tmpfs tmpfs /run/secrets
	mkdir -p /var/run/secrets/kubernetes.io/serviceaccount
	cp "$sa"/* /var/run/secrets/kubernetes.io/serviceaccount/
	[ "$bpffs" = - ] || mount --bind "$bpffs" /sys/fs/bpf
	env=""
	while [ "$1" != -- ]; do env="$env $1"; shift; done
	shift
	exec env -i PATH="$PATH" HOME=/var/lib/ipvsbpf-proxy $env "$@"'

# k8s_token_kubeconfig SA OUT: a kubeconfig for ServiceAccount kube-system/SA
# as a DaemonSet's pod has it: a bound token in a file (tokenFile, re-read
# by the client) and the cluster CA.
k8s_token_kubeconfig() {
	kc -n kube-system create token "$1" --duration=2h >"$K8S/$1.token" || fail "token for $1"
	cat >"$2" <<KC
apiVersion: v1
kind: Config
clusters:
- name: testbed
  cluster: {server: "$K8S_URL", certificate-authority: $K8S/pki/ca.crt}
users:
- name: $1
  user: {tokenFile: $K8S/$1.token}
contexts:
- name: $1
  context: {cluster: testbed, user: $1}
current-context: $1
KC
}

# k8s_audit_count USER VERB RESOURCE [GREP]: audited requests by USER.
k8s_audit_count() {
	local f=$K8S_LOGS/kube-apiserver-audit.log
	[ -f "$f" ] || { echo 0; return; }
	grep -F "\"username\":\"$1\"" "$f" | grep -F "\"verb\":\"$2\"" |
		grep -F "\"resource\":\"$3\"" | grep -c -- "${4:-.}" || true
}

# etcd_compact: compact etcd at its current revision (through its JSON
# gateway, with the tests' etcd client certificate); prints the revision.
etcd_compact() {
	local p=$K8S/pki rev
	rev=$(topo_exec control curl -sf -m 5 --cacert "$p/etcd-ca.crt" --cert "$p/etcd-admin.crt" \
		--key "$p/etcd-admin.key" https://127.0.0.1:2379/v3/kv/range -d '{"key":"AA=="}' |
		python3 -c 'import json, sys; print(json.load(sys.stdin)["header"]["revision"])') ||
		return 1
	topo_exec control curl -sf -m 30 --cacert "$p/etcd-ca.crt" --cert "$p/etcd-admin.crt" \
		--key "$p/etcd-admin.key" https://127.0.0.1:2379/v3/kv/compaction \
		-d "{\"revision\": \"$rev\", \"physical\": true}" >/dev/null || return 1
	echo "$rev"
}

# The real kube-proxy, the benchmark's peer. kube_proxy_start NODE MODE
# (iptables, nftables or ipvs) runs it on NODE as system:kube-proxy (the
# default system:node-proxier binding) with the topology's CIDRs, and waits
# until it is healthy and has synced; kube_proxy_stop stops it and runs
# `kube-proxy --cleanup`, which removes what any of its modes left.
KPID=
KP_NODE=
KP_LOG=$K8S_LOGS/kube-proxy.log
kube_proxy_start() {
	local node=$1 mode=$2 addr t0 end
	KP_NODE=$node
	addr=$(topo_ip "$node" 4)
	echo "=== kube-proxy --proxy-mode $mode on $node" >>"$KP_LOG"
	ip netns exec "$node" "$K8S_BIN/kube-proxy" --kubeconfig "$K8S/kube-proxy.conf" \
		--proxy-mode "$mode" --hostname-override "$node" --v=2 \
		--cluster-cidr 198.18.0.0/16,2001:db8:1::/48 \
		--nodeport-addresses 192.0.2.0/24,2001:db8::/64 \
		--healthz-bind-address "$addr:10256" --metrics-bind-address 127.0.0.1:10249 \
		--conntrack-max-per-core 0 >>"$KP_LOG" 2>&1 &
	KPID=$!
	# Synced: the last-sync timestamp is set; then healthy, seen from
	# the LAN. Polled once a second and bounded in time (KP_SYNC_TIMEOUT,
	# 300 s): under TCG its first sync takes 10-20 s of iptables/nft runs
	# that a tighter loop of fetches would only slow down.
	t0=$(date +%s)
	end=$((t0 + ${KP_SYNC_TIMEOUT:-300}))
	while ! http_get "$node" http://127.0.0.1:10249/metrics 5 2>/dev/null |
		grep -qE '^kubeproxy_sync_proxy_rules_last_timestamp_seconds(\{[^}]*\})? [1-9]'; do
		kill -0 "$KPID" 2>/dev/null && [ "$(date +%s)" -lt "$end" ] || {
			tail -n 20 "$KP_LOG" | sed 's/^/      log: /'
			fail "kube-proxy ($mode) did not sync on $node in $(( $(date +%s) - t0 )) s"
		}
		sleep 1
	done
	while ! http_get client "http://$addr:10256/healthz" 5 >/dev/null 2>&1; do
		kill -0 "$KPID" 2>/dev/null && [ "$(date +%s)" -lt "$end" ] || {
			tail -n 20 "$KP_LOG" | sed 's/^/      log: /'
			fail "kube-proxy ($mode) synced but is not healthy on $node"
		}
		sleep 1
	done
}

kube_proxy_stop() {
	local node=$1
	[ -n "$KPID" ] && kill "$KPID" 2>/dev/null && wait "$KPID" 2>/dev/null
	KPID=
	# kube-proxy 1.36's --cleanup after its ipvs mode can stop half-way
	# on nf_tables iptables ("CHAIN_DEL failed (Device or resource
	# busy)": a chain still referenced when it deletes it); a second run,
	# with those references gone, finishes.
	topo_exec "$node" "$K8S_BIN/kube-proxy" --cleanup >>"$KP_LOG" 2>&1 && return 0
	echo "=== kube-proxy --cleanup failed on $node; once more" >>"$KP_LOG"
	topo_exec "$node" "$K8S_BIN/kube-proxy" --cleanup >>"$KP_LOG" 2>&1
}

# k8s_exit: the EXIT trap of a suite with a control plane: a stopped
# proxy (SIGSTOP) let go, on failure kube-proxy's last lines, kube-proxy
# stopped and cleaned up, the control plane down, then proxy-lib.bash's
# cleanup. `trap k8s_exit EXIT` after sourcing this file.
k8s_exit() {
	local rc=$?
	[ -n "$PID" ] && kill -CONT "$PID" 2>/dev/null
	[ "$rc" != 0 ] && [ -f "$KP_LOG" ] && tail -n 20 "$KP_LOG" | sed 's/^/      kube-proxy log: /'
	[ -n "$KPID" ] && kube_proxy_stop "$KP_NODE"
	k8s_down
	(exit "$rc")
	cleanup
}
