//! The two sources of truth that fill the [`inventory`](crate::model::inventory):
//! [`kube`](mod@self::kube) (watches of the API server) and [`file`](mod@self::file) (a directory of
//! manifests, for tests and clusters without a proxy-facing API).
//!
//! Both select the same objects as kube-proxy: Services (and their
//! EndpointSlices, which the EndpointSlice controller labels like their
//! Service) that are not headless and that belong to this proxy by the
//! `service.kubernetes.io/service-proxy-name` label.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

pub mod file;
pub mod kube;

/// Services carrying this label belong to the proxy of that name; the
/// default proxy (no name) must leave them alone.
pub const SERVICE_PROXY_NAME_LABEL: &str = crate::model::LABEL_SERVICE_PROXY_NAME;
/// Headless Services get no virtual server; the EndpointSlice controller
/// copies this label onto their slices so both can be filtered server-side.
pub const HEADLESS_LABEL: &str = crate::model::LABEL_HEADLESS;

/// The label selector for Services and EndpointSlices, as kube-proxy
/// sends it; the file source, which has no server to do it, applies the
/// same rule with
/// [`ProxyLabels::selected_by`](crate::model::ProxyLabels::selected_by)
/// (its table test is below).
pub fn label_selector(proxy_name: Option<&str>) -> String {
    match proxy_name {
        None => format!("!{SERVICE_PROXY_NAME_LABEL},!{HEADLESS_LABEL}"),
        Some(name) => format!("{SERVICE_PROXY_NAME_LABEL}={name},!{HEADLESS_LABEL}"),
    }
}

/// Errors of the sources.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("reading kubeconfig {path}")]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: ::kube::config::KubeconfigError,
    },
    #[error("inferring the client configuration (in-cluster or ~/.kube/config)")]
    InferConfig(#[source] ::kube::config::InferConfigError),
    #[error("invalid API server address {0:?}")]
    Master(String),
    #[error("building the Kubernetes client")]
    Client(#[source] ::kube::Error),
    #[error("reading manifest directory {path}")]
    ReadDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{kind} watch stream ended")]
    WatchEnded { kind: &'static str },
}

/// Objects and files a source skipped because they could not be parsed.
/// Plain atomics so the metrics module can read them without a lock.
#[derive(Debug, Default)]
pub struct SourceStats {
    pub skipped_services: AtomicU64,
    pub skipped_slices: AtomicU64,
    pub skipped_nodes: AtomicU64,
    /// File source: files that failed to parse (their previous objects are
    /// kept).
    pub skipped_files: AtomicU64,
    /// Kube source: complete (re)lists received, by kind, in
    /// [`ObjectKind::index`] order.
    relists: [AtomicU64; 3],
}

/// Which counter of [`SourceStats`] an object kind uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectKind {
    Service,
    EndpointSlice,
    Node,
}

impl ObjectKind {
    /// Every kind, in [`ObjectKind::index`] order.
    pub const ALL: [ObjectKind; 3] = [
        ObjectKind::Service,
        ObjectKind::EndpointSlice,
        ObjectKind::Node,
    ];

    /// The kind's position in [`ObjectKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Service => "Service",
            ObjectKind::EndpointSlice => "EndpointSlice",
            ObjectKind::Node => "Node",
        }
    }
}

impl SourceStats {
    pub fn count_skipped(&self, kind: ObjectKind) {
        self.counter(kind).fetch_add(1, Ordering::Relaxed);
    }

    pub fn skipped(&self, kind: ObjectKind) -> u64 {
        self.counter(kind).load(Ordering::Relaxed)
    }

    /// A complete list of `kind` was received and applied.
    pub fn count_relist(&self, kind: ObjectKind) {
        self.relists[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn relisted(&self, kind: ObjectKind) -> u64 {
        self.relists[kind.index()].load(Ordering::Relaxed)
    }

    /// Complete lists received across the three watches.
    pub fn relists(&self) -> u64 {
        ObjectKind::ALL.iter().map(|&k| self.relisted(k)).sum()
    }

    fn counter(&self, kind: ObjectKind) -> &AtomicU64 {
        match kind {
            ObjectKind::Service => &self.skipped_services,
            ObjectKind::EndpointSlice => &self.skipped_slices,
            ObjectKind::Node => &self.skipped_nodes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ProxyLabels;
    use std::collections::BTreeMap;

    #[test]
    fn selector_strings() {
        assert_eq!(
            label_selector(None),
            "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless"
        );
        assert_eq!(
            label_selector(Some("ipvsbpf")),
            "service.kubernetes.io/service-proxy-name=ipvsbpf,!service.kubernetes.io/headless"
        );
    }

    #[test]
    fn selection_table() {
        // (labels, proxy name, selected)
        type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>, bool);
        let cases: &[Case] = &[
            (&[], None, true),
            (&[], Some("p"), false),
            (&[("app", "x")], None, true),
            (&[(HEADLESS_LABEL, "")], None, false),
            (&[(HEADLESS_LABEL, "")], Some("p"), false),
            (&[(SERVICE_PROXY_NAME_LABEL, "p")], None, false),
            (&[(SERVICE_PROXY_NAME_LABEL, "p")], Some("p"), true),
            (&[(SERVICE_PROXY_NAME_LABEL, "q")], Some("p"), false),
            (&[(SERVICE_PROXY_NAME_LABEL, "")], None, false),
            (
                &[(SERVICE_PROXY_NAME_LABEL, "p"), (HEADLESS_LABEL, "")],
                Some("p"),
                false,
            ),
        ];
        for (labels, proxy, want) in cases {
            let map: BTreeMap<String, String> = labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            assert_eq!(
                ProxyLabels::of(Some(&map)).selected_by(*proxy),
                *want,
                "labels {labels:?} proxy {proxy:?}"
            );
        }
        assert!(ProxyLabels::of(None).selected_by(None));
        assert!(!ProxyLabels::of(None).selected_by(Some("p")));
    }
}
