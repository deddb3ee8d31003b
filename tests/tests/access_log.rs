//! The decision in the access log, against real Envoy on the shipped config: every request's
//! line names the backend eisodos chose (the header it set, and the cluster Envoy routed to)
//! and why (the filter state it left), and eisodos' own answers say why they were given.

use std::time::Duration;

use eisodos_tests::envoy::Envoy;
use eisodos_tests::upstream::Upstream;
use eisodos_tests::{client, paths, wait};
use serde_json::Value;

const NAMES: [&str; 3] = ["backend_a", "backend_b", "backend_c"];

fn start(upstreams: &[Upstream], plugin_config: Option<&str>) -> Envoy {
    let builder = Envoy::builder().upstreams(upstreams).concurrency(2);
    match plugin_config {
        Some(config) => builder.plugin_config(config),
        None => builder,
    }
    .start()
}

/// Sends a GET for `path` on a new connection; returns the status and the upstream that
/// answered (`None` for a local reply).
fn get(envoy: &Envoy, path: &str, headers: &[(&str, &str)]) -> (u16, Option<String>) {
    let mut headers = headers.to_vec();
    headers.push(("connection", "close"));
    let response = client::get_with(&envoy.url(path), &headers);
    let upstream = response.header("x-upstream").map(str::to_owned);
    (response.status, upstream)
}

/// The access-log lines of the requests for `paths`, in that order, once Envoy has flushed
/// them all (the harness has Envoy flush its log files every 100 ms; the deadline is far beyond that).
/// Each path must appear on exactly one line.
fn lines_for(envoy: &Envoy, paths: &[String]) -> Vec<Value> {
    wait::until(Duration::from_secs(60), || {
        let lines = envoy.access_log();
        paths
            .iter()
            .map(|path| {
                let mut found = lines.iter().filter(|line| line["path"] == path.as_str());
                match (found.next(), found.next()) {
                    (Some(line), None) => Ok(line.clone()),
                    (Some(_), Some(_)) => Err(format!("two lines for {path}: {lines:#?}")),
                    (None, _) => Err(format!("no line for {path} yet: {lines:#?}")),
                }
            })
            .collect()
    })
}

/// The fields of a line this test reads, as (name, value) with JSON null as `None`.
fn decision(line: &Value) -> [(&'static str, Option<String>); 5] {
    let field = |name: &str| line[name].as_str().map(str::to_owned);
    [
        ("eisodos_backend", field("eisodos_backend")),
        ("eisodos_reason", field("eisodos_reason")),
        ("upstream_cluster", field("upstream_cluster")),
        (
            "response_code",
            line["response_code"].as_u64().map(|c| c.to_string()),
        ),
        ("response_code_details", field("response_code_details")),
    ]
}

fn expected(
    backend: Option<&str>,
    reason: &str,
    code: u16,
    details: &str,
) -> [(&'static str, Option<String>); 5] {
    [
        ("eisodos_backend", backend.map(str::to_owned)),
        ("eisodos_reason", Some(reason.to_owned())),
        ("upstream_cluster", backend.map(str::to_owned)),
        ("response_code", Some(code.to_string())),
        ("response_code_details", Some(details.to_owned())),
    ]
}

#[test]
fn round_robin_logs_each_backend_and_its_ticket() {
    let upstreams = Upstream::start_all(&NAMES);
    let envoy = start(&upstreams, None);
    let paths: Vec<String> = (0..6).map(|i| format!("/rr{i}")).collect();
    let answered: Vec<String> = paths
        .iter()
        .map(|path| {
            // A client's header changes nothing, in the log either.
            let (status, upstream) = get(&envoy, path, &[("x-eisodos-cluster", "backend_c")]);
            assert_eq!(status, 200, "{path}");
            upstream.expect("x-upstream")
        })
        .collect();
    let lines = lines_for(&envoy, &paths);
    eprintln!("{}", lines[0]);
    for ((path, upstream), line) in paths.iter().zip(&answered).zip(&lines) {
        assert_eq!(
            decision(line),
            expected(Some(upstream), "ticket", 200, "via_upstream"),
            "{path}: {line:#}"
        );
        assert_eq!(line["response_flags"], "-", "{line:#}");
    }
    let served: Vec<u64> = upstreams.iter().map(Upstream::hits).collect();
    assert_eq!(served, [2, 2, 2], "the lines name the backends that served");
}

#[test]
fn a_hashed_request_logs_hash_and_one_without_its_key_fallback() {
    let upstreams = Upstream::start_all(&NAMES);
    let config = r#"{"policy": "consistent_hash", "hash_key": [{"header": "x-user-id"}],
        "backends": [{"cluster": "backend_a"}, {"cluster": "backend_b"}, {"cluster": "backend_c"}]}"#;
    let envoy = start(&upstreams, Some(config));
    let keyed = ["/keyed0".to_owned(), "/keyed1".to_owned()];
    let (status, home) = get(&envoy, &keyed[0], &[("x-user-id", "user-42")]);
    assert_eq!(status, 200);
    let (status, again) = get(&envoy, &keyed[1], &[("x-user-id", "user-42")]);
    assert_eq!(status, 200);
    assert_eq!(home, again, "the same key, the same backend");
    let (status, unkeyed) = get(&envoy, "/unkeyed", &[]);
    assert_eq!(status, 200);

    let lines = lines_for(
        &envoy,
        &[keyed[0].clone(), keyed[1].clone(), "/unkeyed".into()],
    );
    eprintln!("{}\n{}", lines[0], lines[2]);
    for line in &lines[..2] {
        assert_eq!(
            decision(line),
            expected(home.as_deref(), "hash", 200, "via_upstream"),
            "{line:#}"
        );
    }
    assert_eq!(
        decision(&lines[2]),
        expected(unkeyed.as_deref(), "fallback", 200, "via_upstream"),
        "no key: round-robin placed it"
    );
}

#[test]
fn a_local_reply_logs_why_and_no_backend() {
    let upstreams = Upstream::start_all(&NAMES);
    // Probes fail from the start and every backend starts unhealthy: nothing may take a
    // request at any time, no waiting for health to change.
    for upstream in &upstreams {
        upstream.set_status(503);
    }
    let config = r#"{"health_check": {"path": "/healthz", "interval_ms": 1000,
            "initial_state": "unhealthy"},
        "backends": [{"cluster": "backend_a"}, {"cluster": "backend_b"}, {"cluster": "backend_c"}]}"#;
    let envoy = start(&upstreams, Some(config));
    let (status, upstream) = get(&envoy, "/refused", &[("x-eisodos-cluster", "backend_a")]);
    assert_eq!((status, upstream), (503, None));

    let lines = lines_for(&envoy, &["/refused".to_owned()]);
    eprintln!("{}", lines[0]);
    assert_eq!(
        decision(&lines[0]),
        expected(
            None,
            "no_healthy_backend",
            503,
            "eisodos_no_healthy_backend"
        )
    );
    assert_eq!(lines[0]["response_flags"], "-", "{:#}", lines[0]);
    assert_eq!(upstreams.iter().map(Upstream::hits).sum::<u64>(), 0);
}

#[test]
fn the_readme_shows_the_shipped_access_log() {
    let readme = std::fs::read_to_string(paths::repo_root().join("README.md")).unwrap();
    let marker = "<!-- the connection manager's access_log in envoy/envoy.yaml";
    let after = &readme[readme.find(marker).expect("the marker in README.md")..];
    let start = after
        .find("```yaml\n")
        .expect("a yaml block after the marker")
        + 8;
    let end = start + after[start..].find("```").expect("the block's end");
    let shown: Value = serde_yaml::from_str(&after[start..end]).unwrap();

    let shipped = std::fs::read_to_string(paths::shipped_config()).unwrap();
    let shipped: Value = serde_yaml::from_str(&shipped).unwrap();
    let hcm = "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config";
    assert_eq!(
        shown["access_log"],
        shipped.pointer(hcm).unwrap()["access_log"]
    );
}
