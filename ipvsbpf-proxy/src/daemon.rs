//! The daemon: sets the node up for the chosen mode, starts a source, the
//! HTTP servers and the sync loop, and tears everything down with
//! `--cleanup`. The pieces it wires are tested on their own; this file
//! holds only the order of things.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use ipvs_netlink::{Ipvs, ServiceKey, Timeouts};
use prometheus_client::registry::Registry;
use tokio::time::sleep_until;
use tracing::{debug, error, info, warn};

use crate::backends::bpfmode::{BpfMode, BpfModeConfig};
use crate::backends::conntrack::{self, ConntrackConfig};
use crate::backends::datapath::{self, Options};
use crate::backends::hostinfo;
use crate::backends::ipvsmode::{self, ExecRunner, IpvsMode, IpvsModeConfig, ProcSysctl};
use crate::backends::lbfirewall::LbFirewall;
use crate::cli::{self, Cidr, Config, NodePortAddresses, ProxyMode, SourceKind};
use crate::model::inventory::{Shared, SharedInventory};
use crate::model::ModelConfig;
use crate::reconcile::syncer::Syncer;
use crate::reconcile::{udp_frontend, ReconcileOptions, Reconciler};
use crate::serving;
use crate::serving::events::NodeEvents;
use crate::serving::http::{self, HealthCheckServers, ProxyHealth};
use crate::serving::metrics::{DatapathSnapshot, DatapathStats, Metrics, SyncKind};
use crate::sources::{self, ObjectKind, SourceStats};

/// The dummy device of `ipvs` mode; its addresses are not NodePort ones.
const DUMMY: &str = "kube-ipvs0";
/// How often the file source looks for changed manifests.
const FILE_POLL: Duration = Duration::from_millis(250);
/// Trigger times kept for the network programming latency while syncs
/// fail; beyond this the oldest go unmeasured.
const MAX_PENDING_TRIGGERS: usize = 10_000;
/// First retry after a failed sync; doubles up to the sync period.
const RETRY_MIN: Duration = Duration::from_millis(500);

type RealIpvsMode = IpvsMode<ExecRunner, ProcSysctl, ipvsmode::link::Rtnl>;

/// The node plumbing of the mode that runs.
enum Plumbing {
    /// The datapath, and the source-range filter IPVS cannot do there.
    Bpf(Box<BpfMode>, LbFirewall<ExecRunner>),
    Ipvs(Box<RealIpvsMode>),
}

pub async fn run(cfg: Config) -> Result<()> {
    for w in &cfg.warnings {
        warn!("{w}");
    }
    if cfg.cleanup {
        return cleanup(&cfg);
    }
    if cfg.label_node {
        return crate::nodelabel::run(&cfg).await;
    }
    let node_name = node_name(&cfg)?;
    // The API client, made once: the kube source watches with it and the
    // Node's Events go through it (none with the file source).
    let client = match cfg.source {
        SourceKind::Kube => Some(
            sources::kube::client(cfg.kubeconfig.clone(), cfg.master.clone())
                .await
                .context("Kubernetes client")?,
        ),
        SourceKind::File => None,
    };
    let events = client
        .clone()
        .map_or_else(NodeEvents::disabled, |c| NodeEvents::start(c, &node_name));
    let mut ipvs =
        Ipvs::connect().context("connecting to IPVS over generic netlink (is ip_vs loaded?)")?;

    let mut mode = cfg.mode;
    if mode == ProxyMode::IpvsBpf && !BpfMode::kernel_supported(&mut ipvs) {
        if cfg.fallback_to_ipvs {
            warn!("this kernel lacks the ipvs-bpf series (net.ipv4.vs.bpf_mode, IPVS_CMD_GET_BPF); falling back to --proxy-mode=ipvs as --fallback-to-ipvs asks");
            events.warning(
                "FallbackToIPVS",
                "StartProxy",
                "this node's kernel lacks the ipvs-bpf series (net.ipv4.vs.bpf_mode, \
                 IPVS_CMD_GET_BPF): running --proxy-mode=ipvs, as --fallback-to-ipvs asks"
                    .into(),
            );
            mode = ProxyMode::Ipvs;
        } else {
            bail!(crate::backends::bpfmode::BpfModeError::Unsupported);
        }
    }
    apply_conntrack(&cfg.conntrack)?;
    let plumbing = match mode {
        ProxyMode::IpvsBpf => {
            cli::check_snat_range_against(
                cfg.snat_port_range,
                &hostinfo::sysctl_path("net.ipv4.ip_local_port_range"),
            )?;
            if ipvs_mode_leftovers() {
                warn!("kube-ipvs0 from ipvs mode is present; run --cleanup when switching modes");
            }
            let bm = BpfMode::setup(
                &BpfModeConfig {
                    pin_dir: cfg.bpf_pin_path.clone(),
                    uplinks: cfg.uplinks.clone(),
                    cluster: cfg.cluster_cidrs.clone(),
                    port_min: cfg.snat_port_range.min,
                    port_max: cfg.snat_port_range.max,
                    options: Options {
                        session_entries: cfg.bpf_session_map_entries,
                        ..Options::default()
                    },
                },
                &mut ipvs,
            )
            .context("setting up ipvs-bpf mode")?;
            bpf_mode_sysctls(&cfg)?;
            Plumbing::Bpf(Box::new(bm), LbFirewall::new(ExecRunner))
        }
        ProxyMode::Ipvs => {
            let mut m = IpvsMode::new(
                ExecRunner,
                ProcSysctl::default(),
                ipvsmode::link::Rtnl::connect().context("rtnetlink")?,
                ipvs_mode_config(&cfg),
            )
            .context("ipvs mode configuration")?;
            m.setup().context("setting up ipvs mode")?;
            Plumbing::Ipvs(Box::new(m))
        }
    };
    info!(mode = ?mode, node = %node_name, "node set up");
    events.normal(
        "Starting",
        "StartProxy",
        format!("Starting ipvsbpf-proxy ({mode} mode)."),
    );
    if let Plumbing::Bpf(bm, _) = &plumbing {
        watch_bpf_trouble(
            events.clone(),
            (cfg.snat_port_range.min, cfg.snat_port_range.max),
            bm.session_capacity(),
        );
    }
    let t = Timeouts {
        tcp: cfg.ipvs_tcp_timeout.as_secs() as u32,
        tcp_fin: cfg.ipvs_tcpfin_timeout.as_secs() as u32,
        udp: cfg.ipvs_udp_timeout.as_secs() as u32,
    };
    if t != Timeouts::default() {
        ipvs.set_timeouts(&t).context("setting IPVS timeouts")?;
    }

    // Metrics and health
    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    let health = Arc::new(ProxyHealth::new(cfg.health_timeout()).with_metrics(metrics.clone()));
    if let Plumbing::Bpf(bm, _) = &plumbing {
        metrics.set_datapath_stats(Arc::new(BpfStatsSource::new(
            cfg.bpf_pin_path.clone(),
            u64::from(bm.session_capacity()),
        )?));
    }
    let registry = Arc::new(registry);
    if let Some(addr) = cfg.healthz_bind_address {
        let l = http::bind(addr).await.context("healthz server")?;
        tokio::spawn(http::serve(
            l,
            http::health_router(health.clone()),
            shutdown_signal(),
        ));
        info!(%addr, "healthz serving");
    }
    if let Some(addr) = cfg.metrics_bind_address {
        let l = http::bind(addr).await.context("metrics server")?;
        tokio::spawn(http::serve(
            l,
            http::metrics_router(registry.clone()),
            shutdown_signal(),
        ));
        info!(%addr, "metrics serving");
    }
    let hc_bind = cfg
        .healthz_bind_address
        .map(|a| a.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let hc = HealthCheckServers::new(hc_bind, health.clone());

    // Sources
    let inv = SharedInventory::new_shared();
    let stats = Arc::new(SourceStats::default());
    let source = start_source(&cfg, client, &node_name, inv.clone(), stats.clone())?;
    if matches!(plumbing, Plumbing::Bpf(..)) {
        if cfg.cluster_cidrs.is_empty() {
            warn!(
                "no --cluster-cidr: only the uplinks carry the tc programs, so SNAT connections \
                 to local endpoints (and hairpin) go out untranslated"
            );
        } else {
            // A route change (a pod's device made or moved, an overlay or a
            // second uplink brought up) makes a sync, whose first step moves
            // the programs; IPVS has nothing to change then.
            let inv = inv.clone();
            if let Err(e) = hostinfo::watch_routes(move || inv.changed.notify_one()) {
                warn!(error = %e, "cannot watch route changes: devices are followed at full syncs only");
            }
        }
    }

    // Reconciler: adopt what a previous run programmed, flush nothing
    let mut reconciler = Reconciler::new(
        Ipvs::connect().context("second IPVS socket for the reconciler")?,
        ReconcileOptions {
            exclude_cidrs: cidrs(&cfg.ipvs_exclude_cidrs),
            drain_timeout: cfg.drain_timeout,
        },
    );
    let adopted = tokio::task::block_in_place(|| reconciler.adopt())?;
    info!(
        virtual_servers = adopted.virtual_servers,
        destinations = adopted.destinations,
        "adopted IPVS state"
    );
    let model_cfg = model_config(&cfg, &node_name, mode, None)?;
    let mut syncer = Syncer::new(model_cfg, reconciler);

    let res = sync_loop(
        &cfg,
        &node_name,
        mode,
        &inv,
        &stats,
        &mut syncer,
        plumbing,
        &metrics,
        &health,
        &hc,
        source,
    )
    .await;
    hc.close_all().await;
    res
}

/// The loop: wait for a change (or the periodic full sync), at most one
/// sync per `--ipvs-min-sync-period`, recompute what changed, program it.
#[allow(clippy::too_many_arguments)]
async fn sync_loop(
    cfg: &Config,
    node_name: &str,
    mode: ProxyMode,
    inv: &Shared,
    stats: &SourceStats,
    syncer: &mut Syncer<Ipvs>,
    mut plumbing: Plumbing,
    metrics: &Metrics,
    health: &ProxyHealth,
    hc: &HealthCheckServers,
    mut source: tokio::task::JoinHandle<Result<(), sources::SourceError>>,
) -> Result<()> {
    let mut last_sync: Option<Instant> = None;
    let mut next_full = Instant::now();
    let mut retry: Option<(Instant, Duration)> = None;
    let mut skipped_seen = [0u64; 3];
    let mut relists_seen = [0u64; 3];
    let mut waited_for_sync = false;
    let mut synced_once = false;
    // EndpointSlice trigger times not yet programmed
    let mut triggers: Vec<SystemTime> = Vec::new();
    // The last sync's filter or mode rules failed to apply
    let mut rules_failed = false;
    // UDP virtual servers whose conntrack entries still need a sweep.
    let mut udp_pending: BTreeSet<SocketAddr> = BTreeSet::new();
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        // Before the source's first complete list only a change can help
        let wake = if synced_once {
            retry.map_or(next_full, |(at, _)| at.min(next_full))
        } else {
            Instant::now() + cfg.sync_period
        };
        tokio::select! {
            _ = inv.changed.notified() => {
                health.queued(SystemTime::now());
                let (services, slices) = inv.lock().pending();
                metrics.set_pending(services, slices);
            }
            _ = sleep_until(wake.into()) => {}
            _ = &mut shutdown => {
                info!("shutting down; IPVS, the BPF datapath and the rules stay for the next run");
                return Ok(());
            }
            r = &mut source => {
                match r {
                    Ok(Ok(())) => bail!("the source stopped"),
                    Ok(Err(e)) => return Err(e).context("source"),
                    Err(e) => bail!("the source task failed: {e}"),
                }
            }
        }
        // Bound the sync rate: changes arriving meanwhile are batched
        if let Some(last) = last_sync {
            let earliest = last + cfg.min_sync_period;
            if Instant::now() < earliest {
                tokio::time::sleep_until(earliest.into()).await;
            }
        }
        let now = Instant::now();
        let full = now >= next_full;
        let retrying = retry.is_some_and(|(at, _)| now >= at);

        // Node addresses move (DHCP, a new interface): NodePorts follow
        let node_obj = inv.lock().node().cloned();
        if let Some(n) = &node_obj {
            health.set_node_eligible(http::node_eligible(n));
        }
        let model_cfg = model_config(cfg, node_name, mode, node_obj.as_deref())?;
        let config_changed = syncer.set_config(model_cfg);

        if !inv.lock().synced() {
            if !waited_for_sync {
                info!("waiting for the source's first complete list");
                waited_for_sync = true;
            }
            continue;
        }
        synced_once = true;
        // Timed from here: recomputing the model is part of a sync's cost
        let kind = if full {
            SyncKind::Full
        } else {
            SyncKind::Partial
        };
        let mut timer = metrics.sync_timer(kind);
        let (outcome, dirty_n, slice_changes) = {
            let mut guard = inv.lock();
            let mut dirty = guard.take_dirty();
            if full || config_changed {
                dirty.all = true;
            }
            triggers.extend(
                std::mem::take(&mut dirty.trigger_times)
                    .into_values()
                    .flatten(),
            );
            let n = dirty.services.len();
            let slices = dirty.slice_changes;
            (syncer.recompute(&guard, dirty), n, slices)
        };
        metrics.service_changes.inc_by(dirty_n as u64);
        metrics.endpoint_changes.inc_by(slice_changes);
        metrics.set_pending(0, 0);
        // Kept across failed syncs, not without bound
        if triggers.len() > MAX_PENDING_TRIGGERS {
            triggers.drain(..triggers.len() - MAX_PENDING_TRIGGERS);
        }

        // The node-wide rules follow any change, and are redone after a
        // failed write rather than left until the next change or full sync.
        // ipvs mode's ipsets hold endpoints too (KUBE-LOOP-BACK); in
        // ipvs-bpf mode an endpoint change leaves them alone: O(change).
        let changed = match &plumbing {
            Plumbing::Ipvs(_) => outcome.node_changed,
            Plumbing::Bpf(..) => outcome.frontends_changed,
        };
        let rules_due = full || changed || rules_failed;
        rules_failed = false;
        // The source-range filter goes in before IPVS opens a new load
        // balancer address, not after.
        let mut ok = true;
        if let (true, Plumbing::Bpf(_, fw)) = (rules_due, &mut plumbing) {
            if let Err(e) = tokio::task::block_in_place(|| fw.sync(syncer.state(), full)) {
                error!(error = %e, "loadBalancerSourceRanges filter");
                rules_failed = true;
                ok = false;
            }
        }

        // Every device a SNAT connection may leave by carries the
        // programs before IPVS can schedule to an endpoint behind it.
        if let Plumbing::Bpf(bm, _) = &mut plumbing {
            if let Err(e) =
                tokio::task::block_in_place(|| bm.follow_cluster_devices(&cfg.cluster_cidrs, full))
            {
                error!(error = %e, "attaching the tc programs to the cluster CIDR's devices");
                rules_failed = true;
                ok = false;
            }
        }

        let applying = Instant::now();
        let report = tokio::task::block_in_place(|| syncer.apply(full, now));
        let ipvs_ms = applying.elapsed().as_millis() as u64;
        ok &= report.failed.is_empty();
        for f in &report.failed {
            warn!(service = ?f.service, key = ?f.key, error = %f.error, "IPVS request failed; will retry");
        }
        for (&(op, ok), &n) in &report.by_op {
            metrics.ipvs_requests(op, ok, n);
        }
        if rules_due {
            if let Plumbing::Ipvs(m) = &mut plumbing {
                match tokio::task::block_in_place(|| m.sync(syncer.state())) {
                    Ok(r) => debug!(
                        addresses_added = r.addresses_added,
                        addresses_removed = r.addresses_removed,
                        addresses_ms = r.took.addresses.as_millis() as u64,
                        ipsets_ms = r.took.ipsets.as_millis() as u64,
                        iptables_ms = r.took.iptables.as_millis() as u64,
                        jumps_ms = r.took.jumps.as_millis() as u64,
                        "ipvs mode rules synced"
                    ),
                    Err(e) => {
                        error!(error = %e, "ipvs mode rules");
                        rules_failed = true;
                        ok = false;
                    }
                }
            }
            for e in hc.sync(&syncer.health_checks()).await {
                warn!(error = %e, "health-check node port; retried at the next sync");
                // e.g. the old process still holds the port in a rolling
                // update: an endpoint change alone would not retry it
                rules_failed = true;
            }
        }
        // ipvs mode: conntrack holds Service flows. After the rules are
        // in, sweep the UDP entries to the virtual servers this sync
        // changed; a sweep that fails is retried at the next sync.
        if let Plumbing::Ipvs(_) = &plumbing {
            udp_pending.extend(report.udp_touched.iter().copied());
            if !udp_pending.is_empty() {
                let frontends = udp_frontends(syncer.state(), &udp_pending);
                let swept = tokio::task::block_in_place(|| {
                    conntrack::flows::Ctnetlink::connect()
                        .and_then(|mut ct| conntrack::flows::clear(&mut ct, &frontends))
                });
                match swept {
                    Ok(s) => {
                        metrics.conntrack_deleted.inc_by(s.deleted as u64);
                        info!(
                            frontends = udp_pending.len(),
                            dumped = s.dumped,
                            stale = s.stale,
                            deleted = s.deleted,
                            "UDP conntrack sweep"
                        );
                        udp_pending.clear();
                    }
                    Err(e) => {
                        warn!(error = %e, "deleting stale UDP conntrack entries; retried at the next sync")
                    }
                }
            }
        }
        if full || outcome.recomputed >= TRIM_AFTER_RECOMPUTED {
            trim_heap();
        }
        let (vs, rs) = syncer.counts();
        metrics.virtual_servers.set(vs as i64);
        metrics.real_servers.set(rs as i64);
        for kind in ObjectKind::ALL {
            let i = kind.index();
            let n = stats.skipped(kind);
            if n > skipped_seen[i] {
                metrics.source_objects_skipped(kind.as_str(), n - skipped_seen[i]);
                skipped_seen[i] = n;
            }
            let n = stats.relisted(kind);
            if n > relists_seen[i] {
                metrics.source_relists(kind.as_str(), n - relists_seen[i]);
                relists_seen[i] = n;
            }
        }
        info!(
            full,
            recomputed = outcome.recomputed,
            requests = report.requests,
            ipvs_ms,
            failed = report.failed.len(),
            draining = report.draining,
            model_errors = outcome.model_errors.len(),
            relists = stats.relists(),
            "synced"
        );
        last_sync = Some(now);
        if full {
            next_full = now + cfg.sync_period;
        }
        if ok {
            metrics.network_programmed(triggers.drain(..), SystemTime::now());
            timer.succeeded();
            health.updated(SystemTime::now());
            retry = None;
        } else {
            let backoff = match retry {
                Some((_, b)) if retrying => (b * 2).min(cfg.sync_period),
                Some((_, b)) => b,
                None => RETRY_MIN,
            };
            retry = Some((now + backoff, backoff));
        }
        // Draining destinations are checked by the next syncs
        if report.draining > 0 && retry.is_none() {
            retry = Some((now + Duration::from_secs(5), RETRY_MIN));
        }
    }
}

/// A sync that recomputed at least this many Services (or read the whole
/// IPVS table) went through much of the heap: [`trim_heap`] after it.
const TRIM_AFTER_RECOMPUTED: usize = 1000;

/// Hands the heap's free pages back to the system. glibc keeps what a
/// large sync allocated and freed (a full read of the IPVS table, the
/// parsed manifests of a relist) in its arenas, where it counts as the
/// proxy's resident memory although the proxy no longer uses it (at
/// 10,000 Services a full sync's heap peaks at 1.35 times what stays
/// live). Costs milliseconds, so only after large syncs. Other C
/// libraries: nothing.
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory back to the kernel;
    // it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn start_source(
    cfg: &Config,
    client: Option<kube::Client>,
    node_name: &str,
    inv: Shared,
    stats: Arc<SourceStats>,
) -> Result<tokio::task::JoinHandle<Result<(), sources::SourceError>>> {
    let node = node_name.to_string();
    let proxy_name = cfg.service_proxy_name.clone();
    Ok(match cfg.source {
        SourceKind::File => {
            let dir = cfg
                .manifests
                .clone()
                .context("--source=file needs --manifests DIR")?;
            info!(dir = %dir.display(), "file source");
            tokio::spawn(async move {
                sources::file::run(dir, node, proxy_name, inv, stats, FILE_POLL).await;
                Ok(())
            })
        }
        SourceKind::Kube => {
            let client = client.context("--source=kube without a Kubernetes client")?;
            info!("kube source");
            tokio::spawn(sources::kube::run(
                client,
                node,
                proxy_name,
                inv,
                stats,
                sources::kube::WatchOptions::default(),
            ))
        }
    })
}

/// For each UDP virtual server of `pending`, the endpoints that may
/// answer it now: its destinations in the desired state (draining ones
/// too: their flows end on their own), or `None` if it is gone.
fn udp_frontends(
    state: &crate::model::desired::NodeState,
    pending: &BTreeSet<SocketAddr>,
) -> conntrack::flows::Frontends {
    let mut out: conntrack::flows::Frontends = pending.iter().map(|f| (*f, None)).collect();
    for vs in state.services.values().flat_map(|s| &s.virtual_servers) {
        if let Some(slot) = udp_frontend(&vs.key()).and_then(|f| out.get_mut(&f)) {
            *slot = Some(
                vs.destinations
                    .iter()
                    .map(|d| SocketAddr::new(d.addr, d.port))
                    .collect(),
            );
        }
    }
    out
}

/// How often [`watch_bpf_trouble`] reads the kernel's counters.
const TROUBLE_POLL: Duration = Duration::from_secs(10);

/// A thread that reads IPVS's session map counters every
/// [`TROUBLE_POLL`] and reports what grew (SNAT ports exhausted, the map
/// full) as a warning in the log and a Warning Event on the Node. Its
/// own IPVS socket; it ends with the process.
fn watch_bpf_trouble(events: NodeEvents, ports: (u16, u16), entries: u32) {
    let spawned = std::thread::Builder::new()
        .name("bpf-trouble".into())
        .spawn(move || {
            let mut ipvs = match Ipvs::connect() {
                Ok(i) => i,
                Err(e) => {
                    warn!(error = %e, "no IPVS socket to watch SNAT and session map trouble");
                    return;
                }
            };
            let read = |ipvs: &mut Ipvs| ipvs.bpf().ok().flatten().map(|s| s.stats);
            let mut throttle = serving::events::Throttle::default();
            // The first successful read is the baseline: totals from
            // before this proxy started are not new trouble.
            let mut before = None;
            loop {
                if let Some(now) = read(&mut ipvs) {
                    for t in before
                        .iter()
                        .flat_map(|b| serving::events::trouble(b, &now, ports, entries))
                    {
                        warn!(reason = t.reason, connections = t.count, "{}", t.note);
                        if throttle.allow(t.reason, Instant::now()) {
                            events.warning(t.reason, "ProxyConnection", t.note);
                        }
                    }
                    before = Some(now);
                }
                std::thread::sleep(TROUBLE_POLL);
            }
        });
    if let Err(e) = spawned {
        warn!(error = %e, "cannot start the SNAT and session map watcher");
    }
}

pub(crate) fn node_name(cfg: &Config) -> Result<String> {
    if let Some(n) = &cfg.hostname_override {
        return Ok(n.trim().to_lowercase());
    }
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        bail!("gethostname: {}", std::io::Error::last_os_error());
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Ok(String::from_utf8_lossy(&buf[..end]).trim().to_lowercase())
}

fn cidrs(list: &[Cidr]) -> Vec<(IpAddr, u8)> {
    list.iter().map(|c| (c.addr, c.prefix_len)).collect()
}

/// The model's view of the node: NodePort addresses as
/// `--nodeport-addresses` selects them, never the dummy device's.
fn model_config(
    cfg: &Config,
    node_name: &str,
    mode: ProxyMode,
    node: Option<&k8s_openapi::api::core::v1::Node>,
) -> Result<ModelConfig> {
    let locals: Vec<IpAddr> = hostinfo::local_addresses()?
        .into_iter()
        .filter(|a| a.dev != DUMMY && hostinfo::nodeport_capable(&a.addr))
        .map(|a| a.addr)
        .collect();
    let mut node_addresses: Vec<IpAddr> = match &cfg.nodeport_addresses {
        NodePortAddresses::All => locals,
        NodePortAddresses::Cidrs(list) => locals
            .into_iter()
            .filter(|a| list.iter().any(|c| c.contains(*a)))
            .collect(),
        NodePortAddresses::Primary => node
            .and_then(|n| n.status.as_ref())
            .and_then(|s| s.addresses.as_ref())
            .map(|addrs| {
                addrs
                    .iter()
                    .filter(|a| a.type_ == "InternalIP")
                    .filter_map(|a| a.address.parse().ok())
                    .collect()
            })
            .unwrap_or_default(),
    };
    node_addresses.sort();
    node_addresses.dedup();
    Ok(ModelConfig {
        node_name: node_name.to_string(),
        node_addresses,
        masquerade_all: cfg.masquerade_all,
        scheduler: cfg.ipvs_scheduler.clone(),
        bpf_snat: mode == ProxyMode::IpvsBpf,
        bpf_snat_foreign: (
            cfg.cluster_cidrs.iter().any(|c| c.is_ipv4()),
            cfg.cluster_cidrs.iter().any(|c| !c.is_ipv4()),
        ),
        ipv4: true,
        ipv6: ipv6_enabled(),
        service_proxy_name: cfg.service_proxy_name.clone(),
    })
}

fn ipvs_mode_config(cfg: &Config) -> IpvsModeConfig {
    IpvsModeConfig {
        cluster_cidrs: cidrs(&cfg.cluster_cidrs),
        masquerade_all: cfg.masquerade_all,
        strict_arp: cfg.ipvs_strict_arp,
        ipv4: true,
        ipv6: ipv6_enabled(),
        ..IpvsModeConfig::default()
    }
}

/// kube-proxy's IPVS sysctls minus `net.ipv4.vs.conntrack`: in bpf_mode
/// Service traffic never reaches conntrack.
fn bpf_mode_sysctls(cfg: &Config) -> Result<()> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let plan: Vec<_> = ipvsmode::sysctl_plan(
        &ipvs_mode_config(cfg),
        ipvsmode::parse_kernel_version(&release),
    )
    .into_iter()
    .filter(|(path, _, _)| *path != "net/ipv4/vs/conntrack")
    .collect();
    ipvsmode::ensure_sysctls(&mut ProcSysctl::default(), &plan)?;
    Ok(())
}

/// The `conntrack:` settings, in either mode, before anything else is
/// programmed: a failure leaves the node untouched.
fn apply_conntrack(ct: &ConntrackConfig) -> Result<()> {
    let cpus = conntrack::online_cpus();
    let plan = ct.plan(cpus);
    if plan.is_empty() {
        return Ok(());
    }
    let written = conntrack::apply(&mut ProcSysctl::default(), &plan)?;
    let max = ct.max(cpus);
    let hashsize =
        max > 0 && conntrack::raise_hashsize(std::path::Path::new(conntrack::HASHSIZE_PATH), max)?;
    info!(
        cpus,
        written,
        hashsize_raised = hashsize,
        "conntrack settings applied: {}",
        plan.iter()
            .map(|(p, v)| format!("{}={v}", p.replace('/', ".")))
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(())
}

/// The node has IPv6 (kube-proxy programs every family the node has).
fn ipv6_enabled() -> bool {
    std::path::Path::new("/proc/net/if_inet6").exists()
}

fn ipvs_mode_leftovers() -> bool {
    hostinfo::ifindex(DUMMY).is_ok()
}

/// `--cleanup`: everything either mode created, whichever ran. Every step
/// is tried; the exit status says whether all succeeded.
fn cleanup(cfg: &Config) -> Result<()> {
    let mut errors = Vec::new();
    let mut ipvs = Ipvs::connect().ok();
    errors.extend(BpfMode::cleanup(
        ipvs.as_mut(),
        &cfg.bpf_pin_path,
        &cfg.uplinks,
        (cfg.snat_port_range.min, cfg.snat_port_range.max),
    ));
    if let Some(ipvs) = ipvs.as_mut() {
        let excluded = ReconcileOptions {
            exclude_cidrs: cidrs(&cfg.ipvs_exclude_cidrs),
            drain_timeout: cfg.drain_timeout,
        };
        match ipvs.services() {
            Ok(list) => {
                for svc in list {
                    let key: ServiceKey = svc.key;
                    if excluded.excludes(&key) {
                        continue;
                    }
                    if let Err(e) = ipvs.delete_service(&key) {
                        errors.push(format!("deleting virtual server {key:?}: {e}"));
                    }
                }
            }
            Err(e) => errors.push(format!("listing IPVS: {e}")),
        }
    }
    // after the virtual servers it guarded
    if let Err(e) = LbFirewall::new(ExecRunner).cleanup() {
        errors.push(format!("loadBalancerSourceRanges filter: {e}"));
    }
    match ipvsmode::link::Rtnl::connect() {
        Ok(links) => match IpvsMode::new(
            ExecRunner,
            ProcSysctl::default(),
            links,
            ipvs_mode_config(cfg),
        ) {
            Ok(mut m) => {
                if let Err(e) = m.cleanup() {
                    errors.push(format!("ipvs mode: {e}"));
                }
            }
            Err(e) => errors.push(format!("ipvs mode: {e}")),
        },
        Err(e) => errors.push(format!("rtnetlink: {e}")),
    }
    if errors.is_empty() {
        info!("cleanup done");
        Ok(())
    } else {
        for e in &errors {
            error!("{e}");
        }
        bail!("cleanup left {} problem(s)", errors.len())
    }
}

/// Datapath numbers for /metrics, read from the pinned counter map and
/// IPVS's GET_BPF on every scrape.
struct BpfStatsSource {
    stats: libbpf_rs::MapHandle,
    ipvs: Mutex<Option<Ipvs>>,
    capacity: u64,
}

impl BpfStatsSource {
    fn new(pin_dir: PathBuf, capacity: u64) -> Result<Self> {
        let stats = datapath::open_pinned_stats(&pin_dir.join(datapath::MAP_STATS))?;
        Ok(BpfStatsSource {
            stats,
            ipvs: Mutex::new(Ipvs::connect().ok()),
            capacity,
        })
    }
}

impl DatapathStats for BpfStatsSource {
    fn snapshot(&self) -> Option<DatapathSnapshot> {
        let kernel = self
            .ipvs
            .lock()
            .ok()
            .and_then(|mut g| g.as_mut().and_then(|i| i.bpf().ok().flatten()));
        let counters = match datapath::read_counters(&self.stats) {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "reading BPF counters");
                Vec::new()
            }
        };
        Some(DatapathSnapshot {
            sessions: kernel.as_ref().map_or(0, |k| k.stats.sessions),
            session_capacity: self.capacity,
            kernel: kernel.map(|k| k.stats),
            counters,
        })
    }
}

pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
