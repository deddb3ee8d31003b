//! The README's OpenTelemetry tracing block, run as it is written: Envoy on the shipped config
//! with that block added exports a span per request, and every span carries the backend
//! eisodos chose and why.

use std::time::Duration;

use eisodos_tests::collector::Collector;
use eisodos_tests::envoy::Envoy;
use eisodos_tests::upstream::Upstream;
use eisodos_tests::{client, paths, wait};
use serde_json::Value;

/// The line in the README just above the tracing block.
const MARKER: &str = "<!-- tests/tests/tracing.rs runs Envoy with this block";
/// The collector port the README's block names.
const README_PORT: u64 = 4318;

/// The README's tracing block: `tracing` for the connection manager, and `clusters`.
fn readme_block() -> Value {
    let readme = std::fs::read_to_string(paths::repo_root().join("README.md")).unwrap();
    let after = &readme[readme.find(MARKER).expect("the marker in README.md")..];
    let start = after
        .find("```yaml\n")
        .expect("a yaml block after the marker")
        + 8;
    let end = start + after[start..].find("```").expect("the block's end");
    serde_yaml::from_str(&after[start..end]).expect("the README's block is YAML")
}

/// The README's block with its collector port replaced by `port`, everywhere it appears.
fn pointed_at(block: &Value, port: u16) -> Value {
    let text = serde_json::to_string(block).unwrap();
    let from = [
        format!("127.0.0.1:{README_PORT}/"),
        format!("\"port_value\":{README_PORT}"),
    ];
    for needle in &from {
        assert!(text.contains(needle.as_str()), "{needle} in {text}");
    }
    let text = text
        .replace(&from[0], &format!("127.0.0.1:{port}/"))
        .replace(&from[1], &format!("\"port_value\":{port}"));
    serde_json::from_str(&text).unwrap()
}

#[test]
fn every_span_carries_the_backend_and_the_reason() {
    let upstreams = Upstream::start_all(&["backend_a", "backend_b", "backend_c"]);
    let collector = Collector::start();
    let block = pointed_at(&readme_block(), collector.port());
    let mut builder = Envoy::builder()
        .upstreams(&upstreams)
        .hcm_field("tracing", block["tracing"].clone());
    for cluster in block["clusters"].as_array().expect("clusters") {
        builder = builder.extra_cluster(cluster.clone());
    }
    let envoy = builder.start();

    for i in 0..6 {
        let response = client::get_with(&envoy.url(&format!("/t{i}")), &[("connection", "close")]);
        assert_eq!(response.status, 200, "{response:?}");
    }
    // Envoy exports every 5 s, or once 5 spans are waiting: wait for all six.
    let counts = || {
        [
            collector.spans_with("eisodos.reason", "ticket"),
            collector.spans_with("eisodos.backend", "backend_a"),
            collector.spans_with("eisodos.backend", "backend_b"),
            collector.spans_with("eisodos.backend", "backend_c"),
        ]
    };
    wait::until(Duration::from_secs(60), || match counts() {
        [6, ..] => Ok(()),
        other => Err(format!("{other:?} after {} exports", collector.exports())),
    });
    assert_eq!(counts(), [6, 2, 2, 2], "{collector:?}");
    assert_eq!(
        collector.spans_with("upstream_cluster", "backend_a"),
        2,
        "Envoy's own tag agrees"
    );
}
