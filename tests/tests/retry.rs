//! `retry` and `timeout_ms` against real Envoy (`--concurrency 2`): the router retries a
//! failed try as configured (attempts counted at the upstream), `num_retries` caps them, the
//! per-try and overall timeouts answer 504 long before a slow upstream would, and a client's
//! own router headers change nothing.

use std::time::{Duration, Instant};

use eisodos_tests::client::Response;
use eisodos_tests::envoy::{Envoy, EnvoyBuilder};
use eisodos_tests::upstream::{Upstream, FAIL_FIRST_PATH};
use eisodos_tests::{exclusive, raw};
use serde_json::{json, Value};

/// The router headers a client would send to raise its own limits.
const FORGED: [(&str, &str); 6] = [
    ("x-envoy-retry-on", "5xx,reset,connect-failure"),
    ("x-envoy-max-retries", "10"),
    ("x-envoy-upstream-rq-per-try-timeout-ms", "100000"),
    ("x-envoy-upstream-rq-timeout-ms", "100000"),
    ("x-envoy-retriable-status-codes", "503"),
    ("x-envoy-hedge-on-per-try-timeout", "true"),
];

fn envoy(upstream: &Upstream, fields: &str) -> Envoy {
    builder(upstream, fields).start()
}

fn builder(upstream: &Upstream, fields: &str) -> EnvoyBuilder {
    Envoy::builder()
        .upstreams([upstream])
        .plugin_config(&format!(
            r#"{{"policy": "round_robin", {fields} "backends": [{{"cluster": "backend_a"}}]}}"#
        ))
        .concurrency(2)
}

/// The early header removal of the cluster header only (not of the router headers).
fn cluster_header_removal_only() -> Value {
    json!([{
        "name": "envoy.http.early_header_mutation.header_mutation",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.http.early_header_mutation.header_mutation.v3.HeaderMutation",
            "mutations": [{"remove": "x-eisodos-cluster"}]
        }
    }])
}

/// An Envoy that honours a client's router headers: they are not removed early, and the
/// loopback counts as an internal address, whose `x-envoy-*` headers the connection manager
/// keeps. Whatever protects the upstream here, eisodos does.
fn trusting(upstream: &Upstream, fields: &str) -> Envoy {
    builder(upstream, fields)
        .hcm_field(
            "early_header_mutation_extensions",
            cluster_header_removal_only(),
        )
        .hcm_field(
            "internal_address_config",
            json!({"cidr_ranges": [{"address_prefix": "127.0.0.0", "prefix_len": 8}]}),
        )
        .start()
}

/// One GET on a connection of its own, so requests spread over both workers.
fn get(envoy: &Envoy, path: &str, headers: &[(&str, &str)]) -> Response {
    raw::get_from(
        std::net::Ipv4Addr::LOCALHOST,
        envoy.listener_port(),
        path,
        headers,
    )
    .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

#[test]
fn a_failed_try_is_retried_and_num_retries_caps_the_attempts() {
    let upstream = Upstream::builder("backend_a").start();
    let envoy = trusting(
        &upstream,
        r#""retry": {"retry_on": "5xx", "num_retries": 2},"#,
    );

    // 503 then 200: the client sees the 200, the upstream two attempts.
    for i in 0..6 {
        let path = format!("{FAIL_FIRST_PATH}/{i}");
        let response = get(&envoy, &path, &[]);
        assert_eq!(response.status, 200, "{path}: {response:?}");
        assert_eq!(upstream.hits_for(&path), 2, "{path}: one retry");
    }

    // Always 503: one try and two retries, then the 503 goes to the client.
    upstream.set_status(503);
    for i in 0..4 {
        let path = format!("/down/{i}");
        assert_eq!(get(&envoy, &path, &[]).status, 503);
        assert_eq!(upstream.hits_for(&path), 3, "{path}: 1 + num_retries");
    }
    // A client asking for ten retries still gets two.
    for i in 0..4 {
        let path = format!("/forged/{i}");
        assert_eq!(get(&envoy, &path, &FORGED).status, 503);
        assert_eq!(
            upstream.hits_for(&path),
            3,
            "{path}: the client's headers are gone"
        );
    }
    let retries = envoy
        .stat("cluster.backend_a.upstream_rq_retry")
        .unwrap_or(0);
    assert_eq!(retries, 6 + 4 * 2 + 4 * 2, "Envoy's own count of retries");
}

/// Without `retry`, eisodos sets nothing and the route has no retry policy: one attempt
/// whatever a client sends. Who removes a client's router headers then: the shipped config's
/// `early_header_mutation_extensions`, and, with `use_remote_address: true`, Envoy's
/// connection manager for every client it takes for external (Envoy 1.40's default
/// `internal_address_config` is empty, so the loopback too). A client whose address is
/// configured as internal gets its own retries: 1 + 10 attempts here.
#[test]
fn with_retry_off_the_clients_headers_count_only_from_an_internal_address() {
    let upstream = Upstream::builder("backend_a").status(503).start();
    let shipped = envoy(&upstream, "");
    assert_eq!(get(&shipped, "/shipped", &FORGED).status, 503);
    assert_eq!(upstream.hits_for("/shipped"), 1, "removed early");
    drop(shipped);

    let external = builder(&upstream, "")
        .hcm_field(
            "early_header_mutation_extensions",
            cluster_header_removal_only(),
        )
        .start();
    assert_eq!(get(&external, "/external", &FORGED).status, 503);
    assert_eq!(
        upstream.hits_for("/external"),
        1,
        "use_remote_address: the loopback client is external, its x-envoy-* are stripped"
    );
    drop(external);

    let trusted = trusting(&upstream, "");
    assert_eq!(get(&trusted, "/internal", &FORGED).status, 503);
    assert_eq!(
        upstream.hits_for("/internal"),
        11,
        "an internal client's x-envoy-max-retries: 10 is honoured"
    );
}

/// With `timeout_ms` alone, eisodos sets no retry header but removes the client's: one attempt
/// where the same Envoy without eisodos' removal makes eleven (above).
#[test]
fn a_timeout_alone_still_removes_a_clients_retries() {
    let upstream = Upstream::builder("backend_a").status(503).start();
    let envoy = trusting(&upstream, r#""timeout_ms": 60000,"#);
    for i in 0..4 {
        let path = format!("/forged/{i}");
        assert_eq!(get(&envoy, &path, &FORGED).status, 503);
        assert_eq!(upstream.hits_for(&path), 1, "{path}: removed by eisodos");
    }
}

#[test]
fn per_try_and_overall_timeouts_answer_504_long_before_a_slow_upstream() {
    let _machine = exclusive::machine();
    let upstream = Upstream::builder("backend_a").start();
    // The upstream sleeps this long when asked (x-delay-ms); the timeouts are far below it.
    let slow = [("x-delay-ms", "4000")];
    let sleep = Duration::from_millis(4000);

    let per_try = trusting(
        &upstream,
        r#""retry": {"retry_on": "5xx", "num_retries": 2, "per_try_timeout_ms": 300},
           "timeout_ms": 60000,"#,
    );
    let started = Instant::now();
    let response = get(&per_try, "/per-try", &slow);
    let took = started.elapsed();
    assert_eq!(response.status, 504, "{response:?}");
    assert_eq!(
        upstream.hits_for("/per-try"),
        3,
        "each try timed out and was retried"
    );
    assert!(
        took < sleep / 2,
        "{took:?}: three tries of 300 ms, not one of 4 s"
    );
    assert_eq!(get(&per_try, "/fast", &[]).status, 200);
    drop(per_try);

    let overall = trusting(&upstream, r#""timeout_ms": 300,"#);
    let started = Instant::now();
    let response = get(&overall, "/overall", &slow);
    let took = started.elapsed();
    assert_eq!(response.status, 504, "{response:?}");
    assert_eq!(upstream.hits_for("/overall"), 1);
    assert!(took < sleep / 4, "{took:?}: 300 ms, not 4 s");
    // The client cannot lengthen it.
    let started = Instant::now();
    let response = get(
        &overall,
        "/overall-forged",
        &[
            ("x-delay-ms", "4000"),
            ("x-envoy-upstream-rq-timeout-ms", "100000"),
        ],
    );
    assert_eq!(response.status, 504, "{response:?}");
    assert!(started.elapsed() < sleep / 4);
    assert_eq!(get(&overall, "/fast", &[]).status, 200);
}

/// The route and the aggregate clusters of the shipped example `envoy/envoy-retry.yaml`.
fn example() -> (Value, Vec<Value>) {
    let path = eisodos_tests::paths::repo_root().join("envoy/envoy-retry.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let config: Value = serde_yaml::from_str(&text).unwrap();
    let route_config = config
        .pointer(
            "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/route_config",
        )
        .unwrap()
        .clone();
    let aggregates = config["static_resources"]["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|cluster| cluster["name"].as_str().unwrap().starts_with("retry_"))
        .cloned()
        .collect();
    (route_config, aggregates)
}

/// Round-robin over three backends, the first answering 503, with retries: per
/// `retry_cluster` (and the example's route and aggregates), or not.
fn three_backends(upstreams: &[Upstream], retry_clusters: bool) -> Envoy {
    let (route_config, aggregates) = example();
    let backends: Vec<String> = upstreams
        .iter()
        .map(|upstream| {
            let name = upstream.name();
            match retry_clusters {
                true => format!(
                    r#"{{"cluster": "{name}", "retry_cluster": "retry_{}"}}"#,
                    &name[name.len() - 1..]
                ),
                false => format!(r#"{{"cluster": "{name}"}}"#),
            }
        })
        .collect();
    let mut builder = Envoy::builder()
        .upstreams(upstreams)
        .plugin_config(&format!(
            r#"{{"policy": "round_robin", "retry": {{"retry_on": "5xx", "num_retries": 2}},
                "backends": [{}]}}"#,
            backends.join(", ")
        ))
        .concurrency(2)
        .hcm_field("route_config", route_config);
    for aggregate in aggregates {
        builder = builder.extra_cluster(aggregate);
    }
    builder.start()
}

/// With `retry_cluster`, a request eisodos sent to a failing backend is retried on the next
/// backend of its aggregate: every client gets a 200; each request the failing backend got
/// costs one attempt there and one on the next backend. Without it (same route, same
/// retries), the retries stay on the failing backend: three attempts there, and a 503.
#[test]
fn a_retry_cluster_moves_the_retry_to_another_backend() {
    let names = ["backend_a", "backend_b", "backend_c"];
    let upstreams: Vec<Upstream> = names.iter().map(|n| Upstream::builder(n).start()).collect();
    upstreams[0].set_status(503);
    let envoy = three_backends(&upstreams, true);
    let answered: Vec<String> = (0..30)
        .map(|i| {
            let response = get(&envoy, &format!("/moved/{i}"), &[]);
            assert_eq!(response.status, 200, "request {i}: {response:?}");
            response.header("x-upstream").unwrap().to_owned()
        })
        .collect();
    let hits: Vec<u64> = upstreams.iter().map(Upstream::hits).collect();
    assert_eq!(
        hits,
        [10, 20, 10],
        "a's ten requests: one try on a, the retry on b"
    );
    assert_eq!(answered.iter().filter(|u| *u == "backend_a").count(), 0);
    assert_eq!(envoy.stat("cluster.retry_a.upstream_rq_retry"), Some(10));
    drop(envoy);

    let within = three_backends(&upstreams, false);
    let statuses: Vec<u16> = (0..30)
        .map(|i| get(&within, &format!("/within/{i}"), &[]).status)
        .collect();
    assert_eq!(
        statuses.iter().filter(|&&s| s == 503).count(),
        10,
        "{statuses:?}"
    );
    let after: Vec<u64> = upstreams.iter().map(Upstream::hits).collect();
    assert_eq!(
        [after[0] - hits[0], after[1] - hits[1], after[2] - hits[2]],
        [30, 10, 10],
        "retried within backend_a's cluster: 1 + 2 attempts each"
    );
}
