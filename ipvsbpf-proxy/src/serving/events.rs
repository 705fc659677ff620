//! Kubernetes Events on this proxy's Node, for what an operator must see
//! without scraping metrics: the proxy starting (as kube-proxy's
//! `Starting` event), a fallback to `ipvs` mode, and in `ipvs-bpf` mode
//! connections refused because no SNAT port was free or not mirrored
//! because the session map was full.
//!
//! Best effort: events go through a bounded queue to a task of their own,
//! so a slow or unreachable API server never holds up a sync; a full
//! queue drops the event, a failed publish is logged. kube-runtime's
//! [`Recorder`] folds repeats into one Event with a series count.

use ipvs_netlink::BpfStats;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::Client;
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// `reportingController` of our Events.
pub const CONTROLLER: &str = "ipvsbpf-proxy";
const QUEUE: usize = 64;

/// Publishes Events about one Node; a disabled one (file source: no API
/// server) drops them.
#[derive(Clone, Debug)]
pub struct NodeEvents {
    tx: Option<mpsc::Sender<Event>>,
}

impl NodeEvents {
    /// No API server: nothing is published.
    pub fn disabled() -> NodeEvents {
        NodeEvents { tx: None }
    }

    /// Starts the publishing task (needs a tokio runtime). Events regard
    /// the Node `node` and live in `default`, as kube-proxy's do.
    pub fn start(client: Client, node: &str) -> NodeEvents {
        let (tx, mut rx) = mpsc::channel::<Event>(QUEUE);
        let recorder = Recorder::new(
            client,
            Reporter {
                controller: CONTROLLER.into(),
                instance: Some(format!("{CONTROLLER}-{node}")),
            },
        );
        let regarding = node_ref(node);
        tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                if let Err(e) = recorder.publish(&ev, &regarding).await {
                    warn!(reason = %ev.reason, error = %e, "publishing a Kubernetes Event");
                }
            }
        });
        NodeEvents { tx: Some(tx) }
    }

    pub fn normal(&self, reason: &str, action: &str, note: String) {
        self.send(EventType::Normal, reason, action, note);
    }

    pub fn warning(&self, reason: &str, action: &str, note: String) {
        self.send(EventType::Warning, reason, action, note);
    }

    fn send(&self, type_: EventType, reason: &str, action: &str, note: String) {
        let Some(tx) = &self.tx else { return };
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if tx.try_send(ev).is_err() {
            debug!(reason, "Event queue full or closed; event dropped");
        }
    }
}

/// The Node, referenced as kube-proxy references it (its UID is its name:
/// the proxy never reads the Node's real UID for this).
fn node_ref(node: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some(node.into()),
        uid: Some(node.into()),
        namespace: None,
        ..ObjectReference::default()
    }
}

/// A Warning worth an Event, from the kernel's counters between two reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trouble {
    pub reason: &'static str,
    pub note: String,
}

/// What grew between `before` and `now`: connections dropped for want of
/// a SNAT port, and connections the session map could not take. A counter
/// that went down (IPVS reloaded, the map re-attached) counts from zero.
pub fn trouble(before: &BpfStats, now: &BpfStats, ports: (u16, u16), entries: u32) -> Vec<Trouble> {
    let grew = |b: u64, n: u64| if n >= b { n - b } else { n };
    let mut out = Vec::new();
    let n = grew(before.snat_exhausted, now.snat_exhausted);
    if n > 0 {
        out.push(Trouble {
            reason: "SNATPortsExhausted",
            note: format!(
                "{n} new connection(s) needing SNAT were refused: no port of \
                 --snat-port-range {}-{} was free toward their backend; widen the range",
                ports.0, ports.1
            ),
        });
    }
    let n = grew(before.insert_fail, now.insert_fail);
    if n > 0 {
        out.push(Trouble {
            reason: "SessionMapFull",
            note: format!(
                "{n} connection(s) could not be mirrored: the session map ({entries} entries) \
                 is full; raise --bpf-session-map-entries"
            ),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(snat_exhausted: u64, insert_fail: u64) -> BpfStats {
        BpfStats {
            snat_exhausted,
            insert_fail,
            ..BpfStats::default()
        }
    }

    #[test]
    fn trouble_is_what_grew() {
        let ports = (61000, 61001);
        assert!(trouble(&stats(3, 5), &stats(3, 5), ports, 64).is_empty());
        let t = trouble(&stats(3, 5), &stats(7, 5), ports, 64);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].reason, "SNATPortsExhausted");
        assert!(
            t[0].note.starts_with("4 new connection(s)"),
            "{}",
            t[0].note
        );
        assert!(t[0].note.contains("61000-61001"), "{}", t[0].note);
        let t = trouble(&stats(0, 0), &stats(0, 2), ports, 64);
        assert_eq!(t[0].reason, "SessionMapFull");
        assert!(t[0].note.contains("(64 entries)"), "{}", t[0].note);
        // A reset counter (IPVS reloaded) counts from zero.
        let t = trouble(&stats(10, 0), &stats(2, 0), ports, 64);
        assert!(t[0].note.starts_with("2 new"), "{}", t[0].note);
    }

    #[test]
    fn disabled_drops_quietly() {
        NodeEvents::disabled().warning("X", "Y", "z".into());
    }

    #[test]
    fn the_node_is_referenced_as_kube_proxy_does() {
        let r = node_ref("node-1");
        assert_eq!(r.kind.as_deref(), Some("Node"));
        assert_eq!(r.name.as_deref(), Some("node-1"));
        assert_eq!(r.uid.as_deref(), Some("node-1"));
        assert_eq!(r.namespace, None);
    }
}
