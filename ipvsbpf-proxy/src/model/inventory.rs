//! The inventory: the API objects the proxy acts on (Services,
//! EndpointSlices and this node's Node), filled by a source (`kube` or
//! `file`) and read by the syncer.
//!
//! Besides storing objects it records *which Services changed* since the
//! syncer last looked, so that a resync after one EndpointSlice update
//! recomputes one Service, not thousands. Every single-object operation
//! costs O(change): the slice index by owning Service means no walk over
//! all objects. Only relists (`replace_*`) walk everything, and they dirty
//! only what actually differs, so a 410-Gone relist of an unchanged cluster
//! costs no IPVS work.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::model::desired::ServiceName;
use crate::model::service::StoredService;
use crate::model::slice::Slice;
use crate::model::sorted::SortedVec;

/// The label an EndpointSlice's owning Service is named by (set by the
/// EndpointSlice controller; kube-proxy uses the same label).
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// When the change an EndpointSlice carries was triggered (a Pod or
/// Service update), set by the EndpointSlice controller; kube-proxy's
/// network programming latency is measured from it.
pub const TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// Why an object was refused by the inventory.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InventoryError {
    /// Without a namespace and a name an object cannot be keyed; the API
    /// server never sends one, so this is a malformed manifest.
    #[error("{kind} without metadata.{field}")]
    MissingMeta {
        kind: &'static str,
        field: &'static str,
    },
}

/// One of the three object kinds, for [`Inventory::set_synced`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Services,
    Slices,
    Node,
}

/// What changed since the last [`Inventory::take_dirty`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dirty {
    /// Everything must be recomputed (the node changed: its addresses feed
    /// NodePorts and its labels topology).
    pub all: bool,
    /// Services whose object or slices changed, including deleted ones
    /// (the syncer removes their state).
    pub services: BTreeSet<ServiceName>,
    /// EndpointSlice additions, updates and deletions that changed
    /// something (kubeproxy_sync_proxy_rules_endpoint_changes_total).
    pub slice_changes: u64,
    /// Trigger times of the slice updates, per Service, for
    /// kubeproxy_network_programming_duration_seconds: only times after
    /// the inventory began (older ones describe changes an earlier proxy
    /// programmed), none for a Service whose slice was deleted since (a
    /// deleted slice's time is that of its last update, as kube-proxy
    /// notes).
    pub trigger_times: BTreeMap<ServiceName, Vec<SystemTime>>,
}

impl Dirty {
    pub fn is_empty(&self) -> bool {
        !self.all && self.services.is_empty()
    }
}

/// When an inventory began tracking (kube-proxy's trackerStartTime).
#[derive(Clone, Copy, Debug)]
struct Since(SystemTime);

impl Default for Since {
    fn default() -> Self {
        Since(SystemTime::now())
    }
}

/// The slice's trigger time, if it has a readable one.
fn trigger_time(slice: &Slice) -> Option<SystemTime> {
    let value = slice.trigger_time.as_deref()?;
    match value.parse::<k8s_openapi::jiff::Timestamp>() {
        Ok(t) => Some(SystemTime::from(t)),
        Err(e) => {
            tracing::debug!(%value, error = %e, "unreadable {TRIGGER_TIME_ANNOTATION}");
            None
        }
    }
}

type SliceKey = (String, String);

/// The store. See the module documentation.
#[derive(Debug, Default)]
pub struct Inventory {
    services: HashMap<ServiceName, Arc<StoredService>>,
    slices: HashMap<SliceKey, Arc<Slice>>,
    /// Slice names (in the service's namespace) per owning Service, so a
    /// Service's slices are found without scanning all slices.
    by_service: HashMap<ServiceName, SortedVec<String>>,
    node: Option<Arc<Node>>,
    synced_services: bool,
    synced_slices: bool,
    synced_node: bool,
    dirty: Dirty,
    since: Since,
}

/// Without a namespace and a name an object cannot be keyed; the API
/// server never sends one, so this is a malformed manifest.
fn check_key(kind: &'static str, namespace: &str, name: &str) -> Result<(), InventoryError> {
    let missing = |field| InventoryError::MissingMeta { kind, field };
    if namespace.is_empty() {
        return Err(missing("namespace"));
    }
    if name.is_empty() {
        return Err(missing("name"));
    }
    Ok(())
}

/// A slice's key ([`check_key`]).
fn slice_key(slice: &Slice) -> Result<SliceKey, InventoryError> {
    check_key("EndpointSlice", &slice.namespace, &slice.name)?;
    Ok((slice.namespace.clone(), slice.name.clone()))
}

/// A Service's key ([`check_key`]).
fn service_key(svc: &StoredService) -> Result<ServiceName, InventoryError> {
    check_key("Service", &svc.name.namespace, &svc.name.name)?;
    Ok(svc.name.clone())
}

/// Owning Service of a slice, from its label; slices without the label
/// (e.g. hand-made, mirrored without owner) are stored but serve nobody.
fn owner_of(slice: &Slice) -> Option<ServiceName> {
    Some(ServiceName::new(&slice.namespace, slice.service()?))
}

/// What the inventory takes as a `T` it stores ([`StoredService`],
/// [`Slice`]): the API object, converted, or a `T`. One in an `Arc` is
/// stored as it is, shared with a source that keeps it too (the file
/// source's cache).
pub trait IntoStored<T> {
    fn into_stored(self) -> Arc<T>;
}

impl<T> IntoStored<T> for T {
    fn into_stored(self) -> Arc<T> {
        Arc::new(self)
    }
}

impl<T> IntoStored<T> for Arc<T> {
    fn into_stored(self) -> Arc<T> {
        self
    }
}

impl IntoStored<StoredService> for Service {
    fn into_stored(self) -> Arc<StoredService> {
        Arc::new(StoredService::from(&self))
    }
}

impl IntoStored<Slice> for EndpointSlice {
    fn into_stored(self) -> Arc<Slice> {
        Arc::new(Slice::from(&self))
    }
}

/// Drops what the proxy never reads from the Node's metadata before it is
/// stored: managedFields (often the largest part of an object as the API
/// server sends it), owner references and annotations.
fn slim(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    meta.owner_references = None;
    meta.annotations = None;
}

/// Node fields the model reads: labels (topology) and addresses (NodePort
/// and external addresses).
fn same_node(a: Option<&Node>, b: Option<&Node>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            a.metadata.labels == b.metadata.labels
                && a.status.as_ref().and_then(|s| s.addresses.as_ref())
                    == b.status.as_ref().and_then(|s| s.addresses.as_ref())
        }
        _ => false,
    }
}

impl Inventory {
    pub fn new() -> Inventory {
        Inventory::default()
    }

    /// Adds or updates a Service, stored as a [`StoredService`] (one in
    /// an `Arc` is shared as it is); it becomes dirty only if something
    /// the proxy reads changed.
    pub fn apply_service(
        &mut self,
        svc: impl IntoStored<StoredService>,
    ) -> Result<(), InventoryError> {
        let svc = svc.into_stored();
        let key = service_key(&svc)?;
        let changed = match self.services.get(&key) {
            Some(old) => !old.same(&svc),
            None => true,
        };
        if changed {
            self.dirty.services.insert(key.clone());
        }
        // Stored even when unchanged, so readers see the latest version.
        self.services.insert(key, svc);
        Ok(())
    }

    pub fn delete_service(&mut self, namespace: &str, name: &str) {
        let key = ServiceName::new(namespace, name);
        if self.services.remove(&key).is_some() {
            self.dirty.services.insert(key);
        }
    }

    /// Adds or updates an EndpointSlice, stored as a [`Slice`] (one in an
    /// `Arc` is shared as it is). A slice that moved to another Service
    /// (its label changed) dirties both.
    pub fn apply_slice(&mut self, slice: impl IntoStored<Slice>) -> Result<(), InventoryError> {
        let slice = slice.into_stored();
        let key = slice_key(&slice)?;
        let new_owner = owner_of(&slice);
        let old = self.slices.get(&key);
        let old_owner = old.and_then(|s| owner_of(s));
        let changed = match old {
            Some(old) => !old.same(&slice),
            None => true,
        };
        if old_owner != new_owner {
            if let Some(owner) = &old_owner {
                self.unindex(owner, &key.1);
            }
        }
        if let Some(owner) = &new_owner {
            self.by_service
                .entry(owner.clone())
                .or_default()
                .insert(key.1.clone());
        }
        if changed {
            self.dirty.slice_changes += 1;
            if let (Some(owner), Some(t)) = (&new_owner, trigger_time(&slice)) {
                if t > self.since.0 {
                    self.dirty
                        .trigger_times
                        .entry(owner.clone())
                        .or_default()
                        .push(t);
                }
            }
            self.dirty.services.extend(old_owner);
            self.dirty.services.extend(new_owner);
        }
        self.slices.insert(key, slice);
        Ok(())
    }

    pub fn delete_slice(&mut self, namespace: &str, name: &str) {
        let key = (namespace.to_string(), name.to_string());
        if let Some(old) = self.slices.remove(&key) {
            self.dirty.slice_changes += 1;
            if let Some(owner) = owner_of(&old) {
                self.unindex(&owner, name);
                self.dirty.trigger_times.remove(&owner);
                self.dirty.services.insert(owner);
            }
        }
    }

    fn unindex(&mut self, owner: &ServiceName, slice_name: &str) {
        if let Some(names) = self.by_service.get_mut(owner) {
            names.remove(slice_name);
            if names.is_empty() {
                self.by_service.remove(owner);
            }
        }
    }

    /// Sets this node's Node object (None: not found). A change of labels
    /// or addresses dirties everything.
    pub fn set_node(&mut self, mut node: Option<Node>) {
        if let Some(n) = node.as_mut() {
            slim(&mut n.metadata);
            // The image list alone can be kilobytes; addresses are read.
            if let Some(status) = n.status.as_mut() {
                status.images = None;
                status.volumes_attached = None;
                status.volumes_in_use = None;
            }
        }
        if !same_node(self.node.as_deref(), node.as_ref()) {
            self.dirty.all = true;
        }
        self.node = node.map(Arc::new);
    }

    /// Replaces all Services with a complete listing (a relist or a file
    /// re-read): only Services that differ or are gone become dirty.
    /// Objects without namespace or name are skipped with a warning.
    pub fn replace_services<S: IntoStored<StoredService>>(
        &mut self,
        all: impl IntoIterator<Item = S>,
    ) {
        let mut seen = BTreeSet::new();
        for svc in all {
            let svc = svc.into_stored();
            match service_key(&svc) {
                Ok(key) => {
                    seen.insert(key);
                    // Cannot fail: the key was just checked.
                    let _ = self.apply_service(svc);
                }
                Err(e) => tracing::warn!(error = %e, "listed Service skipped"),
            }
        }
        let gone: Vec<ServiceName> = self
            .services
            .keys()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            self.services.remove(&key);
            self.dirty.services.insert(key);
        }
    }

    /// Replaces all EndpointSlices with a complete listing; see
    /// [`Inventory::replace_services`].
    pub fn replace_slices<S: IntoStored<Slice>>(&mut self, all: impl IntoIterator<Item = S>) {
        let mut seen = BTreeSet::new();
        for slice in all {
            let slice = slice.into_stored();
            match slice_key(&slice) {
                Ok(key) => {
                    seen.insert(key);
                    let _ = self.apply_slice(slice);
                }
                Err(e) => tracing::warn!(error = %e, "listed EndpointSlice skipped"),
            }
        }
        let gone: Vec<SliceKey> = self
            .slices
            .keys()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        for (namespace, name) in gone {
            self.delete_slice(&namespace, &name);
        }
    }

    /// Records that a kind has been listed completely once.
    pub fn set_synced(&mut self, what: Kind) {
        match what {
            Kind::Services => self.synced_services = true,
            Kind::Slices => self.synced_slices = true,
            Kind::Node => self.synced_node = true,
        }
    }

    /// All three kinds have been listed at least once: before that, a
    /// sync would delete every Service not yet seen.
    pub fn synced(&self) -> bool {
        self.synced_services && self.synced_slices && self.synced_node
    }

    /// (Services, EndpointSlice changes) waiting for the next sync.
    pub fn pending(&self) -> (usize, u64) {
        (self.dirty.services.len(), self.dirty.slice_changes)
    }

    /// What changed since the last call; resets the record.
    pub fn take_dirty(&mut self) -> Dirty {
        std::mem::take(&mut self.dirty)
    }

    pub fn service(&self, name: &ServiceName) -> Option<&Arc<StoredService>> {
        self.services.get(name)
    }

    /// The EndpointSlices owned by a Service, sorted by slice name.
    pub fn slices(&self, name: &ServiceName) -> Vec<Arc<Slice>> {
        let Some(names) = self.by_service.get(name) else {
            return Vec::new();
        };
        names
            .iter()
            .filter_map(|n| {
                self.slices
                    .get(&(name.namespace.to_string(), n.clone()))
                    .cloned()
            })
            .collect()
    }

    /// One EndpointSlice by namespace and name.
    pub fn slice(&self, namespace: &str, name: &str) -> Option<&Arc<Slice>> {
        self.slices.get(&(namespace.to_string(), name.to_string()))
    }

    /// Every stored EndpointSlice, owned or not, in no particular order.
    pub fn all_slices(&self) -> impl Iterator<Item = &Arc<Slice>> {
        self.slices.values()
    }

    pub fn node(&self) -> Option<&Arc<Node>> {
        self.node.as_ref()
    }

    pub fn service_names(&self) -> impl Iterator<Item = &ServiceName> {
        self.services.keys()
    }

    /// (services, slices) stored.
    pub fn counts(&self) -> (usize, usize) {
        (self.services.len(), self.slices.len())
    }
}

/// The inventory as shared between a source and the syncer.
pub type Shared = Arc<SharedInventory>;

/// A source locks, mutates, then calls `changed.notify_one()`; the syncer
/// waits on `changed` and takes the dirty set. `Notify` keeps one permit,
/// so a notification sent while the syncer is busy is not lost.
#[derive(Debug, Default)]
pub struct SharedInventory {
    pub inventory: Mutex<Inventory>,
    pub changed: tokio::sync::Notify,
}

impl SharedInventory {
    pub fn new_shared() -> Shared {
        Arc::new(SharedInventory::default())
    }

    /// Locks the inventory. A panic while it was held cannot leave it
    /// half-updated in a way that matters (every operation keeps the maps
    /// consistent before returning), so a poisoned lock is taken over
    /// rather than turned into a second panic.
    pub fn lock(&self) -> MutexGuard<'_, Inventory> {
        self.inventory
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` under the lock, then wakes the syncer.
    pub fn update<R>(&self, f: impl FnOnce(&mut Inventory) -> R) -> R {
        let r = f(&mut self.lock());
        self.changed.notify_one();
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(ns: &str, name: &str, rv: &str, port: i32) -> Service {
        serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": name, "resourceVersion": rv},
            "spec": {"clusterIP": "10.0.0.1", "ports": [{"port": port, "protocol": "TCP"}]}
        }))
        .expect("test service")
    }

    fn slice(ns: &str, name: &str, owner: Option<&str>, rv: &str, ip: &str) -> EndpointSlice {
        let mut v = json!({
            "metadata": {"namespace": ns, "name": name, "resourceVersion": rv},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [ip]}],
            "ports": [{"port": 80}]
        });
        if let Some(owner) = owner {
            v["metadata"]["labels"] = json!({ SERVICE_NAME_LABEL: owner });
        }
        serde_json::from_value(v).expect("test slice")
    }

    fn node(labels: serde_json::Value, ip: &str, rv: &str) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": "n1", "labels": labels, "resourceVersion": rv},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}]}
        }))
        .expect("test node")
    }

    fn names(d: &Dirty) -> Vec<String> {
        d.services.iter().map(|n| n.to_string()).collect()
    }

    fn sn(ns: &str, name: &str) -> ServiceName {
        ServiceName::new(ns, name)
    }

    /// Stored objects keep what the model reads and lose the rest:
    /// managedFields, owner references, annotations (a slice's trigger
    /// time excepted), a Service's selector, a Node's image list.
    #[test]
    fn stored_objects_are_slimmed() {
        let mut inv = Inventory::new();
        let meta_extra = json!({
            "managedFields": [{"manager": "kubectl", "operation": "Apply",
                               "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}],
            "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": "a",
                                 "uid": "u1"}],
        });
        let mut s = serde_json::to_value(svc("ns", "a", "1", 80)).expect("json");
        s["metadata"]["managedFields"] = meta_extra["managedFields"].clone();
        s["metadata"]["annotations"] = json!({
            "kubectl.kubernetes.io/last-applied-configuration": "{\"kind\":\"Service\"}"
        });
        s["metadata"]["labels"] = json!({"app": "web"});
        s["spec"]["selector"] = json!({"app": "web"});
        inv.apply_service(serde_json::from_value::<Service>(s).expect("service"))
            .expect("apply");
        // Stored as a StoredService (model::service): the name, the labels
        // that select it and the spec as the model parsed it.
        let stored = inv.service(&sn("ns", "a")).expect("stored");
        assert_eq!(stored.labels, crate::model::ProxyLabels::default());
        let parsed = stored
            .spec
            .as_ref()
            .expect("valid")
            .as_ref()
            .expect("has a cluster IP");
        assert_eq!(
            parsed.cluster_ips,
            ["10.0.0.1".parse::<std::net::IpAddr>().expect("ip")]
        );

        let mut sl =
            serde_json::to_value(slice("ns", "s1", Some("a"), "1", "10.1.0.1")).expect("json");
        sl["metadata"]["managedFields"] = meta_extra["managedFields"].clone();
        sl["metadata"]["ownerReferences"] = meta_extra["ownerReferences"].clone();
        sl["metadata"]["annotations"] = json!({
            TRIGGER_TIME_ANNOTATION: "2026-12-05T00:00:00Z",
            "other": "x",
        });
        sl["endpoints"][0]["targetRef"] = json!({"kind": "Pod", "namespace": "ns",
                                                 "name": "web-7d4b9", "uid": "u2"});
        sl["endpoints"][0]["deprecatedTopology"] = json!({"kubernetes.io/hostname": "n1"});
        inv.apply_slice(serde_json::from_value::<EndpointSlice>(sl).expect("slice"))
            .expect("apply");
        // Stored as a compact Slice (model::slice): what the model reads.
        let stored = inv.slice("ns", "s1").expect("stored");
        assert_eq!(stored.trigger_time.as_deref(), Some("2026-12-05T00:00:00Z"));
        assert_eq!(
            stored.endpoints[0].address,
            crate::model::slice::Address::Ip("10.1.0.1".parse().expect("ip"))
        );

        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": "n1", "managedFields": meta_extra["managedFields"].clone()},
            "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.1"}],
                       "images": [{"names": ["registry/x:1"], "sizeBytes": 1}]}
        }))
        .expect("node");
        inv.set_node(Some(node));
        let stored = inv.node().expect("node");
        assert_eq!(stored.metadata.managed_fields, None);
        let status = stored.status.as_ref().expect("status");
        assert_eq!(status.images, None);
        assert!(status.addresses.is_some(), "addresses are read: kept");
    }

    /// A source that keeps its own copy (the file source's cache) hands
    /// the inventory a StoredService or a Slice in an `Arc`: stored as it
    /// is, one copy between them.
    #[test]
    fn stored_arcs_are_shared() {
        let mut inv = Inventory::new();
        let s = Arc::new(StoredService::from(svc("ns", "a", "1", 80)));
        inv.apply_service(Arc::clone(&s)).expect("apply");
        assert!(Arc::ptr_eq(
            &s,
            inv.service(&sn("ns", "a")).expect("stored")
        ));

        let sl = Arc::new(Slice::from(slice("ns", "s1", Some("a"), "1", "10.1.0.1")));
        inv.replace_slices([Arc::clone(&sl)]);
        assert!(Arc::ptr_eq(&sl, inv.slice("ns", "s1").expect("stored")));
    }

    #[test]
    fn service_dirty_rules() {
        struct Case {
            what: &'static str,
            second: Service,
            dirty: bool,
        }
        let cases = [
            Case {
                what: "same content, new resourceVersion",
                second: svc("ns", "a", "2", 80),
                dirty: false,
            },
            Case {
                what: "port changed",
                second: svc("ns", "a", "2", 81),
                dirty: true,
            },
            Case {
                what: "managedFields only",
                second: {
                    let mut s = svc("ns", "a", "3", 80);
                    s.metadata.managed_fields = Some(vec![Default::default()]);
                    s
                },
                dirty: false,
            },
            Case {
                what: "proxy name label added",
                second: {
                    let mut s = svc("ns", "a", "3", 80);
                    s.metadata.labels = Some(
                        [(
                            crate::model::LABEL_SERVICE_PROXY_NAME.to_string(),
                            "other".to_string(),
                        )]
                        .into(),
                    );
                    s
                },
                dirty: true,
            },
            Case {
                // Only the labels that select a Service are read.
                what: "unrelated label added",
                second: {
                    let mut s = svc("ns", "a", "3", 80);
                    s.metadata.labels = Some([("x".to_string(), "y".to_string())].into());
                    s
                },
                dirty: false,
            },
            Case {
                // The EndpointSlice controller's business, not the proxy's.
                what: "selector changed",
                second: {
                    let mut s = svc("ns", "a", "3", 80);
                    if let Some(spec) = s.spec.as_mut() {
                        spec.selector = Some([("app".to_string(), "x".to_string())].into());
                    }
                    s
                },
                dirty: false,
            },
            Case {
                what: "cluster IP changed",
                second: {
                    let mut s = svc("ns", "a", "3", 80);
                    if let Some(spec) = s.spec.as_mut() {
                        spec.cluster_ip = Some("10.0.0.2".to_string());
                    }
                    s
                },
                dirty: true,
            },
            Case {
                // The model reads no Service annotation: not stored,
                // nothing to recompute.
                what: "annotation added",
                second: {
                    let mut s = svc("ns", "a", "3", 80);
                    s.metadata.annotations = Some([("x".to_string(), "y".to_string())].into());
                    s
                },
                dirty: false,
            },
        ];
        for c in cases {
            let mut inv = Inventory::new();
            inv.apply_service(svc("ns", "a", "1", 80)).expect("apply");
            assert_eq!(
                names(&inv.take_dirty()),
                ["ns/a"],
                "{}: first apply",
                c.what
            );
            inv.apply_service(c.second.clone()).expect("apply");
            let d = inv.take_dirty();
            assert_eq!(!d.services.is_empty(), c.dirty, "{}", c.what);
            // The latest version is stored either way.
            assert_eq!(
                inv.service(&sn("ns", "a")).map(|s| s.as_ref()),
                Some(&StoredService::from(&c.second)),
                "{}",
                c.what
            );
        }
    }

    /// A LoadBalancer's status is read: its ingress IPs, not hostnames,
    /// not `ipMode: Proxy` ones. A refused Service edited into the same
    /// error is not recomputed; fixed, it is.
    #[test]
    fn service_status_and_error_dirty_rules() {
        let lb = |ingress: serde_json::Value| -> Service {
            serde_json::from_value(json!({
                "metadata": {"namespace": "ns", "name": "a"},
                "spec": {"type": "LoadBalancer", "clusterIP": "10.0.0.1",
                         "ports": [{"port": 80, "nodePort": 30080}]},
                "status": {"loadBalancer": {"ingress": ingress}}
            }))
            .expect("lb")
        };
        let bad = |port: i32| {
            let mut s = svc("ns", "a", "1", port);
            if let Some(spec) = s.spec.as_mut() {
                spec.cluster_ip = Some("not-an-ip".into());
            }
            s
        };
        let steps = [
            (
                "hostname only",
                lb(json!([{"hostname": "lb.example"}])),
                false,
            ),
            (
                "an IP",
                lb(json!([{"hostname": "lb.example"}, {"ip": "192.0.2.10"}])),
                true,
            ),
            (
                "the IP in proxy mode",
                lb(json!([{"hostname": "lb.example"}, {"ip": "192.0.2.10", "ipMode": "Proxy"}])),
                true,
            ),
            ("refused", bad(80), true),
            ("refused again, the same error", bad(81), false),
            ("fixed", svc("ns", "a", "1", 81), true),
        ];
        let mut inv = Inventory::new();
        inv.apply_service(lb(json!([]))).expect("apply");
        inv.take_dirty();
        for (what, s, dirty) in steps {
            inv.apply_service(s).expect("apply");
            assert_eq!(!inv.take_dirty().is_empty(), dirty, "{what}");
        }
    }

    #[test]
    fn missing_meta_is_refused() {
        let mut inv = Inventory::new();
        let mut s = svc("ns", "a", "1", 80);
        s.metadata.namespace = None;
        assert_eq!(
            inv.apply_service(s),
            Err(InventoryError::MissingMeta {
                kind: "Service",
                field: "namespace"
            })
        );
        let mut e = slice("ns", "a", Some("a"), "1", "10.1.0.1");
        e.metadata.name = Some(String::new());
        assert_eq!(
            inv.apply_slice(e),
            Err(InventoryError::MissingMeta {
                kind: "EndpointSlice",
                field: "name"
            })
        );
        assert_eq!(inv.counts(), (0, 0));
        assert!(inv.take_dirty().is_empty());
    }

    #[test]
    fn delete_dirties_only_if_present() {
        let mut inv = Inventory::new();
        inv.delete_service("ns", "a");
        inv.delete_slice("ns", "a-1");
        assert!(inv.take_dirty().is_empty());
        inv.apply_service(svc("ns", "a", "1", 80)).expect("apply");
        inv.apply_slice(slice("ns", "a-1", Some("a"), "1", "10.1.0.1"))
            .expect("apply");
        inv.take_dirty();
        inv.delete_slice("ns", "a-1");
        assert_eq!(names(&inv.take_dirty()), ["ns/a"]);
        assert!(inv.slices(&sn("ns", "a")).is_empty());
        inv.delete_service("ns", "a");
        assert_eq!(names(&inv.take_dirty()), ["ns/a"]);
        assert_eq!(inv.counts(), (0, 0));
    }

    #[test]
    fn slice_dirty_rules() {
        let mut inv = Inventory::new();
        inv.apply_slice(slice("ns", "s1", Some("a"), "1", "10.1.0.1"))
            .expect("apply");
        assert_eq!(names(&inv.take_dirty()), ["ns/a"]);

        // Same content, new resourceVersion: nothing.
        inv.apply_slice(slice("ns", "s1", Some("a"), "2", "10.1.0.1"))
            .expect("apply");
        assert!(inv.take_dirty().is_empty());

        // Endpoint changed: the owner only.
        inv.apply_slice(slice("ns", "s1", Some("a"), "3", "10.1.0.2"))
            .expect("apply");
        assert_eq!(names(&inv.take_dirty()), ["ns/a"]);

        // Labels: only those that select a slice are read.
        let labelled = |key: &str| {
            let mut s = slice("ns", "s1", Some("a"), "3", "10.1.0.2");
            if let Some(l) = s.metadata.labels.as_mut() {
                l.insert(key.to_string(), "x".to_string());
            }
            s
        };
        inv.apply_slice(labelled("app")).expect("apply");
        assert!(inv.take_dirty().is_empty(), "an unrelated label");
        inv.apply_slice(labelled(crate::model::LABEL_HEADLESS))
            .expect("apply");
        assert_eq!(names(&inv.take_dirty()), ["ns/a"], "headless");
        inv.apply_slice(slice("ns", "s1", Some("a"), "3", "10.1.0.2"))
            .expect("apply");
        assert_eq!(names(&inv.take_dirty()), ["ns/a"], "headless no more");

        // Moved to another Service: both, and the index follows.
        inv.apply_slice(slice("ns", "s1", Some("b"), "4", "10.1.0.2"))
            .expect("apply");
        assert_eq!(names(&inv.take_dirty()), ["ns/a", "ns/b"]);
        assert!(inv.slices(&sn("ns", "a")).is_empty());
        assert_eq!(inv.slices(&sn("ns", "b")).len(), 1);

        // Label removed: the old owner only; stored but unowned.
        inv.apply_slice(slice("ns", "s1", None, "5", "10.1.0.2"))
            .expect("apply");
        assert_eq!(names(&inv.take_dirty()), ["ns/b"]);
        assert!(inv.slices(&sn("ns", "b")).is_empty());
        assert_eq!(inv.counts(), (0, 1));

        // Same slice name in another namespace is another slice.
        inv.apply_slice(slice("other", "s1", Some("b"), "6", "10.1.0.9"))
            .expect("apply");
        assert_eq!(names(&inv.take_dirty()), ["other/b"]);
        assert!(inv.slices(&sn("ns", "b")).is_empty());
        assert_eq!(inv.counts(), (0, 2));
    }

    /// A slice of ns/a with endpoint `ip` and, if given, a trigger time.
    fn triggered(name: &str, ip: &str, trigger: Option<&str>) -> EndpointSlice {
        let mut s = slice("ns", name, Some("a"), "1", ip);
        if let Some(t) = trigger {
            s.metadata.annotations =
                Some([(TRIGGER_TIME_ANNOTATION.to_string(), t.to_string())].into());
        }
        s
    }

    fn rfc3339(t: SystemTime) -> String {
        k8s_openapi::jiff::Timestamp::try_from(t)
            .expect("a time jiff can hold")
            .to_string()
    }

    #[test]
    fn slice_changes_and_trigger_times() {
        let mut inv = Inventory::new();
        let before = rfc3339(inv.since.0 - std::time::Duration::from_secs(60));
        let after = SystemTime::now() + std::time::Duration::from_secs(1);

        // A trigger time from before the inventory began is an earlier
        // proxy's business; one after it is ours; none, or an unreadable
        // one, is no time.
        inv.apply_slice(triggered("s1", "10.1.0.1", Some(&before)))
            .expect("apply");
        inv.apply_slice(triggered("s2", "10.1.0.2", Some(&rfc3339(after))))
            .expect("apply");
        inv.apply_slice(triggered("s3", "10.1.0.3", None))
            .expect("apply");
        inv.apply_slice(triggered("s4", "10.1.0.4", Some("yesterday")))
            .expect("apply");
        assert_eq!(inv.pending(), (1, 4));
        let d = inv.take_dirty();
        assert_eq!(d.slice_changes, 4);
        let times = d.trigger_times.get(&sn("ns", "a")).expect("ns/a's times");
        assert_eq!(times.len(), 1);
        let got = times[0]
            .duration_since(after)
            .unwrap_or_else(|e| e.duration());
        assert!(got < std::time::Duration::from_millis(1), "{got:?}");
        assert_eq!(inv.pending(), (0, 0));

        // Unchanged: neither a change nor a time.
        inv.apply_slice(triggered("s3", "10.1.0.3", None))
            .expect("apply");
        assert_eq!(inv.take_dirty().slice_changes, 0);

        // A deletion counts as a change and drops the Service's pending
        // times: a deleted slice's time is that of its last update.
        inv.apply_slice(triggered("s3", "10.1.0.9", Some(&rfc3339(after))))
            .expect("apply");
        inv.delete_slice("ns", "s4");
        let d = inv.take_dirty();
        assert_eq!(d.slice_changes, 2);
        assert!(d.trigger_times.is_empty(), "{:?}", d.trigger_times);
    }

    #[test]
    fn slices_of_a_service_sorted() {
        let mut inv = Inventory::new();
        for (name, ip) in [
            ("a-z", "10.1.0.3"),
            ("a-b", "10.1.0.1"),
            ("a-m", "10.1.0.2"),
        ] {
            inv.apply_slice(slice("ns", name, Some("a"), "1", ip))
                .expect("apply");
        }
        inv.apply_slice(slice("ns", "x-1", Some("x"), "1", "10.1.0.9"))
            .expect("apply");
        let got: Vec<String> = inv
            .slices(&sn("ns", "a"))
            .iter()
            .map(|s| s.name.clone())
            .collect();
        assert_eq!(got, ["a-b", "a-m", "a-z"]);
    }

    #[test]
    fn node_dirty_rules() {
        struct Case {
            what: &'static str,
            next: Option<Node>,
            all: bool,
        }
        let base = || node(json!({"zone": "a"}), "192.168.0.1", "1");
        let cases = [
            Case {
                what: "same, new resourceVersion",
                next: Some(node(json!({"zone": "a"}), "192.168.0.1", "2")),
                all: false,
            },
            Case {
                what: "label changed",
                next: Some(node(json!({"zone": "b"}), "192.168.0.1", "2")),
                all: true,
            },
            Case {
                what: "address changed",
                next: Some(node(json!({"zone": "a"}), "192.168.0.2", "2")),
                all: true,
            },
            Case {
                what: "gone",
                next: None,
                all: true,
            },
        ];
        for c in cases {
            let mut inv = Inventory::new();
            inv.set_node(Some(base()));
            assert!(inv.take_dirty().all, "{}: first node", c.what);
            let expect_rv = c
                .next
                .as_ref()
                .and_then(|n| n.metadata.resource_version.clone());
            inv.set_node(c.next);
            assert_eq!(inv.take_dirty().all, c.all, "{}", c.what);
            assert_eq!(
                inv.node().and_then(|n| n.metadata.resource_version.clone()),
                expect_rv,
                "{}",
                c.what
            );
        }
        let mut inv = Inventory::new();
        inv.set_node(None);
        assert!(inv.take_dirty().is_empty(), "None after None");
    }

    #[test]
    fn replace_dirties_only_differences() {
        let mut inv = Inventory::new();
        inv.replace_services(vec![
            svc("ns", "a", "1", 80),
            svc("ns", "b", "1", 80),
            svc("ns", "c", "1", 80),
        ]);
        inv.replace_slices(vec![
            slice("ns", "a-1", Some("a"), "1", "10.1.0.1"),
            slice("ns", "b-1", Some("b"), "1", "10.1.0.2"),
            slice("ns", "c-1", Some("c"), "1", "10.1.0.3"),
        ]);
        assert_eq!(names(&inv.take_dirty()), ["ns/a", "ns/b", "ns/c"]);

        // Relist: a unchanged (new rv), b changed, c gone, d new;
        // slices: a-1 unchanged, b-1 gone, c-1 moved to d.
        inv.replace_services(vec![
            svc("ns", "a", "9", 80),
            svc("ns", "b", "9", 8080),
            svc("ns", "d", "9", 80),
        ]);
        assert_eq!(names(&inv.take_dirty()), ["ns/b", "ns/c", "ns/d"]);
        inv.replace_slices(vec![
            slice("ns", "a-1", Some("a"), "9", "10.1.0.1"),
            slice("ns", "c-1", Some("d"), "9", "10.1.0.3"),
        ]);
        assert_eq!(names(&inv.take_dirty()), ["ns/b", "ns/c", "ns/d"]);
        let mut have: Vec<String> = inv.service_names().map(|n| n.to_string()).collect();
        have.sort();
        assert_eq!(have, ["ns/a", "ns/b", "ns/d"]);
        assert_eq!(inv.counts(), (3, 2));
        assert_eq!(inv.slices(&sn("ns", "d")).len(), 1);
        assert!(inv.slices(&sn("ns", "c")).is_empty());
        assert!(inv.slices(&sn("ns", "b")).is_empty());

        // The same listing again: nothing.
        inv.replace_services(vec![
            svc("ns", "a", "10", 80),
            svc("ns", "b", "10", 8080),
            svc("ns", "d", "10", 80),
        ]);
        assert!(inv.take_dirty().is_empty());
    }

    #[test]
    fn replace_skips_unkeyed_objects() {
        let mut inv = Inventory::new();
        let mut bad = svc("ns", "x", "1", 80);
        bad.metadata.name = None;
        inv.replace_services(vec![svc("ns", "a", "1", 80), bad]);
        assert_eq!(inv.counts(), (1, 0));
        assert_eq!(names(&inv.take_dirty()), ["ns/a"]);
    }

    #[test]
    fn synced_needs_all_three() {
        let mut inv = Inventory::new();
        for (kind, expect) in [
            (Kind::Services, false),
            (Kind::Node, false),
            (Kind::Services, false),
            (Kind::Slices, true),
        ] {
            inv.set_synced(kind);
            assert_eq!(inv.synced(), expect, "after {kind:?}");
        }
    }

    #[test]
    fn take_dirty_resets() {
        let mut inv = Inventory::new();
        inv.apply_service(svc("ns", "a", "1", 80)).expect("apply");
        inv.set_node(Some(node(json!({}), "192.168.0.1", "1")));
        let d = inv.take_dirty();
        assert!(d.all);
        assert_eq!(names(&d), ["ns/a"]);
        assert!(inv.take_dirty().is_empty());
    }

    #[tokio::test]
    async fn shared_update_notifies() {
        let shared = SharedInventory::new_shared();
        shared
            .update(|inv| inv.apply_service(svc("ns", "a", "1", 80)))
            .expect("apply");
        // The permit is stored: this returns at once.
        tokio::time::timeout(std::time::Duration::from_secs(1), shared.changed.notified())
            .await
            .expect("notified");
        assert_eq!(shared.lock().counts(), (1, 0));
    }
}
