#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Suite proxy-k8s: ipvsbpf-proxy (ipvs-bpf mode) on `node` fed by the real
# kube-apiserver, as its DaemonSet runs it: the ServiceAccount and the
# least-privilege ClusterRole of deploy/base/rbac.yaml, a bound token in a
# file, TLS verified against the cluster CA. etcd, kube-apiserver and
# kube-controller-manager (testbed/k8s) run on the `control` host; every
# check reads what the proxy programmed (ipvsadm -S -n):
#   - Services, an EndpointSlice and Pods made Ready (the real EndpointSlice
#     controller writes their slices) applied with kubectl reach IPVS,
#     dual-stack, and traffic flows; so does the API server's own
#     `kubernetes` Service;
#   - objects as the server writes them (managedFields, defaults, allocated
#     IPv6 ClusterIP): none skipped;
#   - edits (a new port, a Pod going unready and back, an endpoint removed
#     from a slice) and a delete;
#   - 505 EndpointSlices of one Service: a restarted proxy lists them in
#     pages and adopts IPVS without a request;
#   - etcd restarted under the live watches: later changes still arrive;
#   - changes the proxy misses (SIGSTOP), an etcd compaction past its
#     resourceVersion and a kube-apiserver restart while it runs again:
#     410 Gone, relist, IPVS right and not rewritten;
#   - the ClusterRole without `watch` on EndpointSlices: the proxy names what
#     it lacks, and recovers once the role is fixed;
#   - the real kube-proxy on node2 in its iptables, nftables and ipvs modes
#     serves the same ClusterIP and NodePort (the benchmark's peer).
MODE=ipvs-bpf
. "$(dirname "$0")/lib.sh"
need ipvsadm ipset iptables-save nft curl nginx dnsmasq openssl python3 bc
. "$(dirname "$0")/proxy-lib.bash"
. "$(dirname "$0")/k8s-lib.bash"

SA=system:serviceaccount:kube-system:ipvsbpf-proxy
LOG=$K8S_LOGS/ipvsbpf-proxy.log
k8s_proxy_source "$K8S/ipvsbpf-proxy.conf"
k8s_exit() {
	local rc=$?
	[ -n "$PID" ] && kill -CONT "$PID" 2>/dev/null
	[ "$rc" != 0 ] && [ -f "$KP_LOG" ] && tail -n 20 "$KP_LOG" | sed 's/^/      kube-proxy log: /'
	[ -n "$KPID" ] && kube_proxy_stop node2
	k8s_down
	(exit "$rc")
	cleanup
}
trap k8s_exit EXIT

ipvs() { topo_exec node ipvsadm -S -n; }
# has LINE: `ipvsadm -S -n` holds LINE exactly
has() { ipvs | grep -qxF -- "$1"; }
hasnt() { ! ipvs | grep -qF -- "$1"; }
requests() { metric ipvsbpf_ipvs_requests_total; }
show() { ipvs | grep -F -- "$1" | sed 's/^/      /'; }

proxy_cluster_up
mkdir -p "$K8S_LOGS"
: >"$LOG"
k8s_up

step "RBAC: deploy/base/rbac.yaml; the proxy's token may list and watch, nothing more"
kc apply -f - <"$TOP/deploy/base/rbac.yaml" | sed 's/^/      /'
perms=$(kc auth can-i --list --as "$SA" 2>/dev/null)
for r in services endpointslices.discovery.k8s.io nodes; do
	echo "$perms" | grep -qE "^$r +\[\] +\[\] +\[list watch\] *\$" ||
		fail "the proxy may not exactly list and watch $r: $(echo "$perms" | grep "^$r ")"
done
echo "$perms" | grep -qE '^(secrets|pods|configmaps|\*\.\*) ' && fail "the proxy may do more: $perms"
k8s_token_kubeconfig ipvsbpf-proxy "$K8S/ipvsbpf-proxy.conf"

# manual_slice "ADDR NODE"...: EndpointSlice manual-1 of Service manual,
# one ready endpoint per argument
manual_slice() {
	cat <<'YAML'
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: manual-1
  namespace: default
  labels: {kubernetes.io/service-name: manual, endpointslice.kubernetes.io/managed-by: testbed}
addressType: IPv4
ports: [{name: http, port: 80, protocol: TCP}]
endpoints:
YAML
	local e addr node
	for e in "$@"; do
		read -r addr node <<<"$e"
		echo "- {addresses: [$addr], nodeName: $node, conditions: {ready: true}}"
	done
}

step "workload: Pods pod1a, pod2a (app=web) made Ready; Service web (NodePort, RequireDualStack);"
echo "      Service manual with a hand-written EndpointSlice (pod1b, pod2b)"
k8s_pod pod1a app=web
k8s_pod pod2a app=web
kc apply -f - >/dev/null <<'YAML' || fail "applying the Services"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  type: NodePort
  ipFamilyPolicy: RequireDualStack
  clusterIP: 198.19.0.10
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 80, nodePort: 30080}]
---
apiVersion: v1
kind: Service
metadata: {name: manual, namespace: default}
spec:
  clusterIP: 198.19.0.20
  ports: [{name: http, port: 80}]
YAML
manual_slice "198.18.1.3 node" "198.18.2.3 node2" | kc apply -f - >/dev/null ||
	fail "applying the manual EndpointSlice"
WEB6=$(k8s_api GET /api/v1/namespaces/default/services/web |
	python3 -c 'import json, sys; s = json.load(sys.stdin)["spec"]; print(s["clusterIPs"][-1])
print("      web: clusterIPs", s["clusterIPs"], "ipFamilies", s["ipFamilies"], file=sys.stderr)')
[[ $WEB6 == 2001:db8:2::* ]] || fail "web got no IPv6 ClusterIP from the server: '$WEB6'"
wait_for 120 eval '[ "$(k8s_slices web | wc -l)" = 4 ]' ||
	fail "the EndpointSlice controller wrote no slices for web: $(k8s_slices web | xargs)"
echo "      slices by the EndpointSlice controller: $(k8s_slices web | xargs)"

step "ipvsbpf-proxy --source kube (ServiceAccount token, TLS verified) on node"
t0=$(date +%s.%N)
start_proxy
echo "      healthy and synced after $(echo "$(date +%s.%N) - $t0" | bc | xargs printf '%.1f') s"
ipvs | sed 's/^/      /'
for line in "-A -t 198.19.0.10:80 -s rr" "-a -t 198.19.0.10:80 -r 198.18.1.2:80 -m -w 1" \
	"-a -t 198.19.0.10:80 -r 198.18.2.2:80 -m -w 1" "-A -t [$WEB6]:80 -s rr" \
	"-a -t [$WEB6]:80 -r [2001:db8:1:1::2]:80 -m -w 1" "-a -t [$WEB6]:80 -r [2001:db8:1:2::2]:80 -m -w 1" \
	"-a -t 192.0.2.1:30080 -r 198.18.2.2:80 -m -w 1" "-a -t [2001:db8::1]:30080 -r [2001:db8:1:1::2]:80 -m -w 1" \
	"-a -t 198.19.0.20:80 -r 198.18.1.3:80 -m -w 1" "-a -t 198.19.0.20:80 -r 198.18.2.3:80 -m -w 1" \
	"-a -t 198.19.0.1:443 -r $K8S_ADDR:6443 -m -w 1"; do
	has "$line" || fail "IPVS lacks '$line'"
done
reach pod1b http://198.19.0.10/ pod1a pod2a
reach pod1b "http://[$WEB6]/" pod1a pod2a
reach client "http://$NODE:30080/" pod1a pod2a
reach client "http://[2001:db8::1]:30080/" pod1a pod2a
reach pod1a http://198.19.0.20/ pod1b pod2b
step "a pod reaches the API server through the kubernetes Service (198.19.0.1:443)"
topo_exec pod1b curl -sf -m 5 --cacert "$K8S/pki/ca.crt" https://198.19.0.1/version |
	grep -q '"gitVersion"' || fail "no /version through 198.19.0.1"

step "objects as the server writes them (managedFields, defaults): none skipped"
kc get svc web -o json --show-managed-fields | python3 -c '
import json, sys
s = json.load(sys.stdin)
m = [f["manager"] for f in s["metadata"]["managedFields"]]
sp = s["spec"]
print("      managedFields by", m, "; internalTrafficPolicy", sp["internalTrafficPolicy"],
      "; externalTrafficPolicy", sp["externalTrafficPolicy"], "; sessionAffinity", sp["sessionAffinity"])
sys.exit(0 if m else 1)' || fail "web as the server wrote it has no managedFields"
[ "$(metric ipvsbpf_source_objects_skipped_total)" = 0 ] || fail "the proxy skipped objects"
grep -qi 'object skipped' "$LOG" && fail "the proxy logged a skipped object"

step "edit: web gets a second port (kubectl patch); the controller's slices follow"
kc patch svc web --type=json -p '[{"op": "add", "path": "/spec/ports/-",
	"value": {"name": "alt", "port": 8080, "targetPort": 80}}]' >/dev/null || fail "patch web"
wait_for 30 has "-a -t 198.19.0.10:8080 -r 198.18.2.2:80 -m -w 1" || fail "8080 never reached IPVS"
has "-a -t [$WEB6]:8080 -r [2001:db8:1:1::2]:80 -m -w 1" || fail "IPv6 8080 missing"
reach pod1b http://198.19.0.10:8080/ pod1a pod2a

step "edit: pod2a not Ready, then Ready again"
k8s_ready pod2a False
wait_for 30 eval '! ipvs | grep -qF -- "-a -t 198.19.0.10:80 -r 198.18.2.2:80 -m -w 1"' ||
	fail "unready pod2a still takes new connections"
show "198.18.2.2:80"
reach pod1b http://198.19.0.10/ pod1a
k8s_ready pod2a True
wait_for 30 has "-a -t 198.19.0.10:80 -r 198.18.2.2:80 -m -w 1" || fail "pod2a did not come back"

step "edit: pod2b removed from the manual slice (kubectl apply); delete Service manual"
manual_slice "198.18.1.3 node" | kc apply -f - >/dev/null || fail "applying manual-1"
wait_for 30 eval '! ipvs | grep -qF -- "-r 198.18.2.3:80 -m -w 1"' || fail "pod2b still in manual"
reach pod1a http://198.19.0.20/ pod1b
kc delete svc manual >/dev/null || fail "delete manual"
wait_for 30 hasnt "198.19.0.20:80" || fail "manual's virtual server outlived its Service"

step "505 EndpointSlices of one Service (created under the live watch)"
t0=$(date +%s)
python3 - >"$K8S/many.json" <<'PY'
import json
items = [{"apiVersion": "v1", "kind": "Service",
          "metadata": {"name": "many", "namespace": "default"},
          "spec": {"clusterIP": "198.19.0.30", "ports": [{"name": "http", "port": 80}]}}]
for i in range(505):
    items.append({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                  "metadata": {"name": "many-%03d" % i, "namespace": "default",
                               "labels": {"kubernetes.io/service-name": "many",
                                          "endpointslice.kubernetes.io/managed-by": "testbed"}},
                  "addressType": "IPv4", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
                  "endpoints": [{"addresses": ["198.18.%d.%d" % (100 + i // 250, 1 + i % 250)],
                                 "conditions": {"ready": True}}]})
print(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
PY
kc create --validate=false -f - <"$K8S/many.json" >/dev/null || fail "creating 505 slices"
echo "      created in $(( $(date +%s) - t0 ))s"
many() { ipvs | grep -c -- '^-a -t 198.19.0.30:80 ' || true; }
wait_for 120 eval '[ "$(many)" = 505 ]' || fail "IPVS has $(many) real servers for many, expected 505"
echo "      IPVS: 505 real servers behind 198.19.0.30:80 after $(( $(date +%s) - t0 ))s"
step "restart the proxy: it lists the slices in pages and adopts IPVS"
pages0=$(k8s_audit_count "$SA" list endpointslices 'continue=')
kill "$PID"
wait "$PID" 2>/dev/null
PID=
start_proxy
pages=$(( $(k8s_audit_count "$SA" list endpointslices 'continue=') - pages0 ))
echo "      follow-up pages (continue=) in the proxy's slice list: $pages; IPVS requests: $(requests)"
[ "$pages" -ge 1 ] || fail "the proxy's list of 508 slices came in one page"
[ "$(many)" = 505 ] || fail "after the restart IPVS has $(many) real servers for many"
[ "$(requests)" = 0 ] || fail "the restarted proxy rewrote IPVS ($(requests) requests)"

step "etcd restarted under the live watches; a change still arrives"
r0=$(requests)
k8s_cluster stop etcd 2>&1 | sed -u 's/^/      /'
sleep 2
k8s_cluster start etcd 2>&1 | sed -u 's/^/      /'
k8s_ready pod2a False
wait_for 120 eval '! ipvs | grep -qF -- "-a -t 198.19.0.10:80 -r 198.18.2.2:80 -m -w 1"' ||
	fail "a change after the etcd restart never reached IPVS"
k8s_ready pod2a True
wait_for 60 has "-a -t 198.19.0.10:80 -r 198.18.2.2:80 -m -w 1" || fail "pod2a did not come back"

step "410 Gone: changes the proxy misses (SIGSTOP), etcd compacted past them,"
echo "      kube-apiserver restarted while the proxy runs again"
lists0=$(k8s_audit_count "$SA" list services)
gone0=$(grep -c 'too old resource version' "$LOG")
kill -STOP "$PID"
kc delete svc many >/dev/null || fail "delete many"
kc apply -f - >/dev/null <<'YAML' || fail "apply late"
apiVersion: v1
kind: Service
metadata: {name: late, namespace: default}
spec:
  clusterIP: 198.19.0.40
  selector: {app: web}
  ports: [{port: 80}]
YAML
wait_for 120 eval 'k8s_slices late | grep -q .' || fail "no slice for late"
rev=$(etcd_compact) || fail "etcd compaction"
echo "      etcd compacted at revision $rev"
k8s_cluster stop kube-apiserver 2>&1 | sed -u 's/^/      /'
kill -CONT "$PID"
k8s_cluster start kube-apiserver 2>&1 | sed -u 's/^/      /'
wait_for 120 eval 'hasnt 198.19.0.30:80 && has "-a -t 198.19.0.40:80 -r 198.18.2.2:80 -m -w 1"' ||
	fail "IPVS did not follow the changes made while the proxy was stopped"
lists=$(( $(k8s_audit_count "$SA" list services) - lists0 ))
gone=$(( $(grep -c 'too old resource version' "$LOG") - gone0 ))
r=$(( $(requests) - r0 ))
echo "      410 Gone (too old resource version) answers: $gone; Service lists since: $lists;"
echo "      IPVS requests since the etcd restart: $r (the two changes and the two deletions)"
grep 'too old resource version' "$LOG" | tail -n 1 | cut -c1-300 | sed 's/^/        /'
[ "$gone" -ge 1 ] || fail "the proxy's watches never got 410 Gone"
[ "$lists" -ge 1 ] || fail "the proxy never relisted Services"
# the changes cost a few requests each; a rewrite would be > 500
[ "$r" -le 30 ] || fail "IPVS was rewritten ($r requests)"
reach pod1b http://198.19.0.40/ pod1a pod2a
reach pod1b http://198.19.0.10/ pod1a pod2a

step "RBAC: the ClusterRole without watch on EndpointSlices"
kc patch clusterrole ipvsbpf-proxy --type=json \
	-p '[{"op": "replace", "path": "/rules/1/verbs", "value": ["list"]}]' >/dev/null || fail "patch role"
kill "$PID"
wait "$PID" 2>/dev/null
PID=
ip netns exec node "$proxy" "${proxy_args[@]}" >>"$LOG" 2>&1 &
PID=$!
lacks() {
	grep -F 'refuses this proxy' "$LOG" | grep -F 'cannot watch resource' | grep -F endpointslices |
		grep -q discovery.k8s.io
}
wait_for 60 lacks || fail "the proxy never said it may not watch endpointslices"
grep -F 'refuses this proxy' "$LOG" | tail -n 1 | cut -c1-600 | fold -w 100 | sed 's/^/      /'
kc apply -f - <"$TOP/deploy/base/rbac.yaml" >/dev/null || fail "restoring the role"
k8s_ready pod2a False
wait_for 90 eval '! ipvs | grep -qF -- "-a -t 198.19.0.10:80 -r 198.18.2.2:80 -m -w 1"' ||
	fail "with the role fixed, slice changes still do not arrive"
echo "      role restored: slice changes reach IPVS again"

step "the real kube-proxy on node2, in each mode, from the same API server"
for kpmode in iptables nftables ipvs; do
	t0=$(date +%s.%N)
	kube_proxy_start node2 "$kpmode"
	mode=$(topo_exec node2 curl -s -m 2 http://127.0.0.1:10249/proxyMode)
	echo "      kube-proxy --proxy-mode $kpmode: synced after" \
		"$(echo "$(date +%s.%N) - $t0" | bc | xargs printf '%.1f') s, /proxyMode $mode," \
		"$(ps -o rss= -p "$KPID" | awk '{ printf "%d MiB", $1 / 1024 }')"
	[ "$mode" = "$kpmode" ] || fail "kube-proxy reports mode '$mode'"
	case $kpmode in
	iptables) topo_exec node2 iptables-save -t nat | grep -qE -- '-d 198.19.0.10/32 .*KUBE-SVC-' ||
		fail "no KUBE-SVC rule for web in iptables" ;;
	nftables) topo_exec node2 nft list table ip kube-proxy | grep -q '198.19.0.10 . tcp . 80' ||
		fail "web's ClusterIP is not in kube-proxy's nftables map" ;;
	ipvs) topo_exec node2 ipvsadm -S -n | grep -qxF -- "-a -t 198.19.0.10:80 -r 198.18.1.2:80 -m -w 1" ||
		fail "kube-proxy's IPVS lacks web's ClusterIP with pod1a" ;;
	esac
	reach pod2b http://198.19.0.10/ pod1a pod2a
	reach client "http://$(topo_ip node2 4):30080/" pod1a pod2a
	kube_proxy_stop node2
done

step "memory once done"
for c in kube-apiserver etcd kube-controller-manager; do
	ps -o rss= -p "$(cat "$K8S/run/$c.pid")" | awk -v c="$c" '{ printf "      %s: %d MiB\n", c, $1 / 1024 }'
done
ps -o rss= -p "$PID" | awk '{ printf "      ipvsbpf-proxy: %d MiB\n", $1 / 1024 }'
step "PASS: ipvsbpf-proxy against the real kube-apiserver"
