# SPDX-License-Identifier: GPL-2.0
# Sourced by proxy-k8s.sh after "the DaemonSet's way" ($ds holds the
# rendered testbed/k8s/overlay): deploy/node-labeller against the real API
# server, and the gating it gives the proxy's DaemonSet.
#   - the labeller's ServiceAccount may exactly patch Nodes;
#   - both DaemonSets applied for real: the DaemonSet controller makes a
#     labeller pod for each unlabelled Node and no proxy pod;
#   - a token not bound to a pod is refused by the admission policy;
#   - the labeller, run with the DaemonSet's command and environment, only
#     CAP_NET_ADMIN and a token bound to its pod on `node`, labels `node`
#     patched and waits;
#     the DaemonSet controller then deletes that pod and makes a proxy pod
#     for `node` only; SIGTERM ends the labeller with 0;
#   - with a token bound to its pod the policy refuses any other change:
#     another Node, another label, another value, the spec, an annotation,
#     a finalizer, an owner (checked before the labeller runs: a token of
#     a deleted pod expires a minute after the deletion);
# There is no kube-scheduler here: the suite binds the labeller's pod to
# its Node (pods/binding) as the scheduler would. `unpatched` on Debian's
# own ip_vs is suite proxy-fallback's (--probe-kernel).

LSA=system:serviceaccount:kube-system:ipvsbpf-node-labeller
lab=$K8S/labeller
mkdir -p "$lab/sa" "$lab/unbound"

step "node labeller: --probe-kernel on node; the labeller's ServiceAccount may exactly patch Nodes"
probe=$(topo_exec node "$proxy" --probe-kernel) || fail "--probe-kernel on the patched kernel: '$probe'"
echo "      $probe"
[[ $probe == "patched: "* ]] || fail "--probe-kernel: '$probe'"
kc apply -f "$ds/rendered.yaml" >/dev/null ||
	fail "applying testbed/k8s/overlay (the proxy's and the labeller's DaemonSets)"
perms=$(kc auth can-i --list --as "$LSA" 2>/dev/null)
echo "$perms" | grep -qE '^nodes +\[\] +\[\] +\[patch\] *$' ||
	fail "the labeller may not exactly patch nodes: $(echo "$perms" | grep '^nodes ')"
echo "$perms" | grep -qE '^(secrets|pods|configmaps|services|endpointslices[^ ]*|nodes/status|\*\.\*) ' &&
	fail "the labeller may do more: $perms"

# ds_pods APP: "POD NODE DELETING" a line for the DaemonSet APP's pods (the
# Node the controller aimed each at, from its node affinity; DELETING is
# the deletion timestamp, empty while the pod lives)
ds_pods() {
	kc -n kube-system get pods -l "app.kubernetes.io/name=$1" -o jsonpath='{range .items[*]}{.metadata.name}{" "}{.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchFields[0].values[0]}{" "}{.metadata.deletionTimestamp}{"\n"}{end}'
}
node_label() { kc get node "$1" -o jsonpath='{.metadata.labels.ipvs-bpf\.io/kernel}'; }
nnodes=$(kc get nodes -o name | wc -l)
wait_for 90 eval '[ "$(ds_pods ipvsbpf-node-labeller | wc -l)" = "$nnodes" ]' ||
	fail "the DaemonSet controller made $(ds_pods ipvsbpf-node-labeller | wc -l) labeller pods for $nnodes Nodes"
echo "      labeller pods: $(ds_pods ipvsbpf-node-labeller | awk '{ print $1 "->" $2 }' | xargs)"
[ -z "$(ds_pods ipvsbpf-proxy)" ] || fail "proxy pods on unlabelled Nodes: $(ds_pods ipvsbpf-proxy | xargs)"
lpod=$(ds_pods ipvsbpf-node-labeller | awk '$2 == "node" { print $1 }')
[ -n "$lpod" ] || fail "no labeller pod for node"
# the scheduler's part
k8s_api POST "/api/v1/namespaces/kube-system/pods/$lpod/binding" \
	"{\"apiVersion\":\"v1\",\"kind\":\"Binding\",\"metadata\":{\"name\":\"$lpod\"},\"target\":{\"kind\":\"Node\",\"name\":\"node\"}}" \
	application/json >/dev/null || fail "binding $lpod to node"

"$TOP/testbed/k8s/daemonset-spec" "$ds/rendered.json" node "$lab" --daemonset ipvsbpf-node-labeller ||
	fail "reading the labeller's DaemonSet"
mapfile -t lenvs <"$lab/env"
mapfile -t largs <"$lab/args"
for d in sa unbound; do
	cp "$K8S/pki/ca.crt" "$lab/$d/ca.crt"
	echo kube-system >"$lab/$d/namespace"
done
kc -n kube-system create token ipvsbpf-node-labeller --bound-object-kind Pod \
	--bound-object-name "$lpod" --duration=1h >"$lab/sa/token" || fail "a token bound to $lpod"
kc -n kube-system create token ipvsbpf-node-labeller --duration=1h >"$lab/unbound/token" ||
	fail "an unbound token"

# labeller_run SADIR: ipvsbpf-proxy with the labeller DaemonSet's command and
# environment on node, SADIR as its ServiceAccount volume, and the
# container's one capability (CAP_NET_ADMIN: the bounding set caps what
# root gets at exec). It execs: run it in a subshell ($(...) or &), whose
# PID is then the labeller's (timeout passes a SIGTERM on and returns its
# status).
labeller_run() {
	exec timeout 300 ip netns exec node unshare -m -- sh -c "$K8S_CONTAINER" sh "$1" - - \
		"${lenvs[@]}" -- setpriv --bounding-set=-all,+net_admin --inh-caps=-all --no-new-privs \
		"$proxy" "${largs[@]}"
}

step "node labeller: a token not bound to a pod is refused, and says so"
if out=$(labeller_run "$lab/unbound" 2>&1); then
	fail "the labeller succeeded with an unbound token: $out"
fi
echo "$out" | grep -F 'ipvs-bpf.io/kernel' | tail -n1 | cut -c1-300 | sed 's/^/      /'
echo "$out" | grep -qF 'may change only the Node its pod runs on' ||
	fail "the refusal does not name the policy's rule: $(echo "$out" | tail -n3)"
[ -z "$(node_label node)" ] || fail "node got a label from a refused labeller"

step "node labeller: with a token bound to its pod on node, the admission policy refuses anything else"
# lpatch NODE JSON: a merge patch of NODE as the labeller; "CODE message"
lpatch() {
	topo_exec control curl -s -m 30 --cacert "$K8S/pki/ca.crt" \
		-H "Authorization: Bearer $(cat "$lab/sa/token")" \
		-H 'Content-Type: application/merge-patch+json' -X PATCH --data-binary "$2" \
		-w '\n%{http_code}\n' "$K8S_URL/api/v1/nodes/$1" |
		python3 -c 'import json, sys
t = sys.stdin.read().rsplit("\n", 2)
try:
    m = json.loads(t[0]).get("message", "")
except ValueError:
    m = t[0][:200]
print(t[1], m)'
}
for c in "node2|{\"metadata\":{\"labels\":{\"ipvs-bpf.io/kernel\":\"patched\"}}}|may change only the Node its pod runs on" \
	"node|{\"metadata\":{\"labels\":{\"team\":\"x\"}}}|may change only the label ipvs-bpf.io/kernel" \
	"node|{\"metadata\":{\"labels\":{\"kubernetes.io/hostname\":null}}}|may change only the label ipvs-bpf.io/kernel" \
	"node|{\"metadata\":{\"labels\":{\"ipvs-bpf.io/kernel\":\"maybe\"}}}|either patched or unpatched" \
	"node|{\"spec\":{\"unschedulable\":true}}|spec, annotations" \
	"node|{\"metadata\":{\"annotations\":{\"x\":\"y\"}}}|spec, annotations" \
	"node|{\"metadata\":{\"finalizers\":[\"example.com/hold\"]}}|spec, annotations, owners or finalizers" \
	"node|{\"metadata\":{\"ownerReferences\":[{\"apiVersion\":\"v1\",\"kind\":\"Namespace\",\"name\":\"x\",\"uid\":\"6f0a8f5e-0000-4000-8000-000000000000\"}]}}|spec, annotations, owners or finalizers"; do
	IFS='|' read -r n body want <<<"$c"
	got=$(lpatch "$n" "$body")
	echo "      $n $body: ${got:0:160}"
	[[ $got == 200* ]] && fail "the policy let the labeller patch $n with $body"
	[[ $got == *"$want"* ]] || fail "patch of $n with $body: want '$want', got '$got'"
done
[ -z "$(node_label node)" ] && [ -z "$(node_label node2)" ] || fail "a refused patch set a label"
[ "$(kc get node node -o jsonpath='{.spec.unschedulable}')" != true ] || fail "a refused patch changed node's spec"

step "node labeller: the DaemonSet's command, a token bound to its pod on node"
labeller_run "$lab/sa" >"$K8S_LOGS/labeller.log" 2>&1 &
LPID=$!
wait_for 60 eval '[ "$(node_label node)" = patched ]' ||
	{ sed 's/^/      log: /' "$K8S_LOGS/labeller.log"; fail "node not labelled patched"; }
kill -0 "$LPID" 2>/dev/null || fail "the labeller exited after labelling: $(tail -n3 "$K8S_LOGS/labeller.log")"
kc get node node --show-managed-fields -o json | grep -qF '"manager": "ipvsbpf-node-labeller"' ||
	fail "the label's field manager is not ipvsbpf-node-labeller"
# (a live pod aimed at node, or no answer, keeps waiting)
labeller_gone() {
	local p
	p=$(ds_pods ipvsbpf-node-labeller) || return 1
	! echo "$p" | awk '$2 == "node" && $3 == ""' | grep -q .
}
wait_for 60 labeller_gone ||
	fail "the DaemonSet controller kept the labeller pod of the labelled node: $(ds_pods ipvsbpf-node-labeller | xargs)"
wait_for 60 eval '[ "$(ds_pods ipvsbpf-proxy | awk '"'"'{ print $2 }'"'"' | xargs)" = node ]' ||
	fail "proxy pods: '$(ds_pods ipvsbpf-proxy | xargs)', want one for node alone"
echo "      node: ipvs-bpf.io/kernel=$(node_label node); the controller deleted $lpod and made" \
	"$(ds_pods ipvsbpf-proxy | awk '{ print $1 }') for node alone"
[ -z "$(node_label node2)" ] || fail "node2 got a label: $(node_label node2)"
kill -TERM "$LPID"
wait "$LPID" || fail "the labeller exited $? on SIGTERM"
grep -qF 'labelled ipvs-bpf.io/kernel=patched' "$K8S_LOGS/labeller.log" ||
	fail "the labeller's log does not say what it set"

# Leave the cluster as the suite found it: no DaemonSets (their pods never
# run here), no label.
kc -n kube-system delete ds ipvsbpf-proxy ipvsbpf-node-labeller >/dev/null || fail "deleting the DaemonSets"
# (a pod bound to a Node waits for its kubelet to confirm the deletion)
kc -n kube-system delete pod "$lpod" --grace-period=0 --force >/dev/null 2>&1 || true
wait_for 60 eval '[ -z "$(ds_pods ipvsbpf-node-labeller)$(ds_pods ipvsbpf-proxy)" ]' ||
	fail "DaemonSet pods left: $(ds_pods ipvsbpf-node-labeller) $(ds_pods ipvsbpf-proxy)"
kc label node node ipvs-bpf.io/kernel- >/dev/null || fail "removing node's label"
