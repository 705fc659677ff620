//! The `file` source on temporary directories: parsing of the manifest
//! shapes kubectl prints, selection, and the polling loop's convergence,
//! including a broken file keeping its previous objects.

mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ipvsbpf_proxy::model::desired::ServiceName;
use ipvsbpf_proxy::model::inventory::{Shared, SharedInventory};
use ipvsbpf_proxy::sources::file::{load_once, run, FileError};
use ipvsbpf_proxy::sources::SourceStats;
use support::{converge, expect, wait_for};

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path =
            std::env::temp_dir().join(format!("ipvsbpf-file-source-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    fn write(&self, file: &str, text: &str) {
        // Write then rename, as editors and kubectl-generated dirs do, so
        // the poller never sees half a file.
        let tmp = self.0.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, text).expect("write manifest");
        std::fs::rename(&tmp, self.0.join(file)).expect("rename manifest");
    }

    fn remove(&self, file: &str) {
        std::fs::remove_file(self.0.join(file)).expect("remove manifest");
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn svc_yaml(ns: &str, name: &str, rv: u64, port: u16, labels: &str) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata:
  namespace: {ns}
  name: {name}
  resourceVersion: \"{rv}\"
  labels: {{{labels}}}
spec:
  type: ClusterIP
  clusterIP: 10.96.0.10
  ports:
  - name: http
    port: {port}
    protocol: TCP
    targetPort: 8080
"
    )
}

fn slice_yaml(ns: &str, name: &str, svc: &str, rv: u64, ip: &str) -> String {
    format!(
        "apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  namespace: {ns}
  name: {name}
  resourceVersion: \"{rv}\"
  labels:
    kubernetes.io/service-name: {svc}
addressType: IPv4
endpoints:
- addresses: [\"{ip}\"]
  conditions: {{ready: true}}
ports:
- name: http
  port: 8080
  protocol: TCP
"
    )
}

const NODES_JSON: &str = r#"{
  "apiVersion": "v1", "kind": "List",
  "items": [
    {"apiVersion": "v1", "kind": "Node",
     "metadata": {"name": "node-1", "resourceVersion": "7"},
     "status": {"addresses": [{"type": "InternalIP", "address": "192.168.0.1"}]}},
    {"apiVersion": "v1", "kind": "Node",
     "metadata": {"name": "node-2", "resourceVersion": "8"},
     "status": {"addresses": [{"type": "InternalIP", "address": "192.168.0.2"}]}}
  ],
  "metadata": {"resourceVersion": ""}
}"#;

/// Multi-document YAML: a Service, its slice, a Deployment (ignored), a
/// headless and a proxy-named Service (not selected by default), an empty
/// trailing document.
fn app_yaml(rv: u64, port: u16) -> String {
    [
        svc_yaml("default", "web", rv, port, ""),
        slice_yaml("default", "web-abc", "web", rv, "10.1.0.1"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: default}\nspec: {replicas: 1}\n".to_string(),
        svc_yaml("default", "hl", 1, 80, "service.kubernetes.io/headless: \"\""),
        svc_yaml("default", "mine", 1, 80, "service.kubernetes.io/service-proxy-name: ipvsbpf"),
        String::new(),
    ]
    .join("---\n")
}

/// A `kind: List` in YAML, as `kubectl get svc,endpointslices -o yaml`.
fn list_yaml() -> String {
    let item = |text: String| {
        text.lines()
            .enumerate()
            .map(|(i, l)| {
                if i == 0 {
                    format!("- {l}\n")
                } else {
                    format!("  {l}\n")
                }
            })
            .collect::<String>()
    };
    format!(
        "apiVersion: v1\nkind: List\nmetadata: {{resourceVersion: \"\"}}\nitems:\n{}{}",
        item(svc_yaml("kube-system", "dns", 3, 53, "")),
        item(slice_yaml("kube-system", "dns-1", "dns", 3, "10.1.0.53")),
    )
}

fn names(services: &[std::sync::Arc<ipvsbpf_proxy::model::service::StoredService>]) -> Vec<String> {
    let mut v: Vec<String> = services.iter().map(|s| s.name.name.to_string()).collect();
    v.sort();
    v
}

#[test]
fn load_once_reads_every_shape_and_selects() {
    let dir = TempDir::new("shapes");
    dir.write("app.yaml", &app_yaml(1, 80));
    dir.write("list.yml", &list_yaml());
    dir.write("nodes.json", NODES_JSON);
    dir.write("README.md", "not a manifest: {");

    let table: &[(Option<&str>, &[&str], usize)] = &[
        (None, &["dns", "web"], 2),
        (Some("ipvsbpf"), &["mine"], 0),
        (Some("other"), &[], 0),
    ];
    for (proxy, want, want_slices) in table {
        let loaded = load_once(dir.path(), "node-1", *proxy).expect("load");
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        assert_eq!(names(&loaded.services), *want, "proxy {proxy:?}");
        assert_eq!(loaded.slices.len(), *want_slices, "proxy {proxy:?}");
        let node = loaded.node.expect("node-1 present");
        assert_eq!(node.metadata.resource_version.as_deref(), Some("7"));
    }
    // The Service is parsed, not just named.
    let loaded = load_once(dir.path(), "node-1", None).expect("load");
    let dns = loaded
        .services
        .iter()
        .find(|s| &*s.name.name == "dns")
        .expect("dns");
    let port = dns
        .spec
        .as_ref()
        .ok()
        .and_then(Option::as_ref)
        .and_then(|s| s.ports.first())
        .map(|p| p.port);
    assert_eq!(port, Some(53));

    let none = load_once(dir.path(), "node-9", None).expect("load");
    assert!(none.node.is_none());
}

#[test]
fn load_once_reports_bad_files_and_keeps_the_rest() {
    let dir = TempDir::new("bad");
    dir.write("app.yaml", &app_yaml(1, 80));
    let cases: &[(&str, &str, &str)] = &[
        ("broken.yaml", "apiVersion: v1\nkind: Service\nmetadata: [\n", "YAML"),
        ("broken.json", "{\"kind\": \"Service\",", "JSON"),
        (
            "badport.yaml",
            "apiVersion: v1\nkind: Service\nmetadata: {name: x, namespace: default}\nspec: {ports: eighty}\n",
            "document 1 (Service)",
        ),
    ];
    for (file, text, want) in cases {
        dir.write(file, text);
        let loaded = load_once(dir.path(), "node-1", None).expect("load");
        assert_eq!(loaded.errors.len(), 1, "{file}");
        let msg = loaded.errors[0].to_string();
        assert!(msg.contains(file) && msg.contains(want), "{file}: {msg}");
        assert_eq!(names(&loaded.services), ["web"], "{file}");
        dir.remove(file);
    }
    assert!(matches!(
        parse_missing(dir.path()),
        Err(FileError::Read { .. })
    ));
    let gone = load_once(&dir.path().join("nope"), "node-1", None);
    assert!(gone.is_err());
}

fn parse_missing(dir: &Path) -> Result<(), FileError> {
    ipvsbpf_proxy::sources::file::parse_file(&dir.join("missing.yaml")).map(|_| ())
}

const POLL: Duration = Duration::from_millis(50);

fn start(
    dir: &TempDir,
    proxy: Option<&str>,
) -> (Shared, Arc<SourceStats>, tokio::task::JoinHandle<()>) {
    let inv = SharedInventory::new_shared();
    let stats = Arc::new(SourceStats::default());
    let task = tokio::spawn(run(
        dir.path().to_path_buf(),
        "node-1".to_string(),
        proxy.map(str::to_string),
        inv.clone(),
        stats.clone(),
        POLL,
    ));
    (inv, stats, task)
}

#[tokio::test]
async fn run_follows_changes() {
    let dir = TempDir::new("run");
    dir.write("app.yaml", &app_yaml(1, 80));
    dir.write("list.yml", &list_yaml());
    let (inv, stats, task) = start(&dir, None);
    converge(
        &inv,
        &expect(&[
            ("Service default/web", 1),
            ("EndpointSlice default/web-abc", 1),
            ("Service kube-system/dns", 3),
            ("EndpointSlice kube-system/dns-1", 3),
        ]),
        "initial read, no node",
    )
    .await;
    assert!(inv.lock().node().is_none());
    inv.lock().take_dirty();

    // A node file appears: everything dirty.
    dir.write("nodes.json", NODES_JSON);
    wait_for("node", || inv.lock().node().is_some()).await;
    assert!(inv.lock().take_dirty().all);

    // One file changes: only its changed Service is dirty (the other
    // file is not re-parsed, and web's slice did not change).
    dir.write("app.yaml", &app_yaml(2, 8080));
    let want = expect(&[
        ("Service default/web", 2),
        ("EndpointSlice default/web-abc", 2),
        ("Service kube-system/dns", 3),
        ("EndpointSlice kube-system/dns-1", 3),
        ("Node node-1", 7),
    ]);
    converge(&inv, &want, "after edit").await;
    let dirty = inv.lock().take_dirty();
    let names: Vec<String> = dirty.services.iter().map(|s| s.to_string()).collect();
    assert_eq!(names, ["default/web"]);
    assert!(!dirty.all);

    // A broken edit: logged, counted, previous objects kept.
    dir.write(
        "app.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: [oops\n",
    );
    wait_for("broken file counted", || {
        stats.skipped_files.load(Ordering::Relaxed) == 1
    })
    .await;
    tokio::time::sleep(POLL * 4).await;
    assert_eq!(support::snapshot(&inv.lock()), want);
    assert!(inv.lock().take_dirty().is_empty());
    // Counted once per broken version, not per poll.
    assert_eq!(stats.skipped_files.load(Ordering::Relaxed), 1);

    // Fixed: applied.
    dir.write("app.yaml", &app_yaml(3, 8081));
    let want = expect(&[
        ("Service default/web", 3),
        ("EndpointSlice default/web-abc", 3),
        ("Service kube-system/dns", 3),
        ("EndpointSlice kube-system/dns-1", 3),
        ("Node node-1", 7),
    ]);
    converge(&inv, &want, "after fix").await;

    // A file removed: its objects go, the Service is dirty.
    inv.lock().take_dirty();
    dir.remove("list.yml");
    converge(
        &inv,
        &expect(&[
            ("Service default/web", 3),
            ("EndpointSlice default/web-abc", 3),
            ("Node node-1", 7),
        ]),
        "after removal",
    )
    .await;
    let dirty = inv.lock().take_dirty();
    assert!(dirty
        .services
        .contains(&ServiceName::new("kube-system", "dns")));
    task.abort();
}

#[tokio::test]
async fn run_with_proxy_name_and_empty_dir() {
    let dir = TempDir::new("named");
    let (inv, _stats, task) = start(&dir, Some("ipvsbpf"));
    // Empty directory: synced, empty, so the syncer may run.
    converge(&inv, &expect(&[]), "empty").await;
    dir.write("app.yaml", &app_yaml(1, 80));
    converge(
        &inv,
        &expect(&[("Service default/mine", 1)]),
        "named proxy selection",
    )
    .await;
    task.abort();
}
