//! Loads `bpf/pktcount.bpf.c` into the running kernel and drives it with
//! BPF_PROG_TEST_RUN: the packet comes out unchanged with TC_ACT_OK and the
//! counter of the program's direction, only that one, moves by the packet.
//! Needs root (CAP_BPF + CAP_NET_ADMIN); without it the test fails.

use std::mem::MaybeUninit;

use ipvsbpf_proxy::backends::pktcount::{self, Counters, Direction};
use libbpf_rs::ProgramInput;

const TC_ACT_OK: u32 = 0;

/// An Ethernet + IPv4 + UDP frame with an 8-byte payload; contents do not
/// matter to pktcount beyond their length.
fn frame() -> Vec<u8> {
    let mut f = vec![
        0x02, 0, 0, 0, 0, 0x02, // dst mac
        0x02, 0, 0, 0, 0, 0x01, // src mac
        0x08, 0x00, // ethertype IPv4
        0x45, 0x00, 0x00, 0x24, // v4, ihl 5, tos, total length 36
        0x00, 0x01, 0x00, 0x00, // id, flags/frag
        0x40, 0x11, 0x00, 0x00, // ttl 64, udp, checksum (unused here)
        192, 0, 2, 100, // src
        198, 19, 0, 10, // dst
        0x30, 0x39, 0x00, 0x35, // sport 12345, dport 53
        0x00, 0x10, 0x00, 0x00, // udp length 16, no checksum
    ];
    f.extend_from_slice(b"payload!");
    f
}

#[test]
fn counts_each_direction_and_passes_packets_unchanged() {
    let mut storage = MaybeUninit::uninit();
    let skel = pktcount::load(&mut storage).expect("load pktcount (needs root and BPF)");
    let pkt = frame();

    let zero = Counters::default();
    assert_eq!(
        pktcount::read(&skel, Direction::Ingress).expect("read"),
        zero
    );
    assert_eq!(
        pktcount::read(&skel, Direction::Egress).expect("read"),
        zero
    );

    for (round, prog) in [
        &skel.progs.pktcount_ingress,
        &skel.progs.pktcount_ingress,
        &skel.progs.pktcount_egress,
    ]
    .into_iter()
    .enumerate()
    {
        let mut out = vec![0u8; pkt.len() + 64];
        let input = ProgramInput {
            data_in: Some(&pkt),
            data_out: Some(&mut out),
            ..Default::default()
        };
        let res = prog.test_run(input).expect("BPF_PROG_TEST_RUN");
        assert_eq!(res.return_value, TC_ACT_OK, "round {round}: verdict");
        assert_eq!(
            res.data.map(|d| d.to_vec()),
            Some(pkt.clone()),
            "round {round}: packet changed"
        );
    }

    let len = pkt.len() as u64;
    assert_eq!(
        pktcount::read(&skel, Direction::Ingress).expect("read"),
        Counters {
            packets: 2,
            bytes: 2 * len
        }
    );
    assert_eq!(
        pktcount::read(&skel, Direction::Egress).expect("read"),
        Counters {
            packets: 1,
            bytes: len
        }
    );
}
