//! The pick stage: each policy with the state it owns, choosing one of the candidates.
//!
//! The state is where the policy needs it and nowhere else: round-robin owns the global ticket,
//! least-request, when weighted by latency, this worker's estimates, hashing its ring, its key
//! source, the ticket of its fallback and its bounded-load factor. The in-flight counts are
//! the in-flight stage's ([`Counting`]), handed to the pick when the configuration has them:
//! always for least-request and bounded loads (which compare them), for every policy when a
//! backend has a cap (which then skips full backends).

use fastrand::Rng;

use super::candidates::{Candidates, Spread};
use super::counting::{Counting, Room};
use super::plan::Plan;
use crate::config::{Config, HashSource, IpHashConfig, OnMissingKey, Policy};
use crate::inflight::Commit;
use crate::policy::{Ketama, LatencyFloor, LeastRequest, PeakEwma, Screen};
use crate::request_key::{self, RequestView};
use crate::store::{SetError, SharedStore};
use crate::ticket::{Ticket, TicketCounter};

/// How the backend was chosen, in detail (for debug logs and tests; [`super::Why`] is what
/// operators read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Round-robin ticket.
    Ticket(Ticket),
    /// Weighted random.
    Random,
    /// Least request; `Deferred` when the in-flight count could not be written yet.
    LeastRequest(Commit),
    /// The key hashed to this point of the ring; `skipped` backends were passed along it
    /// (not candidates, over the bounded load, or at their `max_requests`).
    Hash {
        /// The key's ketama hash.
        hash: u32,
        /// Backends passed along the ring.
        skipped: u32,
        /// Whether one of them was a candidate passed for being full (bounded loads or
        /// `max_requests`).
        spilled: bool,
    },
    /// A hashing policy fell back to round-robin: the request had no key, or no candidate
    /// owns a point on the ring.
    HashFallback(Ticket),
    /// The request's `session_affinity` cookie named this backend, and it may take the
    /// request: the policy was not asked.
    Affinity,
}

/// A policy's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Picked {
    /// This backend; `counted` when an in-flight count was taken for it.
    Backend {
        /// Index in the configuration.
        index: usize,
        /// Whether the stream's end must give an in-flight count back.
        counted: bool,
        /// How.
        reason: Reason,
    },
    /// A hashing policy found no key and is configured to refuse such requests.
    MissingKey,
    /// Every candidate is at its `max_requests` (or the last slot could not be written).
    Full,
    /// No candidate to pick: only when admission let an empty set through, which it does not.
    NoCandidate,
}

/// Where a hashing policy takes its key from.
#[derive(Debug)]
enum KeySource {
    /// The first of these present in the request.
    Request(Vec<HashSource>),
    /// The client's address, masked to a prefix.
    ClientIp(IpHashConfig),
}

/// Consistent hashing (by request key or client address).
#[derive(Debug)]
pub struct Hash {
    ring: Ketama,
    key: KeySource,
    on_missing_key: OnMissingKey,
    /// The global order for requests the ring cannot place.
    tickets: TicketCounter,
    /// With bounded loads: the factor.
    bounded: Option<f64>,
}

/// A policy and the state it owns.
#[derive(Debug)]
pub enum PolicyState {
    /// One global order over the candidates.
    RoundRobin {
        /// The global ticket.
        tickets: TicketCounter,
    },
    /// Weighted random, from this worker's random source.
    Random,
    /// The candidate with the fewest requests in flight (or the lowest latency cost).
    LeastRequest {
        /// The comparison.
        least: LeastRequest,
        /// This worker's latency estimates, with `latency_decay_ms`.
        latency: Option<Latency>,
    },
    /// Consistent hashing.
    Hash(Hash),
}

/// One worker's view of its backends' latency: the estimates compared, and the floors that
/// screen out degraded backends (unless `degraded_ratio` is 0).
#[derive(Debug)]
pub struct Latency {
    /// Peak-EWMA estimates, decaying with `latency_decay_ms`.
    pub estimates: PeakEwma,
    /// Recent floors, for `degraded_ratio`.
    pub floors: Option<LatencyFloor>,
}

impl Latency {
    fn new(config: &Config, decay_ms: u32) -> Self {
        let backends = config.backends.len();
        let tuning = config.least_request;
        Self {
            estimates: PeakEwma::new(backends, decay_ms),
            floors: (tuning.degraded_ratio > 0.0).then(|| {
                LatencyFloor::new(backends, tuning.degraded_ratio, tuning.degraded_trickle_ms)
            }),
        }
    }

    /// A response from `index` that took `latency_us`, ending at `end_us`.
    pub fn observe(&self, index: usize, latency_us: u64, end_us: u64) {
        self.estimates.observe(index, latency_us, end_us);
        if let Some(floors) = &self.floors {
            floors.observe(index, latency_us, end_us);
        }
    }

    fn screen(&self, population: &[usize]) -> Screen {
        match &self.floors {
            Some(floors) => floors.screen(population),
            None => Screen::All,
        }
    }
}

impl PolicyState {
    /// The state `plan`'s policy needs, keyed under its namespace.
    pub fn new(plan: &Plan) -> Self {
        let config = &plan.config;
        let tickets =
            || TicketCounter::with_batch(plan.ticket_key(), config.round_robin.ticket_batch);
        match config.policy {
            Policy::RoundRobin => Self::RoundRobin { tickets: tickets() },
            Policy::Random => Self::Random,
            Policy::LeastRequest => {
                let weights: Vec<u32> = config.backends.iter().map(|b| b.weight).collect();
                Self::LeastRequest {
                    least: LeastRequest::new(&weights, config.least_request),
                    latency: config
                        .least_request
                        .latency_decay_ms
                        .map(|decay_ms| Latency::new(config, decay_ms)),
                }
            }
            Policy::ConsistentHash | Policy::IpHash => Self::Hash(Hash {
                ring: Ketama::new(
                    config
                        .backends
                        .iter()
                        .map(|b| (b.cluster.as_str(), b.weight)),
                ),
                key: if config.policy == Policy::IpHash {
                    KeySource::ClientIp(config.ip_hash)
                } else {
                    KeySource::Request(config.hash_key.clone())
                },
                on_missing_key: config.on_missing_key,
                tickets: tickets(),
                bounded: config.bounded_load_factor,
            }),
        }
    }

    /// Whether `config`'s policy compares in-flight counts (least-request, bounded loads), so
    /// its requests are counted even without caps.
    pub fn compares_counts(config: &Config) -> bool {
        config.policy == Policy::LeastRequest || config.bounded_load_factor.is_some()
    }

    /// What the policy lays out over the candidates.
    pub fn spread(&self) -> Spread {
        Spread {
            rotation: matches!(self, Self::RoundRobin { .. } | Self::Hash(_)),
            random: matches!(self, Self::Random),
        }
    }

    /// This worker's latency estimates, when the policy weighs by latency.
    pub fn latency(&self) -> Option<&Latency> {
        match self {
            Self::LeastRequest { latency, .. } => latency.as_ref(),
            _ => None,
        }
    }

    /// The hash ring, for hashing policies.
    pub fn ring(&self) -> Option<&Ketama> {
        match self {
            Self::Hash(hash) => Some(&hash.ring),
            _ => None,
        }
    }

    /// The global ticket, for round-robin and hashing's fallback.
    fn tickets(&self) -> Option<&TicketCounter> {
        match self {
            Self::RoundRobin { tickets } => Some(tickets),
            Self::Hash(hash) => Some(&hash.tickets),
            Self::Random | Self::LeastRequest { .. } => None,
        }
    }

    /// The shared-data keys the policy writes.
    pub fn keys(&self) -> Vec<&str> {
        self.tickets().map(TicketCounter::key).into_iter().collect()
    }

    /// Creates the policy's keys that do not exist yet, keeping existing state.
    pub fn create_shared_keys(&self, store: &dyn SharedStore) -> Result<(), SetError> {
        match self.tickets() {
            Some(tickets) => tickets.ensure_created(store),
            None => Ok(()),
        }
    }

    /// Picks one of `candidates` (which [`Candidates::admit`] let through) for `request`,
    /// counting it in `counting` when the configuration counts (see [`Counting::for_plan`]).
    pub fn pick(
        &self,
        store: &dyn SharedStore,
        request: &dyn RequestView,
        candidates: &Candidates,
        rng: &mut Rng,
        counting: Option<&Counting>,
    ) -> Picked {
        match self {
            Self::RoundRobin { tickets } => {
                round_robin(tickets, store, candidates, capped(counting), Reason::Ticket)
            }
            Self::Random => match capped(counting) {
                None => uncounted(candidates.random(rng), Reason::Random),
                Some(counting) => {
                    let picked =
                        counting.acquire(store, |room| candidates.random_with_room(rng, room));
                    counted(counting, picked, |_| Reason::Random)
                }
            },
            Self::LeastRequest { least, latency } => {
                // Built with the counts whenever the policy is least-request; without them
                // (never), every backend compares as idle.
                let Some(counting) = counting else {
                    return uncounted(
                        least.pick(candidates.population(), |_| 0, rng),
                        Reason::LeastRequest(Commit::Written),
                    );
                };
                let all = candidates.population();
                let picked = counting.acquire(store, |room| {
                    // Only those with room are compared; the list is made only when one is full.
                    let open: Vec<usize>;
                    let population = if room.all_have_room(all) {
                        all
                    } else {
                        open = all.iter().copied().filter(|&i| room.has_room(i)).collect();
                        &open
                    };
                    let Some(latency) = latency else {
                        return least.pick(population, |i| room.count(i), rng);
                    };
                    let screened;
                    let population = match latency.screen(population) {
                        Screen::All => population,
                        Screen::Trickle(index) => return Some(index),
                        Screen::Only(rest) => {
                            screened = rest;
                            &screened
                        }
                    };
                    least.pick_by_latency(
                        population,
                        |i| room.count(i),
                        |i| latency.estimates.latency(i),
                        rng,
                    )
                });
                counted(counting, picked, Reason::LeastRequest)
            }
            Self::Hash(hash) => hash.pick(store, request, candidates, counting),
        }
    }
}

impl Hash {
    fn pick(
        &self,
        store: &dyn SharedStore,
        request: &dyn RequestView,
        candidates: &Candidates,
        counting: Option<&Counting>,
    ) -> Picked {
        let key = match &self.key {
            KeySource::ClientIp(config) => request
                .source_address()
                .and_then(|address| request_key::ip_key(&address, *config)),
            KeySource::Request(sources) => request_key::extract(sources, request),
        };
        let Some(key) = key else {
            return match self.on_missing_key {
                OnMissingKey::RoundRobin => self.fallback(store, candidates, counting),
                OnMissingKey::Reject => Picked::MissingKey,
            };
        };
        let hash = Ketama::hash_key(&key);
        let mut walked = Walk::default();
        let picked = match counting {
            // Plain hashing without caps: no counts, no shared data.
            None => {
                walked = walk(&self.ring, candidates, hash, None, None);
                walked.index.map(|index| (index, false))
            }
            Some(counting) => counting
                .acquire(store, |room| {
                    walked = walk(&self.ring, candidates, hash, self.bounded, Some(room));
                    walked.index
                })
                .map(|(index, _)| (index, true)),
        };
        match picked {
            Some((index, counted)) => Picked::Backend {
                index,
                counted,
                reason: Reason::Hash {
                    hash,
                    skipped: walked.skipped,
                    spilled: walked.spilled,
                },
            },
            // Every candidate on the ring is at its cap (bounded loads alone always leave one).
            None if walked.spilled => Picked::Full,
            // Only candidates without ring points are left: keep serving.
            None => self.fallback(store, candidates, counting),
        }
    }

    fn fallback(
        &self,
        store: &dyn SharedStore,
        candidates: &Candidates,
        counting: Option<&Counting>,
    ) -> Picked {
        let counting = capped(counting);
        round_robin(
            &self.tickets,
            store,
            candidates,
            counting,
            Reason::HashFallback,
        )
    }
}

/// The counts, when a cap makes every request count (policies that do not compare counts).
fn capped(counting: Option<&Counting>) -> Option<&Counting> {
    counting.filter(|counting| counting.capped())
}

/// The next backend of the global order with room: the ticket's, or when that one is full the
/// next slot's along the rotation (see [`Candidates::rotate_with_room`]).
fn round_robin(
    tickets: &TicketCounter,
    store: &dyn SharedStore,
    candidates: &Candidates,
    counting: Option<&Counting>,
    reason: fn(Ticket) -> Reason,
) -> Picked {
    let ticket = tickets.take(store);
    match counting {
        None => uncounted(candidates.rotate(ticket.value), reason(ticket)),
        Some(counting) => {
            let picked = counting.acquire(store, |room| {
                candidates.rotate_with_room(ticket.value, room)
            });
            counted(counting, picked, |_| reason(ticket))
        }
    }
}

/// A backend counted in `counting`, or why none: [`Picked::Full`] when caps left none with
/// room.
fn counted(
    counting: &Counting,
    picked: Option<(usize, Commit)>,
    reason: impl FnOnce(Commit) -> Reason,
) -> Picked {
    match picked {
        Some((index, commit)) => Picked::Backend {
            index,
            counted: true,
            reason: reason(commit),
        },
        None if counting.capped() => Picked::Full,
        // Without caps a pick finds a backend whenever there are candidates.
        None => Picked::NoCandidate,
    }
}

/// `index` without an in-flight count, or [`Picked::NoCandidate`].
fn uncounted(index: Option<usize>, reason: Reason) -> Picked {
    match index {
        Some(index) => Picked::Backend {
            index,
            counted: false,
            reason,
        },
        None => Picked::NoCandidate,
    }
}

/// Where a walk along the ring ended.
#[derive(Debug, Default, Clone, Copy)]
struct Walk {
    /// The backend that takes the request (`None`: no candidate on the ring with room).
    index: Option<usize>,
    /// Backends passed.
    skipped: u32,
    /// Whether a candidate was passed for being full.
    spilled: bool,
}

/// The first backend along the ring from `hash` that is a candidate and, with counts, has
/// room: below its `max_requests`, and with bounded loads (Mirrokni, Thorup, Zadimoghaddam)
/// within `ceil(factor × (total + 1) / candidates)` in flight. Bounded loads alone always
/// leave one candidate under that bound, so only caps can make the walk find none.
fn walk(
    ring: &Ketama,
    candidates: &Candidates,
    hash: u32,
    factor: Option<f64>,
    room: Option<&Room<'_>>,
) -> Walk {
    let capacity = match (factor, room) {
        (Some(factor), Some(room)) => {
            let population = candidates.population();
            let total: u64 = population.iter().map(|&i| u64::from(room.count(i))).sum();
            Some((factor * (total + 1) as f64 / population.len().max(1) as f64).ceil())
        }
        _ => None,
    };
    let mut walk = Walk::default();
    for index in ring.walk(hash) {
        if candidates.allows(index) {
            let open = room.is_none_or(|room| {
                room.has_room(index)
                    && capacity.is_none_or(|bound| f64::from(room.count(index)) + 1.0 <= bound)
            });
            if open {
                walk.index = Some(index);
                return walk;
            }
            walk.spilled = true;
        }
        walk.skipped += 1;
    }
    walk
}
