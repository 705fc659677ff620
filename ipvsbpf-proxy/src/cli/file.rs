//! The `KubeProxyConfiguration` file (`kubeproxy.config.k8s.io/v1alpha1`,
//! YAML or JSON): the fields this proxy reads, warnings for the rest.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{invalid, ConfigError, CONFIG_API_VERSION, CONFIG_KIND};

/// The subset of a KubeProxyConfiguration we read; `None` is "not set or
/// zero value", which v1alpha1 defaulting treats the same.
#[derive(Debug, Default)]
pub(super) struct FileConfig {
    pub(super) path: PathBuf,
    pub(super) mode: Option<String>,
    pub(super) kubeconfig: Option<PathBuf>,
    pub(super) hostname_override: Option<String>,
    pub(super) cluster_cidr: Option<String>,
    pub(super) nodeport_addresses: Option<Vec<String>>,
    pub(super) masquerade_all: Option<bool>,
    pub(super) healthz_bind_address: Option<String>,
    pub(super) metrics_bind_address: Option<String>,
    pub(super) scheduler: Option<String>,
    pub(super) sync_period: Option<String>,
    pub(super) min_sync_period: Option<String>,
    pub(super) tcp_timeout: Option<String>,
    pub(super) tcpfin_timeout: Option<String>,
    pub(super) udp_timeout: Option<String>,
    pub(super) exclude_cidrs: Option<Vec<String>>,
    pub(super) strict_arp: Option<bool>,
    pub(super) verbosity: Option<u8>,
    pub(super) log_format: Option<String>,
    pub(super) ct_max_per_core: Option<u32>,
    pub(super) ct_min: Option<u32>,
    pub(super) ct_tcp_established: Option<String>,
    pub(super) ct_tcp_close_wait: Option<String>,
    pub(super) ct_tcp_be_liberal: Option<bool>,
    pub(super) ct_udp: Option<String>,
    pub(super) ct_udp_stream: Option<String>,
    pub(super) warnings: Vec<String>,
}

/// Fields of v1alpha1 that are known but have no meaning here: ignored
/// silently when left at their zero value (kubeadm writes them all), with a
/// warning otherwise.
const KNOWN_UNUSED: &[&str] = &[
    "bindAddress",
    "bindAddressHardFail",
    "configSyncPeriod",
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

    /// A non-negative integer that fits 32 bits (v1alpha1's `*int32`).
    fn uint32(&self, key: &str) -> Result<Option<u32>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| i32::try_from(*n).is_ok())
                .map(Some)
                .ok_or_else(|| self.type_err(key, v, "an integer 0..=2147483647")),
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
    pub(super) fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
            path: path.to_path_buf(),
            source,
        })?;
        FileConfig::parse(path, &text)
    }

    /// JSON when the document starts with `{`, YAML otherwise.
    pub(super) fn parse(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
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
                "conntrack",
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
        if let Some(ct) = top.object("conntrack", "conntrack.")? {
            fc.ct_max_per_core = ct.uint32("maxPerCore")?;
            fc.ct_min = ct.uint32("min")?;
            fc.ct_tcp_established = ct.string("tcpEstablishedTimeout")?;
            fc.ct_tcp_close_wait = ct.string("tcpCloseWaitTimeout")?;
            fc.ct_tcp_be_liberal = ct.boolean("tcpBeLiberal")?;
            fc.ct_udp = ct.string("udpTimeout")?;
            fc.ct_udp_stream = ct.string("udpStreamTimeout")?;
            ct.warn_unknown(
                &[
                    "maxPerCore",
                    "min",
                    "tcpEstablishedTimeout",
                    "tcpCloseWaitTimeout",
                    "tcpBeLiberal",
                    "udpTimeout",
                    "udpStreamTimeout",
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
