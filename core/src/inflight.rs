//! In-flight request counts per backend, shared by every worker through one shared-data record.
//!
//! One record (a little-endian `u32` per backend, then a tag and a check, see
//! [`InflightTable::encode`]) rather than a key per backend: a pick reads
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
use crate::checksum;
use crate::store::{SetError, SharedStore};

/// Marks an in-flight table (`EIF1`).
const TAG: [u8; 4] = *b"EIF1";
/// Bytes after the counts: the tag and the check. After, not before: an older eisodos (no
/// check) still reads the counts where it expects them, and cuts the trailer off when it writes,
/// which this one then reads as garbage.
const TRAILER_LEN: usize = 8;

/// The counts one pick sees: the shared record with this VM's unwritten changes applied.
pub struct Snapshot<'a> {
    /// The record's counts (empty when it is missing or fails its check).
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
    /// The key's [`checksum::seed`].
    seed: u32,
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
            seed: checksum::seed(&key),
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
        cas::create_if_missing(store, &self.key, &self.encode(&vec![0; self.backends])).map(|_| ())
    }

    /// The record holding `counts` (one per backend; missing ones are 0, extra ones dropped):
    /// the counts as little-endian `u32`s, then the tag `EIF1` and the [`checksum::check`] of
    /// the counts under this table's key. For tests and tools; the table writes its own.
    pub fn encode(&self, counts: &[u32]) -> Vec<u8> {
        let mut record = vec![0; self.backends * 4 + TRAILER_LEN];
        for (slot, count) in record.chunks_exact_mut(4).zip(counts) {
            slot.copy_from_slice(&count.to_le_bytes());
        }
        self.seal(&mut record);
        record
    }

    /// The counts in `record`, or `None` when it is not a record this table could have
    /// written: another length, tag or check (garbage, or another key's record).
    pub fn decode(&self, record: &[u8]) -> Option<Vec<u32>> {
        let counts = self.counts_of(record)?;
        Some((0..self.backends).map(|i| slot(counts, i)).collect())
    }

    /// The counts part of `record` when its length, tag and check hold. A record that fails
    /// is taken as absent (every count 0) and rewritten whole by the next write: the requests
    /// it counted release into a floor at zero. Per request: a length and tag compare and one
    /// multiply-xor step per backend.
    fn counts_of<'a>(&self, record: &'a [u8]) -> Option<&'a [u8]> {
        let (counts, trailer) = record.split_last_chunk::<TRAILER_LEN>()?;
        let (tag, check) = trailer.split_first_chunk::<4>()?;
        (counts.len() == self.backends.saturating_mul(4)
            && *tag == TAG
            && *check == checksum::check(self.seed, counts).to_le_bytes())
        .then_some(counts)
    }

    /// Writes the tag and the check of `record`'s counts into its trailer.
    fn seal(&self, record: &mut [u8]) {
        let Some((counts, trailer)) = record.split_last_chunk_mut::<TRAILER_LEN>() else {
            return;
        };
        let check = checksum::check(self.seed, counts);
        let (tag, check_bytes) = trailer.split_at_mut(4);
        tag.copy_from_slice(&TAG);
        check_bytes.copy_from_slice(&check.to_le_bytes());
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

    /// Reads the current counts (for status and tests): zeros for a missing record or one
    /// that fails its check.
    pub fn counts(&self, store: &dyn SharedStore) -> Vec<u32> {
        match store.get(&self.key) {
            Ok(Some((bytes, _))) => self.decode(&bytes),
            _ => None,
        }
        .unwrap_or_else(|| vec![0; self.backends])
    }

    /// One read-modify-CAS loop: `change` returns the backend and the delta to apply.
    fn update(
        &self,
        store: &dyn SharedStore,
        mut change: impl FnMut(&Snapshot<'_>) -> Option<(usize, i64)>,
    ) -> Commit {
        let outcome = cas::cas_update(store, &self.key, cas::MAX_ATTEMPTS, |current| {
            // A missing record (only if it vanished) or one that fails its check reads as
            // zeros; the write recreates it whole.
            let bytes = current
                .and_then(|record| self.counts_of(record))
                .unwrap_or_default();
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

    /// The record after adding `delta` to `index` and this VM's debt, over `counts` (a
    /// checked record's counts, or empty for zeros). Counts never go below zero (a release can
    /// only follow its own acquire, so zero means a lost or rebuilt record).
    fn apply(&self, counts: &[u8], index: usize, delta: i64) -> Vec<u8> {
        let mut record = vec![0; self.backends * 4 + TRAILER_LEN];
        if let (Some(slots), Some(counts)) = (
            record.get_mut(..self.backends * 4),
            counts.get(..self.backends * 4),
        ) {
            slots.copy_from_slice(counts);
        }
        self.patch_and_seal(&mut record, index, delta);
        record
    }

    fn patch_and_seal(&self, record: &mut [u8], index: usize, delta: i64) {
        let Some(slots) = record.get_mut(..self.backends * 4) else {
            return;
        };
        let debt = self.debt.borrow();
        if debt.is_empty() {
            patch(slots, index, delta);
            self.seal(record);
            return;
        }
        // One combined change per slot, so the floor at zero applies to the sum.
        let mut changes = debt.clone();
        match changes.iter_mut().find(|(slot, _)| *slot == index) {
            Some((_, owed)) => *owed += delta,
            None => changes.push((index, delta)),
        }
        for (slot, change) in changes {
            patch(slots, slot, change);
        }
        self.seal(record);
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
        let table = InflightTable::new("eisodos.test.inflight".into(), 3);
        let mut counts = table.decode(old).unwrap();
        counts[2] += 1;
        table.encode(&counts)
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
    fn a_record_round_trips_and_its_check_covers_every_byte() {
        let store = MemoryStore::new();
        let table = table(&store);
        let record = table.encode(&[1, 2, 3]);
        assert_eq!(record.len(), 12 + 8);
        assert_eq!(
            &record[..12],
            [1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0],
            "the counts first"
        );
        assert_eq!(&record[12..16], b"EIF1");
        assert_eq!(table.decode(&record), Some(vec![1, 2, 3]));
        for i in 0..record.len() {
            let mut flipped = record.clone();
            flipped[i] ^= 0x10;
            assert_eq!(table.decode(&flipped), None, "byte {i} changed");
        }
        assert_eq!(table.decode(&record[..19]), None);
        assert_eq!(table.decode(b""), None);
        assert_eq!(table.decode(&[0; 20]), None, "zeros of the right length");
        // The old format, a bare u32 per backend, is garbage now; an older eisodos reading
        // this record finds the counts where it expects them.
        assert_eq!(table.decode(&[0; 12]), None);
        let other_key = InflightTable::new("eisodos.test.inflight.other".into(), 3);
        assert_eq!(
            table.decode(&other_key.encode(&[1, 2, 3])),
            None,
            "another key's record"
        );
        let fewer = InflightTable::new("eisodos.test.inflight".into(), 2);
        assert_eq!(table.decode(&fewer.encode(&[1, 2])), None, "another length");
    }

    /// Found by the shared-data garbage test's design (issue 14): a record without a check
    /// trusted garbage of the right length, so a random count could block a capped backend.
    /// Now anything that fails the check reads as zeros and the next write rebuilds it.
    #[test]
    fn garbage_of_the_right_length_reads_as_zeros_and_is_rebuilt() {
        let store = MemoryStore::new();
        let table = table(&store);
        let garbage = [0xff_u8; 20];
        store.set(table.key(), &garbage, None).unwrap();
        assert_eq!(table.counts(&store), [0, 0, 0]);
        let mut seen = None;
        let picked = table.acquire_deferring(
            &store,
            |snapshot| {
                seen = Some(snapshot.get(1));
                (snapshot.get(1) < 1).then_some(1)
            },
            |_| false,
        );
        assert_eq!(seen, Some(0), "the garbage count is not believed");
        assert_eq!(
            picked,
            Some((1, Commit::Written)),
            "a capped backend is taken"
        );
        assert_eq!(
            table.decode(&store.value(table.key()).unwrap()),
            Some(vec![0, 1, 0])
        );
    }

    #[test]
    fn garbage_of_any_shape_reads_as_zeros_and_the_next_write_rebuilds_it() {
        let table = InflightTable::new("eisodos.test.inflight".into(), 3);
        let other = InflightTable::new("eisodos.other.inflight".into(), 3);
        for garbage in [
            Vec::new(),
            vec![7; 3],
            vec![7; 12],
            vec![7; 20],
            vec![7; 1 << 20],
            other.encode(&[5, 5, 5]),
        ] {
            let store = MemoryStore::new();
            store.set(table.key(), &garbage, None).unwrap();
            assert_eq!(table.counts(&store), [0, 0, 0], "{} bytes", garbage.len());
            table.acquire(&store, |_| Some(2));
            let rebuilt = store.value(table.key()).unwrap();
            assert_eq!(table.decode(&rebuilt), Some(vec![0, 0, 1]));
        }
    }

    /// Requests counted before the record turned to garbage release into a floor at zero:
    /// the counts undercount for as long as they run, never overcount.
    #[test]
    fn releases_over_a_rebuilt_record_saturate_at_zero() {
        let store = MemoryStore::new();
        let table = table(&store);
        table.retire(&store);
        table.acquire(&store, |_| Some(0));
        table.acquire(&store, |_| Some(0));
        store.set(table.key(), b"junk", None).unwrap();
        table.acquire(&store, |_| Some(1));
        assert_eq!(table.counts(&store), [0, 1, 0]);
        table.release(&store, 0);
        table.release(&store, 0);
        assert_eq!(table.counts(&store), [0, 1, 0]);
    }

    /// A competitor that turns the record to garbage between this VM's get and its set: the
    /// CAS fails, the retry reads the garbage as zeros and rebuilds it.
    #[test]
    fn garbage_written_during_a_pick_is_rebuilt_by_its_retry() {
        let store = MemoryStore::new();
        let table = table(&store);
        table.acquire(&store, |_| Some(0));
        store.interfere_after_get(1, |_| vec![0xab; 20]);
        let mut seen = Vec::new();
        let picked = table.acquire(&store, |snapshot| {
            seen.push(snapshot.get(0));
            Some(2)
        });
        assert_eq!(picked, Some((2, Commit::Written)));
        assert_eq!(seen, [1, 0], "the retry sees the garbage as zeros");
        assert_eq!(table.counts(&store), [0, 0, 1]);
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
