//! `--label-node`: the node labeller DaemonSet's mode (deploy/node-labeller).
//!
//! The proxy's DaemonSet runs only on Nodes labelled
//! `ipvs-bpf.io/kernel=patched`. This mode sets that label from what the
//! kernel supports: it probes IPVS as `ipvs-bpf` mode does before it
//! starts ([`probe_kernel`]), merge-patches its own Node's label to
//! `patched` or `unpatched`, and then waits for SIGTERM. The labeller's
//! DaemonSet selects only Nodes without the label, so once it is set the
//! DaemonSet controller deletes the pod; waiting (rather than exiting)
//! keeps the kubelet from restarting it meanwhile.
//!
//! It programs nothing and writes nothing but that one label. Its
//! ServiceAccount may patch Nodes (RBAC cannot name "the node I run on"),
//! and an admission policy narrows that to its own Node and that label.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use tracing::{info, warn};

use crate::backends::bpfmode::{probe_kernel, NODE_LABEL};
use crate::cli::Config;
use crate::daemon::{node_name, shutdown_signal};
use crate::sources;

/// The field manager the API server records for the label.
pub const FIELD_MANAGER: &str = "ipvsbpf-node-labeller";

/// Patch attempts on transient failures (API server unreachable, 5xx,
/// 429), 1 s apart and doubling: about 30 s, then the pod fails and the
/// kubelet's back-off takes over.
const ATTEMPTS: u32 = 6;

pub async fn run(cfg: &Config) -> Result<()> {
    let node = node_name(cfg)?;
    let found = probe_kernel();
    let Some(value) = found.label_value() else {
        // No label rather than a wrong one: `unpatched` would keep the
        // proxy off this node until someone removed it. Failing lets the
        // kubelet try again, and shows in the pod's status.
        bail!("probing this node's kernel: {found}; {NODE_LABEL} not set");
    };
    info!("this node's kernel: {found}");
    let client = sources::kube::client(cfg.kubeconfig.clone(), cfg.master.clone())
        .await
        .context("Kubernetes client")?;
    let nodes: Api<Node> = Api::all(client);
    let mut delay = Duration::from_secs(1);
    for attempt in 1..=ATTEMPTS {
        match label(&nodes, &node, value).await {
            Ok(()) => break,
            Err(kube::Error::Api(s)) if refused(s.code) => bail!(
                "the API server refused to set {NODE_LABEL} on Node {node} ({} {}): {}",
                s.code,
                s.reason,
                s.message
            ),
            Err(e) if attempt < ATTEMPTS => {
                warn!("setting {NODE_LABEL} on Node {node}: {e}; again in {delay:?}");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(e) => {
                return Err(e).with_context(|| format!("setting {NODE_LABEL} on Node {node}"));
            }
        }
    }
    info!(
        "Node {node} labelled {NODE_LABEL}={value}; waiting for SIGTERM (the DaemonSet \
         controller removes this pod from labelled Nodes)"
    );
    shutdown_signal().await;
    Ok(())
}

async fn label(nodes: &Api<Node>, node: &str, value: &str) -> kube::Result<()> {
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    nodes
        .patch(node, &params, &Patch::Merge(patch_body(value)))
        .await
        .map(|_| ())
}

/// The merge patch: the one label, nothing else (the admission policy of
/// deploy/node-labeller refuses any other change).
pub fn patch_body(value: &str) -> serde_json::Value {
    serde_json::json!({ "metadata": { "labels": { NODE_LABEL: value } } })
}

/// An answer that trying again will not change: the request is wrong or
/// not allowed (RBAC, the admission policy, no such Node).
fn refused(code: u16) -> bool {
    (400..500).contains(&code) && !matches!(code, 408 | 429)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::bpfmode::KernelSupport;
    use serde_json::json;

    #[test]
    fn the_patch_sets_only_the_label() {
        let values: Vec<_> = [
            KernelSupport::Patched,
            KernelSupport::Unpatched("no bpf_mode".into()),
            KernelSupport::Unknown("EPERM".into()),
        ]
        .iter()
        .map(|k| k.label_value().map(patch_body))
        .collect();
        assert_eq!(
            values,
            [
                Some(json!({ "metadata": { "labels": { "ipvs-bpf.io/kernel": "patched" } } })),
                Some(json!({ "metadata": { "labels": { "ipvs-bpf.io/kernel": "unpatched" } } })),
                // a failed probe labels nothing
                None,
            ]
        );
    }

    #[test]
    fn refusals_are_not_retried_transient_failures_are() {
        for code in [400, 401, 403, 404, 409, 422] {
            assert!(refused(code), "{code}");
        }
        for code in [408, 429, 500, 502, 503, 504] {
            assert!(!refused(code), "{code}");
        }
    }

    #[test]
    fn the_finding_reads_as_the_label_and_the_reason() {
        let no = KernelSupport::Unpatched("ip_vs has no net.ipv4.vs.bpf_mode".into());
        assert_eq!(
            no.to_string(),
            "unpatched: ip_vs has no net.ipv4.vs.bpf_mode"
        );
        assert!(KernelSupport::Patched.to_string().starts_with("patched: "));
    }
}
