//! A reload as Envoy does it through ECDS, against [`FakeHost`]: the VM stays, a second root
//! context is configured beside the first (same host, so same shared data), requests go to the
//! new one, and the old one is retired while streams it admitted may still be running.

use serde_json::Value;

use crate::fake_host::FakeHost;
use crate::http::EisodosHttp;
use crate::root::EisodosRoot;
use crate::wiring_tests::{configured, request, routed_to};

/// A second root on the same host, configured with `json` (as Envoy does for the new
/// configuration before it retires the old root).
fn second_root(host: &FakeHost, json: &str) -> EisodosRoot {
    let root = EisodosRoot::default();
    host.set_configuration(json);
    assert!(
        root.on_configure(host, json.len()),
        "{:?}",
        host.take_logs()
    );
    host.take_logs();
    root
}

fn probed(filter_state: bool) -> String {
    format!(
        r#"{{"filter_state": {filter_state},
            "health_check": {{"path": "/healthz", "interval_ms": 1000,
              "healthy_threshold": 1, "unhealthy_threshold": 1}},
            "backends": [{{"cluster": "backend_a"}}, {{"cluster": "backend_b"}}]}}"#
    )
}

#[test]
fn a_backend_the_old_root_saw_go_down_is_down_for_the_new_root_before_its_first_tick() {
    let (host, old) = configured(&probed(true));
    old.on_tick(&host);
    let calls = host.take_http_calls();
    host.set_http_call_status(Some("503"));
    old.on_http_call_response(&host, calls[0].token);
    host.set_http_call_status(Some("200"));
    old.on_http_call_response(&host, calls[1].token);
    host.advance_ms(1_000);
    old.on_tick(&host);
    host.take_logs();

    host.take_calls();
    let new = second_root(&host, &probed(false));
    // Configure-time cost of catching up: the health record's version and the record.
    let calls = host.take_calls();
    assert_eq!(
        calls.iter().filter(|c| **c == "get_shared_data").count(),
        // ensure_created reads the version and the record (2), catch_up reads them again (2)
        4,
        "{calls:?}"
    );
    old.retire(&host);
    for _ in 0..6 {
        request(&host, &new, &[(":path", "/")]);
        assert_eq!(routed_to(&host).as_deref(), Some("backend_b"));
    }
}

#[test]
fn requests_admitted_by_the_old_root_are_counted_by_the_new_one_until_they_end() {
    let least = |filter_state: bool| {
        format!(
            r#"{{"policy": "least_request", "filter_state": {filter_state},
                "backends": [{{"cluster": "backend_a"}}, {{"cluster": "backend_b"}}]}}"#
        )
    };
    let (host, old) = configured(&least(true));
    let held: Vec<EisodosHttp> = (0..3)
        .map(|_| request(&host, &old, &[(":path", "/")]).1)
        .collect();
    let new = second_root(&host, &least(false));
    old.retire(&host);
    let counts = |root: &EisodosRoot| -> Vec<u64> {
        let balancer = root.balancer().expect("configured");
        let page: Value = serde_json::from_str(&balancer.status_json(&host, host.now())).unwrap();
        page["backends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["in_flight"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(counts(&new).iter().sum::<u64>(), 3);
    // The old root is gone from Envoy's tables: no tick reaches it; its streams end anyway.
    for stream in &held {
        host.set_response_code(200);
        stream.on_log(&host);
    }
    assert_eq!(counts(&new), [0, 0]);
    // The new root's own requests count and release as usual.
    let (_, stream) = request(&host, &new, &[(":path", "/")]);
    assert_eq!(counts(&new).iter().sum::<u64>(), 1);
    stream.on_log(&host);
    new.on_tick(&host);
    assert_eq!(counts(&new), [0, 0]);
}
