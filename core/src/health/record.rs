//! The health record: every backend's health, shared by all workers through shared data.
//!
//! One record per backend list (its key carries the list's fingerprint) holding a tag, a
//! check and a fixed-size entry per backend ([`HealthStore::encode`]), and beside it a small version key that changes with every write, so a
//! worker's tick can tell in one 8-byte read whether it must read the record again. Writers
//! update the record with a compare-and-swap loop ([`cas::cas_update`]) and then bump the
//! version; an update that gives up is retried by its caller on the next tick.

use crate::cas::{self, Updated};
use crate::checksum;
use crate::store::{SetError, SharedStore};

/// Marks a health record (`EHR1`).
const TAG: [u8; 4] = *b"EHR1";
/// Bytes before the entries: the tag and the check.
const HEADER_LEN: usize = 8;

/// One backend's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BackendHealth {
    /// The active checks' verdict (or the initial state before any).
    pub healthy: bool,
    /// Consecutive successful probes.
    pub successes: u16,
    /// Consecutive failed probes.
    pub failures: u16,
    /// Status of the last probe; 0 when the call failed (refused, reset, timed out) or none ran.
    pub last_status: u16,
    /// When the last probe was answered (ms since the epoch); 0 before the first.
    pub last_probe_ms: u64,
    /// Consecutive failed requests (passive).
    pub passive_failures: u16,
    /// Ejected until this time (ms since the epoch); 0 when not ejected.
    pub ejected_until_ms: u64,
    /// Times ejected so far (the next ejection lasts one base longer).
    pub ejections: u32,
}

const ENTRY_LEN: usize = 1 + 2 + 2 + 2 + 8 + 2 + 8 + 4;

impl BackendHealth {
    /// Whether it may take traffic at `now_ms`: healthy and not ejected.
    pub fn eligible(&self, now_ms: u64) -> bool {
        self.healthy && !self.is_ejected(now_ms)
    }

    /// Whether an ejection is running at `now_ms`.
    pub fn is_ejected(&self, now_ms: u64) -> bool {
        self.ejected_until_ms > now_ms
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.push(u8::from(self.healthy));
        out.extend_from_slice(&self.successes.to_le_bytes());
        out.extend_from_slice(&self.failures.to_le_bytes());
        out.extend_from_slice(&self.last_status.to_le_bytes());
        out.extend_from_slice(&self.last_probe_ms.to_le_bytes());
        out.extend_from_slice(&self.passive_failures.to_le_bytes());
        out.extend_from_slice(&self.ejected_until_ms.to_le_bytes());
        out.extend_from_slice(&self.ejections.to_le_bytes());
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let mut reader = Reader { bytes, at: 0 };
        Some(Self {
            healthy: reader.take::<1>()? != [0],
            successes: u16::from_le_bytes(reader.take()?),
            failures: u16::from_le_bytes(reader.take()?),
            last_status: u16::from_le_bytes(reader.take()?),
            last_probe_ms: u64::from_le_bytes(reader.take()?),
            passive_failures: u16::from_le_bytes(reader.take()?),
            ejected_until_ms: u64::from_le_bytes(reader.take()?),
            ejections: u32::from_le_bytes(reader.take()?),
        })
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let slice = self.bytes.get(self.at..self.at.checked_add(N)?)?;
        self.at += N;
        <[u8; N]>::try_from(slice).ok()
    }
}

/// Every backend's health, in configuration order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthRecord {
    /// One entry per backend.
    pub backends: Vec<BackendHealth>,
}

impl HealthRecord {
    /// All backends in their initial state.
    pub fn initial(backends: usize, healthy: bool) -> Self {
        Self {
            backends: vec![
                BackendHealth {
                    healthy,
                    ..BackendHealth::default()
                };
                backends
            ],
        }
    }

    /// The entries, as stored after the record's header.
    fn encode_entries(&self, out: &mut Vec<u8>) {
        for backend in &self.backends {
            backend.encode(out);
        }
    }

    /// Decodes exactly `backends` entries; `None` for anything else.
    fn decode_entries(bytes: &[u8], backends: usize) -> Option<Self> {
        if bytes.len() != backends.checked_mul(ENTRY_LEN)? {
            return None;
        }
        let backends = bytes
            .chunks_exact(ENTRY_LEN)
            .map(BackendHealth::decode)
            .collect::<Option<Vec<_>>>()?;
        Some(Self { backends })
    }
}

/// Where one configuration's health lives in shared data.
#[derive(Debug, Clone)]
pub struct HealthStore {
    record_key: String,
    /// The record key's [`checksum::seed`].
    seed: u32,
    version_key: String,
    backends: usize,
    initially_healthy: bool,
}

impl HealthStore {
    /// The record under `key` (and its version under `key` + `.version`).
    pub fn new(key: String, backends: usize, initially_healthy: bool) -> Self {
        Self {
            version_key: format!("{key}.version"),
            seed: checksum::seed(&key),
            record_key: key,
            backends,
            initially_healthy,
        }
    }

    /// The shared-data keys.
    pub fn keys(&self) -> [&str; 2] {
        [&self.record_key, &self.version_key]
    }

    /// The bytes of `record` in shared data: the tag `EHR1`, the [`checksum::check`] of the
    /// entries under this store's key, then the entries.
    pub fn encode(&self, record: &HealthRecord) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + record.backends.len() * ENTRY_LEN);
        out.extend_from_slice(&TAG);
        out.extend_from_slice(&[0; 4]);
        record.encode_entries(&mut out);
        let check = checksum::check(self.seed, out.get(HEADER_LEN..).unwrap_or_default());
        if let Some(slot) = out.get_mut(4..HEADER_LEN) {
            slot.copy_from_slice(&check.to_le_bytes());
        }
        out
    }

    /// The record in `bytes`, or `None` when it is not one this store could have written:
    /// another length, tag or check (garbage, a corrupted record, another key's record). Such
    /// a value is taken as absent: the initial state, rewritten whole by the next update.
    pub fn decode(&self, bytes: &[u8]) -> Option<HealthRecord> {
        let (header, entries) = bytes.split_first_chunk::<HEADER_LEN>()?;
        let (tag, check) = header.split_first_chunk::<4>()?;
        if *tag != TAG || entries.len() != self.backends.checked_mul(ENTRY_LEN)? {
            return None;
        }
        if *check != checksum::check(self.seed, entries).to_le_bytes() {
            return None;
        }
        HealthRecord::decode_entries(entries, self.backends)
    }

    /// Creates the record in its initial state unless it exists.
    pub fn ensure_created(&self, store: &dyn SharedStore) -> Result<(), SetError> {
        if cas::create_if_missing(store, &self.record_key, &self.encode(&self.initial()))? {
            self.bump_version(store)?;
        }
        Ok(())
    }

    /// The version: changes whenever the record does. `None` when the host fails the read; a
    /// missing or malformed version (not 8 bytes) is 0, as absent, and the next update
    /// rewrites it. (Any 8 bytes are a version: garbage there at worst makes the workers read
    /// the record once more.)
    pub fn version(&self, store: &dyn SharedStore) -> Option<u64> {
        match store.get(&self.version_key) {
            Ok(Some((bytes, _))) => {
                Some(<[u8; 8]>::try_from(bytes.as_slice()).map_or(0, u64::from_le_bytes))
            }
            Ok(None) => Some(0),
            Err(_) => None,
        }
    }

    /// The current record; the initial state when missing or malformed.
    pub fn read(&self, store: &dyn SharedStore) -> HealthRecord {
        match store.get(&self.record_key) {
            Ok(Some((bytes, _))) => self.decode(&bytes).unwrap_or_else(|| self.initial()),
            _ => self.initial(),
        }
    }

    /// The current record; `None` when it is missing, fails its check or cannot be read (the
    /// caller keeps what it knew: a worker's last good copy).
    pub fn read_valid(&self, store: &dyn SharedStore) -> Option<HealthRecord> {
        match store.get(&self.record_key) {
            Ok(Some((bytes, _))) => self.decode(&bytes),
            _ => None,
        }
    }

    /// Applies `change` with a compare-and-swap loop. `change` returns whether it changed
    /// anything (nothing is written otherwise) and may run once per attempt. Returns the record
    /// written, or `None` when nothing changed or every attempt lost. A missing or malformed
    /// record is replaced, starting from the initial state; see [`Self::update_over`].
    pub fn update(
        &self,
        store: &dyn SharedStore,
        change: impl FnMut(&mut HealthRecord) -> bool,
    ) -> Option<HealthRecord> {
        self.update_over(store, &self.initial(), change)
    }

    /// [`Self::update`], starting from `fallback` (a worker's last good copy) when the record
    /// is missing or fails its check: garbage is rebuilt from what the writer knew, so a
    /// backend known down stays down and one known healthy stays healthy.
    pub fn update_over(
        &self,
        store: &dyn SharedStore,
        fallback: &HealthRecord,
        mut change: impl FnMut(&mut HealthRecord) -> bool,
    ) -> Option<HealthRecord> {
        // The record of the latest attempt, which is the one written if any was.
        let mut record = None;
        let outcome = cas::cas_update(store, &self.record_key, cas::MAX_ATTEMPTS, |current| {
            // Missing or malformed: start again from the fallback.
            let mut next = current
                .and_then(|bytes| self.decode(bytes))
                .unwrap_or_else(|| fallback.clone());
            if !change(&mut next) {
                return None;
            }
            let bytes = self.encode(&next);
            record = Some(next);
            Some(bytes)
        });
        match outcome {
            Ok(Updated::Written) => {
                // A lost version write only delays other workers until the next change.
                let _ = self.bump_version(store);
                record
            }
            Ok(Updated::Declined) | Err(_) => None,
        }
    }

    fn bump_version(&self, store: &dyn SharedStore) -> Result<(), SetError> {
        let next = self.version(store).unwrap_or(0).wrapping_add(1);
        store.set(&self.version_key, &next.to_le_bytes(), None)
    }

    fn initial(&self) -> HealthRecord {
        HealthRecord::initial(self.backends, self.initially_healthy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory_store::MemoryStore;

    fn sample() -> HealthRecord {
        HealthRecord {
            backends: vec![
                BackendHealth {
                    healthy: true,
                    successes: 7,
                    failures: 0,
                    last_status: 200,
                    last_probe_ms: 1_700_000_000_123,
                    passive_failures: 2,
                    ejected_until_ms: 0,
                    ejections: 1,
                },
                BackendHealth {
                    healthy: false,
                    failures: 3,
                    ejected_until_ms: u64::MAX,
                    ejections: u32::MAX,
                    ..BackendHealth::default()
                },
            ],
        }
    }

    fn store2() -> HealthStore {
        HealthStore::new("eisodos.t.health".into(), 2, true)
    }

    #[test]
    fn encoding_round_trips() {
        let record = sample();
        let health = store2();
        let bytes = health.encode(&record);
        assert_eq!(bytes.len(), 8 + 2 * ENTRY_LEN);
        assert_eq!(&bytes[..4], b"EHR1");
        assert_eq!(health.decode(&bytes), Some(record));
        let none = HealthStore::new("k".into(), 0, true);
        let empty = HealthRecord { backends: vec![] };
        assert_eq!(none.decode(&none.encode(&empty)), Some(empty));
    }

    #[test]
    fn malformed_records_are_refused() {
        let health = store2();
        let bytes = health.encode(&sample());
        let three = HealthStore::new("eisodos.t.health".into(), 3, true);
        assert_eq!(three.decode(&bytes), None, "another backend count");
        assert_eq!(health.decode(&bytes[1..]), None);
        assert_eq!(health.decode(&bytes[..bytes.len() - 1]), None);
        assert_eq!(health.decode(&[]), None);
        for i in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x01;
            assert_eq!(health.decode(&flipped), None, "byte {i} changed");
        }
        let other = HealthStore::new("eisodos.other.health".into(), 2, true);
        assert_eq!(
            health.decode(&other.encode(&sample())),
            None,
            "another key's record"
        );
    }

    /// Found by the shared-data garbage test's design (issue 14): a record without a check
    /// trusted garbage of the right length, so random bytes could mark every backend down
    /// (or ejected for ever). Now it reads as the initial state and the next update rebuilds
    /// it.
    #[test]
    fn garbage_of_the_right_length_is_the_initial_state_and_is_rebuilt() {
        let store = MemoryStore::new();
        let health = store2();
        health.ensure_created(&store).unwrap();
        // The old format: bare entries, every backend down and ejected for ever.
        let mut old = Vec::new();
        HealthRecord {
            backends: vec![
                BackendHealth {
                    healthy: false,
                    ejected_until_ms: u64::MAX,
                    ..BackendHealth::default()
                };
                2
            ],
        }
        .encode_entries(&mut old);
        for garbage in [
            old,
            vec![0; 8 + 2 * ENTRY_LEN],
            vec![0xff; 8 + 2 * ENTRY_LEN],
        ] {
            store.set("eisodos.t.health", &garbage, None).unwrap();
            assert_eq!(health.read(&store), HealthRecord::initial(2, true));
            health.update(&store, |record| {
                record.backends[1].successes = 1;
                true
            });
            let rebuilt = health.decode(&store.value("eisodos.t.health").unwrap());
            let mut expected = HealthRecord::initial(2, true);
            expected.backends[1].successes = 1;
            assert_eq!(rebuilt, Some(expected));
        }
    }

    /// A version that is not 8 bytes read as "unreadable", so no worker followed the record
    /// until the next update rewrote it; it is 0 now, as absent.
    #[test]
    fn a_malformed_version_reads_as_absent_and_the_next_update_rewrites_it() {
        let store = MemoryStore::new();
        let health = store2();
        health.ensure_created(&store).unwrap();
        for garbage in [&b""[..], b"junk", &[1; 9], &[0xff; 1 << 16]] {
            store
                .set("eisodos.t.health.version", garbage, None)
                .unwrap();
            assert_eq!(health.version(&store), Some(0));
            health.update(&store, |_| true);
            assert_eq!(health.version(&store), Some(1));
        }
    }

    #[test]
    fn eligibility() {
        let mut backend = BackendHealth {
            healthy: true,
            ..BackendHealth::default()
        };
        assert!(backend.eligible(100));
        backend.ejected_until_ms = 200;
        assert!(!backend.eligible(199));
        assert!(backend.eligible(200));
        backend.healthy = false;
        assert!(!backend.eligible(300));
    }

    #[test]
    fn updates_bump_the_version_and_survive_contention() {
        let store = MemoryStore::new();
        let health = HealthStore::new("eisodos.t.health".into(), 2, true);
        health.ensure_created(&store).unwrap();
        let v1 = health.version(&store).unwrap();
        store.interfere_after_get(3, |old| old.to_vec());
        let written = health.update(&store, |record| {
            record.backends[1].healthy = false;
            true
        });
        assert!(written.is_some());
        assert!(!health.read(&store).backends[1].healthy);
        assert_ne!(health.version(&store).unwrap(), v1);
        let v2 = health.version(&store);
        assert_eq!(
            health.update(&store, |_| false),
            None,
            "no change, no write"
        );
        assert_eq!(health.version(&store), v2);
    }

    #[test]
    fn an_update_that_always_loses_gives_up() {
        let store = MemoryStore::new();
        let health = HealthStore::new("k".into(), 1, true);
        health.ensure_created(&store).unwrap();
        store.interfere_after_get(cas::MAX_ATTEMPTS, |old| old.to_vec());
        assert_eq!(health.update(&store, |_| true), None);
    }

    #[test]
    fn an_update_over_a_malformed_record_starts_from_the_initial_state() {
        let store = MemoryStore::new();
        let health = HealthStore::new("k".into(), 2, true);
        store.set("k", b"junk", None).unwrap();
        let written = health.update(&store, |record| {
            assert_eq!(record, &HealthRecord::initial(2, true));
            record.backends[0].failures = 1;
            true
        });
        assert_eq!(written.as_ref(), Some(&health.read(&store)));
        assert_eq!(health.read(&store).backends[0].failures, 1);
    }

    #[test]
    fn initial_state_follows_the_configuration() {
        let store = MemoryStore::new();
        let health = HealthStore::new("k".into(), 2, false);
        health.ensure_created(&store).unwrap();
        assert!(health.read(&store).backends.iter().all(|b| !b.healthy));
        // Created once: a second configuration keeps what is known.
        health.update(&store, |r| {
            r.backends[0].healthy = true;
            true
        });
        HealthStore::new("k".into(), 2, false)
            .ensure_created(&store)
            .unwrap();
        assert!(health.read(&store).backends[0].healthy);
    }
}
