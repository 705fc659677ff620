//! The `ipvs` mode against the real kernel and the real `ipset`,
//! `iptables-restore` and `ip6tables-restore`, each test in a network
//! namespace of its own (the thread running it unshares one; the commands
//! it spawns inherit it), so the host's rules, sets and devices are never
//! touched.
//!
//! Nothing here needs IPVS. A host that cannot run a test at all (no
//! `CAP_SYS_ADMIN` for unshare, a tool missing) fails it in a strict run
//! (`make test`, CI) and skips it otherwise, with a `SKIP:` line naming
//! what is missing ([`netns::require`]); everything else that goes wrong
//! fails it. Where the kernel has
//! no dummy device driver (`CONFIG_DUMMY` off), `kube-ipvs0` is made a
//! bridge beforehand, so the address handling still runs on a real device;
//! the test says so.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::process::Command;

use ipvs_netlink::{Destination, Protocol, Service, ServiceKey};
use ipvsbpf_proxy::backends::ipvsmode::{
    Error, ExecRunner, IpvsMode, IpvsModeConfig, LinkError, Links, ProcSysctl, Rtnl, DUMMY_DEVICE,
};
use ipvsbpf_proxy::model::desired::{
    HealthCheck, NodeState, ServiceName, ServiceState, SourceRanges, VirtualServer, VsKind,
};
use netns::{have, in_netns_or_skip as in_netns, missing_tools, require, run};

mod netns;

/// Whether the tools the mode runs are here; see [`require`].
fn tools_or_skip() -> bool {
    let missing = missing_tools(&[
        "ip",
        "ipset",
        "iptables",
        "iptables-save",
        "iptables-restore",
        "ip6tables",
        "ip6tables-save",
        "ip6tables-restore",
    ]);
    require(
        missing.is_empty(),
        &format!("tools that do not run here: {missing:?}"),
        "run testbed/setup (Debian packages iptables, ipset, iproute2)",
    )
}

/// Makes sure `kube-ipvs0` can exist: if the kernel has no dummy driver,
/// pre-creates it as a bridge and says so.
fn prepare_device(links: &mut Rtnl) {
    match links.ensure_dummy(DUMMY_DEVICE) {
        Ok(()) => {}
        Err(LinkError::Kernel { errno }) if errno == libc::EOPNOTSUPP => {
            eprintln!(
                "NOTE: this kernel has no dummy device driver (CONFIG_DUMMY); \
                 {DUMMY_DEVICE} is a bridge in this test"
            );
            run("ip", &["link", "add", DUMMY_DEVICE, "type", "bridge"]);
        }
        Err(e) => panic!("ensure_dummy: {e}"),
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// `ip -o addr show dev kube-ipvs0`, as addresses: an independent reading.
fn ip_addrs() -> BTreeSet<IpAddr> {
    run("ip", &["-o", "addr", "show", "dev", DUMMY_DEVICE])
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            w.find(|x| *x == "inet" || *x == "inet6")?;
            w.next()?.split('/').next()?.parse().ok()
        })
        .collect()
}

#[test]
fn rtnl_device_and_addresses() {
    if !require(
        have("ip"),
        "ip is not installed (the test checks against it)",
        "run testbed/setup (Debian package iproute2)",
    ) {
        return;
    }
    let Some(()) = in_netns(|| {
        let mut links = Rtnl::connect().expect("rtnetlink socket");
        prepare_device(&mut links);
        links
            .ensure_dummy(DUMMY_DEVICE)
            .expect("existing device is fine");

        let addrs = [ip("10.96.0.10"), ip("203.0.113.5"), ip("fd00::10")];
        for a in addrs {
            links.add_address(DUMMY_DEVICE, a).expect("add");
            links
                .add_address(DUMMY_DEVICE, a)
                .expect("add again is a no-op");
        }
        let want: BTreeSet<IpAddr> = addrs.into_iter().collect();
        let got = links.addresses(DUMMY_DEVICE).expect("list");
        // Link-local addresses the kernel adds itself are not ours to check.
        let got: BTreeSet<IpAddr> = got.into_iter().filter(|a| want.contains(a)).collect();
        assert_eq!(got, want);
        let by_ip: BTreeSet<IpAddr> = ip_addrs()
            .into_iter()
            .filter(|a| want.contains(a))
            .collect();
        assert_eq!(by_ip, want, "`ip addr` agrees");

        let others = links
            .addresses_except(DUMMY_DEVICE)
            .expect("node addresses");
        assert!(others.contains(&ip("127.0.0.1")), "{others:?}");
        assert!(others.is_disjoint(&want), "{others:?}");

        links
            .del_address(DUMMY_DEVICE, ip("203.0.113.5"))
            .expect("del");
        links
            .del_address(DUMMY_DEVICE, ip("203.0.113.5"))
            .expect("del again is a no-op");
        assert!(!ip_addrs().contains(&ip("203.0.113.5")));
        assert!(ip_addrs().contains(&ip("10.96.0.10")));

        assert!(links.delete_link(DUMMY_DEVICE).expect("delete"));
        assert!(!links.delete_link(DUMMY_DEVICE).expect("delete again"));
        assert!(matches!(
            links.addresses(DUMMY_DEVICE),
            Err(LinkError::NoDevice)
        ));
    }) else {
        return;
    };
}

fn vs(kind: VsKind, key: ServiceKey, dests: &[(&str, u16)], local_only: bool) -> VirtualServer {
    VirtualServer {
        service: Service::new(key, "rr"),
        destinations: dests
            .iter()
            .map(|(a, p)| Destination::new(ip(a), *p))
            .collect(),
        kind,
        masquerade: !local_only,
        local_only,
        source_ranges: None,
    }
}

fn node_state(with_lb: bool) -> NodeState {
    let mut st = NodeState::default();
    let mut web = vec![
        vs(
            VsKind::ClusterIp,
            ServiceKey::tcp(ip("10.96.0.10"), 80),
            &[("10.244.1.5", 8080)],
            false,
        ),
        vs(
            VsKind::NodePort,
            ServiceKey::tcp(ip("192.0.2.10"), 30080),
            &[("10.244.1.5", 8080)],
            false,
        ),
        vs(
            VsKind::NodePort,
            ServiceKey::udp(ip("192.0.2.10"), 30053),
            &[("10.244.1.5", 53)],
            false,
        ),
        vs(
            VsKind::NodePort,
            ServiceKey::Tuple {
                protocol: Protocol::Sctp,
                addr: ip("192.0.2.10"),
                port: 30099,
            },
            &[("10.244.1.5", 99)],
            false,
        ),
        vs(
            VsKind::ExternalIp,
            ServiceKey::tcp(ip("198.51.100.7"), 80),
            &[("10.244.1.5", 8080)],
            false,
        ),
        vs(
            VsKind::ClusterIp,
            ServiceKey::tcp(ip("fd00::10"), 80),
            &[("fd00:1::5", 8080)],
            false,
        ),
    ];
    if with_lb {
        let mut lb = vs(
            VsKind::LoadBalancer,
            ServiceKey::tcp(ip("203.0.113.5"), 443),
            &[("10.244.1.5", 8443)],
            true,
        );
        lb.source_ranges = Some(SourceRanges {
            ranges: vec![
                "198.51.100.0/24".parse().unwrap(),
                "192.0.2.10/32".parse().unwrap(),
            ],
            allow_from_node: true,
        });
        web.push(lb);
    }
    st.services.insert(
        ServiceName::new("default", "web"),
        ServiceState {
            virtual_servers: web,
            health_check: with_lb.then_some(HealthCheck {
                node_port: 32000,
                local_endpoints: 1,
            }),
        }
        .into(),
    );
    st
}

/// Members of one set, via `ipset list`.
fn members(set: &str) -> BTreeSet<String> {
    let out = run("ipset", &["list", set]);
    out.lines()
        .skip_while(|l| !l.starts_with("Members:"))
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_string())
        .collect()
}

fn set_of(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn kube_sets() -> Vec<String> {
    run("ipset", &["list", "-n"])
        .lines()
        .filter(|l| l.starts_with("KUBE-"))
        .map(str::to_string)
        .collect()
}

/// The mode as the daemon makes it, dual-stack, on `links`.
fn new_mode(links: Rtnl) -> IpvsMode<ExecRunner, ProcSysctl, Rtnl> {
    let cfg = IpvsModeConfig {
        cluster_cidrs: vec![(ip("10.244.0.0"), 16), (ip("fd00:1::"), 64)],
        ipv6: true,
        ..IpvsModeConfig::default()
    };
    IpvsMode::new(ExecRunner, ProcSysctl::default(), links, cfg).expect("config")
}

#[test]
fn ipvs_mode_sync_and_cleanup_on_real_tools() {
    if !tools_or_skip() {
        return;
    }
    let Some(()) = in_netns(|| {
        // ipset needs the kernel's ip_set; say so plainly if it is absent.
        let probe = Command::new("ipset")
            .args(["list", "-n"])
            .output()
            .expect("ipset runs");
        if !probe.status.success() {
            panic!(
                "ipset cannot talk to the kernel (ip_set missing? modprobe ip_set, \
                 or a kernel with CONFIG_IP_SET): {}",
                String::from_utf8_lossy(&probe.stderr)
            );
        }
        // Someone else's chain, rule and set: cleanup must leave them.
        run("iptables", &["-t", "nat", "-N", "OTHER-CHAIN"]);
        run(
            "iptables",
            &["-t", "nat", "-A", "PREROUTING", "-j", "OTHER-CHAIN"],
        );
        run("ipset", &["create", "other-set", "hash:ip"]);

        let mut links = Rtnl::connect().expect("rtnetlink socket");
        prepare_device(&mut links);
        let mut mode = new_mode(links);

        // This host has no IPVS: the sysctl step must say which module.
        if !std::path::Path::new("/proc/sys/net/ipv4/vs").exists() {
            let err = mode.setup().expect_err("no IPVS sysctls here");
            assert!(matches!(err, Error::IpvsMissing { .. }), "{err}");
            assert!(err.to_string().contains("ip_vs"), "{err}");
            eprintln!("NOTE: no IPVS in this kernel; checked the error: {err}");
        }
        mode.setup_device_and_chains().expect("device and chains");
        mode.setup_device_and_chains().expect("setup twice");

        let first = mode.sync(&node_state(true)).expect("first sync");
        assert_eq!(first.addresses_added, 4, "{first:?}");

        assert_eq!(members("KUBE-CLUSTER-IP"), set_of(&["10.96.0.10,tcp:80"]));
        assert_eq!(members("KUBE-6-CLUSTER-IP"), set_of(&["fd00::10,tcp:80"]));
        assert_eq!(members("KUBE-NODE-PORT-TCP"), set_of(&["30080"]));
        assert_eq!(members("KUBE-NODE-PORT-UDP"), set_of(&["30053"]));
        assert_eq!(
            members("KUBE-NODE-PORT-SCTP-HASH"),
            set_of(&["192.0.2.10,sctp:30099"])
        );
        assert_eq!(
            members("KUBE-LOAD-BALANCER-LOCAL"),
            set_of(&["203.0.113.5,tcp:443"])
        );
        assert_eq!(
            members("KUBE-EXTERNAL-IP"),
            set_of(&["198.51.100.7,tcp:80"])
        );
        assert_eq!(members("KUBE-HEALTH-CHECK-NODE-PORT"), set_of(&["32000"]));
        assert_eq!(
            members("KUBE-LOAD-BALANCER-FW"),
            set_of(&["203.0.113.5,tcp:443"])
        );
        assert_eq!(
            members("KUBE-LOAD-BALANCER-SOURCE-CIDR"),
            set_of(&[
                "203.0.113.5,tcp:443,198.51.100.0/24",
                "203.0.113.5,tcp:443,192.0.2.10"
            ])
        );
        assert_eq!(
            members("KUBE-LOAD-BALANCER-SOURCE-IP"),
            set_of(&["203.0.113.5,tcp:443,203.0.113.5"])
        );
        assert_eq!(
            members("KUBE-IPVS-IPS"),
            set_of(&["10.96.0.10", "198.51.100.7", "203.0.113.5"])
        );
        assert_eq!(
            members("KUBE-LOOP-BACK"),
            set_of(&[
                "10.244.1.5,tcp:8080,10.244.1.5",
                "10.244.1.5,udp:53,10.244.1.5",
                "10.244.1.5,sctp:99,10.244.1.5",
                "10.244.1.5,tcp:8443,10.244.1.5",
            ])
        );
        let on_dev: BTreeSet<IpAddr> = ip_addrs()
            .into_iter()
            .filter(|a| !matches!(a, IpAddr::V6(v) if v.segments()[0] == 0xfe80))
            .collect();
        assert_eq!(
            on_dev,
            ["10.96.0.10", "198.51.100.7", "203.0.113.5", "fd00::10"]
                .into_iter()
                .map(ip)
                .collect()
        );

        let nat = run("iptables-save", &["-t", "nat"]);
        for want in [
            "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
            "-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
            "-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING",
            "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
            "-A KUBE-SERVICES ! -s 10.244.0.0/16 -m comment --comment \"Kubernetes service cluster ip + port for masquerade purpose\" -m set --match-set KUBE-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ",
            "-A KUBE-LOAD-BALANCER -m comment --comment \"Kubernetes service load balancer ip + port with externalTrafficPolicy=local\" -m set --match-set KUBE-LOAD-BALANCER-LOCAL dst,dst -j RETURN",
            "-A KUBE-NODE-PORT -p sctp -m comment --comment \"Kubernetes nodeport SCTP port for masquerade purpose with type \\'hash ip:port\\'\" -m set --match-set KUBE-NODE-PORT-SCTP-HASH dst,dst -j KUBE-MARK-MASQ",
        ] {
            // (iptables-save prints the comment's single quotes as \'.)
            assert!(nat.lines().any(|l| l == want), "missing {want:?} in\n{nat}");
        }
        assert_eq!(
            nat.matches("-j KUBE-SERVICES").count(),
            2,
            "jumps inserted once, not per setup/sync:\n{nat}"
        );
        let filter = run("iptables-save", &["-t", "filter"]);
        for want in [
            "-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set KUBE-IPVS-IPS dst -j REJECT",
            "--match-set KUBE-LOAD-BALANCER-FW dst,dst -j KUBE-SOURCE-RANGES-FIREWALL",
            "--match-set KUBE-LOAD-BALANCER-SOURCE-CIDR dst,dst,src -j RETURN",
            "--match-set KUBE-LOAD-BALANCER-SOURCE-IP dst,dst,src -j RETURN",
            "-A KUBE-SOURCE-RANGES-FIREWALL -j DROP",
        ] {
            assert!(filter.contains(want), "missing {want:?} in\n{filter}");
        }

        // A restarted proxy reads the sets back: what ipset prints must
        // compare equal to what the model asks for, or every sync would
        // delete and re-add members.
        let mut again = new_mode(Rtnl::connect().expect("rtnetlink socket"));
        let resync = again.sync(&node_state(true)).expect("sync after restart");
        assert!(
            resync
                .members
                .values()
                .all(|d| d.added == 0 && d.removed == 0),
            "{resync:?}"
        );
        assert_eq!(resync.addresses_added, 0, "{resync:?}");
        let nat6 = run("ip6tables-save", &["-t", "nat"]);
        assert!(
            nat6.contains("--match-set KUBE-6-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ"),
            "{nat6}"
        );
        assert!(nat6.contains("! -s fd00:1::/64"), "{nat6}");

        // Second sync: the LB and its health check are gone.
        let second = mode.sync(&node_state(false)).expect("second sync");
        assert_eq!(
            (second.addresses_added, second.addresses_removed),
            (0, 1),
            "{second:?}"
        );
        assert!(members("KUBE-LOAD-BALANCER").is_empty());
        assert!(members("KUBE-HEALTH-CHECK-NODE-PORT").is_empty());
        assert_eq!(members("KUBE-CLUSTER-IP"), set_of(&["10.96.0.10,tcp:80"]));
        assert!(!ip_addrs().contains(&ip("203.0.113.5")));
        let nat = run("iptables-save", &["-t", "nat"]);
        assert!(
            !nat.contains("KUBE-LOAD-BALANCER-LOCAL"),
            "rules for empty sets go:\n{nat}"
        );

        mode.cleanup().expect("cleanup");
        for (tool, table) in [
            ("iptables-save", "nat"),
            ("iptables-save", "filter"),
            ("ip6tables-save", "nat"),
            ("ip6tables-save", "filter"),
        ] {
            let out = run(tool, &["-t", table]);
            assert!(
                !out.contains("KUBE-"),
                "{tool} -t {table} after cleanup:\n{out}"
            );
        }
        assert_eq!(kube_sets(), Vec::<String>::new());
        assert!(run("ipset", &["list", "-n"])
            .lines()
            .any(|l| l == "other-set"));
        let nat = run("iptables-save", &["-t", "nat"]);
        assert!(nat.contains(":OTHER-CHAIN"), "{nat}");
        assert!(nat.contains("-A PREROUTING -j OTHER-CHAIN"), "{nat}");
        let links = run("ip", &["-o", "link"]);
        assert!(!links.contains(DUMMY_DEVICE), "{links}");

        mode.cleanup().expect("cleanup of a clean node");
    }) else {
        return;
    };
}
