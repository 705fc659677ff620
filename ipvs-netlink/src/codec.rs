//! Requests as bytes and replies as values.
//!
//! [`Request`] is every message the crate sends; [`Request::encode`] lays
//! it out as the kernel's `nla_policy` tables in `ip_vs_ctl.c` expect
//! (`tests/wire.rs` checks each kind byte by byte). The `decode_*`
//! functions turn the attributes of a reply into [`crate::types`] values;
//! they skip attributes they do not know and return a [`DecodeError`] that
//! names the attribute for anything malformed, never panic.

use std::io::Cursor;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use neli::{
    consts::{
        genl::{Cmd as GenlCmd, NlAttrType},
        nl::NlmF,
    },
    genl::{AttrTypeBuilder, Genlmsghdr, GenlmsghdrBuilder, Nlattr, NlattrBuilder},
    nl::{NlPayload, NlmsghdrBuilder},
    types::{Buffer, GenlBuffer},
    Size, ToBytes,
};

use crate::attr::{
    BpfAttr, BpfNetAttr, BpfStatsAttr, Cmd, CmdAttr, DaemonAttr, DestAttr, InfoAttr, StatsAttr,
    SvcAttr,
};
use crate::error::{DecodeError, Error, Op};
use crate::types::{
    BpfAttach, BpfStats, BpfStatus, Daemon, DaemonState, Destination, Family, ForwardMethod, Info,
    LocalNet, Protocol, Service, ServiceFlags, ServiceKey, Snat, Stats, Timeouts, TunnelType,
};
use crate::uapi;

/// One IPVS request. Commands that change state are acknowledged; `Get*`
/// and `List*` are answered with objects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// `IPVS_CMD_NEW_SERVICE` (`ipvsadm -A`).
    AddService(Service),
    /// `IPVS_CMD_SET_SERVICE` (`ipvsadm -E`).
    EditService(Service),
    /// `IPVS_CMD_DEL_SERVICE` (`ipvsadm -D`).
    DeleteService(ServiceKey),
    /// `IPVS_CMD_GET_SERVICE` for one service.
    GetService(ServiceKey),
    /// `IPVS_CMD_GET_SERVICE` as a dump.
    ListServices,
    /// `IPVS_CMD_NEW_DEST` (`ipvsadm -a`).
    AddDestination(ServiceKey, Destination),
    /// `IPVS_CMD_SET_DEST` (`ipvsadm -e`).
    EditDestination(ServiceKey, Destination),
    /// `IPVS_CMD_DEL_DEST` (`ipvsadm -d`); the destination is named by
    /// address and port.
    DeleteDestination(ServiceKey, IpAddr, u16),
    /// `IPVS_CMD_GET_DEST`, a dump of one service's destinations.
    ListDestinations(ServiceKey),
    /// `IPVS_CMD_NEW_DAEMON` (`ipvsadm --start-daemon`).
    StartDaemon(Daemon),
    /// `IPVS_CMD_DEL_DAEMON` (`ipvsadm --stop-daemon`).
    StopDaemon(DaemonState),
    /// `IPVS_CMD_GET_DAEMON`, a dump.
    ListDaemons,
    /// `IPVS_CMD_SET_CONFIG` (`ipvsadm --set`).
    SetTimeouts(Timeouts),
    /// `IPVS_CMD_GET_CONFIG`.
    GetTimeouts,
    /// `IPVS_CMD_GET_INFO`.
    GetInfo,
    /// `IPVS_CMD_ZERO`: one service's counters, or all with `None`.
    Zero(Option<ServiceKey>),
    /// `IPVS_CMD_FLUSH`: delete every service and destination.
    Flush,
    /// `IPVS_CMD_NEW_BPF`: attach the session map.
    AttachBpf(BpfAttach),
    /// `IPVS_CMD_DEL_BPF`: detach it.
    DetachBpf,
    /// `IPVS_CMD_GET_BPF`.
    GetBpf,
}

/// How the kernel answers a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// An ACK (or an error).
    Ack,
    /// One message, then the ACK.
    One,
    /// A multipart dump ending in `NLMSG_DONE`.
    Dump,
}

type Attr<T> = Nlattr<T, Buffer>;

impl Request {
    /// What the request does, for error messages.
    pub fn op(&self) -> Op {
        match self {
            Request::AddService(_) => Op::AddService,
            Request::EditService(_) => Op::EditService,
            Request::DeleteService(_) => Op::DeleteService,
            Request::GetService(_) => Op::GetService,
            Request::ListServices => Op::ListServices,
            Request::AddDestination(..) => Op::AddDestination,
            Request::EditDestination(..) => Op::EditDestination,
            Request::DeleteDestination(..) => Op::DeleteDestination,
            Request::ListDestinations(_) => Op::ListDestinations,
            Request::StartDaemon(_) => Op::StartDaemon,
            Request::StopDaemon(_) => Op::StopDaemon,
            Request::ListDaemons => Op::ListDaemons,
            Request::SetTimeouts(_) => Op::SetTimeouts,
            Request::GetTimeouts => Op::GetTimeouts,
            Request::GetInfo => Op::GetInfo,
            Request::Zero(_) => Op::Zero,
            Request::Flush => Op::Flush,
            Request::AttachBpf(_) => Op::AttachBpf,
            Request::DetachBpf => Op::DetachBpf,
            Request::GetBpf => Op::GetBpf,
        }
    }

    /// The object the request is about, for error messages.
    pub fn object(&self) -> String {
        match self {
            Request::AddService(s) | Request::EditService(s) => s.key.to_string(),
            Request::DeleteService(k)
            | Request::GetService(k)
            | Request::ListDestinations(k)
            | Request::Zero(Some(k)) => k.to_string(),
            Request::AddDestination(k, d) | Request::EditDestination(k, d) => {
                format!("{k} -> {d}")
            }
            Request::DeleteDestination(k, addr, port) => {
                format!("{k} -> {}", Destination::new(*addr, *port))
            }
            Request::StartDaemon(d) => format!("{:?} on {}", d.state, d.mcast_ifn),
            Request::StopDaemon(s) => format!("{s:?}"),
            Request::AttachBpf(a) => format!("fd {}", a.map_fd),
            _ => String::new(),
        }
    }

    pub(crate) fn cmd(&self) -> Cmd {
        match self {
            Request::AddService(_) => Cmd::NewService,
            Request::EditService(_) => Cmd::SetService,
            Request::DeleteService(_) => Cmd::DelService,
            Request::GetService(_) | Request::ListServices => Cmd::GetService,
            Request::AddDestination(..) => Cmd::NewDest,
            Request::EditDestination(..) => Cmd::SetDest,
            Request::DeleteDestination(..) => Cmd::DelDest,
            Request::ListDestinations(_) => Cmd::GetDest,
            Request::StartDaemon(_) => Cmd::NewDaemon,
            Request::StopDaemon(_) => Cmd::DelDaemon,
            Request::ListDaemons => Cmd::GetDaemon,
            Request::SetTimeouts(_) => Cmd::SetConfig,
            Request::GetTimeouts => Cmd::GetConfig,
            Request::GetInfo => Cmd::GetInfo,
            Request::Zero(_) => Cmd::Zero,
            Request::Flush => Cmd::Flush,
            Request::AttachBpf(_) => Cmd::NewBpf,
            Request::DetachBpf => Cmd::DelBpf,
            Request::GetBpf => Cmd::GetBpf,
        }
    }

    pub(crate) fn answer(&self) -> Answer {
        match self {
            Request::ListServices | Request::ListDestinations(_) | Request::ListDaemons => {
                Answer::Dump
            }
            Request::GetService(_) | Request::GetTimeouts | Request::GetInfo | Request::GetBpf => {
                Answer::One
            }
            _ => Answer::Ack,
        }
    }

    /// The service the request names, if any.
    pub fn key(&self) -> Option<ServiceKey> {
        match self {
            Request::AddService(s) | Request::EditService(s) => Some(s.key),
            Request::DeleteService(k)
            | Request::GetService(k)
            | Request::ListDestinations(k)
            | Request::Zero(Some(k))
            | Request::AddDestination(k, _)
            | Request::EditDestination(k, _)
            | Request::DeleteDestination(k, ..) => Some(*k),
            _ => None,
        }
    }

    fn invalid(&self, reason: impl Into<String>) -> Error {
        Error::InvalidRequest {
            op: self.op(),
            object: self.object(),
            reason: reason.into(),
        }
    }

    /// The first-level attributes.
    pub(crate) fn attrs(&self) -> Result<GenlBuffer<CmdAttr, Buffer>, Error> {
        let mut out = GenlBuffer::new();
        let ser = |e: String| self.invalid(e);
        if let Some(ServiceKey::Fwmark { mark: 0, .. }) = self.key() {
            // The kernel would take a FWMARK of 0 for "no mark" and address
            // TCP on the any-address, port 0 instead.
            return Err(ser("firewall mark 0 names no service".into()));
        }
        match self {
            Request::AddService(s) | Request::EditService(s) => {
                check_name(&s.scheduler, "scheduler name", uapi::IP_VS_SCHEDNAME_MAXLEN)
                    .map_err(ser)?;
                if let Some(pe) = &s.pe_name {
                    check_name(pe, "persistence engine name", uapi::IP_VS_PENAME_MAXLEN)
                        .map_err(ser)?;
                }
                let mask = netmask_bytes(s).map_err(ser)?;
                let mut svc = service_key_attrs(&s.key);
                svc.push(attr(SvcAttr::SchedName, &cstr(&s.scheduler)));
                if let Some(pe) = &s.pe_name {
                    svc.push(attr(SvcAttr::PeName, &cstr(pe)));
                }
                let flags = uapi::IpVsFlags {
                    flags: s.flags.0,
                    mask: u32::MAX,
                };
                let mut fb = flags.flags.to_ne_bytes().to_vec();
                fb.extend_from_slice(&flags.mask.to_ne_bytes());
                svc.push(attr(SvcAttr::Flags, &fb));
                svc.push(attr(SvcAttr::Timeout, &s.timeout.to_ne_bytes()));
                svc.push(attr(SvcAttr::Netmask, &mask));
                out.push(nest(CmdAttr::Service, &svc).map_err(ser)?);
            }
            Request::DeleteService(k)
            | Request::GetService(k)
            | Request::ListDestinations(k)
            | Request::Zero(Some(k)) => {
                out.push(nest(CmdAttr::Service, &service_key_attrs(k)).map_err(ser)?);
            }
            Request::AddDestination(k, d) | Request::EditDestination(k, d) => {
                out.push(nest(CmdAttr::Service, &service_key_attrs(k)).map_err(ser)?);
                let mut dest = dest_key_attrs(&d.addr, d.port);
                dest.push(attr(DestAttr::FwdMethod, &d.fwd.raw().to_ne_bytes()));
                dest.push(attr(DestAttr::Weight, &d.weight.to_ne_bytes()));
                dest.push(attr(DestAttr::UThresh, &d.upper_threshold.to_ne_bytes()));
                dest.push(attr(DestAttr::LThresh, &d.lower_threshold.to_ne_bytes()));
                dest.push(attr(DestAttr::TunType, &[d.tunnel.kind.raw()]));
                dest.push(attr(DestAttr::TunPort, &d.tunnel.port.to_be_bytes()));
                dest.push(attr(DestAttr::TunFlags, &d.tunnel.flags.to_ne_bytes()));
                out.push(nest(CmdAttr::Dest, &dest).map_err(ser)?);
            }
            Request::DeleteDestination(k, addr, port) => {
                out.push(nest(CmdAttr::Service, &service_key_attrs(k)).map_err(ser)?);
                out.push(nest(CmdAttr::Dest, &dest_key_attrs(addr, *port)).map_err(ser)?);
            }
            Request::StartDaemon(d) => {
                check_name(&d.mcast_ifn, "interface name", uapi::IP_VS_IFNAME_MAXLEN)
                    .map_err(ser)?;
                let mut a = vec![
                    attr(DaemonAttr::State, &d.state.raw().to_ne_bytes()),
                    attr(DaemonAttr::McastIfn, &cstr(&d.mcast_ifn)),
                    attr(DaemonAttr::SyncId, &d.sync_id.to_ne_bytes()),
                ];
                if let Some(v) = d.sync_maxlen {
                    a.push(attr(DaemonAttr::SyncMaxlen, &v.to_ne_bytes()));
                }
                match d.mcast_group {
                    Some(IpAddr::V4(g)) => a.push(attr(DaemonAttr::McastGroup, &g.octets())),
                    Some(IpAddr::V6(g)) => a.push(attr(DaemonAttr::McastGroup6, &g.octets())),
                    None => {}
                }
                if let Some(v) = d.mcast_port {
                    a.push(attr(DaemonAttr::McastPort, &v.to_ne_bytes()));
                }
                if let Some(v) = d.mcast_ttl {
                    a.push(attr(DaemonAttr::McastTtl, &[v]));
                }
                out.push(nest(CmdAttr::Daemon, &a).map_err(ser)?);
            }
            Request::StopDaemon(state) => {
                let a = [attr(DaemonAttr::State, &state.raw().to_ne_bytes())];
                out.push(nest(CmdAttr::Daemon, &a).map_err(ser)?);
            }
            Request::SetTimeouts(t) => {
                out.push(attr(CmdAttr::TimeoutTcp, &t.tcp.to_ne_bytes()));
                out.push(attr(CmdAttr::TimeoutTcpFin, &t.tcp_fin.to_ne_bytes()));
                out.push(attr(CmdAttr::TimeoutUdp, &t.udp.to_ne_bytes()));
            }
            Request::AttachBpf(a) => {
                let mut b = vec![attr(BpfAttr::MapFd, &a.map_fd.to_ne_bytes())];
                if let Some(s) = &a.snat {
                    if let Some(v4) = s.addr4 {
                        b.push(attr(BpfAttr::SnatAddr4, &v4.octets()));
                    }
                    if let Some(v6) = s.addr6 {
                        b.push(attr(BpfAttr::SnatAddr6, &v6.octets()));
                    }
                    b.push(attr(BpfAttr::PortMin, &s.port_min.to_ne_bytes()));
                    b.push(attr(BpfAttr::PortMax, &s.port_max.to_ne_bytes()));
                }
                for n in &a.local_nets {
                    let addr = match n.addr {
                        IpAddr::V4(v4) => attr(BpfNetAttr::Addr4, &v4.octets()),
                        IpAddr::V6(v6) => attr(BpfNetAttr::Addr6, &v6.octets()),
                    };
                    let net = [addr, attr(BpfNetAttr::PrefixLen, &[n.prefix_len])];
                    b.push(nest(BpfAttr::LocalNet, &net).map_err(ser)?);
                }
                out.push(nest(CmdAttr::Bpf, &b).map_err(ser)?);
            }
            Request::ListServices
            | Request::ListDaemons
            | Request::GetTimeouts
            | Request::GetInfo
            | Request::Zero(None)
            | Request::Flush
            | Request::DetachBpf
            | Request::GetBpf => {}
        }
        Ok(out)
    }

    /// The whole netlink message: `nlmsghdr`, `genlmsghdr`, attributes.
    pub fn encode(&self, family: u16, seq: u32, pid: u32) -> Result<Vec<u8>, Error> {
        let flags = match self.answer() {
            Answer::Dump => NlmF::REQUEST | NlmF::DUMP,
            Answer::Ack | Answer::One => NlmF::REQUEST | NlmF::ACK,
        };
        let attrs = self.attrs()?;
        genl_request(
            family,
            flags,
            seq,
            pid,
            self.cmd(),
            uapi::IPVS_GENL_VERSION,
            attrs,
        )
        .map_err(|e| self.invalid(e))
    }
}

/// One generic-netlink request as bytes: `nlmsghdr`, `genlmsghdr`,
/// attributes.
pub(crate) fn genl_request<C: GenlCmd, A: NlAttrType>(
    family: u16,
    flags: NlmF,
    seq: u32,
    pid: u32,
    cmd: C,
    version: u8,
    attrs: GenlBuffer<A, Buffer>,
) -> Result<Vec<u8>, String> {
    let genl: Genlmsghdr<C, A> = GenlmsghdrBuilder::default()
        .cmd(cmd)
        .version(version)
        .attrs(attrs)
        .build()
        .map_err(|e| e.to_string())?;
    let msg = NlmsghdrBuilder::default()
        .nl_type(family)
        .nl_flags(flags)
        .nl_seq(seq)
        .nl_pid(pid)
        .nl_payload(NlPayload::Payload(genl))
        .build()
        .map_err(|e| e.to_string())?;
    let mut buf = Cursor::new(vec![0u8; msg.padded_size()]);
    msg.to_bytes(&mut buf).map_err(|e| e.to_string())?;
    Ok(buf.into_inner())
}

fn check_name(name: &str, what: &str, maxlen: usize) -> Result<(), String> {
    if name.is_empty() || name.len() >= maxlen || name.contains('\0') {
        return Err(format!(
            "{what} {name:?} must be 1 to {} bytes without NUL",
            maxlen - 1
        ));
    }
    Ok(())
}

fn netmask_bytes(s: &Service) -> Result<[u8; 4], String> {
    match s.key.family() {
        Family::Inet if s.netmask <= 32 => {
            let mask = u32::MAX.checked_shl(32 - s.netmask).unwrap_or(0);
            Ok(mask.to_be_bytes())
        }
        Family::Inet6 if (1..=128).contains(&s.netmask) => Ok(s.netmask.to_ne_bytes()),
        f => Err(format!("netmask /{} is out of range for {f:?}", s.netmask)),
    }
}

pub(crate) fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// An address as IPVS carries it: `union nf_inet_addr`, 16 bytes, IPv4 in
/// the first four.
fn inet_addr(addr: &IpAddr) -> [u8; 16] {
    let mut b = [0u8; 16];
    match addr {
        IpAddr::V4(a) => b[..4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => b.copy_from_slice(&a.octets()),
    }
    b
}

pub(crate) fn attr<T: NlAttrType>(t: T, payload: &[u8]) -> Attr<T> {
    nlattr(t, false, payload)
}

fn nest<T: NlAttrType, U: NlAttrType>(t: T, children: &[Attr<U>]) -> Result<Attr<T>, String> {
    let mut bytes = Cursor::new(Vec::new());
    for c in children {
        c.to_bytes(&mut bytes).map_err(|e| e.to_string())?;
    }
    Ok(nlattr(t, true, bytes.get_ref()))
}

fn nlattr<T: NlAttrType>(t: T, nested: bool, payload: &[u8]) -> Attr<T> {
    // Neither builder can fail: both fields are set and a byte buffer
    // always serialises.
    let ty = AttrTypeBuilder::default()
        .nla_type(t)
        .nla_nested(nested)
        .build()
        .unwrap_or_else(|_| unreachable!("all AttrType fields are set"));
    NlattrBuilder::default()
        .nla_type(ty)
        .nla_payload(Buffer::from(payload))
        .build()
        .unwrap_or_else(|_| unreachable!("all Nlattr fields are set"))
}

fn service_key_attrs(k: &ServiceKey) -> Vec<Attr<SvcAttr>> {
    let mut v = vec![attr(SvcAttr::Af, &k.family().raw().to_ne_bytes())];
    match k {
        ServiceKey::Tuple {
            protocol,
            addr,
            port,
        } => {
            v.push(attr(SvcAttr::Protocol, &protocol.raw().to_ne_bytes()));
            v.push(attr(SvcAttr::Addr, &inet_addr(addr)));
            v.push(attr(SvcAttr::Port, &port.to_be_bytes()));
        }
        ServiceKey::Fwmark { mark, .. } => {
            v.push(attr(SvcAttr::Fwmark, &mark.to_ne_bytes()));
        }
    }
    v
}

fn dest_key_attrs(addr: &IpAddr, port: u16) -> Vec<Attr<DestAttr>> {
    vec![
        attr(DestAttr::Addr, &inet_addr(addr)),
        attr(DestAttr::Port, &port.to_be_bytes()),
        attr(DestAttr::AddrFamily, &Family::of(addr).raw().to_ne_bytes()),
    ]
}

// ---- decoding ----------------------------------------------------------

/// Attributes of one nesting level: the payload split into `(type,
/// payload)` pairs, `NLA_F_NESTED`/`NLA_F_NET_BYTEORDER` stripped, unknown
/// types kept as `UnrecognizedConst` for the caller to skip. Each length is
/// checked against what is left before the payload is taken; an error
/// names the attribute and its offset.
pub(crate) fn parse_attrs<T: NlAttrType + std::fmt::Debug>(
    bytes: &[u8],
    context: &str,
) -> Result<Vec<(T, Buffer)>, DecodeError> {
    const NLA_HDRLEN: usize = 4;
    const NLA_TYPE_MASK: u16 = !(0x8000 | 0x4000);
    let mut out = Vec::new();
    let mut off = 0;
    while off < bytes.len() {
        let rest = &bytes[off..];
        let Some(hdr) = rest.get(..NLA_HDRLEN) else {
            return Err(DecodeError::new(
                context,
                format!("{} stray bytes at offset {off}", rest.len()),
            ));
        };
        let len = usize::from(u16::from_ne_bytes([hdr[0], hdr[1]]));
        let raw = u16::from_ne_bytes([hdr[2], hdr[3]]) & NLA_TYPE_MASK;
        let ty = T::from(raw);
        if len < NLA_HDRLEN || len > rest.len() {
            return Err(DecodeError::new(
                context,
                format!(
                    "attribute {} (type {raw}) at offset {off}: length {len} with {} bytes left",
                    uapi_name(&ty),
                    rest.len()
                ),
            ));
        }
        out.push((ty, Buffer::from(&rest[NLA_HDRLEN..len])));
        off += len.next_multiple_of(4);
    }
    Ok(out)
}

/// The kernel's name of an attribute enum variant: `ConnTabSize` is
/// `CONN_TAB_SIZE`, `UThresh` `U_THRESH`; an unknown one is `unknown`.
fn uapi_name<T: std::fmt::Debug>(ty: &T) -> String {
    let name = format!("{ty:?}");
    if name.starts_with("UnrecognizedConst") {
        return "unknown".into();
    }
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if i > 0 && c.is_ascii_uppercase() {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

struct Field<'a> {
    ctx: &'a str,
    name: &'static str,
    bytes: &'a [u8],
}

impl Field<'_> {
    fn err(&self, reason: impl std::fmt::Display) -> DecodeError {
        DecodeError::new(format!("{} {}", self.ctx, self.name), reason)
    }

    fn exact<const N: usize>(&self) -> Result<[u8; N], DecodeError> {
        self.bytes
            .try_into()
            .map_err(|_| self.err(format!("{} bytes, expected {N}", self.bytes.len())))
    }

    fn u8(&self) -> Result<u8, DecodeError> {
        Ok(self.exact::<1>()?[0])
    }

    fn u16(&self) -> Result<u16, DecodeError> {
        Ok(u16::from_ne_bytes(self.exact()?))
    }

    fn be16(&self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.exact()?))
    }

    fn u32(&self) -> Result<u32, DecodeError> {
        Ok(u32::from_ne_bytes(self.exact()?))
    }

    /// A u32 counter in `STATS`, a u64 one in `STATS64` and the byte
    /// counters: take whichever width is there.
    fn counter(&self) -> Result<u64, DecodeError> {
        match self.bytes.len() {
            4 => Ok(u64::from(self.u32()?)),
            8 => Ok(u64::from_ne_bytes(self.exact()?)),
            n => Err(self.err(format!("{n} bytes, expected 4 or 8"))),
        }
    }

    fn string(&self) -> Result<String, DecodeError> {
        let end = self
            .bytes
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| self.err("string without NUL"))?;
        std::str::from_utf8(&self.bytes[..end])
            .map(str::to_string)
            .map_err(|e| self.err(e))
    }

    /// `union nf_inet_addr` in `family`: 16 bytes (4 accepted for IPv4).
    fn inet_addr(&self, family: Family) -> Result<IpAddr, DecodeError> {
        match (family, self.bytes.len()) {
            (Family::Inet, 4 | 16) => {
                let b: [u8; 4] = self.bytes[..4]
                    .try_into()
                    .map_err(|_| self.err("short address"))?;
                Ok(IpAddr::V4(Ipv4Addr::from(b)))
            }
            (Family::Inet6, 16) => Ok(IpAddr::V6(Ipv6Addr::from(self.exact::<16>()?))),
            (f, n) => Err(self.err(format!("{n} bytes for an {f:?} address"))),
        }
    }
}

fn field<'a>(ctx: &'a str, name: &'static str, bytes: &'a Buffer) -> Field<'a> {
    Field {
        ctx,
        name,
        bytes: bytes.as_ref(),
    }
}

fn missing(ctx: &str, name: &str) -> DecodeError {
    DecodeError::new(ctx, format!("{name} missing"))
}

/// `IPVS_STATS_ATTR_*` of a `STATS` or `STATS64` nest.
pub(crate) fn decode_stats(bytes: &[u8], ctx: &str) -> Result<Stats, DecodeError> {
    let mut s = Stats::default();
    for (t, p) in parse_attrs::<StatsAttr>(bytes, ctx)? {
        let slot = match t {
            StatsAttr::Conns => &mut s.conns,
            StatsAttr::Inpkts => &mut s.inpkts,
            StatsAttr::Outpkts => &mut s.outpkts,
            StatsAttr::Inbytes => &mut s.inbytes,
            StatsAttr::Outbytes => &mut s.outbytes,
            StatsAttr::Cps => &mut s.cps,
            StatsAttr::Inpps => &mut s.inpps,
            StatsAttr::Outpps => &mut s.outpps,
            StatsAttr::Inbps => &mut s.inbps,
            StatsAttr::Outbps => &mut s.outbps,
            _ => continue,
        };
        *slot = field(ctx, "counter", &p).counter()?;
    }
    Ok(s)
}

/// The attributes nested in `IPVS_CMD_ATTR_SERVICE` of a reply.
pub fn decode_service(bytes: &[u8]) -> Result<Service, DecodeError> {
    let ctx = "service";
    let (mut af, mut proto, mut addr, mut port, mut fwmark) = (None, None, None, None, None);
    let (mut sched, mut pe, mut flags, mut timeout, mut netmask) = (None, None, None, None, None);
    let (mut stats, mut stats64) = (None, None);
    for (t, p) in parse_attrs::<SvcAttr>(bytes, ctx)? {
        match t {
            SvcAttr::Af => af = Some(field(ctx, "AF", &p).u16()?),
            SvcAttr::Protocol => proto = Some(field(ctx, "PROTOCOL", &p).u16()?),
            SvcAttr::Addr => addr = Some(p),
            SvcAttr::Port => port = Some(field(ctx, "PORT", &p).be16()?),
            SvcAttr::Fwmark => fwmark = Some(field(ctx, "FWMARK", &p).u32()?),
            SvcAttr::SchedName => sched = Some(field(ctx, "SCHED_NAME", &p).string()?),
            SvcAttr::PeName => pe = Some(field(ctx, "PE_NAME", &p).string()?),
            SvcAttr::Flags => {
                let b: [u8; 8] = field(ctx, "FLAGS", &p).exact()?;
                flags = Some(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
            }
            SvcAttr::Timeout => timeout = Some(field(ctx, "TIMEOUT", &p).u32()?),
            SvcAttr::Netmask => netmask = Some(field(ctx, "NETMASK", &p).exact::<4>()?),
            SvcAttr::Stats => stats = Some(Box::new(decode_stats(p.as_ref(), "service STATS")?)),
            SvcAttr::Stats64 => {
                stats64 = Some(Box::new(decode_stats(p.as_ref(), "service STATS64")?))
            }
            SvcAttr::UnrecognizedConst(_) => {}
        }
    }
    let af = af.ok_or_else(|| missing(ctx, "AF"))?;
    let family = Family::from_raw(af)
        .ok_or_else(|| DecodeError::new(ctx, format!("unknown address family {af}")))?;
    let key = match (fwmark, proto) {
        (Some(mark), _) if mark != 0 => ServiceKey::Fwmark { family, mark },
        (_, Some(p)) => {
            let protocol = Protocol::from_raw(p);
            let a = addr.ok_or_else(|| missing(ctx, "ADDR"))?;
            ServiceKey::Tuple {
                protocol,
                addr: field(ctx, "ADDR", &a).inet_addr(family)?,
                port: port.ok_or_else(|| missing(ctx, "PORT"))?,
            }
        }
        _ => return Err(missing(ctx, "FWMARK or PROTOCOL")),
    };
    let mask = netmask.ok_or_else(|| missing(ctx, "NETMASK"))?;
    let netmask = match family {
        Family::Inet => {
            let m = u32::from_be_bytes(mask);
            if m.leading_ones() + m.trailing_zeros() != 32 && m != 0 {
                return Err(DecodeError::new(
                    ctx,
                    format!("non-contiguous netmask {}", Ipv4Addr::from(m)),
                ));
            }
            m.leading_ones()
        }
        Family::Inet6 => u32::from_ne_bytes(mask),
    };
    Ok(Service {
        key,
        scheduler: sched.ok_or_else(|| missing(ctx, "SCHED_NAME"))?,
        pe_name: pe.filter(|p| !p.is_empty()),
        flags: ServiceFlags(
            flags.ok_or_else(|| missing(ctx, "FLAGS"))? & !uapi::IP_VS_SVC_F_HASHED,
        ),
        timeout: timeout.ok_or_else(|| missing(ctx, "TIMEOUT"))?,
        netmask,
        stats,
        stats64,
    })
}

/// The attributes nested in `IPVS_CMD_ATTR_DEST` of a reply, for a
/// service of `family` (the destination's own family, when the kernel
/// sends one, wins).
pub fn decode_destination(bytes: &[u8], family: Family) -> Result<Destination, DecodeError> {
    let ctx = "destination";
    let (mut addr, mut af, mut port, mut fwd) = (None, None, None, None);
    let mut d = Destination::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
    let mut weight = None;
    for (t, p) in parse_attrs::<DestAttr>(bytes, ctx)? {
        let f = |name| field(ctx, name, &p);
        match t {
            DestAttr::Addr => addr = Some(p.clone()),
            DestAttr::AddrFamily => af = Some(f("ADDR_FAMILY").u16()?),
            DestAttr::Port => port = Some(f("PORT").be16()?),
            DestAttr::FwdMethod => {
                let v = f("FWD_METHOD").u32()?;
                fwd = Some(ForwardMethod::from_raw(v).ok_or_else(|| {
                    f("FWD_METHOD").err(format!("unknown forwarding method {v}"))
                })?);
            }
            DestAttr::Weight => weight = Some(f("WEIGHT").u32()?),
            DestAttr::UThresh => d.upper_threshold = f("U_THRESH").u32()?,
            DestAttr::LThresh => d.lower_threshold = f("L_THRESH").u32()?,
            DestAttr::ActiveConns => d.counters_mut().active_conns = f("ACTIVE_CONNS").u32()?,
            DestAttr::InactConns => d.counters_mut().inactive_conns = f("INACT_CONNS").u32()?,
            DestAttr::PersistConns => {
                d.counters_mut().persistent_conns = f("PERSIST_CONNS").u32()?
            }
            DestAttr::Stats => {
                d.counters_mut().stats = Some(decode_stats(p.as_ref(), "destination STATS")?)
            }
            DestAttr::Stats64 => {
                d.counters_mut().stats64 = Some(decode_stats(p.as_ref(), "destination STATS64")?)
            }
            DestAttr::TunType => {
                let v = f("TUN_TYPE").u8()?;
                d.tunnel.kind = TunnelType::from_raw(v)
                    .ok_or_else(|| f("TUN_TYPE").err(format!("unknown tunnel type {v}")))?;
            }
            DestAttr::TunPort => d.tunnel.port = f("TUN_PORT").be16()?,
            DestAttr::TunFlags => d.tunnel.flags = f("TUN_FLAGS").u16()?,
            DestAttr::UnrecognizedConst(_) => {}
        }
    }
    let family = match af {
        Some(af) => Family::from_raw(af)
            .ok_or_else(|| DecodeError::new(ctx, format!("unknown address family {af}")))?,
        None => family,
    };
    let a = addr.ok_or_else(|| missing(ctx, "ADDR"))?;
    d.addr = field(ctx, "ADDR", &a).inet_addr(family)?;
    d.port = port.ok_or_else(|| missing(ctx, "PORT"))?;
    d.fwd = fwd.ok_or_else(|| missing(ctx, "FWD_METHOD"))?;
    d.weight = weight.ok_or_else(|| missing(ctx, "WEIGHT"))?;
    Ok(d)
}

/// The attributes nested in `IPVS_CMD_ATTR_DAEMON` of a reply.
pub fn decode_daemon(bytes: &[u8]) -> Result<Daemon, DecodeError> {
    let ctx = "sync daemon";
    let (mut state, mut ifn, mut id) = (None, None, None);
    let mut d = Daemon::new(DaemonState::Master, "", 0);
    for (t, p) in parse_attrs::<DaemonAttr>(bytes, ctx)? {
        let f = |name| field(ctx, name, &p);
        match t {
            DaemonAttr::State => {
                let v = f("STATE").u32()?;
                state = Some(
                    DaemonState::from_raw(v)
                        .ok_or_else(|| f("STATE").err(format!("unknown state {v}")))?,
                );
            }
            DaemonAttr::McastIfn => ifn = Some(f("MCAST_IFN").string()?),
            DaemonAttr::SyncId => id = Some(f("SYNC_ID").u32()?),
            DaemonAttr::SyncMaxlen => d.sync_maxlen = Some(f("SYNC_MAXLEN").u16()?),
            DaemonAttr::McastGroup => {
                d.mcast_group = Some(IpAddr::V4(Ipv4Addr::from(f("MCAST_GROUP").exact::<4>()?)))
            }
            DaemonAttr::McastGroup6 => {
                d.mcast_group = Some(IpAddr::V6(Ipv6Addr::from(f("MCAST_GROUP6").exact::<16>()?)))
            }
            DaemonAttr::McastPort => d.mcast_port = Some(f("MCAST_PORT").u16()?),
            DaemonAttr::McastTtl => d.mcast_ttl = Some(f("MCAST_TTL").u8()?),
            DaemonAttr::UnrecognizedConst(_) => {}
        }
    }
    d.state = state.ok_or_else(|| missing(ctx, "STATE"))?;
    d.mcast_ifn = ifn.ok_or_else(|| missing(ctx, "MCAST_IFN"))?;
    d.sync_id = id.ok_or_else(|| missing(ctx, "SYNC_ID"))?;
    Ok(d)
}

/// The first-level attributes of a `GET_CONFIG` reply.
pub fn decode_timeouts(bytes: &[u8]) -> Result<Timeouts, DecodeError> {
    let ctx = "timeouts";
    let mut t = Timeouts::default();
    for (a, p) in parse_attrs::<CmdAttr>(bytes, ctx)? {
        match a {
            CmdAttr::TimeoutTcp => t.tcp = field(ctx, "TCP", &p).u32()?,
            CmdAttr::TimeoutTcpFin => t.tcp_fin = field(ctx, "TCP_FIN", &p).u32()?,
            CmdAttr::TimeoutUdp => t.udp = field(ctx, "UDP", &p).u32()?,
            _ => {}
        }
    }
    Ok(t)
}

/// The first-level attributes of a `GET_INFO` reply.
pub fn decode_info(bytes: &[u8]) -> Result<Info, DecodeError> {
    let ctx = "info";
    let (mut version, mut size) = (None, None);
    for (a, p) in parse_attrs::<InfoAttr>(bytes, ctx)? {
        match a {
            InfoAttr::Version => version = Some(field(ctx, "VERSION", &p).u32()?),
            InfoAttr::ConnTabSize => size = Some(field(ctx, "CONN_TAB_SIZE", &p).u32()?),
            InfoAttr::UnrecognizedConst(_) => {}
        }
    }
    Ok(Info {
        version: version.ok_or_else(|| missing(ctx, "VERSION"))?,
        conn_tab_size: size.ok_or_else(|| missing(ctx, "CONN_TAB_SIZE"))?,
    })
}

/// The attributes nested in `IPVS_CMD_ATTR_BPF` of a `GET_BPF` reply.
pub fn decode_bpf(bytes: &[u8]) -> Result<BpfStatus, DecodeError> {
    let ctx = "BPF attachment";
    let (mut id, mut a4, mut a6, mut min, mut max) = (None, None, None, None, None);
    let mut stats = BpfStats::default();
    let mut local_nets = Vec::new();
    for (t, p) in parse_attrs::<BpfAttr>(bytes, ctx)? {
        let f = |name| field(ctx, name, &p);
        match t {
            BpfAttr::MapId => id = Some(f("MAP_ID").u32()?),
            BpfAttr::SnatAddr4 => a4 = Some(Ipv4Addr::from(f("SNAT_ADDR4").exact::<4>()?)),
            BpfAttr::SnatAddr6 => a6 = Some(Ipv6Addr::from(f("SNAT_ADDR6").exact::<16>()?)),
            BpfAttr::PortMin => min = Some(f("PORT_MIN").u16()?),
            BpfAttr::PortMax => max = Some(f("PORT_MAX").u16()?),
            BpfAttr::Stats => stats = decode_bpf_stats(p.as_ref())?,
            BpfAttr::LocalNet => local_nets.push(decode_bpf_net(p.as_ref())?),
            _ => {}
        }
    }
    let snat = match (min, max) {
        (Some(port_min), Some(port_max)) if port_min != 0 => Some(Snat {
            addr4: a4,
            addr6: a6,
            port_min,
            port_max,
        }),
        _ => None,
    };
    Ok(BpfStatus {
        map_id: id.ok_or_else(|| missing(ctx, "MAP_ID"))?,
        snat,
        local_nets,
        stats,
    })
}

fn decode_bpf_net(bytes: &[u8]) -> Result<LocalNet, DecodeError> {
    let ctx = "BPF LOCAL_NET";
    let (mut addr, mut len) = (None, None);
    for (t, p) in parse_attrs::<BpfNetAttr>(bytes, ctx)? {
        let f = |name| field(ctx, name, &p);
        match t {
            BpfNetAttr::Addr4 => addr = Some(IpAddr::from(f("ADDR4").exact::<4>()?)),
            BpfNetAttr::Addr6 => addr = Some(IpAddr::from(f("ADDR6").exact::<16>()?)),
            BpfNetAttr::PrefixLen => len = Some(f("PREFIXLEN").u8()?),
            _ => {}
        }
    }
    Ok(LocalNet {
        addr: addr.ok_or_else(|| missing(ctx, "ADDR4 or ADDR6"))?,
        prefix_len: len.ok_or_else(|| missing(ctx, "PREFIXLEN"))?,
    })
}

fn decode_bpf_stats(bytes: &[u8]) -> Result<BpfStats, DecodeError> {
    let ctx = "BPF STATS";
    let mut s = BpfStats::default();
    for (t, p) in parse_attrs::<BpfStatsAttr>(bytes, ctx)? {
        let slot = match t {
            BpfStatsAttr::Sessions => &mut s.sessions,
            BpfStatsAttr::Inserted => &mut s.inserted,
            BpfStatsAttr::Deleted => &mut s.deleted,
            BpfStatsAttr::InsertFail => &mut s.insert_fail,
            BpfStatsAttr::Conflict => &mut s.conflict,
            BpfStatsAttr::SnatExhausted => &mut s.snat_exhausted,
            BpfStatsAttr::Twins => &mut s.twins,
            BpfStatsAttr::SnatReused => &mut s.snat_reused,
            BpfStatsAttr::SnatReusedUnsafe => &mut s.snat_reused_unsafe,
            BpfStatsAttr::SnatUnmapped => &mut s.snat_unmapped,
            BpfStatsAttr::DeleteMiss => &mut s.delete_miss,
            _ => continue,
        };
        *slot = field(ctx, "counter", &p).counter()?;
    }
    Ok(s)
}

/// The first-level attribute `want` of a reply, as bytes.
pub(crate) fn first_level(bytes: &[u8], want: CmdAttr) -> Result<Option<Buffer>, DecodeError> {
    Ok(parse_attrs::<CmdAttr>(bytes, "reply")?
        .into_iter()
        .find(|(t, _)| *t == want)
        .map(|(_, p)| p))
}
