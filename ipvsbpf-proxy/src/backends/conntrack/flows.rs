//! Stale UDP conntrack entries, cleared in `ipvs` mode as kube-proxy's
//! IPVS proxier clears them.
//!
//! In `ipvs` mode Service packets pass conntrack (`net.ipv4.vs.conntrack`
//! = 1) and masqueraded ones take their NAT binding from the entry the
//! first packet made. UDP has no end: a client that keeps sending from one
//! port keeps an entry whose reply tuple names an endpoint that has gone.
//! IPVS schedules the flow to a live endpoint, but its answers match no
//! entry, so the masquerade is never undone and the client hears nothing
//! until it changes port or stops for the UDP timeout. kube-proxy deletes
//! such entries when an endpoint or a Service goes; so does this, through
//! ctnetlink: every UDP entry whose original destination is the removed
//! virtual server and, for a removed endpoint, whose reply source is that
//! endpoint.
//!
//! Not needed in `ipvs-bpf` mode: Service traffic there is untracked.

use std::io;
use std::net::{IpAddr, SocketAddr};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_netfilter::conntrack::{
    ConntrackAttribute, ConntrackMessage, IPTuple, ProtoTuple, Protocol, Tuple,
};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr as NlAddr};

/// What an IPVS sync removed that conntrack may still point at: a UDP
/// virtual server (`endpoint: None`) or one endpoint of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Gone {
    /// The virtual server: ClusterIP, node address, LB or external IP, and
    /// its port.
    pub frontend: SocketAddr,
    pub endpoint: Option<SocketAddr>,
}

/// One UDP conntrack entry, by the two tuples that matter here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    pub orig_src: SocketAddr,
    pub orig_dst: SocketAddr,
    pub reply_src: SocketAddr,
}

impl Flow {
    fn family(&self) -> NetfilterProtoFamily {
        match self.orig_src.ip() {
            IpAddr::V4(_) => NetfilterProtoFamily::IPv4,
            IpAddr::V6(_) => NetfilterProtoFamily::IPv6,
        }
    }
}

/// The entries of `flows` that `gone` makes stale.
pub fn stale<'a>(flows: &'a [Flow], gone: &[Gone]) -> Vec<&'a Flow> {
    flows
        .iter()
        .filter(|f| {
            gone.iter()
                .any(|g| g.frontend == f.orig_dst && g.endpoint.is_none_or(|ep| ep == f.reply_src))
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

/// Deletes the UDP entries `gone` makes stale; returns how many.
pub fn clear<T: Table>(table: &mut T, gone: &[Gone]) -> Result<usize, Error> {
    let mut deleted = 0;
    for v6 in [false, true] {
        let gone: Vec<Gone> = gone
            .iter()
            .copied()
            .filter(|g| g.frontend.is_ipv6() == v6)
            .collect();
        if gone.is_empty() {
            continue;
        }
        let flows = table.udp_flows(v6)?;
        for flow in stale(&flows, &gone) {
            if table.delete(flow)? {
                deleted += 1;
            }
        }
    }
    Ok(deleted)
}

/// [`Table`] over ctnetlink, in the caller's network namespace.
pub struct Ctnetlink {
    sock: Socket,
    seq: u32,
}

const RECV_BUF: usize = 64 * 1024;

impl Ctnetlink {
    pub fn connect() -> Result<Ctnetlink, Error> {
        let mut sock = Socket::new(NETLINK_NETFILTER).map_err(Error::Socket)?;
        sock.bind_auto().map_err(Error::Socket)?;
        sock.connect(&NlAddr::new(0, 0)).map_err(Error::Socket)?;
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
        let seq = self.send(
            "delete",
            NLM_F_REQUEST | NLM_F_ACK,
            flow.family(),
            ConntrackMessage::Delete(vec![ConntrackAttribute::CtaTupleOrig(tuple)]),
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
    for a in attrs {
        match a {
            ConntrackAttribute::CtaTupleOrig(t) => orig = endpoints(t),
            ConntrackAttribute::CtaTupleReply(t) => reply = endpoints(t),
            _ => {}
        }
    }
    let (orig_src, orig_dst, p) = orig?;
    let (reply_src, _, _) = reply?;
    (p == Protocol::Udp).then_some(Flow {
        orig_src,
        orig_dst,
        reply_src,
    })
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
        }
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

    /// kube-proxy's cases: an endpoint gone clears only the entries of
    /// that frontend answered by that endpoint; a frontend gone clears all
    /// of its entries; nothing else is touched.
    #[test]
    fn only_what_the_removal_made_stale() {
        let to_gone_ep = flow("10.0.0.1:5000", "198.19.0.53:53", "198.18.2.3:53");
        let to_live_ep = flow("10.0.0.2:5000", "198.19.0.53:53", "198.18.1.3:53");
        // masqueraded NodePort entry: reply goes back to the node's address
        let nodeport = flow("192.0.2.2:5000", "192.0.2.1:30053", "198.18.2.3:53");
        let other_port = flow("10.0.0.1:5001", "198.19.0.53:54", "198.18.2.3:54");
        let other_vip = flow("10.0.0.1:5002", "198.19.0.54:53", "198.18.2.3:53");
        let v6 = flow(
            "[2001:db8::2]:5000",
            "[2001:db8:2::53]:53",
            "[2001:db8:1:2::3]:53",
        );
        let flows = vec![to_gone_ep, to_live_ep, nodeport, other_port, other_vip, v6];

        let gone = [
            Gone {
                frontend: sa("198.19.0.53:53"),
                endpoint: Some(sa("198.18.2.3:53")),
            },
            Gone {
                frontend: sa("192.0.2.1:30053"),
                endpoint: Some(sa("198.18.2.3:53")),
            },
        ];
        assert_eq!(stale(&flows, &gone), vec![&to_gone_ep, &nodeport]);

        let svc_gone = [Gone {
            frontend: sa("198.19.0.53:53"),
            endpoint: None,
        }];
        assert_eq!(stale(&flows, &svc_gone), vec![&to_gone_ep, &to_live_ep]);
        assert!(stale(&flows, &[]).is_empty());
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
        let gone = [Gone {
            frontend: sa("198.19.0.53:53"),
            endpoint: Some(sa("198.18.2.3:53")),
        }];
        assert_eq!(clear(&mut t, &gone).expect("clear"), 1);
        assert_eq!(t.dumps, vec![false], "no IPv6 dump for an IPv4 removal");
        assert_eq!(t.flows.len(), 1);
        assert_eq!(clear(&mut t, &[]).expect("nothing"), 0);
        assert_eq!(t.dumps, vec![false], "nothing gone: no dump at all");
    }

    /// A dump entry as the kernel sends it, through the crate's codec:
    /// UDP kept with both tuples, TCP and truncated entries ignored.
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
        ]);
        assert_eq!(
            udp_flow(&udp),
            Some(flow("10.0.0.1:5000", "198.19.0.53:53", "198.18.2.3:53"))
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
