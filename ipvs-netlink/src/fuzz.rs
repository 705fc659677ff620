//! Parser robustness: replies cut short, garbled or made of random
//! attributes never panic the decoders or the exchange, and a valid reply
//! mangled anywhere still yields either an object or an error.

use proptest::prelude::*;

use crate::codec::{
    decode_bpf, decode_daemon, decode_destination, decode_info, decode_service, decode_timeouts,
    Request,
};
use crate::proto::Exchange;
use crate::types::{Family, Service, ServiceKey};

/// One attribute: length, type (flags included), payload, padding.
fn nlattr(ty: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = ((4 + payload.len()) as u16).to_ne_bytes().to_vec();
    v.extend_from_slice(&ty.to_ne_bytes());
    v.extend_from_slice(payload);
    v.resize(v.len().next_multiple_of(4), 0);
    v
}

/// Attribute lists whose types hit the known ones and whose payloads are
/// of the lengths that matter (0, 1, 2, 4, 8, 16, odd), sometimes nested.
fn attrs() -> impl Strategy<Value = Vec<u8>> {
    let payload = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..3),
        prop::collection::vec(any::<u8>(), 4..5),
        prop::collection::vec(any::<u8>(), 8..9),
        prop::collection::vec(any::<u8>(), 16..17),
        prop::collection::vec(any::<u8>(), 0..40),
    ];
    let leaf = (0u16..16, any::<bool>(), payload)
        .prop_map(|(t, n, p)| nlattr(t | if n { 0x8000 } else { 0 }, &p));
    let flat = prop::collection::vec(leaf, 0..14).prop_map(|v| v.concat());
    flat.clone()
        .prop_recursive(2, 64, 8, |inner| {
            prop::collection::vec((0u16..16, inner), 0..6).prop_map(|v| {
                v.into_iter()
                    .flat_map(|(t, p)| nlattr(t | 0x8000, &p))
                    .collect()
            })
        })
        .boxed()
}

fn decode_all(b: &[u8]) {
    let _ = decode_service(b);
    let _ = decode_destination(b, Family::Inet);
    let _ = decode_destination(b, Family::Inet6);
    let _ = decode_daemon(b);
    let _ = decode_timeouts(b);
    let _ = decode_info(b);
    let _ = decode_bpf(b);
}

/// A netlink message around `payload`, with a length field that may lie.
fn message(ty: u16, flags: u16, seq: u32, pid: u32, payload: &[u8], len_delta: i32) -> Vec<u8> {
    let len = (16 + payload.len()) as i64 + i64::from(len_delta);
    let mut v = (len.clamp(0, u32::MAX.into()) as u32)
        .to_ne_bytes()
        .to_vec();
    v.extend_from_slice(&ty.to_ne_bytes());
    v.extend_from_slice(&flags.to_ne_bytes());
    v.extend_from_slice(&seq.to_ne_bytes());
    v.extend_from_slice(&pid.to_ne_bytes());
    v.extend_from_slice(payload);
    v.resize(v.len().next_multiple_of(4), 0);
    v
}

const FAMILY: u16 = 0x25;
const PID: u32 = 4242;

fn exchange(seq: &mut u32) -> Exchange {
    let key = ServiceKey::tcp("10.0.0.1".parse().unwrap_or_else(|_| unreachable!()), 80);
    let reqs = [
        Request::ListServices,
        Request::AddService(Service::new(key, "rr")),
        Request::GetInfo,
        Request::ListDestinations(key),
    ];
    let refs: Vec<&Request> = reqs.iter().collect();
    Exchange::new(FAMILY, PID, seq, &refs).0
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 3000,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x1b5),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn decoders_never_panic_on_random_attributes(b in attrs()) {
        decode_all(&b);
    }

    #[test]
    fn decoders_never_panic_on_cut_or_flipped_replies(
        b in attrs(), cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(), bit in 0u8..8,
    ) {
        let mut m = b.clone();
        if !m.is_empty() {
            let i = flip.index(m.len());
            m[i] ^= 1 << bit;
        }
        decode_all(&m);
        decode_all(&b[..cut.index(b.len() + 1)]);
    }

    #[test]
    fn exchange_never_panics_on_random_datagrams(
        msgs in prop::collection::vec(
            (prop_oneof![Just(2u16), Just(3u16), Just(FAMILY), any::<u16>()],
             any::<u16>(), 0u32..8, prop_oneof![Just(PID), any::<u32>()],
             prop::collection::vec(any::<u8>(), 0..64), -20i32..20),
            0..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut datagram = Vec::new();
        for (ty, flags, seq, pid, payload, delta) in &msgs {
            datagram.extend(message(*ty, *flags, *seq, *pid, payload, *delta));
        }
        let mut seq = 1;
        let mut ex = exchange(&mut seq);
        ex.feed_datagram(&datagram[..cut.index(datagram.len() + 1)]);
        let _ = ex.pending();
        let results = ex.finish();
        prop_assert_eq!(results.len(), 4);
    }
}

/// The exchange itself: answers matched by sequence number, errors carry
/// their errno and extended-ACK message, strangers ignored.
#[test]
fn exchange_matches_answers_by_sequence() {
    let mut seq = 7;
    let mut ex = exchange(&mut seq);
    let genl = |cmd: u8, attrs: &[u8]| {
        let mut v = vec![cmd, 1, 0, 0];
        v.extend_from_slice(attrs);
        v
    };
    let svc = {
        let mut s = nlattr(1, &2u16.to_ne_bytes()); // AF_INET
        s.extend(nlattr(2, &6u16.to_ne_bytes())); // TCP
        s.extend(nlattr(
            3,
            &[10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        ));
        s.extend(nlattr(4, &80u16.to_be_bytes()));
        s.extend(nlattr(6, b"rr\0"));
        s.extend(nlattr(7, &[2, 0, 0, 0, 0xff, 0xff, 0xff, 0xff])); // HASHED
        s.extend(nlattr(8, &0u32.to_ne_bytes()));
        s.extend(nlattr(9, &[0xff; 4]));
        nlattr(1 | 0x8000, &s)
    };
    // An error for seq 8 (AddService): errno EEXIST, the request echoed
    // (a 16-byte header here), and an extended ACK message.
    let mut err = (-libc::EEXIST).to_ne_bytes().to_vec();
    err.extend(message(FAMILY, 5, 8, PID, &[], 0));
    err.extend(nlattr(1, b"IPVS: exists\0"));
    let mut d = Vec::new();
    d.extend(message(FAMILY, 2, 7, PID, &genl(1, &svc), 0)); // dump part
    d.extend(message(FAMILY, 2, 7, 999, &genl(1, &svc), 0)); // another socket's
    d.extend(message(FAMILY, 2, 3, PID, &genl(1, &svc), 0)); // a stale seq
    d.extend(message(3, 2, 7, PID, &0i32.to_ne_bytes(), 0)); // DONE
    d.extend(message(2, 0x300, 8, PID, &err, 0)); // ERROR: CAPPED, ACK_TLVS
    ex.feed_datagram(&d);
    assert!(ex.pending(), "GetInfo and ListDestinations are still open");
    let mut ack = 0i32.to_ne_bytes().to_vec();
    ack.extend(message(FAMILY, 5, 9, PID, &[], 0));
    let mut d = message(
        FAMILY,
        0,
        9,
        PID,
        &genl(14, &nlattr(1, &0x010201u32.to_ne_bytes())),
        0,
    );
    d.extend(message(2, 0, 9, PID, &ack, 0)); // GetInfo's ACK
    d.extend(message(3, 2, 10, PID, &0i32.to_ne_bytes(), 0)); // empty dump
    ex.feed_datagram(&d);
    assert!(!ex.pending());
    let r = ex.finish();
    let services = r[0].as_ref().expect("the dump succeeded");
    assert_eq!(
        services.len(),
        1,
        "only our socket's, current message counts"
    );
    match &r[1] {
        Err(crate::Error::Kernel { errno, message, .. }) => {
            assert_eq!(*errno, libc::EEXIST);
            assert_eq!(message.as_deref(), Some("IPVS: exists"));
        }
        other => panic!("expected EEXIST, got {other:?}"),
    }
    assert_eq!(r[2].as_ref().expect("info").len(), 1);
    assert!(r[3].as_ref().expect("empty dump").is_empty());
    let parsed = crate::codec::first_level(&services[0], crate::attr::CmdAttr::Service)
        .expect("first level")
        .expect("service nest");
    let s = decode_service(parsed.as_ref()).expect("service decodes");
    assert_eq!(s.config(), Service::new(s.key, "rr"));
}
