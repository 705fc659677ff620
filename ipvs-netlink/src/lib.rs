//! ipvs-netlink: a typed client for the Linux IPVS generic-netlink family.
//!
//! [`uapi`] mirrors the kernel's `include/uapi/linux/ip_vs.h` with the
//! ipvs-bpf additions (session map layout, `IPVS_CMD_*_BPF`). The message
//! types, client and tests are issue #5.

pub mod uapi;
