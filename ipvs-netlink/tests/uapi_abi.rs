//! The Rust mirror of `ip_vs.h` against the header itself: every constant,
//! size and field offset in `ipvs_netlink::uapi` becomes a C `_Static_assert`
//! compiled with the series' header (`bpf/include/linux/ip_vs.h`). A
//! mismatch fails compilation and names the item.

use std::mem::{offset_of, size_of};
use std::path::PathBuf;
use std::process::Command;

use ipvs_netlink::uapi::*;

/// `cargo test` gives the test its package directory at run time too: use
/// that one. The path compiled in is another checkout's when a build
/// directory shared between checkouts (CI's and a developer's) reuses this
/// binary, as cargo does: its fingerprints do not cover the path.
fn header_dir() -> PathBuf {
    let pkg =
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
    PathBuf::from(pkg).join("../bpf/include")
}

#[test]
fn rust_mirror_matches_the_uapi_header() {
    let mut checks: Vec<(String, u64)> = Vec::new();
    let mut c = |expr: &str, v: u64| checks.push((expr.to_string(), v));

    c(
        "sizeof(struct ip_vs_bpf_key)",
        size_of::<IpVsBpfKey>() as u64,
    );
    c(
        "sizeof(struct ip_vs_bpf_value)",
        size_of::<IpVsBpfValue>() as u64,
    );
    for (field, off) in [
        ("saddr", offset_of!(IpVsBpfKey, saddr)),
        ("daddr", offset_of!(IpVsBpfKey, daddr)),
        ("sport", offset_of!(IpVsBpfKey, sport)),
        ("dport", offset_of!(IpVsBpfKey, dport)),
        ("family", offset_of!(IpVsBpfKey, family)),
        ("protocol", offset_of!(IpVsBpfKey, protocol)),
        ("dir", offset_of!(IpVsBpfKey, dir)),
        ("pad", offset_of!(IpVsBpfKey, pad)),
    ] {
        c(
            &format!("__builtin_offsetof(struct ip_vs_bpf_key, {field})"),
            off as u64,
        );
    }
    for (field, off) in [
        ("addr", offset_of!(IpVsBpfValue, addr)),
        ("port", offset_of!(IpVsBpfValue, port)),
        ("flags", offset_of!(IpVsBpfValue, flags)),
        ("pad", offset_of!(IpVsBpfValue, pad)),
    ] {
        c(
            &format!("__builtin_offsetof(struct ip_vs_bpf_value, {field})"),
            off as u64,
        );
    }

    macro_rules! consts {
        ($($name:ident),* $(,)?) => { $( c(stringify!($name), $name as u64); )* };
    }
    consts!(
        IPVS_GENL_VERSION,
        IP_VS_SVC_F_BPF_SNAT,
        IP_VS_SVC_F_BPF_SNAT_FOREIGN,
        IP_VS_SVC_F_PERSISTENT,
        IP_VS_SVC_F_HASHED,
        IP_VS_SVC_F_ONEPACKET,
        IP_VS_SVC_F_SCHED1,
        IP_VS_SVC_F_SCHED2,
        IP_VS_SVC_F_SCHED3,
        IP_VS_SVC_F_SCHED_SH_FALLBACK,
        IP_VS_SVC_F_SCHED_SH_PORT,
        IP_VS_STATE_NONE,
        IP_VS_STATE_MASTER,
        IP_VS_STATE_BACKUP,
        IP_VS_CONN_F_FWD_MASK,
        IP_VS_CONN_F_MASQ,
        IP_VS_CONN_F_LOCALNODE,
        IP_VS_CONN_F_TUNNEL,
        IP_VS_CONN_F_DROUTE,
        IP_VS_CONN_F_BYPASS,
        IP_VS_SCHEDNAME_MAXLEN,
        IP_VS_PENAME_MAXLEN,
        IP_VS_IFNAME_MAXLEN,
        IP_VS_CONN_F_TUNNEL_TYPE_IPIP,
        IP_VS_CONN_F_TUNNEL_TYPE_GUE,
        IP_VS_CONN_F_TUNNEL_TYPE_GRE,
        IP_VS_TUNNEL_ENCAP_FLAG_NOCSUM,
        IP_VS_TUNNEL_ENCAP_FLAG_CSUM,
        IP_VS_TUNNEL_ENCAP_FLAG_REMCSUM,
        IPVS_SVC_ATTR_AF,
        IPVS_SVC_ATTR_PROTOCOL,
        IPVS_SVC_ATTR_ADDR,
        IPVS_SVC_ATTR_PORT,
        IPVS_SVC_ATTR_FWMARK,
        IPVS_SVC_ATTR_SCHED_NAME,
        IPVS_SVC_ATTR_FLAGS,
        IPVS_SVC_ATTR_TIMEOUT,
        IPVS_SVC_ATTR_NETMASK,
        IPVS_SVC_ATTR_STATS,
        IPVS_SVC_ATTR_PE_NAME,
        IPVS_SVC_ATTR_STATS64,
        IPVS_DEST_ATTR_ADDR,
        IPVS_DEST_ATTR_PORT,
        IPVS_DEST_ATTR_FWD_METHOD,
        IPVS_DEST_ATTR_WEIGHT,
        IPVS_DEST_ATTR_U_THRESH,
        IPVS_DEST_ATTR_L_THRESH,
        IPVS_DEST_ATTR_ACTIVE_CONNS,
        IPVS_DEST_ATTR_INACT_CONNS,
        IPVS_DEST_ATTR_PERSIST_CONNS,
        IPVS_DEST_ATTR_STATS,
        IPVS_DEST_ATTR_ADDR_FAMILY,
        IPVS_DEST_ATTR_STATS64,
        IPVS_DEST_ATTR_TUN_TYPE,
        IPVS_DEST_ATTR_TUN_PORT,
        IPVS_DEST_ATTR_TUN_FLAGS,
        IPVS_DAEMON_ATTR_STATE,
        IPVS_DAEMON_ATTR_MCAST_IFN,
        IPVS_DAEMON_ATTR_SYNC_ID,
        IPVS_DAEMON_ATTR_SYNC_MAXLEN,
        IPVS_DAEMON_ATTR_MCAST_GROUP,
        IPVS_DAEMON_ATTR_MCAST_GROUP6,
        IPVS_DAEMON_ATTR_MCAST_PORT,
        IPVS_DAEMON_ATTR_MCAST_TTL,
        IPVS_STATS_ATTR_CONNS,
        IPVS_STATS_ATTR_INPKTS,
        IPVS_STATS_ATTR_OUTPKTS,
        IPVS_STATS_ATTR_INBYTES,
        IPVS_STATS_ATTR_OUTBYTES,
        IPVS_STATS_ATTR_CPS,
        IPVS_STATS_ATTR_INPPS,
        IPVS_STATS_ATTR_OUTPPS,
        IPVS_STATS_ATTR_INBPS,
        IPVS_STATS_ATTR_OUTBPS,
        IPVS_STATS_ATTR_PAD,
        IPVS_INFO_ATTR_VERSION,
        IPVS_INFO_ATTR_CONN_TAB_SIZE,
        IPVS_CMD_UNSPEC,
        IPVS_CMD_NEW_SERVICE,
        IPVS_CMD_SET_SERVICE,
        IPVS_CMD_DEL_SERVICE,
        IPVS_CMD_GET_SERVICE,
        IPVS_CMD_NEW_DEST,
        IPVS_CMD_SET_DEST,
        IPVS_CMD_DEL_DEST,
        IPVS_CMD_GET_DEST,
        IPVS_CMD_NEW_DAEMON,
        IPVS_CMD_DEL_DAEMON,
        IPVS_CMD_GET_DAEMON,
        IPVS_CMD_SET_CONFIG,
        IPVS_CMD_GET_CONFIG,
        IPVS_CMD_SET_INFO,
        IPVS_CMD_GET_INFO,
        IPVS_CMD_ZERO,
        IPVS_CMD_FLUSH,
        IPVS_CMD_NEW_BPF,
        IPVS_CMD_DEL_BPF,
        IPVS_CMD_GET_BPF,
        IPVS_CMD_ATTR_SERVICE,
        IPVS_CMD_ATTR_DEST,
        IPVS_CMD_ATTR_DAEMON,
        IPVS_CMD_ATTR_TIMEOUT_TCP,
        IPVS_CMD_ATTR_TIMEOUT_TCP_FIN,
        IPVS_CMD_ATTR_TIMEOUT_UDP,
        IPVS_CMD_ATTR_BPF,
        IPVS_BPF_ATTR_MAP_FD,
        IPVS_BPF_ATTR_MAP_ID,
        IPVS_BPF_ATTR_SNAT_ADDR4,
        IPVS_BPF_ATTR_SNAT_ADDR6,
        IPVS_BPF_ATTR_PORT_MIN,
        IPVS_BPF_ATTR_PORT_MAX,
        IPVS_BPF_ATTR_STATS,
        IPVS_BPF_ATTR_PAD,
        IPVS_BPF_ATTR_LOCAL_NET,
        IP_VS_BPF_LOCAL_NETS_MAX,
        IPVS_BPF_NET_ATTR_ADDR4,
        IPVS_BPF_NET_ATTR_ADDR6,
        IPVS_BPF_NET_ATTR_PREFIXLEN,
        IPVS_BPF_STATS_ATTR_SESSIONS,
        IPVS_BPF_STATS_ATTR_INSERTED,
        IPVS_BPF_STATS_ATTR_DELETED,
        IPVS_BPF_STATS_ATTR_INSERT_FAIL,
        IPVS_BPF_STATS_ATTR_CONFLICT,
        IPVS_BPF_STATS_ATTR_SNAT_EXHAUSTED,
        IPVS_BPF_STATS_ATTR_TWINS,
        IPVS_BPF_STATS_ATTR_SNAT_REUSED,
        IPVS_BPF_STATS_ATTR_SNAT_REUSED_UNSAFE,
        IPVS_BPF_STATS_ATTR_SNAT_UNMAPPED,
        IPVS_BPF_STATS_ATTR_PAD,
        IPVS_BPF_STATS_ATTR_DELETE_MISS,
        IP_VS_BPF_DIR_ORIG,
        IP_VS_BPF_DIR_REPLY,
        IP_VS_BPF_F_SNAT,
        IP_VS_BPF_MIN_ENTRIES,
    );
    // The last entries: nothing was added behind the mirror's back.
    c("IPVS_CMD_MAX", IPVS_CMD_GET_BPF as u64);
    c("IPVS_CMD_ATTR_MAX", IPVS_CMD_ATTR_BPF as u64);
    c("IPVS_BPF_ATTR_MAX", IPVS_BPF_ATTR_LOCAL_NET as u64);
    c("IPVS_BPF_NET_ATTR_MAX", IPVS_BPF_NET_ATTR_PREFIXLEN as u64);
    c(
        "IPVS_BPF_STATS_ATTR_MAX",
        IPVS_BPF_STATS_ATTR_DELETE_MISS as u64,
    );
    c("IPVS_SVC_ATTR_MAX", IPVS_SVC_ATTR_STATS64 as u64);
    c("IPVS_DEST_ATTR_MAX", IPVS_DEST_ATTR_TUN_FLAGS as u64);
    c("IPVS_DAEMON_ATTR_MAX", IPVS_DAEMON_ATTR_MCAST_TTL as u64);
    c("IPVS_STATS_ATTR_MAX", IPVS_STATS_ATTR_PAD as u64);
    c("IPVS_INFO_ATTR_MAX", IPVS_INFO_ATTR_CONN_TAB_SIZE as u64);
    c("IP_VS_CONN_F_TUNNEL_TYPE_MAX", 3);
    c("sizeof(struct ip_vs_flags)", size_of::<IpVsFlags>() as u64);
    c(
        "__builtin_offsetof(struct ip_vs_flags, mask)",
        offset_of!(IpVsFlags, mask) as u64,
    );

    let mut src = String::from("#include <linux/ip_vs.h>\n#include <string.h>\n");
    for (i, (expr, v)) in checks.iter().enumerate() {
        src.push_str(&format!(
            "_Static_assert(({expr}) == {v}ULL, \"uapi mismatch #{i}: {expr} is not {v} as in uapi.rs\");\n"
        ));
    }
    // Strings are not integer constant expressions: compare at run time.
    src.push_str(&format!(
        "int main(void) {{ return strcmp(IPVS_GENL_NAME, \"{IPVS_GENL_NAME}\") || \
         strcmp(IP_VS_BPF_MODE_SYSCTL, \"{IP_VS_BPF_MODE_SYSCTL}\"); }}\n"
    ));

    let dir = tempfile_dir();
    let c_file = dir.join("abi.c");
    let bin = dir.join("abi");
    std::fs::write(&c_file, src).expect("writing the generated C file");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .arg("-I")
        .arg(header_dir())
        .arg("-o")
        .arg(&bin)
        .arg(&c_file)
        .output()
        .unwrap_or_else(|e| panic!("running {cc}: {e}"));
    assert!(
        out.status.success(),
        "the Rust mirror disagrees with ip_vs.h:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = Command::new(&bin).status().expect("running the ABI check");
    assert!(
        status.success(),
        "IPVS_GENL_NAME or IP_VS_BPF_MODE_SYSCTL differ"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ipvs-netlink-abi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creating a temporary directory");
    dir
}
