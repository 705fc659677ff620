//! ipvsbpf-datapath: load, attach and inspect the tc SNAT programs by hand,
//! for operators and the testbed. The proxy does the same in `ipvs-bpf`
//! mode; this tool leaves IPVS alone: hand the pinned session map to IPVS
//! separately (IPVS_CMD_NEW_BPF).
//!
//!   ipvsbpf-datapath attach --dev eth0 --pin /sys/fs/bpf/ipvsbpf
//!   ipvsbpf-datapath stats --pin /sys/fs/bpf/ipvsbpf
//!   ipvsbpf-datapath detach --dev eth0 --pin /sys/fs/bpf/ipvsbpf

use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use ipvsbpf_proxy::backends::datapath::{self, Datapath, Options, MAP_SESSIONS, MAP_STATS};
use ipvsbpf_proxy::backends::hostinfo;

#[derive(Parser)]
#[command(
    version,
    about = "Load, attach and inspect the ipvs-bpf tc SNAT programs"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Load the programs, attach them to DEV's clsact egress and ingress
    /// and pin the maps under PIN. The filters and maps outlive the tool.
    Attach {
        /// uplink device, in this network namespace
        #[arg(long)]
        dev: String,
        /// bpffs directory for the maps (created)
        #[arg(long)]
        pin: PathBuf,
        /// session map size: two entries per IPVS connection
        #[arg(long, default_value_t = Options::default().session_entries)]
        sessions: u32,
        /// fragment map size
        #[arg(long, default_value_t = Options::default().frag_entries)]
        frags: u32,
        /// seconds a first fragment's translation serves the later ones
        #[arg(long, default_value_t = Options::default().frag_timeout.as_secs())]
        frag_timeout: u64,
    },
    /// Print the non-zero counters of the pinned counter map:
    /// "DIRECTION REASON PACKETS BYTES", one per line.
    Stats {
        /// bpffs directory the maps were pinned under
        #[arg(long)]
        pin: PathBuf,
    },
    /// Remove the filters from DEV and the pinned maps under PIN.
    Detach {
        #[arg(long)]
        dev: String,
        #[arg(long)]
        pin: PathBuf,
    },
}

fn ifindex(dev: &str) -> Result<i32, String> {
    hostinfo::ifindex(dev).map_err(|e| e.to_string())
}

fn unpin(pin: &Path) -> Result<(), String> {
    datapath::unpin(pin).map_err(|e| format!("removing the pins under {}: {e}", pin.display()))
}

fn attach(dev: &str, pin: &Path, opts: &Options) -> Result<(), String> {
    let idx = ifindex(dev)?;
    let link = hostinfo::link_layer(dev).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(pin).map_err(|e| format!("creating {}: {e}", pin.display()))?;
    let mut storage = MaybeUninit::uninit();
    let mut dp = Datapath::load(&mut storage, opts).map_err(|e| e.to_string())?;
    dp.pin(pin).map_err(|e| e.to_string())?;
    if let Err(e) = dp.attach(idx, link) {
        // leave nothing behind that a second attempt would trip over
        let _ = unpin(pin);
        return Err(e.to_string());
    }
    println!(
        "attached to {dev} (ifindex {idx}); session map {}",
        pin.join(MAP_SESSIONS).display()
    );
    Ok(())
}

fn stats(pin: &Path) -> Result<(), String> {
    let map = datapath::open_pinned_stats(&pin.join(MAP_STATS)).map_err(|e| e.to_string())?;
    for (dir, reason, c) in datapath::read_counters(&map).map_err(|e| e.to_string())? {
        println!("{} {} {} {}", dir.name(), reason.name(), c.packets, c.bytes);
    }
    Ok(())
}

/// Idempotent: filters or pins already gone are fine, and the pins go
/// even when the device does.
fn detach(dev: &str, pin: &Path) -> Result<(), String> {
    let filters = ifindex(dev).and_then(|idx| datapath::detach(idx).map_err(|e| e.to_string()));
    let pins = unpin(pin);
    filters.and(pins)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match &cli.cmd {
        Cmd::Attach {
            dev,
            pin,
            sessions,
            frags,
            frag_timeout,
        } => attach(
            dev,
            pin,
            &Options {
                session_entries: *sessions,
                frag_entries: *frags,
                frag_timeout: Duration::from_secs(*frag_timeout),
                // IPVS's SNAT settings are handed separately: look every
                // arriving packet up
                snat_dst: None,
            },
        ),
        Cmd::Stats { pin } => stats(pin),
        Cmd::Detach { dev, pin } => detach(dev, pin),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ipvsbpf-datapath: {e}");
            ExitCode::FAILURE
        }
    }
}
