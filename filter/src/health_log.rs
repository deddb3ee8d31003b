//! The log lines of health changes, one wording whichever callback saw them: the tick (probe
//! answers written, the shared record followed) or the end of a request whose failure ejected
//! its backend. Called only when something changed: nothing here runs per request.

use eisodos_core::balancer::Balancer;
use eisodos_core::health::{Change, Mode};
use log::{error, info, warn};

/// Logs each backend's change at info, with the backend and the reason, then the mode change
/// louder: an operator may have to act on that one.
pub fn log(
    balancer: &Balancer,
    changes: impl IntoIterator<Item = (usize, Change)>,
    mode_change: Option<(Mode, Mode)>,
    now_ms: u64,
) {
    for (index, change) in changes {
        log_change(balancer, index, change, now_ms);
    }
    if let Some((before, after)) = mode_change {
        match after {
            Mode::Normal => info!("selection back to normal (was {})", before.name()),
            Mode::Panic => warn!(
                "panic mode: fewer than {}% of primaries healthy, spreading over all primaries",
                balancer.config().panic_threshold_percent
            ),
            Mode::Backup => warn!("no primary healthy: sending to backups"),
            Mode::AllDown => error!("no backend healthy: answering 503"),
        }
    }
}

/// The prober found the health record of this backend list unkept for `age_ms` (a list
/// served earlier, configured again) and restarted it in the initial state.
pub fn log_stale_restart(age_ms: u64) {
    info!(
        "health record restarted: its latest probe answer was {age_ms} ms old (this backend list was not served meanwhile); probing from the initial state"
    );
}

/// The cluster of backend `index`, for log lines.
pub fn cluster(balancer: &Balancer, index: usize) -> &str {
    balancer
        .config()
        .backends
        .get(index)
        .map_or("?", |backend| backend.cluster.as_str())
}

fn log_change(balancer: &Balancer, index: usize, change: Change, now_ms: u64) {
    let cluster = cluster(balancer, index);
    let check = balancer.config().health_check.as_ref();
    match change {
        Change::BecameHealthy => info!(
            "backend {cluster} healthy: {} consecutive probes passed",
            check.map_or(0, |c| c.healthy_threshold)
        ),
        Change::BecameUnhealthy => info!(
            "backend {cluster} unhealthy: {} consecutive probes failed",
            check.map_or(0, |c| c.unhealthy_threshold)
        ),
        Change::Ejected { until_ms, count } => info!(
            "backend {cluster} ejected for {} ms (ejection {count}): consecutive failed requests",
            until_ms.saturating_sub(now_ms)
        ),
        Change::EjectionLifted => {
            info!("backend {cluster} back from ejection: probes passed")
        }
    }
}
