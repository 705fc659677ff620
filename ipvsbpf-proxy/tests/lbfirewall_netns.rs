//! The `ipvs-bpf` mode's source-range filter against the real `nft` and
//! kernel, in a network namespace of the test's own: the table the proxy
//! writes must load, refuse the sources outside a load balancer's ranges
//! and let the listed ones through, follow a change and go on cleanup.
//!
//! Everything happens on `lo`: the load balancer address and the client
//! addresses are local, so each connection's SYN crosses the output hook,
//! which carries the same rule as prerouting. Nothing here needs IPVS.
//! A host that cannot make a namespace (not root) or has no `nft` fails
//! the test in a strict run (`make test`, CI) and skips it otherwise, with
//! a `SKIP:` line naming what is missing ([`netns::require`]).

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::time::Duration;

use ipvs_netlink::{Service, ServiceKey};
use ipvsbpf_proxy::backends::ipvsmode::ExecRunner;
use ipvsbpf_proxy::backends::lbfirewall::{LbFirewall, TABLE};
use ipvsbpf_proxy::model::desired::{
    NodeState, ServiceName, ServiceState, SourceRanges, VirtualServer, VsKind,
};
use netns::{have, in_netns_or_skip, require, run};

mod netns;

const LB4: &str = "203.0.113.5";
const LB6: &str = "2001:db8::7";
const PORT: u16 = 8443;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn state(ranges4: &[&str], ranges6: &[&str]) -> NodeState {
    let lb = |addr: &str, ranges: &[&str]| VirtualServer {
        service: Service::new(ServiceKey::tcp(ip(addr), PORT), "rr"),
        destinations: vec![],
        kind: VsKind::LoadBalancer,
        masquerade: true,
        local_only: false,
        source_ranges: (!ranges.is_empty()).then(|| SourceRanges {
            ranges: ranges.iter().map(|r| r.parse().unwrap()).collect(),
            allow_from_node: false,
        }),
    };
    let mut st = NodeState::default();
    st.services.insert(
        ServiceName::new("default", "web-fw"),
        ServiceState {
            virtual_servers: vec![lb(LB4, ranges4), lb(LB6, ranges6)],
            health_check: None,
        }
        .into(),
    );
    st
}

/// Whether a TCP connection from `src` to `dst` is accepted.
fn connects(src: &str, dst: &str) -> bool {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let src = SocketAddr::new(ip(src), 0);
        let dst = SocketAddr::new(ip(dst), PORT);
        let sock = if src.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }
        .expect("socket");
        sock.bind(src).expect("bind the client address");
        matches!(
            tokio::time::timeout(Duration::from_secs(2), sock.connect(dst)).await,
            Ok(Ok(_))
        )
    })
}

/// The packets counted by the rules matching against `set`, over both
/// hooks, in `nft list table` output.
fn drops(listed: &str, set: &str) -> u64 {
    listed
        .lines()
        .filter(|l| l.contains(set))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "packets")?;
            words.next()?.parse::<u64>().ok()
        })
        .sum()
}

/// Whether `nft` is here; without it a strict run fails, naming the
/// set-up step ([`require`]).
fn have_nft() -> bool {
    require(
        have("nft"),
        "nft is not installed",
        "run testbed/setup (Debian package nftables)",
    )
}

fn nft_table_exists() -> bool {
    run("nft", &["list", "tables"]).contains(TABLE)
}

#[test]
fn source_ranges_drop_and_pass_on_the_real_kernel() {
    if !have_nft() {
        return;
    }
    in_netns_or_skip(|| {
        for a in [
            "203.0.113.5/32",
            "198.51.100.1/32",
            "192.0.2.50/32",
            "2001:db8::7/128",
            "2001:db8:1::1/128",
            "2001:db8:2::1/128",
        ] {
            run("ip", &["addr", "add", a, "dev", "lo"]);
        }
        let _l4 = TcpListener::bind((ip(LB4), PORT)).expect("listen on the v4 LB address");
        let _l6 = TcpListener::bind((ip(LB6), PORT)).expect("listen on the v6 LB address");
        assert!(connects("192.0.2.50", LB4), "open before any filter");

        let mut fw = LbFirewall::new(ExecRunner);
        assert!(fw
            .sync(&state(&["198.51.100.0/24"], &["2001:db8:1::/48"]), false)
            .expect("nft loads the table"));
        assert!(nft_table_exists());
        assert!(connects("198.51.100.1", LB4), "a listed v4 source passes");
        assert!(
            !connects("192.0.2.50", LB4),
            "an unlisted v4 source is dropped"
        );
        assert!(connects("2001:db8:1::1", LB6), "a listed v6 source passes");
        assert!(
            !connects("2001:db8:2::1", LB6),
            "an unlisted v6 source is dropped"
        );
        let listed = run("nft", &["list", "table", "inet", TABLE]);
        assert!(
            drops(&listed, "@allowed4") > 0,
            "v4 drops counted:\n{listed}"
        );
        assert!(
            drops(&listed, "@allowed6") > 0,
            "v6 drops counted:\n{listed}"
        );

        // A full sync finds the table as written and leaves it, with the
        // counters an operator reads; after a flush it writes it again.
        let both = state(&["198.51.100.0/24"], &["2001:db8:1::/48"]);
        assert!(!fw.sync(&both, true).expect("full sync"), "intact: kept");
        let again = run("nft", &["list", "table", "inet", TABLE]);
        assert_eq!(
            drops(&again, "@allowed4"),
            drops(&listed, "@allowed4"),
            "the counters survive a full sync:\n{again}"
        );
        run("nft", &["flush", "table", "inet", TABLE]);
        assert!(connects("192.0.2.50", LB4), "open once flushed");
        assert!(fw.sync(&both, true).expect("repair"), "flushed: rewritten");
        assert!(!connects("192.0.2.50", LB4), "filtered again");

        // A change replaces the table: the v4 range moves, the v6 one goes.
        assert!(fw
            .sync(&state(&["192.0.2.0/24"], &[]), false)
            .expect("rewrite"));
        assert!(connects("192.0.2.50", LB4), "the new range passes");
        assert!(!connects("198.51.100.1", LB4), "the old range is dropped");
        assert!(
            connects("2001:db8:2::1", LB6),
            "v6 open again without ranges"
        );

        // No ranges at all: no table.
        fw.sync(&state(&[], &[]), false).expect("remove");
        assert!(!nft_table_exists());
        assert!(connects("198.51.100.1", LB4));

        fw.sync(&state(&["198.51.100.0/24"], &[]), false)
            .expect("again");
        fw.cleanup().expect("cleanup");
        assert!(!nft_table_exists());
        fw.cleanup().expect("cleanup of a clean node");
    });
}

/// A connection from this host to `dst:port`: `Ok` if accepted, else the
/// error, or `TimedOut` after 3 s.
fn connect_error(dst: &str, port: u16) -> std::io::ErrorKind {
    let dst = SocketAddr::new(ip(dst), port);
    match std::net::TcpStream::connect_timeout(&dst, Duration::from_secs(3)) {
        Ok(_) => std::io::ErrorKind::Other,
        Err(e) => e.kind(),
    }
}

#[test]
fn cluster_ip_ports_without_virtual_server_are_refused() {
    if !have_nft() {
        return;
    }
    in_netns_or_skip(|| {
        // The ClusterIPs are not local (bpf_mode has no kube-ipvs0): they
        // are routed to a gateway that never answers, as on a node. The
        // gateway's neighbour entries are static, so the SYN leaves (to a
        // veth peer that drops it) rather than failing address resolution.
        for cmd in [
            "link add up0 type veth peer up1",
            "link set up0 up",
            "link set up1 up",
            "addr add 192.0.2.1/24 dev up0",
            "addr add 2001:db8::1/64 dev up0 nodad",
            "neigh add 192.0.2.254 lladdr 02:00:00:00:00:fe dev up0 nud permanent",
            "neigh add 2001:db8::fe lladdr 02:00:00:00:00:fe dev up0 nud permanent",
            "route add default via 192.0.2.254",
            "-6 route add default via 2001:db8::fe",
        ] {
            run("ip", &cmd.split(' ').collect::<Vec<_>>());
        }
        let cip = |addr: &str| VirtualServer {
            service: Service::new(ServiceKey::tcp(ip(addr), 80), "rr"),
            destinations: vec![],
            kind: VsKind::ClusterIp,
            masquerade: false,
            local_only: false,
            source_ranges: None,
        };
        let mut st = NodeState::default();
        st.services.insert(
            ServiceName::new("default", "web"),
            ServiceState {
                virtual_servers: vec![cip("198.19.0.10"), cip("2001:db8:2::a")],
                health_check: None,
            }
            .into(),
        );
        use std::io::ErrorKind::{ConnectionRefused, TimedOut};
        // Before: the SYN goes to the gateway and nothing answers.
        assert_eq!(connect_error("198.19.0.10", 8080), TimedOut);

        let mut fw = LbFirewall::new(ExecRunner);
        assert!(fw.sync(&st, false).expect("nft loads the table"));
        // At once: not after a SYN retransmission (1 s).
        for addr in ["198.19.0.10", "2001:db8:2::a"] {
            let t = std::time::Instant::now();
            assert_eq!(connect_error(addr, 8080), ConnectionRefused, "{addr}");
            assert!(
                t.elapsed() < Duration::from_millis(500),
                "{addr}: {:?}",
                t.elapsed()
            );
        }
        // Another address is routed as before.
        assert_eq!(connect_error("198.19.0.11", 8080), TimedOut);
        let listed = run("nft", &["list", "table", "inet", TABLE]);
        assert!(
            drops(&listed, "@cluster_ips4") > 0,
            "v4 rejects counted:\n{listed}"
        );

        // The Service goes: so does its address.
        fw.sync(&NodeState::default(), false).expect("remove");
        assert!(!nft_table_exists());
        assert_eq!(connect_error("198.19.0.10", 8080), TimedOut);
    });
}
