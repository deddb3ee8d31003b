//! The status page: every backend's health, as one worker sees it, as JSON.
//!
//! Answered locally on `status_path` for allowed clients. The document's keys and their order
//! are part of the interface (pinned by `core/tests/status_page.rs`).

use super::plan::Plan;
use crate::health::{HealthRecord, Selection};
use crate::json_out::JsonWriter;

/// The page for `plan`'s backends: `record` is the shared health record (`None` without health
/// checking), `selection` this worker's, `in_flight` the counts (empty when not counted); each
/// backend's `max_requests` beside its count.
pub fn render(
    plan: &Plan,
    record: Option<&HealthRecord>,
    selection: &Selection,
    in_flight: &[u32],
    now_ms: u64,
) -> String {
    let backends = plan
        .config
        .backends
        .iter()
        .enumerate()
        .map(|(index, backend)| {
            let health = record.and_then(|r| r.backends.get(index));
            BackendStatus {
                cluster: &backend.cluster,
                weight: backend.weight,
                backup: backend.backup,
                selected: selection.allows(index),
                healthy: health.is_none_or(|h| h.healthy),
                ejected: health.is_some_and(|h| h.is_ejected(now_ms)),
                ejected_until_ms: health.map(|h| h.ejected_until_ms).filter(|&t| t > now_ms),
                ejections: health.map_or(0, |h| h.ejections),
                consecutive_probe_successes: health.map_or(0, |h| h.successes),
                consecutive_probe_failures: health.map_or(0, |h| h.failures),
                consecutive_request_failures: health.map_or(0, |h| h.passive_failures),
                last_probe_status: health
                    .filter(|h| h.last_probe_ms > 0)
                    .map(|h| h.last_status),
                last_probe_ms: health.map(|h| h.last_probe_ms).filter(|&t| t > 0),
                in_flight: in_flight.get(index).copied(),
                max_requests: backend.max_requests,
            }
        })
        .collect();
    let status = Status {
        policy: plan.config.policy.name(),
        mode: selection.mode.name(),
        now_ms,
        backends,
    };
    status.to_json()
}

/// The status page's document.
struct Status<'a> {
    policy: &'a str,
    mode: &'a str,
    now_ms: u64,
    backends: Vec<BackendStatus<'a>>,
}

impl Status<'_> {
    /// The document, pretty-printed; the keys are the field names, in order.
    fn to_json(&self) -> String {
        let mut w = JsonWriter::new();
        w.begin_object();
        w.key("policy");
        w.string(self.policy);
        w.key("mode");
        w.string(self.mode);
        w.key("now_ms");
        w.uint(self.now_ms);
        w.key("backends");
        w.begin_array();
        for backend in &self.backends {
            backend.write_json(&mut w);
        }
        w.end_array();
        w.end_object();
        w.finish()
    }
}

impl BackendStatus<'_> {
    fn write_json(&self, w: &mut JsonWriter) {
        w.begin_object();
        w.key("cluster");
        w.string(self.cluster);
        w.key("weight");
        w.uint(self.weight.into());
        w.key("backup");
        w.bool(self.backup);
        w.key("selected");
        w.bool(self.selected);
        w.key("healthy");
        w.bool(self.healthy);
        w.key("ejected");
        w.bool(self.ejected);
        w.key("ejected_until_ms");
        w.opt_uint(self.ejected_until_ms);
        w.key("ejections");
        w.uint(self.ejections.into());
        w.key("consecutive_probe_successes");
        w.uint(self.consecutive_probe_successes.into());
        w.key("consecutive_probe_failures");
        w.uint(self.consecutive_probe_failures.into());
        w.key("consecutive_request_failures");
        w.uint(self.consecutive_request_failures.into());
        w.key("last_probe_status");
        w.opt_uint(self.last_probe_status.map(u64::from));
        w.key("last_probe_ms");
        w.opt_uint(self.last_probe_ms);
        w.key("in_flight");
        w.opt_uint(self.in_flight.map(u64::from));
        w.key("max_requests");
        w.opt_uint(self.max_requests.map(u64::from));
        w.end_object();
    }
}

struct BackendStatus<'a> {
    cluster: &'a str,
    weight: u32,
    backup: bool,
    /// Whether requests may go to it now.
    selected: bool,
    healthy: bool,
    ejected: bool,
    ejected_until_ms: Option<u64>,
    ejections: u32,
    consecutive_probe_successes: u16,
    consecutive_probe_failures: u16,
    consecutive_request_failures: u16,
    last_probe_status: Option<u16>,
    last_probe_ms: Option<u64>,
    in_flight: Option<u32>,
    /// Its cap, if it has one.
    max_requests: Option<u32>,
}
