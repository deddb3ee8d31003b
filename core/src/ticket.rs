//! A counter in shared data that hands out one ticket per request, in one order for every
//! worker of the process: the backbone of global round-robin.
//!
//! Taking a ticket is a read followed by a compare-and-swap write of the next value, retried up
//! to [`cas::MAX_ATTEMPTS`] times because Envoy has no atomic increment. The value is a
//! little-endian `u64`; a malformed value counts as 0 and is overwritten.
//!
//! That round trip is most of what round-robin costs a request in Envoy (a shared-data get
//! returns its value through an allocation in the VM). A counter with a *batch* of `n` claims
//! `n` consecutive tickets per round trip and hands them out locally: every ticket is still
//! taken once from the one shared counter, but a worker serves `n` consecutive places of the
//! order at a time.

use std::cell::Cell;

use crate::cas::{self, CasError, Updated};
use crate::store::{SetError, SharedStore};

/// Where a ticket came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketSource {
    /// Taken from the shared counter: no other request in the process holds it.
    Shared,
    /// From the batch this worker claimed from the shared counter: no other request holds it.
    Claimed,
    /// Every attempt lost its CAS to other workers: the ticket is the last value read, which the
    /// winner of that race also holds. One backend gets one request more than its turn; the
    /// order stays global.
    Contended,
    /// Shared data failed (a host error, not a CAS loss): the ticket comes from this VM's own
    /// counter, so the order is per worker until the host recovers.
    Local,
}

/// A ticket and how it was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    /// The ticket number.
    pub value: u64,
    /// Where it came from.
    pub source: TicketSource,
}

/// A ticket counter under one shared-data key, with this VM's fallback counter.
#[derive(Debug)]
pub struct TicketCounter {
    key: String,
    /// Tickets claimed per compare-and-swap (at least 1).
    batch: u64,
    /// The rest of this VM's claimed batch: the next ticket and the end (exclusive).
    claimed: Cell<(u64, u64)>,
    local: Cell<u64>,
}

impl TicketCounter {
    /// A counter stored under `key`, claiming one ticket per round trip.
    pub fn new(key: String) -> Self {
        Self::with_batch(key, 1)
    }

    /// A counter stored under `key` that claims `batch` tickets per round trip (0 counts as 1).
    pub fn with_batch(key: String, batch: u32) -> Self {
        Self {
            key,
            batch: u64::from(batch.max(1)),
            claimed: Cell::new((0, 0)),
            local: Cell::new(0),
        }
    }

    /// The shared-data key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Creates the key with value 0 unless it exists (configure time, so requests never race to
    /// create it). An existing counter is kept: reconfiguring Envoy does not restart the order.
    pub fn ensure_created(&self, store: &dyn SharedStore) -> Result<(), SetError> {
        cas::create_if_missing(store, &self.key, &encode(0)).map(|_| ())
    }

    /// Takes the next ticket: from this VM's claimed batch while it lasts, else from the shared
    /// counter (claiming the next batch).
    pub fn take(&self, store: &dyn SharedStore) -> Ticket {
        let (next, end) = self.claimed.get();
        if next < end {
            self.claimed.set((next.wrapping_add(1), end));
            return Ticket {
                value: next,
                source: TicketSource::Claimed,
            };
        }
        // The value read by the latest attempt: the one that wrote, or the last that lost.
        let mut read = None;
        let outcome = cas::cas_update(store, &self.key, cas::MAX_ATTEMPTS, |current| {
            // A missing key (only if it vanished after configure) counts from 0 and is
            // recreated, like a malformed one.
            let value = current.map_or(0, decode);
            read = Some(value);
            Some(encode(value.wrapping_add(self.batch)))
        });
        match (outcome, read) {
            (Ok(Updated::Written), Some(value)) => {
                self.claimed
                    .set((value.wrapping_add(1), value.wrapping_add(self.batch)));
                Ticket {
                    value,
                    source: TicketSource::Shared,
                }
            }
            (Err(CasError::Exhausted), Some(value)) => Ticket {
                value,
                source: TicketSource::Contended,
            },
            // A host failure (the closure never declines): this VM's own order.
            _ => self.take_local(),
        }
    }

    fn take_local(&self) -> Ticket {
        let value = self.local.get();
        self.local.set(value.wrapping_add(1));
        Ticket {
            value,
            source: TicketSource::Local,
        }
    }
}

fn encode(value: u64) -> [u8; 8] {
    value.to_le_bytes()
}

fn decode(bytes: &[u8]) -> u64 {
    <[u8; 8]>::try_from(bytes).map_or(0, u64::from_le_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory_store::MemoryStore;
    use crate::store::{Cas, GetError};

    fn counter(store: &MemoryStore) -> TicketCounter {
        let counter = TicketCounter::new("eisodos.test.rr".into());
        counter.ensure_created(store).unwrap();
        counter
    }

    fn increment(old: &[u8]) -> Vec<u8> {
        encode(decode(old) + 1).to_vec()
    }

    #[test]
    fn tickets_are_consecutive_from_zero() {
        let store = MemoryStore::new();
        let counter = counter(&store);
        let values: Vec<u64> = (0..5).map(|_| counter.take(&store).value).collect();
        assert_eq!(values, [0, 1, 2, 3, 4]);
    }

    #[test]
    fn one_get_and_one_set_per_ticket_without_contention() {
        let store = MemoryStore::new();
        let counter = counter(&store);
        let before = store.op_counts();
        counter.take(&store);
        let after = store.op_counts();
        assert_eq!((after.0 - before.0, after.1 - before.1), (1, 1));
    }

    #[test]
    fn a_batch_is_claimed_with_one_round_trip_and_served_locally() {
        let store = MemoryStore::new();
        counter(&store);
        let worker_1 = TicketCounter::with_batch("eisodos.test.rr".into(), 4);
        let worker_2 = TicketCounter::with_batch("eisodos.test.rr".into(), 4);
        let before = store.op_counts();
        let first: Vec<Ticket> = (0..3).map(|_| worker_1.take(&store)).collect();
        let second: Vec<u64> = (0..5).map(|_| worker_2.take(&store).value).collect();
        let rest: Vec<u64> = (0..3).map(|_| worker_1.take(&store).value).collect();
        let after = store.op_counts();
        assert_eq!(first.iter().map(|t| t.value).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(first[0].source, TicketSource::Shared);
        assert_eq!(first[1].source, TicketSource::Claimed);
        assert_eq!(second, [4, 5, 6, 7, 8], "the next batches, 4..8 and 8..12");
        assert_eq!(
            rest,
            [3, 12, 13],
            "worker 1 finishes its batch, then claims 12..16"
        );
        assert_eq!((after.0 - before.0, after.1 - before.1), (4, 4), "4 claims");
    }

    #[test]
    fn a_lost_cas_claims_the_next_batch_and_a_batch_of_one_claims_nothing_ahead() {
        let store = MemoryStore::new();
        counter(&store);
        let batched = TicketCounter::with_batch("eisodos.test.rr".into(), 10);
        store.interfere_after_get(1, |old| encode(decode(old) + 10).to_vec());
        assert_eq!(batched.take(&store).value, 10, "a competitor claimed 0..10");
        assert_eq!(batched.take(&store).value, 11);
        let single = TicketCounter::with_batch("eisodos.test.rr".into(), 0);
        assert_eq!(single.take(&store).value, 20);
        assert_eq!(single.take(&store).value, 21);
    }

    #[test]
    fn ensure_created_keeps_an_existing_counter() {
        let store = MemoryStore::new();
        let first = counter(&store);
        first.take(&store);
        first.take(&store);
        let reconfigured = counter(&store);
        assert_eq!(reconfigured.take(&store).value, 2);
    }

    #[test]
    fn lost_cas_is_retried_and_skips_the_ticket_the_competitor_took() {
        let store = MemoryStore::new();
        let counter = counter(&store);
        store.interfere_after_get(3, increment);
        let ticket = counter.take(&store);
        // Three competing workers took tickets 0, 1 and 2 between our reads.
        assert_eq!(
            ticket,
            Ticket {
                value: 3,
                source: TicketSource::Shared
            }
        );
        assert_eq!(counter.take(&store).value, 4);
    }

    #[test]
    fn exhausted_retries_settle_on_the_last_ticket_read() {
        let store = MemoryStore::new();
        let counter = counter(&store);
        store.interfere_after_get(cas::MAX_ATTEMPTS, increment);
        let ticket = counter.take(&store);
        assert_eq!(
            ticket,
            Ticket {
                value: u64::from(cas::MAX_ATTEMPTS) - 1,
                source: TicketSource::Contended
            }
        );
        // The counter itself only moved by the competitors' writes.
        assert_eq!(
            decode(&store.value(counter.key()).unwrap()),
            u64::from(cas::MAX_ATTEMPTS)
        );
        assert_eq!(counter.take(&store).source, TicketSource::Shared);
    }

    #[test]
    fn malformed_value_counts_as_zero_and_is_repaired() {
        let store = MemoryStore::new();
        store.set("eisodos.test.rr", b"junk", None).unwrap();
        let counter = counter(&store);
        assert_eq!(counter.take(&store).value, 0);
        assert_eq!(counter.take(&store).value, 1);
    }

    #[test]
    fn missing_key_is_recreated() {
        let store = MemoryStore::new();
        let counter = TicketCounter::new("never.created".into());
        assert_eq!(counter.take(&store).value, 0);
        assert_eq!(counter.take(&store).value, 1);
    }

    struct BrokenStore;
    impl SharedStore for BrokenStore {
        fn get(&self, _: &str) -> Result<Option<(Vec<u8>, Cas)>, GetError> {
            Err(GetError("InternalFailure"))
        }
        fn set(&self, _: &str, _: &[u8], _: Option<Cas>) -> Result<(), SetError> {
            Err(SetError::Host("InternalFailure"))
        }
    }

    #[test]
    fn host_failure_falls_back_to_a_local_order() {
        let counter = TicketCounter::new("k".into());
        let tickets: Vec<Ticket> = (0..3).map(|_| counter.take(&BrokenStore)).collect();
        assert!(tickets.iter().all(|t| t.source == TicketSource::Local));
        assert_eq!(
            tickets.iter().map(|t| t.value).collect::<Vec<_>>(),
            [0, 1, 2]
        );
    }

    /// Real threads on one store, like Envoy workers on the process-wide map, each taking
    /// `per_thread` tickets with `batch`: the unique tickets (shared or claimed, sorted) and
    /// the counter's final value.
    #[cfg(not(target_family = "wasm"))]
    fn take_from_threads(batch: u32, threads: u64, per_thread: u64) -> (Vec<u64>, u64) {
        use std::sync::Arc;
        let store = Arc::new(MemoryStore::new());
        counter(&store);
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    let counter = TicketCounter::with_batch("eisodos.test.rr".into(), batch);
                    (0..per_thread)
                        .map(|_| counter.take(&*store))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut unique: Vec<u64> = Vec::new();
        let mut contended = 0;
        for handle in handles {
            for ticket in handle.join().unwrap() {
                match ticket.source {
                    TicketSource::Shared | TicketSource::Claimed => unique.push(ticket.value),
                    TicketSource::Contended => contended += 1,
                    TicketSource::Local => panic!("no host errors here"),
                }
            }
        }
        unique.sort_unstable();
        let taken = unique.len();
        unique.dedup();
        assert_eq!(unique.len(), taken, "a ticket was handed out twice");
        assert_eq!(
            taken as u64 + contended,
            threads * per_thread,
            "every request got a ticket"
        );
        (unique, decode(&store.value("eisodos.test.rr").unwrap()))
    }

    #[cfg(not(target_family = "wasm"))]
    #[test]
    fn threads_contending_take_each_ticket_exactly_once() {
        let (unique, counter) = take_from_threads(1, 4, 2000);
        assert_eq!(
            counter,
            unique.len() as u64,
            "the counter advanced once per shared ticket"
        );
    }

    /// With batches every ticket is still taken once, and none is skipped but the ends of the
    /// batches still held (at most batch - 1 per thread).
    #[cfg(not(target_family = "wasm"))]
    #[test]
    fn threads_claiming_batches_take_each_ticket_once() {
        let (unique, counter) = take_from_threads(8, 4, 2000);
        let unused = counter - unique.len() as u64;
        assert!(unused <= 4 * 7, "{unused} tickets claimed but not used");
    }
}
