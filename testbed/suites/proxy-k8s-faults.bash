# SPDX-License-Identifier: GPL-2.0
# The fault cases of suite proxy-k8s (sourced by it, with its helpers and
# the proxy running as $PID): 505 EndpointSlices listed by a restarted
# proxy from the watch cache (a streaming list at resourceVersion=0: one
# watch request and no list, as client-go's informers on a server with
# WatchList) that adopts IPVS; etcd restarted under the live
# watches; changes missed while stopped, etcd compacted past them and
# kube-apiserver restarted: 410 Gone, relist, IPVS not rewritten; the
# ClusterRole without watch on EndpointSlices, then fixed.

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
step "restart the proxy: it streams the slices from the watch cache and adopts IPVS"
streamed0=$(k8s_audit_count "$SA" watch endpointslices 'sendInitialEvents=true')
lists0=$(k8s_audit_count "$SA" list endpointslices)
end_proxy
start_proxy
streamed=$(( $(k8s_audit_count "$SA" watch endpointslices 'sendInitialEvents=true') - streamed0 ))
lists=$(( $(k8s_audit_count "$SA" list endpointslices) - lists0 ))
echo "      slice streaming lists (watch, sendInitialEvents=true): $streamed; lists: $lists;" \
	"IPVS requests: $(requests)"
[ "$streamed" -ge 1 ] || fail "the restarted proxy did not stream its slices from the watch cache"
[ "$lists" = 0 ] || fail "the restarted proxy listed the slices ($lists list requests)"
[ "$(many)" = 505 ] || fail "after the restart IPVS has $(many) real servers for many"
[ "$(requests)" = 0 ] || fail "the restarted proxy rewrote IPVS ($(requests) requests)"

step "etcd restarted under the live watches; a change still arrives"
r0=$(requests)
adds0=$(ipvs_op add_service)
k8s_cluster stop etcd 2>&1 | sed -u 's/^/      /'
sleep 2
k8s_cluster start etcd 2>&1 | sed -u 's/^/      /'
k8s_ready pod2a False
wait_for 120 eval '! ipvs | grep -qF -- "-a -t 198.19.0.10:80 -r 198.18.2.2:80 -m -w 1"' ||
	fail "a change after the etcd restart never reached IPVS"
k8s_ready pod2a True
wait_for 60 has "-a -t 198.19.0.10:80 -r 198.18.2.2:80 -m -w 1" || fail "pod2a did not come back"

# relists KIND: complete lists of KIND the proxy applied
relists() { metric "ipvsbpf_source_relists_total{kind=\"$1\"}"; }
# resource KIND: its name in the audit log
resource() { case $1 in Service) echo services ;; Node) echo nodes ;; *) echo endpointslices ;; esac; }
step "410 Gone: changes the proxy misses (SIGSTOP), etcd compacted past them,"
echo "      kube-apiserver restarted while the proxy runs again"
declare -A relists0 lists0
for k in Service EndpointSlice Node; do
	relists0[$k]=$(relists "$k")
	lists0[$k]=$(k8s_audit_count "$SA" list "$(resource "$k")")
done
log0=$(wc -l <"$LOG")
kill -STOP "$PID"
# The stopped proxy must see nothing of what follows: the kernel would
# queue the API server's events and bookmarks on its sockets, and a watch
# they carry past the compaction resumes without 410 (in one run all
# three did). Its connections to the API server (node has no others) are
# destroyed (SOCK_DESTROY) now, before the changes: every watch resumes
# from a revision older than the compaction.
topo_exec node ss -K -t dst "$K8S_ADDR" dport = 6443 >/dev/null ||
	fail "ss -K on node (SOCK_DESTROY: CONFIG_INET_DIAG_DESTROY)"
[ -z "$(topo_exec node ss -Htn state established dst "$K8S_ADDR" dport = 6443)" ] ||
	fail "the stopped proxy still has connections to the API server"
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
# Every watch resumes from before the compaction (its connection was
# destroyed before the changes), so the restarted server refuses each with
# 410 Gone, and each must relist; the check reads which kinds the log
# names, and fails if none. A relist comes
# after kube-runtime's backoff (800 ms doubling to 30 s, as client-go's
# reflector; the apiserver outage has grown it), and the proxy publishes
# it at the end of the sync that follows: wait for that, then judge what
# it wrote.
gone_kinds=$(tail -n +"$((log0 + 1))" "$LOG" | grep 'too old resource version' |
	sed -n 's/.*kind="\([A-Za-z]*\)".*/\1/p' | sort -u | xargs)
echo "      410 Gone (too old resource version) for: ${gone_kinds:-none}"
[ -n "$gone_kinds" ] || fail "no watch of the proxy got 410 Gone"
for k in $gone_kinds; do
	wait_for 90 eval '[ "$(relists "$k")" -gt "${relists0[$k]}" ]' || fail "the proxy never relisted ${k}s"
	lists=$(( $(k8s_audit_count "$SA" list "$(resource "$k")") - ${lists0[$k]} ))
	echo "      $k: relisted (lists in the audit log since: $lists)"
	[ "$lists" -ge 1 ] || fail "the API server audited no $k list by the proxy"
done
r=$(( $(requests) - r0 ))
adds=$(( $(ipvs_op add_service) - adds0 ))
echo "      IPVS requests since the etcd restart: $r, of them virtual servers added: $adds"
# Since the etcd restart: pod2a out and back (drained, then re-added on
# web's 8 virtual servers), many and late, the kubernetes Service's
# endpoint across the apiserver restart: ~30 requests, but one new
# virtual server only (late's); a rewrite would add them all again.
[ "$adds" = 1 ] || fail "IPVS was rewritten: $adds virtual servers added, expected late's one"
reach pod1b http://198.19.0.40/ pod1a pod2a
reach pod1b http://198.19.0.10/ pod1a pod2a

step "RBAC: the ClusterRole without watch on EndpointSlices"
kc patch clusterrole ipvsbpf-proxy --type=json \
	-p '[{"op": "replace", "path": "/rules/1/verbs", "value": ["list"]}]' >/dev/null || fail "patch role"
end_proxy
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
k8s_ready pod2a True
wait_for 90 has "-a -t 198.19.0.10:80 -r 198.18.2.2:80 -m -w 1" || fail "pod2a did not come back"
echo "      role restored: slice changes reach IPVS again"
