//! Smoke tests of the harness itself, against a real Envoy.

use eisodos_tests::client;
use eisodos_tests::envoy::Envoy;
use eisodos_tests::upstream::Upstream;

/// Without the Wasm filter nothing sets the cluster header, and a client cannot set it
/// either: every request gets the catch-all 503 and no upstream sees it.
#[test]
fn without_filter_a_client_cannot_pick_the_cluster() {
    let a = Upstream::builder("backend_a").start();
    let b = Upstream::builder("backend_b").start();
    let envoy = Envoy::builder()
        .upstreams([&a, &b])
        .without_filter()
        .start();

    let response = client::get_with(&envoy.url("/a"), &[("x-eisodos-cluster", "backend_a")]);
    assert_eq!(response.status, 503, "{response:?}");
    assert_eq!(response.body, "eisodos: no backend selected\n");
    assert_eq!(response.header("x-upstream"), None);
    assert_eq!((a.hits(), b.hits()), (0, 0));
}

/// A dropped upstream refuses connections.
#[test]
fn dropped_upstream_refuses_connections() {
    let a = Upstream::builder("backend_a").start();
    let url = format!("http://127.0.0.1:{}/x", a.port());
    assert_eq!(client::get(&url).body, "backend_a\n");
    a.set_status(503);
    assert_eq!(client::get(&url).status, 503);
    drop(a);
    assert!(client::try_get_with(&url, &[]).is_err());
}

/// The default plugin configuration (the shipped one, backends = the upstreams) validates.
#[test]
fn validate_accepts_the_default_config() {
    let a = Upstream::builder("backend_a").start();
    let validation = Envoy::builder().upstreams([&a]).validate();
    assert!(validation.success, "{}", validation.output);
}
