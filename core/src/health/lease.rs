//! One prober per Envoy process: every worker's root context ticks, and the one holding a
//! lease in shared data probes. The holder renews it on every tick; when it stops ticking the
//! lease runs out and the next worker to tick takes it over.

use crate::store::{SetError, SharedStore};

/// How far apart two workers' clocks may read at one moment. An expiry later than `now + ttl`
/// by more than this was not written by a holder of this lease (a holder writes its `now +
/// ttl`): it is garbage, and trusting it would stop probing until that time, possibly forever.
pub const CLOCK_SKEW_MS: u64 = 1000;

/// A lease under one shared-data key: holder id and expiry, 16 bytes.
#[derive(Debug, Clone)]
pub struct Lease {
    key: String,
    /// This VM's id.
    me: u64,
    ttl_ms: u64,
}

impl Lease {
    /// The lease under `key`, as seen by VM `me`, lasting `ttl_ms` after each renewal.
    pub fn new(key: String, me: u64, ttl_ms: u64) -> Self {
        Self { key, me, ttl_ms }
    }

    /// The shared-data key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Takes or renews the lease at `now_ms`. True when this VM holds it afterwards. One get,
    /// and one CAS set when held or free; a lost CAS means another VM got there first. A value
    /// that is not a lease (not 16 bytes, or expiring more than one ttl ahead) counts as free
    /// and is overwritten.
    pub fn hold(&self, store: &dyn SharedStore, now_ms: u64) -> bool {
        let (holder, expires, cas) = match store.get(&self.key) {
            Ok(Some((bytes, cas))) => {
                let (holder, expires) = decode(&bytes)
                    .filter(|&(_, expires)| {
                        expires <= now_ms.saturating_add(self.ttl_ms + CLOCK_SKEW_MS)
                    })
                    .unwrap_or((0, 0));
                (holder, expires, Some(cas))
            }
            Ok(None) => (0, 0, None),
            Err(_) => return false,
        };
        if holder != self.me && expires > now_ms {
            return false;
        }
        let value = encode(self.me, now_ms.saturating_add(self.ttl_ms));
        match store.set(&self.key, &value, cas) {
            Ok(()) => true,
            Err(SetError::CasMismatch | SetError::Host(_)) => false,
        }
    }
}

fn encode(holder: u64, expires_ms: u64) -> [u8; 16] {
    let mut out = [0; 16];
    let (first, second) = out.split_at_mut(8);
    first.copy_from_slice(&holder.to_le_bytes());
    second.copy_from_slice(&expires_ms.to_le_bytes());
    out
}

/// Holder and expiry of exactly 16 bytes; `None` for any other length.
fn decode(bytes: &[u8]) -> Option<(u64, u64)> {
    let bytes: &[u8; 16] = bytes.try_into().ok()?;
    let (holder, expires) = bytes.split_first_chunk::<8>()?;
    let expires: &[u8; 8] = expires.try_into().ok()?;
    Some((u64::from_le_bytes(*holder), u64::from_le_bytes(*expires)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory_store::MemoryStore;

    #[test]
    fn one_holder_at_a_time() {
        let store = MemoryStore::new();
        let a = Lease::new("lease".into(), 1, 250);
        let b = Lease::new("lease".into(), 2, 250);
        assert!(a.hold(&store, 1000));
        assert!(!b.hold(&store, 1100));
        assert!(a.hold(&store, 1100), "the holder renews");
        assert!(!b.hold(&store, 1300), "renewed until 1350");
    }

    #[test]
    fn a_silent_holder_is_replaced_when_the_lease_runs_out() {
        let store = MemoryStore::new();
        let a = Lease::new("lease".into(), 1, 250);
        let b = Lease::new("lease".into(), 2, 250);
        assert!(a.hold(&store, 1000));
        // a stops ticking; b ticks every 100 ms.
        assert!(!b.hold(&store, 1100));
        assert!(!b.hold(&store, 1200));
        assert!(
            b.hold(&store, 1300),
            "taken over 300 ms after a's last tick"
        );
        assert!(!a.hold(&store, 1400), "a comes back and finds b holding");
    }

    #[test]
    fn a_race_for_a_free_lease_has_one_winner() {
        let store = MemoryStore::new();
        let a = Lease::new("lease".into(), 1, 250);
        let b = Lease::new("lease".into(), 2, 250);
        assert!(a.hold(&store, 0));
        // Expired: both read it, b writes first, a's CAS then fails.
        store.interfere_after_get(1, |_| encode(2, 10_000).to_vec());
        assert!(!a.hold(&store, 5000));
        assert!(b.hold(&store, 5000), "the winner renews");
        assert_eq!(decode(&store.value("lease").unwrap()).unwrap().0, 2);
    }

    #[test]
    fn unreadable_lease_is_free() {
        let store = MemoryStore::new();
        store.set("lease", b"junk", None).unwrap();
        assert!(Lease::new("lease".into(), 9, 100).hold(&store, 0));
    }

    /// Found by the fuzz harness (`lease` target): a value naming another holder and an
    /// expiry far ahead was trusted, so no VM would probe until then (never, for u64::MAX).
    #[test]
    fn a_lease_expiring_beyond_one_ttl_is_garbage_and_taken() {
        let store = MemoryStore::new();
        store.set("lease", &encode(7, u64::MAX), None).unwrap();
        let me = Lease::new("lease".into(), 9, 250);
        assert!(me.hold(&store, 1_000_000), "taken at once");
        assert_eq!(decode(&store.value("lease").unwrap()), Some((9, 1_000_250)));
        // A real holder's expiry, a worker's clock a little behind, is still honoured.
        store
            .set("lease", &encode(7, 1_000_250 + CLOCK_SKEW_MS), None)
            .unwrap();
        assert!(!me.hold(&store, 1_000_000));
    }

    #[test]
    fn a_value_longer_than_a_lease_is_garbage() {
        let store = MemoryStore::new();
        let mut long = encode(7, 2_000).to_vec();
        long.push(0);
        store.set("lease", &long, None).unwrap();
        assert!(Lease::new("lease".into(), 9, 250).hold(&store, 1_900));
    }
}
