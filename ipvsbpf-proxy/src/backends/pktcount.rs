//! Typed access to `bpf/pktcount.bpf.c`: per-direction packet and byte
//! counters, summed over CPUs.

use std::mem::MaybeUninit;

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, OpenObject};

use crate::skel::pktcount::{PktcountSkel, PktcountSkelBuilder};

/// Direction slots, matching `enum pktcount_dir` in the BPF source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// clsact ingress
    Ingress = 0,
    /// clsact egress
    Egress = 1,
}

/// Counters of one direction, summed over every CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// packets seen
    pub packets: u64,
    /// bytes seen (`skb->len`)
    pub bytes: u64,
}

/// Errors of the pktcount layer.
#[derive(Debug)]
pub enum Error {
    /// libbpf refused to open, load or query the object.
    Bpf(libbpf_rs::Error),
    /// A per-CPU value did not have the 16 bytes of `struct pktcount`.
    BadValue(usize),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Bpf(e) => write!(f, "pktcount BPF object: {e}"),
            Error::BadValue(n) => write!(f, "pktcount value has {n} bytes, expected 16"),
        }
    }
}

impl std::error::Error for Error {}

impl From<libbpf_rs::Error> for Error {
    fn from(e: libbpf_rs::Error) -> Self {
        Error::Bpf(e)
    }
}

/// Opens and loads the pktcount object into the kernel. `storage` backs the
/// libbpf object and must outlive the skeleton.
pub fn load(storage: &mut MaybeUninit<OpenObject>) -> Result<PktcountSkel<'_>, Error> {
    Ok(PktcountSkelBuilder::default().open(storage)?.load()?)
}

/// Reads one direction's counters, summed over CPUs.
pub fn read(skel: &PktcountSkel<'_>, dir: Direction) -> Result<Counters, Error> {
    let key = (dir as u32).to_ne_bytes();
    let per_cpu = skel
        .maps
        .pktcount_stats
        .lookup_percpu(&key, MapFlags::ANY)?
        .unwrap_or_default();
    per_cpu.iter().try_fold(Counters::default(), |acc, v| {
        let bytes: &[u8; 16] = v
            .get(..16)
            .and_then(|s| s.try_into().ok())
            .ok_or(Error::BadValue(v.len()))?;
        let (p, b) = bytes.split_at(8);
        let word = |s: &[u8]| u64::from_ne_bytes(s.try_into().unwrap_or([0; 8]));
        Ok(Counters {
            packets: acc.packets + word(p),
            bytes: acc.bytes + word(b),
        })
    })
}
