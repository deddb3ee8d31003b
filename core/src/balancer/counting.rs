//! The in-flight stage: requests in flight per backend, counted for every worker in the shared
//! [`InflightTable`], and each backend's cap (`backends[].max_requests`).
//!
//! Present when something reads the counts: a policy that compares them (least-request,
//! bounded-load hashing) or a cap on any backend. Then the pick runs on one [`Room`] (the
//! shared counts as this worker sees them, with the caps) and its backend is counted by the
//! same compare-and-swap that read them: one get and one CAS set per request, the releases of
//! earlier requests folded in. A backend at its cap has no room; a pick that finds none is
//! answered `circuit_open`. Absent otherwise: round-robin, random and plain hashing without
//! caps count nothing and make no shared-data call for it.
//!
//! A cap is never passed by a race: the count a pick adds is written only by a CAS whose read
//! showed room, so two workers cannot both take a backend's last slot. When that write cannot
//! be made (16 lost attempts, or shared data failing), an uncapped backend keeps the count as
//! this worker's debt (see [`crate::inflight`]); a capped one is not taken, and the request
//! is answered `circuit_open` rather than risk the cap.

use super::plan::Plan;
use super::policy::PolicyState;
use crate::inflight::{Commit, InflightTable, Snapshot};
use crate::store::{SetError, SharedStore};

/// The shared in-flight counts and the caps.
#[derive(Debug)]
pub struct Counting {
    table: InflightTable,
    /// Each backend's cap, `u32::MAX` for none; `None` when no backend has one.
    caps: Option<Vec<u32>>,
}

/// The counts one pick sees, and the caps: which backends have room.
pub struct Room<'a> {
    counts: &'a Snapshot<'a>,
    caps: Option<&'a [u32]>,
}

impl Room<'_> {
    /// Requests in flight on backend `index`, all workers together (this worker's unwritten
    /// releases applied).
    pub fn count(&self, index: usize) -> u32 {
        self.counts.get(index)
    }

    /// Whether backend `index` may take one more request: below its cap, or without one.
    pub fn has_room(&self, index: usize) -> bool {
        match self.caps {
            None => true,
            Some(caps) => self.counts.get(index) < caps.get(index).copied().unwrap_or(u32::MAX),
        }
    }

    /// Whether every backend of `population` has room (at once without caps).
    pub fn all_have_room(&self, population: &[usize]) -> bool {
        self.caps.is_none() || population.iter().all(|&index| self.has_room(index))
    }
}

impl Counting {
    /// The in-flight stage `plan` needs, if any: when its policy compares counts or a backend
    /// has a cap.
    pub fn for_plan(plan: &Plan) -> Option<Self> {
        let backends = &plan.config.backends;
        let caps = backends
            .iter()
            .any(|backend| backend.max_requests.is_some())
            .then(|| {
                backends
                    .iter()
                    .map(|backend| backend.max_requests.unwrap_or(u32::MAX))
                    .collect()
            });
        if caps.is_none() && !PolicyState::compares_counts(&plan.config) {
            return None;
        }
        Some(Self {
            table: InflightTable::new(plan.key("inflight"), backends.len()),
            caps,
        })
    }

    /// Whether any backend has a cap: then every request is counted, whatever the policy.
    pub fn capped(&self) -> bool {
        self.caps.is_some()
    }

    /// Backend `index`'s cap, if it has one.
    pub fn cap(&self, index: usize) -> Option<u32> {
        self.caps
            .as_ref()
            .and_then(|caps| caps.get(index))
            .copied()
            .filter(|&cap| cap != u32::MAX)
    }

    /// The shared-data key of the counts.
    pub fn key(&self) -> &str {
        self.table.key()
    }

    /// Creates the counts' record unless it exists.
    pub fn ensure_created(&self, store: &dyn SharedStore) -> Result<(), SetError> {
        self.table.ensure_created(store)
    }

    /// Reads the counts once, lets `choose` pick a backend with room from them, and counts one
    /// more request on it by compare-and-swap. `choose` may run once per attempt and must be
    /// cheap. `None` when `choose` found no backend, or its capped backend could not be
    /// written (see the module's notes).
    pub fn acquire(
        &self,
        store: &dyn SharedStore,
        mut choose: impl FnMut(&Room<'_>) -> Option<usize>,
    ) -> Option<(usize, Commit)> {
        let caps = self.caps.as_deref();
        self.table.acquire_deferring(
            store,
            |counts| choose(&Room { counts, caps }),
            |index| self.cap(index).is_none(),
        )
    }

    /// Counts one more request on backend `index` only if it has room: the entry point for a
    /// stage that has already chosen its backend (a sticky session's pinned one). `None`: full
    /// (or, capped, not writable now); the caller then lets the policy choose.
    pub fn acquire_if_room(&self, store: &dyn SharedStore, index: usize) -> Option<Commit> {
        self.acquire(store, |room| room.has_room(index).then_some(index))
            .map(|(_, commit)| commit)
    }

    /// Gives back the count of a request on `index` when its stream ends (with this worker's
    /// next write; see [`InflightTable::release`]).
    pub fn release(&self, store: &dyn SharedStore, index: usize) -> Commit {
        self.table.release(store, index)
    }

    /// See [`InflightTable::retire`].
    pub fn retire(&self, store: &dyn SharedStore) -> Commit {
        self.table.retire(store)
    }

    /// See [`InflightTable::flush`].
    pub fn flush(&self, store: &dyn SharedStore) -> Commit {
        self.table.flush(store)
    }

    /// The counts as the shared record holds them (for status and tests).
    pub fn counts(&self, store: &dyn SharedStore) -> Vec<u32> {
        self.table.counts(store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cas;
    use crate::config::Config;
    use crate::memory_store::MemoryStore;

    fn counting(json: &str) -> Option<Counting> {
        let plan = Plan::new(Config::parse(json.as_bytes()).unwrap(), "test");
        Counting::for_plan(&plan)
    }

    const CAPPED: &str = r#"{"backends": [{"cluster": "a", "max_requests": 1},
        {"cluster": "b", "max_requests": 2}, {"cluster": "c"}]}"#;

    #[test]
    fn only_where_something_reads_the_counts() {
        assert!(counting(r#"{"backends": [{"cluster": "a"}]}"#).is_none());
        assert!(counting(r#"{"policy": "random", "backends": [{"cluster": "a"}]}"#).is_none());
        let least = counting(r#"{"policy": "least_request", "backends": [{"cluster": "a"}]}"#);
        assert!(least.is_some_and(|c| !c.capped()));
        let capped = counting(CAPPED).unwrap();
        assert!(capped.capped());
        assert_eq!(
            [capped.cap(0), capped.cap(1), capped.cap(2), capped.cap(3)],
            [Some(1), Some(2), None, None]
        );
    }

    #[test]
    fn a_backend_at_its_cap_has_no_room() {
        let store = MemoryStore::new();
        let counting = counting(CAPPED).unwrap();
        counting.ensure_created(&store).unwrap();
        assert_eq!(counting.acquire_if_room(&store, 0), Some(Commit::Written));
        assert_eq!(counting.acquire_if_room(&store, 0), None, "a: 1 of 1");
        assert_eq!(counting.acquire_if_room(&store, 1), Some(Commit::Written));
        assert_eq!(counting.acquire_if_room(&store, 1), Some(Commit::Written));
        assert_eq!(counting.acquire_if_room(&store, 1), None, "b: 2 of 2");
        for _ in 0..10 {
            assert_eq!(counting.acquire_if_room(&store, 2), Some(Commit::Written));
        }
        assert_eq!(counting.counts(&store), [1, 2, 10]);
        // A release is seen by this worker's next pick at once, before it is written.
        counting.release(&store, 0);
        assert_eq!(counting.counts(&store), [1, 2, 10]);
        assert_eq!(counting.acquire_if_room(&store, 0), Some(Commit::Written));
        assert_eq!(counting.counts(&store), [1, 2, 10]);
    }

    /// Another worker takes a's last slot between this worker's read and its write: the CAS
    /// fails, the second attempt sees a full, and the pick goes elsewhere.
    #[test]
    fn two_workers_cannot_both_take_the_last_slot() {
        let store = MemoryStore::new();
        let counting = counting(CAPPED).unwrap();
        counting.ensure_created(&store).unwrap();
        let table = InflightTable::new(counting.key().to_owned(), 3);
        store.interfere_after_get(1, move |old| {
            let mut counts = table.decode(old).unwrap();
            counts[0] += 1;
            table.encode(&counts)
        });
        let mut seen = Vec::new();
        let picked = counting.acquire(&store, |room| {
            seen.push(room.has_room(0));
            [0, 1, 2].into_iter().find(|&i| room.has_room(i))
        });
        assert_eq!(seen, [true, false]);
        assert_eq!(picked, Some((1, Commit::Written)));
        assert_eq!(counting.counts(&store), [1, 1, 0]);
    }

    /// A capped backend whose count cannot be written is not taken (nothing owed); an
    /// uncapped one keeps its count as debt, as without caps.
    #[test]
    fn a_capped_pick_that_cannot_be_written_is_dropped() {
        let store = MemoryStore::new();
        let counting = counting(CAPPED).unwrap();
        counting.ensure_created(&store).unwrap();
        store.interfere_after_get(cas::MAX_ATTEMPTS, <[u8]>::to_vec);
        assert_eq!(counting.acquire_if_room(&store, 0), None);
        store.interfere_after_get(cas::MAX_ATTEMPTS, <[u8]>::to_vec);
        assert_eq!(counting.acquire_if_room(&store, 2), Some(Commit::Deferred));
        counting.flush(&store);
        assert_eq!(counting.counts(&store), [0, 0, 1]);
        cas::take_exhausted();
    }

    /// Workers on threads taking and giving back counts over one store: no backend's count in
    /// the shared record ever passes its cap, and they all end at zero.
    #[cfg(not(target_family = "wasm"))]
    #[test]
    fn contending_workers_never_pass_a_cap() {
        use std::sync::atomic::{AtomicU32, Ordering};
        use std::sync::Arc;

        let store = Arc::new(MemoryStore::new());
        let json = r#"{"backends": [{"cluster": "a", "max_requests": 2},
            {"cluster": "b", "max_requests": 2}, {"cluster": "c", "max_requests": 2}]}"#;
        counting(json).unwrap().ensure_created(&*store).unwrap();
        let key = counting(json).unwrap().key().to_owned();
        let full = Arc::new(AtomicU32::new(0));
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let (store, full, key) = (Arc::clone(&store), Arc::clone(&full), key.clone());
                std::thread::spawn(move || {
                    let worker = counting(json).unwrap();
                    let mut held = Vec::new();
                    for i in 0..3000_usize {
                        let first = (i + t) % 3;
                        let picked = worker.acquire(&*store, |room| {
                            (0..3).map(|k| (first + k) % 3).find(|&j| room.has_room(j))
                        });
                        match picked {
                            Some((index, _)) => held.push(index),
                            // Refused: give the oldest back, so the slots keep changing hands.
                            None => {
                                full.fetch_add(1, Ordering::Relaxed);
                                if !held.is_empty() {
                                    worker.release(&*store, held.remove(0));
                                }
                            }
                        }
                        let record = store.value(&key).unwrap();
                        let counts = InflightTable::new(key.clone(), 3).decode(&record).unwrap();
                        assert!(counts.iter().all(|&count| count <= 2), "{counts:?}");
                        // Hold up to seven (more than the six slots, so even a worker
                        // alone finds them full), then give the oldest back.
                        if held.len() >= 7 {
                            worker.release(&*store, held.remove(0));
                        }
                    }
                    for index in held {
                        worker.release(&*store, index);
                    }
                    worker.retire(&*store);
                    while worker.flush(&*store) == Commit::Deferred {}
                })
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
        let counts = counting(json).unwrap().counts(&*store);
        assert_eq!(counts, [0, 0, 0]);
        // Each worker alone holds more than the six slots: the caps were reached.
        assert!(full.load(Ordering::Relaxed) > 0);
        cas::take_exhausted();
    }
}
