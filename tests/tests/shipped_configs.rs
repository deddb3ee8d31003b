//! The two shipped Envoy configs (local demo and docker-compose) say the same thing: they may
//! differ only where a container differs from a laptop (addresses, DNS, the .wasm path).

use eisodos_tests::paths;
use serde_json::Value;

fn load(name: &str) -> Value {
    let path = paths::repo_root().join("envoy").join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

/// Blanks the fields allowed to differ.
fn without_deployment_details(mut config: Value) -> Value {
    let blank = |config: &mut Value, pointer: &str| {
        *config
            .pointer_mut(pointer)
            .unwrap_or_else(|| panic!("no {pointer}")) = Value::Null;
    };
    blank(&mut config, "/admin/address/socket_address/address");
    blank(
        &mut config,
        "/static_resources/listeners/0/address/socket_address/address",
    );
    let wasm = "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/\
                http_filters/0/typed_config/config/vm_config/code/local/filename";
    blank(&mut config, wasm);
    let clusters = config["static_resources"]["clusters"]
        .as_array()
        .unwrap()
        .len();
    for i in 0..clusters {
        let cluster = format!("/static_resources/clusters/{i}");
        blank(&mut config, &format!("{cluster}/type"));
        let endpoint = format!(
            "{cluster}/load_assignment/endpoints/0/lb_endpoints/0/endpoint/address/socket_address"
        );
        blank(&mut config, &format!("{endpoint}/address"));
        blank(&mut config, &format!("{endpoint}/port_value"));
    }
    config
}

#[test]
fn compose_config_matches_the_local_one_but_for_deployment_details() {
    let local = without_deployment_details(load("envoy.yaml"));
    let compose = without_deployment_details(load("envoy-compose.yaml"));
    assert_eq!(local, compose);
}

#[test]
fn compose_config_points_at_the_mounted_wasm_and_the_compose_services() {
    let compose = load("envoy-compose.yaml");
    let text = serde_json::to_string(&compose).unwrap();
    assert!(text.contains("\"/etc/envoy/eisodos.wasm\""));
    for service in ["backend_a", "backend_b", "backend_c"] {
        assert!(
            text.contains(&format!("\"address\":\"{service}\"")),
            "{service}"
        );
    }
    let compose_file =
        std::fs::read_to_string(paths::repo_root().join("docker-compose.yml")).unwrap();
    assert!(compose_file.contains("./envoy/envoy-compose.yaml:/etc/envoy/envoy.yaml"));
    assert!(compose_file
        .contains("./target/wasm32-wasip1/release/eisodos.wasm:/etc/envoy/eisodos.wasm"));
}

/// The tags that turn eisodos' encoded stat names into Prometheus labels (see the README's
/// Metrics section), in the order the labels are written.
#[test]
fn the_shipped_config_carries_the_metric_stats_tags() {
    let local = load("envoy.yaml");
    let tags: Vec<(&str, &str)> = local["stats_config"]["stats_tags"]
        .as_array()
        .expect("stats_config.stats_tags")
        .iter()
        .map(|tag| {
            (
                tag["tag_name"].as_str().unwrap(),
                tag["regex"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        tags,
        [
            ("plugin", r"(plugin=\.=(.*?);\.;)"),
            ("backend", r"(backend=\.=(.*?);\.;)"),
            ("result", r"(result=\.=(.*?);\.;)"),
            ("reason", r"(reason=\.=(.*?);\.;)"),
        ]
    );
}
