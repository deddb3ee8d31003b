//! Traffic splitting's wiring, against [`FakeHost`]: the host calls a request makes with
//! `subsets` configured (the headers its rules need, each once) and without (exactly those of
//! a request before traffic splitting existed).

use crate::fake_host::FakeHost;
use crate::http::REASON_KEY;
use crate::wiring_tests::{configured, request, routed_to, ROUND_ROBIN_CALLS};

const BACKENDS: &str =
    r#""backends": [{"cluster": "v1_a"}, {"cluster": "v1_b"}, {"cluster": "v2"}]"#;

/// The issue's configuration, with `extra` fields.
fn split(extra: &str) -> String {
    format!(
        r#"{{"subsets": {{"stable": ["v1_a", "v1_b"], "canary": ["v2"]}}, "default_subset": "stable",
            "rules": [{{"match": {{"header": {{"name": "x-beta", "exact": "yes"}}}}, "subset": "canary"}},
                      {{"percent": 5, "subset": "canary"}}]{extra}, {BACKENDS}}}"#
    )
}

/// The host calls and header reads of one request.
fn calls_of(
    host: &FakeHost,
    root: &crate::root::EisodosRoot,
    headers: &[(&str, &str)],
) -> (Vec<&'static str>, Vec<String>) {
    host.take_calls();
    host.take_headers_read();
    request(host, root, headers);
    (host.take_calls(), host.take_headers_read())
}

#[test]
fn without_subsets_a_request_makes_the_calls_it_always_made() {
    let (host, root) = configured(&format!(r#"{{{BACKENDS}}}"#));
    let (calls, read) = calls_of(&host, &root, &[(":path", "/"), ("x-beta", "yes")]);
    assert_eq!(calls, ROUND_ROBIN_CALLS);
    assert!(read.is_empty(), "{read:?}");
    let (host, root) = configured(&format!(
        r#"{{"policy": "consistent_hash", "hash_key": [{{"header": "x-user"}}], {BACKENDS}}}"#
    ));
    let (calls, read) = calls_of(&host, &root, &[("x-user", "7"), ("x-beta", "yes")]);
    assert_eq!(
        calls,
        ["request_header", "set_request_header", "set_property"]
    );
    assert_eq!(read, ["x-user"]);
}

#[test]
fn a_header_rule_reads_its_header_once_and_sends_the_request_to_the_canary() {
    let (host, root) = configured(&split(""));
    for _ in 0..10 {
        let (calls, read) = calls_of(&host, &root, &[(":path", "/"), ("x-beta", "yes")]);
        assert_eq!(routed_to(&host).as_deref(), Some("v2"));
        assert_eq!(host.filter_state(REASON_KEY).as_deref(), Some("ticket"));
        let mut expected = vec!["request_header"];
        expected.extend(ROUND_ROBIN_CALLS);
        assert_eq!(calls, expected);
        assert_eq!(read, ["x-beta"], "only the header the rules need");
    }
}

#[test]
fn a_percent_rule_reads_the_split_key_and_nothing_without_one() {
    // No split_key: the percent rule draws from the worker's random source, no host call.
    let (host, root) = configured(&split(""));
    let (_, read) = calls_of(&host, &root, &[(":path", "/"), ("x-user", "u1")]);
    assert_eq!(read, ["x-beta"]);
    // With a split_key, its header once, after the rule before it.
    let (host, root) = configured(&split(r#", "split_key": [{"header": "x-user"}]"#));
    let mut subsets = Vec::new();
    for _ in 0..3 {
        let (_, read) = calls_of(&host, &root, &[(":path", "/"), ("x-user", "u1")]);
        assert_eq!(read, ["x-beta", "x-user"]);
        subsets.push(routed_to(&host).is_some_and(|cluster| cluster == "v2"));
    }
    assert!(
        subsets.iter().all(|&canary| canary == subsets[0]),
        "one key, one subset"
    );
}
