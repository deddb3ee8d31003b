//! Active health probes: sent with `dispatch_http_call` through the backend's own cluster (its
//! load balancer, connection pool and TLS apply), answered in the root context.

use eisodos_core::balancer::{Balancer, ProbeRequest};
use eisodos_core::health::ProbeResult;
use log::{debug, warn};

use crate::host::Host;

/// Sends `probe` now; a call Envoy refuses (an unknown cluster, say) is a failed probe.
pub fn send(host: &impl Host, balancer: &Balancer, probe: ProbeRequest<'_>, now_ms: u64) {
    let Some(check) = &balancer.config().health_check else {
        return;
    };
    let headers = [
        (":method", check.method.as_str()),
        (":path", check.path.as_str()),
        (":authority", probe.authority),
        ("user-agent", "eisodos-health-check"),
    ];
    match host.http_call(probe.cluster, &headers, check.timeout_ms) {
        Ok(token) => {
            debug!("probe {} sent (token {token})", probe.cluster);
            balancer.probe_sent(probe.index, token, now_ms);
        }
        Err(status) => {
            // A refusal repeats every interval (a cluster Envoy lacks): warned once a run.
            if balancer.probe_not_sent(probe.index, now_ms) {
                warn!(
                    "cannot probe {}: Envoy refused the call ({}); not logged again until a probe of it is sent",
                    probe.cluster,
                    status.name()
                );
            } else {
                debug!(
                    "cannot probe {}: Envoy refused the call ({})",
                    probe.cluster,
                    status.name()
                );
            }
        }
    }
}

/// What a probe came back with: its status, or a failure when Envoy called back without one
/// (refused, reset, timed out).
pub fn result(host: &impl Host) -> ProbeResult {
    host.http_call_status()
        .ok()
        .flatten()
        .and_then(|bytes| std::str::from_utf8(&bytes).ok()?.parse::<u16>().ok())
        .map_or(ProbeResult::Failed, ProbeResult::Status)
}
