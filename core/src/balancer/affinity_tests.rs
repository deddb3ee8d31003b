//! The affinity stage inside [`Balancer::choose`]: a cookie pins a request whatever the policy,
//! counted where the policy counts; anything else falls back to the policy and re-issues.

use super::*;
use crate::memory_store::MemoryStore;
use crate::request_key::StaticRequest;

const BACKENDS: &str = r#""backends": [{"cluster": "a"}, {"cluster": "b"}, {"cluster": "c"}]"#;
const STICKY: &str = r#""session_affinity": {"cookie": "lb", "ttl_s": 60, "attributes": "Path=/"}"#;

fn balancer(fields: &str) -> Balancer {
    let json = format!("{{{fields}, {STICKY}, {BACKENDS}}}");
    Balancer::new(Config::parse(json.as_bytes()).unwrap(), "test", 7).unwrap()
}

fn cookie_for(cluster: &str) -> String {
    format!(
        "lb={}",
        affinity_token_text(affinity_token("test", cluster))
    )
}

fn with_cookie(cookie: &str) -> StaticRequest {
    StaticRequest::default().with_header("cookie", cookie)
}

fn route<'a>(decision: Decision<'a>) -> Choice<'a> {
    match decision {
        Decision::Route(choice) => choice,
        other => panic!("expected a route, got {other:?}"),
    }
}

const POLICIES: [&str; 6] = [
    r#""policy": "round_robin""#,
    r#""policy": "random""#,
    r#""policy": "least_request""#,
    r#""policy": "consistent_hash", "hash_key": [{"header": "x-user"}]"#,
    r#""policy": "consistent_hash", "hash_key": [{"header": "x-user"}], "bounded_load_factor": 1.0"#,
    r#""policy": "ip_hash", "on_missing_key": "reject""#,
];

#[test]
fn a_cookie_pins_the_request_whatever_the_policy() {
    for policy in POLICIES {
        let store = MemoryStore::new();
        let balancer = balancer(policy);
        balancer.create_shared_keys(&store).unwrap();
        for (index, cluster) in ["a", "b", "c"].into_iter().enumerate() {
            let request = with_cookie(&cookie_for(cluster))
                .with_header("x-user", "u1")
                .with_source("10.0.0.1:1");
            for _ in 0..20 {
                let choice = route(balancer.choose(&store, &request));
                assert_eq!(choice.index, index, "{policy}");
                assert_eq!(choice.reason, Reason::Affinity, "{policy}");
                assert_eq!(choice.why, Why::Affinity);
                assert_eq!(choice.set_cookie, None, "pinned: no new cookie ({policy})");
                if choice.counted {
                    balancer.release(&store, choice.index);
                }
            }
        }
    }
}

#[test]
fn a_pinned_request_still_counts_where_the_policy_counts() {
    for (policy, counts) in [
        (r#""policy": "least_request""#, true),
        (
            r#""policy": "consistent_hash", "hash_key": [{"header": "x-user"}], "bounded_load_factor": 1.0"#,
            true,
        ),
        (r#""policy": "round_robin""#, false),
        (r#""policy": "random""#, false),
    ] {
        let store = MemoryStore::new();
        let balancer = balancer(policy);
        balancer.create_shared_keys(&store).unwrap();
        let request = with_cookie(&cookie_for("c"));
        let before = store.op_counts();
        let held: Vec<Choice<'_>> = (0..5)
            .map(|_| route(balancer.choose(&store, &request)))
            .collect();
        assert!(
            held.iter().all(|c| c.index == 2 && c.counted == counts),
            "{policy}"
        );
        if counts {
            assert_eq!(
                balancer.in_flight(&store),
                [0, 0, 5],
                "{policy}: pinned past any load bound, and counted"
            );
            for choice in &held {
                balancer.release(&store, choice.index);
            }
            balancer.tick(&store, 0);
            assert_eq!(balancer.in_flight(&store), [0, 0, 0], "{policy}");
        } else {
            assert_eq!(
                store.op_counts(),
                before,
                "{policy}: no shared data for a pin"
            );
        }
    }
}

#[test]
fn without_a_usable_cookie_the_policy_picks_and_the_cookie_is_issued() {
    let store = MemoryStore::new();
    let balancer = balancer(r#""policy": "round_robin""#);
    balancer.create_shared_keys(&store).unwrap();
    let a = affinity_token_text(affinity_token("test", "a"));
    let foreign = format!("lb={}", affinity_token_text(affinity_token("other", "a")));
    let tampered = format!("lb={}x", &a[..15]);
    let truncated = format!("lb={}", &a[..8]);
    let oversize = format!("lb={a}{a}");
    let clear = "lb=a".to_owned();
    let requests = [
        StaticRequest::default(),
        with_cookie(""),
        with_cookie("other=1"),
        with_cookie(&foreign),
        with_cookie(&tampered),
        with_cookie(&truncated),
        with_cookie(&oversize),
        with_cookie(&clear),
        with_cookie(&a),
        StaticRequest::default().with_header("cookie", b"lb=\xff\xfe\x00"),
    ];
    for (i, request) in requests.iter().enumerate() {
        let choice = route(balancer.choose(&store, request));
        assert_eq!(choice.index, i % 3, "request {i}: the round-robin order");
        assert_eq!(choice.why, Why::Ticket, "request {i}");
        let expected = format!(
            "lb={}; Max-Age=60; Path=/",
            affinity_token_text(affinity_token("test", choice.cluster))
        );
        assert_eq!(choice.set_cookie, Some(expected.as_str()), "request {i}");
    }
}

#[test]
fn a_cookie_for_a_backend_that_may_not_take_the_request_falls_back_and_is_reissued() {
    // A backup, in normal mode: not a candidate.
    let store = MemoryStore::new();
    let json = format!(
        r#"{{"policy": "random", {STICKY}, "backends": [{{"cluster": "a"}}, {{"cluster": "spare", "backup": true}}]}}"#
    );
    let with_backup = Balancer::new(Config::parse(json.as_bytes()).unwrap(), "test", 1).unwrap();
    for _ in 0..20 {
        let choice = route(with_backup.choose(&store, &with_cookie(&cookie_for("spare"))));
        assert_eq!(choice.cluster, "a");
        assert_eq!(choice.why, Why::Random);
        assert!(choice.set_cookie.unwrap().starts_with(&cookie_for("a")));
    }
    // A backend ejected by passive health.
    let balancer = balancer(
        r#""policy": "round_robin", "outlier_detection": {"consecutive_failures": 1, "max_ejection_percent": 100}"#,
    );
    balancer.create_shared_keys(&store).unwrap();
    let pinned_to_b = with_cookie(&cookie_for("b"));
    assert_eq!(route(balancer.choose(&store, &pinned_to_b)).cluster, "b");
    balancer.report(&store, 1, true, 10);
    for _ in 0..10 {
        let choice = route(balancer.choose(&store, &pinned_to_b));
        assert_ne!(choice.cluster, "b", "b is ejected");
        assert_eq!(choice.why, Why::Ticket);
        assert!(choice
            .set_cookie
            .unwrap()
            .starts_with(&cookie_for(choice.cluster)));
    }
    // A cookie for a backend that is no longer configured: a foreign token.
    let json = format!(r#"{{{STICKY}, "backends": [{{"cluster": "a"}}, {{"cluster": "b"}}]}}"#);
    let smaller = Balancer::new(Config::parse(json.as_bytes()).unwrap(), "test", 1).unwrap();
    let choice = route(smaller.choose(&store, &with_cookie(&cookie_for("c"))));
    assert_ne!(choice.reason, Reason::Affinity);
    assert!(choice.set_cookie.is_some());
    // And the kept backends keep their cookies.
    let choice = route(smaller.choose(&store, &with_cookie(&cookie_for("b"))));
    assert_eq!((choice.cluster, choice.why), ("b", Why::Affinity));
}

#[test]
fn a_pinned_request_in_backup_mode_goes_to_its_backup() {
    let store = MemoryStore::new();
    let json = format!(
        r#"{{"policy": "round_robin", {STICKY}, "outlier_detection": {{"consecutive_failures": 1, "max_ejection_percent": 100}},
            "backends": [{{"cluster": "a"}}, {{"cluster": "s1", "backup": true}}, {{"cluster": "s2", "backup": true}}]}}"#
    );
    let balancer = Balancer::new(Config::parse(json.as_bytes()).unwrap(), "test", 1).unwrap();
    balancer.create_shared_keys(&store).unwrap();
    balancer.report(&store, 0, true, 10);
    assert_eq!(balancer.mode(), Mode::Backup);
    for _ in 0..4 {
        let choice = route(balancer.choose(&store, &with_cookie(&cookie_for("s2"))));
        assert_eq!((choice.cluster, choice.why), ("s2", Why::Affinity));
    }
    let unpinned = route(balancer.choose(&store, &StaticRequest::default()));
    assert_eq!(unpinned.why, Why::Backup);
    assert!(unpinned.set_cookie.is_some());
}

#[test]
fn nothing_healthy_is_still_a_local_reply_whatever_the_cookie() {
    let store = MemoryStore::new();
    let balancer = balancer(
        r#""outlier_detection": {"consecutive_failures": 1, "max_ejection_percent": 100}"#,
    );
    balancer.create_shared_keys(&store).unwrap();
    for index in 0..3 {
        balancer.report(&store, index, true, 10);
    }
    let decision = balancer.choose(&store, &with_cookie(&cookie_for("a")));
    assert!(matches!(
        decision,
        Decision::Reject {
            reply: LocalReply::NoHealthyBackend,
            ..
        }
    ));
}

#[test]
fn without_session_affinity_nothing_reads_the_cookie_or_sets_one() {
    /// A request that fails the test if the balancer reads any header.
    struct Untouchable;
    impl RequestView for Untouchable {
        fn header(&self, name: &str) -> Option<Vec<u8>> {
            panic!("read header {name}")
        }
        fn path(&self) -> Option<Vec<u8>> {
            panic!("read the path")
        }
        fn source_address(&self) -> Option<String> {
            panic!("read the address")
        }
        fn now_ms(&self) -> u64 {
            panic!("read the clock")
        }
        fn headers_size(&self) -> Option<usize> {
            panic!("read every header")
        }
    }
    let store = MemoryStore::new();
    let json = format!(r#"{{"policy": "round_robin", {BACKENDS}}}"#);
    let balancer = Balancer::new(Config::parse(json.as_bytes()).unwrap(), "test", 1).unwrap();
    let choice = route(balancer.choose(&store, &Untouchable));
    assert_eq!(choice.set_cookie, None);
    assert_eq!(balancer.set_cookie(0), None);
}

#[test]
fn a_pinned_request_is_counted_for_its_backend() {
    let store = MemoryStore::new();
    let balancer = balancer(r#""policy": "random""#);
    for _ in 0..4 {
        route(balancer.choose(&store, &with_cookie(&cookie_for("b"))));
    }
    let mut counts = Vec::new();
    balancer.drain_counts(|counter, count| counts.push((counter, count)));
    assert_eq!(counts, [(Counter::Requests(1), 4)]);
}

#[test]
fn a_pinned_backend_at_its_max_requests_falls_back_to_the_policy_and_is_reissued() {
    for policy in POLICIES {
        let store = MemoryStore::new();
        let json = format!(
            r#"{{{policy}, {STICKY}, "backends": [{{"cluster": "a", "max_requests": 1}},
                {{"cluster": "b", "max_requests": 1}}, {{"cluster": "c", "max_requests": 1}}]}}"#
        );
        let balancer = Balancer::new(Config::parse(json.as_bytes()).unwrap(), "test", 7).unwrap();
        balancer.create_shared_keys(&store).unwrap();
        let request = with_cookie(&cookie_for("b"))
            .with_header("x-user", "u1")
            .with_source("10.0.0.1:1");
        let first = route(balancer.choose(&store, &request));
        assert_eq!(
            (first.index, first.reason),
            (1, Reason::Affinity),
            "{policy}"
        );
        assert!(first.counted, "a cap counts a pinned request ({policy})");
        let second = route(balancer.choose(&store, &request));
        assert_ne!(second.index, 1, "b is full ({policy})");
        assert_ne!(second.reason, Reason::Affinity, "{policy}");
        assert!(second.set_cookie.is_some(), "re-issued ({policy})");
        assert!(second.counted, "{policy}");
        balancer.release(&store, first.index);
        let third = route(balancer.choose(&store, &request));
        assert_eq!(
            (third.index, third.reason),
            (1, Reason::Affinity),
            "{policy}"
        );
    }
}
