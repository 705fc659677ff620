//! The `conntrack:` section of a KubeProxyConfiguration (and kube-proxy's
//! `--conntrack-*` flags), applied as kube-proxy applies it
//! (`pkg/proxy/conntrack/sysctls.go`): `nf_conntrack_max` from the
//! per-core figure times the node's CPUs (at least `min`, at most
//! 1,048,576), the hash table raised to a quarter of that, and the TCP and
//! UDP timeouts; each sysctl written only where it differs.
//!
//! One difference, on purpose: kube-proxy writes its defaults (32768 per
//! core, min 131072, 24h established, 1h close-wait) when nothing is set;
//! this proxy leaves the kernel's values unless asked. In `ipvs-bpf` mode
//! Service connections never enter conntrack (their capacity is the
//! session map's, `--bpf-session-map-entries`), so a table sized for them
//! would be memory spent on nothing; what remains in conntrack is the
//! node's own traffic, which the node's configuration sizes.
//!
//! [`flows`] deletes the UDP entries a removed endpoint leaves behind
//! (`ipvs` mode).

pub mod flows;

use std::io;
use std::path::Path;
use std::time::Duration;

use crate::backends::ipvsmode::{self, ensure_sysctls, Need, Sysctl};

/// kube-proxy's cap on the scaled maximum (`getConntrackMax`).
pub const MAX_LIMIT: u32 = 1 << 20;

/// Where the module parameter lives (not a sysctl).
pub const HASHSIZE_PATH: &str = "/sys/module/nf_conntrack/parameters/hashsize";

/// The settings; zero (or `false`) leaves a value as the kernel has it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConntrackConfig {
    /// `maxPerCore` / `--conntrack-max-per-core`.
    pub max_per_core: u32,
    /// `min` / `--conntrack-min`: the floor of the scaled maximum.
    pub min: u32,
    /// `tcpEstablishedTimeout` / `--conntrack-tcp-timeout-established`.
    pub tcp_established_timeout: Duration,
    /// `tcpCloseWaitTimeout` / `--conntrack-tcp-timeout-close-wait`.
    pub tcp_close_wait_timeout: Duration,
    /// `tcpBeLiberal` / `--conntrack-tcp-be-liberal`.
    pub tcp_be_liberal: bool,
    /// `udpTimeout` / `--conntrack-udp-timeout`.
    pub udp_timeout: Duration,
    /// `udpStreamTimeout` / `--conntrack-udp-timeout-stream`.
    pub udp_stream_timeout: Duration,
}

impl ConntrackConfig {
    /// Whether anything is to be written.
    pub fn is_empty(&self) -> bool {
        self.plan(1).is_empty()
    }

    /// `nf_conntrack_max` for `cpus` CPUs, as kube-proxy computes it; 0
    /// when `max_per_core` is unset (`min` alone sets nothing there either).
    pub fn max(&self, cpus: u32) -> u32 {
        if self.max_per_core == 0 {
            return 0;
        }
        let scaled = u64::from(self.max_per_core) * u64::from(cpus.max(1));
        if scaled > u64::from(MAX_LIMIT) {
            return MAX_LIMIT;
        }
        // scaled <= MAX_LIMIT here, so it fits.
        let scaled = u32::try_from(scaled).unwrap_or(MAX_LIMIT);
        scaled.max(self.min)
    }

    /// The sysctls (paths under `/proc/sys`) and the values to give them.
    pub fn plan(&self, cpus: u32) -> Vec<(&'static str, String)> {
        let mut plan = Vec::new();
        let max = self.max(cpus);
        if max > 0 {
            plan.push(("net/netfilter/nf_conntrack_max", max.to_string()));
        }
        let secs = [
            (
                "net/netfilter/nf_conntrack_tcp_timeout_established",
                self.tcp_established_timeout,
            ),
            (
                "net/netfilter/nf_conntrack_tcp_timeout_close_wait",
                self.tcp_close_wait_timeout,
            ),
        ];
        for (path, d) in secs {
            if d.as_secs() > 0 {
                plan.push((path, d.as_secs().to_string()));
            }
        }
        if self.tcp_be_liberal {
            plan.push(("net/netfilter/nf_conntrack_tcp_be_liberal", "1".into()));
        }
        let udp = [
            ("net/netfilter/nf_conntrack_udp_timeout", self.udp_timeout),
            (
                "net/netfilter/nf_conntrack_udp_timeout_stream",
                self.udp_stream_timeout,
            ),
        ];
        for (path, d) in udp {
            if d.as_secs() > 0 {
                plan.push((path, d.as_secs().to_string()));
            }
        }
        plan
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "sysctl {path} is missing: the conntrack: settings need nf_conntrack loaded \
         (modprobe nf_conntrack), or leave them unset"
    )]
    Missing { path: String },
    #[error("sysctl {path}: {source}{hint}")]
    Write {
        path: String,
        source: io::Error,
        /// Why, where it is known.
        hint: &'static str,
    },
    #[error("{path}: {source}")]
    Hashsize { path: String, source: io::Error },
    /// What ensure_sysctls cannot report for required sysctls today.
    #[error(transparent)]
    Sysctls(ipvsmode::Error),
}

/// Writes `plan` where the kernel's value differs (ipvs mode's
/// [`ensure_sysctls`], every entry required); returns how many were
/// written. Its errors say what the conntrack settings need.
pub fn apply<S: Sysctl>(sysctl: &mut S, plan: &[(&'static str, String)]) -> Result<usize, Error> {
    let plan: Vec<_> = plan
        .iter()
        .map(|(path, value)| (*path, value.as_str(), Need::Required))
        .collect();
    ensure_sysctls(sysctl, &plan).map_err(|e| match e {
        ipvsmode::Error::SysctlMissing { path } => Error::Missing { path },
        ipvsmode::Error::Sysctl { path, source } => Error::Write {
            hint: if path.ends_with("nf_conntrack_max") {
                " (in a network namespace other than the host's, nf_conntrack_max is \
                 read-only: leave conntrack.maxPerCore unset or 0 there)"
            } else {
                ""
            },
            path,
            source,
        },
        other => Error::Sysctls(other),
    })
}

/// Raises nf_conntrack's hash table to `max / 4` buckets if it has fewer
/// (kube-proxy's `SetMax`); never shrinks it. Returns whether it wrote.
pub fn raise_hashsize(path: &Path, max: u32) -> Result<bool, Error> {
    let err = |source| Error::Hashsize {
        path: path.display().to_string(),
        source,
    };
    let text = std::fs::read_to_string(path).map_err(err)?;
    let cur: u32 = text.trim().parse().map_err(|_| {
        err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not a number: {:?}", text.trim()),
        ))
    })?;
    let want = max / 4;
    if cur >= want {
        return Ok(false);
    }
    std::fs::write(path, want.to_string()).map_err(err)?;
    Ok(true)
}

/// The node's CPUs, as kube-proxy counts them for `maxPerCore`: every
/// online CPU, not the ones this process may run on (a DaemonSet's CPU
/// affinity or quota must not shrink the node's table).
pub fn online_cpus() -> u32 {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|s| count_cpu_list(&s))
        .or_else(|| {
            std::thread::available_parallelism()
                .ok()
                .and_then(|n| u32::try_from(n.get()).ok())
        })
        .unwrap_or(1)
}

/// Counts a kernel CPU list (`0-3,8,10-11`); `None` if malformed.
pub fn count_cpu_list(s: &str) -> Option<u32> {
    let mut n: u32 = 0;
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?),
            None => {
                let a = part.parse::<u32>().ok()?;
                (a, a)
            }
        };
        n = n.checked_add(b.checked_sub(a)?.checked_add(1)?)?;
    }
    (n > 0).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Default)]
    struct FakeSysctl(BTreeMap<String, String>);

    impl Sysctl for FakeSysctl {
        fn get(&self, path: &str) -> io::Result<Option<String>> {
            Ok(self.0.get(path).cloned())
        }
        fn set(&mut self, path: &str, value: &str) -> io::Result<()> {
            self.0.insert(path.into(), value.into());
            Ok(())
        }
    }

    fn per_core(max_per_core: u32, min: u32) -> ConntrackConfig {
        ConntrackConfig {
            max_per_core,
            min,
            ..ConntrackConfig::default()
        }
    }

    /// kube-proxy's `TestGetConntrackMax` cases, and the 1M cap.
    #[test]
    fn max_scales_per_core_with_floor_and_cap() {
        let cases = [
            // (maxPerCore, min, cpus, want)
            (0, 0, 4, 0),      // unset: nothing written
            (0, 131072, 4, 0), // min alone sets nothing
            (32768, 0, 4, 131072),
            (32768, 131072, 2, 131072), // the floor wins
            (32768, 131072, 8, 262144),
            (32768, 0, 64, MAX_LIMIT), // capped
            (u32::MAX, 0, u32::MAX, MAX_LIMIT),
            (10, 0, 0, 10), // zero CPUs counted as one
        ];
        for (mpc, min, cpus, want) in cases {
            assert_eq!(per_core(mpc, min).max(cpus), want, "{mpc} {min} {cpus}");
        }
    }

    #[test]
    fn plan_has_only_what_is_set() {
        assert!(ConntrackConfig::default().plan(4).is_empty());
        assert!(ConntrackConfig::default().is_empty());
        let c = ConntrackConfig {
            max_per_core: 32768,
            min: 131072,
            tcp_established_timeout: Duration::from_secs(86400),
            tcp_close_wait_timeout: Duration::from_secs(3600),
            tcp_be_liberal: true,
            udp_timeout: Duration::from_secs(30),
            udp_stream_timeout: Duration::from_millis(120_500),
        };
        let plan = c.plan(4);
        let want: Vec<(&str, &str)> = vec![
            ("net/netfilter/nf_conntrack_max", "131072"),
            (
                "net/netfilter/nf_conntrack_tcp_timeout_established",
                "86400",
            ),
            ("net/netfilter/nf_conntrack_tcp_timeout_close_wait", "3600"),
            ("net/netfilter/nf_conntrack_tcp_be_liberal", "1"),
            ("net/netfilter/nf_conntrack_udp_timeout", "30"),
            // whole seconds, truncated as kube-proxy does
            ("net/netfilter/nf_conntrack_udp_timeout_stream", "120"),
        ];
        let got: Vec<(&str, &str)> = plan.iter().map(|(p, v)| (*p, v.as_str())).collect();
        assert_eq!(got, want);
        // Below one second is nothing to write.
        let sub = ConntrackConfig {
            udp_timeout: Duration::from_millis(500),
            ..ConntrackConfig::default()
        };
        assert!(sub.is_empty());
    }

    #[test]
    fn apply_writes_only_differences_and_names_a_missing_module() {
        let mut s = FakeSysctl::default();
        s.0.insert("net/netfilter/nf_conntrack_max".into(), "262144".into());
        s.0.insert(
            "net/netfilter/nf_conntrack_tcp_timeout_established".into(),
            "86400".into(),
        );
        let c = ConntrackConfig {
            max_per_core: 32768,
            tcp_established_timeout: Duration::from_secs(86400),
            ..ConntrackConfig::default()
        };
        // Written even when lower than the kernel's, as kube-proxy does;
        // the timeout already has its value.
        assert_eq!(apply(&mut s, &c.plan(2)).expect("apply"), 1);
        assert_eq!(s.0["net/netfilter/nf_conntrack_max"], "65536");
        let c4 = per_core(32768, 0);
        assert_eq!(apply(&mut s, &c4.plan(4)).expect("apply"), 1);
        assert_eq!(s.0["net/netfilter/nf_conntrack_max"], "131072");
        assert_eq!(apply(&mut s, &c4.plan(4)).expect("again"), 0, "idempotent");

        let mut empty = FakeSysctl::default();
        let e = apply(&mut empty, &c4.plan(4)).expect_err("no nf_conntrack");
        assert!(e.to_string().contains("modprobe nf_conntrack"), "{e}");
    }

    #[test]
    fn hashsize_is_raised_never_shrunk() {
        let dir = std::env::temp_dir().join(format!("ipvsbpf-ct-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("hashsize");
        std::fs::write(&path, "16384\n").expect("write");
        assert!(raise_hashsize(&path, 131072).expect("raise"));
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "32768");
        assert!(!raise_hashsize(&path, 65536).expect("no shrink"));
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "32768");
        std::fs::write(&path, "lots").expect("write");
        assert!(raise_hashsize(&path, 131072).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(count_cpu_list("0-1\n"), Some(2));
        assert_eq!(count_cpu_list("0"), Some(1));
        assert_eq!(count_cpu_list("0-3,8,10-11"), Some(7));
        assert_eq!(count_cpu_list(""), None);
        assert_eq!(count_cpu_list("3-1"), None);
        assert_eq!(count_cpu_list("a-b"), None);
        assert!(online_cpus() >= 1);
    }
}
