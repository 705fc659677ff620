//! A small Kubernetes API server for tests: the list/watch protocol for
//! Services, EndpointSlices and Nodes (cluster-wide paths), as kube-runtime's
//! watcher uses it.
//!
//! What the watcher sends (kube-core 5 `ListParams`/`WatchParams`):
//! - list: `GET <path>?labelSelector=..|fieldSelector=..&limit=500`
//!   (`resourceVersion` only with `ListSemantic::Any`; `continue` for pages),
//! - watch: `GET <path>?watch=true&timeoutSeconds=290&labelSelector=..
//!   &allowWatchBookmarks=true&resourceVersion=N`,
//!   expecting newline-delimited `{"type":..,"object":..}` events, BOOKMARK
//!   objects with `metadata.resourceVersion`, and an ERROR event with a 410
//!   Status when N was compacted (then it relists),
//! - a streaming list (KEP 3157): a watch with `sendInitialEvents=true`,
//!   `resourceVersionMatch=NotOlderThan` and bookmarks, answered with an
//!   ADDED event per object and then a BOOKMARK annotated
//!   `k8s.io/initial-events-end`; refused with 422, as a server with the
//!   WatchList feature gate off refuses it, after
//!   [`ApiServer::refuse_watch_list`]; or, after
//!   [`ApiServer::ignore_watch_list`], served as a plain watch that never
//!   marks the end, as by a server that does not know the parameter.
//!
//! The list ignores `limit` and returns every object in one page (no
//! `continue`), which a server may do for small sets. Any request outside
//! this protocol is recorded in [`ApiServer::unexpected`] and printed.
//!
//! Objects are stored as `serde_json::Value` so that tests can inject
//! objects the client cannot parse. Watch events honour selectors the way
//! the real server does: a modification that moves an object out of the
//! selection is sent as DELETED, one that moves it in as ADDED.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// The three resources served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Res {
    Services,
    Slices,
    Nodes,
}

impl Res {
    fn from_path(path: &str) -> Option<Res> {
        match path {
            "/api/v1/services" => Some(Res::Services),
            "/apis/discovery.k8s.io/v1/endpointslices" => Some(Res::Slices),
            "/api/v1/nodes" => Some(Res::Nodes),
            _ => None,
        }
    }

    fn from_kind(kind: &str) -> Option<Res> {
        match kind {
            "Service" => Some(Res::Services),
            "EndpointSlice" => Some(Res::Slices),
            "Node" => Some(Res::Nodes),
            _ => None,
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Res::Services => "Service",
            Res::Slices => "EndpointSlice",
            Res::Nodes => "Node",
        }
    }

    fn api_version(self) -> &'static str {
        match self {
            Res::Slices => "discovery.k8s.io/v1",
            _ => "v1",
        }
    }
}

type Key = (Res, String, String);

#[derive(Clone, Debug)]
struct HistoryEvent {
    rv: u64,
    res: Res,
    /// The object before the change (None for a creation).
    old: Option<Value>,
    /// The object after the change (for a deletion: its last state with
    /// the deletion's resourceVersion).
    new: Value,
    deleted: bool,
}

#[derive(Default)]
struct Store {
    rv: u64,
    /// Watches from a resourceVersion below this get 410 Gone.
    compacted: u64,
    objects: BTreeMap<Key, Value>,
    history: Vec<HistoryEvent>,
    requests: Vec<String>,
    decoded: Vec<Logged>,
    unexpected: Vec<String>,
}

/// A request as the server understood it: path and decoded query pairs.
#[derive(Clone, Debug)]
pub struct Logged {
    pub path: String,
    pub query: Vec<(String, String)>,
}

impl Logged {
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

struct Shared {
    store: Mutex<Store>,
    /// Latest resourceVersion, so watch streams wake on a change.
    rv_tx: watch::Sender<u64>,
    /// Bumped to end every open watch stream.
    drop_tx: watch::Sender<u64>,
    /// While true, new watch requests wait before evaluating their
    /// resourceVersion (lets a test change and compact behind the client).
    hold_tx: watch::Sender<bool>,
    /// Bumped to make every open watch stream go silent and stay open,
    /// past its timeout: a connection whose other end is gone.
    stall_tx: watch::Sender<u64>,
    bookmark_every: Mutex<Duration>,
    bookmarks_sent: AtomicU64,
    watches_started: AtomicU64,
    /// Streaming lists refused (the WatchList feature gate off).
    no_watch_list: std::sync::atomic::AtomicBool,
    /// `sendInitialEvents` ignored (a server that does not know it).
    ignore_watch_list: std::sync::atomic::AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct ApiServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    running: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn key_of(res: Res, obj: &Value) -> Key {
    (
        res,
        meta_str(obj, "namespace").to_string(),
        meta_str(obj, "name").to_string(),
    )
}

/// A label selector as kube-proxy writes them: comma-separated `key`,
/// `!key`, `key=value`, `key==value`, `key!=value`.
fn labels_match(selector: &str, obj: &Value) -> bool {
    let labels = obj.get("metadata").and_then(|m| m.get("labels"));
    let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
    selector
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .all(|req| {
            if let Some(k) = req.strip_prefix('!') {
                get(k).is_none()
            } else if let Some((k, v)) = req.split_once("!=") {
                get(k) != Some(v)
            } else if let Some((k, v)) = req.split_once("==") {
                get(k) == Some(v)
            } else if let Some((k, v)) = req.split_once('=') {
                get(k) == Some(v)
            } else {
                get(req).is_some()
            }
        })
}

/// Field selectors on `metadata.name` / `metadata.namespace`; anything
/// else is reported by [`Params::parse`].
fn fields_match(selector: &str, obj: &Value) -> bool {
    selector
        .split(',')
        .filter(|r| !r.is_empty())
        .all(|req| match req.split_once('=') {
            Some(("metadata.name", v)) => meta_str(obj, "name") == v,
            Some(("metadata.namespace", v)) => meta_str(obj, "namespace") == v,
            _ => true,
        })
}

#[derive(Default, Debug)]
struct Params {
    watch: bool,
    resource_version: Option<String>,
    label_selector: Option<String>,
    field_selector: Option<String>,
    bookmarks: bool,
    timeout: Option<u64>,
    send_initial_events: bool,
    not_older_than: bool,
}

impl Params {
    fn parse(pairs: Vec<(String, String)>, unexpected: &mut Vec<String>) -> Params {
        let mut p = Params::default();
        for (k, v) in pairs {
            match k.as_str() {
                "watch" => p.watch = v == "true" || v == "1",
                "resourceVersion" => p.resource_version = Some(v),
                "labelSelector" => {
                    if v.contains('(') {
                        unexpected.push(format!("set-based label selector {v:?}"));
                    }
                    p.label_selector = Some(v)
                }
                "fieldSelector" => {
                    for req in v.split(',') {
                        if !req.starts_with("metadata.name=")
                            && !req.starts_with("metadata.namespace=")
                        {
                            unexpected.push(format!("field selector {req:?}"));
                        }
                    }
                    p.field_selector = Some(v)
                }
                "allowWatchBookmarks" => p.bookmarks = v == "true",
                "sendInitialEvents" => p.send_initial_events = v == "true",
                "resourceVersionMatch" => p.not_older_than = v == "NotOlderThan",
                "timeoutSeconds" => p.timeout = v.parse().ok(),
                // Accepted: one page holds everything; the semantic of a
                // list RV is checked against compaction only.
                "limit" => {}
                other => unexpected.push(format!("query parameter {other}={v}")),
            }
        }
        p
    }

    fn selects(&self, obj: &Value) -> bool {
        self.label_selector
            .as_deref()
            .is_none_or(|s| labels_match(s, obj))
            && self
                .field_selector
                .as_deref()
                .is_none_or(|s| fields_match(s, obj))
    }
}

fn status(code: u16, reason: &str, message: String) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code
    })
}

fn gone(rv: u64, oldest: u64) -> Value {
    status(
        410,
        "Expired",
        format!("too old resource version: {rv} ({oldest})"),
    )
}

fn json_response(code: StatusCode, body: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let uri = req.uri().clone();
    let line = format!("{} {}", req.method(), uri);
    let mut unexpected = Vec::new();
    let pairs = Query::<Vec<(String, String)>>::try_from_uri(&uri)
        .map(|q| q.0)
        .unwrap_or_default();
    let logged = Logged {
        path: uri.path().to_string(),
        query: pairs.clone(),
    };
    let mut params = Params::parse(pairs, &mut unexpected);
    if shared.ignore_watch_list.load(Ordering::Relaxed) {
        params.send_initial_events = false;
    }
    let res = Res::from_path(uri.path());
    if req.method() != axum::http::Method::GET || res.is_none() {
        unexpected.push("method or path".to_string());
    }
    {
        let mut store = shared.lock();
        store.requests.push(line.clone());
        store.decoded.push(logged);
        for u in &unexpected {
            eprintln!("apiserver: UNEXPECTED REQUEST {line}: {u}");
            store.unexpected.push(format!("{line}: {u}"));
        }
    }
    let Some(res) = res else {
        return json_response(
            StatusCode::NOT_FOUND,
            &status(404, "NotFound", format!("no such path {}", uri.path())),
        );
    };
    if params.send_initial_events {
        // The real server's validation of a streaming list request.
        let refused = if shared.no_watch_list.load(Ordering::Relaxed) {
            Some("sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled")
        } else if !params.watch || !params.bookmarks || !params.not_older_than {
            Some("sendInitialEvents needs watch, allowWatchBookmarks and resourceVersionMatch=NotOlderThan")
        } else {
            None
        };
        if let Some(why) = refused {
            return json_response(
                StatusCode::UNPROCESSABLE_ENTITY,
                &status(422, "Invalid", why.to_string()),
            );
        }
    }
    if params.watch {
        watch_response(shared, res, params)
    } else {
        list_response(&shared, res, &params)
    }
}

fn list_response(shared: &Shared, res: Res, params: &Params) -> Response {
    let store = shared.lock();
    if let Some(rv) = params
        .resource_version
        .as_deref()
        .and_then(|v| v.parse::<u64>().ok())
    {
        if rv != 0 && rv < store.compacted {
            return json_response(StatusCode::GONE, &gone(rv, store.compacted));
        }
    }
    let items: Vec<Value> = store
        .objects
        .iter()
        .filter(|((r, _, _), obj)| *r == res && params.selects(obj))
        .map(|(_, obj)| obj.clone())
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "kind": format!("{}List", res.kind()),
            "apiVersion": res.api_version(),
            "metadata": {"resourceVersion": store.rv.to_string()},
            "items": items,
        }),
    )
}

fn watch_response(shared: Arc<Shared>, res: Res, params: Params) -> Response {
    let (tx, rx) = mpsc::channel::<String>(64);
    shared.watches_started.fetch_add(1, Ordering::Relaxed);
    // A stall applies to every stream requested before it, even one whose
    // task has not run yet.
    let stall_gen = *shared.stall_tx.borrow();
    tokio::spawn(watch_task(shared, res, params, tx, stall_gen));
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|line| (Ok::<_, Infallible>(line), rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn event_line(kind: &str, object: &Value) -> String {
    let mut s = json!({"type": kind, "object": object}).to_string();
    s.push('\n');
    s
}

/// The watch event (type, object) a history event shows to a watch with
/// these selectors, if any.
fn visible(params: &Params, ev: &HistoryEvent) -> Option<(&'static str, Value)> {
    let old_in = ev.old.as_ref().is_some_and(|o| params.selects(o));
    let new_in = params.selects(&ev.new);
    match (ev.deleted, old_in, new_in) {
        (true, _, true) => Some(("DELETED", ev.new.clone())),
        (true, _, false) => None,
        (false, true, true) => Some(("MODIFIED", ev.new.clone())),
        (false, false, true) => Some(("ADDED", ev.new.clone())),
        (false, true, false) => Some(("DELETED", ev.new.clone())),
        (false, false, false) => None,
    }
}

async fn watch_task(
    shared: Arc<Shared>,
    res: Res,
    params: Params,
    tx: mpsc::Sender<String>,
    stall_gen: u64,
) {
    let mut dropped = shared.drop_tx.subscribe();
    dropped.borrow_and_update();
    let mut stalled = shared.stall_tx.subscribe();
    stalled.borrow_and_update();
    let mut hold = shared.hold_tx.subscribe();
    tokio::select! {
        r = hold.wait_for(|h| !*h) => if r.is_err() { return },
        _ = dropped.changed() => return,
    }
    let mut changes = shared.rv_tx.subscribe();
    changes.borrow_and_update();
    let timeout = Duration::from_secs(params.timeout.unwrap_or(1800));
    let deadline = tokio::time::Instant::now() + timeout;
    let every = *shared
        .bookmark_every
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let mut bookmark = tokio::time::interval_at(tokio::time::Instant::now() + every, every);

    // Where the stream starts (the lock is not held across an await).
    let (mut last, initial, expired) = {
        let store = shared.lock();
        match params
            .resource_version
            .as_deref()
            .map(|v| v.parse::<u64>().unwrap_or(0))
        {
            // A streaming list of the current state (NotOlderThan any
            // version the client may name: this server keeps one).
            _ if params.send_initial_events => {
                let mut initial: Vec<String> = store
                    .objects
                    .iter()
                    .filter(|((r, _, _), obj)| *r == res && params.selects(obj))
                    .map(|(_, obj)| event_line("ADDED", obj))
                    .collect();
                initial.push(event_line(
                    "BOOKMARK",
                    &json!({
                        "kind": res.kind(), "apiVersion": res.api_version(),
                        "metadata": {
                            "resourceVersion": store.rv.to_string(),
                            "annotations": {"k8s.io/initial-events-end": "true"}
                        }
                    }),
                ));
                (store.rv, initial, false)
            }
            None | Some(0) => {
                // "Any" semantic: synthetic ADDED for the current state.
                let initial: Vec<String> = store
                    .objects
                    .iter()
                    .filter(|((r, _, _), obj)| *r == res && params.selects(obj))
                    .map(|(_, obj)| event_line("ADDED", obj))
                    .collect();
                (store.rv, initial, false)
            }
            Some(rv) if rv < store.compacted => (
                rv,
                vec![event_line("ERROR", &gone(rv, store.compacted))],
                true,
            ),
            Some(rv) => (rv, Vec::new(), false),
        }
    };
    if *stalled.borrow() != stall_gen {
        tx.closed().await;
        return;
    }
    for line in initial {
        if tx.send(line).await.is_err() {
            return;
        }
    }
    if expired {
        return;
    }
    loop {
        // Checked before every send: a stall and a change arriving together
        // must not let the change through.
        if *stalled.borrow() != stall_gen {
            tx.closed().await;
            return;
        }
        let mut lines = Vec::new();
        {
            let store = shared.lock();
            if last < store.compacted {
                lines.push(event_line("ERROR", &gone(last, store.compacted)));
            } else {
                for ev in store.history.iter().filter(|e| e.rv > last && e.res == res) {
                    if let Some((kind, obj)) = visible(&params, ev) {
                        lines.push(event_line(kind, &obj));
                    }
                }
                last = store.rv;
            }
        }
        let expired = lines.first().is_some_and(|l| l.contains("\"ERROR\""));
        for line in lines {
            if tx.send(line).await.is_err() {
                return;
            }
        }
        if expired {
            return;
        }
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            _ = dropped.changed() => return,
            _ = tx.closed() => return,
            // wakes the loop, whose first check stalls the stream
            _ = stalled.changed() => {}
            _ = tokio::time::sleep_until(deadline) => return,
            _ = bookmark.tick(), if params.bookmarks => {
                let obj = json!({
                    "kind": res.kind(), "apiVersion": res.api_version(),
                    "metadata": {"resourceVersion": last.to_string()}
                });
                if tx.send(event_line("BOOKMARK", &obj)).await.is_err() {
                    return;
                }
                shared.bookmarks_sent.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl ApiServer {
    /// Starts on 127.0.0.1 with an ephemeral port.
    pub async fn start() -> ApiServer {
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::default()),
            rv_tx: watch::channel(0).0,
            drop_tx: watch::channel(0).0,
            hold_tx: watch::channel(false).0,
            stall_tx: watch::channel(0).0,
            bookmark_every: Mutex::new(Duration::from_secs(1)),
            bookmarks_sent: AtomicU64::new(0),
            watches_started: AtomicU64::new(0),
            no_watch_list: std::sync::atomic::AtomicBool::new(false),
            ignore_watch_list: std::sync::atomic::AtomicBool::new(false),
        });
        // Start at a non-trivial resourceVersion, like a real cluster.
        shared.lock().rv = 100;
        let mut server = ApiServer {
            shared,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            running: None,
        };
        server.listen().await;
        server
    }

    async fn listen(&mut self) {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        // Restarting on the same port must not fail on old connections.
        socket.set_reuseaddr(true).expect("SO_REUSEADDR");
        socket.bind(self.addr).expect("bind test apiserver");
        let listener = socket.listen(128).expect("listen");
        self.addr = listener.local_addr().expect("local addr");
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(self.shared.clone());
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop_rx.await;
                })
                .await;
        });
        self.running = Some((stop_tx, task));
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url().parse().expect("url"));
        kube::Client::try_from(config).expect("client")
    }

    /// Stops serving: ends every watch stream, closes the listener and the
    /// connections. The objects and history survive, as etcd would.
    pub async fn stop(&mut self) {
        if let Some((stop, task)) = self.running.take() {
            self.drop_watches();
            let _ = stop.send(());
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }

    /// Starts again on the same port.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.listen().await;
    }

    /// Creates or replaces an object (its kind says which resource); sets
    /// metadata.resourceVersion and returns it.
    pub fn apply(&self, mut obj: Value) -> u64 {
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
        let res = Res::from_kind(kind).expect("test object kind");
        let mut store = self.shared.lock();
        store.rv += 1;
        let rv = store.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let key = key_of(res, &obj);
        let old = store.objects.insert(key, obj.clone());
        store.history.push(HistoryEvent {
            rv,
            res,
            old,
            new: obj,
            deleted: false,
        });
        drop(store);
        self.shared.rv_tx.send_replace(rv);
        rv
    }

    /// Deletes an object; false if there was none.
    pub fn delete(&self, kind: &str, namespace: &str, name: &str) -> bool {
        let res = Res::from_kind(kind).expect("test object kind");
        let mut store = self.shared.lock();
        let Some(mut obj) = store
            .objects
            .remove(&(res, namespace.to_string(), name.to_string()))
        else {
            return false;
        };
        store.rv += 1;
        let rv = store.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        store.history.push(HistoryEvent {
            rv,
            res,
            old: None,
            new: obj,
            deleted: true,
        });
        drop(store);
        self.shared.rv_tx.send_replace(rv);
        true
    }

    /// Forgets the history: watches from any older resourceVersion than the
    /// current one get 410 Gone.
    pub fn compact(&self) {
        let mut store = self.shared.lock();
        store.compacted = store.rv;
        let c = store.compacted;
        store.history.retain(|e| e.rv > c);
    }

    /// Ends every open watch stream (cleanly, as a load balancer or an
    /// apiserver timeout would).
    pub fn drop_watches(&self) {
        self.shared.drop_tx.send_modify(|g| *g += 1);
    }

    /// Every open watch stream goes silent and stays open (its timeout
    /// ignored), as one through a dead connection; new ones are served.
    pub fn stall_watches(&self) {
        self.shared.stall_tx.send_modify(|g| *g += 1);
    }

    /// New watch requests wait until [`ApiServer::release_watches`].
    pub fn hold_watches(&self) {
        self.shared.hold_tx.send_replace(true);
    }

    pub fn release_watches(&self) {
        self.shared.hold_tx.send_replace(false);
    }

    /// Interval of BOOKMARK events on streams opened from now on.
    /// From now on streaming lists are refused with 422, as by a server
    /// with the WatchList feature gate off.
    pub fn refuse_watch_list(&self) {
        self.shared.no_watch_list.store(true, Ordering::Relaxed);
    }

    /// From now on `sendInitialEvents` is ignored: a streaming list gets a
    /// plain watch (synthetic ADDED events, no end marker).
    pub fn ignore_watch_list(&self) {
        self.shared.ignore_watch_list.store(true, Ordering::Relaxed);
    }

    pub fn set_bookmark_interval(&self, every: Duration) {
        *self
            .shared
            .bookmark_every
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = every;
    }

    pub fn bookmarks_sent(&self) -> u64 {
        self.shared.bookmarks_sent.load(Ordering::Relaxed)
    }

    pub fn watches_started(&self) -> u64 {
        self.shared.watches_started.load(Ordering::Relaxed)
    }

    /// Every request served, as "GET /path?query".
    pub fn requests(&self) -> Vec<String> {
        self.shared.lock().requests.clone()
    }

    /// Every request served, decoded.
    pub fn logged(&self) -> Vec<Logged> {
        self.shared.lock().decoded.clone()
    }

    pub fn unexpected(&self) -> Vec<String> {
        self.shared.lock().unexpected.clone()
    }
}
