//! ipvsbpf-datapath: load, attach and inspect the tc SNAT programs by hand,
//! for operators and the testbed. The proxy does the same in `ipvs-bpf`
//! mode; this tool leaves IPVS alone: hand the pinned session map to IPVS
//! separately (IPVS_CMD_NEW_BPF).
//!
//!   ipvsbpf-datapath attach --dev eth0 --pin /sys/fs/bpf/ipvsbpf
//!   ipvsbpf-datapath stats --pin /sys/fs/bpf/ipvsbpf
//!   ipvsbpf-datapath detach --dev eth0 --pin /sys/fs/bpf/ipvsbpf

use std::ffi::CString;
use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ipvsbpf_proxy::datapath::{self, Datapath, Options, MAP_FRAGS, MAP_SESSIONS, MAP_STATS};

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
    let name = CString::new(dev).map_err(|_| format!("bad device name {dev:?}"))?;
    // SAFETY: a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if idx == 0 {
        return Err(format!("no device {dev} in this network namespace"));
    }
    i32::try_from(idx).map_err(|_| format!("ifindex {idx} out of range"))
}

fn attach(dev: &str, pin: &Path, opts: &Options) -> Result<(), String> {
    let idx = ifindex(dev)?;
    std::fs::create_dir_all(pin).map_err(|e| format!("creating {}: {e}", pin.display()))?;
    let mut storage = MaybeUninit::uninit();
    let mut dp = Datapath::load(&mut storage, opts).map_err(|e| e.to_string())?;
    dp.pin(pin).map_err(|e| e.to_string())?;
    dp.attach(idx).map_err(|e| e.to_string())?;
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

fn detach(dev: &str, pin: &Path) -> Result<(), String> {
    datapath::detach(ifindex(dev)?).map_err(|e| e.to_string())?;
    for name in [MAP_SESSIONS, MAP_STATS, MAP_FRAGS] {
        let path = pin.join(name);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(format!("removing {}: {e}", path.display()))
            }
            _ => {}
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match &cli.cmd {
        Cmd::Attach {
            dev,
            pin,
            sessions,
            frags,
        } => attach(
            dev,
            pin,
            &Options {
                session_entries: *sessions,
                frag_entries: *frags,
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
