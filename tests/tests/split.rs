//! Traffic splitting against real Envoy (`--concurrency 2`): a header rule sends every
//! matching request to the canary; a percent rule by `split_key` takes its share of keys and
//! keeps each key in one subset whichever worker serves it; the canary down sends its requests
//! to the default subset (and the default down is a 503 though the canary is up); round-robin
//! alternates exactly within a subset.
//!
//! Every request goes on a connection of its own (`raw`), so the kernel spreads them over both
//! workers and no pooled connection ties a run of requests to one.

use std::time::Duration;

use eisodos_core::balancer::key_bucket;
use eisodos_tests::envoy::Envoy;
use eisodos_tests::upstream::Upstream;
use eisodos_tests::{client, exclusive, raw, wait};
use serde_json::Value;

const NAMES: [&str; 3] = ["v1_a", "v1_b", "v2"];
const BACKENDS: &str =
    r#""backends": [{"cluster": "v1_a"}, {"cluster": "v1_b"}, {"cluster": "v2"}]"#;
const SUBSETS: &str =
    r#""subsets": {"stable": ["v1_a", "v1_b"], "canary": ["v2"]}, "default_subset": "stable""#;
const BETA_RULE: &str =
    r#"{"match": {"header": {"name": "x-beta", "exact": "yes"}}, "subset": "canary"}"#;

fn start(upstreams: &[Upstream], fields: &str) -> Envoy {
    Envoy::builder()
        .upstreams(upstreams)
        .plugin_config(&format!("{{{fields}, {SUBSETS}, {BACKENDS}}}"))
        .concurrency(2)
        .start()
}

/// The upstream that answered one GET sent on a fresh connection, or the response when it
/// was not a 200.
fn answered(envoy: &Envoy, headers: &[(&str, &str)]) -> Result<String, client::Response> {
    let response = raw::get_from(
        std::net::Ipv4Addr::LOCALHOST,
        envoy.listener_port(),
        "/",
        headers,
    )
    .unwrap();
    if response.status != 200 {
        return Err(response);
    }
    Ok(response
        .header("x-upstream")
        .expect("x-upstream")
        .to_owned())
}

fn upstream(envoy: &Envoy, headers: &[(&str, &str)]) -> String {
    answered(envoy, headers).unwrap_or_else(|response| panic!("{response:?}"))
}

/// Asserts that `order` alternates between v1_a and v1_b.
fn alternates(order: &[String]) {
    for pair in order.windows(2) {
        assert!(
            pair[0].starts_with("v1_") && pair[1].starts_with("v1_") && pair[0] != pair[1],
            "round-robin within stable must alternate: {order:?}"
        );
    }
}

#[test]
fn a_header_rule_sends_every_beta_request_to_the_canary_and_round_robin_alternates_in_stable() {
    let upstreams = Upstream::start_all(&NAMES);
    let envoy = start(&upstreams, &format!(r#""rules": [{BETA_RULE}]"#));
    let beta: Vec<String> = (0..200)
        .map(|_| upstream(&envoy, &[("x-beta", "yes")]))
        .collect();
    assert!(beta.iter().all(|u| u == "v2"), "{beta:?}");
    let others: Vec<String> = (0..200)
        .map(|i| {
            let value = if i % 2 == 0 { "no" } else { "YES" };
            upstream(&envoy, &[("x-beta", value)])
        })
        .collect();
    alternates(&others);
    let plain: Vec<String> = (0..100).map(|_| upstream(&envoy, &[])).collect();
    alternates(&plain);
    let hits: Vec<u64> = upstreams.iter().map(Upstream::hits).collect();
    assert_eq!(hits, [150, 150, 200]);
    let per_worker = envoy.connections_per_worker(2);
    assert!(per_worker.iter().all(|&n| n > 50), "{per_worker:?}");
    eprintln!("header rule: hits {hits:?}, connections per worker {per_worker:?}");
}

/// 20% by `x-user`: each of 2000 keys sent twice (each time on a new connection, so most keys
/// meet both workers); a key lands where its bucket says, always, and the share of keys in
/// the canary is within 5 standard deviations of 20%.
#[test]
fn a_percent_rule_by_split_key_takes_its_share_of_keys_and_keeps_each_key_in_one_subset() {
    const KEYS: usize = 2000;
    const PERCENT: f64 = 20.0;
    let upstreams = Upstream::start_all(&NAMES);
    let envoy = start(
        &upstreams,
        &format!(
            r#""rules": [{BETA_RULE}, {{"percent": {PERCENT}, "subset": "canary"}}],
               "split_key": [{{"header": "x-user"}}]"#
        ),
    );
    let threshold = PERCENT / 100.0 * 4_294_967_296.0;
    let mut canary = 0;
    for user in 0..KEYS {
        let key = format!("user-{user}");
        let expected = f64::from(key_bucket(key.as_bytes())) < threshold;
        for _ in 0..2 {
            let went = upstream(&envoy, &[("x-user", &key)]);
            assert_eq!(went == "v2", expected, "{key} went to {went}");
        }
        canary += usize::from(expected);
    }
    let p = PERCENT / 100.0;
    let mean = KEYS as f64 * p;
    let sd = (KEYS as f64 * p * (1.0 - p)).sqrt();
    assert!(
        (canary as f64 - mean).abs() <= 5.0 * sd,
        "{canary} of {KEYS} keys in the canary, expected {mean} ± {}",
        5.0 * sd
    );
    let hits: Vec<u64> = upstreams.iter().map(Upstream::hits).collect();
    assert_eq!(hits[2], 2 * canary as u64);
    let per_worker = envoy.connections_per_worker(2);
    assert!(per_worker.iter().all(|&n| n > 500), "{per_worker:?}");
    eprintln!(
        "percent {PERCENT} by split_key: {canary} of {KEYS} keys in the canary \
         (expected {mean} ± 5 sd = {:.0}), every key twice in the same subset; hits {hits:?}, \
         connections per worker {per_worker:?}",
        5.0 * sd
    );
}

const INTERVAL_MS: u64 = 300;

/// Fresh connections that ask for the status page before a state counts as every worker's:
/// the chance that one of the two workers got none of them is 2 × 2^-32.
const POLLS_FOR_EVERY_WORKER: usize = 32;

/// Whether backend `index` is `healthy` in every worker's selection (the status page's
/// `selected`: the worker has followed the record, and laid its subsets out with it).
fn selected_everywhere(envoy: &Envoy, index: usize, selected: bool) -> Result<(), String> {
    for _ in 0..POLLS_FOR_EVERY_WORKER {
        let response = client::get_with(&envoy.url("/.eisodos/status"), &[("connection", "close")]);
        let status: Value = serde_json::from_str(&response.body).map_err(|e| e.to_string())?;
        if status["backends"][index]["selected"] != selected {
            return Err(format!("{status:#}"));
        }
    }
    Ok(())
}

fn wait_selected(envoy: &Envoy, index: usize, selected: bool) {
    wait::until(Duration::from_secs(15), || {
        selected_everywhere(envoy, index, selected)
    });
}

/// The canary's health check failing sends its requests to the default subset (and, once it
/// passes again, back); the default subset down is a local 503 for the requests it takes,
/// although the canary is up.
#[test]
fn the_canary_down_sends_its_requests_to_the_default_subset() {
    let _machine = exclusive::machine();
    let upstreams = Upstream::start_all(&NAMES);
    let envoy = start(
        &upstreams,
        &format!(
            r#""health_check": {{"path": "/healthz", "interval_ms": {INTERVAL_MS},
                "unhealthy_threshold": 2, "healthy_threshold": 2}},
               "panic_threshold_percent": 0, "status_path": "/.eisodos/status",
               "rules": [{BETA_RULE}]"#
        ),
    );
    let beta = [("x-beta", "yes")];
    assert_eq!(upstream(&envoy, &beta), "v2");

    upstreams[2].set_status(503);
    wait_selected(&envoy, 2, false);
    let fallen: Vec<String> = (0..100).map(|_| upstream(&envoy, &beta)).collect();
    alternates(&fallen);
    eprintln!(
        "canary down: 100 beta requests, {} to v1_a",
        fallen.iter().filter(|u| *u == "v1_a").count()
    );

    upstreams[2].set_status(200);
    wait_selected(&envoy, 2, true);
    let back: Vec<String> = (0..50).map(|_| upstream(&envoy, &beta)).collect();
    assert!(back.iter().all(|u| u == "v2"), "{back:?}");

    upstreams[0].set_status(503);
    upstreams[1].set_status(503);
    wait_selected(&envoy, 0, false);
    wait_selected(&envoy, 1, false);
    for _ in 0..50 {
        let response = answered(&envoy, &[]).expect_err("the default subset is down");
        assert_eq!(response.status, 503, "{response:?}");
        assert_eq!(
            response.header("x-eisodos-reason"),
            Some("no_healthy_backend"),
            "{response:?}"
        );
        assert_eq!(upstream(&envoy, &beta), "v2", "the canary is up");
    }
    assert_eq!(upstreams[0].hits_for("/") + upstreams[1].hits_for("/"), 100);
}
