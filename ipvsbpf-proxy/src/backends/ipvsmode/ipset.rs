//! kube-proxy's ipsets: their names, types and comments, the members a
//! [`NodeState`] asks for, and the `ipset restore` text that moves the
//! kernel from the members it has to the members it should have.
//!
//! Members are kept as the strings `ipset` itself prints (`10.0.0.1,tcp:80`),
//! so the members read back with `ipset save` compare equal to the computed
//! ones without a parser per set type.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;

use ipvs_netlink::{Family, Protocol, ServiceKey};

use crate::model::desired::{Cidr, NodeState, VsKind};

/// The ipset types kube-proxy's IPVS mode uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetType {
    HashIp,
    HashIpPort,
    HashIpPortIp,
    HashIpPortNet,
    BitmapPort,
}

impl SetType {
    /// The type as `ipset create` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            SetType::HashIp => "hash:ip",
            SetType::HashIpPort => "hash:ip,port",
            SetType::HashIpPortIp => "hash:ip,port,ip",
            SetType::HashIpPortNet => "hash:ip,port,net",
            SetType::BitmapPort => "bitmap:port",
        }
    }
}

/// One of kube-proxy's sets, by its IPv4 name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetDef {
    pub name: &'static str,
    pub kind: SetType,
    /// kube-proxy's comment, also used on the iptables rules matching it.
    pub comment: &'static str,
}

pub const LOOP_BACK: &str = "KUBE-LOOP-BACK";
pub const CLUSTER_IP: &str = "KUBE-CLUSTER-IP";
pub const EXTERNAL_IP: &str = "KUBE-EXTERNAL-IP";
pub const EXTERNAL_IP_LOCAL: &str = "KUBE-EXTERNAL-IP-LOCAL";
pub const LOAD_BALANCER: &str = "KUBE-LOAD-BALANCER";
pub const LOAD_BALANCER_FW: &str = "KUBE-LOAD-BALANCER-FW";
pub const LOAD_BALANCER_LOCAL: &str = "KUBE-LOAD-BALANCER-LOCAL";
pub const LOAD_BALANCER_SOURCE_IP: &str = "KUBE-LOAD-BALANCER-SOURCE-IP";
pub const LOAD_BALANCER_SOURCE_CIDR: &str = "KUBE-LOAD-BALANCER-SOURCE-CIDR";
pub const NODE_PORT_TCP: &str = "KUBE-NODE-PORT-TCP";
pub const NODE_PORT_LOCAL_TCP: &str = "KUBE-NODE-PORT-LOCAL-TCP";
pub const NODE_PORT_UDP: &str = "KUBE-NODE-PORT-UDP";
pub const NODE_PORT_LOCAL_UDP: &str = "KUBE-NODE-PORT-LOCAL-UDP";
pub const NODE_PORT_SCTP: &str = "KUBE-NODE-PORT-SCTP-HASH";
pub const NODE_PORT_LOCAL_SCTP: &str = "KUBE-NODE-PORT-LOCAL-SCTP-HASH";
pub const HEALTH_CHECK_NODE_PORT: &str = "KUBE-HEALTH-CHECK-NODE-PORT";
pub const IPVS_IPS: &str = "KUBE-IPVS-IPS";

const fn def(name: &'static str, kind: SetType, comment: &'static str) -> SetDef {
    SetDef {
        name,
        kind,
        comment,
    }
}

/// Every set, in kube-proxy's order (`ipsetInfo` in pkg/proxy/ipvs).
pub const SETS: [SetDef; 17] = [
    def(
        LOOP_BACK,
        SetType::HashIpPortIp,
        "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose",
    ),
    def(
        CLUSTER_IP,
        SetType::HashIpPort,
        "Kubernetes service cluster ip + port for masquerade purpose",
    ),
    def(
        EXTERNAL_IP,
        SetType::HashIpPort,
        "Kubernetes service external ip + port for masquerade and filter purpose",
    ),
    def(
        EXTERNAL_IP_LOCAL,
        SetType::HashIpPort,
        "Kubernetes service external ip + port with externalTrafficPolicy=local",
    ),
    def(
        LOAD_BALANCER,
        SetType::HashIpPort,
        "Kubernetes service lb portal",
    ),
    def(
        LOAD_BALANCER_FW,
        SetType::HashIpPort,
        "Kubernetes service load balancer ip + port for load balancer with sourceRange",
    ),
    def(
        LOAD_BALANCER_LOCAL,
        SetType::HashIpPort,
        "Kubernetes service load balancer ip + port with externalTrafficPolicy=local",
    ),
    def(
        LOAD_BALANCER_SOURCE_IP,
        SetType::HashIpPortIp,
        "Kubernetes service load balancer ip + port + source IP for packet filter purpose",
    ),
    def(
        LOAD_BALANCER_SOURCE_CIDR,
        SetType::HashIpPortNet,
        "Kubernetes service load balancer ip + port + source cidr for packet filter purpose",
    ),
    def(
        NODE_PORT_TCP,
        SetType::BitmapPort,
        "Kubernetes nodeport TCP port for masquerade purpose",
    ),
    def(
        NODE_PORT_LOCAL_TCP,
        SetType::BitmapPort,
        "Kubernetes nodeport TCP port with externalTrafficPolicy=local",
    ),
    def(
        NODE_PORT_UDP,
        SetType::BitmapPort,
        "Kubernetes nodeport UDP port for masquerade purpose",
    ),
    def(
        NODE_PORT_LOCAL_UDP,
        SetType::BitmapPort,
        "Kubernetes nodeport UDP port with externalTrafficPolicy=local",
    ),
    def(
        NODE_PORT_SCTP,
        SetType::HashIpPort,
        "Kubernetes nodeport SCTP port for masquerade purpose with type 'hash ip:port'",
    ),
    def(
        NODE_PORT_LOCAL_SCTP,
        SetType::HashIpPort,
        "Kubernetes nodeport SCTP port with externalTrafficPolicy=local with type 'hash ip:port'",
    ),
    def(
        HEALTH_CHECK_NODE_PORT,
        SetType::BitmapPort,
        "Kubernetes health check node port",
    ),
    def(IPVS_IPS, SetType::HashIp, "Addresses on the ipvs interface"),
];

/// The definition of the set called `name` (IPv4 name).
pub fn set_def(name: &str) -> Option<&'static SetDef> {
    SETS.iter().find(|s| s.name == name)
}

/// The kernel's name of set `base` for `family`. IPv4 and IPv6 sets
/// coexist on a dual-stack node, so kube-proxy renames the IPv6 ones
/// `KUBE-6-…`, cut to ipset's 31-character limit.
pub fn set_name(base: &str, family: Family) -> String {
    match family {
        Family::Inet => base.to_string(),
        Family::Inet6 => {
            let mut name = match base.strip_prefix("KUBE-") {
                Some(rest) => format!("KUBE-6-{rest}"),
                None => base.to_string(),
            };
            name.truncate(31);
            name
        }
    }
}

/// Members of every set of one family, by IPv4 set name; every set is
/// present, empty ones included.
pub type Members = BTreeMap<&'static str, BTreeSet<String>>;

/// An empty member list for every set.
pub fn empty_members() -> Members {
    SETS.iter().map(|s| (s.name, BTreeSet::new())).collect()
}

/// A protocol as ipset, iptables and nft name it; `None` for those with
/// no ports to match.
pub fn proto_name(p: Protocol) -> Option<&'static str> {
    match p {
        Protocol::Tcp => Some("tcp"),
        Protocol::Udp => Some("udp"),
        Protocol::Sctp => Some("sctp"),
        Protocol::Other(_) => None,
    }
}

fn insert(m: &mut Members, set: &'static str, entry: String) {
    m.entry(set).or_default().insert(entry);
}

/// The members `state` asks for in `family`'s sets, as kube-proxy's
/// `syncProxyRules` fills them. `bound` is the set of addresses on the
/// dummy device (KUBE-IPVS-IPS).
///
/// Differences from kube-proxy, forced by what [`NodeState`] carries:
/// KUBE-LOOP-BACK gets every destination, not only the node's own (a
/// remote endpoint's entry never matches here, so it only costs memory).
/// Fwmark services and protocols other than TCP/UDP/SCTP have no ipset form
/// and are skipped.
pub fn desired_members(state: &NodeState, family: Family, bound: &BTreeSet<IpAddr>) -> Members {
    let mut m = empty_members();
    for svc in state.services.values() {
        let mut in_family = false;
        for vs in &svc.virtual_servers {
            let ServiceKey::Tuple {
                protocol,
                addr,
                port,
            } = vs.key()
            else {
                continue;
            };
            if Family::of(&addr) != family {
                continue;
            }
            let Some(proto) = proto_name(protocol) else {
                continue;
            };
            in_family = true;
            for d in &vs.destinations {
                if Family::of(&d.addr) == family {
                    insert(
                        &mut m,
                        LOOP_BACK,
                        format!("{},{proto}:{},{}", d.addr, d.port, d.addr),
                    );
                }
            }
            let entry = format!("{addr},{proto}:{port}");
            match vs.kind {
                VsKind::ClusterIp => insert(&mut m, CLUSTER_IP, entry),
                VsKind::ExternalIp if vs.local_only => insert(&mut m, EXTERNAL_IP_LOCAL, entry),
                VsKind::ExternalIp => insert(&mut m, EXTERNAL_IP, entry),
                VsKind::LoadBalancer => {
                    if vs.local_only {
                        insert(&mut m, LOAD_BALANCER_LOCAL, entry.clone());
                    }
                    if let Some(sr) = &vs.source_ranges {
                        insert(&mut m, LOAD_BALANCER_FW, entry.clone());
                        for cidr in &sr.ranges {
                            let net = ipset_net(cidr);
                            insert(&mut m, LOAD_BALANCER_SOURCE_CIDR, format!("{entry},{net}"));
                        }
                        if sr.allow_from_node {
                            insert(&mut m, LOAD_BALANCER_SOURCE_IP, format!("{entry},{addr}"));
                        }
                    }
                    insert(&mut m, LOAD_BALANCER, entry);
                }
                VsKind::NodePort => {
                    // TCP and UDP node ports are bitmap:port sets (any node
                    // address); SCTP ones are hash:ip,port with each address.
                    let (all, local, member) = match protocol {
                        Protocol::Tcp => (NODE_PORT_TCP, NODE_PORT_LOCAL_TCP, port.to_string()),
                        Protocol::Udp => (NODE_PORT_UDP, NODE_PORT_LOCAL_UDP, port.to_string()),
                        _ => (NODE_PORT_SCTP, NODE_PORT_LOCAL_SCTP, entry),
                    };
                    if vs.local_only {
                        insert(&mut m, local, member.clone());
                    }
                    insert(&mut m, all, member);
                }
            }
        }
        if let (true, Some(hc)) = (in_family, svc.health_check) {
            insert(&mut m, HEALTH_CHECK_NODE_PORT, hc.node_port.to_string());
        }
    }
    for a in bound.iter().filter(|a| Family::of(a) == family) {
        insert(&mut m, IPVS_IPS, a.to_string());
    }
    m
}

/// A prefix as `ipset save` prints it: a host prefix (/32, /128) as the
/// bare address, so that read-back members compare equal.
fn ipset_net(cidr: &Cidr) -> String {
    let host = if cidr.is_ipv4() { 32 } else { 128 };
    if cidr.prefix_len == host {
        cidr.addr.to_string()
    } else {
        cidr.to_string()
    }
}

/// The `create` line of one set (kube-proxy's parameters: hash sets of
/// 1024 buckets and at most 65536 members, bitmap sets over every port).
pub fn create_line(def: &SetDef, family: Family) -> String {
    let name = set_name(def.name, family);
    match def.kind {
        SetType::BitmapPort => format!("create {name} bitmap:port range 0-65535"),
        kind => {
            let fam = match family {
                Family::Inet => "inet",
                Family::Inet6 => "inet6",
            };
            format!(
                "create {name} {} family {fam} hashsize 1024 maxelem 65536",
                kind.as_str()
            )
        }
    }
}

/// Counts of one `ipset restore`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemberDiff {
    pub added: usize,
    pub removed: usize,
}

/// `ipset restore -exist` input that creates every set of `family` (a
/// no-op for those that exist) and turns `current` into `desired`: `del`
/// for members no longer wanted, then `add` for new ones. Members are
/// changed in place rather than by building a new set and swapping it in
/// (kube-proxy's own approach is the same): the text is proportional to the
/// change, and no packet ever sees a set without members that stay.
pub fn restore_text(family: Family, current: &Members, desired: &Members) -> (String, MemberDiff) {
    let mut out = String::new();
    let mut diff = MemberDiff::default();
    let none = BTreeSet::new();
    for def in &SETS {
        out.push_str(&create_line(def, family));
        out.push('\n');
    }
    for def in &SETS {
        let name = set_name(def.name, family);
        let cur = current.get(def.name).unwrap_or(&none);
        let want = desired.get(def.name).unwrap_or(&none);
        for gone in cur.difference(want) {
            let _ = writeln!(out, "del {name} {gone}");
            diff.removed += 1;
        }
        for new in want.difference(cur) {
            let _ = writeln!(out, "add {name} {new}");
            diff.added += 1;
        }
    }
    (out, diff)
}

/// The members of `family`'s sets in `ipset save` output; sets of other
/// families and other owners are ignored.
pub fn parse_save(save: &str, family: Family) -> Members {
    let names: BTreeMap<String, &'static str> = SETS
        .iter()
        .map(|d| (set_name(d.name, family), d.name))
        .collect();
    let mut m = empty_members();
    for line in save.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("add") {
            continue;
        }
        let (Some(set), Some(member)) = (words.next(), words.next()) else {
            continue;
        };
        if let Some(base) = names.get(set) {
            insert(&mut m, base, member.to_string());
        }
    }
    m
}

/// `ipset restore` input destroying those of `existing` (names from
/// `ipset list -n`) that are ours, of either family.
pub fn destroy_text(existing: &str) -> String {
    let ours: BTreeSet<String> = SETS
        .iter()
        .flat_map(|d| {
            [
                set_name(d.name, Family::Inet),
                set_name(d.name, Family::Inet6),
            ]
        })
        .collect();
    let mut out = String::new();
    for name in existing.lines().map(str::trim) {
        if ours.contains(name) {
            let _ = writeln!(out, "destroy {name}");
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::desired::{
        HealthCheck, ServiceName, ServiceState, SourceRanges, VirtualServer,
    };
    use ipvs_netlink::{Destination, Service};

    fn vs(kind: VsKind, key: ServiceKey, dests: &[(&str, u16)], local_only: bool) -> VirtualServer {
        VirtualServer {
            service: Service::new(key, "rr"),
            destinations: dests
                .iter()
                .map(|(a, p)| Destination::new(a.parse().unwrap(), *p))
                .collect(),
            kind,
            masquerade: !local_only,
            local_only,
            source_ranges: None,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A ClusterIP+NodePort TCP/UDP service, an eTP=Local LB with a health
    /// check, an external IP, and an IPv6 ClusterIP.
    pub(crate) fn sample() -> NodeState {
        let mut st = NodeState::default();
        let web = ServiceState {
            virtual_servers: vec![
                vs(
                    VsKind::ClusterIp,
                    ServiceKey::tcp(ip("10.96.0.10"), 80),
                    &[("10.244.1.5", 8080)],
                    false,
                ),
                vs(
                    VsKind::NodePort,
                    ServiceKey::tcp(ip("192.168.1.10"), 30080),
                    &[("10.244.1.5", 8080)],
                    false,
                ),
                vs(
                    VsKind::ClusterIp,
                    ServiceKey::udp(ip("10.96.0.10"), 53),
                    &[("10.244.1.6", 5353)],
                    false,
                ),
                vs(
                    VsKind::NodePort,
                    ServiceKey::udp(ip("192.168.1.10"), 30053),
                    &[("10.244.1.6", 5353)],
                    false,
                ),
            ],
            health_check: None,
        };
        let lb = ServiceState {
            virtual_servers: vec![
                vs(
                    VsKind::ClusterIp,
                    ServiceKey::tcp(ip("10.96.0.20"), 443),
                    &[("10.244.2.7", 8443)],
                    false,
                ),
                vs(
                    VsKind::LoadBalancer,
                    ServiceKey::tcp(ip("203.0.113.5"), 443),
                    &[("10.244.2.7", 8443)],
                    true,
                ),
                vs(
                    VsKind::NodePort,
                    ServiceKey::tcp(ip("192.168.1.10"), 31443),
                    &[("10.244.2.7", 8443)],
                    true,
                ),
            ],
            health_check: Some(HealthCheck {
                node_port: 32000,
                local_endpoints: 1,
            }),
        };
        let ext = ServiceState {
            virtual_servers: vec![vs(
                VsKind::ExternalIp,
                ServiceKey::tcp(ip("198.51.100.7"), 80),
                &[],
                false,
            )],
            health_check: None,
        };
        let v6 = ServiceState {
            virtual_servers: vec![vs(
                VsKind::ClusterIp,
                ServiceKey::tcp(ip("fd00::10"), 80),
                &[("fd00:1::5", 8080)],
                false,
            )],
            health_check: None,
        };
        st.services
            .insert(ServiceName::new("default", "web"), web.into());
        st.services
            .insert(ServiceName::new("default", "lb"), lb.into());
        st.services
            .insert(ServiceName::new("default", "ext"), ext.into());
        st.services
            .insert(ServiceName::new("default", "v6"), v6.into());
        st
    }

    fn nonempty(m: &Members) -> Vec<(&str, Vec<&str>)> {
        m.iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (*k, v.iter().map(String::as_str).collect()))
            .collect()
    }

    #[test]
    fn members_of_lb_source_ranges() {
        let mut lb = vs(
            VsKind::LoadBalancer,
            ServiceKey::tcp(ip("203.0.113.5"), 443),
            &[("10.244.1.5", 8443)],
            false,
        );
        lb.source_ranges = Some(SourceRanges {
            ranges: vec![
                "198.51.100.0/24".parse().unwrap(),
                "192.0.2.9/32".parse().unwrap(),
            ],
            allow_from_node: true,
        });
        let open = vs(
            VsKind::LoadBalancer,
            ServiceKey::tcp(ip("203.0.113.6"), 443),
            &[("10.244.1.5", 8443)],
            false,
        );
        let mut st = NodeState::default();
        st.services.insert(
            ServiceName::new("ns", "lb"),
            ServiceState {
                virtual_servers: vec![lb, open],
                health_check: None,
            }
            .into(),
        );
        let m = desired_members(&st, Family::Inet, &BTreeSet::new());
        let got: Vec<_> = nonempty(&m)
            .into_iter()
            .filter(|(name, _)| name.starts_with("KUBE-LOAD-BALANCER"))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "KUBE-LOAD-BALANCER",
                    vec!["203.0.113.5,tcp:443", "203.0.113.6,tcp:443"]
                ),
                ("KUBE-LOAD-BALANCER-FW", vec!["203.0.113.5,tcp:443"]),
                (
                    "KUBE-LOAD-BALANCER-SOURCE-CIDR",
                    // a host prefix as ipset prints it, or every sync would
                    // delete and re-add it
                    vec![
                        "203.0.113.5,tcp:443,192.0.2.9",
                        "203.0.113.5,tcp:443,198.51.100.0/24"
                    ]
                ),
                (
                    "KUBE-LOAD-BALANCER-SOURCE-IP",
                    vec!["203.0.113.5,tcp:443,203.0.113.5"]
                ),
            ]
        );
    }

    #[test]
    fn members_of_sample_ipv4() {
        let st = sample();
        let m = desired_members(&st, Family::Inet, &st.addresses());
        assert_eq!(m.len(), SETS.len(), "every set present, empty or not");
        assert_eq!(
            nonempty(&m),
            vec![
                (
                    "KUBE-CLUSTER-IP",
                    vec![
                        "10.96.0.10,tcp:80",
                        "10.96.0.10,udp:53",
                        "10.96.0.20,tcp:443"
                    ]
                ),
                ("KUBE-EXTERNAL-IP", vec!["198.51.100.7,tcp:80"]),
                ("KUBE-HEALTH-CHECK-NODE-PORT", vec!["32000"]),
                (
                    "KUBE-IPVS-IPS",
                    vec!["10.96.0.10", "10.96.0.20", "198.51.100.7", "203.0.113.5"]
                ),
                ("KUBE-LOAD-BALANCER", vec!["203.0.113.5,tcp:443"]),
                ("KUBE-LOAD-BALANCER-LOCAL", vec!["203.0.113.5,tcp:443"]),
                (
                    "KUBE-LOOP-BACK",
                    vec![
                        "10.244.1.5,tcp:8080,10.244.1.5",
                        "10.244.1.6,udp:5353,10.244.1.6",
                        "10.244.2.7,tcp:8443,10.244.2.7"
                    ]
                ),
                ("KUBE-NODE-PORT-LOCAL-TCP", vec!["31443"]),
                ("KUBE-NODE-PORT-TCP", vec!["30080", "31443"]),
                ("KUBE-NODE-PORT-UDP", vec!["30053"]),
            ]
        );
    }

    #[test]
    fn members_of_sample_ipv6() {
        let st = sample();
        let m = desired_members(&st, Family::Inet6, &st.addresses());
        assert_eq!(
            nonempty(&m),
            vec![
                ("KUBE-CLUSTER-IP", vec!["fd00::10,tcp:80"]),
                ("KUBE-IPVS-IPS", vec!["fd00::10"]),
                ("KUBE-LOOP-BACK", vec!["fd00:1::5,tcp:8080,fd00:1::5"]),
            ]
        );
    }

    #[test]
    fn external_ip_local_and_sctp_node_port() {
        let mut st = NodeState::default();
        st.services.insert(
            ServiceName::new("a", "b"),
            ServiceState {
                virtual_servers: vec![
                    vs(
                        VsKind::ExternalIp,
                        ServiceKey::tcp(ip("198.51.100.8"), 80),
                        &[],
                        true,
                    ),
                    vs(
                        VsKind::NodePort,
                        ServiceKey::Tuple {
                            protocol: Protocol::Sctp,
                            addr: ip("192.168.1.10"),
                            port: 30999,
                        },
                        &[],
                        true,
                    ),
                    vs(
                        VsKind::ClusterIp,
                        ServiceKey::Fwmark {
                            family: Family::Inet,
                            mark: 7,
                        },
                        &[],
                        false,
                    ),
                ],
                health_check: None,
            }
            .into(),
        );
        let m = desired_members(&st, Family::Inet, &BTreeSet::new());
        assert_eq!(
            nonempty(&m),
            vec![
                ("KUBE-EXTERNAL-IP-LOCAL", vec!["198.51.100.8,tcp:80"]),
                (
                    "KUBE-NODE-PORT-LOCAL-SCTP-HASH",
                    vec!["192.168.1.10,sctp:30999"]
                ),
                ("KUBE-NODE-PORT-SCTP-HASH", vec!["192.168.1.10,sctp:30999"]),
            ]
        );
    }

    #[test]
    fn ipv6_names_follow_kube_proxy() {
        let cases = [
            ("KUBE-CLUSTER-IP", Family::Inet, "KUBE-CLUSTER-IP"),
            ("KUBE-CLUSTER-IP", Family::Inet6, "KUBE-6-CLUSTER-IP"),
            (
                "KUBE-LOAD-BALANCER-SOURCE-CIDR",
                Family::Inet6,
                "KUBE-6-LOAD-BALANCER-SOURCE-CID",
            ),
            (
                "KUBE-NODE-PORT-LOCAL-SCTP-HASH",
                Family::Inet6,
                "KUBE-6-NODE-PORT-LOCAL-SCTP-HAS",
            ),
            (
                "KUBE-HEALTH-CHECK-NODE-PORT",
                Family::Inet6,
                "KUBE-6-HEALTH-CHECK-NODE-PORT",
            ),
        ];
        for (base, fam, want) in cases {
            let got = set_name(base, fam);
            assert_eq!(got, want, "{base} {fam:?}");
            assert!(got.len() <= 31);
        }
    }

    #[test]
    fn restore_text_creates_all_and_applies_diff() {
        let mut cur = empty_members();
        let mut want = empty_members();
        cur.get_mut(CLUSTER_IP)
            .unwrap()
            .extend(["10.96.0.1,tcp:443".into(), "10.96.0.2,tcp:80".into()]);
        want.get_mut(CLUSTER_IP)
            .unwrap()
            .extend(["10.96.0.2,tcp:80".into(), "10.96.0.3,udp:53".into()]);
        want.get_mut(NODE_PORT_TCP).unwrap().insert("30080".into());
        let (text, diff) = restore_text(Family::Inet, &cur, &want);
        let expected = "\
create KUBE-LOOP-BACK hash:ip,port,ip family inet hashsize 1024 maxelem 65536
create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536
create KUBE-EXTERNAL-IP hash:ip,port family inet hashsize 1024 maxelem 65536
create KUBE-EXTERNAL-IP-LOCAL hash:ip,port family inet hashsize 1024 maxelem 65536
create KUBE-LOAD-BALANCER hash:ip,port family inet hashsize 1024 maxelem 65536
create KUBE-LOAD-BALANCER-FW hash:ip,port family inet hashsize 1024 maxelem 65536
create KUBE-LOAD-BALANCER-LOCAL hash:ip,port family inet hashsize 1024 maxelem 65536
create KUBE-LOAD-BALANCER-SOURCE-IP hash:ip,port,ip family inet hashsize 1024 maxelem 65536
create KUBE-LOAD-BALANCER-SOURCE-CIDR hash:ip,port,net family inet hashsize 1024 maxelem 65536
create KUBE-NODE-PORT-TCP bitmap:port range 0-65535
create KUBE-NODE-PORT-LOCAL-TCP bitmap:port range 0-65535
create KUBE-NODE-PORT-UDP bitmap:port range 0-65535
create KUBE-NODE-PORT-LOCAL-UDP bitmap:port range 0-65535
create KUBE-NODE-PORT-SCTP-HASH hash:ip,port family inet hashsize 1024 maxelem 65536
create KUBE-NODE-PORT-LOCAL-SCTP-HASH hash:ip,port family inet hashsize 1024 maxelem 65536
create KUBE-HEALTH-CHECK-NODE-PORT bitmap:port range 0-65535
create KUBE-IPVS-IPS hash:ip family inet hashsize 1024 maxelem 65536
del KUBE-CLUSTER-IP 10.96.0.1,tcp:443
add KUBE-CLUSTER-IP 10.96.0.3,udp:53
add KUBE-NODE-PORT-TCP 30080
";
        assert_eq!(text, expected);
        assert_eq!(
            diff,
            MemberDiff {
                added: 2,
                removed: 1
            }
        );
    }

    #[test]
    fn restore_text_ipv6_uses_renamed_sets_and_inet6() {
        let mut want = empty_members();
        want.get_mut(CLUSTER_IP)
            .unwrap()
            .insert("fd00::10,tcp:80".into());
        let (text, diff) = restore_text(Family::Inet6, &empty_members(), &want);
        assert!(text.contains(
            "create KUBE-6-CLUSTER-IP hash:ip,port family inet6 hashsize 1024 maxelem 65536\n"
        ));
        assert!(text.contains("create KUBE-6-NODE-PORT-TCP bitmap:port range 0-65535\n"));
        assert!(
            text.ends_with("add KUBE-6-CLUSTER-IP fd00::10,tcp:80\n"),
            "{text}"
        );
        assert_eq!(
            diff,
            MemberDiff {
                added: 1,
                removed: 0
            }
        );
    }

    #[test]
    fn unchanged_members_write_only_creates() {
        let st = sample();
        let m = desired_members(&st, Family::Inet, &st.addresses());
        let (text, diff) = restore_text(Family::Inet, &m, &m);
        assert_eq!(diff, MemberDiff::default());
        assert!(text.lines().all(|l| l.starts_with("create ")));
    }

    #[test]
    fn save_output_round_trips_to_members() {
        let save = "\
create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x1
add KUBE-CLUSTER-IP 10.96.0.10,tcp:80
add KUBE-6-CLUSTER-IP fd00::10,tcp:80
add SOMEONE-ELSE 10.0.0.1
create KUBE-NODE-PORT-TCP bitmap:port range 0-65535
add KUBE-NODE-PORT-TCP 30080
";
        let v4 = parse_save(save, Family::Inet);
        assert_eq!(
            nonempty(&v4),
            vec![
                ("KUBE-CLUSTER-IP", vec!["10.96.0.10,tcp:80"]),
                ("KUBE-NODE-PORT-TCP", vec!["30080"])
            ]
        );
        let v6 = parse_save(save, Family::Inet6);
        assert_eq!(
            nonempty(&v6),
            vec![("KUBE-CLUSTER-IP", vec!["fd00::10,tcp:80"])]
        );
    }

    #[test]
    fn destroy_only_ours() {
        let listed = "KUBE-CLUSTER-IP\nKUBE-6-LOOP-BACK\nmy-set\nKUBE-FOO\n";
        assert_eq!(
            destroy_text(listed),
            "destroy KUBE-CLUSTER-IP\ndestroy KUBE-6-LOOP-BACK\n"
        );
        assert_eq!(destroy_text(""), "");
    }
}
