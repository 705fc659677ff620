//! The request/answer state machine both clients share, without I/O.
//!
//! An [`Exchange`] holds a window of requests sent together in one
//! datagram, each under its own sequence number. The transport feeds it
//! every message it receives; the exchange matches it to a request by
//! port id and sequence number, collects the payloads of `Get`/`List`
//! answers and records the ACK, `NLMSG_DONE` or error that ends each one.
//! Messages of earlier, abandoned exchanges (older sequence numbers) are
//! ignored.

use std::time::Duration;

use neli::consts::{
    genl::{CtrlAttr, CtrlCmd},
    nl::{GenlId, NlmF, NlmsgerrAttr},
};
use neli::types::GenlBuffer;

use crate::codec::{self, Answer, Request};
use crate::error::{DecodeError, Error, Op};

/// Requests in one datagram before the client waits for their answers. A
/// window's ACKs (and the echoed requests of its errors) must fit the
/// socket's receive buffer.
pub(crate) const WINDOW: usize = 64;

/// Size of the generic-netlink header ahead of the attributes.
const GENL_HDRLEN: usize = 4;
/// Size of `struct nlmsghdr`.
const NLMSG_HDRLEN: usize = 16;
const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
/// `NLM_F_CAPPED`: an error echoes only the request's header.
const NLM_F_CAPPED: u16 = 0x100;
/// `NLM_F_ACK_TLVS`: extended-ACK attributes follow.
const NLM_F_ACK_TLVS: u16 = 0x200;

/// One message of a received datagram, its header checked.
struct RawMsg<'a> {
    ty: u16,
    flags: u16,
    seq: u32,
    pid: u32,
    payload: &'a [u8],
}

fn ne32(b: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(..4)?.try_into().ok()?))
}

impl<'a> RawMsg<'a> {
    /// The first message of `bytes` and what follows it (aligned).
    fn split(bytes: &'a [u8]) -> Result<(RawMsg<'a>, &'a [u8]), DecodeError> {
        let short = || DecodeError::new("netlink message", "header cut short");
        let hdr = bytes.get(..NLMSG_HDRLEN).ok_or_else(short)?;
        let len = ne32(hdr).ok_or_else(short)? as usize;
        if len < NLMSG_HDRLEN || len > bytes.len() {
            return Err(DecodeError::new(
                "netlink message",
                format!("length {len} with {} bytes left", bytes.len()),
            ));
        }
        let next = len.next_multiple_of(4).min(bytes.len());
        Ok((
            RawMsg {
                ty: u16::from_ne_bytes([hdr[4], hdr[5]]),
                flags: u16::from_ne_bytes([hdr[6], hdr[7]]),
                seq: ne32(&hdr[8..]).ok_or_else(short)?,
                pid: ne32(&hdr[12..]).ok_or_else(short)?,
                payload: &bytes[NLMSG_HDRLEN..len],
            },
            &bytes[next..],
        ))
    }

    /// The errno (negative, 0 for an ACK) of an `NLMSG_ERROR` or
    /// `NLMSG_DONE`, and the extended-ACK message if there is one.
    fn error(&self) -> Result<(i32, Option<String>), String> {
        let p = self.payload;
        let errno = match ne32(p) {
            Some(v) => v as i32,
            // A DONE of an old kernel may carry nothing.
            None if self.ty == NLMSG_DONE && p.is_empty() => return Ok((0, None)),
            None => return Err("error code cut short".into()),
        };
        if self.ty == NLMSG_DONE || self.flags & NLM_F_ACK_TLVS == 0 {
            return Ok((errno, None));
        }
        // The echoed request: its header, or all of it unless capped.
        let echo = match ne32(&p[4..]) {
            Some(len) if self.flags & NLM_F_CAPPED == 0 => len as usize,
            _ => NLMSG_HDRLEN,
        };
        let tlvs = echo
            .checked_add(4)
            .and_then(|start| p.get(start.checked_next_multiple_of(4)?..))
            .ok_or("echoed request longer than the message")?;
        // A garbled extended ACK loses its message, not the errno.
        let Ok(attrs) = crate::codec::parse_attrs::<NlmsgerrAttr>(tlvs, "extended ACK") else {
            return Ok((errno, None));
        };
        let text = attrs
            .into_iter()
            .find(|(t, _)| *t == NlmsgerrAttr::Msg)
            .map(|(_, b)| {
                let b = b.as_ref();
                let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
                String::from_utf8_lossy(&b[..end]).into_owned()
            });
        Ok((errno, text))
    }
}

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
        let mut attrs = GenlBuffer::new();
        attrs.push(codec::attr(CtrlAttr::FamilyName, &codec::cstr(name)));
        let flags = NlmF::REQUEST | NlmF::ACK;
        let datagram = codec::genl_request(
            GenlId::Ctrl.into(),
            flags,
            s,
            pid,
            CtrlCmd::Getfamily,
            2,
            attrs,
        )
        .map_err(|reason| Error::InvalidRequest {
            op: Op::ResolveFamily,
            object: name.to_string(),
            reason,
        })?;
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
            datagram,
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

    /// Takes every message of one received datagram. The headers are
    /// checked here, before anything is parsed: a length shorter than a
    /// header or longer than what is left fails every open request.
    pub(crate) fn feed_datagram(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        while !rest.is_empty() {
            let msg = match RawMsg::split(rest) {
                Ok((msg, tail)) => {
                    rest = tail;
                    msg
                }
                Err(e) => {
                    return self.fail_all(|op, object| Error::Malformed {
                        op,
                        object,
                        source: e.clone(),
                    })
                }
            };
            self.feed(&msg);
        }
    }

    /// Takes one received message.
    fn feed(&mut self, msg: &RawMsg<'_>) {
        if msg.pid != self.pid {
            return;
        }
        let family = self.family;
        let Some(slot) = self.slot(msg.seq) else {
            return;
        };
        let malformed = |slot: &Slot, reason: &str| Error::Malformed {
            op: slot.op,
            object: slot.object.clone(),
            source: DecodeError::new("netlink message", reason),
        };
        let kernel = |slot: &Slot, errno: i32, message| Error::Kernel {
            op: slot.op,
            object: slot.object.clone(),
            errno: errno.checked_neg().unwrap_or(i32::MAX),
            message,
        };
        let result = match msg.ty {
            NLMSG_ERROR => match msg.error() {
                Err(e) => Err(malformed(slot, &e)),
                Ok((0, _)) if slot.answer == Answer::Dump => {
                    Err(malformed(slot, "ACK where a dump was expected"))
                }
                Ok((0, _)) => Ok(()),
                Ok((errno, text)) => Err(kernel(slot, errno, text)),
            },
            NLMSG_DONE => match msg.error() {
                Err(e) => Err(malformed(slot, &e)),
                Ok((0, _)) if slot.answer == Answer::Dump => Ok(()),
                Ok((0, _)) => Err(malformed(slot, "DONE where no dump was asked")),
                Ok((errno, text)) => Err(kernel(slot, errno, text)),
            },
            NLMSG_NOOP => return,
            ty if ty == family && slot.answer != Answer::Ack => {
                if msg.payload.len() < GENL_HDRLEN {
                    Err(malformed(slot, "generic-netlink header cut short"))
                } else {
                    // Complete with the ACK (one message) or DONE (dump).
                    slot.replies.push(msg.payload[GENL_HDRLEN..].to_vec());
                    return;
                }
            }
            ty => Err(malformed(slot, &format!("unexpected message type {ty}"))),
        };
        self.close(msg.seq, result);
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

/// The family id from a `CTRL_CMD_GETFAMILY` answer.
pub(crate) fn family_id(replies: &Replies) -> Result<u16, Error> {
    let bad = |reason: String| Error::Malformed {
        op: Op::ResolveFamily,
        object: crate::uapi::IPVS_GENL_NAME.to_string(),
        source: DecodeError::new("family", reason),
    };
    let first = replies.first().ok_or_else(|| bad("no reply".into()))?;
    let attrs =
        crate::codec::parse_attrs::<CtrlAttr>(first, "family").map_err(|e| bad(e.to_string()))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// CTRL_CMD_GETFAMILY as genetlink.h lays it out.
    #[test]
    #[cfg(target_endian = "little")]
    fn family_lookup_bytes() {
        let mut seq = 7;
        let (ex, datagram) = Exchange::resolve("IPVS", 0x0a0b0c0d, &mut seq).expect("encodes");
        #[rustfmt::skip]
        let want = [
            32, 0, 0, 0,          // nlmsg_len: 16 + 4 + 12
            0x10, 0,              // nlmsg_type: GENL_ID_CTRL
            0x05, 0,              // NLM_F_REQUEST | NLM_F_ACK
            7, 0, 0, 0,           // nlmsg_seq
            0x0d, 0x0c, 0x0b, 0x0a, // nlmsg_pid
            3, 2, 0, 0,           // CTRL_CMD_GETFAMILY, version 2, reserved
            9, 0, 2, 0,           // CTRL_ATTR_FAMILY_NAME: len 4 + 5
            b'I', b'P', b'V', b'S', 0, 0, 0, 0, // "IPVS\0", pad 3
        ];
        assert_eq!(datagram, want);
        assert_eq!(seq, 8);
        assert!(ex.pending());
    }
}
