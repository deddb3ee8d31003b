//! A reload: a new [`Balancer`] over the same backends takes over from the old one, sharing its
//! store. What the old one learnt about health is in force for the new one's first request.

use super::*;
use crate::memory_store::MemoryStore;
use crate::request_key::StaticRequest;

const BACKENDS: &str = r#""backends": [{"cluster": "a"}, {"cluster": "b"}, {"cluster": "c"}]"#;

fn balancer(fields: &str) -> Balancer {
    let json = format!("{{{fields}, {BACKENDS}}}");
    Balancer::new(Config::parse(json.as_bytes()).unwrap(), "test", 7).unwrap()
}

/// The clusters of `n` requests in a row (local replies as `-`).
fn picks(balancer: &Balancer, store: &MemoryStore, n: usize) -> Vec<String> {
    (0..n)
        .map(
            |_| match balancer.choose(store, &StaticRequest::default()) {
                Decision::Route(choice) => balancer.route_cluster(choice.index).to_owned(),
                _ => "-".to_owned(),
            },
        )
        .collect()
}

/// The old configuration learns that b is down (probes) or ejected (requests), then a new one
/// with another `filter_state` is configured as the filter does it, without a tick yet.
fn reload_after(fields: &str, learn: impl Fn(&Balancer, &MemoryStore)) -> Vec<String> {
    reload_at(1_001, fields, learn)
}

/// [`reload_after`], the new configuration coming at `now_ms`.
fn reload_at(now_ms: u64, fields: &str, learn: impl Fn(&Balancer, &MemoryStore)) -> Vec<String> {
    let store = MemoryStore::new();
    let old = balancer(&format!(r#"{fields}, "filter_state": true"#));
    old.create_shared_keys(&store).unwrap();
    learn(&old, &store);
    old.tick(&store, 1_000);
    assert!(!picks(&old, &store, 6).contains(&"b".to_owned()));

    let new = balancer(&format!(r#"{fields}, "filter_state": false"#));
    new.create_shared_keys(&store).unwrap();
    new.catch_up(&store, now_ms);
    old.retire(&store);
    picks(&new, &store, 30)
}

#[test]
fn a_backend_down_by_probes_is_down_for_the_new_configuration_at_once() {
    let picked = reload_after(
        r#""health_check": {"path": "/h", "unhealthy_threshold": 1}"#,
        |old, store| {
            old.probe_sent(1, 7, 10);
            old.probe_answered(7, ProbeResult::Status(503), 11);
            old.tick(store, 20);
        },
    );
    assert!(!picked.contains(&"b".to_owned()), "{picked:?}");
    assert!(!picked.contains(&"-".to_owned()), "{picked:?}");
}

#[test]
fn an_ejection_is_in_force_for_the_new_configuration_at_once() {
    let picked = reload_after(
        r#""outlier_detection": {"consecutive_failures": 1, "base_ejection_ms": 60000}"#,
        |old, store| {
            old.report(store, 1, true, 10);
        },
    );
    assert!(!picked.contains(&"b".to_owned()), "{picked:?}");
}

#[test]
fn with_initial_state_unhealthy_a_reload_does_not_refuse_requests_until_its_first_tick() {
    let picked = reload_after(
        r#""health_check": {"path": "/h", "unhealthy_threshold": 1, "healthy_threshold": 1,
            "initial_state": "unhealthy"}"#,
        |old, store| {
            for (index, token) in [(0, 1), (2, 2)] {
                old.probe_sent(index, token, 10);
                old.probe_answered(token, ProbeResult::Status(200), 11);
            }
            old.tick(store, 20);
        },
    );
    assert!(!picked.contains(&"-".to_owned()), "{picked:?}");
    assert!(!picked.contains(&"b".to_owned()), "{picked:?}");
}

#[test]
fn without_a_record_yet_catch_up_keeps_the_initial_state() {
    let store = MemoryStore::new();
    let new = balancer(r#""health_check": {"path": "/h"}"#);
    new.catch_up(&store, 5);
    assert_eq!(picks(&new, &store, 3).len(), 3);
    assert!(!picks(&new, &store, 6).contains(&"-".to_owned()));
}

/// The same list configured again two minutes after anyone probed it (A, then B, then A): its
/// record is history, not health (`health::stale`), so the new configuration starts from
/// `initial_state` rather than adopting b's old down mark.
#[test]
fn a_record_nobody_kept_for_minutes_is_not_caught_up_with() {
    let probe_b_down = |old: &Balancer, store: &MemoryStore| {
        old.probe_sent(1, 7, 10);
        old.probe_answered(7, ProbeResult::Status(503), 11);
        old.tick(store, 20);
    };
    let check = r#""health_check": {"path": "/h", "unhealthy_threshold": 1}"#;
    let picked = reload_at(121_000, check, probe_b_down);
    assert!(picked.contains(&"b".to_owned()), "{picked:?}");
    let picked = reload_at(2_000, check, probe_b_down);
    assert!(!picked.contains(&"b".to_owned()), "{picked:?}");
}
