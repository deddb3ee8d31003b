//! Every shared-data record under arbitrary bytes: another filter, an older eisodos or a
//! corrupt write may leave anything under a key. Each target writes garbage under the key,
//! runs the code that reads it, and asserts how the value was taken: as absent (and
//! rewritten in eisodos' form) when it is not a record, and never so that a count wraps,
//! passes a cap, or holds state forever.

use arbitrary::{Result, Unstructured};
use eisodos_core::health::lease::{Lease, CLOCK_SKEW_MS};
use eisodos_core::health::record::{BackendHealth, HealthRecord, HealthStore};
use eisodos_core::inflight::{Commit, InflightTable};
use eisodos_core::memory_store::MemoryStore;
use eisodos_core::store::SharedStore;
use eisodos_core::ticket::{TicketCounter, TicketSource};
use eisodos_core::token_bucket::{Bucket, Rate, ENCODED_LEN, MICRO};

const KEY: &str = "eisodos.fuzz.record";

/// A store holding `garbage` under [`KEY`].
fn store_with(garbage: &[u8]) -> MemoryStore {
    let store = MemoryStore::new();
    assert!(store.set(KEY, garbage, None).is_ok());
    store
}

/// The round-robin ticket: any 8 bytes are a counter; anything else counts as 0 and is
/// rewritten.
pub fn ticket(input: &[u8]) {
    let _ = ticket_inner(&mut Unstructured::new(input));
}

fn ticket_inner(u: &mut Unstructured<'_>) -> Result<()> {
    let batch = u.int_in_range(1..=4u32)?;
    let garbage: &[u8] = u.arbitrary()?;
    let store = store_with(garbage);
    let counter = TicketCounter::with_batch(KEY.to_owned(), batch);
    assert!(counter.ensure_created(&store).is_ok());
    assert_eq!(
        store.value(KEY).as_deref(),
        Some(garbage),
        "an existing key is kept"
    );
    let start = <[u8; 8]>::try_from(garbage).map_or(0, u64::from_le_bytes);
    let first = counter.take(&store);
    assert_eq!(first.value, start);
    assert_eq!(first.source, TicketSource::Shared);
    assert_eq!(
        store.value(KEY),
        Some(start.wrapping_add(u64::from(batch)).to_le_bytes().to_vec()),
        "rewritten as a counter"
    );
    for i in 1..u64::from(batch) {
        let next = counter.take(&store);
        assert_eq!(next.value, start.wrapping_add(i));
        assert_eq!(next.source, TicketSource::Claimed);
    }
    Ok(())
}

/// The in-flight table: a tag, a check and a `u32` per backend. Anything that fails the check
/// reads as zeros and is rewritten whole by the next write; a record that passes (built here
/// half of the time, with arbitrary counts) is read as it is. Counts floor at 0 and saturate
/// at `u32::MAX`, and a capped pick sees the real count.
pub fn inflight(input: &[u8]) {
    let _ = inflight_inner(&mut Unstructured::new(input));
}

fn inflight_inner(u: &mut Unstructured<'_>) -> Result<()> {
    let backends = u.int_in_range(1..=8usize)?;
    let cap = u.int_in_range(1..=4u32)?;
    let shape = InflightTable::new(KEY.to_owned(), backends);
    let garbage: Vec<u8> = if u.arbitrary()? {
        let counts: Vec<u32> = (0..backends)
            .map(|_| u.arbitrary())
            .collect::<Result<_>>()?;
        let mut record = shape.encode(&counts);
        // Now and then one byte changed: the check must catch it.
        if u.ratio(1, 4)? {
            let at = u.choose_index(record.len())?;
            if let Some(byte) = record.get_mut(at) {
                *byte ^= u.int_in_range(1..=255u8)?;
            }
        }
        record
    } else {
        u.arbitrary::<&[u8]>()?.to_vec()
    };
    let garbage = garbage.as_slice();
    let store = store_with(garbage);
    let table = InflightTable::new(KEY.to_owned(), backends);
    // Retired: every release is written at once, so the model below is exact.
    assert_eq!(table.retire(&store), Commit::Written);
    let decoded = table.decode(garbage);
    if let Some(counts) = &decoded {
        assert_eq!(
            table.encode(counts),
            garbage,
            "only a record the table writes passes"
        );
    }
    let mut model = decoded.unwrap_or_else(|| vec![0; backends]);
    assert_eq!(table.counts(&store), model, "the counts read");
    for _ in 0..u.int_in_range(1..=16)? {
        let index = u.choose_index(backends)?;
        if u.arbitrary()? {
            let expected = model.get(index).copied().unwrap_or(0);
            let picked = table.acquire_deferring(
                &store,
                |snapshot| {
                    assert_eq!(snapshot.get(index), expected, "the pick sees the record");
                    (snapshot.get(index) < cap).then_some(index)
                },
                |_| false,
            );
            if expected < cap {
                assert_eq!(picked, Some((index, Commit::Written)));
                if let Some(count) = model.get_mut(index) {
                    *count += 1;
                    assert!(*count <= cap, "a capped backend never passes its cap");
                }
            } else {
                assert_eq!(picked, None, "a full backend is not taken");
            }
        } else {
            assert_eq!(table.release(&store, index), Commit::Written);
            if let Some(count) = model.get_mut(index) {
                *count = count.saturating_sub(1);
            }
        }
        assert_eq!(table.counts(&store), model, "no wrap, no underflow");
        if let Some(record) = store.value(KEY) {
            if record != garbage {
                assert_eq!(
                    table.decode(&record).as_ref(),
                    Some(&model),
                    "a write is a whole, checked record"
                );
            }
        }
    }
    Ok(())
}

/// The health record: a tag, a check and exactly one entry per backend, or it is the initial
/// state; the next update rewrites it whole. A malformed version is 0 and rewritten.
pub fn health(input: &[u8]) {
    let _ = health_inner(&mut Unstructured::new(input));
}

fn health_inner(u: &mut Unstructured<'_>) -> Result<()> {
    let backends = u.int_in_range(1..=6usize)?;
    let healthy: bool = u.arbitrary()?;
    let initial = HealthRecord::initial(backends, healthy);
    let health = HealthStore::new(KEY.to_owned(), backends, healthy);
    // A record of arbitrary entries two thirds of the time (half of those with a byte
    // changed, which the check must catch), raw garbage the rest.
    let garbage: Vec<u8> = if u.int_in_range(0..=2u8)? < 2 {
        let record = HealthRecord {
            backends: (0..backends)
                .map(|_| {
                    Ok(BackendHealth {
                        healthy: u.arbitrary()?,
                        successes: u.arbitrary()?,
                        failures: u.arbitrary()?,
                        last_status: u.arbitrary()?,
                        last_probe_ms: u.arbitrary()?,
                        passive_failures: u.arbitrary()?,
                        ejected_until_ms: u.arbitrary()?,
                        ejections: u.arbitrary()?,
                    })
                })
                .collect::<Result<_>>()?,
        };
        let mut bytes = health.encode(&record);
        if u.arbitrary()? {
            let at = u.choose_index(bytes.len())?;
            if let Some(byte) = bytes.get_mut(at) {
                *byte ^= u.int_in_range(1..=255u8)?;
            }
        } else {
            assert_eq!(health.decode(&bytes), Some(record), "a record round-trips");
        }
        bytes
    } else {
        u.arbitrary::<&[u8]>()?.to_vec()
    };
    let version: &[u8] = u.arbitrary()?;
    let store = store_with(&garbage);
    let [_, version_key] = health.keys();
    let version_key = version_key.to_owned();
    assert!(store.set(&version_key, version, None).is_ok());
    assert!(health.ensure_created(&store).is_ok());

    let decoded = health.decode(&garbage);
    if let Some(record) = &decoded {
        assert_eq!(
            health.encode(record),
            garbage,
            "only what the store writes passes"
        );
    }
    let read = health.read(&store);
    assert_eq!(read, decoded.clone().unwrap_or_else(|| initial.clone()));
    assert_eq!(
        health.version(&store),
        Some(<[u8; 8]>::try_from(version).map_or(0, u64::from_le_bytes)),
        "a malformed version is 0"
    );
    let index = u.choose_index(backends)?;
    let written = health.update(&store, |record| {
        if let Some(backend) = record.backends.get_mut(index) {
            backend.failures = backend.failures.saturating_add(1);
        }
        true
    });
    let Some(written) = written else {
        panic!("an uncontended update is written");
    };
    let mut expected = decoded.unwrap_or(initial);
    if let Some(backend) = expected.backends.get_mut(index) {
        backend.failures = backend.failures.saturating_add(1);
    }
    assert_eq!(written, expected, "the update starts from the record read");
    assert_eq!(
        store.value(KEY),
        Some(health.encode(&written)),
        "rewritten whole"
    );
    assert!(
        health.version(&store).is_some(),
        "the version is rewritten as one"
    );
    Ok(())
}

/// The rate-limit bucket: a value that is not a tagged bucket of this layout is a full
/// bucket (as documented), and whatever it says, a refill never holds more than the burst
/// and a take never takes more than is there.
pub fn bucket(input: &[u8]) {
    let _ = bucket_inner(&mut Unstructured::new(input));
}

fn bucket_inner(u: &mut Unstructured<'_>) -> Result<()> {
    let layout = u.int_in_range(1..=4u32)?;
    // A tagged value with arbitrary contents half of the time, to get past the tag.
    let garbage: Vec<u8> = if u.arbitrary()? {
        let bucket = Bucket {
            micro_tokens: u.arbitrary()?,
            last_ms: u.arbitrary()?,
        };
        let written_layout = if u.ratio(3, 4)? {
            layout
        } else {
            u.arbitrary()?
        };
        bucket.encode(written_layout).to_vec()
    } else {
        u.arbitrary()?
    };
    let decoded = Bucket::decode(&garbage, layout);
    if garbage.len() != ENCODED_LEN || !garbage.starts_with(b"ERL1") {
        assert_eq!(decoded, None, "foreign bytes are not a bucket");
    }
    if let Some(bucket) = decoded {
        assert_eq!(
            bucket.encode(layout).to_vec(),
            garbage,
            "a bucket round-trips"
        );
        assert_eq!(Bucket::decode(&garbage, layout.wrapping_add(1)), None);
    }
    let burst = u.int_in_range(1..=1000u32)?;
    let rate = Rate::new(u.int_in_range(1..=1_000_000_000_000u64)?, burst);
    let capacity = u64::from(burst) * MICRO;
    let mut bucket = decoded.unwrap_or(Bucket::FULL);
    let mut now: u64 = u.arbitrary()?;
    for _ in 0..u.int_in_range(1..=8)? {
        if u.ratio(1, 4)? {
            now = u.arbitrary()?;
        }
        let refilled = rate.refill(bucket, now);
        assert!(refilled.micro_tokens <= capacity, "never above the burst");
        let want = u.int_in_range(1..=8u32)?;
        let (taken, after) = rate.take(refilled, want);
        assert!(taken <= want && u64::from(taken) <= refilled.tokens());
        assert_eq!(
            after.micro_tokens,
            refilled.micro_tokens - u64::from(taken) * MICRO
        );
        let _ = rate.wait_ms(after);
        bucket = Bucket::decode(&after.encode(layout), layout).unwrap_or(Bucket::FULL);
        assert_eq!(bucket, after, "written and read back");
    }
    Ok(())
}

/// The probe lease: a value that is not a lease a VM could have written (16 bytes, expiring
/// within one ttl and the clock skew) is free. Whatever is stored, some VM holds the lease one ttl later, so
/// garbage can never stop health checking for good.
pub fn lease(input: &[u8]) {
    let _ = lease_inner(&mut Unstructured::new(input));
}

fn lease_inner(u: &mut Unstructured<'_>) -> Result<()> {
    let ttl = u.int_in_range(1..=60_000u64)?;
    let now = u.int_in_range(1_000_000_000_000..=4_000_000_000_000u64)?;
    let garbage: Vec<u8> = if u.arbitrary()? {
        // A well-formed value: a holder and an expiry anywhere.
        let holder: u64 = u.arbitrary()?;
        let expires: u64 = if u.arbitrary()? {
            now.saturating_add(u.int_in_range(0..=ttl)?)
        } else {
            u.arbitrary()?
        };
        [holder.to_le_bytes(), expires.to_le_bytes()].concat()
    } else {
        u.arbitrary()?
    };
    let store = store_with(&garbage);
    let me = Lease::new(KEY.to_owned(), u.int_in_range(1..=u64::MAX)?, ttl);
    let other = Lease::new(KEY.to_owned(), u.int_in_range(1..=u64::MAX)?, ttl);
    let _ = me.hold(&store, now);
    let later = now + ttl + CLOCK_SKEW_MS + 1;
    assert!(
        me.hold(&store, later) || other.hold(&store, later),
        "someone holds the lease one ttl later"
    );
    Ok(())
}
