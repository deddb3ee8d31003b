//! The two ways eisodos changes a shared-data key: create it at configure time unless it
//! exists, and update it with a bounded compare-and-swap loop.
//!
//! Envoy has no atomic add, so every change is read, compute, CAS-write, retried when another
//! worker wrote in between. The ticket counter, the in-flight table and the health record all
//! change their keys this way; they differ only in what the bytes mean, what a malformed value
//! counts as and what they do when the loop gives up, which is why decoding stays in their
//! closures and the outcome tells exhaustion apart from a host failure.

use std::cell::Cell;

use crate::store::{SetError, SharedStore};

thread_local! {
    /// Loops that lost every attempt on this thread (a worker's VM is one thread), until
    /// [`take_exhausted`]: counted here rather than by each caller, whose outcomes differ.
    static EXHAUSTED: Cell<u64> = const { Cell::new(0) };
}

/// The [`cas_update`] loops on this thread that lost every attempt since the last call.
/// Per VM, not per configuration: with two eisodos filters in one VM, the filter whose tick
/// takes them counts them.
pub fn take_exhausted() -> u64 {
    EXHAUSTED.with(Cell::take)
}

/// Attempts of one [`cas_update`], the same for every caller.
///
/// Giving up is never an error for them: a ticket is shared with the request that won
/// ([`crate::ticket::TicketSource::Contended`]), an in-flight change becomes debt written with
/// the worker's next write, a health change waits for the next tick. So the bound only caps the
/// cost of the unluckiest request or tick: each attempt is a data-returning get (~12k
/// instructions, ~4 µs) and a set. An attempt loses only to a write on the same key landing in
/// its own few-µs get-to-set window, so losing 16 in a row takes the other workers writing that
/// key back to back; more retries would only add to the traffic on the one lock all shared
/// data goes through. 16 lets a worker lose once to each of 15 others (Envoy runs a worker per
/// hardware thread by default) and still write. The ticket counter used 8 before and the other
/// two 16; 16 for the ticket only makes a shared ticket rarer.
pub const MAX_ATTEMPTS: u32 = 16;

/// How a [`cas_update`] that did not fail ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Updated {
    /// The closure's value was written by the last attempt.
    Written,
    /// The closure declined: nothing was written.
    Declined,
}

/// Why a [`cas_update`] wrote nothing although its closure wanted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CasError {
    /// Every attempt lost its compare-and-swap to another writer (or there were no attempts).
    Exhausted,
    /// The host failed a get or a set (its status is in the text). Not retried: a failing host
    /// is not contention, and the caller's fallback is cheaper than more host calls.
    Host(&'static str),
}

/// Reads `key`, lets `f` compute the value to write from the current bytes (`None` when the key
/// is missing) or decline with `None`, and writes it with the `cas` read, up to `attempts`
/// times while another writer wins the race in between.
///
/// `f` runs once per attempt, each time on a fresh read, so it must be cheap and must not keep
/// effects of an attempt that lost; a caller that needs the value it computed on the attempt
/// that wrote (or on the last one that lost) records it from `f`. A missing key is written
/// without a `cas`, which always succeeds: the key is recreated.
pub fn cas_update<W: AsRef<[u8]>>(
    store: &dyn SharedStore,
    key: &str,
    attempts: u32,
    mut f: impl FnMut(Option<&[u8]>) -> Option<W>,
) -> Result<Updated, CasError> {
    for _ in 0..attempts {
        let (current, cas) = match store.get(key) {
            Ok(Some((bytes, cas))) => (Some(bytes), Some(cas)),
            Ok(None) => (None, None),
            Err(err) => return Err(CasError::Host(err.0)),
        };
        let Some(new) = f(current.as_deref()) else {
            return Ok(Updated::Declined);
        };
        match store.set(key, new.as_ref(), cas) {
            Ok(()) => return Ok(Updated::Written),
            Err(SetError::CasMismatch) => {}
            Err(SetError::Host(status)) => return Err(CasError::Host(status)),
        }
    }
    EXHAUSTED.with(|count| count.set(count.get().saturating_add(1)));
    Err(CasError::Exhausted)
}

/// Writes `initial` under `key` unless the key exists, so that a reconfiguration keeps the
/// state the previous configuration built. True when this call created the key.
///
/// Run at configure time, so requests never race to create a key. Two workers configuring at
/// once can both find the key missing and both write `initial`; Envoy has no create-only write
/// (a write to a missing key ignores its `cas`), and both write the same initial value.
pub fn create_if_missing(
    store: &dyn SharedStore,
    key: &str,
    initial: &[u8],
) -> Result<bool, SetError> {
    match store.get(key) {
        Ok(Some(_)) => Ok(false),
        Ok(None) => store.set(key, initial, None).map(|()| true),
        Err(err) => Err(SetError::Host(err.0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory_store::MemoryStore;
    use crate::store::{Cas, GetError};

    fn increment(current: Option<&[u8]>) -> Option<[u8; 1]> {
        Some([current.and_then(|bytes| bytes.first()).map_or(0, |b| b + 1)])
    }

    fn ops_since(store: &MemoryStore, before: (u64, u64)) -> (u64, u64) {
        let after = store.op_counts();
        (after.0 - before.0, after.1 - before.1)
    }

    #[test]
    fn writes_what_the_closure_computes_from_the_current_value() {
        let store = MemoryStore::new();
        store.set("k", &[4], None).unwrap();
        let before = store.op_counts();
        assert_eq!(cas_update(&store, "k", 3, increment), Ok(Updated::Written));
        assert_eq!(store.value("k").unwrap(), [5]);
        assert_eq!(ops_since(&store, before), (1, 1), "one get, one set");
    }

    #[test]
    fn a_missing_key_is_seen_as_none_and_created() {
        let store = MemoryStore::new();
        let mut seen = Vec::new();
        let result = cas_update(&store, "k", 3, |current| {
            seen.push(current.map(<[u8]>::to_vec));
            increment(current)
        });
        assert_eq!(result, Ok(Updated::Written));
        assert_eq!(seen, [None]);
        assert_eq!(store.value("k").unwrap(), [0]);
    }

    #[test]
    fn declining_writes_nothing() {
        let store = MemoryStore::new();
        store.set("k", &[4], None).unwrap();
        let before = store.op_counts();
        assert_eq!(
            cas_update(&store, "k", 3, |_| None::<[u8; 1]>),
            Ok(Updated::Declined)
        );
        assert_eq!(ops_since(&store, before), (1, 0));
        assert_eq!(store.value("k").unwrap(), [4]);
    }

    #[test]
    fn a_lost_race_is_retried_on_the_competitors_value() {
        let store = MemoryStore::new();
        store.set("k", &[0], None).unwrap();
        // Two other workers each add 10 right after one of our reads.
        store.interfere_after_get(2, |old| vec![old[0] + 10]);
        let mut seen = Vec::new();
        let result = cas_update(&store, "k", 3, |current| {
            seen.push(current.unwrap()[0]);
            increment(current)
        });
        assert_eq!(result, Ok(Updated::Written));
        assert_eq!(seen, [0, 10, 20], "each attempt reads afresh");
        assert_eq!(store.value("k").unwrap(), [21], "no write was lost");
    }

    #[test]
    fn the_last_attempt_can_still_win() {
        let store = MemoryStore::new();
        store.set("k", &[0], None).unwrap();
        store.interfere_after_get(2, |old| vec![old[0] + 10]);
        assert_eq!(cas_update(&store, "k", 3, increment), Ok(Updated::Written));
    }

    #[test]
    fn every_attempt_lost_is_exhaustion_after_exactly_that_many() {
        let store = MemoryStore::new();
        store.set("k", &[0], None).unwrap();
        store.interfere_after_get(3, |old| vec![old[0] + 10]);
        let before = store.op_counts();
        take_exhausted();
        let mut runs = 0;
        let result = cas_update(&store, "k", 3, |current| {
            runs += 1;
            increment(current)
        });
        assert_eq!(result, Err(CasError::Exhausted));
        assert_eq!(take_exhausted(), 1, "counted for the metric");
        assert_eq!(take_exhausted(), 0, "once");
        assert_eq!(runs, 3);
        assert_eq!(ops_since(&store, before), (3, 3));
        assert_eq!(
            store.value("k").unwrap(),
            [30],
            "only the competitors wrote"
        );
    }

    #[test]
    fn no_attempts_is_exhaustion_without_a_host_call() {
        let store = MemoryStore::new();
        assert_eq!(
            cas_update(&store, "k", 0, increment),
            Err(CasError::Exhausted)
        );
        assert_eq!(store.op_counts(), (0, 0));
    }

    /// A host whose gets work (over a memory store) and whose sets may fail.
    struct FailingHost {
        store: MemoryStore,
        get_fails: bool,
    }

    impl SharedStore for FailingHost {
        fn get(&self, key: &str) -> Result<Option<(Vec<u8>, Cas)>, GetError> {
            if self.get_fails {
                return Err(GetError("InternalFailure"));
            }
            self.store.get(key)
        }
        fn set(&self, _: &str, _: &[u8], _: Option<Cas>) -> Result<(), SetError> {
            Err(SetError::Host("InternalFailure"))
        }
    }

    #[test]
    fn host_failures_are_reported_apart_from_exhaustion_and_not_retried() {
        let host = FailingHost {
            store: MemoryStore::new(),
            get_fails: false,
        };
        host.store.set("k", &[0], None).unwrap();
        let mut runs = 0;
        let result = cas_update(&host, "k", 3, |current| {
            runs += 1;
            increment(current)
        });
        assert_eq!(result, Err(CasError::Host("InternalFailure")));
        assert_eq!(runs, 1);
        let host = FailingHost {
            get_fails: true,
            ..host
        };
        assert_eq!(
            cas_update(&host, "k", 3, increment),
            Err(CasError::Host("InternalFailure"))
        );
    }

    #[test]
    fn create_if_missing_creates_once_and_never_overwrites() {
        let store = MemoryStore::new();
        assert_eq!(create_if_missing(&store, "k", &[1]), Ok(true));
        assert_eq!(store.value("k").unwrap(), [1]);
        store.set("k", &[7], None).unwrap();
        assert_eq!(create_if_missing(&store, "k", &[1]), Ok(false));
        assert_eq!(
            store.value("k").unwrap(),
            [7],
            "a reconfiguration keeps state"
        );
    }

    #[test]
    fn create_if_missing_keeps_an_empty_or_foreign_value() {
        let store = MemoryStore::new();
        store.set("k", b"", None).unwrap();
        assert_eq!(create_if_missing(&store, "k", &[1]), Ok(false));
        assert_eq!(store.value("k").unwrap(), b"");
    }

    #[test]
    fn create_if_missing_reports_an_unreadable_key() {
        let host = FailingHost {
            store: MemoryStore::new(),
            get_fails: true,
        };
        assert_eq!(
            create_if_missing(&host, "k", &[1]),
            Err(SetError::Host("InternalFailure"))
        );
    }
}
