//! Compiles every `bpf/*.bpf.c` in the workspace into a libbpf-rs skeleton in
//! `OUT_DIR` (`<name>.skel.rs`) and writes `bpf_skeletons.rs`, which declares
//! one module per program so that adding a program needs no Rust edit here.
//!
//! The programs are packet-only (no CO-RE), so they build against the uapi
//! headers of the build machine plus the project's own headers in `bpf/`.

use std::env;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use libbpf_cargo::SkeletonBuilder;

fn main() {
    let manifest =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let bpf_dir = manifest.join("../bpf");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));

    println!("cargo:rerun-if-changed={}", bpf_dir.display());
    // The series' uapi header, mirrored by testbed/export-series: the
    // session map layout the programs share with IPVS.
    let uapi_include = bpf_dir.join("include");
    println!(
        "cargo:rerun-if-changed={}",
        uapi_include.join("linux/ip_vs.h").display()
    );
    println!("cargo:rerun-if-env-changed=BPF_CLANG");

    let clang = env::var_os("BPF_CLANG").unwrap_or_else(|| "clang".into());
    let arch_include = multiarch_include();

    let mut sources: Vec<PathBuf> = fs::read_dir(&bpf_dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", bpf_dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .collect();
    sources.sort();

    let mut modules = String::new();
    for path in &sources {
        let file = path.file_name().and_then(OsStr::to_str).unwrap_or_default();
        if file.ends_with(".h") || file.ends_with(".bpf.c") {
            println!("cargo:rerun-if-changed={}", path.display());
        }
        let Some(name) = file.strip_suffix(".bpf.c") else {
            continue;
        };
        let skel = out.join(format!("{name}.skel.rs"));
        let mut args = vec![
            "-Wall".to_string(),
            "-Werror".to_string(),
            format!("-I{}", bpf_dir.display()),
            format!("-I{}", uapi_include.display()),
        ];
        if let Some(dir) = &arch_include {
            args.push(format!("-I{}", dir.display()));
        }
        SkeletonBuilder::new()
            .source(path)
            .clang(&clang)
            .clang_args(&args)
            .build_and_generate(&skel)
            .unwrap_or_else(|e| panic!("building BPF skeleton for {}: {e:#}", path.display()));
        let module = name.replace('-', "_");
        writeln!(
            modules,
            "#[allow(clippy::all, missing_docs, unsafe_op_in_unsafe_fn, non_snake_case, non_camel_case_types)]\n\
             pub mod {module} {{ include!(concat!(env!(\"OUT_DIR\"), \"/{name}.skel.rs\")); }}"
        )
        .expect("writing to a String cannot fail");
    }
    fs::write(out.join("bpf_skeletons.rs"), modules).expect("writing bpf_skeletons.rs");
}

/// Debian keeps `asm/types.h` under the multiarch include directory, which
/// clang does not search when targeting `bpf`.
fn multiarch_include() -> Option<PathBuf> {
    let arch = match env::var("CARGO_CFG_TARGET_ARCH").ok()?.as_str() {
        "x86_64" => "x86_64-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        _ => return None,
    };
    let dir = Path::new("/usr/include").join(arch);
    dir.is_dir().then_some(dir)
}
