//! Host integration test of the SNAT programs' L3 pair (`ipvsbpf_l3_egress`,
//! `ipvsbpf_l3_ingress`) on a device without a link-layer header: a TUN
//! device (ARPHRD_NONE, as WireGuard's; IPIP's ARPHRD_TUNNEL is the same to
//! the programs), in a network namespace of the test's own, no IPVS:
//!
//! ```text
//!  node netns: UDP socket 192.0.2.1:40000 / [2001:db8::1]:40000
//!              tun0 (IFF_TUN) -- routes 198.18.1.0/24, 2001:db8:1::/64
//!              [tc: the L3 pair]       |
//!                                      the test's fd: reads what tun0
//!                                      sends, writes what it receives
//! ```
//!
//! The test writes the two session entries IPVS would for a SNAT
//! connection from the socket to a server behind tun0, sends a datagram,
//! and reads it off the TUN fd: its source must be the SNAT port, its
//! checksums right (computed here, not by the code under test). It then
//! writes the server's answer into the fd, addressed to the SNAT port: the
//! socket must receive it from the server, which the kernel does only if
//! the destination was translated back and the UDP checksum verifies.
//! Then a TCP handshake the same way, the test playing the server: the SYN
//! and the last ACK leave from the SNAT port, and the SYN-ACK written back
//! completes the socket's connect() (the kernel checks its checksum).
//! The Ethernet pair on the same device must translate nothing (it reads
//! the IP header 14 bytes off): the control that shows the test can tell.
//!
//! Needs root, `ip` and /dev/net/tun; without them it fails, naming what is
//! missing.

mod common;
mod netns;

use std::fs::File;
use std::io::{Read, Write};
use std::mem::MaybeUninit;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use common::*;
use etherparse::{IpNumber, NetSlice, SlicedPacket, TcpHeader, TransportSlice};
use ipvsbpf_proxy::backends::datapath::{Direction, LinkLayer, Reason};
use ipvsbpf_proxy::backends::hostinfo;

const TUN: &str = "ipvsbpf-tun0";

/// Opens /dev/net/tun as an IFF_TUN device named [`TUN`] without packet
/// information: what is read and written are bare IP packets.
fn open_tun() -> File {
    let tun = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .unwrap_or_else(|e| panic!("/dev/net/tun: {e} (the tun driver: `modprobe tun`, as root)"));
    // struct ifreq: the name, then ifr_flags (a short) at offset 16.
    let mut ifr = [0u8; 40];
    ifr[..TUN.len()].copy_from_slice(TUN.as_bytes());
    let flags = (libc::IFF_TUN | libc::IFF_NO_PI) as i16;
    ifr[16..18].copy_from_slice(&flags.to_ne_bytes());
    // SAFETY: TUNSETIFF reads and writes a struct ifreq, which `ifr` is
    // large enough to hold; the fd is open.
    let rc = unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, ifr.as_mut_ptr()) };
    assert_eq!(rc, 0, "TUNSETIFF: {}", std::io::Error::last_os_error());
    // SAFETY: O_NONBLOCK on an fd of ours; reads below poll first.
    unsafe {
        let fl = libc::fcntl(tun.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(tun.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
    tun
}

/// A packet tun0 sent: its source, transport payload and whole bytes.
struct Sent {
    src: SocketAddr,
    payload: Vec<u8>,
    pkt: Vec<u8>,
    /// TCP: the sequence number and flags
    seq: u32,
    syn: bool,
    ack: bool,
    rst: bool,
}

/// The next UDP or TCP packet tun0 sends to `dst` (IPv6 sends router
/// solicitations and the like too), within 2 s.
fn read_to(tun: &mut File, dst: SocketAddr) -> Sent {
    read_matching(
        tun,
        dst,
        Duration::from_secs(2),
        "UDP or TCP packet",
        |_| true,
    )
}

/// The first UDP or TCP packet tun0 sends to `dst` that `want` accepts,
/// within `wait` (others are read and dropped); `what` names it when none
/// comes.
fn read_matching(
    tun: &mut File,
    dst: SocketAddr,
    wait: Duration,
    what: &str,
    want: impl Fn(&Sent) -> bool,
) -> Sent {
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        let mut pfd = libc::pollfd {
            fd: tun.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd of ours.
        unsafe { libc::poll(&mut pfd, 1, 100) };
        let n = match tun.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => panic!("reading {TUN}: {e}"),
        };
        let pkt = &buf[..n];
        let Ok(s) = SlicedPacket::from_ip(pkt) else {
            continue;
        };
        let (src_ip, dst_ip) = match &s.net {
            Some(NetSlice::Ipv4(ip)) => (
                ip.header().source_addr().into(),
                ip.header().destination_addr().into(),
            ),
            Some(NetSlice::Ipv6(ip)) => (
                ip.header().source_addr().into(),
                ip.header().destination_addr().into(),
            ),
            _ => continue,
        };
        let (sport, dport, payload, seq, flags) = match &s.transport {
            Some(TransportSlice::Udp(u)) => (
                u.source_port(),
                u.destination_port(),
                u.payload(),
                0,
                (false, false, false),
            ),
            Some(TransportSlice::Tcp(t)) => (
                t.source_port(),
                t.destination_port(),
                t.payload(),
                t.sequence_number(),
                (t.syn(), t.ack(), t.rst()),
            ),
            _ => continue,
        };
        if SocketAddr::new(dst_ip, dport) != dst {
            continue;
        }
        let sent = Sent {
            src: SocketAddr::new(src_ip, sport),
            payload: payload.to_vec(),
            pkt: pkt.to_vec(),
            seq,
            syn: flags.0,
            ack: flags.1,
            rst: flags.2,
        };
        if want(&sent) {
            return sent;
        }
    }
    panic!("{TUN} sent no {what} to {dst} in {wait:?}");
}

/// The packet's IPv4 header checksum (if any) and its UDP or TCP checksum
/// are right: rebuilt by etherparse from the packet's own fields and
/// compared.
fn assert_checksums(pkt: &[u8]) {
    let s = SlicedPacket::from_ip(pkt).expect("an IP packet");
    let (v4, v6) = match &s.net {
        Some(NetSlice::Ipv4(ip)) => {
            let h = ip.header().to_header();
            assert_eq!(
                h.header_checksum,
                h.calc_header_checksum(),
                "IPv4 header checksum"
            );
            (Some(h), None)
        }
        Some(NetSlice::Ipv6(ip)) => (None, Some(ip.header().to_header())),
        _ => panic!("no IP header"),
    };
    let (got, want) = match &s.transport {
        Some(TransportSlice::Udp(u)) => {
            let h = u.to_header();
            let want = match (&v4, &v6) {
                (Some(ip), _) => h.calc_checksum_ipv4(ip, u.payload()),
                (_, Some(ip)) => h.calc_checksum_ipv6(ip, u.payload()),
                _ => unreachable!(),
            };
            (u.checksum(), want.expect("udp checksum"))
        }
        Some(TransportSlice::Tcp(t)) => {
            let h = t.to_header();
            let want = match (&v4, &v6) {
                (Some(ip), _) => h.calc_checksum_ipv4(ip, t.payload()),
                (_, Some(ip)) => h.calc_checksum_ipv6(ip, t.payload()),
                _ => unreachable!(),
            };
            (t.checksum(), want.expect("tcp checksum"))
        }
        _ => panic!("neither UDP nor TCP"),
    };
    assert_eq!(got, want, "transport checksum of {pkt:02x?}");
}

/// A TCP handshake from a socket bound to `client` to `server` behind
/// tun0, the test playing the server: the SYN must leave from `snat` with
/// a right checksum, and the SYN-ACK the test writes back to `snat` must
/// complete the socket's connect(), which the kernel allows only if the
/// destination was translated back and the TCP checksum verifies; the
/// handshake's last ACK leaves from `snat` too.
/// Returns the connected socket: closing it would send a FIN (counted).
fn tcp_handshake(
    tun: &mut File,
    client: SocketAddr,
    server: SocketAddr,
    snat: SocketAddr,
) -> socket2::Socket {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::for_address(client), Type::STREAM, None).expect("socket");
    sock.bind(&client.into()).expect("bind the client");
    sock.set_nonblocking(true).expect("nonblocking");
    match sock.connect(&server.into()) {
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        other => panic!("connect to {server}: {other:?}"),
    }
    let syn = read_to(tun, server);
    assert!(syn.syn, "the first segment is the SYN");
    assert_eq!(syn.src, snat, "the SYN leaves {TUN} from the SNAT port");
    assert_checksums(&syn.pkt);

    let mut tcp = TcpHeader::new(server.port(), snat.port(), 0x5000_0000, 64240);
    tcp.syn = true;
    tcp.ack = true;
    tcp.acknowledgment_number = syn.seq.wrapping_add(1);
    tcp.checksum = match (server.ip(), snat.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            tcp.calc_checksum_ipv4(&ipv4_header(IpNumber::TCP, s.octets(), d.octets(), 0), &[])
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            tcp.calc_checksum_ipv6(&ipv6_header(IpNumber::TCP, s.octets(), d.octets(), 0), &[])
        }
        _ => panic!("{server} and {snat} of two families"),
    }
    .expect("tcp checksum");
    let body = tcp.to_bytes();
    tun.write_all(&ip_packet(IpNumber::TCP, server, snat, &body))
        .expect("write the SYN-ACK into tun0");
    // The SYN may have gone out again meanwhile (1 s is not long under
    // TCG): what answers the SYN-ACK is the first segment without SYN.
    let what = format!("segment but SYNs (the SYN-ACK to {snat} was refused?)");
    let ack = read_matching(tun, server, Duration::from_secs(3), &what, |s| !s.syn);
    assert!(
        ack.ack && !ack.rst,
        "not the handshake's ACK (ack {}, rst {}): the SYN-ACK to {snat} was refused",
        ack.ack,
        ack.rst
    );
    assert_eq!(
        ack.src, snat,
        "the handshake's ACK leaves from the SNAT port"
    );
    assert_checksums(&ack.pkt);
    // connect() completes in softirq context: the SYN-ACK was delivered
    // by the time write() returned, and the ACK read above followed it.
    if let Some(e) = sock.take_error().expect("SO_ERROR") {
        panic!("the SYN-ACK to {snat} did not complete {client}'s connect(): {e}");
    }
    let peer = sock.peer_addr().expect("connected").as_socket();
    assert_eq!(peer, Some(server), "connected to {server}");
    sock
}

struct Case {
    client: &'static str,
    server: &'static str,
    snat: &'static str,
}

const CASES: [Case; 2] = [
    Case {
        client: "192.0.2.1:40000",
        server: "198.18.1.10:5353",
        snat: "192.0.2.1:61000",
    },
    Case {
        client: "[2001:db8::1]:40000",
        server: "[2001:db8:1::10]:5353",
        snat: "[2001:db8::1]:61000",
    },
];

#[test]
fn l3_pair_translates_both_ways_on_a_tun_device() {
    if !netns::require(
        netns::have("ip"),
        "`ip` (iproute2) not found",
        "run testbed/setup (Debian package iproute2)",
    ) {
        return;
    }
    let ran = netns::in_netns_or_skip(|| {
        let mut tun = open_tun();
        for args in [
            vec!["link", "set", TUN, "up"],
            vec!["addr", "add", "192.0.2.1/24", "dev", TUN],
            vec!["-6", "addr", "add", "2001:db8::1/64", "dev", TUN, "nodad"],
            vec!["route", "add", "198.18.1.0/24", "dev", TUN],
            vec!["-6", "route", "add", "2001:db8:1::/64", "dev", TUN],
        ] {
            netns::run("ip", &args);
        }
        let idx = hostinfo::ifindex(TUN).expect("tun0's index");
        assert_eq!(
            hostinfo::link_layer(TUN).expect("tun0's type"),
            LinkLayer::L3,
            "a TUN device has no link-layer header"
        );

        let mut storage = MaybeUninit::uninit();
        let dp = load(&mut storage);
        let _filters = dp.attach(idx, LinkLayer::L3).expect("attach the L3 pair");
        let mut connected = Vec::new();
        for c in &CASES {
            let (client, server, snat) = (sa(c.client), sa(c.server), sa(c.snat));
            set_sessions(&dp, &ipvs_entries(L4::Udp, client, server, Some(snat)));
            let sock = UdpSocket::bind(client).expect("bind the client");
            sock.set_read_timeout(Some(Duration::from_secs(2)))
                .expect("timeout");

            sock.send_to(b"request", server).expect("send");
            let sent = read_to(&mut tun, server);
            assert_eq!(
                sent.src, snat,
                "the request leaves {TUN} from the SNAT port"
            );
            assert_eq!(sent.payload, b"request");
            assert_checksums(&sent.pkt);

            // The answer, as the server would send it: to the SNAT port.
            let reply = packet(&Flow::new(L4::Udp, c.server, c.snat), b"reply");
            tun.write_all(&reply).expect("write the reply into tun0");
            let mut buf = [0u8; 64];
            let (n, from) = sock.recv_from(&mut buf).unwrap_or_else(|e| {
                panic!("the reply to {snat} never reached {client} (not translated back?): {e}")
            });
            assert_eq!((&buf[..n], from), (&b"reply"[..], server));

            // TCP: the pseudo-header sums, both ways, in a handshake.
            let port = |a: SocketAddr, p| SocketAddr::new(a.ip(), p);
            let (client, server, snat) =
                (port(client, 40001), port(server, 8080), port(snat, 61001));
            set_sessions(&dp, &ipvs_entries(L4::Tcp, client, server, Some(snat)));
            connected.push(tcp_handshake(&mut tun, client, server, snat));
        }
        // per family: out, the datagram, the SYN and the last ACK; in, the
        // answer and the SYN-ACK
        let c = counters(&dp);
        // (a SYN the kernel sent again before the SYN-ACK is one more)
        let xlated_orig = c
            .get(&(Direction::Orig, Reason::Xlated))
            .map_or(0, |c| c.packets);
        assert!(
            (6..=8).contains(&xlated_orig),
            "Orig: {xlated_orig} translated packets"
        );
        let xlated_reply = c
            .get(&(Direction::Reply, Reason::Xlated))
            .map_or(0, |c| c.packets);
        assert_eq!(xlated_reply, 4, "Reply: translated packets");

        // Control: with the same session in the map, the Ethernet pair on
        // the same device reads the IP header 14 bytes off, finds no IP
        // header there and translates nothing.
        let _filters = dp
            .attach(idx, LinkLayer::Ethernet)
            .expect("attach the Ethernet pair");
        let c = &CASES[0];
        let (client, server, snat) = (sa(c.client), sa(c.server), sa(c.snat));
        set_sessions(&dp, &ipvs_entries(L4::Udp, client, server, Some(snat)));
        let err_l3 = |dp: &_| {
            counters(dp)
                .get(&(Direction::Orig, Reason::ErrL3))
                .map_or(0, |c| c.packets)
        };
        let before = err_l3(&dp);
        let sock = UdpSocket::bind(client).expect("bind the client");
        sock.send_to(b"request", server).expect("send");
        let sent = read_to(&mut tun, server);
        assert_eq!(
            sent.src, client,
            "the Ethernet pair cannot have parsed a bare IP packet"
        );
        assert!(
            err_l3(&dp) > before,
            "the Ethernet pair, not the L3 one, saw the packet (no IP header at 14)"
        );
        let xlated = counters(&dp)
            .get(&(Direction::Orig, Reason::Xlated))
            .map_or(0, |c| c.packets);
        assert_eq!(xlated, xlated_orig, "nothing more translated");
        // Closed with a reset, not left as FIN_WAIT orphans.
        for s in connected {
            let _ = s.set_linger(Some(Duration::ZERO));
        }
    });
    assert!(ran.is_some() || !netns::strict());
}
