//! The objects IPVS keeps, as plain Rust values: what a caller builds to
//! program IPVS and what the dumps decode into. [`crate::codec`] converts
//! them to and from attribute lists.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::uapi;

/// Address family of a service, destination or fwmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    Inet,
    Inet6,
}

impl Family {
    /// `AF_INET` or `AF_INET6`.
    pub fn raw(self) -> u16 {
        match self {
            Family::Inet => libc::AF_INET as u16,
            Family::Inet6 => libc::AF_INET6 as u16,
        }
    }

    pub fn from_raw(af: u16) -> Option<Family> {
        match i32::from(af) {
            libc::AF_INET => Some(Family::Inet),
            libc::AF_INET6 => Some(Family::Inet6),
            _ => None,
        }
    }

    pub fn of(addr: &IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::Inet,
            IpAddr::V6(_) => Family::Inet6,
        }
    }
}

/// Transport protocol of a service. IPVS schedules TCP, UDP and SCTP;
/// netlink lets another tool create a service of any number, which
/// decodes as `Other` rather than failing a whole dump.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
    Other(u16),
}

impl Protocol {
    /// `IPPROTO_*`.
    pub fn raw(self) -> u16 {
        match self {
            Protocol::Tcp => libc::IPPROTO_TCP as u16,
            Protocol::Udp => libc::IPPROTO_UDP as u16,
            Protocol::Sctp => libc::IPPROTO_SCTP as u16,
            Protocol::Other(p) => p,
        }
    }

    pub fn from_raw(proto: u16) -> Protocol {
        match i32::from(proto) {
            libc::IPPROTO_TCP => Protocol::Tcp,
            libc::IPPROTO_UDP => Protocol::Udp,
            libc::IPPROTO_SCTP => Protocol::Sctp,
            _ => Protocol::Other(proto),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Protocol::Tcp => f.write_str("TCP"),
            Protocol::Udp => f.write_str("UDP"),
            Protocol::Sctp => f.write_str("SCTP"),
            Protocol::Other(p) => write!(f, "proto {p}"),
        }
    }
}

/// What identifies a virtual service: a protocol, address and port, or a
/// firewall mark of one address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServiceKey {
    Tuple {
        protocol: Protocol,
        addr: IpAddr,
        port: u16,
    },
    Fwmark {
        family: Family,
        mark: u32,
    },
}

impl ServiceKey {
    pub fn tcp(addr: IpAddr, port: u16) -> ServiceKey {
        ServiceKey::Tuple {
            protocol: Protocol::Tcp,
            addr,
            port,
        }
    }

    pub fn udp(addr: IpAddr, port: u16) -> ServiceKey {
        ServiceKey::Tuple {
            protocol: Protocol::Udp,
            addr,
            port,
        }
    }

    pub fn family(&self) -> Family {
        match self {
            ServiceKey::Tuple { addr, .. } => Family::of(addr),
            ServiceKey::Fwmark { family, .. } => *family,
        }
    }
}

/// As `ipvsadm -Ln` names services: `TCP 10.0.0.1:80`, `UDP [fd00::1]:53`,
/// `FWM 7 IPv6`.
impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceKey::Tuple {
                protocol,
                addr,
                port,
            } => write!(f, "{protocol} {}", SockAddr(*addr, *port)),
            ServiceKey::Fwmark { family, mark } => match family {
                Family::Inet => write!(f, "FWM {mark}"),
                Family::Inet6 => write!(f, "FWM {mark} IPv6"),
            },
        }
    }
}

struct SockAddr(IpAddr, u16);

impl fmt::Display for SockAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(a) => write!(f, "{a}:{}", self.1),
            IpAddr::V6(a) => write!(f, "[{a}]:{}", self.1),
        }
    }
}

/// `IP_VS_SVC_F_*` bits. The kernel's internal `IP_VS_SVC_F_HASHED` is
/// never part of a decoded service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ServiceFlags(pub u32);

impl ServiceFlags {
    pub const PERSISTENT: ServiceFlags = ServiceFlags(uapi::IP_VS_SVC_F_PERSISTENT);
    pub const ONEPACKET: ServiceFlags = ServiceFlags(uapi::IP_VS_SVC_F_ONEPACKET);
    pub const SCHED1: ServiceFlags = ServiceFlags(uapi::IP_VS_SVC_F_SCHED1);
    pub const SCHED2: ServiceFlags = ServiceFlags(uapi::IP_VS_SVC_F_SCHED2);
    pub const SCHED3: ServiceFlags = ServiceFlags(uapi::IP_VS_SVC_F_SCHED3);
    pub const SH_FALLBACK: ServiceFlags = ServiceFlags(uapi::IP_VS_SVC_F_SCHED_SH_FALLBACK);
    pub const SH_PORT: ServiceFlags = ServiceFlags(uapi::IP_VS_SVC_F_SCHED_SH_PORT);
    pub const MH_FALLBACK: ServiceFlags = ServiceFlags(uapi::IP_VS_SVC_F_SCHED_MH_FALLBACK);
    /// `mh`: hash the source port with the address (`ipvsadm --mh-port`).
    pub const MH_PORT: ServiceFlags = ServiceFlags(uapi::IP_VS_SVC_F_SCHED_MH_PORT);
    /// ipvs-bpf: SNAT every connection of this service (`bpf_mode`).
    pub const BPF_SNAT: ServiceFlags = ServiceFlags(uapi::IP_VS_SVC_F_BPF_SNAT);
    /// ipvs-bpf: SNAT the connections of clients outside the attachment's
    /// [local nets](BpfAttach::local_nets) (`bpf_mode`).
    pub const BPF_SNAT_FOREIGN: ServiceFlags = ServiceFlags(uapi::IP_VS_SVC_F_BPF_SNAT_FOREIGN);

    pub const fn empty() -> ServiceFlags {
        ServiceFlags(0)
    }

    pub const fn contains(self, other: ServiceFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for ServiceFlags {
    type Output = ServiceFlags;
    fn bitor(self, rhs: ServiceFlags) -> ServiceFlags {
        ServiceFlags(self.0 | rhs.0)
    }
}

impl std::ops::BitOrAssign for ServiceFlags {
    fn bitor_assign(&mut self, rhs: ServiceFlags) {
        self.0 |= rhs.0;
    }
}

/// Traffic counters and rate estimates of a service or destination. The
/// `STATS` attribute carries the packet counters and rates as u32, `STATS64`
/// as u64; both decode into this type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Stats {
    pub conns: u64,
    pub inpkts: u64,
    pub outpkts: u64,
    pub inbytes: u64,
    pub outbytes: u64,
    pub cps: u64,
    pub inpps: u64,
    pub outpps: u64,
    pub inbps: u64,
    pub outbps: u64,
}

/// A virtual service. Build one with [`Service::new`]; `stats` and
/// `stats64` are filled in by dumps and ignored when writing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub key: ServiceKey,
    /// Scheduler name (`rr`, `wrr`, `lc`, `sh`, `mh`, …), at most 15 bytes.
    pub scheduler: String,
    /// Persistence engine name (`sip`), at most 15 bytes.
    pub pe_name: Option<String>,
    pub flags: ServiceFlags,
    /// Persistence timeout in seconds (with [`ServiceFlags::PERSISTENT`]).
    pub timeout: u32,
    /// Persistence granularity as a prefix length: 0..=32 for IPv4 (sent as
    /// a mask), 1..=128 for IPv6.
    pub netmask: u32,
    /// Counters, boxed: dumps fill them, configuration never does, and a
    /// [`Stats`] inline would more than double the size of every copy of
    /// the configuration a proxy keeps.
    pub stats: Option<Box<Stats>>,
    pub stats64: Option<Box<Stats>>,
}

impl Service {
    /// A service with `scheduler`, no persistence and a full netmask, as
    /// `ipvsadm -A` creates it.
    pub fn new(key: ServiceKey, scheduler: &str) -> Service {
        Service {
            key,
            scheduler: scheduler.to_string(),
            pe_name: None,
            flags: ServiceFlags::empty(),
            timeout: 0,
            netmask: match key.family() {
                Family::Inet => 32,
                Family::Inet6 => 128,
            },
            stats: None,
            stats64: None,
        }
    }

    /// Client-IP persistence for `timeout` seconds (`ipvsadm -p`).
    pub fn persistent(mut self, timeout: u32) -> Service {
        self.flags |= ServiceFlags::PERSISTENT;
        self.timeout = timeout;
        self
    }

    /// The configuration only: the same service without counters.
    pub fn config(&self) -> Service {
        Service {
            stats: None,
            stats64: None,
            ..self.clone()
        }
    }
}

/// How IPVS forwards to a destination (`IP_VS_CONN_F_FWD_MASK` bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ForwardMethod {
    /// NAT (`-m`).
    Masq,
    /// The director itself; IPVS picks it for local addresses.
    Local,
    /// IP-in-IP, GUE or GRE (`-i`).
    Tunnel,
    /// Direct routing (`-g`).
    Route,
}

impl ForwardMethod {
    pub fn raw(self) -> u32 {
        match self {
            ForwardMethod::Masq => uapi::IP_VS_CONN_F_MASQ,
            ForwardMethod::Local => uapi::IP_VS_CONN_F_LOCALNODE,
            ForwardMethod::Tunnel => uapi::IP_VS_CONN_F_TUNNEL,
            ForwardMethod::Route => uapi::IP_VS_CONN_F_DROUTE,
        }
    }

    pub fn from_raw(v: u32) -> Option<ForwardMethod> {
        match v & uapi::IP_VS_CONN_F_FWD_MASK {
            uapi::IP_VS_CONN_F_MASQ => Some(ForwardMethod::Masq),
            uapi::IP_VS_CONN_F_LOCALNODE => Some(ForwardMethod::Local),
            uapi::IP_VS_CONN_F_TUNNEL => Some(ForwardMethod::Tunnel),
            uapi::IP_VS_CONN_F_DROUTE => Some(ForwardMethod::Route),
            _ => None,
        }
    }
}

/// Encapsulation of a tunnelling destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TunnelType {
    Ipip,
    Gue,
    Gre,
}

impl TunnelType {
    pub fn raw(self) -> u8 {
        match self {
            TunnelType::Ipip => uapi::IP_VS_CONN_F_TUNNEL_TYPE_IPIP,
            TunnelType::Gue => uapi::IP_VS_CONN_F_TUNNEL_TYPE_GUE,
            TunnelType::Gre => uapi::IP_VS_CONN_F_TUNNEL_TYPE_GRE,
        }
    }

    pub fn from_raw(v: u8) -> Option<TunnelType> {
        match v {
            uapi::IP_VS_CONN_F_TUNNEL_TYPE_IPIP => Some(TunnelType::Ipip),
            uapi::IP_VS_CONN_F_TUNNEL_TYPE_GUE => Some(TunnelType::Gue),
            uapi::IP_VS_CONN_F_TUNNEL_TYPE_GRE => Some(TunnelType::Gre),
            _ => None,
        }
    }
}

/// Tunnel settings of a destination; IPVS uses them with
/// [`ForwardMethod::Tunnel`] only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tunnel {
    pub kind: TunnelType,
    /// GUE destination port.
    pub port: u16,
    /// `IP_VS_TUNNEL_ENCAP_FLAG_*`.
    pub flags: u16,
}

impl Default for Tunnel {
    fn default() -> Tunnel {
        Tunnel {
            kind: TunnelType::Ipip,
            port: 0,
            flags: uapi::IP_VS_TUNNEL_ENCAP_FLAG_NOCSUM,
        }
    }
}

/// What a dump reports of a destination besides its configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DestCounters {
    pub active_conns: u32,
    pub inactive_conns: u32,
    pub persistent_conns: u32,
    pub stats: Option<Stats>,
    pub stats64: Option<Stats>,
}

/// A real server of a service. The counters are filled in by dumps and
/// ignored when writing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    /// Its family may differ from the service's (tunnelling only).
    pub addr: IpAddr,
    pub port: u16,
    pub fwd: ForwardMethod,
    pub weight: u32,
    /// Upper and lower connection thresholds; 0 means none.
    pub upper_threshold: u32,
    pub lower_threshold: u32,
    pub tunnel: Tunnel,
    /// Boxed: a dump fills them, a configuration never does, and a proxy
    /// keeps hundreds of thousands of configurations (48 bytes each this
    /// way, 72 with the connection counts inline).
    pub counters: Option<Box<DestCounters>>,
}

impl Destination {
    /// A NAT destination of weight 1, as `ipvsadm -a -m` creates it.
    pub fn new(addr: IpAddr, port: u16) -> Destination {
        Destination {
            addr,
            port,
            fwd: ForwardMethod::Masq,
            weight: 1,
            upper_threshold: 0,
            lower_threshold: 0,
            tunnel: Tunnel::default(),
            counters: None,
        }
    }

    pub fn weight(mut self, weight: u32) -> Destination {
        self.weight = weight;
        self
    }

    pub fn forward(mut self, fwd: ForwardMethod) -> Destination {
        self.fwd = fwd;
        self
    }

    /// The configuration only: the same destination without counters.
    pub fn config(&self) -> Destination {
        Destination {
            counters: None,
            ..self.clone()
        }
    }

    /// Active connections (0 when the dump had no counters).
    pub fn active_conns(&self) -> u32 {
        self.counters.as_ref().map_or(0, |c| c.active_conns)
    }

    /// Inactive connections, as [`Destination::active_conns`].
    pub fn inactive_conns(&self) -> u32 {
        self.counters.as_ref().map_or(0, |c| c.inactive_conns)
    }

    /// Persistence templates, as [`Destination::active_conns`].
    pub fn persistent_conns(&self) -> u32 {
        self.counters.as_ref().map_or(0, |c| c.persistent_conns)
    }

    /// The counters, created empty if the destination had none.
    pub fn counters_mut(&mut self) -> &mut DestCounters {
        self.counters.get_or_insert_with(Box::default)
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        SockAddr(self.addr, self.port).fmt(f)
    }
}

/// Connection timeouts in seconds (`ipvsadm --set`). In a request, 0 leaves
/// a value unchanged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Timeouts {
    pub tcp: u32,
    pub tcp_fin: u32,
    pub udp: u32,
}

/// What `IPVS_CMD_GET_INFO` reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Info {
    /// `IP_VS_VERSION_CODE`, e.g. 0x010201 for 1.2.1.
    pub version: u32,
    /// Buckets of the connection hash table.
    pub conn_tab_size: u32,
}

impl Info {
    /// `major.minor.patch`, as `ipvsadm` prints it.
    pub fn version_string(&self) -> String {
        format!(
            "{}.{}.{}",
            (self.version >> 16) & 0xff,
            (self.version >> 8) & 0xff,
            self.version & 0xff
        )
    }
}

/// Role of a connection-synchronisation daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DaemonState {
    Master,
    Backup,
}

impl DaemonState {
    pub fn raw(self) -> u32 {
        match self {
            DaemonState::Master => uapi::IP_VS_STATE_MASTER,
            DaemonState::Backup => uapi::IP_VS_STATE_BACKUP,
        }
    }

    pub fn from_raw(v: u32) -> Option<DaemonState> {
        match v {
            uapi::IP_VS_STATE_MASTER => Some(DaemonState::Master),
            uapi::IP_VS_STATE_BACKUP => Some(DaemonState::Backup),
            _ => None,
        }
    }
}

/// A connection-synchronisation daemon (`ipvsadm --start-daemon`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Daemon {
    pub state: DaemonState,
    /// Interface the sync messages use, at most 15 bytes.
    pub mcast_ifn: String,
    pub sync_id: u32,
    /// Largest sync message payload; the kernel picks one when `None`.
    pub sync_maxlen: Option<u16>,
    pub mcast_group: Option<IpAddr>,
    pub mcast_port: Option<u16>,
    pub mcast_ttl: Option<u8>,
}

impl Daemon {
    pub fn new(state: DaemonState, mcast_ifn: &str, sync_id: u32) -> Daemon {
        Daemon {
            state,
            mcast_ifn: mcast_ifn.to_string(),
            sync_id,
            sync_maxlen: None,
            mcast_group: None,
            mcast_port: None,
            mcast_ttl: None,
        }
    }
}

/// SNAT settings handed to IPVS with the session map: the addresses
/// written as sources and the port range they use (host order, inclusive).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Snat {
    pub addr4: Option<Ipv4Addr>,
    pub addr6: Option<Ipv6Addr>,
    pub port_min: u16,
    pub port_max: u16,
}

/// A prefix whose clients need no SNAT from services flagged
/// [`ServiceFlags::BPF_SNAT_FOREIGN`] (a cluster's pod network). The
/// kernel refuses an address with host bits set, or a prefix longer than
/// the address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LocalNet {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

impl fmt::Display for LocalNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// `IPVS_CMD_NEW_BPF`: attach a session map, by file descriptor, with
/// optional SNAT. The descriptor must stay open until the request returns.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BpfAttach {
    pub map_fd: u32,
    pub snat: Option<Snat>,
    /// At most [`uapi::IP_VS_BPF_LOCAL_NETS_MAX`]. Without a net of a
    /// client's family no client of that family is foreign.
    pub local_nets: Vec<LocalNet>,
}

/// Counters of the session map attachment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BpfStats {
    /// Connections mirrored now.
    pub sessions: u64,
    pub inserted: u64,
    pub deleted: u64,
    /// Map full or busy: the connection was not mirrored.
    pub insert_fail: u64,
    /// The key was already taken by a live session.
    pub conflict: u64,
    /// No free SNAT port: the connection was dropped.
    pub snat_exhausted: u64,
    /// Post-DNAT twins that IPVS translated itself.
    pub twins: u64,
    /// SNAT ports taken over from sessions that were over (TCP TIME_WAIT
    /// or CLOSE, SCTP CLOSED, idle UDP), whose real server takes the new
    /// connection.
    pub snat_reused: u64,
    /// ... as a last resort, where the real server's TIME_WAIT socket
    /// may refuse the first SYN (the client then retransmits it).
    pub snat_reused_unsafe: u64,
    /// Connections that needed SNAT while no map was attached (or the
    /// attachment was going away): refused. A total for the network
    /// namespace, counted before this attachment too.
    pub snat_unmapped: u64,
    /// Entries IPVS went to delete and found gone, or holding another
    /// value: removed or replaced from userspace, maybe taken by a later
    /// session since. Left alone. Nonzero means something other than
    /// IPVS writes the map.
    pub delete_miss: u64,
}

/// What `IPVS_CMD_GET_BPF` reports about an attached session map.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BpfStatus {
    /// Kernel id of the attached map (`bpftool map show id N`).
    pub map_id: u32,
    pub snat: Option<Snat>,
    /// As attached, in the order given.
    pub local_nets: Vec<LocalNet>,
    pub stats: BpfStats,
}
