//! The pick stage: each policy with the state it owns, choosing one of the candidates.
//!
//! The state is where the policy needs it and nowhere else: round-robin owns the global ticket,
//! least-request the in-flight table and, when weighted by latency, this worker's estimates,
//! hashing its ring, its key source, the ticket of its fallback and, with bounded loads, the
//! in-flight table. No combination of optional parts can be wrong.

use fastrand::Rng;

use super::candidates::{Candidates, Spread};
use super::plan::Plan;
use crate::config::{HashSource, IpHashConfig, OnMissingKey, Policy};
use crate::inflight::{Commit, InflightTable, Snapshot};
use crate::policy::{Ketama, LeastRequest, PeakEwma};
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
    /// (not candidates, or over the bounded load).
    Hash {
        /// The key's ketama hash.
        hash: u32,
        /// Backends passed along the ring.
        skipped: u32,
        /// Whether one of them was a candidate passed for being full (bounded loads).
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
    /// With bounded loads: the factor and the in-flight table.
    bounded: Option<(f64, InflightTable)>,
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
        /// Counts shared by every worker.
        table: InflightTable,
        /// This worker's latency estimates, with `latency_decay_ms`.
        latency: Option<PeakEwma>,
    },
    /// Consistent hashing.
    Hash(Hash),
}

impl PolicyState {
    /// The state `plan`'s policy needs, keyed under its namespace.
    pub fn new(plan: &Plan) -> Self {
        let config = &plan.config;
        let tickets =
            || TicketCounter::with_batch(plan.ticket_key(), config.round_robin.ticket_batch);
        let table = || InflightTable::new(plan.key("inflight"), config.backends.len());
        match config.policy {
            Policy::RoundRobin => Self::RoundRobin { tickets: tickets() },
            Policy::Random => Self::Random,
            Policy::LeastRequest => {
                let weights: Vec<u32> = config.backends.iter().map(|b| b.weight).collect();
                Self::LeastRequest {
                    least: LeastRequest::new(&weights, config.least_request),
                    table: table(),
                    latency: config
                        .least_request
                        .latency_decay_ms
                        .map(|decay_ms| PeakEwma::new(config.backends.len(), decay_ms)),
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
                bounded: config.bounded_load_factor.map(|factor| (factor, table())),
            }),
        }
    }

    /// What the policy lays out over the candidates.
    pub fn spread(&self) -> Spread {
        Spread {
            rotation: matches!(self, Self::RoundRobin { .. } | Self::Hash(_)),
            random: matches!(self, Self::Random),
        }
    }

    /// The in-flight table, when requests hold counts.
    pub fn inflight(&self) -> Option<&InflightTable> {
        match self {
            Self::LeastRequest { table, .. } => Some(table),
            Self::Hash(Hash {
                bounded: Some((_, table)),
                ..
            }) => Some(table),
            _ => None,
        }
    }

    /// This worker's latency estimates, when the policy weighs by latency.
    pub fn latency(&self) -> Option<&PeakEwma> {
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
        let tickets = self.tickets().map(TicketCounter::key);
        tickets
            .into_iter()
            .chain(self.inflight().map(InflightTable::key))
            .collect()
    }

    /// Creates the policy's keys that do not exist yet, keeping existing state.
    pub fn create_shared_keys(&self, store: &dyn SharedStore) -> Result<(), SetError> {
        if let Some(tickets) = self.tickets() {
            tickets.ensure_created(store)?;
        }
        match self.inflight() {
            Some(table) => table.ensure_created(store),
            None => Ok(()),
        }
    }

    /// Picks one of `candidates` (which [`Candidates::admit`] let through) for `request`.
    pub fn pick(
        &self,
        store: &dyn SharedStore,
        request: &dyn RequestView,
        candidates: &Candidates,
        rng: &mut Rng,
    ) -> Picked {
        match self {
            Self::RoundRobin { tickets } => round_robin(tickets, store, candidates, Reason::Ticket),
            Self::Random => uncounted(candidates.random(rng), Reason::Random),
            Self::LeastRequest {
                least,
                table,
                latency,
            } => {
                let population = candidates.population();
                let picked = table.acquire(store, |counts| match latency {
                    None => least.pick(population, |i| counts.get(i), rng),
                    Some(latency) => least.pick_by_latency(
                        population,
                        |i| counts.get(i),
                        |i| latency.latency(i),
                        rng,
                    ),
                });
                match picked {
                    Some((index, commit)) => Picked::Backend {
                        index,
                        counted: true,
                        reason: Reason::LeastRequest(commit),
                    },
                    // `acquire` always lets the comparison run, so only without candidates.
                    None => Picked::NoCandidate,
                }
            }
            Self::Hash(hash) => hash.pick(store, request, candidates),
        }
    }
}

impl PolicyState {
    /// Takes backend `index` for a request the affinity stage pinned there: the policy does
    /// not choose, but a policy that counts requests in flight counts this one too, so its
    /// stream's end gives the count back like any other's. The one place a pinned request
    /// meets the policy's state: a per-backend cap (`max_requests`) belongs here.
    pub fn pick_pinned(&self, store: &dyn SharedStore, index: usize) -> Picked {
        let counted = match self.inflight() {
            Some(table) => table.acquire(store, |_| Some(index)).is_some(),
            None => false,
        };
        Picked::Backend {
            index,
            counted,
            reason: Reason::Affinity,
        }
    }
}

impl Hash {
    fn pick(
        &self,
        store: &dyn SharedStore,
        request: &dyn RequestView,
        candidates: &Candidates,
    ) -> Picked {
        let key = match &self.key {
            KeySource::ClientIp(config) => request
                .source_address()
                .and_then(|address| request_key::ip_key(&address, *config)),
            KeySource::Request(sources) => request_key::extract(sources, request),
        };
        let Some(key) = key else {
            return match self.on_missing_key {
                OnMissingKey::RoundRobin => self.fallback(store, candidates),
                OnMissingKey::Reject => Picked::MissingKey,
            };
        };
        let hash = Ketama::hash_key(&key);
        let mut skipped = 0;
        let mut spilled = false;
        let picked = match &self.bounded {
            Some((factor, table)) => table
                .acquire(store, |counts| {
                    let walk = bounded(&self.ring, candidates, hash, *factor, counts);
                    skipped = walk.skipped;
                    spilled = walk.spilled;
                    walk.index
                })
                .map(|(index, _)| (index, true)),
            None => self
                .ring
                .walk(hash)
                .find(|&index| {
                    let allowed = candidates.allows(index);
                    skipped += u32::from(!allowed);
                    allowed
                })
                .map(|index| (index, false)),
        };
        match picked {
            Some((index, counted)) => Picked::Backend {
                index,
                counted,
                reason: Reason::Hash {
                    hash,
                    skipped,
                    spilled,
                },
            },
            // Only candidates without ring points are left: keep serving.
            None => self.fallback(store, candidates),
        }
    }

    fn fallback(&self, store: &dyn SharedStore, candidates: &Candidates) -> Picked {
        round_robin(&self.tickets, store, candidates, Reason::HashFallback)
    }
}

fn round_robin(
    tickets: &TicketCounter,
    store: &dyn SharedStore,
    candidates: &Candidates,
    reason: fn(Ticket) -> Reason,
) -> Picked {
    let ticket = tickets.take(store);
    uncounted(candidates.rotate(ticket.value), reason(ticket))
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

/// Where a bounded-load walk along the ring ended.
struct BoundedWalk {
    /// The backend that takes the request (`None`: no candidate on the ring).
    index: Option<usize>,
    /// Backends passed.
    skipped: u32,
    /// Whether a candidate was passed for being full.
    spilled: bool,
}

/// Consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam): a backend takes the
/// request only while its in-flight count stays within
/// `ceil(factor × (total + 1) / candidates)`; otherwise the walk goes on along the ring,
/// skipping backends that are not candidates. At least one candidate is always under that
/// bound, so the walk ends.
fn bounded(
    ring: &Ketama,
    candidates: &Candidates,
    hash: u32,
    factor: f64,
    counts: &Snapshot<'_>,
) -> BoundedWalk {
    let population = candidates.population();
    let total: u64 = population.iter().map(|&i| u64::from(counts.get(i))).sum();
    let capacity = (factor * (total + 1) as f64 / population.len().max(1) as f64).ceil();
    let mut walk = BoundedWalk {
        index: None,
        skipped: 0,
        spilled: false,
    };
    for index in ring.walk(hash) {
        if candidates.allows(index) {
            if f64::from(counts.get(index)) + 1.0 <= capacity {
                walk.index = Some(index);
                return walk;
            }
            walk.spilled = true;
        }
        walk.skipped += 1;
    }
    walk
}
