//! Typed access to `bpf/snat.bpf.c`, the tc (clsact) SNAT datapath: loading,
//! attaching to a device, the session map IPVS fills, and the per-CPU
//! counters by reason.
//!
//! The session map's layout is the kernel series' uapi
//! (`ipvs_netlink::uapi::IpVsBpfKey`/`IpVsBpfValue`); the reason codes come
//! from the object's BTF through the generated skeleton, so neither is a hand
//! copy of the C.

use std::mem::{offset_of, MaybeUninit};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipvs_netlink::uapi::{
    IpVsBpfKey, IpVsBpfValue, IP_VS_BPF_DIR_ORIG, IP_VS_BPF_DIR_REPLY, IP_VS_BPF_F_SNAT,
    IP_VS_BPF_MIN_ENTRIES,
};
use ipvs_netlink::Snat;
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{
    MapCore, MapFlags, MapHandle, OpenObject, ProgramMut, TcHook, TcHookBuilder, TC_EGRESS,
    TC_INGRESS,
};

use crate::skel::snat::types::ipvsbpf_reason as R;
use crate::skel::snat::{SnatSkel, SnatSkelBuilder};

/// Size of `struct ip_vs_bpf_key`.
pub const KEY_SIZE: usize = std::mem::size_of::<IpVsBpfKey>();
/// Size of `struct ip_vs_bpf_value`.
pub const VALUE_SIZE: usize = std::mem::size_of::<IpVsBpfValue>();

const AF_INET: u8 = libc::AF_INET as u8;
const AF_INET6: u8 = libc::AF_INET6 as u8;

/// What precedes the IP header on a device, which picks the pair of
/// programs it gets: the IP header is at offset 14 on an Ethernet device
/// (veth, virtio, ENA, mlx5, a bridge, VXLAN) and at 0 on one without a
/// link-layer header (IPIP, ip6tnl, SIT, WireGuard, TUN).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkLayer {
    /// ARPHRD_ETHER: `ipvsbpf_egress` / `ipvsbpf_ingress`.
    Ethernet,
    /// No link-layer header: `ipvsbpf_l3_egress` / `ipvsbpf_l3_ingress`.
    L3,
}

/// Errors of the datapath layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// libbpf refused to open, load, attach or query.
    #[error("{what}: {source}")]
    Bpf {
        /// what was being done
        what: String,
        /// libbpf's error
        source: libbpf_rs::Error,
    },
    /// A map returned a value of an unexpected size.
    #[error("{map}: value has {got} bytes, expected {want}")]
    BadValue {
        /// map name
        map: &'static str,
        /// bytes received
        got: usize,
        /// bytes expected
        want: usize,
    },
    /// A session whose two addresses are of different families.
    #[error("session {src} -> {dst} mixes address families")]
    MixedFamilies {
        /// source
        src: SocketAddr,
        /// destination
        dst: SocketAddr,
    },
    /// A map size the kernel or IPVS would refuse.
    #[error("session map of {0} entries: IPVS needs at least {IP_VS_BPF_MIN_ENTRIES}")]
    TooSmall(u32),
    /// A pinned map that is not an `ipvsbpf_stats` counter map.
    #[error("{path}: not an ipvsbpf_stats map ({value_size}-byte values, {max_entries} entries)")]
    NotStatsMap {
        /// where it was pinned
        path: String,
        /// its value size
        value_size: u32,
        /// its max_entries
        max_entries: u32,
    },
}

fn bpf_err(what: impl Into<String>) -> impl FnOnce(libbpf_rs::Error) -> Error {
    let what = what.into();
    move |source| Error::Bpf { what, source }
}

/// Which program, and which half of a session: requests leave through
/// egress with an `ORIG` entry, replies arrive through ingress with a
/// `REPLY` entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// `IP_VS_BPF_DIR_ORIG`, tc egress: source := SNAT addr:port
    Orig,
    /// `IP_VS_BPF_DIR_REPLY`, tc ingress: destination := client addr:port
    Reply,
}

impl Direction {
    /// Both directions, in counter-slot order.
    pub const ALL: [Direction; 2] = [Direction::Orig, Direction::Reply];

    /// The uapi value.
    pub fn uapi(self) -> u8 {
        match self {
            Direction::Orig => IP_VS_BPF_DIR_ORIG,
            Direction::Reply => IP_VS_BPF_DIR_REPLY,
        }
    }

    /// Label for metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            Direction::Orig => "egress",
            Direction::Reply => "ingress",
        }
    }
}

/// Transport protocols a session can have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// TCP
    Tcp,
    /// UDP
    Udp,
    /// SCTP
    Sctp,
}

impl Protocol {
    /// IANA protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => libc::IPPROTO_TCP as u8,
            Protocol::Udp => libc::IPPROTO_UDP as u8,
            Protocol::Sctp => libc::IPPROTO_SCTP as u8,
        }
    }
}

macro_rules! reasons {
    ($($(#[$doc:meta])* $variant:ident = $btf:ident, $name:literal;)*) => {
        /// Why a program handled a packet the way it did (`enum
        /// ipvsbpf_reason`); each has a counter per direction.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u32)]
        pub enum Reason {
            $($(#[$doc])* $variant = R::$btf.0,)*
        }

        impl Reason {
            /// Every reason, in slot order.
            pub const ALL: &'static [Reason] = &[$(Reason::$variant,)*];

            /// Stable label for metrics.
            pub fn name(self) -> &'static str {
                match self {
                    $(Reason::$variant => $name,)*
                }
            }
        }
    };
}

reasons! {
    /// session hit: rewritten
    Xlated = IPVSBPF_XLATED, "xlated";
    /// first fragment rewritten but not remembered: later fragments miss
    XlatedNoFrag = IPVSBPF_XLATED_NOFRAG, "xlated_nofrag";
    /// ICMP error about a session: outer and quoted headers rewritten
    IcmpXlated = IPVSBPF_ICMP_XLATED, "icmp_xlated";
    /// later fragment rewritten from the fragment map
    FragXlated = IPVSBPF_FRAG_XLATED, "frag_xlated";
    /// session hit without `IP_VS_BPF_F_SNAT`: untouched
    PassNoSnat = IPVSBPF_PASS_NOSNAT, "pass_nosnat";
    /// no session: untouched
    PassMiss = IPVSBPF_PASS_MISS, "pass_miss";
    /// ICMP error about no session: untouched
    PassIcmpMiss = IPVSBPF_PASS_ICMP_MISS, "pass_icmp_miss";
    /// later fragment of a datagram not translated here: untouched
    PassFragMiss = IPVSBPF_PASS_FRAG_MISS, "pass_frag_miss";
    /// not IPv4 or IPv6: untouched
    PassNotIp = IPVSBPF_PASS_NOT_IP, "pass_not_ip";
    /// not TCP, UDP, SCTP or an ICMP error about them: untouched
    PassProto = IPVSBPF_PASS_PROTO, "pass_proto";
    /// IPv6 routing header with segments left: untouched
    PassRthdr = IPVSBPF_PASS_RTHDR, "pass_rthdr";
    /// IP header truncated or invalid: untouched
    ErrL3 = IPVSBPF_ERR_L3, "err_l3";
    /// IPv6 extension headers truncated or too many: untouched
    ErrExtHdr = IPVSBPF_ERR_EXTHDR, "err_exthdr";
    /// transport header truncated: untouched
    ErrL4 = IPVSBPF_ERR_L4, "err_l4";
    /// ICMP error quoting a truncated or invalid packet: untouched
    ErrIcmpInner = IPVSBPF_ERR_ICMP_INNER, "err_icmp_inner";
    /// SCTP session whose port would change: dropped
    DropSctpPort = IPVSBPF_DROP_SCTP_PORT, "drop_sctp_port";
    /// a rewrite failed half way: dropped
    DropWrite = IPVSBPF_DROP_WRITE, "drop_write";
    /// arriving packet not addressed to a SNAT address and port: not
    /// looked up, untouched ([`Options::snat_dst`])
    PassNotSnatDst = IPVSBPF_PASS_NOT_SNAT_DST, "pass_not_snat_dst";
}

impl Reason {
    /// Number of slots per direction in the counter map.
    pub const SLOTS: u32 = R::__IPVSBPF_REASON_MAX.0;

    /// Whether the program drops the packet for this reason.
    pub fn drops(self) -> bool {
        (R::IPVSBPF_DROP_FIRST.0..=R::IPVSBPF_DROP_LAST.0).contains(&(self as u32))
    }

    /// The reason of a raw code, if it is one.
    pub fn from_code(code: u32) -> Option<Reason> {
        Reason::ALL.iter().copied().find(|r| *r as u32 == code)
    }
}

/// One counter: packets and bytes (`skb->len`), summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    /// packets
    pub packets: u64,
    /// bytes
    pub bytes: u64,
}

/// Builds the session map key IPVS writes for a packet `src -> dst` as seen
/// at the hook of `dir`.
pub fn session_key(
    dir: Direction,
    proto: Protocol,
    src: SocketAddr,
    dst: SocketAddr,
) -> Result<IpVsBpfKey, Error> {
    let (family, saddr, daddr) = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => (AF_INET, addr_words(s.into()), addr_words(d.into())),
        (IpAddr::V6(s), IpAddr::V6(d)) => (AF_INET6, addr_words(s.into()), addr_words(d.into())),
        _ => return Err(Error::MixedFamilies { src, dst }),
    };
    Ok(IpVsBpfKey {
        saddr,
        daddr,
        sport: port_be(src.port()),
        dport: port_be(dst.port()),
        family,
        protocol: proto.number(),
        dir: dir.uapi(),
        pad: 0,
    })
}

/// Builds a session value: rewrite with `to` when `snat`, else leave alone.
pub fn session_value(to: SocketAddr, snat: bool) -> IpVsBpfValue {
    IpVsBpfValue {
        addr: addr_words(to.ip()),
        port: port_be(to.port()),
        flags: if snat { IP_VS_BPF_F_SNAT } else { 0 },
        pad: 0,
    }
}

/// Address words as the kernel stores them: network byte order, IPv4 in
/// word 0, the rest zero.
fn addr_words(ip: IpAddr) -> [u32; 4] {
    let mut words = [0u32; 4];
    match ip {
        IpAddr::V4(a) => words[0] = u32::from_ne_bytes(a.octets()),
        IpAddr::V6(a) => {
            for (w, c) in words.iter_mut().zip(a.octets().chunks_exact(4)) {
                *w = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
    }
    words
}

fn port_be(port: u16) -> u16 {
    u16::from_ne_bytes(port.to_be_bytes())
}

/// The key's bytes in `struct ip_vs_bpf_key` layout.
pub fn key_bytes(k: &IpVsBpfKey) -> [u8; KEY_SIZE] {
    let mut b = [0u8; KEY_SIZE];
    put_words(&mut b[offset_of!(IpVsBpfKey, saddr)..], &k.saddr);
    put_words(&mut b[offset_of!(IpVsBpfKey, daddr)..], &k.daddr);
    put(
        &mut b,
        offset_of!(IpVsBpfKey, sport),
        &k.sport.to_ne_bytes(),
    );
    put(
        &mut b,
        offset_of!(IpVsBpfKey, dport),
        &k.dport.to_ne_bytes(),
    );
    b[offset_of!(IpVsBpfKey, family)] = k.family;
    b[offset_of!(IpVsBpfKey, protocol)] = k.protocol;
    b[offset_of!(IpVsBpfKey, dir)] = k.dir;
    b[offset_of!(IpVsBpfKey, pad)] = k.pad;
    b
}

/// The value's bytes in `struct ip_vs_bpf_value` layout.
pub fn value_bytes(v: &IpVsBpfValue) -> [u8; VALUE_SIZE] {
    let mut b = [0u8; VALUE_SIZE];
    put_words(&mut b[offset_of!(IpVsBpfValue, addr)..], &v.addr);
    put(
        &mut b,
        offset_of!(IpVsBpfValue, port),
        &v.port.to_ne_bytes(),
    );
    b[offset_of!(IpVsBpfValue, flags)] = v.flags;
    b[offset_of!(IpVsBpfValue, pad)] = v.pad;
    b
}

fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    buf[at..at + bytes.len()].copy_from_slice(bytes);
}

fn put_words(buf: &mut [u8], words: &[u32; 4]) {
    for (i, w) in words.iter().enumerate() {
        put(buf, i * 4, &w.to_ne_bytes());
    }
}

/// Map sizes and settings, fixed at load time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// `max_entries` of the session map: two per IPVS connection.
    pub session_entries: u32,
    /// `max_entries` of the fragment map (LRU).
    pub frag_entries: u32,
    /// How long a first fragment's translation serves the later ones.
    pub frag_timeout: Duration,
    /// The SNAT addresses and port range handed to IPVS with the session
    /// map. With them, ingress passes a packet addressed elsewhere without
    /// looking it up ([`Reason::PassNotSnatDst`]): IPVS gives every SNAT
    /// session one of these addresses and, but for SCTP, a port of the
    /// range. `None`: every packet is looked up (tests that write
    /// sessions of their own).
    pub snat_dst: Option<Snat>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            session_entries: 65536,
            frag_entries: 8192,
            frag_timeout: Duration::from_secs(30),
            snat_dst: None,
        }
    }
}

/// The loaded SNAT object: two programs, the session, fragment and counter
/// maps.
pub struct Datapath<'obj> {
    skel: SnatSkel<'obj>,
}

impl<'obj> Datapath<'obj> {
    /// Opens, sizes and loads the object. `storage` backs libbpf's object
    /// and must outlive the datapath.
    pub fn load(storage: &'obj mut MaybeUninit<OpenObject>, opts: &Options) -> Result<Self, Error> {
        Self::open_and_load(storage, opts, None)
    }

    /// Like [`Datapath::load`], but the maps live under `dir` (a bpffs
    /// directory): a map already pinned there is reused, so a restarted
    /// proxy keeps the sessions IPVS mirrored and the counters; a missing
    /// one is created and pinned. libbpf refuses a pinned map whose type,
    /// sizes or flags differ (an older build, another `--sessions`): that
    /// is an error, never a silent second map ([`set_aside_if_resized`]
    /// makes way for a deliberate resize).
    pub fn load_pinned(
        storage: &'obj mut MaybeUninit<OpenObject>,
        opts: &Options,
        dir: &Path,
    ) -> Result<Self, Error> {
        Self::open_and_load(storage, opts, Some(dir))
    }

    fn open_and_load(
        storage: &'obj mut MaybeUninit<OpenObject>,
        opts: &Options,
        pin_dir: Option<&Path>,
    ) -> Result<Self, Error> {
        if opts.session_entries < IP_VS_BPF_MIN_ENTRIES {
            return Err(Error::TooSmall(opts.session_entries));
        }
        let mut open = SnatSkelBuilder::default()
            .open(storage)
            .map_err(bpf_err("opening the snat object"))?;
        open.maps
            .ipvs_sessions
            .set_max_entries(opts.session_entries)
            .map_err(bpf_err("sizing ipvs_sessions"))?;
        open.maps
            .ipvsbpf_frags
            .set_max_entries(opts.frag_entries)
            .map_err(bpf_err("sizing ipvsbpf_frags"))?;
        if let Some(dir) = pin_dir {
            for (name, map) in PINNED_MAPS.into_iter().zip(pinned_maps!(open.maps)) {
                let path = dir.join(name);
                map.set_pin_path(&path)
                    .map_err(bpf_err(format!("pin path {}", path.display())))?;
            }
        }
        if let Some(rodata) = open.maps.rodata_data.as_deref_mut() {
            rodata.ipvsbpf_frag_timeout_ns =
                u64::try_from(opts.frag_timeout.as_nanos()).unwrap_or(u64::MAX);
            if let Some(snat) = opts.snat_dst {
                let d = &mut rodata.ipvsbpf_snat_dst;
                d.on = 1;
                if let Some(a) = snat.addr4 {
                    d.has4 = 1;
                    d.addr4 = addr_words(IpAddr::V4(a))[0];
                }
                if let Some(a) = snat.addr6 {
                    d.has6 = 1;
                    d.addr6 = addr_words(IpAddr::V6(a));
                }
                d.port_min = snat.port_min;
                d.port_max = snat.port_max;
            }
        }
        let skel = open.load().map_err(bpf_err("loading the snat object"))?;
        Ok(Datapath { skel })
    }

    /// The generated skeleton, for test_run and inspection.
    pub fn skel(&self) -> &SnatSkel<'obj> {
        &self.skel
    }

    /// The program of a direction on Ethernet devices: egress for `Orig`,
    /// ingress for `Reply`.
    pub fn program(&self, dir: Direction) -> &ProgramMut<'obj> {
        self.program_for(dir, LinkLayer::Ethernet)
    }

    /// The program of a direction on devices of `link`'s kind.
    pub fn program_for(&self, dir: Direction, link: LinkLayer) -> &ProgramMut<'obj> {
        let p = &self.skel.progs;
        match (dir, link) {
            (Direction::Orig, LinkLayer::Ethernet) => &p.ipvsbpf_egress,
            (Direction::Reply, LinkLayer::Ethernet) => &p.ipvsbpf_ingress,
            (Direction::Orig, LinkLayer::L3) => &p.ipvsbpf_l3_egress,
            (Direction::Reply, LinkLayer::L3) => &p.ipvsbpf_l3_ingress,
        }
    }

    /// The session map's fd: what IPVS_CMD_NEW_BPF hands to the kernel.
    pub fn sessions_fd(&self) -> BorrowedFd<'_> {
        self.skel.maps.ipvs_sessions.as_fd()
    }

    /// Writes a session entry. IPVS owns the map in production; tests and
    /// the host integration test stand in for it.
    pub fn put_session(&self, key: &IpVsBpfKey, value: &IpVsBpfValue) -> Result<(), Error> {
        self.skel
            .maps
            .ipvs_sessions
            .update(&key_bytes(key), &value_bytes(value), MapFlags::ANY)
            .map_err(bpf_err("writing a session"))
    }

    /// Removes every session entry. Like [`Datapath::put_session`], only
    /// for tests standing in for IPVS.
    pub fn clear_sessions(&self) -> Result<(), Error> {
        clear_map(&self.skel.maps.ipvs_sessions, "clearing ipvs_sessions")
    }

    /// Number of entries in the session map (a walk: O(entries)).
    pub fn session_count(&self) -> usize {
        self.skel.maps.ipvs_sessions.keys().count()
    }

    /// Removes every fragment map entry.
    pub fn clear_frags(&self) -> Result<(), Error> {
        clear_map(&self.skel.maps.ipvsbpf_frags, "clearing ipvsbpf_frags")
    }

    /// Number of entries in the fragment map.
    pub fn frag_count(&self) -> usize {
        self.skel.maps.ipvsbpf_frags.keys().count()
    }

    /// One counter, summed over CPUs.
    pub fn counter(&self, dir: Direction, reason: Reason) -> Result<Counter, Error> {
        read_counter(&self.skel.maps.ipvsbpf_stats, dir, reason)
    }

    /// Every non-zero counter.
    pub fn counters(&self) -> Result<Vec<(Direction, Reason, Counter)>, Error> {
        read_counters(&self.skel.maps.ipvsbpf_stats)
    }

    /// Pins the three maps under `dir` (a bpffs directory), by their
    /// names ([`PINNED_MAPS`]); [`unpin`] removes them.
    pub fn pin(&mut self, dir: &Path) -> Result<(), Error> {
        for (name, map) in PINNED_MAPS.into_iter().zip(pinned_maps!(self.skel.maps)) {
            let path = dir.join(name);
            map.pin(&path)
                .map_err(bpf_err(format!("pinning {}", path.display())))?;
        }
        Ok(())
    }

    /// Attaches egress and ingress to a clsact qdisc on `ifindex` in the
    /// calling thread's network namespace (created if missing), at
    /// priority 1 with handle [`TC_HANDLE`]: a filter of ours already there
    /// is replaced, other owners' filters are left alone. The filters stay
    /// when the process exits; [`Attachment::detach`] or [`detach`] removes
    /// them. `link` must be the device's: the other pair would read the IP
    /// header 14 bytes off ([`crate::backends::hostinfo::link_layer`]).
    pub fn attach(&self, ifindex: i32, link: LinkLayer) -> Result<Attachment, Error> {
        let prog = |dir| self.program_for(dir, link).as_fd();
        let mut egress = tc_hook(prog(Direction::Orig), ifindex, TC_EGRESS);
        let mut ingress = tc_hook(prog(Direction::Reply), ifindex, TC_INGRESS);
        // One clsact qdisc serves both hooks (an existing one is fine)
        egress
            .create()
            .map_err(bpf_err(format!("clsact qdisc on ifindex {ifindex}")))?;
        let mut egress = egress
            .attach()
            .map_err(bpf_err(format!("egress filter on ifindex {ifindex}")))?;
        match ingress.attach() {
            Ok(ingress) => Ok(Attachment { egress, ingress }),
            Err(e) => {
                // never leave half the datapath on the device
                let _ = egress.detach();
                Err(Error::Bpf {
                    what: format!("ingress filter on ifindex {ifindex}"),
                    source: e,
                })
            }
        }
    }
}

/// The maps of [`PINNED_MAPS`], in its order, from a skeleton's open or
/// loaded map set (two types with the same field names).
macro_rules! pinned_maps {
    ($maps:expr) => {
        [
            &mut $maps.ipvs_sessions,
            &mut $maps.ipvsbpf_stats,
            &mut $maps.ipvsbpf_frags,
        ]
    };
}
use pinned_maps;

/// Pinned name of the session map.
pub const MAP_SESSIONS: &str = "ipvs_sessions";
/// Pinned name of the counter map.
pub const MAP_STATS: &str = "ipvsbpf_stats";
/// Pinned name of the fragment map.
pub const MAP_FRAGS: &str = "ipvsbpf_frags";
/// Where [`set_aside_if_resized`] keeps the replaced session map's pin
/// while its successor loads.
pub const MAP_SESSIONS_ASIDE: &str = "ipvs_sessions_replaced";
/// Every map [`Datapath::pin`] pins, in that order.
pub const PINNED_MAPS: [&str; 3] = [MAP_SESSIONS, MAP_STATS, MAP_FRAGS];

/// Removes the pins [`Datapath::pin`] made under `dir`; pins already gone
/// are fine.
pub fn unpin(dir: &Path) -> Result<(), std::io::Error> {
    for name in PINNED_MAPS.into_iter().chain([MAP_SESSIONS_ASIDE]) {
        match std::fs::remove_file(dir.join(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// The session map's pin, moved aside by [`set_aside_if_resized`] until
/// the new map is loaded: [`SetAside::drop_old`] then removes it, or
/// [`SetAside::restore`] puts it back if the load failed.
#[derive(Debug)]
pub struct SetAside {
    path: PathBuf,
    aside: PathBuf,
    /// `max_entries` of the map set aside.
    pub old_entries: u32,
}

impl SetAside {
    pub fn restore(self) -> std::io::Result<()> {
        std::fs::rename(&self.aside, &self.path)
    }

    pub fn drop_old(self) -> std::io::Result<()> {
        std::fs::remove_file(&self.aside)
    }
}

/// Moves the session map's pin under `dir` aside if that map's size is
/// not `entries` (`--bpf-session-map-entries` changed), so the next
/// [`Datapath::load_pinned`] creates one of the new size instead of
/// refusing. The old map lives on while IPVS and the tc programs hold it;
/// handing IPVS the new one ends the old map's sessions.
pub fn set_aside_if_resized(dir: &Path, entries: u32) -> Result<Option<SetAside>, Error> {
    let path = dir.join(MAP_SESSIONS);
    let old_entries = match pinned_entries(&path)? {
        Some(n) if n != entries => n,
        _ => return Ok(None),
    };
    // (bpffs refuses names with a dot)
    let aside = dir.join(MAP_SESSIONS_ASIDE);
    // A leftover of an earlier attempt that died half way.
    let _ = std::fs::remove_file(&aside);
    std::fs::rename(&path, &aside).map_err(|e| Error::Bpf {
        what: format!("moving {} aside", path.display()),
        source: libbpf_rs::Error::from(e),
    })?;
    Ok(Some(SetAside {
        path,
        aside,
        old_entries,
    }))
}

/// `max_entries` of the map pinned at `path`, if one is.
fn pinned_entries(path: &Path) -> Result<Option<u32>, Error> {
    if !path.exists() {
        return Ok(None);
    }
    let map = MapHandle::from_pinned_path(path)
        .map_err(bpf_err(format!("opening the pinned {}", path.display())))?;
    Ok(Some(map.max_entries()))
}

/// A pinned map [`drop_stale_pins`] removed.
#[derive(Debug, PartialEq, Eq)]
pub struct StalePin {
    /// its pinned name
    pub name: &'static str,
    /// its `max_entries`
    pub old_entries: u32,
    /// what this build and these options want
    pub new_entries: u32,
}

/// Removes the pins of the counter and fragment maps under `dir` whose
/// size is not what `opts` and this build's counter slots want (a reason
/// added by an upgrade, another `frag_entries`), so that the next
/// [`Datapath::load_pinned`] creates them anew instead of refusing to
/// load. What they hold is soft state: counters restart from zero, and a
/// datagram whose fragments straddle the restart loses its later
/// fragments. The old maps live on while the old programs hold them. The
/// session map is IPVS's: see [`set_aside_if_resized`].
pub fn drop_stale_pins(dir: &Path, opts: &Options) -> Result<Vec<StalePin>, Error> {
    let mut dropped = Vec::new();
    for (name, want) in [
        (MAP_STATS, 2 * Reason::SLOTS),
        (MAP_FRAGS, opts.frag_entries),
    ] {
        let path = dir.join(name);
        let old_entries = match pinned_entries(&path)? {
            Some(n) if n != want => n,
            _ => continue,
        };
        std::fs::remove_file(&path).map_err(|e| Error::Bpf {
            what: format!("removing {}", path.display()),
            source: libbpf_rs::Error::from(e),
        })?;
        dropped.push(StalePin {
            name,
            old_entries,
            new_entries: want,
        });
    }
    Ok(dropped)
}

fn clear_map(map: &impl MapCore, what: &str) -> Result<(), Error> {
    let keys: Vec<Vec<u8>> = map.keys().collect();
    for k in keys {
        map.delete(&k).map_err(bpf_err(what))?;
    }
    Ok(())
}

/// One counter of a counter map (the loaded object's, or a pinned one),
/// summed over CPUs.
pub fn read_counter(
    stats: &impl MapCore,
    dir: Direction,
    reason: Reason,
) -> Result<Counter, Error> {
    let slot = u32::from(dir.uapi()) * Reason::SLOTS + reason as u32;
    let per_cpu = stats
        .lookup_percpu(&slot.to_ne_bytes(), MapFlags::ANY)
        .map_err(bpf_err("reading ipvsbpf_stats"))?
        .unwrap_or_default();
    per_cpu.iter().try_fold(Counter::default(), |acc, v| {
        let word = |i: usize| -> Result<u64, Error> {
            v.get(i * 8..i * 8 + 8)
                .and_then(|s| s.try_into().ok())
                .map(u64::from_ne_bytes)
                .ok_or(Error::BadValue {
                    map: "ipvsbpf_stats",
                    got: v.len(),
                    want: 16,
                })
        };
        Ok(Counter {
            packets: acc.packets + word(0)?,
            bytes: acc.bytes + word(1)?,
        })
    })
}

/// Every non-zero counter of a counter map.
pub fn read_counters(stats: &impl MapCore) -> Result<Vec<(Direction, Reason, Counter)>, Error> {
    let mut out = Vec::new();
    for dir in Direction::ALL {
        for &reason in Reason::ALL {
            let c = read_counter(stats, dir, reason)?;
            if c != Counter::default() {
                out.push((dir, reason, c));
            }
        }
    }
    Ok(out)
}

/// Opens a pinned counter map, checking that it is one.
pub fn open_pinned_stats(path: &Path) -> Result<MapHandle, Error> {
    let map = MapHandle::from_pinned_path(path)
        .map_err(bpf_err(format!("opening {}", path.display())))?;
    if map.value_size() != 16 || map.max_entries() != 2 * Reason::SLOTS {
        return Err(Error::NotStatsMap {
            path: path.display().to_string(),
            value_size: map.value_size(),
            max_entries: map.max_entries(),
        });
    }
    Ok(map)
}

/// Handle of our tc filters (priority 1): "1b5" for IPVS-BPF, so that
/// attaching replaces only our own filter.
pub const TC_HANDLE: u32 = 0x1b5;

fn tc_hook(fd: BorrowedFd<'_>, ifindex: i32, point: libbpf_rs::TcAttachPoint) -> TcHook {
    let mut b = TcHookBuilder::new(fd);
    b.ifindex(ifindex)
        .replace(true)
        .handle(TC_HANDLE)
        .priority(1);
    b.hook(point)
}

/// Both hooks, and their names for errors.
const HOOKS: [(libbpf_rs::TcAttachPoint, &str); 2] =
    [(TC_EGRESS, "egress"), (TC_INGRESS, "ingress")];

/// An fd for a [`TcHook`] that goes by handle and priority only (detach,
/// query), where the program's fd is not used.
fn unused_prog_fd() -> Result<std::fs::File, Error> {
    std::fs::File::open("/dev/null").map_err(|e| Error::Bpf {
        what: "opening /dev/null".into(),
        source: libbpf_rs::Error::from(e),
    })
}

/// Whether a detach or query error means there is no filter of ours:
/// none at that handle and priority (ENOENT), or no clsact qdisc at all
/// (EINVAL, "Parent Qdisc doesn't exist").
fn no_filter(e: &libbpf_rs::Error) -> bool {
    matches!(
        e.kind(),
        libbpf_rs::ErrorKind::NotFound | libbpf_rs::ErrorKind::InvalidInput
    )
}

/// Removes the filters [`Datapath::attach`] put on `ifindex` (calling
/// thread's netns), whoever loaded them. Idempotent: a filter already gone
/// is not an error, and both hooks are tried whatever the first gives.
pub fn detach(ifindex: i32) -> Result<(), Error> {
    let fd = unused_prog_fd()?;
    let mut first_err = None;
    for (point, what) in HOOKS {
        match tc_hook(fd.as_fd(), ifindex, point).detach() {
            Err(e) if !no_filter(&e) => {
                first_err.get_or_insert(Error::Bpf {
                    what: format!("detaching {what} from ifindex {ifindex}"),
                    source: e,
                });
            }
            _ => {}
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Whether `ifindex` (calling thread's netns) carries a filter at
/// [`Datapath::attach`]'s priority and handle on either hook, whoever
/// loaded it.
pub fn attached(ifindex: i32) -> Result<bool, Error> {
    let fd = unused_prog_fd()?;
    for (point, what) in HOOKS {
        match tc_hook(fd.as_fd(), ifindex, point).query() {
            Ok(_) => return Ok(true),
            Err(e) if no_filter(&e) => {}
            Err(e) => {
                return Err(Error::Bpf {
                    what: format!("querying {what} on ifindex {ifindex}"),
                    source: e,
                })
            }
        }
    }
    Ok(false)
}

/// The two tc filters of one device.
pub struct Attachment {
    egress: TcHook,
    ingress: TcHook,
}

impl Attachment {
    /// Removes both filters (the clsact qdisc stays: others may use it);
    /// both are tried whatever the first gives.
    pub fn detach(mut self) -> Result<(), Error> {
        let egress = self.egress.detach().map_err(bpf_err("detaching egress"));
        let ingress = self.ingress.detach().map_err(bpf_err("detaching ingress"));
        egress.and(ingress)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_of_the_object_has_a_name() {
        // Slot 0 (IPVSBPF_NONE) is never counted
        assert_eq!(Reason::ALL.len() as u32, Reason::SLOTS - 1);
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as u32, i as u32 + 1, "{r:?} out of slot order");
            assert_eq!(Reason::from_code(*r as u32), Some(*r));
        }
        let names: std::collections::HashSet<_> = Reason::ALL.iter().map(|r| r.name()).collect();
        assert_eq!(names.len(), Reason::ALL.len(), "names are unique");
        assert!(Reason::DropWrite.drops() && Reason::DropSctpPort.drops());
        assert!(!Reason::ErrIcmpInner.drops() && !Reason::Xlated.drops());
    }

    #[test]
    fn keys_and_values_use_the_kernel_layout() {
        let k = session_key(
            Direction::Reply,
            Protocol::Udp,
            "198.18.1.10:53".parse().expect("addr"),
            "192.0.2.1:61000".parse().expect("addr"),
        )
        .expect("key");
        let b = key_bytes(&k);
        assert_eq!(&b[0..4], &[198, 18, 1, 10]);
        assert_eq!(&b[4..16], &[0; 12]);
        assert_eq!(&b[16..20], &[192, 0, 2, 1]);
        assert_eq!(&b[32..36], &[0, 53, 0xee, 0x48]);
        assert_eq!(&b[36..40], &[AF_INET, 17, IP_VS_BPF_DIR_REPLY, 0]);
        let v = value_bytes(&session_value(
            "[2001:db8::1]:80".parse().expect("addr"),
            true,
        ));
        assert_eq!(&v[0..4], &[0x20, 0x01, 0x0d, 0xb8]);
        assert_eq!(&v[16..20], &[0, 80, IP_VS_BPF_F_SNAT, 0]);
        assert!(matches!(
            session_key(
                Direction::Orig,
                Protocol::Tcp,
                "192.0.2.1:1".parse().expect("addr"),
                "[::1]:1".parse().expect("addr"),
            ),
            Err(Error::MixedFamilies { .. })
        ));
    }
}
