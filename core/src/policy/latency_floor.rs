//! Degraded backends: those slow on *every* recent request get a trickle, not a share.
//!
//! Latency-weighted least-request still sends a backend 20 ms slower a request whenever the
//! fast ones hold as many times more in flight as it is slower, and on a busy host a stall
//! lifts a fast backend's peak estimate to the slow one's: at 60% load the slow one kept 7–15%
//! of requests, and with more than 1% the p99 is its latency. A backend whose *fastest* recent
//! response is more than `ratio` times the fastest backend's, and [`MARGIN_US`] more, is
//! degraded (once it has given [`MIN_SAMPLES`] answers): it leaves the comparison and gets
//! one request per `trickle` per worker, enough to see it recover.
//!
//! The floor (fastest response) is used rather than an average because a stall on the host,
//! or a slow request type, only ever adds latency: the fastest of a few hundred responses
//! stays the backend's own speed. It is the smaller of two buckets' minima, so a backend
//! that turns slow loses its old floor within two buckets of its own responses, and one
//! fast trickle response brings a recovered backend back at once.

use std::cell::{Cell, RefCell};

/// How long one bucket of minima lasts: a backend that turns slow on every request is
/// degraded after one to two buckets of its own responses (the peak EWMA already shifts load
/// away at its first slow response).
pub const BUCKET_US: u64 = 250_000;

/// How far above `ratio` × the fastest floor a backend's floor must also be, µs. A degraded
/// backend is judged on one trickle answer, the others on the fastest of hundreds: for
/// backends answering in a fraction of a millisecond, an ordinary answer through a busy
/// proxy is several times the fastest, and without this margin an equal backend stayed
/// screened (a real-Envoy test with upstreams answering at once sent one of two equal
/// backends under 600 of 2400 requests).
pub const MARGIN_US: u64 = 1_000;

/// Answers a backend must have given before it can be screened: its first ones carry the
/// upstream connection's setup (a TLS handshake is milliseconds).
pub const MIN_SAMPLES: u32 = 4;

/// One backend's recent floor and trickle clock.
#[derive(Debug, Clone, Copy)]
struct Floor {
    /// The fastest response in the current bucket, µs (`u64::MAX`: none yet).
    current_us: u64,
    /// The fastest in the bucket before (kept until a newer bucket replaces it).
    previous_us: u64,
    /// When the current bucket began.
    bucket_start_us: u64,
    /// When this worker last sent it a trickle request (`None`: never).
    trickled_at_us: Option<u64>,
    /// Answers seen, up to [`MIN_SAMPLES`].
    samples: u32,
}

impl Default for Floor {
    fn default() -> Self {
        Self {
            current_us: u64::MAX,
            previous_us: u64::MAX,
            bucket_start_us: 0,
            trickled_at_us: None,
            samples: 0,
        }
    }
}

impl Floor {
    fn floor_us(&self) -> Option<u64> {
        Some(self.current_us.min(self.previous_us)).filter(|&f| f != u64::MAX)
    }

    /// Its floor, once it has given enough answers to be judged on.
    fn judged_floor_us(&self) -> Option<u64> {
        self.floor_us().filter(|_| self.samples >= MIN_SAMPLES)
    }
}

/// What to compare after screening out degraded backends.
#[derive(Debug, PartialEq, Eq)]
pub enum Screen {
    /// No backend is degraded: compare the whole population.
    All,
    /// This degraded backend's trickle request is due: send it this one.
    Trickle(usize),
    /// Compare only these (the population without its degraded backends).
    Only(Vec<usize>),
}

/// Each backend's recent floor latency and trickle clock, for one worker.
#[derive(Debug)]
pub struct LatencyFloor {
    ratio: f64,
    trickle_us: u64,
    floors: RefCell<Vec<Floor>>,
    /// The latest response end seen: the trickle clock (no host call at pick time).
    now_us: Cell<u64>,
}

impl LatencyFloor {
    /// Floors for `backends` backends; degraded above `ratio` × the fastest floor, a trickle
    /// request every `trickle_ms`.
    pub fn new(backends: usize, ratio: f64, trickle_ms: u32) -> Self {
        Self {
            ratio,
            trickle_us: u64::from(trickle_ms) * 1000,
            floors: RefCell::new(vec![Floor::default(); backends]),
            now_us: Cell::new(0),
        }
    }

    /// A response from `index` that took `latency_us`, ending at `end_us`.
    pub fn observe(&self, index: usize, latency_us: u64, end_us: u64) {
        self.now_us.set(self.now_us.get().max(end_us));
        let mut floors = self.floors.borrow_mut();
        let Some(floor) = floors.get_mut(index) else {
            return;
        };
        floor.samples = floor.samples.saturating_add(1).min(MIN_SAMPLES);
        if end_us.saturating_sub(floor.bucket_start_us) >= BUCKET_US {
            if floor.current_us != u64::MAX {
                floor.previous_us = floor.current_us;
            }
            floor.current_us = latency_us;
            floor.bucket_start_us = end_us;
        } else {
            floor.current_us = floor.current_us.min(latency_us);
        }
    }

    /// Screens `population`: the backends whose floor is above `ratio` × the lowest floor
    /// among them, plus [`MARGIN_US`], are degraded (once they have given [`MIN_SAMPLES`]
    /// answers). When a lost compare-and-swap makes the caller pick again, a trickle already
    /// taken is not repeated: that backend waits for its next one. A degraded backend whose trickle is due gets this request;
    /// otherwise the rest are compared. A backend with no response yet is never degraded.
    pub fn screen(&self, population: &[usize]) -> Screen {
        let mut floors = self.floors.borrow_mut();
        let floor_of = |floors: &[Floor], i: usize| floors.get(i).and_then(Floor::floor_us);
        let Some(best) = population
            .iter()
            .filter_map(|&i| floor_of(&floors, i))
            .min()
        else {
            return Screen::All;
        };
        let limit = best as f64 * self.ratio + MARGIN_US as f64;
        let degraded = |floors: &[Floor], i: usize| {
            floors
                .get(i)
                .and_then(Floor::judged_floor_us)
                .is_some_and(|f| f as f64 > limit)
        };
        if !population.iter().any(|&i| degraded(&floors, i)) {
            return Screen::All;
        }
        let now = self.now_us.get();
        for &i in population {
            if !degraded(&floors, i) {
                continue;
            }
            if let Some(floor) = floors.get_mut(i) {
                let due = floor
                    .trickled_at_us
                    .is_none_or(|at| now.saturating_sub(at) >= self.trickle_us);
                if due {
                    floor.trickled_at_us = Some(now);
                    return Screen::Trickle(i);
                }
            }
        }
        Screen::Only(
            population
                .iter()
                .copied()
                .filter(|&i| !degraded(&floors, i))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fast backends 0 and 1 at 2 ms, backend 2 at `slow_us`, one response each per ms.
    fn warmed(slow_us: u64, until_us: u64) -> LatencyFloor {
        let floor = LatencyFloor::new(3, 3.0, 1000);
        let mut t = 0;
        while t < until_us {
            floor.observe(0, 2_000, t);
            floor.observe(1, 2_100, t);
            floor.observe(2, slow_us, t);
            t += 1_000;
        }
        floor
    }

    #[test]
    fn a_backend_slow_on_every_request_gets_one_request_per_trickle() {
        let floor = warmed(22_000, 1_000_000);
        assert_eq!(
            floor.screen(&[0, 1, 2]),
            Screen::Trickle(2),
            "first one is due"
        );
        for _ in 0..100 {
            assert_eq!(floor.screen(&[0, 1, 2]), Screen::Only(vec![0, 1]));
        }
        // The trickle went at 999 ms, the last response's end.
        floor.observe(0, 2_000, 1_998_999);
        assert_eq!(
            floor.screen(&[0, 1, 2]),
            Screen::Only(vec![0, 1]),
            "1 µs early"
        );
        floor.observe(0, 2_000, 1_999_000);
        assert_eq!(floor.screen(&[0, 1, 2]), Screen::Trickle(2));
    }

    #[test]
    fn within_the_ratio_and_margin_nothing_is_screened() {
        let floor = warmed(6_900, 1_000_000);
        assert_eq!(
            floor.screen(&[0, 1, 2]),
            Screen::All,
            "6.9 ms < 3 × 2 ms + 1 ms"
        );
        let floor = warmed(7_100, 1_000_000);
        assert_ne!(
            floor.screen(&[0, 1, 2]),
            Screen::All,
            "7.1 ms > 3 × 2 ms + 1 ms"
        );
    }

    #[test]
    fn sub_millisecond_jitter_screens_no_one() {
        // 0.2 ms at best against an ordinary 0.9 ms answer: 4.5 times, within the margin.
        let floor = LatencyFloor::new(2, 3.0, 1000);
        for step in 0..100_u64 {
            floor.observe(0, 200, step * 1_000);
            floor.observe(1, 900, step * 1_000);
        }
        assert_eq!(floor.screen(&[0, 1]), Screen::All);
    }

    #[test]
    fn a_backend_is_judged_only_after_its_first_answers() {
        // Its first answers carry the connection's setup.
        let floor = LatencyFloor::new(2, 3.0, 1000);
        for step in 0..100_u64 {
            floor.observe(0, 2_000, step * 1_000);
        }
        for step in 0..u64::from(MIN_SAMPLES) {
            assert_eq!(floor.screen(&[0, 1]), Screen::All, "{step} answers");
            floor.observe(1, 30_000, 100_000 + step);
        }
        assert_eq!(floor.screen(&[0, 1]), Screen::Trickle(1));
    }

    #[test]
    fn stalls_on_the_fast_backends_do_not_hide_the_slow_one() {
        // Every fourth fast response is held up 40 ms by the host: the fast floor is unmoved.
        let floor = LatencyFloor::new(3, 3.0, 1000);
        for step in 0..1_000_u64 {
            let t = step * 1_000;
            let stall = if step % 4 == 0 { 40_000 } else { 0 };
            floor.observe(0, 2_000 + stall, t);
            floor.observe(1, 2_000 + stall, t);
            floor.observe(2, 22_000 + stall, t);
        }
        assert_eq!(floor.screen(&[0, 1, 2]), Screen::Trickle(2));
        assert_eq!(floor.screen(&[0, 1, 2]), Screen::Only(vec![0, 1]));
    }

    #[test]
    fn one_fast_trickle_response_brings_a_recovered_backend_back() {
        let floor = warmed(22_000, 1_000_000);
        assert_eq!(floor.screen(&[0, 1, 2]), Screen::Trickle(2));
        floor.observe(2, 2_050, 1_000_500);
        assert_eq!(floor.screen(&[0, 1, 2]), Screen::All);
    }

    #[test]
    fn a_backend_that_turns_slow_is_degraded_within_two_buckets_of_its_responses() {
        let floor = warmed(2_000, 1_000_000);
        let mut t = 1_000_000;
        let mut screened_after = None;
        while t < 2_000_000 {
            floor.observe(0, 2_000, t);
            floor.observe(1, 2_000, t);
            floor.observe(2, 22_000, t);
            if screened_after.is_none() && floor.screen(&[0, 1, 2]) != Screen::All {
                screened_after = Some(t - 1_000_000);
            }
            t += 1_000;
        }
        let after = screened_after.expect("degraded");
        assert!((BUCKET_US..=2 * BUCKET_US).contains(&after), "{after}");
    }

    #[test]
    fn only_the_population_counts_and_the_unmeasured_are_not_degraded() {
        let floor = warmed(22_000, 1_000_000);
        // Without the fast ones (down, or full), the slow one is the best there is.
        assert_eq!(floor.screen(&[2]), Screen::All);
        let fresh = LatencyFloor::new(3, 3.0, 1000);
        fresh.observe(0, 2_000, 0);
        assert_eq!(fresh.screen(&[0, 1, 2]), Screen::All);
        assert_eq!(
            fresh.screen(&[7]),
            Screen::All,
            "an unknown index is no one's floor"
        );
    }
}
