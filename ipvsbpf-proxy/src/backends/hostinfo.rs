//! What the proxy reads off the node: default-route uplinks, local
//! addresses, sysctls and the reserved local port list. Parsing is split
//! from reading so the formats are unit-tested.

use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use crate::backends::datapath::LinkLayer;
use crate::model::desired::Cidr;

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("writing {value:?} to {path}: {source}")]
    Write {
        path: PathBuf,
        value: String,
        source: io::Error,
    },
    #[error("{path}: cannot parse {text:?}")]
    Parse { path: PathBuf, text: String },
    #[error("getifaddrs: {0}")]
    Ifaddrs(io::Error),
    #[error("no device {0} in this network namespace")]
    NoDevice(String),
    #[error(
        "{dev} has a link-layer header the tc programs cannot parse (ARPHRD {kind}): \
         they read Ethernet frames or bare IP packets"
    )]
    LinkLayer { dev: String, kind: String },
    #[error("{what}: {error}")]
    Rtnetlink { what: String, error: String },
}

fn read(path: &Path) -> Result<String, HostError> {
    std::fs::read_to_string(path).map_err(|source| HostError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Path of a sysctl under /proc/sys, `net.ipv4.vs.bpf_mode` or
/// `net/ipv4/vs/bpf_mode`.
pub fn sysctl_path(name: &str) -> PathBuf {
    Path::new("/proc/sys").join(name.replace('.', "/"))
}

pub fn sysctl_exists(name: &str) -> bool {
    sysctl_path(name).exists()
}

pub fn read_sysctl(name: &str) -> Result<String, HostError> {
    Ok(read(&sysctl_path(name))?.trim().to_string())
}

/// Writes a sysctl unless it already holds `value` (writes to some IPVS
/// sysctls have side effects even when unchanged).
pub fn write_sysctl(name: &str, value: &str) -> Result<(), HostError> {
    let path = sysctl_path(name);
    if read(&path).map(|v| v.trim() == value).unwrap_or(false) {
        return Ok(());
    }
    std::fs::write(&path, value).map_err(|source| HostError::Write {
        path,
        value: value.to_string(),
        source,
    })
}

/// Devices that carry a default route, IPv4 first, each once, in the
/// order the kernel lists them.
pub fn default_route_devices() -> Result<Vec<String>, HostError> {
    route_devices(|r| r.net.prefix_len == 0)
}

/// Devices of the routes that overlap one of `prefixes` (the cluster
/// CIDR): pod veths, a CNI's bridge, an overlay's tunnel device, another
/// uplink towards other nodes' pods, whatever the CNI made; also a route
/// wider than the prefix that holds it (`10.0.0.0/8 dev eth1` for a
/// cluster in 10.244.0.0/16), but not a default route. Each device once,
/// IPv4's first.
pub fn devices_routing(prefixes: &[Cidr]) -> Result<Vec<String>, HostError> {
    route_devices(|r| inside(r, prefixes))
}

/// Whether route `r` overlaps one of `prefixes`: one holds the other. A
/// default route overlaps everything and is left out.
fn inside(r: &Route, prefixes: &[Cidr]) -> bool {
    r.net.prefix_len > 0 && prefixes.iter().any(|p| p.overlaps(&r.net))
}

/// One usable route of the main table.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Route {
    /// Destination, host bits clear (the kernel keeps routes so).
    net: Cidr,
    dev: String,
}

fn route_devices(keep: impl Fn(&Route) -> bool) -> Result<Vec<String>, HostError> {
    // The calling thread's namespace (/proc/net is the process's main
    // thread's): the same for the daemon, not for a test in a namespace.
    let v4 = read(Path::new("/proc/thread-self/net/route"))?;
    let v6 = read(Path::new("/proc/thread-self/net/ipv6_route")).unwrap_or_default();
    Ok(pick_devices(
        parse_routes_v4(&v4).into_iter().chain(parse_routes_v6(&v6)),
        keep,
    ))
}

/// The devices of the routes `keep` takes, each once, in route order.
fn pick_devices(routes: impl Iterator<Item = Route>, keep: impl Fn(&Route) -> bool) -> Vec<String> {
    let mut out = Vec::new();
    for r in routes {
        if keep(&r) && !out.contains(&r.dev) {
            out.push(r.dev);
        }
    }
    out
}

/// Routes of /proc/net/route that are up. Destination and mask are the
/// network-order words printed as native integers.
fn parse_routes_v4(text: &str) -> Vec<Route> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let word = |i: usize| {
                f.get(i)
                    .and_then(|x| u32::from_str_radix(x, 16).ok())
                    .map(u32::to_ne_bytes)
            };
            let flags = f.get(3).and_then(|x| u16::from_str_radix(x, 16).ok())?;
            let (dst, mask) = (word(1)?, word(7)?);
            (flags & 1 != 0).then(|| Route {
                net: Cidr {
                    addr: IpAddr::from(dst),
                    prefix_len: u32::from_be_bytes(mask).leading_ones() as u8,
                },
                dev: f[0].to_string(),
            })
        })
        .collect()
}

/// Routes of /proc/net/ipv6_route, but reject routes and `lo`'s (the
/// kernel keeps an unreachable default there).
fn parse_routes_v6(text: &str) -> Vec<Route> {
    const RTF_REJECT: u32 = 0x0200;
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let flags = f.get(8).and_then(|x| u32::from_str_radix(x, 16).ok())?;
            let dst = u128::from_str_radix(f.first()?, 16).ok()?;
            let prefix_len = u8::from_str_radix(f.get(1)?, 16).ok()?;
            (f.len() >= 10 && flags & RTF_REJECT == 0 && f[9] != "lo").then(|| Route {
                net: Cidr {
                    addr: IpAddr::V6(Ipv6Addr::from(dst)),
                    prefix_len,
                },
                dev: f[9].to_string(),
            })
        })
        .collect()
}

/// Every network device of this namespace, by name (/sys/class/net; a
/// namespace's own when /sys was mounted in it, as `ip netns exec` does).
pub fn all_devices() -> Result<Vec<String>, HostError> {
    let dir = Path::new("/sys/class/net");
    let entries = std::fs::read_dir(dir).map_err(|source| HostError::Read {
        path: dir.to_owned(),
        source,
    })?;
    Ok(entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect())
}

/// Calls `changed` whenever this network namespace's IPv4 or IPv6 routes
/// change (rtnetlink's route groups), from a thread of its own for the
/// life of the process. A lost burst (ENOBUFS) counts as a change. Only
/// the wake-up matters: the caller reads the routes again.
pub fn watch_routes(changed: impl Fn() + Send + 'static) -> io::Result<()> {
    use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
    const RTMGRP_IPV4_ROUTE: u32 = 0x40;
    const RTMGRP_IPV6_ROUTE: u32 = 0x400;
    let mut sock = Socket::new(NETLINK_ROUTE)?;
    sock.bind(&SocketAddr::new(0, RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE))?;
    std::thread::Builder::new()
        .name("route-watch".into())
        .spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match sock.recv(&mut &mut buf[..], 0) {
                    Ok(_) => changed(),
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => changed(),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "route watch stopped: route changes are seen at full syncs only");
                        return;
                    }
                }
            }
        })?;
    Ok(())
}

/// ifindex of `dev` in the calling thread's network namespace.
pub fn ifindex(dev: &str) -> Result<i32, HostError> {
    let name = std::ffi::CString::new(dev).map_err(|_| HostError::NoDevice(dev.to_string()))?;
    // SAFETY: a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if idx == 0 {
        return Err(HostError::NoDevice(dev.to_string()));
    }
    i32::try_from(idx).map_err(|_| HostError::NoDevice(dev.to_string()))
}

/// Which pair of tc programs `dev` takes, from its ARPHRD type: Ethernet
/// frames (ARPHRD_ETHER: veth, virtio, ENA, mlx5, bridges, VXLAN), or bare
/// IP packets on a device without a link-layer header (ARPHRD_NONE:
/// WireGuard, TUN; ARPHRD_TUNNEL, TUNNEL6, SIT: IPIP, ip6tnl, SIT, which
/// build no header in front of the inner packet). Any other type (GRE,
/// InfiniBand, PPP) would be misparsed: refused. So are the IPsec devices
/// among those types (kinds `vti`, `vti6`, `xfrm`): after decapsulation
/// xfrm rebuilds a 14-byte MAC header in front of the inner packet, which
/// tc ingress then shows, so neither pair could read their replies.
pub fn link_layer(dev: &str) -> Result<LinkLayer, HostError> {
    let (kind, rtnl_kind) = link_info(dev)?;
    let refused = || HostError::LinkLayer {
        dev: dev.to_string(),
        kind: match &rtnl_kind {
            Some(k) => format!("{kind}, kind {k}"),
            None => kind.to_string(),
        },
    };
    if matches!(rtnl_kind.as_deref(), Some("vti" | "vti6" | "xfrm")) {
        return Err(refused());
    }
    link_layer_of(kind).ok_or_else(refused)
}

/// [`link_layer`] of an ARPHRD type.
pub fn link_layer_of(arphrd: u16) -> Option<LinkLayer> {
    match arphrd {
        libc::ARPHRD_ETHER => Some(LinkLayer::Ethernet),
        libc::ARPHRD_TUNNEL | libc::ARPHRD_TUNNEL6 | libc::ARPHRD_SIT | libc::ARPHRD_NONE => {
            Some(LinkLayer::L3)
        }
        _ => None,
    }
}

/// The ARPHRD type of `dev` and its rtnetlink kind (IFLA_INFO_KIND:
/// "wireguard", "ipip"...; none for a physical device), from RTM_GETLINK on
/// a socket of the calling thread's network namespace (/sys/class/net
/// shows the namespace sysfs was mounted in, which need not be this one).
fn link_info(dev: &str) -> Result<(u16, Option<String>), HostError> {
    use neli::consts::nl::NlmF;
    use neli::consts::rtnl::{Ifla, IflaInfo, RtAddrFamily, Rtm};
    use neli::consts::socket::NlFamily;
    use neli::nl::{NlPayload, NlmsghdrBuilder};
    use neli::rtnl::{Ifinfomsg, IfinfomsgBuilder, RtattrBuilder};
    use neli::socket::synchronous::NlSocketHandle;
    use neli::types::RtBuffer;
    use neli::utils::Groups;

    let failed = |e: String| HostError::Rtnetlink {
        what: format!("RTM_GETLINK {dev}"),
        error: e,
    };
    if dev.is_empty() || dev.len() >= libc::IFNAMSIZ || dev.contains('\0') {
        return Err(HostError::NoDevice(dev.to_string()));
    }
    // A plain socket, not neli's router: no processing thread per call
    // (a refused device is asked again at every sync).
    let sock = NlSocketHandle::connect(NlFamily::Route, None, Groups::empty())
        .map_err(|e| failed(e.to_string()))?;
    let mut attrs = RtBuffer::new();
    attrs.push(
        RtattrBuilder::default()
            .rta_type(Ifla::Ifname)
            .rta_payload(dev)
            .build()
            .map_err(|e| failed(e.to_string()))?,
    );
    let msg = IfinfomsgBuilder::default()
        .ifi_family(RtAddrFamily::Unspecified)
        .rtattrs(attrs)
        .build()
        .map_err(|e| failed(e.to_string()))?;
    let hdr = NlmsghdrBuilder::default()
        .nl_type(Rtm::Getlink)
        .nl_flags(NlmF::REQUEST)
        .nl_payload(NlPayload::Payload(msg))
        .build()
        .map_err(|e| failed(e.to_string()))?;
    sock.send(&hdr).map_err(|e| failed(e.to_string()))?;
    let (msgs, _) = sock
        .recv::<Rtm, Ifinfomsg>()
        .map_err(|e| failed(e.to_string()))?;
    for m in msgs {
        let m = m.map_err(|e| failed(e.to_string()))?;
        let info = match m.nl_payload() {
            NlPayload::Payload(info) => info,
            NlPayload::Err(e) if e.error().abs() == libc::ENODEV => {
                return Err(HostError::NoDevice(dev.to_string()))
            }
            NlPayload::Err(e) => {
                let errno = e.error().abs();
                return Err(failed(io::Error::from_raw_os_error(errno).to_string()));
            }
            _ => continue,
        };
        let kind = info
            .rtattrs()
            .get_attr_handle()
            .get_attribute(Ifla::Linkinfo)
            .and_then(|li| li.get_attr_handle::<IflaInfo>().ok())
            .and_then(|h| {
                h.get_attribute(IflaInfo::Kind)
                    .map(|k| k.rta_payload().as_ref().to_vec())
            })
            .map(|b: Vec<u8>| {
                let b = b.split(|c| *c == 0).next().unwrap_or_default();
                String::from_utf8_lossy(b).into_owned()
            });
        return Ok((u16::from(*info.ifi_type()), kind));
    }
    Err(failed("no answer".to_string()))
}

/// One address of an interface that is up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalAddr {
    pub dev: String,
    pub addr: IpAddr,
}

/// Addresses of the interfaces that are up, from getifaddrs(3).
pub fn local_addresses() -> Result<Vec<LocalAddr>, HostError> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list freed below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(HostError::Ifaddrs(io::Error::last_os_error()));
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_flags & libc::IFF_UP as u32 == 0 {
            continue;
        }
        // SAFETY: ifa_addr points at a sockaddr of the family it names.
        let addr = unsafe {
            match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
                }
                libc::AF_INET6 => {
                    let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr))
                }
                _ => continue,
            }
        };
        // SAFETY: ifa_name is a NUL-terminated string.
        let dev = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        out.push(LocalAddr { dev, addr });
    }
    // SAFETY: the list from getifaddrs above, freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// Whether an address can serve NodePorts: not loopback, link-local,
/// multicast or unspecified (kube-proxy skips the same).
pub fn nodeport_capable(addr: &IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => !(a.is_loopback() || a.is_link_local() || a.is_unspecified()),
        IpAddr::V6(a) => {
            !(a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || (a.segments()[0] & 0xffc0) == 0xfe80)
        }
    }
}

const RESERVED_PORTS: &str = "net.ipv4.ip_local_reserved_ports";

/// Adds `min..=max` to ip_local_reserved_ports, so the node's own
/// connections never pick a port IPVS hands out as a SNAT source.
pub fn reserve_ports(min: u16, max: u16) -> Result<(), HostError> {
    let cur = read_sysctl(RESERVED_PORTS)?;
    let mut ports = parse_port_list(&cur).ok_or_else(|| HostError::Parse {
        path: sysctl_path(RESERVED_PORTS),
        text: cur.clone(),
    })?;
    ports.insert((min, max));
    write_sysctl(RESERVED_PORTS, &format_port_list(&ports))
}

/// Takes `min..=max` (as [`reserve_ports`] added it) out again.
pub fn unreserve_ports(min: u16, max: u16) -> Result<(), HostError> {
    let cur = read_sysctl(RESERVED_PORTS)?;
    let mut ports = parse_port_list(&cur).ok_or_else(|| HostError::Parse {
        path: sysctl_path(RESERVED_PORTS),
        text: cur.clone(),
    })?;
    if ports.remove(&(min, max)) {
        write_sysctl(RESERVED_PORTS, &format_port_list(&ports))?;
    }
    Ok(())
}

/// "8080,61000-65000" → {(8080,8080), (61000,65000)}; empty → {}.
fn parse_port_list(text: &str) -> Option<BTreeSet<(u16, u16)>> {
    let mut out = BTreeSet::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
        if a > b {
            return None;
        }
        out.insert((a, b));
    }
    Some(out)
}

fn format_port_list(ports: &BTreeSet<(u16, u16)>) -> String {
    let parts: Vec<String> = ports
        .iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect();
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_layer_of_a_device_of_this_namespace() {
        // lo is in every namespace: ARPHRD_LOOPBACK, which gets no programs
        assert!(matches!(
            link_layer("lo"),
            Err(HostError::LinkLayer { ref kind, .. }) if kind == "772"
        ));
        assert!(matches!(
            link_layer("ipvsbpf-none0"),
            Err(HostError::NoDevice(_))
        ));
        assert!(matches!(
            link_layer("a-name-longer-than-ifnamsiz"),
            Err(HostError::NoDevice(_))
        ));
    }

    #[test]
    fn link_layer_by_arphrd_type() {
        // veth/virtio, WireGuard/TUN, IPIP, ip6tnl, SIT
        assert_eq!(link_layer_of(1), Some(LinkLayer::Ethernet));
        for l3 in [65534, 768, 769, 776] {
            assert_eq!(link_layer_of(l3), Some(LinkLayer::L3), "{l3}");
        }
        // loopback (an Ethernet-like header, never ours), GRE, InfiniBand,
        // PPP, IEEE 802.11 with radiotap
        for other in [772, 778, 32, 512, 803] {
            assert_eq!(link_layer_of(other), None, "{other}");
        }
    }

    fn defaults(routes: Vec<Route>) -> Vec<String> {
        pick_devices(routes.into_iter(), |r| r.net.prefix_len == 0)
    }

    #[test]
    fn routes_inside_the_cluster_cidr() {
        let v4 =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                  eth0\t00000000\t640200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                  veth-a\t020112C6\t00000000\t0005\t0\t0\t0\tFFFFFFFF\t0\t0\t0\n\
                  eth0\t000212C6\t020200C0\t0003\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                  cni0\t000012C6\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n\
                  down0\t000312C6\t00000000\t0000\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                  eth1\t000013C6\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n\
                  eth2\t000000C6\t00000000\t0001\t0\t0\t0\t000000FF\t0\t0\t0\n";
        let r = parse_routes_v4(v4);
        assert_eq!(
            r[1],
            Route {
                net: "198.18.1.2/32".parse().unwrap(),
                dev: "veth-a".into()
            }
        );
        assert_eq!(r.len(), 6, "the route that is down is left out");
        let cluster = ["198.18.0.0/16".parse().unwrap()];
        // not the default route, not 198.19.0.0/16; 198.0.0.0/8 holds it
        assert_eq!(
            pick_devices(r.into_iter(), |r| inside(r, &cluster)),
            ["veth-a", "eth0", "cni0", "eth2"]
        );

        let z = "00000000000000000000000000000000";
        let v6 = format!(
            "20010db8000100010000000000000002 80 {z} 00 {z} 00000400 00000001 00000000 00000001   veth-a\n\
             20010db8000100020000000000000000 40 {z} 00 20010db8000000000000000000000002 00000400 00000001 00000000 00000003     eth0\n\
             20010db8000100030000000000000000 40 {z} 00 {z} 00000400 00000001 00000000 00200200     eth0\n\
             20010db8000000000000000000000000 40 {z} 00 {z} 00000100 00000001 00000000 00000001     eth0\n"
        );
        let r = parse_routes_v6(&v6);
        assert_eq!(r.len(), 3, "the reject route is left out");
        let cluster = ["2001:db8:1::/48".parse().unwrap()];
        assert_eq!(
            pick_devices(r.into_iter(), |r| inside(r, &cluster)),
            ["veth-a", "eth0"]
        );
    }

    #[test]
    fn v4_default_routes() {
        let t =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                 eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                 eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                 eth1\t00000000\t010200C0\t0002\t0\t0\t0\t00000000\t0\t0\t0\n\
                 bond0\t00000000\t010300C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n";
        assert_eq!(defaults(parse_routes_v4(t)), ["eth0", "bond0"]);
        assert!(parse_routes_v4("Iface\n").is_empty());
    }

    #[test]
    fn v6_default_routes_skip_reject_and_lo() {
        let z = "00000000000000000000000000000000";
        let t = format!(
            "fd000000000000000000000000000000 40 {z} 00 {z} 00000100 00000001 00000000 00000001     eth0\n\
             {z} 00 {z} 00 fd000000000000000000000000000001 00000400 00000003 00000000 00000003     eth0\n\
             {z} 00 {z} 00 {z} ffffffff 00000001 00000000 00200200       lo\n\
             {z} 00 {z} 00 {z} 00000400 00000001 00000000 00000003     eth2\n"
        );
        assert_eq!(defaults(parse_routes_v6(&t)), ["eth0", "eth2"]);
    }

    #[test]
    fn reserved_port_lists() {
        let cases: &[(&str, Option<&str>)] = &[
            ("", Some("")),
            ("8080", Some("8080")),
            ("61000-65000,8080", Some("8080,61000-65000")),
            ("x", None),
            ("9-1", None),
            ("1-70000", None),
        ];
        for (input, want) in cases {
            let got = parse_port_list(input).map(|p| format_port_list(&p));
            assert_eq!(got.as_deref(), *want, "{input:?}");
        }
        let mut p = parse_port_list("8080").expect("parse");
        p.insert((61000, 65000));
        p.insert((61000, 65000));
        assert_eq!(format_port_list(&p), "8080,61000-65000");
    }

    #[test]
    fn nodeport_addresses_exclude_loopback_and_link_local() {
        for (a, want) in [
            ("192.0.2.1", true),
            ("127.0.0.1", false),
            ("169.254.1.1", false),
            ("2001:db8::1", true),
            ("::1", false),
            ("fe80::1", false),
        ] {
            let ip: IpAddr = a.parse().expect("addr");
            assert_eq!(nodeport_capable(&ip), want, "{a}");
        }
    }
}
