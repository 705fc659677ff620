//! The clients: [`Ipvs`] blocks, [`AsyncIpvs`] (feature `tokio`) awaits.
//! Both send the same [`Request`]s through the same [`Exchange`] and
//! offer the same methods, generated once by `ops!`.
//!
//! Each client owns one generic-netlink socket and resolves the family id
//! once, at connect time. [`Ipvs::execute_all`] sends requests in windows
//! of up to 64 per datagram and collects their ACKs in one pass, which is
//! what makes a full sync of thousands of services cheap.

use std::os::fd::AsRawFd;
use std::time::Duration;

use neli::{consts::socket::NlFamily, socket::synchronous::NlSocketHandle, utils::Groups};

use crate::codec::{self, Request};
use crate::error::{DecodeError, Error, Result};
use crate::proto::{self, Exchange, Replies, WINDOW};
use crate::types::{
    BpfAttach, BpfStatus, Daemon, DaemonState, Destination, Info, Service, ServiceKey, Timeouts,
};
use crate::uapi;

/// How long a client waits for the kernel's answers before it gives up,
/// unless told otherwise (see each client's `set_timeout`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Receive buffer asked for (root may exceed `net.core.rmem_max`): room
/// for a window of ACKs and the echoed requests of its errors.
const RCVBUF: usize = 4 << 20;

fn malformed(req: &Request, source: DecodeError) -> Error {
    Error::Malformed {
        op: req.op(),
        object: req.object(),
        source,
    }
}

/// The replies of a one-message answer: exactly one.
fn one(req: &Request, mut replies: Replies) -> Result<Vec<u8>> {
    match replies.len() {
        1 => Ok(replies.remove(0)),
        n => Err(malformed(
            req,
            DecodeError::new("answer", format!("{n} messages, expected 1")),
        )),
    }
}

/// The payload of first-level attribute `want` in each reply.
fn nested(req: &Request, replies: &Replies, want: crate::attr::CmdAttr) -> Result<Vec<Vec<u8>>> {
    replies
        .iter()
        .map(|r| {
            codec::first_level(r, want)
                .and_then(|a| {
                    a.ok_or_else(|| DecodeError::new("reply", format!("{want:?} missing")))
                })
                .map(|b| b.as_ref().to_vec())
                .map_err(|e| malformed(req, e))
        })
        .collect()
}

fn decode_each<T>(
    req: &Request,
    items: Vec<Vec<u8>>,
    f: impl Fn(&[u8]) -> Result<T, DecodeError>,
) -> Result<Vec<T>> {
    items
        .iter()
        .map(|b| f(b).map_err(|e| malformed(req, e)))
        .collect()
}

/// A generic-netlink socket with extended ACKs and a large receive buffer.
fn open_socket() -> Result<NlSocketHandle> {
    let sock =
        NlSocketHandle::connect(NlFamily::Generic, None, Groups::empty()).map_err(Error::socket)?;
    // Best effort: without extended ACKs errors lose their message only.
    let _ = sock.enable_ext_ack(true);
    grow_rcvbuf(sock.as_raw_fd());
    Ok(sock)
}

/// Splits requests into windows of at most `WINDOW`, each with at most one
/// dump and that one last: the kernel runs one dump per socket at a time
/// and refuses a second with `EBUSY` while the first has data to read.
fn windows(reqs: &[Request]) -> Vec<&[Request]> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, r) in reqs.iter().enumerate() {
        if i + 1 - start == WINDOW || r.answer() == codec::Answer::Dump {
            out.push(&reqs[start..=i]);
            start = i + 1;
        }
    }
    if start < reqs.len() {
        out.push(&reqs[start..]);
    }
    out
}

fn set_rcvtimeo(fd: i32, timeout: Duration) -> std::io::Result<()> {
    // {0, 0} would mean "wait forever": the shortest wait is 1 µs.
    let timeout = timeout.max(Duration::from_micros(1));
    let tv = libc::timeval {
        tv_sec: timeout.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: fd is the client's open socket; tv outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const libc::timeval as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Asks for a receive buffer of `RCVBUF`: with `SO_RCVBUFFORCE` when
/// allowed, else as much as `net.core.rmem_max` grants.
fn grow_rcvbuf(fd: i32) {
    let size = RCVBUF as libc::c_int;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: as above; a failure leaves the default buffer.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                &size as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return;
        }
    }
}

/// `send(2)` of a whole datagram of requests. Netlink sends to the kernel
/// are processed in the caller's context, so they do not block.
fn send_datagram(fd: i32, bytes: &[u8]) -> Result<()> {
    loop {
        // SAFETY: fd is open; bytes is a valid slice for the call.
        let rc = unsafe { libc::send(fd, bytes.as_ptr().cast(), bytes.len(), 0) };
        if rc >= 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(Error::Socket(e));
        }
    }
}

/// Largest datagram the kernel sends a netlink reader: dumps fill at most
/// 32 KiB (`netlink_dump`); a window's errors echo requests of a few
/// hundred bytes each.
const RECV_BUF: usize = 64 << 10;

/// `recv(2)` of one datagram into `buf`, refusing a truncated one.
fn recv_datagram(fd: i32, buf: &mut [u8]) -> Result<usize> {
    loop {
        // SAFETY: fd is open; buf is valid for writes of its length.
        let rc = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_TRUNC) };
        if rc >= 0 {
            let n = rc as usize;
            if n > buf.len() {
                return Err(Error::Socket(std::io::Error::other(format!(
                    "netlink datagram of {n} bytes truncated to {}",
                    buf.len()
                ))));
            }
            return Ok(n);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(Error::Socket(e));
        }
    }
}

/// Typed operations over `call`/`call_all`; `$($aw)*` is `.await` for the
/// async client and nothing for the blocking one.
macro_rules! ops {
    ($($async_:ident)?; $($aw:tt)*) => {
        /// Sends one request and returns the attribute bytes of its answer.
        $($async_)? fn call(&mut self, req: &Request) -> Result<Replies> {
            let mut all = self.exchange(&[req]) $($aw)* ?;
            all.pop().unwrap_or_else(|| unreachable!("one request, one answer"))
        }

        /// Sends a request that is answered with an ACK.
        pub $($async_)? fn execute(&mut self, req: &Request) -> Result<()> {
            self.call(req) $($aw)* .map(drop)
        }

        /// Sends many requests, up to 64 in a datagram, and returns each
        /// one's result in order. A failed request does not stop the rest;
        /// replies to `Get`/`List` requests are discarded.
        pub $($async_)? fn execute_all(&mut self, reqs: &[Request]) -> Vec<Result<()>> {
            let mut out = Vec::with_capacity(reqs.len());
            for window in windows(reqs) {
                let refs: Vec<&Request> = window.iter().collect();
                match self.exchange(&refs) $($aw)* {
                    Ok(results) => out.extend(results.into_iter().map(|r| r.map(drop))),
                    Err(e) => {
                        // The socket failed: no request of this window or
                        // later ones has a known outcome.
                        let msg = e.to_string();
                        out.extend(reqs[out.len()..].iter().map(|r| {
                            Err(Error::Socket(std::io::Error::other(format!(
                                "{} {}: {msg}", r.op(), r.object()
                            ))))
                        }));
                        break;
                    }
                }
            }
            out
        }

        /// `ipvsadm -A`.
        pub $($async_)? fn add_service(&mut self, svc: &Service) -> Result<()> {
            self.execute(&Request::AddService(svc.clone())) $($aw)*
        }

        /// `ipvsadm -E`: the service named by `svc.key` takes `svc`'s
        /// scheduler, flags, timeout and netmask.
        pub $($async_)? fn edit_service(&mut self, svc: &Service) -> Result<()> {
            self.execute(&Request::EditService(svc.clone())) $($aw)*
        }

        /// `ipvsadm -D`, with its destinations.
        pub $($async_)? fn delete_service(&mut self, key: &ServiceKey) -> Result<()> {
            self.execute(&Request::DeleteService(*key)) $($aw)*
        }

        /// One service with its counters.
        pub $($async_)? fn service(&mut self, key: &ServiceKey) -> Result<Service> {
            let req = Request::GetService(*key);
            let replies = self.call(&req) $($aw)* ?;
            let b = one(&req, nested(&req, &replies, crate::attr::CmdAttr::Service)?)?;
            codec::decode_service(&b).map_err(|e| malformed(&req, e))
        }

        /// Every service (`ipvsadm -Ln`).
        pub $($async_)? fn services(&mut self) -> Result<Vec<Service>> {
            let req = Request::ListServices;
            let replies = self.call(&req) $($aw)* ?;
            let items = nested(&req, &replies, crate::attr::CmdAttr::Service)?;
            decode_each(&req, items, codec::decode_service)
        }

        /// `ipvsadm -a`.
        pub $($async_)? fn add_destination(&mut self, key: &ServiceKey, dest: &Destination)
            -> Result<()> {
            self.execute(&Request::AddDestination(*key, dest.clone())) $($aw)*
        }

        /// `ipvsadm -e`: the destination named by address and port takes
        /// `dest`'s forwarding method, weight, thresholds and tunnel.
        pub $($async_)? fn edit_destination(&mut self, key: &ServiceKey, dest: &Destination)
            -> Result<()> {
            self.execute(&Request::EditDestination(*key, dest.clone())) $($aw)*
        }

        /// `ipvsadm -d`.
        pub $($async_)? fn delete_destination(
            &mut self, key: &ServiceKey, addr: std::net::IpAddr, port: u16) -> Result<()> {
            self.execute(&Request::DeleteDestination(*key, addr, port)) $($aw)*
        }

        /// The destinations of a service with their connection counts. The
        /// kernel answers a missing service with an empty list, not `ESRCH`.
        pub $($async_)? fn destinations(&mut self, key: &ServiceKey) -> Result<Vec<Destination>> {
            let req = Request::ListDestinations(*key);
            let replies = self.call(&req) $($aw)* ?;
            let items = nested(&req, &replies, crate::attr::CmdAttr::Dest)?;
            let family = key.family();
            decode_each(&req, items, |b| codec::decode_destination(b, family))
        }

        /// `ipvsadm --set`; a 0 leaves that timeout unchanged.
        pub $($async_)? fn set_timeouts(&mut self, t: &Timeouts) -> Result<()> {
            self.execute(&Request::SetTimeouts(*t)) $($aw)*
        }

        /// `ipvsadm -L --timeout`.
        pub $($async_)? fn timeouts(&mut self) -> Result<Timeouts> {
            let req = Request::GetTimeouts;
            let replies = self.call(&req) $($aw)* ?;
            codec::decode_timeouts(&one(&req, replies)?).map_err(|e| malformed(&req, e))
        }

        /// IPVS version and connection table size.
        pub $($async_)? fn info(&mut self) -> Result<Info> {
            let req = Request::GetInfo;
            let replies = self.call(&req) $($aw)* ?;
            codec::decode_info(&one(&req, replies)?).map_err(|e| malformed(&req, e))
        }

        /// `ipvsadm -Z`: one service's counters, or all with `None`.
        pub $($async_)? fn zero(&mut self, key: Option<&ServiceKey>) -> Result<()> {
            self.execute(&Request::Zero(key.copied())) $($aw)*
        }

        /// `ipvsadm -C`: every service and destination.
        pub $($async_)? fn flush(&mut self) -> Result<()> {
            self.execute(&Request::Flush) $($aw)*
        }

        /// `ipvsadm --start-daemon`.
        pub $($async_)? fn start_daemon(&mut self, d: &Daemon) -> Result<()> {
            self.execute(&Request::StartDaemon(d.clone())) $($aw)*
        }

        /// `ipvsadm --stop-daemon`.
        pub $($async_)? fn stop_daemon(&mut self, state: DaemonState) -> Result<()> {
            self.execute(&Request::StopDaemon(state)) $($aw)*
        }

        /// The running sync daemons (`ipvsadm -L --daemon`).
        pub $($async_)? fn daemons(&mut self) -> Result<Vec<Daemon>> {
            let req = Request::ListDaemons;
            let replies = self.call(&req) $($aw)* ?;
            let items = nested(&req, &replies, crate::attr::CmdAttr::Daemon)?;
            decode_each(&req, items, codec::decode_daemon)
        }

        /// ipvs-bpf: hand IPVS the session map (and SNAT settings).
        pub $($async_)? fn attach_bpf(&mut self, a: &BpfAttach) -> Result<()> {
            self.execute(&Request::AttachBpf(a.clone())) $($aw)*
        }

        /// ipvs-bpf: take the session map back.
        pub $($async_)? fn detach_bpf(&mut self) -> Result<()> {
            self.execute(&Request::DetachBpf) $($aw)*
        }

        /// ipvs-bpf: the attached session map, `None` when there is none.
        pub $($async_)? fn bpf(&mut self) -> Result<Option<BpfStatus>> {
            let req = Request::GetBpf;
            let replies = self.call(&req) $($aw)* ?;
            let b = one(&req, replies)?;
            match codec::first_level(&b, crate::attr::CmdAttr::Bpf)
                .map_err(|e| malformed(&req, e))? {
                None => Ok(None),
                Some(a) => codec::decode_bpf(a.as_ref()).map(Some).map_err(|e| malformed(&req, e)),
            }
        }
    };
}

/// A blocking IPVS client on one netlink socket.
///
/// ```no_run
/// use ipvs_netlink::{Destination, Ipvs, Service, ServiceKey};
///
/// let mut ipvs = Ipvs::connect()?;
/// let key = ServiceKey::tcp("198.19.0.10".parse()?, 80);
/// ipvs.add_service(&Service::new(key, "rr"))?;
/// ipvs.add_destination(&key, &Destination::new("198.18.1.2".parse()?, 8080))?;
/// for svc in ipvs.services()? {
///     println!("{} {}", svc.key, svc.scheduler);
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Ipvs {
    sock: NlSocketHandle,
    /// An exchange ended with answers still due (a timeout, a socket
    /// error): its socket may hold a half-read dump, which would make the
    /// next dump fail with `EBUSY`, so the next exchange opens a new one.
    tainted: bool,
    buf: Vec<u8>,
    family: u16,
    seq: u32,
    timeout: Duration,
}

impl Ipvs {
    /// Opens a socket and resolves the `IPVS` family.
    pub fn connect() -> Result<Ipvs> {
        let mut ipvs = Ipvs {
            sock: open_socket()?,
            tainted: false,
            buf: vec![0; RECV_BUF],
            family: 0,
            seq: 1,
            timeout: DEFAULT_TIMEOUT,
        };
        ipvs.set_timeout(DEFAULT_TIMEOUT)?;
        let (ex, datagram) =
            Exchange::resolve(uapi::IPVS_GENL_NAME, ipvs.sock.pid(), &mut ipvs.seq)?;
        let r = ipvs.run(ex, &datagram)?.pop();
        ipvs.family = proto::family_result(r.unwrap_or_else(|| unreachable!("one request")))?;
        Ok(ipvs)
    }

    /// The longest wait for any one datagram of the kernel's answers
    /// (`SO_RCVTIMEO`); `Duration::ZERO` is 1 µs, not "forever".
    pub fn set_timeout(&mut self, timeout: Duration) -> Result<()> {
        set_rcvtimeo(self.sock.as_raw_fd(), timeout).map_err(Error::Socket)?;
        self.timeout = timeout;
        Ok(())
    }

    /// The generic-netlink id the kernel gave the `IPVS` family.
    pub fn family_id(&self) -> u16 {
        self.family
    }

    fn exchange(&mut self, reqs: &[&Request]) -> Result<Vec<Result<Replies>>> {
        if self.tainted {
            self.sock = open_socket()?;
            set_rcvtimeo(self.sock.as_raw_fd(), self.timeout).map_err(Error::Socket)?;
            self.tainted = false;
        }
        let (ex, datagram) = Exchange::new(self.family, self.sock.pid(), &mut self.seq, reqs);
        self.run(ex, &datagram)
    }

    fn run(&mut self, mut ex: Exchange, datagram: &[u8]) -> Result<Vec<Result<Replies>>> {
        if ex.pending() {
            self.tainted = true;
            send_datagram(self.sock.as_raw_fd(), datagram)?;
        }
        while ex.pending() {
            match recv_datagram(self.sock.as_raw_fd(), &mut self.buf) {
                Ok(n) => ex.feed_datagram(&self.buf[..n]),
                Err(Error::Socket(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    ex.timed_out(self.timeout);
                    return Ok(ex.finish());
                }
                Err(e) => return Err(e),
            }
        }
        self.tainted = false;
        Ok(ex.finish())
    }

    ops!(; );
}

#[cfg(feature = "tokio")]
pub use self::tokio_client::AsyncIpvs;

#[cfg(feature = "tokio")]
mod tokio_client {
    use super::*;
    use tokio::io::unix::AsyncFd;

    /// `open_socket`, non-blocking and registered with tokio.
    fn open_async() -> Result<(AsyncFd<NlSocketHandle>, u32)> {
        let sock = open_socket()?;
        set_nonblocking(sock.as_raw_fd()).map_err(Error::Socket)?;
        let pid = sock.pid();
        // SAFETY: the handle owns its socket until it drops, and
        // as_raw_fd() always returns that same descriptor.
        let fd = unsafe { AsyncFd::register(sock) }
            .map_err(|e| Error::Socket(std::io::Error::other(e.to_string())))?;
        Ok((fd, pid))
    }

    fn set_nonblocking(fd: i32) -> std::io::Result<()> {
        // SAFETY: fcntl on the client's open socket.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// The [`Ipvs`] client for tokio: the same methods, `async`.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), ipvs_netlink::Error> {
    /// let mut ipvs = ipvs_netlink::AsyncIpvs::connect().await?;
    /// println!("{} services", ipvs.services().await?.len());
    /// # Ok(()) }
    /// ```
    pub struct AsyncIpvs {
        sock: AsyncFd<NlSocketHandle>,
        pid: u32,
        /// As for [`Ipvs`]; here a dropped (cancelled) call taints too.
        tainted: bool,
        buf: Vec<u8>,
        family: u16,
        seq: u32,
        timeout: Duration,
    }

    impl AsyncIpvs {
        /// Opens a socket and resolves the `IPVS` family. Needs a tokio
        /// runtime with I/O and time enabled.
        pub async fn connect() -> Result<AsyncIpvs> {
            let (sock, pid) = open_async()?;
            let mut ipvs = AsyncIpvs {
                sock,
                pid,
                tainted: false,
                buf: vec![0; RECV_BUF],
                family: 0,
                seq: 1,
                timeout: DEFAULT_TIMEOUT,
            };
            let (ex, datagram) = Exchange::resolve(uapi::IPVS_GENL_NAME, ipvs.pid, &mut ipvs.seq)?;
            let r = ipvs.run(ex, &datagram).await?.pop();
            ipvs.family = proto::family_result(r.unwrap_or_else(|| unreachable!("one request")))?;
            Ok(ipvs)
        }

        /// The longest wait for the whole answer of one exchange (a
        /// window of requests); `Duration::MAX` waits for ever.
        pub fn set_timeout(&mut self, timeout: Duration) {
            self.timeout = timeout;
        }

        /// The generic-netlink id the kernel gave the `IPVS` family.
        pub fn family_id(&self) -> u16 {
            self.family
        }

        async fn exchange(&mut self, reqs: &[&Request]) -> Result<Vec<Result<Replies>>> {
            if self.tainted {
                (self.sock, self.pid) = open_async()?;
                self.tainted = false;
            }
            let (ex, datagram) = Exchange::new(self.family, self.pid, &mut self.seq, reqs);
            self.run(ex, &datagram).await
        }

        async fn run(&mut self, mut ex: Exchange, datagram: &[u8]) -> Result<Vec<Result<Replies>>> {
            if ex.pending() {
                self.tainted = true;
                send_datagram(self.sock.as_raw_fd(), datagram)?;
            }
            let deadline = tokio::time::Instant::now().checked_add(self.timeout);
            while ex.pending() {
                let ready = match deadline {
                    Some(d) => tokio::time::timeout_at(d, self.sock.readable()).await,
                    None => Ok(self.sock.readable().await),
                };
                let mut guard = match ready {
                    Ok(g) => g.map_err(Error::Socket)?,
                    Err(_) => {
                        ex.timed_out(self.timeout);
                        return Ok(ex.finish());
                    }
                };
                let fd = self.sock.as_raw_fd();
                let buf = &mut self.buf;
                match guard.try_io(|_| {
                    recv_datagram(fd, buf).map_err(|e| match e {
                        Error::Socket(io) => io,
                        other => std::io::Error::other(other.to_string()),
                    })
                }) {
                    Ok(Ok(n)) => ex.feed_datagram(&self.buf[..n]),
                    Ok(Err(e)) => return Err(Error::Socket(e)),
                    Err(_would_block) => continue,
                }
            }
            self.tainted = false;
            Ok(ex.finish())
        }

        ops!(async; .await);
    }
}

impl std::fmt::Debug for Ipvs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ipvs")
            .field("family", &self.family)
            .field("pid", &self.sock.pid())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Destination, Family};

    #[test]
    fn windows_hold_at_most_64_requests_and_one_dump_last() {
        let key = ServiceKey::tcp(std::net::Ipv4Addr::LOCALHOST.into(), 80);
        let add = Request::AddDestination(
            key,
            Destination::new(std::net::Ipv4Addr::LOCALHOST.into(), 1),
        );
        let mut reqs = vec![add.clone(); 100];
        reqs.insert(10, Request::ListServices);
        reqs.insert(11, Request::ListDaemons);
        reqs.push(Request::ListDestinations(key));
        let w = windows(&reqs);
        let sizes: Vec<usize> = w.iter().map(|w| w.len()).collect();
        assert_eq!(sizes, vec![11, 1, 64, 27]);
        assert_eq!(sizes.iter().sum::<usize>(), reqs.len());
        for w in &w {
            let dumps = w.iter().filter(|r| r.answer() == codec::Answer::Dump);
            assert!(dumps.count() <= 1);
            assert!(w[..w.len() - 1]
                .iter()
                .all(|r| r.answer() != codec::Answer::Dump));
        }
        assert!(windows(&[]).is_empty());
    }

    #[test]
    fn firewall_mark_zero_is_refused_before_sending() {
        let key = ServiceKey::Fwmark {
            family: Family::Inet,
            mark: 0,
        };
        for req in [
            Request::AddService(Service::new(key, "rr")),
            Request::DeleteService(key),
            Request::ListDestinations(key),
        ] {
            match req.encode(0x25, 1, 1) {
                Err(Error::InvalidRequest { reason, .. }) => assert!(reason.contains("mark 0")),
                other => panic!("{req:?}: expected InvalidRequest, got {other:?}"),
            }
        }
    }
}
