//! The `kube` source against the in-repo test API server: every test makes
//! the server's state change in some way a real cluster does (events,
//! relists, dropped streams, restarts, bad objects) and waits, bounded,
//! until the inventory holds exactly the server's objects.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ipvsbpf_proxy::model::desired::ServiceName;
use ipvsbpf_proxy::model::inventory::{Shared, SharedInventory};
use ipvsbpf_proxy::sources::kube::{run, WatchOptions};
use ipvsbpf_proxy::sources::{ObjectKind, SourceStats};
use serde_json::json;
use support::apiserver::ApiServer;
use support::{converge, expect, node, service, slice, wait_for};
use tokio::task::JoinHandle;

struct Running {
    inv: Shared,
    stats: Arc<SourceStats>,
    task: JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn start_source(server: &ApiServer, proxy_name: Option<&str>) -> Running {
    start_source_with(server, proxy_name, WatchOptions::default())
}

fn start_source_with(server: &ApiServer, proxy_name: Option<&str>, opts: WatchOptions) -> Running {
    let inv = SharedInventory::new_shared();
    let stats = Arc::new(SourceStats::default());
    let task = tokio::spawn(run(
        server.client(),
        "node-1".to_string(),
        proxy_name.map(str::to_string),
        inv.clone(),
        stats.clone(),
        opts,
    ));
    let task = tokio::spawn(async move {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("kube source ended: {e}"),
            Err(e) if e.is_cancelled() => {}
            Err(e) => panic!("kube source task: {e}"),
        }
    });
    Running { inv, stats, task }
}

/// Two Services with a slice each, this node and another one.
/// Watches that end after 1 s, so that a silent or unfinished stream is
/// noticed within seconds.
fn one_second_watches() -> WatchOptions {
    WatchOptions {
        timeout_secs: 1,
        ..WatchOptions::default()
    }
}

/// Returns the resourceVersions (svc a, svc b, slice a, slice b, node-1).
fn populate(server: &ApiServer) -> [u64; 5] {
    let a = server.apply(service("default", "a", 80, json!({})));
    let b = server.apply(service("kube-system", "b", 53, json!({})));
    let sa = server.apply(slice("default", "a-x1", "a", "10.1.0.1", json!({})));
    let sb = server.apply(slice("kube-system", "b-x1", "b", "10.1.0.2", json!({})));
    let n1 = server.apply(node("node-1", "192.168.0.1"));
    server.apply(node("node-2", "192.168.0.2"));
    [a, b, sa, sb, n1]
}

fn no_unexpected(server: &ApiServer) {
    assert_eq!(server.unexpected(), Vec::<String>::new());
}

#[tokio::test]
async fn initial_list() {
    let server = ApiServer::start().await;
    let [a, b, sa, sb, n1] = populate(&server);
    let src = start_source(&server, None);
    converge(
        &src.inv,
        &expect(&[
            ("Service default/a", a),
            ("Service kube-system/b", b),
            ("EndpointSlice default/a-x1", sa),
            ("EndpointSlice kube-system/b-x1", sb),
            ("Node node-1", n1),
        ]),
        "initial list",
    )
    .await;
    {
        let inv = src.inv.lock();
        let slices = inv.slices(&ServiceName::new("default", "a"));
        assert_eq!(slices.len(), 1);
        let addresses: Vec<String> = slices[0]
            .endpoints
            .iter()
            .map(|e| format!("{:?}", e.address))
            .collect();
        assert_eq!(addresses, ["Ip(10.1.0.1)"]);
    }
    // The requests kube-runtime made carry kube-proxy's selectors.
    let logged = server.logged();
    let selector = "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless";
    for path in [
        "/api/v1/services",
        "/apis/discovery.k8s.io/v1/endpointslices",
    ] {
        let reqs: Vec<_> = logged.iter().filter(|r| r.path == path).collect();
        // The listing is a streaming list from the watch cache, as
        // client-go's informers' is where the server has WatchList: no list
        // request at all.
        assert!(
            reqs.first()
                .is_some_and(|r| r.param("watch") == Some("true")
                    && r.param("sendInitialEvents") == Some("true")
                    && r.param("resourceVersion") == Some("0")
                    && r.param("resourceVersionMatch") == Some("NotOlderThan")),
            "{path}: a streaming list at resourceVersion 0 first: {logged:#?}"
        );
        assert!(
            reqs.iter().all(|r| r.param("watch") == Some("true")),
            "{path}: no list request: {logged:#?}"
        );
        assert!(
            reqs.iter()
                .filter(|r| r.param("watch").is_some())
                .all(|r| r.param("timeoutSeconds") == Some("55")),
            "{path}: watches end after 55 s: {logged:#?}"
        );
        assert!(
            reqs.iter().any(|r| r.param("watch") == Some("true")
                && r.param("allowWatchBookmarks") == Some("true")
                && r.param("resourceVersion").is_some()),
            "{path}: a watch with bookmarks from a resourceVersion: {logged:#?}"
        );
        assert!(
            reqs.iter()
                .all(|r| r.param("labelSelector") == Some(selector)),
            "{path}: {logged:#?}"
        );
    }
    let nodes: Vec<_> = logged
        .iter()
        .filter(|r| r.path == "/api/v1/nodes")
        .collect();
    // one streaming list, which goes on as the watch
    assert!(
        nodes
            .first()
            .is_some_and(|r| r.param("sendInitialEvents") == Some("true")),
        "{logged:#?}"
    );
    assert!(
        nodes
            .iter()
            .all(|r| r.param("fieldSelector") == Some("metadata.name=node-1")),
        "{logged:#?}"
    );
    no_unexpected(&server);
}

/// What `populate` made, as `converge` wants it.
fn populated([a, b, sa, sb, n1]: [u64; 5]) -> BTreeMap<String, String> {
    expect(&[
        ("Service default/a", a),
        ("Service kube-system/b", b),
        ("EndpointSlice default/a-x1", sa),
        ("EndpointSlice kube-system/b-x1", sb),
        ("Node node-1", n1),
    ])
}

/// Per kind: `streams` streaming-list requests, then a list from the
/// watch cache (resourceVersion=0, unpaged).
fn streamed_then_listed(server: &ApiServer, streams: usize) {
    let logged = server.logged();
    for path in [
        "/api/v1/services",
        "/apis/discovery.k8s.io/v1/endpointslices",
        "/api/v1/nodes",
    ] {
        let reqs: Vec<_> = logged.iter().filter(|r| r.path == path).collect();
        let streamed = reqs
            .iter()
            .filter(|r| r.param("sendInitialEvents").is_some())
            .count();
        assert_eq!(streamed, streams, "{path}: {reqs:#?}");
        assert!(
            reqs.iter().any(|r| r.param("watch").is_none()
                && r.param("resourceVersion") == Some("0")
                && r.param("limit").is_none()),
            "{path}: a list from the watch cache: {reqs:#?}"
        );
    }
}

/// A server without streaming lists (the WatchList feature gate off, as
/// before Kubernetes 1.32) refuses them with 422: the proxy lists instead,
/// from the watch cache, and follows changes as before.
#[tokio::test]
async fn streaming_list_refused_falls_back_to_list() {
    let server = ApiServer::start().await;
    server.refuse_watch_list();
    let rvs = populate(&server);
    let src = start_source(&server, None);
    converge(&src.inv, &populated(rvs), "listed after the refusal").await;
    let c = server.apply(service("default", "c", 9090, json!({})));
    let mut want = populated(rvs);
    want.insert("Service default/c".to_string(), c.to_string());
    converge(&src.inv, &want, "a change after the fallback").await;
    // One refusal per kind, then lists: no retry loop on a refusal.
    streamed_then_listed(&server, 1);
    assert_eq!(src.stats.relists(), 3);
}

/// A server that ignores `sendInitialEvents` answers a plain watch that
/// never marks the end of the listing; when that happened twice (its
/// timeout), the proxy lists instead of streaming again forever.
#[tokio::test]
async fn streaming_list_without_end_falls_back_to_list() {
    let server = ApiServer::start().await;
    server.ignore_watch_list();
    let rvs = populate(&server);
    let src = start_source_with(&server, None, one_second_watches());
    converge(
        &src.inv,
        &populated(rvs),
        "listed after the unfinished streams",
    )
    .await;
    // The stream that ended, one more that ended too, the one that began
    // a third time (its Init is what the proxy sees), then lists.
    streamed_then_listed(&server, 3);
    assert_eq!(src.stats.relists(), 3);
}

#[tokio::test]
async fn add_modify_delete_events() {
    let server = ApiServer::start().await;
    let [a, _b, sa, _sb, n1] = populate(&server);
    let src = start_source(&server, None);
    wait_for("synced", || src.inv.lock().synced()).await;
    src.inv.lock().take_dirty();
    let relists = src.stats.relists();

    let c = server.apply(service("default", "c", 443, json!({})));
    let sc = server.apply(slice("default", "c-x1", "c", "10.1.0.3", json!({})));
    let a2 = server.apply(service("default", "a", 8080, json!({})));
    assert!(server.delete("EndpointSlice", "kube-system", "b-x1"));
    assert!(server.delete("Service", "kube-system", "b"));
    converge(
        &src.inv,
        &expect(&[
            ("Service default/a", a2),
            ("Service default/c", c),
            ("EndpointSlice default/a-x1", sa),
            ("EndpointSlice default/c-x1", sc),
            ("Node node-1", n1),
        ]),
        "after events",
    )
    .await;
    assert_ne!(a, a2);
    let dirty = src.inv.lock().take_dirty();
    let names: Vec<String> = dirty.services.iter().map(|s| s.to_string()).collect();
    assert_eq!(names, ["default/a", "default/c", "kube-system/b"]);
    assert!(!dirty.all);
    let port = src
        .inv
        .lock()
        .service(&ServiceName::new("default", "a"))
        .and_then(|s| {
            s.spec
                .as_ref()
                .ok()?
                .as_ref()?
                .ports
                .first()
                .map(|p| p.port)
        });
    assert_eq!(port, Some(8080));
    // Events, not relists, carried this.
    assert_eq!(src.stats.relists(), relists);

    // The node changing dirties everything.
    let n1b = server.apply(node("node-1", "192.168.0.11"));
    wait_for("node update", || {
        src.inv
            .lock()
            .node()
            .and_then(|n| n.metadata.resource_version.clone())
            == Some(n1b.to_string())
    })
    .await;
    assert!(src.inv.lock().take_dirty().all);
    no_unexpected(&server);
}

#[tokio::test]
async fn bookmarks_do_not_break_anything() {
    let server = ApiServer::start().await;
    server.set_bookmark_interval(Duration::from_millis(50));
    let [a, b, sa, sb, n1] = populate(&server);
    let src = start_source(&server, None);
    wait_for("synced", || src.inv.lock().synced()).await;
    let watches = server.watches_started();
    wait_for("bookmarks sent", || server.bookmarks_sent() >= 15).await;
    let c = server.apply(service("default", "c", 443, json!({})));
    converge(
        &src.inv,
        &expect(&[
            ("Service default/a", a),
            ("Service kube-system/b", b),
            ("Service default/c", c),
            ("EndpointSlice default/a-x1", sa),
            ("EndpointSlice kube-system/b-x1", sb),
            ("Node node-1", n1),
        ]),
        "after bookmarks",
    )
    .await;
    // Bookmarks neither restarted watches nor caused relists.
    assert_eq!(server.watches_started(), watches);
    assert_eq!(src.stats.relists(), 3);
    assert!(server
        .requests()
        .iter()
        .any(|r| r.contains("allowWatchBookmarks=true")));
    no_unexpected(&server);
}

#[tokio::test]
async fn gone_on_watch_relists_and_converges() {
    let server = ApiServer::start().await;
    let [a, _b, sa, _sb, n1] = populate(&server);
    let src = start_source(&server, None);
    wait_for("synced", || src.inv.lock().synced()).await;
    let relists = src.stats.relists();
    assert_eq!(relists, 3);

    // The client reconnects while the server holds its watch; meanwhile
    // objects change and the history is compacted, so its resourceVersion
    // is gone when the watch is served.
    server.hold_watches();
    server.drop_watches();
    assert!(server.delete("Service", "kube-system", "b"));
    assert!(server.delete("EndpointSlice", "kube-system", "b-x1"));
    let d = server.apply(service("default", "d", 8443, json!({})));
    server.compact();
    server.release_watches();
    converge(
        &src.inv,
        &expect(&[
            ("Service default/a", a),
            ("Service default/d", d),
            ("EndpointSlice default/a-x1", sa),
            ("Node node-1", n1),
        ]),
        "after 410",
    )
    .await;
    assert!(src.stats.relists() >= relists + 2, "410 must cause relists");
    // The relists went to etcd (no resourceVersion=0): a lagging watch
    // cache must not take back what the proxy already applied. The first
    // listings were streaming lists from the watch cache.
    let logged: Vec<_> = server
        .logged()
        .into_iter()
        .filter(|r| r.path != "/api/v1/nodes")
        .collect();
    let first: Vec<_> = logged
        .iter()
        .filter(|r| r.param("sendInitialEvents").is_some())
        .collect();
    assert!(
        first.len() == 2
            && first
                .iter()
                .all(|r| r.param("resourceVersion") == Some("0")),
        "first listings streamed from the watch cache: {first:#?}"
    );
    let relisted: Vec<_> = logged
        .iter()
        .filter(|r| r.param("watch").is_none())
        .collect();
    assert!(
        !relisted.is_empty()
            && relisted
                .iter()
                .all(|r| r.param("resourceVersion").is_none() && r.param("limit") == Some("500")),
        "relists after 410: consistent and paged: {relisted:#?}"
    );
    no_unexpected(&server);
}

#[tokio::test]
async fn dropped_stream_rewatches_and_converges() {
    let server = ApiServer::start().await;
    let [a, b, sa, sb, n1] = populate(&server);
    let src = start_source(&server, None);
    wait_for("synced", || src.inv.lock().synced()).await;
    let watches = server.watches_started();
    for round in 0..3u16 {
        server.drop_watches();
        let a2 = server.apply(service("default", "a", 9000 + round, json!({})));
        converge(
            &src.inv,
            &expect(&[
                ("Service default/a", a2),
                ("Service kube-system/b", b),
                ("EndpointSlice default/a-x1", sa),
                ("EndpointSlice kube-system/b-x1", sb),
                ("Node node-1", n1),
            ]),
            &format!("after drop {round}"),
        )
        .await;
        assert_ne!(a, a2);
    }
    wait_for("watches resumed", || {
        server.watches_started() >= watches + 9
    })
    .await;
    // Resumed from the last resourceVersion: no relist was needed.
    assert_eq!(src.stats.relists(), 3);
    no_unexpected(&server);
}

/// A watch whose connection died without a FIN sends nothing and never
/// ends; the source notices within its watch timeout plus 5 s, watches
/// again from where it was and converges, without a relist.
#[tokio::test]
async fn dead_watch_connection_is_noticed() {
    let server = ApiServer::start().await;
    // Quiet streams: only the stall may make them silent.
    server.set_bookmark_interval(Duration::from_secs(3600));
    let [_, b, sa, sb, n1] = populate(&server);
    let src = start_source_with(&server, None, one_second_watches());
    wait_for("synced", || src.inv.lock().synced()).await;
    let relists = src.stats.relists();
    // Counted before the stall: every watch requested up to it is stalled,
    // so converging takes a new one.
    let watches = server.watches_started();
    server.stall_watches();
    let stalled_at = tokio::time::Instant::now();
    let a2 = server.apply(service("default", "a", 9100, json!({})));
    converge(
        &src.inv,
        &expect(&[
            ("Service default/a", a2),
            ("Service kube-system/b", b),
            ("EndpointSlice default/a-x1", sa),
            ("EndpointSlice kube-system/b-x1", sb),
            ("Node node-1", n1),
        ]),
        "after the stall",
    )
    .await;
    let took = stalled_at.elapsed();
    assert!(server.watches_started() > watches);
    // 1 s timeout + kube-runtime's 5 s margin, and slack for a loaded
    // machine; the default (55 s) would take a minute
    assert!(took <= Duration::from_secs(15), "noticed after {took:?}");
    assert_eq!(src.stats.relists(), relists, "resumed, not relisted");
    no_unexpected(&server);
}

#[tokio::test]
async fn apiserver_restart_converges() {
    let mut server = ApiServer::start().await;
    let [_a, b, _sa, sb, n1] = populate(&server);
    let src = start_source(&server, None);
    wait_for("synced", || src.inv.lock().synced()).await;

    // Down, changed behind the client's back, up again on the same port.
    server.stop().await;
    assert!(server.delete("Service", "default", "a"));
    assert!(server.delete("EndpointSlice", "default", "a-x1"));
    let e = server.apply(service("default", "e", 80, json!({})));
    server.restart().await;
    converge(
        &src.inv,
        &expect(&[
            ("Service kube-system/b", b),
            ("Service default/e", e),
            ("EndpointSlice kube-system/b-x1", sb),
            ("Node node-1", n1),
        ]),
        "after restart",
    )
    .await;

    // Again, and this time the restarted server lost the history (a new
    // watch cache): the client must relist.
    let relists = src.stats.relists();
    server.stop().await;
    let b2 = server.apply(service("kube-system", "b", 5353, json!({})));
    server.compact();
    server.restart().await;
    converge(
        &src.inv,
        &expect(&[
            ("Service kube-system/b", b2),
            ("Service default/e", e),
            ("EndpointSlice kube-system/b-x1", sb),
            ("Node node-1", n1),
        ]),
        "after restart with compaction",
    )
    .await;
    assert!(src.stats.relists() > relists);
    no_unexpected(&server);
}

#[tokio::test]
async fn malformed_object_is_skipped_and_previous_kept() {
    let server = ApiServer::start().await;
    let [a, b, sa, sb, n1] = populate(&server);
    let src = start_source(&server, None);
    wait_for("synced", || src.inv.lock().synced()).await;
    let good = expect(&[
        ("Service default/a", a),
        ("Service kube-system/b", b),
        ("EndpointSlice default/a-x1", sa),
        ("EndpointSlice kube-system/b-x1", sb),
        ("Node node-1", n1),
    ]);

    // A watch event with a malformed version of a: skipped, a kept.
    let mut bad = service("default", "a", 80, json!({}));
    bad["spec"]["ports"] = json!("eighty");
    server.apply(bad.clone());
    // And a new object that never parsed: never appears.
    let mut bad_new = service("default", "z", 80, json!({}));
    bad_new["spec"]["ports"] = json!(7);
    server.apply(bad_new);
    wait_for("bad objects counted", || {
        src.stats.skipped(ObjectKind::Service) >= 2
    })
    .await;
    converge(&src.inv, &good, "malformed event skipped").await;

    // A relist that contains the malformed objects: the page still parses,
    // a keeps its previous version, z stays absent.
    let relists = src.stats.relists();
    server.hold_watches();
    server.drop_watches();
    // Moves the resourceVersion past every client's, then forgets it.
    server.apply(node("node-2", "192.168.0.22"));
    server.compact();
    server.release_watches();
    wait_for("relisted", || src.stats.relists() >= relists + 3).await;
    converge(&src.inv, &good, "malformed relist kept previous").await;
    assert!(src.stats.skipped(ObjectKind::Service) >= 4);

    // A later valid version is applied.
    let a2 = server.apply(service("default", "a", 8080, json!({})));
    let mut want = good.clone();
    want.insert("Service default/a".into(), a2.to_string());
    converge(&src.inv, &want, "valid version after malformed").await;
    // Deleting the never-parsed object is harmless.
    assert!(server.delete("Service", "default", "z"));
    converge(&src.inv, &want, "delete of malformed").await;
    assert_eq!(src.stats.skipped(ObjectKind::EndpointSlice), 0);
    no_unexpected(&server);
}

#[tokio::test]
async fn label_selection() {
    let server = ApiServer::start().await;
    let n1 = server.apply(node("node-1", "192.168.0.1"));
    let plain = server.apply(service("default", "plain", 80, json!({})));
    let plain_s = server.apply(slice("default", "plain-1", "plain", "10.1.0.1", json!({})));
    server.apply(service(
        "default",
        "headless",
        80,
        json!({"service.kubernetes.io/headless": ""}),
    ));
    server.apply(slice(
        "default",
        "headless-1",
        "headless",
        "10.1.0.2",
        json!({"service.kubernetes.io/headless": ""}),
    ));
    let mine = server.apply(service(
        "default",
        "mine",
        80,
        json!({"service.kubernetes.io/service-proxy-name": "ipvsbpf"}),
    ));
    let mine_s = server.apply(slice(
        "default",
        "mine-1",
        "mine",
        "10.1.0.3",
        json!({"service.kubernetes.io/service-proxy-name": "ipvsbpf"}),
    ));

    let default_proxy = start_source(&server, None);
    let named_proxy = start_source(&server, Some("ipvsbpf"));
    converge(
        &default_proxy.inv,
        &expect(&[
            ("Service default/plain", plain),
            ("EndpointSlice default/plain-1", plain_s),
            ("Node node-1", n1),
        ]),
        "default proxy selection",
    )
    .await;
    converge(
        &named_proxy.inv,
        &expect(&[
            ("Service default/mine", mine),
            ("EndpointSlice default/mine-1", mine_s),
            ("Node node-1", n1),
        ]),
        "named proxy selection",
    )
    .await;

    // Labelled out of the selection while watched: the server reports it
    // as a deletion; labelled back in, as an addition.
    server.apply(service(
        "default",
        "plain",
        80,
        json!({"service.kubernetes.io/service-proxy-name": "other"}),
    ));
    converge(
        &default_proxy.inv,
        &expect(&[
            ("EndpointSlice default/plain-1", plain_s),
            ("Node node-1", n1),
        ]),
        "labelled out",
    )
    .await;
    let mine2 = server.apply(service("default", "mine", 81, json!({})));
    converge(
        &named_proxy.inv,
        &expect(&[
            ("EndpointSlice default/mine-1", mine_s),
            ("Node node-1", n1),
        ]),
        "named proxy: labelled out",
    )
    .await;
    converge(
        &default_proxy.inv,
        &expect(&[
            ("Service default/mine", mine2),
            ("EndpointSlice default/plain-1", plain_s),
            ("Node node-1", n1),
        ]),
        "default proxy: labelled in",
    )
    .await;
    no_unexpected(&server);
}
