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
                // events.k8s.io allows 128 characters here; a node name
                // may have 253.
                instance: Some(format!("{CONTROLLER}-{node}").chars().take(128).collect()),
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
    /// How many connections, for the log line; not in the note, which a
    /// repeat does not update (the Recorder only counts the series).
    pub count: u64,
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
            count: n,
            note: format!(
                "connections needing SNAT were refused: no port of --snat-port-range {}-{} \
                 was free toward their backend; widen the range \
                 (ipvsbpf_snat_exhausted_total counts them)",
                ports.0, ports.1
            ),
        });
    }
    let n = grew(before.insert_fail, now.insert_fail);
    if n > 0 {
        out.push(Trouble {
            reason: "SessionMapFull",
            count: n,
            note: format!(
                "connections could not be mirrored: the session map ({entries} entries) is \
                 full; raise --bpf-session-map-entries \
                 (ipvsbpf_bpf_session_insert_failures_total counts them)"
            ),
        });
    }
    out
}

/// At most one Event per reason per [`EVENT_INTERVAL`]: trouble that lasts
/// would otherwise write to the API server at every poll, from every node.
pub const EVENT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(300);

/// Remembers when each reason was last published.
#[derive(Debug, Default)]
pub struct Throttle {
    last: std::collections::HashMap<&'static str, std::time::Instant>,
}

impl Throttle {
    /// Whether `reason` may be published at `now` (and, if so, marks it).
    pub fn allow(&mut self, reason: &'static str, now: std::time::Instant) -> bool {
        match self.last.get(reason) {
            Some(t) if now.duration_since(*t) < EVENT_INTERVAL => false,
            _ => {
                self.last.insert(reason, now);
                true
            }
        }
    }
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
        assert_eq!((t[0].reason, t[0].count), ("SNATPortsExhausted", 4));
        assert!(t[0].note.contains("61000-61001"), "{}", t[0].note);
        let t = trouble(&stats(0, 0), &stats(0, 2), ports, 64);
        assert_eq!((t[0].reason, t[0].count), ("SessionMapFull", 2));
        assert!(t[0].note.contains("(64 entries)"), "{}", t[0].note);
        // A reset counter (IPVS reloaded) counts from zero.
        let t = trouble(&stats(10, 0), &stats(2, 0), ports, 64);
        assert_eq!(t[0].count, 2);
        // The same trouble twice gives the same note: one Event, a series.
        assert_eq!(
            trouble(&stats(0, 0), &stats(1, 0), ports, 64)[0].note,
            trouble(&stats(1, 0), &stats(9, 0), ports, 64)[0].note
        );
    }

    #[test]
    fn one_event_per_reason_per_interval() {
        let mut th = Throttle::default();
        let t0 = std::time::Instant::now();
        assert!(th.allow("A", t0));
        assert!(!th.allow("A", t0 + std::time::Duration::from_secs(10)));
        assert!(th.allow("B", t0 + std::time::Duration::from_secs(10)));
        assert!(th.allow("A", t0 + EVENT_INTERVAL));
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
