//! Shared by the source tests: a test API server, manifest builders and
//! bounded waits on the inventory.
#![allow(dead_code)]

pub mod apiserver;

use std::collections::BTreeMap;
use std::time::Duration;

use ipvsbpf_proxy::model::inventory::{Inventory, Shared};
use serde_json::{json, Value};

/// How long any convergence may take; generous for a loaded 2-core box,
/// and above kube-runtime's first backoff steps.
pub const DEADLINE: Duration = Duration::from_secs(20);

pub fn service(ns: &str, name: &str, port: u16, labels: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"namespace": ns, "name": name, "labels": labels},
        "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10",
                 "ports": [{"name": "http", "port": port, "protocol": "TCP", "targetPort": 8080}]}
    })
}

pub fn slice(ns: &str, name: &str, svc: &str, ip: &str, extra_labels: Value) -> Value {
    let mut labels = json!({"kubernetes.io/service-name": svc});
    if let (Some(l), Some(extra)) = (labels.as_object_mut(), extra_labels.as_object()) {
        l.extend(extra.clone());
    }
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"namespace": ns, "name": name, "labels": labels},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "conditions": {"ready": true}, "nodeName": "node-1"}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
    })
}

pub fn node(name: &str, ip: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"addresses": [{"type": "InternalIP", "address": ip}]}
    })
}

/// What the inventory holds, keyed "Kind ns/name" → resourceVersion, so
/// tests compare exact contents (a stale version shows as a wrong value).
pub fn snapshot(inv: &Inventory) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for name in inv.service_names() {
        let rv = inv
            .service(name)
            .and_then(|s| s.resource_version.as_deref().map(str::to_string))
            .unwrap_or_default();
        out.insert(format!("Service {name}"), rv);
    }
    for s in inv.all_slices() {
        out.insert(
            format!("EndpointSlice {}/{}", s.namespace, s.name),
            s.resource_version.clone().unwrap_or_default(),
        );
    }
    if let Some(n) = inv.node() {
        out.insert(
            format!("Node {}", n.metadata.name.as_deref().unwrap_or("")),
            n.metadata.resource_version.clone().unwrap_or_default(),
        );
    }
    out
}

/// Builds an expected snapshot from (key, resourceVersion) pairs.
pub fn expect(entries: &[(&str, u64)]) -> BTreeMap<String, String> {
    entries
        .iter()
        .map(|(k, rv)| (k.to_string(), rv.to_string()))
        .collect()
}

/// Waits until the inventory snapshot equals `want` (and all kinds are
/// synced); panics with both on the deadline.
pub async fn converge(inv: &Shared, want: &BTreeMap<String, String>, what: &str) {
    let start = tokio::time::Instant::now();
    loop {
        let (got, synced) = {
            let i = inv.lock();
            (snapshot(&i), i.synced())
        };
        if synced && &got == want {
            return;
        }
        if start.elapsed() > DEADLINE {
            panic!("{what}: no convergence in {DEADLINE:?} (synced {synced})\n got: {got:#?}\nwant: {want:#?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `f` holds; panics with `what` on the deadline.
pub async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = tokio::time::Instant::now();
    while !f() {
        if start.elapsed() > DEADLINE {
            panic!("{what}: not reached in {DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
