//! The `file` source: a directory of manifests (`.yaml`, `.yml`, `.json`;
//! multi-document YAML; `kind: List`) holding Services, EndpointSlices and
//! Nodes as `kubectl get -o yaml|json` prints them.
//!
//! Change detection polls each file's modification time and size every
//! `poll` interval rather than using inotify (the `notify` crate): a
//! directory of a few files costs a handful of `stat` calls, it needs no
//! new dependency, and it behaves the same on bind mounts, ConfigMap
//! volumes (symlink swaps) and network filesystems where inotify events
//! are missing. Only changed files are re-parsed.
//!
//! A file that fails to parse keeps its previous objects: dropping them
//! would delete its Services from the node because of a typo mid-edit.
//! A relist-like `replace_*` then makes dirty only what actually changed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::Value;

use super::{SourceError, SourceStats};
use crate::model::inventory::{Kind, Shared};
use crate::model::service::StoredService;
use crate::model::slice::Slice;

/// Why one file was not used.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: YAML")]
    Yaml {
        path: PathBuf,
        // Boxed: the YAML error carries locations and would make every
        // Result of this module large.
        #[source]
        source: Box<serde_saphyr::Error>,
    },
    #[error("{path}: JSON")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: document {index} ({kind}): {source}")]
    Object {
        path: PathBuf,
        index: usize,
        kind: String,
        #[source]
        source: serde_json::Error,
    },
}

/// The objects one file holds (all of them, before selection).
///
/// Services and slices are in the form the inventory stores them, shared
/// with it: the poll's cache and the inventory hold one copy between them.
#[derive(Clone, Debug, Default)]
pub struct FileObjects {
    pub services: Vec<Arc<StoredService>>,
    pub slices: Vec<Arc<Slice>>,
    pub nodes: Vec<Node>,
}

/// A directory read once: the selected objects and the files skipped.
#[derive(Debug, Default)]
pub struct Loaded {
    pub services: Vec<Arc<StoredService>>,
    pub slices: Vec<Arc<Slice>>,
    /// The Node named like this node, if any file holds it.
    pub node: Option<Node>,
    pub errors: Vec<FileError>,
}

/// What identifies a version of a file for polling.
type Stamp = (Option<SystemTime>, u64);

fn is_manifest(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

/// The manifest files of `dir` with their stamps, sorted by path so that
/// an object defined twice resolves the same way on every read.
fn manifest_files(dir: &Path) -> Result<Vec<(PathBuf, Stamp)>, SourceError> {
    let read_dir = |source| SourceError::ReadDir {
        path: dir.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_dir)? {
        let entry = entry.map_err(read_dir)?;
        let path = entry.path();
        // Hidden files: editors' swap files and ConfigMap volumes' `..data`.
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden || !is_manifest(&path) {
            continue;
        }
        // metadata() follows symlinks, as ConfigMap volumes need.
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => out.push((path, (m.modified().ok(), m.len()))),
            Ok(_) => {}
            // Vanished between read_dir and stat: gone.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(read_dir(e)),
        }
    }
    out.sort();
    Ok(out)
}

/// Parses one file; any object that does not parse fails the whole file.
pub fn parse_file(path: &Path) -> Result<FileObjects, FileError> {
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let docs: Vec<Value> = if path.extension().and_then(|e| e.to_str()) == Some("json") {
        vec![
            serde_json::from_str(&text).map_err(|source| FileError::Json {
                path: path.to_path_buf(),
                source,
            })?,
        ]
    } else {
        serde_saphyr::from_multiple(&text).map_err(|source| FileError::Yaml {
            path: path.to_path_buf(),
            source: Box::new(source),
        })?
    };
    let mut objects = FileObjects::default();
    let mut index = 0;
    for doc in docs {
        let items = match doc.get("kind").and_then(Value::as_str) {
            Some(k) if k == "List" || k.ends_with("List") => match doc.get("items") {
                Some(Value::Array(items)) => items.clone(),
                _ => Vec::new(),
            },
            _ => vec![doc],
        };
        for item in items {
            index += 1;
            let kind = item
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let err = |source| FileError::Object {
                path: path.to_path_buf(),
                index,
                kind: kind.clone(),
                source,
            };
            match kind.as_str() {
                "Service" => {
                    let svc: Service = serde_json::from_value(item).map_err(err)?;
                    objects.services.push(Arc::new(StoredService::from(&svc)));
                }
                "EndpointSlice" => {
                    let slice: EndpointSlice = serde_json::from_value(item).map_err(err)?;
                    objects.slices.push(Arc::new(Slice::from(&slice)));
                }
                "Node" => objects
                    .nodes
                    .push(serde_json::from_value(item).map_err(err)?),
                // Empty documents (a trailing `---`) and other kinds
                // (Deployments next to their Services) are not ours.
                _ => {}
            }
        }
    }
    Ok(objects)
}

/// Selection over every file's objects.
fn select<'a>(
    files: impl Iterator<Item = &'a FileObjects>,
    node_name: &str,
    proxy_name: Option<&str>,
) -> (Vec<Arc<StoredService>>, Vec<Arc<Slice>>, Option<Node>) {
    let mut services = Vec::new();
    let mut slices = Vec::new();
    let mut node = None;
    for f in files {
        services.extend(
            f.services
                .iter()
                .filter(|s| s.labels.selected_by(proxy_name))
                .cloned(),
        );
        slices.extend(
            f.slices
                .iter()
                .filter(|s| s.labels.selected_by(proxy_name))
                .cloned(),
        );
        if let Some(n) = f
            .nodes
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(node_name))
        {
            node = Some(n.clone());
        }
    }
    (services, slices, node)
}

/// Reads the directory once. Only an unreadable directory is an error;
/// files that fail are listed in [`Loaded::errors`].
pub fn load_once(
    dir: &Path,
    node_name: &str,
    proxy_name: Option<&str>,
) -> Result<Loaded, SourceError> {
    let mut parsed = Vec::new();
    let mut errors = Vec::new();
    for (path, _) in manifest_files(dir)? {
        match parse_file(&path) {
            Ok(objects) => parsed.push(objects),
            Err(e) => errors.push(e),
        }
    }
    let (services, slices, node) = select(parsed.iter(), node_name, proxy_name);
    Ok(Loaded {
        services,
        slices,
        node,
        errors,
    })
}

struct Cached {
    stamp: Stamp,
    objects: FileObjects,
}

/// One poll: re-parses files whose stamp changed, forgets removed files.
/// Returns whether any file's objects changed.
fn rescan(
    dir: &Path,
    cache: &mut BTreeMap<PathBuf, Cached>,
    stats: &SourceStats,
) -> Result<bool, SourceError> {
    let files = manifest_files(dir)?;
    let mut changed = false;
    let before = cache.len();
    cache.retain(|p, _| files.iter().any(|(f, _)| f == p));
    changed |= cache.len() != before;
    for (path, stamp) in files {
        if cache.get(&path).is_some_and(|c| c.stamp == stamp) {
            continue;
        }
        match parse_file(&path) {
            Ok(objects) => {
                cache.insert(path, Cached { stamp, objects });
                changed = true;
            }
            Err(e) => {
                tracing::warn!(
                    file = %path.display(),
                    error = %error_chain(&e),
                    "manifest file skipped, keeping its previous objects"
                );
                stats.skipped_files.fetch_add(1, Ordering::Relaxed);
                // Record the stamp so the same broken version is reported
                // once, not every poll; keep the previous objects.
                let objects = cache.remove(&path).map(|c| c.objects).unwrap_or_default();
                cache.insert(path, Cached { stamp, objects });
            }
        }
    }
    Ok(changed)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Follows the directory forever: re-reads on change every `poll` and
/// applies the result with `replace_*`. The inventory is marked synced
/// after the first successful read of the directory (an unreadable
/// directory leaves it unsynced, so nothing is removed from the node).
pub async fn run(
    dir: PathBuf,
    node_name: String,
    proxy_name: Option<String>,
    inv: Shared,
    stats: Arc<SourceStats>,
    poll: Duration,
) {
    let mut cache: BTreeMap<PathBuf, Cached> = BTreeMap::new();
    let mut synced = false;
    loop {
        // File I/O off the async workers; the cache travels with it.
        let job = {
            let (dir, stats, mut cache) = (dir.clone(), stats.clone(), std::mem::take(&mut cache));
            tokio::task::spawn_blocking(move || {
                let r = rescan(&dir, &mut cache, &stats);
                (cache, r)
            })
        };
        let result = match job.await {
            Ok((back, r)) => {
                cache = back;
                r
            }
            Err(e) => {
                // The cache is lost with the task: the next scan re-reads all.
                tracing::error!(error = %e, "file source scan failed");
                tokio::time::sleep(poll).await;
                continue;
            }
        };
        match result {
            Ok(changed) if changed || !synced => {
                let (services, slices, node) = select(
                    cache.values().map(|c| &c.objects),
                    &node_name,
                    proxy_name.as_deref(),
                );
                inv.update(|i| {
                    i.replace_services(services);
                    i.replace_slices(slices);
                    i.set_node(node);
                    i.set_synced(Kind::Services);
                    i.set_synced(Kind::Slices);
                    i.set_synced(Kind::Node);
                });
                synced = true;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(
                error = %error_chain(&e),
                "manifest directory unreadable, keeping the previous objects"
            ),
        }
        tokio::time::sleep(poll).await;
    }
}
