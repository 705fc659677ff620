//! Table-driven tests of `bpf/snat.bpf.c` through BPF_PROG_TEST_RUN: packet
//! in, sessions as IPVS writes them, expected verdict, expected packet out
//! (built from scratch by etherparse with the translated addresses, so the
//! program's incremental checksums are checked against full ones), and
//! exactly one counter moved, by the expected reason. Every case runs with
//! the skb in CHECKSUM_NONE and in CHECKSUM_COMPLETE, where the kernel
//! checks that skb->csum still matches the packet.
//! Needs root (CAP_BPF + CAP_NET_ADMIN); without it the tests fail.

mod common;

use std::collections::HashSet;
use std::mem::MaybeUninit;
use std::net::{IpAddr, SocketAddr};

use common::*;
use ipvs_netlink::uapi::{IpVsBpfKey, IpVsBpfValue};
use ipvs_netlink::Snat;
use ipvsbpf_proxy::backends::datapath::{Datapath, Direction, Options, Reason};
use libbpf_rs::OpenObject;

use Direction::{Orig, Reply};

struct Addrs {
    client: SocketAddr,
    real: SocketAddr,
    snat: SocketAddr,
    /// SNAT address with the client's own port (SCTP keeps its port)
    snat_keep_port: SocketAddr,
    router: SocketAddr,
}

fn addrs(v6: bool) -> Addrs {
    if v6 {
        Addrs {
            client: sa("[2001:db8::100]:40000"),
            real: sa("[2001:db8:1::10]:8080"),
            snat: sa("[2001:db8::1]:61000"),
            snat_keep_port: sa("[2001:db8::1]:40000"),
            router: sa("[2001:db8:1::fe]:0"),
        }
    } else {
        Addrs {
            client: sa("192.0.2.100:40000"),
            real: sa("198.18.1.10:8080"),
            snat: sa("192.0.2.1:61000"),
            snat_keep_port: sa("192.0.2.1:40000"),
            router: sa("198.18.1.254:0"),
        }
    }
}

type Sessions = Vec<(IpVsBpfKey, IpVsBpfValue)>;

struct Case {
    name: String,
    dir: Direction,
    sessions: Sessions,
    input: Vec<u8>,
    reason: Reason,
    /// `None`: the packet must come out byte for byte unchanged.
    expect: Option<Vec<u8>>,
}

const PAYLOAD: &[u8] = b"GET / HTTP/1.1\r\nHost: svc\r\n\r\n";

fn family(v6: bool) -> &'static str {
    if v6 {
        "v6"
    } else {
        "v4"
    }
}

/// Plain packets of every protocol, both families, both directions.
fn session_cases(out: &mut Vec<Case>) {
    for v6 in [false, true] {
        let a = addrs(v6);
        let mut l4s = vec![L4::Tcp, L4::Udp, L4::Sctp];
        if !v6 {
            l4s.push(L4::UdpNoCsum);
        }
        for l4 in l4s {
            let snat = if l4 == L4::Sctp {
                a.snat_keep_port
            } else {
                a.snat
            };
            let sessions = ipvs_entries(l4, a.client, a.real, Some(snat));
            let req = Flow {
                l4,
                src: a.client,
                dst: a.real,
            };
            let rep = Flow {
                l4,
                src: a.real,
                dst: snat,
            };
            out.push(Case {
                name: format!("{l4:?} {}: egress request gets the SNAT source", family(v6)),
                dir: Orig,
                sessions: sessions.clone(),
                input: frame(&req, PAYLOAD),
                reason: Reason::Xlated,
                expect: Some(frame(&req.with_src(snat), PAYLOAD)),
            });
            out.push(Case {
                name: format!("{l4:?} {}: ingress reply gets the client back", family(v6)),
                dir: Reply,
                sessions: sessions.clone(),
                input: frame(&rep, PAYLOAD),
                reason: Reason::Xlated,
                expect: Some(frame(&rep.with_dst(a.client), PAYLOAD)),
            });
            out.push(Case {
                name: format!("{l4:?} {}: egress miss passes untouched", family(v6)),
                dir: Orig,
                sessions: vec![],
                input: frame(&req, PAYLOAD),
                reason: Reason::PassMiss,
                expect: None,
            });
            out.push(Case {
                name: format!("{l4:?} {}: reply tuple at egress is a miss", family(v6)),
                dir: Orig,
                sessions: sessions.clone(),
                input: frame(&rep, PAYLOAD),
                reason: Reason::PassMiss,
                expect: None,
            });
            let plain = ipvs_entries(l4, a.client, a.real, None);
            out.push(Case {
                name: format!("{l4:?} {}: session without SNAT, egress", family(v6)),
                dir: Orig,
                sessions: plain.clone(),
                input: frame(&req, PAYLOAD),
                reason: Reason::PassNoSnat,
                expect: None,
            });
            out.push(Case {
                name: format!("{l4:?} {}: session without SNAT, ingress", family(v6)),
                dir: Reply,
                sessions: plain,
                input: frame(&rep.with_dst(a.client), PAYLOAD),
                reason: Reason::PassNoSnat,
                expect: None,
            });
        }
        // SCTP's CRC32c covers the ports: a port change cannot be done here
        for (dir, flow) in [
            (
                Orig,
                Flow {
                    l4: L4::Sctp,
                    src: a.client,
                    dst: a.real,
                },
            ),
            (
                Reply,
                Flow {
                    l4: L4::Sctp,
                    src: a.real,
                    dst: a.snat,
                },
            ),
        ] {
            out.push(Case {
                name: format!(
                    "Sctp {} {dir:?}: port change is dropped, not corrupted",
                    family(v6)
                ),
                dir,
                sessions: ipvs_entries(L4::Sctp, a.client, a.real, Some(a.snat)),
                input: frame(&flow, PAYLOAD),
                reason: Reason::DropSctpPort,
                expect: None,
            });
        }
    }
}

/// Headers around the transport: options, extension headers, non-IP.
fn header_cases(out: &mut Vec<Case>) {
    let a = addrs(false);
    let req = Flow {
        l4: L4::Tcp,
        src: a.client,
        dst: a.real,
    };
    let sessions = ipvs_entries(L4::Tcp, a.client, a.real, Some(a.snat));
    // record route, 3 free slots: an 8-byte option list after NOP padding
    let opts = [1, 7, 7, 4, 0, 0, 0, 0, 0, 0, 0, 0];
    out.push(Case {
        name: "TCP v4 with IP options: transport header found past them".into(),
        dir: Orig,
        sessions: sessions.clone(),
        input: frame_v4_options(&req, PAYLOAD, &opts),
        reason: Reason::Xlated,
        expect: Some(frame_v4_options(&req.with_src(a.snat), PAYLOAD, &opts)),
    });

    let a6 = addrs(true);
    let req6 = Flow {
        l4: L4::Udp,
        src: a6.client,
        dst: a6.real,
    };
    let sessions6 = ipvs_entries(L4::Udp, a6.client, a6.real, Some(a6.snat));
    out.push(Case {
        name: "UDP v6 behind two destination-options headers".into(),
        dir: Orig,
        sessions: sessions6.clone(),
        input: frame_v6_exthdrs(&req6, PAYLOAD, 2),
        reason: Reason::Xlated,
        expect: Some(frame_v6_exthdrs(&req6.with_src(a6.snat), PAYLOAD, 2)),
    });
    out.push(Case {
        name: "UDP v6 behind seven extension headers: too deep, untouched".into(),
        dir: Orig,
        sessions: sessions6,
        input: frame_v6_exthdrs(&req6, PAYLOAD, 7),
        reason: Reason::ErrExtHdr,
        expect: None,
    });

    // Routing header with segments left: the transport checksum covers the
    // final destination, so no rewrite can keep it right
    let seg = l4_segment(&req6, PAYLOAD);
    let mut body = vec![17, 4, 0, 1, 0, 0, 0, 0]; // type 0, 2 addresses, 1 left
    body.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9]);
    body.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9]);
    body.extend_from_slice(&seg);
    let rthdr = eth(&ip_packet(
        etherparse::IpNumber::IPV6_ROUTE_HEADER,
        req6.src,
        req6.dst,
        &body,
    ));
    out.push(Case {
        name: "UDP v6 behind a routing header with segments left: untouched".into(),
        dir: Orig,
        sessions: ipvs_entries(L4::Udp, a6.client, a6.real, Some(a6.snat)),
        input: rthdr,
        reason: Reason::PassRthdr,
        expect: None,
    });

    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&MAC_NODE);
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&[0; 20]);
    out.push(Case {
        name: "ARP passes untouched".into(),
        dir: Reply,
        sessions: sessions.clone(),
        input: arp,
        reason: Reason::PassNotIp,
        expect: None,
    });
    for v6 in [false, true] {
        let a = addrs(v6);
        out.push(Case {
            name: format!("ICMP echo {} is not an error: untouched", family(v6)),
            dir: Orig,
            sessions: sessions.clone(),
            input: icmp_echo(a.client.ip(), a.real.ip()),
            reason: Reason::PassProto,
            expect: None,
        });
    }
    let gre = eth(&ip_packet(
        etherparse::IpNumber::GRE,
        a.client,
        a.real,
        &[0, 0, 0x08, 0, 1, 2, 3, 4],
    ));
    out.push(Case {
        name: "GRE passes untouched".into(),
        dir: Orig,
        sessions,
        input: gre,
        reason: Reason::PassProto,
        expect: None,
    });
}

/// Truncated and malformed packets: a reason each, nothing written; both
/// directions, each with the packet its hook would translate.
fn malformed_cases(out: &mut Vec<Case>) {
    for v6 in [false, true] {
        let a = addrs(v6);
        let sessions = ipvs_entries(L4::Tcp, a.client, a.real, Some(a.snat));
        for (dir, flow) in [
            (
                Orig,
                Flow {
                    l4: L4::Tcp,
                    src: a.client,
                    dst: a.real,
                },
            ),
            (
                Reply,
                Flow {
                    l4: L4::Tcp,
                    src: a.real,
                    dst: a.snat,
                },
            ),
        ] {
            let what = format!("{} {dir:?}", family(v6));
            let full = frame(&flow, PAYLOAD);
            // A frame cut inside the base IP header cannot be tested here:
            // BPF_PROG_TEST_RUN refuses it (EINVAL) before the program runs.
            out.push(Case {
                name: format!("{what}: length field beyond the packet"),
                dir,
                sessions: sessions.clone(),
                input: full[..full.len() - 10].to_vec(),
                reason: Reason::ErrL3,
                expect: None,
            });
            // a consistent IP packet carrying only 10 bytes of TCP header
            let short = eth(&ip_packet(
                etherparse::IpNumber::TCP,
                flow.src,
                flow.dst,
                &l4_segment(&flow, PAYLOAD)[..10],
            ));
            out.push(Case {
                name: format!("{what}: TCP header cut short"),
                dir,
                sessions: sessions.clone(),
                input: short,
                reason: Reason::ErrL4,
                expect: None,
            });
            let mut bad_version = full.clone();
            bad_version[14] = if v6 { 0x45 } else { 0x65 };
            out.push(Case {
                name: format!("{what}: IP version does not match the ethertype"),
                dir,
                sessions: sessions.clone(),
                input: bad_version,
                reason: Reason::ErrL3,
                expect: None,
            });
            let mut zero_len = full.clone();
            let at = if v6 { 18 } else { 16 };
            zero_len[at] = 0;
            zero_len[at + 1] = 0;
            out.push(Case {
                name: format!("{what}: IP length 0 on a packet that is not GSO"),
                dir,
                sessions: sessions.clone(),
                input: zero_len,
                reason: Reason::ErrL3,
                expect: None,
            });
            if !v6 {
                let mut ihl = full.clone();
                ihl[14] = 0x44;
                out.push(Case {
                    name: format!("{what}: header length below 20"),
                    dir,
                    sessions: sessions.clone(),
                    input: ihl,
                    reason: Reason::ErrL3,
                    expect: None,
                });
            }
        }
    }
}

/// ICMP errors about a session, both families and directions, quotes of
/// several lengths and protocols.
fn icmp_cases(out: &mut Vec<Case>) {
    for v6 in [false, true] {
        let a = addrs(v6);
        // (type, code): "fragmentation needed"/"packet too big", "port
        // unreachable", "time exceeded"
        // every error type handled: unreachable (port, fragmentation needed
        // / packet too big), time exceeded, parameter problem, source quench
        let kinds: &[(u8, u8)] = if v6 {
            &[(2, 0), (1, 4), (3, 0), (4, 0)]
        } else {
            &[(3, 4), (3, 3), (11, 0), (12, 0), (4, 0)]
        };
        let mut l4s = vec![L4::Tcp, L4::Udp, L4::Sctp];
        if !v6 {
            l4s.push(L4::UdpNoCsum);
        }
        for (l4, &(t, c)) in l4s
            .into_iter()
            .flat_map(|l4| kinds.iter().map(move |k| (l4, k)))
        {
            // SCTP sessions keep their port (see the drop case above)
            let snat = if l4 == L4::Sctp {
                a.snat_keep_port
            } else {
                a.snat
            };
            let sessions = ipvs_entries(l4, a.client, a.real, Some(snat));
            let ip_len = if v6 { 40 } else { 20 };
            // a full quote (transport checksum inside) and the minimal one
            for cut in [ip_len + 8, usize::MAX] {
                let quote = |f: &Flow| {
                    let p = packet(f, PAYLOAD);
                    p[..cut.min(p.len())].to_vec()
                };
                let what = if cut == usize::MAX { "full" } else { "8-byte" };
                // ingress: about a translated request, sent back to SNAT
                let sent = Flow {
                    l4,
                    src: snat,
                    dst: a.real,
                };
                out.push(Case {
                    name: format!(
                        "ICMP {t}/{c} {}, {l4:?} {what} quote: ingress, back to the client",
                        family(v6)
                    ),
                    dir: Reply,
                    sessions: sessions.clone(),
                    input: icmp_error(a.router.ip(), snat.ip(), t, c, &quote(&sent)),
                    reason: Reason::IcmpXlated,
                    expect: Some(icmp_error(
                        a.router.ip(),
                        a.client.ip(),
                        t,
                        c,
                        &quote(&sent.with_src(a.client)),
                    )),
                });
                // egress: the client's error about a reply, on to the real server
                let reply = Flow {
                    l4,
                    src: a.real,
                    dst: a.client,
                };
                out.push(Case {
                    name: format!(
                        "ICMP {t}/{c} {}, {l4:?} {what} quote: egress, from the SNAT address",
                        family(v6)
                    ),
                    dir: Orig,
                    sessions: sessions.clone(),
                    input: icmp_error(a.client.ip(), a.real.ip(), t, c, &quote(&reply)),
                    reason: Reason::IcmpXlated,
                    expect: Some(icmp_error(
                        snat.ip(),
                        a.real.ip(),
                        t,
                        c,
                        &quote(&reply.with_dst(snat)),
                    )),
                });
            }
        }
        let (t, c) = kinds[0];
        let ip_len = if v6 { 40 } else { 20 };
        // (hook, error source, error destination, quoted packet)
        let sent = Flow {
            l4: L4::Tcp,
            src: a.snat,
            dst: a.real,
        };
        let reply = Flow {
            l4: L4::Tcp,
            src: a.real,
            dst: a.client,
        };
        for (dir, from, to, quoted) in [
            (Reply, a.router, a.snat, sent),
            (Orig, a.client, a.real, reply),
        ] {
            let what = format!("ICMP {} {dir:?}", family(v6));
            let error = |q: &[u8]| icmp_error(from.ip(), to.ip(), t, c, q);
            out.push(Case {
                name: format!("{what}: about no session, untouched"),
                dir,
                sessions: vec![],
                input: error(&packet(&quoted, PAYLOAD)),
                reason: Reason::PassIcmpMiss,
                expect: None,
            });
            out.push(Case {
                name: format!("{what}: quote without ports, untouched"),
                dir,
                sessions: ipvs_entries(L4::Tcp, a.client, a.real, Some(a.snat)),
                input: error(&packet(&quoted, PAYLOAD)[..ip_len + 2]),
                reason: Reason::ErrIcmpInner,
                expect: None,
            });
        }
        // a session that needs no SNAT: its errors pass as they are
        let plain_reply = Flow {
            l4: L4::Udp,
            src: a.real,
            dst: a.client,
        };
        let plain_sent = Flow {
            l4: L4::Udp,
            src: a.client,
            dst: a.real,
        };
        for (dir, from, to, quoted) in [
            (Reply, a.router, a.client, plain_sent),
            (Orig, a.client, a.real, plain_reply),
        ] {
            out.push(Case {
                name: format!("ICMP {} {dir:?}: about a session without SNAT", family(v6)),
                dir,
                sessions: ipvs_entries(L4::Udp, a.client, a.real, None),
                input: icmp_error(from.ip(), to.ip(), t, c, &packet(&quoted, PAYLOAD)),
                reason: Reason::PassNoSnat,
                expect: None,
            });
        }
    }
}

fn all_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    session_cases(&mut cases);
    header_cases(&mut cases);
    malformed_cases(&mut cases);
    icmp_cases(&mut cases);
    cases
}

#[test]
fn table() {
    let mut storage = MaybeUninit::uninit();
    let dp = load(&mut storage);
    let cases = all_cases();
    for (case, csum) in cases
        .iter()
        .flat_map(|c| Csum::ALL.into_iter().map(move |m| (c, m)))
    {
        set_sessions(&dp, &case.sessions);
        let name = format!("{} [{csum:?}]", case.name);
        let (verdict, out) = run_counted_csum(&dp, case.dir, &case.input, case.reason, &name, csum);
        let want = if case.reason.drops() { DROP } else { PASS };
        assert_eq!(verdict, want, "{}: verdict", name);
        let expect = case.expect.as_ref().unwrap_or(&case.input);
        assert_eq!(
            hex(&out),
            hex(expect),
            "{}: packet out (left) vs expected (right)",
            name
        );
        if case.expect.is_some() {
            assert_ne!(
                out, case.input,
                "{}: a translation changes the packet",
                name
            );
        }
    }
    // Every reason has a row here, but those only fragments (snat_frag.rs)
    // or a failing helper can produce
    let covered: std::collections::HashSet<Reason> = cases.iter().map(|c| c.reason).collect();
    for r in Reason::ALL {
        let elsewhere = matches!(
            r,
            Reason::FragXlated
                | Reason::PassFragMiss
                | Reason::XlatedNoFrag
                | Reason::DropWrite
                | Reason::PassNotSnatDst
        );
        assert_eq!(covered.contains(r), !elsewhere, "{r:?}: table coverage");
    }
}

/// A two-byte payload that gives `flow`'s UDP datagram the checksum
/// 0xffff, i.e. a sum of 0, which an incremental update could wrongly land
/// on as 0.
fn payload_for_udp_csum_ffff(flow: &Flow) -> [u8; 2] {
    (0u16..=u16::MAX)
        .map(|n| n.to_be_bytes())
        .find(|p| l4_segment(flow, p)[6..8] == [0xff, 0xff])
        .expect("a payload with checksum 0xffff exists")
}

/// UDP must never carry a computed checksum of 0 (it means "none"): find a
/// payload whose translated checksum is 0xffff and check the incremental
/// update lands there too, not on 0.
#[test]
fn udp_checksum_never_becomes_zero() {
    let mut storage = MaybeUninit::uninit();
    let dp = load(&mut storage);
    for v6 in [false, true] {
        let a = addrs(v6);
        let req = Flow {
            l4: L4::Udp,
            src: a.client,
            dst: a.real,
        };
        let translated = req.with_src(a.snat);
        let payload = payload_for_udp_csum_ffff(&translated);
        set_sessions(&dp, &ipvs_entries(L4::Udp, a.client, a.real, Some(a.snat)));
        for csum in Csum::ALL {
            let input = frame(&req, &payload);
            let (verdict, out) = run_counted_csum(&dp, Orig, &input, Reason::Xlated, "udp0", csum);
            assert_eq!(verdict, PASS);
            let want = frame(&translated, &payload);
            assert_eq!(hex(&out), hex(&want), "{} {csum:?}", family(v6));
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.chunks(16)
        .map(|c| {
            c.iter()
                .map(|x| format!("{x:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The same inside an ICMP error: a quoted UDP checksum the translation
/// brings to 0 must be written as 0xffff.
#[test]
fn quoted_udp_checksum_never_becomes_zero() {
    let mut storage = MaybeUninit::uninit();
    let dp = load(&mut storage);
    for v6 in [false, true] {
        let a = addrs(v6);
        let sent = Flow {
            l4: L4::Udp,
            src: a.snat,
            dst: a.real,
        };
        let restored = sent.with_src(a.client);
        let payload = payload_for_udp_csum_ffff(&restored);
        set_sessions(&dp, &ipvs_entries(L4::Udp, a.client, a.real, Some(a.snat)));
        let (t, c) = if v6 { (1, 4) } else { (3, 3) };
        let input = icmp_error(a.router.ip(), a.snat.ip(), t, c, &packet(&sent, &payload));
        let want = icmp_error(
            a.router.ip(),
            a.client.ip(),
            t,
            c,
            &packet(&restored, &payload),
        );
        for csum in Csum::ALL {
            let (_, out) =
                run_counted_csum(&dp, Reply, &input, Reason::IcmpXlated, "icmp udp0", csum);
            assert_eq!(hex(&out), hex(&want), "{} {csum:?}", family(v6));
        }
    }
}

/// IPVS's SNAT settings as the proxy would hand them for [`addrs`]: the
/// SNAT addresses, a range holding `snat`'s port and not the client's.
fn snat_settings(addr6: bool) -> Snat {
    let ip = |v6: bool| addrs(v6).snat.ip();
    Snat {
        addr4: match ip(false) {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        },
        addr6: match ip(true) {
            IpAddr::V6(a) if addr6 => Some(a),
            _ => None,
        },
        port_min: 61000,
        port_max: 61999,
    }
}

/// The programs loaded with [`snat_settings`].
fn load_filtered(storage: &mut MaybeUninit<OpenObject>, addr6: bool) -> Datapath<'_> {
    load_with(
        storage,
        Options {
            snat_dst: Some(snat_settings(addr6)),
            ..small_options()
        },
    )
}

/// With IPVS's SNAT settings given (`Options::snat_dst`), ingress skips
/// the lookup for what cannot be about a SNAT session. Run over the whole
/// table: every translation and every drop stays as it was, and a case
/// may change only from a pass to `pass_not_snat_dst`, with the packet
/// untouched; the cases the filter is for (replies of sessions without
/// SNAT, a NodePort request) must change.
#[test]
fn the_snat_destination_filter_skips_only_what_cannot_be_translated() {
    let mut storage = MaybeUninit::uninit();
    let dp = load_filtered(&mut storage, true);
    let mut skipped = HashSet::new();
    for case in all_cases() {
        set_sessions(&dp, &case.sessions);
        let (verdict, out, reason) = try_run(&dp, case.dir, &case.input, Csum::None)
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        if reason == case.reason {
            let expect = case.expect.as_ref().unwrap_or(&case.input);
            assert_eq!(hex(&out), hex(expect), "{}: packet out", case.name);
            continue;
        }
        assert_eq!(reason, Reason::PassNotSnatDst, "{}: reason", case.name);
        assert!(
            case.expect.is_none() && !case.reason.drops() && case.dir == Reply,
            "{}: the filter skipped what the table translates or drops ({:?})",
            case.name,
            case.reason
        );
        assert_eq!(verdict, PASS, "{}: verdict", case.name);
        assert_eq!(hex(&out), hex(&case.input), "{}: untouched", case.name);
        skipped.insert(case.name);
    }
    for v6 in ["v4", "v6"] {
        for name in [
            format!("Tcp {v6}: session without SNAT, ingress"),
            format!("Udp {v6}: session without SNAT, ingress"),
            format!("ICMP {v6} Reply: about a session without SNAT"),
        ] {
            assert!(skipped.contains(&name), "{name}: not skipped");
        }
    }

    // A NodePort request: to the SNAT address, but not to a SNAT port
    for v6 in [false, true] {
        let a = addrs(v6);
        let nodeport = SocketAddr::new(a.snat.ip(), 30080);
        let req = Flow {
            l4: L4::Tcp,
            src: a.client,
            dst: nodeport,
        };
        dp.clear_sessions().expect("clear");
        let input = frame(&req, PAYLOAD);
        let (_, out) = run_counted(&dp, Reply, &input, Reason::PassNotSnatDst, "nodeport");
        assert_eq!(out, input);
        // the range's own ends are looked up
        for port in [61000, 61999] {
            let rep = Flow {
                l4: L4::Tcp,
                src: a.real,
                dst: SocketAddr::new(a.snat.ip(), port),
            };
            run_counted(
                &dp,
                Reply,
                &frame(&rep, PAYLOAD),
                Reason::PassMiss,
                "range end",
            );
        }
    }
}

/// An IPv4-only SNAT setting: no IPv6 SNAT session can exist, so every
/// IPv6 packet arriving passes unlooked-up; IPv4 is unchanged.
#[test]
fn without_an_ipv6_snat_address_ipv6_is_never_looked_up_on_ingress() {
    let mut storage = MaybeUninit::uninit();
    let dp = load_filtered(&mut storage, false);
    for v6 in [false, true] {
        let a = addrs(v6);
        set_sessions(&dp, &ipvs_entries(L4::Udp, a.client, a.real, Some(a.snat)));
        let rep = Flow {
            l4: L4::Udp,
            src: a.real,
            dst: a.snat,
        };
        let want = if v6 {
            Reason::PassNotSnatDst
        } else {
            Reason::Xlated
        };
        run_counted(&dp, Reply, &frame(&rep, PAYLOAD), want, family(v6));
    }
}
