//! The crate against the kernel's IPVS, side by side with `ipvsadm`.
//!
//! Every test here needs IPVS and `CAP_NET_ADMIN`, so each is ignored by a
//! plain `cargo test`: the testbed guest runs them (suite `netlink`, built
//! by `testbed/build-netlink`) with `--ignored --test-threads=1`. Each runs
//! in a network namespace of its own, since IPVS state is per netns: the
//! thread that runs the test unshares it, and the `ipvsadm` children the
//! test spawns inherit it from that thread.
//!
//! Agreement with `ipvsadm` is checked by parsing its output (`-S -n`
//! rules, the `-Ln` listing, `--thresholds`, `--stats --exact`,
//! `--timeout`) into the crate's own values, never by formatting the
//! crate's values the way `ipvsadm` would and comparing strings.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Stdio};

use ipvs_netlink::uapi::{self, IpVsBpfKey, IpVsBpfValue};
use ipvs_netlink::{
    BpfAttach, Daemon, DaemonState, Destination, Error, ErrorKind, ForwardMethod, Ipvs, LocalNet,
    Protocol, Request, Service, ServiceFlags, ServiceKey, Snat, Stats, Timeouts, Tunnel,
    TunnelType,
};

// ---- running in a namespace of one's own --------------------------------

/// Runs `f` on a thread of its own in a new network namespace, with `lo`
/// up: an IPv4 real server must be unicast, and `inet_addr_type()` says
/// so only once the namespace has a local routing table, which `lo`'s
/// address creates.
fn in_netns<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    let t = std::thread::spawn(move || {
        // SAFETY: unshare(2) changes only the calling thread's namespaces.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        );
        run("ip", &["link", "set", "lo", "up"]);
        f()
    });
    match t.join() {
        Ok(r) => r,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

fn connect() -> Ipvs {
    Ipvs::connect().expect("connect to IPVS (is ip_vs loaded?)")
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {} failed ({}): {}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("output is UTF-8")
}

fn ipvsadm(args: &[&str]) -> String {
    run("ipvsadm", args)
}

/// `ipvsadm` with one rule line as its arguments (`-A -t 10.0.0.1:80 -s rr`).
fn ipvsadm_line(line: &str) -> String {
    ipvsadm(&line.split_whitespace().collect::<Vec<_>>())
}

/// `ipvsadm -R` fed `rules`.
fn ipvsadm_restore(rules: &str) {
    let mut child = Command::new("ipvsadm")
        .arg("-R")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ipvsadm -R");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(rules.as_bytes())
        .expect("write the rules to ipvsadm -R");
    let out = child.wait_with_output().expect("wait for ipvsadm -R");
    assert!(
        out.status.success(),
        "ipvsadm -R failed ({}): {}{}\nrules:\n{rules}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---- ipvsadm's output as values ------------------------------------------

fn sockaddr(s: &str) -> (IpAddr, u16) {
    let a: SocketAddr = s
        .parse()
        .unwrap_or_else(|e| panic!("address:port {s:?}: {e}"));
    (a.ip(), a.port())
}

fn num<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Display,
{
    s.parse()
        .unwrap_or_else(|e| panic!("number {s:?} in ipvsadm output: {e}"))
}

/// `-b` / `(…)` scheduler flags: generic, sh's and mh's names alike.
fn sched_flags(list: &str) -> ServiceFlags {
    list.split(',').fold(ServiceFlags::empty(), |acc, f| {
        acc | match f {
            "flag-1" | "sh-fallback" | "mh-fallback" => ServiceFlags::SCHED1,
            "flag-2" | "sh-port" | "mh-port" => ServiceFlags::SCHED2,
            "flag-3" => ServiceFlags::SCHED3,
            other => panic!("unknown scheduler flag {other:?}"),
        }
    })
}

/// A persistence netmask as a prefix length: dotted for IPv4, a number for
/// IPv6.
fn prefix(mask: &str) -> u32 {
    match mask.parse::<Ipv4Addr>() {
        Ok(m) => {
            let m = u32::from(m);
            assert_eq!(m.leading_ones() + m.trailing_zeros(), 32, "mask {mask}");
            m.leading_ones()
        }
        Err(_) => num(mask),
    }
}

fn full_prefix(key: &ServiceKey) -> u32 {
    match key.family() {
        ipvs_netlink::Family::Inet => 32,
        ipvs_netlink::Family::Inet6 => 128,
    }
}

/// A rule set as `ipvsadm -S -n` writes it and `ipvsadm -R` reads it.
#[derive(Debug, Default, PartialEq)]
struct Rules {
    services: Vec<Service>,
    dests: Vec<(ServiceKey, Destination)>,
}

impl Rules {
    fn sorted(mut self) -> Rules {
        self.services.sort_by_key(|s| s.key);
        self.dests.sort_by_key(|(k, d)| (*k, d.addr, d.port));
        self
    }
}

/// Parses `-A`/`-a` lines (the options `ipvsadm -S` writes, plus the
/// thresholds `-x`/`-y`, which it leaves out).
fn parse_rules(text: &str) -> Rules {
    let mut rules = Rules::default();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let mut tok = line.split_whitespace().peekable();
        let cmd = tok.next().expect("a command");
        let next = |what: &str, tok: &mut std::iter::Peekable<std::str::SplitWhitespace>| {
            tok.next()
                .unwrap_or_else(|| panic!("{what} needs a value in {line:?}"))
                .to_string()
        };
        let (mut tuple, mut fwmark, mut v6) = (None, None, false);
        let (mut sched, mut persist, mut mask, mut pe) = ("wlc".to_string(), None, None, None);
        let mut flags = ServiceFlags::empty();
        let (mut rs, mut fwd, mut weight, mut uth, mut lth) = (None, ForwardMethod::Route, 1, 0, 0);
        let mut tunnel = Tunnel::default();
        while let Some(t) = tok.next() {
            match t {
                "-t" | "--tcp-service" => tuple = Some((Protocol::Tcp, next(t, &mut tok))),
                "-u" | "--udp-service" => tuple = Some((Protocol::Udp, next(t, &mut tok))),
                "--sctp-service" => tuple = Some((Protocol::Sctp, next(t, &mut tok))),
                "-f" | "--fwmark-service" => fwmark = Some(num::<u32>(&next(t, &mut tok))),
                "-6" | "--ipv6" => v6 = true,
                "-s" | "--scheduler" => sched = next(t, &mut tok),
                "-p" | "--persistent" => {
                    let explicit = tok.peek().and_then(|v| v.parse::<u32>().ok());
                    if explicit.is_some() {
                        tok.next();
                    }
                    persist = Some(explicit.unwrap_or(360));
                }
                "-M" | "--netmask" => mask = Some(prefix(&next(t, &mut tok))),
                "-b" | "--sched-flags" => flags |= sched_flags(&next(t, &mut tok)),
                "-o" | "--ops" => flags |= ServiceFlags::ONEPACKET,
                "--pe" => pe = Some(next(t, &mut tok)),
                "-r" | "--real-server" => rs = Some(sockaddr(&next(t, &mut tok))),
                "-m" | "--masquerading" => fwd = ForwardMethod::Masq,
                "-g" | "--gatewaying" => fwd = ForwardMethod::Route,
                "-i" | "--ipip" => fwd = ForwardMethod::Tunnel,
                "-w" | "--weight" => weight = num(&next(t, &mut tok)),
                "-x" | "--u-threshold" => uth = num(&next(t, &mut tok)),
                "-y" | "--l-threshold" => lth = num(&next(t, &mut tok)),
                "--tun-type" => {
                    tunnel.kind = match next(t, &mut tok).as_str() {
                        "ipip" => TunnelType::Ipip,
                        "gue" => TunnelType::Gue,
                        "gre" => TunnelType::Gre,
                        other => panic!("tunnel type {other:?} in {line:?}"),
                    }
                }
                "--tun-port" => tunnel.port = num(&next(t, &mut tok)),
                "--tun-nocsum" => tunnel.flags = uapi::IP_VS_TUNNEL_ENCAP_FLAG_NOCSUM,
                "--tun-csum" => tunnel.flags = uapi::IP_VS_TUNNEL_ENCAP_FLAG_CSUM,
                "--tun-remcsum" => tunnel.flags = uapi::IP_VS_TUNNEL_ENCAP_FLAG_REMCSUM,
                other => panic!("option {other:?} in {line:?}"),
            }
        }
        let key = match (tuple, fwmark) {
            (Some((protocol, a)), None) => {
                let (addr, port) = sockaddr(&a);
                ServiceKey::Tuple {
                    protocol,
                    addr,
                    port,
                }
            }
            (None, Some(mark)) => ServiceKey::Fwmark {
                family: if v6 {
                    ipvs_netlink::Family::Inet6
                } else {
                    ipvs_netlink::Family::Inet
                },
                mark,
            },
            _ => panic!("no virtual service in {line:?}"),
        };
        match cmd {
            "-A" => {
                let mut s = Service::new(key, &sched);
                if let Some(t) = persist {
                    s = s.persistent(t);
                }
                s.flags |= flags;
                s.netmask = mask.unwrap_or_else(|| full_prefix(&key));
                s.pe_name = pe;
                rules.services.push(s);
            }
            "-a" => {
                let (addr, port) = rs.unwrap_or_else(|| panic!("no real server in {line:?}"));
                let mut d = Destination::new(addr, port).forward(fwd).weight(weight);
                d.upper_threshold = uth;
                d.lower_threshold = lth;
                d.tunnel = tunnel;
                rules.dests.push((key, d));
            }
            other => panic!("command {other:?} in {line:?}"),
        }
    }
    rules
}

/// What `ipvsadm -Ln` shows of a service.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Listed {
    key: ServiceKey,
    scheduler: String,
    /// Scheduler flags and one-packet scheduling.
    flags: ServiceFlags,
    /// Timeout and netmask prefix of a persistent service.
    persistence: Option<(u32, u32)>,
    pe: Option<String>,
    dests: Vec<ListedDest>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct ListedDest {
    addr: IpAddr,
    port: u16,
    /// `ipvsadm -Ln`: forwarding method, weight, active and inactive
    /// connections; `--thresholds`: upper and lower threshold, active and
    /// inactive; `--stats --exact`: conns, inpkts, outpkts, inbytes,
    /// outbytes.
    cols: Vec<String>,
}

/// A listing split into service lines and their real-server lines, the
/// service's key decoded and the rest of each line left as words.
fn sections(text: &str) -> Vec<(ServiceKey, Vec<String>, Vec<ListedDest>)> {
    let mut out: Vec<(ServiceKey, Vec<String>, Vec<ListedDest>)> = Vec::new();
    for line in text.lines() {
        let words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        let Some(first) = words.first() else { continue };
        let protocol = match first.as_str() {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        };
        if let Some(protocol) = protocol {
            let (addr, port) = sockaddr(&words[1]);
            let key = ServiceKey::Tuple {
                protocol,
                addr,
                port,
            };
            out.push((key, words[2..].to_vec(), Vec::new()));
        } else if first == "FWM" {
            let mark = num(&words[1]);
            let v6 = words.get(2).map(String::as_str) == Some("IPv6");
            let family = if v6 {
                ipvs_netlink::Family::Inet6
            } else {
                ipvs_netlink::Family::Inet
            };
            let rest = words[if v6 { 3 } else { 2 }..].to_vec();
            out.push((ServiceKey::Fwmark { family, mark }, rest, Vec::new()));
        } else if first == "->" && words.get(1).map(String::as_str) != Some("RemoteAddress:Port") {
            let (addr, port) = sockaddr(&words[1]);
            let (_, _, dests) = out
                .last_mut()
                .unwrap_or_else(|| panic!("real server before any service: {line:?}"));
            dests.push(ListedDest {
                addr,
                port,
                cols: words[2..].to_vec(),
            });
        }
    }
    out.sort_by_key(|(k, _, _)| *k);
    for (_, _, d) in &mut out {
        d.sort_by_key(|d| (d.addr, d.port));
    }
    out
}

/// `ipvsadm -Ln`.
fn parse_listing(text: &str) -> Vec<Listed> {
    sections(text)
        .into_iter()
        .map(|(key, rest, dests)| {
            let mut it = rest.into_iter();
            let scheduler = it.next().expect("a scheduler");
            let (mut flags, mut persistence, mut pe) = (ServiceFlags::empty(), None, None);
            while let Some(w) = it.next() {
                let mut val = |name: &str| it.next().unwrap_or_else(|| panic!("{name} value"));
                match w.as_str() {
                    "persistent" => persistence = Some((num(&val(&w)), full_prefix(&key))),
                    "mask" => {
                        let m = prefix(&val(&w));
                        let p = persistence.as_mut().expect("mask after persistent");
                        p.1 = m;
                    }
                    "ops" => flags |= ServiceFlags::ONEPACKET,
                    "pe" => pe = Some(val(&w)),
                    f if f.starts_with('(') && f.ends_with(')') => {
                        flags |= sched_flags(&f[1..f.len() - 1])
                    }
                    other => panic!("{other:?} on the line of {key}"),
                }
            }
            Listed {
                key,
                scheduler,
                flags,
                persistence,
                pe,
                dests,
            }
        })
        .collect()
}

fn fwd_name(f: ForwardMethod) -> &'static str {
    match f {
        ForwardMethod::Masq => "Masq",
        ForwardMethod::Local => "Local",
        ForwardMethod::Tunnel => "Tunnel",
        ForwardMethod::Route => "Route",
    }
}

/// `ipvsadm -L --timeout`: `Timeout (tcp tcpfin udp): 900 120 300`.
fn parse_timeouts(text: &str) -> Timeouts {
    let (_, v) = text
        .trim()
        .split_once("):")
        .unwrap_or_else(|| panic!("timeouts in {text:?}"));
    let v: Vec<u32> = v.split_whitespace().map(num).collect();
    assert_eq!(v.len(), 3, "{text:?}");
    Timeouts {
        tcp: v[0],
        tcp_fin: v[1],
        udp: v[2],
    }
}

/// `IP Virtual Server version 1.2.1 (size=4096)`: version and size.
fn parse_banner(line: &str) -> (String, u32) {
    let rest = line
        .strip_prefix("IP Virtual Server version ")
        .unwrap_or_else(|| panic!("banner {line:?}"));
    let (version, size) = rest
        .split_once(" (size=")
        .unwrap_or_else(|| panic!("banner {line:?}"));
    (
        version.to_string(),
        num(size.trim_end().trim_end_matches(')')),
    )
}

// ---- the crate's view, and the comparison --------------------------------

/// Every service with its destinations, sorted as `sections` sorts.
fn crate_view(ipvs: &mut Ipvs) -> Vec<(Service, Vec<Destination>)> {
    let mut v: Vec<(Service, Vec<Destination>)> = ipvs
        .services()
        .expect("list services")
        .into_iter()
        .map(|s| {
            let mut d = ipvs
                .destinations(&s.key)
                .unwrap_or_else(|e| panic!("destinations of {}: {e}", s.key));
            d.sort_by_key(|d| (d.addr, d.port));
            (s, d)
        })
        .collect();
    v.sort_by_key(|(s, _)| s.key);
    v
}

fn counters(s: &Option<Box<Stats>>) -> Vec<String> {
    let s = s.as_deref().expect("STATS64 in the dump");
    [s.conns, s.inpkts, s.outpkts, s.inbytes, s.outbytes]
        .iter()
        .map(u64::to_string)
        .collect()
}

/// The crate's dump and `ipvsadm`'s `-S -n`, `-Ln`, `-Ln --thresholds`,
/// `-Ln --stats --exact` and `-L --timeout` say the same.
fn assert_ipvsadm_agrees(ipvs: &mut Ipvs) {
    let view = crate_view(ipvs);

    // -S -n: configuration, tunnels included, thresholds left out.
    let ours = Rules {
        services: view.iter().map(|(s, _)| s.config()).collect(),
        dests: view
            .iter()
            .flat_map(|(s, ds)| {
                ds.iter().map(move |d| {
                    let mut d = d.config();
                    d.upper_threshold = 0;
                    d.lower_threshold = 0;
                    // ipvsadm writes the local node as -g, like routing.
                    if d.fwd == ForwardMethod::Local {
                        d.fwd = ForwardMethod::Route;
                    }
                    (s.key, d)
                })
            })
            .collect(),
    }
    .sorted();
    let theirs = parse_rules(&ipvsadm(&["-S", "-n"])).sorted();
    assert_eq!(ours, theirs, "the crate's dump vs ipvsadm -S -n");

    // -Ln: scheduler, flags, persistence, forwarding, weights, connections.
    let ours: Vec<Listed> = view
        .iter()
        .map(|(s, ds)| Listed {
            key: s.key,
            scheduler: s.scheduler.clone(),
            flags: ServiceFlags(
                s.flags.0
                    & (ServiceFlags::SCHED1
                        | ServiceFlags::SCHED2
                        | ServiceFlags::SCHED3
                        | ServiceFlags::ONEPACKET)
                        .0,
            ),
            persistence: s
                .flags
                .contains(ServiceFlags::PERSISTENT)
                .then_some((s.timeout, s.netmask)),
            pe: s.pe_name.clone(),
            dests: ds
                .iter()
                .map(|d| ListedDest {
                    addr: d.addr,
                    port: d.port,
                    cols: vec![
                        fwd_name(d.fwd).to_string(),
                        d.weight.to_string(),
                        d.active_conns().to_string(),
                        d.inactive_conns().to_string(),
                    ],
                })
                .collect(),
        })
        .collect();
    assert_eq!(
        ours,
        parse_listing(&ipvsadm(&["-Ln"])),
        "the crate's dump vs ipvsadm -Ln"
    );

    // --thresholds and --stats: the numbers of each line.
    let table = |f: &dyn Fn(&Service) -> Vec<String>, g: &dyn Fn(&Destination) -> Vec<String>| {
        view.iter()
            .map(|(s, ds)| {
                let dests = ds
                    .iter()
                    .map(|d| ListedDest {
                        addr: d.addr,
                        port: d.port,
                        cols: g(d),
                    })
                    .collect();
                (s.key, f(s), dests)
            })
            .collect::<Vec<_>>()
    };
    let thresholds = table(&|_: &Service| Vec::new(), &|d: &Destination| {
        [
            d.upper_threshold,
            d.lower_threshold,
            d.active_conns(),
            d.inactive_conns(),
        ]
        .iter()
        .map(u32::to_string)
        .collect()
    });
    let mut listed = sections(&ipvsadm(&["-Ln", "--thresholds"]));
    for (_, rest, _) in &mut listed {
        rest.clear(); // the scheduler and flags, compared above
    }
    assert_eq!(
        thresholds, listed,
        "the crate's dump vs ipvsadm -Ln --thresholds"
    );

    let stats = table(&|s: &Service| counters(&s.stats64), &|d: &Destination| {
        counters(&d.counters.as_ref().and_then(|c| c.stats64).map(Box::new))
    });
    assert_eq!(
        stats,
        sections(&ipvsadm(&["-Ln", "--stats", "--exact"])),
        "the crate's counters vs ipvsadm -Ln --stats --exact"
    );

    assert_eq!(
        ipvs.timeouts().expect("timeouts"),
        parse_timeouts(&ipvsadm(&["-L", "--timeout"])),
        "the crate's timeouts vs ipvsadm -L --timeout"
    );
}

/// The configuration the crate reads back, as `Rules`.
fn crate_rules(ipvs: &mut Ipvs) -> Rules {
    let view = crate_view(ipvs);
    Rules {
        services: view.iter().map(|(s, _)| s.config()).collect(),
        dests: view
            .iter()
            .flat_map(|(s, ds)| ds.iter().map(move |d| (s.key, d.config())))
            .collect(),
    }
    .sorted()
}

fn v4(s: &str) -> IpAddr {
    IpAddr::V4(s.parse().expect("IPv4 literal"))
}

fn v6(s: &str) -> IpAddr {
    IpAddr::V6(s.parse::<Ipv6Addr>().expect("IPv6 literal"))
}

fn kind(r: Result<impl std::fmt::Debug, Error>) -> Option<ErrorKind> {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => {
            eprintln!("    (expected) {e}");
            e.kind()
        }
    }
}

// ---- the parsers, on output captured from the guest (runs anywhere) ------

#[test]
fn parsers_read_captured_ipvsadm_output() {
    let rules = parse_rules(
        "-A -t 10.0.0.1:80 -s rr -p 300 -M 255.255.255.0\n\
         -A -u [2001:db8::1]:53 -s sh -p 60 -M 64 -b sh-fallback,sh-port\n\
         -a -u [2001:db8::1]:53 -r [2001:db8::2]:5353 -m -w 2\n\
         -A -f 8 -6 -s lc -o\n\
         -a -f 8 -6 -r [2001:db8::8]:0 -g -w 1\n\
         -a -f 8 -6 -r 10.1.0.3:0 -i -w 1 --tun-type gue --tun-port 6080 --tun-csum\n",
    );
    let key = ServiceKey::tcp(v4("10.0.0.1"), 80);
    let mut s = Service::new(key, "rr").persistent(300);
    s.netmask = 24;
    assert_eq!(rules.services[0], s);
    assert_eq!(
        rules.services[1].flags,
        ServiceFlags::PERSISTENT | ServiceFlags::SH_FALLBACK | ServiceFlags::SH_PORT
    );
    assert_eq!(rules.services[1].netmask, 64);
    assert_eq!(
        rules.services[2].key,
        ServiceKey::Fwmark {
            family: ipvs_netlink::Family::Inet6,
            mark: 8
        }
    );
    assert_eq!(rules.services[2].flags, ServiceFlags::ONEPACKET);
    assert_eq!(rules.dests[0].1.weight, 2);
    assert_eq!(rules.dests[1].1.fwd, ForwardMethod::Route);
    let gue = &rules.dests[2].1;
    assert_eq!(
        (gue.fwd, gue.tunnel.kind, gue.tunnel.port, gue.tunnel.flags),
        (ForwardMethod::Tunnel, TunnelType::Gue, 6080, 1)
    );

    let listed = parse_listing(
        "IP Virtual Server version 1.2.1 (size=4096)\n\
         Prot LocalAddress:Port Scheduler Flags\n  \
         -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
         TCP  10.0.0.1:80 rr persistent 300 mask 255.255.255.0\n\
         UDP  [2001:db8::1]:53 sh (sh-fallback,sh-port) persistent 60 mask 64\n  \
         -> [2001:db8::2]:5353           Masq    2      0          0         \n\
         FWM  8 IPv6 lc ops\n",
    );
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[0].persistence, Some((300, 24)));
    assert_eq!(listed[1].persistence, Some((60, 64)));
    assert_eq!(listed[1].dests[0].cols, ["Masq", "2", "0", "0"]);
    assert_eq!(listed[2].flags, ServiceFlags::ONEPACKET);
    assert_eq!(
        parse_timeouts("Timeout (tcp tcpfin udp): 900 120 300\n"),
        Timeouts {
            tcp: 900,
            tcp_fin: 120,
            udp: 300
        }
    );
    assert_eq!(
        parse_banner("IP Virtual Server version 1.2.1 (size=4096)"),
        ("1.2.1".to_string(), 4096)
    );
}

// ---- the crate writes, ipvsadm reads -------------------------------------

/// One service of each kind the crate can make, with every forwarding
/// method and tunnel type.
fn crate_config() -> Vec<(Service, Vec<Destination>)> {
    let tunnel = |kind, port, flags| Tunnel { kind, port, flags };
    let mut out = Vec::new();

    let mut s = Service::new(ServiceKey::tcp(v4("198.19.0.1"), 80), "rr").persistent(300);
    s.netmask = 24;
    let mut d2 = Destination::new(v4("198.18.1.3"), 8080).weight(5);
    d2.upper_threshold = 100;
    d2.lower_threshold = 50;
    out.push((s, vec![Destination::new(v4("198.18.1.2"), 8080), d2]));

    let mut s = Service::new(ServiceKey::udp(v6("2001:db8:2::1"), 53), "sh").persistent(60);
    s.flags |= ServiceFlags::SH_FALLBACK | ServiceFlags::SH_PORT;
    s.netmask = 64;
    out.push((
        s,
        vec![
            Destination::new(v6("2001:db8:1:1::2"), 5353).weight(2),
            Destination::new(v6("2001:db8:1:1::3"), 53)
                .forward(ForwardMethod::Route)
                .weight(0),
        ],
    ));

    let fwm4 = ServiceKey::Fwmark {
        family: ipvs_netlink::Family::Inet,
        mark: 7,
    };
    let mut ipip = Destination::new(v4("198.18.2.3"), 0).forward(ForwardMethod::Tunnel);
    ipip.tunnel = tunnel(TunnelType::Ipip, 0, 0);
    out.push((
        Service::new(fwm4, "wrr"),
        vec![
            Destination::new(v4("198.18.2.2"), 0)
                .forward(ForwardMethod::Route)
                .weight(3),
            ipip,
        ],
    ));

    let fwm6 = ServiceKey::Fwmark {
        family: ipvs_netlink::Family::Inet6,
        mark: 8,
    };
    let mut s = Service::new(fwm6, "lc");
    s.flags |= ServiceFlags::ONEPACKET;
    let mut gue6 = Destination::new(v6("2001:db8:1:2::2"), 0).forward(ForwardMethod::Tunnel);
    gue6.tunnel = tunnel(TunnelType::Gue, 6080, uapi::IP_VS_TUNNEL_ENCAP_FLAG_CSUM);
    // An IPv4 real server behind an IPv6 service: tunnels only.
    let mut gue4 = Destination::new(v4("198.18.2.4"), 0).forward(ForwardMethod::Tunnel);
    gue4.tunnel = tunnel(TunnelType::Gue, 6081, uapi::IP_VS_TUNNEL_ENCAP_FLAG_REMCSUM);
    out.push((s, vec![gue6, gue4]));

    let sctp = ServiceKey::Tuple {
        protocol: Protocol::Sctp,
        addr: v4("198.19.0.3"),
        port: 38412,
    };
    let mut s = Service::new(sctp, "mh");
    s.flags |= ServiceFlags::SCHED2; // mh-port
    out.push((s, vec![Destination::new(v4("198.18.1.9"), 38412)]));

    let mut gre = Destination::new(v4("198.18.2.5"), 443).forward(ForwardMethod::Tunnel);
    gre.tunnel = tunnel(TunnelType::Gre, 0, uapi::IP_VS_TUNNEL_ENCAP_FLAG_CSUM);
    out.push((
        Service::new(ServiceKey::tcp(v4("198.19.0.4"), 443), "rr").persistent(360),
        vec![gre],
    ));

    let mut s = Service::new(ServiceKey::udp(v4("198.19.0.5"), 5060), "rr").persistent(30);
    s.pe_name = Some("sip".to_string());
    out.push((s, vec![Destination::new(v4("198.18.1.10"), 5060)]));

    let mut s = Service::new(ServiceKey::tcp(v4("198.19.0.6"), 80), "rr");
    s.flags |= ServiceFlags::SCHED1 | ServiceFlags::SCHED3;
    out.push((s, Vec::new()));

    let mut s = Service::new(ServiceKey::tcp(v6("2001:db8:2::6"), 443), "wrr").persistent(10800);
    s.netmask = 128;
    out.push((
        s,
        vec![Destination::new(v6("2001:db8:1:1::6"), 8443)
            .forward(ForwardMethod::Masq)
            .weight(65535)],
    ));
    out
}

#[test]
#[ignore = "needs IPVS and CAP_NET_ADMIN: run in the testbed guest (suite netlink)"]
fn crate_config_reads_back_in_ipvsadm() {
    in_netns(|| {
        let mut ipvs = connect();
        let config = crate_config();
        for (s, ds) in &config {
            ipvs.add_service(s)
                .unwrap_or_else(|e| panic!("add {}: {e}", s.key));
            for d in ds {
                ipvs.add_destination(&s.key, d)
                    .unwrap_or_else(|e| panic!("add {} -> {d}: {e}", s.key));
            }
        }
        let t = Timeouts {
            tcp: 900,
            tcp_fin: 120,
            udp: 300,
        };
        ipvs.set_timeouts(&t).expect("set timeouts");

        // The crate reads back what it wrote ...
        let want = Rules {
            services: config.iter().map(|(s, _)| s.clone()).collect(),
            dests: config
                .iter()
                .flat_map(|(s, ds)| ds.iter().map(move |d| (s.key, d.clone())))
                .collect(),
        }
        .sorted();
        assert_eq!(
            crate_rules(&mut ipvs),
            want,
            "the crate's dump vs what it wrote"
        );
        assert_eq!(ipvs.timeouts().expect("timeouts"), t);
        for (s, _) in &config {
            let one = ipvs.service(&s.key).expect("get one service");
            assert_eq!(one.config(), *s, "GET_SERVICE of {}", s.key);
        }
        // ... and so does ipvsadm, in each of its formats.
        assert_ipvsadm_agrees(&mut ipvs);
        assert_eq!(
            parse_timeouts(&ipvsadm(&["-L", "--timeout"])),
            t,
            "ipvsadm -L --timeout"
        );

        // A 0 leaves a timeout as it is.
        ipvs.set_timeouts(&Timeouts {
            tcp: 0,
            tcp_fin: 30,
            udp: 0,
        })
        .expect("set one timeout");
        assert_eq!(
            parse_timeouts(&ipvsadm(&["-L", "--timeout"])),
            Timeouts { tcp_fin: 30, ..t }
        );
    });
}

// ---- ipvsadm writes, the crate reads -------------------------------------

const RULES: &str = "\
-A -t 198.19.0.1:80 -s wrr -p 600 -M 255.255.0.0
-a -t 198.19.0.1:80 -r 198.18.1.2:80 -m -w 4
-a -t 198.19.0.1:80 -r 198.18.1.3:80 -g -w 2
-A -u [2001:db8:2::2]:53 -s sh -b sh-port -p 120 -M 96
-a -u [2001:db8:2::2]:53 -r [2001:db8:1:1::2]:53 -m -w 1
-a -u [2001:db8:2::2]:53 -r 198.18.2.2:53 -i -w 1 --tun-type gue --tun-port 5555 --tun-remcsum
-A -f 9 -s lc
-a -f 9 -r 198.18.1.4:0 -i -w 1 --tun-type ipip
-A -f 10 -6 -s rr -o
-a -f 10 -6 -r [2001:db8:1:2::3]:0 -g -w 7
-A --sctp-service 198.19.0.9:38412 -s mh -b mh-fallback,mh-port
-a --sctp-service 198.19.0.9:38412 -r 198.18.1.9:38412 -m -w 1
-A -u 198.19.0.10:5060 -s rr -p 30 --pe sip
-a -u 198.19.0.10:5060 -r 198.18.1.10:5060 -m -w 1
-A -t [2001:db8:2::3]:443 -s rr -b flag-1,flag-2,flag-3
";

/// One at a time, with what `-S` leaves out (thresholds).
const COMMANDS: &[&str] = &[
    "-A -t 198.19.0.11:80 -s rr",
    "-a -t 198.19.0.11:80 -r 198.18.1.11:80 -m -w 3 -x 10 -y 5",
    "-a -t 198.19.0.11:80 -r 198.18.2.11:80 -i -w 1 --tun-type gre --tun-csum",
    "-A -t 198.19.0.12:80 -s rr -p",
    "-a -t [2001:db8:2::3]:443 -r [2001:db8:1:1::11]:443 -m -w 0 -x 1000 -y 0",
];

#[test]
#[ignore = "needs IPVS and CAP_NET_ADMIN: run in the testbed guest (suite netlink)"]
fn ipvsadm_config_reads_back_in_the_crate() {
    in_netns(|| {
        ipvsadm_restore(RULES);
        for c in COMMANDS {
            ipvsadm_line(c);
        }
        ipvsadm(&["--set", "800", "100", "200"]);

        let mut ipvs = connect();
        let want = parse_rules(&format!("{RULES}{}", COMMANDS.join("\n"))).sorted();
        assert_eq!(
            crate_rules(&mut ipvs),
            want,
            "the crate's dump vs the rules ipvsadm was given"
        );
        assert_eq!(
            ipvs.timeouts().expect("timeouts"),
            Timeouts {
                tcp: 800,
                tcp_fin: 100,
                udp: 200
            }
        );
        assert_ipvsadm_agrees(&mut ipvs);

        // ipvsadm -S output, restored into a fresh namespace, reads the same.
        let saved = ipvsadm(&["-S", "-n"]);
        let before = crate_rules(&mut ipvs);
        let after = in_netns(move || {
            ipvsadm_restore(&saved);
            crate_rules(&mut connect())
        });
        // -S drops thresholds: compare without them.
        let strip = |mut r: Rules| {
            for (_, d) in &mut r.dests {
                d.upper_threshold = 0;
                d.lower_threshold = 0;
            }
            r
        };
        assert_eq!(
            strip(before),
            strip(after),
            "ipvsadm -S | ipvsadm -R round trip"
        );
    });
}

// ---- changes through one, seen by the other ------------------------------

#[test]
#[ignore = "needs IPVS and CAP_NET_ADMIN: run in the testbed guest (suite netlink)"]
fn edits_and_deletes_are_seen_by_the_other() {
    in_netns(|| {
        let mut ipvs = connect();
        let key = ServiceKey::tcp(v4("198.19.0.20"), 80);
        let svc = "198.19.0.20:80";
        ipvs.add_service(&Service::new(key, "rr")).expect("add");
        for ip in ["198.18.1.2", "198.18.1.3"] {
            ipvs.add_destination(&key, &Destination::new(v4(ip), 80))
                .expect("add destination");
        }
        assert_ipvsadm_agrees(&mut ipvs);

        // ipvsadm deletes a destination, the crate another.
        ipvsadm(&["-d", "-t", svc, "-r", "198.18.1.2:80"]);
        let ds = ipvs.destinations(&key).expect("destinations");
        assert_eq!(
            ds.iter().map(|d| d.addr).collect::<Vec<_>>(),
            [v4("198.18.1.3")]
        );
        ipvs.delete_destination(&key, v4("198.18.1.3"), 80)
            .expect("delete destination");
        assert!(parse_rules(&ipvsadm(&["-S", "-n"])).dests.is_empty());

        // ipvsadm adds one, the crate edits it, ipvsadm edits it back.
        ipvsadm(&["-a", "-t", svc, "-r", "198.18.1.4:8080", "-m", "-w", "2"]);
        let mut d = ipvs.destinations(&key).expect("destinations")[0].config();
        assert_eq!((d.addr, d.port, d.weight), (v4("198.18.1.4"), 8080, 2));
        d = d.forward(ForwardMethod::Route).weight(9);
        d.upper_threshold = 40;
        d.lower_threshold = 20;
        ipvs.edit_destination(&key, &d).expect("edit destination");
        assert_ipvsadm_agrees(&mut ipvs);
        let r = parse_rules(&ipvsadm(&["-S", "-n"]));
        assert_eq!(
            (r.dests[0].1.fwd, r.dests[0].1.weight),
            (ForwardMethod::Route, 9)
        );
        ipvsadm_line(&format!("-e -t {svc} -r 198.18.1.4:8080 -m -w 3 -x 7 -y 2"));
        let got = ipvs.destinations(&key).expect("destinations")[0].config();
        let mut want = Destination::new(v4("198.18.1.4"), 8080).weight(3);
        want.upper_threshold = 7;
        want.lower_threshold = 2;
        assert_eq!(got, want, "ipvsadm -e seen by the crate");

        // The crate edits the service, then ipvsadm.
        let mut s = Service::new(key, "wrr").persistent(100);
        s.netmask = 16;
        ipvs.edit_service(&s).expect("edit service");
        assert_eq!(parse_rules(&ipvsadm(&["-S", "-n"])).services, [s]);
        assert_ipvsadm_agrees(&mut ipvs);
        ipvsadm(&["-E", "-t", svc, "-s", "lc"]);
        let got = ipvs.service(&key).expect("get service").config();
        assert_eq!(got, Service::new(key, "lc"), "ipvsadm -E seen by the crate");

        // The crate deletes the service, then ipvsadm one it made.
        ipvs.delete_service(&key).expect("delete service");
        assert_eq!(ipvsadm(&["-S", "-n"]).trim(), "");
        ipvsadm(&["-A", "-u", "198.19.0.21:53", "-s", "rr"]);
        let k2 = ServiceKey::udp(v4("198.19.0.21"), 53);
        assert_eq!(
            ipvs.service(&k2).expect("get").config(),
            Service::new(k2, "rr")
        );
        ipvsadm(&["-D", "-u", "198.19.0.21:53"]);
        assert_eq!(kind(ipvs.service(&k2)), Some(ErrorKind::NoSuchService));
        assert!(ipvs.services().expect("list").is_empty());
    });
}

/// `ipvsadm -C` and the crate's `flush`, each seen by the other.
#[test]
#[ignore = "needs IPVS and CAP_NET_ADMIN: run in the testbed guest (suite netlink)"]
fn flush_is_seen_by_the_other() {
    in_netns(|| {
        let mut ipvs = connect();
        for (s, ds) in crate_config() {
            ipvs.add_service(&s).expect("add");
            for d in ds {
                ipvs.add_destination(&s.key, &d).expect("add destination");
            }
        }
        assert!(!parse_rules(&ipvsadm(&["-S", "-n"])).services.is_empty());
        ipvs.flush().expect("flush");
        assert_eq!(
            ipvsadm(&["-S", "-n"]).trim(),
            "",
            "ipvsadm after the crate's flush"
        );

        ipvsadm_restore(RULES);
        assert_eq!(
            ipvs.services().expect("list").len(),
            parse_rules(RULES).services.len()
        );
        ipvsadm(&["-C"]);
        assert!(
            ipvs.services().expect("list").is_empty(),
            "the crate after ipvsadm -C"
        );
    });
}

// ---- counters ------------------------------------------------------------

/// Real traffic through a local service (the client, virtual service and
/// real server all on `lo`), counted alike by both; then `zero` by the
/// crate and `-Z` by ipvsadm read back as zero by both.
#[test]
#[ignore = "needs IPVS and CAP_NET_ADMIN: run in the testbed guest (suite netlink)"]
fn counters_and_zero_agree() {
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    in_netns(|| {
        let mut ipvs = connect();
        let listener = TcpListener::bind("127.0.0.1:0").expect("listen on lo");
        let port = listener.local_addr().expect("local address").port();
        let key = ServiceKey::tcp(v4("127.0.0.1"), port);
        let other = ServiceKey::tcp(v4("127.0.0.2"), port);
        ipvs.add_service(&Service::new(key, "rr")).expect("add");
        ipvs.add_service(&Service::new(other, "rr")).expect("add");
        ipvs.add_destination(&key, &Destination::new(v4("127.0.0.1"), port))
            .expect("add destination");

        let server = std::thread::spawn(move || {
            for _ in 0..3 {
                let (mut c, _) = listener.accept().expect("accept");
                let mut buf = [0u8; 5];
                c.read_exact(&mut buf).expect("read");
                c.write_all(b"world").expect("write");
            }
        });
        for _ in 0..3 {
            let addr = SocketAddr::new(v4("127.0.0.1"), port);
            let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                .expect("connect through IPVS");
            c.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            c.write_all(b"hello").expect("write");
            let mut buf = [0u8; 5];
            c.read_exact(&mut buf).expect("read");
            assert_eq!(&buf, b"world");
        }
        server.join().expect("server thread");
        // The counters read are the estimator's: its kthread folds the
        // per-CPU ones in every 2 s. Wait until they hold all three
        // connections and stay put.
        let read = |ipvs: &mut Ipvs| ipvs.service(&key).expect("get").stats64.expect("STATS64");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut s = read(&mut ipvs);
        loop {
            std::thread::sleep(Duration::from_millis(2500));
            let now = read(&mut ipvs);
            if now.conns >= 3 && now == s {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the counters never settled at 3 connections: {now:?}"
            );
            s = now;
        }
        assert!(s.inpkts > 0 && s.inbytes > 0, "counted: {s:?}");
        assert_ipvsadm_agrees(&mut ipvs);

        // The crate zeroes one service, ipvsadm sees it; then all.
        ipvs.zero(Some(&key)).expect("zero one service");
        let zero = |ipvs: &mut Ipvs, k: &ServiceKey| {
            ipvs.service(k).expect("get").stats64.expect("STATS64")
        };
        let z = zero(&mut ipvs, &key);
        assert_eq!(
            (z.conns, z.inpkts, z.outpkts, z.inbytes, z.outbytes),
            (0, 0, 0, 0, 0)
        );
        assert_ipvsadm_agrees(&mut ipvs);
        ipvs.zero(None).expect("zero all");
        assert_ipvsadm_agrees(&mut ipvs);
        for line in ipvsadm(&["-Ln", "--stats", "--exact"]).lines().skip(3) {
            let w: Vec<&str> = line.split_whitespace().collect();
            assert!(
                w[w.len() - 5..].iter().all(|n| *n == "0"),
                "not zeroed: {line:?}"
            );
        }
        ipvsadm(&["-Z"]);
        assert_ipvsadm_agrees(&mut ipvs);
        assert_eq!(
            kind(ipvs.zero(Some(&ServiceKey::tcp(v4("127.0.0.3"), 1)))),
            Some(ErrorKind::NoSuchService)
        );
    });
}

#[test]
#[ignore = "needs IPVS and CAP_NET_ADMIN: run in the testbed guest (suite netlink)"]
fn info_matches_proc_and_ipvsadm() {
    in_netns(|| {
        let info = connect().info().expect("info");
        assert_eq!(info.version, 0x010201);
        assert_eq!(info.version_string(), "1.2.1");
        // /proc/net is the main thread's namespace: this thread's is here.
        let proc = std::fs::read_to_string("/proc/thread-self/net/ip_vs").expect("read ip_vs");
        let banner = proc.lines().next().expect("a banner line");
        assert_eq!(
            parse_banner(banner),
            ("1.2.1".to_string(), info.conn_tab_size)
        );
        let listing = ipvsadm(&["-Ln"]);
        let banner = listing.lines().next().expect("a banner line");
        assert_eq!(
            parse_banner(banner),
            ("1.2.1".to_string(), info.conn_tab_size)
        );
    });
}

// ---- batches -------------------------------------------------------------

/// A few hundred requests in windows of 64, one failing mid-window: only
/// that one fails, with its own kind, and every other one lands.
#[test]
#[ignore = "needs IPVS and CAP_NET_ADMIN: run in the testbed guest (suite netlink)"]
fn batch_with_one_failure() {
    in_netns(|| {
        let mut ipvs = connect();
        let keys: Vec<ServiceKey> = (0..5u8)
            .map(|i| ServiceKey::tcp(IpAddr::V4(Ipv4Addr::new(198, 19, 1, i)), 80))
            .collect();
        let mut reqs: Vec<Request> = keys
            .iter()
            .map(|k| Request::AddService(Service::new(*k, "wrr")))
            .collect();
        for (i, k) in keys.iter().enumerate() {
            for j in 0..60u8 {
                let addr = IpAddr::V4(Ipv4Addr::new(198, 18, i as u8 + 1, j + 2));
                let d = Destination::new(addr, 8080).weight(u32::from(j) + 1);
                reqs.push(Request::AddDestination(*k, d));
            }
        }
        // Index 150 is the 23rd of the third window: a duplicate of 149.
        const BAD: usize = 150;
        reqs.insert(BAD, reqs[BAD - 1].clone());
        let total = reqs.len();
        assert!(total > 300);

        let results = ipvs.execute_all(&reqs);
        assert_eq!(results.len(), total);
        for (i, r) in results.iter().enumerate() {
            match (i, r) {
                (BAD, Err(e)) => assert_eq!(e.kind(), Some(ErrorKind::AlreadyExists), "{e}"),
                (BAD, Ok(())) => panic!("the duplicate at {BAD} was accepted"),
                (_, Err(e)) => panic!("request {i} failed: {e}"),
                (_, Ok(())) => {}
            }
        }
        let want = parse_rules(&ipvsadm(&["-S", "-n"]));
        assert_eq!(want.services.len(), 5);
        assert_eq!(want.dests.len(), 300, "every destination landed once");
        for k in &keys {
            assert_eq!(ipvs.destinations(k).expect("destinations").len(), 60);
        }
        assert_ipvsadm_agrees(&mut ipvs);

        // Deletes, one of a missing service, at a window's edge.
        let mut dels: Vec<Request> = keys.iter().map(|k| Request::DeleteService(*k)).collect();
        let missing = ServiceKey::tcp(v4("198.19.9.9"), 80);
        let mut reqs: Vec<Request> = (0..63).map(|_| Request::GetInfo).collect();
        reqs.push(Request::DeleteService(missing));
        reqs.append(&mut dels);
        let results = ipvs.execute_all(&reqs);
        for (i, r) in results.iter().enumerate() {
            if i == 63 {
                let e = r.as_ref().expect_err("deleting a missing service");
                assert_eq!(e.kind(), Some(ErrorKind::NoSuchService), "{e}");
            } else {
                assert!(r.is_ok(), "request {i}: {r:?}");
            }
        }
        assert_eq!(ipvsadm(&["-S", "-n"]).trim(), "");
    });
}

// ---- errors --------------------------------------------------------------

#[test]
#[ignore = "needs IPVS and CAP_NET_ADMIN: run in the testbed guest (suite netlink)"]
fn errors_have_their_kinds() {
    in_netns(|| {
        let mut ipvs = connect();
        let key = ServiceKey::tcp(v4("198.19.0.30"), 80);
        let missing = ServiceKey::tcp(v4("198.19.0.31"), 80);
        ipvs.add_service(&Service::new(key, "rr")).expect("add");
        let d = Destination::new(v4("198.18.1.2"), 80);
        ipvs.add_destination(&key, &d).expect("add destination");

        let dup = ipvs.add_service(&Service::new(key, "wrr"));
        assert_eq!(
            kind(dup),
            Some(ErrorKind::AlreadyExists),
            "duplicate service"
        );
        let dup = ipvs.add_destination(&key, &d);
        assert_eq!(
            kind(dup),
            Some(ErrorKind::AlreadyExists),
            "duplicate destination"
        );

        let e = ipvs.delete_service(&missing);
        assert_eq!(
            kind(e),
            Some(ErrorKind::NoSuchService),
            "delete a missing service"
        );
        let e = ipvs.edit_service(&Service::new(missing, "rr"));
        assert_eq!(
            kind(e),
            Some(ErrorKind::NoSuchService),
            "edit a missing service"
        );
        let e = ipvs.service(&missing);
        assert_eq!(
            kind(e),
            Some(ErrorKind::NoSuchService),
            "get a missing service"
        );
        let e = ipvs.add_destination(&missing, &d);
        assert_eq!(
            kind(e),
            Some(ErrorKind::NoSuchService),
            "add to a missing service"
        );

        let e = ipvs.delete_destination(&key, v4("198.18.1.99"), 80);
        assert_eq!(
            kind(e),
            Some(ErrorKind::NotFound),
            "delete a missing destination"
        );
        let e = ipvs.edit_destination(&key, &Destination::new(v4("198.18.1.99"), 80));
        assert_eq!(
            kind(e),
            Some(ErrorKind::NotFound),
            "edit a missing destination"
        );

        // ip_vs_add_service: ip_vs_scheduler_get() finds no ip_vs_nosuch.
        let e = ipvs.add_service(&Service::new(missing, "nosuch"));
        assert_eq!(kind(e), Some(ErrorKind::NotFound), "unknown scheduler");
        let e = ipvs.edit_service(&Service::new(key, "nosuch"));
        assert_eq!(
            kind(e),
            Some(ErrorKind::NotFound),
            "edit to an unknown scheduler"
        );
        let mut s = Service::new(missing, "rr").persistent(10);
        s.pe_name = Some("nosuch".to_string());
        assert_eq!(
            kind(ipvs.add_service(&s)),
            Some(ErrorKind::NotFound),
            "unknown pe"
        );

        // A name too long for IP_VS_SCHEDNAME_MAXLEN never leaves the
        // crate: no kernel error, and the next request of the batch lands.
        let long = Service::new(missing, "a-scheduler-name-too-long");
        let r = ipvs.execute_all(&[
            Request::AddService(long.clone()),
            Request::AddService(Service::new(missing, "rr")),
        ]);
        match &r[0] {
            Err(e @ Error::InvalidRequest { .. }) => eprintln!("    (expected) {e}"),
            other => panic!("a long scheduler name: {other:?}"),
        }
        assert!(r[1].is_ok(), "{:?}", r[1]);
        assert!(matches!(
            ipvs.add_service(&long),
            Err(Error::InvalidRequest { .. })
        ));

        // Thresholds the wrong way round; a GUE tunnel without a port.
        let mut t = Destination::new(v4("198.18.1.3"), 80);
        t.upper_threshold = 10;
        t.lower_threshold = 20;
        assert_eq!(
            kind(ipvs.add_destination(&key, &t)),
            Some(ErrorKind::OutOfRange)
        );
        let mut g = Destination::new(v4("198.18.1.4"), 80).forward(ForwardMethod::Tunnel);
        g.tunnel.kind = TunnelType::Gue;
        assert_eq!(
            kind(ipvs.add_destination(&key, &g)),
            Some(ErrorKind::InvalidArgument)
        );
        // An IPv6 real server behind an IPv4 service, without a tunnel.
        let x = Destination::new(v6("2001:db8:1:1::2"), 80);
        assert_eq!(
            kind(ipvs.add_destination(&key, &x)),
            Some(ErrorKind::InvalidArgument)
        );

        // None of the refused requests left a trace.
        let rules = parse_rules(&ipvsadm(&["-S", "-n"])).sorted();
        assert_eq!(
            rules.services.iter().map(|s| s.key).collect::<Vec<_>>(),
            [key, missing]
        );
        assert_eq!(rules.services[0].scheduler, "rr");
        assert_eq!(rules.dests.len(), 1);
    });
}

/// Drops `CAP_NET_ADMIN` from this thread's effective and permitted sets
/// (capabilities are per thread), keeping the others.
fn drop_net_admin() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    const CAP_NET_ADMIN: u32 = 12;
    let mut hdr = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget/capset with a v3 header read and write two Data.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut hdr, data.as_mut_ptr()) };
    assert_eq!(rc, 0, "capget: {}", std::io::Error::last_os_error());
    data[0].effective &= !(1 << CAP_NET_ADMIN);
    data[0].permitted &= !(1 << CAP_NET_ADMIN);
    // SAFETY: as above.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()) };
    assert_eq!(rc, 0, "capset: {}", std::io::Error::last_os_error());
}

#[test]
#[ignore = "needs IPVS and CAP_NET_ADMIN: run in the testbed guest (suite netlink)"]
fn unprivileged_caller_is_refused() {
    in_netns(|| {
        let key = ServiceKey::tcp(v4("198.19.0.40"), 80);
        // A privileged socket made the service; the unprivileged one must
        // neither see nor change it.
        connect()
            .add_service(&Service::new(key, "rr"))
            .expect("add");
        drop_net_admin();
        // Resolving the family needs no privilege.
        let mut ipvs = connect();
        let denied = Some(ErrorKind::PermissionDenied);
        assert_eq!(kind(ipvs.services()), denied, "list (a dump)");
        assert_eq!(kind(ipvs.service(&key)), denied, "get");
        assert_eq!(kind(ipvs.info()), denied, "info");
        assert_eq!(kind(ipvs.timeouts()), denied, "timeouts");
        assert_eq!(
            kind(ipvs.add_service(&Service::new(ServiceKey::tcp(v4("198.19.0.41"), 80), "rr"))),
            denied,
            "add"
        );
        assert_eq!(kind(ipvs.delete_service(&key)), denied, "delete");
        assert_eq!(kind(ipvs.flush()), denied, "flush");
        assert_eq!(kind(ipvs.bpf()), denied, "get bpf");
        // ipvsadm (root again after exec) still sees exactly that service.
        let rules = parse_rules(&ipvsadm(&["-S", "-n"]));
        assert_eq!(rules.services, [Service::new(key, "rr")]);
    });
}

// ---- the ipvs-bpf session map ------------------------------------------

/// `BPF_MAP_CREATE`: a map of `map_type` with the given sizes.
fn bpf_map(map_type: u32, key_size: usize, value_size: usize, max_entries: u32) -> OwnedFd {
    let mut attr = [0u32; 32];
    attr[0] = map_type;
    attr[1] = key_size as u32;
    attr[2] = value_size as u32;
    attr[3] = max_entries;
    // SAFETY: attr is a zeroed union bpf_attr prefix of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            0, // BPF_MAP_CREATE
            attr.as_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    assert!(
        fd >= 0,
        "BPF_MAP_CREATE: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: the kernel just handed us this descriptor.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

/// The kernel id of a map (`BPF_OBJ_GET_INFO_BY_FD`, `bpf_map_info.id`).
fn bpf_map_id(fd: &OwnedFd) -> u32 {
    let mut info = [0u32; 10];
    let mut attr = [0u64; 2];
    attr[0] = fd.as_raw_fd() as u64 | ((std::mem::size_of_val(&info) as u64) << 32);
    attr[1] = info.as_mut_ptr() as u64;
    // SAFETY: attr holds bpf_fd, info_len and a pointer to info, which
    // outlives the call and is info_len bytes long.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            15, // BPF_OBJ_GET_INFO_BY_FD
            attr.as_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    assert_eq!(
        rc,
        0,
        "BPF_OBJ_GET_INFO_BY_FD: {}",
        std::io::Error::last_os_error()
    );
    info[1]
}

#[test]
#[ignore = "needs IPVS and CAP_NET_ADMIN: run in the testbed guest (suite netlink)"]
fn bpf_session_map_attach_and_detach() {
    const HASH: u32 = 1;
    const ARRAY: u32 = 2;
    let key = std::mem::size_of::<IpVsBpfKey>();
    let value = std::mem::size_of::<IpVsBpfValue>();
    assert_eq!((key, value), (40, 20));
    in_netns(move || {
        let mut ipvs = connect();
        assert_eq!(ipvs.bpf().expect("get bpf"), None, "nothing attached yet");

        let attach = |fd: &OwnedFd, snat| BpfAttach {
            map_fd: fd.as_raw_fd() as u32,
            snat,
            local_nets: Vec::new(),
        };
        // Refused maps: the wrong type, the wrong value size, too small.
        let array = bpf_map(ARRAY, 4, value, 1024);
        assert_eq!(
            kind(ipvs.attach_bpf(&attach(&array, None))),
            Some(ErrorKind::InvalidArgument),
            "an array map"
        );
        let narrow = bpf_map(HASH, key, value - 4, 1024);
        assert_eq!(
            kind(ipvs.attach_bpf(&attach(&narrow, None))),
            Some(ErrorKind::InvalidArgument),
            "a value size of {}",
            value - 4
        );
        let tiny = bpf_map(HASH, key, value, uapi::IP_VS_BPF_MIN_ENTRIES - 1);
        assert_eq!(
            kind(ipvs.attach_bpf(&attach(&tiny, None))),
            Some(ErrorKind::InvalidArgument),
            "too few entries"
        );
        let closed = {
            let m = bpf_map(HASH, key, value, 1024);
            m.as_raw_fd() as u32
        };
        assert_eq!(
            kind(ipvs.attach_bpf(&BpfAttach {
                map_fd: closed,
                snat: None,
                local_nets: Vec::new(),
            })),
            Some(ErrorKind::BadFd),
            "a closed fd"
        );
        assert_eq!(
            ipvs.bpf().expect("get bpf"),
            None,
            "refusals attach nothing"
        );

        let map = bpf_map(HASH, key, value, 1024);
        let snat = Snat {
            addr4: Some("192.0.2.1".parse().expect("IPv4")),
            addr6: Some("2001:db8::1".parse().expect("IPv6")),
            port_min: 40000,
            port_max: 40999,
        };
        ipvs.attach_bpf(&attach(&map, Some(snat)))
            .expect("attach the session map");
        let st = ipvs.bpf().expect("get bpf").expect("a map is attached");
        assert_eq!(st.map_id, bpf_map_id(&map), "map id");
        assert_eq!(st.snat, Some(snat), "SNAT settings");
        assert_eq!(st.stats.sessions, 0);

        let second = bpf_map(HASH, key, value, 1024);
        assert_eq!(
            kind(ipvs.attach_bpf(&attach(&second, None))),
            Some(ErrorKind::Busy),
            "a second map"
        );
        assert_eq!(
            kind(ipvs.attach_bpf(&attach(&map, None))),
            Some(ErrorKind::Busy),
            "the same map again"
        );
        assert_eq!(
            ipvs.bpf().expect("get bpf").map(|s| s.map_id),
            Some(st.map_id)
        );

        ipvs.detach_bpf().expect("detach");
        assert_eq!(ipvs.bpf().expect("get bpf"), None, "detached");
        assert_eq!(
            kind(ipvs.detach_bpf()),
            Some(ErrorKind::NotFound),
            "detach twice"
        );

        // Local nets: refused with host bits or past the address's length,
        // reported back in order as attached.
        let net = |a: &str, prefix_len| LocalNet {
            addr: a.parse().expect("address"),
            prefix_len,
        };
        for bad in [net("10.0.0.4", 24), net("10.0.0.0", 33), net("fd00::1", 64)] {
            let a = BpfAttach {
                local_nets: vec![bad],
                ..attach(&second, None)
            };
            assert_eq!(
                kind(ipvs.attach_bpf(&a)),
                Some(ErrorKind::InvalidArgument),
                "local net {bad}"
            );
        }
        let nets = vec![net("198.18.0.0", 16), net("2001:db8:1::", 48)];
        ipvs.attach_bpf(&BpfAttach {
            local_nets: nets.clone(),
            ..attach(&second, Some(snat))
        })
        .expect("attach with local nets");
        let st = ipvs.bpf().expect("get bpf").expect("attached");
        assert_eq!(st.local_nets, nets, "local nets");
        ipvs.detach_bpf().expect("detach");

        // Attached again without SNAT, it reports none.
        ipvs.attach_bpf(&attach(&second, None))
            .expect("attach another");
        let st = ipvs.bpf().expect("get bpf").expect("attached");
        assert_eq!((st.map_id, st.snat), (bpf_map_id(&second), None));
        assert!(st.local_nets.is_empty(), "no local nets");
        ipvs.detach_bpf().expect("detach");
    });
}

// ---- the async client ----------------------------------------------------

#[cfg(feature = "tokio")]
#[test]
#[ignore = "needs IPVS and CAP_NET_ADMIN: run in the testbed guest (suite netlink)"]
fn async_round_trip() {
    use ipvs_netlink::AsyncIpvs;

    in_netns(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        rt.block_on(async {
            let mut ipvs = AsyncIpvs::connect().await.expect("connect");
            let key = ServiceKey::udp(v6("2001:db8:2::53"), 53);
            let mut s = Service::new(key, "sh").persistent(90);
            s.flags |= ServiceFlags::SH_PORT;
            s.netmask = 64;
            ipvs.add_service(&s).await.expect("add");
            let reqs: Vec<Request> = (2..6u16)
                .map(|i| {
                    let addr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 1, 0, 0, 0, i));
                    Request::AddDestination(key, Destination::new(addr, 53).weight(u32::from(i)))
                })
                .collect();
            for r in ipvs.execute_all(&reqs).await {
                r.expect("add destination");
            }
            let dup = ipvs.add_service(&s).await;
            assert_eq!(kind(dup), Some(ErrorKind::AlreadyExists));

            let got = ipvs.services().await.expect("list");
            assert_eq!(
                got.iter().map(Service::config).collect::<Vec<_>>(),
                [s.clone()]
            );
            let mut ds: Vec<Destination> = ipvs
                .destinations(&key)
                .await
                .expect("destinations")
                .iter()
                .map(Destination::config)
                .collect();
            ds.sort_by_key(|d| d.addr);
            let rules = parse_rules(&ipvsadm(&["-S", "-n"])).sorted();
            assert_eq!(rules.services, [s]);
            assert_eq!(
                rules.dests.into_iter().map(|(_, d)| d).collect::<Vec<_>>(),
                ds,
                "ipvsadm -S -n vs the async client"
            );
            assert_eq!(ipvs.info().await.expect("info").version, 0x010201);

            ipvsadm(&["-D", "-u", "[2001:db8:2::53]:53"]);
            assert_eq!(
                kind(ipvs.service(&key).await),
                Some(ErrorKind::NoSuchService)
            );
            assert!(ipvs.services().await.expect("list").is_empty());
        });
    });
}

// ---- sync daemons --------------------------------------------------------

/// `ipvsadm -L --daemon`: `master sync daemon (mcast=d0, syncid=5,
/// maxlen=1472, group=224.0.0.81, port=8848, ttl=1)`.
fn parse_daemons(text: &str) -> Vec<Daemon> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((state, rest)) = line.trim().split_once(" sync daemon (") else {
            continue;
        };
        let state = match state {
            "master" => DaemonState::Master,
            "backup" => DaemonState::Backup,
            other => panic!("daemon state {other:?}"),
        };
        let mut d = Daemon::new(state, "", 0);
        for kv in rest.trim_end_matches(')').split(", ") {
            let (k, v) = kv
                .split_once('=')
                .unwrap_or_else(|| panic!("{kv:?} in {line:?}"));
            match k {
                "mcast" => d.mcast_ifn = v.to_string(),
                "syncid" => d.sync_id = num(v),
                "maxlen" => d.sync_maxlen = Some(num(v)),
                "group" => d.mcast_group = Some(num(v)),
                "port" => d.mcast_port = Some(num(v)),
                "ttl" => d.mcast_ttl = Some(num(v)),
                other => panic!("{other:?} in {line:?}"),
            }
        }
        out.push(d);
    }
    out.sort_by_key(|d| d.state.raw());
    out
}

fn crate_daemons(ipvs: &mut Ipvs) -> Vec<Daemon> {
    let mut d = ipvs.daemons().expect("list sync daemons");
    d.sort_by_key(|d| d.state.raw());
    d
}

#[test]
#[ignore = "needs IPVS and CAP_NET_ADMIN: run in the testbed guest (suite netlink)"]
fn sync_daemons_are_seen_by_the_other() {
    in_netns(|| {
        // The daemons send and listen on a multicast-capable interface
        // with an address.
        run("ip", &["link", "add", "d0", "type", "dummy"]);
        run("ip", &["link", "set", "d0", "multicast", "on", "up"]);
        run("ip", &["addr", "add", "192.0.2.9/24", "dev", "d0"]);
        let mut ipvs = connect();
        assert!(ipvs.daemons().expect("no daemons").is_empty());

        ipvsadm_line(
            "--start-daemon master --mcast-interface d0 --syncid 5 --sync-maxlen 1400 \
             --mcast-group 224.0.0.90 --mcast-port 8850 --mcast-ttl 2",
        );
        let mut backup = Daemon::new(DaemonState::Backup, "d0", 7);
        backup.mcast_group = Some(v4("224.0.0.91"));
        backup.mcast_port = Some(8851);
        ipvs.start_daemon(&backup).expect("start a backup daemon");

        let got = crate_daemons(&mut ipvs);
        assert_eq!(got, parse_daemons(&ipvsadm(&["-L", "--daemon"])), "daemons");
        let master = &got[0];
        assert_eq!(
            (master.state, master.mcast_ifn.as_str(), master.sync_id),
            (DaemonState::Master, "d0", 5)
        );
        assert_eq!(
            (
                master.sync_maxlen,
                master.mcast_group,
                master.mcast_port,
                master.mcast_ttl
            ),
            (Some(1400), Some(v4("224.0.0.90")), Some(8850), Some(2))
        );
        assert_eq!(
            (got[1].sync_id, got[1].mcast_group, got[1].mcast_port),
            (7, Some(v4("224.0.0.91")), Some(8851))
        );
        assert_eq!(
            kind(ipvs.start_daemon(&backup)),
            Some(ErrorKind::AlreadyExists),
            "a second backup daemon"
        );

        ipvs.stop_daemon(DaemonState::Master).expect("stop master");
        let left = parse_daemons(&ipvsadm(&["-L", "--daemon"]));
        assert_eq!(
            left.iter().map(|d| d.state).collect::<Vec<_>>(),
            [DaemonState::Backup]
        );
        ipvsadm(&["--stop-daemon", "backup"]);
        assert!(
            ipvs.daemons().expect("list").is_empty(),
            "after ipvsadm --stop-daemon"
        );
    });
}
