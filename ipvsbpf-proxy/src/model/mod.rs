//! The model: one Service, its EndpointSlices and the node in, the
//! [`ServiceState`] the node should program out. Pure functions, no I/O, so
//! every rule of kube-proxy's IPVS mode that we reproduce is a table test.
//!
//! Reference: kube-proxy (`pkg/proxy/serviceport.go`,
//! `pkg/proxy/endpointslicecache.go`, `pkg/proxy/topology.go`,
//! `pkg/proxy/ipvs/proxier.go`).
//!
//! Which input errors fail what:
//! - Anything read from the **Service** (cluster IPs, external IPs, load
//!   balancer ingress IPs, ports, node ports, health check node port,
//!   protocol, type, session affinity) must be valid, or the whole Service
//!   is a [`ModelError`]. The API server validates all of these, so a bad
//!   value means something is badly wrong; the caller keeps the Service's
//!   previous state rather than programming half of it.
//! - Anything read from an **EndpointSlice** (endpoint addresses, endpoint
//!   port numbers, address types) is skipped with a `tracing::warn!`: one
//!   bad endpoint must not take the other endpoints of a Service down, and
//!   slices can be written by anyone with the right RBAC, not only the
//!   EndpointSlice controller.
//!
//! Beside it: the [`inventory`] the sources fill, which keeps Services and
//! EndpointSlices in the forms of [`service`] and [`slice`](mod@slice), and the
//! [`desired`] node state the model computes.

pub mod desired;
pub mod inventory;
pub mod service;
pub mod slice;
pub mod sorted;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use ipvs_netlink::{
    Destination, Family, Protocol, Service as IpvsService, ServiceFlags, ServiceKey,
};
use k8s_openapi::api::core::v1::Node;

use crate::model::desired::{
    Cidr, HealthCheck, ServiceName, ServiceState, SourceRanges, VirtualServer, VsKind,
};
use crate::model::service::{ParsedService, StoredService, SvcPort};
use crate::model::slice::{Address, Slice};

/// Label naming the proxy that serves a Service (`--service-proxy-name`).
pub const LABEL_SERVICE_PROXY_NAME: &str = "service.kubernetes.io/service-proxy-name";
/// Label the API puts on headless Services; no proxy serves them.
pub const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";
/// Node label holding the node's zone, for topology-aware routing.
pub const LABEL_TOPOLOGY_ZONE: &str = "topology.kubernetes.io/zone";
/// The labels that decide which proxy serves a Service and its
/// EndpointSlices (the EndpointSlice controller copies them onto the
/// slices), as the inventory keeps them: the rest of an object's labels
/// is not read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyLabels {
    /// `service.kubernetes.io/service-proxy-name`, when set.
    pub proxy_name: Option<Box<str>>,
    /// Labelled `service.kubernetes.io/headless` (by the API).
    pub headless: bool,
}

impl ProxyLabels {
    pub fn of(labels: Option<&BTreeMap<String, String>>) -> ProxyLabels {
        let get = |key: &str| labels.and_then(|l| l.get(key));
        ProxyLabels {
            proxy_name: get(LABEL_SERVICE_PROXY_NAME).map(|v| v.as_str().into()),
            headless: get(LABEL_HEADLESS).is_some(),
        }
    }

    /// Whether the proxy named `proxy_name` (`--service-proxy-name`)
    /// serves the object, as kube-proxy's informer label selector decides:
    /// with no name, objects that name a proxy belong to another one; with
    /// a name, only the objects naming it. Headless ones are never served.
    pub fn selected_by(&self, proxy_name: Option<&str>) -> bool {
        !self.headless && self.proxy_name.as_deref() == proxy_name
    }
}

/// Session affinity timeout when `ClientIP` affinity gives none (3 hours,
/// the API default).
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10800;
/// Largest session affinity timeout the API accepts (one day).
pub const MAX_AFFINITY_TIMEOUT: u32 = 86400;

/// What the model needs to know about this node and the proxy's flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelConfig {
    pub node_name: String,
    /// Addresses NodePorts are served on (the caller already applied --nodeport-addresses).
    pub node_addresses: Vec<IpAddr>,
    pub masquerade_all: bool,
    /// IPVS scheduler name, default "rr".
    pub scheduler: String,
    /// ipvs-bpf mode: set ipvs_netlink::ServiceFlags::BPF_SNAT on virtual servers whose `masquerade` is true.
    pub bpf_snat: bool,
    /// ipvs-bpf mode with a --cluster-cidr of the family (IPv4, IPv6):
    /// set ServiceFlags::BPF_SNAT_FOREIGN on that family's ClusterIP
    /// virtual servers that are not masqueraded, so IPVS gives SNAT to
    /// clients outside the cluster CIDR (the session map's local nets),
    /// as kube-proxy's `! -s clusterCIDR` masquerade rule does. Without
    /// a CIDR of the family nobody can be told apart, and kube-proxy
    /// masquerades no one.
    pub bpf_snat_foreign: (bool, bool),
    /// Families the proxy programs (dual-stack node: both).
    pub ipv4: bool,
    pub ipv6: bool,
    /// --service-proxy-name semantics: None serves Services WITHOUT the label service.kubernetes.io/service-proxy-name; Some(n) serves only those with that label == n.
    pub service_proxy_name: Option<String>,
}

impl Default for ModelConfig {
    fn default() -> ModelConfig {
        ModelConfig {
            node_name: String::new(),
            node_addresses: Vec::new(),
            masquerade_all: false,
            scheduler: "rr".to_string(),
            bpf_snat: false,
            bpf_snat_foreign: (false, false),
            ipv4: true,
            ipv6: true,
            service_proxy_name: None,
        }
    }
}

impl ModelConfig {
    fn family_enabled(&self, family: Family) -> bool {
        match family {
            Family::Inet => self.ipv4,
            Family::Inet6 => self.ipv6,
        }
    }

    /// kube-proxy also falls back to `rr` when no scheduler is configured.
    fn scheduler(&self) -> &str {
        if self.scheduler.is_empty() {
            "rr"
        } else {
            &self.scheduler
        }
    }
}

/// A Service field the model cannot use. Every variant names the Service
/// and the field (JSON path as in the API, e.g. `spec.ports[1].nodePort`)
/// so the log line is enough to find the object.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum ModelError {
    #[error("service {service}: {field}: {value:?} is not an IP address")]
    BadIp {
        service: ServiceName,
        field: String,
        value: String,
    },
    #[error("service {service}: {field}: {value} is not a port number (1-65535)")]
    BadPort {
        service: ServiceName,
        field: String,
        value: i32,
    },
    #[error("service {service}: {field}: unknown protocol {value:?} (TCP, UDP or SCTP)")]
    UnknownProtocol {
        service: ServiceName,
        field: String,
        value: String,
    },
    #[error("service {service}: spec.type: unknown type {value:?}")]
    UnknownType { service: ServiceName, value: String },
    #[error(
        "service {service}: spec.sessionAffinity: unknown affinity {value:?} (None or ClientIP)"
    )]
    UnknownAffinity { service: ServiceName, value: String },
    #[error(
        "service {service}: spec.sessionAffinityConfig.clientIP.timeoutSeconds: {value} is outside 1-{MAX_AFFINITY_TIMEOUT}"
    )]
    BadAffinityTimeout { service: ServiceName, value: i32 },
    #[error("service {service}: {field}: {value:?} is not a CIDR ({reason})")]
    BadCidr {
        service: ServiceName,
        field: String,
        value: String,
        reason: String,
    },
}

/// Whether this proxy serves `svc`, by its labels
/// ([`ProxyLabels::selected_by`]).
pub fn selects(cfg: &ModelConfig, svc: &StoredService) -> bool {
    svc.labels.selected_by(cfg.service_proxy_name.as_deref())
}

/// The virtual servers `svc` asks of this node, with their real servers
/// chosen from `slices` as kube-proxy's IPVS mode would, and the eTP=Local
/// health check.
///
/// `slices` should be the Service's EndpointSlices; any of another
/// namespace or Service is ignored. `node` is this node's object, used for
/// its zone label only (topology-aware routing is off without it).
///
/// Returns an empty state, not an error, for a Service this proxy does not
/// serve (see [`selects`]), an ExternalName Service and a headless or not
/// yet allocated one (no cluster IP). Returns an error, and nothing else,
/// when any field of the Service is invalid.
pub fn service_state(
    cfg: &ModelConfig,
    svc: &StoredService,
    slices: &[Arc<Slice>],
    node: Option<&Node>,
) -> Result<ServiceState, ModelError> {
    if !selects(cfg, svc) {
        return Ok(ServiceState::default());
    }
    let parsed = match &svc.spec {
        Ok(Some(parsed)) => parsed,
        Ok(None) => return Ok(ServiceState::default()),
        Err(e) => return Err(e.clone()),
    };
    let name = &svc.name;
    let zone = node
        .and_then(|n| n.metadata.labels.as_ref())
        .and_then(|l| l.get(LABEL_TOPOLOGY_ZONE))
        .map(String::as_str)
        .unwrap_or("");
    let slices = accepted_slices(cfg, name, slices);

    // Families the Service has (by its cluster IPs) and we program: a
    // single-stack Service gets no NodePort, external IP or LB address of
    // the other family, as kube-proxy's per-family proxiers behave.
    let families: BTreeSet<Family> = parsed
        .cluster_ips
        .iter()
        .map(Family::of)
        .filter(|f| cfg.family_enabled(*f))
        .collect();

    let mut servers: BTreeMap<ServiceKey, VirtualServer> = BTreeMap::new();
    let mut local_ready: BTreeSet<IpAddr> = BTreeSet::new();

    for port in &parsed.ports {
        let endpoints = port_endpoints(cfg, name, port, &slices);
        local_ready.extend(
            endpoints
                .iter()
                .filter(|e| e.local && e.ready)
                .map(|e| e.addr),
        );
        for family in &families {
            let eps: Vec<&Endpoint> = endpoints
                .iter()
                .filter(|e| Family::of(&e.addr) == *family)
                .collect();
            let cluster = || cluster_destinations(cfg, &eps, zone);
            let local = || local_destinations(&eps);

            let internal = if parsed.internal_local {
                local()
            } else {
                cluster()
            };
            for ip in parsed
                .cluster_ips
                .iter()
                .filter(|a| Family::of(a) == *family)
            {
                let vs = parsed.virtual_server(cfg, port, *ip, VsKind::ClusterIp, &internal);
                servers.entry(vs.key()).or_insert(vs);
            }

            // eTP=Local: this node's endpoints; with none here, the
            // cluster's, so that pods on this node still reach the
            // Service's NodePorts, external and LB addresses (kube-proxy's
            // IPVS mode since PR 97081). An outside client sent here anyway
            // is forwarded without SNAT and loses the reply, as with
            // kube-proxy; the health check reports 0 local endpoints, so
            // load balancers send none. iTP=Local keeps its contract (no
            // local endpoint: nothing), where kube-proxy's IPVS mode also
            // falls back for a Service reachable from outside.
            let external = match parsed.external_local {
                true => Some(local())
                    .filter(|l| !l.is_empty())
                    .unwrap_or_else(cluster),
                false => cluster(),
            };
            let mut external_addrs: Vec<(IpAddr, u16, VsKind)> = Vec::new();
            if let Some(node_port) = port.node_port.filter(|_| parsed.node_ports) {
                external_addrs.extend(
                    cfg.node_addresses
                        .iter()
                        .filter(|a| Family::of(a) == *family)
                        .map(|a| (*a, node_port, VsKind::NodePort)),
                );
            }
            for (ips, kind) in [
                (&parsed.external_ips, VsKind::ExternalIp),
                (&parsed.lb_ips, VsKind::LoadBalancer),
            ] {
                external_addrs.extend(
                    ips.iter()
                        .filter(|a| Family::of(a) == *family)
                        .map(|a| (*a, port.port, kind)),
                );
            }
            for (addr, vport, kind) in external_addrs {
                let vs = parsed.virtual_server(
                    cfg,
                    &SvcPort {
                        port: vport,
                        ..port.clone()
                    },
                    addr,
                    kind,
                    &external,
                );
                servers.entry(vs.key()).or_insert(vs);
            }
        }
    }

    let health_check = parsed.health_check_node_port.map(|node_port| HealthCheck {
        node_port,
        local_endpoints: local_ready.len(),
    });
    Ok(ServiceState {
        virtual_servers: servers.into_values().collect(),
        health_check,
    })
}

impl ParsedService {
    fn virtual_server(
        &self,
        cfg: &ModelConfig,
        port: &SvcPort,
        addr: IpAddr,
        kind: VsKind,
        destinations: &[Destination],
    ) -> VirtualServer {
        let key = ServiceKey::Tuple {
            protocol: port.protocol,
            addr,
            port: port.port,
        };
        let mut service = IpvsService::new(key, cfg.scheduler());
        // As kube-proxy: mh hashes the client's port too (its
        // FlagSourceHash), or one client's connections all land on one
        // real server.
        if cfg.scheduler() == "mh" {
            service.flags |= ServiceFlags::MH_PORT;
        }
        if let Some(timeout) = self.affinity_timeout {
            service = service.persistent(timeout);
        }
        let local_only = kind != VsKind::ClusterIp && self.external_local;
        // Cluster IP traffic keeps its pod source unless masquerade-all;
        // external traffic is masqueraded so replies come back through this
        // node, except with eTP=Local, whose point is the client address.
        let masquerade = cfg.masquerade_all || (kind != VsKind::ClusterIp && !local_only);
        if cfg.bpf_snat && masquerade {
            service.flags |= ServiceFlags::BPF_SNAT;
        }
        let foreign = if addr.is_ipv4() {
            cfg.bpf_snat_foreign.0
        } else {
            cfg.bpf_snat_foreign.1
        };
        if cfg.bpf_snat && kind == VsKind::ClusterIp && !masquerade && foreign {
            service.flags |= ServiceFlags::BPF_SNAT_FOREIGN;
        }
        VirtualServer {
            service,
            destinations: destinations.to_vec(),
            kind,
            masquerade,
            local_only,
            source_ranges: self.source_ranges_of(cfg, kind, addr),
        }
    }

    /// The ranges of `addr`'s family, for a load balancer address; `None`
    /// when there are none (kube-proxy filters the ranges per family and
    /// an empty list means no filter).
    fn source_ranges_of(
        &self,
        cfg: &ModelConfig,
        kind: VsKind,
        addr: IpAddr,
    ) -> Option<SourceRanges> {
        if kind != VsKind::LoadBalancer {
            return None;
        }
        let ranges: Vec<Cidr> = self
            .source_ranges
            .iter()
            .filter(|c| c.is_ipv4() == addr.is_ipv4())
            .copied()
            .collect();
        if ranges.is_empty() {
            return None;
        }
        let allow_from_node = ranges
            .iter()
            .any(|c| cfg.node_addresses.iter().any(|a| c.contains(*a)));
        Some(SourceRanges {
            ranges,
            allow_from_node,
        })
    }
}

/// The API defaults a missing protocol to TCP.
fn protocol_of(value: Option<&str>) -> Option<Protocol> {
    match value {
        None | Some("TCP") => Some(Protocol::Tcp),
        Some("UDP") => Some(Protocol::Udp),
        Some("SCTP") => Some(Protocol::Sctp),
        Some(_) => None,
    }
}

/// One endpoint for one service port, with what the selection rules need.
#[derive(Clone, Debug)]
struct Endpoint {
    addr: IpAddr,
    port: u16,
    ready: bool,
    serving: bool,
    terminating: bool,
    /// On this node (`nodeName` == the proxy's node name).
    local: bool,
    zone_hints: Vec<String>,
    node_hints: Vec<String>,
}

impl Endpoint {
    fn serving_terminating(&self) -> bool {
        self.serving && self.terminating
    }
}

/// The slices that belong to `name` and carry a family we program, sorted
/// by slice name so deduplication does not depend on the caller's order.
fn accepted_slices<'a>(
    cfg: &ModelConfig,
    name: &ServiceName,
    slices: &'a [Arc<Slice>],
) -> Vec<(&'a Slice, Family)> {
    let mut accepted: Vec<(&Slice, Family)> = slices
        .iter()
        .map(Arc::as_ref)
        .filter(|s| {
            let ours = *s.namespace == *name.namespace && s.service() == Some(&*name.name);
            if !ours {
                tracing::debug!(service = %name, slice = s.name, "ignoring EndpointSlice of another Service");
            }
            ours
        })
        // FQDN slices have no addresses IPVS could use.
        .filter_map(|s| s.family.filter(|f| cfg.family_enabled(*f)).map(|f| (s, f)))
        .collect();
    accepted.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    accepted
}

/// The endpoints of service port `port` across all slices, deduplicated by
/// (address, port): an endpoint moving between slices, or a pod IP reused
/// while the old pod terminates, shows up twice; as kube-proxy, a
/// non-terminating copy wins over a terminating one. Between two copies of
/// the same kind the one from the slice whose name sorts last wins, so the
/// result does not depend on the order the caller keeps slices in.
fn port_endpoints(
    cfg: &ModelConfig,
    name: &ServiceName,
    port: &SvcPort,
    slices: &[(&Slice, Family)],
) -> Vec<Endpoint> {
    let mut found: BTreeMap<(IpAddr, u16), Endpoint> = BTreeMap::new();
    for (slice, family) in slices {
        let slice_name = slice.name.as_str();
        for sp in &slice.ports {
            if sp.name != port.name || sp.protocol != Some(port.protocol) {
                continue;
            }
            let Some(number) = sp
                .port
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p != 0)
            else {
                tracing::warn!(service = %name, slice = slice_name, port = ?sp.port, "skipping EndpointSlice port without a valid number");
                continue;
            };
            for ep in &slice.endpoints {
                let addr = match &ep.address {
                    Address::Ip(a) if Family::of(a) == *family => *a,
                    Address::Missing => {
                        tracing::warn!(service = %name, slice = slice_name, "skipping endpoint without addresses");
                        continue;
                    }
                    Address::Ip(a) => {
                        tracing::warn!(service = %name, slice = slice_name, address = %a, "skipping endpoint with an address that is not an IP of the slice's addressType");
                        continue;
                    }
                    Address::Invalid(raw) => {
                        tracing::warn!(service = %name, slice = slice_name, address = %raw, "skipping endpoint with an address that is not an IP of the slice's addressType");
                        continue;
                    }
                };
                let hints = ep.hints.as_deref();
                let endpoint = Endpoint {
                    addr,
                    port: number,
                    ready: ep.ready,
                    serving: ep.serving,
                    terminating: ep.terminating,
                    local: !cfg.node_name.is_empty()
                        && ep.node_name.as_deref() == Some(cfg.node_name.as_str()),
                    zone_hints: hints.map(|h| h.zones.clone()).unwrap_or_default(),
                    node_hints: hints.map(|h| h.nodes.clone()).unwrap_or_default(),
                };
                let key = (addr, number);
                if !found.contains_key(&key) || !endpoint.terminating {
                    found.insert(key, endpoint);
                }
            }
        }
    }
    found.into_values().collect()
}

/// Which topology hints apply, from kube-proxy's `topologyModeFromHints`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Topology {
    None,
    SameNode,
    SameZone,
}

/// Hints are used only when every ready endpoint carries one (the
/// EndpointSlice controller sets them for all or none, so a partial set
/// means a change in flight) and at least one is for this node or zone
/// (otherwise this node would get no endpoint at all). Node hints
/// (`PreferSameNode`) take precedence over zone hints. As in current
/// kube-proxy the Service's annotation / `trafficDistribution` is not read:
/// the controller only writes hints when they ask for them.
fn topology(eps: &[&Endpoint], node_name: &str, zone: &str) -> Topology {
    let ready: Vec<&&Endpoint> = eps.iter().filter(|e| e.ready).collect();
    if ready.is_empty() {
        return Topology::None;
    }
    let all_node = ready.iter().all(|e| !e.node_hints.is_empty());
    let for_node = ready
        .iter()
        .any(|e| e.node_hints.iter().any(|n| n == node_name));
    if all_node && for_node && !node_name.is_empty() {
        return Topology::SameNode;
    }
    let all_zone = ready.iter().all(|e| !e.zone_hints.is_empty());
    let for_zone = ready.iter().any(|e| e.zone_hints.iter().any(|z| z == zone));
    if all_zone && for_zone && !zone.is_empty() {
        return Topology::SameZone;
    }
    Topology::None
}

fn available(ep: &Endpoint, mode: Topology, node_name: &str, zone: &str) -> bool {
    match mode {
        Topology::None => true,
        Topology::SameNode => ep.node_hints.iter().any(|n| n == node_name),
        Topology::SameZone => ep.zone_hints.iter().any(|z| z == zone),
    }
}

/// Real servers for Cluster traffic policy: ready endpoints available under
/// the topology in force; with none ready anywhere, the serving and
/// terminating ones (ignoring topology, as kube-proxy: the fallback is for
/// a Service about to have no endpoints at all).
fn cluster_destinations(cfg: &ModelConfig, eps: &[&Endpoint], zone: &str) -> Vec<Destination> {
    let mode = topology(eps, &cfg.node_name, zone);
    select(eps, |e| available(e, mode, &cfg.node_name, zone), |_| true)
}

/// Real servers for Local traffic policy: this node's ready endpoints, else
/// its serving and terminating ones. No topology: local is already closest.
fn local_destinations(eps: &[&Endpoint]) -> Vec<Destination> {
    select(eps, |e| e.local, |e| e.local)
}

/// kube-proxy's CategorizeEndpoints for one policy: the ready endpoints in
/// `scope` get weight 1; if there are none, the serving+terminating ones in
/// `fallback_scope` do. Serving+terminating endpoints in `scope` that are
/// not chosen because ready ones exist get weight 0: IPVS keeps their
/// established connections but schedules nothing new to them, which is
/// what kube-proxy's graceful termination of real servers achieves.
fn select(
    eps: &[&Endpoint],
    scope: impl Fn(&Endpoint) -> bool,
    fallback_scope: impl Fn(&Endpoint) -> bool,
) -> Vec<Destination> {
    let ready: Vec<&Endpoint> = eps
        .iter()
        .copied()
        .filter(|e| e.ready && scope(e))
        .collect();
    let mut dests: Vec<Destination> = if ready.is_empty() {
        eps.iter()
            .filter(|e| e.serving_terminating() && fallback_scope(e))
            .map(|e| Destination::new(e.addr, e.port).weight(1))
            .collect()
    } else {
        ready
            .iter()
            .map(|e| Destination::new(e.addr, e.port).weight(1))
            .chain(
                eps.iter()
                    .filter(|e| !e.ready && e.serving_terminating() && scope(e))
                    .map(|e| Destination::new(e.addr, e.port).weight(0)),
            )
            .collect()
    };
    dests.sort_by_key(|d| (d.addr, d.port));
    dests
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Service;
    use serde_json::{json, Value};
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// JSON merge patch (RFC 7396): objects merge, `null` deletes, anything
    /// else replaces. Keeps each case down to what differs from the base.
    fn merge(mut base: Value, patch: Value) -> Value {
        match (base.as_object_mut(), patch) {
            (Some(obj), Value::Object(patch)) => {
                for (k, v) in patch {
                    if v.is_null() {
                        obj.remove(&k);
                    } else {
                        let old = obj.remove(&k).unwrap_or(Value::Null);
                        obj.insert(k, merge(old, v));
                    }
                }
                base
            }
            (_, patch) => patch,
        }
    }

    /// ns/web: ClusterIP 10.0.0.1, port "http" 80/TCP, patched by `patch`.
    fn svc(patch: Value) -> Value {
        let base = json!({
            "metadata": {"namespace": "ns", "name": "web"},
            "spec": {
                "type": "ClusterIP",
                "clusterIP": "10.0.0.1",
                "clusterIPs": ["10.0.0.1"],
                "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
            },
        });
        merge(base, patch)
    }

    fn dual_stack() -> Value {
        json!({"spec": {"clusterIPs": ["10.0.0.1", "fd00::1"]}})
    }

    /// An EndpointSlice of ns/web with port "http" 8080/TCP.
    fn slice(name: &str, family: &str, endpoints: Value) -> Value {
        json!({
            "metadata": {
                "namespace": "ns",
                "name": name,
                "labels": {"kubernetes.io/service-name": "web"},
            },
            "addressType": family,
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": endpoints,
        })
    }

    fn v4(endpoints: Value) -> Value {
        slice("web-v4", "IPv4", endpoints)
    }

    /// A ready endpoint (conditions absent) on `node`.
    fn ep(addr: &str, node: &str) -> Value {
        json!({"addresses": [addr], "nodeName": node})
    }

    /// Ready false, serving true, terminating true: a draining pod.
    fn term(addr: &str, node: &str) -> Value {
        json!({
            "addresses": [addr], "nodeName": node,
            "conditions": {"ready": false, "serving": true, "terminating": true},
        })
    }

    fn hinted(addr: &str, node: &str, zones: &[&str], nodes: &[&str]) -> Value {
        let zones: Vec<Value> = zones.iter().map(|z| json!({"name": z})).collect();
        let nodes: Vec<Value> = nodes.iter().map(|n| json!({"name": n})).collect();
        let mut hints = json!({});
        if !zones.is_empty() {
            hints["forZones"] = Value::Array(zones);
        }
        if !nodes.is_empty() {
            hints["forNodes"] = Value::Array(nodes);
        }
        json!({"addresses": [addr], "nodeName": node, "hints": hints})
    }

    fn node(zone: Option<&str>) -> Value {
        match zone {
            Some(z) => json!({"metadata": {"name": "node-a", "labels": {LABEL_TOPOLOGY_ZONE: z}}}),
            None => json!({"metadata": {"name": "node-a"}}),
        }
    }

    fn base_cfg() -> ModelConfig {
        ModelConfig {
            node_name: "node-a".to_string(),
            node_addresses: vec![
                IpAddr::V4(Ipv4Addr::new(192, 168, 0, 10)),
                IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x10)),
            ],
            ..ModelConfig::default()
        }
    }

    /// `cip TCP 10.0.0.1:80 rr p10800/32 [10.1.0.1:8080 w1, 10.1.0.2:8080 w0] masq local bpf`
    fn summary(vs: &VirtualServer) -> String {
        let kind = match vs.kind {
            VsKind::ClusterIp => "cip",
            VsKind::NodePort => "np",
            VsKind::ExternalIp => "ext",
            VsKind::LoadBalancer => "lb",
        };
        let s = &vs.service;
        let persist = if s.flags.contains(ServiceFlags::PERSISTENT) {
            format!(" p{}/{}", s.timeout, s.netmask)
        } else {
            String::new()
        };
        let dests: Vec<String> = vs
            .destinations
            .iter()
            .map(|d| format!("{d} w{}", d.weight))
            .collect();
        let mut out = format!(
            "{kind} {} {}{persist} [{}]",
            s.key,
            s.scheduler,
            dests.join(", ")
        );
        if vs.masquerade {
            out.push_str(" masq");
        }
        if vs.local_only {
            out.push_str(" local");
        }
        if s.flags.contains(ServiceFlags::BPF_SNAT) {
            out.push_str(" bpf");
        }
        if s.flags.contains(ServiceFlags::BPF_SNAT_FOREIGN) {
            out.push_str(" bpf-foreign");
        }
        if s.flags.contains(ServiceFlags::MH_PORT) {
            out.push_str(" mh-port");
        }
        if let Some(sr) = &vs.source_ranges {
            let ranges: Vec<String> = sr.ranges.iter().map(Cidr::to_string).collect();
            let node = if sr.allow_from_node { "+node" } else { "" };
            out.push_str(&format!(" from[{}]{node}", ranges.join(", ")));
        }
        out
    }

    struct Case {
        name: &'static str,
        cfg: ModelConfig,
        svc: Value,
        slices: Vec<Value>,
        node: Option<Value>,
        /// Ok: virtual server summaries in order; Err: a substring of the
        /// error message.
        want: Result<Vec<&'static str>, &'static str>,
        hc: Option<(u16, usize)>,
    }

    fn case(name: &'static str, svc: Value, slices: Vec<Value>, want: &[&'static str]) -> Case {
        Case {
            name,
            cfg: base_cfg(),
            svc,
            slices,
            node: None,
            want: Ok(want.to_vec()),
            hc: None,
        }
    }

    fn fails(name: &'static str, svc: Value, err: &'static str) -> Case {
        Case {
            want: Err(err),
            ..case(name, svc, vec![v4(json!([ep("10.1.0.1", "node-b")]))], &[])
        }
    }

    impl Case {
        fn cfg(mut self, f: impl FnOnce(&mut ModelConfig)) -> Case {
            f(&mut self.cfg);
            self
        }
        fn node(mut self, node: Value) -> Case {
            self.node = Some(node);
            self
        }
        fn hc(mut self, port: u16, local: usize) -> Case {
            self.hc = Some((port, local));
            self
        }
    }

    fn cases() -> Vec<Case> {
        let two = || v4(json!([ep("10.1.0.1", "node-a"), ep("10.1.0.2", "node-b")]));
        vec![
            // --- ClusterIP, ports, protocols ---
            case("cluster IP with two endpoints", svc(json!({})), vec![two()],
                &["cip TCP 10.0.0.1:80 rr [10.1.0.1:8080 w1, 10.1.0.2:8080 w1]"]),
            case("no endpoints: virtual server without destinations", svc(json!({})), vec![],
                &["cip TCP 10.0.0.1:80 rr []"]),
            case("missing protocol defaults to TCP on both sides",
                svc(json!({"spec": {"ports": [{"name": "http", "port": 80}]}})),
                vec![merge(v4(json!([ep("10.1.0.1", "n")])), json!({"ports": [{"name": "http", "port": 8080}]}))],
                &["cip TCP 10.0.0.1:80 rr [10.1.0.1:8080 w1]"]),
            case("UDP and SCTP ports, each with its slice port",
                svc(json!({"spec": {"ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP"},
                    {"name": "assoc", "port": 9, "protocol": "SCTP"}]}})),
                vec![merge(v4(json!([ep("10.1.0.1", "n")])), json!({"ports": [
                    {"name": "dns", "port": 5353, "protocol": "UDP"},
                    {"name": "assoc", "port": 9999, "protocol": "SCTP"}]}))],
                &["cip UDP 10.0.0.1:53 rr [10.1.0.1:5353 w1]",
                  "cip SCTP 10.0.0.1:9 rr [10.1.0.1:9999 w1]"]),
            case("named ports matched by name",
                svc(json!({"spec": {"ports": [
                    {"name": "http", "port": 80, "protocol": "TCP"},
                    {"name": "metrics", "port": 9090, "protocol": "TCP"}]}})),
                vec![merge(v4(json!([ep("10.1.0.1", "n")])), json!({"ports": [
                    {"name": "metrics", "port": 9100, "protocol": "TCP"},
                    {"name": "http", "port": 8080, "protocol": "TCP"}]}))],
                &["cip TCP 10.0.0.1:80 rr [10.1.0.1:8080 w1]",
                  "cip TCP 10.0.0.1:9090 rr [10.1.0.1:9100 w1]"]),
            case("same name, other protocol: no match",
                svc(json!({"spec": {"ports": [{"name": "http", "port": 80, "protocol": "UDP"}]}})),
                vec![two()],
                &["cip UDP 10.0.0.1:80 rr []"]),
            case("unnamed service port matches unnamed and empty-named slice ports",
                svc(json!({"spec": {"ports": [{"port": 80, "protocol": "TCP"}]}})),
                vec![
                    merge(slice("a", "IPv4", json!([ep("10.1.0.1", "n")])), json!({"ports": [{"name": "", "port": 8080}]})),
                    merge(slice("b", "IPv4", json!([ep("10.1.0.2", "n")])), json!({"ports": [{"port": 8080}]})),
                    slice("c", "IPv4", json!([ep("10.1.0.3", "n")])),
                ],
                &["cip TCP 10.0.0.1:80 rr [10.1.0.1:8080 w1, 10.1.0.2:8080 w1]"]),
            case("slice port without a number or with 0 is skipped",
                svc(json!({})),
                vec![merge(slice("a", "IPv4", json!([ep("10.1.0.1", "n")])), json!({"ports": [{"name": "http", "protocol": "TCP"}]})),
                     merge(slice("b", "IPv4", json!([ep("10.1.0.2", "n")])), json!({"ports": [{"name": "http", "port": 0}]}))],
                &["cip TCP 10.0.0.1:80 rr []"]),
            case("only the first address of an endpoint is used",
                svc(json!({})),
                vec![v4(json!([{"addresses": ["10.1.0.1", "10.1.0.9"]}]))],
                &["cip TCP 10.0.0.1:80 rr [10.1.0.1:8080 w1]"]),
            // --- which slices and endpoints count ---
            case("same endpoint in two slices appears once",
                svc(json!({})),
                vec![slice("a", "IPv4", json!([ep("10.1.0.1", "n"), ep("10.1.0.2", "n")])),
                     slice("b", "IPv4", json!([ep("10.1.0.2", "n"), ep("10.1.0.3", "n")]))],
                &["cip TCP 10.0.0.1:80 rr [10.1.0.1:8080 w1, 10.1.0.2:8080 w1, 10.1.0.3:8080 w1]"]),
            case("duplicate: the non-terminating copy wins over an earlier terminating one",
                svc(json!({})),
                vec![slice("a", "IPv4", json!([term("10.1.0.1", "n"), ep("10.1.0.2", "n")])),
                     slice("b", "IPv4", json!([ep("10.1.0.1", "n")]))],
                &["cip TCP 10.0.0.1:80 rr [10.1.0.1:8080 w1, 10.1.0.2:8080 w1]"]),
            case("duplicate: a later terminating copy does not replace a ready one",
                svc(json!({})),
                vec![slice("a", "IPv4", json!([ep("10.1.0.1", "n"), ep("10.1.0.2", "n")])),
                     slice("b", "IPv4", json!([term("10.1.0.1", "n")]))],
                &["cip TCP 10.0.0.1:80 rr [10.1.0.1:8080 w1, 10.1.0.2:8080 w1]"]),
            case("duplicates that differ: the copy from the slice sorting last wins",
                svc(json!({"spec": {"internalTrafficPolicy": "Local"}})),
                vec![slice("a", "IPv4", json!([ep("10.1.0.1", "node-b")])),
                     slice("b", "IPv4", json!([ep("10.1.0.1", "node-a")]))],
                &["cip TCP 10.0.0.1:80 rr [10.1.0.1:8080 w1]"]),
            case("slices of another Service or namespace are ignored",
                svc(json!({})),
                vec![v4(json!([ep("10.1.0.1", "n")])),
                     merge(slice("other", "IPv4", json!([ep("10.9.0.1", "n")])),
                           json!({"metadata": {"labels": {"kubernetes.io/service-name": "api"}}})),
                     merge(slice("elsewhere", "IPv4", json!([ep("10.9.0.2", "n")])),
                           json!({"metadata": {"namespace": "prod"}})),
                     merge(slice("unlabelled", "IPv4", json!([ep("10.9.0.3", "n")])),
                           json!({"metadata": {"labels": null}}))],
                &["cip TCP 10.0.0.1:80 rr [10.1.0.1:8080 w1]"]),
            case("FQDN slices are ignored",
                svc(json!({})),
                vec![slice("fqdn", "FQDN", json!([{"addresses": ["db.example.com"]}]))],
                &["cip TCP 10.0.0.1:80 rr []"]),
            case("malformed endpoint address is skipped, the others kept",
                svc(json!({})),
                vec![v4(json!([ep("10.1.0.300", "n"), ep("10.1.0.2", "n"), {"addresses": []}]))],
                &["cip TCP 10.0.0.1:80 rr [10.1.0.2:8080 w1]"]),
            case("IPv6 address in an IPv4 slice is skipped",
                svc(json!({})),
                vec![v4(json!([ep("fd01::1", "n"), ep("10.1.0.2", "n")]))],
                &["cip TCP 10.0.0.1:80 rr [10.1.0.2:8080 w1]"]),
            // --- endpoint conditions ---
            case("not ready and not serving endpoints are excluded",
                svc(json!({})),
                vec![v4(json!([ep("10.1.0.1", "n"),
                    {"addresses": ["10.1.0.2"], "conditions": {"ready": false, "serving": false}},
                    {"addresses": ["10.1.0.3"], "conditions": {"ready": false, "serving": false, "terminating": true}},
                    {"addresses": ["10.1.0.4"], "conditions": {"ready": false, "serving": true}}]))],
                &["cip TCP 10.0.0.1:80 rr [10.1.0.1:8080 w1]"]),
            case("serving+terminating endpoints drain at weight 0 while ready ones exist",
                svc(json!({})),
                vec![v4(json!([term("10.1.0.2", "n"), ep("10.1.0.1", "n")]))],
                &["cip TCP 10.0.0.1:80 rr [10.1.0.1:8080 w1, 10.1.0.2:8080 w0]"]),
            case("none ready: serving+terminating endpoints take traffic",
                svc(json!({})),
                vec![v4(json!([term("10.1.0.1", "n"),
                    {"addresses": ["10.1.0.2"], "conditions": {"ready": false, "serving": false, "terminating": true}}]))],
                &["cip TCP 10.0.0.1:80 rr [10.1.0.1:8080 w1]"]),
            case("nil serving means serving (API default)",
                svc(json!({})),
                vec![v4(json!([{"addresses": ["10.1.0.1"], "conditions": {"ready": false, "terminating": true}}]))],
                &["cip TCP 10.0.0.1:80 rr [10.1.0.1:8080 w1]"]),
            // --- families ---
            case("dual-stack: one virtual server per family, endpoints by slice family",
                svc(dual_stack()),
                vec![v4(json!([ep("10.1.0.1", "n")])), slice("web-v6", "IPv6", json!([ep("fd01::1", "n")]))],
                &["cip TCP 10.0.0.1:80 rr [10.1.0.1:8080 w1]",
                  "cip TCP [fd00::1]:80 rr [[fd01::1]:8080 w1]"]),
            case("dual-stack Service on an IPv4-only proxy",
                svc(dual_stack()),
                vec![v4(json!([ep("10.1.0.1", "n")])), slice("web-v6", "IPv6", json!([ep("fd01::1", "n")]))],
                &["cip TCP 10.0.0.1:80 rr [10.1.0.1:8080 w1]"]).cfg(|c| c.ipv6 = false),
            case("IPv6-only Service on an IPv4-only proxy: nothing",
                svc(json!({"spec": {"clusterIP": "fd00::1", "clusterIPs": ["fd00::1"], "type": "NodePort",
                    "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}})),
                vec![slice("web-v6", "IPv6", json!([ep("fd01::1", "n")]))],
                &[]).cfg(|c| c.ipv6 = false),
            case("single-stack IPv4 Service ignores IPv6 slices",
                svc(json!({})),
                vec![v4(json!([ep("10.1.0.1", "n")])), slice("web-v6", "IPv6", json!([ep("fd01::1", "n")]))],
                &["cip TCP 10.0.0.1:80 rr [10.1.0.1:8080 w1]"]),
            case("clusterIP used when clusterIPs is absent",
                svc(json!({"spec": {"clusterIPs": null, "clusterIP": "10.0.0.7"}})),
                vec![v4(json!([ep("10.1.0.1", "n")]))],
                &["cip TCP 10.0.0.7:80 rr [10.1.0.1:8080 w1]"]),
            // --- Services without virtual servers ---
            case("headless Service", svc(json!({"spec": {"clusterIP": "None", "clusterIPs": ["None"]}})),
                vec![two()], &[]),
            case("Service without a cluster IP yet", svc(json!({"spec": {"clusterIP": null, "clusterIPs": null}})),
                vec![two()], &[]),
            case("ExternalName Service",
                svc(json!({"spec": {"type": "ExternalName", "externalName": "db.example.com", "clusterIP": null, "clusterIPs": null}})),
                vec![], &[]),
            case("Service of another proxy is not ours",
                svc(json!({"metadata": {"labels": {LABEL_SERVICE_PROXY_NAME: "other"}}})),
                vec![two()], &[]),
            case("Service naming our proxy",
                svc(json!({"metadata": {"labels": {LABEL_SERVICE_PROXY_NAME: "ipvsbpf"}}})),
                vec![two()], &["cip TCP 10.0.0.1:80 rr [10.1.0.1:8080 w1, 10.1.0.2:8080 w1]"])
                .cfg(|c| c.service_proxy_name = Some("ipvsbpf".to_string())),
            case("unlabelled Service is not ours when we have a proxy name",
                svc(json!({})), vec![two()], &[])
                .cfg(|c| c.service_proxy_name = Some("ipvsbpf".to_string())),
            case("Service labelled headless",
                svc(json!({"metadata": {"labels": {LABEL_HEADLESS: ""}}})), vec![two()], &[]),
            // --- NodePort, LoadBalancer, external IPs ---
            case("NodePort on the node addresses of the Service's family, masqueraded",
                svc(json!({"spec": {"type": "NodePort", "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}})),
                vec![two()],
                &["cip TCP 10.0.0.1:80 rr [10.1.0.1:8080 w1, 10.1.0.2:8080 w1]",
                  "np TCP 192.168.0.10:30080 rr [10.1.0.1:8080 w1, 10.1.0.2:8080 w1] masq"]),
            case("nodePort on a ClusterIP Service is not served",
                svc(json!({"spec": {"ports": [{"name": "http", "port": 80, "nodePort": 30080}]}})),
                vec![v4(json!([ep("10.1.0.1", "n")]))],
                &["cip TCP 10.0.0.1:80 rr [10.1.0.1:8080 w1]"]),
            case("dual-stack NodePort",
                merge(svc(dual_stack()), json!({"spec": {"type": "NodePort", "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}})),
                vec![v4(json!([ep("10.1.0.1", "n")])), slice("web-v6", "IPv6", json!([ep("fd01::1", "n")]))],
                &["cip TCP 10.0.0.1:80 rr [10.1.0.1:8080 w1]",
                  "np TCP 192.168.0.10:30080 rr [10.1.0.1:8080 w1] masq",
                  "cip TCP [fd00::1]:80 rr [[fd01::1]:8080 w1]",
                  "np TCP [fd00::10]:30080 rr [[fd01::1]:8080 w1] masq"]),
            case("LoadBalancer: VIP ingress IPs, not ipMode Proxy nor hostname-only",
                svc(json!({
                    "spec": {"type": "LoadBalancer", "ports": [{"name": "http", "port": 80, "nodePort": 30080}]},
                    "status": {"loadBalancer": {"ingress": [
                        {"ip": "203.0.113.5"},
                        {"hostname": "lb.example.com"},
                        {"ip": "203.0.113.6", "ipMode": "Proxy"},
                        {"ip": "203.0.113.7", "ipMode": "VIP"},
                        {"ip": "2001:db8::7"}]}}})),
                vec![v4(json!([ep("10.1.0.1", "n")]))],
                &["cip TCP 10.0.0.1:80 rr [10.1.0.1:8080 w1]",
                  "np TCP 192.168.0.10:30080 rr [10.1.0.1:8080 w1] masq",
                  "lb TCP 203.0.113.5:80 rr [10.1.0.1:8080 w1] masq",
                  "lb TCP 203.0.113.7:80 rr [10.1.0.1:8080 w1] masq"]),
            case("loadBalancerSourceRanges: LB addresses only, per family, trimmed and masked",
                merge(svc(dual_stack()), json!({
                    "spec": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false,
                        "loadBalancerSourceRanges": [" 198.51.100.7/24", "2001:db8:1::/48 "]},
                    "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.5"}, {"ip": "2001:db8::7"}]}}})),
                vec![v4(json!([ep("10.1.0.1", "n")])),
                     slice("web-v6", "IPv6", json!([ep("fd01::1", "n")]))],
                &["cip TCP 10.0.0.1:80 rr [10.1.0.1:8080 w1]",
                  "lb TCP 203.0.113.5:80 rr [10.1.0.1:8080 w1] masq from[198.51.100.0/24]",
                  "lb TCP [2001:db8::7]:80 rr [[fd01::1]:8080 w1] masq from[2001:db8:1::/48]",
                  "cip TCP [fd00::1]:80 rr [[fd01::1]:8080 w1]"]),
            case("loadBalancerSourceRanges of the other family only: that family's LB address is open",
                svc(json!({
                    "spec": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false,
                        "loadBalancerSourceRanges": ["2001:db8:1::/48"]},
                    "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.5"}]}}})),
                vec![v4(json!([ep("10.1.0.1", "n")]))],
                &["cip TCP 10.0.0.1:80 rr [10.1.0.1:8080 w1]",
                  "lb TCP 203.0.113.5:80 rr [10.1.0.1:8080 w1] masq"]),
            case("loadBalancerSourceRanges holding a node address let the node in; NodePorts unfiltered",
                svc(json!({
                    "spec": {"type": "LoadBalancer", "ports": [{"name": "http", "port": 80, "nodePort": 30080}],
                        "externalTrafficPolicy": "Local", "healthCheckNodePort": 32000,
                        "loadBalancerSourceRanges": ["192.168.0.0/24", "198.51.100.0/24"]},
                    "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.5"}]}}})),
                vec![v4(json!([ep("10.1.0.1", "node-a")]))],
                &["cip TCP 10.0.0.1:80 rr [10.1.0.1:8080 w1]",
                  "np TCP 192.168.0.10:30080 rr [10.1.0.1:8080 w1] local",
                  "lb TCP 203.0.113.5:80 rr [10.1.0.1:8080 w1] local from[192.168.0.0/24, 198.51.100.0/24]+node"])
                .hc(32000, 1),
            case("loadBalancerSourceRanges on a NodePort Service mean nothing and are not read",
                svc(json!({
                    "spec": {"type": "NodePort", "ports": [{"name": "http", "port": 80, "nodePort": 30080}],
                        "loadBalancerSourceRanges": ["not a cidr"]}})),
                vec![v4(json!([ep("10.1.0.1", "n")]))],
                &["cip TCP 10.0.0.1:80 rr [10.1.0.1:8080 w1]",
                  "np TCP 192.168.0.10:30080 rr [10.1.0.1:8080 w1] masq"]),
            case("LoadBalancer without node ports",
                svc(json!({
                    "spec": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false},
                    "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.5"}]}}})),
                vec![v4(json!([ep("10.1.0.1", "n")]))],
                &["cip TCP 10.0.0.1:80 rr [10.1.0.1:8080 w1]",
                  "lb TCP 203.0.113.5:80 rr [10.1.0.1:8080 w1] masq"]),
            case("externalIPs of the Service's family",
                svc(json!({"spec": {"externalIPs": ["198.51.100.1", "2001:db8::1"]}})),
                vec![v4(json!([ep("10.1.0.1", "n")]))],
                &["cip TCP 10.0.0.1:80 rr [10.1.0.1:8080 w1]",
                  "ext TCP 198.51.100.1:80 rr [10.1.0.1:8080 w1] masq"]),
            // --- traffic policies ---
            case("iTP Local: cluster IP gets only this node's endpoints",
                svc(json!({"spec": {"internalTrafficPolicy": "Local"}})),
                vec![two()],
                &["cip TCP 10.0.0.1:80 rr [10.1.0.1:8080 w1]"]),
            case("iTP Local without local endpoints: no destinations",
                svc(json!({"spec": {"internalTrafficPolicy": "Local"}})),
                vec![v4(json!([ep("10.1.0.2", "node-b"), ep("10.1.0.3", "node-c")]))],
                &["cip TCP 10.0.0.1:80 rr []"]),
            case("eTP Local NodePort: local endpoints, no masquerade; cluster IP keeps all",
                svc(json!({"spec": {"type": "NodePort", "externalTrafficPolicy": "Local",
                    "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}})),
                vec![two()],
                &["cip TCP 10.0.0.1:80 rr [10.1.0.1:8080 w1, 10.1.0.2:8080 w1]",
                  "np TCP 192.168.0.10:30080 rr [10.1.0.1:8080 w1] local"]),
            case("eTP Local LoadBalancer: health check counts local ready endpoints",
                svc(json!({
                    "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "healthCheckNodePort": 32000,
                        "externalIPs": ["198.51.100.1"],
                        "ports": [{"name": "http", "port": 80, "nodePort": 30080}]},
                    "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.5"}]}}})),
                vec![v4(json!([ep("10.1.0.1", "node-a"), ep("10.1.0.2", "node-b"), term("10.1.0.3", "node-a")]))],
                &["cip TCP 10.0.0.1:80 rr [10.1.0.1:8080 w1, 10.1.0.2:8080 w1, 10.1.0.3:8080 w0]",
                  "np TCP 192.168.0.10:30080 rr [10.1.0.1:8080 w1, 10.1.0.3:8080 w0] local",
                  "ext TCP 198.51.100.1:80 rr [10.1.0.1:8080 w1, 10.1.0.3:8080 w0] local",
                  "lb TCP 203.0.113.5:80 rr [10.1.0.1:8080 w1, 10.1.0.3:8080 w0] local"]).hc(32000, 1),
            case("eTP Local without local endpoints: the cluster's for local pods (PR 97081), no SNAT, health check 0",
                svc(json!({
                    "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "healthCheckNodePort": 32000,
                        "externalIPs": ["198.51.100.1"],
                        "ports": [{"name": "http", "port": 80, "nodePort": 30080}]},
                    "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.5"}]}}})),
                vec![v4(json!([ep("10.1.0.2", "node-b"), term("10.1.0.3", "node-c")]))],
                &["cip TCP 10.0.0.1:80 rr [10.1.0.2:8080 w1, 10.1.0.3:8080 w0]",
                  "np TCP 192.168.0.10:30080 rr [10.1.0.2:8080 w1, 10.1.0.3:8080 w0] local",
                  "ext TCP 198.51.100.1:80 rr [10.1.0.2:8080 w1, 10.1.0.3:8080 w0] local",
                  "lb TCP 203.0.113.5:80 rr [10.1.0.2:8080 w1, 10.1.0.3:8080 w0] local"]).hc(32000, 0),
            case("eTP Local without any endpoint: nothing anywhere",
                svc(json!({
                    "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "healthCheckNodePort": 32000,
                        "allocateLoadBalancerNodePorts": false},
                    "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.5"}]}}})),
                vec![],
                &["cip TCP 10.0.0.1:80 rr []",
                  "lb TCP 203.0.113.5:80 rr [] local"]).hc(32000, 0),
            case("eTP Local with only a terminating local endpoint: it serves, health check 0",
                svc(json!({
                    "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "healthCheckNodePort": 32000,
                        "allocateLoadBalancerNodePorts": false},
                    "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.5"}]}}})),
                vec![v4(json!([ep("10.1.0.2", "node-b"), term("10.1.0.3", "node-a")]))],
                &["cip TCP 10.0.0.1:80 rr [10.1.0.2:8080 w1, 10.1.0.3:8080 w0]",
                  "lb TCP 203.0.113.5:80 rr [10.1.0.3:8080 w1] local"]).hc(32000, 0),
            case("health check counts an address once across ports and ignores other nodes",
                svc(json!({
                    "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "healthCheckNodePort": 32000,
                        "allocateLoadBalancerNodePorts": false,
                        "ports": [{"name": "http", "port": 80}, {"name": "https", "port": 443}]}})),
                vec![merge(v4(json!([ep("10.1.0.1", "node-a"), ep("10.1.0.2", "node-b")])),
                    json!({"ports": [{"name": "http", "port": 8080}, {"name": "https", "port": 8443}]}))],
                &["cip TCP 10.0.0.1:80 rr [10.1.0.1:8080 w1, 10.1.0.2:8080 w1]",
                  "cip TCP 10.0.0.1:443 rr [10.1.0.1:8443 w1, 10.1.0.2:8443 w1]"]).hc(32000, 1),
            case("no health check for eTP Cluster even with a health check node port",
                svc(json!({"spec": {"type": "LoadBalancer", "healthCheckNodePort": 32000,
                    "allocateLoadBalancerNodePorts": false}})),
                vec![v4(json!([ep("10.1.0.1", "node-a")]))],
                &["cip TCP 10.0.0.1:80 rr [10.1.0.1:8080 w1]"]),
            case("no health check for an eTP Local NodePort Service (as kube-proxy)",
                svc(json!({"spec": {"type": "NodePort", "externalTrafficPolicy": "Local", "healthCheckNodePort": 32000,
                    "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}})),
                vec![v4(json!([ep("10.1.0.1", "node-a")]))],
                &["cip TCP 10.0.0.1:80 rr [10.1.0.1:8080 w1]",
                  "np TCP 192.168.0.10:30080 rr [10.1.0.1:8080 w1] local"]),
            // --- masquerade and BPF SNAT ---
            case("masquerade-all masquerades cluster IPs and eTP Local too",
                svc(json!({"spec": {"type": "NodePort", "externalTrafficPolicy": "Local",
                    "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}})),
                vec![v4(json!([ep("10.1.0.1", "node-a")]))],
                &["cip TCP 10.0.0.1:80 rr [10.1.0.1:8080 w1] masq",
                  "np TCP 192.168.0.10:30080 rr [10.1.0.1:8080 w1] masq local"]).cfg(|c| c.masquerade_all = true),
            case("bpf_snat flags exactly the masqueraded virtual servers",
                svc(json!({"spec": {"type": "NodePort", "externalIPs": ["198.51.100.1"],
                    "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}})),
                vec![v4(json!([ep("10.1.0.1", "node-a")]))],
                &["cip TCP 10.0.0.1:80 rr [10.1.0.1:8080 w1]",
                  "np TCP 192.168.0.10:30080 rr [10.1.0.1:8080 w1] masq bpf",
                  "ext TCP 198.51.100.1:80 rr [10.1.0.1:8080 w1] masq bpf"]).cfg(|c| c.bpf_snat = true),
            case("bpf_snat with masquerade-all flags cluster IPs too",
                svc(json!({})),
                vec![v4(json!([ep("10.1.0.1", "node-a")]))],
                &["cip TCP 10.0.0.1:80 rr [10.1.0.1:8080 w1] masq bpf"])
                .cfg(|c| { c.bpf_snat = true; c.masquerade_all = true; }),
            case("bpf_snat_foreign flags the cluster IPs of its families only",
                merge(svc(dual_stack()), json!({"spec": {"type": "NodePort",
                    "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}})),
                vec![v4(json!([ep("10.1.0.1", "node-a")])),
                     slice("web-v6", "IPv6", json!([ep("fd01::1", "node-a")]))],
                &["cip TCP 10.0.0.1:80 rr [10.1.0.1:8080 w1] bpf-foreign",
                  "np TCP 192.168.0.10:30080 rr [10.1.0.1:8080 w1] masq bpf",
                  "cip TCP [fd00::1]:80 rr [[fd01::1]:8080 w1]",
                  "np TCP [fd00::10]:30080 rr [[fd01::1]:8080 w1] masq bpf"])
                .cfg(|c| { c.bpf_snat = true; c.bpf_snat_foreign = (true, false); }),
            case("bpf_snat_foreign gives way to masquerade-all",
                svc(json!({})),
                vec![v4(json!([ep("10.1.0.1", "node-a")]))],
                &["cip TCP 10.0.0.1:80 rr [10.1.0.1:8080 w1] masq bpf"])
                .cfg(|c| { c.bpf_snat = true; c.masquerade_all = true; c.bpf_snat_foreign = (true, true); }),
            case("bpf_snat_foreign needs ipvs-bpf mode",
                svc(json!({})),
                vec![v4(json!([ep("10.1.0.1", "node-a")]))],
                &["cip TCP 10.0.0.1:80 rr [10.1.0.1:8080 w1]"])
                .cfg(|c| c.bpf_snat_foreign = (true, true)),
            case("bpf_snat leaves eTP Local virtual servers alone",
                svc(json!({"spec": {"type": "NodePort", "externalTrafficPolicy": "Local",
                    "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}})),
                vec![v4(json!([ep("10.1.0.1", "node-a")]))],
                &["cip TCP 10.0.0.1:80 rr [10.1.0.1:8080 w1]",
                  "np TCP 192.168.0.10:30080 rr [10.1.0.1:8080 w1] local"]).cfg(|c| c.bpf_snat = true),
            // --- session affinity, scheduler ---
            case("ClientIP affinity without timeout: 10800 s, full netmask",
                svc(json!({"spec": {"sessionAffinity": "ClientIP"}})),
                vec![v4(json!([ep("10.1.0.1", "n")]))],
                &["cip TCP 10.0.0.1:80 rr p10800/32 [10.1.0.1:8080 w1]"]),
            case("ClientIP affinity with its timeout, both families",
                merge(svc(dual_stack()), json!({"spec": {"sessionAffinity": "ClientIP",
                    "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}})),
                vec![],
                &["cip TCP 10.0.0.1:80 rr p60/32 []", "cip TCP [fd00::1]:80 rr p60/128 []"]),
            case("sessionAffinity None", svc(json!({"spec": {"sessionAffinity": "None"}})), vec![],
                &["cip TCP 10.0.0.1:80 rr []"]),
            case("scheduler from the configuration", svc(json!({})), vec![],
                &["cip TCP 10.0.0.1:80 wlc []"]).cfg(|c| c.scheduler = "wlc".to_string()),
            case("mh hashes the source port too, as kube-proxy", svc(json!({})), vec![],
                &["cip TCP 10.0.0.1:80 mh [] mh-port"]).cfg(|c| c.scheduler = "mh".to_string()),
            case("empty scheduler falls back to rr", svc(json!({})), vec![],
                &["cip TCP 10.0.0.1:80 rr []"]).cfg(|c| c.scheduler = String::new()),
            // --- topology ---
            case("zone hints: only endpoints for this node's zone",
                svc(json!({})),
                vec![v4(json!([hinted("10.1.0.1", "node-b", &["zone-a"], &[]), hinted("10.1.0.2", "node-c", &["zone-b"], &[])]))],
                &["cip TCP 10.0.0.1:80 rr [10.1.0.1:8080 w1]"]).node(node(Some("zone-a"))),
            case("zone hints incomplete: all endpoints",
                svc(json!({})),
                vec![v4(json!([hinted("10.1.0.1", "node-b", &["zone-a"], &[]), ep("10.1.0.2", "node-c")]))],
                &["cip TCP 10.0.0.1:80 rr [10.1.0.1:8080 w1, 10.1.0.2:8080 w1]"]).node(node(Some("zone-a"))),
            case("zone hints but none for this zone: all endpoints",
                svc(json!({})),
                vec![v4(json!([hinted("10.1.0.1", "node-b", &["zone-b"], &[]), hinted("10.1.0.2", "node-c", &["zone-c"], &[])]))],
                &["cip TCP 10.0.0.1:80 rr [10.1.0.1:8080 w1, 10.1.0.2:8080 w1]"]).node(node(Some("zone-a"))),
            case("zone hints, node without zone label: all endpoints",
                svc(json!({})),
                vec![v4(json!([hinted("10.1.0.1", "node-b", &["zone-a"], &[]), hinted("10.1.0.2", "node-c", &["zone-b"], &[])]))],
                &["cip TCP 10.0.0.1:80 rr [10.1.0.1:8080 w1, 10.1.0.2:8080 w1]"]).node(node(None)),
            case("zone hints, no Node object: all endpoints",
                svc(json!({})),
                vec![v4(json!([hinted("10.1.0.1", "node-b", &["zone-a"], &[]), hinted("10.1.0.2", "node-c", &["zone-b"], &[])]))],
                &["cip TCP 10.0.0.1:80 rr [10.1.0.1:8080 w1, 10.1.0.2:8080 w1]"]),
            case("zone hints: a not-ready endpoint without hints does not disable them",
                svc(json!({})),
                vec![v4(json!([hinted("10.1.0.1", "node-b", &["zone-a"], &[]), hinted("10.1.0.2", "node-c", &["zone-b"], &[]),
                    {"addresses": ["10.1.0.3"], "conditions": {"ready": false, "serving": false}}]))],
                &["cip TCP 10.0.0.1:80 rr [10.1.0.1:8080 w1]"]).node(node(Some("zone-a"))),
            case("node hints win over zone hints",
                svc(json!({})),
                vec![v4(json!([hinted("10.1.0.1", "node-a", &["zone-a"], &["node-a"]),
                    hinted("10.1.0.2", "node-b", &["zone-a"], &["node-b"])]))],
                &["cip TCP 10.0.0.1:80 rr [10.1.0.1:8080 w1]"]).node(node(Some("zone-a"))),
            case("node hints for other nodes only: zone hints apply",
                svc(json!({})),
                vec![v4(json!([hinted("10.1.0.1", "node-b", &["zone-a"], &["node-b"]),
                    hinted("10.1.0.2", "node-c", &["zone-b"], &["node-c"])]))],
                &["cip TCP 10.0.0.1:80 rr [10.1.0.1:8080 w1]"]).node(node(Some("zone-a"))),
            case("topology applies to Cluster policy only, not to eTP Local",
                svc(json!({"spec": {"type": "NodePort", "externalTrafficPolicy": "Local",
                    "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}})),
                vec![v4(json!([hinted("10.1.0.1", "node-a", &["zone-b"], &[]), hinted("10.1.0.2", "node-b", &["zone-a"], &[])]))],
                &["cip TCP 10.0.0.1:80 rr [10.1.0.2:8080 w1]",
                  "np TCP 192.168.0.10:30080 rr [10.1.0.1:8080 w1] local"]).node(node(Some("zone-a"))),
            case("topology with nothing ready: fallback ignores hints",
                svc(json!({})),
                vec![v4(json!([term("10.1.0.1", "node-b"), term("10.1.0.2", "node-c")]))],
                &["cip TCP 10.0.0.1:80 rr [10.1.0.1:8080 w1, 10.1.0.2:8080 w1]"]).node(node(Some("zone-a"))),
            // --- malformed Services ---
            fails("malformed cluster IP", svc(json!({"spec": {"clusterIP": "10.0.0.300", "clusterIPs": ["10.0.0.300"]}})),
                "service ns/web: spec.clusterIPs[0]: \"10.0.0.300\" is not an IP address"),
            fails("malformed legacy clusterIP", svc(json!({"spec": {"clusterIP": "banana", "clusterIPs": null}})),
                "service ns/web: spec.clusterIP: \"banana\" is not an IP address"),
            fails("malformed secondary cluster IP of a family we do not program",
                svc(json!({"spec": {"clusterIPs": ["10.0.0.1", "fd00::zz"]}})),
                "spec.clusterIPs[1]: \"fd00::zz\"").cfg(|c| c.ipv6 = false),
            fails("unknown protocol", svc(json!({"spec": {"ports": [{"name": "http", "port": 80, "protocol": "ICMP"}]}})),
                "service ns/web: spec.ports[0].protocol: unknown protocol \"ICMP\""),
            fails("port out of range", svc(json!({"spec": {"ports": [{"name": "a", "port": 80}, {"name": "b", "port": 70000}]}})),
                "service ns/web: spec.ports[1].port: 70000 is not a port number"),
            fails("port zero", svc(json!({"spec": {"ports": [{"name": "a", "port": 0}]}})),
                "spec.ports[0].port: 0 is not a port number"),
            fails("node port out of range",
                svc(json!({"spec": {"type": "NodePort", "ports": [{"name": "http", "port": 80, "nodePort": -5}]}})),
                "spec.ports[0].nodePort: -5 is not a port number"),
            fails("malformed external IP", svc(json!({"spec": {"externalIPs": ["198.51.100.1", "nope"]}})),
                "spec.externalIPs[1]: \"nope\" is not an IP address"),
            fails("malformed load balancer ingress IP",
                svc(json!({"spec": {"type": "LoadBalancer"},
                    "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.999", "ipMode": "Proxy"}]}}})),
                "status.loadBalancer.ingress[0].ip: \"203.0.113.999\" is not an IP address"),
            fails("affinity timeout out of range",
                svc(json!({"spec": {"sessionAffinity": "ClientIP",
                    "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 0}}}})),
                "spec.sessionAffinityConfig.clientIP.timeoutSeconds: 0 is outside 1-86400"),
            fails("unknown session affinity", svc(json!({"spec": {"sessionAffinity": "Cookie"}})),
                "spec.sessionAffinity: unknown affinity \"Cookie\""),
            fails("a bad loadBalancerSourceRanges entry refuses the Service, never opens it",
                svc(json!({"spec": {"type": "LoadBalancer",
                    "loadBalancerSourceRanges": ["198.51.100.0/24", "198.51.100.0/33"]}})),
                "spec.loadBalancerSourceRanges[1]: \"198.51.100.0/33\" is not a CIDR (prefix length"),
            fails("unknown type", svc(json!({"spec": {"type": "Magic"}})),
                "spec.type: unknown type \"Magic\""),
            fails("health check node port out of range",
                svc(json!({"spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "healthCheckNodePort": 65536}})),
                "spec.healthCheckNodePort: 65536 is not a port number"),
        ]
    }

    fn run(c: &Case, slices: &[Value]) -> Result<ServiceState, String> {
        let svc: Service =
            serde_json::from_value(c.svc.clone()).map_err(|e| format!("service json: {e}"))?;
        let svc = StoredService::from(&svc);
        let slices = slices
            .iter()
            .map(|s| {
                serde_json::from_value::<k8s_openapi::api::discovery::v1::EndpointSlice>(s.clone())
                    .map(|s| Arc::new(Slice::from(s)))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("slice json: {e}"))?;
        let node: Option<Node> = c
            .node
            .clone()
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| format!("node json: {e}"))?;
        service_state(&c.cfg, &svc, &slices, node.as_ref()).map_err(|e| format!("error: {e}"))
    }

    #[test]
    fn table() {
        let cases = cases();
        let mut failures = Vec::new();
        for c in &cases {
            let got = run(c, &c.slices);
            match (&c.want, &got) {
                (Ok(want), Ok(state)) => {
                    let got: Vec<String> = state.virtual_servers.iter().map(summary).collect();
                    if got != *want {
                        failures.push(format!("{}:\n  want {want:#?}\n  got  {got:#?}", c.name));
                    }
                    let hc = state.health_check.map(|h| (h.node_port, h.local_endpoints));
                    if hc != c.hc {
                        failures.push(format!(
                            "{}: health check want {:?} got {hc:?}",
                            c.name, c.hc
                        ));
                    }
                    // The caller's slice order must not matter.
                    let mut reversed = c.slices.clone();
                    reversed.reverse();
                    if run(c, &reversed).as_ref() != Ok(state) {
                        failures.push(format!("{}: result depends on slice order", c.name));
                    }
                }
                (Err(want), Err(got)) if got.contains(want) => {}
                (want, got) => {
                    let got = got
                        .as_ref()
                        .map(|s| s.virtual_servers.iter().map(summary).collect::<Vec<_>>());
                    failures.push(format!("{}:\n  want {want:?}\n  got  {got:?}", c.name));
                }
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {} cases failed:\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        );
        assert!(cases.len() >= 40, "{} cases", cases.len());
    }

    #[test]
    fn selects_by_labels() {
        let labelled = |labels: Value| -> StoredService {
            let svc: Service =
                serde_json::from_value(svc(json!({"metadata": {"labels": labels}}))).unwrap();
            StoredService::from(&svc)
        };
        let named = |n: &str| ModelConfig {
            service_proxy_name: Some(n.to_string()),
            ..ModelConfig::default()
        };
        let cases: Vec<(&str, ModelConfig, Value, bool)> = vec![
            (
                "default proxy, no labels",
                ModelConfig::default(),
                json!({}),
                true,
            ),
            (
                "default proxy, unrelated label",
                ModelConfig::default(),
                json!({"app": "web"}),
                true,
            ),
            (
                "default proxy, named Service",
                ModelConfig::default(),
                json!({LABEL_SERVICE_PROXY_NAME: "x"}),
                false,
            ),
            (
                "default proxy, empty proxy name label",
                ModelConfig::default(),
                json!({LABEL_SERVICE_PROXY_NAME: ""}),
                false,
            ),
            (
                "default proxy, headless",
                ModelConfig::default(),
                json!({LABEL_HEADLESS: ""}),
                false,
            ),
            (
                "named proxy, same name",
                named("x"),
                json!({LABEL_SERVICE_PROXY_NAME: "x"}),
                true,
            ),
            (
                "named proxy, other name",
                named("x"),
                json!({LABEL_SERVICE_PROXY_NAME: "y"}),
                false,
            ),
            ("named proxy, no label", named("x"), json!({}), false),
            (
                "named proxy, same name but headless",
                named("x"),
                json!({LABEL_SERVICE_PROXY_NAME: "x", LABEL_HEADLESS: ""}),
                false,
            ),
        ];
        for (name, cfg, labels, want) in cases {
            assert_eq!(selects(&cfg, &labelled(labels)), want, "{name}");
        }
    }

    #[test]
    fn default_config() {
        let cfg = ModelConfig::default();
        assert_eq!(cfg.scheduler, "rr");
        assert!(cfg.ipv4 && cfg.ipv6);
        assert!(!cfg.masquerade_all && !cfg.bpf_snat);
        assert!(cfg.node_name.is_empty() && cfg.node_addresses.is_empty());
        assert_eq!(cfg.service_proxy_name, None);
    }

    /// The summary hides destination fields other than address, port and
    /// weight; pin them once: NAT forwarding, no thresholds.
    #[test]
    fn destinations_are_nat() {
        let c = case(
            "nat",
            svc(json!({})),
            vec![v4(json!([ep("10.1.0.1", "n"), term("10.1.0.2", "n")]))],
            &[],
        );
        let state = run(&c, &c.slices).unwrap();
        let dests = &state.virtual_servers[0].destinations;
        assert_eq!(dests.len(), 2);
        for d in dests {
            assert_eq!(d.fwd, ipvs_netlink::ForwardMethod::Masq);
            assert_eq!((d.upper_threshold, d.lower_threshold), (0, 0));
        }
        assert_eq!(
            state.virtual_servers[0].service.flags,
            ServiceFlags::empty()
        );
    }
}
