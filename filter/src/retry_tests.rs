//! The wiring of `retry` and `timeout_ms`, against [`FakeHost`]: a routed request carries the
//! configured router headers and none of the client's; a local reply and a configuration
//! without them make no header call more.

use eisodos_core::balancer::ROUTER_HEADERS;

use crate::fake_host::FakeHost;
use crate::root::EisodosRoot;
use crate::wiring_tests::{configured, request, routed_to, THREE};

/// Every router header, as a client trying to raise its own limits would send them.
fn forged() -> Vec<(&'static str, &'static str)> {
    let mut headers = vec![(":path", "/")];
    headers.extend(ROUTER_HEADERS.iter().map(|name| (*name, "10")));
    headers
}

fn router_headers_now(host: &FakeHost) -> Vec<(String, String)> {
    host.request_headers()
        .into_iter()
        .filter(|(name, _)| name.starts_with("x-envoy-"))
        .collect()
}

fn with(fields: &str) -> (FakeHost, EisodosRoot) {
    configured(&format!(r#"{{"filter_state": false, {fields}, {THREE}}}"#))
}

#[test]
fn the_configured_values_replace_the_clients_and_the_rest_is_removed() {
    let (host, root) = with(
        r#""retry": {"retry_on": "5xx,connect-failure", "num_retries": 2,
            "per_try_timeout_ms": 1000}, "timeout_ms": 5000"#,
    );
    request(&host, &root, &forged());
    assert!(routed_to(&host).is_some());
    let mut now = router_headers_now(&host);
    now.sort();
    let expected: Vec<(String, String)> = [
        ("x-envoy-max-retries", "2"),
        ("x-envoy-retry-on", "5xx,connect-failure"),
        ("x-envoy-upstream-rq-per-try-timeout-ms", "1000"),
        ("x-envoy-upstream-rq-timeout-ms", "5000"),
    ]
    .iter()
    .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
    .collect();
    assert_eq!(now, expected);
    assert_eq!(
        host.headers_removed().len(),
        ROUTER_HEADERS.len() - 4,
        "the six eisodos does not set"
    );
    let calls = host.take_calls();
    assert_eq!(
        calls,
        [
            "get_shared_data",
            "set_shared_data",
            "set_request_header",
            "set_request_header",
            "set_request_header",
            "set_request_header",
            "set_request_header",
            "remove_request_header",
            "remove_request_header",
            "remove_request_header",
            "remove_request_header",
            "remove_request_header",
            "remove_request_header",
        ],
        "the ticket, the cluster header, then ten header calls that only pass data in"
    );
}

#[test]
fn a_timeout_alone_removes_the_clients_retry_headers() {
    let (host, root) = with(r#""timeout_ms": 300"#);
    request(&host, &root, &forged());
    assert_eq!(
        router_headers_now(&host),
        [(
            "x-envoy-upstream-rq-timeout-ms".to_owned(),
            "300".to_owned()
        )]
    );
}

#[test]
fn without_them_a_request_makes_no_call_more_and_keeps_what_it_sent() {
    let (host, root) = with(r#""policy": "random""#);
    request(&host, &root, &forged());
    assert_eq!(host.take_calls(), ["set_request_header"]);
    assert_eq!(router_headers_now(&host).len(), ROUTER_HEADERS.len());
}

#[test]
fn a_local_reply_gets_no_router_headers() {
    let (host, root) =
        with(r#""retry": {"retry_on": "5xx"}, "deny": [{"path": "/"}], "policy": "random""#);
    request(&host, &root, &forged());
    assert_eq!(host.replies().len(), 1);
    assert_eq!(host.take_calls(), ["request_header", "send_response"]);
}

#[test]
fn a_retry_cluster_goes_into_the_cluster_header() {
    let (host, root) = configured(
        r#"{"retry": {"retry_on": "5xx"}, "backends": [
            {"cluster": "backend_a", "retry_cluster": "retry_a"}, {"cluster": "backend_b"}]}"#,
    );
    let mut routed = Vec::new();
    for _ in 0..2 {
        request(&host, &root, &[(":path", "/")]);
        routed.push(routed_to(&host).unwrap());
    }
    routed.sort();
    assert_eq!(routed, ["backend_b", "retry_a"]);
}
