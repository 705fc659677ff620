//! What the `ipvs-bpf` mode reads to follow the cluster CIDR's devices,
//! against the real kernel in a network namespace of the test's own: the
//! devices of the routes that overlap the cluster CIDR (not the default
//! route's, not another prefix's), and the route watch that wakes the
//! proxy when a route comes or goes. The programs themselves and their
//! attachment are tested in the guest (suites proxy-ipvs-bpf and
//! proxy-topologies), where IPVS is.

use std::sync::mpsc;
use std::time::Duration;

use ipvsbpf_proxy::backends::hostinfo;
use netns::{in_netns_or_skip, run};

mod netns;

fn veth(a: &str, b: &str) {
    run("ip", &["link", "add", a, "type", "veth", "peer", "name", b]);
    run("ip", &["link", "set", a, "up"]);
    run("ip", &["link", "set", b, "up"]);
}

#[test]
fn devices_that_route_the_cluster_cidr() {
    in_netns_or_skip(|| {
        veth("up0", "up0p");
        veth("pod0", "pod0p");
        veth("tun0", "tun0p");
        veth("other0", "other0p");
        run("ip", &["addr", "add", "192.0.2.1/24", "dev", "up0"]);
        run("ip", &["route", "add", "default", "via", "192.0.2.254"]);
        // a pod (/32), another node's pod CIDR over an overlay (/24), a
        // prefix outside the cluster; and an IPv6 pod
        run("ip", &["route", "add", "198.18.1.2/32", "dev", "pod0"]);
        run(
            "ip",
            &[
                "route",
                "add",
                "198.18.2.0/24",
                "via",
                "198.18.2.0",
                "dev",
                "tun0",
                "onlink",
            ],
        );
        run("ip", &["route", "add", "198.19.0.0/16", "dev", "other0"]);
        run(
            "ip",
            &["-6", "route", "add", "2001:db8:1:1::2/128", "dev", "pod0"],
        );
        let cluster = [
            "198.18.0.0/16".parse().unwrap(),
            "2001:db8:1::/48".parse().unwrap(),
        ];
        let found = hostinfo::devices_routing(&cluster).expect("reading the routes");
        assert_eq!(found, ["pod0", "tun0"]);
        assert_eq!(hostinfo::default_route_devices().unwrap(), ["up0"]);
        // IPv6 only: the pod's /128 alone makes pod0 count.
        let v6 = ["2001:db8:1::/48".parse().unwrap()];
        assert_eq!(hostinfo::devices_routing(&v6).unwrap(), ["pod0"]);
    });
}

#[test]
fn a_route_change_wakes_the_watch() {
    in_netns_or_skip(|| {
        veth("pod0", "pod0p");
        let (tx, rx) = mpsc::channel();
        hostinfo::watch_routes(move || {
            let _ = tx.send(());
        })
        .expect("watching routes");
        // Bringing devices up made no route the watch could have missed
        // before it started; drain anything that came meanwhile.
        while rx.recv_timeout(Duration::from_millis(200)).is_ok() {}
        run("ip", &["route", "add", "198.18.1.2/32", "dev", "pod0"]);
        rx.recv_timeout(Duration::from_secs(5))
            .expect("no wake-up for an added IPv4 route");
        while rx.recv_timeout(Duration::from_millis(200)).is_ok() {}
        run(
            "ip",
            &["-6", "route", "add", "2001:db8:1:1::2/128", "dev", "pod0"],
        );
        rx.recv_timeout(Duration::from_secs(5))
            .expect("no wake-up for an added IPv6 route");
        while rx.recv_timeout(Duration::from_millis(200)).is_ok() {}
        run("ip", &["route", "del", "198.18.1.2/32", "dev", "pod0"]);
        rx.recv_timeout(Duration::from_secs(5))
            .expect("no wake-up for a deleted route");
    });
}
