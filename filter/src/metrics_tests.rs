//! The metrics' wiring, against [`FakeHost`]: which metrics a configuration defines, that a
//! request makes no metric host call, and what the tick writes.

use crate::abi::MetricKind;
use crate::fake_host::FakeHost;
use crate::root::EisodosRoot;
use crate::wiring_tests::{configured, request, routed_to, ROUND_ROBIN_CALLS, THREE};

/// The stat name of `family` with `labels`, under the default plugin name.
fn name(labels: &[(&str, &str)], family: &str) -> String {
    eisodos_core::metrics::stat_name("eisodos", labels, family)
}

/// A metric's value (`None`: defined, never written); panics when not defined.
fn value(host: &FakeHost, labels: &[(&str, &str)], family: &str) -> Option<u64> {
    let name = name(labels, family);
    host.metric(&name)
        .unwrap_or_else(|| panic!("{name} is not defined"))
}

/// Ticks until the metrics were flushed once more: one flush period of ticks.
pub fn until_flushed(host: &FakeHost, root: &EisodosRoot) {
    let period = u64::from(host.tick_period_ms().expect("a tick period is set"));
    for _ in 0..eisodos_core::metrics::FLUSH_PERIOD_MS / period {
        host.advance_ms(period);
        root.on_tick(host);
    }
}

#[test]
fn every_policy_defines_its_metrics_at_configure_time_and_ticks_to_flush_them() {
    let (host, _root) = configured(&format!(r#"{{"policy": "random", {THREE}}}"#));
    assert_eq!(host.tick_period_ms(), Some(1_000), "a tick even for random");
    let defined: Vec<(String, MetricKind)> = host
        .metrics()
        .into_iter()
        .map(|(name, kind, _)| (name, kind))
        .collect();
    let per_backend = |b: &str| {
        [
            (
                name(&[("backend", b)], "requests_total"),
                MetricKind::Counter,
            ),
            (
                name(&[("backend", b)], "backend_healthy"),
                MetricKind::Gauge,
            ),
        ]
    };
    let mut expected: Vec<_> = ["backend_a", "backend_b", "backend_c"]
        .into_iter()
        .flat_map(per_backend)
        .collect();
    expected.extend([
        (
            name(&[("reason", "no_healthy_backend")], "local_replies_total"),
            MetricKind::Counter,
        ),
        (
            name(&[("reason", "missing_key")], "local_replies_total"),
            MetricKind::Counter,
        ),
        (
            name(&[("reason", "circuit_open")], "local_replies_total"),
            MetricKind::Counter,
        ),
        (
            name(&[("reason", "rate_limited")], "local_replies_total"),
            MetricKind::Counter,
        ),
        (
            name(&[("reason", "denied")], "local_replies_total"),
            MetricKind::Counter,
        ),
        (name(&[], "mode"), MetricKind::Gauge),
        (name(&[], "cas_exhausted_total"), MetricKind::Counter),
    ]);
    assert_eq!(defined, expected);
}

#[test]
fn health_checks_and_ejection_add_their_families() {
    let (host, _root) = configured(&format!(
        r#"{{"policy": "least_request", "health_check": {{"path": "/h"}},
            "outlier_detection": {{"consecutive_failures": 5}}, {THREE}}}"#
    ));
    let b = [("backend", "backend_c")];
    assert_eq!(value(&host, &b, "in_flight"), None);
    assert_eq!(value(&host, &b, "ejections_total"), None);
    for result in ["success", "failure", "network_failure"] {
        let labels = [("backend", "backend_c"), ("result", result)];
        assert_eq!(value(&host, &labels, "probes_total"), None);
    }
    assert_eq!(host.metrics().len(), 3 * 7 + 7);
}

/// The cost rule: counting a request makes no host call. The calls of a request are the same
/// as without metrics (round-robin: the ticket's get and CAS set, the header, the reason in
/// filter state), and the tick
/// adds the counts with one call per counter that moved.
#[test]
fn a_request_makes_no_metric_host_call_and_the_tick_adds_the_counts() {
    let (host, root) = configured(&format!(r#"{{"policy": "round_robin", {THREE}}}"#));
    let mut per_request = Vec::new();
    for _ in 0..7 {
        let (_, stream) = request(&host, &root, &[(":path", "/")]);
        stream.on_log(&host);
        per_request.push(host.take_calls());
    }
    for calls in &per_request {
        assert_eq!(calls, &ROUND_ROBIN_CALLS);
    }
    let requests = |b: &str| value(&host, &[("backend", b)], "requests_total");
    assert_eq!(requests("backend_a"), None, "not before the tick");
    root.on_tick(&host);
    let calls = host.take_calls();
    let increments = calls.iter().filter(|c| **c == "increment_metric").count();
    assert_eq!(
        increments, 3,
        "one per backend that took requests: {calls:?}"
    );
    assert_eq!(
        ["backend_a", "backend_b", "backend_c"].map(requests),
        [Some(3), Some(2), Some(2)]
    );
    // The health gauges were set on that first tick; nothing changed since.
    assert_eq!(
        value(&host, &[("backend", "backend_b")], "backend_healthy"),
        Some(1)
    );
    assert_eq!(value(&host, &[], "mode"), Some(0));
    until_flushed(&host, &root);
    assert!(
        !host.take_calls().iter().any(|c| c.ends_with("_metric")),
        "nothing moved, nothing written"
    );
}

#[test]
fn local_replies_are_counted_by_reason_and_health_gauges_follow() {
    let (host, root) = configured(&format!(
        r#"{{"policy": "consistent_hash", "hash_key": [{{"header": "x-user"}}],
            "on_missing_key": "reject", {THREE}}}"#
    ));
    request(&host, &root, &[(":path", "/")]);
    request(&host, &root, &[(":path", "/")]);
    root.on_tick(&host);
    assert_eq!(
        value(&host, &[("reason", "missing_key")], "local_replies_total"),
        Some(2)
    );

    let (host, root) = configured(&format!(
        r#"{{"health_check": {{"path": "/h", "initial_state": "unhealthy"}}, {THREE}}}"#
    ));
    request(&host, &root, &[(":path", "/")]);
    root.on_tick(&host);
    assert_eq!(
        value(
            &host,
            &[("reason", "no_healthy_backend")],
            "local_replies_total"
        ),
        Some(1)
    );
    assert_eq!(
        value(&host, &[("backend", "backend_a")], "backend_healthy"),
        Some(0)
    );
    assert_eq!(value(&host, &[], "mode"), Some(3), "all down");
}

#[test]
fn probes_and_ejections_are_counted() {
    let (host, root) = configured(
        r#"{"health_check": {"path": "/h", "interval_ms": 1000, "unhealthy_threshold": 1},
            "outlier_detection": {"consecutive_failures": 1, "max_ejection_percent": 100},
            "backends": [{"cluster": "backend_a"}, {"cluster": "backend_b"}]}"#,
    );
    root.on_tick(&host);
    let calls = host.take_http_calls();
    host.set_http_call_status(Some("200"));
    root.on_http_call_response(&host, calls[0].token);
    host.set_http_call_status(None);
    root.on_http_call_response(&host, calls[1].token);
    let (_, stream) = request(&host, &root, &[(":path", "/")]);
    let ejected = routed_to(&host).unwrap();
    host.set_response_code(503);
    stream.on_log(&host);
    until_flushed(&host, &root);
    let probes =
        |b: &str, result: &str| value(&host, &[("backend", b), ("result", result)], "probes_total");
    assert_eq!(probes("backend_a", "success"), Some(1));
    assert_eq!(probes("backend_a", "failure"), None);
    assert_eq!(probes("backend_b", "network_failure"), Some(1));
    assert_eq!(
        value(&host, &[("backend", &ejected)], "ejections_total"),
        Some(1)
    );
    // backend_b failed its probe; the ejected one is out too, whichever it was.
    assert_eq!(
        value(&host, &[("backend", "backend_b")], "backend_healthy"),
        Some(0)
    );
    assert_eq!(
        value(&host, &[("backend", &ejected)], "backend_healthy"),
        Some(0)
    );
}

#[test]
fn a_retired_root_hands_over_its_counts() {
    let (host, root) = configured(&format!(r#"{{"policy": "random", {THREE}}}"#));
    request(&host, &root, &[(":path", "/")]);
    let chosen = routed_to(&host).unwrap();
    root.retire(&host);
    assert_eq!(
        value(&host, &[("backend", &chosen)], "requests_total"),
        Some(1)
    );
}

/// Configures a fresh root with `json` under the plugin name `plugin`; its warnings.
fn warnings_configuring(host: &FakeHost, plugin: &str, json: &str) -> Vec<String> {
    host.set_property(&["plugin_name"], plugin.as_bytes());
    let root = EisodosRoot::default();
    host.set_configuration(json);
    assert!(root.on_configure(host, json.len()));
    host.take_logs()
        .into_iter()
        .filter(|(level, _)| *level == crate::abi::LogLevel::Warn)
        .map(|(_, line)| line)
        .collect()
}

#[test]
fn a_name_that_cannot_be_encoded_loses_its_metrics_with_one_warning() {
    let host = FakeHost::new();
    let warnings = warnings_configuring(
        &host,
        "eisodos",
        r#"{"backends": [{"cluster": "backend_a"}, {"cluster": "odd;.;name"}, {"cluster": "x=.=y"}]}"#,
    );
    assert_eq!(
        warnings,
        [
            "no metrics for backends[1]: its cluster \"odd;.;name\" contains \";.;\" or \"=.=\", which the stat names use as separators",
            "no metrics for backends[2]: its cluster \"x=.=y\" contains \";.;\" or \"=.=\", which the stat names use as separators",
        ]
    );
    assert!(host
        .metric(&name(&[("backend", "backend_a")], "requests_total"))
        .is_some());
    let names: Vec<String> = host.metrics().into_iter().map(|(n, _, _)| n).collect();
    assert!(
        !names
            .iter()
            .any(|n| n.contains("odd") || n.contains("x=.=y")),
        "{names:?}"
    );

    let host = FakeHost::new();
    let warnings = warnings_configuring(&host, "a;.;b", &format!("{{{THREE}}}"));
    assert!(host.metrics().is_empty());
    assert_eq!(
        warnings,
        ["no metrics: the plugin name \"a;.;b\" contains \";.;\" or \"=.=\", which the stat names use as separators"]
    );
}
