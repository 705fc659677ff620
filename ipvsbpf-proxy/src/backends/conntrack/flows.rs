//! Stale UDP conntrack entries, cleared in `ipvs` mode as kube-proxy's
//! IPVS proxier clears them (`pkg/proxy/conntrack` CleanStaleEntries).
//!
//! In `ipvs` mode Service packets pass conntrack (`net.ipv4.vs.conntrack`
//! = 1) and masqueraded ones take their NAT binding from the entry the
//! first packet made. UDP has no end: a client that keeps sending from one
//! port keeps an entry whose reply tuple names an endpoint that has gone
//! (or, made while the Service had none, no endpoint at all), and the
//! answers of the endpoint IPVS schedules the flow to next may then match
//! no entry. kube-proxy sweeps such entries; so does this. Mostly a second
//! belt here: since Linux 5.9, with expire_nodest_conn=1, IPVS's own
//! delayed work ends a removed destination's connections and their
//! conntrack entries (seen in the testbed: the sweep found nothing left);
//! it remains for entries no IPVS connection owns. So, as kube-proxy:
//! every UDP entry whose original destination is a UDP
//! virtual server with endpoints and whose reply
//! source is none of them is deleted, and (as kube-proxy did before its
//! sweep) every entry to a UDP virtual server that is gone.
//!
//! Not needed in `ipvs-bpf` mode: Service traffic there is untracked.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

use netlink_packet_core::{
    DefaultNla, NetlinkHeader, NetlinkMessage, NetlinkPayload, Nla, NLM_F_ACK, NLM_F_DUMP,
    NLM_F_REQUEST,
};
use netlink_packet_netfilter::conntrack::{
    ConntrackAttribute, ConntrackMessage, IPTuple, ProtoTuple, Protocol, Tuple,
};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr as NlAddr};

/// What each UDP frontend (virtual server address and port) may be
/// answered by: its endpoints, or `None` when the virtual server is gone
/// (every entry to it is stale). A frontend with no endpoint is left
/// alone, as kube-proxy leaves it: nothing could answer in its place.
pub type Frontends = HashMap<SocketAddr, Option<HashSet<SocketAddr>>>;

/// One UDP conntrack entry: the two tuples that matter here, and the
/// entry's zone and id, so a delete finds that very entry (not one of
/// another zone, nor a newer one that took the same tuple meanwhile).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    pub orig_src: SocketAddr,
    pub orig_dst: SocketAddr,
    pub reply_src: SocketAddr,
    pub zone: Option<u16>,
    pub id: Option<u32>,
}

impl Flow {
    fn family(&self) -> NetfilterProtoFamily {
        match self.orig_src.ip() {
            IpAddr::V4(_) => NetfilterProtoFamily::IPv4,
            IpAddr::V6(_) => NetfilterProtoFamily::IPv6,
        }
    }
}

/// The entries of `flows` that `frontends` makes stale: O(flows).
pub fn stale<'a>(flows: &'a [Flow], frontends: &Frontends) -> Vec<&'a Flow> {
    flows
        .iter()
        .filter(|f| match frontends.get(&f.orig_dst) {
            None => false,
            Some(None) => true,
            Some(Some(endpoints)) => !endpoints.is_empty() && !endpoints.contains(&f.reply_src),
        })
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("ctnetlink socket: {0} (is nf_conntrack_netlink loaded?)")]
    Socket(#[source] io::Error),
    #[error("ctnetlink {op}: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("ctnetlink {op}: the kernel answered error {errno}")]
    Kernel { op: &'static str, errno: i32 },
    #[error("ctnetlink {op}: undecodable answer: {reason}")]
    Decode { op: &'static str, reason: String },
}

/// The conntrack table, behind a trait so the clearing logic is tested
/// without a kernel.
pub trait Table {
    /// Every UDP entry of one family.
    fn udp_flows(&mut self, v6: bool) -> Result<Vec<Flow>, Error>;
    /// Deletes one entry by its original tuple; `false` if it was gone
    /// already.
    fn delete(&mut self, flow: &Flow) -> Result<bool, Error>;
}

/// What one [`clear`] saw and did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sweep {
    /// UDP entries dumped.
    pub dumped: usize,
    /// Of those, stale.
    pub stale: usize,
    /// Of those, deleted (the rest were gone already).
    pub deleted: usize,
}

/// Deletes the UDP entries `frontends` makes stale.
pub fn clear<T: Table>(table: &mut T, frontends: &Frontends) -> Result<Sweep, Error> {
    let mut sweep = Sweep::default();
    for v6 in [false, true] {
        if !frontends.keys().any(|f| f.is_ipv6() == v6) {
            continue;
        }
        let flows = table.udp_flows(v6)?;
        sweep.dumped += flows.len();
        for flow in stale(&flows, frontends) {
            sweep.stale += 1;
            if table.delete(flow)? {
                sweep.deleted += 1;
            }
        }
    }
    Ok(sweep)
}

/// [`Table`] over ctnetlink, in the caller's network namespace.
pub struct Ctnetlink {
    sock: Socket,
    seq: u32,
}

const RECV_BUF: usize = 64 * 1024;
const RECV_TIMEOUT_SECS: libc::time_t = 5;
const CTA_ID: u16 = 12;
const CTA_ZONE: u16 = 18;

impl Ctnetlink {
    pub fn connect() -> Result<Ctnetlink, Error> {
        let mut sock = Socket::new(NETLINK_NETFILTER).map_err(Error::Socket)?;
        sock.bind_auto().map_err(Error::Socket)?;
        sock.connect(&NlAddr::new(0, 0)).map_err(Error::Socket)?;
        // A kernel that stops answering must not hold a sync forever.
        let timeout = libc::timeval {
            tv_sec: RECV_TIMEOUT_SECS,
            tv_usec: 0,
        };
        // SAFETY: a valid socket fd and a timeval of the size given.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(Error::Socket(io::Error::last_os_error()));
        }
        Ok(Ctnetlink { sock, seq: 0 })
    }

    fn send(
        &mut self,
        op: &'static str,
        flags: u16,
        family: NetfilterProtoFamily,
        msg: ConntrackMessage,
    ) -> Result<u32, Error> {
        self.seq = self.seq.wrapping_add(1);
        let mut hdr = NetlinkHeader::default();
        hdr.flags = flags;
        hdr.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(
            hdr,
            NetlinkPayload::from(NetfilterMessage::new(
                NetfilterHeader::new(family, 0, 0),
                msg,
            )),
        );
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.sock
            .send(&buf, 0)
            .map_err(|source| Error::Io { op, source })?;
        Ok(self.seq)
    }

    /// Reads answers to `seq` until Done (a dump) or an ack/error (a
    /// request), handing each conntrack message to `each`.
    fn receive(
        &mut self,
        op: &'static str,
        seq: u32,
        mut each: impl FnMut(&ConntrackMessage),
    ) -> Result<(), Error> {
        let mut buf = vec![0u8; RECV_BUF];
        loop {
            let n = self
                .sock
                .recv(&mut &mut buf[..], 0)
                .map_err(|source| Error::Io { op, source })?;
            let mut off = 0;
            while off < n {
                let msg =
                    NetlinkMessage::<NetfilterMessage>::deserialize(&buf[off..n]).map_err(|e| {
                        Error::Decode {
                            op,
                            reason: e.to_string(),
                        }
                    })?;
                let len = msg.header.length as usize;
                if len == 0 {
                    return Err(Error::Decode {
                        op,
                        reason: "a message of length 0".into(),
                    });
                }
                off += len.div_ceil(4) * 4;
                if msg.header.sequence_number != seq {
                    continue;
                }
                match msg.payload {
                    NetlinkPayload::Done(done) if done.code != 0 => {
                        return Err(Error::Kernel {
                            op,
                            errno: -done.code,
                        })
                    }
                    NetlinkPayload::Done(_) => return Ok(()),
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(()),
                            Some(code) => Err(Error::Kernel {
                                op,
                                errno: -code.get(),
                            }),
                        }
                    }
                    NetlinkPayload::InnerMessage(NetfilterMessage {
                        inner: NetfilterMessageInner::Conntrack(ct),
                        ..
                    }) => each(&ct),
                    _ => {}
                }
            }
        }
    }
}

impl Table for Ctnetlink {
    fn udp_flows(&mut self, v6: bool) -> Result<Vec<Flow>, Error> {
        let family = if v6 {
            NetfilterProtoFamily::IPv6
        } else {
            NetfilterProtoFamily::IPv4
        };
        let seq = self.send(
            "dump",
            NLM_F_REQUEST | NLM_F_DUMP,
            family,
            ConntrackMessage::Get(vec![]),
        )?;
        let mut flows = Vec::new();
        self.receive("dump", seq, |ct| {
            if let Some(f) = udp_flow(ct) {
                flows.push(f);
            }
        })?;
        Ok(flows)
    }

    fn delete(&mut self, flow: &Flow) -> Result<bool, Error> {
        let tuple = vec![
            Tuple::Ip(vec![
                IPTuple::SourceAddress(flow.orig_src.ip()),
                IPTuple::DestinationAddress(flow.orig_dst.ip()),
            ]),
            Tuple::Proto(vec![
                ProtoTuple::Protocol(Protocol::Udp),
                ProtoTuple::SourcePort(flow.orig_src.port()),
                ProtoTuple::DestinationPort(flow.orig_dst.port()),
            ]),
        ];
        let mut attrs = vec![ConntrackAttribute::CtaTupleOrig(tuple)];
        if let Some(zone) = flow.zone {
            attrs.push(ConntrackAttribute::Other(DefaultNla::new(
                CTA_ZONE,
                zone.to_be_bytes().to_vec(),
            )));
        }
        if let Some(id) = flow.id {
            attrs.push(ConntrackAttribute::Other(DefaultNla::new(
                CTA_ID,
                id.to_be_bytes().to_vec(),
            )));
        }
        let seq = self.send(
            "delete",
            NLM_F_REQUEST | NLM_F_ACK,
            flow.family(),
            ConntrackMessage::Delete(attrs),
        )?;
        match self.receive("delete", seq, |_| {}) {
            Ok(()) => Ok(true),
            Err(Error::Kernel { errno, .. }) if errno == libc::ENOENT => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// A UDP entry's tuples; `None` for other protocols or incomplete ones.
fn udp_flow(ct: &ConntrackMessage) -> Option<Flow> {
    let ConntrackMessage::New(attrs) = ct else {
        return None;
    };
    let mut orig = None;
    let mut reply = None;
    let (mut zone, mut id) = (None, None);
    for a in attrs {
        match a {
            ConntrackAttribute::CtaTupleOrig(t) => orig = endpoints(t),
            ConntrackAttribute::CtaTupleReply(t) => reply = endpoints(t),
            ConntrackAttribute::Other(nla) if nla.kind() == CTA_ZONE => {
                zone = nla_bytes::<2>(nla).map(u16::from_be_bytes)
            }
            ConntrackAttribute::Other(nla) if nla.kind() == CTA_ID => {
                id = nla_bytes::<4>(nla).map(u32::from_be_bytes)
            }
            _ => {}
        }
    }
    let (orig_src, orig_dst, p) = orig?;
    let (reply_src, _, _) = reply?;
    (p == Protocol::Udp).then_some(Flow {
        orig_src,
        orig_dst,
        reply_src,
        zone,
        id,
    })
}

/// An attribute's value as `N` bytes; `None` if it has another length.
fn nla_bytes<const N: usize>(nla: &DefaultNla) -> Option<[u8; N]> {
    if nla.value_len() != N {
        return None;
    }
    let mut b = [0u8; N];
    nla.emit_value(&mut b);
    Some(b)
}

/// Source, destination and protocol of one tuple.
fn endpoints(tuple: &[Tuple]) -> Option<(SocketAddr, SocketAddr, Protocol)> {
    let (mut src, mut dst, mut sport, mut dport, mut proto) = (None, None, None, None, None);
    for t in tuple {
        match t {
            Tuple::Ip(ips) => {
                for ip in ips {
                    match ip {
                        IPTuple::SourceAddress(a) => src = Some(*a),
                        IPTuple::DestinationAddress(a) => dst = Some(*a),
                        _ => {}
                    }
                }
            }
            Tuple::Proto(ps) => {
                for p in ps {
                    match p {
                        ProtoTuple::Protocol(p) => proto = Some(*p),
                        ProtoTuple::SourcePort(p) => sport = Some(*p),
                        ProtoTuple::DestinationPort(p) => dport = Some(*p),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some((
        SocketAddr::new(src?, sport?),
        SocketAddr::new(dst?, dport?),
        proto?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().expect("socket address")
    }

    fn flow(src: &str, dst: &str, reply_src: &str) -> Flow {
        Flow {
            orig_src: sa(src),
            orig_dst: sa(dst),
            reply_src: sa(reply_src),
            zone: None,
            id: None,
        }
    }

    fn frontends(list: &[(&str, Option<&[&str]>)]) -> Frontends {
        list.iter()
            .map(|(f, eps)| (sa(f), eps.map(|e| e.iter().map(|a| sa(a)).collect())))
            .collect()
    }

    #[derive(Default)]
    struct FakeTable {
        flows: Vec<Flow>,
        dumps: Vec<bool>,
    }

    impl Table for FakeTable {
        fn udp_flows(&mut self, v6: bool) -> Result<Vec<Flow>, Error> {
            self.dumps.push(v6);
            Ok(self
                .flows
                .iter()
                .copied()
                .filter(|f| f.orig_src.is_ipv6() == v6)
                .collect())
        }
        fn delete(&mut self, flow: &Flow) -> Result<bool, Error> {
            let before = self.flows.len();
            self.flows.retain(|f| f != flow);
            Ok(self.flows.len() < before)
        }
    }

    /// kube-proxy's rule: an entry to a UDP frontend with endpoints is
    /// stale when its reply source is none of them (a gone endpoint, or
    /// the frontend itself: un-NATed while it had none); a frontend with
    /// no endpoint is left alone; a gone frontend loses all its entries;
    /// other frontends are not looked at.
    #[test]
    fn stale_is_what_no_endpoint_answers() {
        let to_gone_ep = flow("10.0.0.1:5000", "198.19.0.53:53", "198.18.2.3:53");
        let to_live_ep = flow("10.0.0.2:5000", "198.19.0.53:53", "198.18.1.3:53");
        let un_natted = flow("10.0.0.3:5000", "198.19.0.53:53", "198.19.0.53:53");
        // masqueraded NodePort entry: reply goes back to the node's address
        let nodeport = flow("192.0.2.2:5000", "192.0.2.1:30053", "198.18.2.3:53");
        let no_endpoints = flow("10.0.0.1:5001", "198.19.0.54:53", "198.18.2.3:53");
        let untouched = flow("10.0.0.1:5002", "198.19.0.55:53", "198.18.2.3:53");
        let gone_svc = flow(
            "[2001:db8::2]:5000",
            "[2001:db8:2::53]:53",
            "[2001:db8:1:2::3]:53",
        );
        let flows = vec![
            to_gone_ep,
            to_live_ep,
            un_natted,
            nodeport,
            no_endpoints,
            untouched,
            gone_svc,
        ];
        let f = frontends(&[
            ("198.19.0.53:53", Some(&["198.18.1.3:53"])),
            ("192.0.2.1:30053", Some(&["198.18.1.3:53"])),
            ("198.19.0.54:53", Some(&[])),
            ("[2001:db8:2::53]:53", None),
        ]);
        assert_eq!(
            stale(&flows, &f),
            vec![&to_gone_ep, &un_natted, &nodeport, &gone_svc]
        );
        assert!(stale(&flows, &Frontends::new()).is_empty());
    }

    #[test]
    fn clear_dumps_only_the_families_it_needs() {
        let mut t = FakeTable {
            flows: vec![
                flow("10.0.0.1:5000", "198.19.0.53:53", "198.18.2.3:53"),
                flow(
                    "[2001:db8::2]:5000",
                    "[2001:db8:2::53]:53",
                    "[2001:db8:1:2::3]:53",
                ),
            ],
            ..FakeTable::default()
        };
        let f = frontends(&[("198.19.0.53:53", Some(&["198.18.1.3:53"]))]);
        assert_eq!(
            clear(&mut t, &f).expect("clear"),
            Sweep {
                dumped: 1,
                stale: 1,
                deleted: 1
            }
        );
        assert_eq!(t.dumps, vec![false], "no IPv6 dump for an IPv4 frontend");
        assert_eq!(t.flows.len(), 1);
        assert_eq!(
            clear(&mut t, &Frontends::new()).expect("nothing"),
            Sweep::default()
        );
        assert_eq!(t.dumps, vec![false], "nothing to sweep: no dump at all");
    }

    /// A dump entry as the kernel sends it, through the crate's codec:
    /// UDP kept with both tuples, its zone and id; TCP and truncated
    /// entries ignored.
    #[test]
    fn entries_decode_to_flows() {
        let tuple = |src: &str, dst: &str, p: Protocol| {
            let (s, d) = (sa(src), sa(dst));
            vec![
                Tuple::Ip(vec![
                    IPTuple::SourceAddress(s.ip()),
                    IPTuple::DestinationAddress(d.ip()),
                ]),
                Tuple::Proto(vec![
                    ProtoTuple::Protocol(p),
                    ProtoTuple::SourcePort(s.port()),
                    ProtoTuple::DestinationPort(d.port()),
                ]),
            ]
        };
        let udp = ConntrackMessage::New(vec![
            ConntrackAttribute::CtaTupleOrig(tuple(
                "10.0.0.1:5000",
                "198.19.0.53:53",
                Protocol::Udp,
            )),
            ConntrackAttribute::CtaTupleReply(tuple(
                "198.18.2.3:53",
                "192.0.2.1:61234",
                Protocol::Udp,
            )),
            ConntrackAttribute::CtaTimeout(30),
            ConntrackAttribute::Other(DefaultNla::new(CTA_ZONE, 7u16.to_be_bytes().to_vec())),
            ConntrackAttribute::Other(DefaultNla::new(
                CTA_ID,
                0xdead_beefu32.to_be_bytes().to_vec(),
            )),
        ]);
        assert_eq!(
            udp_flow(&udp),
            Some(Flow {
                zone: Some(7),
                id: Some(0xdead_beef),
                ..flow("10.0.0.1:5000", "198.19.0.53:53", "198.18.2.3:53")
            })
        );
        let tcp = ConntrackMessage::New(vec![
            ConntrackAttribute::CtaTupleOrig(tuple(
                "10.0.0.1:5000",
                "198.19.0.53:53",
                Protocol::Tcp,
            )),
            ConntrackAttribute::CtaTupleReply(tuple(
                "198.18.2.3:53",
                "10.0.0.1:5000",
                Protocol::Tcp,
            )),
        ]);
        assert_eq!(udp_flow(&tcp), None);
        let no_reply = ConntrackMessage::New(vec![ConntrackAttribute::CtaTupleOrig(tuple(
            "10.0.0.1:5000",
            "198.19.0.53:53",
            Protocol::Udp,
        ))]);
        assert_eq!(udp_flow(&no_reply), None);
    }
}
