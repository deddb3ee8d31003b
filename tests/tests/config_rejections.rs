//! A bad plugin configuration makes Envoy refuse the whole config, with one log line that
//! names the field and the reason; `eisodos check` prints the same line.

use eisodos_cli::check;
use eisodos_cli::find::Options;
use eisodos_tests::envoy::Envoy;
use eisodos_tests::upstream::Upstream;

/// Runs `envoy --mode validate` with `plugin_config` and returns the filter's rejection line,
/// after checking that `eisodos check` reports the same.
fn rejection(plugin_config: &str) -> String {
    let a = Upstream::builder("backend_a").start();
    let validation = Envoy::builder()
        .upstreams([&a])
        .plugin_config(plugin_config)
        .validate();
    assert!(
        !validation.success,
        "Envoy accepted {plugin_config}:\n{}",
        validation.output
    );
    assert!(
        validation.output.contains("Unable to create Wasm plugin"),
        "Envoy should refuse the plugin:\n{}",
        validation.output
    );
    let line = validation
        .output
        .lines()
        .find(|line| line.contains("invalid configuration: "))
        .unwrap_or_else(|| panic!("no rejection line in:\n{}", validation.output));
    let message = line.split("invalid configuration: ").nth(1).unwrap();
    let checked = check::file("plugin.json", plugin_config, Options::default()).unwrap();
    let lines: Vec<String> = checked.iter().map(|c| c.line("plugin.json")).collect();
    assert_eq!(
        lines,
        [format!("plugin.json: invalid configuration: {message}")],
        "eisodos check and Envoy"
    );
    message.to_owned()
}

#[test]
fn not_json() {
    let message = rejection("backends: [backend_a]");
    assert!(
        message.starts_with("configuration: is not valid JSON"),
        "{message}"
    );
}

#[test]
fn unknown_policy() {
    let message = rejection(r#"{"policy": "fastest", "backends": [{"cluster": "backend_a"}]}"#);
    assert!(
        message.starts_with("policy: unknown variant `fastest`"),
        "{message}"
    );
}

#[test]
fn no_backends() {
    let message = rejection(r#"{"backends": []}"#);
    assert_eq!(
        message,
        "backends: is empty; at least one backend is required"
    );
}

#[test]
fn duplicate_cluster() {
    let message = rejection(
        r#"{"backends": [{"cluster": "backend_a"}, {"cluster": "backend_a", "weight": 2}]}"#,
    );
    assert_eq!(
        message,
        r#"backends[1].cluster: duplicate cluster "backend_a" (already backends[0])"#
    );
}

#[test]
fn weight_out_of_range() {
    let message = rejection(r#"{"backends": [{"cluster": "backend_a", "weight": 0}]}"#);
    assert_eq!(
        message,
        "backends[0].weight: must be between 1 and 1000, got 0"
    );
    let message = rejection(r#"{"backends": [{"cluster": "backend_a", "weight": 1001}]}"#);
    assert_eq!(
        message,
        "backends[0].weight: must be between 1 and 1000, got 1001"
    );
}

#[test]
fn unknown_field() {
    let message = rejection(r#"{"backends": [{"cluster": "backend_a"}], "stickyness": true}"#);
    assert!(
        message.starts_with("stickyness: unknown field `stickyness`"),
        "{message}"
    );
}

/// Envoy Gateway's route-rule clusters carry no host: with health checks on and no
/// authority to use, the probes would have none, so the configuration is refused.
#[test]
fn envoy_gateway_cluster_without_an_authority() {
    let message = rejection(
        r#"{"health_check": {"path": "/healthz"},
            "backends": [{"cluster": "backend_a"}, {"cluster": "httproute/default/web/rule/0"}]}"#,
    );
    assert_eq!(
        message,
        "backends[1].authority: not set, and health checks are on: the cluster name \
         \"httproute/default/web/rule/0\" is an Envoy Gateway route-rule cluster, which carries \
         no host (Envoy Gateway's own health checks default to the route's hostname); set this \
         (or health_check.authority) to the Host the backend answers to"
    );
}

/// Not only validation: a running Envoy refuses to start with it.
#[test]
fn envoy_does_not_start_with_a_bad_config() {
    let a = Upstream::builder("backend_a").start();
    let err = Envoy::builder()
        .upstreams([&a])
        .plugin_config(r#"{"backends": [{"cluster": "backend_a", "weight": -3}]}"#)
        .try_start()
        .expect_err("Envoy started with a negative weight");
    assert!(
        err.contains("invalid configuration: backends[0].weight: invalid value: integer `-3`"),
        "{err}"
    );
}
