//! The Envoy configurations compared: the same listener and upstreams, routed either by
//! Envoy's own load balancer over one cluster, or by a Wasm filter writing the cluster header
//! over one cluster per upstream (as eisodos is deployed).

use std::path::Path;

use serde_json::{json, Value};

/// How a variant routes.
#[derive(Debug, Clone)]
pub enum Routing {
    /// One cluster of all upstreams with this `lb_policy` (and a header hash policy for
    /// `RING_HASH`).
    Native {
        /// Envoy's `lb_policy`.
        lb_policy: &'static str,
        /// Extra cluster fields (e.g. `least_request_lb_config`).
        extra: Option<Value>,
    },
    /// A Wasm filter sets `x-eisodos-cluster`; one cluster per backend.
    Filter {
        /// Which .wasm.
        wasm: &'static str,
        /// Its plugin configuration (backends are filled in).
        plugin_config: Value,
        /// How many backend clusters (spread over the upstream ports).
        clusters: usize,
    },
}

const HCM: &str =
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

fn cluster(name: &str, ports: &[u16], lb_policy: &str) -> Value {
    let endpoints: Vec<Value> = ports
        .iter()
        .map(|port| {
            json!({"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}})
        })
        .collect();
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "lb_policy": lb_policy,
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": endpoints}]}
    })
}

/// The full Envoy config of a variant.
pub fn render(
    routing: &Routing,
    listener_port: u16,
    admin_port: u16,
    upstream_ports: &[u16],
    wasm_dir: &Path,
) -> Value {
    let (route_config, http_filters, clusters) = match routing {
        Routing::Native { lb_policy, extra } => {
            let mut route = json!({"cluster": "backends"});
            if *lb_policy == "RING_HASH" {
                route["hash_policy"] = json!([{"header": {"header_name": "x-user-id"}}]);
            }
            // `endpoints_per_port` (a bench knob, not Envoy's): list each port that many times,
            // as distinct endpoints, to compare with eisodos over as many clusters.
            let copies = extra
                .as_ref()
                .and_then(|e| e.get("endpoints_per_port"))
                .and_then(Value::as_u64)
                .unwrap_or(1);
            let ports: Vec<u16> = (0..copies)
                .flat_map(|_| upstream_ports.iter().copied())
                .collect();
            let mut native = cluster("backends", &ports, lb_policy);
            let extra = extra.as_ref().map(|e| {
                let mut e = e.clone();
                if let Some(fields) = e.as_object_mut() {
                    fields.remove("endpoints_per_port");
                }
                e
            });
            if let (Some(Value::Object(fields)), Some(target)) = (&extra, native.as_object_mut()) {
                if fields.contains_key("load_balancing_policy") {
                    // The typed policy replaces the enum.
                    target.remove("lb_policy");
                }
                target.extend(fields.clone());
            }
            (
                json!({"virtual_hosts": [{"name": "all", "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": route}]}]}),
                vec![],
                vec![native],
            )
        }
        Routing::Filter {
            wasm,
            plugin_config,
            clusters,
        } => {
            let names: Vec<String> = (0..*clusters)
                .map(|i| match i {
                    0..=25 => format!("backend_{}", char::from(b'a' + i as u8)),
                    _ => format!("backend_{i}"),
                })
                .collect();
            let mut plugin = plugin_config.clone();
            if plugin.get("backends").is_none() {
                plugin["backends"] = names.iter().map(|n| json!({"cluster": n})).collect();
            }
            let filter = json!({
                "name": "envoy.filters.http.wasm",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                    "config": {
                        "name": "eisodos", "root_id": "eisodos",
                        "vm_config": {"vm_id": "eisodos", "runtime": "envoy.wasm.runtime.v8",
                            "code": {"local": {"filename": wasm_dir.join(wasm).to_string_lossy()}}},
                        "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                            "value": plugin.to_string()}
                    }
                }
            });
            let clusters = names
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    let port = upstream_ports[i % upstream_ports.len()];
                    cluster(name, &[port], "ROUND_ROBIN")
                })
                .collect();
            (
                json!({"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                    {"match": {"prefix": "/", "headers": [{"name": "x-eisodos-cluster", "present_match": true}]},
                     "route": {"cluster_header": "x-eisodos-cluster"}},
                    {"match": {"prefix": "/"}, "direct_response": {"status": 503}}]}]}),
                vec![filter],
                clusters,
            )
        }
    };
    let mut filters = http_filters;
    filters.push(
        json!({"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}),
    );
    json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [{
                "name": "bench",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": listener_port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": HCM,
                        "stat_prefix": "bench",
                        "use_remote_address": true,
                        "early_header_mutation_extensions": [{
                            "name": "envoy.http.early_header_mutation.header_mutation",
                            "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.http.early_header_mutation.header_mutation.v3.HeaderMutation",
                                "mutations": [{"remove": "x-eisodos-cluster"}]}}],
                        "route_config": route_config,
                        "http_filters": filters
                    }
                }]}]
            }],
            "clusters": clusters
        }
    })
}
