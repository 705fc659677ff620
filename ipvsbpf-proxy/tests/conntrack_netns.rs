//! The ctnetlink client (`backends::conntrack::flows`) against the real
//! kernel, in a network namespace of the test's own: entries made with
//! `conntrack -I` are read back with both tuples, the stale ones for a
//! removed endpoint or Service are deleted, and nothing else is. A host
//! that cannot make a namespace or lacks `conntrack` fails the test in a
//! strict run (`make test`, CI) and skips it otherwise ([`netns::require`]).

use std::net::SocketAddr;

use ipvsbpf_proxy::backends::conntrack::flows::{self, Ctnetlink, Flow, Frontends, Table};
use netns::{have, in_netns_or_skip, require, run};

mod netns;

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

/// `conntrack -I` of a UDP entry: original src -> dst, answered by
/// `reply_src` (the endpoint) to `reply_dst`.
fn inject(src: &str, dst: &str, reply_src: &str, reply_dst: &str) {
    inject_in_zone(src, dst, reply_src, reply_dst, 0);
}

/// [`inject`] in conntrack zone `zone`.
fn inject_in_zone(src: &str, dst: &str, reply_src: &str, reply_dst: &str, zone: u16) {
    let (s, d, rs, rd) = (sa(src), sa(dst), sa(reply_src), sa(reply_dst));
    let v = |a: SocketAddr| a.ip().to_string();
    let p = |a: SocketAddr| a.port().to_string();
    run(
        "conntrack",
        &[
            "-I",
            "-p",
            "udp",
            "-s",
            &v(s),
            "-d",
            &v(d),
            "--sport",
            &p(s),
            "--dport",
            &p(d),
            "-r",
            &v(rs),
            "-q",
            &v(rd),
            "--reply-port-src",
            &p(rs),
            "--reply-port-dst",
            &p(rd),
            "-t",
            "120",
            "--zone",
            &zone.to_string(),
        ],
    );
}

fn sorted(mut v: Vec<Flow>) -> Vec<(SocketAddr, SocketAddr, SocketAddr)> {
    let mut t: Vec<_> = v
        .drain(..)
        .map(|f| (f.orig_src, f.orig_dst, f.reply_src))
        .collect();
    t.sort();
    t
}

#[test]
fn stale_udp_entries_go_and_the_rest_stay() {
    if !require(
        have("conntrack"),
        "conntrack (conntrack-tools)",
        "testbed/setup installs the conntrack package",
    ) {
        return;
    }
    in_netns_or_skip(|| {
        // a pod's flow to a ClusterIP, answered by the endpoint that goes
        inject(
            "198.18.1.2:5000",
            "198.19.0.53:53",
            "198.18.2.3:53",
            "198.18.1.2:5000",
        );
        // the same ClusterIP through the endpoint that stays
        inject(
            "198.18.1.4:5000",
            "198.19.0.53:53",
            "198.18.1.3:53",
            "198.18.1.4:5000",
        );
        // a masqueraded NodePort flow to the endpoint that goes
        inject(
            "192.0.2.2:6000",
            "192.0.2.1:30053",
            "198.18.2.3:53",
            "192.0.2.1:61001",
        );
        // the endpoint that goes, in another conntrack zone: found there
        inject_in_zone(
            "198.18.1.5:5000",
            "198.19.0.53:53",
            "198.18.2.3:53",
            "198.18.1.5:5000",
            5,
        );
        // another Service, untouched
        inject(
            "198.18.1.2:5001",
            "198.19.0.54:53",
            "198.18.2.3:53",
            "198.18.1.2:5001",
        );
        // IPv6 to the Service that goes as a whole
        inject(
            "[2001:db8:1:1::2]:5000",
            "[2001:db8:2::53]:53",
            "[2001:db8:1:2::3]:53",
            "[2001:db8:1:1::2]:5000",
        );

        let mut ct = Ctnetlink::connect().expect("ctnetlink");
        let v4 = ct.udp_flows(false).expect("IPv4 dump");
        assert_eq!(
            sorted(v4),
            vec![
                (
                    sa("192.0.2.2:6000"),
                    sa("192.0.2.1:30053"),
                    sa("198.18.2.3:53")
                ),
                (
                    sa("198.18.1.2:5000"),
                    sa("198.19.0.53:53"),
                    sa("198.18.2.3:53")
                ),
                (
                    sa("198.18.1.2:5001"),
                    sa("198.19.0.54:53"),
                    sa("198.18.2.3:53")
                ),
                (
                    sa("198.18.1.4:5000"),
                    sa("198.19.0.53:53"),
                    sa("198.18.1.3:53")
                ),
                (
                    sa("198.18.1.5:5000"),
                    sa("198.19.0.53:53"),
                    sa("198.18.2.3:53")
                ),
            ],
            "the IPv4 dump, with the reply source of each"
        );
        assert_eq!(ct.udp_flows(true).expect("IPv6 dump").len(), 1);

        // pod2b (198.18.2.3) left dns; dns6 was deleted; 198.19.0.54 was
        // not touched by the sync.
        let frontends: Frontends = [
            (sa("198.19.0.53:53"), Some([sa("198.18.1.3:53")].into())),
            (sa("192.0.2.1:30053"), Some([sa("198.18.1.3:53")].into())),
            (sa("[2001:db8:2::53]:53"), None),
        ]
        .into();
        assert_eq!(flows::clear(&mut ct, &frontends).expect("clear").deleted, 4);
        assert_eq!(
            sorted(ct.udp_flows(false).expect("IPv4 dump")),
            vec![
                (
                    sa("198.18.1.2:5001"),
                    sa("198.19.0.54:53"),
                    sa("198.18.2.3:53")
                ),
                (
                    sa("198.18.1.4:5000"),
                    sa("198.19.0.53:53"),
                    sa("198.18.1.3:53")
                ),
            ],
            "what the removals did not make stale stays"
        );
        assert!(ct.udp_flows(true).expect("IPv6 dump").is_empty());
        // Deleting what is gone already is not an error.
        let first = Flow {
            orig_src: sa("198.18.1.2:5000"),
            orig_dst: sa("198.19.0.53:53"),
            reply_src: sa("198.18.2.3:53"),
            zone: None,
            id: None,
        };
        assert!(!ct.delete(&first).expect("delete again"));
        assert_eq!(
            flows::clear(&mut ct, &frontends)
                .expect("clear again")
                .deleted,
            0
        );
    });
}
