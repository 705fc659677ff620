//! The dummy device that holds the service addresses, over rtnetlink.
//!
//! neli's rtnl messages are used rather than the `rtnetlink` crate: neli is
//! already how `ipvs-netlink` talks to the kernel, it is synchronous like
//! the rest of this mode (which runs in its own blocking task), and the
//! five requests needed here do not justify a second, async netlink stack
//! (`rtnetlink` pulls in netlink-proto, netlink-packet-route and futures
//! channels).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use neli::consts::nl::NlmF;
use neli::consts::rtnl::{Ifa, IfaF, Ifla, IflaInfo, RtAddrFamily, RtScope, Rtm};
use neli::consts::socket::NlFamily;
use neli::err::RouterError;
use neli::nl::NlPayload;
use neli::router::synchronous::NlRouter;
use neli::rtnl::{Ifaddrmsg, IfaddrmsgBuilder, Ifinfomsg, IfinfomsgBuilder, RtattrBuilder};
use neli::types::{Buffer, RtBuffer};
use neli::utils::Groups;
use neli::{Size, ToBytes};

/// What went wrong talking to rtnetlink.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The kernel refused the request.
    #[error("{}", std::io::Error::from_raw_os_error(*.errno))]
    Kernel { errno: i32 },
    /// The device does not exist.
    #[error("no such device")]
    NoDevice,
    /// Socket, serialization or protocol failure.
    #[error("netlink: {0}")]
    Netlink(String),
}

/// The device operations this mode needs, behind a trait so the mode's
/// logic is tested against a fake.
pub trait Links {
    /// Creates dummy device `name` unless a device of that name exists.
    fn ensure_dummy(&mut self, name: &str) -> Result<(), LinkError>;
    /// The addresses on device `name`.
    fn addresses(&mut self, name: &str) -> Result<BTreeSet<IpAddr>, LinkError>;
    /// The addresses on every device but `name`: the node's own, which must
    /// never be put on the dummy device.
    fn addresses_except(&mut self, name: &str) -> Result<BTreeSet<IpAddr>, LinkError>;
    /// Adds `addr` (as a host address); adding one that is there succeeds.
    fn add_address(&mut self, name: &str, addr: IpAddr) -> Result<(), LinkError>;
    /// Removes `addr`; removing one that is not there succeeds.
    fn del_address(&mut self, name: &str, addr: IpAddr) -> Result<(), LinkError>;
    /// Deletes device `name`; `false` if there was none.
    fn delete_link(&mut self, name: &str) -> Result<bool, LinkError>;
}

/// [`Links`] over an rtnetlink socket. The socket belongs to the network
/// namespace of the thread that opens it.
pub struct Rtnl {
    router: NlRouter,
}

fn nl_err<T: std::fmt::Debug, P: std::fmt::Debug>(e: RouterError<T, P>) -> LinkError {
    match e {
        RouterError::Nlmsgerr(m) => LinkError::Kernel {
            errno: m.error().abs(),
        },
        other => LinkError::Netlink(other.to_string()),
    }
}

fn other<E: std::fmt::Display>(e: E) -> LinkError {
    LinkError::Netlink(e.to_string())
}

fn attr<T, P>(t: T, p: P) -> Result<neli::rtnl::Rtattr<T, Buffer>, LinkError>
where
    T: neli::consts::rtnl::RtaType,
    P: Size + ToBytes,
{
    RtattrBuilder::default()
        .rta_type(t)
        .rta_payload(p)
        .build()
        .map_err(other)
}

fn addr_from_bytes(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => <[u8; 4]>::try_from(b)
            .ok()
            .map(|a| IpAddr::V4(Ipv4Addr::from(a))),
        16 => <[u8; 16]>::try_from(b)
            .ok()
            .map(|a| IpAddr::V6(Ipv6Addr::from(a))),
        _ => None,
    }
}

fn addr_bytes(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

impl Rtnl {
    pub fn connect() -> Result<Rtnl, LinkError> {
        let (router, _mcast) =
            NlRouter::connect(NlFamily::Route, None, Groups::empty()).map_err(other)?;
        Ok(Rtnl { router })
    }

    /// Sends a request that expects only an acknowledgement.
    fn ack<P: Size + ToBytes + std::fmt::Debug>(
        &self,
        ty: Rtm,
        flags: NlmF,
        payload: P,
    ) -> Result<(), LinkError>
    where
        Rtm: neli::consts::nl::NlType,
    {
        let recv = self
            .router
            .send::<Rtm, P, Rtm, Buffer>(ty, flags | NlmF::ACK, NlPayload::Payload(payload))
            .map_err(nl_err)?;
        for msg in recv {
            msg.map_err(nl_err)?;
        }
        Ok(())
    }

    fn index(&self, name: &str) -> Result<Option<i32>, LinkError> {
        let mut attrs = RtBuffer::new();
        attrs.push(attr(Ifla::Ifname, name)?);
        let msg = IfinfomsgBuilder::default()
            .ifi_family(RtAddrFamily::Unspecified)
            .rtattrs(attrs)
            .build()
            .map_err(other)?;
        let recv = self
            .router
            .send::<Rtm, Ifinfomsg, Rtm, Ifinfomsg>(
                Rtm::Getlink,
                NlmF::empty(),
                NlPayload::Payload(msg),
            )
            .map_err(nl_err)?;
        let mut found = None;
        for m in recv {
            match m {
                Ok(m) => {
                    if let NlPayload::Payload(info) = m.nl_payload() {
                        found = Some(*info.ifi_index());
                    }
                }
                Err(e) => match nl_err(e) {
                    LinkError::Kernel { errno } if errno == libc::ENODEV => return Ok(None),
                    e => return Err(e),
                },
            }
        }
        Ok(found)
    }

    fn index_of(&self, name: &str) -> Result<i32, LinkError> {
        self.index(name)?.ok_or(LinkError::NoDevice)
    }

    /// Every address with the index of its device.
    fn dump_addresses(&self) -> Result<Vec<(i32, IpAddr)>, LinkError> {
        let msg = IfaddrmsgBuilder::default()
            .ifa_family(RtAddrFamily::Unspecified)
            .ifa_prefixlen(0)
            .ifa_scope(RtScope::Universe)
            .ifa_index(0)
            .build()
            .map_err(other)?;
        let recv = self
            .router
            .send::<Rtm, Ifaddrmsg, Rtm, Ifaddrmsg>(
                Rtm::Getaddr,
                NlmF::DUMP,
                NlPayload::Payload(msg),
            )
            .map_err(nl_err)?;
        let mut out = Vec::new();
        for m in recv {
            let m = m.map_err(nl_err)?;
            let NlPayload::Payload(a) = m.nl_payload() else {
                continue;
            };
            // IPv4 carries the interface's own address in IFA_LOCAL
            // (IFA_ADDRESS is the peer on point-to-point links); IPv6 has
            // only IFA_ADDRESS.
            let mut local = None;
            let mut address = None;
            for at in a.rtattrs().iter() {
                let v = addr_from_bytes(at.rta_payload().as_ref());
                match at.rta_type() {
                    Ifa::Local => local = v,
                    Ifa::Address => address = v,
                    _ => {}
                }
            }
            if let Some(ip) = local.or(address) {
                out.push((i32::try_from(*a.ifa_index()).map_err(other)?, ip));
            }
        }
        Ok(out)
    }

    fn addr_msg(&self, name: &str, addr: IpAddr) -> Result<Ifaddrmsg, LinkError> {
        let index = u32::try_from(self.index_of(name)?).map_err(other)?;
        let (family, prefix, flags) = match addr {
            IpAddr::V4(_) => (RtAddrFamily::Inet, 32, IfaF::empty()),
            // No duplicate address detection: the address must be usable
            // at once, and the dummy device is down, where DAD would keep
            // it tentative.
            IpAddr::V6(_) => (RtAddrFamily::Inet6, 128, IfaF::NODAD),
        };
        let mut attrs = RtBuffer::new();
        attrs.push(attr(Ifa::Local, addr_bytes(addr))?);
        attrs.push(attr(Ifa::Address, addr_bytes(addr))?);
        IfaddrmsgBuilder::default()
            .ifa_family(family)
            .ifa_prefixlen(prefix)
            .ifa_flags(flags)
            .ifa_scope(RtScope::Universe)
            .ifa_index(index)
            .rtattrs(attrs)
            .build()
            .map_err(other)
    }
}

impl Links for Rtnl {
    fn ensure_dummy(&mut self, name: &str) -> Result<(), LinkError> {
        if self.index(name)?.is_some() {
            return Ok(());
        }
        let mut info = RtBuffer::new();
        info.push(attr(IflaInfo::Kind, "dummy")?);
        let mut attrs = RtBuffer::new();
        attrs.push(attr(Ifla::Ifname, name)?);
        attrs.push(attr(Ifla::Linkinfo, info)?);
        let msg = IfinfomsgBuilder::default()
            .ifi_family(RtAddrFamily::Unspecified)
            .rtattrs(attrs)
            .build()
            .map_err(other)?;
        match self.ack(Rtm::Newlink, NlmF::CREATE | NlmF::EXCL, msg) {
            // Created meanwhile by someone else: the device is there.
            Err(LinkError::Kernel { errno }) if errno == libc::EEXIST => Ok(()),
            r => r,
        }
    }

    fn addresses(&mut self, name: &str) -> Result<BTreeSet<IpAddr>, LinkError> {
        let index = self.index_of(name)?;
        Ok(self
            .dump_addresses()?
            .into_iter()
            .filter(|(i, _)| *i == index)
            .map(|(_, a)| a)
            .collect())
    }

    fn addresses_except(&mut self, name: &str) -> Result<BTreeSet<IpAddr>, LinkError> {
        let index = self.index(name)?;
        Ok(self
            .dump_addresses()?
            .into_iter()
            .filter(|(i, _)| Some(*i) != index)
            .map(|(_, a)| a)
            .collect())
    }

    fn add_address(&mut self, name: &str, addr: IpAddr) -> Result<(), LinkError> {
        let msg = self.addr_msg(name, addr)?;
        match self.ack(Rtm::Newaddr, NlmF::CREATE | NlmF::EXCL, msg) {
            Err(LinkError::Kernel { errno }) if errno == libc::EEXIST => Ok(()),
            r => r,
        }
    }

    fn del_address(&mut self, name: &str, addr: IpAddr) -> Result<(), LinkError> {
        let msg = self.addr_msg(name, addr)?;
        match self.ack(Rtm::Deladdr, NlmF::empty(), msg) {
            Err(LinkError::Kernel { errno }) if errno == libc::EADDRNOTAVAIL => Ok(()),
            r => r,
        }
    }

    fn delete_link(&mut self, name: &str) -> Result<bool, LinkError> {
        let Some(index) = self.index(name)? else {
            return Ok(false);
        };
        let msg = IfinfomsgBuilder::default()
            .ifi_family(RtAddrFamily::Unspecified)
            .ifi_index(index)
            .build()
            .map_err(other)?;
        match self.ack(Rtm::Dellink, NlmF::empty(), msg) {
            Ok(()) => Ok(true),
            Err(LinkError::Kernel { errno }) if errno == libc::ENODEV => Ok(false),
            Err(e) => Err(e),
        }
    }
}
