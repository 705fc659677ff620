//! [`IpvsMode`] against fakes of the kernel: what it runs, feeds, writes
//! and asks of the device, and what it caches between syncs.

use super::*;
use crate::model::desired::{ServiceName, ServiceState, VirtualServer, VsKind};
use ipvs_netlink::{Destination, Service, ServiceKey};

/// A tiny model of iptables and ipset: chains and jump rules that exist,
/// the `ipset save` text, and statuses to fail with.
#[derive(Default)]
struct FakeRunner {
    calls: Vec<(String, Vec<String>, Option<String>)>,
    chains: BTreeSet<String>,
    jumps: BTreeMap<String, usize>,
    save: String,
    listed: String,
    fail_ipset_restore: bool,
}

impl FakeRunner {
    fn commands(&self) -> Vec<String> {
        self.calls
            .iter()
            .map(|(p, a, _)| format!("{p} {}", a.join(" ")))
            .collect()
    }

    fn stdin_of(&self, prefix: &str) -> Vec<String> {
        self.calls
            .iter()
            .filter(|(p, a, _)| format!("{p} {}", a.join(" ")).starts_with(prefix))
            .filter_map(|(_, _, s)| s.clone())
            .collect()
    }
}

impl Runner for FakeRunner {
    fn run(&mut self, program: &str, args: &[&str], stdin: Option<&str>) -> io::Result<Output> {
        self.calls.push((
            program.to_string(),
            args.iter().map(|s| s.to_string()).collect(),
            stdin.map(str::to_string),
        ));
        let ok = Output::default();
        let status = |s: i32| Output {
            status: s,
            ..Output::default()
        };
        Ok(match (program, args) {
            ("ipset", ["save"]) => Output {
                stdout: self.save.clone(),
                ..ok
            },
            ("ipset", ["list", "-n"]) => Output {
                stdout: self.listed.clone(),
                ..ok
            },
            ("ipset", ["restore", ..]) if self.fail_ipset_restore => Output {
                status: 1,
                stderr: "ipset v7.17: Error in line 3: Kernel error".into(),
                ..ok
            },
            (p, ["-w", "-t", table, op, chain, rest @ ..]) if p.ends_with("tables") => {
                let key = format!("{p} {table} {chain} {}", rest.join(" "));
                let chain_key = format!("{p} {table} {chain}");
                match *op {
                    "-S" => status(if self.chains.contains(&chain_key) {
                        0
                    } else {
                        1
                    }),
                    "-N" => {
                        self.chains.insert(chain_key);
                        ok
                    }
                    "-C" => status(if self.jumps.get(&key).copied().unwrap_or(0) > 0 {
                        0
                    } else {
                        1
                    }),
                    "-I" => {
                        *self.jumps.entry(key).or_default() += 1;
                        ok
                    }
                    "-D" => {
                        let n = self.jumps.entry(key).or_default();
                        *n = n.saturating_sub(1);
                        ok
                    }
                    _ => status(2),
                }
            }
            _ => ok,
        })
    }
}

#[derive(Default)]
struct FakeSysctl {
    values: BTreeMap<String, String>,
    writes: Vec<(String, String)>,
}

impl Sysctl for FakeSysctl {
    fn get(&self, path: &str) -> io::Result<Option<String>> {
        Ok(self.values.get(path).cloned())
    }
    fn set(&mut self, path: &str, value: &str) -> io::Result<()> {
        self.values.insert(path.into(), value.into());
        self.writes.push((path.into(), value.into()));
        Ok(())
    }
}

#[derive(Default)]
struct FakeLinks {
    devices: BTreeMap<String, BTreeSet<IpAddr>>,
    node: BTreeSet<IpAddr>,
    log: Vec<String>,
}

impl Links for FakeLinks {
    fn ensure_dummy(&mut self, name: &str) -> Result<(), LinkError> {
        if !self.devices.contains_key(name) {
            self.log.push(format!("create {name}"));
            self.devices.insert(name.into(), BTreeSet::new());
        }
        Ok(())
    }
    fn addresses(&mut self, name: &str) -> Result<BTreeSet<IpAddr>, LinkError> {
        self.log.push("list".into());
        self.devices.get(name).cloned().ok_or(LinkError::NoDevice)
    }
    fn addresses_except(&mut self, _name: &str) -> Result<BTreeSet<IpAddr>, LinkError> {
        Ok(self.node.clone())
    }
    fn add_address(&mut self, name: &str, addr: IpAddr) -> Result<(), LinkError> {
        self.log.push(format!("add {addr}"));
        self.devices
            .get_mut(name)
            .ok_or(LinkError::NoDevice)?
            .insert(addr);
        Ok(())
    }
    fn del_address(&mut self, name: &str, addr: IpAddr) -> Result<(), LinkError> {
        self.log.push(format!("del {addr}"));
        self.devices
            .get_mut(name)
            .ok_or(LinkError::NoDevice)?
            .remove(&addr);
        Ok(())
    }
    fn delete_link(&mut self, name: &str) -> Result<bool, LinkError> {
        self.log.push(format!("delete {name}"));
        Ok(self.devices.remove(name).is_some())
    }
}

type Mode = IpvsMode<FakeRunner, FakeSysctl, FakeLinks>;

fn mode(cfg: IpvsModeConfig) -> Mode {
    IpvsMode::new(
        FakeRunner::default(),
        FakeSysctl::default(),
        FakeLinks::default(),
        cfg,
    )
    .unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn cluster_ip(addr: &str, port: u16, kind: VsKind) -> VirtualServer {
    VirtualServer {
        service: Service::new(ServiceKey::tcp(ip(addr), port), "rr"),
        destinations: vec![Destination::new(ip("10.244.1.5"), 8080)],
        kind,
        masquerade: false,
        local_only: false,
        source_ranges: None,
    }
}

fn state(vss: Vec<VirtualServer>) -> NodeState {
    let mut st = NodeState::default();
    st.services.insert(
        ServiceName::new("default", "web"),
        ServiceState {
            virtual_servers: vss,
            health_check: None,
        }
        .into(),
    );
    st
}

#[test]
fn sysctl_plans_by_kernel_and_options() {
    let paths = |cfg: &IpvsModeConfig, k| -> Vec<String> {
        sysctl_plan(cfg, k)
            .into_iter()
            .map(|(p, v, _)| format!("{p}={v}"))
            .collect()
    };
    let base = [
        "net/ipv4/vs/conntrack=1",
        "net/ipv4/vs/expire_nodest_conn=1",
        "net/ipv4/vs/expire_quiescent_template=1",
        "net/ipv4/ip_forward=1",
        "net/bridge/bridge-nf-call-iptables=1",
    ];
    let cfg = IpvsModeConfig::default();
    for k in [None, Some((4, 0)), Some((5, 9)), Some((6, 18))] {
        assert_eq!(paths(&cfg, k), base, "kernel {k:?}");
    }
    for k in [Some((4, 1)), Some((4, 19)), Some((5, 8))] {
        let p = paths(&cfg, k);
        assert!(
            p.contains(&"net/ipv4/vs/conn_reuse_mode=0".to_string()),
            "kernel {k:?}"
        );
        assert_eq!(p.len(), base.len() + 1);
    }
    let full = IpvsModeConfig {
        ipv6: true,
        strict_arp: true,
        ..IpvsModeConfig::default()
    };
    let p = paths(&full, Some((6, 18)));
    for want in [
        "net/ipv6/conf/all/forwarding=1",
        "net/ipv4/conf/all/arp_ignore=1",
        "net/ipv4/conf/all/arp_announce=2",
    ] {
        assert!(p.contains(&want.to_string()), "{want} in {p:?}");
    }
}

#[test]
fn kernel_versions() {
    for (s, want) in [
        ("6.18.44-fc-v595", Some((6, 18))),
        ("5.4.0-150-generic\n", Some((5, 4))),
        ("4.19", Some((4, 19))),
        ("garbage", None),
        ("", None),
    ] {
        assert_eq!(parse_kernel_version(s), want, "{s:?}");
    }
}

#[test]
fn sysctls_written_only_when_different_and_bridge_only_if_present() {
    let mut m = mode(IpvsModeConfig::default());
    for (k, v) in [
        ("kernel/osrelease", "6.18.0"),
        ("net/ipv4/vs/conntrack", "0"),
        ("net/ipv4/vs/expire_nodest_conn", "1"),
        ("net/ipv4/vs/expire_quiescent_template", "0"),
        ("net/ipv4/ip_forward", "0"),
    ] {
        m.sysctl.values.insert(k.into(), v.into());
    }
    assert_eq!(m.setup_sysctls().unwrap(), 3);
    assert_eq!(
        m.sysctl.writes,
        [
            ("net/ipv4/vs/conntrack".to_string(), "1".to_string()),
            ("net/ipv4/vs/expire_quiescent_template".into(), "1".into()),
            ("net/ipv4/ip_forward".into(), "1".into()),
        ]
    );
    assert!(!m
        .sysctl
        .values
        .contains_key("net/bridge/bridge-nf-call-iptables"));
    assert_eq!(m.setup_sysctls().unwrap(), 0, "second run writes nothing");
}

#[test]
fn missing_ipvs_sysctls_name_the_module() {
    let mut m = mode(IpvsModeConfig::default());
    m.sysctl
        .values
        .insert("net/ipv4/ip_forward".into(), "1".into());
    let err = m.setup_sysctls().unwrap_err();
    assert!(matches!(err, Error::IpvsMissing { ref path } if path == "net/ipv4/vs/conntrack"));
    assert!(err.to_string().contains("ip_vs"), "{err}");
    assert!(m.sysctl.writes.is_empty());
}

#[test]
fn invalid_configs_are_refused() {
    let cases = [
        IpvsModeConfig {
            masquerade_bit: 32,
            ..IpvsModeConfig::default()
        },
        IpvsModeConfig {
            ipv4: false,
            ipv6: false,
            ..IpvsModeConfig::default()
        },
        IpvsModeConfig {
            cluster_cidrs: vec![(ip("10.0.0.0"), 33)],
            ..IpvsModeConfig::default()
        },
    ];
    for cfg in cases {
        let r = IpvsMode::new(
            FakeRunner::default(),
            FakeSysctl::default(),
            FakeLinks::default(),
            cfg.clone(),
        );
        assert!(matches!(r, Err(Error::Config(_))), "{cfg:?}");
    }
}

#[test]
fn setup_creates_device_chains_and_jumps_once() {
    let mut m = mode(IpvsModeConfig::default());
    m.setup_device_and_chains().unwrap();
    assert_eq!(m.links.log, ["create kube-ipvs0"]);
    let cmds = m.runner.commands();
    let created: Vec<_> = cmds.iter().filter(|c| c.contains(" -N ")).collect();
    assert_eq!(
        created.len(),
        iptables::NAT_CHAINS.len() + iptables::FILTER_CHAINS.len()
    );
    assert!(created.contains(&&"iptables -w -t nat -N KUBE-SERVICES".to_string()));
    let inserted = cmds.iter().filter(|c| c.contains(" -I ")).count();
    assert_eq!(inserted, iptables::JUMPS.len());
    assert!(cmds.contains(
        &"iptables -w -t nat -I PREROUTING -m comment --comment kubernetes service portals -j KUBE-SERVICES".to_string()
    ));
    assert!(
        cmds.iter().all(|c| c.starts_with("iptables ")),
        "IPv4 only: {cmds:?}"
    );

    m.runner.calls.clear();
    m.setup_device_and_chains().unwrap();
    let cmds = m.runner.commands();
    assert!(
        cmds.iter()
            .all(|c| !c.contains(" -N ") && !c.contains(" -I ")),
        "{cmds:?}"
    );
    assert_eq!(
        m.runner.jumps.values().sum::<usize>(),
        iptables::JUMPS.len()
    );
}

#[test]
fn sync_applies_diffs_and_caches() {
    let mut m = mode(IpvsModeConfig::default());
    m.links.ensure_dummy(DUMMY_DEVICE).unwrap();
    // A stale address and a stale member from a previous run.
    m.links
        .devices
        .get_mut(DUMMY_DEVICE)
        .unwrap()
        .insert(ip("10.96.9.9"));
    m.runner.save = "add KUBE-CLUSTER-IP 10.96.9.9,tcp:80\n".into();
    let st = state(vec![
        cluster_ip("10.96.0.10", 80, VsKind::ClusterIp),
        cluster_ip("10.96.0.11", 80, VsKind::ClusterIp),
    ]);

    let r = m.sync(&st).unwrap();
    assert_eq!((r.addresses_added, r.addresses_removed), (2, 1));
    assert_eq!(
        r.members[&Family::Inet],
        MemberDiff {
            added: 5,
            removed: 1
        }
    );
    assert_eq!(
        m.links.devices[DUMMY_DEVICE],
        [ip("10.96.0.10"), ip("10.96.0.11")].into_iter().collect()
    );
    // Addresses are added before the rules and removed after them.
    let log = m.links.log.join(",");
    assert_eq!(
        log,
        "create kube-ipvs0,list,add 10.96.0.10,add 10.96.0.11,del 10.96.9.9"
    );
    let restore = m.runner.stdin_of("ipset restore");
    assert_eq!(restore.len(), 1);
    let changes: Vec<&str> = restore[0]
        .lines()
        .filter(|l| !l.starts_with("create "))
        .collect();
    assert_eq!(
        changes,
        [
            "add KUBE-LOOP-BACK 10.244.1.5,tcp:8080,10.244.1.5",
            "del KUBE-CLUSTER-IP 10.96.9.9,tcp:80",
            "add KUBE-CLUSTER-IP 10.96.0.10,tcp:80",
            "add KUBE-CLUSTER-IP 10.96.0.11,tcp:80",
            "add KUBE-IPVS-IPS 10.96.0.10",
            "add KUBE-IPVS-IPS 10.96.0.11",
        ]
    );
    let rules = m.runner.stdin_of("iptables-restore -w --noflush");
    let members = ipset::desired_members(&st, Family::Inet, &st.addresses());
    assert_eq!(
        rules,
        [iptables::restore_text(Family::Inet, &members, m.config())]
    );

    // Second sync: one service gone. No re-read of the kernel, only the
    // difference is sent.
    m.runner.calls.clear();
    m.links.log.clear();
    let st2 = state(vec![cluster_ip("10.96.0.10", 80, VsKind::ClusterIp)]);
    let r = m.sync(&st2).unwrap();
    assert_eq!((r.addresses_added, r.addresses_removed), (0, 1));
    assert_eq!(
        r.members[&Family::Inet],
        MemberDiff {
            added: 0,
            removed: 2
        }
    );
    assert_eq!(m.links.log, ["del 10.96.0.11"]);
    assert!(!m.runner.commands().contains(&"ipset save".to_string()));
    let restore = m.runner.stdin_of("ipset restore");
    let changes: Vec<&str> = restore[0]
        .lines()
        .filter(|l| !l.starts_with("create "))
        .collect();
    assert_eq!(
        changes,
        [
            "del KUBE-CLUSTER-IP 10.96.0.11,tcp:80",
            "del KUBE-IPVS-IPS 10.96.0.11"
        ]
    );

    // Unchanged state: nothing added or removed anywhere.
    m.links.log.clear();
    let r = m.sync(&st2).unwrap();
    assert_eq!(r.members[&Family::Inet], MemberDiff::default());
    assert!(m.links.log.is_empty(), "{:?}", m.links.log);
}

#[test]
fn node_addresses_stay_off_the_dummy_device() {
    let mut m = mode(IpvsModeConfig::default());
    m.links.ensure_dummy(DUMMY_DEVICE).unwrap();
    m.links.node.insert(ip("192.168.1.10"));
    let st = state(vec![
        cluster_ip("10.96.0.10", 80, VsKind::ClusterIp),
        cluster_ip("192.168.1.10", 80, VsKind::ExternalIp),
    ]);
    m.sync(&st).unwrap();
    assert_eq!(
        m.links.devices[DUMMY_DEVICE],
        [ip("10.96.0.10")].into_iter().collect()
    );
    let restore = m.runner.stdin_of("ipset restore").join("");
    assert!(restore.contains("add KUBE-IPVS-IPS 10.96.0.10\n"));
    assert!(
        !restore.contains("add KUBE-IPVS-IPS 192.168.1.10"),
        "{restore}"
    );
    assert!(restore.contains("add KUBE-EXTERNAL-IP 192.168.1.10,tcp:80\n"));
}

#[test]
fn dual_stack_syncs_each_family_with_its_tools() {
    let mut m = mode(IpvsModeConfig {
        ipv6: true,
        ..IpvsModeConfig::default()
    });
    m.links.ensure_dummy(DUMMY_DEVICE).unwrap();
    let st = state(vec![
        cluster_ip("10.96.0.10", 80, VsKind::ClusterIp),
        cluster_ip("fd00::10", 80, VsKind::ClusterIp),
    ]);
    m.sync(&st).unwrap();
    let restores = m.runner.stdin_of("ipset restore");
    assert_eq!(restores.len(), 2);
    assert!(restores[0].contains("add KUBE-CLUSTER-IP 10.96.0.10,tcp:80\n"));
    assert!(restores[1].contains("add KUBE-6-CLUSTER-IP fd00::10,tcp:80\n"));
    assert!(!restores[1].contains("10.96.0.10"));
    assert_eq!(m.runner.stdin_of("ip6tables-restore").len(), 1);
    assert_eq!(m.links.devices[DUMMY_DEVICE].len(), 2);
}

#[test]
fn failed_ipset_restore_drops_the_cache() {
    let mut m = mode(IpvsModeConfig::default());
    m.links.ensure_dummy(DUMMY_DEVICE).unwrap();
    let st = state(vec![cluster_ip("10.96.0.10", 80, VsKind::ClusterIp)]);
    m.runner.fail_ipset_restore = true;
    let err = m.sync(&st).unwrap_err();
    assert!(matches!(err, Error::Command { status: 1, .. }), "{err}");
    assert!(err.to_string().contains("ipset restore -exist"), "{err}");
    assert!(
        m.runner.stdin_of("iptables-restore").is_empty(),
        "no rules after a failed ipset step"
    );

    m.runner.fail_ipset_restore = false;
    m.runner.calls.clear();
    m.sync(&st).unwrap();
    assert_eq!(
        m.runner
            .commands()
            .iter()
            .filter(|c| *c == "ipset save")
            .count(),
        1,
        "members re-read after the failure"
    );
}

#[test]
fn cleanup_removes_only_ours_and_is_idempotent() {
    let mut m = mode(IpvsModeConfig::default());
    m.setup_device_and_chains().unwrap();
    // A duplicate jump, as a racing second proxy could leave.
    let dup = format!(
        "iptables nat OUTPUT {}",
        iptables::JUMPS[0].rule_args().join(" ")
    );
    *m.runner.jumps.get_mut(&dup).unwrap() += 1;
    m.runner.listed = "KUBE-CLUSTER-IP\nKUBE-6-LOOP-BACK\nother-set\n".into();
    m.runner.calls.clear();

    m.cleanup().unwrap();
    assert_eq!(
        m.runner.jumps.values().sum::<usize>(),
        0,
        "{:?}",
        m.runner.jumps
    );
    assert!(!m.links.devices.contains_key(DUMMY_DEVICE));
    let destroys = m.runner.stdin_of("ipset restore");
    assert_eq!(
        destroys,
        ["destroy KUBE-CLUSTER-IP\ndestroy KUBE-6-LOOP-BACK\n"]
    );
    let restores = m.runner.stdin_of("iptables-restore");
    assert_eq!(
        restores,
        [iptables::declare_text(), iptables::delete_text()]
    );
    assert_eq!(
        m.runner.stdin_of("ip6tables-restore").len(),
        2,
        "IPv6 cleaned too"
    );

    // Clean node: succeeds, deletes nothing.
    m.runner.listed = "other-set\n".into();
    m.runner.calls.clear();
    m.cleanup().unwrap();
    assert!(m.runner.commands().iter().all(|c| !c.contains(" -D ")));
    assert!(m.runner.stdin_of("ipset restore").is_empty());
}
