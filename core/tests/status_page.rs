//! The status page's JSON, byte for byte: the document operators (and their scripts) read.
//! The expected texts are what the serde-derived writer produced, kept so the hand-written
//! writer that replaced it changes nothing.

// A test crate: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use eisodos_core::balancer::Balancer;
use eisodos_core::config::Config;
use eisodos_core::health::ProbeResult;
use eisodos_core::memory_store::MemoryStore;

fn worker(json: &str, store: &MemoryStore) -> Balancer {
    let balancer = Balancer::new(Config::parse(json.as_bytes()).unwrap(), "t", 1).unwrap();
    balancer.create_shared_keys(store).unwrap();
    balancer
}

/// No health sections, a backup, and a cluster name that needs escaping (`"` and `\` are
/// printable ASCII, so a valid cluster name may hold them).
#[test]
fn without_health() {
    let store = MemoryStore::new();
    let w = worker(
        r#"{"backends": [{"cluster": "a"}, {"cluster": "q\"uo\\te", "weight": 3, "backup": true}]}"#,
        &store,
    );
    let text = w.status_json(&store, 5);
    assert_eq!(
        text,
        r#"{
  "policy": "round_robin",
  "mode": "normal",
  "now_ms": 5,
  "backends": [
    {
      "cluster": "a",
      "weight": 1,
      "backup": false,
      "selected": true,
      "healthy": true,
      "ejected": false,
      "ejected_until_ms": null,
      "ejections": 0,
      "consecutive_probe_successes": 0,
      "consecutive_probe_failures": 0,
      "consecutive_request_failures": 0,
      "last_probe_status": null,
      "last_probe_ms": null,
      "in_flight": null,
      "max_requests": null
    },
    {
      "cluster": "q\"uo\\te",
      "weight": 3,
      "backup": true,
      "selected": false,
      "healthy": true,
      "ejected": false,
      "ejected_until_ms": null,
      "ejections": 0,
      "consecutive_probe_successes": 0,
      "consecutive_probe_failures": 0,
      "consecutive_request_failures": 0,
      "last_probe_status": null,
      "last_probe_ms": null,
      "in_flight": null,
      "max_requests": null
    }
  ]
}"#
    );
    let status: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(status["backends"][1]["cluster"], "q\"uo\\te");
}

/// Probes answered (one failing), a backend ejected by passive health, in-flight counted.
#[test]
fn with_health_and_ejection() {
    let store = MemoryStore::new();
    let w = worker(
        r#"{"policy": "least_request",
            "health_check": {"path": "/healthz", "interval_ms": 1000, "timeout_ms": 500},
            "outlier_detection": {"consecutive_failures": 2, "base_ejection_ms": 1000},
            "status_path": "/s",
            "backends": [{"cluster": "a"}, {"cluster": "b"}, {"cluster": "c"}]}"#,
        &store,
    );
    let tick = w.tick(&store, 1_000);
    let probes: Vec<usize> = tick.probes.iter().map(|p| p.index).collect();
    for (token, index) in (1..).zip(probes) {
        w.probe_sent(index, token, 1_000);
        let result = if index == 1 {
            ProbeResult::Status(503)
        } else {
            ProbeResult::Status(200)
        };
        w.probe_answered(token, result, 1_005);
    }
    w.tick(&store, 1_100);
    w.report(&store, 2, true, 1_150);
    w.report(&store, 2, true, 1_160);
    let text = w.status_json(&store, 1_200);
    assert_eq!(text, WITH_HEALTH);
    let status: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(status["backends"].as_array().unwrap().len(), 3);
}

const WITH_HEALTH: &str = r#"{
  "policy": "least_request",
  "mode": "normal",
  "now_ms": 1200,
  "backends": [
    {
      "cluster": "a",
      "weight": 1,
      "backup": false,
      "selected": true,
      "healthy": true,
      "ejected": false,
      "ejected_until_ms": null,
      "ejections": 0,
      "consecutive_probe_successes": 1,
      "consecutive_probe_failures": 0,
      "consecutive_request_failures": 0,
      "last_probe_status": 200,
      "last_probe_ms": 1005,
      "in_flight": 0,
      "max_requests": null
    },
    {
      "cluster": "b",
      "weight": 1,
      "backup": false,
      "selected": true,
      "healthy": true,
      "ejected": false,
      "ejected_until_ms": null,
      "ejections": 0,
      "consecutive_probe_successes": 0,
      "consecutive_probe_failures": 1,
      "consecutive_request_failures": 0,
      "last_probe_status": 503,
      "last_probe_ms": 1005,
      "in_flight": 0,
      "max_requests": null
    },
    {
      "cluster": "c",
      "weight": 1,
      "backup": false,
      "selected": false,
      "healthy": true,
      "ejected": true,
      "ejected_until_ms": 2160,
      "ejections": 1,
      "consecutive_probe_successes": 0,
      "consecutive_probe_failures": 0,
      "consecutive_request_failures": 0,
      "last_probe_status": 200,
      "last_probe_ms": 1005,
      "in_flight": 0,
      "max_requests": null
    }
  ]
}"#;
