//! ipvs-netlink: a typed client for the Linux IPVS generic-netlink family.
//!
//! The crate is a workspace member from the start so that the proxy can
//! depend on it; its message types, client and tests are issue #5. Nothing
//! here is usable yet.
