//! Each backend's recent latency as a *peak EWMA* (Finagle's and Linkerd's load metric): a
//! response slower than the average replaces it at once, a faster one pulls it down by an
//! exponentially weighted average, and with no responses it decays towards zero with time
//! constant `decay`, so a backend that was slow is tried again after a while rather than
//! starved for ever.
//!
//! Least-request multiplies a backend's in-flight count (plus one) by this latency: in-flight
//! counts alone equalise the number of requests *waiting* on each backend, which still leaves
//! a backend 20 times slower a third of the waiting; weighted by latency, it gets only what its
//! speed earns.
//!
//! Latency is kept per worker, from the requests that worker sent: no shared data (it is a
//! property of the backend, which every worker observes alike).

use std::cell::{Cell, RefCell};

/// One backend's estimate.
#[derive(Debug, Clone, Copy, Default)]
struct Estimate {
    /// Latency in µs; 0 before the first response.
    latency_us: f64,
    /// When it was last updated, µs.
    at_us: u64,
    /// Whether a response has been seen.
    measured: bool,
}

/// Peak-EWMA latency per backend, for one worker.
#[derive(Debug)]
pub struct PeakEwma {
    decay_us: f64,
    estimates: RefCell<Vec<Estimate>>,
    /// The latest time seen (a response's end): the decay clock of every estimate.
    now_us: Cell<u64>,
}

impl PeakEwma {
    /// Estimates for `backends` backends, decaying with time constant `decay_ms`.
    pub fn new(backends: usize, decay_ms: u32) -> Self {
        Self {
            decay_us: f64::from(decay_ms.max(1)) * 1000.0,
            estimates: RefCell::new(vec![Estimate::default(); backends]),
            now_us: Cell::new(0),
        }
    }

    /// A response from `index` that took `latency_us`, ending at `end_us`.
    pub fn observe(&self, index: usize, latency_us: u64, end_us: u64) {
        self.now_us.set(self.now_us.get().max(end_us));
        let mut estimates = self.estimates.borrow_mut();
        let Some(estimate) = estimates.get_mut(index) else {
            return;
        };
        let sample = latency_us as f64;
        let decayed = self.decayed(*estimate, end_us);
        estimate.latency_us = if sample > decayed {
            sample
        } else {
            let weight = self.weight(estimate.at_us, end_us);
            decayed * weight + sample * (1.0 - weight)
        };
        estimate.at_us = end_us;
        estimate.measured = true;
    }

    /// Backend `index`'s latency now (decayed since its last response), µs, at least 1 (a
    /// cost of 0 would make load irrelevant); `None` before its first response.
    pub fn latency(&self, index: usize) -> Option<f64> {
        let now = self.now_us.get();
        let estimate = *self.estimates.borrow().get(index)?;
        estimate
            .measured
            .then(|| self.decayed(estimate, now).max(1.0))
    }

    fn weight(&self, from_us: u64, to_us: u64) -> f64 {
        let elapsed = to_us.saturating_sub(from_us) as f64;
        (-elapsed / self.decay_us).exp()
    }

    fn decayed(&self, estimate: Estimate, now_us: u64) -> f64 {
        estimate.latency_us * self.weight(estimate.at_us, now_us)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slower_response_is_taken_at_once_a_faster_one_averaged_in() {
        let ewma = PeakEwma::new(1, 1000);
        ewma.observe(0, 1_000, 10_000);
        assert_eq!(ewma.latency(0), Some(1_000.0));
        ewma.observe(0, 20_000, 10_000);
        assert_eq!(ewma.latency(0), Some(20_000.0), "the peak, at once");
        // 1 ms later (decay 1 s): weight e^-0.001, mostly the old value.
        ewma.observe(0, 1_000, 11_000);
        let after = ewma.latency(0).unwrap();
        assert!((19_900.0..20_000.0).contains(&after), "{after}");
    }

    #[test]
    fn an_unanswered_backend_decays_towards_zero() {
        let ewma = PeakEwma::new(2, 1000);
        ewma.observe(0, 20_000, 0);
        ewma.observe(1, 1_000, 1_000_000);
        // One decay time later the slow estimate is down to 1/e.
        let slow = ewma.latency(0).unwrap();
        assert!((7_300.0..7_400.0).contains(&slow), "{slow}");
        assert_eq!(ewma.latency(1), Some(1_000.0));
        ewma.observe(1, 1_000, 5_000_000);
        assert!(ewma.latency(0).unwrap() < 200.0);
    }

    #[test]
    fn unknown_until_the_first_response_and_never_zero() {
        let ewma = PeakEwma::new(2, 1000);
        assert_eq!((ewma.latency(0), ewma.latency(1)), (None, None));
        ewma.observe(0, 0, 5);
        assert_eq!(ewma.latency(0), Some(1.0));
        ewma.observe(7, 5, 6);
        assert_eq!(ewma.latency(7), None, "an unknown index is ignored");
    }
}
