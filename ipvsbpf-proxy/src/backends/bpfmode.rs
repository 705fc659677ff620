//! The `ipvs-bpf` mode's node plumbing: check the kernel has the series,
//! load the SNAT programs with their maps pinned (re-adopted after a
//! restart), attach them to the uplinks, hand the session map and the SNAT
//! configuration to IPVS, and only then turn `net.ipv4.vs.bpf_mode` on.
//! The order matters: IPVS must never create a SNAT session whose packets
//! leave before a program rewrites them, nor go on with another SNAT
//! configuration once programs loaded with this one are on (they skip
//! replies addressed elsewhere): an IPVS attachment that is not ours is
//! dropped before the programs go on.
//!
//! A SNAT connection may also leave by a device other than the uplinks:
//! the pod's own device when IPVS picks a local endpoint (and for hairpin,
//! where the client is the endpoint), a CNI's bridge, an overlay's tunnel,
//! a second uplink towards other nodes' pods. Before each sync programs
//! IPVS, [`BpfMode::follow_cluster_devices`] attaches the programs to
//! every device that routes part of the cluster CIDR, found from the
//! routing table, not from a CNI's naming. Devices without a link-layer
//! header (IPIP, WireGuard) get the programs' L3 pair; those that cannot
//! carry either pair (GRE, InfiniBand, IPsec vti/xfrm) are named once in
//! the log.

use std::collections::{BTreeMap, BTreeSet};
use std::mem::MaybeUninit;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use ipvs_netlink::{BpfAttach, BpfStatus, ErrorKind, Ipvs, LocalNet, Snat};
use libbpf_rs::{MapCore, OpenObject};
use tracing::{info, warn};

use crate::backends::datapath::{self, Datapath, Direction, LinkLayer, Options, Reason};
use crate::backends::hostinfo::{self, HostError};
use crate::model::desired::Cidr;

/// The sysctl the kernel series adds; its presence is the feature test.
pub const BPF_MODE_SYSCTL: &str = "net.ipv4.vs.bpf_mode";

#[derive(Debug, thiserror::Error)]
pub enum BpfModeError {
    #[error(
        "this kernel's IPVS has no {BPF_MODE_SYSCTL} or no IPVS_CMD_GET_BPF: the ipvs-bpf \
         kernel series (kernel-patches/) is not applied or ip_vs is not loaded; run with \
         --proxy-mode=ipvs or --fallback-to-ipvs"
    )]
    Unsupported,
    #[error("no uplink: no default route, and none given with --uplink")]
    NoUplink,
    #[error("uplink {0} has no address to use as the SNAT source")]
    NoSnatAddress(String),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Datapath(#[from] datapath::Error),
    #[error("IPVS: {0}")]
    Ipvs(#[from] ipvs_netlink::Error),
    #[error("creating {path}: {source}")]
    PinDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The Node label that gates the proxy's DaemonSet: [`KernelSupport`]'s
/// value, set by `--label-node` (the node labeller DaemonSet).
pub const NODE_LABEL: &str = "ipvs-bpf.io/kernel";

/// Whether this node's kernel has the series, as [`probe_kernel`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelSupport {
    Patched,
    /// It lacks the series, and why: no IPVS at all, no sysctl, or IPVS
    /// does not know `IPVS_CMD_GET_BPF`.
    Unpatched(String),
    /// The probe itself failed (no `CAP_NET_ADMIN`, a socket error): no
    /// finding, nothing to label.
    Unknown(String),
}

impl KernelSupport {
    /// The value of [`NODE_LABEL`] that says so; `None` without a finding.
    pub fn label_value(&self) -> Option<&'static str> {
        match self {
            KernelSupport::Patched => Some("patched"),
            KernelSupport::Unpatched(_) => Some("unpatched"),
            KernelSupport::Unknown(_) => None,
        }
    }
}

impl std::fmt::Display for KernelSupport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KernelSupport::Patched => write!(
                f,
                "patched: IPVS has {BPF_MODE_SYSCTL} and answers IPVS_CMD_GET_BPF"
            ),
            KernelSupport::Unpatched(why) => write!(f, "unpatched: {why}"),
            KernelSupport::Unknown(why) => write!(f, "unknown: {why}"),
        }
    }
}

/// The check [`BpfMode::setup`] makes, without changing anything on the
/// node: connecting to IPVS's generic netlink family (which loads ip_vs
/// when it is not), then [`BpfMode::kernel_supported`]'s two tests. Only
/// answers that say what the kernel is count as a finding; a failure of
/// the probe itself is [`KernelSupport::Unknown`].
pub fn probe_kernel() -> KernelSupport {
    match Ipvs::connect() {
        Err(ipvs_netlink::Error::FamilyNotFound) => KernelSupport::Unpatched(
            "no IPVS: its generic netlink family is not registered and ip_vs did not load".into(),
        ),
        Err(e) => KernelSupport::Unknown(format!("connecting to IPVS: {e}")),
        Ok(mut ipvs) => match lacks(&mut ipvs) {
            None => KernelSupport::Patched,
            Some(Lack::Sysctl) => KernelSupport::Unpatched(format!(
                "ip_vs has no {BPF_MODE_SYSCTL} (the ipvs-bpf series is not applied)"
            )),
            Some(Lack::Series(why)) => KernelSupport::Unpatched(why),
            Some(Lack::Probe(why)) => KernelSupport::Unknown(why),
        },
    }
}

/// What [`lacks`] found missing.
enum Lack {
    /// The series' sysctl.
    Sysctl,
    /// The series' netlink command: the kernel says it has none.
    Series(String),
    /// An answer: the command failed for another reason.
    Probe(String),
}

/// What the connected IPVS lacks of the series, if anything.
fn lacks(ipvs: &mut Ipvs) -> Option<Lack> {
    if !hostinfo::sysctl_exists(BPF_MODE_SYSCTL) {
        return Some(Lack::Sysctl);
    }
    match ipvs.bpf() {
        Ok(_) => None,
        // What genetlink answers a command the family does not have.
        Err(e)
            if matches!(
                e.kind(),
                Some(ErrorKind::NotSupported | ErrorKind::InvalidArgument)
            ) =>
        {
            Some(Lack::Series(format!(
                "{BPF_MODE_SYSCTL} exists but IPVS does not know IPVS_CMD_GET_BPF: {e}"
            )))
        }
        Err(e) => Some(Lack::Probe(format!(
            "{BPF_MODE_SYSCTL} exists but IPVS_CMD_GET_BPF failed: {e}"
        ))),
    }
}

/// What the mode needs from the command line.
#[derive(Clone, Debug)]
pub struct BpfModeConfig {
    /// bpffs directory for the maps (`--bpf-pin-path`).
    pub pin_dir: PathBuf,
    /// `--uplink`; empty = every device with a default route.
    pub uplinks: Vec<String>,
    /// `--cluster-cidr`: the devices that route it carry the programs too
    /// ([`BpfMode::follow_cluster_devices`]); empty = only the uplinks.
    pub cluster: Vec<Cidr>,
    /// `--snat-port-range`, already checked against the ephemeral range
    /// (`cli::check_snat_range_against`).
    pub port_min: u16,
    pub port_max: u16,
    pub options: Options,
}

/// The loaded and attached datapath.
pub struct BpfMode {
    dp: Datapath<'static>,
    uplinks: Vec<(String, i32, LinkLayer)>,
    snat: Snat,
    /// Other devices that carry the programs, by ifindex, with the name
    /// they had when attached.
    followed: BTreeMap<i32, String>,
    /// Devices (name, ifindex) that route cluster addresses but could not
    /// take the programs at the last sync, already named in the log.
    refused: BTreeSet<(String, i32)>,
    /// Followed devices missing from the last read of the routes.
    absent: BTreeSet<i32>,
}

impl BpfMode {
    /// Whether the running kernel has the series (IPVS must be loaded:
    /// connecting the netlink client autoloads it): the sysctl exists and
    /// IPVS answers `IPVS_CMD_GET_BPF`. IPVS accepts service flags it does
    /// not know without a word, so the command, which comes with
    /// `IP_VS_SVC_F_BPF_SNAT` in the same series, is what tells that the
    /// SNAT flag will be honoured, not just stored.
    pub fn kernel_supported(ipvs: &mut Ipvs) -> bool {
        match lacks(ipvs) {
            None => true,
            // (the caller says what is missing)
            Some(Lack::Sysctl) => false,
            Some(Lack::Series(why) | Lack::Probe(why)) => {
                warn!("{why}");
                false
            }
        }
    }

    /// Brings the mode up, adopting what a previous run left: the pinned
    /// maps, IPVS's attachment of the same map, our tc filters.
    pub fn setup(cfg: &BpfModeConfig, ipvs: &mut Ipvs) -> Result<BpfMode, BpfModeError> {
        if !Self::kernel_supported(ipvs) {
            return Err(BpfModeError::Unsupported);
        }
        let names = if cfg.uplinks.is_empty() {
            hostinfo::default_route_devices()?
        } else {
            cfg.uplinks.clone()
        };
        if names.is_empty() {
            return Err(BpfModeError::NoUplink);
        }
        let mut uplinks = Vec::new();
        for name in &names {
            let link = hostinfo::link_layer(name)?;
            uplinks.push((name.clone(), hostinfo::ifindex(name)?, link));
        }
        let snat = snat_for(&names[0], cfg)?;

        std::fs::create_dir_all(&cfg.pin_dir).map_err(|source| BpfModeError::PinDir {
            path: cfg.pin_dir.clone(),
            source,
        })?;
        // The ingress program skips what cannot be a SNAT session's reply
        // only while IPVS holds this same SNAT configuration: both are set
        // below, from one `snat`, and a restart with another one loads
        // both again.
        let options = Options {
            snat_dst: Some(snat),
            ..cfg.options
        };
        for p in datapath::drop_stale_pins(&cfg.pin_dir, &options)? {
            warn!(
                map = p.name,
                old_entries = p.old_entries,
                new_entries = p.new_entries,
                "a pinned map has another size (an upgrade or another setting): \
                 replacing it; its contents start again"
            );
        }
        let aside = datapath::set_aside_if_resized(&cfg.pin_dir, cfg.options.session_entries)?;
        if let Some(a) = &aside {
            warn!(
                old_entries = a.old_entries,
                new_entries = cfg.options.session_entries,
                "the pinned session map has another size (--bpf-session-map-entries \
                 changed): replacing it; open SNAT connections through IPVS are cut"
            );
        }
        // One object per process, alive until exit: libbpf's storage is
        // leaked on purpose so the datapath can be 'static.
        let storage: &'static mut MaybeUninit<OpenObject> =
            Box::leak(Box::new(MaybeUninit::uninit()));
        let dp = match Datapath::load_pinned(storage, &options, &cfg.pin_dir) {
            Ok(dp) => dp,
            Err(e) => {
                // The old map keeps serving (IPVS and tc hold it); its pin
                // goes back so the next start adopts it.
                if let Some(a) = aside {
                    if let Err(re) = a.restore() {
                        warn!(error = %re, "putting the old session map's pin back");
                    }
                }
                return Err(e.into());
            }
        };
        if let Some(a) = aside {
            if let Err(e) = a.drop_old() {
                warn!(error = %e, "removing the old session map's pin");
            }
        }
        // IPVS lets go of another map or SNAT configuration before the
        // new programs go on: they skip, at ingress, what is not addressed
        // to this configuration's SNAT address and ports, so the sessions
        // IPVS would go on making with the old one would lose their
        // replies, for good if this start failed half way. Without a map,
        // IPVS refuses SNAT connections (clients retry) until it gets ours.
        let map_id = dp.skel().maps.ipvs_sessions.info().map(|i| i.info.id).ok();
        let local_nets = local_nets(&cfg.cluster);
        let adopted = match ipvs.bpf()? {
            Some(BpfStatus {
                map_id: id,
                snat: Some(s),
                local_nets: l,
                ..
            }) if Some(id) == map_id && s == snat && l == local_nets => {
                info!(map_id = id, "IPVS already holds our session map; adopted");
                true
            }
            Some(old) => {
                warn!(
                    map_id = old.map_id,
                    "IPVS holds another session map or SNAT configuration; \
                     re-attaching (its SNAT connections expire)"
                );
                ipvs.detach_bpf()?;
                false
            }
            None => false,
        };
        for (name, idx, link) in &uplinks {
            // Attachments replace our own filter and are left in place
            // when the proxy exits, so traffic survives a restart.
            let _filters = dp.attach(*idx, *link)?;
            info!(uplink = %name, ifindex = idx, "tc programs attached");
        }
        let mut bm = BpfMode {
            dp,
            uplinks,
            snat,
            followed: BTreeMap::new(),
            refused: BTreeSet::new(),
            absent: BTreeSet::new(),
        };
        // Before IPVS gets the map: after a restart with a new map, the
        // programs on pods' devices must be the ones that read it.
        bm.follow_cluster_devices(&cfg.cluster, true)?;
        bm.detach_unfollowed(&cfg.cluster);
        hostinfo::reserve_ports(cfg.port_min, cfg.port_max)?;

        if !adopted {
            attach(ipvs, &bm.dp, snat, local_nets)?;
        }
        hostinfo::write_sysctl(BPF_MODE_SYSCTL, "1")?;
        info!(
            addr4 = ?snat.addr4, addr6 = ?snat.addr6, ports = %format!("{}-{}", snat.port_min, snat.port_max),
            "ipvs-bpf mode on"
        );
        Ok(bm)
    }

    /// Attaches the programs to every device, other than the
    /// uplinks, that routes part of `cluster` (the cluster CIDR), and
    /// detaches them from a device that no longer does in two reads in a
    /// row (one read of /proc/net/ipv6_route can miss routes while the
    /// table changes). A device gone since is forgotten (its filters went
    /// with it). `refresh` attaches again to devices already followed
    /// (the replace is idempotent), so filters someone removed come back
    /// at the next full sync.
    ///
    /// Called before each sync programs IPVS: a pod's route exists before
    /// its endpoint is published, so its device carries the programs
    /// before IPVS can schedule a SNAT connection to it. A device that
    /// cannot carry them (an unknown link layer, or the kernel refuses the filter)
    /// is named once in the log and tried again at the next sync; it
    /// never fails the sync, only an unreadable routing table does.
    pub fn follow_cluster_devices(
        &mut self,
        cluster: &[Cidr],
        refresh: bool,
    ) -> Result<(), BpfModeError> {
        if cluster.is_empty() {
            return Ok(());
        }
        let mut now = BTreeMap::new();
        let mut refused = BTreeSet::new();
        for name in hostinfo::devices_routing(cluster)? {
            if self.uplinks.iter().any(|(n, _, _)| *n == name) {
                continue;
            }
            // Gone since the routes were read: nothing to attach to.
            let Ok(idx) = hostinfo::ifindex(&name) else {
                continue;
            };
            let gone = || hostinfo::ifindex(&name).ok() != Some(idx);
            if !refresh && self.followed.get(&idx) == Some(&name) {
                now.insert(idx, name);
                continue;
            }
            let res = match hostinfo::link_layer(&name) {
                Ok(link) => self
                    .dp
                    .attach(idx, link)
                    .map(drop)
                    .map_err(BpfModeError::from),
                Err(e) => Err(e.into()),
            };
            match res {
                Ok(()) => {
                    if self.followed.get(&idx) != Some(&name) {
                        info!(device = %name, ifindex = idx, "tc programs attached (routes cluster addresses)");
                    }
                    now.insert(idx, name);
                }
                // A device deleted under us is not a failure.
                Err(_) if gone() => {}
                Err(e) => {
                    let key = (name, idx);
                    if !self.refused.contains(&key) {
                        warn!(device = %key.0, ifindex = idx, error = %e,
                              "this device routes part of the cluster CIDR but cannot carry the \
                               tc programs: SNAT connections leaving by it go out untranslated");
                    }
                    refused.insert(key);
                }
            }
        }
        let mut absent = BTreeSet::new();
        for (idx, name) in &self.followed {
            if now.contains_key(idx) || hostinfo::ifindex(name).ok() != Some(*idx) {
                continue;
            }
            if !self.absent.contains(idx) {
                absent.insert(*idx);
                now.insert(*idx, name.clone());
                continue;
            }
            match datapath::detach(*idx) {
                Ok(()) => info!(device = %name, "tc programs detached (no cluster route left)"),
                Err(e) => warn!(device = %name, error = %e, "detaching the tc programs"),
            }
        }
        self.followed = now;
        self.absent = absent;
        self.refused = refused;
        Ok(())
    }

    /// Removes our filters from every device this run does not cover: an
    /// uplink no longer named, a device that stopped routing the cluster
    /// CIDR while no proxy ran. The programs left there are an earlier
    /// run's, with its SNAT settings: their ingress would pass the
    /// replies of the new settings' sessions untranslated. As
    /// [`Self::follow_cluster_devices`] does, a device goes only when a
    /// second reading of the routes agrees (one can miss routes while the
    /// table changes); one whose attach failed just now keeps what it
    /// has. Whatever fails is logged and leaves what was there.
    fn detach_unfollowed(&self, cluster: &[Cidr]) {
        let routing = if cluster.is_empty() {
            Ok(Vec::new())
        } else {
            hostinfo::devices_routing(cluster)
        };
        let (names, routing) = match (hostinfo::all_devices(), routing) {
            (Ok(n), Ok(r)) => (n, r),
            (Err(e), _) | (_, Err(e)) => {
                warn!(error = %e, "reading devices and routes to remove an earlier run's tc programs");
                return;
            }
        };
        for name in names {
            let Ok(idx) = hostinfo::ifindex(&name) else {
                continue;
            };
            if self.uplinks.iter().any(|(_, i, _)| *i == idx)
                || self.followed.contains_key(&idx)
                || self.refused.iter().any(|(_, i)| *i == idx)
                || routing.contains(&name)
            {
                continue;
            }
            match datapath::attached(idx) {
                Ok(false) => {}
                Ok(true) => match datapath::detach(idx) {
                    Ok(()) => info!(device = %name, ifindex = idx,
                                    "an earlier run's tc programs detached (device not covered now)"),
                    Err(e) => {
                        warn!(device = %name, error = %e, "detaching an earlier run's tc programs")
                    }
                },
                Err(e) => warn!(device = %name, error = %e, "querying the tc filters"),
            }
        }
    }

    pub fn uplinks(&self) -> impl Iterator<Item = &str> {
        self.uplinks.iter().map(|(n, _, _)| n.as_str())
    }

    pub fn snat(&self) -> Snat {
        self.snat
    }

    /// Capacity of the session map (two entries per connection).
    pub fn session_capacity(&self) -> u32 {
        self.dp.skel().maps.ipvs_sessions.max_entries()
    }

    /// The programs' counters, by direction and reason.
    pub fn counters(&self) -> Result<Vec<(Direction, Reason, datapath::Counter)>, BpfModeError> {
        Ok(self.dp.counters()?)
    }

    /// Undoes everything `setup` (of this or an earlier run) did: bpf_mode
    /// off first, so IPVS stops creating sessions that need the map; then
    /// the map detached, the filters removed, the pins and the reserved
    /// ports released. Each step is tried whatever the others give;
    /// pieces already gone are fine.
    pub fn cleanup(
        ipvs: Option<&mut Ipvs>,
        pin_dir: &Path,
        uplinks: &[String],
        ports: (u16, u16),
    ) -> Vec<String> {
        let mut errors = Vec::new();
        if hostinfo::sysctl_exists(BPF_MODE_SYSCTL) {
            if let Err(e) = hostinfo::write_sysctl(BPF_MODE_SYSCTL, "0") {
                errors.push(e.to_string());
            }
        }
        if let Some(ipvs) = ipvs {
            match ipvs.bpf() {
                Ok(Some(_)) => {
                    if let Err(e) = ipvs.detach_bpf() {
                        errors.push(format!("detaching the session map from IPVS: {e}"));
                    }
                }
                Ok(None) => {}
                // an unpatched kernel answers GET_BPF with EINVAL/EOPNOTSUPP
                Err(e) => info!("IPVS has no BPF attachment to remove ({e})"),
            }
        }
        // Every device: besides the uplinks, the programs followed the
        // cluster CIDR's routes (pod devices, bridges, tunnels). Only our
        // filter (priority and handle) is removed.
        let mut names = hostinfo::all_devices().unwrap_or_default();
        if names.is_empty() {
            names = if uplinks.is_empty() {
                hostinfo::default_route_devices().unwrap_or_default()
            } else {
                uplinks.to_vec()
            };
        }
        for name in names {
            if let Ok(idx) = hostinfo::ifindex(&name) {
                if let Err(e) = datapath::detach(idx) {
                    errors.push(format!("tc filters on {name}: {e}"));
                }
            }
        }
        if let Err(e) = datapath::unpin(pin_dir) {
            errors.push(format!("pins under {}: {e}", pin_dir.display()));
        }
        let _ = std::fs::remove_dir(pin_dir);
        if let Err(e) = hostinfo::unreserve_ports(ports.0, ports.1) {
            errors.push(e.to_string());
        }
        errors
    }
}

fn attach(
    ipvs: &mut Ipvs,
    dp: &Datapath<'_>,
    snat: Snat,
    local_nets: Vec<LocalNet>,
) -> Result<(), BpfModeError> {
    // A BorrowedFd is never negative; were it so, the kernel's EBADF
    // would say it.
    let map_fd = u32::try_from(dp.sessions_fd().as_raw_fd()).unwrap_or(u32::MAX);
    let nets: Vec<String> = local_nets.iter().map(LocalNet::to_string).collect();
    ipvs.attach_bpf(&BpfAttach {
        map_fd,
        snat: Some(snat),
        local_nets,
    })?;
    info!(local_nets = %nets.join(","), "session map handed to IPVS");
    Ok(())
}

/// The cluster CIDR as IPVS's local nets: clients inside them reach a
/// ClusterIP without SNAT, everyone else (an off-cluster host routed to
/// the service range through this node) with it, as kube-proxy's
/// `--cluster-cidr` masquerade rule does. [`Cidr`] is already masked; the
/// CLI takes at most one prefix per family, within IPVS's limit.
fn local_nets(cluster: &[Cidr]) -> Vec<LocalNet> {
    cluster
        .iter()
        .map(|c| LocalNet {
            addr: c.addr,
            prefix_len: c.prefix_len,
        })
        .collect()
}

/// SNAT sources: the uplink's first global IPv4 and IPv6 addresses.
fn snat_for(dev: &str, cfg: &BpfModeConfig) -> Result<Snat, BpfModeError> {
    let addrs = hostinfo::local_addresses()?;
    let mut snat = Snat {
        addr4: None,
        addr6: None,
        port_min: cfg.port_min,
        port_max: cfg.port_max,
    };
    for a in addrs.iter().filter(|a| a.dev == dev) {
        if !hostinfo::nodeport_capable(&a.addr) {
            continue;
        }
        match a.addr {
            IpAddr::V4(v4) if snat.addr4.is_none() => snat.addr4 = Some(v4),
            IpAddr::V6(v6) if snat.addr6.is_none() => snat.addr6 = Some(v6),
            _ => {}
        }
    }
    if snat.addr4.is_none() && snat.addr6.is_none() {
        return Err(BpfModeError::NoSnatAddress(dev.to_string()));
    }
    Ok(snat)
}
