//! Smooth weighted round-robin as nginx does it, laid out once per configuration as a cycle of
//! backend indices, so a global ticket number picks a backend with one lookup.
//!
//! nginx's rule: every backend adds its weight to a running score, the highest score (first on
//! ties) is picked and loses the total weight. Weights 5,1,1 give `a a b a c a a`, spreading a
//! heavy backend through the cycle instead of sending it a burst. Over any window of one cycle
//! each backend gets exactly its weight.

/// The cycle is built in `O(slots × backends)`; this bounds configure time (about 67 million
/// steps, well under a second in V8) and memory (2 bytes a slot).
pub const MAX_SCHEDULE_WORK: u64 = 1 << 26;

/// Why a rotation could not be laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotationError {
    /// No backends.
    Empty,
    /// More backends than a `u16` index holds.
    TooManyBackends(usize),
    /// `slots × backends` exceeds [`MAX_SCHEDULE_WORK`].
    TooLarge {
        /// Length of the cycle after dividing weights by their greatest common divisor.
        slots: u64,
        /// Number of backends.
        backends: usize,
    },
}

/// One cycle of smooth weighted round-robin over backend indices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    slots: Vec<u16>,
}

impl Rotation {
    /// Lays out the cycle for `weights` (each at least 1), reduced by their common divisor.
    pub fn new(weights: &[u32]) -> Result<Self, RotationError> {
        let divisor = Self::check(weights)?;
        let reduced: Vec<i64> = weights
            .iter()
            .map(|&w| i64::from((w / divisor).max(1)))
            .collect();
        let total: i64 = reduced.iter().sum();
        let slots = u64::try_from(total).unwrap_or(u64::MAX);
        let backends = weights.len();
        let mut scores = vec![0_i64; backends];
        let mut cycle = Vec::with_capacity(usize::try_from(slots).unwrap_or(0));
        for _ in 0..slots {
            let mut best = 0;
            let mut best_score = i64::MIN;
            for (i, (score, weight)) in scores.iter_mut().zip(&reduced).enumerate() {
                *score += weight;
                if *score > best_score {
                    best = i;
                    best_score = *score;
                }
            }
            if let Some(score) = scores.get_mut(best) {
                *score -= total;
            }
            // best < backends <= u16::MAX, checked above.
            cycle.push(u16::try_from(best).unwrap_or(u16::MAX));
        }
        Ok(Self { slots: cycle })
    }

    /// Whether the cycle for `weights` can be laid out, without laying it out; returns the
    /// weights' common divisor.
    pub fn check(weights: &[u32]) -> Result<u32, RotationError> {
        if weights.is_empty() {
            return Err(RotationError::Empty);
        }
        if weights.len() > usize::from(u16::MAX) {
            return Err(RotationError::TooManyBackends(weights.len()));
        }
        let divisor = weights.iter().copied().fold(0, gcd).max(1);
        let slots: u64 = weights
            .iter()
            .map(|&w| u64::from((w / divisor).max(1)))
            .sum();
        let backends = weights.len();
        if slots.saturating_mul(backends as u64) > MAX_SCHEDULE_WORK {
            return Err(RotationError::TooLarge { slots, backends });
        }
        Ok(divisor)
    }

    /// Number of slots in one cycle.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Always false: a rotation has at least one slot.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The backend index for `ticket`: slot `ticket mod len`.
    pub fn pick(&self, ticket: u64) -> usize {
        let len = self.slots.len() as u64;
        if len == 0 {
            return 0;
        }
        // ticket % len < len, which came from a usize.
        let slot = usize::try_from(ticket % len).unwrap_or(0);
        self.slots.get(slot).map_or(0, |&index| usize::from(index))
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cycle(weights: &[u32]) -> Vec<usize> {
        let rotation = Rotation::new(weights).unwrap();
        (0..rotation.len() as u64)
            .map(|t| rotation.pick(t))
            .collect()
    }

    #[test]
    fn equal_weights_take_turns_in_configuration_order() {
        assert_eq!(cycle(&[1, 1, 1]), [0, 1, 2]);
        assert_eq!(
            cycle(&[7, 7, 7]),
            [0, 1, 2],
            "reduced by the common divisor"
        );
    }

    #[test]
    fn five_one_one_interleaves_like_nginx() {
        assert_eq!(cycle(&[5, 1, 1]), [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn every_window_of_one_cycle_gives_each_backend_its_weight() {
        let weights = [3, 1, 4, 1, 5];
        let rotation = Rotation::new(&weights).unwrap();
        let len = rotation.len() as u64;
        assert_eq!(len, 14);
        for start in [0, 1, 5, 13, 1_000_003, u64::MAX - 20] {
            let mut counts = [0_u32; 5];
            for t in start..start + len {
                counts[rotation.pick(t)] += 1;
            }
            assert_eq!(counts, weights, "window starting at {start}");
        }
    }

    #[test]
    fn single_backend() {
        let rotation = Rotation::new(&[42]).unwrap();
        assert_eq!(rotation.len(), 1);
        assert_eq!(rotation.pick(u64::MAX), 0);
    }

    #[test]
    fn the_largest_allowed_equal_configuration_fits() {
        let rotation = Rotation::new(&[1000; 1000]).unwrap();
        assert_eq!(rotation.len(), 1000);
        assert_eq!(rotation.pick(1999), 999);
    }

    #[test]
    fn oversized_schedules_are_refused() {
        let mut weights = vec![1000_u32; 1000];
        weights[0] = 999;
        assert!(matches!(
            Rotation::new(&weights),
            Err(RotationError::TooLarge { backends: 1000, .. })
        ));
        assert_eq!(Rotation::new(&[]), Err(RotationError::Empty));
    }
}
