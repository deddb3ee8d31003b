//! A health record nobody has probed for a long time is history, not health.
//!
//! Records are keyed by backend list, so a configuration that goes back to a list served
//! earlier (A, then B, then A again) finds A's record as A's prober left it, minutes ago: a
//! backend down then is still marked down, however long it has been back. Trusted, that old
//! mark takes a healthy backend out of the selection until `healthy_threshold` probes pass
//! again, and with one real failure beside it puts the selection in panic mode (spreading
//! over the failing backend too): what the soak (`just soak`) found when a configuration change
//! landed on a list whose record was two minutes old.
//!
//! A record's probes are never far apart while a prober keeps it: each backend is probed one
//! interval (plus jitter) after its last answer, and a probe answers within the timeout. So a
//! record whose most recent probe answer is older than [`STALE_ROUNDS`] such rounds was not kept,
//! and the prober that takes it up restarts it in the initial state, as if it were absent: the
//! state a fresh Envoy starts from, re-learnt from probes. A record never probed (all zero)
//! is the initial state already and is left alone.

use crate::config::HealthCheckConfig;
use crate::health::HealthRecord;

/// Probe rounds without any answer after which a record is stale: enough that a prober that
/// is merely late (a busy machine, a lease changing hands) never trips it.
pub const STALE_ROUNDS: u64 = 5;

/// How old the most recent probe answer of a kept record can be, at most, times
/// [`STALE_ROUNDS`]: one interval with its full jitter plus the probe timeout, per round.
pub fn stale_after_ms(check: &HealthCheckConfig) -> u64 {
    let interval = u64::from(check.interval_ms);
    let jitter = interval * u64::from(check.interval_jitter_percent) / 100;
    STALE_ROUNDS.saturating_mul(
        interval
            .saturating_add(jitter)
            .saturating_add(u64::from(check.timeout_ms)),
    )
}

/// How long ago the most recent probe answer of `record` came, when that makes it stale.
/// `None` for a record that is kept (a recent answer) or never probed.
pub fn stale_for_ms(record: &HealthRecord, check: &HealthCheckConfig, now_ms: u64) -> Option<u64> {
    let latest = record
        .backends
        .iter()
        .map(|backend| backend.last_probe_ms)
        .max()
        .filter(|&latest| latest > 0)?;
    let age = now_ms.saturating_sub(latest);
    (age > stale_after_ms(check)).then_some(age)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::BackendHealth;

    fn check() -> HealthCheckConfig {
        HealthCheckConfig::defaults_for_tests()
    }

    fn record(last_probes: &[u64]) -> HealthRecord {
        HealthRecord {
            backends: last_probes
                .iter()
                .map(|&last_probe_ms| BackendHealth {
                    last_probe_ms,
                    ..BackendHealth::default()
                })
                .collect(),
        }
    }

    #[test]
    fn five_rounds_of_interval_jitter_and_timeout() {
        // 1000 ms interval, 500 ms timeout, no jitter.
        assert_eq!(stale_after_ms(&check()), 7_500);
        let jittered = HealthCheckConfig {
            interval_jitter_percent: 100,
            ..check()
        };
        assert_eq!(stale_after_ms(&jittered), 12_500);
    }

    #[test]
    fn a_record_with_any_recent_answer_is_kept() {
        let now = 1_000_000;
        assert_eq!(
            stale_for_ms(&record(&[now - 60_000, now - 7_500]), &check(), now),
            None
        );
        assert_eq!(stale_for_ms(&record(&[now - 1, 0, 0]), &check(), now), None);
    }

    #[test]
    fn a_record_whose_answers_are_all_old_is_stale() {
        let now = 1_000_000;
        assert_eq!(
            stale_for_ms(&record(&[now - 120_000, now - 7_501]), &check(), now),
            Some(7_501)
        );
    }

    #[test]
    fn a_record_never_probed_is_the_initial_state_already() {
        assert_eq!(stale_for_ms(&record(&[0, 0, 0]), &check(), u64::MAX), None);
        assert_eq!(stale_for_ms(&record(&[]), &check(), 1_000_000), None);
    }

    #[test]
    fn a_clock_behind_the_record_is_not_staleness() {
        assert_eq!(stale_for_ms(&record(&[5_000]), &check(), 1_000), None);
    }
}
