//! Services as the inventory stores them: what the model reads of one,
//! read and checked once, when the object arrives.
//!
//! An API `Service` is 824 bytes before its strings, and a sync read it
//! again for every recompute. A [`StoredService`] keeps the name, the two
//! labels that decide which proxy serves it, and the spec and status
//! fields the model uses, already parsed ([`ParsedService`]); a Service
//! the model refuses keeps its [`ModelError`], reported by every sync that
//! recomputes it, as before. Whatever else changes on the object (its
//! selector, annotations, managed fields) is not stored, and nothing but
//! what is stored (the resource version excepted) recomputes it; so an
//! edit that leaves a refused Service refused with the same error is not
//! recomputed, and not reported again.

use std::net::IpAddr;

use ipvs_netlink::Protocol;
use k8s_openapi::api::core::v1::Service;

use super::desired::{Cidr, ServiceName};
use super::{protocol_of, ModelError, ProxyLabels, DEFAULT_AFFINITY_TIMEOUT, MAX_AFFINITY_TIMEOUT};

/// One Service, compact. See the module documentation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredService {
    /// Empty fields when the object had none; the inventory refuses it.
    pub name: ServiceName,
    /// Written by the API server on every change; not compared.
    pub resource_version: Option<Box<str>>,
    pub labels: ProxyLabels,
    /// `Ok(None)`: a Service without virtual servers (ExternalName,
    /// headless, no cluster IP yet).
    pub spec: Result<Option<ParsedService>, ModelError>,
}

impl From<&Service> for StoredService {
    fn from(svc: &Service) -> StoredService {
        let meta = &svc.metadata;
        let name = ServiceName::new(
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default(),
        );
        StoredService {
            resource_version: meta.resource_version.as_deref().map(Into::into),
            labels: ProxyLabels::of(meta.labels.as_ref()),
            spec: ParsedService::parse(&name, svc),
            name,
        }
    }
}

impl StoredService {
    /// Equal for the proxy's purposes: everything but the resource
    /// version. Destructured, so a field added here must be placed.
    pub fn same(&self, o: &StoredService) -> bool {
        let StoredService {
            name,
            resource_version: _,
            labels,
            spec,
        } = self;
        *name == o.name && *labels == o.labels && *spec == o.spec
    }
}

impl From<Service> for StoredService {
    fn from(svc: Service) -> StoredService {
        StoredService::from(&svc)
    }
}

/// One `spec.ports` entry, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SvcPort {
    /// "" when unnamed; matches the EndpointSlice port of the same name.
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
    pub node_port: Option<u16>,
}

/// The fields of a Service the model uses, all validated up front so a bad
/// Service fails before anything is built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedService {
    pub cluster_ips: Vec<IpAddr>,
    pub ports: Vec<SvcPort>,
    /// NodePort or LoadBalancer type: `nodePort`s are served.
    pub node_ports: bool,
    pub external_ips: Vec<IpAddr>,
    /// Ingress IPs of a LoadBalancer Service, except `ipMode: Proxy` ones
    /// (the load balancer proxies to node ports; capturing its address on
    /// the node would bypass it).
    pub lb_ips: Vec<IpAddr>,
    /// `spec.loadBalancerSourceRanges` of a LoadBalancer, both families.
    pub source_ranges: Vec<Cidr>,
    pub external_local: bool,
    pub internal_local: bool,
    pub affinity_timeout: Option<u32>,
    /// Only for a LoadBalancer with eTP=Local, as kube-proxy's
    /// `NeedsHealthCheck`.
    pub health_check_node_port: Option<u16>,
}

impl ParsedService {
    /// `Ok(None)` for a Service without virtual servers (ExternalName,
    /// headless, no cluster IP yet).
    pub fn parse(name: &ServiceName, svc: &Service) -> Result<Option<ParsedService>, ModelError> {
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
                    service: name.clone(),
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
            .map(|(i, ip)| parse_ip(name, &indexed(field, i, raw_ips.len()), ip))
            .collect::<Result<Vec<_>, _>>()?;

        let mut ports = Vec::with_capacity(spec.ports.as_ref().map_or(0, Vec::len));
        for (i, p) in spec.ports.iter().flatten().enumerate() {
            let field = format!("spec.ports[{i}]");
            let protocol =
                parse_protocol(name, &format!("{field}.protocol"), p.protocol.as_deref())?;
            let port = parse_port(name, &format!("{field}.port"), p.port)?;
            let node_port = match p.node_port {
                None | Some(0) => None,
                Some(n) => Some(parse_port(name, &format!("{field}.nodePort"), n)?),
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
            .map(|(i, ip)| parse_ip(name, &format!("spec.externalIPs[{i}]"), ip))
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
                let addr = parse_ip(name, &format!("status.loadBalancer.ingress[{i}].ip"), ip)?;
                if ing.ip_mode.as_deref() != Some("Proxy") {
                    lb_ips.push(addr);
                }
            }
        }

        // Only a LoadBalancer's ranges mean anything (the API refuses them
        // on other types). kube-proxy trims them: validation once let
        // padded values through. Unlike kube-proxy, which drops a range it
        // cannot parse, a bad one refuses the Service: dropping it could
        // leave none, which would open the load balancer to every source.
        let mut source_ranges = Vec::new();
        if is_lb {
            for (i, r) in spec
                .load_balancer_source_ranges
                .iter()
                .flatten()
                .enumerate()
            {
                let cidr = r
                    .trim()
                    .parse::<Cidr>()
                    .map_err(|reason| ModelError::BadCidr {
                        service: name.clone(),
                        field: format!("spec.loadBalancerSourceRanges[{i}]"),
                        value: r.clone(),
                        reason,
                    })?;
                source_ranges.push(cidr);
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
                                service: name.clone(),
                                value: t,
                            })
                        }
                    },
                })
            }
            Some(other) => {
                return Err(ModelError::UnknownAffinity {
                    service: name.clone(),
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
                Some(parse_port(name, "spec.healthCheckNodePort", n)?)
            }
            _ => None,
        };

        Ok(Some(ParsedService {
            cluster_ips,
            ports,
            node_ports,
            external_ips,
            lb_ips,
            source_ranges,
            external_local,
            internal_local,
            affinity_timeout,
            health_check_node_port,
        }))
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
