//! Programming a large rule set: this crate against `ipvsadm -R`, side by
//! side in one run, in a network namespace of its own.
//!
//! `cargo bench -p ipvs-netlink --bench restore -- --services 1000`
//! builds the same N services (TCP, `rr`) × D NAT destinations three ways
//! and reports the time of each, the median of the rounds, and the ratio
//! to `ipvsadm -R`:
//!
//! - `ipvsadm -R`: the rules as `ipvsadm -S -n` would print them, piped
//!   into one `ipvsadm -R` (one netlink request per rule, each waiting for
//!   its ACK, as libipvs does);
//! - `crate, batched`: `Ipvs::connect` plus `execute_all` (64 requests a
//!   datagram, one ACK pass per window);
//! - `crate, one by one`: `execute` per request, as a naive caller would.
//!
//! After each way IPVS is dumped with `ipvsadm -S -n` (first round only)
//! and must hold exactly the rule set; then it is flushed. Needs root and
//! IPVS (the testbed guest: suite `netlink`).

use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ipvs_netlink::{Destination, Ipvs, Request, Service, ServiceKey};

struct Args {
    services: usize,
    dests: usize,
    rounds: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        services: 1000,
        dests: 10,
        rounds: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut num = |name: &str| -> Result<usize, String> {
            it.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{name} needs a number"))
        };
        match flag.as_str() {
            "--services" => a.services = num("--services")?,
            "--dests" => a.dests = num("--dests")?,
            "--rounds" => a.rounds = num("--rounds")?.max(1),
            // What cargo bench passes along.
            "--bench" => {}
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.services == 0 || a.services > 60_000 || a.dests == 0 || a.dests > 250 {
        return Err("--services 1..=60000, --dests 1..=250".into());
    }
    Ok(a)
}

fn vip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 19, (i / 250) as u8, (i % 250 + 1) as u8))
}

fn rip(i: usize, d: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18, (d + 1) as u8, (i % 250 + 1) as u8))
}

fn requests(a: &Args) -> Vec<Request> {
    let mut v = Vec::with_capacity(a.services * (a.dests + 1));
    for i in 0..a.services {
        let key = ServiceKey::tcp(vip(i), 80);
        v.push(Request::AddService(Service::new(key, "rr")));
        for d in 0..a.dests {
            v.push(Request::AddDestination(
                key,
                Destination::new(rip(i, d), 8080),
            ));
        }
    }
    v
}

/// The same rules in `ipvsadm -S -n` syntax: what `-R` reads and what
/// `-S -n` prints back.
fn rules(a: &Args) -> String {
    let mut s = String::new();
    for i in 0..a.services {
        s.push_str(&format!("-A -t {}:80 -s rr\n", vip(i)));
        for d in 0..a.dests {
            s.push_str(&format!(
                "-a -t {}:80 -r {}:8080 -m -w 1\n",
                vip(i),
                rip(i, d)
            ));
        }
    }
    s
}

fn sorted_lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.lines().map(str::to_string).collect();
    v.sort();
    v
}

/// Runs ipvsadm with `stdin` from a file (a pipe written while ipvsadm
/// fills its own stderr with complaints could deadlock both).
fn ipvsadm(args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    let input = match stdin {
        Some(text) => {
            let path = std::env::temp_dir().join(format!("restore-{}.rules", std::process::id()));
            std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
            let f = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let _ = std::fs::remove_file(&path);
            Stdio::from(f)
        }
        None => Stdio::null(),
    };
    let out = Command::new("ipvsadm")
        .args(args)
        .stdin(input)
        .output()
        .map_err(|e| format!("ipvsadm: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ipvsadm {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[derive(Clone, Copy, PartialEq)]
enum Way {
    Ipvsadm,
    Batched,
    OneByOne,
}

impl Way {
    fn name(self) -> &'static str {
        match self {
            Way::Ipvsadm => "ipvsadm -R",
            Way::Batched => "crate, batched",
            Way::OneByOne => "crate, one by one",
        }
    }
}

fn program(way: Way, reqs: &[Request], text: &str) -> Result<Duration, String> {
    let t = Instant::now();
    match way {
        Way::Ipvsadm => {
            ipvsadm(&["-R"], Some(text))?;
        }
        Way::Batched => {
            let mut ipvs = Ipvs::connect().map_err(|e| e.to_string())?;
            for r in ipvs.execute_all(reqs) {
                r.map_err(|e| e.to_string())?;
            }
        }
        Way::OneByOne => {
            let mut ipvs = Ipvs::connect().map_err(|e| e.to_string())?;
            for r in reqs {
                ipvs.execute(r).map_err(|e| e.to_string())?;
            }
        }
    }
    Ok(t.elapsed())
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn run() -> Result<(), String> {
    let a = parse_args()?;
    // SAFETY: unshare before any thread exists; ipvsadm inherits the netns.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(format!(
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        ));
    }
    // A netns without an address has no local routing table, and IPVS
    // refuses destinations whose address type it cannot tell (EINVAL).
    let lo = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .map_err(|e| format!("ip link set lo up: {e}"))?;
    if !lo.success() {
        return Err("ip link set lo up failed".into());
    }
    let reqs = requests(&a);
    let text = rules(&a);
    let want = sorted_lines(&text);
    let ways = [Way::Ipvsadm, Way::Batched, Way::OneByOne];
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); ways.len()];
    let mut flush = Vec::new();
    println!(
        "# ipvs-netlink restore benchmark: {} services x {} destinations = {} requests, {} rounds",
        a.services,
        a.dests,
        reqs.len(),
        a.rounds
    );
    for round in 0..a.rounds {
        // Rotate the order so no way always runs first.
        for k in 0..ways.len() {
            let w = (round + k) % ways.len();
            let way = ways[w];
            let took = program(way, &reqs, &text)?;
            times[w].push(took);
            if round == 0 {
                let got = sorted_lines(&ipvsadm(&["-S", "-n"], None)?);
                if got != want {
                    let missing = want.iter().filter(|l| !got.contains(l)).count();
                    return Err(format!(
                        "{}: IPVS holds {} rules, expected {} ({missing} missing)",
                        way.name(),
                        got.len(),
                        want.len()
                    ));
                }
            }
            let t = Instant::now();
            Ipvs::connect()
                .and_then(|mut i| i.flush())
                .map_err(|e| e.to_string())?;
            flush.push(t.elapsed());
        }
    }
    let base = median(&mut times[0].clone()).as_secs_f64();
    println!("| way | median s | requests/s | time / ipvsadm -R |");
    println!("| --- | ---: | ---: | ---: |");
    for (w, way) in ways.iter().enumerate() {
        let m = median(&mut times[w]).as_secs_f64();
        println!(
            "| {} | {:.3} | {:.0} | {:.2} |",
            way.name(),
            m,
            reqs.len() as f64 / m,
            m / base
        );
    }
    println!(
        "| flush (crate) | {:.3} | | |",
        median(&mut flush).as_secs_f64()
    );
    let batched = times[1][times[1].len() / 2].as_secs_f64();
    println!(
        "goal (batched no slower than ipvsadm -R): {}",
        if batched <= base { "met" } else { "NOT met" }
    );
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("restore: {e}");
        std::process::exit(1);
    }
}
