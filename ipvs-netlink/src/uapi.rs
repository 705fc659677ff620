//! Constants and structures from the kernel's `include/uapi/linux/ip_vs.h`
//! as the ipvs-bpf kernel series extends it, one-to-one and under the
//! kernel's names.
//!
//! The header itself is mirrored at `bpf/include/linux/ip_vs.h` (written
//! by `testbed/export-series`, checked against the series by
//! `testbed/check-series`); `tests/uapi_abi.rs` compiles it together with
//! static assertions generated from the definitions below, so the two cannot
//! drift.

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
/// Service flag: SNAT the connections of clients outside the session map
/// attachment's local nets (bpf_mode).
pub const IP_VS_SVC_F_BPF_SNAT_FOREIGN: u32 = 0x0080;

// Virtual service flags (IPVS_SVC_ATTR_FLAGS).
pub const IP_VS_SVC_F_PERSISTENT: u32 = 0x0001;
pub const IP_VS_SVC_F_HASHED: u32 = 0x0002;
pub const IP_VS_SVC_F_ONEPACKET: u32 = 0x0004;
pub const IP_VS_SVC_F_SCHED1: u32 = 0x0008;
pub const IP_VS_SVC_F_SCHED2: u32 = 0x0010;
pub const IP_VS_SVC_F_SCHED3: u32 = 0x0020;
pub const IP_VS_SVC_F_SCHED_SH_FALLBACK: u32 = IP_VS_SVC_F_SCHED1;
pub const IP_VS_SVC_F_SCHED_SH_PORT: u32 = IP_VS_SVC_F_SCHED2;
pub const IP_VS_SVC_F_SCHED_MH_FALLBACK: u32 = IP_VS_SVC_F_SCHED1;
pub const IP_VS_SVC_F_SCHED_MH_PORT: u32 = IP_VS_SVC_F_SCHED2;

// Sync daemon states.
pub const IP_VS_STATE_NONE: u32 = 0x0000;
pub const IP_VS_STATE_MASTER: u32 = 0x0001;
pub const IP_VS_STATE_BACKUP: u32 = 0x0002;

// Connection flags: the forwarding methods a destination uses.
pub const IP_VS_CONN_F_FWD_MASK: u32 = 0x0007;
pub const IP_VS_CONN_F_MASQ: u32 = 0x0000;
pub const IP_VS_CONN_F_LOCALNODE: u32 = 0x0001;
pub const IP_VS_CONN_F_TUNNEL: u32 = 0x0002;
pub const IP_VS_CONN_F_DROUTE: u32 = 0x0003;
pub const IP_VS_CONN_F_BYPASS: u32 = 0x0004;

// Name lengths, including the terminating NUL.
pub const IP_VS_SCHEDNAME_MAXLEN: usize = 16;
pub const IP_VS_PENAME_MAXLEN: usize = 16;
pub const IP_VS_IFNAME_MAXLEN: usize = 16;

// Tunnel types (IPVS_DEST_ATTR_TUN_TYPE).
pub const IP_VS_CONN_F_TUNNEL_TYPE_IPIP: u8 = 0;
pub const IP_VS_CONN_F_TUNNEL_TYPE_GUE: u8 = 1;
pub const IP_VS_CONN_F_TUNNEL_TYPE_GRE: u8 = 2;

// Tunnel encapsulation flags (IPVS_DEST_ATTR_TUN_FLAGS).
pub const IP_VS_TUNNEL_ENCAP_FLAG_NOCSUM: u16 = 0;
pub const IP_VS_TUNNEL_ENCAP_FLAG_CSUM: u16 = 1 << 0;
pub const IP_VS_TUNNEL_ENCAP_FLAG_REMCSUM: u16 = 1 << 1;

/// `struct ip_vs_flags`: the payload of `IPVS_SVC_ATTR_FLAGS`, host order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IpVsFlags {
    pub flags: u32,
    pub mask: u32,
}

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

// Attributes nested in IPVS_CMD_ATTR_SERVICE.
pub const IPVS_SVC_ATTR_AF: u16 = 1;
pub const IPVS_SVC_ATTR_PROTOCOL: u16 = 2;
pub const IPVS_SVC_ATTR_ADDR: u16 = 3;
pub const IPVS_SVC_ATTR_PORT: u16 = 4;
pub const IPVS_SVC_ATTR_FWMARK: u16 = 5;
pub const IPVS_SVC_ATTR_SCHED_NAME: u16 = 6;
pub const IPVS_SVC_ATTR_FLAGS: u16 = 7;
pub const IPVS_SVC_ATTR_TIMEOUT: u16 = 8;
pub const IPVS_SVC_ATTR_NETMASK: u16 = 9;
pub const IPVS_SVC_ATTR_STATS: u16 = 10;
pub const IPVS_SVC_ATTR_PE_NAME: u16 = 11;
pub const IPVS_SVC_ATTR_STATS64: u16 = 12;

// Attributes nested in IPVS_CMD_ATTR_DEST.
pub const IPVS_DEST_ATTR_ADDR: u16 = 1;
pub const IPVS_DEST_ATTR_PORT: u16 = 2;
pub const IPVS_DEST_ATTR_FWD_METHOD: u16 = 3;
pub const IPVS_DEST_ATTR_WEIGHT: u16 = 4;
pub const IPVS_DEST_ATTR_U_THRESH: u16 = 5;
pub const IPVS_DEST_ATTR_L_THRESH: u16 = 6;
pub const IPVS_DEST_ATTR_ACTIVE_CONNS: u16 = 7;
pub const IPVS_DEST_ATTR_INACT_CONNS: u16 = 8;
pub const IPVS_DEST_ATTR_PERSIST_CONNS: u16 = 9;
pub const IPVS_DEST_ATTR_STATS: u16 = 10;
pub const IPVS_DEST_ATTR_ADDR_FAMILY: u16 = 11;
pub const IPVS_DEST_ATTR_STATS64: u16 = 12;
pub const IPVS_DEST_ATTR_TUN_TYPE: u16 = 13;
pub const IPVS_DEST_ATTR_TUN_PORT: u16 = 14;
pub const IPVS_DEST_ATTR_TUN_FLAGS: u16 = 15;

// Attributes nested in IPVS_CMD_ATTR_DAEMON.
pub const IPVS_DAEMON_ATTR_STATE: u16 = 1;
pub const IPVS_DAEMON_ATTR_MCAST_IFN: u16 = 2;
pub const IPVS_DAEMON_ATTR_SYNC_ID: u16 = 3;
pub const IPVS_DAEMON_ATTR_SYNC_MAXLEN: u16 = 4;
pub const IPVS_DAEMON_ATTR_MCAST_GROUP: u16 = 5;
pub const IPVS_DAEMON_ATTR_MCAST_GROUP6: u16 = 6;
pub const IPVS_DAEMON_ATTR_MCAST_PORT: u16 = 7;
pub const IPVS_DAEMON_ATTR_MCAST_TTL: u16 = 8;

// Counters nested in IPVS_{SVC,DEST}_ATTR_STATS{,64}. CONNS, INPKTS,
// OUTPKTS and the rates are u32 in STATS and u64 in STATS64; the byte
// counters are u64 in both.
pub const IPVS_STATS_ATTR_CONNS: u16 = 1;
pub const IPVS_STATS_ATTR_INPKTS: u16 = 2;
pub const IPVS_STATS_ATTR_OUTPKTS: u16 = 3;
pub const IPVS_STATS_ATTR_INBYTES: u16 = 4;
pub const IPVS_STATS_ATTR_OUTBYTES: u16 = 5;
pub const IPVS_STATS_ATTR_CPS: u16 = 6;
pub const IPVS_STATS_ATTR_INPPS: u16 = 7;
pub const IPVS_STATS_ATTR_OUTPPS: u16 = 8;
pub const IPVS_STATS_ATTR_INBPS: u16 = 9;
pub const IPVS_STATS_ATTR_OUTBPS: u16 = 10;
pub const IPVS_STATS_ATTR_PAD: u16 = 11;

// Attributes of the IPVS_CMD_GET_INFO reply (top level).
pub const IPVS_INFO_ATTR_VERSION: u16 = 1;
pub const IPVS_INFO_ATTR_CONN_TAB_SIZE: u16 = 2;

// Attributes nested in IPVS_CMD_ATTR_BPF.
pub const IPVS_BPF_ATTR_MAP_FD: u16 = 1;
pub const IPVS_BPF_ATTR_MAP_ID: u16 = 2;
pub const IPVS_BPF_ATTR_SNAT_ADDR4: u16 = 3;
pub const IPVS_BPF_ATTR_SNAT_ADDR6: u16 = 4;
pub const IPVS_BPF_ATTR_PORT_MIN: u16 = 5;
pub const IPVS_BPF_ATTR_PORT_MAX: u16 = 6;
pub const IPVS_BPF_ATTR_STATS: u16 = 7;
pub const IPVS_BPF_ATTR_PAD: u16 = 8;
pub const IPVS_BPF_ATTR_LOCAL_NET: u16 = 9;

/// Local nets an attachment takes, at most.
pub const IP_VS_BPF_LOCAL_NETS_MAX: usize = 8;

// Attributes nested in each IPVS_BPF_ATTR_LOCAL_NET.
pub const IPVS_BPF_NET_ATTR_ADDR4: u16 = 1;
pub const IPVS_BPF_NET_ATTR_ADDR6: u16 = 2;
pub const IPVS_BPF_NET_ATTR_PREFIXLEN: u16 = 3;

// Counters nested in IPVS_BPF_ATTR_STATS, all u64.
pub const IPVS_BPF_STATS_ATTR_SESSIONS: u16 = 1;
pub const IPVS_BPF_STATS_ATTR_INSERTED: u16 = 2;
pub const IPVS_BPF_STATS_ATTR_DELETED: u16 = 3;
pub const IPVS_BPF_STATS_ATTR_INSERT_FAIL: u16 = 4;
pub const IPVS_BPF_STATS_ATTR_CONFLICT: u16 = 5;
pub const IPVS_BPF_STATS_ATTR_SNAT_EXHAUSTED: u16 = 6;
pub const IPVS_BPF_STATS_ATTR_TWINS: u16 = 7;
pub const IPVS_BPF_STATS_ATTR_SNAT_REUSED: u16 = 8;
pub const IPVS_BPF_STATS_ATTR_SNAT_REUSED_UNSAFE: u16 = 9;
pub const IPVS_BPF_STATS_ATTR_SNAT_UNMAPPED: u16 = 10;
pub const IPVS_BPF_STATS_ATTR_PAD: u16 = 11;
pub const IPVS_BPF_STATS_ATTR_DELETE_MISS: u16 = 12;

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
