//! Shared by the datapath tests: packets built from scratch with etherparse
//! (checksums computed by etherparse, never by the code under test), the
//! sessions IPVS would write, and a BPF_PROG_TEST_RUN runner that checks
//! counters.
#![allow(dead_code)]

use std::collections::HashMap;
use std::mem::MaybeUninit;
use std::net::{IpAddr, SocketAddr};

use etherparse::{
    IcmpEchoHeader, Icmpv4Header, Icmpv4Type, Icmpv6Header, Icmpv6Type, IpFragOffset, IpNumber,
    Ipv4Header, Ipv4Options, Ipv6FlowLabel, Ipv6Header, TcpHeader, UdpHeader,
};
use ipvs_netlink::uapi::{IpVsBpfKey, IpVsBpfValue};
use ipvsbpf_proxy::backends::datapath::{
    session_key, session_value, Counter, Datapath, Direction, Options, Protocol, Reason,
};
use libbpf_rs::{OpenObject, ProgramInput};

/// TC_ACT_UNSPEC as test_run reports it: "next filter, else pass".
pub const PASS: u32 = u32::MAX;
/// TC_ACT_SHOT
pub const DROP: u32 = 2;

pub const MAC_NODE: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const MAC_PEER: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

pub fn sa(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

/// Transport of a test packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    Tcp,
    Udp,
    /// UDP over IPv4 without a checksum (0)
    UdpNoCsum,
    Sctp,
}

impl L4 {
    pub fn proto(self) -> Protocol {
        match self {
            L4::Tcp => Protocol::Tcp,
            L4::Udp | L4::UdpNoCsum => Protocol::Udp,
            L4::Sctp => Protocol::Sctp,
        }
    }

    fn number(self) -> IpNumber {
        match self {
            L4::Tcp => IpNumber::TCP,
            L4::Udp | L4::UdpNoCsum => IpNumber::UDP,
            L4::Sctp => IpNumber::SCTP,
        }
    }
}

/// One direction of a flow as it is on the wire at the hook.
#[derive(Clone, Copy, Debug)]
pub struct Flow {
    pub l4: L4,
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

impl Flow {
    pub fn new(l4: L4, src: &str, dst: &str) -> Flow {
        Flow {
            l4,
            src: sa(src),
            dst: sa(dst),
        }
    }

    pub fn with_src(self, src: SocketAddr) -> Flow {
        Flow { src, ..self }
    }

    pub fn with_dst(self, dst: SocketAddr) -> Flow {
        Flow { dst, ..self }
    }

    pub fn is_v6(&self) -> bool {
        self.src.is_ipv6()
    }
}

fn v4(a: SocketAddr) -> [u8; 4] {
    match a.ip() {
        IpAddr::V4(a) => a.octets(),
        IpAddr::V6(_) => panic!("{a} is not IPv4"),
    }
}

fn v6(a: SocketAddr) -> [u8; 16] {
    match a.ip() {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(_) => panic!("{a} is not IPv6"),
    }
}

/// CRC32c (Castagnoli), bitwise: the test's own, for SCTP packets.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

pub fn ipv4_header(proto: IpNumber, src: [u8; 4], dst: [u8; 4], payload_len: usize) -> Ipv4Header {
    let mut ip = Ipv4Header::new(payload_len as u16, 64, proto, src, dst).expect("ipv4 header");
    ip.identification = 0x1234;
    ip.header_checksum = ip.calc_header_checksum();
    ip
}

pub fn ipv6_header(next: IpNumber, src: [u8; 16], dst: [u8; 16], payload_len: usize) -> Ipv6Header {
    Ipv6Header {
        traffic_class: 0,
        flow_label: Ipv6FlowLabel::ZERO,
        payload_length: payload_len as u16,
        next_header: next,
        hop_limit: 64,
        source: src,
        destination: dst,
    }
}

/// The transport segment of `flow` (header and payload), checksummed for
/// its IP header.
pub fn l4_segment(flow: &Flow, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match flow.l4 {
        L4::Tcp => {
            let mut tcp = TcpHeader::new(flow.src.port(), flow.dst.port(), 0x0102_0304, 64240);
            tcp.ack = true;
            tcp.psh = true;
            tcp.acknowledgment_number = 0x0a0b_0c0d;
            tcp.checksum = if flow.is_v6() {
                let ip = ipv6_header(IpNumber::TCP, v6(flow.src), v6(flow.dst), 0);
                tcp.calc_checksum_ipv6(&ip, payload).expect("tcp csum")
            } else {
                let ip = ipv4_header(IpNumber::TCP, v4(flow.src), v4(flow.dst), 0);
                tcp.calc_checksum_ipv4(&ip, payload).expect("tcp csum")
            };
            out.extend_from_slice(&tcp.to_bytes());
        }
        L4::Udp | L4::UdpNoCsum => {
            let (s, d) = (flow.src.port(), flow.dst.port());
            let udp = if flow.l4 == L4::UdpNoCsum {
                let mut u = UdpHeader::without_ipv4_checksum(s, d, payload.len()).expect("udp");
                u.checksum = 0;
                u
            } else if flow.is_v6() {
                let ip = ipv6_header(IpNumber::UDP, v6(flow.src), v6(flow.dst), 0);
                UdpHeader::with_ipv6_checksum(s, d, &ip, payload).expect("udp")
            } else {
                let ip = ipv4_header(IpNumber::UDP, v4(flow.src), v4(flow.dst), 0);
                UdpHeader::with_ipv4_checksum(s, d, &ip, payload).expect("udp")
            };
            out.extend_from_slice(&udp.to_bytes());
        }
        L4::Sctp => {
            out.extend_from_slice(&flow.src.port().to_be_bytes());
            out.extend_from_slice(&flow.dst.port().to_be_bytes());
            out.extend_from_slice(&0xdead_beefu32.to_be_bytes()); // verification tag
            out.extend_from_slice(&[0; 4]); // CRC32c, below
        }
    }
    out.extend_from_slice(payload);
    if flow.l4 == L4::Sctp {
        let crc = crc32c(&out);
        out[8..12].copy_from_slice(&crc.to_le_bytes());
    }
    out
}

/// IP header(s) followed by `body`, for a packet of `proto` from `src` to `dst`.
pub fn ip_packet(proto: IpNumber, src: SocketAddr, dst: SocketAddr, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    if src.is_ipv6() {
        out.extend_from_slice(&ipv6_header(proto, v6(src), v6(dst), body.len()).to_bytes());
    } else {
        ipv4_header(proto, v4(src), v4(dst), body.len())
            .write(&mut out)
            .expect("ipv4");
    }
    out.extend_from_slice(body);
    out
}

/// The IP packet of `flow` with `payload`.
pub fn packet(flow: &Flow, payload: &[u8]) -> Vec<u8> {
    ip_packet(
        flow.l4.number(),
        flow.src,
        flow.dst,
        &l4_segment(flow, payload),
    )
}

/// An Ethernet frame around an IP packet.
pub fn eth(ip: &[u8]) -> Vec<u8> {
    let ethertype: u16 = if ip.first().map(|b| b >> 4) == Some(6) {
        0x86dd
    } else {
        0x0800
    };
    let mut f = Vec::with_capacity(ip.len() + 14);
    f.extend_from_slice(&MAC_PEER);
    f.extend_from_slice(&MAC_NODE);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(ip);
    f
}

pub fn frame(flow: &Flow, payload: &[u8]) -> Vec<u8> {
    eth(&packet(flow, payload))
}

/// An ICMP (IPv4) or ICMPv6 error from `src` to `dst` quoting `quote`.
pub fn icmp_error(src: IpAddr, dst: IpAddr, type_u8: u8, code_u8: u8, quote: &[u8]) -> Vec<u8> {
    let bytes5to8 = [0, 0, 0x05, 0xdc]; // MTU 1500 for "fragmentation needed"
    let mut body = Vec::new();
    let (s, d) = (SocketAddr::new(src, 0), SocketAddr::new(dst, 0));
    if src.is_ipv6() {
        let t = Icmpv6Type::Unknown {
            type_u8,
            code_u8,
            bytes5to8,
        };
        let h = Icmpv6Header::with_checksum(t, v6(s), v6(d), quote).expect("icmpv6");
        body.extend_from_slice(&h.to_bytes());
        body.extend_from_slice(quote);
        eth(&ip_packet(IpNumber::IPV6_ICMP, s, d, &body))
    } else {
        let t = Icmpv4Type::Unknown {
            type_u8,
            code_u8,
            bytes5to8,
        };
        let h = Icmpv4Header::with_checksum(t, quote);
        body.extend_from_slice(&h.to_bytes());
        body.extend_from_slice(quote);
        eth(&ip_packet(IpNumber::ICMP, s, d, &body))
    }
}

/// An ICMP echo request (not an error).
pub fn icmp_echo(src: IpAddr, dst: IpAddr) -> Vec<u8> {
    let (s, d) = (SocketAddr::new(src, 0), SocketAddr::new(dst, 0));
    let echo = IcmpEchoHeader { id: 7, seq: 1 };
    let payload = b"ping";
    let mut body = Vec::new();
    if src.is_ipv6() {
        let h = Icmpv6Header::with_checksum(Icmpv6Type::EchoRequest(echo), v6(s), v6(d), payload)
            .expect("icmpv6");
        body.extend_from_slice(&h.to_bytes());
        body.extend_from_slice(payload);
        eth(&ip_packet(IpNumber::IPV6_ICMP, s, d, &body))
    } else {
        let h = Icmpv4Header::with_checksum(Icmpv4Type::EchoRequest(echo), payload);
        body.extend_from_slice(&h.to_bytes());
        body.extend_from_slice(payload);
        eth(&ip_packet(IpNumber::ICMP, s, d, &body))
    }
}

/// An IPv4 packet of `flow` whose header carries `options` (a multiple of
/// four bytes).
pub fn frame_v4_options(flow: &Flow, payload: &[u8], options: &[u8]) -> Vec<u8> {
    let seg = l4_segment(flow, payload);
    let mut ip = ipv4_header(flow.l4.number(), v4(flow.src), v4(flow.dst), seg.len());
    ip.options = Ipv4Options::try_from(options).expect("options");
    ip.total_len = (ip.header_len() + seg.len()) as u16;
    let mut out = Vec::new();
    ip.write(&mut out).expect("ipv4");
    out.extend_from_slice(&seg);
    eth(&out)
}

/// An IPv6 packet of `flow` behind `n` 8-byte destination-options headers.
pub fn frame_v6_exthdrs(flow: &Flow, payload: &[u8], n: usize) -> Vec<u8> {
    let seg = l4_segment(flow, payload);
    let first = if n == 0 {
        flow.l4.number()
    } else {
        IpNumber::IPV6_DESTINATION_OPTIONS
    };
    let mut body = Vec::new();
    for i in 0..n {
        let next = if i + 1 == n {
            flow.l4.number().0
        } else {
            IpNumber::IPV6_DESTINATION_OPTIONS.0
        };
        // next header, length 0 (8 bytes), PadN of 4 bytes of padding
        body.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
    }
    body.extend_from_slice(&seg);
    let mut out = ipv6_header(first, v6(flow.src), v6(flow.dst), body.len())
        .to_bytes()
        .to_vec();
    out.extend_from_slice(&body);
    eth(&out)
}

/// `flow` with `payload` cut into fragments carrying `chunk` bytes (a
/// multiple of 8) of the transport segment each, with fragment id `id`.
pub fn fragments(flow: &Flow, payload: &[u8], chunk: usize, id: u32) -> Vec<Vec<u8>> {
    fragments_after(flow, payload, chunk, id, false)
}

/// As [`fragments`]; with `dstopts` (IPv6), the fragmentable part starts
/// with an 8-byte destination-options header before the transport header.
pub fn fragments_after(
    flow: &Flow,
    payload: &[u8],
    chunk: usize,
    id: u32,
    dstopts: bool,
) -> Vec<Vec<u8>> {
    assert_eq!(chunk % 8, 0);
    let mut seg = l4_segment(flow, payload);
    let mut first_next = flow.l4.number().0;
    if dstopts {
        let mut opts = vec![first_next, 0, 1, 4, 0, 0, 0, 0];
        opts.extend_from_slice(&seg);
        seg = opts;
        first_next = IpNumber::IPV6_DESTINATION_OPTIONS.0;
    }
    let pieces: Vec<&[u8]> = seg.chunks(chunk).collect();
    let last = pieces.len() - 1;
    pieces
        .iter()
        .enumerate()
        .map(|(i, piece)| {
            let offset = (i * chunk / 8) as u16;
            let more = i < last;
            let mut out = Vec::new();
            if flow.is_v6() {
                let ip = ipv6_header(
                    IpNumber::IPV6_FRAGMENTATION_HEADER,
                    v6(flow.src),
                    v6(flow.dst),
                    8 + piece.len(),
                );
                out.extend_from_slice(&ip.to_bytes());
                out.push(first_next);
                out.push(0);
                out.extend_from_slice(&((offset << 3) | u16::from(more)).to_be_bytes());
                out.extend_from_slice(&id.to_be_bytes());
            } else {
                let mut ip = ipv4_header(flow.l4.number(), v4(flow.src), v4(flow.dst), piece.len());
                ip.identification = id as u16;
                ip.more_fragments = more;
                ip.fragment_offset = IpFragOffset::try_new(offset).expect("offset");
                ip.write(&mut out).expect("ipv4");
            }
            out.extend_from_slice(piece);
            eth(&out)
        })
        .collect()
}

/// The two entries IPVS writes for a NAT connection `client -> real` whose
/// requests leave with source `snat` (`None`: no SNAT, flag clear).
pub fn ipvs_entries(
    l4: L4,
    client: SocketAddr,
    real: SocketAddr,
    snat: Option<SocketAddr>,
) -> Vec<(IpVsBpfKey, IpVsBpfValue)> {
    let p = l4.proto();
    let seen = snat.unwrap_or(client);
    vec![
        (
            session_key(Direction::Orig, p, client, real).expect("key"),
            session_value(seen, snat.is_some()),
        ),
        (
            session_key(Direction::Reply, p, real, seen).expect("key"),
            session_value(client, snat.is_some()),
        ),
    ]
}

/// Small maps: what the tests need.
pub fn small_options() -> Options {
    Options {
        session_entries: 1024,
        frag_entries: 64,
        ..Options::default()
    }
}

pub fn load(storage: &mut MaybeUninit<OpenObject>) -> Datapath<'_> {
    load_with(storage, small_options())
}

pub fn load_with(storage: &mut MaybeUninit<OpenObject>, opts: Options) -> Datapath<'_> {
    Datapath::load(storage, &opts).expect("load snat.bpf.o (needs root and BPF)")
}

/// All counters, keyed by (direction, reason).
pub fn counters(dp: &Datapath<'_>) -> HashMap<(Direction, Reason), Counter> {
    dp.counters()
        .expect("counters")
        .into_iter()
        .map(|(d, r, c)| ((d, r), c))
        .collect()
}

/// BPF_PROG_TEST_RUN flag: the skb enters as CHECKSUM_COMPLETE with
/// skb->csum over the packet, and the kernel fails the run (EBADMSG) when
/// skb->csum no longer matches the packet after the program.
pub const CHECKSUM_COMPLETE: u32 = 1 << 2;

/// How the skb's checksum state enters a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Csum {
    /// CHECKSUM_NONE
    None,
    /// CHECKSUM_COMPLETE, checked by the kernel after the run
    Complete,
}

impl Csum {
    pub const ALL: [Csum; 2] = [Csum::None, Csum::Complete];

    fn flags(self) -> u32 {
        match self {
            Csum::None => 0,
            Csum::Complete => CHECKSUM_COMPLETE,
        }
    }
}

/// Counters that moved between two snapshots: (direction, reason,
/// packets, bytes), in slot order.
type Moved = Vec<(Direction, Reason, u64, u64)>;

/// One BPF_PROG_TEST_RUN of the program of `dir` on `frame`, entering with
/// the checksum state `csum`: verdict, packet out, and the counters that
/// moved. Err when the kernel refused the run (bad frame, or EBADMSG:
/// skb->csum stale under CHECKSUM_COMPLETE).
fn observe(
    dp: &Datapath<'_>,
    dir: Direction,
    frame: &[u8],
    csum: Csum,
) -> Result<(u32, Vec<u8>, Moved), libbpf_rs::Error> {
    let mut out = vec![0u8; frame.len() + 256];
    let before = counters(dp);
    let input = ProgramInput {
        data_in: Some(frame),
        data_out: Some(&mut out),
        flags: csum.flags(),
        ..Default::default()
    };
    let res = dp.program(dir).test_run(input)?;
    let verdict = res.return_value;
    let data = res.data.map(|d| d.to_vec()).unwrap_or_default();
    let after = counters(dp);
    let mut moved: Moved = after
        .iter()
        .filter_map(|(&(d, r), c)| {
            let b = before.get(&(d, r)).copied().unwrap_or_default();
            (*c != b).then(|| (d, r, c.packets - b.packets, c.bytes - b.bytes))
        })
        .collect();
    moved.sort_by_key(|m| (m.0 as u8, m.1 as u32));
    Ok((verdict, data, moved))
}

/// Runs the program of `dir` once on `frame`: verdict and packet out.
pub fn run(dp: &Datapath<'_>, dir: Direction, frame: &[u8]) -> (u32, Vec<u8>) {
    let (verdict, out, _) =
        observe(dp, dir, frame, Csum::None).unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN: {e}"));
    (verdict, out)
}

/// Runs once and checks that exactly one counter, (dir, reason), moved by
/// one packet of the frame's length.
pub fn run_counted(
    dp: &Datapath<'_>,
    dir: Direction,
    frame: &[u8],
    reason: Reason,
    what: &str,
) -> (u32, Vec<u8>) {
    run_counted_csum(dp, dir, frame, reason, what, Csum::None)
}

/// As [`run_counted`], entering with the checksum state `csum`.
pub fn run_counted_csum(
    dp: &Datapath<'_>,
    dir: Direction,
    frame: &[u8],
    reason: Reason,
    what: &str,
    csum: Csum,
) -> (u32, Vec<u8>) {
    let (verdict, out, moved) = observe(dp, dir, frame, csum).unwrap_or_else(|e| {
        panic!("{what}: BPF_PROG_TEST_RUN ({csum:?}; EBADMSG: skb->csum stale): {e}")
    });
    assert_eq!(
        moved,
        vec![(dir, reason, 1, frame.len() as u64)],
        "{what}: counters"
    );
    (verdict, out)
}

/// Installs sessions, removing whatever was there.
pub fn set_sessions(dp: &Datapath<'_>, sessions: &[(IpVsBpfKey, IpVsBpfValue)]) {
    dp.clear_sessions().expect("clear sessions");
    for (k, v) in sessions {
        dp.put_session(k, v).expect("put session");
    }
}

/// Runs once on an arbitrary frame: the kernel's answer (it refuses some
/// frames before the program runs) and, when it ran, the verdict, the
/// packet out and the one reason counted.
pub fn try_run(
    dp: &Datapath<'_>,
    dir: Direction,
    frame: &[u8],
    csum: Csum,
) -> Result<(u32, Vec<u8>, Reason), String> {
    let (verdict, out, moved) = observe(dp, dir, frame, csum).map_err(|e| e.to_string())?;
    match moved.as_slice() {
        [(d, r, _, _)] if *d == dir => Ok((verdict, out, *r)),
        _ => Err(format!("counters moved: {moved:?}")),
    }
}

/// The package directory: `cargo test` sets it at run time, which is this
/// checkout's even when the binary was built from another checkout into a
/// shared build directory (cargo's fingerprints do not cover the path, so
/// the path compiled in may name a checkout that is gone).
pub fn package_dir() -> std::ffi::OsString {
    std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
}
