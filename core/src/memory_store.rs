//! An in-memory [`SharedStore`] that follows Envoy's shared-data rules exactly, for tests.
//!
//! The rules copied from proxy-wasm-cpp-host's `SharedData`: one map behind one lock; `get`
//! copies; a `cas` is checked only when the key exists (a write to a missing key always wins,
//! whatever `cas` it carries); every successful write takes the next value of one global `cas`
//! counter, which skips 0. On top of that, a test can make a competing worker write a key right
//! after someone reads it, to exercise retry loops deterministically.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::store::{Cas, GetError, SetError, SharedStore};

/// A write another worker makes between our `get` and our `set`: it receives the stored value
/// and returns the value it writes.
type CompetingWrite = Box<dyn FnMut(&[u8]) -> Vec<u8> + Send>;

#[derive(Default)]
struct Inner {
    map: HashMap<String, (Vec<u8>, Cas)>,
    next_cas: Cas,
    /// How many of the following `get`s are each followed by the competing write.
    interfere_times: u32,
    competing_write: Option<CompetingWrite>,
    gets: u64,
    sets: u64,
}

impl Inner {
    fn bump_cas(&mut self) -> Cas {
        self.next_cas = self.next_cas.wrapping_add(1);
        if self.next_cas == 0 {
            self.next_cas = 1;
        }
        self.next_cas
    }
}

/// The fake store. `Sync`, so threads can contend on it like Envoy's workers do.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// After each of the next `times` successful `get`s of an existing key, another worker
    /// replaces that key's value with `write(old)`, which also gives it a new `cas`.
    pub fn interfere_after_get(
        &self,
        times: u32,
        write: impl FnMut(&[u8]) -> Vec<u8> + Send + 'static,
    ) {
        let mut inner = self.lock();
        inner.interfere_times = times;
        inner.competing_write = Some(Box::new(write));
    }

    /// Number of `get` and `set` calls made so far.
    pub fn op_counts(&self) -> (u64, u64) {
        let inner = self.lock();
        (inner.gets, inner.sets)
    }

    /// How many keys the store holds and the bytes of their names and values together: what
    /// Envoy's map holds, but for its per-entry overhead.
    pub fn footprint(&self) -> (usize, usize) {
        let inner = self.lock();
        let bytes = inner
            .map
            .iter()
            .map(|(key, (value, _))| key.len() + value.len())
            .sum();
        (inner.map.len(), bytes)
    }

    /// The raw value under `key`, if any.
    pub fn value(&self, key: &str) -> Option<Vec<u8>> {
        self.lock().map.get(key).map(|(value, _)| value.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock only means another test thread panicked; the map is still usable.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl SharedStore for MemoryStore {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, Cas)>, GetError> {
        let mut inner = self.lock();
        inner.gets += 1;
        let Some((value, cas)) = inner.map.get(key).cloned() else {
            return Ok(None);
        };
        if inner.interfere_times > 0 {
            inner.interfere_times -= 1;
            if let Some(mut write) = inner.competing_write.take() {
                let new_value = write(&value);
                let new_cas = inner.bump_cas();
                inner.map.insert(key.to_owned(), (new_value, new_cas));
                inner.competing_write = Some(write);
            }
        }
        Ok(Some((value, cas)))
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<Cas>) -> Result<(), SetError> {
        let mut inner = self.lock();
        inner.sets += 1;
        if let (Some(expected), Some((_, current))) = (cas, inner.map.get(key)) {
            if expected != *current {
                return Err(SetError::CasMismatch);
            }
        }
        let new_cas = inner.bump_cas();
        inner.map.insert(key.to_owned(), (value.to_vec(), new_cas));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn footprint_counts_keys_and_bytes() {
        let store = MemoryStore::new();
        assert_eq!(store.footprint(), (0, 0));
        store.set("ab", b"xyz", None).unwrap();
        store.set("c", b"", None).unwrap();
        store.set("ab", b"x", None).unwrap();
        assert_eq!(store.footprint(), (2, 4));
    }

    #[test]
    fn write_to_missing_key_wins_whatever_its_cas() {
        let store = MemoryStore::new();
        assert_eq!(store.set("k", b"a", Some(12345)), Ok(()));
        assert_eq!(store.get("k").unwrap().unwrap().0, b"a");
    }

    #[test]
    fn stale_cas_on_existing_key_is_refused() {
        let store = MemoryStore::new();
        store.set("k", b"a", None).unwrap();
        let (_, cas) = store.get("k").unwrap().unwrap();
        store.set("k", b"b", Some(cas)).unwrap();
        assert_eq!(store.set("k", b"c", Some(cas)), Err(SetError::CasMismatch));
        assert_eq!(store.value("k").unwrap(), b"b");
    }

    #[test]
    fn every_write_gets_a_new_nonzero_cas() {
        let store = MemoryStore::new();
        store.set("k", b"a", None).unwrap();
        let (_, first) = store.get("k").unwrap().unwrap();
        store.set("k", b"a", None).unwrap();
        let (_, second) = store.get("k").unwrap().unwrap();
        assert_ne!(first, second);
        assert_ne!(first, 0);
    }

    #[test]
    fn cas_counter_skips_zero_when_it_wraps() {
        let store = MemoryStore::new();
        store.lock().next_cas = Cas::MAX - 1;
        store.set("k", b"a", None).unwrap();
        store.set("k", b"b", None).unwrap();
        let (_, cas) = store.get("k").unwrap().unwrap();
        assert_eq!(cas, 1);
    }

    #[test]
    fn competing_write_lands_between_get_and_set() {
        let store = MemoryStore::new();
        store.set("k", b"a", None).unwrap();
        store.interfere_after_get(1, |_| b"z".to_vec());
        let (value, cas) = store.get("k").unwrap().unwrap();
        assert_eq!(
            value, b"a",
            "the reader sees the value from before the competing write"
        );
        assert_eq!(store.set("k", b"b", Some(cas)), Err(SetError::CasMismatch));
        let (value, cas) = store.get("k").unwrap().unwrap();
        assert_eq!(value, b"z");
        assert_eq!(store.set("k", b"b", Some(cas)), Ok(()));
    }
}
