//! Micro-benchmark of the SNAT programs: ns per packet through
//! BPF_PROG_TEST_RUN with `repeat`, for each path side by side in one run,
//! against pktcount (a per-CPU counter and nothing else) as the floor; and
//! the programs' size as the verifier and the JIT left them (bpftool's
//! xlated dump; the JIT image from bpf_prog_info, disassembled by llvm-mc).
//!
//! `cargo bench -p ipvsbpf-proxy --bench snat` (root). Prints a markdown
//! report. Sessions are set up so that every repetition takes the path it
//! claims (a rewrite turns the packet into another session's packet, which
//! rewrites it back); the counters are checked to prove it.

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::collections::BTreeMap;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use common::*;
use ipvs_netlink::Snat;
use ipvsbpf_proxy::backends::datapath::{
    session_key, session_value, Datapath, Direction, Options, Reason,
};
use ipvsbpf_proxy::backends::pktcount;
use std::os::fd::AsFd;

use libbpf_rs::query::{ProgInfoIter, ProgInfoQueryOptions};
use libbpf_rs::{Program, ProgramInput, ProgramMut};

const REPEAT: u32 = 200_000;
const ROUNDS: usize = 7;
/// Unrelated connections in the session map, so lookups walk a realistic
/// table.
const BACKGROUND: u32 = 20_000;

/// Median ns/packet over ROUNDS runs of REPEAT repetitions.
fn time(prog: &ProgramMut<'_>, frame: &[u8]) -> f64 {
    let mut samples: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let input = ProgramInput {
                data_in: Some(frame),
                repeat: REPEAT,
                ..Default::default()
            };
            let out = prog.test_run(input).expect("BPF_PROG_TEST_RUN");
            out.duration.as_nanos() as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[ROUNDS / 2]
}

fn put(
    dp: &Datapath<'_>,
    dir: Direction,
    l4: L4,
    src: SocketAddr,
    dst: SocketAddr,
    to: SocketAddr,
) {
    let k = session_key(dir, l4.proto(), src, dst).expect("key");
    dp.put_session(&k, &session_value(to, true))
        .expect("session");
}

fn background(dp: &Datapath<'_>) {
    for i in 0..BACKGROUND {
        let client = sa(&format!(
            "10.{}.{}.{}:{}",
            (i >> 16) & 0xff,
            (i >> 8) & 0xff,
            i & 0xff,
            1024 + i % 50000
        ));
        for (k, v) in ipvs_entries(
            L4::Tcp,
            client,
            sa("198.18.9.9:80"),
            Some(sa("192.0.2.1:33000")),
        ) {
            dp.put_session(&k, &v).expect("background session");
        }
    }
}

struct Path<'a> {
    name: &'static str,
    /// the object it runs in
    dp: &'a Datapath<'a>,
    dir: Direction,
    frame: Vec<u8>,
    reason: Reason,
}

fn main() {
    let mut storage = MaybeUninit::uninit();
    let dp = Datapath::load(&mut storage, &Options::default()).expect("load snat (needs root)");
    let mut floor_storage = MaybeUninit::uninit();
    let floor = pktcount::load(&mut floor_storage).expect("load pktcount");
    background(&dp);

    let (c, r, s) = (
        sa("192.0.2.100:40000"),
        sa("198.18.1.10:80"),
        sa("192.0.2.1:61000"),
    );
    let (c6, r6, s6) = (
        sa("[2001:db8::100]:40000"),
        sa("[2001:db8:1::10]:80"),
        sa("[2001:db8::1]:61000"),
    );
    // Each rewrite's result is itself a session that rewrites it back
    for (c, r, s) in [(c, r, s), (c6, r6, s6)] {
        put(&dp, Direction::Orig, L4::Tcp, c, r, s);
        put(&dp, Direction::Orig, L4::Tcp, s, r, c);
        put(&dp, Direction::Reply, L4::Tcp, r, s, c);
        put(&dp, Direction::Reply, L4::Tcp, r, c, s);
        put(&dp, Direction::Orig, L4::Udp, c, r, s);
        put(&dp, Direction::Orig, L4::Udp, s, r, c);
    }
    let req = Flow {
        l4: L4::Tcp,
        src: c,
        dst: r,
    };
    let rep = Flow {
        l4: L4::Tcp,
        src: r,
        dst: s,
    };
    let req6 = Flow {
        l4: L4::Tcp,
        src: c6,
        dst: r6,
    };
    let payload = [0x42u8; 64];
    // Fragment map entries for both orientations of one datagram
    let udp = Flow {
        l4: L4::Udp,
        src: c,
        dst: r,
    };
    for f in [udp, udp.with_src(s)] {
        run(&dp, Direction::Orig, &fragments(&f, &[7; 100], 32, 5)[0]);
    }
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&MAC_NODE);
    arp.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&[0; 20]);

    // The same object as the proxy loads it, with IPVS's SNAT settings:
    // ingress skips what is not addressed to a SNAT address and port. A
    // ClusterIP reply (a session without SNAT, back to a client pod)
    // through both.
    let mut filtered_storage = MaybeUninit::uninit();
    let filtered = Datapath::load(
        &mut filtered_storage,
        &Options {
            snat_dst: Some(Snat {
                addr4: Some("192.0.2.1".parse().expect("addr")),
                addr6: Some("2001:db8::1".parse().expect("addr")),
                port_min: 61000,
                port_max: 61999,
            }),
            ..Options::default()
        },
    )
    .expect("load snat with SNAT settings");
    let pod = sa("10.244.1.5:40000");
    for d in [&dp, &filtered] {
        for (k, v) in ipvs_entries(L4::Tcp, pod, r, None) {
            d.put_session(&k, &v).expect("session without SNAT");
        }
    }
    let clusterip_reply = Flow {
        l4: L4::Tcp,
        src: r,
        dst: pod,
    };

    let paths = vec![
        Path {
            dp: &dp,
            name: "hit, TCP/IPv4, egress (SNAT)",
            dir: Direction::Orig,
            frame: frame(&req, &payload),
            reason: Reason::Xlated,
        },
        Path {
            dp: &dp,
            name: "hit, TCP/IPv4, ingress (reverse SNAT)",
            dir: Direction::Reply,
            frame: frame(&rep, &payload),
            reason: Reason::Xlated,
        },
        Path {
            dp: &dp,
            name: "hit, TCP/IPv6, egress (SNAT)",
            dir: Direction::Orig,
            frame: frame(&req6, &payload),
            reason: Reason::Xlated,
        },
        Path {
            dp: &dp,
            name: "miss, TCP/IPv4 (not a session)",
            dir: Direction::Orig,
            frame: frame(&req.with_dst(sa("198.18.1.11:80")), &payload),
            reason: Reason::PassMiss,
        },
        Path {
            dp: &dp,
            name: "ICMP error about a session, IPv4, ingress",
            dir: Direction::Reply,
            frame: icmp_error(r.ip(), s.ip(), 3, 4, &packet(&req.with_src(s), &payload)),
            reason: Reason::IcmpXlated,
        },
        Path {
            dp: &dp,
            name: "later fragment, IPv4, egress",
            dir: Direction::Orig,
            frame: fragments(&udp, &[7; 100], 32, 5)[1].clone(),
            reason: Reason::FragXlated,
        },
        Path {
            dp: &dp,
            name: "session without SNAT, TCP/IPv4, ingress (ClusterIP reply)",
            dir: Direction::Reply,
            frame: frame(&clusterip_reply, &payload),
            reason: Reason::PassNoSnat,
        },
        Path {
            dp: &filtered,
            name: "the same, SNAT settings loaded (the proxy): not looked up",
            dir: Direction::Reply,
            frame: frame(&clusterip_reply, &payload),
            reason: Reason::PassNotSnatDst,
        },
        Path {
            dp: &dp,
            name: "not IP (ARP)",
            dir: Direction::Reply,
            frame: arp,
            reason: Reason::PassNotIp,
        },
    ];

    let floor_ns = time(&floor.progs.pktcount_egress, &frame(&req, &payload));
    println!(
        "## SNAT programs: BPF_PROG_TEST_RUN, {REPEAT} repetitions, median of {ROUNDS} rounds\n"
    );
    println!(
        "kernel {}, {} background connections in the session map\n",
        kernel(),
        BACKGROUND
    );
    println!("| path | ns/packet | × pktcount floor |");
    println!("| --- | ---: | ---: |");
    println!("| floor: pktcount (one per-CPU counter) | {floor_ns:.1} | 1.00 |");
    for p in &paths {
        let prog = p.dp.program(p.dir);
        let before = p.dp.counter(p.dir, p.reason).expect("counter").packets;
        let ns = time(prog, &p.frame);
        let after = p.dp.counter(p.dir, p.reason).expect("counter").packets;
        let runs = u64::from(REPEAT) * ROUNDS as u64;
        assert_eq!(
            after - before,
            runs,
            "{}: every repetition must take the {:?} path",
            p.name,
            p.reason
        );
        println!("| {} | {ns:.1} | {:.2} |", p.name, ns / floor_ns);
    }

    println!("\n## Program size\n");
    println!("| program | xlated insns | JIT bytes | JIT x86 insns | helper calls in xlated |");
    println!("| --- | ---: | ---: | ---: | --- |");
    for (name, prog) in [
        ("ipvsbpf_egress", &dp.skel().progs.ipvsbpf_egress),
        ("ipvsbpf_ingress", &dp.skel().progs.ipvsbpf_ingress),
        ("ipvsbpf_l3_egress", &dp.skel().progs.ipvsbpf_l3_egress),
        ("ipvsbpf_l3_ingress", &dp.skel().progs.ipvsbpf_l3_ingress),
        ("pktcount_egress", &floor.progs.pktcount_egress),
    ] {
        let (xlated, calls) = xlated(prog_id(prog));
        let (bytes, insns) = jited(prog_id(prog));
        if name.starts_with("ipvsbpf") {
            // One hash lookup per path (session, ICMP's session, fragment)
            // and the per-CPU counters inlined: a lookup added anywhere
            // fails here.
            assert_eq!(
                calls.get("__htab_map_lookup_elem"),
                Some(&3),
                "{name}: {calls:?}"
            );
            assert!(
                !calls.keys().any(|k| k.contains("array_map_lookup")),
                "{name}: counter lookup not inlined: {calls:?}"
            );
        }
        let calls: Vec<String> = calls.iter().map(|(k, v)| format!("{k} ×{v}")).collect();
        println!(
            "| {name} | {xlated} | {bytes} | {insns} | {} |",
            calls.join(", ")
        );
    }
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn bpftool(args: &[&str]) -> String {
    let out = Command::new("bpftool")
        .args(args)
        .output()
        .expect("bpftool");
    assert!(
        out.status.success(),
        "bpftool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Instruction count and helper calls of the verifier's output.
fn xlated(id: u32) -> (usize, BTreeMap<String, usize>) {
    let dump = bpftool(&["prog", "dump", "xlated", "id", &id.to_string()]);
    let mut insns = 0;
    let mut calls = BTreeMap::new();
    for line in dump.lines() {
        let Some((idx, rest)) = line.trim_start().split_once(": (") else {
            continue;
        };
        if idx.parse::<u32>().is_err() {
            continue;
        }
        // a 16-byte ld_imm64 counts as two instruction slots
        insns += if rest.starts_with("18)") { 2 } else { 1 };
        if let Some(call) = rest.strip_prefix("85) call ") {
            let name = call.split('#').next().unwrap_or(call).to_string();
            *calls.entry(name).or_insert(0) += 1;
        }
    }
    (insns, calls)
}

/// JIT image size and its x86 instruction count. Debian's bpftool cannot
/// dump JIT code (no libbfd): the image comes from bpf_prog_info, and
/// llvm-mc disassembles it.
fn jited(id: u32) -> (usize, usize) {
    let opts = ProgInfoQueryOptions::default().include_jited_prog_insns(true);
    let image = ProgInfoIter::with_query_opts(opts)
        .find(|p| p.id == id)
        .map(|p| p.jited_prog_insns)
        .expect("program info");
    let hex: String = image.iter().map(|b| format!("0x{b:02x} ")).collect();
    let mut mc = Command::new("llvm-mc")
        .args(["--disassemble", "-triple=x86_64"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("llvm-mc");
    {
        use std::io::Write;
        let mut stdin = mc.stdin.take().expect("stdin");
        stdin.write_all(hex.as_bytes()).expect("write to llvm-mc");
    }
    let out = mc.wait_with_output().expect("llvm-mc");
    let insns = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with('\t') && !l.trim_start().starts_with('.'))
        .count();
    (image.len(), insns)
}

fn prog_id(prog: &ProgramMut<'_>) -> u32 {
    Program::id_from_fd(prog.as_fd()).expect("program id")
}
