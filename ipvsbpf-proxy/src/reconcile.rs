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
//! [`ReconcileOptions::drain_timeout`]. UDP and SCTP endpoints go at once:
//! a datagram flow has no end IPVS could wait for.
//!
//! The kernel sits behind [`IpvsApi`]: [`ipvs_netlink::Ipvs`] in the
//! daemon, [`FakeIpvs`] (an in-memory IPVS with the kernel's errnos and
//! fault injection) in tests, this module's and other modules'.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipvs_netlink::{
    Destination, Error as IpvsError, ErrorKind, ForwardMethod, Ipvs, Protocol, Request, Service,
    ServiceKey,
};

use crate::desired::{ServiceName, ServiceState, VirtualServer};

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
    /// before it is deleted with connections left.
    pub drain_timeout: Duration,
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

/// Programs IPVS to match the recorded desired state; see the module docs.
pub struct Reconciler<I: IpvsApi> {
    ipvs: I,
    opts: ReconcileOptions,
    /// Each Service's virtual servers by key.
    desired: HashMap<ServiceName, BTreeMap<ServiceKey, VirtualServer>>,
    /// Who wants each key; the first name owns it.
    claims: HashMap<ServiceKey, BTreeSet<ServiceName>>,
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
        let mut new = BTreeMap::new();
        for vs in state.iter().flat_map(|s| s.virtual_servers.iter()) {
            new.entry(vs.key()).or_insert_with(|| vs.clone());
        }
        let old = self.desired.remove(name).unwrap_or_default();
        if old == new {
            if !new.is_empty() {
                self.desired.insert(name.clone(), new);
            }
            return;
        }
        for key in old.keys().filter(|k| !new.contains_key(*k)) {
            if let Some(c) = self.claims.get_mut(key) {
                c.remove(name);
                if c.is_empty() {
                    self.claims.remove(key);
                }
            }
        }
        for key in new.keys() {
            self.claims.entry(*key).or_default().insert(name.clone());
        }
        for key in old.keys().chain(new.keys()) {
            if old.get(key) != new.get(key) {
                self.dirty.insert(*key);
            }
        }
        self.changed_services.insert(name.clone());
        if !new.is_empty() {
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
        self.owner(key)
            .and_then(|n| self.desired.get(n))
            .and_then(|m| m.get(key))
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
                .map(|d| (dest_id(d), (d.weight, d.active_conns + d.inactive_conns)))
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
                        let expired =
                            now.saturating_duration_since(*since) >= self.opts.drain_timeout;
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
        let mut results = self.ipvs.apply(&requests).into_iter();
        let mut hard = BTreeSet::new();
        let mut failures = Vec::new();
        for (req, effect) in requests.iter().zip(effects) {
            let result = results.next().unwrap_or_else(|| {
                Err(IpvsError::Socket(std::io::Error::other(format!(
                    "{} {}: the kernel interface returned no result",
                    req.op(),
                    req.object()
                ))))
            });
            let Some(key) = req.key() else { continue };
            match result {
                Ok(()) => self.record(req, effect, now, report),
                Err(e) if !last && lost_race(req, &e) => {
                    races.insert(key);
                }
                Err(e) => {
                    hard.insert(key);
                    failures.push((key, e));
                }
            }
        }
        // A key with a hard failure is not re-read now: the requests of
        // the batch that depend on the failed one failed for the same
        // cause, and the next sync diffs it again anyway.
        for key in &hard {
            races.remove(key);
        }
        for (key, error) in failures {
            // No errno: the request may or may not have been applied.
            let unknown = error.kind().is_none();
            self.fail(report, key, error, unknown);
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
    match (req, e.kind()) {
        (Request::AddService(_) | Request::AddDestination(..), Some(ErrorKind::AlreadyExists)) => {
            true
        }
        (
            Request::DeleteService(_)
            | Request::EditService(_)
            | Request::AddDestination(..)
            | Request::EditDestination(..)
            | Request::DeleteDestination(..),
            Some(ErrorKind::NoSuchService),
        ) => true,
        (
            Request::EditDestination(..) | Request::DeleteDestination(..),
            Some(ErrorKind::NotFound),
        ) => true,
        _ => false,
    }
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

struct Fault {
    matches: FaultMatch,
    errno: i32,
    /// How many more requests it fails.
    remaining: usize,
}

/// One request [`FakeIpvs`] was asked to apply, with its outcome (the errno
/// of a refusal).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Logged {
    pub request: Request,
    pub result: Result<(), i32>,
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
                d.active_conns = active;
                d.inactive_conns = inactive;
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
            errno,
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
            errno,
            remaining: times,
        });
    }

    /// Drops every pending fault.
    pub fn clear_faults(&mut self) {
        self.faults.clear();
    }

    fn injected(&mut self, req: &Request) -> Option<i32> {
        let seq = self.seen;
        let hit = self.faults.iter_mut().find_map(|f| {
            let m = f.remaining > 0
                && match &mut f.matches {
                    FaultMatch::Nth(n) => *n == seq,
                    FaultMatch::When(pred) => pred(req),
                };
            m.then(|| {
                f.remaining -= 1;
                f.errno
            })
        });
        self.faults.retain(|f| f.remaining > 0);
        hit
    }

    /// One request against the model, with the kernel's errnos.
    fn run(&mut self, req: &Request) -> Result<(), i32> {
        self.seen += 1;
        if let Some(errno) = self.injected(req) {
            return Err(errno);
        }
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
                let (active, inactive) = (have.active_conns, have.inactive_conns);
                *have = d.config();
                have.active_conns = active;
                have.inactive_conns = inactive;
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
                let result = self.run(req);
                self.log.push(Logged {
                    request: req.clone(),
                    result,
                });
                result.map_err(|errno| kernel_error(req, errno))
            })
            .collect()
    }
}
