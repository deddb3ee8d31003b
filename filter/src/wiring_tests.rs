//! The callbacks' wiring, against [`FakeHost`]: what each callback reads from the host, what
//! it hands core, and what it does with the answer (headers, replies, probes, log lines).

use std::rc::Rc;

use eisodos_core::balancer::ALL_DOWN_BODY;
use serde_json::Value;

use crate::abi::{self, LogLevel};
use crate::fake_host::{FakeHost, START_MS};
use crate::http::{EisodosHttp, REASON_KEY};
use crate::root::EisodosRoot;

const CLUSTER_HEADER: &str = "x-eisodos-cluster";
pub(crate) const THREE: &str =
    r#""backends": [{"cluster": "backend_a"}, {"cluster": "backend_b"}, {"cluster": "backend_c"}]"#;

/// A root configured with `json` on a fresh host; the log and call records start empty.
pub(crate) fn configured(json: &str) -> (FakeHost, EisodosRoot) {
    let host = FakeHost::new();
    let root = EisodosRoot::default();
    host.set_configuration(json);
    assert!(
        root.on_configure(&host, json.len()),
        "{:?}",
        host.take_logs()
    );
    host.take_logs();
    host.take_calls();
    (host, root)
}

/// Configures `root` with `json`, which must be refused with exactly one line, at Error; that
/// line.
fn refused(host: &FakeHost, root: &EisodosRoot, json: &str) -> String {
    host.set_configuration(json);
    assert!(!root.on_configure(host, json.len()));
    let mut logs = host.take_logs();
    assert_eq!(logs.len(), 1, "{logs:?}");
    let (level, message) = logs.remove(0);
    assert_eq!(level, LogLevel::Error, "{message}");
    message
}

/// A stream of `root` whose request headers (`headers`) went through the filter.
pub(crate) fn request(
    host: &FakeHost,
    root: &EisodosRoot,
    headers: &[(&str, &str)],
) -> (u32, EisodosHttp) {
    host.set_request(headers);
    let mut stream = EisodosHttp::new(root.balancer());
    let action = stream.on_request_headers(host);
    (action, stream)
}

/// The backend the last request was sent to.
pub(crate) fn routed_to(host: &FakeHost) -> Option<String> {
    host.headers_set()
        .into_iter()
        .rev()
        .find(|(name, _)| name == CLUSTER_HEADER)
        .map(|(_, value)| value)
}

fn status_page(host: &FakeHost, root: &EisodosRoot) -> Value {
    let balancer = root.balancer().expect("configured");
    serde_json::from_str(&balancer.status_json(host, host.now())).unwrap()
}

fn info(message: &str) -> (LogLevel, String) {
    (LogLevel::Info, message.to_owned())
}

/// A round-robin request's host calls: the ticket's get and CAS set, the cluster header, the
/// reason in filter state. What a feature that is off must leave unchanged.
pub const ROUND_ROBIN_CALLS: [&str; 4] = [
    "get_shared_data",
    "set_shared_data",
    "set_request_header",
    "set_property",
];

#[test]
fn a_good_configuration_is_accepted_and_logged() {
    let host = FakeHost::new();
    let root = EisodosRoot::default();
    let json = format!(r#"{{"policy": "least_request", {THREE}}}"#);
    host.set_configuration(&json);
    assert!(root.on_configure(&host, json.len()));
    assert_eq!(
        host.take_logs(),
        [info(
            "configured least_request over 3 backends, header x-eisodos-cluster"
        )]
    );
    assert!(root.balancer().is_some());
    // Least-request ticks to write the releases of ended streams.
    assert!(host.tick_period_ms().is_some_and(|ms| ms > 0));
    assert_eq!(
        host.metric("eisodos.plugin=.=eisodos;.;backend=.=backend_b;.;in_flight"),
        Some(None)
    );
}

#[test]
fn a_bad_configuration_is_refused_with_one_line_naming_the_field() {
    let host = FakeHost::new();
    let root = EisodosRoot::default();
    let json = r#"{"backends": [{"cluster": "backend_a", "weight": 0}]}"#;
    assert_eq!(
        refused(&host, &root, json),
        "invalid configuration: backends[0].weight: must be between 1 and 1000, got 0"
    );
    assert!(root.balancer().is_none());
    assert_eq!(host.tick_period_ms(), None, "nothing to tick for");
}

#[test]
fn a_bad_reconfiguration_keeps_the_balancer_in_force() {
    let (host, root) = configured(&format!("{{{THREE}}}"));
    let before = root.balancer().unwrap();
    let json = r#"{"policy": "fastest", "backends": [{"cluster": "backend_a"}]}"#;
    let message = refused(&host, &root, json);
    assert!(
        message.starts_with("invalid configuration: policy: "),
        "{message}"
    );
    assert!(Rc::ptr_eq(&before, &root.balancer().unwrap()));
}

#[test]
fn the_plugin_name_keeps_shared_data_and_metrics_apart() {
    let host = FakeHost::new();
    host.set_property(&["plugin_name"], b"edge");
    let root = EisodosRoot::default();
    let json = format!(r#"{{"policy": "least_request", {THREE}}}"#);
    host.set_configuration(&json);
    assert!(root.on_configure(&host, json.len()));
    let in_flight = |plugin: &str| {
        host.metric(&format!(
            "eisodos.plugin=.={plugin};.;backend=.=backend_a;.;in_flight"
        ))
    };
    assert_eq!(in_flight("edge"), Some(None));
    assert_eq!(in_flight("eisodos"), None);
}

#[test]
fn a_request_is_routed_to_the_chosen_backend() {
    let (host, root) = configured(&format!(r#"{{"policy": "round_robin", {THREE}}}"#));
    let mut routed = Vec::new();
    for _ in 0..3 {
        let (action, _) = request(&host, &root, &[(":path", "/")]);
        assert_eq!(action, abi::CONTINUE);
        routed.push(routed_to(&host).expect("the cluster header is set"));
    }
    routed.sort();
    assert_eq!(routed, ["backend_a", "backend_b", "backend_c"]);
    assert!(host.replies().is_empty());
    assert!(host.take_logs().is_empty(), "nothing logged per request");
}

#[test]
fn the_reason_is_left_in_filter_state_with_one_host_call() {
    let (host, root) = configured(&format!(r#"{{"policy": "round_robin", {THREE}}}"#));
    request(&host, &root, &[(":path", "/")]);
    assert_eq!(host.filter_state(REASON_KEY).as_deref(), Some("ticket"));
    assert_eq!(
        host.take_calls(),
        ROUND_ROBIN_CALLS,
        "the ticket, the header, and the reason: one call more than routing alone"
    );
}

#[test]
fn with_filter_state_off_a_request_makes_no_set_property() {
    let (host, root) = configured(&format!(
        r#"{{"policy": "round_robin", "filter_state": false, {THREE}}}"#
    ));
    request(&host, &root, &[(":path", "/")]);
    assert_eq!(host.filter_state(REASON_KEY), None);
    assert_eq!(
        host.take_calls(),
        ["get_shared_data", "set_shared_data", "set_request_header"]
    );
    // A local reply leaves no reason either.
    let (host, root) = configured(
        r#"{"policy": "consistent_hash", "hash_key": [{"header": "x-user-id"}],
            "on_missing_key": "reject", "filter_state": false,
            "backends": [{"cluster": "backend_a"}]}"#,
    );
    request(&host, &root, &[(":path", "/")]);
    assert_eq!(host.filter_state(REASON_KEY), None);
    assert_eq!(host.replies().len(), 1);
}

#[test]
fn a_hashing_request_says_whether_its_key_decided() {
    let (host, root) = configured(&format!(
        r#"{{"policy": "consistent_hash", "hash_key": [{{"header": "x-user-id"}}], {THREE}}}"#
    ));
    request(&host, &root, &[(":path", "/"), ("x-user-id", "42")]);
    assert_eq!(host.filter_state(REASON_KEY).as_deref(), Some("hash"));
    request(&host, &root, &[(":path", "/")]);
    assert_eq!(
        host.filter_state(REASON_KEY).as_deref(),
        Some("fallback"),
        "no key: round-robin placed it"
    );
    assert!(routed_to(&host).is_some());
}

#[test]
fn a_stream_without_a_balancer_passes_through_untouched() {
    let host = FakeHost::new();
    let mut stream = EisodosHttp::new(None);
    assert_eq!(stream.on_request_headers(&host), abi::CONTINUE);
    stream.on_log(&host);
    assert!(host.take_calls().is_empty());
}

#[test]
fn stream_end_releases_the_in_flight_count() {
    let (host, root) = configured(&format!(r#"{{"policy": "least_request", {THREE}}}"#));
    let balancer = root.balancer().unwrap();
    let (_, first) = request(&host, &root, &[(":path", "/")]);
    let (_, second) = request(&host, &root, &[(":path", "/")]);
    assert_eq!(balancer.in_flight(&host).iter().sum::<u32>(), 2);
    root.on_tick(&host);
    let gauge = |b: &str| {
        host.metric(&format!(
            "eisodos.plugin=.=eisodos;.;backend=.={b};.;in_flight"
        ))
        .flatten()
    };
    let gauges: Vec<_> = ["backend_a", "backend_b", "backend_c"]
        .map(gauge)
        .into_iter()
        .collect();
    assert_eq!(gauges.iter().flatten().sum::<u64>(), 2, "{gauges:?}");

    first.on_log(&host);
    second.on_log(&host);
    // Releases are written on the next tick (or pick), not one shared-data write per stream.
    host.advance_ms(20);
    root.on_tick(&host);
    assert_eq!(balancer.in_flight(&host), [0, 0, 0]);
    assert_eq!(
        gauge("backend_a"),
        gauges[0],
        "refreshed once per flush period, not on every tick"
    );
    crate::metrics_tests::until_flushed(&host, &root);
    assert_eq!(gauge("backend_a"), Some(0), "the gauges follow");
}

#[test]
fn a_retired_root_gives_back_at_once_what_ends_later() {
    let (host, root) = configured(&format!(r#"{{"policy": "least_request", {THREE}}}"#));
    let balancer = root.balancer().unwrap();
    let (_, first) = request(&host, &root, &[(":path", "/")]);
    let (_, second) = request(&host, &root, &[(":path", "/")]);
    first.on_log(&host);
    // The plugin goes away: no more ticks to write releases on.
    root.retire(&host);
    assert_eq!(balancer.in_flight(&host).iter().sum::<u32>(), 1);
    second.on_log(&host);
    assert_eq!(balancer.in_flight(&host), [0, 0, 0]);
}

#[test]
fn a_success_after_successes_makes_no_host_call_but_reading_how_it_ended() {
    let (host, root) = configured(&format!(
        r#"{{"policy": "random", "outlier_detection": {{"consecutive_failures": 3}}, {THREE}}}"#
    ));
    for _ in 0..3 {
        let (_, stream) = request(&host, &root, &[(":path", "/")]);
        host.set_response_code(200);
        host.set_property(&["response", "code_details"], b"via_upstream");
        host.take_calls();
        stream.on_log(&host);
        // `response.code`, then `response.code_details` (was the response cut short?).
        assert_eq!(host.take_calls(), ["property", "property"]);
    }
    assert!(host.take_logs().is_empty());
}

#[test]
fn a_failure_reads_no_details() {
    let (host, root) = configured(&format!(
        r#"{{"policy": "random", "outlier_detection": {{"consecutive_failures": 3}}, {THREE}}}"#
    ));
    let (_, stream) = request(&host, &root, &[(":path", "/")]);
    host.set_response_code(503);
    host.take_calls();
    stream.on_log(&host);
    let calls = host.take_calls();
    assert_eq!(
        calls.iter().filter(|c| **c == "property").count(),
        1,
        "{calls:?}"
    );
}

#[test]
fn a_response_cut_short_after_its_headers_is_a_failed_request() {
    // Found by the fault matrix: an upstream that sends a 200's headers and then resets was
    // counted as a success (Envoy keeps the 200 in `response.code`), so never ejected.
    let (host, root) = configured(&format!(
        r#"{{"policy": "random", "outlier_detection": {{"consecutive_failures": 1,
             "base_ejection_ms": 5000}}, {THREE}}}"#
    ));
    let (_, stream) = request(&host, &root, &[(":path", "/")]);
    let ejected = routed_to(&host).unwrap();
    host.set_response_code(200);
    host.set_property(
        &["response", "code_details"],
        b"upstream_reset_after_response_started{protocol_error}",
    );
    stream.on_log(&host);
    assert_eq!(
        host.take_logs(),
        [info(&format!(
            "backend {ejected} ejected for 5000 ms (ejection 1): consecutive failed requests"
        ))]
    );
}

#[test]
fn a_failure_short_of_the_threshold_logs_nothing() {
    let (host, root) = configured(&format!(
        r#"{{"policy": "random", "outlier_detection": {{"consecutive_failures": 3}}, {THREE}}}"#
    ));
    let (_, stream) = request(&host, &root, &[(":path", "/")]);
    host.set_response_code(503);
    stream.on_log(&host);
    assert!(host.take_logs().is_empty());
    let page = status_page(&host, &root);
    let failures: Vec<_> = page["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["consecutive_request_failures"].as_u64().unwrap())
        .collect();
    assert_eq!(failures.iter().sum::<u64>(), 1, "{failures:?}");
}

#[test]
fn a_stream_that_got_no_response_reports_nothing() {
    let (host, root) = configured(&format!(
        r#"{{"policy": "random", "outlier_detection": {{"consecutive_failures": 1}}, {THREE}}}"#
    ));
    let (_, stream) = request(&host, &root, &[(":path", "/")]);
    // No `response.code`: the client went away before any response.
    stream.on_log(&host);
    assert!(host.take_logs().is_empty());
    assert_eq!(status_page(&host, &root)["mode"], "normal");
}

#[test]
fn an_ejection_is_logged_with_the_mode_change_it_causes() {
    let (host, root) = configured(
        r#"{"outlier_detection": {"consecutive_failures": 2, "base_ejection_ms": 30000},
            "backends": [{"cluster": "backend_a"}, {"cluster": "backend_b", "backup": true}]}"#,
    );
    for _ in 0..2 {
        let (_, stream) = request(&host, &root, &[(":path", "/")]);
        assert_eq!(routed_to(&host).as_deref(), Some("backend_a"));
        host.set_response_code(503);
        stream.on_log(&host);
    }
    assert_eq!(
        host.take_logs(),
        [
            info(
                "backend backend_a ejected for 30000 ms (ejection 1): consecutive failed requests"
            ),
            (
                LogLevel::Warn,
                "no primary healthy: sending to backups".to_owned()
            ),
        ]
    );
    request(&host, &root, &[(":path", "/")]);
    assert_eq!(routed_to(&host).as_deref(), Some("backend_b"));
    // The worker that ejected follows at once; its next tick has nothing more to say.
    root.on_tick(&host);
    assert!(host.take_logs().is_empty());
}

#[test]
fn an_ejection_that_leaves_the_mode_as_it_was_is_logged_alone() {
    let (host, root) = configured(&format!(
        r#"{{"outlier_detection": {{"consecutive_failures": 1, "base_ejection_ms": 5000}}, {THREE}}}"#
    ));
    let (_, stream) = request(&host, &root, &[(":path", "/")]);
    let ejected = routed_to(&host).unwrap();
    host.set_response_code(500);
    stream.on_log(&host);
    assert_eq!(
        host.take_logs(),
        [info(&format!(
            "backend {ejected} ejected for 5000 ms (ejection 1): consecutive failed requests"
        ))]
    );
}

/// Health checks every second, one result enough to flip.
fn probed() -> (FakeHost, EisodosRoot) {
    configured(
        r#"{"health_check": {"path": "/healthz", "interval_ms": 1000, "timeout_ms": 250,
              "healthy_threshold": 1, "unhealthy_threshold": 1, "interval_jitter_percent": 0},
            "backends": [{"cluster": "backend_a"}, {"cluster": "backend_b"}]}"#,
    )
}

#[test]
fn the_tick_sends_probes_and_their_answers_change_health() {
    let (host, root) = probed();
    root.on_tick(&host);
    let calls = host.take_http_calls();
    let clusters: Vec<_> = calls.iter().map(|c| c.cluster.as_str()).collect();
    assert_eq!(clusters, ["backend_a", "backend_b"]);
    for call in &calls {
        assert_eq!(call.header(":method"), Some("GET"));
        assert_eq!(call.header(":path"), Some("/healthz"));
        assert_eq!(call.header(":authority"), Some(call.cluster.as_str()));
        assert_eq!(call.header("user-agent"), Some("eisodos-health-check"));
        assert_eq!(call.timeout_ms, 250);
    }

    host.advance_ms(10);
    host.set_http_call_status(Some("503"));
    root.on_http_call_response(&host, calls[0].token);
    host.set_http_call_status(Some("200"));
    root.on_http_call_response(&host, calls[1].token);
    // Answers are written to shared data on the next tick that does health work.
    host.advance_ms(1_000);
    root.on_tick(&host);
    assert_eq!(
        host.take_logs(),
        [info(
            "backend backend_a unhealthy: 1 consecutive probes failed"
        )]
    );
    let page = status_page(&host, &root);
    assert_eq!(page["backends"][0]["last_probe_status"], 503);
    assert_eq!(page["backends"][0]["healthy"], false);
    assert_eq!(page["backends"][1]["last_probe_status"], 200);

    let (_, _) = request(&host, &root, &[(":path", "/")]);
    assert_eq!(routed_to(&host).as_deref(), Some("backend_b"));

    // Probed again one interval after the answer; a pass brings backend_a back.
    let calls = host.take_http_calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    host.set_http_call_status(Some("200"));
    for call in &calls {
        root.on_http_call_response(&host, call.token);
    }
    host.advance_ms(1_000);
    root.on_tick(&host);
    assert_eq!(
        host.take_logs(),
        [info(
            "backend backend_a healthy: 1 consecutive probes passed"
        )]
    );
}

/// The probe's Host is the one resolved at configure time: a backend's own `authority`, else
/// `health_check.authority`, else the host the cluster name carries (Istio's `<fqdn>`).
#[test]
fn a_probe_goes_to_the_cluster_with_the_resolved_authority() {
    let (host, root) = configured(
        r#"{"health_check": {"path": "/healthz"},
            "backends": [{"cluster": "outbound|80||svc-a.default.svc.cluster.local"},
                         {"cluster": "outbound|8080|v1|svc-b.default.svc.cluster.local"},
                         {"cluster": "httproute/default/web/rule/0", "authority": "web.example"}]}"#,
    );
    root.on_tick(&host);
    let sent: Vec<(String, Option<String>)> = host
        .take_http_calls()
        .iter()
        .map(|call| {
            (
                call.cluster.clone(),
                call.header(":authority").map(str::to_owned),
            )
        })
        .collect();
    let expected = [
        (
            "outbound|80||svc-a.default.svc.cluster.local",
            "svc-a.default.svc.cluster.local",
        ),
        (
            "outbound|8080|v1|svc-b.default.svc.cluster.local",
            "svc-b.default.svc.cluster.local:8080",
        ),
        ("httproute/default/web/rule/0", "web.example"),
    ]
    .map(|(cluster, authority)| (cluster.to_owned(), Some(authority.to_owned())));
    assert_eq!(sent, expected);

    let (host, root) = configured(
        r#"{"health_check": {"path": "/healthz", "authority": "shared.example"},
            "backends": [{"cluster": "backend_a", "authority": "a.example:8080"}, {"cluster": "backend_b"}]}"#,
    );
    root.on_tick(&host);
    let authorities: Vec<Option<String>> = host
        .take_http_calls()
        .iter()
        .map(|call| call.header(":authority").map(str::to_owned))
        .collect();
    assert_eq!(
        authorities,
        [
            Some("a.example:8080".to_owned()),
            Some("shared.example".to_owned())
        ]
    );
}

#[test]
fn a_cluster_name_without_a_host_is_refused_when_probes_are_on() {
    let host = FakeHost::new();
    let root = EisodosRoot::default();
    let json = r#"{"health_check": {"path": "/healthz"},
        "backends": [{"cluster": "backend_a"}, {"cluster": "inbound|8080||"}]}"#;
    let message = refused(&host, &root, json);
    assert!(
        message.starts_with("invalid configuration: backends[1].authority: not set, and health checks are on: the cluster name \"inbound|8080||\" is an Istio inbound cluster"),
        "{message}"
    );
    assert!(root.balancer().is_none());
}

#[test]
fn a_probe_answered_without_a_status_is_a_failure() {
    let (host, root) = probed();
    root.on_tick(&host);
    let calls = host.take_http_calls();
    // Envoy calls back without `:status` when the call was reset or timed out.
    host.set_http_call_status(None);
    root.on_http_call_response(&host, calls[0].token);
    host.set_http_call_status(Some("200"));
    root.on_http_call_response(&host, calls[1].token);
    host.advance_ms(1_000);
    root.on_tick(&host);
    assert_eq!(
        host.take_logs(),
        [info(
            "backend backend_a unhealthy: 1 consecutive probes failed"
        )]
    );
    assert_eq!(
        status_page(&host, &root)["backends"][0]["last_probe_status"],
        0
    );
}

#[test]
fn a_probe_envoy_refuses_is_a_failure() {
    let (host, root) = probed();
    host.refuse_http_calls();
    root.on_tick(&host);
    let warn = |cluster: &str| {
        (
            LogLevel::Warn,
            format!("cannot probe {cluster}: Envoy refused the call (BadArgument); not logged again until a probe of it is sent"),
        )
    };
    assert_eq!(host.take_logs(), [warn("backend_a"), warn("backend_b")]);
    host.advance_ms(1_000);
    root.on_tick(&host);
    let logs = host.take_logs();
    assert_eq!(
        logs[..3],
        [
            info("backend backend_a unhealthy: 1 consecutive probes failed"),
            info("backend backend_b unhealthy: 1 consecutive probes failed"),
            (
                LogLevel::Error,
                "no backend healthy: answering 503".to_owned()
            ),
        ],
        "{logs:?}"
    );
}

#[test]
fn a_refusal_that_repeats_every_interval_is_warned_once_a_run() {
    let (host, root) = probed();
    let warnings = |host: &FakeHost| -> Vec<String> {
        host.take_logs()
            .into_iter()
            .filter(|(level, _)| *level == LogLevel::Warn)
            .map(|(_, line)| line)
            .collect()
    };
    host.refuse_http_calls();
    root.on_tick(&host);
    assert_eq!(warnings(&host).len(), 2, "one for each backend");
    for _ in 0..3 {
        host.advance_ms(1_000);
        root.on_tick(&host);
        assert_eq!(
            warnings(&host),
            Vec::<String>::new(),
            "refused again: no news"
        );
    }
    // Probes go out again and are answered: the next refusal is news again.
    host.accept_http_calls();
    host.advance_ms(1_000);
    root.on_tick(&host);
    let calls = host.take_http_calls();
    assert_eq!(calls.len(), 2);
    host.set_http_call_status(Some("200"));
    for call in &calls {
        root.on_http_call_response(&host, call.token);
    }
    host.refuse_http_calls();
    host.advance_ms(1_000);
    root.on_tick(&host);
    assert_eq!(warnings(&host).len(), 2, "{:?}", host.take_logs());
}

#[test]
fn an_answer_to_an_unknown_token_is_ignored() {
    let (host, root) = probed();
    host.set_http_call_status(Some("503"));
    root.on_http_call_response(&host, 77);
    host.advance_ms(1_000);
    root.on_tick(&host);
    assert!(host.take_logs().is_empty());
}

fn with_status_page() -> (FakeHost, EisodosRoot) {
    configured(&format!(
        r#"{{"status_path": "/.eisodos/status", "status_allowed_cidrs": ["127.0.0.0/8"], {THREE}}}"#
    ))
}

#[test]
fn the_status_page_answers_allowed_clients() {
    let (host, root) = with_status_page();
    host.set_property(&["source", "address"], b"127.0.0.1:40000");
    let (action, _) = request(&host, &root, &[(":path", "/.eisodos/status?pretty")]);
    assert_eq!(action, abi::PAUSE);
    let replies = host.replies();
    assert_eq!(replies.len(), 1);
    let reply = &replies[0];
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let page: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(page["policy"], "round_robin");
    assert_eq!(page["now_ms"], START_MS);
    assert_eq!(reply.details, "eisodos_status_page");
    assert_eq!(host.filter_state(REASON_KEY), None, "no balancing decision");
    assert_eq!(routed_to(&host), None, "answered, not routed");
}

#[test]
fn the_status_page_is_routed_like_any_request_for_other_clients() {
    let (host, root) = with_status_page();
    for source in [Some(&b"10.1.2.3:40000"[..]), Some(b"not an address"), None] {
        if let Some(source) = source {
            host.set_property(&["source", "address"], source);
        }
        let (action, _) = request(&host, &root, &[(":path", "/.eisodos/status")]);
        assert_eq!(action, abi::CONTINUE);
        assert!(routed_to(&host).is_some());
    }
    assert!(host.replies().is_empty());
}

#[test]
fn a_request_without_its_key_is_answered_400() {
    let (host, root) = configured(&format!(
        r#"{{"policy": "consistent_hash", "hash_key": [{{"header": "x-user-id"}}],
            "on_missing_key": "reject", {THREE}}}"#
    ));
    let (action, _) = request(&host, &root, &[(":path", "/")]);
    assert_eq!(action, abi::PAUSE);
    let replies = host.replies();
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].status, 400);
    assert_eq!(replies[0].header("content-type"), Some("text/plain"));
    assert_eq!(replies[0].header("x-eisodos-reason"), Some("missing_key"));
    assert!(replies[0].body.contains("x-user-id"), "{:?}", replies[0]);
    assert_eq!(replies[0].header("retry-after"), None);
    assert_eq!(replies[0].details, "eisodos_missing_key");
    assert_eq!(
        host.filter_state(REASON_KEY).as_deref(),
        Some("missing_key")
    );
    assert_eq!(routed_to(&host), None);

    let (action, _) = request(&host, &root, &[(":path", "/"), ("x-user-id", "42")]);
    assert_eq!(action, abi::CONTINUE);
    let first = routed_to(&host);
    assert!(first.is_some());
    request(&host, &root, &[(":path", "/other"), ("x-user-id", "42")]);
    assert_eq!(routed_to(&host), first, "the same key, the same backend");
}

#[test]
fn nothing_healthy_is_answered_503_with_retry_after() {
    let (host, root) = configured(&format!(
        r#"{{"health_check": {{"path": "/healthz", "interval_ms": 2000, "initial_state": "unhealthy"}},
            {THREE}}}"#
    ));
    let (action, _) = request(&host, &root, &[(":path", "/")]);
    assert_eq!(action, abi::PAUSE);
    let replies = host.replies();
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].status, 503);
    assert_eq!(replies[0].body, ALL_DOWN_BODY);
    assert_eq!(
        replies[0].header("retry-after"),
        Some("2"),
        "one probe interval"
    );
    assert_eq!(replies[0].details, "eisodos_no_healthy_backend");
    assert_eq!(replies[0].header("content-type"), Some("text/plain"));
    assert_eq!(
        replies[0].header("x-eisodos-reason"),
        Some("no_healthy_backend")
    );
    assert_eq!(
        host.filter_state(REASON_KEY).as_deref(),
        Some("no_healthy_backend")
    );
    assert_eq!(routed_to(&host), None);
}

/// Probes `backend_a` down under [`probed`]'s configuration, serves another backend list for
/// `away_ms`, then configures the first list again and ticks twice (the prober restarts a
/// stale record on the first tick, every worker follows it on the next); the log of those
/// ticks and whether `backend_a` is healthy afterwards.
fn back_to_a_list_after(away_ms: u64) -> (Vec<(LogLevel, String)>, Value) {
    let (host, root) = probed();
    let first = r#"{"health_check": {"path": "/healthz", "interval_ms": 1000, "timeout_ms": 250,
              "healthy_threshold": 1, "unhealthy_threshold": 1, "interval_jitter_percent": 0},
            "backends": [{"cluster": "backend_a"}, {"cluster": "backend_b"}]}"#;
    root.on_tick(&host);
    for call in host.take_http_calls() {
        let status = if call.cluster == "backend_a" {
            "503"
        } else {
            "200"
        };
        host.set_http_call_status(Some(status));
        root.on_http_call_response(&host, call.token);
    }
    host.advance_ms(1_000);
    root.on_tick(&host);
    assert_eq!(status_page(&host, &root)["backends"][0]["healthy"], false);

    let other = format!(r#"{{"health_check": {{"path": "/healthz"}}, {THREE}}}"#);
    host.set_configuration(&other);
    assert!(root.on_configure(&host, other.len()));
    host.advance_ms(away_ms);
    host.set_configuration(first);
    assert!(root.on_configure(&host, first.len()));
    host.take_logs();
    root.on_tick(&host);
    host.advance_ms(100);
    root.on_tick(&host);
    let logs = host.take_logs();
    (logs, status_page(&host, &root)["backends"][0].clone())
}

/// A backend list configured again after two minutes restarts its health record (logged at
/// info) instead of trusting the down mark its prober left; one configured again within five
/// probe rounds keeps it. Only the tick reads the record: no host call on the request path.
#[test]
fn a_list_configured_again_after_minutes_restarts_its_health_record() {
    let (logs, a) = back_to_a_list_after(120_000);
    let restarted: Vec<_> = logs
        .iter()
        .filter(|(_, line)| {
            line.starts_with("health record restarted: its latest probe answer was")
        })
        .collect();
    assert_eq!(restarted.len(), 1, "{logs:?}");
    assert_eq!(restarted[0].0, LogLevel::Info);
    assert_eq!(a["healthy"], true, "{a}");

    let (logs, a) = back_to_a_list_after(1_000);
    assert!(
        logs.iter()
            .all(|(_, line)| !line.starts_with("health record restarted")),
        "{logs:?}"
    );
    assert_eq!(a["healthy"], false, "{a}");
}
