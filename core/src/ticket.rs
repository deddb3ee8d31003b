//! A counter in shared data that hands out one ticket per request, in one order for every
//! worker of the process: the backbone of global round-robin.
//!
//! Taking a ticket is a read followed by a compare-and-swap write of the next value, retried a
//! bounded number of times because Envoy has no atomic increment. The value is a little-endian
//! `u64`; a malformed value counts as 0 and is overwritten.

use std::cell::Cell;

use crate::store::{SetError, SharedStore};

/// How many read-then-CAS attempts a request makes before it settles (see [`TicketSource`]).
pub const MAX_CAS_ATTEMPTS: u32 = 8;

/// Where a ticket came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketSource {
    /// Taken from the shared counter: no other request in the process holds it.
    Shared,
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
    local: Cell<u64>,
}

impl TicketCounter {
    /// A counter stored under `key`.
    pub fn new(key: String) -> Self {
        Self {
            key,
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
        match store.get(&self.key) {
            Ok(Some(_)) => Ok(()),
            Ok(None) => store.set(&self.key, &encode(0), None),
            Err(err) => Err(SetError::Host(err.0)),
        }
    }

    /// Takes the next ticket.
    pub fn take(&self, store: &dyn SharedStore) -> Ticket {
        let mut last_seen = None;
        for _ in 0..MAX_CAS_ATTEMPTS {
            let current = match store.get(&self.key) {
                Ok(Some((bytes, cas))) => Some((decode(&bytes), cas)),
                // Only if the key vanished after configure: writing a missing key always wins.
                Ok(None) => None,
                Err(_) => return self.take_local(),
            };
            let (value, cas) = current.map_or((0, None), |(value, cas)| (value, Some(cas)));
            match store.set(&self.key, &encode(value.wrapping_add(1)), cas) {
                Ok(()) => {
                    return Ticket {
                        value,
                        source: TicketSource::Shared,
                    }
                }
                Err(SetError::CasMismatch) => last_seen = Some(value),
                Err(SetError::Host(_)) => return self.take_local(),
            }
        }
        match last_seen {
            Some(value) => Ticket {
                value,
                source: TicketSource::Contended,
            },
            None => self.take_local(),
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
        store.interfere_after_get(MAX_CAS_ATTEMPTS, increment);
        let ticket = counter.take(&store);
        assert_eq!(
            ticket,
            Ticket {
                value: u64::from(MAX_CAS_ATTEMPTS) - 1,
                source: TicketSource::Contended
            }
        );
        // The counter itself only moved by the competitors' writes.
        assert_eq!(
            decode(&store.value(counter.key()).unwrap()),
            u64::from(MAX_CAS_ATTEMPTS)
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

    /// Real threads on one store, like Envoy workers on the process-wide map: with enough
    /// retries every ticket is handed out exactly once.
    #[cfg(not(target_family = "wasm"))]
    #[test]
    fn threads_contending_take_each_ticket_exactly_once() {
        use std::sync::Arc;
        const THREADS: u64 = 4;
        const PER_THREAD: u64 = 2000;
        let store = Arc::new(MemoryStore::new());
        counter(&store);
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    let counter = TicketCounter::new("eisodos.test.rr".into());
                    (0..PER_THREAD)
                        .map(|_| counter.take(&*store))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut shared: Vec<u64> = Vec::new();
        let mut contended = 0;
        for handle in handles {
            for ticket in handle.join().unwrap() {
                match ticket.source {
                    TicketSource::Shared => shared.push(ticket.value),
                    TicketSource::Contended => contended += 1,
                    TicketSource::Local => panic!("no host errors here"),
                }
            }
        }
        shared.sort_unstable();
        let distinct = shared.len();
        shared.dedup();
        assert_eq!(
            shared.len(),
            distinct,
            "a shared ticket was handed out twice"
        );
        assert_eq!(
            shared.len() as u64 + contended,
            THREADS * PER_THREAD,
            "every request got a ticket"
        );
        assert_eq!(
            decode(&store.value("eisodos.test.rr").unwrap()),
            shared.len() as u64,
            "the counter advanced once per shared ticket"
        );
    }
}
