//! A typed client for the Linux IPVS generic-netlink family, with the
//! ipvs-bpf additions (the BPF session map).
//!
//! IPVS is programmed over the `IPVS` generic-netlink family; `ipvsadm`
//! speaks it through libnl. This crate speaks it from Rust, on
//! [neli](https://docs.rs/neli): services and destinations (add, edit,
//! delete, get, list), timeouts, info, counters, flush, sync daemons, and
//! the session-map commands the ipvs-bpf kernel series adds. IPv4 and IPv6
//! throughout; a blocking client ([`Ipvs`]) and, with the `tokio` feature,
//! an async one ([`AsyncIpvs`]) over the same message types.
//!
//! ```no_run
//! use ipvs_netlink::{Destination, Ipvs, Request, Service, ServiceKey};
//!
//! let mut ipvs = Ipvs::connect()?; // resolves the family once
//! let vip = ServiceKey::tcp("198.19.0.10".parse()?, 80);
//! ipvs.add_service(&Service::new(vip, "rr").persistent(10800))?;
//!
//! // Many changes: one datagram per 64 requests, one result each.
//! let reqs: Vec<Request> = ["198.18.1.2", "198.18.2.2"]
//!     .iter()
//!     .map(|ip| Ok(Request::AddDestination(vip, Destination::new(ip.parse()?, 8080))))
//!     .collect::<Result<_, std::net::AddrParseError>>()?;
//! for r in ipvs.execute_all(&reqs) {
//!     r?;
//! }
//!
//! match ipvs.add_service(&Service::new(vip, "rr")) {
//!     Err(e) if e.kind() == Some(ipvs_netlink::ErrorKind::AlreadyExists) => {}
//!     other => other?,
//! }
//! for d in ipvs.destinations(&vip)? {
//!     println!("{vip} -> {d} weight {} active {}", d.weight, d.active_conns());
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Layers, bottom up: [`uapi`] mirrors `include/uapi/linux/ip_vs.h`
//! (checked against the header by a test); [`attr`] names each nesting
//! level's attributes as neli enums; [`types`] holds the objects;
//! [`codec`] turns requests into bytes and replies into objects; the
//! clients send and match. Every request needs `CAP_NET_ADMIN` in the
//! caller's network namespace, reads included.

#![warn(missing_docs)]

#[allow(missing_docs)]
pub mod attr;
mod client;
pub mod codec;
mod error;
#[cfg(test)]
mod fuzz;
mod proto;
#[allow(missing_docs)]
pub mod types;
pub mod uapi;

#[cfg(feature = "tokio")]
pub use client::AsyncIpvs;
pub use client::{Ipvs, DEFAULT_TIMEOUT};
pub use codec::Request;
pub use error::{DecodeError, Error, ErrorKind, Op, Result};
pub use types::*;
