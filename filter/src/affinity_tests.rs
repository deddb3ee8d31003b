//! `session_affinity`'s wiring, against [`FakeHost`]: which host calls a request and its
//! response make with the feature off (the response callback makes none) and on, with and
//! without a cookie.

use eisodos_core::balancer::{affinity_token, affinity_token_text};

use crate::fake_host::FakeHost;
use crate::wiring_tests::{configured, request, routed_to, ROUND_ROBIN_CALLS, THREE};

const STICKY: &str = r#""session_affinity": {"cookie": "eisodos_backend", "ttl_s": 3600, "attributes": "Path=/; HttpOnly; SameSite=Lax"}"#;

fn cookie_for(cluster: &str) -> String {
    format!(
        "eisodos_backend={}",
        affinity_token_text(affinity_token("eisodos", cluster))
    )
}

#[test]
fn off_the_request_makes_the_calls_it_always_made_and_the_response_none() {
    let (host, root) = configured(&format!(r#"{{"policy": "round_robin", {THREE}}}"#));
    let (_, mut stream) = request(
        &host,
        &root,
        &[(":path", "/"), ("cookie", &cookie_for("backend_c"))],
    );
    assert_eq!(
        host.take_calls(),
        ROUND_ROBIN_CALLS,
        "the cookie is not read"
    );
    assert_eq!(
        routed_to(&host).as_deref(),
        Some("backend_a"),
        "the policy's turn"
    );
    assert!(!stream.cookie_pending());
    stream.on_response_headers(&host);
    assert_eq!(host.take_calls(), Vec::<&str>::new());
    assert!(host.take_response_headers().is_empty());
}

#[test]
fn on_without_a_cookie_the_response_sets_one_once() {
    let (host, root) = configured(&format!(
        r#"{{"policy": "round_robin", {STICKY}, {THREE}}}"#
    ));
    let (_, mut stream) = request(&host, &root, &[(":path", "/")]);
    assert_eq!(
        host.take_calls(),
        [
            "request_header",
            "get_shared_data",
            "set_shared_data",
            "set_request_header",
            "set_property"
        ],
        "one read of the cookie header more"
    );
    assert_eq!(routed_to(&host).as_deref(), Some("backend_a"));
    assert!(stream.cookie_pending());
    stream.on_response_headers(&host);
    assert_eq!(host.take_calls(), ["add_response_header"]);
    let expected = format!(
        "{}; Max-Age=3600; Path=/; HttpOnly; SameSite=Lax",
        cookie_for("backend_a")
    );
    assert_eq!(
        host.take_response_headers(),
        [("set-cookie".to_owned(), expected)]
    );
    assert!(!stream.cookie_pending());
    stream.on_response_headers(&host);
    assert_eq!(host.take_calls(), Vec::<&str>::new(), "once per stream");
}

#[test]
fn on_with_a_valid_cookie_the_request_is_pinned_and_no_cookie_is_set() {
    let (host, root) = configured(&format!(
        r#"{{"policy": "round_robin", {STICKY}, {THREE}}}"#
    ));
    for _ in 0..3 {
        let (_, mut stream) = request(
            &host,
            &root,
            &[
                (":path", "/"),
                ("cookie", &format!("a=1; {}", cookie_for("backend_c"))),
            ],
        );
        assert_eq!(
            host.take_calls(),
            ["request_header", "set_request_header", "set_property"],
            "pinned: no ticket taken"
        );
        assert_eq!(routed_to(&host).as_deref(), Some("backend_c"));
        assert_eq!(
            host.filter_state(crate::http::REASON_KEY).as_deref(),
            Some("affinity")
        );
        stream.on_response_headers(&host);
        assert_eq!(host.take_calls(), Vec::<&str>::new());
    }
}

#[test]
fn on_with_a_tampered_cookie_the_policy_routes_and_the_cookie_is_reissued() {
    let (host, root) = configured(&format!(
        r#"{{"policy": "round_robin", {STICKY}, {THREE}}}"#
    ));
    let mut tampered = cookie_for("backend_c");
    tampered.pop();
    tampered.push('g');
    let (_, mut stream) = request(&host, &root, &[(":path", "/"), ("cookie", &tampered)]);
    assert_eq!(routed_to(&host).as_deref(), Some("backend_a"));
    host.take_calls();
    stream.on_response_headers(&host);
    let added = host.take_response_headers();
    assert_eq!(added.len(), 1);
    assert!(
        added[0].1.starts_with(&cookie_for("backend_a")),
        "{added:?}"
    );
}

#[test]
fn a_local_reply_sets_no_cookie() {
    let (host, root) = configured(&format!(
        r#"{{"policy": "consistent_hash", "hash_key": [{{"header": "x-user-id"}}],
            "on_missing_key": "reject", {STICKY}, {THREE}}}"#
    ));
    let (_, mut stream) = request(&host, &root, &[(":path", "/")]);
    assert_eq!(host.replies().len(), 1);
    assert!(!stream.cookie_pending());
    host.take_calls();
    stream.on_response_headers(&host);
    assert_eq!(host.take_calls(), Vec::<&str>::new());
    // A cookie still pins a request without a hash key, whatever the policy.
    let (_, _) = request(
        &host,
        &root,
        &[(":path", "/"), ("cookie", &cookie_for("backend_b"))],
    );
    assert_eq!(routed_to(&host).as_deref(), Some("backend_b"));
    assert_eq!(host.replies().len(), 1, "no second reply");
}

#[test]
fn a_stream_without_a_balancer_sets_nothing() {
    let host = FakeHost::new();
    let mut stream = crate::http::EisodosHttp::new(None);
    stream.on_response_headers(&host);
    assert_eq!(host.take_calls(), Vec::<&str>::new());
}

#[test]
fn without_health_the_configuration_warns_that_a_pin_outlives_its_backend() {
    use crate::abi::LogLevel;
    use crate::root::EisodosRoot;
    let warned = |json: &str| {
        let host = FakeHost::new();
        host.set_configuration(json);
        assert!(EisodosRoot::default().on_configure(&host, json.len()));
        host.take_logs()
            .iter()
            .any(|(level, line)| *level == LogLevel::Warn && line.contains("stays pinned"))
    };
    assert!(warned(&format!("{{{STICKY}, {THREE}}}")));
    assert!(!warned(&format!(
        r#"{{{STICKY}, "outlier_detection": {{}}, {THREE}}}"#
    )));
    assert!(!warned(&format!(
        r#"{{{STICKY}, "health_check": {{"path": "/h"}}, {THREE}}}"#
    )));
    assert!(!warned(&format!("{{{THREE}}}")));
}
