//! In-flight request counts per backend, shared by every worker through one shared-data record.
//!
//! One record (a little-endian `u32` per backend) rather than a key per backend: a pick reads
//! every count it may compare with one `get` and commits with one CAS `set`, whatever the
//! number of candidates. The record's key carries a fingerprint of the backend list, so a
//! reconfiguration that changes the list starts a new record while requests admitted under the
//! old one still release into the old one.
//!
//! Envoy has no atomic add, so every change is a read-modify-CAS loop with bounded attempts
//! ([`cas::cas_update`]).
//! A change that is not written yet is kept as this VM's *debt* and folded into its next
//! successful write (a later pick, or the periodic [`InflightTable::flush`]). Releases go
//! there on purpose: a release is a one-slot change that can wait a moment, so folding it
//! into the worker's next pick (or its next tick, when the worker goes idle) halves the
//! shared-data calls per request (one get and one CAS set, not two of each). A worker's own
//! picks see its pending releases ([`Snapshot::get`]); other workers see them within one
//! tick. Acquire and release of one request run on one VM, so their deltas meet in the same
//! debt and the counts return to zero once the traffic stops. A table whose configuration was
//! replaced is [`InflightTable::retire`]d: it is no longer ticked, so its releases are
//! written at once.

use std::cell::{Cell, RefCell};

use crate::cas::{self, Updated};
use crate::store::{SetError, SharedStore};

/// The counts one pick sees: the shared record with this VM's unwritten changes applied.
pub struct Snapshot<'a> {
    bytes: &'a [u8],
    debt: &'a [(usize, i64)],
}

impl Snapshot<'_> {
    /// In-flight requests on backend `index` (0 for a short or missing record).
    pub fn get(&self, index: usize) -> u32 {
        let shared = slot(self.bytes, index);
        match self.debt.iter().find(|(slot, _)| *slot == index) {
            None => shared,
            Some(&(_, owed)) => {
                u32::try_from((i64::from(shared) + owed).max(0)).unwrap_or(u32::MAX)
            }
        }
    }
}

/// The count in `index`'s slot of a record (0 for a short or missing record).
fn slot(bytes: &[u8], index: usize) -> u32 {
    let start = index.saturating_mul(4);
    bytes
        .get(start..start.saturating_add(4))
        .and_then(|slot| <[u8; 4]>::try_from(slot).ok())
        .map_or(0, u32::from_le_bytes)
}

/// How a change reached the shared record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// Written with this VM's debt folded in.
    Written,
    /// Not written (contention or a host error): kept as debt.
    Deferred,
}

/// The in-flight counts of one configuration's backends.
#[derive(Debug)]
pub struct InflightTable {
    key: String,
    backends: usize,
    /// Deltas this VM has not written yet, by backend: the releases since its last write,
    /// and changes that ran out of CAS attempts. Short (at most one entry per backend), so a
    /// write costs a copy of the record and a patch of a few slots.
    debt: RefCell<Vec<(usize, i64)>>,
    /// Whether releases wait for the next write (until the table is retired).
    defer_releases: Cell<bool>,
}

impl InflightTable {
    /// A table for `backends` backends under `key` (which should identify the backend list).
    pub fn new(key: String, backends: usize) -> Self {
        Self {
            key,
            backends,
            debt: RefCell::new(Vec::new()),
            defer_releases: Cell::new(true),
        }
    }

    /// The shared-data key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Creates the record (all zero) unless it exists.
    pub fn ensure_created(&self, store: &dyn SharedStore) -> Result<(), SetError> {
        cas::create_if_missing(store, &self.key, &vec![0; self.backends * 4]).map(|_| ())
    }

    /// Reads the counts, lets `choose` pick a backend from them, and counts one more request
    /// on it. `choose` may run several times (once per attempt) and must be cheap. It always
    /// runs: when the record cannot be read (the host failed the get) it sees this VM's own
    /// changes over zeros, and the count is kept as debt.
    pub fn acquire(
        &self,
        store: &dyn SharedStore,
        choose: impl FnMut(&Snapshot<'_>) -> Option<usize>,
    ) -> Option<(usize, Commit)> {
        self.acquire_deferring(store, choose, |_| true)
    }

    /// [`Self::acquire`], keeping a count that could not be written as debt only for a backend
    /// `may_defer` accepts. For any other the pick is dropped (nothing counted, `None`): a
    /// capped backend is taken only by a write whose compare-and-swap saw it with room, so two
    /// workers can never both take its last slot.
    pub fn acquire_deferring(
        &self,
        store: &dyn SharedStore,
        mut choose: impl FnMut(&Snapshot<'_>) -> Option<usize>,
        may_defer: impl Fn(usize) -> bool,
    ) -> Option<(usize, Commit)> {
        let mut chosen = None;
        let mut ran = false;
        let commit = self.update(store, |snapshot| {
            ran = true;
            chosen = choose(snapshot);
            chosen.map(|index| (index, 1))
        });
        if !ran {
            chosen = choose(&Snapshot {
                bytes: &[],
                debt: &self.debt.borrow(),
            });
        }
        if let (Some(index), Commit::Deferred) = (chosen, commit) {
            if !may_defer(index) {
                return None;
            }
            self.owe(index, 1);
        }
        chosen.map(|index| (index, commit))
    }

    /// Counts one request fewer on backend `index`: with this VM's next write (its next pick
    /// or [`Self::flush`]), or at once when the table is retired.
    pub fn release(&self, store: &dyn SharedStore, index: usize) -> Commit {
        if self.defer_releases.get() {
            self.owe(index, -1);
            return Commit::Deferred;
        }
        let commit = self.update(store, |_| Some((index, -1)));
        if commit == Commit::Deferred {
            self.owe(index, -1);
        }
        commit
    }

    /// For a table that will not be flushed again (its configuration was replaced, and the
    /// requests it admitted are still ending): writes the debt, and every later release at
    /// once.
    pub fn retire(&self, store: &dyn SharedStore) -> Commit {
        self.defer_releases.set(false);
        self.flush(store)
    }

    /// Writes this VM's debt, if any (call periodically, e.g. from the root context's tick).
    pub fn flush(&self, store: &dyn SharedStore) -> Commit {
        if self.debt.borrow().is_empty() {
            return Commit::Written;
        }
        self.update(store, |_| Some((0, 0)))
    }

    /// This VM's outstanding debt per backend.
    #[cfg(test)]
    pub fn debt(&self) -> Vec<i64> {
        let mut dense = vec![0; self.backends];
        for &(index, owed) in self.debt.borrow().iter() {
            if let Some(slot) = dense.get_mut(index) {
                *slot += owed;
            }
        }
        dense
    }

    /// Reads the current counts (for status and tests).
    pub fn counts(&self, store: &dyn SharedStore) -> Vec<u32> {
        let bytes = match store.get(&self.key) {
            Ok(Some((bytes, _))) => bytes,
            _ => Vec::new(),
        };
        (0..self.backends).map(|i| slot(&bytes, i)).collect()
    }

    /// One read-modify-CAS loop: `change` returns the backend and the delta to apply.
    fn update(
        &self,
        store: &dyn SharedStore,
        mut change: impl FnMut(&Snapshot<'_>) -> Option<(usize, i64)>,
    ) -> Commit {
        let outcome = cas::cas_update(store, &self.key, cas::MAX_ATTEMPTS, |current| {
            // A missing record (only if it vanished) or a short one reads as zeros; the write
            // recreates or completes it.
            let bytes = current.unwrap_or_default();
            let (index, delta) = change(&Snapshot {
                bytes,
                debt: &self.debt.borrow(),
            })?;
            Some(self.apply(bytes, index, delta))
        });
        match outcome {
            Ok(Updated::Written) => {
                self.debt.borrow_mut().clear();
                Commit::Written
            }
            // Nothing to change is nothing left to write.
            Ok(Updated::Declined) => Commit::Written,
            // Contention or a host error: the caller keeps the change as debt.
            Err(_) => Commit::Deferred,
        }
    }

    /// The record after adding `delta` to `index` and this VM's debt. Counts never go below
    /// zero (a release can only follow its own acquire, so zero means a lost record).
    fn apply(&self, bytes: &[u8], index: usize, delta: i64) -> Vec<u8> {
        // Whole slots only: a partial last slot reads as 0 (see `slot`), and must be written
        // as 0, not padded into a count nobody took.
        let mut record = bytes
            .get(..bytes.len() / 4 * 4)
            .unwrap_or_default()
            .to_vec();
        record.resize(self.backends * 4, 0);
        let debt = self.debt.borrow();
        if debt.is_empty() {
            patch(&mut record, index, delta);
            return record;
        }
        // One combined change per slot, so the floor at zero applies to the sum.
        let mut changes = debt.clone();
        match changes.iter_mut().find(|(slot, _)| *slot == index) {
            Some((_, owed)) => *owed += delta,
            None => changes.push((index, delta)),
        }
        for (slot, change) in changes {
            patch(&mut record, slot, change);
        }
        record
    }

    fn owe(&self, index: usize, delta: i64) {
        let mut debt = self.debt.borrow_mut();
        match debt.iter_mut().find(|(slot, _)| *slot == index) {
            Some((_, owed)) => *owed += delta,
            None => debt.push((index, delta)),
        }
        debt.retain(|&(_, owed)| owed != 0);
    }
}

/// Adds `change` to the count in `slot`, flooring at zero.
fn patch(record: &mut [u8], slot: usize, change: i64) {
    let start = slot.saturating_mul(4);
    let Some(bytes) = record.get_mut(start..start.saturating_add(4)) else {
        return;
    };
    let current = <[u8; 4]>::try_from(&*bytes).map_or(0, u32::from_le_bytes);
    let value = (i64::from(current) + change).max(0);
    bytes.copy_from_slice(&u32::try_from(value).unwrap_or(u32::MAX).to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory_store::MemoryStore;

    fn table(store: &MemoryStore) -> InflightTable {
        let table = InflightTable::new("eisodos.test.inflight".into(), 3);
        table.ensure_created(store).unwrap();
        table
    }

    fn bump(old: &[u8]) -> Vec<u8> {
        // Another worker acquires backend 2.
        let mut new = old.to_vec();
        new[8] += 1;
        new
    }

    #[test]
    fn acquire_and_release_count_per_backend() {
        let store = MemoryStore::new();
        let table = table(&store);
        assert_eq!(
            table.acquire(&store, |_| Some(1)),
            Some((1, Commit::Written))
        );
        assert_eq!(
            table.acquire(&store, |_| Some(1)),
            Some((1, Commit::Written))
        );
        assert_eq!(
            table.acquire(&store, |_| Some(0)),
            Some((0, Commit::Written))
        );
        assert_eq!(table.counts(&store), [1, 2, 0]);
        assert_eq!(table.release(&store, 1), Commit::Deferred);
        assert_eq!(
            table.counts(&store),
            [1, 2, 0],
            "released with the next write"
        );
        assert_eq!(table.flush(&store), Commit::Written);
        assert_eq!(table.counts(&store), [1, 1, 0]);
    }

    #[test]
    fn a_release_rides_on_the_next_pick_which_sees_it() {
        let store = MemoryStore::new();
        let table = table(&store);
        table.acquire(&store, |_| Some(0));
        table.acquire(&store, |_| Some(1));
        table.release(&store, 0);
        assert_eq!(table.debt(), [-1, 0, 0]);
        let mut seen = None;
        table.acquire(&store, |snapshot| {
            seen = Some((snapshot.get(0), snapshot.get(1)));
            Some(1)
        });
        assert_eq!(seen, Some((0, 1)), "the pick counts this VM's own release");
        assert_eq!(table.counts(&store), [0, 2, 0]);
        assert_eq!(table.debt(), [0, 0, 0]);
    }

    #[test]
    fn a_retired_table_writes_its_debt_and_then_releases_at_once() {
        let store = MemoryStore::new();
        let table = table(&store);
        table.acquire(&store, |_| Some(0));
        table.acquire(&store, |_| Some(2));
        table.release(&store, 0);
        assert_eq!(table.retire(&store), Commit::Written);
        assert_eq!(table.counts(&store), [0, 0, 1]);
        assert_eq!(table.release(&store, 2), Commit::Written);
        assert_eq!(table.counts(&store), [0, 0, 0]);
    }

    #[test]
    fn one_get_and_one_set_per_request_under_load() {
        let store = MemoryStore::new();
        let table = table(&store);
        let before = store.op_counts();
        for _ in 0..10 {
            table.acquire(&store, |_| Some(0));
            table.release(&store, 0);
        }
        let after = store.op_counts();
        assert_eq!((after.0 - before.0, after.1 - before.1), (10, 10));
        table.flush(&store);
        assert_eq!(table.counts(&store), [0, 0, 0]);
    }

    #[test]
    fn choose_sees_the_counts_and_reruns_after_a_lost_cas() {
        let store = MemoryStore::new();
        let table = table(&store);
        table.acquire(&store, |_| Some(0));
        store.interfere_after_get(1, bump);
        let mut seen = Vec::new();
        let picked = table.acquire(&store, |snapshot| {
            seen.push((snapshot.get(0), snapshot.get(2)));
            Some(2)
        });
        assert_eq!(picked, Some((2, Commit::Written)));
        assert_eq!(
            seen,
            [(1, 0), (1, 1)],
            "second attempt sees the competitor's write"
        );
        assert_eq!(table.counts(&store), [1, 0, 2]);
    }

    #[test]
    fn exhausted_attempts_become_debt_and_land_with_the_next_write() {
        let store = MemoryStore::new();
        let table = table(&store);
        store.interfere_after_get(cas::MAX_ATTEMPTS, bump);
        assert_eq!(
            table.acquire(&store, |_| Some(0)),
            Some((0, Commit::Deferred))
        );
        assert_eq!(table.debt(), [1, 0, 0]);
        let competitors = cas::MAX_ATTEMPTS;
        assert_eq!(table.counts(&store), [0, 0, competitors]);
        // The request ends: its release meets its own unpaid acquire.
        table.release(&store, 0);
        assert_eq!(table.flush(&store), Commit::Written);
        assert_eq!(table.counts(&store), [0, 0, competitors]);
        assert_eq!(table.debt(), [0, 0, 0]);
    }

    #[test]
    fn a_pick_that_may_not_defer_is_dropped_when_it_cannot_be_written() {
        let store = MemoryStore::new();
        let table = table(&store);
        store.interfere_after_get(cas::MAX_ATTEMPTS, bump);
        assert_eq!(
            table.acquire_deferring(&store, |_| Some(0), |i| i != 0),
            None
        );
        assert_eq!(table.debt(), [0, 0, 0], "nothing counted");
        store.interfere_after_get(cas::MAX_ATTEMPTS, bump);
        assert_eq!(
            table.acquire_deferring(&store, |_| Some(1), |i| i != 0),
            Some((1, Commit::Deferred))
        );
        assert_eq!(table.debt(), [0, 1, 0], "the others defer as before");
    }

    #[test]
    fn flush_pays_the_debt() {
        let store = MemoryStore::new();
        let table = table(&store);
        store.interfere_after_get(cas::MAX_ATTEMPTS, |old| old.to_vec());
        table.acquire(&store, |_| Some(1));
        assert_eq!(table.counts(&store), [0, 0, 0]);
        assert_eq!(table.flush(&store), Commit::Written);
        assert_eq!(table.counts(&store), [0, 1, 0]);
        assert_eq!(table.debt(), [0, 0, 0]);
    }

    #[test]
    fn counts_never_go_negative() {
        let store = MemoryStore::new();
        let table = table(&store);
        table.release(&store, 2);
        table.flush(&store);
        assert_eq!(table.counts(&store), [0, 0, 0]);
    }

    #[test]
    fn choose_returning_none_writes_nothing() {
        let store = MemoryStore::new();
        let table = table(&store);
        let (_, sets) = store.op_counts();
        assert_eq!(table.acquire(&store, |_| None), None);
        assert_eq!(store.op_counts().1, sets);
    }

    #[test]
    fn a_missing_record_reads_as_zeros_and_is_recreated() {
        let store = MemoryStore::new();
        let table = InflightTable::new("never.created".into(), 2);
        assert_eq!(
            table.acquire(&store, |s| Some(s.get(1) as usize)),
            Some((0, Commit::Written))
        );
        assert_eq!(table.counts(&store), [1, 0]);
    }

    #[test]
    fn a_short_record_reads_as_zeros_past_its_end_and_is_completed() {
        let store = MemoryStore::new();
        store
            .set("eisodos.test.inflight", &2_u32.to_le_bytes(), None)
            .unwrap();
        let table = table(&store);
        table.acquire(&store, |_| Some(2));
        assert_eq!(table.counts(&store), [2, 0, 1]);
        assert_eq!(store.value(table.key()).unwrap().len(), 12);
    }

    /// Found by the fuzz harness (`inflight`): a record ending in a partial slot read as 0 for
    /// that backend, but the next write padded the partial bytes into a count (76 here) that
    /// no request held and no release could take back.
    #[test]
    fn a_partial_last_slot_reads_and_is_written_as_zero() {
        let store = MemoryStore::new();
        let mut record = 2_u32.to_le_bytes().to_vec();
        record.push(76);
        store.set("eisodos.test.inflight", &record, None).unwrap();
        let table = table(&store);
        table.acquire(&store, |snapshot| {
            assert_eq!(snapshot.get(1), 0);
            Some(2)
        });
        assert_eq!(table.counts(&store), [2, 0, 1]);
    }

    /// Threads acquiring and releasing on one store end at zero, with debt flushed.
    #[cfg(not(target_family = "wasm"))]
    #[test]
    fn threads_balance_to_zero() {
        use std::sync::Arc;
        let store = Arc::new(MemoryStore::new());
        table(&store);
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    let table = InflightTable::new("eisodos.test.inflight".into(), 3);
                    for i in 0..2000_usize {
                        let (index, _) = table.acquire(&*store, |_| Some((i + t) % 3)).unwrap();
                        table.release(&*store, index);
                    }
                    while table.flush(&*store) == Commit::Deferred {}
                })
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
        assert_eq!(table(&store).counts(&*store), [0, 0, 0]);
    }
}
