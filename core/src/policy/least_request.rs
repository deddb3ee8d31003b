//! Least request: send the request where the fewest are in flight.
//!
//! With equal weights: the least loaded of `choice_count` **distinct** random candidates
//! (Envoy draws with replacement, so with three backends it still pairs a slow backend with
//! itself one time in nine and must send it the request; distinct draws never do). Ties are
//! broken at random. With unequal weights: a weighted random pick where backend `i` counts
//! `weight_i / (active_i + 1) ^ active_request_bias` (Envoy's formula), so an idle set is
//! spread by weight and load shifts share away.

use fastrand::Rng;

use crate::config::{LeastRequestConfig, MAX_CHOICE_COUNT};

/// Least-request selection over one configuration's backends.
#[derive(Debug, Clone)]
pub struct LeastRequest {
    choice_count: usize,
    bias: f64,
    /// `None` when all weights are equal (the power-of-k-choices mode).
    weights: Option<Vec<f64>>,
}

impl LeastRequest {
    /// Selection for backends with `weights`, tuned by `config`.
    pub fn new(weights: &[u32], config: LeastRequestConfig) -> Self {
        let equal = super::all_equal(weights);
        Self {
            choice_count: usize::try_from(config.choice_count.min(MAX_CHOICE_COUNT)).unwrap_or(2),
            bias: config.active_request_bias,
            weights: (!equal).then(|| weights.iter().map(|&w| f64::from(w)).collect()),
        }
    }

    /// Picks among `population` (backend indices) given each backend's in-flight count.
    /// `None` only for an empty population.
    pub fn pick(
        &self,
        population: &[usize],
        active: impl Fn(usize) -> u32,
        rng: &mut Rng,
    ) -> Option<usize> {
        match &self.weights {
            None => self.least_of_distinct(population, |i| f64::from(active(i)), rng),
            Some(weights) => self.weighted(population, weights, active, rng),
        }
    }

    /// Picks the lowest `latency × (in flight + 1) / weight` among `choice_count` distinct
    /// candidates (`latency` by backend index, from [`super::PeakEwma`]). A backend with no
    /// latency yet is tried while nothing is in flight on it (cost 0) and shunned while its
    /// first request is (cost infinite), as Finagle does: one request finds out how fast it is.
    pub fn pick_by_latency(
        &self,
        population: &[usize],
        active: impl Fn(usize) -> u32,
        latency: impl Fn(usize) -> Option<f64>,
        rng: &mut Rng,
    ) -> Option<usize> {
        let weight = |i: usize| match &self.weights {
            Some(weights) => weights.get(i).copied().unwrap_or(1.0),
            None => 1.0,
        };
        let cost = |i: usize| match (latency(i), active(i)) {
            (Some(latency), active) => latency * (f64::from(active) + 1.0) / weight(i),
            (None, 0) => 0.0,
            (None, _) => f64::INFINITY,
        };
        self.least_of_distinct(population, cost, rng)
    }

    /// The lowest `score` among `choice_count` distinct random candidates, ties at random.
    fn least_of_distinct(
        &self,
        population: &[usize],
        score: impl Fn(usize) -> f64,
        rng: &mut Rng,
    ) -> Option<usize> {
        let m = population.len();
        let k = self.choice_count.min(m);
        // Floyd's sampling: k distinct positions of 0..m without touching the other m - k.
        let mut drawn = [0_usize; MAX_CHOICE_COUNT as usize];
        let mut count = 0;
        for j in m - k..m {
            let t = rng.usize(..=j);
            let pick = if drawn.get(..count).is_some_and(|d| d.contains(&t)) {
                j
            } else {
                t
            };
            if let Some(slot) = drawn.get_mut(count) {
                *slot = pick;
                count += 1;
            }
        }
        let mut best: Option<(usize, f64)> = None;
        let mut ties = 0_u32;
        for &position in drawn.get(..count)? {
            let index = *population.get(position)?;
            let load = score(index);
            match best {
                Some((_, best_load)) if load > best_load => {}
                Some((_, best_load)) if load == best_load => {
                    // Reservoir choice among equals keeps ties fair.
                    ties += 1;
                    if rng.u32(..=ties) == 0 {
                        best = Some((index, load));
                    }
                }
                _ => {
                    best = Some((index, load));
                    ties = 0;
                }
            }
        }
        best.map(|(index, _)| index)
    }

    fn weighted(
        &self,
        population: &[usize],
        weights: &[f64],
        active: impl Fn(usize) -> u32,
        rng: &mut Rng,
    ) -> Option<usize> {
        let share = |index: usize| {
            let weight = weights.get(index).copied().unwrap_or(0.0);
            let load = f64::from(active(index)) + 1.0;
            if self.bias == 1.0 {
                weight / load
            } else if self.bias == 0.0 {
                weight
            } else {
                weight / load.powf(self.bias)
            }
        };
        let total: f64 = population.iter().map(|&i| share(i)).sum();
        let mut target = rng.f64() * total;
        for &index in population {
            target -= share(index);
            if target < 0.0 {
                return Some(index);
            }
        }
        // Rounding left a sliver past the last share.
        population.last().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn equal(n: usize, choice_count: u32) -> LeastRequest {
        LeastRequest::new(
            &vec![1; n],
            LeastRequestConfig {
                choice_count,
                ..Default::default()
            },
        )
    }

    #[test]
    fn the_slow_backend_is_never_picked_while_it_has_the_most_in_flight() {
        // Envoy draws with replacement: (slow, slow) is 1 in 9 and must pick slow.
        let policy = equal(3, 2);
        let mut rng = Rng::with_seed(7);
        let active = |i: usize| if i == 2 { 5 } else { 1 };
        for _ in 0..10_000 {
            assert_ne!(policy.pick(&[0, 1, 2], active, &mut rng), Some(2));
        }
    }

    #[test]
    fn weighted_by_latency_a_slow_backend_waits_for_far_more_load_elsewhere() {
        // 20 ms against 1 ms: the slow one idle costs 20, a fast one with n in flight n + 1.
        let policy = equal(3, 3);
        let mut rng = Rng::with_seed(5);
        let latencies = [Some(1_000.0), Some(1_000.0), Some(20_000.0)];
        let pick = |active: [u32; 3], rng: &mut Rng| {
            policy.pick_by_latency(&[0, 1, 2], |i| active[i], |i| latencies[i], rng)
        };
        assert_ne!(pick([10, 12, 0], &mut rng), Some(2), "11 ms beats 20 ms");
        assert_eq!(pick([25, 30, 0], &mut rng), Some(2), "26 ms does not");
        // Plain least-request would send the idle slow backend this request.
        assert_eq!(
            policy.pick(&[0, 1, 2], |i| [10, 12, 0][i], &mut rng),
            Some(2)
        );
    }

    #[test]
    fn an_unmeasured_backend_gets_one_request_until_it_answers() {
        let policy = equal(3, 3);
        let mut rng = Rng::with_seed(8);
        let latencies = [Some(1_000.0), Some(1_000.0), None];
        let pick = |active: [u32; 3], rng: &mut Rng| {
            policy.pick_by_latency(&[0, 1, 2], |i| active[i], |i| latencies[i], rng)
        };
        assert_eq!(
            pick([3, 4, 0], &mut rng),
            Some(2),
            "idle and unknown: try it"
        );
        assert_ne!(
            pick([30, 40, 1], &mut rng),
            Some(2),
            "its first request is out"
        );
    }

    #[test]
    fn latency_and_weight_both_count() {
        let policy = LeastRequest::new(&[4, 1], LeastRequestConfig::default());
        let mut rng = Rng::with_seed(6);
        // Same latency: weight 4 with 4 in flight costs 5/4, weight 1 idle 1/1: the idle one.
        // With 2 in flight, 3/4 < 1: the heavy one.
        let latencies = [Some(1_000.0), Some(1_000.0)];
        assert_eq!(
            policy.pick_by_latency(&[0, 1], |i| [4, 0][i], |i| latencies[i], &mut rng),
            Some(1)
        );
        assert_eq!(
            policy.pick_by_latency(&[0, 1], |i| [2, 0][i], |i| latencies[i], &mut rng),
            Some(0)
        );
    }

    #[test]
    fn candidates_are_distinct_and_uniform() {
        // With everything idle, each of 4 backends wins about a quarter.
        let policy = equal(4, 2);
        let mut rng = Rng::with_seed(1);
        let mut counts = [0; 4];
        for _ in 0..40_000 {
            counts[policy.pick(&[0, 1, 2, 3], |_| 0, &mut rng).unwrap()] += 1;
        }
        for count in counts {
            assert!((9_000..11_000).contains(&count), "{counts:?}");
        }
    }

    #[test]
    fn choice_count_at_least_the_population_is_a_full_scan() {
        let policy = equal(3, 5);
        let mut rng = Rng::with_seed(3);
        for _ in 0..100 {
            assert_eq!(policy.pick(&[0, 1, 2], |i| [3, 1, 2][i], &mut rng), Some(1));
        }
    }

    #[test]
    fn empty_population_picks_nothing() {
        assert_eq!(equal(3, 2).pick(&[], |_| 0, &mut Rng::with_seed(0)), None);
    }

    #[test]
    fn population_limits_the_choice() {
        let policy = equal(5, 2);
        let mut rng = Rng::with_seed(9);
        for _ in 0..1000 {
            let pick = policy.pick(&[1, 3], |_| 0, &mut rng).unwrap();
            assert!(pick == 1 || pick == 3);
        }
    }

    #[test]
    fn unequal_weights_spread_by_weight_when_idle() {
        let policy = LeastRequest::new(&[3, 1], LeastRequestConfig::default());
        let mut rng = Rng::with_seed(11);
        let picks_of_0 = (0..40_000)
            .filter(|_| policy.pick(&[0, 1], |_| 0, &mut rng) == Some(0))
            .count();
        assert!((29_000..31_000).contains(&picks_of_0), "{picks_of_0}");
    }

    #[test]
    fn unequal_weights_shift_away_from_load() {
        // weight 3 with 5 in flight: 3/6 = 0.5 against 1/1: one third of the share.
        let policy = LeastRequest::new(&[3, 1], LeastRequestConfig::default());
        let mut rng = Rng::with_seed(12);
        let picks_of_0 = (0..30_000)
            .filter(|_| policy.pick(&[0, 1], |i| [5, 0][i], &mut rng) == Some(0))
            .count();
        assert!((9_400..10_600).contains(&picks_of_0), "{picks_of_0}");
    }

    #[test]
    fn bias_zero_ignores_load() {
        let policy = LeastRequest::new(
            &[1, 2],
            LeastRequestConfig {
                active_request_bias: 0.0,
                ..Default::default()
            },
        );
        let mut rng = Rng::with_seed(13);
        let picks_of_1 = (0..30_000)
            .filter(|_| policy.pick(&[0, 1], |i| [0, 100][i], &mut rng) == Some(1))
            .count();
        assert!((19_400..20_600).contains(&picks_of_1), "{picks_of_1}");
    }
}
