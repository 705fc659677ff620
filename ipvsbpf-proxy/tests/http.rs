//! The HTTP servers over real sockets on 127.0.0.1: status codes, bodies
//! and headers as a kubelet probe, Prometheus or a cloud load balancer
//! would see them. The client is a plain `std::net::TcpStream` speaking
//! HTTP/1.1 with `Connection: close`, so nothing of the server side is
//! reused to check it.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ipvsbpf_proxy::model::desired::ServiceName;
use ipvsbpf_proxy::serving::http::{
    bind, health_router, metrics_router, serve, HealthCheckServers, HttpError, ProxyHealth,
};
use ipvsbpf_proxy::serving::metrics::{Metrics, SyncKind};
use prometheus_client::registry::Registry;
use tokio::sync::oneshot;

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }
}

/// One GET over a fresh connection, read to EOF.
fn get_blocking(addr: SocketAddr, path: &str) -> std::io::Result<Reply> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no header end in {text:?}")))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line in {head:?}")))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(Reply {
        status,
        headers,
        body: body.to_string(),
    })
}

async fn get(addr: SocketAddr, path: &str) -> Reply {
    let path = path.to_string();
    tokio::task::spawn_blocking(move || get_blocking(addr, &path))
        .await
        .expect("client task")
        .unwrap_or_else(|e| panic!("GET {addr}: {e}"))
}

async fn connect_fails(addr: SocketAddr) -> bool {
    tokio::task::spawn_blocking(move || get_blocking(addr, "/").is_err())
        .await
        .expect("client task")
}

/// A server on 127.0.0.1:0 until the returned sender is dropped.
async fn start(router: axum::Router) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(serve(listener, router, async move {
        let _ = rx.await;
    }));
    (addr, tx)
}

/// A port free a moment ago.
fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

const TIMEOUT: Duration = Duration::from_secs(60);

fn check_probe_headers(r: &Reply) {
    assert_eq!(r.header("content-type"), Some("application/json"), "{r:?}");
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_fresh_stale_and_node_ineligible() {
    let health = Arc::new(ProxyHealth::new(TIMEOUT));
    let (addr, _stop) = start(health_router(health.clone())).await;

    // Starting up, nothing queued: healthy.
    let r = get(addr, "/healthz").await;
    assert_eq!(r.status, 200, "{r:?}");
    check_probe_headers(&r);
    let v = r.json();
    assert_eq!(v["nodeEligible"], true);
    // Healthy: lastUpdated is reported as now, like kube-proxy.
    assert_eq!(v["lastUpdated"], v["currentTime"], "{v}");

    // A change queued 2 minutes ago and never synced: stale.
    let now = SystemTime::now();
    health.updated(now - Duration::from_secs(300));
    health.queued(now - Duration::from_secs(120));
    let r = get(addr, "/healthz").await;
    assert_eq!(r.status, 503, "{r:?}");
    check_probe_headers(&r);
    let v = r.json();
    assert_ne!(v["lastUpdated"], v["currentTime"], "{v}");
    let r = get(addr, "/livez").await;
    assert_eq!(r.status, 503, "{r:?}");

    // Synced: fresh again.
    health.updated(SystemTime::now());
    assert_eq!(get(addr, "/healthz").await.status, 200);

    // Queued just now: not late yet.
    health.queued(SystemTime::now());
    assert_eq!(get(addr, "/healthz").await.status, 200);
    health.updated(SystemTime::now());

    // Node marked for deletion: /healthz fails, /livez does not.
    health.set_node_eligible(false);
    let r = get(addr, "/healthz").await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.json()["nodeEligible"], false);
    let r = get(addr, "/livez").await;
    assert_eq!(r.status, 200, "{r:?}");
    check_probe_headers(&r);
    let v = r.json();
    assert!(v.get("nodeEligible").is_none(), "{v}");
    assert!(v["currentTime"].as_str().is_some_and(|t| t.ends_with('Z')));

    health.set_node_eligible(true);
    assert_eq!(get(addr, "/healthz").await.status, 200);
    assert_eq!(get(addr, "/nothing-here").await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_a_sync_carry_kube_proxy_names() {
    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    let health = Arc::new(ProxyHealth::new(TIMEOUT).with_metrics(metrics.clone()));
    let (maddr, _stop_m) = start(metrics_router(Arc::new(registry))).await;
    let (haddr, _stop_h) = start(health_router(health.clone())).await;

    metrics.service_changes.inc_by(2);
    metrics.endpoint_changes.inc_by(5);
    {
        let mut t = metrics.sync_timer(SyncKind::Full);
        t.succeeded();
    }
    drop(metrics.sync_timer(SyncKind::Partial));
    assert_eq!(get(haddr, "/healthz").await.status, 200);
    health.set_node_eligible(false);
    assert_eq!(get(haddr, "/healthz").await.status, 503);

    let r = get(maddr, "/metrics").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/openmetrics-text")),
        "{r:?}"
    );
    let lines: Vec<&str> = r.body.lines().collect();
    for want in [
        "kubeproxy_sync_proxy_rules_duration_seconds_count 2",
        "kubeproxy_sync_full_proxy_rules_duration_seconds_count 1",
        "kubeproxy_sync_partial_proxy_rules_duration_seconds_count 1",
        "kubeproxy_sync_proxy_rules_service_changes_total 2",
        "kubeproxy_sync_proxy_rules_endpoint_changes_total 5",
        "kubeproxy_proxy_healthz_total{code=\"200\"} 1",
        "kubeproxy_proxy_healthz_total{code=\"503\"} 1",
        "ipvsbpf_sync_failures_total 1",
    ] {
        assert!(lines.contains(&want), "{want:?} missing in\n{}", r.body);
    }
    assert!(
        lines.iter().any(
            |l| l.starts_with("kubeproxy_sync_proxy_rules_last_timestamp_seconds ")
                && !l.ends_with(" 0.0")
        ),
        "{}",
        r.body
    );

    let r = get(maddr, "/healthz").await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
}

fn svc(ns: &str, name: &str) -> ServiceName {
    ServiceName::new(ns, name)
}

async fn check_hc(port: u16, want_status: u16, ns: &str, name: &str, count: u64) {
    let r = get(SocketAddr::from(([127, 0, 0, 1], port)), "/any/path").await;
    assert_eq!(r.status, want_status, "port {port}: {r:?}");
    check_probe_headers(&r);
    assert_eq!(
        r.header("x-load-balancing-endpoint-weight"),
        Some(count.to_string().as_str())
    );
    let v = r.json();
    assert_eq!(v["service"]["namespace"], ns);
    assert_eq!(v["service"]["name"], name);
    assert_eq!(v["localEndpoints"], count);
    assert_eq!(v["serviceProxyHealthy"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_ports_open_update_and_close() {
    let health = Arc::new(ProxyHealth::new(TIMEOUT));
    let hcs = HealthCheckServers::new([127, 0, 0, 1].into(), health.clone());
    let (p1, p2) = (free_port(), free_port());
    assert_ne!(p1, p2);

    let mut wanted = BTreeMap::new();
    wanted.insert(p1, (svc("default", "web"), 2));
    wanted.insert(p2, (svc("shop", "cart"), 0));
    let errs = hcs.sync(&wanted).await;
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(hcs.ports().await, {
        let mut v = vec![p1, p2];
        v.sort();
        v
    });
    check_hc(p1, 200, "default", "web", 2).await;
    check_hc(p2, 503, "shop", "cart", 0).await;

    // Counts change in place.
    wanted.insert(p1, (svc("default", "web"), 0));
    wanted.insert(p2, (svc("shop", "cart"), 3));
    assert!(hcs.sync(&wanted).await.is_empty());
    check_hc(p1, 503, "default", "web", 0).await;
    check_hc(p2, 200, "shop", "cart", 3).await;

    // A stuck sync loop fails every health check, as kube-proxy.
    health.queued(SystemTime::now() - Duration::from_secs(120));
    let r = get(SocketAddr::from(([127, 0, 0, 1], p2)), "/").await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.json()["serviceProxyHealthy"], false);
    health.updated(SystemTime::now());

    // Removed port closes; the other stays.
    wanted.remove(&p1);
    assert!(hcs.sync(&wanted).await.is_empty());
    assert_eq!(hcs.ports().await, vec![p2]);
    assert!(connect_fails(SocketAddr::from(([127, 0, 0, 1], p1))).await);
    check_hc(p2, 200, "shop", "cart", 3).await;

    // The freed port can be reopened, for another Service.
    wanted.insert(p1, (svc("other", "api"), 1));
    assert!(hcs.sync(&wanted).await.is_empty());
    check_hc(p1, 200, "other", "api", 1).await;

    hcs.close_all().await;
    assert!(hcs.ports().await.is_empty());
    assert!(connect_fails(SocketAddr::from(([127, 0, 0, 1], p1))).await);
    assert!(connect_fails(SocketAddr::from(([127, 0, 0, 1], p2))).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_collision_fails_only_that_port_and_is_retried() {
    let health = Arc::new(ProxyHealth::new(TIMEOUT));
    let hcs = HealthCheckServers::new([127, 0, 0, 1].into(), health);
    let taken = StdListener::bind("127.0.0.1:0").expect("bind");
    let busy = taken.local_addr().expect("addr").port();
    let ok = free_port();

    let mut wanted = BTreeMap::new();
    wanted.insert(busy, (svc("a", "busy"), 1));
    wanted.insert(ok, (svc("a", "fine"), 1));
    let errs = hcs.sync(&wanted).await;
    assert_eq!(errs.len(), 1, "{errs:?}");
    match &errs[0] {
        HttpError::Bind { addr, source } => {
            assert_eq!(addr.port(), busy);
            assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse);
        }
        e => panic!("unexpected error {e:?}"),
    }
    assert!(errs[0].to_string().contains(&busy.to_string()));
    assert_eq!(hcs.ports().await, vec![ok]);
    check_hc(ok, 200, "a", "fine", 1).await;

    // The port is freed; the next sync opens it.
    drop(taken);
    let errs = hcs.sync(&wanted).await;
    assert!(errs.is_empty(), "{errs:?}");
    check_hc(busy, 200, "a", "busy", 1).await;

    // Port 0 is refused, not bound to a random port.
    wanted.insert(0, (svc("a", "zero"), 1));
    let errs = hcs.sync(&wanted).await;
    assert!(
        matches!(errs.as_slice(), [HttpError::ZeroPort { .. }]),
        "{errs:?}"
    );
    hcs.close_all().await;
}
