//! The reconciler against the kernel's IPVS through `ipvs_netlink::Ipvs`,
//! checked with `ipvsadm`.
//!
//! Every test needs IPVS, `ipvsadm` and `CAP_NET_ADMIN`, so each is ignored
//! by a plain `cargo test`: the testbed guest runs them with `--ignored
//! --test-threads=1`. Each runs in a network namespace of its own (IPVS
//! state is per netns): the test's thread unshares it and brings `lo` up,
//! and the `ipvsadm` children it spawns inherit the namespace from that
//! thread.
//!
//! What the kernel holds is read back by parsing `ipvsadm -S -n` into
//! values and comparing them with the desired state, never by formatting
//! the desired state as ipvsadm would.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use ipvs_netlink::{Destination, ForwardMethod, Ipvs, Protocol, Service, ServiceFlags, ServiceKey};
use ipvsbpf_proxy::model::desired::{ServiceName, ServiceState, VirtualServer, VsKind};
use ipvsbpf_proxy::reconcile::{ReconcileOptions, Reconciler, SyncReport};
use netns::{run, try_in_netns};

mod netns;

// ---- running in a namespace of one's own --------------------------------

/// Runs `f` in a network namespace of its own with `lo` up; these tests
/// need one, so a host that cannot make it fails them.
fn in_netns<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    try_in_netns(f).unwrap_or_else(|e| panic!("unshare(CLONE_NEWNET): {e}"))
}

fn reconciler(drain_timeout: Duration, exclude_cidrs: Vec<(IpAddr, u8)>) -> Reconciler<Ipvs> {
    let ipvs = Ipvs::connect().expect("connect to IPVS (is ip_vs loaded?)");
    Reconciler::new(
        ipvs,
        ReconcileOptions {
            exclude_cidrs,
            drain_timeout: Some(drain_timeout),
        },
    )
}

fn sync(r: &mut Reconciler<Ipvs>, full: bool, now: Instant) -> SyncReport {
    let report = r.sync(full, now);
    assert!(report.failed.is_empty(), "failures: {:?}", report.failed);
    report
}

// ---- desired state -----------------------------------------------------------

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn name(n: &str) -> ServiceName {
    ServiceName::new("default", n)
}

fn vs(service: Service, dests: &[(&str, u16, u32)]) -> VirtualServer {
    VirtualServer {
        service,
        destinations: dests
            .iter()
            .map(|(a, p, w)| Destination::new(ip(a), *p).weight(*w))
            .collect(),
        kind: VsKind::ClusterIp,
        masquerade: false,
        local_only: false,
        source_ranges: None,
    }
}

fn state(vss: &[VirtualServer]) -> ServiceState {
    ServiceState {
        virtual_servers: vss.to_vec(),
        health_check: None,
    }
}

// ---- ipvsadm -S -n as values ---------------------------------------------------

/// One line of `ipvsadm -S -n`, reduced to what the tests program.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Rule {
    Service {
        key: ServiceKey,
        scheduler: String,
        /// Persistence timeout (`-p`).
        persistent: Option<u32>,
    },
    Dest {
        key: ServiceKey,
        real: SocketAddr,
        /// `-m`, `-g` or `-i`.
        fwd: String,
        weight: u32,
    },
}

fn parse_rules(text: &str) -> Vec<Rule> {
    let mut rules = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let value = |i: usize| -> &str {
            words
                .get(i + 1)
                .copied()
                .unwrap_or_else(|| panic!("{} needs a value in {line:?}", words[i]))
        };
        let (mut key, mut sched, mut persistent) = (None, "wlc".to_string(), None);
        let (mut real, mut fwd, mut weight) = (None, "-g".to_string(), 1);
        let mut i = 1;
        while i < words.len() {
            let mut step = 2;
            match words[i] {
                "-t" | "-u" | "--sctp-service" => {
                    let protocol = match words[i] {
                        "-t" => Protocol::Tcp,
                        "-u" => Protocol::Udp,
                        _ => Protocol::Sctp,
                    };
                    let a: SocketAddr = value(i).parse().expect("virtual address");
                    key = Some(ServiceKey::Tuple {
                        protocol,
                        addr: a.ip(),
                        port: a.port(),
                    });
                }
                "-s" => sched = value(i).to_string(),
                "-p" => match words.get(i + 1).and_then(|v| v.parse().ok()) {
                    Some(t) => persistent = Some(t),
                    None => {
                        persistent = Some(360);
                        step = 1;
                    }
                },
                "-M" | "-b" | "--pe" => {}
                "-r" => real = Some(value(i).parse().expect("real server")),
                "-m" | "-g" | "-i" => {
                    fwd = words[i].to_string();
                    step = 1;
                }
                "-w" => weight = value(i).parse().expect("weight"),
                other => panic!("option {other:?} in {line:?}"),
            }
            i += step;
        }
        let key = key.unwrap_or_else(|| panic!("no virtual service in {line:?}"));
        match words[0] {
            "-A" => rules.push(Rule::Service {
                key,
                scheduler: sched,
                persistent,
            }),
            "-a" => rules.push(Rule::Dest {
                key,
                real: real.unwrap_or_else(|| panic!("no real server in {line:?}")),
                fwd,
                weight,
            }),
            other => panic!("command {other:?} in {line:?}"),
        }
    }
    rules.sort();
    rules
}

fn kernel_rules() -> Vec<Rule> {
    parse_rules(&run("ipvsadm", &["-S", "-n"]))
}

/// The rules `vss` should show as.
fn rules_of(vss: &[&VirtualServer]) -> Vec<Rule> {
    let mut rules = Vec::new();
    for v in vss {
        let s = &v.service;
        rules.push(Rule::Service {
            key: s.key,
            scheduler: s.scheduler.clone(),
            persistent: s
                .flags
                .contains(ServiceFlags::PERSISTENT)
                .then_some(s.timeout),
        });
        for d in &v.destinations {
            rules.push(Rule::Dest {
                key: s.key,
                real: SocketAddr::new(d.addr, d.port),
                fwd: match d.fwd {
                    ForwardMethod::Masq => "-m",
                    ForwardMethod::Tunnel => "-i",
                    ForwardMethod::Route | ForwardMethod::Local => "-g",
                }
                .to_string(),
                weight: d.weight,
            });
        }
    }
    rules.sort();
    rules
}

fn web() -> VirtualServer {
    vs(
        Service::new(ServiceKey::tcp(ip("198.19.0.10"), 80), "rr"),
        &[("198.18.1.2", 8080, 1), ("198.18.2.2", 8080, 1)],
    )
}

fn dns() -> VirtualServer {
    vs(
        Service::new(ServiceKey::udp(ip("198.19.0.53"), 53), "rr"),
        &[("198.18.1.3", 53, 1)],
    )
}

fn web6() -> VirtualServer {
    vs(
        Service::new(ServiceKey::tcp(ip("fd00:19::10"), 443), "wrr").persistent(10800),
        &[("fd00:18:1::2", 8443, 2)],
    )
}

// ---- the tests ------------------------------------------------------------------

#[test]
#[ignore = "needs IPVS, ipvsadm and CAP_NET_ADMIN: run in the testbed guest"]
fn programs_services_from_scratch() {
    in_netns(|| {
        let mut r = reconciler(Duration::from_secs(60), Vec::new());
        r.set_service(&name("web"), Some(&state(&[web(), web6()])));
        r.set_service(&name("dns"), Some(&state(&[dns()])));
        let report = sync(&mut r, false, Instant::now());
        assert_eq!(report.requests, 3 + 4, "3 services, 4 destinations");
        assert_eq!(kernel_rules(), rules_of(&[&web(), &dns(), &web6()]));
        // What the kernel echoes back matches what was asked: nothing to
        // do, incrementally or after a full re-read.
        for full in [false, true] {
            let report = sync(&mut r, full, Instant::now());
            assert_eq!(report.requests, 0, "full={full}");
        }
    });
}

#[test]
#[ignore = "needs IPVS, ipvsadm and CAP_NET_ADMIN: run in the testbed guest"]
fn adopts_a_previous_run_without_writing() {
    in_netns(|| {
        {
            // The previous run.
            let mut r = reconciler(Duration::from_secs(60), Vec::new());
            r.set_service(&name("web"), Some(&state(&[web()])));
            r.set_service(&name("dns"), Some(&state(&[dns()])));
            sync(&mut r, false, Instant::now());
        }
        // Left behind, and someone else's (in an excluded prefix).
        run("ipvsadm", &["-A", "-t", "198.19.0.99:80", "-s", "rr"]);
        run("ipvsadm", &["-A", "-t", "192.0.2.7:80", "-s", "rr"]);
        let before = kernel_rules();

        let mut r = reconciler(Duration::from_secs(60), vec![(ip("192.0.2.0"), 24)]);
        let adopted = r.adopt().expect("adopt");
        assert_eq!(
            (
                adopted.virtual_servers,
                adopted.destinations,
                adopted.excluded
            ),
            (4, 3, 1)
        );
        r.set_service(&name("web"), Some(&state(&[web()])));
        r.set_service(&name("dns"), Some(&state(&[dns()])));
        let report = sync(&mut r, false, Instant::now());
        assert_eq!(report.requests, 0);
        assert_eq!(kernel_rules(), before, "nothing written before a full sync");

        let report = sync(&mut r, true, Instant::now());
        assert_eq!(report.requests, 1, "the stale one goes");
        let foreign = vs(
            Service::new(ServiceKey::tcp(ip("192.0.2.7"), 80), "rr"),
            &[],
        );
        assert_eq!(kernel_rules(), rules_of(&[&web(), &dns(), &foreign]));
    });
}

#[test]
#[ignore = "needs IPVS, ipvsadm and CAP_NET_ADMIN: run in the testbed guest"]
fn changes_and_removal() {
    in_netns(|| {
        let mut r = reconciler(Duration::from_secs(60), Vec::new());
        r.set_service(&name("web"), Some(&state(&[web()])));
        r.set_service(&name("dns"), Some(&state(&[dns()])));
        sync(&mut r, false, Instant::now());

        // Scheduler and a weight: one EditService, one EditDestination.
        let changed = vs(
            Service::new(ServiceKey::tcp(ip("198.19.0.10"), 80), "wrr"),
            &[("198.18.1.2", 8080, 1), ("198.18.2.2", 8080, 5)],
        );
        r.set_service(&name("web"), Some(&state(std::slice::from_ref(&changed))));
        let report = sync(&mut r, false, Instant::now());
        assert_eq!(report.requests, 2);
        assert_eq!(kernel_rules(), rules_of(&[&changed, &dns()]));

        // A UDP endpoint replaced: added, the old one deleted at once.
        let moved = vs(dns().service, &[("198.18.2.3", 53, 1)]);
        r.set_service(&name("dns"), Some(&state(std::slice::from_ref(&moved))));
        let report = sync(&mut r, false, Instant::now());
        assert_eq!(report.requests, 2);
        assert_eq!(kernel_rules(), rules_of(&[&changed, &moved]));

        // A removed Service: its virtual server deleted whole.
        r.set_service(&name("web"), None);
        let report = sync(&mut r, false, Instant::now());
        assert_eq!(report.requests, 1);
        assert_eq!(kernel_rules(), rules_of(&[&moved]));
        r.set_service(&name("dns"), None);
        sync(&mut r, false, Instant::now());
        assert_eq!(kernel_rules(), vec![]);
    });
}

/// A TCP connection through a virtual server on `lo` whose real server is
/// the listener (the kernel makes that destination `Local`).
struct Traffic {
    listener: TcpListener,
    port: u16,
}

impl Traffic {
    fn new() -> Traffic {
        let listener = TcpListener::bind("127.0.0.1:0").expect("listen on lo");
        let port = listener.local_addr().expect("local address").port();
        Traffic { listener, port }
    }

    /// Opens a connection through the virtual server and exchanges a few
    /// bytes both ways; returns the client end, still open.
    fn connect(&self) -> (TcpStream, TcpStream) {
        let addr = SocketAddr::new(ip("127.0.0.1"), self.port);
        let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .expect("connect through IPVS");
        let (mut s, _) = self.listener.accept().expect("accept");
        c.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        c.write_all(b"hello").expect("write");
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).expect("read");
        s.write_all(b"world").expect("write");
        c.read_exact(&mut buf).expect("read");
        assert_eq!(&buf, b"world");
        (c, s)
    }
}

/// Closes with a RST (linger 0), so IPVS moves the connection to CLOSE
/// (10 s) instead of through FIN_WAIT and TIME_WAIT (minutes).
fn reset(stream: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on an open socket with a linger of the right size.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER: {}", std::io::Error::last_os_error());
    drop(stream);
}

/// The draining destination's (weight, active + inactive connections).
fn drain_state(r: &mut Reconciler<Ipvs>, key: &ServiceKey, addr: IpAddr) -> Option<(u32, u32)> {
    r.ipvs()
        .destinations(key)
        .expect("list destinations")
        .into_iter()
        .find(|d| d.addr == addr)
        .map(|d| (d.weight, d.active_conns() + d.inactive_conns()))
}

/// A virtual server at 127.0.0.1:`port` to the listener, one connection
/// open through it; then the endpoint is replaced by 127.0.0.2, so the
/// first destination drains.
fn start_drain(
    drain_timeout: Duration,
) -> (Reconciler<Ipvs>, ServiceKey, Traffic, TcpStream, TcpStream) {
    let traffic = Traffic::new();
    let key = ServiceKey::tcp(ip("127.0.0.1"), traffic.port);
    let mut r = reconciler(drain_timeout, Vec::new());
    let first = vs(Service::new(key, "rr"), &[("127.0.0.1", traffic.port, 1)]);
    r.set_service(&name("web"), Some(&state(&[first])));
    sync(&mut r, false, Instant::now());
    let report = sync(&mut r, true, Instant::now());
    assert_eq!(report.requests, 0, "a Local destination matches a NAT one");

    let (client, server) = traffic.connect();
    let next = vs(Service::new(key, "rr"), &[("127.0.0.2", traffic.port, 1)]);
    r.set_service(&name("web"), Some(&state(&[next])));
    let report = sync(&mut r, false, Instant::now());
    assert_eq!(report.requests, 2, "one added, one to weight 0");
    assert_eq!(report.draining, 1);
    let (weight, conns) = drain_state(&mut r, &key, ip("127.0.0.1")).expect("still there");
    assert_eq!(weight, 0);
    assert!(conns >= 1, "the open connection counts");
    (r, key, traffic, client, server)
}

#[test]
#[ignore = "needs IPVS, ipvsadm and CAP_NET_ADMIN: run in the testbed guest"]
fn tcp_destination_drains_until_its_connection_ends() {
    in_netns(|| {
        let (mut r, key, _traffic, client, server) = start_drain(Duration::from_secs(600));
        let report = sync(&mut r, false, Instant::now());
        assert_eq!(report.requests, 0, "kept while the connection lives");
        assert!(drain_state(&mut r, &key, ip("127.0.0.1")).is_some());

        reset(client);
        drop(server);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            std::thread::sleep(Duration::from_secs(1));
            let report = sync(&mut r, false, Instant::now());
            if report.drained == 1 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "never drained: {:?}",
                drain_state(&mut r, &key, ip("127.0.0.1"))
            );
        }
        assert_eq!(drain_state(&mut r, &key, ip("127.0.0.1")), None);
        assert!(drain_state(&mut r, &key, ip("127.0.0.2")).is_some());
        assert_eq!(r.draining(), 0);
    });
}

#[test]
#[ignore = "needs IPVS, ipvsadm and CAP_NET_ADMIN: run in the testbed guest"]
fn tcp_destination_drains_until_the_timeout() {
    in_netns(|| {
        let timeout = Duration::from_secs(30);
        let (mut r, key, _traffic, _client, _server) = start_drain(timeout);
        let report = sync(&mut r, false, Instant::now());
        assert_eq!(report.requests, 0);
        // The connection is still open; the timeout ends the drain anyway.
        let report = sync(&mut r, false, Instant::now() + timeout);
        assert_eq!((report.requests, report.drained), (1, 1));
        assert_eq!(drain_state(&mut r, &key, ip("127.0.0.1")), None);
    });
}

/// The `ipvsadm -S -n` reader itself, on the host: the guest tests are only
/// as good as it.
#[test]
fn parses_ipvsadm_save_output() {
    let text = "\
-A -t 198.19.0.10:80 -s wrr
-a -t 198.19.0.10:80 -r 198.18.1.2:8080 -m -w 5
-A -u 198.19.0.53:53 -s rr -p
-a -u 198.19.0.53:53 -r 198.18.1.3:53 -g -w 0
-A -t [fd00:19::10]:443 -s wrr -p 10800 -M 128
-a -t [fd00:19::10]:443 -r [fd00:18:1::2]:8443 -m -w 2
";
    let tcp = ServiceKey::tcp(ip("198.19.0.10"), 80);
    let udp = ServiceKey::udp(ip("198.19.0.53"), 53);
    let v6 = ServiceKey::tcp(ip("fd00:19::10"), 443);
    let mut want = vec![
        Rule::Service {
            key: tcp,
            scheduler: "wrr".into(),
            persistent: None,
        },
        Rule::Dest {
            key: tcp,
            real: "198.18.1.2:8080".parse().expect("addr"),
            fwd: "-m".into(),
            weight: 5,
        },
        Rule::Service {
            key: udp,
            scheduler: "rr".into(),
            persistent: Some(360),
        },
        Rule::Dest {
            key: udp,
            real: "198.18.1.3:53".parse().expect("addr"),
            fwd: "-g".into(),
            weight: 0,
        },
        Rule::Service {
            key: v6,
            scheduler: "wrr".into(),
            persistent: Some(10800),
        },
        Rule::Dest {
            key: v6,
            real: "[fd00:18:1::2]:8443".parse().expect("addr"),
            fwd: "-m".into(),
            weight: 2,
        },
    ];
    want.sort();
    assert_eq!(parse_rules(text), want);
    // And the desired side: web6() reads as the v6 lines.
    let v6_rules: Vec<Rule> = want
        .iter()
        .filter(|r| matches!(r, Rule::Service { key, .. } | Rule::Dest { key, .. } if *key == v6))
        .cloned()
        .collect();
    assert_eq!(rules_of(&[&web6()]), v6_rules);
}
