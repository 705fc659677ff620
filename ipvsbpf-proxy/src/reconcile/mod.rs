//! The reconciler: diffs the virtual servers the Services want against what
//! IPVS has and sends only the difference, in one batch per sync.
//!
//! The reconciler keeps a cache of the kernel's IPVS configuration (what
//! [`Reconciler::adopt`] or a full sync read, updated only by requests the
//! kernel acknowledged), so an incremental sync looks at the virtual servers
//! whose desired state changed, the ones whose last request failed and the
//! ones with draining destinations: never at every Service. A full sync
//! re-reads the kernel and diffs everything, which is what removes virtual
//! servers nobody wants any more (stale ones from a previous run included).
//!
//! Removed endpoints of TCP (and fwmark) virtual servers are drained as
//! kube-proxy's `graceful_termination.go` does: weight 0 first, deleted once
//! the kernel counts no active or inactive connection, or after
//! [`ReconcileOptions::drain_timeout`] if one is set. UDP and SCTP endpoints go at once:
//! a datagram flow has no end IPVS could wait for.
//!
//! The kernel sits behind [`IpvsApi`]: [`ipvs_netlink::Ipvs`] in the
//! daemon, [`FakeIpvs`] (an in-memory IPVS with the kernel's errnos and
//! fault injection) in tests, this module's and other modules'.
//!
//! The [`syncer`] runs the model for what changed and hands the result to
//! the reconciler.

pub mod syncer;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipvs_netlink::{
    Destination, Error as IpvsError, ErrorKind, ForwardMethod, Ipvs, Op, Protocol, Request,
    Service, ServiceKey,
};

use crate::model::desired::{ServiceName, ServiceState, VirtualServer};
use crate::model::sorted::SortedVec;

/// A destination's identity within its virtual server: address and port.
type DestId = (IpAddr, u16);

fn dest_id(d: &Destination) -> DestId {
    (d.addr, d.port)
}

// ---- the kernel interface --------------------------------------------------

/// The narrow kernel interface the reconciler needs; the real one is
/// [`ipvs_netlink::Ipvs`], tests use [`FakeIpvs`].
pub trait IpvsApi {
    /// Every virtual server with its destinations (configuration only).
    fn list(&mut self) -> Result<Vec<(Service, Vec<Destination>)>, IpvsError>;
    /// One virtual server's destinations with their connection counts (for
    /// draining checks). A missing virtual server has none.
    fn destinations(&mut self, key: &ServiceKey) -> Result<Vec<Destination>, IpvsError>;
    /// One virtual server with its destinations, `None` when the kernel has
    /// no such virtual server: how the reconciler re-reads a virtual server
    /// after a request lost a race (`EEXIST`, `ENOENT`, `ESRCH`).
    fn virtual_server(
        &mut self,
        key: &ServiceKey,
    ) -> Result<Option<(Service, Vec<Destination>)>, IpvsError>;
    /// Applies `requests` in order; one result per request
    /// ([`ipvs_netlink::Ipvs::execute_all`] semantics: a failure does not
    /// stop the rest).
    fn apply(&mut self, requests: &[Request]) -> Vec<Result<(), IpvsError>>;
}

impl IpvsApi for Ipvs {
    fn list(&mut self) -> Result<Vec<(Service, Vec<Destination>)>, IpvsError> {
        let services = self.services()?;
        let mut out = Vec::with_capacity(services.len());
        for s in services {
            // A service deleted between the two dumps lists no destinations
            // (the kernel does not answer ESRCH here); the next full sync
            // sees it gone.
            let dests = Ipvs::destinations(self, &s.key)?
                .iter()
                .map(Destination::config)
                .collect();
            out.push((s.config(), dests));
        }
        Ok(out)
    }

    fn destinations(&mut self, key: &ServiceKey) -> Result<Vec<Destination>, IpvsError> {
        Ipvs::destinations(self, key)
    }

    fn virtual_server(
        &mut self,
        key: &ServiceKey,
    ) -> Result<Option<(Service, Vec<Destination>)>, IpvsError> {
        let service = match self.service(key) {
            Ok(s) => s.config(),
            Err(e) if e.kind() == Some(ErrorKind::NoSuchService) => return Ok(None),
            Err(e) => return Err(e),
        };
        let dests = Ipvs::destinations(self, key)?
            .iter()
            .map(Destination::config)
            .collect();
        Ok(Some((service, dests)))
    }

    fn apply(&mut self, requests: &[Request]) -> Vec<Result<(), IpvsError>> {
        self.execute_all(requests)
    }
}

// ---- options, reports, errors ----------------------------------------------

/// How the reconciler treats what it does not own and what it drains.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReconcileOptions {
    /// `--ipvs-exclude-cidrs`: virtual servers whose address is in one of
    /// these prefixes belong to someone else (another load balancer on the
    /// node); the reconciler never deletes them, as kube-proxy's
    /// `cleanLegacyService` skips them. A Service that asks for such an
    /// address still gets it programmed.
    pub exclude_cidrs: Vec<(IpAddr, u8)>,
    /// The longest a removed TCP destination keeps draining (weight 0)
    /// before it is deleted with connections left; `None`, as kube-proxy:
    /// until the kernel counts none.
    pub drain_timeout: Option<Duration>,
}

impl ReconcileOptions {
    /// Whether `key` is in an excluded prefix (fwmark services have no
    /// address, so never).
    pub fn excludes(&self, key: &ServiceKey) -> bool {
        match key {
            ServiceKey::Tuple { addr, .. } => self
                .exclude_cidrs
                .iter()
                .any(|(net, len)| in_prefix(addr, net, *len)),
            ServiceKey::Fwmark { .. } => false,
        }
    }
}

/// Whether `addr` is in `net/len`; an address of the other family never is,
/// and a length longer than the family's is taken as the full length.
fn in_prefix(addr: &IpAddr, net: &IpAddr, len: u8) -> bool {
    match (addr, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let len = u32::from(len.min(32));
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            u32::from(*a) & mask == u32::from(*n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let len = u32::from(len.min(128));
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            u128::from(*a) & mask == u128::from(*n) & mask
        }
        _ => false,
    }
}

/// What [`Reconciler::adopt`] found in the kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AdoptReport {
    pub virtual_servers: usize,
    pub destinations: usize,
    /// Of the virtual servers, those in excluded prefixes (never deleted).
    pub excluded: usize,
}

/// A request (or read) that failed and was not a race that re-reading
/// resolved; the virtual server is retried at the next sync.
#[derive(Debug)]
pub struct Failure {
    /// The virtual server, `None` when the whole kernel read failed.
    pub key: Option<ServiceKey>,
    /// The Service that owns the virtual server, if one does.
    pub service: Option<ServiceName>,
    pub error: IpvsError,
}

/// Several Services claim one virtual server: the first by name wins (its
/// virtual server is programmed), the others are skipped for that key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub key: ServiceKey,
    pub winner: ServiceName,
    pub losers: Vec<ServiceName>,
}

/// What one [`Reconciler::sync`] did.
#[derive(Debug, Default)]
pub struct SyncReport {
    pub full: bool,
    /// Requests sent, by operation and whether the kernel accepted them.
    pub by_op: HashMap<(Op, bool), u64>,
    /// Virtual servers diffed (all of them in a full sync, the changed ones
    /// otherwise); the measure of a sync's cost.
    pub examined: usize,
    /// Requests sent, both rounds (the batch and the race follow-up).
    pub requests: usize,
    /// Services whose desired state changed since the previous sync.
    pub services_changed: usize,
    /// Virtual servers that were sent at least one request.
    pub virtual_servers_changed: usize,
    pub failed: Vec<Failure>,
    /// Conflicting claims on the virtual servers this sync examined.
    pub conflicts: Vec<Conflict>,
    /// Requests that lost a race (`EEXIST` on add, `ENOENT`/`ESRCH` on
    /// delete or edit) and converged after re-reading their virtual server.
    pub races: usize,
    /// Destinations deleted at the end of their drain.
    pub drained: usize,
    /// Destinations draining after this sync.
    pub draining: usize,
    /// UDP virtual servers (address and port) that this sync changed
    /// (a request the kernel acknowledged: created, edited or deleted
    /// them or their destinations): conntrack entries to them may have
    /// gone stale (`ipvs` mode sweeps them).
    pub udp_touched: BTreeSet<SocketAddr>,
}

/// Errors of the reconciler's own operations (a sync reports its failures
/// in [`SyncReport::failed`] instead: one bad virtual server must not stop
/// the others).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("adopt the kernel's IPVS state: {0}")]
    Adopt(#[source] IpvsError),
}

// ---- the reconciler ----------------------------------------------------------

/// The kernel's configuration of one virtual server, as last read or written.
#[derive(Clone, Debug)]
struct ActualVs {
    service: Service,
    dests: BTreeMap<DestId, Destination>,
}

impl ActualVs {
    fn new(service: &Service, dests: &[Destination]) -> ActualVs {
        ActualVs {
            service: service.config(),
            dests: dests.iter().map(|d| (dest_id(d), d.config())).collect(),
        }
    }
}

/// What a planned request means beyond its effect on the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Effect {
    Plain,
    /// Weight 0 on a destination nobody wants: it starts draining.
    StartDrain,
    /// The delete at the end of a drain.
    EndDrain,
}

/// One virtual server's changes, in the order the kernel must see them.
#[derive(Default)]
struct KeyPlan {
    service: Vec<(Request, Effect)>,
    dests: Vec<(Request, Effect)>,
    removals: Vec<(Request, Effect)>,
    /// Undesired destinations already at weight 0 (a previous run's drain):
    /// they drain from now on without a request.
    adopt_drains: Vec<DestId>,
}

impl KeyPlan {
    fn is_empty(&self) -> bool {
        self.service.is_empty() && self.dests.is_empty() && self.removals.is_empty()
    }

    fn deletes_service(&self) -> bool {
        self.removals
            .iter()
            .any(|(r, _)| matches!(r, Request::DeleteService(_)))
    }
}

/// A Service's virtual servers by key; of two with one key the first counts.
fn by_key(state: Option<&ServiceState>) -> BTreeMap<ServiceKey, &VirtualServer> {
    let mut out = BTreeMap::new();
    for vs in state.iter().flat_map(|s| s.virtual_servers.iter()) {
        out.entry(vs.key()).or_insert(vs);
    }
    out
}

/// Programs IPVS to match the recorded desired state; see the module docs.
pub struct Reconciler<I: IpvsApi> {
    ipvs: I,
    opts: ReconcileOptions,
    /// Each Service's virtual servers (never an empty state), shared with
    /// the syncer's node state.
    desired: HashMap<ServiceName, Arc<ServiceState>>,
    /// Who wants each key; the first name owns it.
    /// Sorted: the first owns the key.
    claims: HashMap<ServiceKey, SortedVec<ServiceName>>,
    /// The kernel's configuration, true to what it acknowledged.
    actual: HashMap<ServiceKey, ActualVs>,
    /// Destinations at weight 0 waiting for their connections to end, with
    /// when their drain started.
    draining: BTreeMap<ServiceKey, BTreeMap<DestId, Instant>>,
    /// Keys to diff at the next sync.
    dirty: BTreeSet<ServiceKey>,
    /// Keys whose cache entry may be wrong (a request's outcome is unknown,
    /// or the kernel changed under us): re-read before the next diff.
    suspect: BTreeSet<ServiceKey>,
    changed_services: HashSet<ServiceName>,
}

impl<I: IpvsApi> Reconciler<I> {
    pub fn new(ipvs: I, opts: ReconcileOptions) -> Self {
        Reconciler {
            ipvs,
            opts,
            desired: HashMap::new(),
            claims: HashMap::new(),
            actual: HashMap::new(),
            draining: BTreeMap::new(),
            dirty: BTreeSet::new(),
            suspect: BTreeSet::new(),
            changed_services: HashSet::new(),
        }
    }

    /// The kernel interface, e.g. to inspect a [`FakeIpvs`].
    pub fn ipvs(&mut self) -> &mut I {
        &mut self.ipvs
    }

    pub fn options(&self) -> &ReconcileOptions {
        &self.opts
    }

    /// Reads what the kernel has (a previous run's state) into the cache:
    /// nothing is written, nothing flushed, so traffic keeps flowing while
    /// the sources fill. Virtual servers nobody wants go at the first full
    /// sync.
    pub fn adopt(&mut self) -> Result<AdoptReport, ReconcileError> {
        let listed = self.ipvs.list().map_err(ReconcileError::Adopt)?;
        let mut report = AdoptReport::default();
        self.actual.clear();
        self.draining.clear();
        self.suspect.clear();
        for (service, dests) in &listed {
            report.virtual_servers += 1;
            report.destinations += dests.len();
            if self.opts.excludes(&service.key) {
                report.excluded += 1;
            }
            self.actual
                .insert(service.key, ActualVs::new(service, dests));
        }
        tracing::info!(
            virtual_servers = report.virtual_servers,
            destinations = report.destinations,
            excluded = report.excluded,
            "adopted the kernel's IPVS state"
        );
        Ok(report)
    }

    /// Records one Service's desired state (`None`: the Service is gone).
    /// Costs O(size of that Service); only the virtual servers that differ
    /// from what was recorded are diffed at the next sync. Should a Service
    /// list one key twice, its first virtual server counts.
    pub fn set_service(&mut self, name: &ServiceName, state: Option<&ServiceState>) {
        self.set_service_shared(name, state.map(|s| Arc::new(s.clone())));
    }

    /// [`set_service`](Self::set_service) keeping the caller's `Arc`
    /// rather than a copy.
    pub fn set_service_shared(&mut self, name: &ServiceName, state: Option<Arc<ServiceState>>) {
        let new = state.filter(|s| !s.virtual_servers.is_empty());
        let old = self.desired.remove(name);
        let (old_vss, new_vss) = (by_key(old.as_deref()), by_key(new.as_deref()));
        if old_vss != new_vss {
            for key in old_vss.keys().filter(|k| !new_vss.contains_key(*k)) {
                if let Some(c) = self.claims.get_mut(key) {
                    c.remove(name);
                    if c.is_empty() {
                        self.claims.remove(key);
                    }
                }
            }
            for key in new_vss.keys() {
                self.claims.entry(*key).or_default().insert(name.clone());
            }
            for key in old_vss.keys().chain(new_vss.keys()) {
                if old_vss.get(key) != new_vss.get(key) {
                    self.dirty.insert(*key);
                }
            }
            self.changed_services.insert(name.clone());
        }
        if let Some(new) = new {
            self.desired.insert(name.clone(), new);
        }
    }

    /// Every key claimed by more than one Service (for status pages; a sync
    /// reports only the conflicts it examined).
    pub fn conflicts(&self) -> Vec<Conflict> {
        let mut out: Vec<Conflict> = self
            .claims
            .keys()
            .filter_map(|k| self.conflict(k))
            .collect();
        out.sort_by_key(|c| c.key);
        out
    }

    /// Destinations draining now.
    pub fn draining(&self) -> usize {
        self.draining.values().map(BTreeMap::len).sum()
    }

    /// Whether the next incremental sync has nothing to do but drains.
    pub fn is_clean(&self) -> bool {
        self.dirty.is_empty() && self.suspect.is_empty()
    }

    fn conflict(&self, key: &ServiceKey) -> Option<Conflict> {
        let claims = self.claims.get(key)?;
        let mut names = claims.iter();
        let winner = names.next()?.clone();
        let losers: Vec<ServiceName> = names.cloned().collect();
        (!losers.is_empty()).then_some(Conflict {
            key: *key,
            winner,
            losers,
        })
    }

    fn owner(&self, key: &ServiceKey) -> Option<&ServiceName> {
        self.claims.get(key).and_then(|c| c.first())
    }

    fn wanted(&self, key: &ServiceKey) -> Option<&VirtualServer> {
        let state = self.owner(key).and_then(|n| self.desired.get(n))?;
        state.virtual_servers.iter().find(|vs| vs.key() == *key)
    }

    /// Applies what changed since the last sync: the virtual servers touched
    /// by [`set_service`](Self::set_service), those whose last request
    /// failed, and the draining destinations. With `full`, re-reads the
    /// kernel and diffs every virtual server, removing those nobody wants
    /// (except in excluded prefixes). `now` dates drains.
    pub fn sync(&mut self, full: bool, now: Instant) -> SyncReport {
        let span = tracing::info_span!("ipvs_sync", full);
        let _enter = span.enter();
        let mut report = SyncReport {
            full,
            services_changed: self.changed_services.len(),
            ..SyncReport::default()
        };
        self.changed_services.clear();

        let mut keys = std::mem::take(&mut self.dirty);
        if full {
            match self.ipvs.list() {
                Ok(listed) => {
                    self.load(&listed);
                    keys.extend(self.actual.keys().copied());
                    keys.extend(self.claims.keys().copied());
                }
                Err(error) => {
                    tracing::warn!(%error, "full sync: cannot list IPVS; syncing changes only");
                    report.failed.push(Failure {
                        key: None,
                        service: None,
                        error,
                    });
                }
            }
        }
        for key in std::mem::take(&mut self.suspect) {
            keys.insert(key);
            if let Err(error) = self.reread(&key) {
                self.fail(&mut report, key, error, true);
            }
        }

        // Round 1: the diff of every examined key and the drains, one batch.
        let mut plans = BTreeMap::new();
        for key in &keys {
            self.plan_key(key, now, &mut plans, &mut report);
        }
        self.plan_drains(now, &mut plans, &mut report);
        let races = self.apply(plans, now, &mut report, false);

        // Round 2: the virtual servers that lost a race, re-read and
        // diffed again; whatever fails now is a failure.
        if !races.is_empty() {
            let mut plans = BTreeMap::new();
            for key in &races {
                match self.reread(key) {
                    Ok(()) => self.plan_key(key, now, &mut plans, &mut report),
                    Err(error) => self.fail(&mut report, *key, error, true),
                }
            }
            self.apply(plans, now, &mut report, true);
            report.races = races.iter().filter(|k| !self.dirty.contains(k)).count();
        }

        report.draining = self.draining();
        for f in &report.failed {
            tracing::warn!(
                key = f.key.map(|k| k.to_string()),
                service = f.service.as_ref().map(|s| s.to_string()),
                error = %f.error,
                "IPVS request failed; retried at the next sync"
            );
        }
        for c in &report.conflicts {
            tracing::warn!(
                key = %c.key, winner = %c.winner, losers = ?c.losers,
                "several Services claim one virtual server; the first by name wins"
            );
        }
        tracing::info!(
            examined = report.examined,
            services_changed = report.services_changed,
            virtual_servers_changed = report.virtual_servers_changed,
            requests = report.requests,
            failed = report.failed.len(),
            races = report.races,
            drained = report.drained,
            draining = report.draining,
            "IPVS sync"
        );
        report
    }

    /// Replaces the cache with a full listing; drains of destinations that
    /// are gone end.
    fn load(&mut self, listed: &[(Service, Vec<Destination>)]) {
        self.actual = listed
            .iter()
            .map(|(s, d)| (s.key, ActualVs::new(s, d)))
            .collect();
        self.suspect.clear();
        let actual = &self.actual;
        self.draining.retain(|key, drains| {
            drains.retain(|id, _| actual.get(key).is_some_and(|a| a.dests.contains_key(id)));
            !drains.is_empty()
        });
    }

    /// Re-reads one virtual server into the cache.
    fn reread(&mut self, key: &ServiceKey) -> Result<(), IpvsError> {
        match self.ipvs.virtual_server(key)? {
            Some((service, dests)) => {
                let vs = ActualVs::new(&service, &dests);
                if let Some(drains) = self.draining.get_mut(key) {
                    drains.retain(|id, _| vs.dests.contains_key(id));
                    if drains.is_empty() {
                        self.draining.remove(key);
                    }
                }
                self.actual.insert(*key, vs);
            }
            None => {
                self.actual.remove(key);
                self.draining.remove(key);
            }
        }
        Ok(())
    }

    /// Records a failure of `key`: it is diffed again at the next sync, and
    /// re-read first when `unknown` (the kernel's state is not known).
    fn fail(&mut self, report: &mut SyncReport, key: ServiceKey, error: IpvsError, unknown: bool) {
        self.dirty.insert(key);
        if unknown {
            self.suspect.insert(key);
        }
        report.failed.push(Failure {
            key: Some(key),
            service: self.owner(&key).cloned(),
            error,
        });
    }

    fn plan_key(
        &mut self,
        key: &ServiceKey,
        now: Instant,
        plans: &mut BTreeMap<ServiceKey, KeyPlan>,
        report: &mut SyncReport,
    ) {
        report.examined += 1;
        if let Some(c) = self.conflict(key) {
            report.conflicts.push(c);
        }
        let plan = self.diff(key);
        if !plan.adopt_drains.is_empty() {
            let drains = self.draining.entry(*key).or_default();
            for id in &plan.adopt_drains {
                drains.entry(*id).or_insert(now);
            }
        }
        if !plan.is_empty() {
            plans.insert(*key, plan);
        }
    }

    /// The requests that take `key` from the cache's state to the desired.
    fn diff(&self, key: &ServiceKey) -> KeyPlan {
        let mut plan = KeyPlan::default();
        let have = self.actual.get(key);
        let Some(want) = self.wanted(key) else {
            if have.is_some() && !self.opts.excludes(key) {
                plan.removals
                    .push((Request::DeleteService(*key), Effect::Plain));
            }
            return plan;
        };
        let mut wanted_dests: BTreeMap<DestId, &Destination> = BTreeMap::new();
        for d in &want.destinations {
            wanted_dests.entry(dest_id(d)).or_insert(d);
        }
        let Some(have) = have else {
            plan.service
                .push((Request::AddService(want.service.config()), Effect::Plain));
            for d in wanted_dests.values() {
                plan.dests
                    .push((Request::AddDestination(*key, d.config()), Effect::Plain));
            }
            return plan;
        };
        if !same_service(&want.service, &have.service) {
            plan.service
                .push((Request::EditService(want.service.config()), Effect::Plain));
        }
        for (id, d) in &wanted_dests {
            match have.dests.get(id) {
                None => plan
                    .dests
                    .push((Request::AddDestination(*key, d.config()), Effect::Plain)),
                Some(h) if !same_destination(d, h) => plan
                    .dests
                    .push((Request::EditDestination(*key, d.config()), Effect::Plain)),
                Some(_) => {}
            }
        }
        let graceful = drains_gracefully(key);
        for (id, h) in &have.dests {
            if wanted_dests.contains_key(id) {
                continue;
            }
            if !graceful {
                plan.removals
                    .push((Request::DeleteDestination(*key, id.0, id.1), Effect::Plain));
            } else if h.weight != 0 {
                let mut zero = h.config().weight(0);
                if zero.fwd == ForwardMethod::Local {
                    // What the kernel reports for a local address, not
                    // what a request may ask; it turns NAT to local again.
                    zero.fwd = ForwardMethod::Masq;
                }
                plan.dests
                    .push((Request::EditDestination(*key, zero), Effect::StartDrain));
            } else if !self.draining.get(key).is_some_and(|d| d.contains_key(id)) {
                plan.adopt_drains.push(*id);
            }
        }
        plan
    }

    /// Ends the drains that are over: no connection left, or the timeout
    /// passed. Reads the connection counts of draining virtual servers
    /// only.
    fn plan_drains(
        &mut self,
        now: Instant,
        plans: &mut BTreeMap<ServiceKey, KeyPlan>,
        report: &mut SyncReport,
    ) {
        let keys: Vec<ServiceKey> = self.draining.keys().copied().collect();
        for key in keys {
            if plans.get(&key).is_some_and(KeyPlan::deletes_service) {
                continue;
            }
            let listed = match self.ipvs.destinations(&key) {
                Ok(l) => l,
                Err(error) => {
                    self.fail(report, key, error, true);
                    continue;
                }
            };
            let conns: HashMap<DestId, (u32, u32)> = listed
                .iter()
                .map(|d| {
                    (
                        dest_id(d),
                        (d.weight, d.active_conns() + d.inactive_conns()),
                    )
                })
                .collect();
            let wanted: BTreeSet<DestId> = self
                .wanted(&key)
                .map(|vs| vs.destinations.iter().map(dest_id).collect())
                .unwrap_or_default();
            let Some(drains) = self.draining.get(&key) else {
                continue;
            };
            let mut gone = Vec::new();
            let mut over = Vec::new();
            for (id, since) in drains {
                if wanted.contains(id) {
                    // Back before its drain ended; the diff restores it.
                    continue;
                }
                match conns.get(id) {
                    None => gone.push(*id),
                    Some((weight, n)) => {
                        let expired = self
                            .opts
                            .drain_timeout
                            .is_some_and(|t| now.saturating_duration_since(*since) >= t);
                        if *weight == 0 && (*n == 0 || expired) {
                            over.push(*id);
                        }
                    }
                }
            }
            if !gone.is_empty() {
                // Someone else removed them (or the whole virtual server):
                // the cache is wrong, re-read at the next sync.
                if let Some(drains) = self.draining.get_mut(&key) {
                    for id in &gone {
                        drains.remove(id);
                    }
                    if drains.is_empty() {
                        self.draining.remove(&key);
                    }
                }
                self.suspect.insert(key);
                self.dirty.insert(key);
            }
            if !over.is_empty() {
                let plan = plans.entry(key).or_default();
                for (addr, port) in over {
                    plan.removals.push((
                        Request::DeleteDestination(key, addr, port),
                        Effect::EndDrain,
                    ));
                }
            }
        }
    }

    /// Sends the plans as one batch and updates the cache with what
    /// succeeded. Returns the keys that lost a race, to re-read (in round 1
    /// only; in `last` round every failure is one).
    fn apply(
        &mut self,
        plans: BTreeMap<ServiceKey, KeyPlan>,
        now: Instant,
        report: &mut SyncReport,
        last: bool,
    ) -> BTreeSet<ServiceKey> {
        let mut requests = Vec::new();
        let mut effects = Vec::new();
        for (_, plan) in plans {
            report.virtual_servers_changed += 1;
            for (r, e) in plan
                .service
                .into_iter()
                .chain(plan.dests)
                .chain(plan.removals)
            {
                requests.push(r);
                effects.push(e);
            }
        }
        let mut races = BTreeSet::new();
        if requests.is_empty() {
            return races;
        }
        report.requests += requests.len();
        let mut answers = self.ipvs.apply(&requests).into_iter();
        let results: Vec<Result<(), IpvsError>> = requests
            .iter()
            .map(|req| {
                answers.next().unwrap_or_else(|| {
                    Err(IpvsError::Socket(std::io::Error::other(format!(
                        "{} {}: the kernel interface returned no result",
                        req.op(),
                        req.object()
                    ))))
                })
            })
            .collect();
        for (req, result) in requests.iter().zip(&results) {
            *report.by_op.entry((req.op(), result.is_ok())).or_default() += 1;
        }
        let race = |req: &Request, e: &IpvsError| !last && lost_race(req, e);
        let mut hard = BTreeSet::new();
        for (req, result) in requests.iter().zip(&results) {
            if let (Some(key), Err(e)) = (req.key(), result) {
                if race(req, e) {
                    races.insert(key);
                } else {
                    hard.insert(key);
                }
            }
        }
        // A key with a hard failure is not re-read now: the requests of
        // the batch that depend on the failed one failed for the same
        // cause (and are not reported: the root cause is), and the next
        // sync diffs it again anyway.
        for key in &hard {
            races.remove(key);
        }
        for ((req, effect), result) in requests.iter().zip(effects).zip(results) {
            let Some(key) = req.key() else { continue };
            // Before the race check: a request that succeeded in a key
            // that lost another race still changed the kernel.
            if let (Some(frontend), true) = (udp_frontend(&key), result.is_ok()) {
                report.udp_touched.insert(frontend);
            }
            match result {
                // A key that lost a race is re-read whole: no need to
                // record its successes one by one.
                Ok(()) if races.contains(&key) => {}
                Ok(()) => self.record(req, effect, now, report),
                Err(e) if race(req, &e) => {}
                Err(error) => {
                    // No errno: the request may or may not have been applied.
                    let unknown = error.kind().is_none();
                    self.fail(report, key, error, unknown);
                }
            }
        }
        races
    }

    /// Updates the cache with a request the kernel acknowledged.
    fn record(&mut self, req: &Request, effect: Effect, now: Instant, report: &mut SyncReport) {
        match req {
            Request::AddService(s) => {
                self.actual.insert(s.key, ActualVs::new(s, &[]));
            }
            Request::EditService(s) => {
                if let Some(a) = self.actual.get_mut(&s.key) {
                    a.service = s.config();
                }
            }
            Request::DeleteService(key) => {
                self.actual.remove(key);
                self.draining.remove(key);
            }
            Request::AddDestination(key, d) | Request::EditDestination(key, d) => {
                if let Some(a) = self.actual.get_mut(key) {
                    a.dests.insert(dest_id(d), d.config());
                } else {
                    // Acknowledged on a service the cache lacks: the cache
                    // is wrong about this key.
                    self.suspect.insert(*key);
                    self.dirty.insert(*key);
                }
                if effect == Effect::StartDrain {
                    self.draining
                        .entry(*key)
                        .or_default()
                        .entry(dest_id(d))
                        .or_insert(now);
                } else {
                    self.end_drain(key, &(d.addr, d.port));
                }
            }
            Request::DeleteDestination(key, addr, port) => {
                if let Some(a) = self.actual.get_mut(key) {
                    a.dests.remove(&(*addr, *port));
                }
                self.end_drain(key, &(*addr, *port));
                if effect == Effect::EndDrain {
                    report.drained += 1;
                }
            }
            _ => {}
        }
    }

    fn end_drain(&mut self, key: &ServiceKey, id: &DestId) {
        if let Some(drains) = self.draining.get_mut(key) {
            drains.remove(id);
            if drains.is_empty() {
                self.draining.remove(key);
            }
        }
    }
}

/// The address and port of a UDP virtual server.
pub fn udp_frontend(key: &ServiceKey) -> Option<SocketAddr> {
    match key {
        ServiceKey::Tuple {
            protocol: Protocol::Udp,
            addr,
            port,
        } => Some(SocketAddr::new(*addr, *port)),
        _ => None,
    }
}

/// Whether removed destinations of `key` drain (TCP, and fwmark services,
/// which may carry TCP) or go at once (UDP, SCTP), as kube-proxy decides.
fn drains_gracefully(key: &ServiceKey) -> bool {
    !matches!(
        key,
        ServiceKey::Tuple {
            protocol: Protocol::Udp | Protocol::Sctp,
            ..
        }
    )
}

/// Whether two services agree on everything `EditService` sets.
fn same_service(want: &Service, have: &Service) -> bool {
    let pe = |s: &Service| s.pe_name.clone().filter(|p| !p.is_empty());
    want.scheduler == have.scheduler
        && want.flags == have.flags
        && want.timeout == have.timeout
        && want.netmask == have.netmask
        && pe(want) == pe(have)
}

/// Whether two destinations agree on everything `EditDestination` sets.
/// The kernel turns any forwarding method to a local address into `Local`,
/// so a `Local` destination matches whatever was asked; tunnel settings
/// count only for tunnels.
fn same_destination(want: &Destination, have: &Destination) -> bool {
    let fwd = have.fwd == ForwardMethod::Local || want.fwd == have.fwd;
    let tunnel = want.fwd != ForwardMethod::Tunnel || want.tunnel == have.tunnel;
    fwd && tunnel
        && want.weight == have.weight
        && want.upper_threshold == have.upper_threshold
        && want.lower_threshold == have.lower_threshold
}

/// Whether a failure means someone else got there first: the object exists
/// already (add) or is gone already (delete, edit, or a destination whose
/// service is gone).
fn lost_race(req: &Request, e: &IpvsError) -> bool {
    use ErrorKind::{AlreadyExists, NoSuchService, NotFound};
    use Request::{
        AddDestination, AddService, DeleteDestination, DeleteService, EditDestination, EditService,
    };
    matches!(
        (req, e.kind()),
        (AddService(_) | AddDestination(..), Some(AlreadyExists))
            | (
                DeleteService(_)
                    | EditService(_)
                    | AddDestination(..)
                    | EditDestination(..)
                    | DeleteDestination(..),
                Some(NoSuchService)
            )
            | (EditDestination(..) | DeleteDestination(..), Some(NotFound))
    )
}

// ---- the fake kernel ----------------------------------------------------------

/// Decides whether a request fails (see [`FakeIpvs::fail_when`]).
pub type FaultPredicate = Box<dyn FnMut(&Request) -> bool + Send>;

enum FaultMatch {
    /// The request with this sequence number (1-based, over the fake's
    /// lifetime).
    Nth(u64),
    When(FaultPredicate),
}

/// What a fault does to the request it hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Injected {
    /// The kernel refuses it with this errno (no effect).
    Refuse(i32),
    /// The kernel applies it but the answer never comes: the caller sees a
    /// timeout and cannot know the outcome.
    LoseAnswer,
}

struct Fault {
    matches: FaultMatch,
    effect: Injected,
    /// How many more requests it fails.
    remaining: usize,
}

/// One request [`FakeIpvs`] was asked to apply, with what the model did
/// (the errno of a refusal).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Logged {
    pub request: Request,
    pub result: Result<(), i32>,
    /// The caller was told "timeout" instead of `result`.
    pub answer_lost: bool,
}

/// How often the reconciler (or anyone) called each [`IpvsApi`] method of a
/// [`FakeIpvs`]; tests measure a sync's cost with it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FakeCalls {
    pub list: usize,
    pub destinations: usize,
    pub virtual_server: usize,
    pub apply: usize,
    /// Requests passed to `apply`, all calls together.
    pub requests: usize,
}

#[derive(Clone, Debug)]
struct FakeVs {
    service: Service,
    dests: BTreeMap<DestId, Destination>,
}

/// An in-memory IPVS with the kernel's answers to conflicting requests:
/// `EEXIST` for a service or destination that exists, `ESRCH` for a
/// missing service, `ENOENT` for a missing destination. Faults make chosen
/// requests fail (without effect); every request is logged with its
/// outcome. Methods outside [`IpvsApi`] change the state as another tool
/// would, unlogged.
#[derive(Default)]
pub struct FakeIpvs {
    services: BTreeMap<ServiceKey, FakeVs>,
    log: Vec<Logged>,
    calls: FakeCalls,
    faults: Vec<Fault>,
    /// Requests seen so far, for [`FakeIpvs::fail_nth`].
    seen: u64,
}

impl std::fmt::Debug for FakeIpvs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeIpvs")
            .field("services", &self.services.len())
            .field("log", &self.log.len())
            .field("calls", &self.calls)
            .field("faults", &self.faults.len())
            .finish()
    }
}

fn kernel_error(req: &Request, errno: i32) -> IpvsError {
    IpvsError::Kernel {
        op: req.op(),
        object: req.object(),
        errno,
        message: None,
    }
}

impl FakeIpvs {
    pub fn new() -> FakeIpvs {
        FakeIpvs::default()
    }

    /// Creates or replaces a virtual server, as another tool would.
    pub fn insert(&mut self, service: Service, dests: Vec<Destination>) {
        let dests = dests.into_iter().map(|d| (dest_id(&d), d)).collect();
        self.services.insert(service.key, FakeVs { service, dests });
    }

    /// Deletes a virtual server, as another tool would; false if missing.
    pub fn remove(&mut self, key: &ServiceKey) -> bool {
        self.services.remove(key).is_some()
    }

    /// Adds or replaces a destination; false if the service is missing.
    pub fn insert_destination(&mut self, key: &ServiceKey, dest: Destination) -> bool {
        match self.services.get_mut(key) {
            Some(vs) => {
                vs.dests.insert(dest_id(&dest), dest);
                true
            }
            None => false,
        }
    }

    /// Deletes a destination; false if it is missing.
    pub fn remove_destination(&mut self, key: &ServiceKey, addr: IpAddr, port: u16) -> bool {
        self.services
            .get_mut(key)
            .is_some_and(|vs| vs.dests.remove(&(addr, port)).is_some())
    }

    /// Sets a destination's connection counts; false if it is missing.
    pub fn set_conns(
        &mut self,
        key: &ServiceKey,
        addr: IpAddr,
        port: u16,
        active: u32,
        inactive: u32,
    ) -> bool {
        match self
            .services
            .get_mut(key)
            .and_then(|vs| vs.dests.get_mut(&(addr, port)))
        {
            Some(d) => {
                let c = d.counters_mut();
                c.active_conns = active;
                c.inactive_conns = inactive;
                true
            }
            None => false,
        }
    }

    /// One virtual server with its destinations (counts included).
    pub fn get(&self, key: &ServiceKey) -> Option<(Service, Vec<Destination>)> {
        self.services
            .get(key)
            .map(|vs| (vs.service.clone(), vs.dests.values().cloned().collect()))
    }

    /// Every virtual server by key, destinations by address and port,
    /// configuration only: what to compare with a desired state.
    pub fn state(&self) -> Vec<(Service, Vec<Destination>)> {
        self.services
            .values()
            .map(|vs| {
                (
                    vs.service.config(),
                    vs.dests.values().map(Destination::config).collect(),
                )
            })
            .collect()
    }

    /// Number of virtual servers.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// Every request asked of [`IpvsApi::apply`], in order, with its outcome.
    pub fn log(&self) -> &[Logged] {
        &self.log
    }

    /// The log so far, emptied.
    pub fn take_log(&mut self) -> Vec<Logged> {
        std::mem::take(&mut self.log)
    }

    /// The requests of the log so far, emptied.
    pub fn take_requests(&mut self) -> Vec<Request> {
        self.take_log().into_iter().map(|l| l.request).collect()
    }

    pub fn calls(&self) -> FakeCalls {
        self.calls
    }

    pub fn reset_calls(&mut self) {
        self.calls = FakeCalls::default();
    }

    /// Makes the `n`-th request from now on (1 = the next) fail with
    /// `errno`, without effect.
    pub fn fail_nth(&mut self, n: u64, errno: i32) {
        self.faults.push(Fault {
            matches: FaultMatch::Nth(self.seen + n),
            effect: Injected::Refuse(errno),
            remaining: 1,
        });
    }

    /// Makes the next `times` requests for which `pred` holds fail with
    /// `errno`, without effect.
    pub fn fail_when(
        &mut self,
        errno: i32,
        times: usize,
        pred: impl FnMut(&Request) -> bool + Send + 'static,
    ) {
        self.faults.push(Fault {
            matches: FaultMatch::When(Box::new(pred)),
            effect: Injected::Refuse(errno),
            remaining: times,
        });
    }

    /// Makes the next `times` requests for which `pred` holds take effect
    /// with their answer lost: the caller gets a timeout, as when the
    /// kernel is too slow to acknowledge.
    pub fn lose_answer_when(
        &mut self,
        times: usize,
        pred: impl FnMut(&Request) -> bool + Send + 'static,
    ) {
        self.faults.push(Fault {
            matches: FaultMatch::When(Box::new(pred)),
            effect: Injected::LoseAnswer,
            remaining: times,
        });
    }

    /// Drops every pending fault.
    pub fn clear_faults(&mut self) {
        self.faults.clear();
    }

    fn injected(&mut self, req: &Request) -> Option<Injected> {
        let seq = self.seen;
        let hit = self.faults.iter_mut().find_map(|f| {
            let m = f.remaining > 0
                && match &mut f.matches {
                    FaultMatch::Nth(n) => *n == seq,
                    FaultMatch::When(pred) => pred(req),
                };
            m.then(|| {
                f.remaining -= 1;
                f.effect
            })
        });
        self.faults.retain(|f| f.remaining > 0);
        hit
    }

    /// One request against the model, with the kernel's errnos; and
    /// whether its answer is lost.
    fn run(&mut self, req: &Request) -> (Result<(), i32>, bool) {
        self.seen += 1;
        match self.injected(req) {
            Some(Injected::Refuse(errno)) => (Err(errno), false),
            Some(Injected::LoseAnswer) => (self.model(req), true),
            None => (self.model(req), false),
        }
    }

    fn model(&mut self, req: &Request) -> Result<(), i32> {
        match req {
            Request::AddService(s) => {
                if self.services.contains_key(&s.key) {
                    return Err(libc::EEXIST);
                }
                self.insert(s.config(), Vec::new());
            }
            Request::EditService(s) => {
                let vs = self.services.get_mut(&s.key).ok_or(libc::ESRCH)?;
                vs.service = s.config();
            }
            Request::DeleteService(k) => {
                self.services.remove(k).ok_or(libc::ESRCH)?;
            }
            Request::AddDestination(k, d) => {
                let vs = self.services.get_mut(k).ok_or(libc::ESRCH)?;
                if vs.dests.contains_key(&dest_id(d)) {
                    return Err(libc::EEXIST);
                }
                vs.dests.insert(dest_id(d), d.config());
            }
            Request::EditDestination(k, d) => {
                let vs = self.services.get_mut(k).ok_or(libc::ESRCH)?;
                let have = vs.dests.get_mut(&dest_id(d)).ok_or(libc::ENOENT)?;
                // The kernel keeps a destination's connections across edits.
                let counters = have.counters.take();
                *have = d.config();
                have.counters = counters;
            }
            Request::DeleteDestination(k, addr, port) => {
                let vs = self.services.get_mut(k).ok_or(libc::ESRCH)?;
                vs.dests.remove(&(*addr, *port)).ok_or(libc::ENOENT)?;
            }
            Request::Flush => self.services.clear(),
            Request::Zero(Some(k)) | Request::GetService(k) => {
                if !self.services.contains_key(k) {
                    return Err(libc::ESRCH);
                }
            }
            Request::Zero(None)
            | Request::ListServices
            | Request::ListDestinations(_)
            | Request::GetInfo
            | Request::GetTimeouts => {}
            _ => return Err(libc::EOPNOTSUPP),
        }
        Ok(())
    }
}

impl IpvsApi for FakeIpvs {
    fn list(&mut self) -> Result<Vec<(Service, Vec<Destination>)>, IpvsError> {
        self.calls.list += 1;
        Ok(self.state())
    }

    fn destinations(&mut self, key: &ServiceKey) -> Result<Vec<Destination>, IpvsError> {
        self.calls.destinations += 1;
        Ok(self.get(key).map(|(_, d)| d).unwrap_or_default())
    }

    fn virtual_server(
        &mut self,
        key: &ServiceKey,
    ) -> Result<Option<(Service, Vec<Destination>)>, IpvsError> {
        self.calls.virtual_server += 1;
        Ok(self.get(key).map(|(s, d)| {
            (
                s.config(),
                d.iter().map(Destination::config).collect::<Vec<_>>(),
            )
        }))
    }

    fn apply(&mut self, requests: &[Request]) -> Vec<Result<(), IpvsError>> {
        self.calls.apply += 1;
        self.calls.requests += requests.len();
        requests
            .iter()
            .map(|req| {
                let (result, answer_lost) = self.run(req);
                self.log.push(Logged {
                    request: req.clone(),
                    result,
                    answer_lost,
                });
                if answer_lost {
                    return Err(IpvsError::Timeout {
                        op: req.op(),
                        object: req.object(),
                        timeout: Duration::from_secs(10),
                    });
                }
                result.map_err(|errno| kernel_error(req, errno))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::desired::VsKind;
    use ipvs_netlink::ServiceFlags;

    const DRAIN: Duration = Duration::from_secs(60);

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    fn name(n: &str) -> ServiceName {
        ServiceName::new("default", n)
    }

    fn tcp(addr: &str, port: u16) -> ServiceKey {
        ServiceKey::tcp(ip(addr), port)
    }

    fn udp(addr: &str, port: u16) -> ServiceKey {
        ServiceKey::udp(ip(addr), port)
    }

    fn sctp(addr: &str, port: u16) -> ServiceKey {
        ServiceKey::Tuple {
            protocol: Protocol::Sctp,
            addr: ip(addr),
            port,
        }
    }

    fn dest(addr: &str, port: u16, weight: u32) -> Destination {
        Destination::new(ip(addr), port).weight(weight)
    }

    /// A virtual server with `rr` and destinations (address, port, weight).
    fn vs(key: ServiceKey, dests: &[(&str, u16, u32)]) -> VirtualServer {
        vs_with(Service::new(key, "rr"), dests)
    }

    fn vs_with(service: Service, dests: &[(&str, u16, u32)]) -> VirtualServer {
        VirtualServer {
            service,
            destinations: dests.iter().map(|(a, p, w)| dest(a, *p, *w)).collect(),
            kind: VsKind::ClusterIp,
            masquerade: false,
            local_only: false,
            source_ranges: None,
        }
    }

    fn state(vss: &[VirtualServer]) -> ServiceState {
        ServiceState {
            virtual_servers: vss.to_vec(),
            health_check: None,
        }
    }

    fn reconciler() -> Reconciler<FakeIpvs> {
        reconciler_on(FakeIpvs::new(), Vec::new())
    }

    fn reconciler_on(fake: FakeIpvs, exclude_cidrs: Vec<(IpAddr, u8)>) -> Reconciler<FakeIpvs> {
        Reconciler::new(
            fake,
            ReconcileOptions {
                exclude_cidrs,
                drain_timeout: Some(DRAIN),
            },
        )
    }

    /// The kernel state `vss` describe, as [`FakeIpvs::state`] lists it.
    fn kernel_of(vss: &[&VirtualServer]) -> Vec<(Service, Vec<Destination>)> {
        let mut out: Vec<(Service, Vec<Destination>)> = vss
            .iter()
            .map(|vs| {
                let mut d: Vec<Destination> =
                    vs.destinations.iter().map(Destination::config).collect();
                d.sort_by_key(dest_id);
                (vs.service.config(), d)
            })
            .collect();
        out.sort_by_key(|(s, _)| s.key);
        out
    }

    fn sync(r: &mut Reconciler<FakeIpvs>, full: bool, now: Instant) -> (SyncReport, Vec<Request>) {
        let report = r.sync(full, now);
        let reqs = r.ipvs().take_requests();
        assert_eq!(report.requests, reqs.len(), "report counts what was sent");
        (report, reqs)
    }

    fn assert_ok(report: &SyncReport) {
        assert!(report.failed.is_empty(), "failures: {:?}", report.failed);
    }

    fn add(vs: &VirtualServer) -> Vec<Request> {
        let mut out = vec![Request::AddService(vs.service.config())];
        let mut dests = vs.destinations.clone();
        dests.sort_by_key(dest_id);
        out.extend(
            dests
                .iter()
                .map(|d| Request::AddDestination(vs.key(), d.config())),
        );
        out
    }

    /// The UDP virtual servers a sync changed, for the conntrack sweep:
    /// created, a destination deleted, deleted whole; not TCP ones, not
    /// a failed request, and a success in a key that lost a race too.
    #[test]
    fn udp_changes_are_reported_for_conntrack() {
        let u = udp("10.96.0.10", 53);
        let t = tcp("10.96.0.1", 80);
        let sa = |s: &str| s.parse::<SocketAddr>().expect("socket address");
        let touched = |r: &SyncReport| r.udp_touched.iter().copied().collect::<Vec<_>>();
        let mut r = reconciler();
        let t0 = Instant::now();
        r.set_service(
            &name("dns"),
            Some(&state(&[
                vs(u, &[("10.1.0.3", 53, 1), ("10.1.0.4", 53, 1)]),
                vs(t, &[("10.1.0.3", 80, 1), ("10.1.0.4", 80, 1)]),
            ])),
        );
        let (report, _) = sync(&mut r, false, t0);
        assert_ok(&report);
        assert_eq!(touched(&report), [sa("10.96.0.10:53")], "created");

        r.set_service(
            &name("dns"),
            Some(&state(&[
                vs(u, &[("10.1.0.3", 53, 1)]),
                vs(t, &[("10.1.0.3", 80, 1)]),
            ])),
        );
        let (report, _) = sync(&mut r, false, t0);
        assert_ok(&report);
        assert_eq!(
            touched(&report),
            [sa("10.96.0.10:53")],
            "a destination deleted"
        );
        let (report, _) = sync(&mut r, false, t0);
        assert!(report.udp_touched.is_empty(), "nothing changed");

        r.ipvs().fail_when(
            libc::EPERM,
            1,
            move |req| matches!(req, Request::DeleteService(k) if *k == u),
        );
        r.set_service(&name("dns"), Some(&state(&[vs(t, &[("10.1.0.3", 80, 1)])])));
        let (report, _) = sync(&mut r, false, t0);
        assert_eq!(report.failed.len(), 1, "the delete failed");
        assert!(
            report.udp_touched.is_empty(),
            "a failed request changed nothing: {:?}",
            report.udp_touched
        );
        r.ipvs().clear_faults();
        let (report, _) = sync(&mut r, false, t0);
        assert_ok(&report);
        assert_eq!(touched(&report), [sa("10.96.0.10:53")], "deleted");
    }

    #[test]
    fn creates_from_empty_in_order() {
        let a = vs(
            tcp("10.96.0.1", 80),
            &[("10.1.0.2", 8080, 1), ("10.1.0.1", 8080, 1)],
        );
        let b = vs(udp("10.96.0.10", 53), &[("10.1.0.3", 53, 1)]);
        let c = vs(tcp("fd00::1", 443), &[("fd01::5", 8443, 3)]);
        let mut r = reconciler();
        r.set_service(&name("web"), Some(&state(&[a.clone(), c.clone()])));
        r.set_service(&name("dns"), Some(&state(std::slice::from_ref(&b))));
        let (report, reqs) = sync(&mut r, false, Instant::now());
        assert_ok(&report);
        // Per virtual server (in key order): the service, then its
        // destinations.
        let mut by_key = [&a, &b, &c];
        by_key.sort_by_key(|v| v.key());
        let want: Vec<Request> = by_key.iter().flat_map(|v| add(v)).collect();
        assert_eq!(reqs, want);
        assert_eq!(r.ipvs().state(), kernel_of(&[&a, &b, &c]));
        assert_eq!(report.services_changed, 2);
        assert_eq!(report.virtual_servers_changed, 3);
        assert_eq!(report.examined, 3);
        assert_eq!(r.ipvs().calls().apply, 1, "one batch");
    }

    #[test]
    fn converged_syncs_send_nothing() {
        let a = vs(tcp("10.96.0.1", 80), &[("10.1.0.1", 8080, 1)]);
        let mut r = reconciler();
        r.set_service(&name("web"), Some(&state(std::slice::from_ref(&a))));
        let now = Instant::now();
        let (_, reqs) = sync(&mut r, false, now);
        assert_eq!(reqs.len(), 2);
        r.ipvs().reset_calls();
        for full in [false, true, false] {
            let (report, reqs) = sync(&mut r, full, now);
            assert_ok(&report);
            assert_eq!(reqs, vec![], "full={full}");
            assert_eq!(report.examined, usize::from(full));
        }
        // The same state again is no change.
        r.set_service(&name("web"), Some(&state(std::slice::from_ref(&a))));
        let (report, reqs) = sync(&mut r, false, now);
        assert_eq!(
            (report.examined, report.services_changed, reqs.len()),
            (0, 0, 0)
        );
        assert_eq!(r.ipvs().calls().apply, 0);
    }

    #[test]
    fn adopting_the_desired_state_sends_nothing() {
        let a = vs(
            tcp("10.96.0.1", 80),
            &[("10.1.0.1", 8080, 1), ("10.1.0.2", 8080, 2)],
        );
        let b = vs(udp("10.96.0.10", 53), &[("10.1.0.3", 53, 1)]);
        let mut fake = FakeIpvs::new();
        for v in [&a, &b] {
            fake.insert(v.service.clone(), v.destinations.clone());
        }
        let mut r = reconciler_on(fake, Vec::new());
        let adopted = r.adopt().expect("adopt");
        assert_eq!(
            adopted,
            AdoptReport {
                virtual_servers: 2,
                destinations: 3,
                excluded: 0
            }
        );
        assert_eq!(r.ipvs().take_log(), vec![], "adopt writes nothing");
        r.set_service(&name("web"), Some(&state(std::slice::from_ref(&a))));
        r.set_service(&name("dns"), Some(&state(std::slice::from_ref(&b))));
        for full in [false, true] {
            let (report, reqs) = sync(&mut r, full, Instant::now());
            assert_ok(&report);
            assert_eq!(reqs, vec![], "full={full}");
        }
        assert_eq!(r.ipvs().state(), kernel_of(&[&a, &b]));
    }

    #[test]
    fn stale_virtual_servers_go_at_the_first_full_sync_except_excluded() {
        let a = vs(tcp("10.96.0.1", 80), &[("10.1.0.1", 8080, 1)]);
        let stale = vs(tcp("10.96.0.99", 80), &[("10.1.0.9", 8080, 1)]);
        let foreign = vs(tcp("192.0.2.7", 80), &[("10.1.0.7", 80, 1)]);
        let mut fake = FakeIpvs::new();
        for v in [&a, &stale, &foreign] {
            fake.insert(v.service.clone(), v.destinations.clone());
        }
        let mut r = reconciler_on(fake, vec![(ip("192.0.2.0"), 24)]);
        assert_eq!(r.adopt().expect("adopt").excluded, 1);
        r.set_service(&name("web"), Some(&state(std::slice::from_ref(&a))));
        let now = Instant::now();
        let (_, reqs) = sync(&mut r, false, now);
        assert_eq!(reqs, vec![], "an incremental sync leaves stale state alone");
        assert_eq!(r.ipvs().len(), 3);
        let (report, reqs) = sync(&mut r, true, now);
        assert_ok(&report);
        assert_eq!(reqs, vec![Request::DeleteService(stale.key())]);
        assert_eq!(r.ipvs().state(), kernel_of(&[&a, &foreign]));
        let (_, reqs) = sync(&mut r, true, now);
        assert_eq!(reqs, vec![], "the excluded one stays for good");
    }

    /// One Service's virtual server changes from `before` to `after`: the
    /// requests, and the destinations left draining at weight 0.
    struct Change {
        what: &'static str,
        before: VirtualServer,
        after: VirtualServer,
        requests: Vec<Request>,
        draining: &'static [(&'static str, u16)],
    }

    #[test]
    fn changes_send_only_their_difference() {
        let k = tcp("10.96.0.1", 80);
        let base = || vs(k, &[("10.1.0.1", 8080, 1), ("10.1.0.2", 8080, 1)]);
        let with =
            |service: Service| vs_with(service, &[("10.1.0.1", 8080, 1), ("10.1.0.2", 8080, 1)]);
        let u = udp("10.96.0.10", 53);
        let s = sctp("10.96.0.11", 9);
        let fwm = ServiceKey::Fwmark {
            family: ipvs_netlink::Family::Inet,
            mark: 7,
        };
        let cases = vec![
            Change {
                what: "scheduler",
                before: base(),
                after: with(Service::new(k, "wrr")),
                requests: vec![Request::EditService(Service::new(k, "wrr"))],
                draining: &[],
            },
            Change {
                what: "persistence",
                before: base(),
                after: with(Service::new(k, "rr").persistent(10800)),
                requests: vec![Request::EditService(
                    Service::new(k, "rr").persistent(10800),
                )],
                draining: &[],
            },
            Change {
                what: "flags",
                before: base(),
                after: with({
                    let mut s = Service::new(k, "rr");
                    s.flags |= ServiceFlags::BPF_SNAT;
                    s
                }),
                requests: vec![Request::EditService({
                    let mut s = Service::new(k, "rr");
                    s.flags |= ServiceFlags::BPF_SNAT;
                    s
                })],
                draining: &[],
            },
            Change {
                what: "weight",
                before: base(),
                after: vs(k, &[("10.1.0.1", 8080, 1), ("10.1.0.2", 8080, 5)]),
                requests: vec![Request::EditDestination(k, dest("10.1.0.2", 8080, 5))],
                draining: &[],
            },
            Change {
                what: "endpoint added",
                before: base(),
                after: vs(
                    k,
                    &[
                        ("10.1.0.1", 8080, 1),
                        ("10.1.0.2", 8080, 1),
                        ("10.1.0.3", 8080, 1),
                    ],
                ),
                requests: vec![Request::AddDestination(k, dest("10.1.0.3", 8080, 1))],
                draining: &[],
            },
            Change {
                what: "scheduler, weight and endpoint: service first",
                before: base(),
                after: vs_with(
                    Service::new(k, "lc"),
                    &[
                        ("10.1.0.0", 8080, 1),
                        ("10.1.0.1", 8080, 2),
                        ("10.1.0.2", 8080, 1),
                    ],
                ),
                requests: vec![
                    Request::EditService(Service::new(k, "lc")),
                    Request::AddDestination(k, dest("10.1.0.0", 8080, 1)),
                    Request::EditDestination(k, dest("10.1.0.1", 8080, 2)),
                ],
                draining: &[],
            },
            Change {
                what: "TCP endpoint removed: weight 0",
                before: base(),
                after: vs(k, &[("10.1.0.1", 8080, 1)]),
                requests: vec![Request::EditDestination(k, dest("10.1.0.2", 8080, 0))],
                draining: &[("10.1.0.2", 8080)],
            },
            Change {
                what: "fwmark endpoint removed: weight 0",
                before: vs(fwm, &[("10.1.0.1", 0, 1), ("10.1.0.2", 0, 1)]),
                after: vs(fwm, &[("10.1.0.2", 0, 1)]),
                requests: vec![Request::EditDestination(fwm, dest("10.1.0.1", 0, 0))],
                draining: &[("10.1.0.1", 0)],
            },
            Change {
                what: "TCP endpoint replaced: add before drain",
                before: base(),
                after: vs(k, &[("10.1.0.1", 8080, 1), ("10.1.0.3", 8080, 1)]),
                requests: vec![
                    Request::AddDestination(k, dest("10.1.0.3", 8080, 1)),
                    Request::EditDestination(k, dest("10.1.0.2", 8080, 0)),
                ],
                draining: &[("10.1.0.2", 8080)],
            },
            Change {
                what: "UDP endpoint removed at once, after the add",
                before: vs(u, &[("10.1.0.5", 53, 1), ("10.1.0.6", 53, 1)]),
                after: vs(u, &[("10.1.0.4", 53, 1), ("10.1.0.6", 53, 1)]),
                requests: vec![
                    Request::AddDestination(u, dest("10.1.0.4", 53, 1)),
                    Request::DeleteDestination(u, ip("10.1.0.5"), 53),
                ],
                draining: &[],
            },
            Change {
                what: "SCTP endpoint removed at once",
                before: vs(s, &[("10.1.0.5", 9, 1), ("10.1.0.6", 9, 1)]),
                after: vs(s, &[("10.1.0.6", 9, 1)]),
                requests: vec![Request::DeleteDestination(s, ip("10.1.0.5"), 9)],
                draining: &[],
            },
        ];
        for c in cases {
            let mut r = reconciler();
            let now = Instant::now();
            r.set_service(&name("svc"), Some(&state(std::slice::from_ref(&c.before))));
            let (report, _) = sync(&mut r, false, now);
            assert_ok(&report);
            r.set_service(&name("svc"), Some(&state(std::slice::from_ref(&c.after))));
            let (report, reqs) = sync(&mut r, false, now);
            assert_ok(&report);
            assert_eq!(reqs, c.requests, "{}", c.what);
            assert_eq!(report.draining, c.draining.len(), "{}", c.what);
            let mut expect = c.after.clone();
            for (a, p) in c.draining {
                expect.destinations.push(dest(a, *p, 0));
            }
            assert_eq!(r.ipvs().state(), kernel_of(&[&expect]), "{}", c.what);
            // Drains without connections end at the next sync.
            let (_, reqs) = sync(&mut r, false, now);
            let ended: Vec<Request> = c
                .draining
                .iter()
                .map(|(a, p)| Request::DeleteDestination(c.after.key(), ip(a), *p))
                .collect();
            assert_eq!(reqs, ended, "{}: converged", c.what);
            let (_, reqs) = sync(&mut r, false, now);
            assert_eq!(reqs, vec![], "{}: converged", c.what);
            assert_eq!(r.ipvs().state(), kernel_of(&[&c.after]), "{}", c.what);
        }
    }

    /// A TCP virtual server with destinations .1 and .2; .2 removed at `t0`.
    fn draining_one(conns: (u32, u32)) -> (Reconciler<FakeIpvs>, ServiceKey, Instant) {
        draining_one_capped(conns, Some(DRAIN))
    }

    fn draining_one_capped(
        conns: (u32, u32),
        drain_timeout: Option<Duration>,
    ) -> (Reconciler<FakeIpvs>, ServiceKey, Instant) {
        let k = tcp("10.96.0.1", 80);
        let mut r = Reconciler::new(
            FakeIpvs::new(),
            ReconcileOptions {
                exclude_cidrs: Vec::new(),
                drain_timeout,
            },
        );
        let t0 = Instant::now();
        r.set_service(
            &name("web"),
            Some(&state(&[vs(
                k,
                &[("10.1.0.1", 8080, 1), ("10.1.0.2", 8080, 1)],
            )])),
        );
        sync(&mut r, false, t0);
        assert!(r
            .ipvs()
            .set_conns(&k, ip("10.1.0.2"), 8080, conns.0, conns.1));
        r.set_service(
            &name("web"),
            Some(&state(&[vs(k, &[("10.1.0.1", 8080, 1)])])),
        );
        let (report, reqs) = sync(&mut r, false, t0);
        assert_eq!(
            reqs,
            vec![Request::EditDestination(k, dest("10.1.0.2", 8080, 0))]
        );
        assert_eq!(report.draining, 1);
        r.ipvs().reset_calls();
        (r, k, t0)
    }

    #[test]
    fn tcp_destination_drains_until_its_connections_end() {
        let (mut r, k, t0) = draining_one((2, 1));
        let (report, reqs) = sync(&mut r, false, t0 + Duration::from_secs(1));
        assert_eq!(reqs, vec![], "connections left");
        assert_eq!(report.draining, 1);
        assert_eq!(
            r.ipvs().calls().destinations,
            1,
            "one read, of the draining VS"
        );
        assert!(r.ipvs().set_conns(&k, ip("10.1.0.2"), 8080, 0, 0));
        let (report, reqs) = sync(&mut r, false, t0 + Duration::from_secs(2));
        assert_eq!(
            reqs,
            vec![Request::DeleteDestination(k, ip("10.1.0.2"), 8080)]
        );
        assert_eq!((report.drained, report.draining), (1, 0));
        let (_, reqs) = sync(&mut r, false, t0 + Duration::from_secs(3));
        assert_eq!(reqs, vec![]);
        assert_eq!(r.ipvs().calls().destinations, 2, "no reads once drained");
        assert_eq!(
            r.ipvs().state(),
            kernel_of(&[&vs(k, &[("10.1.0.1", 8080, 1)])])
        );
    }

    #[test]
    fn tcp_destination_drains_until_the_timeout() {
        let (mut r, k, t0) = draining_one((0, 4));
        let (_, reqs) = sync(&mut r, false, t0 + DRAIN - Duration::from_secs(1));
        assert_eq!(reqs, vec![], "inactive connections count too");
        let (report, reqs) = sync(&mut r, false, t0 + DRAIN);
        assert_eq!(
            reqs,
            vec![Request::DeleteDestination(k, ip("10.1.0.2"), 8080)]
        );
        assert_eq!((report.drained, report.draining), (1, 0));
    }

    #[test]
    fn without_a_drain_timeout_connections_decide_alone() {
        // kube-proxy's graceful termination: no cap, however long the
        // last connection lives (the default, --ipvs-drain-timeout 0)
        let (mut r, k, t0) = draining_one_capped((1, 0), None);
        let day = Duration::from_secs(24 * 3600);
        let (report, reqs) = sync(&mut r, false, t0 + day);
        assert_eq!(reqs, vec![], "a connection left after a day");
        assert_eq!(report.draining, 1);
        assert!(r.ipvs().set_conns(&k, ip("10.1.0.2"), 8080, 0, 0));
        let (_, reqs) = sync(&mut r, false, t0 + day * 2);
        assert_eq!(
            reqs,
            vec![Request::DeleteDestination(k, ip("10.1.0.2"), 8080)]
        );
    }

    #[test]
    fn destination_back_during_drain_gets_its_weight_back() {
        let (mut r, k, t0) = draining_one((3, 0));
        r.set_service(
            &name("web"),
            Some(&state(&[vs(
                k,
                &[("10.1.0.1", 8080, 1), ("10.1.0.2", 8080, 4)],
            )])),
        );
        let (report, reqs) = sync(&mut r, false, t0 + Duration::from_secs(1));
        assert_ok(&report);
        assert_eq!(
            reqs,
            vec![Request::EditDestination(k, dest("10.1.0.2", 8080, 4))]
        );
        assert_eq!(report.draining, 0);
        assert!(r.ipvs().set_conns(&k, ip("10.1.0.2"), 8080, 0, 0));
        let (_, reqs) = sync(&mut r, false, t0 + DRAIN * 2);
        assert_eq!(reqs, vec![], "no longer draining, never deleted");
        let (service, dests) = r.ipvs().get(&k).expect("still there");
        assert_eq!(service, Service::new(k, "rr"));
        assert_eq!(dests.len(), 2);
        assert_eq!(dests[1].weight, 4);
    }

    #[test]
    fn weight_zero_destination_adopted_from_a_previous_run_drains() {
        let k = tcp("10.96.0.1", 80);
        let mut fake = FakeIpvs::new();
        fake.insert(
            Service::new(k, "rr"),
            vec![dest("10.1.0.1", 8080, 1), dest("10.1.0.2", 8080, 0)],
        );
        assert!(fake.set_conns(&k, ip("10.1.0.2"), 8080, 1, 0));
        let mut r = reconciler_on(fake, Vec::new());
        r.adopt().expect("adopt");
        r.set_service(
            &name("web"),
            Some(&state(&[vs(k, &[("10.1.0.1", 8080, 1)])])),
        );
        let t0 = Instant::now();
        let (report, reqs) = sync(&mut r, false, t0);
        assert_eq!(reqs, vec![], "already at weight 0");
        assert_eq!(report.draining, 1);
        assert!(r.ipvs().set_conns(&k, ip("10.1.0.2"), 8080, 0, 0));
        let (_, reqs) = sync(&mut r, false, t0 + Duration::from_secs(1));
        assert_eq!(
            reqs,
            vec![Request::DeleteDestination(k, ip("10.1.0.2"), 8080)]
        );
    }

    #[test]
    fn removed_service_is_deleted_whole() {
        let a = vs(
            tcp("10.96.0.1", 80),
            &[("10.1.0.1", 8080, 1), ("10.1.0.2", 8080, 1)],
        );
        let b = vs(udp("10.96.0.1", 53), &[("10.1.0.1", 53, 1)]);
        let keep = vs(tcp("10.96.0.2", 80), &[("10.1.0.3", 8080, 1)]);
        let mut r = reconciler();
        let now = Instant::now();
        r.set_service(&name("web"), Some(&state(&[a.clone(), b.clone()])));
        r.set_service(&name("keep"), Some(&state(std::slice::from_ref(&keep))));
        sync(&mut r, false, now);
        // One destination draining: the delete still takes the service
        // whole, without reading the drain.
        r.set_service(
            &name("web"),
            Some(&state(&[vs(a.key(), &[("10.1.0.1", 8080, 1)]), b.clone()])),
        );
        sync(&mut r, false, now);
        assert!(r.ipvs().set_conns(&a.key(), ip("10.1.0.2"), 8080, 5, 0));
        r.ipvs().reset_calls();
        r.set_service(&name("web"), None);
        let (report, reqs) = sync(&mut r, false, now);
        assert_ok(&report);
        let mut want = vec![
            Request::DeleteService(a.key()),
            Request::DeleteService(b.key()),
        ];
        want.sort_by_key(|r| r.key());
        assert_eq!(reqs, want);
        assert_eq!(report.draining, 0);
        assert_eq!(r.ipvs().calls().destinations, 0);
        assert_eq!(r.ipvs().state(), kernel_of(&[&keep]));
    }

    #[test]
    fn failed_add_destination_is_retried_and_converges() {
        let a = vs(
            tcp("10.96.0.1", 80),
            &[("10.1.0.1", 8080, 1), ("10.1.0.2", 8080, 1)],
        );
        let mut r = reconciler();
        let failing = Request::AddDestination(a.key(), dest("10.1.0.2", 8080, 1));
        let f = failing.clone();
        r.ipvs().fail_when(libc::ENOMEM, 1, move |req| *req == f);
        r.set_service(&name("web"), Some(&state(std::slice::from_ref(&a))));
        let now = Instant::now();
        let (report, reqs) = sync(&mut r, false, now);
        assert_eq!(reqs.len(), 3);
        assert_eq!(report.failed.len(), 1);
        let failure = &report.failed[0];
        assert_eq!(failure.key, Some(a.key()));
        assert_eq!(failure.service, Some(name("web")));
        assert_eq!(failure.error.errno(), Some(libc::ENOMEM));
        assert!(!r.is_clean());
        let (report, reqs) = sync(&mut r, false, now);
        assert_ok(&report);
        assert_eq!(reqs, vec![failing], "only the failed request again");
        assert_eq!(r.ipvs().state(), kernel_of(&[&a]));
        let (_, reqs) = sync(&mut r, false, now);
        assert_eq!(reqs, vec![]);
    }

    /// A timeout leaves the outcome unknown: the virtual server is re-read
    /// before the next diff, which then finds nothing (or only the rest)
    /// to do.
    #[test]
    fn lost_answers_are_reread_not_resent_blindly() {
        let a = vs(
            tcp("10.96.0.1", 80),
            &[("10.1.0.1", 8080, 1), ("10.1.0.2", 8080, 1)],
        );
        let mut r = reconciler();
        r.ipvs()
            .lose_answer_when(1, |req| matches!(req, Request::AddDestination(..)));
        r.set_service(&name("web"), Some(&state(std::slice::from_ref(&a))));
        let now = Instant::now();
        let (report, reqs) = sync(&mut r, false, now);
        assert_eq!(reqs.len(), 3);
        assert_eq!(report.failed.len(), 1);
        assert!(matches!(report.failed[0].error, IpvsError::Timeout { .. }));
        assert_eq!(r.ipvs().state(), kernel_of(&[&a]), "applied all the same");
        r.ipvs().reset_calls();
        let (report, reqs) = sync(&mut r, false, now);
        assert_ok(&report);
        assert_eq!(reqs, vec![], "re-read: already there");
        assert_eq!(r.ipvs().calls().virtual_server, 1);
        let (_, reqs) = sync(&mut r, false, now);
        assert_eq!(reqs, vec![]);
        assert_eq!(r.ipvs().calls().virtual_server, 1, "read once");
    }

    #[test]
    fn failed_delete_service_leaves_it_whole_and_is_retried() {
        let a = vs(
            tcp("10.96.0.1", 80),
            &[("10.1.0.1", 8080, 1), ("10.1.0.2", 8080, 1)],
        );
        let mut r = reconciler();
        let now = Instant::now();
        r.set_service(&name("web"), Some(&state(std::slice::from_ref(&a))));
        sync(&mut r, false, now);
        r.ipvs().fail_when(libc::EBUSY, 1, |req| {
            matches!(req, Request::DeleteService(_))
        });
        r.set_service(&name("web"), None);
        let (report, reqs) = sync(&mut r, false, now);
        assert_eq!(reqs, vec![Request::DeleteService(a.key())]);
        assert_eq!(report.failed.len(), 1);
        assert_eq!(r.ipvs().state(), kernel_of(&[&a]), "still whole");
        let (report, reqs) = sync(&mut r, false, now);
        assert_ok(&report);
        assert_eq!(reqs, vec![Request::DeleteService(a.key())]);
        assert!(r.ipvs().is_empty());
    }

    /// Whichever request of a batch fails, the next sync sends exactly the
    /// requests that failed (the cache stayed true) and converges.
    #[test]
    fn any_failed_request_is_retried_exactly() {
        let a = vs(
            tcp("10.96.0.1", 80),
            &[("10.1.0.1", 8080, 1), ("10.1.0.2", 8080, 1)],
        );
        let b = vs(udp("10.96.0.10", 53), &[("10.1.0.3", 53, 1)]);
        let c = vs(tcp("10.96.0.3", 80), &[("10.1.0.4", 80, 1)]);
        let total = 7;
        for n in 1..=total {
            let mut r = reconciler();
            let now = Instant::now();
            r.set_service(&name("a"), Some(&state(std::slice::from_ref(&a))));
            r.set_service(&name("b"), Some(&state(std::slice::from_ref(&b))));
            r.set_service(&name("c"), Some(&state(std::slice::from_ref(&c))));
            r.ipvs().fail_nth(n, libc::ENOMEM);
            let report = r.sync(false, now);
            let log = r.ipvs().take_log();
            assert_eq!(log.len(), total as usize);
            let failed: Vec<Request> = log
                .into_iter()
                .filter(|l| l.result.is_err())
                .map(|l| l.request)
                .collect();
            // The root cause is reported, not the requests that failed
            // because of it.
            assert_eq!(report.failed.len(), 1, "request {n}");
            assert_eq!(report.failed[0].error.errno(), Some(libc::ENOMEM));
            assert_eq!(report.failed[0].key, failed[0].key(), "request {n}");
            let (report, reqs) = sync(&mut r, false, now);
            assert_ok(&report);
            assert_eq!(reqs, failed, "request {n}");
            assert_eq!(r.ipvs().state(), kernel_of(&[&a, &b, &c]), "request {n}");
        }
    }

    /// Someone else changes the kernel between two syncs.
    struct Race {
        what: &'static str,
        before: Option<VirtualServer>,
        interfere: fn(&mut FakeIpvs),
        after: Option<VirtualServer>,
        /// The follow-up after re-reading the virtual server.
        second_round: Vec<Request>,
    }

    #[test]
    fn lost_races_converge_after_rereading() {
        let k = tcp("10.96.0.1", 80);
        let u = udp("10.96.0.10", 53);
        let two = || vs(k, &[("10.1.0.1", 8080, 1), ("10.1.0.2", 8080, 1)]);
        let cases = vec![
            Race {
                what: "EEXIST: someone created the service, another scheduler",
                before: None,
                interfere: |f| {
                    f.insert(
                        Service::new(ServiceKey::tcp("10.96.0.1".parse().expect("ip"), 80), "wlc"),
                        vec![Destination::new("10.1.0.1".parse().expect("ip"), 8080)],
                    )
                },
                after: Some(two()),
                second_round: vec![Request::EditService(Service::new(k, "rr"))],
            },
            Race {
                what: "ENOENT: someone deleted the UDP destination we delete",
                before: Some(vs(u, &[("10.1.0.5", 53, 1), ("10.1.0.6", 53, 1)])),
                interfere: |f| {
                    f.remove_destination(
                        &ServiceKey::udp("10.96.0.10".parse().expect("ip"), 53),
                        "10.1.0.5".parse().expect("ip"),
                        53,
                    );
                },
                after: Some(vs(u, &[("10.1.0.6", 53, 1)])),
                second_round: vec![],
            },
            Race {
                what: "ENOENT: someone deleted the destination we edit",
                before: Some(two()),
                interfere: |f| {
                    f.remove_destination(
                        &ServiceKey::tcp("10.96.0.1".parse().expect("ip"), 80),
                        "10.1.0.2".parse().expect("ip"),
                        8080,
                    );
                },
                after: Some(vs(k, &[("10.1.0.1", 8080, 1), ("10.1.0.2", 8080, 9)])),
                second_round: vec![Request::AddDestination(k, dest("10.1.0.2", 8080, 9))],
            },
            Race {
                what: "ESRCH: someone deleted the service we delete",
                before: Some(two()),
                interfere: |f| {
                    f.remove(&ServiceKey::tcp("10.96.0.1".parse().expect("ip"), 80));
                },
                after: None,
                second_round: vec![],
            },
            Race {
                what: "ESRCH: someone deleted the service we edit",
                before: Some(two()),
                interfere: |f| {
                    f.remove(&ServiceKey::tcp("10.96.0.1".parse().expect("ip"), 80));
                },
                after: Some(vs_with(
                    Service::new(k, "lc"),
                    &[("10.1.0.1", 8080, 1), ("10.1.0.2", 8080, 1)],
                )),
                second_round: add(&vs_with(
                    Service::new(k, "lc"),
                    &[("10.1.0.1", 8080, 1), ("10.1.0.2", 8080, 1)],
                )),
            },
        ];
        for c in cases {
            let mut r = reconciler();
            let now = Instant::now();
            if let Some(b) = &c.before {
                r.set_service(&name("svc"), Some(&state(std::slice::from_ref(b))));
                sync(&mut r, false, now);
            }
            (c.interfere)(r.ipvs());
            r.set_service(
                &name("svc"),
                c.after
                    .as_ref()
                    .map(|a| state(std::slice::from_ref(a)))
                    .as_ref(),
            );
            let report = r.sync(false, now);
            assert_ok(&report);
            assert_eq!(report.races, 1, "{}", c.what);
            let log = r.ipvs().take_log();
            let first_failure = log
                .iter()
                .position(|l| l.result.is_err())
                .unwrap_or_else(|| panic!("{}: nothing lost a race", c.what));
            // The second round is what follows the first batch.
            let first_batch =
                log.iter().filter(|l| l.request.key().is_some()).count() - c.second_round.len();
            assert!(first_failure < first_batch, "{}", c.what);
            let second: Vec<Request> = log[first_batch..]
                .iter()
                .map(|l| l.request.clone())
                .collect();
            assert_eq!(second, c.second_round, "{}", c.what);
            let want: Vec<&VirtualServer> = c.after.iter().collect();
            assert_eq!(r.ipvs().state(), kernel_of(&want), "{}", c.what);
            let (_, reqs) = sync(&mut r, false, now);
            assert_eq!(reqs, vec![], "{}: converged", c.what);
        }
    }

    #[test]
    fn conflicting_claims_first_name_wins_whatever_the_order() {
        let k = tcp("10.96.0.1", 80);
        let x = vs_with(Service::new(k, "rr"), &[("10.1.0.1", 80, 1)]);
        let y = vs_with(Service::new(k, "lc"), &[("10.1.0.2", 80, 1)]);
        for order in [["x", "y"], ["y", "x"]] {
            let mut r = reconciler();
            let now = Instant::now();
            for n in order {
                let v = if n == "x" { &x } else { &y };
                r.set_service(&name(n), Some(&state(std::slice::from_ref(v))));
            }
            let (report, _) = sync(&mut r, false, now);
            assert_ok(&report);
            let conflict = Conflict {
                key: k,
                winner: name("x"),
                losers: vec![name("y")],
            };
            assert_eq!(report.conflicts, vec![conflict.clone()], "{order:?}");
            assert_eq!(r.conflicts(), vec![conflict]);
            assert_eq!(r.ipvs().state(), kernel_of(&[&x]), "{order:?}");
            // The winner leaves: the other takes the key over.
            r.set_service(&name("x"), None);
            let (report, reqs) = sync(&mut r, false, now);
            assert!(report.conflicts.is_empty());
            assert_eq!(
                reqs,
                vec![
                    Request::EditService(Service::new(k, "lc")),
                    Request::AddDestination(k, dest("10.1.0.2", 80, 1)),
                    Request::EditDestination(k, dest("10.1.0.1", 80, 0)),
                ],
                "{order:?}"
            );
        }
    }

    #[test]
    fn full_sync_repairs_drift_incremental_does_not_look() {
        let a = vs(tcp("10.96.0.1", 80), &[("10.1.0.1", 8080, 1)]);
        let mut r = reconciler();
        let now = Instant::now();
        r.set_service(&name("web"), Some(&state(std::slice::from_ref(&a))));
        sync(&mut r, false, now);
        r.ipvs()
            .insert_destination(&a.key(), dest("10.1.0.1", 8080, 7));
        let (_, reqs) = sync(&mut r, false, now);
        assert_eq!(reqs, vec![]);
        let (_, reqs) = sync(&mut r, true, now);
        assert_eq!(
            reqs,
            vec![Request::EditDestination(a.key(), dest("10.1.0.1", 8080, 1))]
        );
    }

    #[test]
    fn incremental_sync_costs_the_change_not_the_total() {
        const N: u32 = 10_000;
        let key =
            |i: u32| ServiceKey::tcp(IpAddr::V4(std::net::Ipv4Addr::from(0x0a60_0000 + i)), 80);
        let svc = |i: u32, w: u32| {
            let addr = IpAddr::V4(std::net::Ipv4Addr::from(0x0a01_0000 + i));
            VirtualServer {
                service: Service::new(key(i), "rr"),
                destinations: vec![
                    Destination::new(addr, 8080).weight(w),
                    Destination::new(addr, 8081).weight(1),
                ],
                kind: VsKind::ClusterIp,
                masquerade: false,
                local_only: false,
                source_ranges: None,
            }
        };
        let mut r = reconciler();
        let now = Instant::now();
        for i in 0..N {
            r.set_service(&name(&format!("s{i}")), Some(&state(&[svc(i, 1)])));
        }
        let report = r.sync(false, now);
        assert_ok(&report);
        assert_eq!(report.requests, 3 * N as usize);
        assert_eq!(r.ipvs().len(), N as usize);
        r.ipvs().take_log();
        r.ipvs().reset_calls();

        let cases: [(&str, u32, Option<u32>, usize); 3] = [
            ("weight", 4321, Some(3), 1),
            ("unchanged", 17, Some(1), 0),
            ("removed", 9999, None, 1),
        ];
        for (what, i, weight, requests) in cases {
            let st = weight.map(|w| state(&[svc(i, w)]));
            r.set_service(&name(&format!("s{i}")), st.as_ref());
            let report = r.sync(false, now);
            assert_ok(&report);
            assert_eq!(report.examined, requests, "{what}");
            assert_eq!(report.requests, requests, "{what}");
            let calls = r.ipvs().calls();
            assert_eq!(
                (
                    calls.list,
                    calls.destinations,
                    calls.virtual_server,
                    calls.requests
                ),
                (0, 0, 0, requests),
                "{what}"
            );
            r.ipvs().reset_calls();
        }
        assert_eq!(r.ipvs().len(), N as usize - 1);
    }

    #[test]
    fn exclusion_prefixes() {
        let cases = [
            ("10.0.0.1", "10.0.0.0", 8, true),
            ("11.0.0.1", "10.0.0.0", 8, false),
            ("192.0.2.255", "192.0.2.0", 24, true),
            ("192.0.3.0", "192.0.2.0", 24, false),
            ("10.0.0.1", "10.0.0.1", 32, true),
            ("10.0.0.2", "10.0.0.1", 32, false),
            ("10.0.0.2", "0.0.0.0", 0, true),
            ("10.0.0.2", "::", 0, false),
            ("fd00::1", "fd00::", 64, true),
            ("fd00:0:0:1::1", "fd00::", 64, false),
            ("fd00::1", "fd00::1", 200, true),
        ];
        for (addr, net, len, want) in cases {
            assert_eq!(
                in_prefix(&ip(addr), &ip(net), len),
                want,
                "{addr} in {net}/{len}"
            );
        }
        let o = ReconcileOptions {
            exclude_cidrs: vec![(ip("10.0.0.0"), 8)],
            drain_timeout: Some(DRAIN),
        };
        assert!(o.excludes(&tcp("10.2.3.4", 80)));
        assert!(!o.excludes(&ServiceKey::Fwmark {
            family: ipvs_netlink::Family::Inet,
            mark: 1
        }));
    }

    #[test]
    fn fake_answers_with_the_kernels_errnos() {
        let k = tcp("10.96.0.1", 80);
        let d = dest("10.1.0.1", 80, 1);
        let steps: Vec<(Request, Result<(), i32>)> = vec![
            (
                Request::EditService(Service::new(k, "rr")),
                Err(libc::ESRCH),
            ),
            (Request::DeleteService(k), Err(libc::ESRCH)),
            (Request::AddDestination(k, d.clone()), Err(libc::ESRCH)),
            (Request::AddService(Service::new(k, "rr")), Ok(())),
            (
                Request::AddService(Service::new(k, "rr")),
                Err(libc::EEXIST),
            ),
            (Request::EditDestination(k, d.clone()), Err(libc::ENOENT)),
            (
                Request::DeleteDestination(k, d.addr, d.port),
                Err(libc::ENOENT),
            ),
            (Request::AddDestination(k, d.clone()), Ok(())),
            (Request::AddDestination(k, d.clone()), Err(libc::EEXIST)),
            (Request::EditDestination(k, d.clone().weight(3)), Ok(())),
            (Request::DeleteDestination(k, d.addr, d.port), Ok(())),
            (Request::DeleteService(k), Ok(())),
        ];
        let mut fake = FakeIpvs::new();
        let reqs: Vec<Request> = steps.iter().map(|(r, _)| r.clone()).collect();
        let results = fake.apply(&reqs);
        for ((req, want), got) in steps.iter().zip(&results) {
            assert_eq!(
                got.as_ref().map_err(|e| e.errno().unwrap_or(0)).copied(),
                *want,
                "{req:?}"
            );
        }
        assert_eq!(fake.log().len(), steps.len());
        assert!(fake.is_empty());
        // Faults: the 2nd next request, and each matching one.
        fake.fail_nth(2, libc::EIO);
        fake.fail_when(libc::ENOMEM, 1, |r| matches!(r, Request::EditService(_)));
        let results = fake.apply(&[
            Request::AddService(Service::new(k, "rr")),
            Request::AddDestination(k, d.clone()),
            Request::EditService(Service::new(k, "wrr")),
            Request::EditService(Service::new(k, "wrr")),
        ]);
        let errnos: Vec<Option<i32>> = results
            .iter()
            .map(|r| r.as_ref().err().and_then(IpvsError::errno))
            .collect();
        assert_eq!(
            errnos,
            vec![None, Some(libc::EIO), Some(libc::ENOMEM), None]
        );
        assert_eq!(
            fake.get(&k).map(|(s, d)| (s.scheduler, d.len())),
            Some(("wrr".into(), 0))
        );
    }
}
