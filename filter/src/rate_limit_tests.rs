//! Rate limiting's wiring, against [`FakeHost`]: the host calls a request makes with the
//! feature on (and none more with it off), the 429 and its headers, the count by reason, and
//! the shared-data key set fixed at configure time whatever the keys clients send.

use eisodos_core::balancer::RATE_LIMITED_BODY;

use crate::abi;
use crate::fake_host::FakeHost;
use crate::http::REASON_KEY;
use crate::wiring_tests::{configured, request, routed_to, THREE};

fn local_replies(host: &FakeHost, reason: &str) -> Option<u64> {
    let name =
        eisodos_core::metrics::stat_name("eisodos", &[("reason", reason)], "local_replies_total");
    host.metric(&name).flatten()
}

#[test]
fn off_a_request_makes_no_call_for_it() {
    let (host, root) = configured(&format!(r#"{{"policy": "random", {THREE}}}"#));
    request(&host, &root, &[(":path", "/"), ("x-user", "u")]);
    assert_eq!(
        host.take_calls(),
        ["set_request_header", "set_property"],
        "no clock, no shared data, no header read"
    );
    assert_eq!(host.shared_data_footprint().0, 0);
}

#[test]
fn on_without_a_key_a_request_reads_the_clock_and_its_bucket() {
    let (host, root) = configured(&format!(
        r#"{{"policy": "random", "rate_limit": {{"requests_per_second": 100}}, {THREE}}}"#
    ));
    assert_eq!(host.shared_data_footprint().0, 1, "one bucket");
    request(&host, &root, &[(":path", "/")]);
    assert_eq!(
        host.take_calls(),
        [
            "current_time",
            "get_shared_data",
            "set_shared_data",
            "set_request_header",
            "set_property"
        ]
    );
}

#[test]
fn on_with_a_key_the_request_reads_its_key_source_too() {
    let (host, root) = configured(&format!(
        r#"{{"policy": "random", "rate_limit": {{"requests_per_second": 100,
             "key": [{{"header": "x-user"}}], "buckets": 8}}, {THREE}}}"#
    ));
    assert_eq!(
        host.shared_data_footprint().0,
        9,
        "8 buckets and the keyless one"
    );
    request(&host, &root, &[(":path", "/"), ("x-user", "u")]);
    assert_eq!(
        host.take_calls(),
        [
            "request_header",
            "current_time",
            "get_shared_data",
            "set_shared_data",
            "set_request_header",
            "set_property"
        ]
    );
}

#[test]
fn with_a_batch_most_requests_touch_no_shared_data() {
    let (host, root) = configured(&format!(
        r#"{{"policy": "random", "rate_limit": {{"requests_per_second": 100, "batch": 16}}, {THREE}}}"#
    ));
    for _ in 0..32 {
        request(&host, &root, &[(":path", "/")]);
    }
    let calls = host.take_calls();
    let count = |name| calls.iter().filter(|c| **c == name).count();
    assert_eq!(
        (
            count("get_shared_data"),
            count("set_shared_data"),
            count("current_time")
        ),
        (2, 2, 2),
        "two batches of 16"
    );
}

#[test]
fn over_the_limit_a_429_with_every_header_counted_by_reason() {
    let (host, root) = configured(&format!(
        r#"{{"rate_limit": {{"requests_per_second": 0.5, "burst": 2}}, {THREE}}}"#
    ));
    for _ in 0..2 {
        let (action, _) = request(&host, &root, &[(":path", "/")]);
        assert_eq!(action, abi::CONTINUE);
    }
    host.take_calls();
    let (action, stream) = request(&host, &root, &[(":path", "/")]);
    assert_eq!(action, abi::PAUSE);
    assert_eq!(routed_to(&host), None);
    assert_eq!(
        host.take_calls(),
        [
            "current_time",
            "get_shared_data",
            "set_property",
            "send_response"
        ],
        "a refusal writes no shared data"
    );
    let replies = host.replies();
    let reply = replies.last().unwrap();
    assert_eq!(reply.status, 429);
    assert_eq!(reply.body, RATE_LIMITED_BODY);
    assert_eq!(reply.body.matches('\n').count(), 1, "one line");
    assert_eq!(reply.details, "eisodos_rate_limited");
    assert_eq!(reply.header("content-type"), Some("text/plain"));
    assert_eq!(reply.header("x-eisodos-reason"), Some("rate_limited"));
    assert_eq!(reply.header("retry-after"), Some("2"), "a token every 2 s");
    assert_eq!(reply.header("x-ratelimit-limit"), Some("2"));
    assert_eq!(reply.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(
        host.filter_state(REASON_KEY).as_deref(),
        Some("rate_limited")
    );
    // The stream's end holds nothing to give back.
    stream.on_log(&host);
    assert!(host.take_calls().is_empty());
    crate::metrics_tests::until_flushed(&host, &root);
    assert_eq!(local_replies(&host, "rate_limited"), Some(1));
    // Two seconds later a token is back.
    host.advance_ms(2000);
    let (action, _) = request(&host, &root, &[(":path", "/")]);
    assert_eq!(action, abi::CONTINUE);
}

/// Other local replies carry no rate-limit headers.
#[test]
fn other_replies_have_no_rate_limit_headers() {
    let (host, root) = configured(&format!(
        r#"{{"policy": "consistent_hash", "hash_key": [{{"header": "x-user"}}],
            "on_missing_key": "reject", "rate_limit": {{"requests_per_second": 10}}, {THREE}}}"#
    ));
    request(&host, &root, &[(":path", "/")]);
    let reply = host.replies().pop().unwrap();
    assert_eq!(reply.status, 400);
    assert_eq!(reply.header("x-ratelimit-limit"), None);
    assert_eq!(reply.header("retry-after"), None);
}

/// A million distinct keys leave shared data as configure time made it: the same keys, the
/// same bytes (values are overwritten in place, never added), checked after every 100,000.
/// (Against real Envoy, where a request costs ~1 ms on a busy machine, `tests/tests/rate_limit.rs`
/// sends 100,000 and checks Envoy's memory.)
#[test]
fn a_flood_of_a_million_distinct_keys_leaves_the_key_set_and_its_size_unchanged() {
    let (host, root) = configured(&format!(
        r#"{{"policy": "random", "rate_limit": {{"requests_per_second": 1000000,
             "key": [{{"header": "x-user"}}]}}, {THREE}}}"#
    ));
    let before = host.shared_data_footprint();
    assert_eq!(
        before.0, 4097,
        "4096 buckets by default, and the keyless one"
    );
    let mut admitted = 0;
    for i in 0..1_000_000 {
        let user = format!("client-{i}");
        let (action, _) = request(&host, &root, &[(":path", "/"), ("x-user", &user)]);
        if action == abi::CONTINUE {
            admitted += 1;
        }
        if i % 1000 == 0 {
            host.advance_ms(1);
            // The fake records every call: let them go as the flood goes.
            host.take_calls();
            host.take_headers_read();
        }
        if i % 100_000 == 99_999 {
            assert_eq!(host.shared_data_footprint(), before, "after {}", i + 1);
        }
    }
    host.take_calls();
    assert_eq!(admitted, 1_000_000);
    assert_eq!(host.shared_data_footprint(), before);
}
