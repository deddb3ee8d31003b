//! The rate-limit stage: admits a request if its bucket has a token, else refuses it with a
//! local 429. Runs after `deny` and before the candidates.
//!
//! Every bucket is a shared-data key of its own, `eisodos.<namespace>.rate_limit.<i>`, all
//! created at configure time: `buckets` for the keys (a request's key is hashed to one), one
//! more for requests without any key source present; a single one without `key`. So the key
//! set is fixed by the configuration whatever clients send. One key per bucket rather than
//! several buckets per key: a get copies the whole value, and a CAS loses to any write to any
//! bucket sharing the key; a 24-byte value per key keeps both at their minimum.
//!
//! A request costs one clock read, one get and, when admitted, one CAS set: a refusal writes
//! nothing (the bucket's refill is recomputed from the same bytes by the next reader), so
//! refused requests add no contention. With `batch` n a worker takes up to n tokens per set
//! and spends them locally, one shared-data round trip per n admitted requests.

use std::cell::Cell;
use std::hash::{DefaultHasher, Hasher};

use crate::cas::{self, CasError, Updated};
use crate::config::{HashSource, RateLimitConfig};
use crate::request_key::{self, RequestView};
use crate::store::{SetError, SharedStore};
#[cfg(doc)]
use crate::token_bucket::BACKWARD_TOLERANCE_MS;
use crate::token_bucket::{Bucket, Rate};

/// The two rate-limit headers of a 429.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateHeaders {
    /// `x-ratelimit-limit`: the bucket's capacity, `burst`.
    pub limit: u32,
    /// `x-ratelimit-remaining`: whole tokens left in the bucket (0 on a refusal).
    pub remaining: u32,
}

/// Why a request was refused, and what to tell the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// Seconds until the bucket holds a token, rounded up, at least 1.
    pub retry_after_s: u32,
    /// The rate-limit headers.
    pub headers: RateHeaders,
}

/// How a request was admitted (for tests and the bench; the request does not care).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admitted {
    /// With a token taken from the shared bucket.
    Shared,
    /// With a token this worker took earlier in a batch.
    Held,
    /// Every CAS attempt lost to other workers; the last read had a token, which the request
    /// shares with the winner of that race: at most one request over the limit per such loop,
    /// counted in `eisodos_cas_exhausted_total`.
    Contended,
    /// Shared data or the clock failed: admitted unlimited (see [`RateLimiter::admit`]).
    HostFailure,
}

/// The rate limiter of one configuration on one worker.
#[derive(Debug)]
pub struct RateLimiter {
    rate: Rate,
    burst: u32,
    sources: Vec<HashSource>,
    /// Buckets keys are hashed into (0 without `key`: every request takes bucket 0).
    keyed: u64,
    /// One shared-data key per bucket; the last is for requests without a key.
    keys: Vec<String>,
    /// The number of buckets, in each value so that a value of another layout is rebuilt.
    layout: u32,
    batch: u32,
    /// Tokens this worker holds per bucket, from its batches (empty with `batch` 1).
    held: Vec<Cell<u32>>,
}

impl RateLimiter {
    /// The limiter of `config`, its keys under `namespace`.
    pub fn new(config: &RateLimitConfig, namespace: &str) -> Self {
        let keyed = if config.key.is_empty() {
            0
        } else {
            config.buckets.max(1)
        };
        // Keyed buckets and the one for requests without a key; 1 without `key`.
        let layout = keyed.saturating_add(1);
        let keys: Vec<String> = (0..layout)
            .map(|i| format!("eisodos.{namespace}.rate_limit.{i}"))
            .collect();
        let held = if config.batch > 1 {
            (0..layout).map(|_| Cell::new(0)).collect()
        } else {
            Vec::new()
        };
        Self {
            rate: Rate::new(config.milli_rps, config.burst),
            burst: config.burst,
            sources: config.key.clone(),
            keyed: u64::from(keyed),
            keys,
            layout,
            batch: config.batch,
            held,
        }
    }

    /// Its shared-data keys: a fixed set, one per bucket.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(String::as_str)
    }

    /// Creates every bucket that does not exist yet, full (configure time). Existing buckets
    /// are kept: a reconfiguration does not hand out a fresh burst.
    pub fn create_shared_keys(&self, store: &dyn SharedStore) -> Result<(), SetError> {
        let full = Bucket::FULL.encode(self.layout);
        for key in &self.keys {
            cas::create_if_missing(store, key, &full)?;
        }
        Ok(())
    }

    /// The bucket of `request`: its key hashed into the keyed buckets, or the last bucket when
    /// no key source is present (or without `key`).
    pub fn bucket_of(&self, request: &dyn RequestView) -> usize {
        if self.keyed == 0 {
            return 0;
        }
        let index = match request_key::extract(&self.sources, request) {
            Some(key) => bucket_index(&key, self.keyed),
            None => self.keyed,
        };
        // Below the bucket count, a u32.
        usize::try_from(index).unwrap_or(0)
    }

    /// Takes a token for `request` from its bucket, or says how long to wait.
    ///
    /// A host failure (a shared-data call or the clock failing) admits the request: the
    /// limiter protects backends from too many requests, and a broken store refusing every
    /// request would be the outage it exists to prevent; the backends still see at most the
    /// unlimited rate, as without `rate_limit`.
    pub fn admit(
        &self,
        store: &dyn SharedStore,
        request: &dyn RequestView,
    ) -> Result<Admitted, Limited> {
        let index = self.bucket_of(request);
        if let Some(held) = self.held.get(index) {
            if held.get() > 0 {
                held.set(held.get() - 1);
                return Ok(Admitted::Held);
            }
        }
        let now_ms = request.now_ms();
        if now_ms == 0 {
            // What the host says when it cannot tell the time.
            return Ok(Admitted::HostFailure);
        }
        let Some(key) = self.keys.get(index) else {
            return Ok(Admitted::HostFailure);
        };
        // What the latest attempt decided: tokens taken, or the bucket it refused on.
        let mut decided = Err(Bucket::FULL);
        let outcome = cas::cas_update(store, key, cas::MAX_ATTEMPTS, |current| {
            // Missing (only if it vanished since configure), foreign or corrupt: a full bucket,
            // written back in eisodos' form by this admission.
            let stored = current
                .and_then(|bytes| Bucket::decode(bytes, self.layout))
                .unwrap_or(Bucket::FULL);
            let (taken, after) = self.rate.take(self.rate.refill(stored, now_ms), self.batch);
            if taken == 0 {
                decided = Err(after);
                // Refused: nothing to write, the next reader computes the same refill from the
                // same bytes; unless the clock was set back, which must move the bucket's time
                // back for every worker (see `BACKWARD_TOLERANCE_MS`).
                return (after.last_ms < stored.last_ms).then(|| after.encode(self.layout));
            }
            decided = Ok(taken);
            Some(after.encode(self.layout))
        });
        match (outcome, decided) {
            (Ok(Updated::Written), Ok(taken)) => {
                if let Some(held) = self.held.get(index) {
                    held.set(taken.saturating_sub(1));
                }
                Ok(Admitted::Shared)
            }
            (Err(CasError::Exhausted), Ok(_)) => Ok(Admitted::Contended),
            (Ok(_) | Err(CasError::Exhausted), Err(bucket)) => Err(self.limited(bucket)),
            // Not reachable: the closure writes whenever it takes tokens.
            (Ok(Updated::Declined), Ok(_)) => Ok(Admitted::HostFailure),
            (Err(CasError::Host(_)), _) => Ok(Admitted::HostFailure),
        }
    }

    fn limited(&self, bucket: Bucket) -> Limited {
        let seconds = self.rate.wait_ms(bucket).div_ceil(1000).max(1);
        Limited {
            retry_after_s: u32::try_from(seconds).unwrap_or(u32::MAX),
            headers: RateHeaders {
                limit: self.burst,
                remaining: u32::try_from(bucket.tokens()).unwrap_or(u32::MAX),
            },
        }
    }
}

/// The keyed bucket of `key` among `buckets` (at least 1). The same for every worker (a fixed
/// hash, compiled into the one module they all run), so a key has one bucket per process.
fn bucket_index(key: &[u8], buckets: u64) -> u64 {
    let mut hasher = DefaultHasher::new();
    hasher.write(key);
    hasher.finish() % buckets.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::memory_store::MemoryStore;
    use crate::request_key::StaticRequest;
    use crate::store::{Cas, GetError};
    use crate::token_bucket::MICRO;

    const T0: u64 = 1_700_000_000_000;

    fn limiter(section: &str) -> RateLimiter {
        let json = format!(r#"{{"rate_limit": {section}, "backends": [{{"cluster": "a"}}]}}"#);
        let config = Config::parse(json.as_bytes()).unwrap();
        RateLimiter::new(config.rate_limit.as_ref().unwrap(), "test")
    }

    /// A limiter with its buckets created in a fresh store.
    fn with_store(section: &str) -> (RateLimiter, MemoryStore) {
        let limiter = limiter(section);
        let store = MemoryStore::new();
        limiter.create_shared_keys(&store).unwrap();
        (limiter, store)
    }

    fn at(ms: u64) -> StaticRequest {
        StaticRequest::default().with_now_ms(ms)
    }

    fn user(name: &str, ms: u64) -> StaticRequest {
        at(ms).with_header("x-user", name)
    }

    /// How many of `n` requests at `ms` are admitted.
    fn admitted(
        limiter: &RateLimiter,
        store: &dyn SharedStore,
        request: &StaticRequest,
        n: u32,
    ) -> u32 {
        (0..n)
            .filter(|_| limiter.admit(store, request).is_ok())
            .count() as u32
    }

    #[test]
    fn the_keys_are_fixed_by_the_configuration() {
        let plain = limiter(r#"{"requests_per_second": 5}"#);
        assert_eq!(
            plain.keys().collect::<Vec<_>>(),
            ["eisodos.test.rate_limit.0"]
        );
        let keyed =
            limiter(r#"{"requests_per_second": 5, "key": [{"header": "x-user"}], "buckets": 16}"#);
        let keys: Vec<&str> = keyed.keys().collect();
        assert_eq!(
            keys.len(),
            17,
            "16 keyed buckets and the one for requests without a key"
        );
        assert_eq!(keys[16], "eisodos.test.rate_limit.16");
        let store = MemoryStore::new();
        keyed.create_shared_keys(&store).unwrap();
        for key in keys {
            assert_eq!(
                Bucket::decode(&store.value(key).unwrap(), 17),
                Some(Bucket::FULL)
            );
        }
    }

    #[test]
    fn burst_then_refusal_then_refill() {
        let (limiter, store) = with_store(r#"{"requests_per_second": 10, "burst": 3}"#);
        assert_eq!(admitted(&limiter, &store, &at(T0), 5), 3);
        let refused = limiter.admit(&store, &at(T0)).unwrap_err();
        assert_eq!(
            refused,
            Limited {
                retry_after_s: 1,
                headers: RateHeaders {
                    limit: 3,
                    remaining: 0
                }
            }
        );
        assert_eq!(admitted(&limiter, &store, &at(T0 + 99), 1), 0);
        assert_eq!(admitted(&limiter, &store, &at(T0 + 100), 2), 1);
        assert_eq!(
            admitted(&limiter, &store, &at(T0 + 10_000), 10),
            3,
            "capped at burst"
        );
    }

    #[test]
    fn a_refusal_is_one_get_and_no_write() {
        let (limiter, store) = with_store(r#"{"requests_per_second": 1, "burst": 1}"#);
        let before = store.op_counts();
        assert!(limiter.admit(&store, &at(T0)).is_ok());
        let middle = store.op_counts();
        assert_eq!((middle.0 - before.0, middle.1 - before.1), (1, 1));
        assert!(limiter.admit(&store, &at(T0)).is_err());
        let after = store.op_counts();
        assert_eq!((after.0 - middle.0, after.1 - middle.1), (1, 0));
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let (limiter, store) = with_store(r#"{"requests_per_second": 0.25, "burst": 1}"#);
        assert!(limiter.admit(&store, &at(T0)).is_ok());
        let wait = |ms| limiter.admit(&store, &at(ms)).unwrap_err().retry_after_s;
        assert_eq!(wait(T0), 4);
        assert_eq!(wait(T0 + 1), 4, "3.999 s is 4");
        assert_eq!(wait(T0 + 3000), 1);
        assert_eq!(wait(T0 + 3999), 1, "at least 1");
        assert!(limiter.admit(&store, &at(T0 + 4000)).is_ok());
    }

    #[test]
    fn the_clock_going_back_neither_refills_nor_blocks() {
        let (limiter, store) = with_store(r#"{"requests_per_second": 10, "burst": 1}"#);
        assert!(limiter.admit(&store, &at(T0)).is_ok());
        // A worker whose clock read is a moment older: no refill.
        assert!(limiter.admit(&store, &at(T0 - 500)).is_err());
        // The system clock set back an hour: the bucket follows, and refills from there.
        let back = T0 - 3_600_000;
        assert!(limiter.admit(&store, &at(back)).is_err());
        assert!(limiter.admit(&store, &at(back + 100)).is_ok());
    }

    #[test]
    fn an_unknown_time_admits_without_touching_shared_data() {
        let (limiter, store) = with_store(r#"{"requests_per_second": 1, "burst": 1}"#);
        let before = store.op_counts();
        assert_eq!(limiter.admit(&store, &at(0)), Ok(Admitted::HostFailure));
        assert_eq!(store.op_counts(), before);
    }

    #[test]
    fn keys_map_to_fixed_buckets_and_keyless_requests_share_one() {
        let (limiter, store) = with_store(
            r#"{"requests_per_second": 1, "burst": 2, "key": [{"header": "x-user"}], "buckets": 64}"#,
        );
        let alice = limiter.bucket_of(&user("alice", T0));
        assert_eq!(alice, limiter.bucket_of(&user("alice", T0 + 5)), "stable");
        assert!(alice < 64);
        assert_eq!(limiter.bucket_of(&at(T0)), 64, "no key: the extra bucket");
        assert_eq!(
            limiter.bucket_of(&at(T0).with_header("x-user", "")),
            64,
            "an empty key is no key"
        );
        // Alice's bucket empties; keyless requests and a user in another bucket go on.
        let other = (0..1000)
            .map(|i| format!("user{i}"))
            .find(|name| limiter.bucket_of(&user(name, T0)) != alice)
            .unwrap();
        assert_eq!(admitted(&limiter, &store, &user("alice", T0), 5), 2);
        assert_eq!(admitted(&limiter, &store, &user(&other, T0), 5), 2);
        assert_eq!(admitted(&limiter, &store, &at(T0), 5), 2);
        // Two keyless requests from anyone share that one bucket.
        assert_eq!(
            admitted(&limiter, &store, &at(T0).with_header("x-other", "b"), 1),
            0
        );
    }

    #[test]
    fn keys_spread_evenly_over_the_buckets() {
        let limiter =
            limiter(r#"{"requests_per_second": 1, "key": [{"header": "x-user"}], "buckets": 16}"#);
        let mut counts = [0_u32; 16];
        for i in 0..16_000 {
            counts[limiter.bucket_of(&user(&format!("client-{i}"), T0))] += 1;
        }
        // 1000 expected per bucket, standard deviation ~31: 6 sigma either way.
        assert!(
            counts.iter().all(|&n| (810..=1190).contains(&n)),
            "{counts:?}"
        );
    }

    #[test]
    fn without_key_everyone_shares_bucket_0() {
        let (limiter, store) = with_store(r#"{"requests_per_second": 1, "burst": 1}"#);
        assert_eq!(limiter.bucket_of(&user("alice", T0)), 0);
        assert_eq!(admitted(&limiter, &store, &user("alice", T0), 1), 1);
        assert_eq!(admitted(&limiter, &store, &user("bob", T0), 1), 0);
    }

    #[test]
    fn corrupt_or_foreign_bytes_are_a_full_bucket_rebuilt() {
        let (limiter, store) = with_store(r#"{"requests_per_second": 1, "burst": 3}"#);
        let key = "eisodos.test.rate_limit.0";
        // Empty the bucket, then overwrite it with garbage, and with another layout's bucket.
        assert_eq!(admitted(&limiter, &store, &at(T0), 3), 3);
        for junk in [
            b"junk".to_vec(),
            Vec::new(),
            Bucket {
                micro_tokens: 0,
                last_ms: T0,
            }
            .encode(99)
            .to_vec(),
        ] {
            store.set(key, &junk, None).unwrap();
            assert_eq!(admitted(&limiter, &store, &at(T0), 5), 3, "{junk:?}");
            let rebuilt = Bucket::decode(&store.value(key).unwrap(), 1).unwrap();
            assert_eq!(
                rebuilt,
                Bucket {
                    micro_tokens: 0,
                    last_ms: T0
                }
            );
        }
        // A bucket's own form with more tokens than the burst allows (another burst before).
        store
            .set(
                key,
                &Bucket {
                    micro_tokens: 50 * MICRO,
                    last_ms: T0,
                }
                .encode(1),
                None,
            )
            .unwrap();
        assert_eq!(admitted(&limiter, &store, &at(T0), 10), 3);
    }

    #[test]
    fn a_missing_key_is_a_full_bucket_recreated() {
        let limiter = limiter(r#"{"requests_per_second": 1, "burst": 2}"#);
        let store = MemoryStore::new();
        assert_eq!(admitted(&limiter, &store, &at(T0), 5), 2);
        assert!(store.value("eisodos.test.rate_limit.0").is_some());
    }

    #[test]
    fn a_reconfiguration_keeps_the_buckets_state() {
        let (first, store) = with_store(r#"{"requests_per_second": 1, "burst": 2}"#);
        assert_eq!(admitted(&first, &store, &at(T0), 2), 2);
        let again = limiter(r#"{"requests_per_second": 1, "burst": 5}"#);
        again.create_shared_keys(&store).unwrap();
        assert_eq!(admitted(&again, &store, &at(T0), 1), 0, "no fresh burst");
    }

    /// Workers interleaved on one store: a competing worker takes a token between our read and
    /// our write; we retry on its value and no token is handed out twice.
    #[test]
    fn lost_races_are_retried_on_the_winners_bucket() {
        let (limiter, store) = with_store(r#"{"requests_per_second": 1, "burst": 4}"#);
        store.interfere_after_get(2, limiter_for_competition(4));
        assert_eq!(limiter.admit(&store, &at(T0)), Ok(Admitted::Shared));
        // Two tokens went to the competitors, one to us: one left.
        assert_eq!(admitted(&limiter, &store, &at(T0), 5), 1);
    }

    /// A competing worker's write: takes one token from the bucket (layout 1, burst `burst`,
    /// rate 1/s) at T0.
    fn limiter_for_competition(burst: u32) -> impl FnMut(&[u8]) -> Vec<u8> + Send {
        let rate = Rate::new(1000, burst);
        move |old: &[u8]| {
            let bucket = Bucket::decode(old, 1).unwrap_or(Bucket::FULL);
            let (_, after) = rate.take(rate.refill(bucket, T0), 1);
            after.encode(1).to_vec()
        }
    }

    #[test]
    fn exhausted_retries_admit_on_the_last_token_seen() {
        let (limiter, store) = with_store(r#"{"requests_per_second": 1, "burst": 100}"#);
        store.interfere_after_get(cas::MAX_ATTEMPTS, limiter_for_competition(100));
        cas::take_exhausted();
        assert_eq!(limiter.admit(&store, &at(T0)), Ok(Admitted::Contended));
        assert_eq!(cas::take_exhausted(), 1, "counted");
        // Only the competitors' 16 tokens left the bucket.
        assert_eq!(admitted(&limiter, &store, &at(T0), 200), 84);
    }

    #[test]
    fn exhausted_retries_on_an_empty_bucket_still_refuse() {
        let (limiter, store) = with_store(r#"{"requests_per_second": 1, "burst": 1}"#);
        assert!(limiter.admit(&store, &at(T0)).is_ok());
        // Competitors keep writing the empty bucket: the first read already refuses.
        store.interfere_after_get(cas::MAX_ATTEMPTS, |old| old.to_vec());
        assert!(limiter.admit(&store, &at(T0)).is_err());
    }

    struct BrokenStore {
        get_fails: bool,
        inner: MemoryStore,
    }
    impl SharedStore for BrokenStore {
        fn get(&self, key: &str) -> Result<Option<(Vec<u8>, Cas)>, GetError> {
            if self.get_fails {
                return Err(GetError("InternalFailure"));
            }
            self.inner.get(key)
        }
        fn set(&self, _: &str, _: &[u8], _: Option<Cas>) -> Result<(), SetError> {
            Err(SetError::Host("InternalFailure"))
        }
    }

    #[test]
    fn a_host_failure_admits() {
        let limiter = limiter(r#"{"requests_per_second": 1, "burst": 1}"#);
        for get_fails in [true, false] {
            let store = BrokenStore {
                get_fails,
                inner: MemoryStore::new(),
            };
            for _ in 0..3 {
                assert_eq!(limiter.admit(&store, &at(T0)), Ok(Admitted::HostFailure));
            }
        }
    }

    #[test]
    fn a_batch_is_taken_once_and_spent_locally() {
        let (worker_1, store) =
            with_store(r#"{"requests_per_second": 1, "burst": 10, "batch": 4}"#);
        let worker_2 = limiter(r#"{"requests_per_second": 1, "burst": 10, "batch": 4}"#);
        let before = store.op_counts();
        let first: Vec<_> = (0..4)
            .map(|_| worker_1.admit(&store, &at(T0)).unwrap())
            .collect();
        assert_eq!(
            first,
            [
                Admitted::Shared,
                Admitted::Held,
                Admitted::Held,
                Admitted::Held
            ]
        );
        let after = store.op_counts();
        assert_eq!(
            (after.0 - before.0, after.1 - before.1),
            (1, 1),
            "one round trip"
        );
        // Worker 2 takes 4 more; 2 are left, which worker 1 takes as its next batch.
        assert_eq!(admitted(&worker_2, &store, &at(T0), 4), 4);
        assert_eq!(admitted(&worker_1, &store, &at(T0), 4), 2);
        assert_eq!(
            admitted(&worker_2, &store, &at(T0), 4),
            0,
            "never more than the bucket had"
        );
    }

    /// Several workers interleaved on one store over simulated time: together they admit what
    /// the rate allows, batched or not, within what batches can hold back.
    #[test]
    fn interleaved_workers_admit_the_rate_together() {
        for batch in [1_u32, 16] {
            let section =
                format!(r#"{{"requests_per_second": 200, "burst": 10, "batch": {batch}}}"#);
            let (first, store) = with_store(&section);
            let workers = [first, limiter(&section), limiter(&section)];
            let mut admitted = 0_u64;
            // 10 s, each worker offered a request every ms (3000/s against 200/s).
            for ms in 0..10_000 {
                for worker in &workers {
                    if worker.admit(&store, &at(T0 + ms)).is_ok() {
                        admitted += 1;
                    }
                }
            }
            // 200/s × 9.999 s + the burst of 10 = 2009.8; at most 15 held per worker unused.
            let expected = 200 * 9_999 / 1000 + 10;
            assert!(
                admitted <= expected + 1 && admitted + 3 * u64::from(batch - 1) + 1 >= expected,
                "batch {batch}: {admitted} admitted, {expected} expected"
            );
        }
    }

    /// In the pipeline: a refused request stops before the candidates and the policy (it takes
    /// no round-robin ticket), is answered 429 with its headers, and is counted.
    #[test]
    fn the_stage_refuses_before_the_policy_runs() {
        use crate::balancer::{Balancer, Decision, LocalReply, RATE_LIMITED_BODY};
        use crate::metrics::Counter;
        let json = r#"{"rate_limit": {"requests_per_second": 1, "burst": 2},
                       "backends": [{"cluster": "a"}, {"cluster": "b"}]}"#;
        let balancer = Balancer::configure(json.as_bytes(), "test", 1).unwrap();
        let store = MemoryStore::new();
        balancer.create_shared_keys(&store).unwrap();
        let keys = balancer.shared_keys();
        assert!(keys.contains(&"eisodos.test.rate_limit.0"), "{keys:?}");
        for _ in 0..2 {
            assert!(matches!(
                balancer.choose(&store, &at(T0)),
                Decision::Route(_)
            ));
        }
        let ticket = store.value("eisodos.test.rr_ticket");
        assert_eq!(
            balancer.choose(&store, &at(T0)),
            Decision::Reject {
                reply: LocalReply::RateLimited,
                status: 429,
                body: RATE_LIMITED_BODY,
                retry_after: Some(1),
                rate: Some(RateHeaders {
                    limit: 2,
                    remaining: 0
                }),
            }
        );
        assert_eq!(
            store.value("eisodos.test.rr_ticket"),
            ticket,
            "no ticket taken"
        );
        let mut counted = Vec::new();
        balancer.drain_counts(|counter, n| counted.push((counter, n)));
        assert!(
            counted.contains(&(Counter::LocalReplies(LocalReply::RateLimited), 1)),
            "{counted:?}"
        );
    }

    /// Real threads on one store, as Envoy's workers on the process-wide map: every token is
    /// taken once, none is lost.
    #[cfg(not(target_family = "wasm"))]
    #[test]
    fn threads_contending_take_each_token_once() {
        use std::sync::Arc;
        let section = r#"{"requests_per_second": 0.001, "burst": 5000}"#;
        let store = Arc::new(MemoryStore::new());
        limiter(section).create_shared_keys(&*store).unwrap();
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    let limiter = limiter(section);
                    let mut outcomes = (0_u64, 0_u64, 0_u64);
                    for _ in 0..2000 {
                        match limiter.admit(&*store, &at(T0)) {
                            Ok(Admitted::Shared) => outcomes.0 += 1,
                            Ok(Admitted::Contended) => outcomes.1 += 1,
                            Ok(_) => panic!("no host failure or batch here"),
                            Err(_) => outcomes.2 += 1,
                        }
                    }
                    outcomes
                })
            })
            .collect();
        let (mut shared, mut contended, mut refused) = (0, 0, 0);
        for handle in handles {
            let (s, c, r) = handle.join().unwrap();
            shared += s;
            contended += c;
            refused += r;
        }
        assert_eq!(shared, 5000, "each token taken once by a written CAS");
        assert_eq!(shared + contended + refused, 8000);
        let left = Bucket::decode(&store.value("eisodos.test.rate_limit.0").unwrap(), 1).unwrap();
        assert_eq!(left.tokens(), 0);
    }
}
