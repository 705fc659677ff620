//! The nftables table of `ipvs-bpf` mode: `loadBalancerSourceRanges`, and
//! ClusterIP ports with no virtual server rejected as kube-proxy does.
//!
//! `ipvs` mode filters the way kube-proxy does: ipsets matched from the
//! iptables filter table, after IPVS has accepted the packet on INPUT. In
//! bpf_mode there is no INPUT step: IPVS takes a Service packet at
//! PREROUTING, priority `NF_IP_PRI_CONNTRACK_DEFRAG + 1` (-399), rewrites
//! its destination to the backend and forwards it, before any iptables
//! table sees the load balancer address. So the filter runs earlier still,
//! at priority -450 (where iptables' raw-before-defrag would run), on
//! prerouting for traffic from elsewhere and on output for the node's own
//! (which meets IPVS at LOCAL_OUT).
//!
//! One rule per family, protocol and hook: a packet whose (destination,
//! protocol, port) is a filtered load balancer address is dropped unless
//! (destination, protocol, port, source) falls in an allowed range. Only the first
//! fragment carries the ports; a later fragment matches nothing here and is
//! left to defragmentation, which cannot complete without the dropped first
//! one.
//!
//! ClusterIPs are not local addresses in bpf_mode (no `kube-ipvs0`), so a
//! packet to a ClusterIP port IPVS has no virtual server for would be
//! routed on, to the default gateway. kube-proxy rejects it: its `ipvs`
//! mode in `KUBE-IPVS-FILTER`, its `nftables` mode on its `cluster-ips`
//! set. Here a chain on forward and one on output, at filter priority 0
//! (after IPVS, which has rewritten the destination of every packet it
//! took), reject what is still addressed to a ClusterIP: TCP with a reset,
//! anything else with an ICMP port unreachable. A client sees "connection
//! refused" at once.
//!
//! Each change rewrites the whole table in one `nft -f` transaction: no
//! packet ever sees half a rule set, and a node with no Service has no
//! table at all. (10,000 ClusterIPs load in ~30 ms on the build host.) The
//! node reaches a load
//! balancer address from its own address here (no `kube-ipvs0`), so
//! kube-proxy's "allow from node" entry needs no counterpart: the ranges
//! decide, as for any other source.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io;
use std::net::IpAddr;

use ipvs_netlink::ServiceKey;

use crate::backends::ipvsmode::ipset::proto_name;
use crate::backends::ipvsmode::Runner;
use crate::model::desired::{Cidr, NodeState, VsKind};

/// The nftables table (family `inet`) this module owns.
pub const TABLE: &str = "ipvsbpf-proxy";

/// Ahead of IPVS's bpf_mode PREROUTING hook (-399) and of defragmentation.
pub const PRIORITY: i32 = -450;

/// Behind IPVS (PREROUTING -399, LOCAL_OUT -99): filter priority.
pub const VIP_PRIORITY: i32 = 0;

#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error(
        "cannot run nft (the nftables package) for loadBalancerSourceRanges and ClusterIP \
         rejects: {0}"
    )]
    Spawn(io::Error),
    #[error("`nft -f -` failed with status {status}: {stderr}")]
    Nft { status: i32, stderr: String },
}

/// One allowed (load balancer address, protocol, port, source range).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Allow {
    lb: String,
    proto: &'static str,
    port: u16,
    range: Cidr,
}

/// The filtered load balancer addresses and their allowed sources, and
/// the ClusterIPs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// (family is IPv4, address, protocol, port)
    guarded: BTreeSet<(bool, String, &'static str, u16)>,
    allowed: BTreeSet<(bool, Allow)>,
    /// Every ClusterIP with a virtual server.
    cluster_ips: BTreeSet<IpAddr>,
}

impl Ruleset {
    /// What `state` asks for: every load balancer virtual server with
    /// source ranges, every ClusterIP.
    pub fn of(state: &NodeState) -> Ruleset {
        let mut rs = Ruleset::default();
        let vss = state
            .services
            .values()
            .flat_map(|s| s.virtual_servers.iter());
        for vs in vss.clone().filter(|vs| vs.kind == VsKind::ClusterIp) {
            if let ServiceKey::Tuple { addr, .. } = vs.key() {
                rs.cluster_ips.insert(addr);
            }
        }
        for vs in vss.filter(|vs| vs.kind == VsKind::LoadBalancer) {
            let (
                Some(sr),
                ServiceKey::Tuple {
                    protocol,
                    addr,
                    port,
                },
            ) = (&vs.source_ranges, vs.key())
            else {
                continue;
            };
            let Some(proto) = proto_name(protocol) else {
                continue;
            };
            let v4 = addr.is_ipv4();
            let lb = addr.to_string();
            rs.guarded.insert((v4, lb.clone(), proto, port));
            for range in sr.ranges.iter().filter(|r| r.is_ipv4() == v4) {
                rs.allowed.insert((
                    v4,
                    Allow {
                        lb: lb.clone(),
                        proto,
                        port,
                        range: *range,
                    },
                ));
            }
        }
        rs
    }

    pub fn is_empty(&self) -> bool {
        self.guarded.is_empty() && self.cluster_ips.is_empty()
    }

    /// The `nft -f` input that replaces the table with this rule set (or
    /// removes it, when empty). `table` first makes the `delete` valid
    /// when there is no table yet; all of it is one transaction.
    pub fn script(&self) -> String {
        let mut out = format!("table inet {TABLE}\ndelete table inet {TABLE}\n");
        if self.is_empty() {
            return out;
        }
        let _ = writeln!(out, "table inet {TABLE} {{");
        let mut rules = Vec::new();
        for (v4, ip, addr_type) in [(true, "ip", "ipv4_addr"), (false, "ip6", "ipv6_addr")] {
            let fam = if v4 { "4" } else { "6" };
            // One pair of sets per family and protocol present, with the
            // protocol matched by the rule rather than kept in the sets:
            // nft 1.0.x (Debian bookworm) loads an `inet_proto` field of an
            // interval concatenation through a one-byte `byteorder`
            // expression, which 6.12.y stable kernels refuse with
            // EOPNOTSUPP since they dropped multi-register byteorder.
            let protos: BTreeSet<&str> = self
                .guarded
                .iter()
                .filter(|g| g.0 == v4)
                .map(|g| g.2)
                .collect();
            for proto in protos {
                let guarded: Vec<String> = self
                    .guarded
                    .iter()
                    .filter(|g| g.0 == v4 && g.2 == proto)
                    .map(|(_, lb, _, port)| format!("{lb} . {port}"))
                    .collect();
                let allowed: Vec<String> = self
                    .allowed
                    .iter()
                    .filter(|a| a.0 == v4 && a.1.proto == proto)
                    .map(|(_, a)| format!("{} . {} . {}", a.lb, a.port, a.range))
                    .collect();
                let set = format!("{fam}_{proto}");
                let _ = writeln!(
                    out,
                    "\tset guarded{set} {{\n\t\ttype {addr_type} . inet_service\n\t\t\
                     elements = {{ {} }}\n\t}}",
                    guarded.join(", ")
                );
                // Every guarded address has at least one range of its
                // family (the model gives none otherwise), so this set is
                // never empty.
                let _ = writeln!(
                    out,
                    "\tset allowed{set} {{\n\t\ttype {addr_type} . inet_service . {addr_type}\n\t\t\
                     flags interval\n\t\telements = {{ {} }}\n\t}}",
                    allowed.join(", ")
                );
                rules.push(format!(
                    "meta l4proto {proto} {ip} daddr . th dport @guarded{set} \
                     {ip} daddr . th dport . {ip} saddr != @allowed{set} counter drop"
                ));
            }
        }
        let mut vip_rules = Vec::new();
        for (v4, ip, addr_type) in [(true, "ip", "ipv4_addr"), (false, "ip6", "ipv6_addr")] {
            let ips: Vec<String> = self
                .cluster_ips
                .iter()
                .filter(|a| a.is_ipv4() == v4)
                .map(IpAddr::to_string)
                .collect();
            if ips.is_empty() {
                continue;
            }
            let set = format!("cluster_ips{}", if v4 { "4" } else { "6" });
            let _ = writeln!(
                out,
                "\tset {set} {{\n\t\ttype {addr_type}\n\t\telements = {{ {} }}\n\t}}",
                ips.join(", ")
            );
            vip_rules.push(format!("{ip} daddr @{set} counter goto vip-reject"));
        }
        // Every packet the node forwards or sends crosses these chains,
        // and most are Service traffic that IPVS has already taken:
        // bpf_mode marks it untracked, and it leaves after one cheap
        // test instead of a set lookup per family (about a sixth of
        // ipvs-bpf's instructions per NodePort connection went to this
        // table). A packet to a ClusterIP port without a virtual server
        // is not IPVS's, so conntrack tracks it and it reaches the sets.
        if !vip_rules.is_empty() {
            vip_rules.insert(0, "ct state untracked accept".to_string());
        }
        // TCP gets a reset, not kube-proxy's ICMP error: a client's own
        // SYN often crosses this hook inside its connect() (veth,
        // loopback), and TCP drops an ICMPv6 error that meets its socket
        // locked (LockDroppedIcmps), so an IPv6 client would wait for its
        // SYN retransmission; a reset waits in the socket's backlog
        // instead.
        let reject = if vip_rules.is_empty() {
            Vec::new()
        } else {
            vec![
                "meta l4proto tcp reject with tcp reset".to_string(),
                "reject".to_string(),
            ]
        };
        let chains = [
            ("prerouting", Some(("prerouting", PRIORITY)), &rules),
            ("output", Some(("output", PRIORITY)), &rules),
            ("vip-forward", Some(("forward", VIP_PRIORITY)), &vip_rules),
            ("vip-output", Some(("output", VIP_PRIORITY)), &vip_rules),
            // reached only from the two above
            ("vip-reject", None, &reject),
        ];
        for (name, hook, rules) in chains {
            if rules.is_empty() {
                continue;
            }
            let _ = writeln!(out, "\tchain {name} {{");
            if let Some((hook, priority)) = hook {
                let _ = writeln!(
                    out,
                    "\t\ttype filter hook {hook} priority {priority}; policy accept;"
                );
            }
            for r in rules {
                let _ = writeln!(out, "\t\t{r}");
            }
            out.push_str("\t}\n");
        }
        out.push_str("}\n");
        out
    }
}

/// Keeps the table in step with the desired state.
pub struct LbFirewall<R: Runner> {
    runner: R,
    /// What the kernel has, as far as we know; `None` at start and after a
    /// failure, so the next sync writes the table whatever it holds.
    applied: Option<Ruleset>,
    /// The table as `nft -s list` showed it right after it was written
    /// (stateless: without the counters' values). A full sync that finds
    /// it so leaves the table alone: a rewrite would restart the drop
    /// counters an operator reads.
    listed: Option<String>,
}

impl<R: Runner> LbFirewall<R> {
    pub fn new(runner: R) -> Self {
        LbFirewall {
            runner,
            applied: None,
            listed: None,
        }
    }

    /// Brings the table to what `state` asks for. `full` also checks, when
    /// nothing changed, that the kernel still has the table as written
    /// (someone may have flushed the ruleset or edited a set), and
    /// rewrites it if not. Returns whether the table was written.
    pub fn sync(&mut self, state: &NodeState, full: bool) -> Result<bool, FirewallError> {
        let want = Ruleset::of(state);
        if self.applied.as_ref() == Some(&want) {
            if !full {
                return Ok(false);
            }
            if self.listed.is_some() && self.list() == self.listed {
                return Ok(false);
            }
        }
        // Nothing to filter and no nft: there can be no table of ours.
        let missing_ok = want.is_empty();
        self.applied = None;
        self.listed = None;
        match self.apply(&want.script()) {
            Err(FirewallError::Spawn(e)) if missing_ok && e.kind() == io::ErrorKind::NotFound => {}
            r => r?,
        }
        // Not listed (no table, or nft failed to list it): the next full
        // sync rewrites it, as before this check existed.
        if !want.is_empty() {
            self.listed = self.list();
        }
        self.applied = Some(want);
        Ok(true)
    }

    /// Our table as the kernel has it, without the counters' values;
    /// `None` when it cannot be listed.
    fn list(&mut self) -> Option<String> {
        let out = self
            .runner
            .run("nft", &["-s", "list", "table", "inet", TABLE], None)
            .ok()?;
        (out.status == 0).then_some(out.stdout)
    }

    /// Removes the table (`--cleanup`); no table is no error.
    pub fn cleanup(&mut self) -> Result<(), FirewallError> {
        self.applied = None;
        match self.apply(&Ruleset::default().script()) {
            Err(FirewallError::Spawn(e)) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }

    fn apply(&mut self, script: &str) -> Result<(), FirewallError> {
        let out = self
            .runner
            .run("nft", &["-f", "-"], Some(script))
            .map_err(FirewallError::Spawn)?;
        if out.status != 0 {
            return Err(FirewallError::Nft {
                status: out.status,
                stderr: out.stderr.trim().to_string(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::ipvsmode::Output;
    use crate::model::desired::{ServiceName, ServiceState, SourceRanges, VirtualServer};
    use ipvs_netlink::Service;

    #[derive(Default)]
    struct Fake {
        scripts: Vec<String>,
        fail: Option<io::ErrorKind>,
        status: i32,
        /// the table the fake kernel holds, as `nft -s list` shows it
        table: Option<String>,
        lists: usize,
    }

    impl Runner for Fake {
        fn run(&mut self, program: &str, args: &[&str], stdin: Option<&str>) -> io::Result<Output> {
            assert_eq!(program, "nft");
            if let Some(kind) = self.fail {
                return Err(io::Error::from(kind));
            }
            if args == ["-s", "list", "table", "inet", TABLE] {
                self.lists += 1;
                return Ok(match &self.table {
                    Some(t) => Output {
                        stdout: t.clone(),
                        ..Output::default()
                    },
                    None => Output {
                        status: 1,
                        ..Output::default()
                    },
                });
            }
            assert_eq!(args, ["-f", "-"]);
            let script = stdin.unwrap_or_default().to_string();
            if self.status == 0 {
                // what the kernel would list: the script stands in for it
                self.table = script.contains('{').then(|| script.clone());
            }
            self.scripts.push(script);
            Ok(Output {
                status: self.status,
                stderr: "Error: no such thing".into(),
                ..Output::default()
            })
        }
    }

    fn lb(addr: &str, port: u16, ranges: &[&str]) -> VirtualServer {
        VirtualServer {
            service: Service::new(ServiceKey::tcp(addr.parse().unwrap(), port), "rr"),
            destinations: vec![],
            kind: VsKind::LoadBalancer,
            masquerade: true,
            local_only: false,
            source_ranges: (!ranges.is_empty()).then(|| SourceRanges {
                ranges: ranges.iter().map(|r| r.parse().unwrap()).collect(),
                allow_from_node: false,
            }),
        }
    }

    fn state(vss: Vec<VirtualServer>) -> NodeState {
        let mut st = NodeState::default();
        st.services.insert(
            ServiceName::new("ns", "lb"),
            ServiceState {
                virtual_servers: vss,
                health_check: None,
            }
            .into(),
        );
        st
    }

    #[test]
    fn script_filters_guarded_addresses_only() {
        let st = state(vec![
            lb("203.0.113.5", 443, &["198.51.100.0/24", "192.0.2.9/32"]),
            lb("203.0.113.6", 443, &[]),
            lb("2001:db8::7", 80, &["2001:db8:1::/48"]),
            VirtualServer {
                service: Service::new(ServiceKey::udp("203.0.113.5".parse().unwrap(), 53), "rr"),
                ..lb("203.0.113.5", 53, &["10.0.0.0/8", "2001:db8:2::/48"])
            },
        ]);
        let script = Ruleset::of(&st).script();
        let want = "\
table inet ipvsbpf-proxy
delete table inet ipvsbpf-proxy
table inet ipvsbpf-proxy {
\tset guarded4_tcp {
\t\ttype ipv4_addr . inet_service
\t\telements = { 203.0.113.5 . 443 }
\t}
\tset allowed4_tcp {
\t\ttype ipv4_addr . inet_service . ipv4_addr
\t\tflags interval
\t\telements = { 203.0.113.5 . 443 . 192.0.2.9/32, 203.0.113.5 . 443 . 198.51.100.0/24 }
\t}
\tset guarded4_udp {
\t\ttype ipv4_addr . inet_service
\t\telements = { 203.0.113.5 . 53 }
\t}
\tset allowed4_udp {
\t\ttype ipv4_addr . inet_service . ipv4_addr
\t\tflags interval
\t\telements = { 203.0.113.5 . 53 . 10.0.0.0/8 }
\t}
\tset guarded6_tcp {
\t\ttype ipv6_addr . inet_service
\t\telements = { 2001:db8::7 . 80 }
\t}
\tset allowed6_tcp {
\t\ttype ipv6_addr . inet_service . ipv6_addr
\t\tflags interval
\t\telements = { 2001:db8::7 . 80 . 2001:db8:1::/48 }
\t}
\tchain prerouting {
\t\ttype filter hook prerouting priority -450; policy accept;
\t\tmeta l4proto tcp ip daddr . th dport @guarded4_tcp ip daddr . th dport . ip saddr != @allowed4_tcp counter drop
\t\tmeta l4proto udp ip daddr . th dport @guarded4_udp ip daddr . th dport . ip saddr != @allowed4_udp counter drop
\t\tmeta l4proto tcp ip6 daddr . th dport @guarded6_tcp ip6 daddr . th dport . ip6 saddr != @allowed6_tcp counter drop
\t}
\tchain output {
\t\ttype filter hook output priority -450; policy accept;
\t\tmeta l4proto tcp ip daddr . th dport @guarded4_tcp ip daddr . th dport . ip saddr != @allowed4_tcp counter drop
\t\tmeta l4proto udp ip daddr . th dport @guarded4_udp ip daddr . th dport . ip saddr != @allowed4_udp counter drop
\t\tmeta l4proto tcp ip6 daddr . th dport @guarded6_tcp ip6 daddr . th dport . ip6 saddr != @allowed6_tcp counter drop
\t}
}
";
        assert_eq!(script, want);
    }

    #[test]
    fn cluster_ips_are_rejected_behind_ipvs() {
        let cip = |addr: &str, port: u16| VirtualServer {
            kind: VsKind::ClusterIp,
            masquerade: false,
            ..lb(addr, port, &[])
        };
        let st = state(vec![
            cip("198.19.0.10", 80),
            cip("198.19.0.10", 443),
            cip("2001:db8:2::a", 80),
            lb("203.0.113.6", 443, &[]),
        ]);
        let script = Ruleset::of(&st).script();
        let want = "\
table inet ipvsbpf-proxy
delete table inet ipvsbpf-proxy
table inet ipvsbpf-proxy {
\tset cluster_ips4 {
\t\ttype ipv4_addr
\t\telements = { 198.19.0.10 }
\t}
\tset cluster_ips6 {
\t\ttype ipv6_addr
\t\telements = { 2001:db8:2::a }
\t}
\tchain vip-forward {
\t\ttype filter hook forward priority 0; policy accept;
\t\tct state untracked accept
\t\tip daddr @cluster_ips4 counter goto vip-reject
\t\tip6 daddr @cluster_ips6 counter goto vip-reject
\t}
\tchain vip-output {
\t\ttype filter hook output priority 0; policy accept;
\t\tct state untracked accept
\t\tip daddr @cluster_ips4 counter goto vip-reject
\t\tip6 daddr @cluster_ips6 counter goto vip-reject
\t}
\tchain vip-reject {
\t\tmeta l4proto tcp reject with tcp reset
\t\treject
\t}
}
";
        assert_eq!(script, want);
        // behind IPVS on both of its bpf_mode hooks
        const { assert!(VIP_PRIORITY > -99 && VIP_PRIORITY > -399) };
    }

    #[test]
    fn no_ranges_no_table() {
        let st = state(vec![lb("203.0.113.6", 443, &[])]);
        assert_eq!(
            Ruleset::of(&st).script(),
            "table inet ipvsbpf-proxy\ndelete table inet ipvsbpf-proxy\n"
        );
    }

    #[test]
    fn sync_writes_on_change_and_full_syncs_only_repair() {
        let mut fw = LbFirewall::new(Fake::default());
        let st = state(vec![lb("203.0.113.5", 443, &["198.51.100.0/24"])]);
        assert!(fw.sync(&st, false).unwrap(), "first sync writes");
        assert!(!fw.sync(&st, false).unwrap(), "unchanged: nothing to do");
        assert_eq!(fw.runner.lists, 1, "listed once, after the write");
        assert!(
            !fw.sync(&st, true).unwrap(),
            "a full sync leaves an intact table (and its counters) alone"
        );
        assert_eq!(fw.runner.lists, 2, "a full sync looks at the table");
        assert_eq!(fw.runner.scripts.len(), 1);

        // someone ran `nft flush ruleset`, then edited a set
        fw.runner.table = None;
        assert!(
            fw.sync(&st, true).unwrap(),
            "a full sync restores a lost table"
        );
        fw.runner.table = Some("table inet ipvsbpf-proxy { edited }".into());
        assert!(fw.sync(&st, true).unwrap(), "a full sync undoes an edit");
        assert_eq!(fw.runner.scripts.len(), 3);
        assert_eq!(fw.runner.scripts[1], fw.runner.scripts[0]);

        let st2 = state(vec![lb("203.0.113.5", 443, &["198.51.100.0/25"])]);
        assert!(fw.sync(&st2, false).unwrap(), "a changed range writes");
        assert_eq!(fw.runner.scripts.len(), 4);
        assert!(fw.runner.scripts[3].contains("198.51.100.0/25"));
    }

    #[test]
    fn an_empty_rule_set_is_rewritten_on_full_syncs() {
        // nothing to filter: no table to list, so a full sync deletes
        // whatever table of ours someone might have left
        let mut fw = LbFirewall::new(Fake::default());
        assert!(fw.sync(&state(vec![]), false).unwrap());
        assert!(fw.sync(&state(vec![]), true).unwrap());
        assert_eq!(fw.runner.lists, 0);
        assert_eq!(fw.runner.scripts.len(), 2);
    }

    #[test]
    fn a_failed_write_is_retried() {
        let mut fw = LbFirewall::new(Fake {
            status: 1,
            ..Fake::default()
        });
        let st = state(vec![lb("203.0.113.5", 443, &["198.51.100.0/24"])]);
        let err = fw.sync(&st, false).unwrap_err();
        assert!(err.to_string().contains("no such thing"), "{err}");
        fw.runner.status = 0;
        assert!(fw.sync(&st, false).unwrap(), "retried although unchanged");
    }

    #[test]
    fn without_nft_only_an_empty_rule_set_is_fine() {
        let mut fw = LbFirewall::new(Fake {
            fail: Some(io::ErrorKind::NotFound),
            ..Fake::default()
        });
        assert!(fw.sync(&state(vec![]), true).is_ok());
        assert!(fw.cleanup().is_ok());
        let st = state(vec![lb("203.0.113.5", 443, &["198.51.100.0/24"])]);
        let err = fw.sync(&st, false).unwrap_err();
        assert!(err.to_string().contains("nftables"), "{err}");
    }
}
