//! Weighted random: the cheapest policy, and a baseline for benchmarks. No shared state.

use fastrand::Rng;

/// Weighted random selection over one configuration's backends.
#[derive(Debug, Clone)]
pub struct WeightedRandom {
    /// Running sums of the weights; empty when all weights are equal.
    cumulative: Vec<u64>,
    backends: usize,
}

impl WeightedRandom {
    /// Selection for backends with `weights`.
    pub fn new(weights: &[u32]) -> Self {
        let equal = super::all_equal(weights);
        let cumulative = if equal {
            Vec::new()
        } else {
            weights
                .iter()
                .scan(0_u64, |sum, &w| {
                    *sum += u64::from(w);
                    Some(*sum)
                })
                .collect()
        };
        Self {
            cumulative,
            backends: weights.len(),
        }
    }

    /// A backend index, with probability proportional to its weight; `None` with no backends.
    pub fn pick(&self, rng: &mut Rng) -> Option<usize> {
        if self.backends == 0 {
            return None;
        }
        let Some(&total) = self.cumulative.last() else {
            return Some(rng.usize(..self.backends));
        };
        let target = rng.u64(..total);
        // First running sum above the target: O(log n).
        Some(self.cumulative.partition_point(|&sum| sum <= target))
    }

    /// A backend index among those `allowed` accepts, with probability proportional to its
    /// weight among them; `None` when it accepts none. One pass over the backends.
    pub fn pick_where(&self, rng: &mut Rng, allowed: impl Fn(usize) -> bool) -> Option<usize> {
        let weight = |i: usize| match i.checked_sub(1) {
            _ if self.cumulative.is_empty() => 1,
            None => self.cumulative.first().copied().unwrap_or(0),
            Some(before) => {
                let upto = |j: usize| self.cumulative.get(j).copied().unwrap_or(0);
                upto(i).saturating_sub(upto(before))
            }
        };
        let total: u64 = (0..self.backends).filter(|&i| allowed(i)).map(weight).sum();
        if total == 0 {
            return None;
        }
        let mut target = rng.u64(..total);
        for i in (0..self.backends).filter(|&i| allowed(i)) {
            let w = weight(i);
            if target < w {
                return Some(i);
            }
            target -= w;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pick_where_honours_weights_among_the_allowed() {
        let policy = WeightedRandom::new(&[5, 1, 3, 1]);
        let mut rng = Rng::with_seed(9);
        let mut counts = [0; 4];
        for _ in 0..8000 {
            counts[policy.pick_where(&mut rng, |i| i != 0).unwrap()] += 1;
        }
        assert_eq!(counts[0], 0);
        // Weights 1:3:1 among the three allowed: 1600, 4800, 1600 expected.
        assert!((1400..1800).contains(&counts[1]), "{counts:?}");
        assert!((4500..5100).contains(&counts[2]), "{counts:?}");
        assert!((1400..1800).contains(&counts[3]), "{counts:?}");
        assert_eq!(policy.pick_where(&mut rng, |_| false), None);
        let equal = WeightedRandom::new(&[1, 1, 1]);
        for _ in 0..100 {
            assert_eq!(equal.pick_where(&mut rng, |i| i == 1), Some(1));
        }
    }

    fn counts(weights: &[u32], draws: usize) -> Vec<usize> {
        let policy = WeightedRandom::new(weights);
        let mut rng = Rng::with_seed(42);
        let mut counts = vec![0; weights.len()];
        for _ in 0..draws {
            counts[policy.pick(&mut rng).unwrap()] += 1;
        }
        counts
    }

    #[test]
    fn equal_weights_are_uniform() {
        for count in counts(&[1, 1, 1], 30_000) {
            assert!((9_500..10_500).contains(&count));
        }
    }

    #[test]
    fn weights_are_honoured() {
        let counts = counts(&[1, 2, 7], 100_000);
        assert!((9_400..10_600).contains(&counts[0]), "{counts:?}");
        assert!((19_200..20_800).contains(&counts[1]), "{counts:?}");
        assert!((69_000..71_000).contains(&counts[2]), "{counts:?}");
    }

    #[test]
    fn every_index_is_in_range() {
        let policy = WeightedRandom::new(&[1000, 1]);
        let mut rng = Rng::with_seed(0);
        assert!((0..10_000).all(|_| policy.pick(&mut rng).unwrap() < 2));
        assert_eq!(WeightedRandom::new(&[]).pick(&mut rng), None);
    }
}
