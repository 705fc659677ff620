//! Shared by the tests that touch the kernel's network state
//! (`ipvsmode_netns`, `reconcile_kernel`): a network namespace of the
//! test's own, and running a command in it.
#![allow(dead_code)]

use std::process::Command;

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
