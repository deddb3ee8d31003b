//! The metrics as an operator scrapes them: real Envoy on the shipped `envoy/envoy.yaml`
//! (its `stats_config` included), `/stats/prometheus` read after known traffic, exact values.
//!
//! Counters reach Envoy on each worker's flush (once a second), so a count is read once the
//! traffic sent is all counted and nothing has changed for two flush periods after
//! ([`settled`]), then compared for equality: a count that goes past its value fails, and one
//! that never gets there times out.

use std::time::{Duration, Instant};

use eisodos_tests::envoy::Envoy;
use eisodos_tests::prometheus::Scrape;
use eisodos_tests::upstream::Upstream;
use eisodos_tests::{client, exclusive, wait};

/// A counter is settled once unchanged for this long: two flush periods (1 s each, counted in
/// ticks) and a margin for a tick that runs late on a busy machine.
const SETTLED_AFTER: Duration = Duration::from_millis(2_500);
/// Far beyond anything these states need.
const DEADLINE: Duration = Duration::from_secs(20);

const REQUESTS: &str = "eisodos_requests_total";
const HEALTHY: &str = "eisodos_backend_healthy";
const PROBES: &str = "eisodos_probes_total";
const EJECTIONS: &str = "eisodos_ejections_total";
const LOCAL_REPLIES: &str = "eisodos_local_replies_total";
const IN_FLIGHT: &str = "eisodos_in_flight";
const MODE: &str = "eisodos_mode";

/// The samples of `families`, as text, to compare two scrapes by.
fn series(scrape: &Scrape, families: &[&str]) -> Vec<String> {
    families
        .iter()
        .flat_map(|family| scrape.family(family).map(ToString::to_string))
        .collect()
}

/// A scrape taken once `counted` holds (the traffic sent is all there) and `families` have
/// not changed for [`SETTLED_AFTER`] since: whatever comes later is counted twice.
fn settled(envoy: &Envoy, families: &[&str], counted: impl Fn(&Scrape) -> bool) -> Scrape {
    let mut last = envoy.scrape();
    let mut since = Instant::now();
    wait::until(DEADLINE, || {
        let now = envoy.scrape();
        if !counted(&now) || series(&now, families) != series(&last, families) {
            last = now;
            since = Instant::now();
        }
        if since.elapsed() >= SETTLED_AFTER {
            Ok(())
        } else {
            Err(format!(
                "not all counted, or still changing:\n{}",
                last.lines("eisodos_")
            ))
        }
    });
    last
}

/// Whether `family` sums to `total` over all its series.
fn sums_to(family: &'static str, total: u64) -> impl Fn(&Scrape) -> bool {
    move |scrape| scrape.sum(family, &[]) as u64 == total
}

/// Waits until `check` holds on a scrape.
fn until_scraped(envoy: &Envoy, what: &str, check: impl Fn(&Scrape) -> bool) {
    wait::until(DEADLINE, || {
        let scrape = envoy.scrape();
        if check(&scrape) {
            Ok(())
        } else {
            Err(format!("{what}:\n{}", scrape.lines("eisodos_")))
        }
    });
}

fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
    scrape.value(name, labels).map(|v| v as u64)
}

fn send(envoy: &Envoy, path: &str, n: usize) -> Vec<u16> {
    (0..n)
        .map(|_| client::get(&envoy.url(path)).status)
        .collect()
}

/// Round-robin over clusters named as Istio, Envoy Gateway and a dotted name would be: every
/// name comes out whole in the `backend` label, and each backend's count is exact.
#[test]
fn requests_are_counted_per_backend_with_mesh_cluster_names_intact() {
    let names = [
        "outbound|80||svc-a.default.svc.cluster.local",
        "httproute/default/eisodos/rule/1",
        "backend.c",
    ];
    let upstreams: Vec<Upstream> = names.iter().map(|n| Upstream::builder(n).start()).collect();
    let envoy = Envoy::builder()
        .upstreams(&upstreams)
        .plugin_config(&format!(
            r#"{{"policy": "round_robin", "backends": [{}]}}"#,
            names.map(|n| format!(r#"{{"cluster": "{n}"}}"#)).join(", ")
        ))
        .concurrency(2)
        .start();
    let statuses = send(&envoy, "/", 90);
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");

    let scrape = settled(&envoy, &[REQUESTS], sums_to(REQUESTS, 90));
    println!("{}", scrape.lines("eisodos_"));
    for name in names {
        let backend = [("plugin", "eisodos"), ("backend", name)];
        assert_eq!(value(&scrape, REQUESTS, &backend), Some(30), "{name}");
        assert_eq!(value(&scrape, HEALTHY, &backend), Some(1), "{name}");
    }
    assert_eq!(scrape.family(REQUESTS).count(), 3, "no other series");
    assert_eq!(value(&scrape, MODE, &[("plugin", "eisodos")]), Some(0));
    for reason in ["no_healthy_backend", "missing_key"] {
        assert_eq!(
            value(&scrape, LOCAL_REPLIES, &[("reason", reason)]),
            Some(0),
            "defined, never counted: {reason}"
        );
    }
    assert_eq!(value(&scrape, "eisodos_cas_exhausted_total", &[]), Some(0));
    for absent in [IN_FLIGHT, PROBES, EJECTIONS] {
        assert_eq!(scrape.family(absent).count(), 0, "{absent}: not configured");
    }
}

/// The shipped plugin configuration (round-robin, probes every second, ejection after 5
/// failed requests): requests per backend, an ejection, failed probes and health, then an
/// upstream killed.
#[test]
fn health_probes_and_ejections_with_the_shipped_configuration() {
    let _machine = exclusive::machine();
    let mut upstreams = Upstream::start_all(&["backend_a", "backend_b", "backend_c"]);
    let envoy = Envoy::builder()
        .upstreams(&upstreams)
        .concurrency(2)
        .start();
    let backend = |name| [("backend", name)];
    let probes = |scrape: &Scrape, name, result| {
        value(scrape, PROBES, &[("backend", name), ("result", result)]).unwrap_or(0)
    };
    until_scraped(&envoy, "a passing probe of every backend", |scrape| {
        ["backend_a", "backend_b", "backend_c"]
            .iter()
            .all(|name| probes(scrape, name, "success") > 0)
    });
    let statuses = send(&envoy, "/", 30);
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    let scrape = settled(&envoy, &[REQUESTS], sums_to(REQUESTS, 30));
    for name in ["backend_a", "backend_b", "backend_c"] {
        assert_eq!(value(&scrape, REQUESTS, &backend(name)), Some(10), "{name}");
    }

    // backend_b fails every request (and its probes): ejected after its 5th failure, once,
    // however many more requests reach it before every worker has stopped sending there.
    let b = &upstreams[1];
    b.set_status(500);
    let before = b.hits_for("/");
    wait::until(DEADLINE, || {
        client::get(&envoy.url("/"));
        let failed = b.hits_for("/") - before;
        (failed >= 5)
            .then_some(())
            .ok_or(format!("{failed} requests failed at backend_b"))
    });
    until_scraped(&envoy, "backend_b ejected", |scrape| {
        value(scrape, EJECTIONS, &backend("backend_b")) == Some(1)
            && value(scrape, HEALTHY, &backend("backend_b")) == Some(0)
    });
    until_scraped(&envoy, "a probe of backend_b answered 500", |scrape| {
        probes(scrape, "backend_b", "failure") > 0
    });
    let hits: u64 = upstreams.iter().map(|u| u.hits_for("/")).sum();
    // Every request routed is counted once.
    let scrape = settled(&envoy, &[REQUESTS, EJECTIONS], sums_to(REQUESTS, hits));
    for name in ["backend_a", "backend_c"] {
        assert_eq!(value(&scrape, EJECTIONS, &backend(name)), Some(0), "{name}");
        assert_eq!(value(&scrape, HEALTHY, &backend(name)), Some(1), "{name}");
    }
    assert_eq!(value(&scrape, EJECTIONS, &backend("backend_b")), Some(1));
    assert!(probes(&scrape, "backend_a", "success") > 0);
    assert_eq!(value(&scrape, MODE, &[]), Some(0), "2 of 3 left: normal");

    // backend_c dies. Envoy answers a probe it cannot connect with a 503 of its own, so the
    // probes count as `failure`; the gauges are set on the tick that sees the change, the
    // counters flushed up to a second later. 1 of 3 primaries left is panic mode.
    drop(upstreams.pop());
    until_scraped(&envoy, "backend_c down, panic mode", |scrape| {
        value(scrape, HEALTHY, &backend("backend_c")) == Some(0)
            && value(scrape, MODE, &[]) == Some(1)
    });
    until_scraped(
        &envoy,
        "the unhealthy threshold's 3 failed probes",
        |scrape| {
            probes(scrape, "backend_c", "failure") + probes(scrape, "backend_c", "network_failure")
                >= 3
        },
    );
    let scrape = envoy.scrape();
    // The scrape as Envoy writes it (the README's sample).
    let raw = envoy.admin_get("/stats/prometheus");
    for line in raw.lines().filter(|line| line.contains("eisodos_")) {
        println!("{line}");
    }
    assert_eq!(value(&scrape, HEALTHY, &backend("backend_a")), Some(1));
    assert_eq!(value(&scrape, EJECTIONS, &backend("backend_c")), Some(0));
    assert_eq!(value(&scrape, EJECTIONS, &backend("backend_b")), Some(1));
}

/// Requests eisodos answers itself, by reason: a missing hash key (400), then nothing healthy
/// (503); the mode and health gauges say all down.
#[test]
fn local_replies_are_counted_by_reason() {
    // One failed probe takes a backend out: no probe may time out on a starved machine.
    let _machine = exclusive::machine();
    let upstreams = Upstream::start_all(&["backend_a", "backend_b"]);
    let envoy = Envoy::builder()
        .upstreams(&upstreams)
        .plugin_config(
            r#"{"policy": "consistent_hash", "hash_key": [{"header": "x-user"}],
                "on_missing_key": "reject",
                "health_check": {"path": "/healthz", "interval_ms": 1000, "timeout_ms": 1000,
                                 "unhealthy_threshold": 1},
                "backends": [{"cluster": "backend_a"}, {"cluster": "backend_b"}]}"#,
        )
        .concurrency(2)
        .start();
    assert_eq!(send(&envoy, "/", 4), [400; 4]);
    for upstream in &upstreams {
        upstream.set_status(503);
    }
    until_scraped(&envoy, "all down", |scrape| {
        value(scrape, MODE, &[]) == Some(3)
            && scrape.family(HEALTHY).all(|sample| sample.value == 0.0)
    });
    let no_healthy = |scrape: &Scrape| {
        value(scrape, LOCAL_REPLIES, &[("reason", "no_healthy_backend")]).unwrap_or(0)
    };
    let missing_key =
        |scrape: &Scrape| value(scrape, LOCAL_REPLIES, &[("reason", "missing_key")]).unwrap_or(0);
    // Every worker follows the record on its own tick: until all have, a request may still be
    // routed (to an upstream answering 503); with its key, so it is never a missing key.
    // Thirty fresh connections in a row answered by eisodos itself: both workers know (the
    // chance one got none of them is 2 x 2^-30).
    let keyed = [("connection", "close"), ("x-user", "42")];
    let all_down_body = |response: &client::Response| {
        response.status == 503 && response.body == "eisodos: no healthy backend\n"
    };
    wait::until(DEADLINE, || {
        let answers = (0..30)
            .map(|_| client::get_with(&envoy.url("/"), &keyed))
            .filter(|response| all_down_body(response))
            .count();
        (answers == 30)
            .then_some(())
            .ok_or(format!("{answers} of 30 answered by eisodos"))
    });
    let before = settled(&envoy, &[LOCAL_REPLIES], |scrape| missing_key(scrape) == 4);
    for _ in 0..30 {
        let response = client::get_with(&envoy.url("/"), &keyed);
        assert!(all_down_body(&response), "{response:?}");
    }
    let expected = no_healthy(&before) + 30;
    let scrape = settled(&envoy, &[LOCAL_REPLIES, REQUESTS], |scrape| {
        no_healthy(scrape) >= expected
    });
    println!("{}", scrape.lines("eisodos_local"));
    assert_eq!(missing_key(&scrape), 4);
    assert_eq!(no_healthy(&scrape), expected);
    let hits: u64 = upstreams.iter().map(|u| u.hits_for("/")).sum();
    assert_eq!(
        scrape.sum(REQUESTS, &[]) as u64,
        hits,
        "only what was routed"
    );
}

/// Least-request counts requests in flight: held requests show in the gauge, per backend, and
/// leave it when released.
#[test]
fn in_flight_shows_held_requests() {
    let _machine = exclusive::machine();
    let upstreams = Upstream::start_all(&["backend_a", "backend_b", "backend_c"]);
    let envoy = Envoy::builder()
        .upstreams(&upstreams)
        .plugin_config(
            r#"{"policy": "least_request", "least_request": {"choice_count": 3},
                "backends": [{"cluster": "backend_a"}, {"cluster": "backend_b"}, {"cluster": "backend_c"}]}"#,
        )
        .concurrency(2)
        .start();
    let in_flight = |scrape: &Scrape| -> Vec<u64> {
        ["backend_a", "backend_b", "backend_c"]
            .iter()
            .map(|name| value(scrape, IN_FLIGHT, &[("backend", name)]).unwrap_or(99))
            .collect()
    };
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let url = envoy.url("/hold");
                scope.spawn(move || client::get(&url).status)
            })
            .collect();
        let held: Vec<u64> = wait::until(DEADLINE, || {
            let held: Vec<u64> = upstreams.iter().map(Upstream::held).collect();
            (held.iter().sum::<u64>() == 4)
                .then_some(held.clone())
                .ok_or(format!("held {held:?}"))
        });
        until_scraped(&envoy, "the held requests in flight", |scrape| {
            in_flight(scrape) == held
        });
        for upstream in &upstreams {
            upstream.release_held();
        }
        for handle in handles {
            assert_eq!(handle.join().expect("client thread"), 200);
        }
    });
    until_scraped(&envoy, "nothing in flight", |scrape| {
        in_flight(scrape) == [0, 0, 0]
    });
    let scrape = settled(&envoy, &[REQUESTS, IN_FLIGHT], sums_to(REQUESTS, 4));
    assert_eq!(in_flight(&scrape), [0, 0, 0]);
    assert_eq!(scrape.sum(REQUESTS, &[]), 4.0);
}
