//! ipvsbpf-proxy binary. The daemon (watch → model → reconcile) is tracked
//! by its own issue; until it lands the binary only reports what it is.

use std::process::ExitCode;

fn main() -> ExitCode {
    let arg = std::env::args().nth(1);
    match arg.as_deref() {
        Some("--version") | Some("-V") => {
            println!("ipvsbpf-proxy {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!(
                "ipvsbpf-proxy {}: the proxy daemon is not implemented yet; \
                 only --version is available",
                env!("CARGO_PKG_VERSION")
            );
            ExitCode::from(2)
        }
    }
}
