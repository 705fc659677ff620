//! The family's commands and attribute types as neli enums, one per nesting
//! level of `ip_vs.h`. Every value comes from [`crate::uapi`], whose numbers
//! `tests/uapi_abi.rs` checks against the header; a number the enum does not
//! know parses as `UnrecognizedConst` and is skipped by the decoder.

use neli::neli_enum;

use crate::uapi;

/// `IPVS_CMD_*`: the generic-netlink command.
#[neli_enum(serialized_type = "u8")]
pub enum Cmd {
    Unspec = uapi::IPVS_CMD_UNSPEC,
    NewService = uapi::IPVS_CMD_NEW_SERVICE,
    SetService = uapi::IPVS_CMD_SET_SERVICE,
    DelService = uapi::IPVS_CMD_DEL_SERVICE,
    GetService = uapi::IPVS_CMD_GET_SERVICE,
    NewDest = uapi::IPVS_CMD_NEW_DEST,
    SetDest = uapi::IPVS_CMD_SET_DEST,
    DelDest = uapi::IPVS_CMD_DEL_DEST,
    GetDest = uapi::IPVS_CMD_GET_DEST,
    NewDaemon = uapi::IPVS_CMD_NEW_DAEMON,
    DelDaemon = uapi::IPVS_CMD_DEL_DAEMON,
    GetDaemon = uapi::IPVS_CMD_GET_DAEMON,
    SetConfig = uapi::IPVS_CMD_SET_CONFIG,
    GetConfig = uapi::IPVS_CMD_GET_CONFIG,
    SetInfo = uapi::IPVS_CMD_SET_INFO,
    GetInfo = uapi::IPVS_CMD_GET_INFO,
    Zero = uapi::IPVS_CMD_ZERO,
    Flush = uapi::IPVS_CMD_FLUSH,
    NewBpf = uapi::IPVS_CMD_NEW_BPF,
    DelBpf = uapi::IPVS_CMD_DEL_BPF,
    GetBpf = uapi::IPVS_CMD_GET_BPF,
}
impl neli::consts::genl::Cmd for Cmd {}

/// `IPVS_CMD_ATTR_*`, the first level (and `IPVS_INFO_ATTR_*`, which the
/// `GET_INFO` reply puts at the first level too).
#[neli_enum(serialized_type = "u16")]
pub enum CmdAttr {
    Service = uapi::IPVS_CMD_ATTR_SERVICE,
    Dest = uapi::IPVS_CMD_ATTR_DEST,
    Daemon = uapi::IPVS_CMD_ATTR_DAEMON,
    TimeoutTcp = uapi::IPVS_CMD_ATTR_TIMEOUT_TCP,
    TimeoutTcpFin = uapi::IPVS_CMD_ATTR_TIMEOUT_TCP_FIN,
    TimeoutUdp = uapi::IPVS_CMD_ATTR_TIMEOUT_UDP,
    Bpf = uapi::IPVS_CMD_ATTR_BPF,
}
impl neli::consts::genl::NlAttrType for CmdAttr {}

/// `IPVS_INFO_ATTR_*`, top level of the `GET_INFO` reply.
#[neli_enum(serialized_type = "u16")]
pub enum InfoAttr {
    Version = uapi::IPVS_INFO_ATTR_VERSION,
    ConnTabSize = uapi::IPVS_INFO_ATTR_CONN_TAB_SIZE,
}
impl neli::consts::genl::NlAttrType for InfoAttr {}

/// `IPVS_SVC_ATTR_*`, nested in [`CmdAttr::Service`].
#[neli_enum(serialized_type = "u16")]
pub enum SvcAttr {
    Af = uapi::IPVS_SVC_ATTR_AF,
    Protocol = uapi::IPVS_SVC_ATTR_PROTOCOL,
    Addr = uapi::IPVS_SVC_ATTR_ADDR,
    Port = uapi::IPVS_SVC_ATTR_PORT,
    Fwmark = uapi::IPVS_SVC_ATTR_FWMARK,
    SchedName = uapi::IPVS_SVC_ATTR_SCHED_NAME,
    Flags = uapi::IPVS_SVC_ATTR_FLAGS,
    Timeout = uapi::IPVS_SVC_ATTR_TIMEOUT,
    Netmask = uapi::IPVS_SVC_ATTR_NETMASK,
    Stats = uapi::IPVS_SVC_ATTR_STATS,
    PeName = uapi::IPVS_SVC_ATTR_PE_NAME,
    Stats64 = uapi::IPVS_SVC_ATTR_STATS64,
}
impl neli::consts::genl::NlAttrType for SvcAttr {}

/// `IPVS_DEST_ATTR_*`, nested in [`CmdAttr::Dest`].
#[neli_enum(serialized_type = "u16")]
pub enum DestAttr {
    Addr = uapi::IPVS_DEST_ATTR_ADDR,
    Port = uapi::IPVS_DEST_ATTR_PORT,
    FwdMethod = uapi::IPVS_DEST_ATTR_FWD_METHOD,
    Weight = uapi::IPVS_DEST_ATTR_WEIGHT,
    UThresh = uapi::IPVS_DEST_ATTR_U_THRESH,
    LThresh = uapi::IPVS_DEST_ATTR_L_THRESH,
    ActiveConns = uapi::IPVS_DEST_ATTR_ACTIVE_CONNS,
    InactConns = uapi::IPVS_DEST_ATTR_INACT_CONNS,
    PersistConns = uapi::IPVS_DEST_ATTR_PERSIST_CONNS,
    Stats = uapi::IPVS_DEST_ATTR_STATS,
    AddrFamily = uapi::IPVS_DEST_ATTR_ADDR_FAMILY,
    Stats64 = uapi::IPVS_DEST_ATTR_STATS64,
    TunType = uapi::IPVS_DEST_ATTR_TUN_TYPE,
    TunPort = uapi::IPVS_DEST_ATTR_TUN_PORT,
    TunFlags = uapi::IPVS_DEST_ATTR_TUN_FLAGS,
}
impl neli::consts::genl::NlAttrType for DestAttr {}

/// `IPVS_DAEMON_ATTR_*`, nested in [`CmdAttr::Daemon`].
#[neli_enum(serialized_type = "u16")]
pub enum DaemonAttr {
    State = uapi::IPVS_DAEMON_ATTR_STATE,
    McastIfn = uapi::IPVS_DAEMON_ATTR_MCAST_IFN,
    SyncId = uapi::IPVS_DAEMON_ATTR_SYNC_ID,
    SyncMaxlen = uapi::IPVS_DAEMON_ATTR_SYNC_MAXLEN,
    McastGroup = uapi::IPVS_DAEMON_ATTR_MCAST_GROUP,
    McastGroup6 = uapi::IPVS_DAEMON_ATTR_MCAST_GROUP6,
    McastPort = uapi::IPVS_DAEMON_ATTR_MCAST_PORT,
    McastTtl = uapi::IPVS_DAEMON_ATTR_MCAST_TTL,
}
impl neli::consts::genl::NlAttrType for DaemonAttr {}

/// `IPVS_STATS_ATTR_*`, nested in the `STATS` and `STATS64` attributes.
#[neli_enum(serialized_type = "u16")]
pub enum StatsAttr {
    Conns = uapi::IPVS_STATS_ATTR_CONNS,
    Inpkts = uapi::IPVS_STATS_ATTR_INPKTS,
    Outpkts = uapi::IPVS_STATS_ATTR_OUTPKTS,
    Inbytes = uapi::IPVS_STATS_ATTR_INBYTES,
    Outbytes = uapi::IPVS_STATS_ATTR_OUTBYTES,
    Cps = uapi::IPVS_STATS_ATTR_CPS,
    Inpps = uapi::IPVS_STATS_ATTR_INPPS,
    Outpps = uapi::IPVS_STATS_ATTR_OUTPPS,
    Inbps = uapi::IPVS_STATS_ATTR_INBPS,
    Outbps = uapi::IPVS_STATS_ATTR_OUTBPS,
    Pad = uapi::IPVS_STATS_ATTR_PAD,
}
impl neli::consts::genl::NlAttrType for StatsAttr {}

/// `IPVS_BPF_ATTR_*`, nested in [`CmdAttr::Bpf`].
#[neli_enum(serialized_type = "u16")]
pub enum BpfAttr {
    MapFd = uapi::IPVS_BPF_ATTR_MAP_FD,
    MapId = uapi::IPVS_BPF_ATTR_MAP_ID,
    SnatAddr4 = uapi::IPVS_BPF_ATTR_SNAT_ADDR4,
    SnatAddr6 = uapi::IPVS_BPF_ATTR_SNAT_ADDR6,
    PortMin = uapi::IPVS_BPF_ATTR_PORT_MIN,
    PortMax = uapi::IPVS_BPF_ATTR_PORT_MAX,
    Stats = uapi::IPVS_BPF_ATTR_STATS,
    Pad = uapi::IPVS_BPF_ATTR_PAD,
    LocalNet = uapi::IPVS_BPF_ATTR_LOCAL_NET,
}
impl neli::consts::genl::NlAttrType for BpfAttr {}

/// `IPVS_BPF_NET_ATTR_*`, nested in each [`BpfAttr::LocalNet`].
#[neli_enum(serialized_type = "u16")]
pub enum BpfNetAttr {
    Addr4 = uapi::IPVS_BPF_NET_ATTR_ADDR4,
    Addr6 = uapi::IPVS_BPF_NET_ATTR_ADDR6,
    PrefixLen = uapi::IPVS_BPF_NET_ATTR_PREFIXLEN,
}
impl neli::consts::genl::NlAttrType for BpfNetAttr {}

/// `IPVS_BPF_STATS_ATTR_*`, nested in [`BpfAttr::Stats`].
#[neli_enum(serialized_type = "u16")]
pub enum BpfStatsAttr {
    Sessions = uapi::IPVS_BPF_STATS_ATTR_SESSIONS,
    Inserted = uapi::IPVS_BPF_STATS_ATTR_INSERTED,
    Deleted = uapi::IPVS_BPF_STATS_ATTR_DELETED,
    InsertFail = uapi::IPVS_BPF_STATS_ATTR_INSERT_FAIL,
    Conflict = uapi::IPVS_BPF_STATS_ATTR_CONFLICT,
    SnatExhausted = uapi::IPVS_BPF_STATS_ATTR_SNAT_EXHAUSTED,
    Twins = uapi::IPVS_BPF_STATS_ATTR_TWINS,
    SnatReused = uapi::IPVS_BPF_STATS_ATTR_SNAT_REUSED,
    SnatReusedUnsafe = uapi::IPVS_BPF_STATS_ATTR_SNAT_REUSED_UNSAFE,
    SnatUnmapped = uapi::IPVS_BPF_STATS_ATTR_SNAT_UNMAPPED,
    Pad = uapi::IPVS_BPF_STATS_ATTR_PAD,
    DeleteMiss = uapi::IPVS_BPF_STATS_ATTR_DELETE_MISS,
}
impl neli::consts::genl::NlAttrType for BpfStatsAttr {}
