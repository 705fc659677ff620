//! The request/answer state machine both clients share, without I/O.
//!
//! An [`Exchange`] holds a window of requests sent together in one
//! datagram, each under its own sequence number. The transport feeds it
//! every message it receives; the exchange matches it to a request by
//! port id and sequence number, collects the payloads of `Get`/`List`
//! answers and records the ACK, `NLMSG_DONE` or error that ends each one.
//! Messages of earlier, abandoned exchanges (older sequence numbers) are
//! ignored.

use std::io::Cursor;
use std::time::Duration;

use neli::{
    consts::{
        genl::{CtrlAttr, CtrlCmd},
        nl::{GenlId, NlmF, Nlmsg, NlmsgerrAttr},
    },
    genl::{AttrTypeBuilder, Genlmsghdr, GenlmsghdrBuilder, NlattrBuilder},
    nl::{NlPayload, Nlmsghdr, NlmsghdrBuilder},
    types::{Buffer, GenlBuffer},
    FromBytes, Size, ToBytes,
};

use crate::codec::{Answer, Request};
use crate::error::{DecodeError, Error, Op};

/// Requests in one datagram before the client waits for their answers. A
/// window's ACKs (and the echoed requests of its errors) must fit the
/// socket's receive buffer.
pub(crate) const WINDOW: usize = 64;

/// Size of the generic-netlink header ahead of the attributes.
const GENL_HDRLEN: usize = 4;

/// The answer to one request: the attribute bytes of each reply message.
pub(crate) type Replies = Vec<Vec<u8>>;

struct Slot {
    seq: u32,
    op: Op,
    object: String,
    answer: Answer,
    replies: Replies,
    result: Option<Result<(), Error>>,
}

pub(crate) struct Exchange {
    pid: u32,
    family: u16,
    slots: Vec<Slot>,
    open: usize,
}

impl Exchange {
    /// Encodes `reqs` with consecutive sequence numbers from `*seq` into
    /// one datagram. A request that does not encode fails alone.
    pub(crate) fn new(
        family: u16,
        pid: u32,
        seq: &mut u32,
        reqs: &[&Request],
    ) -> (Exchange, Vec<u8>) {
        let mut datagram = Vec::new();
        let mut slots = Vec::with_capacity(reqs.len());
        let mut open = 0;
        for req in reqs {
            let s = *seq;
            *seq = seq.wrapping_add(1);
            let result = match req.encode(family, s, pid) {
                Ok(bytes) => {
                    datagram.extend_from_slice(&bytes);
                    open += 1;
                    None
                }
                Err(e) => Some(Err(e)),
            };
            slots.push(Slot {
                seq: s,
                op: req.op(),
                object: req.object(),
                answer: req.answer(),
                replies: Vec::new(),
                result,
            });
        }
        (
            Exchange {
                pid,
                family,
                slots,
                open,
            },
            datagram,
        )
    }

    /// The control-family lookup of `name`, the one request sent before
    /// the family id is known.
    pub(crate) fn resolve(
        name: &str,
        pid: u32,
        seq: &mut u32,
    ) -> Result<(Exchange, Vec<u8>), Error> {
        let s = *seq;
        *seq = seq.wrapping_add(1);
        let bad = |e: String| Error::InvalidRequest {
            op: Op::ResolveFamily,
            object: name.to_string(),
            reason: e,
        };
        let attr = NlattrBuilder::default()
            .nla_type(
                AttrTypeBuilder::default()
                    .nla_type(CtrlAttr::FamilyName)
                    .build()
                    .map_err(|e| bad(e.to_string()))?,
            )
            .nla_payload(name)
            .build()
            .map_err(|e| bad(e.to_string()))?;
        let mut attrs = GenlBuffer::new();
        attrs.push(attr);
        let genl: Genlmsghdr<CtrlCmd, CtrlAttr> = GenlmsghdrBuilder::default()
            .cmd(CtrlCmd::Getfamily)
            .version(2)
            .attrs(attrs)
            .build()
            .map_err(|e| bad(e.to_string()))?;
        let msg = NlmsghdrBuilder::default()
            .nl_type(GenlId::Ctrl)
            .nl_flags(NlmF::REQUEST | NlmF::ACK)
            .nl_seq(s)
            .nl_pid(pid)
            .nl_payload(NlPayload::Payload(genl))
            .build()
            .map_err(|e| bad(e.to_string()))?;
        let mut buf = Cursor::new(vec![0u8; msg.padded_size()]);
        msg.to_bytes(&mut buf).map_err(|e| bad(e.to_string()))?;
        let slot = Slot {
            seq: s,
            op: Op::ResolveFamily,
            object: name.to_string(),
            answer: Answer::One,
            replies: Vec::new(),
            result: None,
        };
        Ok((
            Exchange {
                pid,
                family: GenlId::Ctrl.into(),
                slots: vec![slot],
                open: 1,
            },
            buf.into_inner(),
        ))
    }

    /// True while some request waits for its answer.
    pub(crate) fn pending(&self) -> bool {
        self.open > 0
    }

    fn slot(&mut self, seq: u32) -> Option<&mut Slot> {
        let first = self.slots.first()?.seq;
        let i = seq.wrapping_sub(first) as usize;
        self.slots.get_mut(i).filter(|s| s.result.is_none())
    }

    fn close(&mut self, seq: u32, result: Result<(), Error>) {
        if let Some(slot) = self.slot(seq) {
            slot.result = Some(result);
            self.open -= 1;
        }
    }

    /// Takes one received message.
    pub(crate) fn feed(&mut self, msg: Nlmsghdr<u16, Buffer>) {
        if *msg.nl_pid() != self.pid {
            return;
        }
        let seq = *msg.nl_seq();
        let ty = *msg.nl_type();
        let family = self.family;
        let Some(slot) = self.slot(seq) else {
            return;
        };
        let malformed = |slot: &Slot, reason: &str| Error::Malformed {
            op: slot.op,
            object: slot.object.clone(),
            source: DecodeError::new("netlink message", reason),
        };
        let result = match msg.nl_payload() {
            NlPayload::Ack(_) => Some(Ok(())),
            NlPayload::Err(e) => Some(Err(Error::Kernel {
                op: slot.op,
                object: slot.object.clone(),
                errno: e.error().checked_neg().unwrap_or(i32::MAX),
                message: extack_message(e.ext_ack()),
            })),
            NlPayload::DumpExtAck(e) if *e.error() != 0 => Some(Err(Error::Kernel {
                op: slot.op,
                object: slot.object.clone(),
                errno: e.error().checked_neg().unwrap_or(i32::MAX),
                message: extack_message(e.ext_ack()),
            })),
            NlPayload::DumpExtAck(_) | NlPayload::Empty if ty == u16::from(Nlmsg::Done) => {
                Some(Ok(()))
            }
            NlPayload::Payload(p) if ty == family => {
                if p.len() < GENL_HDRLEN {
                    Some(Err(malformed(slot, "generic-netlink header cut short")))
                } else {
                    slot.replies.push(p.as_ref()[GENL_HDRLEN..].to_vec());
                    // A one-message answer is complete with its ACK.
                    None
                }
            }
            NlPayload::Payload(_) if ty == u16::from(Nlmsg::Done) => Some(Ok(())),
            NlPayload::Payload(_) if ty == u16::from(Nlmsg::Noop) => None,
            _ => Some(Err(malformed(slot, "unexpected message type"))),
        };
        if let Some(r) = result {
            let answer = slot.answer;
            // A dump ends with DONE; an ACK to one is only possible as an
            // error, which the kernel sends instead of the dump.
            let r = match (answer, &r) {
                (Answer::Dump, Ok(())) if ty != u16::from(Nlmsg::Done) => {
                    Err(malformed(slot, "ACK where a dump was expected"))
                }
                _ => r,
            };
            self.close(seq, r);
        }
    }

    /// Takes the messages of one received datagram as neli parses them. A
    /// message that does not parse fails every open request.
    pub(crate) fn feed_all<I>(&mut self, msgs: I)
    where
        I: IntoIterator<Item = Result<Nlmsghdr<u16, Buffer>, neli::err::SocketError>>,
    {
        for m in msgs {
            match m {
                Ok(m) => self.feed(m),
                Err(e) => {
                    return self.fail_all(|op, object| Error::Malformed {
                        op,
                        object,
                        source: DecodeError::new("netlink message", &e),
                    })
                }
            }
        }
    }

    /// Takes every message of one received datagram. A datagram that does
    /// not parse fails every open request.
    pub(crate) fn feed_datagram(&mut self, bytes: &[u8]) {
        let mut cur = Cursor::new(bytes);
        while (cur.position() as usize) < bytes.len() {
            match Nlmsghdr::<u16, Buffer>::from_bytes(&mut cur) {
                Ok(m) => self.feed(m),
                Err(e) => return self.fail_all(|op, object| Error::Malformed {
                    op,
                    object,
                    source: DecodeError::new("netlink message", &e),
                }),
            }
        }
    }

    /// Ends every open request with the error `make` builds.
    pub(crate) fn fail_all(&mut self, make: impl Fn(Op, String) -> Error) {
        for slot in self.slots.iter_mut().filter(|s| s.result.is_none()) {
            slot.result = Some(Err(make(slot.op, slot.object.clone())));
        }
        self.open = 0;
    }

    pub(crate) fn timed_out(&mut self, timeout: Duration) {
        self.fail_all(|op, object| Error::Timeout {
            op,
            object,
            timeout,
        });
    }

    /// The answer of each request, in order.
    pub(crate) fn finish(self) -> Vec<Result<Replies, Error>> {
        self.slots
            .into_iter()
            .map(|s| match s.result {
                Some(Ok(())) => Ok(s.replies),
                Some(Err(e)) => Err(e),
                None => Err(Error::Malformed {
                    op: s.op,
                    object: s.object,
                    source: DecodeError::new("exchange", "ended without an answer"),
                }),
            })
            .collect()
    }
}

fn extack_message(ext: &GenlBuffer<NlmsgerrAttr, Buffer>) -> Option<String> {
    ext.iter()
        .find(|a| *a.nla_type().nla_type() == NlmsgerrAttr::Msg)
        .map(|a| {
            let b = a.nla_payload().as_ref();
            let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
            String::from_utf8_lossy(&b[..end]).into_owned()
        })
}

/// The family id from a `CTRL_CMD_GETFAMILY` answer.
pub(crate) fn family_id(replies: &Replies) -> Result<u16, Error> {
    let bad = |reason: String| Error::Malformed {
        op: Op::ResolveFamily,
        object: crate::uapi::IPVS_GENL_NAME.to_string(),
        source: DecodeError::new("family", reason),
    };
    let first = replies.first().ok_or_else(|| bad("no reply".into()))?;
    let attrs = crate::codec::parse_attrs::<CtrlAttr>(first, "family").map_err(|e| bad(e.to_string()))?;
    let (_, id) = attrs
        .into_iter()
        .find(|(t, _)| *t == CtrlAttr::FamilyId)
        .ok_or_else(|| bad("CTRL_ATTR_FAMILY_ID missing".into()))?;
    let b: [u8; 2] = id
        .as_ref()
        .try_into()
        .map_err(|_| bad(format!("family id of {} bytes", id.len())))?;
    Ok(u16::from_ne_bytes(b))
}

/// Maps a failed family lookup to [`Error::FamilyNotFound`].
pub(crate) fn family_result(r: Result<Replies, Error>) -> Result<u16, Error> {
    match r {
        Ok(replies) => family_id(&replies),
        Err(e) if e.errno() == Some(libc::ENOENT) => Err(Error::FamilyNotFound),
        Err(e) => Err(e),
    }
}
