//! Live reconfiguration through ECDS against real Envoy (`--concurrency 2`).

use eisodos_tests::client;
use eisodos_tests::envoy::Envoy;
use eisodos_tests::upstream::Upstream;

fn only(cluster: &str) -> String {
    format!(r#"{{"policy": "round_robin", "backends": [{{"cluster": "{cluster}"}}]}}"#)
}

#[test]
fn the_harness_pushes_a_config_and_reports_a_rejected_one() {
    let upstreams = Upstream::start_all(&["backend_a", "backend_b"]);
    let envoy = Envoy::builder()
        .upstreams(&upstreams)
        .plugin_config(&only("backend_a"))
        .ecds()
        .start();
    let upstream = |envoy: &Envoy| client::get(&envoy.url("/")).header("x-upstream").map(str::to_owned);
    assert_eq!(upstream(&envoy).as_deref(), Some("backend_a"));
    let applied = envoy.reconfigure(&only("backend_b")).expect("accepted");
    eprintln!("applied {applied:?}");
    assert_eq!(upstream(&envoy).as_deref(), Some("backend_b"));
    let rejected = envoy
        .reconfigure(r#"{"policy": "round_robin", "backends": []}"#)
        .expect_err("an empty backend list is refused");
    eprintln!("{rejected}");
    assert!(rejected.contains("backends: is empty"), "{rejected}");
    assert_eq!(upstream(&envoy).as_deref(), Some("backend_b"));
    let applied = envoy.reconfigure(&only("backend_a")).expect("accepted");
    eprintln!("applied {applied:?}");
    assert_eq!(upstream(&envoy).as_deref(), Some("backend_a"));
}
