//! The desired node state: what the model computes from the API objects and
//! what the reconciler and the mode back-ends program. Plain data, no I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::sync::Arc;

use ipvs_netlink::{Destination, Service, ServiceKey};

/// A Service's identity: namespace and name. Shared: the inventory, the
/// model's state and the reconciler each key a map by it, and a clone is
/// two reference counts, not two allocations.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceName {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
}

impl ServiceName {
    pub fn new(namespace: &str, name: &str) -> ServiceName {
        ServiceName {
            namespace: namespace.into(),
            name: name.into(),
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
    /// externalTrafficPolicy=Local applies (local endpoints, or the
    /// cluster's when this node has none; client address kept); for
    /// NodePort, LB and external IPs only.
    pub local_only: bool,
    /// `loadBalancerSourceRanges` of a load balancer address: only these
    /// sources may reach it. `None`: any source (also when the Service has
    /// ranges, but none of this address's family, as kube-proxy does).
    pub source_ranges: Option<SourceRanges>,
}

/// The sources allowed to reach one load balancer virtual server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceRanges {
    /// The Service's ranges of the address's family; never empty.
    pub ranges: Vec<Cidr>,
    /// One of the ranges holds a node address, so the node itself may
    /// reach the load balancer address too (kube-proxy's
    /// KUBE-LOAD-BALANCER-SOURCE-IP entry: the node's packets to an address
    /// on its own `kube-ipvs0` carry that address as their source).
    pub allow_from_node: bool,
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

impl ServiceState {
    /// Equal but for the virtual servers' destinations: the same
    /// addresses, ports, flags, kinds, source ranges and health check.
    pub fn same_frontends(&self, other: &ServiceState) -> bool {
        self.health_check == other.health_check
            && self.virtual_servers.len() == other.virtual_servers.len()
            && self
                .virtual_servers
                .iter()
                .zip(&other.virtual_servers)
                .all(|(a, b)| {
                    a.service == b.service
                        && a.kind == b.kind
                        && a.masquerade == b.masquerade
                        && a.local_only == b.local_only
                        && a.source_ranges == b.source_ranges
                })
    }
}

/// The whole node: one state per selected Service, shared with the
/// reconciler's record of what it must program (one copy between them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeState {
    pub services: BTreeMap<ServiceName, Arc<ServiceState>>,
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

/// An IP prefix: address and prefix length, host bits cleared (as Go's
/// `net.ParseCIDR` returns the network).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

impl Cidr {
    /// Whether `ip` is inside the prefix (never across families).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask_v4(ip, self.prefix_len) == net && self.prefix_len <= 32
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask_v6(ip, self.prefix_len) == net && self.prefix_len <= 128
            }
            _ => false,
        }
    }

    /// Whether the two prefixes share an address: the wider holds the
    /// other's network (never across families).
    pub fn overlaps(&self, other: &Cidr) -> bool {
        let (wide, narrow) = if self.prefix_len <= other.prefix_len {
            (self, other)
        } else {
            (other, self)
        };
        wide.contains(narrow.addr)
    }

    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }
}

fn mask_v4(ip: Ipv4Addr, len: u8) -> Ipv4Addr {
    let bits = u32::from(ip);
    let mask = u32::MAX
        .checked_shl(32 - u32::from(len.min(32)))
        .unwrap_or(0);
    Ipv4Addr::from(bits & mask)
}

fn mask_v6(ip: Ipv6Addr, len: u8) -> Ipv6Addr {
    let bits = u128::from(ip);
    let mask = u128::MAX
        .checked_shl(128 - u32::from(len.min(128)))
        .unwrap_or(0);
    Ipv6Addr::from(bits & mask)
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let (a, l) = s
            .split_once('/')
            .ok_or_else(|| "not a CIDR: expected ADDRESS/PREFIX-LENGTH".to_string())?;
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("{a:?} is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix_len: u8 = l
            .parse()
            .ok()
            .filter(|n| *n <= max)
            .ok_or_else(|| format!("prefix length {l:?} is not 0..={max}"))?;
        let addr = match addr {
            IpAddr::V4(v4) => IpAddr::V4(mask_v4(v4, prefix_len)),
            IpAddr::V6(v6) => IpAddr::V6(mask_v6(v6, prefix_len)),
        };
        Ok(Cidr { addr, prefix_len })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

#[cfg(test)]
mod tests {
    use super::Cidr;

    #[test]
    fn prefixes_overlap_when_one_holds_the_other() {
        let c = |s: &str| s.parse::<Cidr>().unwrap();
        let cluster = c("198.18.0.0/16");
        assert!(c("198.18.1.2/32").overlaps(&cluster));
        assert!(cluster.overlaps(&c("198.18.1.2/32")));
        assert!(
            c("198.0.0.0/8").overlaps(&cluster),
            "a wider route that holds it"
        );
        assert!(c("198.18.0.0/15").overlaps(&cluster));
        assert!(!c("198.19.0.0/16").overlaps(&cluster));
        assert!(c("0.0.0.0/0").overlaps(&cluster));
        assert!(!c("::/0").overlaps(&cluster), "never across families");
        let v6 = c("2001:db8:1::/48");
        assert!(c("2001:db8:1:1::2/128").overlaps(&v6));
        assert!(!c("2001:db8::/64").overlaps(&v6));
    }
}
