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
//!   is an [`ModelError`]. The API server validates all of these, so a bad
//!   value means something is badly wrong; the caller keeps the Service's
//!   previous state rather than programming half of it.
//! - Anything read from an **EndpointSlice** (endpoint addresses, endpoint
//!   port numbers, address types) is skipped with a `tracing::warn!`: one
//!   bad endpoint must not take the other endpoints of a Service down, and
//!   slices can be written by anyone with the right RBAC, not only the
//!   EndpointSlice controller.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use ipvs_netlink::{
    Destination, Family, Protocol, Service as IpvsService, ServiceFlags, ServiceKey,
};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::desired::{HealthCheck, ServiceName, ServiceState, VirtualServer, VsKind};

/// Label naming the proxy that serves a Service (`--service-proxy-name`).
pub const LABEL_SERVICE_PROXY_NAME: &str = "service.kubernetes.io/service-proxy-name";
/// Label the API puts on headless Services; no proxy serves them.
pub const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";
/// Label tying an EndpointSlice to its Service.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// Node label holding the node's zone, for topology-aware routing.
pub const LABEL_TOPOLOGY_ZONE: &str = "topology.kubernetes.io/zone";
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
}

/// Whether this proxy serves `svc`, by its labels, as kube-proxy's
/// informer label selector does: with no `--service-proxy-name`, Services
/// that name a proxy belong to another one; with a name, only the Services
/// naming it. Headless Services (labelled by the API) are never served.
pub fn selects(cfg: &ModelConfig, svc: &Service) -> bool {
    let labels = svc.metadata.labels.as_ref();
    let label = |key: &str| labels.and_then(|l| l.get(key));
    if label(LABEL_HEADLESS).is_some() {
        return false;
    }
    match (&cfg.service_proxy_name, label(LABEL_SERVICE_PROXY_NAME)) {
        (None, None) => true,
        (None, Some(_)) => false,
        (Some(want), Some(have)) => want == have,
        (Some(_), None) => false,
    }
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
    svc: &Service,
    slices: &[Arc<EndpointSlice>],
    node: Option<&Node>,
) -> Result<ServiceState, ModelError> {
    if !selects(cfg, svc) {
        return Ok(ServiceState::default());
    }
    let Some(parsed) = ParsedService::parse(svc)? else {
        return Ok(ServiceState::default());
    };
    let zone = node
        .and_then(|n| n.metadata.labels.as_ref())
        .and_then(|l| l.get(LABEL_TOPOLOGY_ZONE))
        .map(String::as_str)
        .unwrap_or("");
    let slices = accepted_slices(cfg, &parsed.name, slices);

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
        let endpoints = port_endpoints(cfg, &parsed.name, port, &slices);
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

            let external = if parsed.external_local {
                local()
            } else {
                cluster()
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

/// One `spec.ports` entry, validated.
#[derive(Clone, Debug)]
struct SvcPort {
    /// "" when unnamed; matches the EndpointSlice port of the same name.
    name: String,
    protocol: Protocol,
    port: u16,
    node_port: Option<u16>,
}

/// The fields of a Service the model uses, all validated up front so a bad
/// Service fails before anything is built.
struct ParsedService {
    name: ServiceName,
    cluster_ips: Vec<IpAddr>,
    ports: Vec<SvcPort>,
    /// NodePort or LoadBalancer type: `nodePort`s are served.
    node_ports: bool,
    external_ips: Vec<IpAddr>,
    /// Ingress IPs of a LoadBalancer Service, except `ipMode: Proxy` ones
    /// (the load balancer proxies to node ports; capturing its address on
    /// the node would bypass it).
    lb_ips: Vec<IpAddr>,
    external_local: bool,
    internal_local: bool,
    affinity_timeout: Option<u32>,
    /// Only for a LoadBalancer with eTP=Local, as kube-proxy's
    /// `NeedsHealthCheck`.
    health_check_node_port: Option<u16>,
}

impl ParsedService {
    /// `Ok(None)` for a Service without virtual servers (ExternalName,
    /// headless, no cluster IP yet).
    fn parse(svc: &Service) -> Result<Option<ParsedService>, ModelError> {
        let name = ServiceName::new(
            svc.metadata.namespace.as_deref().unwrap_or_default(),
            svc.metadata.name.as_deref().unwrap_or_default(),
        );
        let Some(spec) = svc.spec.as_ref() else {
            return Ok(None);
        };
        let is_lb = match spec.type_.as_deref() {
            None | Some("ClusterIP") => false,
            Some("NodePort") => false,
            Some("LoadBalancer") => true,
            Some("ExternalName") => return Ok(None),
            Some(other) => {
                return Err(ModelError::UnknownType {
                    service: name,
                    value: other.to_string(),
                })
            }
        };
        let node_ports = is_lb || spec.type_.as_deref() == Some("NodePort");

        // clusterIPs, when set, starts with clusterIP; older objects have
        // only clusterIP.
        let (field, raw_ips): (&str, Vec<&str>) = match &spec.cluster_ips {
            Some(ips) if !ips.is_empty() => {
                ("spec.clusterIPs", ips.iter().map(String::as_str).collect())
            }
            _ => (
                "spec.clusterIP",
                spec.cluster_ip.as_deref().into_iter().collect(),
            ),
        };
        match raw_ips.first() {
            None | Some(&"") | Some(&"None") => return Ok(None),
            Some(_) => {}
        }
        let cluster_ips = raw_ips
            .iter()
            .enumerate()
            .map(|(i, ip)| parse_ip(&name, &indexed(field, i, raw_ips.len()), ip))
            .collect::<Result<Vec<_>, _>>()?;

        let mut ports = Vec::new();
        for (i, p) in spec.ports.iter().flatten().enumerate() {
            let field = format!("spec.ports[{i}]");
            let protocol =
                parse_protocol(&name, &format!("{field}.protocol"), p.protocol.as_deref())?;
            let port = parse_port(&name, &format!("{field}.port"), p.port)?;
            let node_port = match p.node_port {
                None | Some(0) => None,
                Some(n) => Some(parse_port(&name, &format!("{field}.nodePort"), n)?),
            };
            ports.push(SvcPort {
                name: p.name.clone().unwrap_or_default(),
                protocol,
                port,
                node_port,
            });
        }

        let external_ips = spec
            .external_ips
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, ip)| parse_ip(&name, &format!("spec.externalIPs[{i}]"), ip))
            .collect::<Result<Vec<_>, _>>()?;

        let mut lb_ips = Vec::new();
        if is_lb {
            let ingress = svc
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref());
            for (i, ing) in ingress.into_iter().flatten().enumerate() {
                // Hostname-only ingress (some cloud LBs) has nothing to capture.
                let Some(ip) = ing.ip.as_deref().filter(|ip| !ip.is_empty()) else {
                    continue;
                };
                let addr = parse_ip(&name, &format!("status.loadBalancer.ingress[{i}].ip"), ip)?;
                if ing.ip_mode.as_deref() != Some("Proxy") {
                    lb_ips.push(addr);
                }
            }
        }

        let affinity_timeout = match spec.session_affinity.as_deref() {
            None | Some("None") => None,
            Some("ClientIP") => {
                let timeout = spec
                    .session_affinity_config
                    .as_ref()
                    .and_then(|c| c.client_ip.as_ref())
                    .and_then(|c| c.timeout_seconds);
                Some(match timeout {
                    None => DEFAULT_AFFINITY_TIMEOUT,
                    Some(t) => match u32::try_from(t) {
                        Ok(t) if (1..=MAX_AFFINITY_TIMEOUT).contains(&t) => t,
                        _ => {
                            return Err(ModelError::BadAffinityTimeout {
                                service: name,
                                value: t,
                            })
                        }
                    },
                })
            }
            Some(other) => {
                return Err(ModelError::UnknownAffinity {
                    service: name,
                    value: other.to_string(),
                })
            }
        };

        // eTP only means anything for a Service reachable from outside
        // (kube-proxy's ExternallyAccessible); the external virtual servers
        // exist only then, so the plain field is enough here.
        let external_local = spec.external_traffic_policy.as_deref() == Some("Local");
        let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
        let health_check_node_port = match spec.health_check_node_port {
            Some(n) if n != 0 && is_lb && external_local => {
                Some(parse_port(&name, "spec.healthCheckNodePort", n)?)
            }
            _ => None,
        };

        Ok(Some(ParsedService {
            name,
            cluster_ips,
            ports,
            node_ports,
            external_ips,
            lb_ips,
            external_local,
            internal_local,
            affinity_timeout,
            health_check_node_port,
        }))
    }

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
        VirtualServer {
            service,
            destinations: destinations.to_vec(),
            kind,
            masquerade,
            local_only,
        }
    }
}

/// `spec.clusterIPs[1]`, or `spec.clusterIP` for the single legacy field.
fn indexed(field: &str, i: usize, len: usize) -> String {
    if field == "spec.clusterIP" && len == 1 {
        field.to_string()
    } else {
        format!("{field}[{i}]")
    }
}

fn parse_ip(service: &ServiceName, field: &str, value: &str) -> Result<IpAddr, ModelError> {
    value.parse().map_err(|_| ModelError::BadIp {
        service: service.clone(),
        field: field.to_string(),
        value: value.to_string(),
    })
}

fn parse_port(service: &ServiceName, field: &str, value: i32) -> Result<u16, ModelError> {
    match u16::try_from(value) {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(ModelError::BadPort {
            service: service.clone(),
            field: field.to_string(),
            value,
        }),
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

fn parse_protocol(
    service: &ServiceName,
    field: &str,
    value: Option<&str>,
) -> Result<Protocol, ModelError> {
    protocol_of(value).ok_or_else(|| ModelError::UnknownProtocol {
        service: service.clone(),
        field: field.to_string(),
        value: value.unwrap_or_default().to_string(),
    })
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
    slices: &'a [Arc<EndpointSlice>],
) -> Vec<(&'a EndpointSlice, Family)> {
    let mut accepted: Vec<(&EndpointSlice, Family)> = slices
        .iter()
        .map(Arc::as_ref)
        .filter(|s| {
            let meta = &s.metadata;
            let ours = meta.namespace.as_deref().unwrap_or_default() == name.namespace
                && meta
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(LABEL_SERVICE_NAME))
                    .is_some_and(|n| *n == name.name);
            if !ours {
                tracing::debug!(service = %name, slice = ?meta.name, "ignoring EndpointSlice of another Service");
            }
            ours
        })
        .filter_map(|s| {
            let family = match s.address_type.as_str() {
                "IPv4" => Family::Inet,
                "IPv6" => Family::Inet6,
                // FQDN slices have no addresses IPVS could use.
                _ => return None,
            };
            cfg.family_enabled(family).then_some((s, family))
        })
        .collect();
    accepted.sort_by(|a, b| a.0.metadata.name.cmp(&b.0.metadata.name));
    accepted
}

/// The endpoints of service port `port` across all slices, deduplicated by
/// (address, port): an endpoint moving between slices, or a pod IP reused
/// while the old pod terminates, shows up twice; as kube-proxy, a
/// non-terminating copy wins over a terminating one.
fn port_endpoints(
    cfg: &ModelConfig,
    name: &ServiceName,
    port: &SvcPort,
    slices: &[(&EndpointSlice, Family)],
) -> Vec<Endpoint> {
    let mut found: BTreeMap<(IpAddr, u16), Endpoint> = BTreeMap::new();
    for (slice, family) in slices {
        let slice_name = slice.metadata.name.as_deref().unwrap_or_default();
        for sp in slice.ports.iter().flatten() {
            if sp.name.as_deref().unwrap_or_default() != port.name
                || protocol_of(sp.protocol.as_deref()) != Some(port.protocol)
            {
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
            for ep in slice.endpoints.iter().flatten() {
                // kube-proxy uses the first address only; the others have no
                // defined meaning.
                let Some(raw) = ep.addresses.first() else {
                    tracing::warn!(service = %name, slice = slice_name, "skipping endpoint without addresses");
                    continue;
                };
                let addr = match raw.parse::<IpAddr>() {
                    Ok(a) if Family::of(&a) == *family => a,
                    _ => {
                        tracing::warn!(service = %name, slice = slice_name, address = %raw, "skipping endpoint with an address that is not an IP of the slice's addressType");
                        continue;
                    }
                };
                let cond = ep.conditions.clone().unwrap_or_default();
                let hints = ep.hints.as_ref();
                let endpoint = Endpoint {
                    addr,
                    port: number,
                    // The API: nil ready and serving mean true, nil
                    // terminating false.
                    ready: cond.ready.unwrap_or(true),
                    serving: cond.serving.unwrap_or(true),
                    terminating: cond.terminating.unwrap_or(false),
                    local: !cfg.node_name.is_empty()
                        && ep.node_name.as_deref() == Some(cfg.node_name.as_str()),
                    zone_hints: hints
                        .and_then(|h| h.for_zones.as_ref())
                        .map(|z| z.iter().map(|z| z.name.clone()).collect())
                        .unwrap_or_default(),
                    node_hints: hints
                        .and_then(|h| h.for_nodes.as_ref())
                        .map(|n| n.iter().map(|n| n.name.clone()).collect())
                        .unwrap_or_default(),
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
