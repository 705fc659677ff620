//! The `kube` source: three kube-runtime watchers (Services and
//! EndpointSlices cluster-wide with kube-proxy's label selector, and this
//! node's Node) feeding the inventory.
//!
//! kube-runtime does the protocol work: list, watch from the list's
//! resourceVersion, resume after a dropped stream, relist after 410 Gone.
//! With `default_backoff()` the stream never ends, it retries with backoff
//! through API-server restarts. What is left here is mapping its events to
//! the inventory so that a relist dirties only what changed, and surviving
//! objects this client cannot parse (see [`Lenient`]).

use std::borrow::Cow;
use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Config, Resource};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use super::{label_selector, ObjectKind, SourceError, SourceStats};
use crate::model::desired::ServiceName;
use crate::model::inventory::{IntoStored, Inventory, Kind, Shared};
use crate::model::service::StoredService;
use crate::model::slice::Slice;

/// An object as received, or the metadata of one that did not parse.
///
/// kube-runtime deserialises a whole list page at once: with the plain
/// type, one object this client cannot parse (a newer API's field shape,
/// a bug) fails every relist forever and the proxy stops following the
/// cluster. Wrapping each item lets a bad object be skipped on its own;
/// its metadata still identifies it, so a delete of it is honoured and a
/// relist keeps its previous good version.
// Not boxed: `Ok` is the common case and a box would cost an allocation
// per object of every list page.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Lenient<K> {
    Ok(K),
    Bad { meta: ObjectMeta, error: String },
}

impl<K> Resource for Lenient<K>
where
    K: Resource<DynamicType = ()>,
{
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        K::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        K::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        K::version(dt)
    }
    fn api_version(dt: &()) -> Cow<'_, str> {
        K::api_version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        K::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        match self {
            Lenient::Ok(k) => k.meta(),
            Lenient::Bad { meta, .. } => meta,
        }
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Lenient::Ok(k) => k.meta_mut(),
            Lenient::Bad { meta, .. } => meta,
        }
    }
}

impl<'de, K: DeserializeOwned> Deserialize<'de> for Lenient<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Anything that is JSON at all is accepted; only the typed view
        // may fail. (Not `RawValue`, which would spare the tree: a watch
        // event's object reaches here through serde's buffered content of
        // the tagged event, which only serde_json's own deserializer can
        // hand out raw.)
        let value = serde_json::Value::deserialize(deserializer)?;
        match K::deserialize(&value) {
            Ok(k) => Ok(Lenient::Ok(k)),
            Err(e) => Ok(Lenient::Bad {
                meta: value
                    .get("metadata")
                    .and_then(|m| ObjectMeta::deserialize(m).ok())
                    .unwrap_or_default(),
                error: e.to_string(),
            }),
        }
    }
}

/// A client from a kubeconfig file if given, else inferred (in-cluster
/// service account, then `$KUBECONFIG`/`~/.kube/config`); `master`
/// overrides the server address, as kube-proxy's `--master` does.
pub async fn client(
    kubeconfig: Option<PathBuf>,
    master: Option<String>,
) -> Result<Client, SourceError> {
    let master_url = match &master {
        Some(m) => Some(
            m.parse::<axum::http::Uri>()
                .map_err(|_| SourceError::Master(m.clone()))?,
        ),
        None => None,
    };
    let mut config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(&path).map_err(|source| SourceError::Kubeconfig {
                path: path.clone(),
                source,
            })?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|source| SourceError::Kubeconfig { path, source })?
        }
        None => match (Config::infer().await, &master_url) {
            (Ok(c), _) => c,
            // With only --master (no credentials anywhere), talk to it
            // unauthenticated, as kube-proxy does.
            (Err(_), Some(url)) => Config::new(url.clone()),
            (Err(e), None) => return Err(SourceError::InferConfig(e)),
        },
    };
    if let Some(url) = master_url {
        config.cluster_url = url;
    }
    // A request over a connection whose other end is gone (a list, a watch
    // not yet answered, an Event) fails after 70 s of silence instead of
    // TCP's 15 minutes. Watches answer within 55 s (WatchOptions), so this
    // never cuts a healthy one; counted from each request's write, not from
    // when its pooled connection went idle.
    config.read_timeout = Some(std::time::Duration::from_secs(70));
    config.reset_reader_on_write = true;
    Client::try_from(config).map_err(SourceError::Client)
}

/// How the watches talk to the API server.
#[derive(Clone, Copy, Debug)]
pub struct WatchOptions {
    /// `timeoutSeconds` of each watch request. kube-runtime treats a
    /// stream that sends nothing for this long plus 5 s as dead and
    /// reconnects, so it bounds how long a dead connection (an API server
    /// or load balancer gone without a FIN) goes unnoticed.
    pub timeout_secs: u32,
    /// The first listing of each kind as a streaming list (a watch with
    /// `sendInitialEvents=true`, KEP 3157, beta and on by default since
    /// Kubernetes 1.32, what client-go's informers and so kube-proxy use
    /// there). Falls back to a list where the server refuses it.
    pub streaming_lists: bool,
}

impl Default for WatchOptions {
    /// 55 s: a dead connection is noticed within 60 s. client-go notices
    /// within 45 s with HTTP/2 pings, which kube-rs does not send; the
    /// price here is one watch request per kind every 55 s per node,
    /// resumed from the last resourceVersion (the watch cache serves it, no
    /// list), where client-go makes one every 5 to 10 minutes.
    fn default() -> WatchOptions {
        WatchOptions {
            timeout_secs: 55,
            streaming_lists: true,
        }
    }
}

impl WatchOptions {
    /// The first listing, from the API server's watch cache as client-go's
    /// informers' first list is (resourceVersion=0, "any"), so a DaemonSet
    /// rollout or an API server restart does not send every node's list to
    /// etcd. The listing may be a little older than the newest state; the
    /// watch that follows starts from its resourceVersion and catches up.
    ///
    /// A streaming list sends the objects one by one as watch events, so
    /// neither side holds the whole list at once: at 10,000 EndpointSlices
    /// a list response is tens of megabytes the proxy would hold, whole
    /// and decoded, at its start. Where the server refuses streaming lists
    /// the proxy lists ([`WatchOptions::list_config`]). Relists after a 410
    /// Gone go to etcd (`watch_kind`).
    fn config(&self) -> watcher::Config {
        if self.streaming_lists {
            watcher::Config::default()
                .streaming_lists()
                .timeout(self.timeout_secs)
        } else {
            self.list_config()
        }
    }

    /// A plain list at resourceVersion=0, unpaged: kube-rs drops
    /// resourceVersion=0 from a paged list (which etcd then serves), and
    /// the watch cache ignores a limit at resourceVersion=0 anyway, so
    /// client-go's paged request gets the whole list too.
    fn list_config(&self) -> watcher::Config {
        let mut config = watcher::Config::default()
            .any_semantic()
            .timeout(self.timeout_secs);
        config.page_size = None;
        config
    }
}

/// Runs the three watches until one of them ends, which with backoff
/// does not happen: the error return is for the caller to treat as fatal.
pub async fn run(
    client: Client,
    node_name: String,
    proxy_name: Option<String>,
    inv: Shared,
    stats: Arc<SourceStats>,
    opts: WatchOptions,
) -> Result<(), SourceError> {
    let selector = label_selector(proxy_name.as_deref());
    let services = watch_kind::<Service>(
        Api::all(client.clone()),
        opts,
        |c| c.labels(&selector),
        Target::Services,
        inv.clone(),
        stats.clone(),
    );
    let slices = watch_kind::<EndpointSlice>(
        Api::all(client.clone()),
        opts,
        |c| c.labels(&selector),
        Target::Slices,
        inv.clone(),
        stats.clone(),
    );
    let node_field = format!("metadata.name={node_name}");
    let node = watch_kind::<Node>(
        Api::all(client),
        opts,
        |c| c.fields(&node_field),
        Target::Node(node_name.clone()),
        inv,
        stats,
    );
    tokio::try_join!(services, slices, node).map(|_| ())
}

/// What one watch feeds; the Node watch carries the node name to ignore
/// any other Node a misbehaving server might send.
#[derive(Clone, Debug)]
enum Target {
    Services,
    Slices,
    Node(String),
}

impl Target {
    fn kind(&self) -> Kind {
        match self {
            Target::Services => Kind::Services,
            Target::Slices => Kind::Slices,
            Target::Node(_) => Kind::Node,
        }
    }

    fn object_kind(&self) -> ObjectKind {
        match self {
            Target::Services => ObjectKind::Service,
            Target::Slices => ObjectKind::EndpointSlice,
            Target::Node(_) => ObjectKind::Node,
        }
    }
}

/// The per-kind operations, so one event loop serves the three watches.
trait Watched: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static {
    /// The form the inventory stores: a listing of 10,000 objects is not
    /// held whole (managedFields and all) until its end, and an event's
    /// object is converted before the inventory's lock is taken.
    type Listed: Send;
    fn listed(self) -> Self::Listed;
    fn apply(obj: Self::Listed, inv: &mut Inventory, target: &Target) -> Result<(), String>;
    fn delete(meta: &ObjectMeta, inv: &mut Inventory, target: &Target);
    /// A complete listing; the objects in `bad` did not parse and keep
    /// their stored version.
    fn replace(all: Vec<Self::Listed>, bad: &[ObjectMeta], inv: &mut Inventory, target: &Target);
}

fn ns_name(meta: &ObjectMeta) -> Option<(&str, &str)> {
    Some((meta.namespace.as_deref()?, meta.name.as_deref()?))
}

impl Watched for Service {
    type Listed = Arc<StoredService>;
    fn listed(self) -> Arc<StoredService> {
        self.into_stored()
    }
    fn apply(svc: Arc<StoredService>, inv: &mut Inventory, _: &Target) -> Result<(), String> {
        inv.apply_service(svc).map_err(|e| e.to_string())
    }
    fn delete(meta: &ObjectMeta, inv: &mut Inventory, _: &Target) {
        if let Some((ns, name)) = ns_name(meta) {
            inv.delete_service(ns, name);
        }
    }
    fn replace(all: Vec<Arc<StoredService>>, bad: &[ObjectMeta], inv: &mut Inventory, _: &Target) {
        let kept: Vec<Arc<StoredService>> = bad
            .iter()
            .filter_map(ns_name)
            .filter_map(|(ns, name)| inv.service(&ServiceName::new(ns, name)).cloned())
            .collect();
        inv.replace_services(all.into_iter().chain(kept));
    }
}

impl Watched for EndpointSlice {
    type Listed = Arc<Slice>;
    fn listed(self) -> Arc<Slice> {
        self.into_stored()
    }
    fn apply(slice: Arc<Slice>, inv: &mut Inventory, _: &Target) -> Result<(), String> {
        inv.apply_slice(slice).map_err(|e| e.to_string())
    }
    fn delete(meta: &ObjectMeta, inv: &mut Inventory, _: &Target) {
        if let Some((ns, name)) = ns_name(meta) {
            inv.delete_slice(ns, name);
        }
    }
    fn replace(all: Vec<Arc<Slice>>, bad: &[ObjectMeta], inv: &mut Inventory, _: &Target) {
        let kept: Vec<Arc<Slice>> = bad
            .iter()
            .filter_map(ns_name)
            .filter_map(|(ns, name)| inv.slice(ns, name).cloned())
            .collect();
        inv.replace_slices(all.into_iter().chain(kept));
    }
}

fn is_own_node(meta: &ObjectMeta, target: &Target) -> bool {
    matches!(target, Target::Node(n) if meta.name.as_deref() == Some(n.as_str()))
}

impl Watched for Node {
    type Listed = Node;
    fn listed(self) -> Node {
        self
    }
    fn apply(node: Node, inv: &mut Inventory, target: &Target) -> Result<(), String> {
        if is_own_node(&node.metadata, target) {
            inv.set_node(Some(node));
        }
        Ok(())
    }
    fn delete(meta: &ObjectMeta, inv: &mut Inventory, target: &Target) {
        if is_own_node(meta, target) {
            inv.set_node(None);
        }
    }
    fn replace(all: Vec<Node>, bad: &[ObjectMeta], inv: &mut Inventory, target: &Target) {
        let kept = bad.iter().find_map(|m| {
            inv.node()
                .filter(|n| n.metadata.name == m.name)
                .map(|n| Node::clone(n))
        });
        let own = all
            .into_iter()
            .chain(kept)
            .find(|n| is_own_node(&n.metadata, target));
        inv.set_node(own);
    }
}

fn describe(meta: &ObjectMeta) -> String {
    match (meta.namespace.as_deref(), meta.name.as_deref()) {
        (Some(ns), Some(name)) => format!("{ns}/{name}"),
        (None, Some(name)) => name.to_string(),
        _ => "<unnamed>".to_string(),
    }
}

/// One watch's event loop: events applied as they come, a (re)list
/// buffered and applied at once with `replace_*` so the inventory never
/// holds half a listing and only differences become dirty. `select` adds
/// the kind's label or field selector to each watcher configuration.
async fn watch_kind<K: Watched>(
    api: Api<Lenient<K>>,
    opts: WatchOptions,
    select: impl Fn(watcher::Config) -> watcher::Config,
    target: Target,
    inv: Shared,
    stats: Arc<SourceStats>,
) -> Result<(), SourceError> {
    let kind = target.object_kind();
    let skip = |meta: &ObjectMeta, error: &str| {
        tracing::warn!(
            kind = kind.as_str(),
            object = %describe(meta),
            error,
            "object skipped: cannot parse it, keeping its previous version"
        );
        stats.count_skipped(kind);
    };
    let open = |config: watcher::Config| {
        watcher::watcher(api.clone(), config)
            .default_backoff()
            .boxed()
    };
    let mut stream = open(select(opts.config()));
    let mut listed: Vec<K::Listed> = Vec::new();
    let mut listed_bad: Vec<ObjectMeta> = Vec::new();
    let mut synced = false;
    let mut consistent = false;
    let mut streaming = opts.streaming_lists;
    // A listing began (Init) and has not ended (InitDone).
    let mut listing = false;
    // Streaming lists in a row that began again before their end.
    let mut unfinished = 0;
    while let Some(event) = stream.next().await {
        // A server that does not serve streaming lists (the WatchList
        // feature gate off: Kubernetes before 1.32, or turned off) refuses
        // `sendInitialEvents` as an invalid request (422, or 400 from
        // something in between). List instead, as client-go falls back.
        if let (Err(e), true, false) = (&event, streaming, synced) {
            if let Some(s) = status_of(e).filter(|s| matches!(s.code, 400 | 422)) {
                tracing::info!(
                    kind = kind.as_str(),
                    code = s.code,
                    server = %s.message,
                    "the API server refuses streaming lists; listing instead"
                );
                stream = open(select(opts.list_config()));
                (streaming, listing) = (false, false);
                continue;
            }
        }
        // 410 Gone after the first list: what this proxy has applied is
        // newer than the watch cache may be (another API server's, behind
        // ours), and a relist from it could take back a Service created
        // meanwhile. As client-go after "too old resource version", list
        // from etcd from now on: a new stream, consistent and paged.
        if let (Err(e), true, false) = (&event, synced, consistent) {
            if status_of(e).is_some_and(|s| s.code == 410) {
                tracing::info!(
                    kind = kind.as_str(),
                    error = %e,
                    "watch expired (410 Gone): relisting from etcd"
                );
                let mut quorum = select(opts.list_config());
                quorum.list_semantic = watcher::ListSemantic::MostRecent;
                quorum.page_size = Some(500);
                stream = open(quorum);
                (consistent, streaming) = (true, false);
                continue;
            }
        }
        match event {
            Err(e) => match refused(&e) {
                Some(status) => tracing::error!(
                    kind = kind.as_str(),
                    code = status.code,
                    server = %status.message,
                    "the API server refuses this proxy ({}); it needs list and watch on \
                     services, endpointslices.discovery.k8s.io and nodes (the ClusterRole in \
                     deploy/base/rbac.yaml); retrying",
                    status.reason
                ),
                None => tracing::warn!(kind = kind.as_str(), error = %e, "watch failed, retrying"),
            },
            Ok(Event::Init) => {
                listed.clear();
                listed_bad.clear();
                // A streaming list that began again before its end. Once
                // is a broken connection or a restarted API server: stream
                // again, as client-go does. Twice in a row, the server
                // ends it (its timeoutSeconds counts the whole stream, and
                // a slow server may not send 10,000 objects in 55 s) or
                // never marks the end (a server that ignores
                // `sendInitialEvents` and sends a plain watch). Either
                // would repeat forever: list instead.
                if listing && streaming {
                    unfinished += 1;
                }
                if unfinished >= 2 {
                    tracing::info!(
                        kind = kind.as_str(),
                        "streaming lists ended twice before they were complete; listing instead"
                    );
                    stream = open(select(opts.list_config()));
                    (streaming, listing, unfinished) = (false, false, 0);
                    continue;
                }
                listing = true;
            }
            Ok(Event::InitApply(Lenient::Ok(k))) => listed.push(k.listed()),
            Ok(Event::InitApply(Lenient::Bad { meta, error })) => {
                skip(&meta, &error);
                listed_bad.push(meta);
            }
            Ok(Event::InitDone) => {
                listing = false;
                unfinished = 0;
                let all = std::mem::take(&mut listed);
                let bad = std::mem::take(&mut listed_bad);
                inv.update(|i| {
                    K::replace(all, &bad, i, &target);
                    i.set_synced(target.kind());
                });
                synced = true;
                stats.count_relist(kind);
            }
            Ok(Event::Apply(Lenient::Ok(k))) => {
                let meta = k.meta().clone();
                let obj = k.listed();
                if let Err(e) = inv.update(|i| K::apply(obj, i, &target)) {
                    skip(&meta, &e);
                }
            }
            Ok(Event::Apply(Lenient::Bad { meta, error })) => skip(&meta, &error),
            // A deleted object's last state does not matter, only its name.
            Ok(Event::Delete(obj)) => inv.update(|i| K::delete(obj.meta(), i, &target)),
        }
    }
    Err(SourceError::WatchEnded {
        kind: kind.as_str(),
    })
}

/// The server's answer when it refused the request itself: 401 (the
/// credentials are not accepted) or 403 (RBAC does not grant the verb).
/// Retrying cannot help until an operator acts, so these are reported as
/// errors naming what is missing rather than as a transient watch failure.
fn refused(e: &watcher::Error) -> Option<&kube::core::Status> {
    status_of(e).filter(|s| matches!(s.code, 401 | 403))
}

/// The API server's status in a watcher error, if it answered with one.
fn status_of(e: &watcher::Error) -> Option<&kube::core::Status> {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => Some(&**s),
        watcher::Error::WatchError(s) => Some(&**s),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::ResourceExt;
    use serde_json::json;

    #[test]
    fn lenient_parses_good_and_keeps_meta_of_bad() {
        let good: Lenient<Service> = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"namespace": "ns", "name": "a", "resourceVersion": "5"},
            "spec": {"ports": [{"port": 80}]}
        }))
        .expect("deserialize");
        match good {
            Lenient::Ok(s) => assert_eq!(s.metadata.name.as_deref(), Some("a")),
            Lenient::Bad { error, .. } => panic!("good object rejected: {error}"),
        }
        let bad: Lenient<Service> = serde_json::from_value(json!({
            "metadata": {"namespace": "ns", "name": "b", "resourceVersion": "6"},
            "spec": {"ports": "eighty"}
        }))
        .expect("deserialize");
        match &bad {
            Lenient::Bad { meta, error } => {
                assert_eq!(describe(meta), "ns/b");
                assert_eq!(bad.resource_version().as_deref(), Some("6"));
                assert!(error.contains("invalid type"), "{error}");
            }
            Lenient::Ok(_) => panic!("malformed object accepted"),
        }
        // A list page with one bad item still parses.
        let list: kube::core::ObjectList<Lenient<Service>> = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ServiceList",
            "metadata": {"resourceVersion": "7"},
            "items": [
                {"metadata": {"namespace": "ns", "name": "a"}, "spec": {}},
                {"metadata": {"namespace": "ns", "name": "b"}, "spec": {"ports": 1}}
            ]
        }))
        .expect("list");
        let kinds: Vec<bool> = list
            .items
            .iter()
            .map(|i| matches!(i, Lenient::Ok(_)))
            .collect();
        assert_eq!(kinds, [true, false]);
    }

    #[test]
    fn refusals_are_told_apart_from_transient_failures() {
        let status = |code: u16, reason: &str| {
            Box::new(
                serde_json::from_value::<kube::core::Status>(json!({
                    "status": "Failure", "code": code, "reason": reason,
                    "message": format!("{reason} message"),
                }))
                .expect("status"),
            )
        };
        let forbidden =
            watcher::Error::WatchStartFailed(kube::Error::Api(status(403, "Forbidden")));
        let got = refused(&forbidden).expect("403 is a refusal");
        assert_eq!((got.code, got.reason.as_str()), (403, "Forbidden"));
        let list = watcher::Error::InitialListFailed(kube::Error::Api(status(401, "Unauthorized")));
        assert_eq!(refused(&list).map(|s| s.code), Some(401));
        // 410 Gone (relist) and server errors are transient.
        let gone = watcher::Error::WatchError(status(410, "Expired"));
        assert!(refused(&gone).is_none());
        let unavailable =
            watcher::Error::WatchFailed(kube::Error::Api(status(503, "ServiceUnavailable")));
        assert!(refused(&unavailable).is_none());
        assert!(refused(&watcher::Error::NoResourceVersion).is_none());
    }

    #[test]
    fn lenient_resource_paths_are_the_inner_types() {
        assert_eq!(
            Lenient::<EndpointSlice>::url_path(&(), None),
            "/apis/discovery.k8s.io/v1/endpointslices"
        );
        assert_eq!(Lenient::<Service>::url_path(&(), None), "/api/v1/services");
        assert_eq!(Lenient::<Node>::kind(&()), "Node");
    }
}
