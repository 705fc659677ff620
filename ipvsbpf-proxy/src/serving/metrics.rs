//! Prometheus metrics. The sync metrics carry kube-proxy's names
//! (`pkg/proxy/metrics/metrics.go`) so existing dashboards and alerts keep
//! working after the switch; ours are prefixed `ipvsbpf_`. Everything is
//! registered explicitly into a caller-owned [`Registry`].
//!
//! prometheus-client's encoder appends `_total` to counters itself, so
//! counters are registered without it (`..._endpoint_changes` is exposed as
//! `..._endpoint_changes_total`, exactly kube-proxy's name). kube-proxy's
//! `..._no_local_endpoints_total` is a gauge, registered with its full name.
//!
//! Datapath numbers (BPF counters, session map occupancy, the kernel's
//! session stats) are read on scrape through a [`DatapathStats`] the daemon
//! installs, so this module works, and is tested, without loading BPF.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ipvs_netlink::{BpfStats, Op};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, linear_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::backends::datapath::{Counter as BpfCounter, Direction, Reason};

/// Labels of `kubeproxy_sync_proxy_rules_no_local_endpoints_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NoLocalEndpointsLabels {
    /// `IPv4` or `IPv6`, as kube-proxy's `v1.IPFamily`.
    pub ip_family: String,
    /// `internal` or `external`.
    pub traffic_policy: String,
}

/// Label of the health endpoint counters: the HTTP status code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    pub code: String,
}

/// Labels of `ipvsbpf_ipvs_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The netlink operation, snake_case (`add_service`).
    pub op: String,
    /// `ok` or `error`.
    pub result: String,
}

/// Label of `ipvsbpf_source_objects_skipped_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `Service`, `EndpointSlice`, ...
    pub kind: String,
}

/// What the BPF datapath reports at scrape time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DatapathSnapshot {
    /// Entries in the session map now.
    pub sessions: u64,
    /// The session map's `max_entries`.
    pub session_capacity: u64,
    /// The kernel's view (`IPVS_CMD_GET_BPF`), when a map is attached.
    pub kernel: Option<BpfStats>,
    /// Per-direction, per-reason packet and byte counters.
    pub counters: Vec<(Direction, Reason, BpfCounter)>,
}

/// Source of datapath numbers, called on every scrape. `None` when there
/// is nothing to report (ipvs mode, or not loaded yet); a source that fails
/// to read should log and return `None` rather than fail the scrape.
pub trait DatapathStats: Send + Sync + 'static {
    fn snapshot(&self) -> Option<DatapathSnapshot>;
}

/// Which kind of sync a [`SyncTimer`] measures; kube-proxy reports full
/// and partial syncs separately, and both in the overall histogram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncKind {
    /// Everything re-read and re-programmed (periodic sync, first sync).
    Full,
    /// Only what changed since the last sync.
    Partial,
}

/// All metrics, cheap to clone (each metric is shared).
#[derive(Clone, Debug)]
pub struct Metrics {
    pub sync_duration: Histogram,
    pub sync_full_duration: Histogram,
    pub sync_partial_duration: Histogram,
    pub last_sync_timestamp: Gauge<f64, AtomicU64>,
    pub last_queued_timestamp: Gauge<f64, AtomicU64>,
    pub network_programming_duration: Histogram,
    pub endpoint_changes: Counter,
    pub service_changes: Counter,
    pub endpoint_changes_pending: Gauge,
    pub service_changes_pending: Gauge,
    pub no_local_endpoints: Family<NoLocalEndpointsLabels, Gauge>,
    pub healthz: Family<CodeLabels, Counter>,
    pub livez: Family<CodeLabels, Counter>,
    pub sync_failures: Counter,
    pub ipvs_requests: Family<RequestLabels, Counter>,
    pub source_objects_skipped: Family<KindLabels, Counter>,
    pub source_relists: Family<KindLabels, Counter>,
    pub conntrack_deleted: Counter,
    pub virtual_servers: Gauge,
    pub real_servers: Gauge,
    datapath: DatapathCollector,
}

/// kube-proxy's sync buckets: 1ms doubling to ~16s.
fn sync_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.001, 2.0, 15)
}

/// kube-proxy's network-programming buckets: 0, 0.25s, 0.5s, 1..59s,
/// 60..115s by 5s, 2..5min by 30s.
fn network_programming_buckets() -> Vec<f64> {
    std::iter::once(0.0)
        .chain(linear_buckets(0.25, 0.25, 2))
        .chain(linear_buckets(1.0, 1.0, 59))
        .chain(linear_buckets(60.0, 5.0, 12))
        .chain(linear_buckets(120.0, 30.0, 7))
        .collect()
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// `AddService` → `add_service`: label values in Prometheus style.
pub fn op_label(op: Op) -> String {
    let camel = format!("{op:?}");
    let mut out = String::with_capacity(camel.len() + 4);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Adds `n` to `family`'s counter for `kind`.
fn inc_kind(family: &Family<KindLabels, Counter>, kind: &str, n: u64) {
    family
        .get_or_create(&KindLabels {
            kind: kind.to_string(),
        })
        .inc_by(n);
}

impl Metrics {
    /// Creates the metrics and registers each one into `registry`.
    pub fn new(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            sync_duration: Histogram::new(sync_buckets()),
            sync_full_duration: Histogram::new(sync_buckets()),
            sync_partial_duration: Histogram::new(sync_buckets()),
            last_sync_timestamp: Gauge::default(),
            last_queued_timestamp: Gauge::default(),
            network_programming_duration: Histogram::new(network_programming_buckets()),
            endpoint_changes: Counter::default(),
            service_changes: Counter::default(),
            endpoint_changes_pending: Gauge::default(),
            service_changes_pending: Gauge::default(),
            no_local_endpoints: Family::default(),
            healthz: Family::default(),
            livez: Family::default(),
            sync_failures: Counter::default(),
            ipvs_requests: Family::default(),
            source_objects_skipped: Family::default(),
            source_relists: Family::default(),
            conntrack_deleted: Counter::default(),
            virtual_servers: Gauge::default(),
            real_servers: Gauge::default(),
            datapath: DatapathCollector::default(),
        };
        let r = registry;
        r.register(
            "kubeproxy_sync_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds",
            m.sync_duration.clone(),
        );
        r.register(
            "kubeproxy_sync_full_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for full resyncs",
            m.sync_full_duration.clone(),
        );
        r.register(
            "kubeproxy_sync_partial_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for partial resyncs",
            m.sync_partial_duration.clone(),
        );
        r.register(
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "The last time proxy rules were successfully synced",
            m.last_sync_timestamp.clone(),
        );
        r.register(
            "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
            "The last time a sync of proxy rules was queued",
            m.last_queued_timestamp.clone(),
        );
        r.register(
            "kubeproxy_network_programming_duration_seconds",
            "In Cluster Network Programming Latency in seconds",
            m.network_programming_duration.clone(),
        );
        r.register(
            "kubeproxy_sync_proxy_rules_endpoint_changes",
            "Cumulative proxy rules Endpoint changes",
            m.endpoint_changes.clone(),
        );
        r.register(
            "kubeproxy_sync_proxy_rules_service_changes",
            "Cumulative proxy rules Service changes",
            m.service_changes.clone(),
        );
        r.register(
            "kubeproxy_sync_proxy_rules_endpoint_changes_pending",
            "Pending proxy rules Endpoint changes",
            m.endpoint_changes_pending.clone(),
        );
        r.register(
            "kubeproxy_sync_proxy_rules_service_changes_pending",
            "Pending proxy rules Service changes",
            m.service_changes_pending.clone(),
        );
        r.register(
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total",
            "Number of services with a Local traffic policy and no endpoints",
            m.no_local_endpoints.clone(),
        );
        r.register(
            "kubeproxy_proxy_healthz",
            "Cumulative proxy healthz HTTP status",
            m.healthz.clone(),
        );
        r.register(
            "kubeproxy_proxy_livez",
            "Cumulative proxy livez HTTP status",
            m.livez.clone(),
        );
        r.register(
            "ipvsbpf_sync_failures",
            "Syncs that did not complete (an IPVS or BPF step failed)",
            m.sync_failures.clone(),
        );
        r.register(
            "ipvsbpf_ipvs_requests",
            "IPVS generic netlink requests by operation and result",
            m.ipvs_requests.clone(),
        );
        r.register(
            "ipvsbpf_source_objects_skipped",
            "API objects the source could not use (invalid or unsupported), by kind",
            m.source_objects_skipped.clone(),
        );
        r.register(
            "ipvsbpf_source_relists",
            "Complete lists the source received and applied, by kind: one per kind at start, \
             then one after each 410 Gone or lost watch the API server could not resume",
            m.source_relists.clone(),
        );
        r.register(
            "ipvsbpf_conntrack_udp_entries_deleted",
            "Stale UDP conntrack entries deleted after their endpoint or Service went (ipvs mode)",
            m.conntrack_deleted.clone(),
        );
        r.register(
            "ipvsbpf_virtual_servers",
            "IPVS virtual servers programmed by this proxy",
            m.virtual_servers.clone(),
        );
        r.register(
            "ipvsbpf_real_servers",
            "IPVS real servers programmed by this proxy",
            m.real_servers.clone(),
        );
        r.register_collector(Box::new(m.datapath.clone()));
        m
    }

    /// Records, once IPVS holds them, how long the changes triggered at
    /// `times` (EndpointSlice trigger times) took to be programmed. A time
    /// ahead of `now` (clock skew with the controller) counts as 0.
    pub fn network_programmed(&self, times: impl IntoIterator<Item = SystemTime>, now: SystemTime) {
        for t in times {
            let d = now.duration_since(t).unwrap_or_default();
            self.network_programming_duration.observe(d.as_secs_f64());
        }
    }

    /// The changes waiting for the next sync.
    pub fn set_pending(&self, services: usize, slice_changes: u64) {
        self.service_changes_pending
            .set(i64::try_from(services).unwrap_or(i64::MAX));
        self.endpoint_changes_pending
            .set(i64::try_from(slice_changes).unwrap_or(i64::MAX));
    }

    /// Installs the datapath source read on each scrape (ipvs-bpf mode).
    pub fn set_datapath_stats(&self, stats: Arc<dyn DatapathStats>) {
        if let Ok(mut slot) = self.datapath.source.write() {
            *slot = Some(stats);
        }
    }

    /// Starts timing one sync; see [`SyncTimer`].
    pub fn sync_timer(&self, kind: SyncKind) -> SyncTimer<'_> {
        SyncTimer {
            metrics: self,
            kind,
            start: Instant::now(),
            ok: false,
        }
    }

    /// A change was queued for the next sync (kube-proxy sets the
    /// timestamp when a sync is requested).
    pub fn queued(&self, now: SystemTime) {
        self.last_queued_timestamp.set(unix_seconds(now));
    }

    /// Time from an object's change (its trigger time annotation) to the
    /// sync that programmed it.
    pub fn observe_network_programming(&self, latency: Duration) {
        self.network_programming_duration
            .observe(latency.as_secs_f64());
    }

    /// `n` IPVS requests of one kind and whether they succeeded.
    pub fn ipvs_requests(&self, op: Op, ok: bool, n: u64) {
        self.ipvs_requests
            .get_or_create(&RequestLabels {
                op: op_label(op),
                result: if ok { "ok" } else { "error" }.to_string(),
            })
            .inc_by(n);
    }

    /// `n` objects the source skipped.
    pub fn source_objects_skipped(&self, kind: &str, n: u64) {
        inc_kind(&self.source_objects_skipped, kind, n);
    }

    /// `n` complete lists of `kind` the source applied.
    pub fn source_relists(&self, kind: &str, n: u64) {
        inc_kind(&self.source_relists, kind, n);
    }

    /// Services with a Local policy and no local endpoint, recounted each
    /// sync: `ip_family` `IPv4`/`IPv6`, `traffic_policy`
    /// `internal`/`external`.
    pub fn set_no_local_endpoints(&self, ip_family: &str, traffic_policy: &str, n: i64) {
        self.no_local_endpoints
            .get_or_create(&NoLocalEndpointsLabels {
                ip_family: ip_family.to_string(),
                traffic_policy: traffic_policy.to_string(),
            })
            .set(n);
    }

    /// Counts a `/healthz` answer by status code.
    pub fn healthz_answer(&self, code: u16) {
        self.healthz
            .get_or_create(&CodeLabels {
                code: code.to_string(),
            })
            .inc();
    }

    /// Counts a `/livez` answer by status code.
    pub fn livez_answer(&self, code: u16) {
        self.livez
            .get_or_create(&CodeLabels {
                code: code.to_string(),
            })
            .inc();
    }

    /// Encodes the registry as OpenMetrics text.
    pub fn encode(registry: &Registry) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry)?;
        Ok(out)
    }
}

/// Measures one sync from creation to drop, so every exit path (early
/// `?` returns included) is observed. A sync counts as successful only if
/// [`SyncTimer::succeeded`] was called: then the last-sync timestamp moves;
/// otherwise `ipvsbpf_sync_failures_total` grows.
#[must_use = "the timer measures until it is dropped"]
pub struct SyncTimer<'a> {
    metrics: &'a Metrics,
    kind: SyncKind,
    start: Instant,
    ok: bool,
}

impl SyncTimer<'_> {
    /// Marks the sync as completed.
    pub fn succeeded(&mut self) {
        self.ok = true;
    }
}

impl Drop for SyncTimer<'_> {
    fn drop(&mut self) {
        let secs = self.start.elapsed().as_secs_f64();
        self.metrics.sync_duration.observe(secs);
        match self.kind {
            SyncKind::Full => self.metrics.sync_full_duration.observe(secs),
            SyncKind::Partial => self.metrics.sync_partial_duration.observe(secs),
        }
        if self.ok {
            self.metrics
                .last_sync_timestamp
                .set(unix_seconds(SystemTime::now()));
        } else {
            self.metrics.sync_failures.inc();
        }
    }
}

/// Encodes the datapath snapshot on scrape.
#[derive(Clone, Default)]
struct DatapathCollector {
    source: Arc<RwLock<Option<Arc<dyn DatapathStats>>>>,
}

impl std::fmt::Debug for DatapathCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = self.source.read().map(|s| s.is_some()).unwrap_or(false);
        f.debug_struct("DatapathCollector")
            .field("source_set", &set)
            .finish()
    }
}

fn const_gauge(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    v: u64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(v);
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

/// `name` without `_total`: the encoder appends it.
fn const_counter(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    v: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(v);
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}

impl Collector for DatapathCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let source = match self.source.read() {
            Ok(s) => s.clone(),
            Err(_) => None,
        };
        let Some(snap) = source.and_then(|s| s.snapshot()) else {
            return Ok(());
        };
        const_gauge(
            &mut enc,
            "ipvsbpf_bpf_sessions",
            "Entries in the BPF session map",
            snap.sessions,
        )?;
        const_gauge(
            &mut enc,
            "ipvsbpf_bpf_session_map_capacity",
            "Maximum entries of the BPF session map",
            snap.session_capacity,
        )?;
        if let Some(k) = snap.kernel {
            let kernel: [(&str, &str, u64); 10] = [
                (
                    "ipvsbpf_bpf_sessions_inserted",
                    "Sessions IPVS mirrored into the BPF map",
                    k.inserted,
                ),
                (
                    "ipvsbpf_bpf_sessions_deleted",
                    "Sessions IPVS removed from the BPF map",
                    k.deleted,
                ),
                (
                    "ipvsbpf_bpf_session_insert_failures",
                    "Connections not mirrored: the session map was full or busy",
                    k.insert_fail,
                ),
                (
                    "ipvsbpf_bpf_session_conflicts",
                    "Connections not mirrored: the key was taken by a live session",
                    k.conflict,
                ),
                (
                    "ipvsbpf_snat_exhausted",
                    "Connections dropped because no SNAT port was free",
                    k.snat_exhausted,
                ),
                (
                    "ipvsbpf_bpf_twins",
                    "Post-DNAT twin packets IPVS translated itself",
                    k.twins,
                ),
                (
                    "ipvsbpf_snat_reused",
                    "SNAT ports IPVS reclaimed from sessions that were over",
                    k.snat_reused,
                ),
                (
                    "ipvsbpf_snat_reused_unsafe",
                    "SNAT ports reclaimed although the real server might refuse the first SYN",
                    k.snat_reused_unsafe,
                ),
                (
                    "ipvsbpf_snat_unmapped",
                    "Connections refused because they needed SNAT while no session map was attached",
                    k.snat_unmapped,
                ),
                (
                    "ipvsbpf_bpf_delete_miss",
                    "Session map entries IPVS found gone or rewritten by someone else when deleting them",
                    k.delete_miss,
                ),
            ];
            for (name, help, v) in kernel {
                const_counter(&mut enc, name, help, v)?;
            }
        }
        if !snap.counters.is_empty() {
            for (name, help, bytes) in [
                (
                    "ipvsbpf_bpf_packets",
                    "Packets seen by the tc SNAT programs, by direction and reason",
                    false,
                ),
                (
                    "ipvsbpf_bpf_bytes",
                    "Bytes seen by the tc SNAT programs, by direction and reason",
                    true,
                ),
            ] {
                let mut metric = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
                for (dir, reason, c) in &snap.counters {
                    let labels = [("direction", dir.name()), ("reason", reason.name())];
                    let v = if bytes { c.bytes } else { c.packets };
                    ConstCounter::new(v).encode(metric.encode_family(&labels)?)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(r: &Registry) -> String {
        match Metrics::encode(r) {
            Ok(s) => s,
            Err(e) => panic!("encode: {e}"),
        }
    }

    /// The value of the sample line starting with `series ` (name plus
    /// labels exactly as encoded).
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    }

    #[test]
    fn exposed_names_are_kube_proxys() {
        let mut r = Registry::default();
        let m = Metrics::new(&mut r);
        m.endpoint_changes.inc_by(3);
        m.service_changes.inc();
        m.endpoint_changes_pending.set(2);
        m.set_no_local_endpoints("IPv4", "external", 4);
        m.healthz_answer(200);
        {
            let mut t = m.sync_timer(SyncKind::Full);
            t.succeeded();
        }
        let text = encoded(&r);
        let want: &[(&str, Option<f64>)] = &[
            ("kubeproxy_sync_proxy_rules_endpoint_changes_total", Some(3.0)),
            ("kubeproxy_sync_proxy_rules_service_changes_total", Some(1.0)),
            ("kubeproxy_sync_proxy_rules_endpoint_changes_pending", Some(2.0)),
            ("kubeproxy_sync_proxy_rules_service_changes_pending", Some(0.0)),
            (
                "kubeproxy_sync_proxy_rules_no_local_endpoints_total{ip_family=\"IPv4\",traffic_policy=\"external\"}",
                Some(4.0),
            ),
            ("kubeproxy_proxy_healthz_total{code=\"200\"}", Some(1.0)),
            ("kubeproxy_sync_proxy_rules_duration_seconds_count", Some(1.0)),
            ("kubeproxy_sync_full_proxy_rules_duration_seconds_count", Some(1.0)),
            ("kubeproxy_sync_partial_proxy_rules_duration_seconds_count", Some(0.0)),
            ("ipvsbpf_sync_failures_total", Some(0.0)),
        ];
        for (series, v) in want {
            assert_eq!(sample(&text, series), *v, "{series} in\n{text}");
        }
        // No doubled suffix anywhere.
        assert!(!text.contains("_total_total"), "{text}");
        let ts = sample(&text, "kubeproxy_sync_proxy_rules_last_timestamp_seconds");
        assert!(ts.is_some_and(|t| t > 1.6e9), "{ts:?}");
        assert!(text.contains("# TYPE kubeproxy_sync_proxy_rules_no_local_endpoints_total gauge"));
        assert!(text.contains("# TYPE kubeproxy_network_programming_duration_seconds histogram"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn network_programming_and_pending() {
        let mut r = Registry::default();
        let m = Metrics::new(&mut r);
        let now = SystemTime::now();
        m.network_programmed(
            [
                now - Duration::from_millis(1500),
                now - Duration::from_secs(90),
                now + Duration::from_secs(3), // skew: 0, not a panic
            ],
            now,
        );
        m.set_pending(7, 12);
        let text = encoded(&r);
        let want: &[(&str, Option<f64>)] = &[
            (
                "kubeproxy_network_programming_duration_seconds_count",
                Some(3.0),
            ),
            (
                "kubeproxy_network_programming_duration_seconds_sum",
                Some(91.5),
            ),
            (
                "kubeproxy_network_programming_duration_seconds_bucket{le=\"0.0\"}",
                Some(1.0),
            ),
            (
                "kubeproxy_network_programming_duration_seconds_bucket{le=\"2.0\"}",
                Some(2.0),
            ),
            (
                "kubeproxy_sync_proxy_rules_service_changes_pending",
                Some(7.0),
            ),
            (
                "kubeproxy_sync_proxy_rules_endpoint_changes_pending",
                Some(12.0),
            ),
        ];
        for (series, v) in want {
            assert_eq!(sample(&text, series), *v, "{series} in\n{text}");
        }
    }

    #[test]
    fn sync_timer_without_success_is_a_failure() {
        let mut r = Registry::default();
        let m = Metrics::new(&mut r);
        drop(m.sync_timer(SyncKind::Partial));
        drop(m.sync_timer(SyncKind::Partial));
        assert_eq!(m.sync_failures.get(), 2);
        assert_eq!(m.last_sync_timestamp.get(), 0.0);
        let text = encoded(&r);
        let want = [
            (
                "kubeproxy_sync_partial_proxy_rules_duration_seconds_count",
                2.0,
            ),
            (
                "kubeproxy_sync_full_proxy_rules_duration_seconds_count",
                0.0,
            ),
            ("kubeproxy_sync_proxy_rules_duration_seconds_count", 2.0),
            ("ipvsbpf_sync_failures_total", 2.0),
            ("kubeproxy_sync_proxy_rules_last_timestamp_seconds", 0.0),
        ];
        for (series, v) in want {
            assert_eq!(sample(&text, series), Some(v), "{series} in\n{text}");
        }
    }

    #[test]
    fn sync_timer_measures_elapsed_time() {
        let mut r = Registry::default();
        let m = Metrics::new(&mut r);
        {
            let mut t = m.sync_timer(SyncKind::Full);
            std::thread::sleep(Duration::from_millis(20));
            t.succeeded();
        }
        let text = encoded(&r);
        let sum = sample(&text, "kubeproxy_sync_proxy_rules_duration_seconds_sum");
        assert!(sum.is_some_and(|s| (0.02..5.0).contains(&s)), "{sum:?}");
        // 20ms is above the 16ms bucket.
        assert_eq!(
            sample(
                &text,
                "kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"0.016\"}"
            ),
            Some(0.0),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                "kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"+Inf\"}"
            ),
            Some(1.0)
        );
    }

    #[test]
    fn network_programming_buckets_match_kube_proxy() {
        let b = network_programming_buckets();
        assert_eq!(b.len(), 1 + 2 + 59 + 12 + 7);
        assert_eq!(&b[..4], &[0.0, 0.25, 0.5, 1.0]);
        assert_eq!(b[b.len() - 1], 300.0);
        assert!(b.windows(2).all(|w| w[0] < w[1]), "{b:?}");
        let e: Vec<f64> = sync_buckets().collect();
        assert_eq!(e.len(), 15);
        assert_eq!(e[0], 0.001);
        assert_eq!(e[14], 0.001 * f64::powi(2.0, 14));
    }

    #[test]
    fn op_labels_are_snake_case() {
        let cases = [
            (Op::AddService, "add_service"),
            (Op::DeleteDestination, "delete_destination"),
            (Op::GetBpf, "get_bpf"),
            (Op::Flush, "flush"),
        ];
        for (op, want) in cases {
            assert_eq!(op_label(op), want);
        }
        let mut r = Registry::default();
        let m = Metrics::new(&mut r);
        m.ipvs_requests(Op::AddService, true, 1);
        m.ipvs_requests(Op::AddService, true, 1);
        m.ipvs_requests(Op::AddService, false, 1);
        m.source_objects_skipped("EndpointSlice", 1);
        m.source_relists("Service", 2);
        m.conntrack_deleted.inc_by(3);
        m.virtual_servers.set(7);
        let text = encoded(&r);
        let want = [
            (
                "ipvsbpf_ipvs_requests_total{op=\"add_service\",result=\"ok\"}",
                2.0,
            ),
            (
                "ipvsbpf_ipvs_requests_total{op=\"add_service\",result=\"error\"}",
                1.0,
            ),
            (
                "ipvsbpf_source_objects_skipped_total{kind=\"EndpointSlice\"}",
                1.0,
            ),
            ("ipvsbpf_source_relists_total{kind=\"Service\"}", 2.0),
            ("ipvsbpf_conntrack_udp_entries_deleted_total", 3.0),
            ("ipvsbpf_virtual_servers", 7.0),
            ("ipvsbpf_real_servers", 0.0),
        ];
        for (series, v) in want {
            assert_eq!(sample(&text, series), Some(v), "{series} in\n{text}");
        }
    }

    struct FakeDatapath(DatapathSnapshot);

    impl DatapathStats for FakeDatapath {
        fn snapshot(&self) -> Option<DatapathSnapshot> {
            Some(self.0.clone())
        }
    }

    #[test]
    fn datapath_stats_are_read_on_scrape() {
        let mut r = Registry::default();
        let m = Metrics::new(&mut r);
        let before = encoded(&r);
        assert!(!before.contains("ipvsbpf_bpf_"), "{before}");

        let snap = DatapathSnapshot {
            sessions: 12,
            session_capacity: 65536,
            kernel: Some(BpfStats {
                sessions: 12,
                inserted: 100,
                deleted: 88,
                insert_fail: 1,
                conflict: 2,
                snat_exhausted: 3,
                twins: 4,
                snat_reused: 5,
                snat_reused_unsafe: 6,
                snat_unmapped: 7,
                delete_miss: 8,
            }),
            counters: vec![
                (
                    Direction::Orig,
                    Reason::Xlated,
                    BpfCounter {
                        packets: 10,
                        bytes: 1500,
                    },
                ),
                (
                    Direction::Reply,
                    Reason::PassMiss,
                    BpfCounter {
                        packets: 5,
                        bytes: 300,
                    },
                ),
            ],
        };
        m.set_datapath_stats(Arc::new(FakeDatapath(snap)));
        let text = encoded(&r);
        let want = [
            ("ipvsbpf_bpf_sessions", 12.0),
            ("ipvsbpf_bpf_session_map_capacity", 65536.0),
            ("ipvsbpf_bpf_sessions_inserted_total", 100.0),
            ("ipvsbpf_bpf_sessions_deleted_total", 88.0),
            ("ipvsbpf_bpf_session_insert_failures_total", 1.0),
            ("ipvsbpf_bpf_session_conflicts_total", 2.0),
            ("ipvsbpf_snat_exhausted_total", 3.0),
            ("ipvsbpf_bpf_twins_total", 4.0),
            ("ipvsbpf_snat_reused_total", 5.0),
            ("ipvsbpf_snat_reused_unsafe_total", 6.0),
            ("ipvsbpf_snat_unmapped_total", 7.0),
            ("ipvsbpf_bpf_delete_miss_total", 8.0),
            (
                "ipvsbpf_bpf_packets_total{direction=\"egress\",reason=\"xlated\"}",
                10.0,
            ),
            (
                "ipvsbpf_bpf_bytes_total{direction=\"egress\",reason=\"xlated\"}",
                1500.0,
            ),
            (
                "ipvsbpf_bpf_packets_total{direction=\"ingress\",reason=\"pass_miss\"}",
                5.0,
            ),
            (
                "ipvsbpf_bpf_bytes_total{direction=\"ingress\",reason=\"pass_miss\"}",
                300.0,
            ),
        ];
        for (series, v) in want {
            assert_eq!(sample(&text, series), Some(v), "{series} in\n{text}");
        }
    }

    #[test]
    fn queued_and_programming_latency() {
        let mut r = Registry::default();
        let m = Metrics::new(&mut r);
        m.queued(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        m.observe_network_programming(Duration::from_millis(1500));
        let text = encoded(&r);
        assert_eq!(
            sample(
                &text,
                "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds"
            ),
            Some(1.7e9)
        );
        assert_eq!(
            sample(
                &text,
                "kubeproxy_network_programming_duration_seconds_bucket{le=\"1.0\"}"
            ),
            Some(0.0),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                "kubeproxy_network_programming_duration_seconds_bucket{le=\"2.0\"}"
            ),
            Some(1.0)
        );
    }
}
