//! Fragments through BPF_PROG_TEST_RUN: the first fragment is translated by
//! its transport header and remembered in the fragment map; later
//! fragments (no ports) get the same addresses from it; a later fragment
//! with nothing remembered, or a first fragment without a session, leaves
//! the datagram untouched. Both families, both directions.
//! Needs root (CAP_BPF + CAP_NET_ADMIN); without it the tests fail.

mod common;

use std::mem::MaybeUninit;
use std::time::Duration;

use common::*;
use ipvsbpf_proxy::backends::datapath::{Direction, Options, Reason};

/// 100 bytes of payload: with 32-byte pieces, a UDP datagram of 108 bytes
/// becomes four fragments.
const PAYLOAD: &[u8; 100] = &[0x5a; 100];

fn flows(v6: bool) -> (Flow, Flow, std::net::SocketAddr, std::net::SocketAddr) {
    let (c, r, s) = if v6 {
        (
            sa("[2001:db8::100]:5353"),
            sa("[2001:db8:1::10]:53"),
            sa("[2001:db8::1]:61001"),
        )
    } else {
        (
            sa("192.0.2.100:5353"),
            sa("198.18.1.10:53"),
            sa("192.0.2.1:61001"),
        )
    };
    let req = Flow {
        l4: L4::Udp,
        src: c,
        dst: r,
    };
    let rep = Flow {
        l4: L4::Udp,
        src: r,
        dst: s,
    };
    (req, rep, c, s)
}

#[test]
fn fragments_follow_their_first() {
    let mut storage = MaybeUninit::uninit();
    let dp = load(&mut storage);
    for v6 in [false, true] {
        let (req, rep, client, snat) = flows(v6);
        set_sessions(&dp, &ipvs_entries(L4::Udp, req.src, req.dst, Some(snat)));
        for (dir, input, output) in [
            (Direction::Orig, req, req.with_src(snat)),
            (Direction::Reply, rep, rep.with_dst(client)),
        ] {
            let what = format!("v6={v6} {dir:?}");
            let id = 0x4242;
            let ins = fragments(&input, PAYLOAD, 32, id);
            let outs = fragments(&output, PAYLOAD, 32, id);
            assert_eq!(ins.len(), 4);
            for (i, (f, want)) in ins.iter().zip(&outs).enumerate() {
                let reason = if i == 0 {
                    Reason::Xlated
                } else {
                    Reason::FragXlated
                };
                // The later fragments have no transport checksum to absorb
                // an IPv6 address change: CHECKSUM_COMPLETE shows it
                let (verdict, out) =
                    run_counted_csum(&dp, dir, f, reason, &format!("{what} #{i}"), Csum::Complete);
                assert_eq!(verdict, PASS);
                assert_eq!(&out, want, "{what}: fragment {i}");
            }
            // A later fragment of another datagram: nothing remembered
            let other = fragments(&input, PAYLOAD, 32, id + 1);
            let (_, out) = run_counted(
                &dp,
                dir,
                &other[2],
                Reason::PassFragMiss,
                &format!("{what} unknown id"),
            );
            assert_eq!(out, other[2], "{what}: unknown datagram untouched");
        }
        assert_eq!(dp.frag_count(), 2, "one entry per translated datagram");
        dp.clear_frags().expect("clear");
    }
}

#[test]
fn out_of_order_and_stale_fragments_stay_untouched() {
    let mut storage = MaybeUninit::uninit();
    let dp = load(&mut storage);
    for v6 in [false, true] {
        let (req, _, _, snat) = flows(v6);
        let what = format!("v6={v6}");
        let sessions = ipvs_entries(L4::Udp, req.src, req.dst, Some(snat));
        set_sessions(&dp, &sessions);
        let frags = fragments(&req, PAYLOAD, 32, 7);

        // Out of order: the last fragment before the first passes as is
        let (_, out) = run_counted(&dp, Direction::Orig, &frags[3], Reason::PassFragMiss, &what);
        assert_eq!(out, frags[3]);

        // The first fragment translates and remembers ...
        run_counted(&dp, Direction::Orig, &frags[0], Reason::Xlated, &what);
        assert_eq!(dp.frag_count(), 1);
        // ... and when the session is gone, a new datagram reusing the id
        // must not inherit the old translation.
        set_sessions(&dp, &[]);
        let (_, out) = run_counted(&dp, Direction::Orig, &frags[0], Reason::PassMiss, &what);
        assert_eq!(out, frags[0]);
        assert_eq!(dp.frag_count(), 0, "{what}: stale entry removed");
        let (_, out) = run_counted(&dp, Direction::Orig, &frags[1], Reason::PassFragMiss, &what);
        assert_eq!(out, frags[1]);
    }
}

/// More datagrams in flight than the fragment map holds (64): every first
/// fragment is still translated, since an LRU map makes room rather than
/// refusing (so `xlated_nofrag` is for an insert that fails outright, which
/// no test here can provoke), and the latest datagrams keep their entry.
#[test]
fn more_datagrams_than_fragment_entries() {
    let mut storage = MaybeUninit::uninit();
    let dp = load(&mut storage);
    let (req, _, _, snat) = flows(false);
    set_sessions(&dp, &ipvs_entries(L4::Udp, req.src, req.dst, Some(snat)));
    let translated = req.with_src(snat);
    for id in 0..200u32 {
        let f = &fragments(&req, PAYLOAD, 32, id)[0];
        let want = &fragments(&translated, PAYLOAD, 32, id)[0];
        let (verdict, out) = run(&dp, Direction::Orig, f);
        assert_eq!(verdict, PASS);
        assert_eq!(&out, want, "datagram {id}");
    }
    let c = dp
        .counter(Direction::Orig, Reason::Xlated)
        .expect("counter");
    assert_eq!(c.packets, 200);
    // the last datagram's later fragment still finds its translation
    let later = &fragments(&req, PAYLOAD, 32, 199)[1];
    let want = &fragments(&translated, PAYLOAD, 32, 199)[1];
    let (_, out) = run_counted(&dp, Direction::Orig, later, Reason::FragXlated, "latest");
    assert_eq!(&out, want);
}

/// A translation serves later fragments only as long as reassembly would
/// wait for them (`Options::frag_timeout`, 30 s by default; 200 ms here).
#[test]
fn fragment_translation_expires() {
    let mut storage = MaybeUninit::uninit();
    let dp = load_with(
        &mut storage,
        Options {
            frag_timeout: Duration::from_millis(200),
            ..small_options()
        },
    );
    let (req, _, _, snat) = flows(true);
    set_sessions(&dp, &ipvs_entries(L4::Udp, req.src, req.dst, Some(snat)));
    let frags = fragments(&req, PAYLOAD, 32, 0x55);
    run_counted(&dp, Direction::Orig, &frags[0], Reason::Xlated, "first");
    run_counted(
        &dp,
        Direction::Orig,
        &frags[1],
        Reason::FragXlated,
        "in time",
    );
    std::thread::sleep(Duration::from_millis(400));
    let (_, out) = run_counted(
        &dp,
        Direction::Orig,
        &frags[2],
        Reason::PassFragMiss,
        "late",
    );
    assert_eq!(out, frags[2], "an expired translation is not applied");
}

/// RFC 8200 lets extension headers (destination options) sit in the
/// fragmentable part: the later fragments name that header, not UDP, and
/// must still find their first fragment.
#[test]
fn ipv6_fragments_with_options_in_the_fragmentable_part() {
    let mut storage = MaybeUninit::uninit();
    let dp = load(&mut storage);
    let (req, _, _, snat) = flows(true);
    set_sessions(&dp, &ipvs_entries(L4::Udp, req.src, req.dst, Some(snat)));
    let ins = fragments_after(&req, PAYLOAD, 32, 0x77, true);
    let outs = fragments_after(&req.with_src(snat), PAYLOAD, 32, 0x77, true);
    for (i, (f, want)) in ins.iter().zip(&outs).enumerate() {
        let reason = if i == 0 {
            Reason::Xlated
        } else {
            Reason::FragXlated
        };
        let what = format!("fragment {i}");
        let (_, out) = run_counted_csum(&dp, Direction::Orig, f, reason, &what, Csum::Complete);
        assert_eq!(&out, want, "{what}");
    }
}

/// A first fragment that is not translated for any reason (here: a
/// transport header cut short, RFC 1858's tiny fragment) removes what an
/// earlier datagram with the same id left, so no later fragment inherits
/// another datagram's translation.
#[test]
fn untranslated_first_fragment_clears_the_id() {
    let mut storage = MaybeUninit::uninit();
    let dp = load(&mut storage);
    for v6 in [false, true] {
        let (req, _, _, snat) = flows(v6);
        set_sessions(&dp, &ipvs_entries(L4::Udp, req.src, req.dst, Some(snat)));
        let frags = fragments(&req, PAYLOAD, 32, 0x99);
        run_counted(&dp, Direction::Orig, &frags[0], Reason::Xlated, "first");
        assert_eq!(dp.frag_count(), 1);
        // The same id, first fragment carrying 4 bytes of UDP header
        let tiny = &fragments(&req, PAYLOAD, 8, 0x99)[0];
        let hdr = if v6 { 14 + 40 + 8 } else { 14 + 20 };
        let mut cut = tiny[..hdr + 4].to_vec();
        if v6 {
            cut[18..20].copy_from_slice(&12u16.to_be_bytes());
        } else {
            let len = (cut.len() - 14) as u16;
            cut[16..18].copy_from_slice(&len.to_be_bytes());
        }
        run_counted(&dp, Direction::Orig, &cut, Reason::ErrL4, "tiny first");
        assert_eq!(dp.frag_count(), 0, "v6={v6}: stale entry removed");
        let (_, out) = run_counted(
            &dp,
            Direction::Orig,
            &frags[1],
            Reason::PassFragMiss,
            "later",
        );
        assert_eq!(out, frags[1]);
    }
}
