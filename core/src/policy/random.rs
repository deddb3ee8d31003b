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
}

#[cfg(test)]
mod tests {
    use super::*;

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
