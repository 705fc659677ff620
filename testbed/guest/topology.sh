# SPDX-License-Identifier: GPL-2.0
# testbed/guest/topology.sh: the cluster-like topology every suite uses,
# built from network namespaces and veth pairs inside the guest. Sourced.
#
#                       lan (bridge br0, one L2 segment: the node network)
#        +----------------------+------------------------+
#        | eth0                 | eth0                   | eth0           | eth0
#   +----------+          +------------+           +------------+   +-------------+
#   |  client  |          |    node    |           |   node2    |   |   control   |
#   +----------+          | (runs IPVS)|           |            |   |(API server) |
#   192.0.2.100           | 192.0.2.1  |           | 192.0.2.2  |   | 192.0.2.10  |
#   2001:db8::100         | 2001:db8::1|           | 2001:db8::2|   | 2001:db8::10|
#                         +------------+           +------------+   +-------------+
#                          |veth-pod1a |veth-pod1b   |veth-pod2a |veth-pod2b
#                        pod1a       pod1b         pod2a       pod2b
#                   198.18.1.2   198.18.1.3    198.18.2.2   198.18.2.3
#             2001:db8:1:1::2  2001:db8:1:1::3  2001:db8:1:2::2  ...::3
#
# - Cluster CIDR 198.18.0.0/16 and 2001:db8:1::/48, one /24 (/64) per node;
#   each pod is a /32 (/128) routed on its node's veth (routed pod network,
#   no bridge), with the node side answering as gateway 198.18.N.1 / fe80::1.
#   Nodes route each other's pod CIDR over the LAN: a flat cluster network.
# - Service CIDR 198.19.0.0/16 and 2001:db8:2::/112: on no interface; a
#   proxy puts VIPs on a dummy device in `node`. `client` routes it to
#   `node`, as an external load balancer or a static route would.
# - Addresses come from the documentation (192.0.2.0/24, 2001:db8::/32)
#   and benchmarking (198.18.0.0/15) ranges; nothing leaves the guest.
# - `control` is the control-plane host: the k8s suites run etcd,
#   kube-apiserver (192.0.2.10:6443) and kube-controller-manager there
#   (testbed/k8s/cluster); other suites leave it empty.
#
# Names are fixed (one topology per guest boot): lan client node node2
# pod1a pod1b pod2a pod2b control. topo_up builds it, topo_down removes it.

TOPO_NODES="node node2"
TOPO_PODS_node="pod1a pod1b"
TOPO_PODS_node2="pod2a pod2b"
TOPO_NS="lan client node node2 pod1a pod1b pod2a pod2b control"

TOPO_LAN4=192.0.2
TOPO_LAN6=2001:db8:
TOPO_SVC4_CIDR=198.19.0.0/16
TOPO_SVC6_CIDR=2001:db8:2::/112
TOPO_CLUSTER4_CIDR=198.18.0.0/16
TOPO_CLUSTER6_CIDR=2001:db8:1::/48

# Host part of each machine on the LAN.
declare -A TOPO_LAN_HOST=([client]=100 [node]=1 [node2]=2 [control]=10)
# Node index: pod CIDR 198.18.<idx>.0/24, 2001:db8:1:<idx>::/64.
declare -A TOPO_NODE_IDX=([node]=1 [node2]=2)

topo_exec() {
	local ns=$1
	shift
	ip netns exec "$ns" "$@"
}

# topo_ip HOST [4|6]: the address of a machine or pod.
topo_ip() {
	local h=$1 fam=${2:-4} node idx i p
	if [ -n "${TOPO_LAN_HOST[$h]:-}" ]; then
		[ "$fam" = 4 ] && echo "$TOPO_LAN4.${TOPO_LAN_HOST[$h]}" || echo "${TOPO_LAN6}:${TOPO_LAN_HOST[$h]}"
		return
	fi
	for node in $TOPO_NODES; do
		idx=${TOPO_NODE_IDX[$node]}
		i=2
		for p in $(topo_pods "$node"); do
			if [ "$p" = "$h" ]; then
				[ "$fam" = 4 ] && echo "198.18.$idx.$i" || echo "2001:db8:1:$idx::$i"
				return
			fi
			i=$((i + 1))
		done
	done
	echo "topo_ip: unknown host $h" >&2
	return 1
}

topo_pods() {
	local var="TOPO_PODS_$1"
	echo "${!var}"
}

topo_sysctl() {
	local ns=$1
	shift
	topo_exec "$ns" sysctl -qw "$@" >/dev/null
}

# topo_batch [NS]: the `ip` commands on stdin, one per line, in one
# process (in NS, or the initial namespace); stops at the first that fails
# and says which. A process start costs ~0.15 s under TCG: the topology's
# hundred-odd commands one by one took ~16 s, and nearly every suite
# builds it.
topo_batch() {
	if [ -n "${1:-}" ]; then
		ip -n "$1" -batch -
	else
		ip -batch -
	fi
}

topo_up() {
	local ns node idx other p
	topo_down
	for ns in $TOPO_NS; do
		ip netns add "$ns" || return 1
	done
	# the veth pairs, from the initial namespace into theirs
	{
		for ns in client $TOPO_NODES control; do
			echo "link add lan-$ns netns lan type veth peer name eth0 netns $ns"
		done
		for node in $TOPO_NODES; do
			for p in $(topo_pods "$node"); do
				echo "link add veth-$p netns $node type veth peer name eth0 netns $p"
			done
		done
	} | topo_batch || return 1
	{
		echo "link set lo up"
		echo "link add br0 type bridge"
		echo "link set br0 up"
		for ns in client $TOPO_NODES control; do
			echo "link set lan-$ns master br0 up"
		done
	} | topo_batch lan || return 1
	for ns in client $TOPO_NODES control; do
		{
			echo "link set lo up"
			echo "link set eth0 up"
			echo "addr add $(topo_ip "$ns" 4)/24 dev eth0"
			echo "addr add $(topo_ip "$ns" 6)/64 dev eth0 nodad"
			if [ "$ns" = client ]; then
				echo "route add $TOPO_SVC4_CIDR via $(topo_ip node 4)"
				echo "route add $TOPO_SVC6_CIDR via $(topo_ip node 6)"
			fi
		} | topo_batch "$ns" || return 1
	done

	for node in $TOPO_NODES; do
		idx=${TOPO_NODE_IDX[$node]}
		topo_sysctl "$node" net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 \
			net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 || return 1
		{
			for other in $TOPO_NODES; do
				[ "$other" = "$node" ] && continue
				echo "route add 198.18.${TOPO_NODE_IDX[$other]}.0/24 via $(topo_ip "$other" 4)"
				echo "route add 2001:db8:1:${TOPO_NODE_IDX[$other]}::/64 via $(topo_ip "$other" 6)"
			done
			for p in $(topo_pods "$node"); do
				echo "link set veth-$p up"
				echo "addr add 198.18.$idx.1/32 dev veth-$p"
				echo "addr add fe80::1/64 dev veth-$p nodad"
				echo "route add $(topo_ip "$p" 4)/32 dev veth-$p"
				echo "route add $(topo_ip "$p" 6)/128 dev veth-$p"
			done
		} | topo_batch "$node" || return 1
		for p in $(topo_pods "$node"); do
			{
				echo "link set lo up"
				echo "link set eth0 up"
				echo "addr add $(topo_ip "$p" 4)/32 dev eth0"
				echo "addr add $(topo_ip "$p" 6)/128 dev eth0 nodad"
				echo "route add 198.18.$idx.1 dev eth0"
				echo "route add default via 198.18.$idx.1 dev eth0"
				echo "route add ::/0 via fe80::1 dev eth0"
			} | topo_batch "$p" || return 1
		done
	done
}

topo_down() {
	local ns
	for ns in $TOPO_NS; do
		ip netns del "$ns" 2>/dev/null || true
	done
}

# topo_ping FROM TO [4|6]: one bounded ping; non-zero if unanswered.
topo_ping() {
	local from=$1 to=$2 fam=${3:-4}
	topo_exec "$from" ping "-$fam" -c 1 -W 2 -q "$(topo_ip "$to" "$fam")" >/dev/null
}

# topo_check: the paths suites rely on, both families, pinged side by
# side. Prints what fails.
topo_check() {
	local bad=0 fam pair i pids=() res=()
	for fam in 4 6; do
		for pair in client:node node:node2 node:pod1a node:pod2a pod1a:pod1b \
			pod1a:pod2b pod2a:pod1b node2:pod1a; do
			topo_ping "${pair%%:*}" "${pair##*:}" "$fam" &
			pids+=($!)
			res+=("IPv$fam ${pair%%:*} -> ${pair##*:}")
		done
	done
	for i in "${!pids[@]}"; do
		if ! wait "${pids[$i]}"; then
			echo "topology: ${res[$i]} unreachable" >&2
			bad=1
		fi
	done
	return $bad
}

# topo_nginx POD: start nginx in POD on :80 (both families) answering
# every request with the pod's name, and /ip with the pod's name and the
# client address it sees; PUT /upload/NAME stores the body (up to 16 MB)
# as /tmp/ipvsbpf-nginx-POD/upload/NAME and answers 201 only once all of
# it arrived. Stopped by topo_down (netns gone, processes killed by
# topo_kill_ns first).
topo_nginx() {
	local pod=$1 dir=/tmp/ipvsbpf-nginx-$1
	mkdir -p "$dir"
	cat >"$dir/nginx.conf" <<NGINX
daemon on;
user root;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
worker_processes 1;
events { worker_connections 256; }
http {
	access_log off;
	client_body_temp_path $dir;
	proxy_temp_path $dir;
	fastcgi_temp_path $dir;
	uwsgi_temp_path $dir;
	scgi_temp_path $dir;
	server {
		listen 80 reuseport;
		listen [::]:80 ipv6only=on reuseport;
		location / { return 200 "$pod\n"; }
		location = /ip { return 200 "$pod \$remote_addr\n"; }
		location /upload/ {
			root $dir;
			dav_methods PUT;
			create_full_put_path on;
			client_max_body_size 16m;
		}
	}
}
NGINX
	topo_exec "$pod" nginx -c "$dir/nginx.conf" -e "$dir/error.log"
}

# Kill every process still running in the topology's namespaces.
topo_kill_ns() {
	local ns pids
	for ns in $TOPO_NS; do
		pids=$(ip netns pids "$ns" 2>/dev/null) || continue
		[ -n "$pids" ] && kill $pids 2>/dev/null
	done
	return 0
}
