//! The wiring of `deny`, against [`FakeHost`]: a denied request is answered before the status
//! page and without a shared-data call, reads each header once, and is counted; without rules a
//! request makes no call more than before.

use eisodos_core::balancer::{DENIED_BODY, TOO_LARGE_BODY};

use crate::abi;
use crate::fake_host::FakeHost;
use crate::http::REASON_KEY;
use crate::root::EisodosRoot;
use crate::wiring_tests::{configured, request, routed_to, ROUND_ROBIN_CALLS, THREE};

const RULES: &str = r#""deny": [
    {"method": ["TRACE", "CONNECT"]},
    {"path_prefix": "/admin", "header": {"name": "x-debug", "present": true}},
    {"header": [{"name": "x-debug", "exact": "all"}, {"name": "user-agent", "prefix": "curl"}]},
    {"max_header_bytes": 200}
]"#;

fn with_rules(extra: &str) -> (FakeHost, EisodosRoot) {
    configured(&format!("{{{RULES}, {extra}{THREE}}}"))
}

#[test]
fn a_denied_request_is_answered_403_without_touching_shared_data() {
    let (host, root) = with_rules("");
    let (action, _) = request(&host, &root, &[(":method", "TRACE"), (":path", "/")]);
    assert_eq!(action, abi::PAUSE);
    let replies = host.replies();
    assert_eq!(replies.len(), 1);
    let reply = &replies[0];
    assert_eq!(reply.status, 403);
    assert_eq!(reply.body, DENIED_BODY);
    assert_eq!(reply.header("content-type"), Some("text/plain"));
    assert_eq!(reply.header("x-eisodos-reason"), Some("denied"));
    assert_eq!(reply.header("retry-after"), None);
    assert_eq!(reply.details, "eisodos_denied");
    assert_eq!(host.filter_state(REASON_KEY).as_deref(), Some("denied"));
    assert_eq!(routed_to(&host), None);
    assert_eq!(
        host.take_calls(),
        ["request_header", "set_property", "send_response"],
        "the method, the reason, the reply: no shared data"
    );
}

#[test]
fn each_header_is_read_once_whatever_the_rules_that_test_it() {
    let (host, root) = with_rules("");
    let (action, _) = request(
        &host,
        &root,
        &[
            (":method", "GET"),
            (":path", "/admin/x"),
            ("x-debug", "all"),
            ("user-agent", "curl/8.5"),
        ],
    );
    assert_eq!(action, abi::PAUSE);
    assert_eq!(host.replies()[0].status, 403);
    // :method (rule 0), :path and x-debug (rule 1, whose x-debug is present), then rule 1
    // holds: the request is denied there. x-debug is not read again for rule 2.
    assert_eq!(
        host.take_calls(),
        [
            "request_header",
            "request_header",
            "request_header",
            "set_property",
            "send_response"
        ]
    );
    let (_, _) = request(
        &host,
        &root,
        &[
            (":method", "GET"),
            (":path", "/public"),
            ("x-debug", "all"),
            ("user-agent", "curl/8.5"),
        ],
    );
    assert_eq!(host.replies().len(), 2, "rule 2");
    let calls = host.take_calls();
    let reads = calls.iter().filter(|c| **c == "request_header").count();
    assert_eq!(
        reads, 4,
        "method, path, x-debug, user-agent, once each: {calls:?}"
    );
}

#[test]
fn a_request_no_rule_matches_is_routed_and_the_map_is_read_once() {
    let (host, root) = with_rules("");
    let (action, _) = request(&host, &root, &[(":method", "GET"), (":path", "/")]);
    assert_eq!(action, abi::CONTINUE);
    assert!(routed_to(&host).is_some());
    assert!(host.replies().is_empty());
    assert_eq!(
        host.take_calls(),
        [
            "request_header",
            "request_header",
            "request_header",
            "request_header_pairs",
            "get_shared_data",
            "set_shared_data",
            "set_request_header",
            "set_property"
        ],
        "method, path, x-debug (absent: rule 2 stops there), the map for the size rule, \
         then routing as before"
    );
}

#[test]
fn a_size_rule_answers_431() {
    let (host, root) = with_rules("");
    let big = "x".repeat(200);
    request(
        &host,
        &root,
        &[(":method", "GET"), (":path", "/"), ("cookie", &big)],
    );
    let replies = host.replies();
    assert_eq!(replies[0].status, 431);
    assert_eq!(replies[0].body, TOO_LARGE_BODY);
    assert_eq!(replies[0].header("x-eisodos-reason"), Some("denied"));
}

#[test]
fn deny_runs_before_the_status_page() {
    let (host, root) = configured(&format!(
        r#"{{"deny": [{{"path": "/.eisodos/status", "header": {{"name": "x-forwarded-for", "present": true}}}}],
            "status_path": "/.eisodos/status", {THREE}}}"#
    ));
    host.set_property(&["source", "address"], b"127.0.0.1:40000");
    request(
        &host,
        &root,
        &[
            (":path", "/.eisodos/status"),
            ("x-forwarded-for", "1.2.3.4"),
        ],
    );
    let replies = host.replies();
    assert_eq!(replies.len(), 1);
    assert_eq!(
        replies[0].status, 403,
        "denied, though the client may see the page"
    );
    request(&host, &root, &[(":path", "/.eisodos/status")]);
    let replies = host.replies();
    assert_eq!(
        replies[1].status, 200,
        "the page for a request no rule matches"
    );
}

#[test]
fn without_rules_a_request_makes_no_call_more() {
    let (host, root) = configured(&format!("{{{THREE}}}"));
    request(&host, &root, &[(":method", "TRACE"), (":path", "/")]);
    assert!(routed_to(&host).is_some());
    assert_eq!(host.take_calls(), ROUND_ROBIN_CALLS);
}

#[test]
fn denied_requests_are_counted() {
    let (host, root) = with_rules("");
    for _ in 0..3 {
        request(&host, &root, &[(":method", "CONNECT"), (":path", "/")]);
    }
    root.on_tick(&host);
    let name =
        eisodos_core::metrics::stat_name("eisodos", &[("reason", "denied")], "local_replies_total");
    assert_eq!(host.metric(&name), Some(Some(3)));
}
