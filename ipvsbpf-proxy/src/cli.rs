//! Command line and configuration file: kube-proxy's flags (same names and
//! defaults where the meaning carries over), a `KubeProxyConfiguration` file
//! (`kubeproxy.config.k8s.io/v1alpha1`, YAML or JSON) for the same subset,
//! and our own flags. [`Config::from_args`] turns the raw [`Args`] into a
//! typed, validated [`Config`]; every bad value is an error naming the flag
//! or the file field, so an operator can fix it without reading code.
//!
//! Precedence follows kube-proxy (`cmd/kube-proxy/app/options.go`): when
//! `--config` is given, the file replaces every flag that has a field in it
//! (those flags are ignored, with a warning); `--hostname-override` and the
//! logging flags (`-v`, `--log-format`) still win over the file, and flags
//! that have no field in the file (`--master`, `--cleanup` and all of ours)
//! always apply.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use serde_json::Value;

pub use crate::model::desired::Cidr;

/// kube-proxy's health server port (`ports.ProxyHealthzPort`).
pub const HEALTHZ_PORT: u16 = 10256;
/// kube-proxy's metrics server port (`ports.ProxyStatusPort`).
pub const METRICS_PORT: u16 = 10249;
/// The only configuration file version kube-proxy serves.
pub const CONFIG_API_VERSION: &str = "kubeproxy.config.k8s.io/v1alpha1";
/// The configuration file's kind.
pub const CONFIG_KIND: &str = "KubeProxyConfiguration";

/// Default `--ipvs-sync-period`, as kube-proxy.
pub const DEFAULT_SYNC_PERIOD: Duration = Duration::from_secs(30);
/// Default `--ipvs-min-sync-period`. kube-proxy's v1alpha1 defaulting
/// leaves `ipvs.minSyncPeriod` at 0 (a resync on every change) while its
/// iptables mode defaults to 1s. We take 1s: a rolling update of a large
/// Deployment produces hundreds of EndpointSlice updates a second, and
/// batching them bounds the netlink work per second at a cost of at most 1s
/// of network-programming latency.
pub const DEFAULT_MIN_SYNC_PERIOD: Duration = Duration::from_secs(1);
/// Default `--snat-port-range`: above Linux's default
/// `ip_local_port_range` (32768-60999) so SNAT ports never collide with
/// local sockets' ephemeral ports.
pub const DEFAULT_SNAT_PORT_RANGE: PortRange = PortRange {
    min: 61000,
    max: 65000,
};
/// Default `--bpf-pin-path`.
pub const DEFAULT_BPF_PIN_PATH: &str = "/sys/fs/bpf/ipvsbpf";
/// IPVS schedulers accepted by `--ipvs-scheduler`: the kernel's
/// `ip_vs_*` scheduler modules.
pub const IPVS_SCHEDULERS: &[&str] = &[
    "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos",
];

/// A configuration error; each names the flag or file field at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{field}: invalid value {value:?}: {reason}")]
    Invalid {
        /// `--flag` or `file: field.path`
        field: String,
        value: String,
        reason: String,
    },
    #[error("{field}: {reason}")]
    Conflict { field: String, reason: String },
    #[error("--config {path}: {source}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--config {path}: not valid {format}: {reason}")]
    Parse {
        path: PathBuf,
        format: &'static str,
        reason: String,
    },
    #[error("{path}: {source}")]
    Sysctl {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn invalid(field: &str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// Which back-end programs the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProxyMode {
    /// IPVS in PREROUTING with sessions mirrored to BPF and tc SNAT.
    #[value(name = "ipvs-bpf")]
    IpvsBpf,
    /// Classic kube-proxy IPVS mode (ipsets, iptables masquerade).
    Ipvs,
}

impl ProxyMode {
    fn parse(field: &str, s: &str) -> Result<ProxyMode, ConfigError> {
        match s {
            "ipvs-bpf" => Ok(ProxyMode::IpvsBpf),
            "ipvs" => Ok(ProxyMode::Ipvs),
            "iptables" | "nftables" | "kernelspace" | "userspace" => Err(invalid(
                field,
                s,
                "a kube-proxy mode this proxy does not implement; use \"ipvs-bpf\" or \"ipvs\"",
            )),
            _ => Err(invalid(
                field,
                s,
                "unknown proxy mode; use \"ipvs-bpf\" or \"ipvs\"",
            )),
        }
    }
}

/// Where Services and EndpointSlices come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SourceKind {
    /// Watch the Kubernetes API.
    Kube,
    /// Read manifests from `--manifests DIR` (no API server).
    File,
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Which node addresses accept NodePort traffic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodePortAddresses {
    /// Every local address (kube-proxy's default).
    All,
    /// The node's primary address(es) from the Node object.
    Primary,
    /// Local addresses inside one of these prefixes.
    Cidrs(Vec<Cidr>),
}

/// An inclusive port range `MIN-MAX`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub min: u16,
    pub max: u16,
}

impl PortRange {
    /// Whether the ranges share a port.
    pub fn overlaps(&self, other: &PortRange) -> bool {
        self.min <= other.max && other.min <= self.max
    }

    /// Parses `MIN-MAX` (the SNAT range), or `MIN<whitespace>MAX` (the
    /// format of `/proc/sys/net/ipv4/ip_local_port_range`).
    fn parse(s: &str) -> Result<PortRange, String> {
        let s = s.trim();
        let (a, b) = s
            .split_once('-')
            .or_else(|| s.split_once(char::is_whitespace))
            .ok_or_else(|| "expected MIN-MAX, e.g. 61000-65000".to_string())?;
        let port = |p: &str| {
            p.trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("{:?} is not a port 1..=65535", p.trim()))
        };
        let (min, max) = (port(a)?, port(b)?);
        if min > max {
            return Err(format!("start {min} is above end {max}"));
        }
        Ok(PortRange { min, max })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.min, self.max)
    }
}

/// Fails when the SNAT range shares ports with the kernel's ephemeral range
/// read from `sysctl` (normally `/proc/sys/net/ipv4/ip_local_port_range`):
/// a local socket's ephemeral port could then equal a SNAT port and the
/// BPF program would rewrite its replies. A daemon-start check, not part of
/// [`Config::from_args`], because it reads the running kernel.
pub fn check_snat_range_against(range: PortRange, sysctl: &Path) -> Result<(), ConfigError> {
    let text = std::fs::read_to_string(sysctl).map_err(|source| ConfigError::Sysctl {
        path: sysctl.to_path_buf(),
        source,
    })?;
    let local = PortRange::parse(&text).map_err(|reason| {
        invalid(
            &sysctl.display().to_string(),
            text.trim(),
            format!("cannot read the local port range: {reason}"),
        )
    })?;
    if range.overlaps(&local) {
        return Err(ConfigError::Conflict {
            field: "--snat-port-range".to_string(),
            reason: format!(
                "{range} overlaps the kernel's ephemeral ports {local} ({}); \
                 pick a range outside it or narrow ip_local_port_range",
                sysctl.display()
            ),
        });
    }
    Ok(())
}

/// Parses a Go `time.Duration` string (`"30s"`, `"1m0s"`, `"1h2m3.5s"`,
/// `"500ms"`, `"0"`), as kube-proxy's flags and config file use them.
/// Negative durations are refused: none of ours can be negative.
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let orig = s;
    let s = s.strip_prefix('+').unwrap_or(s);
    if s.starts_with('-') {
        return Err("negative durations are not allowed".into());
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err("empty duration; use e.g. \"30s\", \"1m0s\", \"500ms\"".into());
    }
    let mut rest = s;
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, after) = rest.split_at(num_end);
        if num.is_empty() || num == "." {
            return Err(format!("{orig:?}: expected a number before each unit"));
        }
        let n: f64 = num
            .parse()
            .map_err(|_| format!("{orig:?}: {num:?} is not a number"))?;
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return Err(format!("{orig:?}: missing unit (ns, us, ms, s, m, h)")),
            u => {
                return Err(format!(
                    "{orig:?}: unknown unit {u:?} (ns, us, ms, s, m, h)"
                ))
            }
        };
        total += n * scale;
        rest = next;
    }
    Duration::try_from_secs_f64(total).map_err(|e| format!("{orig:?}: {e}"))
}

/// Formats a duration the way Go prints it (`1m0s`, `500ms`, `0s`), for
/// help texts and logs that operators compare with kube-proxy's.
pub fn format_go_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".into();
    }
    if d < Duration::from_secs(1) {
        let ns = d.as_nanos();
        return if ns.is_multiple_of(1_000_000) {
            format!("{}ms", ns / 1_000_000)
        } else if ns.is_multiple_of(1_000) {
            format!("{}µs", ns / 1_000)
        } else {
            format!("{ns}ns")
        };
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    let frac = d.subsec_nanos();
    let sec = if frac == 0 {
        format!("{s}s")
    } else {
        let f = format!("{frac:09}");
        format!("{s}.{}s", f.trim_end_matches('0'))
    };
    match (h, m) {
        (0, 0) => sec,
        (0, m) => format!("{m}m{sec}"),
        (h, m) => format!("{h}h{m}m{sec}"),
    }
}

const AFTER_HELP: &str = "\
Precedence: as kube-proxy, when --config is given the file replaces every flag that has a \
field in it (those flags are then ignored, with a warning); --hostname-override, -v and \
--log-format still override the file; --master, --cleanup and the ipvsbpf-proxy flags \
(--source, --manifests, --fallback-to-ipvs, --uplink, --bpf-pin-path, --snat-port-range, \
--service-proxy-name, --ipvs-drain-timeout, --check-config) always apply.

Durations use Go syntax: 30s, 1m0s, 500ms, 1h30m.";

/// Raw command line. Flags that a `--config` file can also set are
/// `Option`s so [`Config::from_args`] can tell "given" from "default".
#[derive(Clone, Debug, Parser)]
#[command(
    name = "ipvsbpf-proxy",
    version,
    about = "Kubernetes Service proxy: IPVS in PREROUTING with BPF-mirrored sessions and tc SNAT \
             (mode ipvs-bpf), or classic IPVS (mode ipvs). A kube-proxy replacement.",
    after_help = AFTER_HELP
)]
pub struct Args {
    /// KubeProxyConfiguration file (kubeproxy.config.k8s.io/v1alpha1, YAML or JSON). Replaces
    /// the flags it has fields for; unknown fields are warned about and ignored.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Which proxy mode to use: 'ipvs-bpf' or 'ipvs'. [default: ipvs-bpf]
    #[arg(long, value_name = "MODE")]
    pub proxy_mode: Option<String>,

    /// Path to kubeconfig file with authorization information (the master location can be
    /// overridden by --master). Default: in-cluster config, then ~/.kube/config.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// The address of the Kubernetes API server (overrides any value in kubeconfig).
    #[arg(long, value_name = "URL")]
    pub master: Option<String>,

    /// If non-empty, will be used as the name of the Node this proxy runs on (lowercased).
    /// Default: the node's hostname. Overrides the config file.
    #[arg(long, value_name = "NAME")]
    pub hostname_override: Option<String>,

    /// The CIDR range of the pods in the cluster; for dual-stack clusters a comma-separated
    /// pair (one IPv4, one IPv6). Traffic from outside it is source-NATed.
    #[arg(long, value_name = "CIDR[,CIDR]")]
    pub cluster_cidr: Option<String>,

    /// Comma-separated CIDRs that contain valid node IPs for NodePorts, or the single word
    /// 'primary' (the node's primary IPs from its Node object). [default: all local IPs]
    #[arg(long, value_name = "CIDRS|primary")]
    pub nodeport_addresses: Option<String>,

    /// SNAT all traffic sent via Service cluster IPs.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true")]
    pub masquerade_all: Option<bool>,

    /// The IPVS scheduler (rr, wrr, lc, wlc, lblc, lblcr, dh, sh, sed, nq, fo, ovf, mh, twos).
    /// [default: rr]
    #[arg(long, value_name = "NAME")]
    pub ipvs_scheduler: Option<String>,

    /// How often IPVS is fully re-synchronised (must be greater than 0). [default: 30s]
    #[arg(long, value_name = "DURATION")]
    pub ipvs_sync_period: Option<String>,

    /// The minimum period between IPVS resyncs; 0 resyncs on every Service or EndpointSlice
    /// change. [default: 1s; kube-proxy: 0s]
    #[arg(long, value_name = "DURATION")]
    pub ipvs_min_sync_period: Option<String>,

    /// The timeout for idle IPVS TCP connections, 0 to leave as-is. [default: 0s]
    #[arg(long, value_name = "DURATION")]
    pub ipvs_tcp_timeout: Option<String>,

    /// The timeout for IPVS TCP connections after receiving a FIN, 0 to leave as-is.
    /// [default: 0s]
    #[arg(long, value_name = "DURATION")]
    pub ipvs_tcpfin_timeout: Option<String>,

    /// The timeout for IPVS UDP packets, 0 to leave as-is. [default: 0s]
    #[arg(long, value_name = "DURATION")]
    pub ipvs_udp_timeout: Option<String>,

    /// Comma-separated CIDRs whose IPVS virtual servers this proxy never deletes.
    #[arg(long, value_name = "CIDRS")]
    pub ipvs_exclude_cidrs: Option<String>,

    /// Enable strict ARP by setting arp_ignore to 1 and arp_announce to 2.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true")]
    pub ipvs_strict_arp: Option<bool>,

    /// The IP address and port for the health check server (/healthz, /livez); empty
    /// disables it. [default: 0.0.0.0:10256]
    #[arg(long, value_name = "IP:PORT")]
    pub healthz_bind_address: Option<String>,

    /// The IP address and port for the metrics server (/metrics); empty disables it.
    /// [default: 127.0.0.1:10249]
    #[arg(long, value_name = "IP:PORT")]
    pub metrics_bind_address: Option<String>,

    /// Remove what this proxy programmed (IPVS services, BPF programs and pins) and exit.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true")]
    pub cleanup: Option<bool>,

    /// Log verbosity (klog-style: 0 info, 2 more detail, 4 debug, 6+ trace). Overrides the
    /// config file.
    #[arg(short = 'v', long = "v", value_name = "LEVEL")]
    pub verbosity: Option<u8>,

    /// Log line format. Overrides the config file.
    #[arg(long, alias = "logging-format", value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    /// Where Services and EndpointSlices come from: 'kube' (the API server) or 'file'
    /// (--manifests).
    #[arg(long, value_enum, default_value_t = SourceKind::Kube)]
    pub source: SourceKind,

    /// Directory of Service and EndpointSlice manifests (YAML/JSON), for --source file.
    #[arg(long, value_name = "DIR")]
    pub manifests: Option<PathBuf>,

    /// If ipvs-bpf mode is requested but the kernel lacks IPVS BPF support, run ipvs mode
    /// instead of exiting.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true")]
    pub fallback_to_ipvs: Option<bool>,

    /// Interface to attach the tc SNAT programs to (repeatable). [default: the interfaces of
    /// the default routes]
    #[arg(long, value_name = "DEV")]
    pub uplink: Vec<String>,

    /// bpffs directory where the BPF programs and maps are pinned.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_BPF_PIN_PATH)]
    pub bpf_pin_path: PathBuf,

    /// Source ports used for SNAT in ipvs-bpf mode, MIN-MAX; must not overlap the kernel's
    /// net.ipv4.ip_local_port_range. [default: 61000-65000]
    #[arg(long, value_name = "MIN-MAX")]
    pub snat_port_range: Option<String>,

    /// How long a removed TCP endpoint may drain (weight 0) before it is deleted with
    /// connections still open; 0: until its connections are gone, as kube-proxy.
    /// [default: 0s]
    #[arg(long, value_name = "DURATION")]
    pub ipvs_drain_timeout: Option<String>,

    /// Only handle Services whose label service.kubernetes.io/service-proxy-name has this
    /// value (default: only Services without that label, as kube-proxy).
    #[arg(long, value_name = "NAME")]
    pub service_proxy_name: Option<String>,

    /// Validate the flags and the --config file, print the configuration they give, and exit
    /// (0 valid, 2 invalid) without touching the node: a check before a rollout.
    #[arg(long)]
    pub check_config: bool,
}

/// The validated configuration the daemon runs with.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub mode: ProxyMode,
    pub kubeconfig: Option<PathBuf>,
    pub master: Option<String>,
    /// Lowercased and trimmed; `None`: use the hostname.
    pub hostname_override: Option<String>,
    /// At most one per family.
    pub cluster_cidrs: Vec<Cidr>,
    pub nodeport_addresses: NodePortAddresses,
    pub masquerade_all: bool,
    pub ipvs_scheduler: String,
    pub sync_period: Duration,
    pub min_sync_period: Duration,
    /// Zero: leave the kernel's value.
    pub ipvs_tcp_timeout: Duration,
    pub ipvs_tcpfin_timeout: Duration,
    pub ipvs_udp_timeout: Duration,
    pub ipvs_exclude_cidrs: Vec<Cidr>,
    pub ipvs_strict_arp: bool,
    /// `None`: disabled.
    pub healthz_bind_address: Option<SocketAddr>,
    pub metrics_bind_address: Option<SocketAddr>,
    pub cleanup: bool,
    pub verbosity: u8,
    pub log_format: LogFormat,
    pub source: SourceKind,
    pub manifests: Option<PathBuf>,
    pub fallback_to_ipvs: bool,
    /// Empty: the interfaces of the default routes.
    pub uplinks: Vec<String>,
    pub bpf_pin_path: PathBuf,
    pub snat_port_range: PortRange,
    pub service_proxy_name: Option<String>,
    /// `None`: a removed endpoint drains until its connections are gone.
    pub drain_timeout: Option<Duration>,
    /// Unknown or ignored settings (config file fields, flags shadowed by
    /// `--config`); returned rather than logged because logging is set up
    /// from this very config.
    pub warnings: Vec<String>,
}

impl Config {
    /// Validates `args`, reading the `--config` file if given.
    pub fn from_args(args: Args) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(path) => Some(FileConfig::load(path)?),
            None => None,
        };
        resolve(args, file)
    }

    /// The health timeout of `/healthz`: kube-proxy uses twice the sync
    /// period (`server.go`), so one missed periodic sync is tolerated.
    pub fn health_timeout(&self) -> Duration {
        self.sync_period.saturating_mul(2)
    }
}

/// The subset of a KubeProxyConfiguration we read; `None` is "not set or
/// zero value", which v1alpha1 defaulting treats the same.
#[derive(Debug, Default)]
struct FileConfig {
    path: PathBuf,
    mode: Option<String>,
    kubeconfig: Option<PathBuf>,
    hostname_override: Option<String>,
    cluster_cidr: Option<String>,
    nodeport_addresses: Option<Vec<String>>,
    masquerade_all: Option<bool>,
    healthz_bind_address: Option<String>,
    metrics_bind_address: Option<String>,
    scheduler: Option<String>,
    sync_period: Option<String>,
    min_sync_period: Option<String>,
    tcp_timeout: Option<String>,
    tcpfin_timeout: Option<String>,
    udp_timeout: Option<String>,
    exclude_cidrs: Option<Vec<String>>,
    strict_arp: Option<bool>,
    verbosity: Option<u8>,
    log_format: Option<String>,
    warnings: Vec<String>,
}

/// Fields of v1alpha1 that are known but have no meaning here: ignored
/// silently when left at their zero value (kubeadm writes them all), with a
/// warning otherwise.
const KNOWN_UNUSED: &[&str] = &[
    "bindAddress",
    "bindAddressHardFail",
    "configSyncPeriod",
    "conntrack",
    "detectLocal",
    "detectLocalMode",
    "enableProfiling",
    "featureGates",
    "iptables",
    "nftables",
    "linux",
    "oomScoreAdj",
    "portRange",
    "showHiddenMetricsForVersion",
    "udpIdleTimeout",
    "winkernel",
    "windowsRunAsService",
    "syncPeriod",
    "minSyncPeriod",
];

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty() || s == "0s" || s == "0",
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.values().all(is_zero),
    }
}

/// One object of the file, with the path to name fields in errors.
struct Obj<'a> {
    file: &'a Path,
    prefix: &'static str,
    map: &'a serde_json::Map<String, Value>,
}

impl<'a> Obj<'a> {
    fn name(&self, key: &str) -> String {
        format!("{}: {}{}", self.file.display(), self.prefix, key)
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn type_err(&self, key: &str, v: &Value, want: &str) -> ConfigError {
        invalid(&self.name(key), &v.to_string(), format!("expected {want}"))
    }

    /// A string; empty counts as unset (v1alpha1 defaulting).
    fn string(&self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(self.type_err(key, v, "a string")),
        }
    }

    fn boolean(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.type_err(key, v, "true or false")),
        }
    }

    fn strings(&self, key: &str) -> Result<Option<Vec<String>>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| match i {
                    Value::String(s) => Ok(s.clone()),
                    v => Err(self.type_err(key, v, "a list of strings")),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(|v| (!v.is_empty()).then_some(v)),
            Some(v) => Err(self.type_err(key, v, "a list of strings")),
        }
    }

    fn object(&self, key: &str, prefix: &'static str) -> Result<Option<Obj<'a>>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(Obj {
                file: self.file,
                prefix,
                map,
            })),
            Some(v) => Err(self.type_err(key, v, "an object")),
        }
    }

    /// Warns about every key not in `used` (silently skipping zero-valued
    /// `known_unused` ones).
    fn warn_unknown(&self, used: &[&str], known_unused: &[&str], warnings: &mut Vec<String>) {
        for (k, v) in self.map {
            if used.contains(&k.as_str()) {
                continue;
            }
            if known_unused.contains(&k.as_str()) {
                // bindAddress defaults to the unspecified address.
                let default_bind =
                    k == "bindAddress" && matches!(v.as_str(), Some("0.0.0.0" | "::"));
                if !is_zero(v) && !default_bind {
                    warnings.push(format!(
                        "{}: not used by ipvsbpf-proxy; ignored",
                        self.name(k)
                    ));
                }
            } else {
                warnings.push(format!("{}: unknown field; ignored", self.name(k)));
            }
        }
    }
}

impl FileConfig {
    fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
            path: path.to_path_buf(),
            source,
        })?;
        FileConfig::parse(path, &text)
    }

    /// JSON when the document starts with `{`, YAML otherwise.
    fn parse(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
        let value: Value = if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| ConfigError::Parse {
                path: path.to_path_buf(),
                format: "JSON",
                reason: e.to_string(),
            })?
        } else {
            serde_saphyr::from_str(text).map_err(|e| ConfigError::Parse {
                path: path.to_path_buf(),
                format: "YAML",
                reason: e.to_string(),
            })?
        };
        let Value::Object(map) = &value else {
            return Err(ConfigError::Parse {
                path: path.to_path_buf(),
                format: "KubeProxyConfiguration",
                reason: "the document is not an object".into(),
            });
        };
        let top = Obj {
            file: path,
            prefix: "",
            map,
        };
        match top.string("kind")? {
            Some(k) if k == CONFIG_KIND => {}
            other => {
                return Err(invalid(
                    &top.name("kind"),
                    other.as_deref().unwrap_or(""),
                    format!("expected {CONFIG_KIND}"),
                ))
            }
        }
        match top.string("apiVersion")? {
            Some(v) if v == CONFIG_API_VERSION => {}
            other => {
                return Err(invalid(
                    &top.name("apiVersion"),
                    other.as_deref().unwrap_or(""),
                    format!("expected {CONFIG_API_VERSION}"),
                ))
            }
        }
        let mut fc = FileConfig {
            path: path.to_path_buf(),
            mode: top.string("mode")?,
            hostname_override: top.string("hostnameOverride")?,
            cluster_cidr: top.string("clusterCIDR")?,
            nodeport_addresses: top.strings("nodePortAddresses")?,
            masquerade_all: top.boolean("masqueradeAll")?,
            healthz_bind_address: top.string("healthzBindAddress")?,
            metrics_bind_address: top.string("metricsBindAddress")?,
            ..FileConfig::default()
        };
        let mut warnings = Vec::new();
        top.warn_unknown(
            &[
                "kind",
                "apiVersion",
                "mode",
                "clientConnection",
                "hostnameOverride",
                "clusterCIDR",
                "nodePortAddresses",
                "masqueradeAll",
                "healthzBindAddress",
                "metricsBindAddress",
                "ipvs",
                "logging",
            ],
            KNOWN_UNUSED,
            &mut warnings,
        );
        if let Some(cc) = top.object("clientConnection", "clientConnection.")? {
            fc.kubeconfig = cc.string("kubeconfig")?.map(PathBuf::from);
            cc.warn_unknown(
                &["kubeconfig"],
                &["acceptContentTypes", "burst", "contentType", "qps"],
                &mut warnings,
            );
        }
        if let Some(ipvs) = top.object("ipvs", "ipvs.")? {
            fc.scheduler = ipvs.string("scheduler")?;
            fc.sync_period = ipvs.string("syncPeriod")?;
            // Unlike syncPeriod, an explicit 0 here is a value (no
            // defaulting in v1alpha1): keep "0s".
            fc.min_sync_period = ipvs.string("minSyncPeriod")?;
            fc.tcp_timeout = ipvs.string("tcpTimeout")?;
            fc.tcpfin_timeout = ipvs.string("tcpFinTimeout")?;
            fc.udp_timeout = ipvs.string("udpTimeout")?;
            fc.exclude_cidrs = ipvs.strings("excludeCIDRs")?;
            fc.strict_arp = ipvs.boolean("strictARP")?;
            ipvs.warn_unknown(
                &[
                    "scheduler",
                    "syncPeriod",
                    "minSyncPeriod",
                    "tcpTimeout",
                    "tcpFinTimeout",
                    "udpTimeout",
                    "excludeCIDRs",
                    "strictARP",
                ],
                &[],
                &mut warnings,
            );
        }
        if let Some(log) = top.object("logging", "logging.")? {
            fc.log_format = log.string("format")?;
            fc.verbosity = match log.get("verbosity") {
                None => None,
                Some(v) => Some(
                    v.as_u64()
                        .and_then(|n| u8::try_from(n).ok())
                        .ok_or_else(|| log.type_err("verbosity", v, "an integer 0..=255"))?,
                ),
            };
            log.warn_unknown(
                &["format", "verbosity"],
                &["flushFrequency", "options", "vmodule"],
                &mut warnings,
            );
        }
        fc.warnings = warnings;
        Ok(fc)
    }
}

/// Where a value came from, to name it in errors.
#[derive(Clone, Copy)]
enum Origin<'a> {
    Flag(&'static str),
    File(&'a Path, &'static str),
}

impl Origin<'_> {
    fn name(self) -> String {
        match self {
            Origin::Flag(f) => f.to_string(),
            Origin::File(p, f) => format!("{}: {f}", p.display()),
        }
    }
}

fn duration(src: Origin<'_>, s: &str) -> Result<Duration, ConfigError> {
    parse_go_duration(s).map_err(|r| invalid(&src.name(), s, r))
}

/// IPVS timeouts are whole seconds in the kernel.
fn ipvs_timeout(src: Origin<'_>, s: &str) -> Result<Duration, ConfigError> {
    let d = duration(src, s)?;
    if d.subsec_nanos() != 0 {
        return Err(invalid(
            &src.name(),
            s,
            "IPVS timeouts are whole seconds (e.g. 15s, 2m0s)",
        ));
    }
    if d.as_secs() > u64::from(u32::MAX) {
        return Err(invalid(&src.name(), s, "too large for IPVS"));
    }
    Ok(d)
}

fn cidrs(src: Origin<'_>, items: &[String]) -> Result<Vec<Cidr>, ConfigError> {
    items
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<Cidr>().map_err(|r| invalid(&src.name(), s, r)))
        .collect()
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// `IP:PORT`, `[IPv6]:PORT`, or an address alone (kube-proxy appends the
/// default port, `AppendPortIfNeeded`).
fn bind_address(src: Origin<'_>, s: &str, default_port: u16) -> Result<SocketAddr, ConfigError> {
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok(sa);
    }
    let bare = s.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(ip) => Ok(SocketAddr::new(ip, default_port)),
        Err(_) => Err(invalid(
            &src.name(),
            s,
            "expected IP:PORT, e.g. 0.0.0.0:10256 or [::]:10256",
        )),
    }
}

fn interface_name(s: &str) -> Result<String, ConfigError> {
    // IFNAMSIZ is 16 including the NUL.
    let ok = !s.is_empty()
        && s.len() < 16
        && s != "."
        && s != ".."
        && !s.contains(|c: char| c == '/' || c == ':' || c.is_whitespace());
    if ok {
        Ok(s.to_string())
    } else {
        Err(invalid(
            "--uplink",
            s,
            "not an interface name (1-15 characters, no '/', ':' or spaces)",
        ))
    }
}

/// A label value (`service.kubernetes.io/service-proxy-name`): at most 63
/// characters, alphanumerics and `-_.`, alphanumeric at both ends.
fn label_value(field: &str, s: &str) -> Result<String, ConfigError> {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && alnum(s.chars().next())
        && alnum(s.chars().last());
    if ok {
        Ok(s.to_string())
    } else {
        Err(invalid(
            field,
            s,
            "not a label value (at most 63 of [A-Za-z0-9._-], alphanumeric at both ends)",
        ))
    }
}

fn resolve(args: Args, file: Option<FileConfig>) -> Result<Config, ConfigError> {
    let mut warnings = Vec::new();

    // With --config, the flags that have a file field are ignored.
    if file.is_some() {
        let shadowed = [
            ("--proxy-mode", args.proxy_mode.is_some()),
            ("--kubeconfig", args.kubeconfig.is_some()),
            ("--cluster-cidr", args.cluster_cidr.is_some()),
            ("--nodeport-addresses", args.nodeport_addresses.is_some()),
            ("--masquerade-all", args.masquerade_all.is_some()),
            ("--ipvs-scheduler", args.ipvs_scheduler.is_some()),
            ("--ipvs-sync-period", args.ipvs_sync_period.is_some()),
            (
                "--ipvs-min-sync-period",
                args.ipvs_min_sync_period.is_some(),
            ),
            ("--ipvs-tcp-timeout", args.ipvs_tcp_timeout.is_some()),
            ("--ipvs-tcpfin-timeout", args.ipvs_tcpfin_timeout.is_some()),
            ("--ipvs-udp-timeout", args.ipvs_udp_timeout.is_some()),
            ("--ipvs-exclude-cidrs", args.ipvs_exclude_cidrs.is_some()),
            ("--ipvs-strict-arp", args.ipvs_strict_arp.is_some()),
            (
                "--healthz-bind-address",
                args.healthz_bind_address.is_some(),
            ),
            (
                "--metrics-bind-address",
                args.metrics_bind_address.is_some(),
            ),
        ];
        for (flag, given) in shadowed {
            if given {
                warnings.push(format!(
                    "{flag} is ignored because --config is given (as kube-proxy)"
                ));
            }
        }
    }

    let file_path = file.as_ref().map(|f| f.path.clone());
    let fp = file_path.as_deref().unwrap_or(Path::new(""));

    // Picks the file's value when --config is given, else the flag's;
    // returns the value with its origin for error messages.
    macro_rules! pick {
        ($file_field:ident, $flag_value:expr, $flag:literal, $file_name:literal) => {
            match &file {
                Some(f) => f
                    .$file_field
                    .clone()
                    .map(|v| (v, Origin::File(fp, $file_name))),
                None => $flag_value.map(|v| (v, Origin::Flag($flag))),
            }
        };
    }

    let mode = match pick!(mode, args.proxy_mode.clone(), "--proxy-mode", "mode") {
        Some((m, src)) => ProxyMode::parse(&src.name(), &m)?,
        None => ProxyMode::IpvsBpf,
    };

    let kubeconfig = pick!(
        kubeconfig,
        args.kubeconfig.clone(),
        "--kubeconfig",
        "clientConnection.kubeconfig"
    )
    .map(|(p, _)| p);

    // --hostname-override wins over the file (processHostnameOverrideFlag).
    let hostname_override = match (&args.hostname_override, &file) {
        (Some(h), _) if !h.is_empty() => {
            let t = h.trim();
            if t.is_empty() {
                return Err(invalid(
                    "--hostname-override",
                    h,
                    "empty hostname-override is invalid",
                ));
            }
            Some(t.to_lowercase())
        }
        (_, Some(f)) => f
            .hostname_override
            .as_ref()
            .map(|h| h.trim().to_lowercase()),
        _ => None,
    };

    let cluster_cidrs = match pick!(
        cluster_cidr,
        args.cluster_cidr.clone(),
        "--cluster-cidr",
        "clusterCIDR"
    ) {
        Some((s, src)) => {
            let list = cidrs(src, &split_list(&s))?;
            let v4 = list.iter().filter(|c| c.is_ipv4()).count();
            if list.len() > 2 || (list.len() == 2 && v4 != 1) {
                return Err(invalid(
                    &src.name(),
                    &s,
                    "expected one CIDR or a dual-stack pair (one IPv4, one IPv6)",
                ));
            }
            list
        }
        None => Vec::new(),
    };

    let nodeport_addresses = match pick!(
        nodeport_addresses,
        args.nodeport_addresses.as_deref().map(split_list),
        "--nodeport-addresses",
        "nodePortAddresses"
    ) {
        None => NodePortAddresses::All,
        Some((items, _)) if items.is_empty() => NodePortAddresses::All,
        Some((items, src)) => {
            if items.iter().any(|i| i == "primary") {
                if items.len() != 1 {
                    return Err(invalid(
                        &src.name(),
                        &items.join(","),
                        "'primary' cannot be combined with CIDRs",
                    ));
                }
                NodePortAddresses::Primary
            } else {
                NodePortAddresses::Cidrs(cidrs(src, &items)?)
            }
        }
    };

    let masquerade_all = pick!(
        masquerade_all,
        args.masquerade_all,
        "--masquerade-all",
        "masqueradeAll"
    )
    .is_some_and(|(b, _)| b);

    let ipvs_scheduler = match pick!(
        scheduler,
        args.ipvs_scheduler.clone(),
        "--ipvs-scheduler",
        "ipvs.scheduler"
    ) {
        None => "rr".to_string(),
        Some((s, _)) if s.is_empty() => "rr".to_string(),
        Some((s, src)) => {
            if !IPVS_SCHEDULERS.contains(&s.as_str()) {
                return Err(invalid(
                    &src.name(),
                    &s,
                    format!(
                        "unknown IPVS scheduler; one of {}",
                        IPVS_SCHEDULERS.join(", ")
                    ),
                ));
            }
            s
        }
    };

    let sync_period = match pick!(
        sync_period,
        args.ipvs_sync_period.clone(),
        "--ipvs-sync-period",
        "ipvs.syncPeriod"
    ) {
        None => DEFAULT_SYNC_PERIOD,
        Some((s, src)) => {
            let d = duration(src, &s)?;
            match (d.is_zero(), src) {
                // v1alpha1 defaulting: a zero syncPeriod in the file is
                // unset (kubeadm writes "0s").
                (true, Origin::File(..)) => DEFAULT_SYNC_PERIOD,
                (true, Origin::Flag(_)) => {
                    return Err(invalid(&src.name(), &s, "must be greater than 0"))
                }
                (false, _) => d,
            }
        }
    };

    let min_sync_period = match pick!(
        min_sync_period,
        args.ipvs_min_sync_period.clone(),
        "--ipvs-min-sync-period",
        "ipvs.minSyncPeriod"
    ) {
        None => DEFAULT_MIN_SYNC_PERIOD,
        Some((s, src)) => {
            let d = duration(src, &s)?;
            if d > sync_period {
                return Err(invalid(
                    &src.name(),
                    &s,
                    format!(
                        "must not exceed the sync period ({})",
                        format_go_duration(sync_period)
                    ),
                ));
            }
            d
        }
    };

    let timeout = |v: Option<(String, Origin<'_>)>| -> Result<Duration, ConfigError> {
        match v {
            None => Ok(Duration::ZERO),
            Some((s, src)) => ipvs_timeout(src, &s),
        }
    };
    let ipvs_tcp_timeout = timeout(pick!(
        tcp_timeout,
        args.ipvs_tcp_timeout.clone(),
        "--ipvs-tcp-timeout",
        "ipvs.tcpTimeout"
    ))?;
    let ipvs_tcpfin_timeout = timeout(pick!(
        tcpfin_timeout,
        args.ipvs_tcpfin_timeout.clone(),
        "--ipvs-tcpfin-timeout",
        "ipvs.tcpFinTimeout"
    ))?;
    let ipvs_udp_timeout = timeout(pick!(
        udp_timeout,
        args.ipvs_udp_timeout.clone(),
        "--ipvs-udp-timeout",
        "ipvs.udpTimeout"
    ))?;

    let ipvs_exclude_cidrs = match pick!(
        exclude_cidrs,
        args.ipvs_exclude_cidrs.as_deref().map(split_list),
        "--ipvs-exclude-cidrs",
        "ipvs.excludeCIDRs"
    ) {
        None => Vec::new(),
        Some((items, src)) => cidrs(src, &items)?,
    };

    let ipvs_strict_arp = pick!(
        strict_arp,
        args.ipvs_strict_arp,
        "--ipvs-strict-arp",
        "ipvs.strictARP"
    )
    .is_some_and(|(b, _)| b);

    // A flag given as "" disables the server (kube-proxy: "Set empty to
    // disable"); in the file "" is unset and defaults.
    let server = |v: Option<(String, Origin<'_>)>,
                  default: SocketAddr,
                  port: u16|
     -> Result<Option<SocketAddr>, ConfigError> {
        match v {
            None => Ok(Some(default)),
            Some((s, Origin::Flag(_))) if s.trim().is_empty() => Ok(None),
            Some((s, src)) => bind_address(src, s.trim(), port).map(Some),
        }
    };
    let healthz_bind_address = server(
        pick!(
            healthz_bind_address,
            args.healthz_bind_address.clone(),
            "--healthz-bind-address",
            "healthzBindAddress"
        ),
        SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), HEALTHZ_PORT),
        HEALTHZ_PORT,
    )?;
    let metrics_bind_address = server(
        pick!(
            metrics_bind_address,
            args.metrics_bind_address.clone(),
            "--metrics-bind-address",
            "metricsBindAddress"
        ),
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), METRICS_PORT),
        METRICS_PORT,
    )?;

    // Logging: flags win over the file (copyLogsFromFlags).
    let verbosity = args
        .verbosity
        .or_else(|| file.as_ref().and_then(|f| f.verbosity))
        .unwrap_or(0);
    let log_format = match (
        args.log_format,
        file.as_ref().and_then(|f| f.log_format.clone()),
    ) {
        (Some(f), _) => f,
        (None, Some(s)) => match s.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            _ => {
                return Err(invalid(
                    &Origin::File(fp, "logging.format").name(),
                    &s,
                    "expected \"text\" or \"json\"",
                ))
            }
        },
        (None, None) => LogFormat::Text,
    };

    if args.source == SourceKind::File && args.manifests.is_none() {
        return Err(ConfigError::Conflict {
            field: "--manifests".into(),
            reason: "required with --source file".into(),
        });
    }
    if args.source == SourceKind::Kube && args.manifests.is_some() {
        return Err(ConfigError::Conflict {
            field: "--manifests".into(),
            reason: "only used with --source file".into(),
        });
    }

    let uplinks = args
        .uplink
        .iter()
        .map(|u| interface_name(u))
        .collect::<Result<Vec<_>, _>>()?;

    if !args.bpf_pin_path.is_absolute() {
        return Err(invalid(
            "--bpf-pin-path",
            &args.bpf_pin_path.display().to_string(),
            "must be an absolute path (a bpffs directory)",
        ));
    }

    let snat_port_range = match &args.snat_port_range {
        None => DEFAULT_SNAT_PORT_RANGE,
        Some(s) => PortRange::parse(s).map_err(|r| invalid("--snat-port-range", s, r))?,
    };

    let drain_timeout = match &args.ipvs_drain_timeout {
        None => None,
        Some(s) => {
            Some(duration(Origin::Flag("--ipvs-drain-timeout"), s)?).filter(|d| !d.is_zero())
        }
    };

    let service_proxy_name = args
        .service_proxy_name
        .as_deref()
        .map(|s| label_value("--service-proxy-name", s))
        .transpose()?;

    if let Some(f) = &file {
        warnings.extend(f.warnings.iter().cloned());
    }

    Ok(Config {
        mode,
        kubeconfig,
        master: args.master.filter(|m| !m.is_empty()),
        hostname_override,
        cluster_cidrs,
        nodeport_addresses,
        masquerade_all,
        ipvs_scheduler,
        sync_period,
        min_sync_period,
        ipvs_tcp_timeout,
        ipvs_tcpfin_timeout,
        ipvs_udp_timeout,
        ipvs_exclude_cidrs,
        ipvs_strict_arp,
        healthz_bind_address,
        metrics_bind_address,
        cleanup: args.cleanup.unwrap_or(false),
        verbosity,
        log_format,
        source: args.source,
        manifests: args.manifests,
        fallback_to_ipvs: args.fallback_to_ipvs.unwrap_or(false),
        uplinks,
        bpf_pin_path: args.bpf_pin_path,
        snat_port_range,
        service_proxy_name,
        drain_timeout,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(argv: &[&str]) -> Result<Config, ConfigError> {
        let mut full = vec!["ipvsbpf-proxy"];
        full.extend_from_slice(argv);
        let args = Args::try_parse_from(full).map_err(|e| ConfigError::Conflict {
            field: "clap".into(),
            reason: e.to_string(),
        })?;
        Config::from_args(args)
    }

    fn ok(argv: &[&str]) -> Config {
        match parse(argv) {
            Ok(c) => c,
            Err(e) => panic!("{argv:?}: {e}"),
        }
    }

    fn err(argv: &[&str]) -> String {
        match parse(argv) {
            Ok(c) => panic!("{argv:?} accepted: {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn cidr(s: &str) -> Cidr {
        match s.parse() {
            Ok(c) => c,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    /// A config file in a fresh temp dir; the dir lives as long as the path.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str, text: &str) -> TempFile {
            let dir = std::env::temp_dir().join(format!(
                "ipvsbpf-cli-{}-{}",
                std::process::id(),
                name.replace('.', "-")
            ));
            std::fs::create_dir_all(&dir).expect("temp dir");
            let path = dir.join(name);
            std::fs::write(&path, text).expect("write temp file");
            TempFile(path)
        }
        fn arg(&self) -> String {
            self.0.display().to_string()
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            if let Some(dir) = self.0.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }

    #[test]
    fn defaults_match_kube_proxy_and_ours() {
        let c = ok(&[]);
        assert_eq!(c.mode, ProxyMode::IpvsBpf);
        assert_eq!(c.kubeconfig, None);
        assert_eq!(c.master, None);
        assert_eq!(c.hostname_override, None);
        assert!(c.cluster_cidrs.is_empty());
        assert_eq!(c.nodeport_addresses, NodePortAddresses::All);
        assert!(!c.masquerade_all);
        assert_eq!(c.ipvs_scheduler, "rr");
        assert_eq!(c.sync_period, Duration::from_secs(30));
        assert_eq!(c.min_sync_period, Duration::from_secs(1));
        assert_eq!(c.ipvs_tcp_timeout, Duration::ZERO);
        assert_eq!(c.ipvs_tcpfin_timeout, Duration::ZERO);
        assert_eq!(c.ipvs_udp_timeout, Duration::ZERO);
        assert!(c.ipvs_exclude_cidrs.is_empty());
        assert!(!c.ipvs_strict_arp);
        assert_eq!(c.healthz_bind_address, "0.0.0.0:10256".parse().ok());
        assert_eq!(c.metrics_bind_address, "127.0.0.1:10249".parse().ok());
        assert!(!c.cleanup);
        assert_eq!(c.verbosity, 0);
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.source, SourceKind::Kube);
        assert_eq!(c.manifests, None);
        assert!(!c.fallback_to_ipvs);
        assert!(c.uplinks.is_empty());
        assert_eq!(c.bpf_pin_path, PathBuf::from("/sys/fs/bpf/ipvsbpf"));
        assert_eq!(
            c.snat_port_range,
            PortRange {
                min: 61000,
                max: 65000
            }
        );
        assert_eq!(c.service_proxy_name, None);
        assert!(c.warnings.is_empty());
        assert_eq!(c.health_timeout(), Duration::from_secs(60));
    }

    #[test]
    fn each_flag_lands_in_its_field() {
        let c = ok(&[
            "--proxy-mode=ipvs",
            "--kubeconfig",
            "/etc/kp.conf",
            "--master=https://10.0.0.1:6443",
            "--hostname-override",
            "  Node-A ",
            "--cluster-cidr=10.244.0.0/16,fd00:244::/56",
            "--nodeport-addresses=192.168.0.0/24, 10.0.0.0/8",
            "--masquerade-all",
            "--ipvs-scheduler=wlc",
            "--ipvs-sync-period=1m0s",
            "--ipvs-min-sync-period=500ms",
            "--ipvs-tcp-timeout=2h",
            "--ipvs-tcpfin-timeout=15s",
            "--ipvs-udp-timeout=1m30s",
            "--ipvs-exclude-cidrs=10.1.0.0/16,10.2.0.0/16",
            "--ipvs-strict-arp=true",
            "--healthz-bind-address=[::]:10266",
            "--metrics-bind-address=0.0.0.0",
            "--cleanup",
            "-v",
            "4",
            "--log-format=json",
            "--source=file",
            "--manifests=/srv/manifests",
            "--fallback-to-ipvs",
            "--uplink=eth0",
            "--uplink",
            "bond0.100",
            "--bpf-pin-path=/sys/fs/bpf/other",
            "--snat-port-range=62000-62999",
            "--service-proxy-name=ipvsbpf",
        ]);
        assert_eq!(c.mode, ProxyMode::Ipvs);
        assert_eq!(c.kubeconfig, Some(PathBuf::from("/etc/kp.conf")));
        assert_eq!(c.master.as_deref(), Some("https://10.0.0.1:6443"));
        assert_eq!(c.hostname_override.as_deref(), Some("node-a"));
        assert_eq!(
            c.cluster_cidrs,
            vec![cidr("10.244.0.0/16"), cidr("fd00:244::/56")]
        );
        assert_eq!(
            c.nodeport_addresses,
            NodePortAddresses::Cidrs(vec![cidr("192.168.0.0/24"), cidr("10.0.0.0/8")])
        );
        assert!(c.masquerade_all);
        assert_eq!(c.ipvs_scheduler, "wlc");
        assert_eq!(c.sync_period, Duration::from_secs(60));
        assert_eq!(c.min_sync_period, Duration::from_millis(500));
        assert_eq!(c.ipvs_tcp_timeout, Duration::from_secs(7200));
        assert_eq!(c.ipvs_tcpfin_timeout, Duration::from_secs(15));
        assert_eq!(c.ipvs_udp_timeout, Duration::from_secs(90));
        assert_eq!(
            c.ipvs_exclude_cidrs,
            vec![cidr("10.1.0.0/16"), cidr("10.2.0.0/16")]
        );
        assert!(c.ipvs_strict_arp);
        assert_eq!(c.healthz_bind_address, "[::]:10266".parse().ok());
        // An address without port gets kube-proxy's default port.
        assert_eq!(c.metrics_bind_address, "0.0.0.0:10249".parse().ok());
        assert!(c.cleanup);
        assert_eq!(c.verbosity, 4);
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.source, SourceKind::File);
        assert_eq!(c.manifests, Some(PathBuf::from("/srv/manifests")));
        assert!(c.fallback_to_ipvs);
        assert_eq!(c.uplinks, vec!["eth0".to_string(), "bond0.100".to_string()]);
        assert_eq!(c.bpf_pin_path, PathBuf::from("/sys/fs/bpf/other"));
        assert_eq!(
            c.snat_port_range,
            PortRange {
                min: 62000,
                max: 62999
            }
        );
        assert_eq!(c.service_proxy_name.as_deref(), Some("ipvsbpf"));
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn small_flag_forms() {
        type Check = fn(&Config) -> bool;
        let cases: &[(&[&str], Check)] = &[
            (&["--nodeport-addresses=primary"], |c| {
                c.nodeport_addresses == NodePortAddresses::Primary
            }),
            (&["--masquerade-all=false"], |c| !c.masquerade_all),
            (&["--v=3"], |c| c.verbosity == 3),
            (&["-v2"], |c| c.verbosity == 2),
            (&["--logging-format=json"], |c| {
                c.log_format == LogFormat::Json
            }),
            (&["--metrics-bind-address="], |c| {
                c.metrics_bind_address.is_none()
            }),
            (&["--healthz-bind-address="], |c| {
                c.healthz_bind_address.is_none()
            }),
            (&["--ipvs-min-sync-period=0"], |c| {
                c.min_sync_period.is_zero()
            }),
            (&["--cluster-cidr=10.244.1.7/16"], |c| {
                c.cluster_cidrs == vec![cidr("10.244.0.0/16")]
            }),
            (&["--proxy-mode=ipvs-bpf"], |c| c.mode == ProxyMode::IpvsBpf),
        ];
        for (argv, check) in cases {
            let c = ok(argv);
            assert!(check(&c), "{argv:?}: {c:?}");
        }
    }

    #[test]
    fn bad_values_name_the_flag() {
        let cases: &[(&[&str], &[&str])] = &[
            (
                &["--proxy-mode=iptables"],
                &["--proxy-mode", "iptables", "does not implement"],
            ),
            (
                &["--proxy-mode=foo"],
                &["--proxy-mode", "unknown proxy mode"],
            ),
            (
                &["--cluster-cidr=10.0.0.0/33"],
                &["--cluster-cidr", "prefix length"],
            ),
            (
                &["--cluster-cidr=10.0.0.0"],
                &["--cluster-cidr", "not a CIDR"],
            ),
            (
                &["--cluster-cidr=10.0.0.0/8,10.1.0.0/16"],
                &["--cluster-cidr", "dual-stack"],
            ),
            (
                &["--nodeport-addresses=primary,10.0.0.0/8"],
                &["--nodeport-addresses", "primary"],
            ),
            (
                &["--nodeport-addresses=eth0"],
                &["--nodeport-addresses", "eth0"],
            ),
            (
                &["--ipvs-scheduler=fastest"],
                &["--ipvs-scheduler", "unknown IPVS scheduler"],
            ),
            (
                &["--ipvs-sync-period=0s"],
                &["--ipvs-sync-period", "greater than 0"],
            ),
            (
                &["--ipvs-sync-period=30"],
                &["--ipvs-sync-period", "missing unit"],
            ),
            (
                &["--ipvs-sync-period=-5s"],
                &["--ipvs-sync-period", "negative"],
            ),
            (
                &["--ipvs-sync-period=5x"],
                &["--ipvs-sync-period", "unknown unit"],
            ),
            (
                &["--ipvs-sync-period=10s", "--ipvs-min-sync-period=20s"],
                &["--ipvs-min-sync-period", "must not exceed"],
            ),
            (
                &["--ipvs-tcp-timeout=1500ms"],
                &["--ipvs-tcp-timeout", "whole seconds"],
            ),
            (&["--ipvs-udp-timeout=abc"], &["--ipvs-udp-timeout"]),
            (
                &["--ipvs-exclude-cidrs=10.0.0.0/8,nope"],
                &["--ipvs-exclude-cidrs", "nope"],
            ),
            (
                &["--healthz-bind-address=localhost:1"],
                &["--healthz-bind-address", "IP:PORT"],
            ),
            (
                &["--metrics-bind-address=1.2.3.4:99999"],
                &["--metrics-bind-address"],
            ),
            (
                &["--hostname-override=   "],
                &["--hostname-override", "empty"],
            ),
            (&["--source=file"], &["--manifests", "required"]),
            (
                &["--manifests=/x"],
                &["--manifests", "only used with --source file"],
            ),
            (&["--uplink=this-name-is-too-long"], &["--uplink"]),
            (&["--uplink=a/b"], &["--uplink"]),
            (
                &["--bpf-pin-path=relative/dir"],
                &["--bpf-pin-path", "absolute"],
            ),
            (
                &["--snat-port-range=65000-61000"],
                &["--snat-port-range", "above"],
            ),
            (
                &["--snat-port-range=61000"],
                &["--snat-port-range", "MIN-MAX"],
            ),
            (
                &["--snat-port-range=0-10"],
                &["--snat-port-range", "1..=65535"],
            ),
            (
                &["--snat-port-range=61000-70000"],
                &["--snat-port-range", "70000"],
            ),
            (
                &["--service-proxy-name=-bad"],
                &["--service-proxy-name", "label value"],
            ),
            (&["--log-format=xml"], &["xml"]),
            (&["--masquerade-all=maybe"], &["maybe"]),
        ];
        for (argv, needles) in cases {
            let msg = err(argv);
            for n in *needles {
                assert!(msg.contains(n), "{argv:?}: {msg:?} lacks {n:?}");
            }
        }
    }

    #[test]
    fn go_durations() {
        let good: &[(&str, Duration)] = &[
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("30s", Duration::from_secs(30)),
            ("1m0s", Duration::from_secs(60)),
            ("1h2m3s", Duration::from_secs(3723)),
            ("500ms", Duration::from_millis(500)),
            ("1.5s", Duration::from_millis(1500)),
            ("2h22m", Duration::from_secs(2 * 3600 + 22 * 60)),
            ("100us", Duration::from_micros(100)),
            ("100µs", Duration::from_micros(100)),
            ("7ns", Duration::from_nanos(7)),
            ("+5s", Duration::from_secs(5)),
        ];
        for (s, want) in good {
            assert_eq!(parse_go_duration(s).as_ref(), Ok(want), "{s}");
        }
        for bad in ["", "s", "5", "1.2.3s", "-1s", "5d", "1m30", ".s"] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?} accepted");
        }
        let fmt: &[(Duration, &str)] = &[
            (Duration::ZERO, "0s"),
            (Duration::from_secs(30), "30s"),
            (Duration::from_secs(60), "1m0s"),
            (Duration::from_secs(3723), "1h2m3s"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_millis(1500), "1.5s"),
        ];
        for (d, want) in fmt {
            assert_eq!(format_go_duration(*d), *want);
            assert_eq!(parse_go_duration(want).as_ref(), Ok(d), "round trip {want}");
        }
    }

    #[test]
    fn cidr_contains_and_masks() {
        let c = cidr("10.244.3.9/16");
        assert_eq!(c.to_string(), "10.244.0.0/16");
        assert!(c.contains("10.244.255.1".parse().expect("ip")));
        assert!(!c.contains("10.245.0.1".parse().expect("ip")));
        assert!(!c.contains("::1".parse().expect("ip")));
        let z = cidr("0.0.0.0/0");
        assert!(z.contains("8.8.8.8".parse().expect("ip")));
        let v6 = cidr("fd00::1/64");
        assert_eq!(v6.to_string(), "fd00::/64");
        assert!(v6.contains("fd00::ffff".parse().expect("ip")));
        assert!(!v6.contains("fd01::1".parse().expect("ip")));
        assert!(cidr("1.2.3.4/32").contains("1.2.3.4".parse().expect("ip")));
    }

    const YAML: &str = r#"
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: ipvs
clientConnection:
  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf
  qps: 0
hostnameOverride: Worker-1
clusterCIDR: 10.244.0.0/16,fd00:10:244::/56
nodePortAddresses: ["192.168.1.0/24"]
masqueradeAll: true
healthzBindAddress: 0.0.0.0:10256
metricsBindAddress: 0.0.0.0:10249
ipvs:
  scheduler: lc
  syncPeriod: 1m0s
  minSyncPeriod: 0s
  tcpTimeout: 900s
  tcpFinTimeout: 30s
  udpTimeout: 5m
  excludeCIDRs:
  - 10.9.0.0/16
  strictARP: true
logging:
  verbosity: 2
  format: json
conntrack:
  maxPerCore: null
iptables:
  masqueradeBit: 14
bogusField: 1
"#;

    fn check_file_config(c: &Config) {
        assert_eq!(c.mode, ProxyMode::Ipvs);
        assert_eq!(
            c.kubeconfig,
            Some(PathBuf::from("/var/lib/kube-proxy/kubeconfig.conf"))
        );
        assert_eq!(c.hostname_override.as_deref(), Some("worker-1"));
        assert_eq!(
            c.cluster_cidrs,
            vec![cidr("10.244.0.0/16"), cidr("fd00:10:244::/56")]
        );
        assert_eq!(
            c.nodeport_addresses,
            NodePortAddresses::Cidrs(vec![cidr("192.168.1.0/24")])
        );
        assert!(c.masquerade_all);
        assert_eq!(c.healthz_bind_address, "0.0.0.0:10256".parse().ok());
        assert_eq!(c.metrics_bind_address, "0.0.0.0:10249".parse().ok());
        assert_eq!(c.ipvs_scheduler, "lc");
        assert_eq!(c.sync_period, Duration::from_secs(60));
        assert_eq!(c.min_sync_period, Duration::ZERO);
        assert_eq!(c.ipvs_tcp_timeout, Duration::from_secs(900));
        assert_eq!(c.ipvs_tcpfin_timeout, Duration::from_secs(30));
        assert_eq!(c.ipvs_udp_timeout, Duration::from_secs(300));
        assert_eq!(c.ipvs_exclude_cidrs, vec![cidr("10.9.0.0/16")]);
        assert!(c.ipvs_strict_arp);
        assert_eq!(c.verbosity, 2);
        assert_eq!(c.log_format, LogFormat::Json);
    }

    #[test]
    fn yaml_config_file() {
        let f = TempFile::new("kp.yaml", YAML);
        let c = ok(&["--config", &f.arg()]);
        check_file_config(&c);
        // Unknown field and a set-but-unused one warn; zero-valued known
        // ones (qps: 0, conntrack.maxPerCore: null) do not.
        let w = c.warnings.join("\n");
        assert!(w.contains("bogusField: unknown field"), "{w}");
        assert!(w.contains("iptables: not used"), "{w}");
        assert!(!w.contains("qps"), "{w}");
        assert!(!w.contains("conntrack"), "{w}");
        assert_eq!(c.warnings.len(), 2, "{w}");
    }

    #[test]
    fn json_config_file() {
        let json = serde_json::json!({
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "mode": "ipvs",
            "clientConnection": {"kubeconfig": "/var/lib/kube-proxy/kubeconfig.conf"},
            "hostnameOverride": "Worker-1",
            "clusterCIDR": "10.244.0.0/16,fd00:10:244::/56",
            "nodePortAddresses": ["192.168.1.0/24"],
            "masqueradeAll": true,
            "healthzBindAddress": "0.0.0.0:10256",
            "metricsBindAddress": "0.0.0.0:10249",
            "ipvs": {
                "scheduler": "lc", "syncPeriod": "1m0s", "minSyncPeriod": "0s",
                "tcpTimeout": "900s", "tcpFinTimeout": "30s", "udpTimeout": "5m",
                "excludeCIDRs": ["10.9.0.0/16"], "strictARP": true,
                "newThing": "x"
            },
            "logging": {"verbosity": 2, "format": "json"}
        });
        let f = TempFile::new("kp.json", &json.to_string());
        let c = ok(&["--config", &f.arg()]);
        check_file_config(&c);
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert!(c.warnings[0].contains("ipvs.newThing: unknown field"));
    }

    /// kubeadm writes every field, most at their zero value; those mean
    /// "default", without warnings.
    #[test]
    fn kubeadm_style_zero_values_default() {
        let f = TempFile::new(
            "kubeadm.yaml",
            r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
bindAddress: 0.0.0.0
bindAddressHardFail: false
clientConnection: {acceptContentTypes: "", burst: 0, contentType: "", kubeconfig: /var/lib/kube-proxy/kubeconfig.conf, qps: 0}
clusterCIDR: ""
configSyncPeriod: 0s
conntrack: {maxPerCore: null, min: null, tcpCloseWaitTimeout: null, tcpEstablishedTimeout: null}
detectLocalMode: ""
enableProfiling: false
healthzBindAddress: ""
hostnameOverride: ""
iptables: {masqueradeAll: false, masqueradeBit: null, minSyncPeriod: 0s, syncPeriod: 0s}
ipvs: {excludeCIDRs: null, minSyncPeriod: 0s, scheduler: "", strictARP: false, syncPeriod: 0s, tcpFinTimeout: 0s, tcpTimeout: 0s, udpTimeout: 0s}
metricsBindAddress: ""
mode: ""
nodePortAddresses: null
oomScoreAdj: null
portRange: ""
showHiddenMetricsForVersion: ""
winkernel: {enableDSR: false, networkName: "", sourceVip: ""}
"#,
        );
        let c = ok(&["--config", &f.arg()]);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert_eq!(c.mode, ProxyMode::IpvsBpf);
        assert_eq!(c.ipvs_scheduler, "rr");
        assert_eq!(c.sync_period, DEFAULT_SYNC_PERIOD);
        // An explicit 0 minSyncPeriod is a value, as in kube-proxy.
        assert_eq!(c.min_sync_period, Duration::ZERO);
        assert!(c.cluster_cidrs.is_empty());
        assert_eq!(c.nodeport_addresses, NodePortAddresses::All);
        assert_eq!(c.healthz_bind_address, "0.0.0.0:10256".parse().ok());
        assert_eq!(c.metrics_bind_address, "127.0.0.1:10249".parse().ok());
    }

    #[test]
    fn config_file_wins_over_flags_except_hostname_and_logging() {
        let f = TempFile::new("kp-prec.yaml", YAML);
        let c = ok(&[
            "--config",
            &f.arg(),
            "--proxy-mode=ipvs-bpf",
            "--ipvs-scheduler=rr",
            "--masquerade-all=false",
            "--hostname-override=FromFlag",
            "--v=6",
            "--log-format=text",
            "--snat-port-range=63000-63999",
            "--master=https://api:6443",
        ]);
        // File values for the shadowed flags...
        assert_eq!(c.mode, ProxyMode::Ipvs);
        assert_eq!(c.ipvs_scheduler, "lc");
        assert!(c.masquerade_all);
        // ...flags for hostname, logging and flags without a file field.
        assert_eq!(c.hostname_override.as_deref(), Some("fromflag"));
        assert_eq!(c.verbosity, 6);
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(
            c.snat_port_range,
            PortRange {
                min: 63000,
                max: 63999
            }
        );
        assert_eq!(c.master.as_deref(), Some("https://api:6443"));
        let w = c.warnings.join("\n");
        for flag in ["--proxy-mode", "--ipvs-scheduler", "--masquerade-all"] {
            assert!(w.contains(&format!("{flag} is ignored")), "{w}");
        }
        assert!(!w.contains("--hostname-override is ignored"), "{w}");
    }

    #[test]
    fn bad_config_files_name_the_field() {
        let head = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n";
        let cases: &[(&str, &str, &[&str])] = &[
            (
                "mode.yaml",
                "mode: iptables\n",
                &["mode", "iptables", "does not implement"],
            ),
            (
                "mode2.yaml",
                "mode: turbo\n",
                &["mode", "unknown proxy mode"],
            ),
            (
                "sync.yaml",
                "ipvs:\n  syncPeriod: 30\n",
                &["ipvs.syncPeriod", "a string"],
            ),
            (
                "sync2.yaml",
                "ipvs:\n  syncPeriod: 3x\n",
                &["ipvs.syncPeriod", "unknown unit"],
            ),
            (
                "sched.yaml",
                "ipvs:\n  scheduler: best\n",
                &["ipvs.scheduler"],
            ),
            (
                "cidr.yaml",
                "clusterCIDR: 10.0.0.0/40\n",
                &["clusterCIDR", "prefix length"],
            ),
            (
                "excl.yaml",
                "ipvs:\n  excludeCIDRs: [x]\n",
                &["ipvs.excludeCIDRs"],
            ),
            (
                "masq.yaml",
                "masqueradeAll: \"yes\"\n",
                &["masqueradeAll", "true or false"],
            ),
            (
                "npa.yaml",
                "nodePortAddresses: \"10.0.0.0/8\"\n",
                &["nodePortAddresses", "list"],
            ),
            (
                "hz.yaml",
                "healthzBindAddress: nowhere\n",
                &["healthzBindAddress", "IP:PORT"],
            ),
            ("ipvs.yaml", "ipvs: 3\n", &["ipvs", "an object"]),
            (
                "log.yaml",
                "logging:\n  format: xml\n",
                &["logging.format", "xml"],
            ),
            (
                "tcp.yaml",
                "ipvs:\n  tcpTimeout: 0.5s\n",
                &["ipvs.tcpTimeout", "whole seconds"],
            ),
        ];
        for (name, body, needles) in cases {
            let f = TempFile::new(name, &format!("{head}{body}"));
            let msg = err(&["--config", &f.arg()]);
            assert!(msg.contains(&f.arg()), "{name}: {msg}");
            for n in *needles {
                assert!(msg.contains(n), "{name}: {msg:?} lacks {n:?}");
            }
        }
        let docs: &[(&str, &str, &str)] = &[
            (
                "kind.yaml",
                "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: Other\n",
                "kind",
            ),
            (
                "ver.yaml",
                "apiVersion: v1\nkind: KubeProxyConfiguration\n",
                "apiVersion",
            ),
            ("list.yaml", "- a\n- b\n", "not an object"),
            ("broken.json", "{\"kind\": ", "not valid JSON"),
            ("broken.yaml", "kind: [unclosed\n", "not valid YAML"),
        ];
        for (name, body, needle) in docs {
            let f = TempFile::new(name, body);
            let msg = err(&["--config", &f.arg()]);
            assert!(msg.contains(needle), "{name}: {msg}");
        }
        let msg = err(&["--config", "/nonexistent/ipvsbpf/kp.yaml"]);
        assert!(msg.contains("/nonexistent/ipvsbpf/kp.yaml"), "{msg}");
    }

    #[test]
    fn snat_range_against_local_port_range() {
        let f = TempFile::new("ip_local_port_range", "32768\t60999\n");
        let r = |min, max| PortRange { min, max };
        assert!(check_snat_range_against(r(61000, 65000), &f.0).is_ok());
        assert!(check_snat_range_against(r(1024, 32767), &f.0).is_ok());
        for bad in [r(60999, 65000), r(30000, 40000), r(32768, 32768)] {
            let e = check_snat_range_against(bad, &f.0)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                e.contains("--snat-port-range") && e.contains("32768-60999"),
                "{bad}: {e}"
            );
        }
        let missing = check_snat_range_against(r(1, 2), Path::new("/nonexistent/range"));
        assert!(matches!(missing, Err(ConfigError::Sysctl { .. })));
    }

    #[test]
    fn help_documents_precedence_and_defaults() {
        use clap::CommandFactory;
        let help = Args::command().render_long_help().to_string();
        for needle in [
            "--config",
            "replaces every flag",
            "--hostname-override",
            "[default: 30s]",
            "[default: 0.0.0.0:10256]",
            "[default: 127.0.0.1:10249]",
            "[default: 61000-65000]",
            "--ipvs-min-sync-period",
        ] {
            assert!(help.contains(needle), "help lacks {needle:?}");
        }
        Args::command().debug_assert();
    }
}
