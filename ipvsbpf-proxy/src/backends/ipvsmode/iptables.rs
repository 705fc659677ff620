//! The iptables rules kube-proxy's IPVS mode installs (`writeIptablesRules`
//! and `createAndLinkKubeChain` in pkg/proxy/ipvs/proxier.go), as
//! `iptables-restore --noflush` text, plus the jump rules from the built-in
//! chains and the text that removes everything again.
//!
//! With `--noflush`, a `:CHAIN - [0:0]` line creates or empties that chain
//! only, so each sync rewrites all KUBE-* chains at once (they hold a
//! constant number of rules: the per-service state lives in the ipsets)
//! and leaves every other chain alone.

use std::fmt::Write as _;

use ipvs_netlink::Family;

use super::ipset::{self, set_name, Members};
use super::IpvsModeConfig;

pub const SERVICES: &str = "KUBE-SERVICES";
pub const POSTROUTING: &str = "KUBE-POSTROUTING";
pub const NODE_PORT: &str = "KUBE-NODE-PORT";
pub const LOAD_BALANCER: &str = "KUBE-LOAD-BALANCER";
pub const MARK_MASQ: &str = "KUBE-MARK-MASQ";
pub const FORWARD: &str = "KUBE-FORWARD";
pub const PROXY_FIREWALL: &str = "KUBE-PROXY-FIREWALL";
pub const SOURCE_RANGES_FIREWALL: &str = "KUBE-SOURCE-RANGES-FIREWALL";
pub const IPVS_FILTER: &str = "KUBE-IPVS-FILTER";
pub const IPVS_OUT_FILTER: &str = "KUBE-IPVS-OUT-FILTER";

/// Our chains in the nat table, in kube-proxy's order.
pub const NAT_CHAINS: [&str; 5] = [SERVICES, POSTROUTING, NODE_PORT, LOAD_BALANCER, MARK_MASQ];
/// Our chains in the filter table.
pub const FILTER_CHAINS: [&str; 6] = [
    FORWARD,
    NODE_PORT,
    PROXY_FIREWALL,
    SOURCE_RANGES_FIREWALL,
    IPVS_FILTER,
    IPVS_OUT_FILTER,
];

/// A rule in a built-in chain that sends packets into one of ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Jump {
    pub table: &'static str,
    pub from: &'static str,
    pub to: &'static str,
    pub comment: &'static str,
}

const fn jump(
    table: &'static str,
    from: &'static str,
    to: &'static str,
    comment: &'static str,
) -> Jump {
    Jump {
        table,
        from,
        to,
        comment,
    }
}

/// kube-proxy's `iptablesJumpChain`.
pub const JUMPS: [Jump; 9] = [
    jump("nat", "OUTPUT", SERVICES, "kubernetes service portals"),
    jump("nat", "PREROUTING", SERVICES, "kubernetes service portals"),
    jump(
        "nat",
        "POSTROUTING",
        POSTROUTING,
        "kubernetes postrouting rules",
    ),
    jump("filter", "FORWARD", FORWARD, "kubernetes forwarding rules"),
    jump(
        "filter",
        "INPUT",
        NODE_PORT,
        "kubernetes health check rules",
    ),
    jump(
        "filter",
        "INPUT",
        PROXY_FIREWALL,
        "kube-proxy firewall rules",
    ),
    jump(
        "filter",
        "FORWARD",
        PROXY_FIREWALL,
        "kube-proxy firewall rules",
    ),
    jump(
        "filter",
        "INPUT",
        IPVS_FILTER,
        "kubernetes ipvs access filter",
    ),
    jump(
        "filter",
        "OUTPUT",
        IPVS_OUT_FILTER,
        "kubernetes ipvs access filter",
    ),
];

impl Jump {
    /// The rule's arguments after `-t <table> -C|-I|-D <from>`.
    pub fn rule_args(&self) -> [&'static str; 6] {
        ["-m", "comment", "--comment", self.comment, "-j", self.to]
    }

    /// `iptables` arguments for `op` (`-C`, `-I`, `-D`) on this rule.
    pub fn args(&self, op: &'static str) -> Vec<&'static str> {
        let mut a = vec!["-w", "-t", self.table, op, self.from];
        a.extend(self.rule_args());
        a
    }
}

/// `iptables` or `ip6tables` and their restore/save companions.
pub fn binaries(family: Family) -> (&'static str, &'static str) {
    match family {
        Family::Inet => ("iptables", "iptables-restore"),
        Family::Inet6 => ("ip6tables", "ip6tables-restore"),
    }
}

/// Pushes one restore line made of `words`.
fn line(out: &mut String, words: &[&str]) {
    out.push_str(&words.join(" "));
    out.push('\n');
}

fn quoted(s: &str) -> String {
    format!("\"{s}\"")
}

/// How ipset match rules connect a set to a chain: kube-proxy's
/// `ipsetWithIptablesChain`. `table` is `true` for nat.
struct SetRule {
    set: &'static str,
    nat: bool,
    from: &'static str,
    to: &'static str,
    match_type: &'static str,
    protocol: Option<&'static str>,
}

const fn set_rule(
    set: &'static str,
    nat: bool,
    from: &'static str,
    to: &'static str,
    match_type: &'static str,
    protocol: Option<&'static str>,
) -> SetRule {
    SetRule {
        set,
        nat,
        from,
        to,
        match_type,
        protocol,
    }
}

/// The order matters where two rules share a chain: the eTP=Local sets
/// RETURN before the general set marks for masquerade.
const SET_RULES: [SetRule; 12] = [
    set_rule(
        ipset::LOOP_BACK,
        true,
        POSTROUTING,
        "MASQUERADE",
        "dst,dst,src",
        None,
    ),
    set_rule(
        ipset::LOAD_BALANCER,
        true,
        SERVICES,
        LOAD_BALANCER,
        "dst,dst",
        None,
    ),
    set_rule(
        ipset::LOAD_BALANCER_LOCAL,
        true,
        LOAD_BALANCER,
        "RETURN",
        "dst,dst",
        None,
    ),
    set_rule(
        ipset::NODE_PORT_LOCAL_TCP,
        true,
        NODE_PORT,
        "RETURN",
        "dst",
        Some("tcp"),
    ),
    set_rule(
        ipset::NODE_PORT_TCP,
        true,
        NODE_PORT,
        MARK_MASQ,
        "dst",
        Some("tcp"),
    ),
    set_rule(
        ipset::NODE_PORT_LOCAL_UDP,
        true,
        NODE_PORT,
        "RETURN",
        "dst",
        Some("udp"),
    ),
    set_rule(
        ipset::NODE_PORT_UDP,
        true,
        NODE_PORT,
        MARK_MASQ,
        "dst",
        Some("udp"),
    ),
    set_rule(
        ipset::NODE_PORT_LOCAL_SCTP,
        true,
        NODE_PORT,
        "RETURN",
        "dst,dst",
        Some("sctp"),
    ),
    set_rule(
        ipset::NODE_PORT_SCTP,
        true,
        NODE_PORT,
        MARK_MASQ,
        "dst,dst",
        Some("sctp"),
    ),
    set_rule(
        ipset::LOAD_BALANCER_FW,
        false,
        PROXY_FIREWALL,
        SOURCE_RANGES_FIREWALL,
        "dst,dst",
        None,
    ),
    set_rule(
        ipset::LOAD_BALANCER_SOURCE_CIDR,
        false,
        SOURCE_RANGES_FIREWALL,
        "RETURN",
        "dst,dst,src",
        None,
    ),
    set_rule(
        ipset::LOAD_BALANCER_SOURCE_IP,
        false,
        SOURCE_RANGES_FIREWALL,
        "RETURN",
        "dst,dst,src",
        None,
    ),
];

fn comment_of(set: &str) -> String {
    quoted(ipset::set_def(set).map_or("", |d| d.comment))
}

/// The masquerade mark as kube-proxy prints it (Go's `%#08x`).
pub fn masquerade_mark(bit: u8) -> String {
    format!("{:#08x}", 1u32 << (bit & 31))
}

/// The full `iptables-restore --noflush` input for `family`, given the
/// members its sets will hold once this sync's `ipset restore` is done
/// (rules for empty sets are left out, as kube-proxy does).
pub fn restore_text(family: Family, members: &Members, cfg: &IpvsModeConfig) -> String {
    let empty = |set: &str| members.get(set).is_none_or(|m| m.is_empty());
    let name = |set: &str| set_name(set, family);
    let mark = masquerade_mark(cfg.masquerade_bit);
    let mut nat = String::from("*nat\n");
    let mut filter = String::from("*filter\n");
    for c in NAT_CHAINS {
        let _ = writeln!(nat, ":{c} - [0:0]");
    }
    for c in FILTER_CHAINS {
        let _ = writeln!(filter, ":{c} - [0:0]");
    }

    // Connections to localhost never reach a service.
    let lo = match family {
        Family::Inet => "127.0.0.0/8",
        Family::Inet6 => "::1/128",
    };
    line(&mut nat, &["-A", SERVICES, "-s", lo, "-j", "RETURN"]);

    for r in &SET_RULES {
        if empty(r.set) {
            continue;
        }
        let mut w = vec!["-A", r.from];
        if let Some(p) = r.protocol {
            w.extend(["-p", p]);
        }
        let (comment, set) = (comment_of(r.set), name(r.set));
        w.extend([
            "-m",
            "comment",
            "--comment",
            &comment,
            "-m",
            "set",
            "--match-set",
            &set,
            r.match_type,
            "-j",
            r.to,
        ]);
        line(if r.nat { &mut nat } else { &mut filter }, &w);
    }

    if !empty(ipset::CLUSTER_IP) {
        let (comment, set) = (comment_of(ipset::CLUSTER_IP), name(ipset::CLUSTER_IP));
        let mut w = vec![
            "-A",
            SERVICES,
            "-m",
            "comment",
            "--comment",
            &comment,
            "-m",
            "set",
            "--match-set",
            &set,
        ];
        let cidr = cfg.cluster_cidr(family);
        if cfg.masquerade_all {
            w.push("dst,dst");
        } else if let Some(cidr) = &cidr {
            // Off-cluster traffic to a ClusterIP (a static route to the
            // service range via any node) may leave this node again:
            // masquerade it so replies come back here.
            w.extend(["dst,dst", "!", "-s", cidr]);
        } else {
            // Without a cluster CIDR, masquerade node-originated traffic
            // whose source is a VIP (the dummy device makes the kernel pick
            // one as source when talking to a VIP).
            w.push("src,dst");
        }
        w.extend(["-j", MARK_MASQ]);
        line(&mut nat, &w);
    }

    // External IPs: accept traffic from off the machine (not bridged from a
    // local container, not locally sourced), and traffic to external IPs
    // that are local addresses anyway.
    for (set, masq) in [
        (ipset::EXTERNAL_IP, true),
        (ipset::EXTERNAL_IP_LOCAL, false),
    ] {
        if empty(set) {
            continue;
        }
        let (comment, set) = (comment_of(set), name(set));
        let base = [
            "-A",
            SERVICES,
            "-m",
            "comment",
            "--comment",
            &comment,
            "-m",
            "set",
            "--match-set",
            &set,
            "dst,dst",
        ];
        if masq {
            line(&mut nat, &[&base[..], &["-j", MARK_MASQ]].concat());
        }
        let off_machine = [
            "-m",
            "physdev",
            "!",
            "--physdev-is-in",
            "-m",
            "addrtype",
            "!",
            "--src-type",
            "LOCAL",
            "-j",
            "ACCEPT",
        ];
        line(&mut nat, &[&base[..], &off_machine[..]].concat());
        line(
            &mut nat,
            &[
                &base[..],
                &["-m", "addrtype", "--dst-type", "LOCAL", "-j", "ACCEPT"],
            ]
            .concat(),
        );
    }

    line(
        &mut nat,
        &[
            "-A",
            SERVICES,
            "-m",
            "addrtype",
            "--dst-type",
            "LOCAL",
            "-j",
            NODE_PORT,
        ],
    );
    line(&mut nat, &["-A", LOAD_BALANCER, "-j", MARK_MASQ]);
    line(&mut filter, &["-A", SOURCE_RANGES_FIREWALL, "-j", "DROP"]);

    // Accept what IPVS will take, in case later rules would drop it; these
    // come last in KUBE-SERVICES.
    for set in [ipset::CLUSTER_IP, ipset::LOAD_BALANCER] {
        if !empty(set) {
            line(
                &mut nat,
                &[
                    "-A",
                    SERVICES,
                    "-m",
                    "set",
                    "--match-set",
                    &name(set),
                    "dst,dst",
                    "-j",
                    "ACCEPT",
                ],
            );
        }
    }

    let mark_mask = format!("{mark}/{mark}");
    let fwd = quoted("kubernetes forwarding rules");
    line(
        &mut filter,
        &[
            "-A",
            FORWARD,
            "-m",
            "comment",
            "--comment",
            &fwd,
            "-m",
            "mark",
            "--mark",
            &mark_mask,
            "-j",
            "ACCEPT",
        ],
    );
    let ct = quoted("kubernetes forwarding conntrack rule");
    line(
        &mut filter,
        &[
            "-A",
            FORWARD,
            "-m",
            "comment",
            "--comment",
            &ct,
            "-m",
            "conntrack",
            "--ctstate",
            "RELATED,ESTABLISHED",
            "-j",
            "ACCEPT",
        ],
    );
    let hc = ipset::HEALTH_CHECK_NODE_PORT;
    line(
        &mut filter,
        &[
            "-A",
            NODE_PORT,
            "-m",
            "comment",
            "--comment",
            &comment_of(hc),
            "-m",
            "set",
            "--match-set",
            &name(hc),
            "dst",
            "-j",
            "ACCEPT",
        ],
    );

    // Keep the VIPs on the dummy device from exposing the node's own ports
    // (kubernetes#72236): only service ports pass, new connections to
    // anything else on a VIP are rejected.
    for (set, m) in [
        (ipset::LOAD_BALANCER, "dst,dst"),
        (ipset::CLUSTER_IP, "dst,dst"),
        (ipset::EXTERNAL_IP, "dst,dst"),
        (ipset::EXTERNAL_IP_LOCAL, "dst,dst"),
        (hc, "dst"),
    ] {
        line(
            &mut filter,
            &[
                "-A",
                IPVS_FILTER,
                "-m",
                "set",
                "--match-set",
                &name(set),
                m,
                "-j",
                "RETURN",
            ],
        );
    }
    line(
        &mut filter,
        &[
            "-A",
            IPVS_FILTER,
            "-m",
            "conntrack",
            "--ctstate",
            "NEW",
            "-m",
            "set",
            "--match-set",
            &name(ipset::IPVS_IPS),
            "dst",
            "-j",
            "REJECT",
        ],
    );

    line(
        &mut nat,
        &[
            "-A",
            POSTROUTING,
            "-m",
            "mark",
            "!",
            "--mark",
            &mark_mask,
            "-j",
            "RETURN",
        ],
    );
    // Clear the mark so a packet that loops through the stack again is not
    // masqueraded twice.
    line(
        &mut nat,
        &["-A", POSTROUTING, "-j", "MARK", "--xor-mark", &mark],
    );
    let snat = quoted("kubernetes service traffic requiring SNAT");
    let mut masq = vec![
        "-A",
        POSTROUTING,
        "-m",
        "comment",
        "--comment",
        &snat,
        "-j",
        "MASQUERADE",
    ];
    if cfg.random_fully {
        masq.push("--random-fully");
    }
    line(&mut nat, &masq);
    line(
        &mut nat,
        &["-A", MARK_MASQ, "-j", "MARK", "--or-mark", &mark],
    );

    nat.push_str("COMMIT\n");
    filter.push_str("COMMIT\n");
    nat + &filter
}

/// `iptables-restore --noflush` input that empties our chains, creating
/// any that are missing: run before the jump rules are deleted, so deleting
/// them never fails on a missing target.
pub fn declare_text() -> String {
    let mut out = String::from("*nat\n");
    for c in NAT_CHAINS {
        let _ = writeln!(out, ":{c} - [0:0]");
    }
    out.push_str("COMMIT\n*filter\n");
    for c in FILTER_CHAINS {
        let _ = writeln!(out, ":{c} - [0:0]");
    }
    out.push_str("COMMIT\n");
    out
}

/// `iptables-restore --noflush` input that empties and deletes all our
/// chains (and creates none that did not exist, as it declares them
/// first): cleanup, once no jump rule refers to them.
pub fn delete_text() -> String {
    let mut out = String::from("*nat\n");
    for c in NAT_CHAINS {
        let _ = writeln!(out, ":{c} - [0:0]");
    }
    for c in NAT_CHAINS {
        let _ = writeln!(out, "-X {c}");
    }
    out.push_str("COMMIT\n*filter\n");
    for c in FILTER_CHAINS {
        let _ = writeln!(out, ":{c} - [0:0]");
    }
    for c in FILTER_CHAINS {
        let _ = writeln!(out, "-X {c}");
    }
    out.push_str("COMMIT\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::ipvsmode::ipset::{desired_members, empty_members};
    use std::net::IpAddr;

    fn cfg() -> IpvsModeConfig {
        IpvsModeConfig::default()
    }

    /// Rules that do not depend on the sets' members or the options.
    const FIXED_FILTER: &str = "\
-A KUBE-SOURCE-RANGES-FIREWALL -j DROP
-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark 0x004000/0x004000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A KUBE-NODE-PORT -m comment --comment \"Kubernetes health check node port\" -m set --match-set KUBE-HEALTH-CHECK-NODE-PORT dst -j ACCEPT
-A KUBE-IPVS-FILTER -m set --match-set KUBE-LOAD-BALANCER dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set KUBE-CLUSTER-IP dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set KUBE-EXTERNAL-IP dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set KUBE-EXTERNAL-IP-LOCAL dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set KUBE-HEALTH-CHECK-NODE-PORT dst -j RETURN
-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set KUBE-IPVS-IPS dst -j REJECT
";

    const CHAINS_NAT: &str = "*nat
:KUBE-SERVICES - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-NODE-PORT - [0:0]
:KUBE-LOAD-BALANCER - [0:0]
:KUBE-MARK-MASQ - [0:0]
";
    const CHAINS_FILTER: &str = "*filter
:KUBE-FORWARD - [0:0]
:KUBE-NODE-PORT - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
:KUBE-SOURCE-RANGES-FIREWALL - [0:0]
:KUBE-IPVS-FILTER - [0:0]
:KUBE-IPVS-OUT-FILTER - [0:0]
";

    #[test]
    fn empty_node_has_only_fixed_rules() {
        let text = restore_text(Family::Inet, &empty_members(), &cfg());
        let expected = format!(
            "{CHAINS_NAT}\
-A KUBE-SERVICES -s 127.0.0.0/8 -j RETURN
-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT
-A KUBE-LOAD-BALANCER -j KUBE-MARK-MASQ
-A KUBE-POSTROUTING -m mark ! --mark 0x004000/0x004000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x004000
-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE
-A KUBE-MARK-MASQ -j MARK --or-mark 0x004000
COMMIT
{CHAINS_FILTER}{FIXED_FILTER}COMMIT
"
        );
        assert_eq!(text, expected);
    }

    #[test]
    fn sample_node_with_cluster_cidr() {
        let st = crate::backends::ipvsmode::ipset::tests::sample();
        let m = desired_members(&st, Family::Inet, &st.addresses());
        let mut c = cfg();
        c.cluster_cidrs = vec![
            ("10.244.0.0".parse().unwrap(), 16),
            ("fd00:1::".parse().unwrap(), 64),
        ];
        let text = restore_text(Family::Inet, &m, &c);
        let expected = format!(
            "{CHAINS_NAT}\
-A KUBE-SERVICES -s 127.0.0.0/8 -j RETURN
-A KUBE-POSTROUTING -m comment --comment \"Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose\" -m set --match-set KUBE-LOOP-BACK dst,dst,src -j MASQUERADE
-A KUBE-SERVICES -m comment --comment \"Kubernetes service lb portal\" -m set --match-set KUBE-LOAD-BALANCER dst,dst -j KUBE-LOAD-BALANCER
-A KUBE-LOAD-BALANCER -m comment --comment \"Kubernetes service load balancer ip + port with externalTrafficPolicy=local\" -m set --match-set KUBE-LOAD-BALANCER-LOCAL dst,dst -j RETURN
-A KUBE-NODE-PORT -p tcp -m comment --comment \"Kubernetes nodeport TCP port with externalTrafficPolicy=local\" -m set --match-set KUBE-NODE-PORT-LOCAL-TCP dst -j RETURN
-A KUBE-NODE-PORT -p tcp -m comment --comment \"Kubernetes nodeport TCP port for masquerade purpose\" -m set --match-set KUBE-NODE-PORT-TCP dst -j KUBE-MARK-MASQ
-A KUBE-NODE-PORT -p udp -m comment --comment \"Kubernetes nodeport UDP port for masquerade purpose\" -m set --match-set KUBE-NODE-PORT-UDP dst -j KUBE-MARK-MASQ
-A KUBE-SERVICES -m comment --comment \"Kubernetes service cluster ip + port for masquerade purpose\" -m set --match-set KUBE-CLUSTER-IP dst,dst ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ
-A KUBE-SERVICES -m comment --comment \"Kubernetes service external ip + port for masquerade and filter purpose\" -m set --match-set KUBE-EXTERNAL-IP dst,dst -j KUBE-MARK-MASQ
-A KUBE-SERVICES -m comment --comment \"Kubernetes service external ip + port for masquerade and filter purpose\" -m set --match-set KUBE-EXTERNAL-IP dst,dst -m physdev ! --physdev-is-in -m addrtype ! --src-type LOCAL -j ACCEPT
-A KUBE-SERVICES -m comment --comment \"Kubernetes service external ip + port for masquerade and filter purpose\" -m set --match-set KUBE-EXTERNAL-IP dst,dst -m addrtype --dst-type LOCAL -j ACCEPT
-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT
-A KUBE-LOAD-BALANCER -j KUBE-MARK-MASQ
-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT
-A KUBE-SERVICES -m set --match-set KUBE-LOAD-BALANCER dst,dst -j ACCEPT
-A KUBE-POSTROUTING -m mark ! --mark 0x004000/0x004000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x004000
-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE
-A KUBE-MARK-MASQ -j MARK --or-mark 0x004000
COMMIT
{CHAINS_FILTER}{FIXED_FILTER}COMMIT
"
        );
        assert_eq!(text, expected);
    }

    /// The ClusterIP masquerade rule under each option, by table.
    #[test]
    fn cluster_ip_masquerade_variants() {
        let mut m = empty_members();
        m.get_mut(ipset::CLUSTER_IP)
            .unwrap()
            .insert("10.96.0.1,tcp:443".into());
        let v4: (IpAddr, u8) = ("10.244.0.0".parse().unwrap(), 16);
        let head = "-A KUBE-SERVICES -m comment --comment \"Kubernetes service cluster ip + port for masquerade purpose\" -m set --match-set KUBE-CLUSTER-IP";
        type Case = (bool, Vec<(IpAddr, u8)>, &'static str);
        let cases: [Case; 4] = [
            (false, vec![], "src,dst -j KUBE-MARK-MASQ"),
            (
                false,
                vec![v4],
                "dst,dst ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ",
            ),
            (true, vec![], "dst,dst -j KUBE-MARK-MASQ"),
            (true, vec![v4], "dst,dst -j KUBE-MARK-MASQ"),
        ];
        for (all, cidrs, tail) in cases {
            let mut c = cfg();
            c.masquerade_all = all;
            c.cluster_cidrs = cidrs.clone();
            let text = restore_text(Family::Inet, &m, &c);
            let rules: Vec<&str> = text.lines().filter(|l| l.starts_with(head)).collect();
            assert_eq!(
                rules,
                vec![format!("{head} {tail}")],
                "masquerade_all={all} cidrs={cidrs:?}"
            );
        }
    }

    #[test]
    fn ipv6_uses_renamed_sets_v6_loopback_and_v6_cidr() {
        let st = crate::backends::ipvsmode::ipset::tests::sample();
        let m = desired_members(&st, Family::Inet6, &st.addresses());
        let mut c = cfg();
        c.cluster_cidrs = vec![
            ("10.244.0.0".parse().unwrap(), 16),
            ("fd00:1::".parse().unwrap(), 64),
        ];
        c.masquerade_bit = 15;
        c.random_fully = true;
        let text = restore_text(Family::Inet6, &m, &c);
        for want in [
            "-A KUBE-SERVICES -s ::1/128 -j RETURN",
            "-A KUBE-SERVICES -m comment --comment \"Kubernetes service cluster ip + port for masquerade purpose\" -m set --match-set KUBE-6-CLUSTER-IP dst,dst ! -s fd00:1::/64 -j KUBE-MARK-MASQ",
            "-A KUBE-POSTROUTING -m comment --comment \"Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose\" -m set --match-set KUBE-6-LOOP-BACK dst,dst,src -j MASQUERADE",
            "-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set KUBE-6-IPVS-IPS dst -j REJECT",
            "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully",
            "-A KUBE-MARK-MASQ -j MARK --or-mark 0x008000",
        ] {
            assert!(text.lines().any(|l| l == want), "missing {want:?} in\n{text}");
        }
        assert!(
            !text.contains("KUBE-NODE-PORT-TCP"),
            "no v6 node ports in the sample"
        );
        assert!(
            !text.contains(" KUBE-CLUSTER-IP "),
            "no IPv4 set names in ip6tables rules"
        );
    }

    #[test]
    fn masquerade_marks() {
        for (bit, want) in [
            (0, "0x000001"),
            (14, "0x004000"),
            (24, "0x1000000"),
            (31, "0x80000000"),
        ] {
            assert_eq!(masquerade_mark(bit), want);
        }
    }

    #[test]
    fn jump_args() {
        assert_eq!(
            JUMPS[1].args("-C"),
            [
                "-w",
                "-t",
                "nat",
                "-C",
                "PREROUTING",
                "-m",
                "comment",
                "--comment",
                "kubernetes service portals",
                "-j",
                "KUBE-SERVICES"
            ]
        );
    }

    #[test]
    fn cleanup_texts() {
        let del = delete_text();
        assert!(del.starts_with(CHAINS_NAT));
        assert!(del.contains("-X KUBE-MARK-MASQ\nCOMMIT\n"));
        assert!(del.ends_with("-X KUBE-IPVS-OUT-FILTER\nCOMMIT\n"));
        assert_eq!(
            del.matches("-X ").count(),
            NAT_CHAINS.len() + FILTER_CHAINS.len()
        );
        assert_eq!(
            declare_text(),
            format!("{CHAINS_NAT}COMMIT\n{CHAINS_FILTER}COMMIT\n")
        );
    }
}
