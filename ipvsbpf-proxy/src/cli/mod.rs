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

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use ipvs_netlink::uapi::IP_VS_BPF_MIN_ENTRIES;

pub use crate::backends::conntrack::ConntrackConfig;
pub use crate::model::desired::Cidr;

mod file;
#[cfg(test)]
mod tests;
mod values;

use file::FileConfig;
use values::{
    bind_address, cidrs, duration, interface_name, ipvs_timeout, label_value, split_list, Origin,
};
pub use values::{check_snat_range_against, format_go_duration, parse_go_duration, PortRange};

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
/// Default `--bpf-session-map-entries`: 32,768 SNAT connections.
pub const DEFAULT_SESSION_MAP_ENTRIES: u32 = 65536;
/// Largest `--bpf-session-map-entries`: 16M entries, about 2 GiB of
/// preallocated kernel memory; past it a typo, not a plan.
pub const MAX_SESSION_MAP_ENTRIES: u32 = 1 << 24;
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

/// The mode's flag value (`ipvs-bpf`, `ipvs`), from its clap name.
impl std::fmt::Display for ProxyMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.to_possible_value() {
            Some(v) => f.write_str(v.get_name()),
            None => write!(f, "{self:?}"),
        }
    }
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

const AFTER_HELP: &str = "\
Precedence: as kube-proxy, when --config is given the file replaces every flag that has a \
field in it (those flags are then ignored, with a warning); --hostname-override, -v and \
--log-format still override the file; --master, --cleanup and the ipvsbpf-proxy flags \
(--source, --manifests, --fallback-to-ipvs, --uplink, --bpf-pin-path, --snat-port-range, \
--bpf-session-map-entries, \
--service-proxy-name, --ipvs-drain-timeout, --check-config, --probe-kernel, --label-node) always \
apply.

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

    /// Maximum number of NAT connections to track per CPU: nf_conntrack_max becomes this
    /// times the node's CPUs (at least --conntrack-min, at most 1048576); 0 leaves the
    /// kernel's value. [default: 0; kube-proxy: 32768]
    #[arg(long, value_name = "N")]
    pub conntrack_max_per_core: Option<u32>,

    /// The floor of nf_conntrack_max when --conntrack-max-per-core is set. [default: 0;
    /// kube-proxy: 131072]
    #[arg(long, value_name = "N")]
    pub conntrack_min: Option<u32>,

    /// Idle timeout for established TCP connections in conntrack
    /// (nf_conntrack_tcp_timeout_established); 0 leaves the kernel's value. [default: 0s;
    /// kube-proxy: 24h0m0s]
    #[arg(long, value_name = "DURATION")]
    pub conntrack_tcp_timeout_established: Option<String>,

    /// conntrack's timeout for TCP connections in CLOSE_WAIT; 0 leaves the kernel's value.
    /// [default: 0s; kube-proxy: 1h0m0s]
    #[arg(long, value_name = "DURATION")]
    pub conntrack_tcp_timeout_close_wait: Option<String>,

    /// Set nf_conntrack_tcp_be_liberal (out-of-window TCP packets are not marked INVALID).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true")]
    pub conntrack_tcp_be_liberal: Option<bool>,

    /// conntrack's timeout for UDP flows (nf_conntrack_udp_timeout); 0 leaves the
    /// kernel's value. [default: 0s]
    #[arg(long, value_name = "DURATION")]
    pub conntrack_udp_timeout: Option<String>,

    /// conntrack's timeout for UDP streams (nf_conntrack_udp_timeout_stream); 0 leaves
    /// the kernel's value. [default: 0s]
    #[arg(long, value_name = "DURATION")]
    pub conntrack_udp_timeout_stream: Option<String>,

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

    /// Entries of the BPF session map in ipvs-bpf mode: two per live SNAT connection,
    /// preallocated (about 128 bytes each). Changing it on a running node replaces the
    /// map: open SNAT connections are cut.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_SESSION_MAP_ENTRIES)]
    pub bpf_session_map_entries: u32,

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

    /// Say whether this node's kernel has the ipvs-bpf series (`patched` or `unpatched`,
    /// with the reason) and exit (0 patched, 3 unpatched, 1 if the probe itself failed)
    /// without changing the node.
    #[arg(long, conflicts_with_all = ["check_config", "cleanup", "label_node"])]
    pub probe_kernel: bool,

    /// The node labeller's mode: set this node's label ipvs-bpf.io/kernel to what
    /// --probe-kernel finds, then wait for SIGTERM. Programs nothing.
    #[arg(long, conflicts_with = "cleanup")]
    pub label_node: bool,
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
    /// `--label-node`: label the Node and wait, nothing else.
    pub label_node: bool,
    pub verbosity: u8,
    pub log_format: LogFormat,
    pub source: SourceKind,
    pub manifests: Option<PathBuf>,
    pub fallback_to_ipvs: bool,
    /// Empty: the interfaces of the default routes.
    pub uplinks: Vec<String>,
    pub bpf_pin_path: PathBuf,
    pub snat_port_range: PortRange,
    /// `max_entries` of the session map.
    pub bpf_session_map_entries: u32,
    /// The `conntrack:` settings; empty leaves the kernel's.
    pub conntrack: ConntrackConfig,
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
                "--conntrack-max-per-core",
                args.conntrack_max_per_core.is_some(),
            ),
            ("--conntrack-min", args.conntrack_min.is_some()),
            (
                "--conntrack-tcp-timeout-established",
                args.conntrack_tcp_timeout_established.is_some(),
            ),
            (
                "--conntrack-tcp-timeout-close-wait",
                args.conntrack_tcp_timeout_close_wait.is_some(),
            ),
            (
                "--conntrack-tcp-be-liberal",
                args.conntrack_tcp_be_liberal.is_some(),
            ),
            (
                "--conntrack-udp-timeout",
                args.conntrack_udp_timeout.is_some(),
            ),
            (
                "--conntrack-udp-timeout-stream",
                args.conntrack_udp_timeout_stream.is_some(),
            ),
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

    let ct_duration = |v: Option<(String, Origin<'_>)>| -> Result<Duration, ConfigError> {
        match v {
            None => Ok(Duration::ZERO),
            Some((s, src)) => duration(src, &s),
        }
    };
    let conntrack = ConntrackConfig {
        max_per_core: pick!(
            ct_max_per_core,
            args.conntrack_max_per_core,
            "--conntrack-max-per-core",
            "conntrack.maxPerCore"
        )
        .map_or(0, |(n, _)| n),
        min: pick!(
            ct_min,
            args.conntrack_min,
            "--conntrack-min",
            "conntrack.min"
        )
        .map_or(0, |(n, _)| n),
        tcp_established_timeout: ct_duration(pick!(
            ct_tcp_established,
            args.conntrack_tcp_timeout_established.clone(),
            "--conntrack-tcp-timeout-established",
            "conntrack.tcpEstablishedTimeout"
        ))?,
        tcp_close_wait_timeout: ct_duration(pick!(
            ct_tcp_close_wait,
            args.conntrack_tcp_timeout_close_wait.clone(),
            "--conntrack-tcp-timeout-close-wait",
            "conntrack.tcpCloseWaitTimeout"
        ))?,
        tcp_be_liberal: pick!(
            ct_tcp_be_liberal,
            args.conntrack_tcp_be_liberal,
            "--conntrack-tcp-be-liberal",
            "conntrack.tcpBeLiberal"
        )
        .is_some_and(|(b, _)| b),
        udp_timeout: ct_duration(pick!(
            ct_udp,
            args.conntrack_udp_timeout.clone(),
            "--conntrack-udp-timeout",
            "conntrack.udpTimeout"
        ))?,
        udp_stream_timeout: ct_duration(pick!(
            ct_udp_stream,
            args.conntrack_udp_timeout_stream.clone(),
            "--conntrack-udp-timeout-stream",
            "conntrack.udpStreamTimeout"
        ))?,
    };

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

    let entries = args.bpf_session_map_entries;
    if !(IP_VS_BPF_MIN_ENTRIES..=MAX_SESSION_MAP_ENTRIES).contains(&entries) {
        return Err(invalid(
            "--bpf-session-map-entries",
            &entries.to_string(),
            format!(
                "must be {IP_VS_BPF_MIN_ENTRIES} (IPVS's minimum) to {MAX_SESSION_MAP_ENTRIES}"
            ),
        ));
    }

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
        label_node: args.label_node,
        verbosity,
        log_format,
        source: args.source,
        manifests: args.manifests,
        fallback_to_ipvs: args.fallback_to_ipvs.unwrap_or(false),
        uplinks,
        bpf_pin_path: args.bpf_pin_path,
        snat_port_range,
        bpf_session_map_entries: entries,
        conntrack,
        service_proxy_name,
        drain_timeout,
        warnings,
    })
}
