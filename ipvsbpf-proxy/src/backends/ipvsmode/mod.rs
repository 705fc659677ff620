//! The `ipvs` mode's node plumbing: everything kube-proxy's IPVS proxier
//! does on a node besides programming IPVS itself (the reconciler's job).
//!
//! - the `kube-ipvs0` dummy device holding every service address, so the
//!   kernel accepts packets to them as local and IPVS sees them in INPUT;
//! - kube-proxy's ipsets (KUBE-CLUSTER-IP, KUBE-LOOP-BACK, KUBE-NODE-PORT-*,
//!   …, and the `KUBE-6-` IPv6 ones) with their members;
//! - the KUBE-* iptables chains that match those sets to mark traffic for
//!   masquerade, filter VIP access, and accept forwarded service traffic;
//! - the sysctls IPVS needs (conntrack, expire_nodest_conn, …);
//! - `--cleanup`, which removes all of it and nothing else.
//!
//! Everything the kernel is told is computed by pure functions ([`ipset`],
//! [`iptables`]) from the [`NodeState`]; the commands run through
//! [`Runner`], sysctls through [`Sysctl`], the device through [`Links`], so
//! [`IpvsMode`] is tested against fakes and, in `tests/ipvsmode_netns.rs`,
//! against the kernel.

pub mod ipset;
pub mod iptables;
pub mod link;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write as _};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ipvs_netlink::Family;

use crate::model::desired::NodeState;
pub use ipset::{MemberDiff, Members};
pub use link::{LinkError, Links, Rtnl};

/// kube-proxy's name for the dummy device.
pub const DUMMY_DEVICE: &str = "kube-ipvs0";

/// How the mode is set up; kube-proxy's flags of the same names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpvsModeConfig {
    /// `--cluster-cidr`: pod ranges, at most one per family is used (as
    /// kube-proxy's cluster-CIDR local-traffic detector does). Traffic to a
    /// ClusterIP from outside them is masqueraded.
    pub cluster_cidrs: Vec<(IpAddr, u8)>,
    /// `--masquerade-all`: masquerade all ClusterIP traffic.
    pub masquerade_all: bool,
    /// `--iptables-masquerade-bit`: the fwmark bit meaning "masquerade", 0..=31.
    pub masquerade_bit: u8,
    /// `--ipvs-strict-arp`: no ARP replies for the VIPs on the dummy device.
    pub strict_arp: bool,
    pub ipv4: bool,
    pub ipv6: bool,
    /// `MASQUERADE --random-fully` (kube-proxy adds it when iptables has it).
    pub random_fully: bool,
}

impl Default for IpvsModeConfig {
    fn default() -> Self {
        IpvsModeConfig {
            cluster_cidrs: Vec::new(),
            masquerade_all: false,
            masquerade_bit: 14,
            strict_arp: false,
            ipv4: true,
            ipv6: false,
            random_fully: false,
        }
    }
}

impl IpvsModeConfig {
    /// The first cluster CIDR of `family`, as `addr/len`.
    pub fn cluster_cidr(&self, family: Family) -> Option<String> {
        self.cluster_cidrs
            .iter()
            .find(|(a, _)| Family::of(a) == family)
            .map(|(a, l)| format!("{a}/{l}"))
    }

    /// The families this node runs, IPv4 first.
    pub fn families(&self) -> Vec<Family> {
        [(self.ipv4, Family::Inet), (self.ipv6, Family::Inet6)]
            .into_iter()
            .filter_map(|(on, f)| on.then_some(f))
            .collect()
    }

    fn validate(&self) -> Result<(), Error> {
        if self.masquerade_bit > 31 {
            return Err(Error::Config(format!(
                "masquerade bit {} is not in 0..=31",
                self.masquerade_bit
            )));
        }
        if !self.ipv4 && !self.ipv6 {
            return Err(Error::Config("neither IPv4 nor IPv6 is enabled".into()));
        }
        for (a, l) in &self.cluster_cidrs {
            let max = if a.is_ipv4() { 32 } else { 128 };
            if *l > max {
                return Err(Error::Config(format!(
                    "cluster CIDR {a}/{l}: prefix too long"
                )));
            }
        }
        Ok(())
    }
}

/// The mode's errors, each naming what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid ipvs mode configuration: {0}")]
    Config(String),
    #[error("sysctl {path} is missing: is the ip_vs kernel module loaded (modprobe ip_vs)?")]
    IpvsMissing { path: String },
    #[error("sysctl {path} is missing")]
    SysctlMissing { path: String },
    #[error("sysctl {path}: {source}")]
    Sysctl { path: String, source: io::Error },
    #[error("cannot run {program}: {source}")]
    Spawn { program: String, source: io::Error },
    #[error("`{command}` failed with status {status}: {stderr}")]
    Command {
        command: String,
        status: i32,
        stderr: String,
    },
    #[error("{op} on {device}: {source}")]
    Link {
        op: &'static str,
        device: String,
        source: LinkError,
    },
}

/// What a finished command said.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Output {
    /// Exit code; -1 when killed by a signal.
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the `ipset` and `iptables*` binaries (kube-proxy drives the same
/// tools); a trait so tests capture what would be run and fed.
pub trait Runner {
    fn run(&mut self, program: &str, args: &[&str], stdin: Option<&str>) -> io::Result<Output>;
}

/// [`Runner`] executing the programs from `PATH`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ExecRunner;

impl Runner for ExecRunner {
    fn run(&mut self, program: &str, args: &[&str], stdin: Option<&str>) -> io::Result<Output> {
        let mut child = Command::new(program)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        // Feed stdin from another thread: a large input must not block
        // against a child that fills its output pipes first.
        let input = child.stdin.take();
        let out = std::thread::scope(|s| {
            let writer = s.spawn(move || -> io::Result<()> {
                if let (Some(mut pipe), Some(text)) = (input, stdin) {
                    pipe.write_all(text.as_bytes())?;
                }
                Ok(())
            });
            let out = child.wait_with_output();
            let written = writer
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("stdin writer panicked")));
            (out, written)
        });
        let (out, written) = out;
        let out = out?;
        // A child that exits early closes the pipe; its status explains more.
        if out.status.success() {
            written?;
        }
        Ok(Output {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

/// Reads and writes sysctls by their `/proc/sys` path (`net/ipv4/ip_forward`).
pub trait Sysctl {
    /// The trimmed value, `None` when the sysctl does not exist.
    fn get(&self, path: &str) -> io::Result<Option<String>>;
    fn set(&mut self, path: &str, value: &str) -> io::Result<()>;
}

/// [`Sysctl`] on `/proc/sys` (of the caller's network namespace).
#[derive(Clone, Debug)]
pub struct ProcSysctl {
    pub root: PathBuf,
}

impl Default for ProcSysctl {
    fn default() -> Self {
        ProcSysctl {
            root: PathBuf::from("/proc/sys"),
        }
    }
}

impl Sysctl for ProcSysctl {
    fn get(&self, path: &str) -> io::Result<Option<String>> {
        match std::fs::read_to_string(self.root.join(path)) {
            Ok(v) => Ok(Some(v.trim().to_string())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn set(&mut self, path: &str, value: &str) -> io::Result<()> {
        std::fs::write(self.root.join(path), value)
    }
}

/// When a missing sysctl is an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Provided by `ip_vs`: missing means the module is not loaded.
    Ipvs,
    Required,
    /// Set only where it exists (`br_netfilter` may not be loaded).
    IfPresent,
}

/// The sysctls to ensure, with their values, for `cfg` on a kernel of
/// version `kernel` (major, minor).
///
/// `conn_reuse_mode` follows kube-proxy: set to 0 only on kernels 4.1 to
/// 5.8; 5.9 fixed the connection-reuse bug that 0 worked around, and older
/// kernels lack it.
pub fn sysctl_plan(
    cfg: &IpvsModeConfig,
    kernel: Option<(u32, u32)>,
) -> Vec<(&'static str, &'static str, Need)> {
    let mut plan = vec![("net/ipv4/vs/conntrack", "1", Need::Ipvs)];
    if let Some(k) = kernel {
        if ((4, 1)..(5, 9)).contains(&k) {
            plan.push(("net/ipv4/vs/conn_reuse_mode", "0", Need::Ipvs));
        }
    }
    plan.extend([
        ("net/ipv4/vs/expire_nodest_conn", "1", Need::Ipvs),
        ("net/ipv4/vs/expire_quiescent_template", "1", Need::Ipvs),
        ("net/ipv4/ip_forward", "1", Need::Required),
    ]);
    if cfg.ipv6 {
        plan.push(("net/ipv6/conf/all/forwarding", "1", Need::Required));
    }
    plan.push(("net/bridge/bridge-nf-call-iptables", "1", Need::IfPresent));
    if cfg.strict_arp {
        plan.push(("net/ipv4/conf/all/arp_ignore", "1", Need::Required));
        plan.push(("net/ipv4/conf/all/arp_announce", "2", Need::Required));
    }
    plan
}

/// `6.18.44-fc-v595` → (6, 18).
pub fn parse_kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Applies `plan`, writing only values that differ.
pub fn ensure_sysctls<S: Sysctl, V: AsRef<str>>(
    sysctl: &mut S,
    plan: &[(&str, V, Need)],
) -> Result<usize, Error> {
    let mut written = 0;
    for (path, value, need) in plan {
        let value = value.as_ref();
        let err = |source| Error::Sysctl {
            path: path.to_string(),
            source,
        };
        match sysctl.get(path).map_err(err)? {
            Some(cur) if cur == value => {}
            Some(_) => {
                sysctl.set(path, value).map_err(err)?;
                written += 1;
            }
            None => match need {
                Need::IfPresent => {}
                Need::Ipvs => {
                    return Err(Error::IpvsMissing {
                        path: path.to_string(),
                    })
                }
                Need::Required => {
                    return Err(Error::SysctlMissing {
                        path: path.to_string(),
                    })
                }
            },
        }
    }
    Ok(written)
}

/// What one [`IpvsMode::sync`] changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub addresses_added: usize,
    pub addresses_removed: usize,
    pub members: BTreeMap<Family, MemberDiff>,
    /// Time spent on the device's addresses, in `ipset restore`, in
    /// `iptables-restore` and in the jump checks, over both families.
    pub took: StepTimes,
}

/// Where an `ipvs` mode sync spends its time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StepTimes {
    pub addresses: Duration,
    pub ipsets: Duration,
    pub iptables: Duration,
    pub jumps: Duration,
}

/// The `ipvs` mode's node state keeper. Caches what it last applied (the
/// device's addresses, each family's set members) so a sync only sends the
/// difference; a failed step drops its cache, so the next sync reads the
/// kernel again instead of trusting a half-applied state.
pub struct IpvsMode<R: Runner, S: Sysctl, L: Links> {
    runner: R,
    sysctl: S,
    links: L,
    cfg: IpvsModeConfig,
    bound: Option<BTreeSet<IpAddr>>,
    members: BTreeMap<Family, Members>,
}

impl<R: Runner, S: Sysctl, L: Links> IpvsMode<R, S, L> {
    pub fn new(runner: R, sysctl: S, links: L, cfg: IpvsModeConfig) -> Result<Self, Error> {
        cfg.validate()?;
        Ok(IpvsMode {
            runner,
            sysctl,
            links,
            cfg,
            bound: None,
            members: BTreeMap::new(),
        })
    }

    pub fn config(&self) -> &IpvsModeConfig {
        &self.cfg
    }

    /// The runner, for tests that inspect what was run.
    pub fn runner(&self) -> &R {
        &self.runner
    }

    pub fn runner_mut(&mut self) -> &mut R {
        &mut self.runner
    }

    fn run(&mut self, program: &str, args: &[&str], stdin: Option<&str>) -> Result<Output, Error> {
        self.runner
            .run(program, args, stdin)
            .map_err(|source| Error::Spawn {
                program: program.to_string(),
                source,
            })
    }

    /// Runs and requires exit status 0.
    fn run_ok(
        &mut self,
        program: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<Output, Error> {
        let out = self.run(program, args, stdin)?;
        if out.status != 0 {
            return Err(Error::Command {
                command: format!("{program} {}", args.join(" ")),
                status: out.status,
                stderr: out.stderr.trim().to_string(),
            });
        }
        Ok(out)
    }

    fn link_err(op: &'static str) -> impl FnOnce(LinkError) -> Error {
        move |source| Error::Link {
            op,
            device: DUMMY_DEVICE.to_string(),
            source,
        }
    }

    /// The sysctls only; [`IpvsMode::setup`] runs them first. Separate so a
    /// host without IPVS can still test the rest.
    pub fn setup_sysctls(&mut self) -> Result<usize, Error> {
        let kernel = self
            .sysctl
            .get("kernel/osrelease")
            .ok()
            .flatten()
            .and_then(|r| parse_kernel_version(&r));
        ensure_sysctls(&mut self.sysctl, &sysctl_plan(&self.cfg, kernel))
    }

    /// Once at start: sysctls, the dummy device, our chains (created empty
    /// if missing, kept as they are otherwise so a restart does not drop
    /// service traffic before the first sync), and the jumps into them.
    pub fn setup(&mut self) -> Result<(), Error> {
        self.setup_sysctls()?;
        self.setup_device_and_chains()
    }

    /// [`IpvsMode::setup`] without the sysctls.
    pub fn setup_device_and_chains(&mut self) -> Result<(), Error> {
        self.links
            .ensure_dummy(DUMMY_DEVICE)
            .map_err(Self::link_err("create dummy device"))?;
        for family in self.cfg.families() {
            let (ipt, _) = iptables::binaries(family);
            for (table, chains) in [
                ("nat", &iptables::NAT_CHAINS[..]),
                ("filter", &iptables::FILTER_CHAINS[..]),
            ] {
                for chain in chains {
                    // -S lists a chain and fails when there is none.
                    if self
                        .run(ipt, &["-w", "-t", table, "-S", chain], None)?
                        .status
                        != 0
                    {
                        self.run_ok(ipt, &["-w", "-t", table, "-N", chain], None)?;
                    }
                }
            }
            self.ensure_jumps(family)?;
        }
        Ok(())
    }

    /// Inserts each jump rule that is missing (`-C` then `-I`), as
    /// kube-proxy's EnsureRule: a firewall reload that flushed the built-in
    /// chains is repaired at the next sync.
    fn ensure_jumps(&mut self, family: Family) -> Result<(), Error> {
        let (ipt, _) = iptables::binaries(family);
        for j in &iptables::JUMPS {
            let out = self.run(ipt, &j.args("-C"), None)?;
            match out.status {
                0 => {}
                1 => {
                    self.run_ok(ipt, &j.args("-I"), None)?;
                }
                status => {
                    return Err(Error::Command {
                        command: format!("{ipt} {}", j.args("-C").join(" ")),
                        status,
                        stderr: out.stderr.trim().to_string(),
                    })
                }
            }
        }
        Ok(())
    }

    /// Brings the node to `state`: adds new addresses to the device, syncs
    /// the ipsets (member diff), rewrites our chains, ensures the jumps,
    /// then removes addresses no longer used (last, so no VIP disappears
    /// before the rules stop pointing at it).
    pub fn sync(&mut self, state: &NodeState) -> Result<SyncReport, Error> {
        let mut report = SyncReport::default();
        let mut t = Instant::now();
        let mut lap = |d: &mut Duration| {
            let now = Instant::now();
            *d += now - t;
            t = now;
        };
        let families = self.cfg.families();
        let node = self
            .links
            .addresses_except(DUMMY_DEVICE)
            .map_err(Self::link_err("list node addresses"))?;
        // The node's own addresses never go on the dummy device (an LB or
        // external IP may be one); kube-proxy skips them too.
        let want: BTreeSet<IpAddr> = state
            .addresses()
            .into_iter()
            .filter(|a| families.contains(&Family::of(a)) && !node.contains(a))
            .collect();

        let have = match self.bound.take() {
            Some(b) => b,
            None => self
                .links
                .addresses(DUMMY_DEVICE)
                .map_err(Self::link_err("list addresses"))?,
        };
        let mut bound = have.clone();
        for a in want.difference(&have) {
            self.links
                .add_address(DUMMY_DEVICE, *a)
                .map_err(Self::link_err("add address"))?;
            bound.insert(*a);
            report.addresses_added += 1;
        }
        lap(&mut report.took.addresses);

        for family in families {
            let desired = ipset::desired_members(state, family, &want);
            let current = match self.members.remove(&family) {
                Some(m) => m,
                None => {
                    let save = self.run_ok("ipset", &["save"], None)?;
                    ipset::parse_save(&save.stdout, family)
                }
            };
            let (text, diff) = ipset::restore_text(family, &current, &desired);
            self.run_ok("ipset", &["restore", "-exist"], Some(&text))?;
            report.members.insert(family, diff);
            lap(&mut report.took.ipsets);
            let rules = iptables::restore_text(family, &desired, &self.cfg);
            self.members.insert(family, desired);
            let (_, restore) = iptables::binaries(family);
            self.run_ok(restore, &["-w", "--noflush"], Some(&rules))?;
            lap(&mut report.took.iptables);
            self.ensure_jumps(family)?;
            lap(&mut report.took.jumps);
        }

        // Only what this mode put there: addresses of a disabled family are
        // left alone, as are ones that became node addresses.
        let stale: Vec<IpAddr> = bound
            .iter()
            .filter(|a| !want.contains(a))
            .copied()
            .collect();
        for a in stale {
            self.links
                .del_address(DUMMY_DEVICE, a)
                .map_err(Self::link_err("remove address"))?;
            bound.remove(&a);
            report.addresses_removed += 1;
        }
        lap(&mut report.took.addresses);
        self.bound = Some(bound);
        Ok(report)
    }

    /// Removes the jump rules, our chains, our ipsets and the dummy device,
    /// in both families, and nothing else. Every step runs even if an
    /// earlier one failed; the first error is returned. Cleaning a clean
    /// node succeeds.
    pub fn cleanup(&mut self) -> Result<(), Error> {
        self.bound = None;
        self.members.clear();
        let mut first: Option<Error> = None;
        let mut keep = |r: Result<(), Error>| {
            if let Err(e) = r {
                first.get_or_insert(e);
            }
        };
        for family in [Family::Inet, Family::Inet6] {
            let r = self.cleanup_iptables(family);
            keep(r);
        }
        let r = self.cleanup_ipsets();
        keep(r);
        let r = self
            .links
            .delete_link(DUMMY_DEVICE)
            .map(|_| ())
            .map_err(Self::link_err("delete dummy device"));
        keep(r);
        first.map_or(Ok(()), Err)
    }

    fn cleanup_iptables(&mut self, family: Family) -> Result<(), Error> {
        let (ipt, restore) = iptables::binaries(family);
        // Declaring our chains first makes each jump's target exist, so
        // `-C` answers 0 or 1 and never "no such chain".
        match self.run(
            restore,
            &["-w", "--noflush"],
            Some(&iptables::declare_text()),
        ) {
            Err(Error::Spawn { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                // No ip6tables on this node: nothing of ours there either.
                return Ok(());
            }
            r => {
                let out = r?;
                if out.status != 0 {
                    return Err(Error::Command {
                        command: format!("{restore} -w --noflush"),
                        status: out.status,
                        stderr: out.stderr.trim().to_string(),
                    });
                }
            }
        }
        for j in &iptables::JUMPS {
            // A rule may be there more than once (e.g. two proxies once
            // raced); delete until `-C` no longer finds it.
            for _ in 0..64 {
                if self.run(ipt, &j.args("-C"), None)?.status != 0 {
                    break;
                }
                self.run_ok(ipt, &j.args("-D"), None)?;
            }
        }
        self.run_ok(
            restore,
            &["-w", "--noflush"],
            Some(&iptables::delete_text()),
        )?;
        Ok(())
    }

    fn cleanup_ipsets(&mut self) -> Result<(), Error> {
        let listed = match self.run("ipset", &["list", "-n"], None) {
            Err(Error::Spawn { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return Ok(());
            }
            r => r?,
        };
        if listed.status != 0 {
            return Err(Error::Command {
                command: "ipset list -n".into(),
                status: listed.status,
                stderr: listed.stderr.trim().to_string(),
            });
        }
        let text = ipset::destroy_text(&listed.stdout);
        if !text.is_empty() {
            self.run_ok("ipset", &["restore"], Some(&text))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
