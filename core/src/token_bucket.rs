//! A token bucket as a value: what one rate-limit bucket holds, how it refills from the clock,
//! and its bytes in shared data.
//!
//! Integer arithmetic only, so that every worker computes the same bucket from the same bytes
//! and nothing drifts: tokens are counted in micro-tokens and the rate in thousandths of a
//! request per second, which makes the refill exactly `rate` micro-tokens per millisecond, with
//! no remainder to carry.

/// Micro-tokens in one token (one request).
pub const MICRO: u64 = 1_000_000;

/// A clock that goes back by at most this much (two workers reading Envoy's clock a moment
/// apart, then writing in the other order) counts as no time passing: the bucket keeps the
/// later time, so no millisecond is refilled twice. A larger step back (the system clock set
/// back) moves the bucket's time back with it, refilling nothing, rather than freezing the
/// refill until the clock catches up.
pub const BACKWARD_TOLERANCE_MS: u64 = 1000;

/// Bytes of an encoded bucket: tag (4), layout (4), micro-tokens (8), time (8).
pub const ENCODED_LEN: usize = 24;

/// Marks eisodos' bucket values (`ERL1`), so foreign bytes under a bucket key are seen as such.
const TAG: [u8; 4] = *b"ERL1";

/// One bucket's state: its tokens as of `last_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    /// Tokens, in micro-tokens.
    pub micro_tokens: u64,
    /// Host time of the last refill (ms since the epoch).
    pub last_ms: u64,
}

impl Bucket {
    /// A full bucket: its time 0, so that the first refill fills it to any capacity.
    pub const FULL: Self = Self {
        micro_tokens: u64::MAX,
        last_ms: 0,
    };

    /// Whole tokens in the bucket.
    pub fn tokens(&self) -> u64 {
        self.micro_tokens / MICRO
    }

    /// The bucket's bytes in shared data. `layout` says how the buckets were laid out when it
    /// was written (their number): a value of another layout is not this bucket's.
    pub fn encode(&self, layout: u32) -> [u8; ENCODED_LEN] {
        let mut bytes = [0; ENCODED_LEN];
        let (tag, rest) = bytes.split_at_mut(4);
        let (layout_bytes, rest) = rest.split_at_mut(4);
        let (tokens, last) = rest.split_at_mut(8);
        tag.copy_from_slice(&TAG);
        layout_bytes.copy_from_slice(&layout.to_le_bytes());
        tokens.copy_from_slice(&self.micro_tokens.to_le_bytes());
        last.copy_from_slice(&self.last_ms.to_le_bytes());
        bytes
    }

    /// The bucket in `bytes`, or `None` for anything [`Self::encode`] with `layout` did not
    /// write: another length, tag or layout.
    pub fn decode(bytes: &[u8], layout: u32) -> Option<Self> {
        let bytes: &[u8; ENCODED_LEN] = bytes.try_into().ok()?;
        let (tag, rest) = bytes.split_first_chunk::<4>()?;
        let (layout_bytes, rest) = rest.split_first_chunk::<4>()?;
        let (tokens, last) = rest.split_first_chunk::<8>()?;
        let last: &[u8; 8] = last.try_into().ok()?;
        (*tag == TAG && u32::from_le_bytes(*layout_bytes) == layout).then(|| Self {
            micro_tokens: u64::from_le_bytes(*tokens),
            last_ms: u64::from_le_bytes(*last),
        })
    }
}

/// A bucket's rate and capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Refill, in thousandths of a token per second: micro-tokens per millisecond.
    milli_rps: u64,
    /// Capacity, in micro-tokens.
    capacity: u64,
}

impl Rate {
    /// `milli_rps` thousandths of a request per second (at least 1), up to `burst` at once (at
    /// least 1).
    pub fn new(milli_rps: u64, burst: u32) -> Self {
        Self {
            milli_rps: milli_rps.max(1),
            capacity: u64::from(burst.max(1)).saturating_mul(MICRO),
        }
    }

    /// `bucket` refilled up to `now_ms` and capped at the capacity (a bucket written under a
    /// larger `burst` is cut down to this one). See [`BACKWARD_TOLERANCE_MS`] for a clock
    /// behind the bucket's time.
    pub fn refill(&self, bucket: Bucket, now_ms: u64) -> Bucket {
        let micro_tokens = bucket.micro_tokens.min(self.capacity);
        if now_ms < bucket.last_ms {
            let last_ms = if bucket.last_ms - now_ms <= BACKWARD_TOLERANCE_MS {
                bucket.last_ms
            } else {
                now_ms
            };
            return Bucket {
                micro_tokens,
                last_ms,
            };
        }
        let added = (now_ms - bucket.last_ms).saturating_mul(self.milli_rps);
        Bucket {
            micro_tokens: micro_tokens.saturating_add(added).min(self.capacity),
            last_ms: now_ms,
        }
    }

    /// Takes up to `want` whole tokens (at least one is wanted): how many it took (0 when the
    /// bucket holds less than one) and the bucket after.
    pub fn take(&self, bucket: Bucket, want: u32) -> (u32, Bucket) {
        let taken = bucket.tokens().min(u64::from(want.max(1)));
        let after = Bucket {
            micro_tokens: bucket.micro_tokens - taken * MICRO,
            ..bucket
        };
        // At most `want`, a u32.
        (u32::try_from(taken).unwrap_or(0), after)
    }

    /// Milliseconds until `bucket` (refilled to its time) holds a whole token; 0 if it does.
    pub fn wait_ms(&self, bucket: Bucket) -> u64 {
        MICRO
            .saturating_sub(bucket.micro_tokens)
            .div_ceil(self.milli_rps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000;

    /// 10 requests per second, 5 at once.
    fn rate() -> Rate {
        Rate::new(10_000, 5)
    }

    fn full_at(now: u64) -> Bucket {
        rate().refill(Bucket::FULL, now)
    }

    #[test]
    fn a_new_bucket_is_full() {
        let bucket = full_at(T0);
        assert_eq!(bucket.tokens(), 5);
        assert_eq!(bucket.last_ms, T0);
    }

    #[test]
    fn burst_then_exhaustion() {
        let mut bucket = full_at(T0);
        for i in 0..5 {
            let (taken, after) = rate().take(bucket, 1);
            assert_eq!(taken, 1, "request {i} of the burst");
            bucket = after;
        }
        let (taken, after) = rate().take(bucket, 1);
        assert_eq!(taken, 0);
        assert_eq!(after, bucket, "a refusal changes nothing");
    }

    #[test]
    fn refill_is_exact_in_integers() {
        let rate = Rate::new(10_000, 5);
        let (_, empty) = rate.take(full_at(T0), 5);
        // 10/s: a token every 100 ms, a thousandth of one per 0.1 ms... 100 micro-tokens / ms
        // times 10: 10_000 micro-tokens per ms.
        let bucket = rate.refill(empty, T0 + 99);
        assert_eq!((bucket.tokens(), bucket.micro_tokens), (0, 990_000));
        let bucket = rate.refill(bucket, T0 + 100);
        assert_eq!(bucket.micro_tokens, MICRO);
        // A million refills of 1 ms each add exactly what one refill of a million ms does:
        // no rounding to drift.
        let slow = Rate::new(7, 1_000_000);
        let mut stepwise = Bucket {
            micro_tokens: 0,
            last_ms: T0,
        };
        for ms in 1..=1_000_000 {
            stepwise = slow.refill(stepwise, T0 + ms);
        }
        let at_once = slow.refill(
            Bucket {
                micro_tokens: 0,
                last_ms: T0,
            },
            T0 + 1_000_000,
        );
        assert_eq!(stepwise, at_once);
        assert_eq!(
            at_once.micro_tokens, 7_000_000,
            "7 tokens in 1000 s at 0.007/s"
        );
    }

    #[test]
    fn fractional_rates_refill_over_seconds() {
        // One request every two seconds.
        let rate = Rate::new(500, 1);
        let (_, empty) = rate.take(rate.refill(Bucket::FULL, T0), 1);
        assert_eq!(rate.wait_ms(empty), 2000);
        assert_eq!(rate.refill(empty, T0 + 1999).tokens(), 0);
        assert_eq!(rate.refill(empty, T0 + 2000).tokens(), 1);
    }

    #[test]
    fn never_above_capacity() {
        let bucket = rate().refill(full_at(T0), T0 + 60_000);
        assert_eq!(bucket.micro_tokens, 5 * MICRO);
    }

    #[test]
    fn retry_after_is_the_time_to_the_next_whole_token() {
        let (_, empty) = rate().take(full_at(T0), 5);
        assert_eq!(rate().wait_ms(empty), 100);
        let later = rate().refill(empty, T0 + 30);
        assert_eq!(rate().wait_ms(later), 70);
        assert_eq!(rate().wait_ms(full_at(T0)), 0);
        // Rounded up: 3 requests per second is 333.33 ms per token.
        let third = Rate::new(3000, 1);
        let (_, empty) = third.take(third.refill(Bucket::FULL, T0), 1);
        assert_eq!(third.wait_ms(empty), 334);
    }

    #[test]
    fn a_clock_slightly_behind_refills_nothing_and_keeps_the_later_time() {
        let (_, bucket) = rate().take(full_at(T0), 5);
        let behind = rate().refill(bucket, T0 - 5);
        assert_eq!(behind, bucket);
        // Then the clock catches up: the 5 ms are not refilled twice.
        assert_eq!(rate().refill(behind, T0 + 100).micro_tokens, MICRO);
    }

    #[test]
    fn a_clock_set_far_back_moves_the_bucket_back_without_refilling() {
        let (_, bucket) = rate().take(full_at(T0), 5);
        let back = T0 - 3_600_000;
        let moved = rate().refill(bucket, back);
        assert_eq!(
            moved,
            Bucket {
                micro_tokens: 0,
                last_ms: back
            }
        );
        // And refills from there, not an hour later.
        assert_eq!(rate().refill(moved, back + 100).tokens(), 1);
    }

    #[test]
    fn huge_gaps_and_extreme_values_saturate() {
        let rate = Rate::new(1_000_000_000_000, 1_000_000_000);
        let bucket = Bucket {
            micro_tokens: 0,
            last_ms: 0,
        };
        let full = rate.refill(bucket, u64::MAX);
        assert_eq!(full.micro_tokens, 1_000_000_000 * MICRO);
        let (taken, after) = rate.take(full, u32::MAX);
        assert_eq!(taken, 1_000_000_000);
        assert_eq!(after.micro_tokens, 0);
        assert_eq!(rate.wait_ms(after), 1, "a token within the millisecond");
        // A stored count above the capacity (a larger burst before, or garbage) is capped.
        let capped = Rate::new(1, 1).refill(
            Bucket {
                micro_tokens: u64::MAX,
                last_ms: 5,
            },
            u64::MAX,
        );
        assert_eq!(capped.micro_tokens, MICRO);
        // The slowest rate: 1000 s per token.
        let slowest = Rate::new(1, 1);
        assert_eq!(
            slowest.wait_ms(Bucket {
                micro_tokens: 0,
                last_ms: 0
            }),
            1_000_000
        );
    }

    #[test]
    fn taking_a_batch_takes_what_is_there() {
        let (taken, after) = rate().take(full_at(T0), 16);
        assert_eq!((taken, after.tokens()), (5, 0));
        let (taken, after) = rate().take(full_at(T0), 2);
        assert_eq!((taken, after.tokens()), (2, 3));
        let (taken, _) = rate().take(full_at(T0), 0);
        assert_eq!(taken, 1, "a batch of 0 counts as 1");
    }

    #[test]
    fn encoding_round_trips_and_rejects_foreign_bytes() {
        let bucket = Bucket {
            micro_tokens: 1_234_567,
            last_ms: T0,
        };
        let bytes = bucket.encode(4097);
        assert_eq!(Bucket::decode(&bytes, 4097), Some(bucket));
        assert_eq!(Bucket::decode(&bytes, 1), None, "another layout");
        assert_eq!(Bucket::decode(&bytes[..23], 4097), None);
        assert_eq!(Bucket::decode(b"", 4097), None);
        assert_eq!(Bucket::decode(&[0; ENCODED_LEN], 4097), None);
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert_eq!(Bucket::decode(&longer, 4097), None);
        let mut wrong_tag = bytes;
        wrong_tag[0] = b'X';
        assert_eq!(Bucket::decode(&wrong_tag, 4097), None);
    }
}
