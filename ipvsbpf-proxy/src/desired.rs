//! The desired node state: what the model computes from the API objects and
//! what the reconciler and the mode back-ends program. Plain data, no I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipvs_netlink::{Destination, Service, ServiceKey};

/// A Service's identity: namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceName {
    pub namespace: String,
    pub name: String,
}

impl ServiceName {
    pub fn new(namespace: &str, name: &str) -> ServiceName {
        ServiceName {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// How a virtual server is reached; decides the ipsets in `ipvs` mode and
/// which addresses go on the dummy device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VsKind {
    ClusterIp,
    NodePort,
    ExternalIp,
    LoadBalancer,
}

/// One IPVS virtual server with its real servers, as it should be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtualServer {
    /// Key, scheduler, persistence and flags (`BPF_SNAT` in `ipvs-bpf`
    /// mode when `masquerade` is set).
    pub service: Service,
    /// Real servers, sorted by (address, port); weight 0 drains.
    pub destinations: Vec<Destination>,
    pub kind: VsKind,
    /// Traffic to this virtual server must be source-NATed (kube-proxy's
    /// KUBE-MARK-MASQ): NodePort/LB/external with eTP=Cluster, or
    /// masquerade-all.
    pub masquerade: bool,
    /// externalTrafficPolicy=Local applies (only local endpoints, client
    /// address kept); for NodePort, LB and external IPs only.
    pub local_only: bool,
}

impl VirtualServer {
    pub fn key(&self) -> ServiceKey {
        self.service.key
    }
}

/// eTP=Local health check: the proxy answers on `node_port` with the count
/// of local endpoints (200 if any, 503 otherwise).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    pub node_port: u16,
    pub local_endpoints: usize,
}

/// Everything one Service asks of the node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceState {
    pub virtual_servers: Vec<VirtualServer>,
    pub health_check: Option<HealthCheck>,
}

/// The whole node: one state per selected Service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeState {
    pub services: BTreeMap<ServiceName, ServiceState>,
}

impl NodeState {
    /// Every virtual server address (VIPs, external and LB addresses; not
    /// node addresses), for the dummy device in `ipvs` mode.
    pub fn addresses(&self) -> std::collections::BTreeSet<IpAddr> {
        self.services
            .values()
            .flat_map(|s| s.virtual_servers.iter())
            .filter(|vs| vs.kind != VsKind::NodePort)
            .filter_map(|vs| match vs.key() {
                ServiceKey::Tuple { addr, .. } => Some(addr),
                ServiceKey::Fwmark { .. } => None,
            })
            .collect()
    }
}
