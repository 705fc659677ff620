//! Host integration test of the SNAT programs on real devices, no IPVS:
//!
//! ```text
//!  client netns            node netns                      server netns
//!  c0 192.0.2.100 ---- nc 192.0.2.1 | ns 198.18.1.1 ---- s0 198.18.1.10
//!     2001:db8::100       2001:db8::1 | 2001:db8:1::1       2001:db8:1::10
//!                                    [tc: ipvsbpf_egress / ipvsbpf_ingress]
//! ```
//!
//! The test writes session entries the way IPVS would (client -> server,
//! SNAT to the node's own uplink address 198.18.1.1 / 2001:db8:1::1) and
//! runs real TCP, UDP (fragmented) and ICMP traffic between the two ends of
//! `tests/veth_peer.py`. The server
//! must see the SNAT address and port; the client must get every byte back
//! from the address it connected to.
//!
//! Checksums are proved by the receivers: every receiving veth has rx
//! checksumming off, so the kernel verifies every segment. The node's
//! outgoing veths have tx checksumming off, so the kernel completes
//! checksums (and segments GSO packets) in software after the rewrite. Three
//! settings run side by side:
//! - `offload`: the senders keep tx checksum offload and TSO, so the
//!   programs see CHECKSUM_PARTIAL GSO packets and must update the
//!   pseudo-header sum the kernel finishes from;
//! - `gro`: the senders send MTU-sized, fully checksummed segments and the
//!   node's veths merge them with GRO, so the programs see GRO packets
//!   (CHECKSUM_PARTIAL once GRO completes them);
//! - `plain`: no offload and no GRO; the programs update full checksums.
//!
//! Needs root, `ip`, `ethtool`, `ss` and Debian's python3; without them it
//! fails, naming the missing tools and the set-up step.

mod common;
mod netns;

use std::fs::File;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use ipvsbpf_proxy::backends::datapath::{Datapath, Direction, LinkLayer, Reason};

struct Topology {
    client: String,
    node: String,
    server: String,
    servers: Vec<Child>,
    dir: std::path::PathBuf,
}

impl Drop for Topology {
    fn drop(&mut self) {
        for c in &mut self.servers {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            // the servers' side of a failure, before the directory goes
            for kind in ["tcp", "udp"] {
                let log = self.dir.join(format!("{kind}-server.log"));
                if let Ok(text) = std::fs::read_to_string(&log) {
                    if !text.is_empty() {
                        eprintln!("--- {kind} server stderr ---\n{text}");
                    }
                }
            }
        }
        for ns in [&self.client, &self.node, &self.server] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn sh(cmd: &str) -> Output {
    let out = Command::new("sh")
        .args(["-c", cmd])
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl Topology {
    fn new(tag: &str, mode: Mode) -> Topology {
        let missing = netns::missing_tools(&["ip", "ethtool", "ss", "timeout", "/usr/bin/python3"]);
        assert!(
            missing.is_empty(),
            "tools that do not run here: {missing:?}: run testbed/setup \
             (Debian packages iproute2, ethtool, coreutils, python3)"
        );
        let id = format!("{}-{tag}", std::process::id());
        let dir = std::env::temp_dir().join(format!("ipvsbpf-veth-{id}"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let t = Topology {
            client: format!("ipvsbpf-c-{id}"),
            node: format!("ipvsbpf-n-{id}"),
            server: format!("ipvsbpf-s-{id}"),
            servers: Vec::new(),
            dir,
        };
        let (c, n, s) = (&t.client, &t.node, &t.server);
        for ns in [c, n, s] {
            sh(&format!("ip netns add {ns} && ip -n {ns} link set lo up"));
        }
        sh(&format!(
            "ip link add c0 netns {c} type veth peer name nc netns {n}"
        ));
        sh(&format!(
            "ip link add s0 netns {s} type veth peer name ns netns {n}"
        ));
        sh(&format!(
            "ip -n {c} addr add 192.0.2.100/24 dev c0 && \
             ip -n {c} addr add 2001:db8::100/64 dev c0 nodad && \
             ip -n {c} link set c0 up && \
             ip -n {c} route add default via 192.0.2.1 && \
             ip -n {c} -6 route add default via 2001:db8::1 && \
             ip -n {n} addr add 192.0.2.1/24 dev nc && \
             ip -n {n} addr add 2001:db8::1/64 dev nc nodad && \
             ip -n {n} addr add 198.18.1.1/24 dev ns && \
             ip -n {n} addr add 2001:db8:1::1/64 dev ns nodad && \
             ip -n {n} link set nc up && ip -n {n} link set ns up && \
             ip netns exec {n} sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 && \
             ip -n {s} addr add 198.18.1.10/24 dev s0 && \
             ip -n {s} addr add 2001:db8:1::10/64 dev s0 nodad && \
             ip -n {s} link set s0 up && \
             ip -n {s} route add default via 198.18.1.1 && \
             ip -n {s} -6 route add default via 2001:db8:1::1"
        ));
        // Receivers verify every checksum; the node's transmitters
        // complete checksums in software.
        let mut settings = vec![
            format!("ip netns exec {c} ethtool -K c0 rx off"),
            format!("ip netns exec {s} ethtool -K s0 rx off"),
            format!("ip netns exec {n} ethtool -K nc tx off rx off"),
            format!("ip netns exec {n} ethtool -K ns tx off rx off"),
        ];
        if mode != Mode::Offload {
            settings.push(format!("ip netns exec {c} ethtool -K c0 tx off"));
            settings.push(format!("ip netns exec {s} ethtool -K s0 tx off"));
        }
        if mode == Mode::Gro {
            // veth runs NAPI, hence GRO, once GRO is switched on
            settings.push(format!("ip netns exec {n} ethtool -K nc gro on"));
            settings.push(format!("ip netns exec {n} ethtool -K ns gro on"));
        }
        for cmd in settings {
            sh(&format!("{cmd} >/dev/null"));
        }
        t
    }

    /// Attaches the programs to the node's server-facing veth; the calling
    /// thread enters the node's netns for the netlink calls and comes back.
    fn attach(&self, dp: &Datapath<'_>) {
        let home = File::open("/proc/thread-self/ns/net").expect("own netns");
        let node = File::open(format!("/run/netns/{}", self.node)).expect("node netns");
        // SAFETY: setns(2) on fds we own; only this thread changes netns.
        let rc = unsafe { libc::setns(node.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns node: {}", std::io::Error::last_os_error());
        // SAFETY: a NUL-terminated literal.
        let ifindex = unsafe { libc::if_nametoindex(c"ns".as_ptr()) };
        let attached = dp.attach(ifindex as i32, LinkLayer::Ethernet);
        // SAFETY: as above, back to where the thread started.
        let back = unsafe { libc::setns(home.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(back, 0, "setns back: {}", std::io::Error::last_os_error());
        assert!(ifindex > 0, "no device ns in the node netns");
        attached.expect("attach to ns");
    }

    /// Starts a peer server in the server netns and waits until it listens.
    fn serve(&mut self, kind: &str, port: u16) {
        // `ip netns exec` execs python itself, so kill() on Drop reaches it
        let log = File::create(self.dir.join(format!("{kind}-server.log"))).expect("log");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.server, "/usr/bin/python3"])
            .arg(peer_script())
            .args([&format!("{kind}-server"), &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn server");
        self.servers.push(child);
        let flag = if kind == "tcp" { "-ltnH" } else { "-lunH" };
        // Python's start alone took over 10 s on the debug kernel (KASAN)
        // under TCG; a deadline, so a fast host pays nothing for it.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = sh(&format!(
                "ip netns exec {} ss {flag} 'sport = :{port}'",
                self.server
            ));
            if !out.stdout.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{kind} server on {port} never listened"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs a peer client in the client netns, bounded in time; its
    /// answer line.
    fn client(&self, args: &[String]) -> String {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.client,
                "timeout",
                "60",
                "/usr/bin/python3",
            ])
            .arg(peer_script())
            .args(args)
            .output()
            .expect("run client");
        assert!(
            out.status.success(),
            "client {args:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

fn peer_script() -> std::path::PathBuf {
    std::path::PathBuf::from(common::package_dir()).join("tests/veth_peer.py")
}

struct Family {
    client: &'static str,
    server: &'static str,
    snat: &'static str,
    name: &'static str,
}

const V4: Family = Family {
    client: "192.0.2.100",
    server: "198.18.1.10",
    snat: "198.18.1.1",
    name: "IPv4",
};
const V6: Family = Family {
    client: "2001:db8::100",
    server: "2001:db8:1::10",
    snat: "2001:db8:1::1",
    name: "IPv6",
};

/// Offload settings of a topology (module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Offload,
    Gro,
    Plain,
}

fn run_topology(tag: &str, mode: Mode) {
    let mut t = Topology::new(tag, mode);
    let mut storage = MaybeUninit::uninit();
    let dp = load(&mut storage);
    t.attach(&dp);

    t.serve("tcp", 8080);
    t.serve("udp", 5353);

    for (fam, base_port) in [(&V4, 41000u16), (&V6, 42000u16)] {
        let what = format!("{tag} {}", fam.name);
        let ports = [
            base_port,
            base_port + 1,
            base_port + 2,
            base_port + 3,
            base_port + 4,
        ];
        let snat_ports = ports.map(|p| p + 20000);
        let flows = [
            (L4::Tcp, 8080),
            (L4::Udp, 5353),
            (L4::Udp, 9999),
            (L4::Tcp, 8080),
            (L4::Tcp, 8080),
        ];
        for (i, (l4, sport)) in flows.into_iter().enumerate() {
            let at = |a: &str, p: u16| SocketAddr::new(a.parse().expect("address"), p);
            let entries = ipvs_entries(
                l4,
                at(fam.client, ports[i]),
                at(fam.server, sport),
                Some(at(fam.snat, snat_ports[i])),
            );
            for (k, v) in entries {
                dp.put_session(&k, &v).expect("session");
            }
        }
        let args = |kind: &str, port: u16, dport: u16, rest: &[&str]| -> Vec<String> {
            [
                kind,
                fam.client,
                &port.to_string(),
                fam.server,
                &dport.to_string(),
            ]
            .iter()
            .chain(rest)
            .map(|s| s.to_string())
            .collect()
        };

        // TCP: 4 MB up, 2 MB down
        let answer = t.client(&args("tcp-client", ports[0], 8080, &["4000000", "2000000"]));
        assert_eq!(
            answer,
            format!("{} {} 4000000 2000000", fam.snat, snat_ports[0]),
            "{what} TCP: the server sees the SNAT address and port, every byte \
             arrives both ways"
        );

        // One direction at a time, to see the packets that crossed each
        // hook: data one way, only ACKs the other
        for (i, up, down, dir) in [
            (3, 8_000_000, 0, Direction::Orig),
            (4, 0, 8_000_000, Direction::Reply),
        ] {
            let before = dp.counter(dir, Reason::Xlated).expect("counter");
            let answer = t.client(&args(
                "tcp-client",
                ports[i],
                8080,
                &[&up.to_string(), &down.to_string()],
            ));
            assert_eq!(
                answer,
                format!("{} {} {up} {down}", fam.snat, snat_ports[i]),
                "{what} TCP one way"
            );
            let after = dp.counter(dir, Reason::Xlated).expect("counter");
            let (packets, bytes) = (after.packets - before.packets, after.bytes - before.bytes);
            if mode != Mode::Plain {
                // More bytes than MTU-sized frames can carry: GSO (or GRO)
                // packets crossed the hook and were segmented after it
                assert!(
                    bytes > packets * 1514,
                    "{what}: no GSO packet at {}: {packets} packets, {bytes} bytes",
                    dir.name()
                );
            } else {
                // and none without offload: the check above can fail
                assert!(
                    bytes <= packets * 1514,
                    "{what}: GSO packets with offload off at {}",
                    dir.name()
                );
            }
        }

        // UDP: a 3000-byte datagram, fragmented on the way up
        let answer = t.client(&args("udp-client", ports[1], 5353, &["3000"]));
        assert_eq!(
            answer,
            format!("{} {} 3000", fam.snat, snat_ports[1]),
            "{what} UDP"
        );

        // ICMP: a closed port answers "port unreachable" to the SNAT
        // address; translated back, it reaches the client's socket
        let answer = t.client(&args("udp-client", ports[2], 9999, &["10"]));
        assert_eq!(answer, "refused", "{what} ICMP port unreachable");
    }

    let count = |d, r| dp.counter(d, r).expect("counter");
    let up = count(Direction::Orig, Reason::Xlated);
    let down = count(Direction::Reply, Reason::Xlated);
    assert!(up.packets > 0 && down.packets > 0, "{tag}: {up:?} {down:?}");
    // two families, one 3000-byte datagram each: two later fragments
    assert!(
        count(Direction::Orig, Reason::FragXlated).packets >= 4,
        "{tag}: fragments"
    );
    assert!(
        count(Direction::Reply, Reason::IcmpXlated).packets >= 2,
        "{tag}: ICMP errors"
    );
    for dir in Direction::ALL {
        for r in [
            Reason::DropWrite,
            Reason::DropSctpPort,
            Reason::ErrL3,
            Reason::ErrL4,
        ] {
            assert_eq!(count(dir, r).packets, 0, "{tag}: {dir:?} {r:?}");
        }
    }
    eprintln!("{tag}: {:?}", dp.counters().expect("counters"));
}

#[test]
fn offload_partial_gso() {
    run_topology("offload", Mode::Offload);
}

#[test]
fn gro_merged() {
    run_topology("gro", Mode::Gro);
}

#[test]
fn plain_full_checksums() {
    run_topology("plain", Mode::Plain);
}
