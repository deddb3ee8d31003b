//! The per-request decision: which backend's cluster goes into the cluster header.
//!
//! A [`Balancer`] is built once per configuration (ring, rotation and prefix sums are laid out
//! there, never per request) and asked once per request with the shared store that keeps the
//! global state and a view of the request. Health reaches requests through a [`Selection`]
//! rebuilt on the root context's tick when the shared health record changes, so a request
//! reads no health from shared data. Shared-data cost per request: round-robin one ticket (a
//! get and a CAS set); least-request and bounded-load hashing one get and one CAS set to pick,
//! with the releases of earlier requests folded in (a worker gone idle writes them on its
//! tick); random and plain hashing none;
//! passive health one get and one set when a request fails (or succeeds after failures).

use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::rc::Rc;

use fastrand::Rng;

use crate::config::{Config, ConfigError, HashSource, OnMissingKey, Policy};
use crate::health::lease::Lease;
use crate::health::machine::{self, Change, ProbeResult};
use crate::health::prober::Prober;
use crate::health::{HealthRecord, HealthStore, Mode, Selection};
use crate::inflight::{Commit, InflightTable, Snapshot};
use crate::json_out::JsonWriter;
use crate::policy::round_robin::RotationError;
use crate::policy::{Ketama, LeastRequest, PeakEwma};
use crate::request_key::{self, RequestView};
use crate::store::{SetError, SharedStore};
use crate::ticket::{Ticket, TicketCounter};

/// How the backend was chosen (for debug logs and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Round-robin ticket.
    Ticket(Ticket),
    /// Weighted random.
    Random,
    /// Least request; `Deferred` when the in-flight count could not be written yet.
    LeastRequest(Commit),
    /// The key hashed to this point of the ring; `skipped` backends were passed along it
    /// (unhealthy, or over the bounded load).
    Hash {
        /// The key's ketama hash.
        hash: u32,
        /// Backends passed along the ring.
        skipped: u32,
    },
    /// A hashing policy fell back to round-robin: the request had no key, or no backend the
    /// selection allows owns a point on the ring.
    HashFallback(Ticket),
}

/// The backend chosen for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice<'a> {
    /// Index of the backend in the configuration.
    pub index: usize,
    /// Its cluster name: the value for the cluster header.
    pub cluster: &'a str,
    /// Whether an in-flight count was taken, to give back with [`Balancer::release`] when the
    /// stream ends.
    pub counted: bool,
    /// How it was chosen.
    pub reason: Reason,
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision<'a> {
    /// Send it to this backend.
    Route(Choice<'a>),
    /// Answer locally: no key where one is required, or no backend healthy.
    Reject {
        /// HTTP status.
        status: u32,
        /// Response body, one line.
        body: &'a str,
        /// Seconds for a `retry-after` header, when worth retrying.
        retry_after: Option<u32>,
    },
}

/// A probe the filter should send now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeRequest<'a> {
    /// Backend index.
    pub index: usize,
    /// The cluster to send it through.
    pub cluster: &'a str,
}

/// What one tick did and asks for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tick<'a> {
    /// Probes to send (only on the VM holding the probe lease).
    pub probes: Vec<ProbeRequest<'a>>,
    /// Health changes this VM wrote, per backend index.
    pub changes: Vec<(usize, Change)>,
    /// The selection mode changed from the first to the second.
    pub mode_change: Option<(Mode, Mode)>,
}

/// The policy-specific part, built once per configuration.
#[derive(Debug)]
enum Selector {
    RoundRobin,
    Random,
    LeastRequest(LeastRequest),
    Hash(Ketama),
}

/// Health state of one configuration on this VM.
#[derive(Debug)]
struct Health {
    store: HealthStore,
    /// Probes and the lease that says whether this VM sends them (with active checks).
    prober: Option<(Prober, Lease)>,
    /// Version of the record last read.
    seen_version: Cell<Option<u64>>,
    /// The record last read.
    record: RefCell<HealthRecord>,
    /// When the tick runs more often than health needs (to write in-flight releases), the
    /// health work waits for this time: its period, and its shared-data reads, stay health's.
    next_due_ms: Cell<u64>,
    /// Health's own tick period.
    period_ms: u64,
}

/// Everything needed to choose backends under one configuration.
#[derive(Debug)]
pub struct Balancer {
    config: Config,
    selector: Selector,
    /// The global order: the round-robin policy, and the fallback for requests without a key.
    tickets: TicketCounter,
    /// In-flight counts, for least-request and bounded-load hashing.
    inflight: Option<InflightTable>,
    /// This worker's latency estimates, for least-request with `latency_decay_ms`.
    latency: Option<PeakEwma>,
    health: Option<Health>,
    selection: RefCell<Rc<Selection>>,
    rng: RefCell<Rng>,
    missing_key_body: String,
    tick_period_ms: u64,
}

/// Body of the local 503 when no backend may take a request.
pub const ALL_DOWN_BODY: &str = "eisodos: no healthy backend\n";

impl Balancer {
    /// Prepares `config` for requests. `namespace` keeps this filter's shared-data keys apart
    /// from other eisodos filters in the same VM (the plugin name is a good one); `seed` seeds
    /// this VM's random source and names it in the probe lease.
    pub fn new(config: Config, namespace: &str, seed: u64) -> Result<Self, ConfigError> {
        let weights: Vec<u32> = config.backends.iter().map(|b| b.weight).collect();
        let selector = match config.policy {
            Policy::RoundRobin => Selector::RoundRobin,
            Policy::Random => Selector::Random,
            Policy::LeastRequest => {
                Selector::LeastRequest(LeastRequest::new(&weights, config.least_request))
            }
            Policy::ConsistentHash | Policy::IpHash => Selector::Hash(Ketama::new(
                config
                    .backends
                    .iter()
                    .map(|b| (b.cluster.as_str(), b.weight)),
            )),
        };
        let fingerprint = fingerprint(&config);
        let counts_in_flight = config.policy == Policy::LeastRequest
            || (config.policy.hashes() && config.bounded_load_factor.is_some());
        let inflight = counts_in_flight.then(|| {
            InflightTable::new(
                format!("eisodos.{namespace}.inflight.{fingerprint}"),
                config.backends.len(),
            )
        });
        let health_tick_ms = health_tick_ms(&config);
        let tick_period_ms = tick_period_ms(health_tick_ms, counts_in_flight);
        let mut rng = Rng::with_seed(seed);
        let vm_id = rng.u64(1..);
        let health =
            (config.health_check.is_some() || config.outlier_detection.is_some()).then(|| {
                let initially_healthy = config.health_check.as_ref().is_none_or(|check| {
                    check.initial_state == crate::config::InitialState::Healthy
                });
                let store = HealthStore::new(
                    format!("eisodos.{namespace}.health.{fingerprint}"),
                    config.backends.len(),
                    initially_healthy,
                );
                let prober = config.health_check.as_ref().map(|_| {
                    (
                        Prober::new(config.backends.len()),
                        Lease::new(
                            format!("eisodos.{namespace}.probe_lease.{fingerprint}"),
                            vm_id,
                            health_tick_ms * 5 / 2,
                        ),
                    )
                });
                Health {
                    record: RefCell::new(HealthRecord::initial(
                        config.backends.len(),
                        initially_healthy,
                    )),
                    store,
                    prober,
                    seen_version: Cell::new(None),
                    next_due_ms: Cell::new(0),
                    period_ms: health_tick_ms,
                }
            });
        let initial_record = health.as_ref().map(|h| h.record.borrow().clone());
        let selection =
            Selection::build(&config, initial_record.as_ref(), 0).map_err(rotation_error)?;
        let missing_key_body = missing_key_body(&config);
        Ok(Self {
            selector,
            tickets: TicketCounter::with_batch(
                format!("eisodos.{namespace}.rr_ticket"),
                config.round_robin.ticket_batch,
            ),
            inflight,
            latency: (config.policy == Policy::LeastRequest)
                .then_some(config.least_request.latency_decay_ms)
                .flatten()
                .map(|decay_ms| PeakEwma::new(config.backends.len(), decay_ms)),
            health,
            selection: RefCell::new(Rc::new(selection)),
            rng: RefCell::new(rng),
            missing_key_body,
            tick_period_ms,
            config,
        })
    }

    /// The validated configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The header to write the chosen cluster into.
    pub fn cluster_header(&self) -> &str {
        &self.config.cluster_header
    }

    /// The shared-data keys this balancer uses: a fixed set per configuration, never per
    /// request.
    pub fn shared_keys(&self) -> Vec<&str> {
        let mut keys = vec![self.tickets.key()];
        keys.extend(self.inflight.as_ref().map(InflightTable::key));
        if let Some(health) = &self.health {
            keys.extend(health.store.keys());
            keys.extend(health.prober.as_ref().map(|(_, lease)| lease.key()));
        }
        keys
    }

    /// Creates the shared-data keys that do not exist yet (configure time), keeping existing
    /// state so a reconfiguration continues where the last configuration stopped.
    pub fn create_shared_keys(&self, store: &dyn SharedStore) -> Result<(), SetError> {
        self.tickets.ensure_created(store)?;
        if let Some(table) = &self.inflight {
            table.ensure_created(store)?;
        }
        if let Some(health) = &self.health {
            health.store.ensure_created(store)?;
        }
        Ok(())
    }

    /// How often the filter should call [`Self::tick`] (0: never). A quarter of the probe
    /// interval (20 to 100 ms) with active checks, 100 ms with passive ejection only, 1 s when
    /// only in-flight debt needs flushing.
    pub fn tick_period_ms(&self) -> u64 {
        self.tick_period_ms
    }

    /// Backends a hashing policy can never choose: libketama's arithmetic gives a backend
    /// whose weight is tiny next to the others no point on the ring. Empty for other policies.
    pub fn unreachable_by_hash(&self) -> Vec<&str> {
        match &self.selector {
            Selector::Hash(ring) => (0..self.config.backends.len())
                .filter(|&index| !ring.has_points(index))
                .map(|index| self.cluster(index))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Whether requests hold in-flight counts (and the filter should flush debt periodically).
    pub fn counts_in_flight(&self) -> bool {
        self.inflight.is_some()
    }

    /// The current selection mode.
    pub fn mode(&self) -> Mode {
        self.selection.borrow().mode
    }

    /// Chooses the backend for one request. Shared-data trouble degrades the balance (see
    /// [`crate::ticket::TicketSource`] and [`crate::inflight`]), never the request.
    pub fn choose(&self, store: &dyn SharedStore, request: &dyn RequestView) -> Decision<'_> {
        let selection = Rc::clone(&self.selection.borrow());
        if selection.mode == Mode::AllDown {
            return Decision::Reject {
                status: 503,
                body: ALL_DOWN_BODY,
                retry_after: Some(self.retry_after_seconds()),
            };
        }
        let route = |index: usize, counted: bool, reason: Reason| {
            Decision::Route(Choice {
                index,
                cluster: self.cluster(index),
                counted,
                reason,
            })
        };
        let round_robin = |reason: fn(Ticket) -> Reason| {
            let ticket = self.tickets.take(store);
            let index = selection.rotate(ticket.value).unwrap_or(0);
            route(index, false, reason(ticket))
        };
        match &self.selector {
            Selector::RoundRobin => round_robin(Reason::Ticket),
            Selector::Random => {
                let index = selection.random(&mut self.rng.borrow_mut()).unwrap_or(0);
                route(index, false, Reason::Random)
            }
            Selector::LeastRequest(least) => {
                let mut rng = self.rng.borrow_mut();
                let population = &selection.population;
                let picked = self.inflight.as_ref().and_then(|table| {
                    table.acquire(store, |counts| match &self.latency {
                        None => least.pick(population, |i| counts.get(i), &mut rng),
                        Some(latency) => least.pick_by_latency(
                            population,
                            |i| counts.get(i),
                            |i| latency.latency(i),
                            &mut rng,
                        ),
                    })
                });
                match picked {
                    Some((index, commit)) => route(index, true, Reason::LeastRequest(commit)),
                    None => route(0, false, Reason::Random),
                }
            }
            Selector::Hash(ring) => {
                let key = match self.config.policy {
                    Policy::IpHash => request
                        .source_address()
                        .and_then(|address| request_key::ip_key(&address, self.config.ip_hash)),
                    _ => request_key::extract(&self.config.hash_key, request),
                };
                let Some(key) = key else {
                    return match self.config.on_missing_key {
                        OnMissingKey::RoundRobin => round_robin(Reason::HashFallback),
                        OnMissingKey::Reject => Decision::Reject {
                            status: 400,
                            body: &self.missing_key_body,
                            retry_after: None,
                        },
                    };
                };
                let hash = Ketama::hash_key(&key);
                match (&self.inflight, self.config.bounded_load_factor) {
                    (Some(table), Some(factor)) => {
                        let mut skipped = 0;
                        let picked = table.acquire(store, |counts| {
                            let (index, passed) = bounded(ring, &selection, hash, factor, counts);
                            skipped = passed;
                            index
                        });
                        match picked {
                            Some((index, _)) => route(index, true, Reason::Hash { hash, skipped }),
                            None => round_robin(Reason::HashFallback),
                        }
                    }
                    _ => {
                        let mut skipped = 0;
                        let index = ring.walk(hash).find(|&index| {
                            let allowed = selection.allows(index);
                            skipped += u32::from(!allowed);
                            allowed
                        });
                        match index {
                            Some(index) => route(index, false, Reason::Hash { hash, skipped }),
                            // Only backends without ring points are allowed: keep serving.
                            None => round_robin(Reason::HashFallback),
                        }
                    }
                }
            }
        }
    }

    /// Gives back the in-flight count of a [`Choice`] with `counted` set, when its stream ends:
    /// written with this worker's next pick or tick (see [`crate::inflight`]), so most
    /// releases cost no shared-data call.
    pub fn release(&self, store: &dyn SharedStore, index: usize) -> Commit {
        match &self.inflight {
            Some(table) => table.release(store, index),
            None => Commit::Written,
        }
    }

    /// Call when this balancer is replaced (reconfiguration) or its root context ends: it will
    /// not tick again, so pending releases are written now and later ones at once.
    pub fn retire(&self, store: &dyn SharedStore) {
        if let Some(table) = &self.inflight {
            table.retire(store);
        }
    }

    /// Whether [`Self::observe_latency`] wants each request's latency (least-request with
    /// `latency_decay_ms`): the filter then reads the clock when a request starts and ends.
    pub fn wants_latency(&self) -> bool {
        self.latency.is_some()
    }

    /// A request to `index` took `latency_us`, ending at `end_us` (µs since the epoch).
    pub fn observe_latency(&self, index: usize, latency_us: u64, end_us: u64) {
        if let Some(latency) = &self.latency {
            latency.observe(index, latency_us, end_us);
        }
    }

    /// Whether [`Self::report`] wants to hear how requests ended (passive ejection is on).
    pub fn wants_reports(&self) -> bool {
        self.config.outlier_detection.is_some()
    }

    /// Passive health: the request that went to `index` ended, `failed` or not, at `now_ms`.
    /// Writes shared data only on a failure, or on a success after failures.
    pub fn report(
        &self,
        store: &dyn SharedStore,
        index: usize,
        failed: bool,
        now_ms: u64,
    ) -> Option<Change> {
        self.report_with_clock(store, index, failed, &|| now_ms)
    }

    /// [`Self::report`], asking `clock` for the time only when health changes: the common
    /// case, a success after successes, costs no clock read (a host call in Envoy).
    pub fn report_with_clock(
        &self,
        store: &dyn SharedStore,
        index: usize,
        failed: bool,
        clock: &dyn Fn() -> u64,
    ) -> Option<Change> {
        let (health, outlier) = (self.health.as_ref()?, self.config.outlier_detection?);
        if !failed {
            let failures = health
                .record
                .borrow()
                .backends
                .get(index)
                .map_or(0, |b| b.passive_failures);
            if failures == 0 {
                return None;
            }
        }
        let now_ms = clock();
        let mut change = None;
        let written = health.store.update(store, |record| {
            let ejected = self
                .primaries()
                .filter(|&i| record.backends.get(i).is_some_and(|b| b.is_ejected(now_ms)))
                .count();
            let may_eject = machine::may_eject(
                ejected,
                self.primaries().count(),
                outlier.max_ejection_percent,
            );
            let Some(backend) = record.backends.get_mut(index) else {
                return false;
            };
            let before = *backend;
            change = machine::record_request(backend, failed, now_ms, &outlier, may_eject);
            *backend != before
        });
        // The worker that ejects stops sending at once; the others follow on their next tick.
        if let (Some(Change::Ejected { .. }), Some(record)) = (change, written) {
            self.follow(health, record, now_ms);
        }
        change
    }

    /// Adopts `record` as this worker's view of health, rebuilding the selection.
    fn follow(&self, health: &Health, record: HealthRecord, now_ms: u64) -> Option<(Mode, Mode)> {
        let mut mode_change = None;
        if let Ok(selection) = Selection::build(&self.config, Some(&record), now_ms) {
            let before = self.mode();
            if before != selection.mode {
                mode_change = Some((before, selection.mode));
            }
            *self.selection.borrow_mut() = Rc::new(selection);
        }
        *health.record.borrow_mut() = record;
        mode_change
    }

    /// The periodic work of a worker: flush in-flight debt, write probe answers, follow the
    /// shared health record, and (on the VM holding the lease) say which probes are due.
    pub fn tick(&self, store: &dyn SharedStore, now_ms: u64) -> Tick<'_> {
        let mut tick = Tick::default();
        if let Some(table) = &self.inflight {
            table.flush(store);
        }
        let Some(health) = &self.health else {
            return tick;
        };
        if health.period_ms > self.tick_period_ms {
            if now_ms < health.next_due_ms.get() {
                return tick;
            }
            health
                .next_due_ms
                .set(now_ms.saturating_add(health.period_ms));
        }
        if let (Some((prober, _)), Some(check)) = (&health.prober, &self.config.health_check) {
            let answers = prober.answers();
            if !answers.is_empty() {
                let mut changes = Vec::new();
                let written = health.store.update(store, |record| {
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
        let version = health.store.version(store);
        let expired = now_ms >= self.selection.borrow().valid_until_ms;
        if version.is_some() && (version != health.seen_version.get() || expired) {
            tick.mode_change = self.follow(health, health.store.read(store), now_ms);
            health.seen_version.set(version);
        }
        if let (Some((prober, lease)), Some(check)) = (&health.prober, &self.config.health_check) {
            if lease.hold(store, now_ms) {
                tick.probes = prober
                    .due(&health.record.borrow(), check, now_ms)
                    .into_iter()
                    .map(|index| ProbeRequest {
                        index,
                        cluster: self.cluster(index),
                    })
                    .collect();
            }
        }
        tick
    }

    /// A probe of `index` went out with `token`.
    pub fn probe_sent(&self, index: usize, token: u32, now_ms: u64) {
        if let Some((prober, _)) = self.health.as_ref().and_then(|h| h.prober.as_ref()) {
            prober.sent(index, token, now_ms);
        }
    }

    /// A probe of `index` could not be sent (Envoy refused the call): a failed probe.
    pub fn probe_not_sent(&self, index: usize, now_ms: u64) {
        if let Some((prober, _)) = self.health.as_ref().and_then(|h| h.prober.as_ref()) {
            prober.not_sent(index, now_ms);
        }
    }

    /// Envoy called back for probe `token`; written to shared data on the next tick. Returns
    /// the backend, or `None` when the token is not a probe of this balancer.
    pub fn probe_answered(&self, token: u32, result: ProbeResult, now_ms: u64) -> Option<usize> {
        let (prober, _) = self.health.as_ref()?.prober.as_ref()?;
        prober.answered(token, result, now_ms)
    }

    /// Current in-flight count per backend (for status and tests); empty when not counted.
    pub fn in_flight(&self, store: &dyn SharedStore) -> Vec<u32> {
        self.inflight
            .as_ref()
            .map(|table| table.counts(store))
            .unwrap_or_default()
    }

    /// The status page: every backend's health as this worker sees it, as JSON.
    pub fn status_json(&self, store: &dyn SharedStore, now_ms: u64) -> String {
        let record = self.health.as_ref().map(|health| health.store.read(store));
        let in_flight = self.in_flight(store);
        let selection = Rc::clone(&self.selection.borrow());
        let backends = self
            .config
            .backends
            .iter()
            .enumerate()
            .map(|(index, backend)| {
                let health = record.as_ref().and_then(|r| r.backends.get(index));
                BackendStatus {
                    cluster: &backend.cluster,
                    weight: backend.weight,
                    backup: backend.backup,
                    selected: selection.allows(index),
                    healthy: health.is_none_or(|h| h.healthy),
                    ejected: health.is_some_and(|h| h.is_ejected(now_ms)),
                    ejected_until_ms: health.map(|h| h.ejected_until_ms).filter(|&t| t > now_ms),
                    ejections: health.map_or(0, |h| h.ejections),
                    consecutive_probe_successes: health.map_or(0, |h| h.successes),
                    consecutive_probe_failures: health.map_or(0, |h| h.failures),
                    consecutive_request_failures: health.map_or(0, |h| h.passive_failures),
                    last_probe_status: health
                        .filter(|h| h.last_probe_ms > 0)
                        .map(|h| h.last_status),
                    last_probe_ms: health.map(|h| h.last_probe_ms).filter(|&t| t > 0),
                    in_flight: in_flight.get(index).copied(),
                }
            })
            .collect();
        let status = Status {
            policy: self.config.policy.name(),
            mode: selection.mode.name(),
            now_ms,
            backends,
        };
        status.to_json()
    }

    fn primaries(&self) -> impl Iterator<Item = usize> + '_ {
        self.config
            .backends
            .iter()
            .enumerate()
            .filter(|(_, b)| !b.backup)
            .map(|(i, _)| i)
    }

    fn retry_after_seconds(&self) -> u32 {
        let interval = self
            .config
            .health_check
            .as_ref()
            .map_or(1000, |check| check.interval_ms);
        interval.div_ceil(1000).max(1)
    }

    fn cluster(&self, index: usize) -> &str {
        self.config
            .backends
            .get(index)
            .map_or("", |backend| backend.cluster.as_str())
    }
}

/// The status page's document.
struct Status<'a> {
    policy: &'a str,
    mode: &'a str,
    now_ms: u64,
    backends: Vec<BackendStatus<'a>>,
}

impl Status<'_> {
    /// The document, pretty-printed; the keys are the field names, in order.
    fn to_json(&self) -> String {
        let mut w = JsonWriter::new();
        w.begin_object();
        w.key("policy");
        w.string(self.policy);
        w.key("mode");
        w.string(self.mode);
        w.key("now_ms");
        w.uint(self.now_ms);
        w.key("backends");
        w.begin_array();
        for backend in &self.backends {
            backend.write_json(&mut w);
        }
        w.end_array();
        w.end_object();
        w.finish()
    }
}

impl BackendStatus<'_> {
    fn write_json(&self, w: &mut JsonWriter) {
        w.begin_object();
        w.key("cluster");
        w.string(self.cluster);
        w.key("weight");
        w.uint(self.weight.into());
        w.key("backup");
        w.bool(self.backup);
        w.key("selected");
        w.bool(self.selected);
        w.key("healthy");
        w.bool(self.healthy);
        w.key("ejected");
        w.bool(self.ejected);
        w.key("ejected_until_ms");
        w.opt_uint(self.ejected_until_ms);
        w.key("ejections");
        w.uint(self.ejections.into());
        w.key("consecutive_probe_successes");
        w.uint(self.consecutive_probe_successes.into());
        w.key("consecutive_probe_failures");
        w.uint(self.consecutive_probe_failures.into());
        w.key("consecutive_request_failures");
        w.uint(self.consecutive_request_failures.into());
        w.key("last_probe_status");
        w.opt_uint(self.last_probe_status.map(u64::from));
        w.key("last_probe_ms");
        w.opt_uint(self.last_probe_ms);
        w.key("in_flight");
        w.opt_uint(self.in_flight.map(u64::from));
        w.end_object();
    }
}

struct BackendStatus<'a> {
    cluster: &'a str,
    weight: u32,
    backup: bool,
    /// Whether requests may go to it now.
    selected: bool,
    healthy: bool,
    ejected: bool,
    ejected_until_ms: Option<u64>,
    ejections: u32,
    consecutive_probe_successes: u16,
    consecutive_probe_failures: u16,
    consecutive_request_failures: u16,
    last_probe_status: Option<u16>,
    last_probe_ms: Option<u64>,
    in_flight: Option<u32>,
}

/// How often a worker ticks with in-flight counts: how long an idle worker's releases may
/// wait before the other workers see them.
const RELEASE_FLUSH_MS: u64 = 20;

/// The tick period health checking needs (0: none), which also sets the probe lease's term.
fn health_tick_ms(config: &Config) -> u64 {
    if let Some(check) = &config.health_check {
        (u64::from(check.interval_ms) / 4).clamp(20, 100)
    } else if config.outlier_detection.is_some() {
        100
    } else {
        0
    }
}

/// The worker's tick period (0: no tick): health's, or [`RELEASE_FLUSH_MS`] when requests
/// hold in-flight counts, whichever is shorter.
fn tick_period_ms(health_tick_ms: u64, counts_in_flight: bool) -> u64 {
    match (health_tick_ms, counts_in_flight) {
        (health, true) if health > 0 => health.min(RELEASE_FLUSH_MS),
        (_, true) => RELEASE_FLUSH_MS,
        (health, false) => health,
    }
}

/// Consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam): a backend takes the
/// request only while its in-flight count stays within
/// `ceil(factor × (total + 1) / backends)`; otherwise the walk goes on along the ring,
/// skipping backends the selection does not allow. At least one allowed backend is always
/// under that bound, so the walk ends.
fn bounded(
    ring: &Ketama,
    selection: &Selection,
    hash: u32,
    factor: f64,
    counts: &Snapshot<'_>,
) -> (Option<usize>, u32) {
    let population = &selection.population;
    let total: u64 = population.iter().map(|&i| u64::from(counts.get(i))).sum();
    let capacity = (factor * (total + 1) as f64 / population.len().max(1) as f64).ceil();
    let mut skipped = 0;
    for index in ring.walk(hash) {
        if selection.allows(index) && f64::from(counts.get(index)) + 1.0 <= capacity {
            return (Some(index), skipped);
        }
        skipped += 1;
    }
    (None, skipped)
}

/// Identifies a backend list, so in-flight records of different lists never mix.
fn fingerprint(config: &Config) -> String {
    let mut context = md5::Context::new();
    for backend in &config.backends {
        context.consume(backend.cluster.as_bytes());
        context.consume([0]);
    }
    let digest = context.finalize();
    digest
        .0
        .iter()
        .take(6)
        .fold(String::with_capacity(12), |mut hex, byte| {
            let _ = write!(hex, "{byte:02x}");
            hex
        })
}

fn missing_key_body(config: &Config) -> String {
    let sources: Vec<String> = match config.policy {
        Policy::IpHash => vec!["the client IP address".into()],
        _ => config
            .hash_key
            .iter()
            .map(|source| match source {
                HashSource::Header(name) => format!("header {name}"),
                HashSource::Cookie(name) => format!("cookie {name}"),
                HashSource::Query(name) => format!("query parameter {name}"),
                HashSource::Path(_) => "the path".into(),
                HashSource::SourceIp(_) => "the client IP address".into(),
            })
            .collect(),
    };
    format!(
        "eisodos: the request has no hash key (looked for {})\n",
        sources.join(", ")
    )
}

fn rotation_error(err: RotationError) -> ConfigError {
    let reason = match err {
        RotationError::Empty => "is empty; at least one backend is required".to_owned(),
        RotationError::TooManyBackends(n) => format!("has {n} entries, too many"),
        RotationError::TooLarge { slots, backends } => format!(
            "weights make a round-robin cycle of {slots} slots over {backends} backends, \
             too large to lay out; use weights with a larger common divisor"
        ),
    };
    ConfigError {
        field: "backends".into(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory_store::MemoryStore;
    use crate::request_key::StaticRequest;
    use crate::ticket::TicketSource;

    type Request = StaticRequest;

    fn keyed(name: &str, value: &str) -> Request {
        Request::default().with_header(name, value)
    }

    fn from(address: &str) -> Request {
        Request::default().with_source(address)
    }

    fn balancer(json: &str) -> Balancer {
        balancer_seeded(json, 1)
    }

    fn balancer_seeded(json: &str, seed: u64) -> Balancer {
        Balancer::new(Config::parse(json.as_bytes()).unwrap(), "test", seed).unwrap()
    }

    fn route<'a>(decision: Decision<'a>) -> Choice<'a> {
        match decision {
            Decision::Route(choice) => choice,
            other => panic!("expected a route, got {other:?}"),
        }
    }

    const THREE: &str = r#"{"backends": [{"cluster": "a"}, {"cluster": "b"}, {"cluster": "c"}]}"#;

    fn with_policy(policy_fields: &str) -> String {
        format!(
            r#"{{{policy_fields}, "backends": [{{"cluster": "a"}}, {{"cluster": "b"}}, {{"cluster": "c"}}]}}"#
        )
    }

    #[test]
    fn round_robin_over_three_equal_backends() {
        let store = MemoryStore::new();
        let balancer = balancer(THREE);
        balancer.create_shared_keys(&store).unwrap();
        let none = Request::default();
        let picks: Vec<&str> = (0..6)
            .map(|_| route(balancer.choose(&store, &none)).cluster)
            .collect();
        assert_eq!(picks, ["a", "b", "c", "a", "b", "c"]);
    }

    /// Two workers' VMs each build their own balancer over the one process-wide store.
    #[test]
    fn two_workers_share_one_order() {
        let store = MemoryStore::new();
        let worker_1 = balancer(THREE);
        let worker_2 = balancer(THREE);
        worker_1.create_shared_keys(&store).unwrap();
        worker_2.create_shared_keys(&store).unwrap();
        let mut counts = [0; 3];
        for i in 0..300 {
            let worker = if i % 7 < 3 { &worker_1 } else { &worker_2 };
            let choice = route(worker.choose(&store, &Request::default()));
            assert_eq!(
                choice.reason,
                Reason::Ticket(Ticket {
                    value: i,
                    source: TicketSource::Shared
                })
            );
            counts[choice.index] += 1;
        }
        assert_eq!(counts, [100, 100, 100]);
    }

    #[test]
    fn weights_are_honoured() {
        let store = MemoryStore::new();
        let balancer = balancer(
            r#"{"backends": [{"cluster": "a", "weight": 5}, {"cluster": "b"}, {"cluster": "c"}]}"#,
        );
        balancer.create_shared_keys(&store).unwrap();
        let picks: String = (0..7)
            .map(|_| route(balancer.choose(&store, &Request::default())).cluster)
            .collect();
        assert_eq!(picks, "aabacaa");
    }

    #[test]
    fn namespaces_keep_filters_apart() {
        let store = MemoryStore::new();
        let config = Config::parse(THREE.as_bytes()).unwrap();
        let one = Balancer::new(config.clone(), "one", 0).unwrap();
        let two = Balancer::new(config, "two", 0).unwrap();
        assert_ne!(one.shared_keys(), two.shared_keys());
        one.choose(&store, &Request::default());
        assert_eq!(route(two.choose(&store, &Request::default())).cluster, "a");
    }

    #[test]
    fn oversized_weighted_cycle_is_a_config_error_on_backends() {
        let backends: Vec<String> = (0..1000)
            .map(|i| format!(r#"{{"cluster": "c{i}", "weight": {}}}"#, 1000 - (i % 2)))
            .collect();
        let config =
            Config::parse(format!(r#"{{"backends": [{}]}}"#, backends.join(",")).as_bytes())
                .unwrap();
        let err = Balancer::new(config, "test", 0).unwrap_err();
        assert_eq!(err.field, "backends");
    }

    #[test]
    fn least_request_counts_until_release() {
        let store = MemoryStore::new();
        let balancer = balancer(&with_policy(
            r#""policy": "least_request", "least_request": {"choice_count": 3}"#,
        ));
        balancer.create_shared_keys(&store).unwrap();
        assert_eq!(balancer.shared_keys().len(), 2);
        let held: Vec<Choice<'_>> = (0..6)
            .map(|_| route(balancer.choose(&store, &Request::default())))
            .collect();
        assert!(held.iter().all(|c| c.counted));
        // Six requests held over three backends, comparing all three: filled evenly.
        assert_eq!(balancer.in_flight(&store), [2, 2, 2]);
        for choice in &held {
            balancer.release(&store, choice.index);
        }
        assert_eq!(
            balancer.in_flight(&store),
            [2, 2, 2],
            "written on the next tick"
        );
        balancer.tick(&store, 0);
        assert_eq!(balancer.in_flight(&store), [0, 0, 0]);
    }

    #[test]
    fn a_success_after_successes_reads_no_clock() {
        let store = MemoryStore::new();
        let balancer = balancer(&with_policy(
            r#""policy": "random", "outlier_detection": {"consecutive_failures": 2}"#,
        ));
        balancer.create_shared_keys(&store).unwrap();
        let reads = Cell::new(0);
        let clock = || {
            reads.set(reads.get() + 1);
            1_000
        };
        balancer.report_with_clock(&store, 0, false, &clock);
        assert_eq!(reads.get(), 0);
        balancer.report_with_clock(&store, 0, true, &clock);
        assert_eq!(reads.get(), 1, "a failure is timed");
        balancer.tick(&store, 1_000);
        balancer.report_with_clock(&store, 0, false, &clock);
        assert_eq!(reads.get(), 2, "so is the success that clears it");
    }

    #[test]
    fn a_retired_balancer_releases_at_once() {
        let store = MemoryStore::new();
        let balancer = balancer(&with_policy(r#""policy": "least_request""#));
        let first = route(balancer.choose(&store, &Request::default()));
        let second = route(balancer.choose(&store, &Request::default()));
        balancer.release(&store, first.index);
        balancer.retire(&store);
        assert_eq!(balancer.in_flight(&store).iter().sum::<u32>(), 1);
        balancer.release(&store, second.index);
        assert_eq!(balancer.in_flight(&store), [0, 0, 0]);
    }

    #[test]
    fn health_keeps_its_own_period_when_releases_tick_faster() {
        let store = MemoryStore::new();
        let balancer = balancer(&with_policy(
            r#""policy": "least_request", "health_check": {"path": "/h", "interval_ms": 400}"#,
        ));
        balancer.create_shared_keys(&store).unwrap();
        assert_eq!(balancer.tick_period_ms(), RELEASE_FLUSH_MS);
        balancer.tick(&store, 1_000);
        let before = store.op_counts();
        for now in [1_020, 1_040, 1_060, 1_080] {
            balancer.tick(&store, now);
        }
        assert_eq!(
            store.op_counts(),
            before,
            "no health work between health ticks"
        );
        balancer.tick(&store, 1_100);
        assert!(
            store.op_counts().0 > before.0,
            "health's 100 ms tick reads the record"
        );
    }

    #[test]
    fn counting_in_flight_ticks_often_enough_to_write_releases() {
        let least = balancer(&with_policy(r#""policy": "least_request""#));
        assert_eq!(least.tick_period_ms(), RELEASE_FLUSH_MS);
        let plain = balancer(&with_policy(r#""policy": "round_robin""#));
        assert_eq!(plain.tick_period_ms(), 0);
    }

    #[test]
    fn least_request_avoids_the_loaded_backend() {
        let store = MemoryStore::new();
        let balancer = balancer(&with_policy(r#""policy": "least_request""#));
        balancer.create_shared_keys(&store).unwrap();
        // Backend c is stuck with many requests (a slow upstream).
        for _ in 0..3000 {
            let choice = route(balancer.choose(&store, &Request::default()));
            if choice.index != 2 {
                balancer.release(&store, choice.index);
            }
            if balancer.in_flight(&store)[2] >= 5 {
                break;
            }
        }
        let before = balancer.in_flight(&store)[2];
        for _ in 0..1000 {
            let choice = route(balancer.choose(&store, &Request::default()));
            assert_ne!(
                choice.index, 2,
                "c has {before} in flight, the others at most 1"
            );
            balancer.release(&store, choice.index);
        }
    }

    #[test]
    fn latency_weighted_least_request_starves_a_slow_backend_until_it_decays() {
        let store = MemoryStore::new();
        let balancer = balancer(&with_policy(
            r#""policy": "least_request", "least_request": {"choice_count": 3, "latency_decay_ms": 1000}"#,
        ));
        assert!(balancer.wants_latency());
        balancer.create_shared_keys(&store).unwrap();
        let latency_us = |index: usize| if index == 2 { 20_000 } else { 1_000 };
        let now_us = Cell::new(1_000_000);
        let serve = |n: usize, counts: &mut [u32; 3]| {
            for _ in 0..n {
                let choice = route(balancer.choose(&store, &Request::default()));
                counts[choice.index] += 1;
                now_us.set(now_us.get() + 100);
                let took = latency_us(choice.index);
                balancer.observe_latency(choice.index, took, now_us.get() + took);
                balancer.release(&store, choice.index);
            }
        };
        let mut counts = [0; 3];
        serve(1000, &mut counts);
        // Unknown backends are tried first; after one slow answer the slow one waits until
        // its estimate decays below a fast one's (20 ms → 1 ms: ln 20 ≈ 3 decay times).
        assert!(counts[2] <= 2, "{counts:?}");
        let mut later = [0; 3];
        now_us.set(now_us.get() + 3_500_000);
        serve(10, &mut later);
        assert!(later[2] >= 1, "tried again once it decayed: {later:?}");
    }

    #[test]
    fn random_needs_no_shared_data() {
        let store = MemoryStore::new();
        let balancer = balancer(&with_policy(r#""policy": "random""#));
        let mut counts = [0; 3];
        for _ in 0..3000 {
            counts[route(balancer.choose(&store, &Request::default())).index] += 1;
        }
        assert_eq!(store.op_counts(), (0, 0));
        assert!(
            counts.iter().all(|&n| (850..1150).contains(&n)),
            "{counts:?}"
        );
    }

    const HASHED: &str =
        r#""policy": "consistent_hash", "hash_key": [{"header": "x-user"}, {"cookie": "s"}]"#;

    #[test]
    fn consistent_hash_is_the_same_across_balancers_and_seeds() {
        let store = MemoryStore::new();
        let one = balancer_seeded(&with_policy(HASHED), 1);
        let two = balancer_seeded(&with_policy(HASHED), 99);
        let mut spread = [0; 3];
        for user in 0..300 {
            let request = keyed("x-user", &format!("user-{user}"));
            let a = route(one.choose(&store, &request));
            let b = route(two.choose(&store, &request));
            assert_eq!(a.index, b.index);
            assert_eq!(
                a.reason,
                Reason::Hash {
                    hash: Ketama::hash_key(format!("user-{user}").as_bytes()),
                    skipped: 0
                }
            );
            spread[a.index] += 1;
        }
        assert_eq!(
            store.op_counts(),
            (0, 0),
            "plain hashing touches no shared data"
        );
        assert!(spread.iter().all(|&n| n > 50), "{spread:?}");
    }

    #[test]
    fn missing_key_falls_back_to_round_robin_or_is_rejected() {
        let store = MemoryStore::new();
        let fallback = balancer(&with_policy(HASHED));
        fallback.create_shared_keys(&store).unwrap();
        let picks: Vec<usize> = (0..3)
            .map(|_| route(fallback.choose(&store, &Request::default())).index)
            .collect();
        assert_eq!(picks, [0, 1, 2]);

        let reject = balancer(&with_policy(&format!(
            r#"{HASHED}, "on_missing_key": "reject""#
        )));
        assert_eq!(
            reject.choose(&store, &Request::default()),
            Decision::Reject {
                status: 400,
                body: "eisodos: the request has no hash key (looked for header x-user, cookie s)\n",
                retry_after: None,
            }
        );
        let cookie = keyed("cookie", "s=abc");
        assert!(matches!(reject.choose(&store, &cookie), Decision::Route(_)));
    }

    #[test]
    fn bounded_load_walks_past_an_overloaded_backend() {
        let store = MemoryStore::new();
        let bounded = balancer(&with_policy(&format!(
            r#"{HASHED}, "bounded_load_factor": 1.25"#
        )));
        bounded.create_shared_keys(&store).unwrap();
        let request = keyed("x-user", "hot-key");
        let home = route(bounded.choose(&store, &request));
        assert!(home.counted);
        // One hot key, requests held: its backend fills up to the bound, then the ring's next.
        let mut held = vec![home];
        for _ in 0..29 {
            held.push(route(bounded.choose(&store, &request)));
        }
        let counts = bounded.in_flight(&store);
        // capacity = ceil(1.25 * 30 / 3) = 13 at most per backend.
        assert!(counts.iter().all(|&n| n <= 13), "{counts:?}");
        assert!(
            counts[home.index] >= 12,
            "the key's own backend is filled first: {counts:?}"
        );
        assert!(held
            .iter()
            .any(|c| matches!(c.reason, Reason::Hash { skipped: 1.., .. })));
        for choice in held {
            bounded.release(&store, choice.index);
        }
        bounded.tick(&store, 0);
        assert_eq!(bounded.in_flight(&store), [0, 0, 0]);
    }

    #[test]
    fn ip_hash_keeps_a_subnet_together() {
        let store = MemoryStore::new();
        let by_subnet = balancer(&with_policy(
            r#""policy": "ip_hash", "ip_hash": {"ipv4_prefix": 24}"#,
        ));
        let by_host = balancer(&with_policy(r#""policy": "ip_hash""#));
        let subnet_home = route(by_subnet.choose(&store, &from("10.9.8.1:1000"))).index;
        let mut hosts_spread = [0; 3];
        for host in 1..=254 {
            let request = from(&format!("10.9.8.{host}:{}", 1000 + host));
            assert_eq!(route(by_subnet.choose(&store, &request)).index, subnet_home);
            hosts_spread[route(by_host.choose(&store, &request)).index] += 1;
        }
        assert!(hosts_spread.iter().all(|&n| n > 30), "{hosts_spread:?}");
        let key = Ketama::hash_key(b"10.9.8.0");
        assert_eq!(
            route(by_subnet.choose(&store, &from("10.9.8.7:1"))).reason,
            Reason::Hash {
                hash: key,
                skipped: 0
            }
        );
    }

    #[test]
    fn a_backend_without_ring_points_is_reported() {
        let tiny = balancer(
            r#"{"policy": "ip_hash", "backends": [{"cluster": "big", "weight": 1000}, {"cluster": "tiny", "weight": 1}]}"#,
        );
        assert_eq!(tiny.unreachable_by_hash(), ["tiny"]);
        assert!(balancer(&with_policy(HASHED))
            .unreachable_by_hash()
            .is_empty());
    }

    #[test]
    fn inflight_records_of_different_backend_lists_do_not_mix() {
        let one = balancer(&with_policy(r#""policy": "least_request""#));
        let two = balancer(
            r#"{"policy": "least_request", "backends": [{"cluster": "a"}, {"cluster": "b"}]}"#,
        );
        assert_ne!(one.shared_keys()[1], two.shared_keys()[1]);
        let same = balancer(&with_policy(r#""policy": "least_request""#));
        assert_eq!(one.shared_keys(), same.shared_keys());
    }
}
