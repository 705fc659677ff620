//! The control-plane benchmark's manifests (testbed/proxy-bench-manifests.py,
//! suite proxy-bench) as the file source and the model read them: every
//! Service and slice parses, each Service is one virtual server with its
//! endpoints, and rewriting change.yaml adds exactly the announced endpoint.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use ipvsbpf_proxy::model::{service_state, ModelConfig};
use ipvsbpf_proxy::sources::file::{load_once, Loaded};

const SERVICES: usize = 50;
const ENDPOINTS: usize = 10;

/// A fresh directory path under the system temp dir (not created: the
/// generator wants a new or empty one), removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "ipvsbpf-bench-manifests-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The generator, as the suite runs it (/usr/bin/python3, which the
/// guest has), ready for arguments.
fn generator() -> Command {
    let script =
        std::path::PathBuf::from(package_dir()).join("../testbed/proxy-bench-manifests.py");
    let python = if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let mut cmd = Command::new(python);
    cmd.arg(script);
    cmd
}

/// Runs the generator with `args`; returns its `key=value` output.
fn generate(args: &[&str]) -> BTreeMap<String, String> {
    let out = generator().args(args).output().expect("run the generator");
    assert!(
        out.status.success(),
        "generator {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("UTF-8 output")
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The model's virtual servers per Service name: (address, port,
/// destination addresses).
fn virtual_servers(loaded: &Loaded) -> BTreeMap<String, Vec<(IpAddr, u16, Vec<IpAddr>)>> {
    let cfg = ModelConfig {
        node_name: "node".into(),
        ..ModelConfig::default()
    };
    let mut by_service: BTreeMap<String, Vec<Arc<_>>> = BTreeMap::new();
    for s in &loaded.slices {
        by_service
            .entry(s.service().expect("slice owner label").to_string())
            .or_default()
            .push(Arc::clone(s));
    }
    loaded
        .services
        .iter()
        .map(|svc| {
            let n = svc.name.name.to_string();
            let slices = by_service.get(&n).cloned().unwrap_or_default();
            let state = service_state(&cfg, svc, &slices, loaded.node.as_ref())
                .unwrap_or_else(|e| panic!("{n}: {e}"));
            let vss = state
                .virtual_servers
                .iter()
                .map(|vs| match vs.key() {
                    ipvs_netlink::ServiceKey::Tuple { addr, port, .. } => {
                        (addr, port, vs.destinations.iter().map(|d| d.addr).collect())
                    }
                    other => panic!("{n}: unexpected key {other:?}"),
                })
                .collect();
            (n, vss)
        })
        .collect()
}

fn check(format: &str) {
    let dir = TempDir::new(format);
    let d = dir.0.to_str().expect("UTF-8 temp path");
    let (n, e) = (SERVICES.to_string(), ENDPOINTS.to_string());
    let out = generate(&[
        "--services",
        &n,
        "--endpoints",
        &e,
        "--out",
        d,
        "--chunk",
        "20",
        "--format",
        format,
    ]);
    let vip0: IpAddr = out["vip0"].parse().expect("vip0");

    let loaded = load_once(&dir.0, "node", None).expect("load");
    assert!(loaded.errors.is_empty(), "{format}: {:?}", loaded.errors);
    assert_eq!(loaded.services.len(), SERVICES, "{format}");
    assert_eq!(loaded.slices.len(), SERVICES, "{format}");
    assert!(loaded.node.is_some(), "{format}: Node `node` missing");
    // 50 Services in chunks of 20: three files each, plus node and change.
    let files = std::fs::read_dir(&dir.0).expect("read dir").count();
    assert_eq!(files, 3 + 3 + 2, "{format}");

    let vss = virtual_servers(&loaded);
    let mut vips = std::collections::BTreeSet::new();
    for (svc, list) in &vss {
        assert_eq!(list.len(), 1, "{format} {svc}: {list:?}");
        let (addr, port, dests) = &list[0];
        assert_eq!(*port, 80, "{format} {svc}");
        assert_eq!(dests.len(), ENDPOINTS, "{format} {svc}: {dests:?}");
        assert!(vips.insert(*addr), "{format} {svc}: VIP {addr} used twice");
    }
    assert_eq!(vss["svc-00000"][0].0, vip0, "{format}");

    // The benchmark's change: service 0 gains one endpoint per rewrite.
    let mut before = vss["svc-00000"][0].2.clone();
    for extra in 1..=2 {
        let k = extra.to_string();
        let out = generate(&[
            "--change-only",
            "--extra",
            &k,
            "--endpoints",
            &e,
            "--out",
            d,
        ]);
        let added: IpAddr = out["added"].parse().expect("added");
        assert_eq!(out["vip0"].parse::<IpAddr>().ok(), Some(vip0));
        let loaded = load_once(&dir.0, "node", None).expect("reload");
        assert!(loaded.errors.is_empty(), "{format}: {:?}", loaded.errors);
        assert_eq!(loaded.slices.len(), SERVICES, "{format}");
        let vss2 = virtual_servers(&loaded);
        let mut want = before.clone();
        want.push(added);
        want.sort();
        assert_eq!(vss2["svc-00000"][0].2, want, "{format}: extra {extra}");
        // Every other Service is untouched.
        for (svc, list) in &vss2 {
            if svc != "svc-00000" {
                assert_eq!(list, &vss[svc], "{format} {svc}");
            }
        }
        before = want;
    }
}

#[test]
fn json_lists_load_and_change() {
    check("json");
}

#[test]
fn yaml_documents_load_and_change() {
    check("yaml");
}

#[test]
fn refuses_a_directory_in_use() {
    let dir = TempDir::new("busy");
    std::fs::create_dir_all(&dir.0).expect("mkdir");
    std::fs::write(dir.0.join("other.yaml"), "kind: Service\n").expect("write");
    let out = generator()
        .args(["--services", "1", "--endpoints", "1", "--out"])
        .arg(&dir.0)
        .output()
        .expect("run the generator");
    assert!(!out.status.success(), "wrote into a non-empty directory");
}

/// As `common::package_dir` (not shared: `common` is the datapath tests').
fn package_dir() -> std::ffi::OsString {
    std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
}
