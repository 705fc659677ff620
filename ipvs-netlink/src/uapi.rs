//! Constants and structures from the kernel's `include/uapi/linux/ip_vs.h`
//! as the ipvs-bpf kernel series extends it, one-to-one and under the
//! kernel's names.
//!
//! The header itself is mirrored at `bpf/include/linux/ip_vs.h` (written
//! by `testbed/export-series`, checked against the series by
//! `testbed/check-series`); `tests/uapi_abi.rs` compiles it together with
//! static assertions generated from the definitions below, so the two cannot
//! drift. Issue #5 completes the classic part of the family.

#![allow(missing_docs)]

/// Generic-netlink family name.
pub const IPVS_GENL_NAME: &str = "IPVS";
/// Generic-netlink family version.
pub const IPVS_GENL_VERSION: u8 = 0x1;

/// Path under `/proc/sys` of the per-netns switch: 0 classic IPVS,
/// 1 PREROUTING ahead of conntrack with a session map.
pub const IP_VS_BPF_MODE_SYSCTL: &str = "net/ipv4/vs/bpf_mode";

/// Service flag: SNAT every connection of this service (bpf_mode).
pub const IP_VS_SVC_F_BPF_SNAT: u32 = 0x0040;

// Generic-netlink commands (enum, IPVS_CMD_UNSPEC = 0).
pub const IPVS_CMD_UNSPEC: u8 = 0;
pub const IPVS_CMD_NEW_SERVICE: u8 = 1;
pub const IPVS_CMD_SET_SERVICE: u8 = 2;
pub const IPVS_CMD_DEL_SERVICE: u8 = 3;
pub const IPVS_CMD_GET_SERVICE: u8 = 4;
pub const IPVS_CMD_NEW_DEST: u8 = 5;
pub const IPVS_CMD_SET_DEST: u8 = 6;
pub const IPVS_CMD_DEL_DEST: u8 = 7;
pub const IPVS_CMD_GET_DEST: u8 = 8;
pub const IPVS_CMD_NEW_DAEMON: u8 = 9;
pub const IPVS_CMD_DEL_DAEMON: u8 = 10;
pub const IPVS_CMD_GET_DAEMON: u8 = 11;
pub const IPVS_CMD_SET_CONFIG: u8 = 12;
pub const IPVS_CMD_GET_CONFIG: u8 = 13;
pub const IPVS_CMD_SET_INFO: u8 = 14;
pub const IPVS_CMD_GET_INFO: u8 = 15;
pub const IPVS_CMD_ZERO: u8 = 16;
pub const IPVS_CMD_FLUSH: u8 = 17;
pub const IPVS_CMD_NEW_BPF: u8 = 18;
pub const IPVS_CMD_DEL_BPF: u8 = 19;
pub const IPVS_CMD_GET_BPF: u8 = 20;

// Top-level command attributes.
pub const IPVS_CMD_ATTR_SERVICE: u16 = 1;
pub const IPVS_CMD_ATTR_DEST: u16 = 2;
pub const IPVS_CMD_ATTR_DAEMON: u16 = 3;
pub const IPVS_CMD_ATTR_TIMEOUT_TCP: u16 = 4;
pub const IPVS_CMD_ATTR_TIMEOUT_TCP_FIN: u16 = 5;
pub const IPVS_CMD_ATTR_TIMEOUT_UDP: u16 = 6;
pub const IPVS_CMD_ATTR_BPF: u16 = 7;

// Attributes nested in IPVS_CMD_ATTR_BPF.
pub const IPVS_BPF_ATTR_MAP_FD: u16 = 1;
pub const IPVS_BPF_ATTR_MAP_ID: u16 = 2;
pub const IPVS_BPF_ATTR_SNAT_ADDR4: u16 = 3;
pub const IPVS_BPF_ATTR_SNAT_ADDR6: u16 = 4;
pub const IPVS_BPF_ATTR_PORT_MIN: u16 = 5;
pub const IPVS_BPF_ATTR_PORT_MAX: u16 = 6;
pub const IPVS_BPF_ATTR_STATS: u16 = 7;
pub const IPVS_BPF_ATTR_PAD: u16 = 8;

// Counters nested in IPVS_BPF_ATTR_STATS, all u64.
pub const IPVS_BPF_STATS_ATTR_SESSIONS: u16 = 1;
pub const IPVS_BPF_STATS_ATTR_INSERTED: u16 = 2;
pub const IPVS_BPF_STATS_ATTR_DELETED: u16 = 3;
pub const IPVS_BPF_STATS_ATTR_INSERT_FAIL: u16 = 4;
pub const IPVS_BPF_STATS_ATTR_CONFLICT: u16 = 5;
pub const IPVS_BPF_STATS_ATTR_SNAT_EXHAUSTED: u16 = 6;
pub const IPVS_BPF_STATS_ATTR_TWINS: u16 = 7;
pub const IPVS_BPF_STATS_ATTR_PAD: u16 = 8;

/// Session map entry direction: the request after DNAT, as it leaves.
pub const IP_VS_BPF_DIR_ORIG: u8 = 0;
/// Session map entry direction: the reply as it arrives, before IPVS.
pub const IP_VS_BPF_DIR_REPLY: u8 = 1;
/// Value flag: rewrite with the value's address and port.
pub const IP_VS_BPF_F_SNAT: u8 = 0x01;
/// Smallest session map IPVS accepts.
pub const IP_VS_BPF_MIN_ENTRIES: u32 = 64;

/// `struct ip_vs_bpf_key`: addresses and ports in network byte order;
/// IPv4 addresses in word 0, unused bytes zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IpVsBpfKey {
    pub saddr: [u32; 4],
    pub daddr: [u32; 4],
    pub sport: u16,
    pub dport: u16,
    pub family: u8,
    pub protocol: u8,
    pub dir: u8,
    pub pad: u8,
}

/// `struct ip_vs_bpf_value`: the address and port to write.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IpVsBpfValue {
    pub addr: [u32; 4],
    pub port: u16,
    pub flags: u8,
    pub pad: u8,
}
