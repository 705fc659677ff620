//! The sync step: take what changed in the inventory, run the model for
//! those Services only, hand the results to the reconciler and keep the
//! node state the mode back-ends and health-check servers read. No async
//! and no kernel here beyond the reconciler's `IpvsApi`, so it is tested
//! against the fake.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use tracing::{debug, warn};

use crate::model::desired::{NodeState, ServiceName, ServiceState};
use crate::model::inventory::{Dirty, Inventory};
use crate::model::{self, ModelConfig};
use crate::reconcile::{IpvsApi, Reconciler, SyncReport};

/// What one recompute found.
#[derive(Debug, Default)]
pub struct SyncOutcome {
    /// Services whose desired state was recomputed.
    pub recomputed: usize,
    /// Services the model refused (kept at their previous state).
    pub model_errors: Vec<(ServiceName, String)>,
    /// Whether the node state (addresses, health checks) changed, so the
    /// mode back-end and health-check servers need a pass.
    pub node_changed: bool,
    /// Whether what the node exposes changed: a virtual server came or
    /// went or changed anything but its destinations (kind, source
    /// ranges, flags), or a health check did. An endpoint change alone
    /// leaves it false, so the back-ends that only care about addresses
    /// (the source-range filter, health-check servers) skip their O(all
    /// Services) pass.
    pub frontends_changed: bool,
}

/// Model results per Service and the reconciler that programs them.
pub struct Syncer<I: IpvsApi> {
    cfg: ModelConfig,
    reconciler: Reconciler<I>,
    state: NodeState,
    /// Virtual and real servers in `state`, kept as it changes so that
    /// the gauges cost O(change) per sync, not a walk over every Service.
    counts: (usize, usize),
}

/// A state's virtual servers and their destinations.
fn counts_of(s: &ServiceState) -> (usize, usize) {
    let real = s.virtual_servers.iter().map(|vs| vs.destinations.len());
    (s.virtual_servers.len(), real.sum())
}

impl<I: IpvsApi> Syncer<I> {
    pub fn new(cfg: ModelConfig, reconciler: Reconciler<I>) -> Self {
        Syncer {
            cfg,
            reconciler,
            state: NodeState::default(),
            counts: (0, 0),
        }
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// New node addresses (NodePorts) or mode settings: every Service is
    /// recomputed at the next sync.
    pub fn set_config(&mut self, cfg: ModelConfig) -> bool {
        let changed = cfg != self.cfg;
        self.cfg = cfg;
        changed
    }

    pub fn state(&self) -> &NodeState {
        &self.state
    }

    /// (virtual servers, real servers) the node state holds.
    pub fn counts(&self) -> (usize, usize) {
        self.counts
    }

    pub fn reconciler(&mut self) -> &mut Reconciler<I> {
        &mut self.reconciler
    }

    /// Recomputes the dirty Services (all of them with `dirty.all`): the
    /// part that needs the inventory, cheap enough to run under its lock.
    /// Cost: O(dirty Services) unless `dirty.all`.
    pub fn recompute(&mut self, inv: &Inventory, dirty: Dirty) -> SyncOutcome {
        let mut out = SyncOutcome::default();
        let names: Vec<ServiceName> = if dirty.all {
            // Services gone from the inventory are in the old state only
            let mut all: Vec<ServiceName> = inv.service_names().cloned().collect();
            all.extend(self.state.services.keys().cloned());
            all.sort();
            all.dedup();
            all
        } else {
            dirty.services.into_iter().collect()
        };
        let node = inv.node().map(|n| n.as_ref());
        for name in names {
            out.recomputed += 1;
            let desired = match inv.service(&name) {
                Some(svc) if model::selects(&self.cfg, svc) => {
                    match model::service_state(&self.cfg, svc, &inv.slices(&name), node) {
                        Ok(s) => Some(s),
                        Err(e) => {
                            // keep the last good state: never half-apply
                            warn!(service = %name, error = %e, "Service refused by the model; keeping its previous state");
                            out.model_errors.push((name, e.to_string()));
                            continue;
                        }
                    }
                }
                _ => None,
            };
            let (changed, frontends) = self.record(&name, desired);
            out.node_changed |= changed;
            out.frontends_changed |= frontends;
        }
        debug!(recomputed = out.recomputed, "desired state recomputed");
        out
    }

    /// Programs IPVS: what changed since the last apply, or everything
    /// against a fresh read of the kernel with `full`.
    pub fn apply(&mut self, full: bool, now: Instant) -> SyncReport {
        self.reconciler.sync(full, now)
    }

    /// Stores one Service's state; returns whether it changed, and
    /// whether its frontends did ([`SyncOutcome::frontends_changed`]).
    fn record(&mut self, name: &ServiceName, desired: Option<ServiceState>) -> (bool, bool) {
        let old = self.state.services.get(name).map(Arc::as_ref);
        if old == desired.as_ref() {
            return (false, false);
        }
        let frontends = match (old, desired.as_ref()) {
            (Some(a), Some(b)) => !a.same_frontends(b),
            _ => true,
        };
        let (gone, new) = (old.map(counts_of), desired.as_ref().map(counts_of));
        let (vs, rs) = self.counts;
        let (gone, new) = (gone.unwrap_or_default(), new.unwrap_or_default());
        self.counts = (vs + new.0 - gone.0, rs + new.1 - gone.1);
        let desired = desired.map(Arc::new);
        self.reconciler.set_service_shared(name, desired.clone());
        match desired {
            Some(s) => {
                self.state.services.insert(name.clone(), s);
            }
            None => {
                self.state.services.remove(name);
            }
        }
        (true, frontends)
    }

    /// Health-check node ports of eTP=Local Services with their local
    /// endpoint counts.
    pub fn health_checks(&self) -> BTreeMap<u16, (ServiceName, usize)> {
        self.state
            .services
            .iter()
            .filter_map(|(name, s)| {
                s.health_check
                    .map(|h| (h.node_port, (name.clone(), h.local_endpoints)))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::inventory::Inventory;
    use crate::reconcile::{FakeIpvs, ReconcileOptions};
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use serde_json::json;
    use std::time::Duration;

    fn service(name: &str, ip: &str) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip],
                     "ports": [{"name": "http", "protocol": "TCP", "port": 80}]}
        }))
        .expect("service")
    }

    fn slice(svc: &str, addrs: &[&str]) -> EndpointSlice {
        let eps: Vec<_> = addrs
            .iter()
            .map(|a| json!({"addresses": [a], "conditions": {"ready": true}, "nodeName": "node"}))
            .collect();
        serde_json::from_value(json!({
            "metadata": {"name": format!("{svc}-1"), "namespace": "default",
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "protocol": "TCP", "port": 8080}],
            "endpoints": eps
        }))
        .expect("slice")
    }

    fn syncer() -> Syncer<FakeIpvs> {
        let cfg = ModelConfig {
            node_name: "node".into(),
            ..ModelConfig::default()
        };
        let rec = Reconciler::new(
            FakeIpvs::new(),
            ReconcileOptions {
                exclude_cidrs: vec![],
                drain_timeout: Some(Duration::from_secs(60)),
            },
        );
        Syncer::new(cfg, rec)
    }

    fn dests(s: &mut Syncer<FakeIpvs>, vip: &str) -> Vec<String> {
        let key = ipvs_netlink::ServiceKey::tcp(vip.parse().expect("ip"), 80);
        s.reconciler()
            .ipvs()
            .get(&key)
            .map(|(_, d)| {
                d.iter()
                    .map(|d| format!("{}:{} w{}", d.addr, d.port, d.weight))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn objects_to_ipvs_and_one_change_costs_one_service() {
        let mut inv = Inventory::new();
        for i in 0..50 {
            let name = format!("svc{i}");
            inv.apply_service(service(&name, &format!("10.96.0.{}", i + 1)))
                .expect("svc");
            inv.apply_slice(slice(&name, &["10.1.0.1", "10.1.0.2"]))
                .expect("slice");
        }
        let mut s = syncer();
        let dirty = inv.take_dirty();
        let out = s.recompute(&inv, dirty);
        assert_eq!(out.recomputed, 50);
        assert!(out.node_changed && out.frontends_changed);
        let report = s.apply(true, Instant::now());
        assert!(report.failed.is_empty(), "{:?}", report.failed);
        let by_op = |op| report.by_op.get(&(op, true)).copied();
        assert_eq!(by_op(ipvs_netlink::Op::AddService), Some(50));
        assert_eq!(by_op(ipvs_netlink::Op::AddDestination), Some(100));
        assert_eq!(report.by_op.values().sum::<u64>(), report.requests as u64);
        assert_eq!(s.reconciler().ipvs().len(), 50);
        assert_eq!(
            dests(&mut s, "10.96.0.1"),
            ["10.1.0.1:8080 w1", "10.1.0.2:8080 w1"]
        );

        // one endpoint more for one Service: one Service recomputed, one request
        inv.apply_slice(slice("svc7", &["10.1.0.1", "10.1.0.2", "10.1.0.3"]))
            .expect("slice");
        s.reconciler().ipvs().reset_calls();
        let dirty = inv.take_dirty();
        let out = s.recompute(&inv, dirty);
        assert_eq!(out.recomputed, 1);
        assert!(out.node_changed);
        assert!(
            !out.frontends_changed,
            "an endpoint change leaves the frontends alone"
        );
        let report = s.apply(false, Instant::now());
        assert_eq!(report.requests, 1);
        assert_eq!(
            s.reconciler().ipvs().calls().list,
            0,
            "no kernel dump for a partial sync"
        );
        assert_eq!(dests(&mut s, "10.96.0.8").len(), 3);

        // a malformed change keeps the last good state
        let mut bad = service("svc7", "10.96.0.8");
        if let Some(spec) = bad.spec.as_mut() {
            spec.cluster_ips = Some(vec!["not-an-ip".into()]);
        }
        inv.apply_service(bad).expect("svc");
        let dirty = inv.take_dirty();
        let out = s.recompute(&inv, dirty);
        assert_eq!(out.model_errors.len(), 1);
        assert_eq!(s.apply(false, Instant::now()).requests, 0);
        assert_eq!(dests(&mut s, "10.96.0.8").len(), 3);

        // a deleted Service goes, with one request
        inv.delete_service("default", "svc3");
        let dirty = inv.take_dirty();
        let out = s.recompute(&inv, dirty);
        assert!(out.node_changed);
        assert!(out.frontends_changed, "a Service gone is a frontend gone");
        assert_eq!(s.apply(false, Instant::now()).requests, 1);
        assert_eq!(s.reconciler().ipvs().len(), 49);
        // kept as the state changed: 49 x 2 endpoints, and svc7's third
        assert_eq!(s.counts(), (49, 99));
        assert_eq!(s.counts(), fold(s.state()));
        // and through a recompute of everything
        let all = Dirty {
            all: true,
            ..Dirty::default()
        };
        assert_eq!(s.recompute(&inv, all).recomputed, 49);
        assert_eq!(s.counts(), (49, 99));
    }

    fn fold(state: &NodeState) -> (usize, usize) {
        state
            .services
            .values()
            .map(|s| counts_of(s))
            .fold((0, 0), |(v, r), (a, b)| (v + a, r + b))
    }
}
