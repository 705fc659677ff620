//! ipvsbpf-proxy: a kube-proxy replacement with `ipvs-bpf` and `ipvs`
//! modes. Flags are kube-proxy's where they exist (`--help`).

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use ipvsbpf_proxy::backends::bpfmode::{probe_kernel, KernelSupport};
use ipvsbpf_proxy::cli::{Args, Config, LogFormat};
use ipvsbpf_proxy::daemon;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let args = Args::parse();
    if args.probe_kernel {
        let found = probe_kernel();
        let _ = writeln!(std::io::stdout(), "{found}");
        return match found {
            KernelSupport::Patched => ExitCode::SUCCESS,
            KernelSupport::Unpatched(_) => ExitCode::from(3),
            KernelSupport::Unknown(_) => ExitCode::FAILURE,
        };
    }
    let check = args.check_config;
    let cfg = match Config::from_args(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ipvsbpf-proxy: {e}");
            return ExitCode::from(2);
        }
    };
    if check {
        for w in &cfg.warnings {
            eprintln!("ipvsbpf-proxy: warning: {w}");
        }
        // A closed pipe (`| head`) is not an error of the configuration.
        let _ = writeln!(std::io::stdout(), "{cfg:#?}");
        return ExitCode::SUCCESS;
    }
    init_logging(&cfg);
    limit_malloc_arenas();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ipvsbpf-proxy: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(daemon::run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// klog-style verbosity: 0-1 info, 2-3 debug, 4+ trace; RUST_LOG wins.
fn init_logging(cfg: &Config) {
    let level = match cfg.verbosity {
        0..=1 => "info",
        2..=3 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("ipvsbpf_proxy={level},warn")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match cfg.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// glibc gives threads that allocate at once arenas of their own (up to
/// eight per core) and keeps each one's free memory. Two are enough for a
/// proxy whose work is one sync at a time: at 10,000 Services, VmRSS 115
/// -> 93 MiB and VmHWM 149 -> 122 MiB in `make bench-proxy`, sync times
/// unchanged (docs/proxy.md). Called before any thread starts;
/// `MALLOC_ARENA_MAX` in the environment still decides when set.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; no thread
        // but this one exists yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}
