//! One worker's part in health checking: it owns the shared record's handle, this worker's copy
//! of it, the prober and its lease, and the [`Selection`] that copy gives.
//!
//! Requests read no health from shared data: they use the selection, which changes only when
//! the record does (another worker or this one wrote it: [`Monitor::tick`] follows the record's
//! version), when an ejection runs out, or when this worker ejects a backend itself
//! ([`Monitor::report`]: it stops sending there at once, the others on their next tick).
//!
//! Every change of state comes back to the caller, to be logged: a backend's [`Change`], and the
//! selection's [`Mode`] before and after. A new selection comes back only when the set of
//! backends requests may go to changed, so the caller rebuilds what it lays out over that set
//! (a round-robin cycle, prefix sums) only then, not on every failed request.

use std::cell::RefCell;
use std::rc::Rc;

use super::lease::Lease;
use super::machine::{self, Change, ProbeResult};
use super::prober::Prober;
use super::record::{HealthRecord, HealthStore};
use super::selection::{Mode, Selection};
use super::stale;
use crate::config::{Config, HealthCheckConfig, InitialState};
use crate::store::{SetError, SharedStore};

/// What changed when this worker adopted a newer health record.
#[derive(Debug, Default)]
pub struct Followed {
    /// The selection's mode changed from the first to the second.
    pub mode_change: Option<(Mode, Mode)>,
    /// The new selection, when the backends requests may go to changed.
    pub selection: Option<Rc<Selection>>,
}

/// What one tick did and asks for.
#[derive(Debug, Default)]
pub struct MonitorTick {
    /// Backends to probe now (only on the VM holding the probe lease).
    pub probes: Vec<usize>,
    /// Health changes this VM wrote, per backend index.
    pub changes: Vec<(usize, Change)>,
    /// What following the record changed.
    pub followed: Followed,
    /// This VM found the record stale (its latest probe answer this many ms old, see
    /// [`stale`]) and restarted it in the initial state.
    pub restarted_stale_ms: Option<u64>,
}

/// What one passive report did.
#[derive(Debug, Default)]
pub struct MonitorReport {
    /// The backend's change of health, if any (an ejection).
    pub change: Option<Change>,
    /// What following the record this VM wrote changed.
    pub followed: Followed,
}

/// Where a monitor keeps its state in shared data.
#[derive(Debug)]
pub struct MonitorKeys {
    /// The health record (its version goes under this key + `.version`).
    pub record: String,
    /// The probe lease.
    pub lease: String,
}

/// This worker's copy of the record and when health work is next due.
#[derive(Debug)]
struct View {
    record: HealthRecord,
    /// Version of the record last read.
    seen_version: Option<u64>,
    /// When the tick runs more often than health needs (to write in-flight releases), the
    /// health work waits for this time: its period, and its shared-data reads, stay health's.
    next_due_ms: u64,
    selection: Rc<Selection>,
}

/// Health checking of one configuration on one worker.
#[derive(Debug)]
pub struct Monitor {
    store: HealthStore,
    /// Probes and the lease that says whether this VM sends them (with active checks).
    prober: Option<(Prober, Lease)>,
    /// Health's own tick period.
    period_ms: u64,
    /// Whether the worker ticks more often than health needs, so health work skips ticks.
    throttled: bool,
    /// Backend indices that are not backups.
    primaries: Vec<usize>,
    /// Whether a change of any backend's health makes a new selection, even one that leaves
    /// the selection's own backends as they were: traffic-splitting subsets are laid out from
    /// it ([`Selection::within`]).
    every_change: bool,
    view: RefCell<View>,
}

impl Monitor {
    /// The monitor for `config`, or `None` when it checks no health. `keys` name the record and
    /// the probe lease in shared data, `vm_id` names this VM in the lease, `period_ms` is how
    /// often health work wants to run and `tick_ms` how often the worker calls [`Self::tick`].
    pub fn new(
        config: &Config,
        keys: MonitorKeys,
        vm_id: u64,
        period_ms: u64,
        tick_ms: u64,
    ) -> Option<Self> {
        if config.health_check.is_none() && config.outlier_detection.is_none() {
            return None;
        }
        let backends = config.backends.len();
        let initially_healthy = config
            .health_check
            .as_ref()
            .is_none_or(|check| check.initial_state == InitialState::Healthy);
        let prober = config.health_check.as_ref().map(|_| {
            (
                Prober::new(backends),
                Lease::new(keys.lease, vm_id, period_ms * 5 / 2),
            )
        });
        let record = HealthRecord::initial(backends, initially_healthy);
        let selection = Rc::new(Selection::build(config, Some(&record), 0));
        Some(Self {
            store: HealthStore::new(keys.record, backends, initially_healthy),
            prober,
            period_ms,
            throttled: period_ms > tick_ms,
            primaries: config
                .backends
                .iter()
                .enumerate()
                .filter(|(_, b)| !b.backup)
                .map(|(i, _)| i)
                .collect(),
            every_change: config.split.is_some(),
            view: RefCell::new(View {
                record,
                seen_version: None,
                next_due_ms: 0,
                selection,
            }),
        })
    }

    /// The shared-data keys: the record, its version and, with active checks, the lease.
    pub fn keys(&self) -> Vec<&str> {
        let mut keys = self.store.keys().to_vec();
        keys.extend(self.prober.as_ref().map(|(_, lease)| lease.key()));
        keys
    }

    /// Creates the record unless it exists (configure time).
    pub fn create_shared_keys(&self, store: &dyn SharedStore) -> Result<(), SetError> {
        self.store.ensure_created(store)
    }

    /// The backends requests may go to now, as this worker sees them.
    pub fn selection(&self) -> Rc<Selection> {
        Rc::clone(&self.view.borrow().selection)
    }

    /// The record as shared data holds it now (for the status page); this worker's copy when
    /// the shared one is missing or fails its check.
    pub fn read(&self, store: &dyn SharedStore) -> HealthRecord {
        self.store
            .read_valid(store)
            .unwrap_or_else(|| self.view.borrow().record.clone())
    }

    /// Whether each backend may take requests (healthy and not ejected) at `now_ms`, by this
    /// worker's copy of the record.
    pub fn eligible(&self, now_ms: u64) -> Vec<bool> {
        self.view
            .borrow()
            .record
            .backends
            .iter()
            .map(|backend| backend.eligible(now_ms))
            .collect()
    }

    /// Whether a success on `index` has nothing to reset: no failures counted against it.
    /// The common case, so it reads nothing but this worker's copy.
    pub fn clean(&self, index: usize) -> bool {
        self.view
            .borrow()
            .record
            .backends
            .get(index)
            .is_none_or(|b| b.passive_failures == 0)
    }

    /// Passive health: the request that went to `index` ended, `failed` or not, at `now_ms`.
    /// Writes shared data; call it only for a failure or for a success after failures (see
    /// [`Self::clean`]).
    pub fn report(
        &self,
        config: &Config,
        store: &dyn SharedStore,
        index: usize,
        failed: bool,
        now_ms: u64,
    ) -> MonitorReport {
        let Some(outlier) = &config.outlier_detection else {
            return MonitorReport::default();
        };
        let mut change = None;
        let known = self.view.borrow().record.clone();
        let written = self.store.update_over(store, &known, |record| {
            let ejected = self
                .primaries
                .iter()
                .filter(|&&i| record.backends.get(i).is_some_and(|b| b.is_ejected(now_ms)))
                .count();
            let may_eject =
                machine::may_eject(ejected, self.primaries.len(), outlier.max_ejection_percent);
            let Some(backend) = record.backends.get_mut(index) else {
                return false;
            };
            let before = *backend;
            change = machine::record_request(backend, failed, now_ms, outlier, may_eject);
            *backend != before
        });
        let mut report = MonitorReport {
            change,
            followed: Followed::default(),
        };
        // The worker that ejects stops sending at once; the others follow on their next tick.
        if let (Some(Change::Ejected { .. }), Some(record)) = (change, written) {
            report.followed = self.follow(config, record, now_ms);
        }
        report
    }

    /// The periodic work: write probe answers, follow the shared record when it changed (or an
    /// ejection ran out), and, on the VM holding the lease, say which probes are due.
    pub fn tick(&self, config: &Config, store: &dyn SharedStore, now_ms: u64) -> MonitorTick {
        let mut tick = MonitorTick::default();
        if self.throttled {
            let mut view = self.view.borrow_mut();
            if now_ms < view.next_due_ms {
                return tick;
            }
            view.next_due_ms = now_ms.saturating_add(self.period_ms);
        }
        if let (Some((prober, _)), Some(check)) = (&self.prober, &config.health_check) {
            let answers = prober.answers();
            if !answers.is_empty() {
                let mut changes = Vec::new();
                let known = self.view.borrow().record.clone();
                let written = self.store.update_over(store, &known, |record| {
                    changes.clear();
                    for answer in &answers {
                        if let Some(backend) = record.backends.get_mut(answer.index) {
                            if let Some(change) =
                                machine::record_probe(backend, answer.result, answer.at_ms, check)
                            {
                                changes.push((answer.index, change));
                            }
                        }
                    }
                    true
                });
                if written.is_some() {
                    prober.written(answers.len());
                    tick.changes = changes;
                }
            }
        }
        let version = self.store.version(store);
        let (seen, expired) = {
            let view = self.view.borrow();
            (view.seen_version, now_ms >= view.selection.valid_until_ms)
        };
        if version.is_some() && (version != seen || expired) {
            // A record that fails its check (garbage) is not followed: this worker keeps its
            // last good copy until a writer rebuilds the record from its own.
            let record = self
                .store
                .read_valid(store)
                .unwrap_or_else(|| self.view.borrow().record.clone());
            tick.followed = self.follow(config, record, now_ms);
            self.view.borrow_mut().seen_version = version;
        }
        if let (Some((prober, lease)), Some(check)) = (&self.prober, &config.health_check) {
            if lease.hold(store, now_ms) {
                tick.restarted_stale_ms = self.restart_if_stale(store, check, now_ms);
                tick.probes = prober.due(&self.view.borrow().record, check, now_ms);
            }
        }
        tick
    }

    /// Adopts the shared record as this worker's view now, rather than on the first tick:
    /// call at configure time. A new configuration over the same backends (a reload) then
    /// starts from the health the record holds, not from `initial_state` for up to a tick
    /// (which would send requests to a backend that is down or ejected, or, with
    /// `initial_state: unhealthy`, refuse every request). Two shared-data reads.
    ///
    /// A record that fails its check, or one nobody kept for long (see [`stale`]: the prober
    /// restarts it on its first tick), is not adopted: the worker starts from `initial_state`,
    /// which is what the record will say once rebuilt.
    pub fn catch_up(&self, config: &Config, store: &dyn SharedStore, now_ms: u64) -> Followed {
        let Some(version) = self.store.version(store) else {
            return Followed::default();
        };
        let Some(record) = self.store.read_valid(store) else {
            return Followed::default();
        };
        let stale = config
            .health_check
            .as_ref()
            .and_then(|check| stale::stale_for_ms(&record, check, now_ms));
        if stale.is_some() {
            return Followed::default();
        }
        let followed = self.follow(config, record, now_ms);
        self.view.borrow_mut().seen_version = Some(version);
        followed
    }

    /// On the prober: a record nobody kept (see [`stale`]) is restarted in the initial state;
    /// every worker follows it on its next tick (the version changes). Reads only this
    /// worker's copy unless that copy is stale.
    fn restart_if_stale(
        &self,
        store: &dyn SharedStore,
        check: &HealthCheckConfig,
        now_ms: u64,
    ) -> Option<u64> {
        stale::stale_for_ms(&self.view.borrow().record, check, now_ms)?;
        let initially_healthy = check.initial_state == InitialState::Healthy;
        let mut age = None;
        self.store.update(store, |record| {
            age = stale::stale_for_ms(record, check, now_ms);
            if age.is_some() {
                *record = HealthRecord::initial(record.backends.len(), initially_healthy);
            }
            age.is_some()
        })?;
        age
    }

    /// A probe of `index` went out with `token`.
    pub fn probe_sent(&self, index: usize, token: u32, now_ms: u64) {
        if let Some((prober, _)) = &self.prober {
            prober.sent(index, token, now_ms);
        }
    }

    /// A probe of `index` could not be sent (Envoy refused the call): a failed probe. Returns
    /// whether it is the first refusal since a probe of `index` was last sent.
    pub fn probe_not_sent(&self, index: usize, now_ms: u64) -> bool {
        self.prober
            .as_ref()
            .is_some_and(|(prober, _)| prober.not_sent(index, now_ms))
    }

    /// Envoy called back for probe `token`; written to shared data on the next tick. Returns
    /// the backend, or `None` when the token is not a probe of this monitor.
    pub fn probe_answered(&self, token: u32, result: ProbeResult, now_ms: u64) -> Option<usize> {
        let (prober, _) = self.prober.as_ref()?;
        prober.answered(token, result, now_ms)
    }

    /// Adopts `record` as this worker's view of health. The selection is replaced only when
    /// the backends it allows, or its mode, changed (or, with traffic splitting, any backend's
    /// health); otherwise only its lifetime is updated.
    fn follow(&self, config: &Config, record: HealthRecord, now_ms: u64) -> Followed {
        let next = Selection::build(config, Some(&record), now_ms);
        let mut view = self.view.borrow_mut();
        view.record = record;
        let before = view.selection.mode;
        let mode_change = (before != next.mode).then_some((before, next.mode));
        let same = next.mode == before
            && next.population == view.selection.population
            && (!self.every_change || next.same_health(&view.selection));
        if same {
            if next.valid_until_ms != view.selection.valid_until_ms {
                view.selection = Rc::new(next);
            }
            return Followed {
                mode_change,
                selection: None,
            };
        }
        let next = Rc::new(next);
        view.selection = Rc::clone(&next);
        Followed {
            mode_change,
            selection: Some(next),
        }
    }
}
