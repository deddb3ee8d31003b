//! The per-request decision: which backend's cluster goes into the cluster header.
//!
//! A [`Balancer`] is built once per configuration and asked once per request. A request flows
//! through stages, each in its own file, each deciding or passing on:
//! 1. **rate limit** (`rate_limit.rs`, with `rate_limit`): a token from the request's bucket
//!    in shared data, or a local 429.
//! 2. **candidates** (`candidates.rs`): the backends it may go to on this worker now, health's
//!    [`Selection`] with what the policy lays out over it; none left is a local 503. With
//!    traffic splitting (`split.rs`), the request's subset picks one of the candidate sets laid
//!    out per subset.
//! 3. **affinity** (`affinity.rs`, with `session_affinity`): a cookie naming a candidate with
//!    room pins the request there, and the policy is not asked; any other request is marked
//!    for a `set-cookie` naming the backend the pick chooses.
//! 4. **pick** (`policy.rs`): the policy, owning its state, chooses one of them (or refuses a
//!    request without a hash key).
//! 5. **in flight** (`counting.rs`), around the pick when the configuration counts requests
//!    (least-request, bounded loads, or a `max_requests` on any backend): the pick sees the
//!    shared counts and skips a backend at its cap, and its backend is counted by the same
//!    compare-and-swap; none with room is a local 503 `circuit_open`. The stream's end gives
//!    the count back.
//!
//! Before them all, [`Balancer::deny`] (`deny.rs`) refuses what a `deny` rule matches; the
//! filter asks it first, before the status page, so a denied request touches no shared state.
//! After the pick, [`Balancer::router_headers`] (`retry.rs`) are the `retry` and `timeout_ms`
//! headers for Envoy's router, and the choice carries the `set-cookie` for the response.
//!
//! What the configuration decides once is the [`plan::Plan`]; health checking is a
//! [`Monitor`]; this worker's mutable state (its random source and current candidates) is one
//! value, borrowed once per call. Shared-data cost per request: round-robin one ticket (a get
//! and a CAS set); least-request and bounded-load hashing one get and one CAS set to pick, with
//! the releases of earlier requests folded in (a worker gone idle writes them on its tick);
//! random and plain hashing none; with `max_requests`, every policy the in-flight get and CAS
//! set (round-robin's ticket besides); passive health one get and one set when a request
//! fails (or succeeds after failures).

mod affinity;
#[cfg(test)]
mod affinity_tests;
mod candidates;
mod counting;
mod deny;
mod explain;
mod plan;
mod policy;
mod rate_limit;
#[cfg(test)]
mod reload_tests;
mod retry;
mod split;
mod status;

use std::cell::RefCell;
use std::rc::Rc;

use fastrand::Rng;

use self::affinity::Affinity;
pub use self::affinity::{token as affinity_token, token_text as affinity_token_text};
use self::candidates::{Candidates, Refusal};
pub use self::counting::{Counting, Room};
use self::deny::DenyList;
pub use self::deny::{DENIED_BODY, TOO_LARGE_BODY};
pub use self::explain::Why;
use self::plan::Plan;
pub use self::plan::RELEASE_FLUSH_MS;
pub use self::policy::Reason;
use self::policy::{Picked, PolicyState};
pub use self::rate_limit::{Admitted, Limited, RateHeaders, RateLimiter};
pub use self::retry::{HeaderEdit, ROUTER_HEADERS};
pub use self::split::key_bucket;
use self::split::{Memo, SubsetCandidates};
use crate::config::{Config, ConfigError};
use crate::health::{Change, Mode, Monitor, MonitorKeys, ProbeResult, Selection};
use crate::inflight::Commit;
pub use crate::local_reply::LocalReply;
use crate::metrics::{Counter, Counters, ProbeOutcome};
use crate::policy::round_robin::RotationError;
use crate::request_key::RequestView;
use crate::store::{SetError, SharedStore};

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
    /// How it was chosen, in detail.
    pub reason: Reason,
    /// Why, in the word access logs and traces show: the reason under the selection mode.
    pub why: Why,
    /// With `session_affinity`, for a request its cookie did not pin: the `set-cookie` value
    /// that pins the client to this backend, for the response.
    pub set_cookie: Option<&'a str>,
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision<'a> {
    /// Send it to this backend.
    Route(Choice<'a>),
    /// Answer locally: no key where one is required, or no backend healthy.
    Reject {
        /// Why.
        reply: LocalReply,
        /// HTTP status.
        status: u32,
        /// Response body, one line.
        body: &'a str,
        /// Seconds for a `retry-after` header, when worth retrying.
        retry_after: Option<u32>,
        /// `x-ratelimit-limit` and `x-ratelimit-remaining`, on a rate-limited reply.
        rate: Option<RateHeaders>,
    },
}

/// A probe the filter should send now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeRequest<'a> {
    /// Backend index.
    pub index: usize,
    /// The cluster to send it through.
    pub cluster: &'a str,
    /// Its `:authority` (Host), resolved at configure time.
    pub authority: &'a str,
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
    /// This VM restarted a stale health record (its latest probe answer this many ms old).
    pub restarted_stale_ms: Option<u64>,
}

/// What a passive health report changed, for the log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// The backend's change (an ejection).
    pub change: Option<Change>,
    /// The selection mode changed from the first to the second (this worker stopped sending
    /// to the ejected backend at once).
    pub mode_change: Option<(Mode, Mode)>,
}

/// Body of the local 503 when no backend may take a request.
pub const ALL_DOWN_BODY: &str = "eisodos: no healthy backend\n";

/// Body of the local 429 when the request's rate-limit bucket is empty.
pub const RATE_LIMITED_BODY: &str = "eisodos: rate limited\n";
/// Body of the local 503 when every backend a request may go to is at its `max_requests`.
pub const CIRCUIT_OPEN_BODY: &str = "eisodos: every backend is at max_requests\n";

/// Seconds in the `retry-after` of a `circuit_open` reply: in-flight requests end in about a
/// response time, so a slot is likely free by then; one second is the header's smallest
/// non-zero value.
pub const CIRCUIT_OPEN_RETRY_AFTER_S: u32 = 1;

/// This worker's mutable state under one configuration.
#[derive(Debug)]
struct Worker {
    rng: Rng,
    /// Over all backends.
    candidates: Rc<Candidates>,
    /// Per traffic-splitting subset, when configured.
    subsets: Option<SubsetCandidates>,
}

/// Everything needed to choose backends under one configuration.
#[derive(Debug)]
pub struct Balancer {
    plan: Plan,
    policy: PolicyState,
    /// Sticky sessions, when configured.
    affinity: Option<Affinity>,
    /// The in-flight counts and caps, when the configuration counts requests.
    counting: Option<Counting>,
    monitor: Option<Monitor>,
    rate_limit: Option<RateLimiter>,
    worker: RefCell<Worker>,
    /// This worker's metric counts, until the filter drains them on its tick.
    counters: Counters,
    /// The `deny` rules, if any.
    deny: Option<DenyList>,
    /// The router headers of `retry` and `timeout_ms` (empty when neither is configured).
    router_headers: Vec<HeaderEdit>,
}

impl Balancer {
    /// Everything `on_configure` checks and builds, from the plugin configuration's bytes:
    /// [`Config::parse`], then [`Balancer::new`]. The filter and the `eisodos check` command
    /// both call this, so a configuration the checker accepts is one the filter accepts.
    ///
    /// # Errors
    /// The first problem found, naming the field and the reason.
    pub fn configure(bytes: &[u8], namespace: &str, seed: u64) -> Result<Self, ConfigError> {
        Self::new(Config::parse(bytes)?, namespace, seed)
    }

    /// Prepares `config` for requests. `namespace` keeps this filter's shared-data keys apart
    /// from other eisodos filters in the same VM (the plugin name is a good one); `seed` seeds
    /// this VM's random source and names it in the probe lease.
    pub fn new(config: Config, namespace: &str, seed: u64) -> Result<Self, ConfigError> {
        candidates::check_cycles(&config).map_err(rotation_error)?;
        let affinity = Affinity::new(&config, namespace)?;
        let mut plan = Plan::new(config, namespace);
        let policy = PolicyState::new(&plan);
        let counting = Counting::for_plan(&plan);
        plan.tick_period_ms = plan::tick_period_ms(plan.health_period_ms, counting.is_some());
        let mut rng = Rng::with_seed(seed);
        let vm_id = rng.u64(1..);
        let monitor = Monitor::new(
            &plan.config,
            MonitorKeys {
                record: plan.key("health"),
                lease: plan.key("probe_lease"),
            },
            vm_id,
            plan.health_period_ms,
            plan.tick_period_ms,
        );
        let selection = match &monitor {
            Some(monitor) => monitor.selection(),
            None => Rc::new(Selection::build(&plan.config, None, 0)),
        };
        let candidates = Rc::new(Candidates::new(selection, &plan.config, policy.spread()));
        let rate_limit = plan
            .config
            .rate_limit
            .as_ref()
            .map(|config| RateLimiter::new(config, namespace));
        let subsets = subset_candidates(&plan.config, &candidates, policy.spread());
        Ok(Self {
            counters: Counters::new(plan.config.backends.len()),
            deny: DenyList::new(&plan.config.deny),
            router_headers: retry::router_headers(&plan.config),
            plan,
            policy,
            affinity,
            counting,
            monitor,
            rate_limit,
            worker: RefCell::new(Worker {
                rng,
                candidates,
                subsets,
            }),
        })
    }

    /// The validated configuration.
    pub fn config(&self) -> &Config {
        &self.plan.config
    }

    /// With `session_affinity`, the `set-cookie` value that pins a client to backend `index`.
    pub fn set_cookie(&self, index: usize) -> Option<&str> {
        self.affinity.as_ref()?.set_cookie(index)
    }

    /// The header to write the chosen cluster into.
    pub fn cluster_header(&self) -> &str {
        &self.plan.config.cluster_header
    }

    /// The shared-data keys this balancer uses: a fixed set per configuration, never per
    /// request.
    pub fn shared_keys(&self) -> Vec<&str> {
        let mut keys = self.policy.keys();
        keys.extend(self.counting.as_ref().map(Counting::key));
        if let Some(monitor) = &self.monitor {
            keys.extend(monitor.keys());
        }
        if let Some(limiter) = &self.rate_limit {
            keys.extend(limiter.keys());
        }
        keys
    }

    /// Creates the shared-data keys that do not exist yet (configure time), keeping existing
    /// state so a reconfiguration continues where the last configuration stopped.
    pub fn create_shared_keys(&self, store: &dyn SharedStore) -> Result<(), SetError> {
        self.policy.create_shared_keys(store)?;
        if let Some(limiter) = &self.rate_limit {
            limiter.create_shared_keys(store)?;
        }
        if let Some(counting) = &self.counting {
            counting.ensure_created(store)?;
        }
        match &self.monitor {
            Some(monitor) => monitor.create_shared_keys(store),
            None => Ok(()),
        }
    }

    /// Configure time, after [`Self::create_shared_keys`]: takes up the health that shared
    /// data holds now (see [`Monitor::catch_up`]), so a reload that keeps the backends keeps
    /// a backend that is down or ejected out from its first request. Nothing without health
    /// checking or outlier detection.
    pub fn catch_up(&self, store: &dyn SharedStore, now_ms: u64) {
        if let Some(monitor) = &self.monitor {
            let followed = monitor.catch_up(&self.plan.config, store, now_ms);
            self.adopt(followed.selection);
        }
    }

    /// How often the filter should call [`Self::tick`]. A quarter of the probe interval (20 to
    /// 100 ms) with active checks, 100 ms with passive ejection only, [`RELEASE_FLUSH_MS`]
    /// when requests hold in-flight counts, else [`crate::metrics::FLUSH_PERIOD_MS`] (to hand
    /// the metric counts to Envoy).
    pub fn tick_period_ms(&self) -> u64 {
        self.plan.tick_period_ms
    }

    /// Backends a hashing policy can never choose: libketama's arithmetic gives a backend
    /// whose weight is tiny next to the others no point on the ring. Empty for other policies.
    pub fn unreachable_by_hash(&self) -> Vec<&str> {
        match self.policy.ring() {
            Some(ring) => (0..self.plan.config.backends.len())
                .filter(|&index| !ring.has_points(index))
                .map(|index| self.plan.cluster(index))
                .collect(),
            None => Vec::new(),
        }
    }

    /// Whether requests hold in-flight counts (and the filter should flush debt periodically):
    /// least-request, bounded loads, or any `max_requests`.
    pub fn counts_in_flight(&self) -> bool {
        self.counting.is_some()
    }

    /// The in-flight counts and caps, when requests are counted: [`Counting::acquire_if_room`]
    /// takes a count on one given backend only if it has room.
    pub fn counting(&self) -> Option<&Counting> {
        self.counting.as_ref()
    }

    /// The current selection mode.
    pub fn mode(&self) -> Mode {
        self.worker.borrow().candidates.selection.mode
    }

    /// The cluster to write into the cluster header for backend `index`: its `retry_cluster`
    /// (an aggregate cluster, so Envoy's retries move to another backend) when configured,
    /// else its cluster.
    pub fn route_cluster(&self, index: usize) -> &str {
        match self.plan.config.backends.get(index) {
            Some(backend) => backend.retry_cluster.as_deref().unwrap_or(&backend.cluster),
            None => "",
        }
    }

    /// The request-header edits for a routed request, after the cluster header: what
    /// `retry` and `timeout_ms` tell Envoy's router, and the removal of what a client sent
    /// of the same kind. Empty when neither is configured.
    pub fn router_headers(&self) -> &[HeaderEdit] {
        &self.router_headers
    }

    /// The admission of `deny`: a local 403 (431 for a size rule) when a rule matches
    /// `request`, else `None`. Ask it first, before [`Self::choose`] and the status page: it
    /// touches no shared data. Without rules, a branch and nothing read.
    pub fn deny(&self, request: &dyn RequestView) -> Option<Decision<'_>> {
        let denial = self.deny.as_ref()?.check(request)?;
        self.counters.local_reply(LocalReply::Denied);
        Some(Decision::Reject {
            reply: LocalReply::Denied,
            status: denial.status,
            body: denial.body,
            retry_after: None,
            rate: None,
        })
    }

    /// Chooses the backend for one request. Shared-data trouble degrades the balance (see
    /// [`crate::ticket::TicketSource`] and [`crate::inflight`]), never the request.
    pub fn choose(&self, store: &dyn SharedStore, request: &dyn RequestView) -> Decision<'_> {
        if let Some(limiter) = &self.rate_limit {
            if let Err(limited) = limiter.admit(store, request) {
                return self.rate_limited(limited);
            }
        }
        let (picked, mode) = {
            // Held across the pick's shared-data calls: the host calls back into the VM only
            // to allocate, which touches no balancer.
            let mut worker = self.worker.borrow_mut();
            let Worker {
                rng,
                candidates,
                subsets,
            } = &mut *worker;
            let memo;
            let (request, candidates): (&dyn RequestView, &Candidates) =
                match (subsets.as_ref(), &self.plan.config.split) {
                    (Some(subsets), Some(split)) => {
                        memo = Memo::new(request);
                        (&memo, subsets.route(split, &memo, rng))
                    }
                    _ => (request, candidates),
                };
            if let Err(refusal) = candidates.admit() {
                return self.refuse(refusal);
            }
            let counting = self.counting.as_ref();
            let pinned = match &self.affinity {
                Some(affinity) => affinity
                    .pinned(request, candidates)
                    .and_then(|index| affinity::take(store, index, counting)),
                None => None,
            };
            let picked = match pinned {
                Some(pinned) => pinned,
                None => self.policy.pick(store, request, candidates, rng, counting),
            };
            (picked, candidates.selection.mode)
        };
        match picked {
            Picked::Backend {
                index,
                counted,
                reason,
            } => {
                self.counters.routed(index);
                Decision::Route(Choice {
                    index,
                    cluster: self.plan.cluster(index),
                    counted,
                    reason,
                    why: Why::of(reason, mode),
                    set_cookie: match reason {
                        Reason::Affinity => None,
                        _ => self.set_cookie(index),
                    },
                })
            }
            Picked::MissingKey => {
                self.counters.local_reply(LocalReply::MissingKey);
                Decision::Reject {
                    reply: LocalReply::MissingKey,
                    status: 400,
                    body: &self.plan.missing_key_body,
                    retry_after: None,
                    rate: None,
                }
            }
            Picked::Full => self.refuse(Refusal::CircuitOpen),
            Picked::NoCandidate => self.refuse(Refusal::NoHealthyBackend),
        }
    }

    fn refuse(&self, refusal: Refusal) -> Decision<'_> {
        match refusal {
            Refusal::NoHealthyBackend => {
                self.counters.local_reply(LocalReply::NoHealthyBackend);
                Decision::Reject {
                    reply: LocalReply::NoHealthyBackend,
                    status: 503,
                    body: ALL_DOWN_BODY,
                    retry_after: Some(self.plan.retry_after_s),
                    rate: None,
                }
            }
            Refusal::CircuitOpen => {
                self.counters.local_reply(LocalReply::CircuitOpen);
                Decision::Reject {
                    reply: LocalReply::CircuitOpen,
                    status: 503,
                    body: CIRCUIT_OPEN_BODY,
                    retry_after: Some(CIRCUIT_OPEN_RETRY_AFTER_S),
                    rate: None,
                }
            }
        }
    }

    fn rate_limited(&self, limited: Limited) -> Decision<'_> {
        self.counters.local_reply(LocalReply::RateLimited);
        Decision::Reject {
            reply: LocalReply::RateLimited,
            status: 429,
            body: RATE_LIMITED_BODY,
            retry_after: Some(limited.retry_after_s),
            rate: Some(limited.headers),
        }
    }

    /// Hands this worker's metric counts since the last call to `add`, non-zero ones only
    /// (see [`Counters::drain`]). Call it on the tick, and once more when retiring.
    pub fn drain_counts(&self, add: impl FnMut(Counter, u64)) {
        self.counters.drain(add);
    }

    /// Whether each backend may take requests (healthy and not ejected) as this worker's copy
    /// of the shared health record says at `now_ms`; all true without health checking.
    pub fn backends_healthy(&self, now_ms: u64) -> Vec<bool> {
        match &self.monitor {
            Some(monitor) => monitor.eligible(now_ms),
            None => vec![true; self.plan.config.backends.len()],
        }
    }

    /// Gives back the in-flight count of a [`Choice`] with `counted` set, when its stream ends:
    /// written with this worker's next pick or tick (see [`crate::inflight`]), so most
    /// releases cost no shared-data call.
    pub fn release(&self, store: &dyn SharedStore, index: usize) -> Commit {
        match &self.counting {
            Some(counting) => counting.release(store, index),
            None => Commit::Written,
        }
    }

    /// Call when this balancer is replaced (reconfiguration) or its root context ends: it will
    /// not tick again, so pending releases are written now and later ones at once.
    pub fn retire(&self, store: &dyn SharedStore) {
        if let Some(counting) = &self.counting {
            counting.retire(store);
        }
    }

    /// Whether [`Self::observe_latency`] wants each request's latency (least-request with
    /// `latency_decay_ms`): the filter then reads the clock when a request starts and ends.
    pub fn wants_latency(&self) -> bool {
        self.policy.latency().is_some()
    }

    /// A request to `index` took `latency_us`, ending at `end_us` (µs since the epoch).
    pub fn observe_latency(&self, index: usize, latency_us: u64, end_us: u64) {
        if let Some(latency) = self.policy.latency() {
            latency.observe(index, latency_us, end_us);
        }
    }

    /// Whether [`Self::report`] wants to hear how requests ended (passive ejection is on).
    pub fn wants_reports(&self) -> bool {
        self.plan.config.outlier_detection.is_some()
    }

    /// Passive health: the request that went to `index` ended, `failed` or not, at `now_ms`.
    /// Writes shared data only on a failure, or on a success after failures.
    pub fn report(
        &self,
        store: &dyn SharedStore,
        index: usize,
        failed: bool,
        now_ms: u64,
    ) -> Report {
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
    ) -> Report {
        let Some(monitor) = &self.monitor else {
            return Report::default();
        };
        if !self.wants_reports() || (!failed && monitor.clean(index)) {
            return Report::default();
        }
        let report = monitor.report(&self.plan.config, store, index, failed, clock());
        if let Some(Change::Ejected { .. }) = report.change {
            self.counters.ejected(index);
        }
        self.adopt(report.followed.selection);
        Report {
            change: report.change,
            mode_change: report.followed.mode_change,
        }
    }

    /// The periodic work of a worker: flush in-flight debt, write probe answers, follow the
    /// shared health record, and (on the VM holding the lease) say which probes are due.
    pub fn tick(&self, store: &dyn SharedStore, now_ms: u64) -> Tick<'_> {
        if let Some(counting) = &self.counting {
            counting.flush(store);
        }
        let Some(monitor) = &self.monitor else {
            return Tick::default();
        };
        let tick = monitor.tick(&self.plan.config, store, now_ms);
        self.adopt(tick.followed.selection);
        Tick {
            probes: tick
                .probes
                .into_iter()
                .map(|index| ProbeRequest {
                    index,
                    cluster: self.plan.cluster(index),
                    authority: self.plan.probe_authority(index),
                })
                .collect(),
            changes: tick.changes,
            mode_change: tick.followed.mode_change,
            restarted_stale_ms: tick.restarted_stale_ms,
        }
    }

    /// Lays the policy out over a new selection (only when its backends changed).
    fn adopt(&self, selection: Option<Rc<Selection>>) {
        if let Some(selection) = selection {
            let spread = self.policy.spread();
            let candidates = Rc::new(Candidates::new(selection, &self.plan.config, spread));
            let subsets = subset_candidates(&self.plan.config, &candidates, spread);
            let mut worker = self.worker.borrow_mut();
            worker.candidates = candidates;
            worker.subsets = subsets;
        }
    }

    /// A probe of `index` went out with `token`.
    pub fn probe_sent(&self, index: usize, token: u32, now_ms: u64) {
        if let Some(monitor) = &self.monitor {
            monitor.probe_sent(index, token, now_ms);
        }
    }

    /// A probe of `index` could not be sent (Envoy refused the call): a failed probe. Returns
    /// whether it is the first refusal since a probe of `index` was last sent (worth a warning;
    /// the ones after it repeat it every interval).
    pub fn probe_not_sent(&self, index: usize, now_ms: u64) -> bool {
        let Some(monitor) = &self.monitor else {
            return false;
        };
        self.counters.probed(index, ProbeOutcome::NetworkFailure);
        monitor.probe_not_sent(index, now_ms)
    }

    /// Envoy called back for probe `token`; written to shared data on the next tick. Returns
    /// the backend, or `None` when the token is not a probe of this balancer.
    pub fn probe_answered(&self, token: u32, result: ProbeResult, now_ms: u64) -> Option<usize> {
        let index = self
            .monitor
            .as_ref()?
            .probe_answered(token, result, now_ms)?;
        let expected = |status| {
            self.plan
                .config
                .health_check
                .as_ref()
                .is_some_and(|check| check.expected_statuses.contains(&status))
        };
        let outcome = match result {
            ProbeResult::Status(status) if expected(status) => ProbeOutcome::Success,
            ProbeResult::Status(_) => ProbeOutcome::Failure,
            ProbeResult::Failed => ProbeOutcome::NetworkFailure,
        };
        self.counters.probed(index, outcome);
        Some(index)
    }

    /// Current in-flight count per backend (for status and tests); empty when not counted.
    pub fn in_flight(&self, store: &dyn SharedStore) -> Vec<u32> {
        self.counting
            .as_ref()
            .map(|counting| counting.counts(store))
            .unwrap_or_default()
    }

    /// The status page: every backend's health as this worker sees it, as JSON.
    pub fn status_json(&self, store: &dyn SharedStore, now_ms: u64) -> String {
        let record = self.monitor.as_ref().map(|monitor| monitor.read(store));
        let candidates = Rc::clone(&self.worker.borrow().candidates);
        status::render(
            &self.plan,
            record.as_ref(),
            &candidates.selection,
            &self.in_flight(store),
            now_ms,
        )
    }
}

/// Every traffic-splitting subset laid out over the selection of `all`, when configured.
fn subset_candidates(
    config: &Config,
    all: &Rc<Candidates>,
    spread: candidates::Spread,
) -> Option<SubsetCandidates> {
    let split = config.split.as_ref()?;
    Some(SubsetCandidates::new(
        split,
        &all.selection,
        all,
        config,
        spread,
    ))
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
    use std::cell::Cell;

    use super::*;
    use crate::memory_store::MemoryStore;
    use crate::policy::Ketama;
    use crate::request_key::StaticRequest;
    use crate::ticket::{Ticket, TicketSource};

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
        assert_eq!(route(balancer.choose(&store, &none)).why, Why::Ticket);
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

    /// A host whose shared data fails every call.
    struct FailingStore;

    impl SharedStore for FailingStore {
        fn get(
            &self,
            _key: &str,
        ) -> Result<Option<(Vec<u8>, crate::store::Cas)>, crate::store::GetError> {
            Err(crate::store::GetError("failing"))
        }

        fn set(
            &self,
            _key: &str,
            _value: &[u8],
            _cas: Option<crate::store::Cas>,
        ) -> Result<(), SetError> {
            Err(SetError::Host("failing"))
        }
    }

    /// Shared data failing degrades the balance, not the request: least-request picks among
    /// the candidates by this worker's own counts, never a backend that is not one (here the
    /// backup, first in the list), and its counts still return to zero.
    #[test]
    fn least_request_without_shared_data_picks_among_the_candidates() {
        let balancer = balancer(
            r#"{"policy": "least_request", "backends": [{"cluster": "spare", "backup": true},
                {"cluster": "a"}, {"cluster": "b"}]}"#,
        );
        let mut counts = [0; 3];
        let mut held = Vec::new();
        for _ in 0..10 {
            let choice = route(balancer.choose(&FailingStore, &Request::default()));
            assert!(choice.counted, "{choice:?}");
            counts[choice.index] += 1;
            held.push(choice.index);
        }
        assert_eq!(counts, [0, 5, 5], "its own counts still even the load");
        for index in held {
            balancer.release(&FailingStore, index);
        }
        let store = MemoryStore::new();
        balancer.create_shared_keys(&store).unwrap();
        balancer.tick(&store, 0);
        assert_eq!(balancer.in_flight(&store), [0, 0, 0]);
    }

    /// 999 backends with weights 1000 and 999: a cycle too large to lay out.
    fn oversized(backup: bool) -> String {
        (0..999)
            .map(|i| {
                format!(
                    r#"{{"cluster": "c{i}", "weight": {}, "backup": {backup}}}"#,
                    1000 - (i % 2)
                )
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Every group that can become the selection is checked at configure time, not only the
    /// first one: primaries that start unhealthy, and backups.
    #[test]
    fn an_oversized_cycle_is_refused_for_any_group_that_can_be_selected() {
        let unhealthy_first = format!(
            r#"{{"health_check": {{"path": "/h", "initial_state": "unhealthy"}}, "backends": [{}]}}"#,
            oversized(false)
        );
        let backups = format!(
            r#"{{"backends": [{{"cluster": "primary"}}, {}]}}"#,
            oversized(true)
        );
        for json in [unhealthy_first, backups] {
            let config = Config::parse(json.as_bytes()).unwrap();
            let err = Balancer::new(config, "test", 0).unwrap_err();
            assert_eq!(err.field, "backends");
            assert!(err.reason.contains("too large to lay out"), "{err}");
        }
    }

    /// A failed request changes the health record (its failure count), and every worker follows
    /// the record; but while the backends requests may go to stay the same, nothing the policy
    /// laid out over them is rebuilt.
    #[test]
    fn a_failed_request_rebuilds_nothing_until_the_candidates_change() {
        let store = MemoryStore::new();
        let json = r#"{"outlier_detection": {"consecutive_failures": 2},
            "backends": [{"cluster": "a"}, {"cluster": "b"}, {"cluster": "c"}]}"#;
        let reporting = balancer(json);
        let following = balancer(json);
        reporting.create_shared_keys(&store).unwrap();
        following.tick(&store, 0);
        let laid_out = Rc::clone(&following.worker.borrow().candidates);
        reporting.report(&store, 2, true, 100);
        following.tick(&store, 200);
        assert!(
            Rc::ptr_eq(&laid_out, &following.worker.borrow().candidates),
            "one failure ejects nothing: the same candidates"
        );
        reporting.report(&store, 2, true, 300);
        following.tick(&store, 400);
        let after = Rc::clone(&following.worker.borrow().candidates);
        assert!(!Rc::ptr_eq(&laid_out, &after), "c ejected: rebuilt");
        assert_eq!(after.population(), [0, 1]);
    }

    fn drained(balancer: &Balancer) -> Vec<(Counter, u64)> {
        let mut out = Vec::new();
        balancer.drain_counts(|counter, count| out.push((counter, count)));
        out
    }

    #[test]
    fn decisions_are_counted_for_the_metrics() {
        crate::cas::take_exhausted(); // another test's, when tests share a thread (wasm32)
        let store = MemoryStore::new();
        let balancer = balancer(THREE);
        balancer.create_shared_keys(&store).unwrap();
        for _ in 0..7 {
            route(balancer.choose(&store, &Request::default()));
        }
        assert_eq!(
            drained(&balancer),
            [
                (Counter::Requests(0), 3),
                (Counter::Requests(1), 2),
                (Counter::Requests(2), 2)
            ]
        );
        let reject = balancer_seeded(
            &with_policy(&format!(r#"{HASHED}, "on_missing_key": "reject""#)),
            1,
        );
        reject.choose(&store, &Request::default());
        assert_eq!(
            drained(&reject),
            [(Counter::LocalReplies(LocalReply::MissingKey), 1)]
        );
    }

    #[test]
    fn health_events_are_counted_for_the_metrics() {
        crate::cas::take_exhausted(); // another test's, when tests share a thread (wasm32)
        let store = MemoryStore::new();
        let balancer = balancer(&with_policy(
            r#""health_check": {"path": "/h", "unhealthy_threshold": 1},
               "outlier_detection": {"consecutive_failures": 1, "max_ejection_percent": 100}"#,
        ));
        balancer.create_shared_keys(&store).unwrap();
        assert_eq!(balancer.backends_healthy(0), [true, true, true]);
        balancer.report(&store, 1, true, 10);
        balancer.probe_sent(0, 7, 10);
        balancer.probe_answered(7, ProbeResult::Status(200), 11);
        balancer.probe_sent(0, 8, 20);
        balancer.probe_answered(8, ProbeResult::Status(503), 21);
        balancer.probe_sent(2, 9, 20);
        balancer.probe_answered(9, ProbeResult::Failed, 21);
        balancer.probe_not_sent(2, 22);
        assert_eq!(balancer.probe_answered(99, ProbeResult::Failed, 23), None);
        balancer.tick(&store, 30);
        assert_eq!(balancer.backends_healthy(30), [false, false, false]);
        assert_eq!(balancer.mode(), Mode::AllDown);
        for _ in 0..2 {
            balancer.choose(&store, &Request::default());
        }
        assert_eq!(
            drained(&balancer),
            [
                (Counter::Ejections(1), 1),
                (Counter::Probes(0, ProbeOutcome::Success), 1),
                (Counter::Probes(0, ProbeOutcome::Failure), 1),
                (Counter::Probes(2, ProbeOutcome::NetworkFailure), 2),
                (Counter::LocalReplies(LocalReply::NoHealthyBackend), 2),
            ]
        );
    }

    #[test]
    fn least_request_counts_until_release() {
        let store = MemoryStore::new();
        let balancer = balancer(&with_policy(
            r#""policy": "least_request", "least_request": {"choice_count": 3}"#,
        ));
        balancer.create_shared_keys(&store).unwrap();
        assert_eq!(
            balancer.shared_keys(),
            [balancer.plan.key("inflight")],
            "least-request keeps only its in-flight table"
        );
        let held: Vec<Choice<'_>> = (0..6)
            .map(|_| route(balancer.choose(&store, &Request::default())))
            .collect();
        assert!(held.iter().all(|c| c.counted && c.why == Why::LeastRequest));
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
        assert_eq!(
            plain.tick_period_ms(),
            crate::metrics::FLUSH_PERIOD_MS,
            "a tick to hand the metric counts over, whatever the policy"
        );
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
            r#""policy": "least_request", "least_request": {"choice_count": 3, "latency_decay_ms": 1000, "degraded_ratio": 0}"#,
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
    fn a_degraded_backend_gets_one_request_per_trickle_however_busy_the_rest() {
        let store = MemoryStore::new();
        let balancer = balancer(&with_policy(
            r#""policy": "least_request", "least_request": {"latency_decay_ms": 100, "degraded_trickle_ms": 500}"#,
        ));
        let now_us = Cell::new(1_000_000);
        let mut counts = [0; 3];
        // 10 s of one request every 100 µs, each 1 ms (20 ms on backend 2), 10 in flight.
        let mut held = std::collections::VecDeque::new();
        for _ in 0..100_000 {
            let choice = route(balancer.choose(&store, &Request::default()));
            // The first second is warm-up: while every backend is unmeasured and busy, all
            // cost alike.
            if now_us.get() >= 2_000_000 {
                counts[choice.index] += 1;
            }
            held.push_back(choice.index);
            if held.len() > 10 {
                if let Some(index) = held.pop_front() {
                    let took = if index == 2 { 20_000 } else { 1_000 };
                    balancer.observe_latency(index, took, now_us.get());
                    balancer.release(&store, index);
                }
            }
            now_us.set(now_us.get() + 100);
        }
        // One per 500 ms in the last 9 s.
        assert!((17..=19).contains(&counts[2]), "{counts:?}");
    }

    #[test]
    fn random_needs_no_shared_data() {
        let store = MemoryStore::new();
        let balancer = balancer(&with_policy(r#""policy": "random""#));
        let mut counts = [0; 3];
        for _ in 0..3000 {
            let choice = route(balancer.choose(&store, &Request::default()));
            assert_eq!(choice.why, Why::Random);
            counts[choice.index] += 1;
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
                    skipped: 0,
                    spilled: false
                }
            );
            assert_eq!(a.why, Why::Hash);
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
        let picks: Vec<(usize, Why)> = (0..3)
            .map(|_| {
                let choice = route(fallback.choose(&store, &Request::default()));
                (choice.index, choice.why)
            })
            .collect();
        assert_eq!(
            picks,
            [(0, Why::Fallback), (1, Why::Fallback), (2, Why::Fallback)]
        );

        let reject = balancer(&with_policy(&format!(
            r#"{HASHED}, "on_missing_key": "reject""#
        )));
        assert_eq!(
            reject.choose(&store, &Request::default()),
            Decision::Reject {
                reply: LocalReply::MissingKey,
                status: 400,
                body: "eisodos: the request has no hash key (looked for header x-user, cookie s)\n",
                retry_after: None,
                rate: None,
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
        // Filling the key's own backend is hashing; passing it for being full is the fallback.
        assert_eq!(home.why, Why::Hash);
        for choice in &held {
            let spilled = choice.index != home.index;
            assert_eq!(choice.why == Why::Fallback, spilled, "{choice:?}");
        }
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
                skipped: 0,
                spilled: false
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
        assert_ne!(one.shared_keys(), two.shared_keys());
        let same = balancer(&with_policy(r#""policy": "least_request""#));
        assert_eq!(one.shared_keys(), same.shared_keys());
    }

    /// Three backends, each with `caps[i]` as its `max_requests` (`0`: none).
    fn capped(policy_fields: &str, caps: [u32; 3]) -> Balancer {
        let backends: Vec<String> = ["a", "b", "c"]
            .iter()
            .zip(caps)
            .map(|(name, cap)| match cap {
                0 => format!(r#"{{"cluster": "{name}"}}"#),
                cap => format!(r#"{{"cluster": "{name}", "max_requests": {cap}}}"#),
            })
            .collect();
        let comma = if policy_fields.is_empty() { "" } else { "," };
        balancer(&format!(
            r#"{{{policy_fields}{comma} "backends": [{}]}}"#,
            backends.join(", ")
        ))
    }

    fn circuit_open() -> Decision<'static> {
        Decision::Reject {
            reply: LocalReply::CircuitOpen,
            status: 503,
            body: "eisodos: every backend is at max_requests\n",
            retry_after: Some(1),
            rate: None,
        }
    }

    /// Holds requests on `balancer` until one is refused; the choices held.
    fn fill<'a>(balancer: &'a Balancer, store: &MemoryStore, request: &Request) -> Vec<Choice<'a>> {
        let mut held = Vec::new();
        for _ in 0..100 {
            match balancer.choose(store, request) {
                Decision::Route(choice) => held.push(choice),
                refused => {
                    assert_eq!(refused, circuit_open());
                    return held;
                }
            }
        }
        panic!("never full: {held:?}");
    }

    const POLICIES: [&str; 5] = [
        r#""policy": "round_robin""#,
        r#""policy": "random""#,
        r#""policy": "least_request""#,
        r#""policy": "consistent_hash", "hash_key": [{"header": "x-user"}]"#,
        r#""policy": "ip_hash""#,
    ];

    /// Whatever the policy: requests held fill every backend to its cap and no further, the
    /// next is refused `circuit_open` (counted), and once they end requests flow again.
    #[test]
    fn every_policy_fills_each_backend_to_its_cap_then_refuses() {
        crate::cas::take_exhausted();
        for policy in POLICIES {
            let store = MemoryStore::new();
            let balancer = capped(policy, [2, 1, 3]);
            balancer.create_shared_keys(&store).unwrap();
            assert!(balancer.counts_in_flight(), "{policy}");
            let request = keyed("x-user", "one-user").with_source("10.0.0.1:1000");
            let held = fill(&balancer, &store, &request);
            assert!(held.iter().all(|c| c.counted), "{policy}");
            assert_eq!(balancer.in_flight(&store), [2, 1, 3], "{policy}");
            let mut per_backend = [0; 3];
            for choice in &held {
                per_backend[choice.index] += 1;
            }
            assert_eq!(per_backend, [2, 1, 3], "{policy}");
            assert_eq!(
                drained(&balancer).last(),
                Some(&(Counter::LocalReplies(LocalReply::CircuitOpen), 1)),
                "{policy}"
            );
            // One ends: its backend takes the next request, this worker seeing the release
            // before it is written.
            let freed = held[0].index;
            balancer.release(&store, freed);
            let next = route(balancer.choose(&store, &request));
            assert_eq!(next.index, freed, "{policy}");
            assert_eq!(
                balancer.choose(&store, &request),
                circuit_open(),
                "{policy}"
            );
            balancer.release(&store, next.index);
            for choice in &held[1..] {
                balancer.release(&store, choice.index);
            }
            balancer.tick(&store, 0);
            assert_eq!(balancer.in_flight(&store), [0, 0, 0], "{policy}");
            assert!(matches!(
                balancer.choose(&store, &request),
                Decision::Route(_)
            ));
        }
    }

    /// Without caps, round-robin and random count nothing and touch no in-flight record.
    #[test]
    fn without_caps_round_robin_and_random_count_nothing() {
        for policy in [r#""policy": "round_robin""#, r#""policy": "random""#] {
            let store = MemoryStore::new();
            let balancer = capped(policy, [0, 0, 0]);
            balancer.create_shared_keys(&store).unwrap();
            assert!(!balancer.counts_in_flight());
            assert!(balancer.counting().is_none());
            let before = store.op_counts();
            let choice = route(balancer.choose(&store, &Request::default()));
            assert!(!choice.counted);
            let ops = store.op_counts();
            let expected = if policy.contains("random") { 0 } else { 1 };
            assert_eq!(
                (ops.0 - before.0, ops.1 - before.1),
                (expected, expected),
                "{policy}: the ticket only"
            );
        }
    }

    /// A cap on one backend: every request is counted, one get and one CAS set more than
    /// without (round-robin keeps its ticket).
    #[test]
    fn a_cap_counts_every_request_with_one_get_and_one_set() {
        let store = MemoryStore::new();
        let balancer = capped(r#""policy": "round_robin""#, [0, 5, 0]);
        balancer.create_shared_keys(&store).unwrap();
        assert_eq!(balancer.tick_period_ms(), RELEASE_FLUSH_MS);
        assert_eq!(
            balancer.shared_keys(),
            [
                "eisodos.test.rr_ticket".to_owned(),
                balancer.plan.key("inflight")
            ]
        );
        for _ in 0..2 {
            let before = store.op_counts();
            let choice = route(balancer.choose(&store, &Request::default()));
            assert!(choice.counted);
            balancer.release(&store, choice.index);
            let ops = store.op_counts();
            assert_eq!((ops.0 - before.0, ops.1 - before.1), (2, 2));
        }
    }

    /// Round-robin passes a full backend for the next one of the rotation with room; the
    /// other tickets keep their places.
    #[test]
    fn round_robin_gives_a_full_backends_turn_to_the_next() {
        let store = MemoryStore::new();
        let plain = capped(r#""policy": "round_robin""#, [1, 0, 0]);
        plain.create_shared_keys(&store).unwrap();
        let picks: String = (0..7)
            .map(|_| route(plain.choose(&store, &Request::default())).cluster)
            .collect();
        // a holds its one request from ticket 0; tickets 3 and 6 find it full and go to b.
        assert_eq!(picks, "abcbbcb");
        let weighted = balancer(
            r#"{"backends": [{"cluster": "a", "weight": 5, "max_requests": 1},
                {"cluster": "b"}, {"cluster": "c"}]}"#,
        );
        let store = MemoryStore::new();
        weighted.create_shared_keys(&store).unwrap();
        let picks: String = (0..7)
            .map(|_| route(weighted.choose(&store, &Request::default())).cluster)
            .collect();
        // The cycle a a b a c a a: a's later turns go to the next slot with room.
        assert_eq!(picks, "abbccbb");
        assert!(matches!(
            route(weighted.choose(&store, &Request::default())).reason,
            Reason::Ticket(_)
        ));
    }

    /// Random draws among the backends with room, by weight.
    #[test]
    fn random_draws_among_those_with_room_by_weight() {
        let store = MemoryStore::new();
        let balancer = balancer(
            r#"{"policy": "random", "backends": [{"cluster": "a", "max_requests": 1},
                {"cluster": "b", "weight": 3}, {"cluster": "c"}]}"#,
        );
        balancer.create_shared_keys(&store).unwrap();
        let held = fill_one(&balancer, &store, 0);
        let mut counts = [0; 3];
        for _ in 0..4000 {
            let choice = route(balancer.choose(&store, &Request::default()));
            counts[choice.index] += 1;
            balancer.release(&store, choice.index);
        }
        assert_eq!(counts[0], 0, "a is full: {counts:?}");
        // 3:1 between b and c: 3000 and 1000 expected.
        assert!((2800..3200).contains(&counts[1]), "{counts:?}");
        balancer.release(&store, held.index);
    }

    /// Takes requests until one lands on `index` (which then holds it); the others released.
    fn fill_one<'a>(balancer: &'a Balancer, store: &MemoryStore, index: usize) -> Choice<'a> {
        for _ in 0..1000 {
            let choice = route(balancer.choose(store, &Request::default()));
            if choice.index == index {
                return choice;
            }
            balancer.release(store, choice.index);
        }
        panic!("never picked {index}");
    }

    /// Least-request compares only the backends with room: c, idle but capped at 0 room, is
    /// never picked although it has the fewest in flight.
    #[test]
    fn least_request_compares_only_those_with_room() {
        let store = MemoryStore::new();
        let balancer = capped(
            r#""policy": "least_request", "least_request": {"choice_count": 3}"#,
            [0, 0, 1],
        );
        balancer.create_shared_keys(&store).unwrap();
        let mut held = Vec::new();
        for _ in 0..10 {
            held.push(route(balancer.choose(&store, &Request::default())));
        }
        let counts = balancer.in_flight(&store);
        assert_eq!(counts[2], 1, "c at its cap: {counts:?}");
        assert!(
            counts[..2].iter().all(|n| (4..=5).contains(n)),
            "{counts:?}"
        );
        assert_eq!(held[0].why, Why::LeastRequest);
    }

    /// Hashing walks the ring past a full backend, and says it spilled.
    #[test]
    fn hashing_walks_past_a_full_backend() {
        let store = MemoryStore::new();
        let balancer = capped(HASHED, [1, 1, 1]);
        balancer.create_shared_keys(&store).unwrap();
        let request = keyed("x-user", "hot-key");
        let home = route(balancer.choose(&store, &request));
        assert_eq!(home.why, Why::Hash);
        let next = route(balancer.choose(&store, &request));
        assert_ne!(next.index, home.index);
        assert_eq!(next.why, Why::Fallback);
        assert!(matches!(
            next.reason,
            Reason::Hash {
                spilled: true,
                skipped: 1..,
                ..
            }
        ));
        let plain = balancer_seeded(&with_policy(HASHED), 1);
        assert_eq!(
            route(plain.choose(&store, &request)).index,
            home.index,
            "the key's own backend"
        );
        // Without a key, the round-robin fallback skips full backends too.
        let third = route(balancer.choose(&store, &Request::default()));
        assert!(third.index != home.index && third.index != next.index);
        assert_eq!(balancer.choose(&store, &request), circuit_open());
        assert_eq!(balancer.choose(&store, &Request::default()), circuit_open());
    }

    /// With bounded loads and caps, a backend must be under both.
    #[test]
    fn bounded_loads_and_caps_both_apply() {
        let store = MemoryStore::new();
        let balancer = capped(
            &format!(r#"{HASHED}, "bounded_load_factor": 2.0"#),
            [2, 2, 2],
        );
        balancer.create_shared_keys(&store).unwrap();
        let request = keyed("x-user", "hot-key");
        let held = fill(&balancer, &store, &request);
        assert_eq!(held.len(), 6);
        assert_eq!(balancer.in_flight(&store), [2, 2, 2]);
    }

    /// A full primary does not send requests to the backups: Envoy's circuit breaker
    /// overflows to a 503 too, it does not fail over.
    #[test]
    fn full_primaries_do_not_spill_to_backups() {
        let store = MemoryStore::new();
        let balancer = balancer(
            r#"{"backends": [{"cluster": "a", "max_requests": 1},
                {"cluster": "spare", "backup": true}]}"#,
        );
        balancer.create_shared_keys(&store).unwrap();
        assert_eq!(
            route(balancer.choose(&store, &Request::default())).cluster,
            "a"
        );
        assert_eq!(balancer.choose(&store, &Request::default()), circuit_open());
    }

    /// Two workers, one store: the cap holds across them, and one's release lets the other in
    /// once written.
    #[test]
    fn caps_hold_across_workers() {
        let store = MemoryStore::new();
        let one = capped(r#""policy": "round_robin""#, [1, 1, 0]);
        let two = capped(r#""policy": "round_robin""#, [1, 1, 0]);
        one.create_shared_keys(&store).unwrap();
        let a = route(one.choose(&store, &Request::default()));
        let b = route(two.choose(&store, &Request::default()));
        assert_eq!((a.cluster, b.cluster), ("a", "b"));
        let picks: Vec<&str> = (0..4)
            .map(|i| {
                let worker = if i % 2 == 0 { &one } else { &two };
                route(worker.choose(&store, &Request::default())).cluster
            })
            .collect();
        assert_eq!(picks, ["c", "c", "c", "c"]);
        one.release(&store, a.index);
        one.tick(&store, 0);
        assert_eq!(route(two.choose(&store, &Request::default())).cluster, "a");
    }

    /// Shared data failing: uncapped backends still take requests on this worker's own
    /// counts, capped ones are not risked.
    #[test]
    fn without_shared_data_capped_backends_are_not_risked() {
        let balancer = capped(r#""policy": "round_robin""#, [1, 0, 0]);
        let mut routed = [0; 3];
        let mut refused = 0;
        for _ in 0..6 {
            match balancer.choose(&FailingStore, &Request::default()) {
                Decision::Route(choice) => routed[choice.index] += 1,
                _ => refused += 1,
            }
        }
        // The tickets of a (this worker's own order) are refused, b's and c's routed.
        assert_eq!((routed, refused), ([0, 2, 2], 2));
        let all = capped(r#""policy": "round_robin""#, [1, 1, 1]);
        assert_eq!(
            all.choose(&FailingStore, &Request::default()),
            circuit_open()
        );
    }

    #[test]
    fn the_status_page_shows_counts_and_caps() {
        let store = MemoryStore::new();
        let balancer = capped(r#""policy": "random""#, [2, 0, 0]);
        balancer.create_shared_keys(&store).unwrap();
        fill_one(&balancer, &store, 0);
        let page: serde_json::Value =
            serde_json::from_str(&balancer.status_json(&store, 0)).unwrap();
        assert_eq!(page["backends"][0]["in_flight"], 1);
        assert_eq!(page["backends"][0]["max_requests"], 2);
        assert_eq!(page["backends"][1]["max_requests"], serde_json::Value::Null);
    }
}
