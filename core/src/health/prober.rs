//! When to probe which backend, and the probes in flight. Kept by every VM, used by the one
//! holding the lease.
//!
//! The schedule itself lives in the shared record: a backend is due `interval` (plus jitter)
//! after its last answered probe, so a new lease holder continues where the old one stopped
//! instead of probing everything at once. Only the probes this VM has in flight are its own:
//! a backend with a probe in flight is not probed again, and a probe unanswered long after its
//! timeout is given up.

use std::cell::RefCell;

use super::machine::ProbeResult;
use super::record::HealthRecord;
use crate::config::HealthCheckConfig;

/// Extra time past `timeout_ms` before a probe Envoy never called back about is forgotten.
const LOST_PROBE_GRACE_MS: u64 = 1000;

#[derive(Debug, Clone, Copy)]
struct InFlight {
    token: u32,
    sent_ms: u64,
}

/// A probe result waiting to be written to the shared record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// The backend probed.
    pub index: usize,
    /// What came back.
    pub result: ProbeResult,
    /// When.
    pub at_ms: u64,
}

/// This VM's probes in flight and answers not yet written.
#[derive(Debug)]
pub struct Prober {
    in_flight: RefCell<Vec<Option<InFlight>>>,
    answers: RefCell<Vec<Answer>>,
    /// Backends whose last probe Envoy refused to send: a refusal goes on every interval (a
    /// cluster Envoy lacks), so only the first of a run is news.
    refused: RefCell<Vec<bool>>,
}

impl Prober {
    /// A prober for `backends` backends.
    pub fn new(backends: usize) -> Self {
        Self {
            in_flight: RefCell::new(vec![None; backends]),
            answers: RefCell::new(Vec::new()),
            refused: RefCell::new(vec![false; backends]),
        }
    }

    /// Backends due for a probe at `now_ms` with none in flight.
    pub fn due(
        &self,
        record: &HealthRecord,
        config: &HealthCheckConfig,
        now_ms: u64,
    ) -> Vec<usize> {
        let mut in_flight = self.in_flight.borrow_mut();
        let lost_after = u64::from(config.timeout_ms) + LOST_PROBE_GRACE_MS;
        let mut due = Vec::new();
        for (index, (slot, backend)) in in_flight.iter_mut().zip(&record.backends).enumerate() {
            if let Some(probe) = slot {
                if now_ms.saturating_sub(probe.sent_ms) < lost_after {
                    continue;
                }
                *slot = None;
            }
            let last = backend.last_probe_ms;
            let interval = interval_with_jitter(config, index, last);
            // A last probe more than an interval ahead of now was not written by this clock
            // (a corrupt record, or the clock set back): waiting for it could mean never
            // probing again, so probe now.
            if last == 0
                || now_ms >= last.saturating_add(interval)
                || last > now_ms.saturating_add(interval)
            {
                due.push(index);
            }
        }
        due
    }

    /// A probe of `index` went out with `token`.
    pub fn sent(&self, index: usize, token: u32, now_ms: u64) {
        if let Some(refused) = self.refused.borrow_mut().get_mut(index) {
            *refused = false;
        }
        if let Some(slot) = self.in_flight.borrow_mut().get_mut(index) {
            *slot = Some(InFlight {
                token,
                sent_ms: now_ms,
            });
        }
    }

    /// A probe of `index` could not even be sent: a failure now. Returns whether it is the
    /// first refusal since the last probe of `index` that was sent.
    pub fn not_sent(&self, index: usize, now_ms: u64) -> bool {
        self.answers.borrow_mut().push(Answer {
            index,
            result: ProbeResult::Failed,
            at_ms: now_ms,
        });
        self.refused
            .borrow_mut()
            .get_mut(index)
            .is_some_and(|refused| !std::mem::replace(refused, true))
    }

    /// Envoy called back for `token`. Returns the backend, or `None` for a token this VM does
    /// not know (given up on, or not a probe).
    pub fn answered(&self, token: u32, result: ProbeResult, now_ms: u64) -> Option<usize> {
        let mut in_flight = self.in_flight.borrow_mut();
        let index = in_flight
            .iter()
            .position(|slot| slot.is_some_and(|probe| probe.token == token))?;
        if let Some(slot) = in_flight.get_mut(index) {
            *slot = None;
        }
        self.answers.borrow_mut().push(Answer {
            index,
            result,
            at_ms: now_ms,
        });
        Some(index)
    }

    /// Answers not yet written, oldest first; they stay queued until [`Self::written`].
    pub fn answers(&self) -> Vec<Answer> {
        self.answers.borrow().clone()
    }

    /// The first `count` answers are in the shared record.
    pub fn written(&self, count: usize) {
        let mut answers = self.answers.borrow_mut();
        let count = count.min(answers.len());
        answers.drain(..count);
    }
}

/// `interval × (1 + jitter% × f)` where `f` in [0, 1) is fixed for one backend and one cycle
/// (derived from the index and the last probe's time), so repeated ticks agree on the due time.
fn interval_with_jitter(config: &HealthCheckConfig, index: usize, last_probe_ms: u64) -> u64 {
    let interval = u64::from(config.interval_ms);
    if config.interval_jitter_percent == 0 {
        return interval;
    }
    // SplitMix64 finaliser: a well-mixed fraction from two integers.
    let mut z = last_probe_ms ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let max_extra = interval * u64::from(config.interval_jitter_percent) / 100;
    interval + z % (max_extra + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(jitter: u32) -> HealthCheckConfig {
        HealthCheckConfig {
            interval_jitter_percent: jitter,
            ..HealthCheckConfig::defaults_for_tests()
        }
    }

    #[test]
    fn never_probed_backends_are_due_at_once_then_every_interval() {
        let prober = Prober::new(2);
        let mut record = HealthRecord::initial(2, true);
        assert_eq!(prober.due(&record, &config(0), 5_000), [0, 1]);
        record.backends[0].last_probe_ms = 5_000;
        record.backends[1].last_probe_ms = 5_400;
        assert_eq!(prober.due(&record, &config(0), 5_999), Vec::<usize>::new());
        assert_eq!(prober.due(&record, &config(0), 6_000), [0]);
        assert_eq!(prober.due(&record, &config(0), 6_400), [0, 1]);
    }

    /// Found by the fuzz harness (`config_bytes`, garbage under the health record): a last
    /// probe time near u64::MAX overflowed the addition (a panic in a debug build), and one
    /// far ahead stopped the backend's probes until then.
    #[test]
    fn a_last_probe_far_ahead_of_now_is_due_at_once() {
        let prober = Prober::new(3);
        let mut record = HealthRecord::initial(3, true);
        record.backends[0].last_probe_ms = u64::MAX;
        record.backends[1].last_probe_ms = 1 << 60;
        // Ahead by less than an interval: another worker's clock, honoured.
        record.backends[2].last_probe_ms = 5_500;
        assert_eq!(prober.due(&record, &config(10), 5_000), [0, 1]);
    }

    #[test]
    fn a_probe_in_flight_is_not_sent_twice() {
        let prober = Prober::new(1);
        let record = HealthRecord::initial(1, true);
        assert_eq!(prober.due(&record, &config(0), 1_000), [0]);
        prober.sent(0, 77, 1_000);
        assert!(prober.due(&record, &config(0), 1_200).is_empty());
        assert!(
            prober.due(&record, &config(0), 2_400).is_empty(),
            "still within timeout + grace"
        );
        assert_eq!(
            prober.due(&record, &config(0), 2_500),
            [0],
            "given up on: probe again"
        );
        assert_eq!(prober.answered(77, ProbeResult::Status(200), 2_600), None);
    }

    #[test]
    fn only_the_first_refusal_of_a_run_is_news() {
        let prober = Prober::new(2);
        assert!(prober.not_sent(0, 100), "first refusal");
        assert!(!prober.not_sent(0, 1_100), "the same refusal again");
        assert!(prober.not_sent(1, 1_100), "another backend's is its own");
        prober.sent(0, 5, 2_100);
        assert!(
            prober.not_sent(0, 3_100),
            "refused again after a probe went out"
        );
        assert!(!prober.not_sent(7, 3_100), "no such backend");
        assert_eq!(prober.answers().len(), 5, "every refusal is a failed probe");
    }

    #[test]
    fn answers_queue_until_written() {
        let prober = Prober::new(3);
        prober.sent(2, 9, 100);
        assert_eq!(prober.answered(9, ProbeResult::Status(503), 150), Some(2));
        prober.not_sent(0, 160);
        assert_eq!(
            prober.answers(),
            [
                Answer {
                    index: 2,
                    result: ProbeResult::Status(503),
                    at_ms: 150
                },
                Answer {
                    index: 0,
                    result: ProbeResult::Failed,
                    at_ms: 160
                },
            ]
        );
        prober.written(1);
        assert_eq!(prober.answers().len(), 1);
        prober.written(5);
        assert!(prober.answers().is_empty());
        assert_eq!(
            prober.answered(9, ProbeResult::Failed, 170),
            None,
            "answered once"
        );
    }

    #[test]
    fn jitter_stays_within_its_percent_and_is_stable_within_a_cycle() {
        let with = config(20);
        for index in 0..50 {
            for last in [1_000_u64, 77_777, 1_700_000_000_000] {
                let interval = interval_with_jitter(&with, index, last);
                assert!((1000..=1200).contains(&interval), "{interval}");
                assert_eq!(interval, interval_with_jitter(&with, index, last));
            }
        }
        let spread: std::collections::BTreeSet<u64> = (0..50)
            .map(|i| interval_with_jitter(&with, i, 1_000))
            .collect();
        assert!(spread.len() > 10, "backends get different jitters");
        assert_eq!(interval_with_jitter(&config(0), 3, 1_000), 1000);
    }
}
