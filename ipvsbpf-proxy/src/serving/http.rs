//! HTTP surface: the proxy health server (`/healthz`, `/livez`), the
//! metrics server (`/metrics`, `/healthz`) and the per-Service health-check
//! node ports of `externalTrafficPolicy: Local` Services. Answers follow
//! kube-proxy (`pkg/proxy/healthcheck`) byte for byte where load balancers
//! and probes look at them: status codes, JSON bodies and headers.
//!
//! One difference: kube-proxy tracks health per IP family because it runs a
//! proxier per family; this proxy syncs both families in one loop, so
//! [`ProxyHealth`] keeps a single pair of timestamps.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::model::desired::ServiceName;
use crate::serving::metrics::Metrics;

/// The taint the Cluster Autoscaler puts on a node it is about to delete;
/// load balancers should drain it, so `/healthz` fails.
pub const TO_BE_DELETED_TAINT: &str = "ToBeDeletedByClusterAutoscaler";

/// Errors of the HTTP servers.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("server on {addr} failed: {source}")]
    Serve {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("health check for {service}: port 0 is not a node port")]
    ZeroPort { service: ServiceName },
}

/// The proxy's own health, fed by the sync loop. Healthy unless a change
/// has been queued for longer than the health timeout without a sync
/// completing (kube-proxy's `ProxyHealthServer`); a proxy that has never
/// synced but has nothing queued is healthy (starting up).
#[derive(Debug)]
pub struct ProxyHealth {
    timeout: Duration,
    state: Mutex<HealthState>,
    metrics: Option<Metrics>,
}

#[derive(Debug)]
struct HealthState {
    last_updated: Option<SystemTime>,
    /// The oldest queued change not yet synced.
    oldest_pending: Option<SystemTime>,
    node_eligible: bool,
}

/// One evaluation of [`ProxyHealth`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthStatus {
    /// The sync loop keeps up (node eligibility not included).
    pub healthy: bool,
    pub last_updated: Option<SystemTime>,
    pub node_eligible: bool,
}

impl ProxyHealth {
    /// `timeout`: how long a queued change may wait for a sync; kube-proxy
    /// uses twice the sync period (`Config::health_timeout`).
    pub fn new(timeout: Duration) -> ProxyHealth {
        ProxyHealth {
            timeout,
            state: Mutex::new(HealthState {
                last_updated: None,
                oldest_pending: None,
                // Eligible until a Node event says otherwise.
                node_eligible: true,
            }),
            metrics: None,
        }
    }

    /// Counts `/healthz` and `/livez` answers into `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> ProxyHealth {
        self.metrics = Some(metrics);
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HealthState> {
        // The state is plain timestamps: a panic elsewhere cannot leave it
        // inconsistent, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A Service or EndpointSlice change arrived; keeps the oldest pending
    /// time, so a stream of changes cannot hide a stuck sync.
    pub fn queued(&self, now: SystemTime) {
        let mut s = self.lock();
        if s.oldest_pending.is_none() {
            s.oldest_pending = Some(now);
        }
    }

    /// A sync completed: everything queued before it is programmed.
    pub fn updated(&self, now: SystemTime) {
        let mut s = self.lock();
        s.oldest_pending = None;
        s.last_updated = Some(now);
    }

    /// From the Node watch; see [`node_eligible`].
    pub fn set_node_eligible(&self, eligible: bool) {
        self.lock().node_eligible = eligible;
    }

    /// Evaluates health at `now`.
    pub fn status(&self, now: SystemTime) -> HealthStatus {
        let s = self.lock();
        let late = s.oldest_pending.is_some_and(|q| {
            now.duration_since(q)
                .is_ok_and(|waited| waited >= self.timeout)
        });
        HealthStatus {
            healthy: !late,
            last_updated: s.last_updated,
            node_eligible: s.node_eligible,
        }
    }

    /// The sync loop's health alone, as kube-proxy's `IsHealthy` (used by
    /// the Service health checks' `serviceProxyHealthy`).
    pub fn is_healthy(&self, now: SystemTime) -> bool {
        self.status(now).healthy
    }
}

/// Whether the node should receive load-balancer traffic: not being
/// deleted and not tainted by the Cluster Autoscaler for deletion.
pub fn node_eligible(node: &Node) -> bool {
    if node.metadata.deletion_timestamp.is_some() {
        return false;
    }
    !node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| t.iter().any(|t| t.key == TO_BE_DELETED_TAINT))
}

/// RFC 3339 in UTC; Go's zero time for "never".
fn rfc3339(t: Option<SystemTime>) -> String {
    t.and_then(|t| Timestamp::try_from(t).ok())
        .map(|ts| ts.to_string())
        .unwrap_or_else(|| "0001-01-01T00:00:00Z".to_string())
}

fn json_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        body,
    )
        .into_response()
}

/// Whether `/healthz` (with the node) or `/livez` (without) is answered.
#[derive(Clone, Copy)]
enum Probe {
    Healthz,
    Livez,
}

fn probe(health: &ProxyHealth, which: Probe) -> Response {
    let now = SystemTime::now();
    let st = health.status(now);
    let healthy = match which {
        Probe::Healthz => st.healthy && st.node_eligible,
        Probe::Livez => st.healthy,
    };
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    if let Some(m) = &health.metrics {
        match which {
            Probe::Healthz => m.healthz_answer(code.as_u16()),
            Probe::Livez => m.livez_answer(code.as_u16()),
        }
    }
    // As kube-proxy: when healthy, lastUpdated is "now" (older releases
    // reported the last loop run, and clients compare it with currentTime).
    let last = if healthy { Some(now) } else { st.last_updated };
    let (last, current) = (rfc3339(last), rfc3339(Some(now)));
    let body = match which {
        Probe::Healthz => format!(
            r#"{{"lastUpdated": "{last}","currentTime": "{current}", "nodeEligible": {}}}"#,
            st.node_eligible
        ),
        Probe::Livez => format!(r#"{{"lastUpdated": "{last}","currentTime": "{current}"}}"#),
    };
    json_response(code, body)
}

/// `/healthz` and `/livez` for `--healthz-bind-address`.
pub fn health_router(health: Arc<ProxyHealth>) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|State(h): State<Arc<ProxyHealth>>| async move { probe(&h, Probe::Healthz) }),
        )
        .route(
            "/livez",
            get(|State(h): State<Arc<ProxyHealth>>| async move { probe(&h, Probe::Livez) }),
        )
        .with_state(health)
}

/// The OpenMetrics content type prometheus-client's text encoder writes.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

async fn metrics_handler(State(registry): State<Arc<Registry>>) -> Response {
    match Metrics::encode(&registry) {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(OPENMETRICS_CONTENT_TYPE),
            )],
            text,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "encoding metrics failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "encoding metrics failed\n",
            )
                .into_response()
        }
    }
}

/// `/metrics` and a plain `/healthz` ("ok", as kube-proxy's metrics
/// server installs) for `--metrics-bind-address`.
pub fn metrics_router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(registry)
}

/// Binds `addr`, with the address in the error.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, HttpError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind { addr, source })
}

/// Serves `router` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), HttpError> {
    let addr = listener.local_addr().map_err(|source| HttpError::Serve {
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        source,
    })?;
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| HttpError::Serve { addr, source })
}

/// What one health-check port reports.
#[derive(Clone, Debug, PartialEq, Eq)]
struct HcState {
    service: ServiceName,
    local_endpoints: usize,
}

#[derive(Clone)]
struct HcShared {
    state: Arc<RwLock<HcState>>,
    health: Arc<ProxyHealth>,
}

struct HcInstance {
    shared: HcShared,
    addr: SocketAddr,
    task: JoinHandle<()>,
}

/// The body kube-proxy writes (a dedented, tab-indented template).
fn service_health_body(service: &ServiceName, count: usize, healthy: bool) -> String {
    let q = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    format!(
        "{{\n\t\"service\": {{\n\t\t\"namespace\": {},\n\t\t\"name\": {}\n\t}},\n\t\"localEndpoints\": {count},\n\t\"serviceProxyHealthy\": {healthy}\n}}",
        q(&service.namespace),
        q(&service.name)
    )
}

async fn service_health(State(hc): State<HcShared>) -> Response {
    let st = hc
        .state
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let healthy = hc.health.is_healthy(SystemTime::now());
    let code = if st.local_endpoints > 0 && healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut resp = json_response(
        code,
        service_health_body(&st.service, st.local_endpoints, healthy),
    );
    // Newer kube-proxy also tells weighting load balancers the count.
    resp.headers_mut().insert(
        HeaderName::from_static("x-load-balancing-endpoint-weight"),
        HeaderValue::from(st.local_endpoints),
    );
    resp
}

/// The health-check node ports of `externalTrafficPolicy: Local`
/// Services: one listener per port, answering every path.
pub struct HealthCheckServers {
    bind: IpAddr,
    health: Arc<ProxyHealth>,
    ports: tokio::sync::Mutex<BTreeMap<u16, HcInstance>>,
}

impl HealthCheckServers {
    /// `bind`: `0.0.0.0` or `::` in the daemon (kube-proxy with all node
    /// addresses), a loopback address in tests.
    pub fn new(bind: IpAddr, health: Arc<ProxyHealth>) -> HealthCheckServers {
        HealthCheckServers {
            bind,
            health,
            ports: tokio::sync::Mutex::new(BTreeMap::new()),
        }
    }

    /// Makes the open ports exactly `wanted` (node port → Service, local
    /// endpoints): opens new ones, closes removed ones, updates the rest
    /// in place. A port that cannot be opened is logged and returned, and
    /// retried on the next sync; the others are unaffected.
    pub async fn sync(&self, wanted: &BTreeMap<u16, (ServiceName, usize)>) -> Vec<HttpError> {
        let mut ports = self.ports.lock().await;
        let removed: Vec<u16> = ports
            .keys()
            .filter(|p| !wanted.contains_key(p))
            .copied()
            .collect();
        for port in removed {
            if let Some(inst) = ports.remove(&port) {
                inst.task.abort();
                // Aborting drops the listener; waiting for it frees the
                // port before a re-open in this or the next sync.
                let _ = inst.task.await;
                tracing::info!(port, addr = %inst.addr, "closed health check");
            }
        }
        let mut errors = Vec::new();
        for (&port, (service, count)) in wanted {
            let want = HcState {
                service: service.clone(),
                local_endpoints: *count,
            };
            if let Some(inst) = ports.get(&port) {
                *inst
                    .shared
                    .state
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = want;
                continue;
            }
            if port == 0 {
                errors.push(HttpError::ZeroPort {
                    service: service.clone(),
                });
                continue;
            }
            match self.open(port, want).await {
                Ok(inst) => {
                    tracing::info!(port, service = %service, "opened health check");
                    ports.insert(port, inst);
                }
                Err(e) => {
                    tracing::warn!(error = %e, service = %service, "failed to start health check");
                    errors.push(e);
                }
            }
        }
        errors
    }

    async fn open(&self, port: u16, state: HcState) -> Result<HcInstance, HttpError> {
        let addr = SocketAddr::new(self.bind, port);
        let listener = bind(addr).await?;
        let shared = HcShared {
            state: Arc::new(RwLock::new(state)),
            health: self.health.clone(),
        };
        let router = Router::new()
            .fallback(service_health)
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(error = %e, %addr, "health check server failed");
            }
        });
        Ok(HcInstance { shared, addr, task })
    }

    /// The ports open now.
    pub async fn ports(&self) -> Vec<u16> {
        self.ports.lock().await.keys().copied().collect()
    }

    /// Closes every port.
    pub async fn close_all(&self) {
        let _ = self.sync(&BTreeMap::new()).await;
    }
}

impl Drop for HealthCheckServers {
    fn drop(&mut self) {
        for inst in self.ports.get_mut().values() {
            inst.task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeSpec, Taint};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    #[test]
    fn health_follows_queued_and_updated() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let s = |n: u64| t0 + Duration::from_secs(n);
        let h = ProxyHealth::new(Duration::from_secs(60));
        // (step, at, healthy after)
        enum Step {
            Queue,
            Update,
            Check,
        }
        let steps = [
            (Step::Check, 0, true),   // starting, nothing queued
            (Step::Queue, 10, true),  // queued, not late
            (Step::Check, 69, true),  // 59s waiting
            (Step::Queue, 65, true),  // later change keeps the oldest
            (Step::Check, 70, false), // 60s since the oldest
            (Step::Update, 71, true), // synced
            (Step::Check, 500, true), // nothing pending: healthy however old
            (Step::Queue, 600, true),
            (Step::Check, 661, false),
        ];
        for (i, (step, at, want)) in steps.into_iter().enumerate() {
            match step {
                Step::Queue => h.queued(s(at)),
                Step::Update => h.updated(s(at)),
                Step::Check => {}
            }
            assert_eq!(h.is_healthy(s(at)), want, "step {i} at +{at}s");
        }
        assert_eq!(h.status(s(700)).last_updated, Some(s(71)));
    }

    #[test]
    fn node_eligibility() {
        let node = |deleting: bool, taints: &[&str]| Node {
            metadata: ObjectMeta {
                deletion_timestamp: deleting.then_some(Time(Timestamp::UNIX_EPOCH)),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec {
                taints: Some(
                    taints
                        .iter()
                        .map(|k| Taint {
                            key: k.to_string(),
                            effect: "NoSchedule".into(),
                            ..Taint::default()
                        })
                        .collect(),
                ),
                ..NodeSpec::default()
            }),
            status: None,
        };
        let cases = [
            (node(false, &[]), true),
            (node(false, &["node.kubernetes.io/unschedulable"]), true),
            (node(false, &["x", TO_BE_DELETED_TAINT]), false),
            (node(true, &[]), false),
            (Node::default(), true),
        ];
        for (i, (n, want)) in cases.iter().enumerate() {
            assert_eq!(node_eligible(n), *want, "case {i}");
        }
    }

    #[test]
    fn service_health_body_matches_kube_proxy_layout() {
        let body = service_health_body(&ServiceName::new("ns", "we\"ird"), 2, true);
        assert_eq!(
            body,
            "{\n\t\"service\": {\n\t\t\"namespace\": \"ns\",\n\t\t\"name\": \"we\\\"ird\"\n\t},\n\t\"localEndpoints\": 2,\n\t\"serviceProxyHealthy\": true\n}"
        );
        let v: serde_json::Value = serde_json::from_str(&body).expect("valid JSON");
        assert_eq!(v["service"]["name"], "we\"ird");
    }

    #[test]
    fn rfc3339_times() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_500);
        assert_eq!(rfc3339(Some(t)), "2023-11-14T22:13:20.5Z");
        assert_eq!(rfc3339(None), "0001-01-01T00:00:00Z");
    }
}
