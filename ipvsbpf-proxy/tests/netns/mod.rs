//! Shared by the tests that touch the kernel (`ipvsmode_netns`,
//! `lbfirewall_netns`, `reconcile_kernel`, `datapath_pin`, `snat_veth`, `snat_tun`):
//! namespaces of the test's own (a network namespace; a mount namespace
//! with a private bpffs), running a command in one, and what a test does
//! when the host lacks something it needs ([`require`]).
#![allow(dead_code)]

use std::io::Write;
use std::path::Path;
use std::process::Command;

/// Whether this is a strict run: `make test` (`testbed/test-all` exports
/// `IPVSBPF_STRICT=1`) or CI (`CI=true`). A strict run never skips.
pub fn strict() -> bool {
    std::env::var("IPVSBPF_STRICT").is_ok_and(|v| v == "1")
        || std::env::var("CI").is_ok_and(|v| v == "true")
}

/// A precondition of the test: `met` says whether the host has `what`,
/// `setup` names the step that provides it ("run testbed/setup (Debian
/// package nftables)"). Met: true. Unmet in a strict run: panics with
/// both. Unmet otherwise: prints `SKIP: <test>: <what>: <setup>` and
/// returns false, and the test must return at once.
///
/// Rust's harness cannot report a skip, so a skipped test shows as
/// passed. The SKIP line therefore goes straight to the standard error,
/// past the harness's capture, so it shows even for a passing test, and
/// `testbed/test-all` fails a step whose output has one.
pub fn require(met: bool, what: &str, setup: &str) -> bool {
    if met {
        return true;
    }
    if strict() {
        panic!("{what}: {setup} (a strict run does not skip)");
    }
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("test");
    // Not eprintln!: the harness would capture it.
    let _ = writeln!(std::io::stderr().lock(), "SKIP: {test}: {what}: {setup}");
    false
}

/// Whether `tool` runs (its version flag exits 0).
pub fn have(tool: &str) -> bool {
    // iproute2's `ip` and `ss` know only -V.
    let flag = if tool == "ip" || tool == "ss" {
        "-V"
    } else {
        "--version"
    };
    Command::new(tool)
        .arg(flag)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// The tools of `tools` that do not run here.
pub fn missing_tools<'a>(tools: &[&'a str]) -> Vec<&'a str> {
    tools.iter().copied().filter(|t| !have(t)).collect()
}

/// Runs `f` on a thread of its own in a new network namespace with `lo`
/// up (the commands it spawns inherit the namespace, so the host's rules,
/// devices and IPVS are never touched). `lo` matters to IPVS: it accepts
/// an IPv4 real server only once `inet_addr_type()` can tell it is
/// unicast, which needs the local routing table `lo`'s address makes.
/// Err when this host cannot make a namespace (no `CAP_SYS_ADMIN`).
pub fn try_in_netns<R: Send + 'static>(
    f: impl FnOnce() -> R + Send + 'static,
) -> Result<R, std::io::Error> {
    let t = std::thread::spawn(move || {
        // SAFETY: unshare(2) changes only the calling thread's namespaces.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        run("ip", &["link", "set", "lo", "up"]);
        Ok(f())
    });
    match t.join() {
        Ok(r) => r,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// [`try_in_netns`] for a test that may skip: `None` (after [`require`]
/// reported it) when this host cannot make a namespace.
pub fn in_netns_or_skip<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> Option<R> {
    match try_in_netns(f) {
        Ok(r) => Some(r),
        Err(e) => {
            require(
                false,
                &format!("unshare(CLONE_NEWNET): {e}"),
                "run the tests as root (CAP_SYS_ADMIN)",
            );
            None
        }
    }
}

/// Where [`in_private_bpffs`] mounts its bpffs: the daemon's default
/// parent (`--bpf-pin-path /sys/fs/bpf/ipvsbpf`), hidden from the host.
pub const BPFFS: &str = "/sys/fs/bpf";

/// Runs `f` on a thread of its own in a new mount namespace, private (no
/// mount event goes back to the host), with a fresh, empty bpffs mounted
/// at [`BPFFS`]. The test never sees the host's pins nor leaves any, and
/// needs no bpffs mounted by hand: the mount and every pin under it go
/// with the namespace when the thread ends. Only the thread is moved
/// (libbpf resolves pin paths in the calling thread's mount namespace),
/// so `f` must pin and open pins on that thread. Panics, naming what is
/// missing, when this host cannot: not root, or no BPF in the kernel.
pub fn in_private_bpffs<R: Send + 'static>(f: impl FnOnce(&Path) -> R + Send + 'static) -> R {
    let t = std::thread::spawn(move || {
        // SAFETY: unshare(2) with CLONE_NEWNS (which implies CLONE_FS)
        // changes only the calling thread's filesystem context.
        if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
            panic!(
                "unshare(CLONE_NEWNS) for a private bpffs: {} (run the tests as root: CAP_SYS_ADMIN)",
                std::io::Error::last_os_error()
            );
        }
        // SAFETY: NUL-terminated literals; a propagation change only.
        let rc = unsafe {
            libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            )
        };
        assert_eq!(
            rc,
            0,
            "making / private in the test's mount namespace: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: NUL-terminated literals; the mount is in this thread's
        // private namespace only.
        let rc = unsafe {
            libc::mount(
                c"bpf".as_ptr(),
                c"/sys/fs/bpf".as_ptr(),
                c"bpf".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        assert_eq!(
            rc,
            0,
            "mount -t bpf bpf {BPFFS} in the test's mount namespace: {} \
             (needs a kernel with CONFIG_BPF_SYSCALL and a sysfs at /sys)",
            std::io::Error::last_os_error()
        );
        f(Path::new(BPFFS))
    });
    match t.join() {
        Ok(r) => r,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Runs a command to success and returns its standard output; panics
/// with its status and both outputs otherwise.
pub fn run(cmd: &str, args: &[&str]) -> String {
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
    String::from_utf8_lossy(&out.stdout).into_owned()
}
