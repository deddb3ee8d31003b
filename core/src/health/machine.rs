//! How one backend's health moves: the rise/fall state machine of active checks (as HAProxy
//! and Envoy do it: a backend flips only after a threshold of consecutive results) and
//! passive ejection on consecutive failed requests.

use super::record::BackendHealth;
use crate::config::{HealthCheckConfig, OutlierDetectionConfig};

/// A change worth telling an operator about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Active checks brought it back.
    BecameHealthy,
    /// Active checks took it out.
    BecameUnhealthy,
    /// Passive ejection took it out until `until_ms` (its `count`-th ejection).
    Ejected {
        /// End of the ejection (ms since the epoch).
        until_ms: u64,
        /// How many times it has been ejected.
        count: u32,
    },
    /// Probes succeeded `healthy_threshold` times during an ejection: back early.
    EjectionLifted,
}

/// What a probe came back with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeResult {
    /// An answer with this status.
    Status(u16),
    /// No answer: refused, reset or timed out (Envoy calls back without `:status`).
    Failed,
}

/// Records a probe result answered at `now_ms`.
pub fn record_probe(
    backend: &mut BackendHealth,
    result: ProbeResult,
    now_ms: u64,
    config: &HealthCheckConfig,
) -> Option<Change> {
    backend.last_probe_ms = now_ms;
    let success = match result {
        ProbeResult::Status(status) => {
            backend.last_status = status;
            config.expected_statuses.contains(&status)
        }
        ProbeResult::Failed => {
            backend.last_status = 0;
            false
        }
    };
    if success {
        backend.successes = backend.successes.saturating_add(1);
        backend.failures = 0;
        let risen = u32::from(backend.successes) >= config.healthy_threshold;
        if risen && backend.is_ejected(now_ms) {
            backend.ejected_until_ms = 0;
            backend.passive_failures = 0;
            if backend.healthy {
                return Some(Change::EjectionLifted);
            }
        }
        if risen && !backend.healthy {
            backend.healthy = true;
            return Some(Change::BecameHealthy);
        }
    } else {
        backend.failures = backend.failures.saturating_add(1);
        backend.successes = 0;
        if backend.healthy && u32::from(backend.failures) >= config.unhealthy_threshold {
            backend.healthy = false;
            return Some(Change::BecameUnhealthy);
        }
    }
    None
}

/// Records the outcome of a request that went to the backend. `may_eject` says whether the
/// ejection limit leaves room for one more.
pub fn record_request(
    backend: &mut BackendHealth,
    failed: bool,
    now_ms: u64,
    config: &OutlierDetectionConfig,
    may_eject: bool,
) -> Option<Change> {
    if !failed {
        backend.passive_failures = 0;
        return None;
    }
    backend.passive_failures = backend.passive_failures.saturating_add(1);
    if u32::from(backend.passive_failures) < config.consecutive_failures
        || backend.is_ejected(now_ms)
        || !may_eject
    {
        return None;
    }
    backend.ejections = backend.ejections.saturating_add(1);
    backend.passive_failures = 0;
    // Probes lift an ejection after `healthy_threshold` successes counted from now (Envoy's
    // `successful_active_health_check_uneject_host`), not from before it.
    backend.successes = 0;
    let duration = u64::from(config.base_ejection_ms).saturating_mul(u64::from(backend.ejections));
    backend.ejected_until_ms = now_ms.saturating_add(duration);
    Some(Change::Ejected {
        until_ms: backend.ejected_until_ms,
        count: backend.ejections,
    })
}

/// Whether one more primary may be ejected: below `max_ejection_percent` of the primaries,
/// and always at least one (as Envoy does).
pub fn may_eject(ejected_primaries: usize, primaries: usize, max_percent: u32) -> bool {
    let limit = (primaries * max_percent as usize / 100).max(1);
    ejected_primaries < limit
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check() -> HealthCheckConfig {
        HealthCheckConfig {
            expected_statuses: vec![200, 204],
            ..HealthCheckConfig::defaults_for_tests()
        }
    }

    fn outlier() -> OutlierDetectionConfig {
        OutlierDetectionConfig {
            consecutive_failures: 5,
            base_ejection_ms: 30_000,
            max_ejection_percent: 50,
        }
    }

    fn healthy() -> BackendHealth {
        BackendHealth {
            healthy: true,
            ..BackendHealth::default()
        }
    }

    #[test]
    fn falls_after_the_unhealthy_threshold_of_consecutive_failures() {
        let mut b = healthy();
        assert_eq!(record_probe(&mut b, ProbeResult::Failed, 1, &check()), None);
        assert_eq!(
            record_probe(&mut b, ProbeResult::Status(500), 2, &check()),
            None
        );
        assert_eq!(
            record_probe(&mut b, ProbeResult::Failed, 3, &check()),
            Some(Change::BecameUnhealthy)
        );
        assert_eq!((b.failures, b.last_status, b.last_probe_ms), (3, 0, 3));
        assert_eq!(record_probe(&mut b, ProbeResult::Failed, 4, &check()), None);
    }

    #[test]
    fn a_success_restarts_the_failure_count() {
        let mut b = healthy();
        record_probe(&mut b, ProbeResult::Failed, 1, &check());
        record_probe(&mut b, ProbeResult::Failed, 2, &check());
        record_probe(&mut b, ProbeResult::Status(204), 3, &check());
        record_probe(&mut b, ProbeResult::Failed, 4, &check());
        record_probe(&mut b, ProbeResult::Failed, 5, &check());
        assert!(b.healthy);
    }

    #[test]
    fn rises_after_the_healthy_threshold_of_consecutive_successes() {
        let mut b = BackendHealth::default();
        assert_eq!(
            record_probe(&mut b, ProbeResult::Status(200), 1, &check()),
            None
        );
        assert_eq!(
            record_probe(&mut b, ProbeResult::Status(200), 2, &check()),
            Some(Change::BecameHealthy)
        );
        assert_eq!(b.last_status, 200);
    }

    #[test]
    fn unexpected_statuses_are_failures() {
        let mut b = BackendHealth::default();
        record_probe(&mut b, ProbeResult::Status(200), 1, &check());
        record_probe(&mut b, ProbeResult::Status(302), 2, &check());
        assert_eq!(
            record_probe(&mut b, ProbeResult::Status(200), 3, &check()),
            None
        );
        assert!(!b.healthy);
    }

    #[test]
    fn consecutive_request_failures_eject_for_base_times_count() {
        let mut b = healthy();
        for t in 0..4 {
            assert_eq!(record_request(&mut b, true, t, &outlier(), true), None);
        }
        assert_eq!(
            record_request(&mut b, true, 10, &outlier(), true),
            Some(Change::Ejected {
                until_ms: 30_010,
                count: 1
            })
        );
        assert!(!b.eligible(30_009) && b.eligible(30_010));
        for t in 0..5 {
            record_request(&mut b, true, 40_000 + t, &outlier(), true);
        }
        assert_eq!(
            b.ejected_until_ms,
            40_004 + 60_000,
            "second ejection lasts twice as long"
        );
    }

    #[test]
    fn a_successful_request_restarts_the_count() {
        let mut b = healthy();
        for t in 0..4 {
            record_request(&mut b, true, t, &outlier(), true);
        }
        record_request(&mut b, false, 5, &outlier(), true);
        for t in 6..10 {
            assert_eq!(record_request(&mut b, true, t, &outlier(), true), None);
        }
    }

    #[test]
    fn no_ejection_beyond_the_limit() {
        let mut b = healthy();
        for t in 0..10 {
            assert_eq!(record_request(&mut b, true, t, &outlier(), false), None);
        }
        assert!(b.eligible(11));
    }

    #[test]
    fn probes_lift_an_ejection_early() {
        let mut b = healthy();
        b.successes = 40;
        for t in 0..5 {
            record_request(&mut b, true, t, &outlier(), true);
        }
        assert!(b.is_ejected(100));
        record_probe(&mut b, ProbeResult::Status(200), 100, &check());
        assert_eq!(
            record_probe(&mut b, ProbeResult::Status(200), 200, &check()),
            Some(Change::EjectionLifted)
        );
        assert!(b.eligible(201));
    }

    #[test]
    fn the_ejection_limit() {
        assert!(may_eject(0, 3, 50));
        assert!(!may_eject(1, 3, 50), "50% of 3 is 1");
        assert!(may_eject(1, 4, 50));
        assert!(!may_eject(2, 4, 50));
        assert!(may_eject(0, 3, 0), "at least one, as Envoy");
        assert!(!may_eject(1, 3, 0));
        assert!(may_eject(2, 3, 100));
    }
}
