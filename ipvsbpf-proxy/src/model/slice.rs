//! EndpointSlices as the inventory stores them: what the model reads of
//! one, in a fraction of the memory.
//!
//! An API `Endpoint` is 352 bytes before its strings, mostly `Option`s the
//! proxy never reads (the Pod reference, deprecated topology, zone); at
//! 10,000 Services x 10 endpoints the slices alone took 51 MiB. A
//! [`Slice`] keeps the owning Service's name and the labels that select
//! it, the address type, the ports and per endpoint its first address,
//! conditions, node name (shared between the endpoints of a node) and
//! hints. Nothing is validated here: a bad address is kept as written, and
//! the model skips it with the Service's name in the warning, as it did
//! reading the API object.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use ipvs_netlink::{Family, Protocol};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::model::inventory::{SERVICE_NAME_LABEL, TRIGGER_TIME_ANNOTATION};
use crate::model::{protocol_of, ProxyLabels};

/// One EndpointSlice, compact. See the module documentation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Slice {
    pub namespace: String,
    pub name: String,
    /// Written by the API server on every change; not compared.
    pub resource_version: Option<String>,
    /// The owning Service's name (`kubernetes.io/service-name`).
    pub service: Option<Box<str>>,
    /// The labels that select it, as its Service's.
    pub labels: ProxyLabels,
    /// `endpoints.kubernetes.io/last-change-trigger-time` as written.
    pub trigger_time: Option<String>,
    /// The address type's family; `None` for `FQDN` and unknown types.
    pub family: Option<Family>,
    pub ports: Vec<SlicePort>,
    pub endpoints: Vec<SliceEndpoint>,
}

/// One port of a slice, as written (the model checks it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlicePort {
    /// Empty when unnamed, as the Service port it matches.
    pub name: String,
    /// `None` for a protocol the API does not know (absent means TCP).
    pub protocol: Option<Protocol>,
    pub port: Option<i32>,
}

/// An endpoint's first address (kube-proxy uses the first one only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    Ip(IpAddr),
    /// No address at all.
    Missing,
    /// Not an IP address, kept as written for the warning.
    Invalid(Box<str>),
}

/// One endpoint with its conditions resolved as the API defines them (nil
/// ready and serving mean true, nil terminating false).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceEndpoint {
    pub address: Address,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    /// Shared by every endpoint of the same node ([`node_name`]).
    pub node_name: Option<Arc<str>>,
    /// Topology hints; boxed because most endpoints have none.
    pub hints: Option<Box<Hints>>,
}

/// `hints.forZones` and `hints.forNodes` names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hints {
    pub zones: Vec<String>,
    pub nodes: Vec<String>,
}

impl Slice {
    /// The Service that owns the slice, from its label.
    pub fn service(&self) -> Option<&str> {
        self.service.as_deref()
    }

    /// Equal for the proxy's purposes: everything but the resource version.
    /// Destructured, so a field added to `Slice` must be placed here.
    pub fn same(&self, o: &Slice) -> bool {
        let Slice {
            namespace,
            name,
            resource_version: _,
            service,
            labels,
            trigger_time,
            family,
            ports,
            endpoints,
        } = self;
        *namespace == o.namespace
            && *name == o.name
            && *service == o.service
            && *labels == o.labels
            && *trigger_time == o.trigger_time
            && *family == o.family
            && *ports == o.ports
            && *endpoints == o.endpoints
    }
}

impl From<&EndpointSlice> for Slice {
    fn from(s: &EndpointSlice) -> Slice {
        let meta = &s.metadata;
        Slice {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            resource_version: meta.resource_version.clone(),
            service: meta
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
                .map(|v| v.as_str().into()),
            labels: ProxyLabels::of(meta.labels.as_ref()),
            trigger_time: meta
                .annotations
                .as_ref()
                .and_then(|a| a.get(TRIGGER_TIME_ANNOTATION))
                .cloned(),
            family: match s.address_type.as_str() {
                "IPv4" => Some(Family::Inet),
                "IPv6" => Some(Family::Inet6),
                _ => None,
            },
            ports: s
                .ports
                .iter()
                .flatten()
                .map(|p| SlicePort {
                    name: p.name.clone().unwrap_or_default(),
                    protocol: protocol_of(p.protocol.as_deref()),
                    port: p.port,
                })
                .collect(),
            endpoints: s
                .endpoints
                .iter()
                .flatten()
                .map(|ep| {
                    let cond = ep.conditions.as_ref();
                    let hints = ep.hints.as_ref().map(|h| Hints {
                        zones: h
                            .for_zones
                            .iter()
                            .flatten()
                            .map(|z| z.name.clone())
                            .collect(),
                        nodes: h
                            .for_nodes
                            .iter()
                            .flatten()
                            .map(|n| n.name.clone())
                            .collect(),
                    });
                    SliceEndpoint {
                        address: match ep.addresses.first() {
                            None => Address::Missing,
                            Some(raw) => match raw.parse::<IpAddr>() {
                                Ok(ip) => Address::Ip(ip),
                                Err(_) => Address::Invalid(raw.as_str().into()),
                            },
                        },
                        ready: cond.and_then(|c| c.ready).unwrap_or(true),
                        serving: cond.and_then(|c| c.serving).unwrap_or(true),
                        terminating: cond.and_then(|c| c.terminating).unwrap_or(false),
                        node_name: ep.node_name.as_deref().map(node_name),
                        hints: hints.map(Box::new),
                    }
                })
                .collect(),
        }
    }
}

/// Node names, shared: a cluster has far fewer nodes than endpoints, and
/// a name of its own for each of 100,000 endpoints is 100,000 small
/// allocations. Names no endpoint holds any more are dropped whenever the
/// set has doubled since it was last pruned, so nodes that come and go
/// do not accumulate.
static NODE_NAMES: Mutex<NodeNames> = Mutex::new(NodeNames {
    names: None,
    pruned_at: 0,
});

struct NodeNames {
    names: Option<HashSet<Arc<str>>>,
    pruned_at: usize,
}

/// `name` as an `Arc` shared with every other endpoint of that node.
pub fn node_name(name: &str) -> Arc<str> {
    // A panic elsewhere under the lock cannot leave the set inconsistent.
    let mut guard = NODE_NAMES.lock().unwrap_or_else(|p| p.into_inner());
    let NodeNames { names, pruned_at } = &mut *guard;
    let names = names.get_or_insert_with(HashSet::new);
    if let Some(shared) = names.get(name) {
        return Arc::clone(shared);
    }
    if names.len() >= 2 * *pruned_at + 64 {
        names.retain(|n| Arc::strong_count(n) > 1);
        names.shrink_to_fit();
        *pruned_at = names.len();
    }
    let shared: Arc<str> = Arc::from(name);
    names.insert(Arc::clone(&shared));
    shared
}

impl From<EndpointSlice> for Slice {
    fn from(s: EndpointSlice) -> Slice {
        Slice::from(&s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn api(v: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(v).expect("slice")
    }

    /// Every field the model reads survives; defaults are the API's.
    #[test]
    fn keeps_what_the_model_reads() {
        let s = Slice::from(api(json!({
            "metadata": {"namespace": "ns", "name": "web-abc", "resourceVersion": "7",
                         "labels": {SERVICE_NAME_LABEL: "web"},
                         "annotations": {TRIGGER_TIME_ANNOTATION: "2026-12-05T00:00:00Z"}},
            "addressType": "IPv6",
            "ports": [{"name": "http", "port": 8080}, {"protocol": "UDP", "port": 53},
                      {"protocol": "QUIC", "port": 443}],
            "endpoints": [
                {"addresses": ["2001:db8::1", "2001:db8::2"], "nodeName": "n1",
                 "conditions": {"ready": false, "terminating": true},
                 "hints": {"forZones": [{"name": "z1"}], "forNodes": [{"name": "n1"}]},
                 "targetRef": {"kind": "Pod", "name": "web-1"}},
                {"addresses": []},
                {"addresses": ["not-an-ip"], "conditions": {}},
            ],
        })));
        assert_eq!((s.namespace.as_str(), s.name.as_str()), ("ns", "web-abc"));
        assert_eq!(s.service(), Some("web"));
        assert_eq!(s.trigger_time.as_deref(), Some("2026-12-05T00:00:00Z"));
        assert_eq!(s.family, Some(Family::Inet6));
        assert_eq!(
            s.ports,
            [
                SlicePort {
                    name: "http".into(),
                    protocol: Some(Protocol::Tcp),
                    port: Some(8080)
                },
                SlicePort {
                    name: String::new(),
                    protocol: Some(Protocol::Udp),
                    port: Some(53)
                },
                SlicePort {
                    name: String::new(),
                    protocol: None,
                    port: Some(443)
                },
            ]
        );
        let e = &s.endpoints;
        assert_eq!(
            e[0].address,
            Address::Ip("2001:db8::1".parse().expect("ip"))
        );
        assert_eq!(
            (e[0].ready, e[0].serving, e[0].terminating),
            (false, true, true)
        );
        assert_eq!(e[0].node_name.as_deref(), Some("n1"));
        let hints = e[0].hints.as_deref().expect("hints");
        assert_eq!(
            (hints.zones.as_slice(), hints.nodes.as_slice()),
            (&["z1".to_string()][..], &["n1".to_string()][..])
        );
        assert_eq!(e[1].address, Address::Missing);
        assert_eq!(e[2].address, Address::Invalid("not-an-ip".into()));
        assert_eq!(
            (e[2].ready, e[2].serving, e[2].terminating),
            (true, true, false)
        );
        assert_eq!(e[2].hints, None);
    }

    /// Endpoints of one node share its name; a name nobody holds any
    /// more leaves the set at the next pruning.
    #[test]
    fn node_names_are_shared_and_pruned() {
        let a = node_name("slice-test-node");
        assert!(Arc::ptr_eq(&a, &node_name("slice-test-node")));
        let s = Slice::from(api(json!({
            "metadata": {"name": "x"}, "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.1"], "nodeName": "slice-test-node"},
                          {"addresses": ["10.0.0.2"], "nodeName": "slice-test-node"}],
        })));
        for ep in &s.endpoints {
            assert!(Arc::ptr_eq(&a, ep.node_name.as_ref().expect("node name")));
        }
        let gone = Arc::downgrade(&node_name("slice-test-gone"));
        for i in 0..1000 {
            node_name(&format!("slice-test-churn-{i}"));
        }
        assert!(gone.upgrade().is_none(), "an unheld name was kept");
        assert!(Arc::ptr_eq(&a, &node_name("slice-test-node")));
    }

    #[test]
    fn fqdn_slices_have_no_family() {
        let s = Slice::from(api(
            json!({"metadata": {"name": "x"}, "addressType": "FQDN",
                                       "endpoints": [{"addresses": ["db.example"]}]}),
        ));
        assert_eq!(s.family, None);
    }

    #[test]
    fn the_resource_version_is_not_compared() {
        let a = Slice::from(api(
            json!({"metadata": {"name": "x", "resourceVersion": "1"},
                                       "addressType": "IPv4"}),
        ));
        let b = Slice {
            resource_version: Some("2".into()),
            ..a.clone()
        };
        assert!(a.same(&b));
        let c = Slice {
            family: Some(Family::Inet6),
            ..a.clone()
        };
        assert!(!a.same(&c));
    }
}
