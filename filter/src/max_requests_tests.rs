//! `backends[].max_requests` wired through the callbacks, against [`FakeHost`]: what a capped
//! request costs in host calls, the `circuit_open` reply, the release at every stream's end,
//! and nothing more than before without caps.

use eisodos_core::balancer::CIRCUIT_OPEN_BODY;

use crate::abi;
use crate::fake_host::FakeHost;
use crate::http::REASON_KEY;
use crate::metrics_tests::until_flushed;
use crate::root::EisodosRoot;
use crate::wiring_tests::{configured, request, routed_to, ROUND_ROBIN_CALLS};

/// Every policy, with the fields it needs.
const POLICIES: [&str; 5] = [
    r#""policy": "round_robin""#,
    r#""policy": "random""#,
    r#""policy": "least_request""#,
    r#""policy": "consistent_hash", "hash_key": [{"header": "x-user-id"}]"#,
    r#""policy": "ip_hash""#,
];

/// `policy` over three backends of one slot each.
fn one_slot_each(policy: &str) -> (FakeHost, EisodosRoot) {
    configured(&format!(
        r#"{{{policy}, "backends": [{{"cluster": "backend_a", "max_requests": 1}},
            {{"cluster": "backend_b", "max_requests": 1}}, {{"cluster": "backend_c", "max_requests": 1}}]}}"#
    ))
}

const HEADERS: &[(&str, &str)] = &[(":path", "/"), ("x-user-id", "42")];

#[test]
fn every_policy_refuses_with_circuit_open_once_every_backend_is_full() {
    for policy in POLICIES {
        let (host, root) = one_slot_each(policy);
        host.set_property(&["source", "address"], b"10.1.2.3:4000");
        let mut routed = Vec::new();
        let mut held = Vec::new();
        for _ in 0..3 {
            let (action, stream) = request(&host, &root, HEADERS);
            assert_eq!(action, abi::CONTINUE, "{policy}");
            routed.push(routed_to(&host).unwrap());
            held.push(stream);
        }
        routed.sort();
        assert_eq!(routed, ["backend_a", "backend_b", "backend_c"], "{policy}");
        let (action, _) = request(&host, &root, HEADERS);
        assert_eq!(action, abi::PAUSE, "{policy}");
        let replies = host.replies();
        assert_eq!(replies.len(), 1, "{policy}");
        let reply = &replies[0];
        assert_eq!(reply.status, 503);
        assert_eq!(reply.body, CIRCUIT_OPEN_BODY);
        assert_eq!(reply.header("content-type"), Some("text/plain"));
        assert_eq!(reply.header("x-eisodos-reason"), Some("circuit_open"));
        assert_eq!(reply.header("retry-after"), Some("1"));
        assert_eq!(reply.details, "eisodos_circuit_open");
        assert_eq!(
            host.filter_state(REASON_KEY).as_deref(),
            Some("circuit_open")
        );
        assert_eq!(routed_to(&host), None, "not routed");
        until_flushed(&host, &root);
        assert_eq!(
            host.metric("eisodos.plugin=.=eisodos;.;reason=.=circuit_open;.;local_replies_total"),
            Some(Some(1)),
            "{policy}"
        );
    }
}

/// The stream's end gives the count back, for every policy: a full set of backends takes
/// requests again once they end, and the gauge (defined for every policy with caps) follows.
#[test]
fn every_policy_releases_at_the_stream_end() {
    for policy in POLICIES {
        let (host, root) = one_slot_each(policy);
        let balancer = root.balancer().unwrap();
        assert!(balancer.counts_in_flight(), "{policy}");
        assert!(
            host.metric("eisodos.plugin=.=eisodos;.;backend=.=backend_a;.;in_flight")
                .is_some(),
            "{policy}: the gauge is defined"
        );
        let streams: Vec<_> = (0..3).map(|_| request(&host, &root, HEADERS).1).collect();
        assert_eq!(balancer.in_flight(&host), [1, 1, 1], "{policy}");
        // Ended streams are seen at once by this worker's next pick.
        streams[1].on_log(&host);
        let (action, held) = request(&host, &root, HEADERS);
        assert_eq!(action, abi::CONTINUE, "{policy}");
        for stream in [&streams[0], &streams[2], &held] {
            stream.on_log(&host);
        }
        // A refused request holds nothing: its end gives nothing back.
        host.advance_ms(20);
        root.on_tick(&host);
        assert_eq!(balancer.in_flight(&host), [0, 0, 0], "{policy}");
        until_flushed(&host, &root);
        assert_eq!(
            host.metric("eisodos.plugin=.=eisodos;.;backend=.=backend_b;.;in_flight"),
            Some(Some(0)),
            "{policy}"
        );
    }
}

/// With a cap, a round-robin request reads and writes the in-flight record besides its ticket;
/// its end makes no host call (the release rides on the next write).
#[test]
fn a_capped_round_robin_request_adds_one_get_and_one_set() {
    let (host, root) = configured(
        r#"{"policy": "round_robin", "backends": [{"cluster": "backend_a", "max_requests": 100},
            {"cluster": "backend_b"}]}"#,
    );
    let (_, stream) = request(&host, &root, &[(":path", "/")]);
    assert_eq!(
        host.take_calls(),
        [
            "get_shared_data",
            "set_shared_data",
            "get_shared_data",
            "set_shared_data",
            "set_request_header",
            "set_property"
        ]
    );
    stream.on_log(&host);
    assert_eq!(host.take_calls(), Vec::<&str>::new());
}

/// Without caps nothing changes: round-robin makes exactly the calls it made before, random
/// none on shared data, and neither defines an in-flight gauge or counts at the end.
#[test]
fn without_caps_a_request_makes_the_calls_it_made_before() {
    let three = crate::wiring_tests::THREE;
    let (host, root) = configured(&format!(r#"{{"policy": "round_robin", {three}}}"#));
    let (_, stream) = request(&host, &root, &[(":path", "/")]);
    assert_eq!(host.take_calls(), ROUND_ROBIN_CALLS);
    stream.on_log(&host);
    assert_eq!(host.take_calls(), Vec::<&str>::new());
    assert!(!root.balancer().unwrap().counts_in_flight());
    assert_eq!(
        host.metric("eisodos.plugin=.=eisodos;.;backend=.=backend_a;.;in_flight"),
        None
    );

    let (host, root) = configured(&format!(r#"{{"policy": "random", {three}}}"#));
    let (_, stream) = request(&host, &root, &[(":path", "/")]);
    assert_eq!(host.take_calls(), ["set_request_header", "set_property"]);
    stream.on_log(&host);
    assert_eq!(host.take_calls(), Vec::<&str>::new());
}
