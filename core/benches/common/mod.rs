//! Setup shared by the benchmarks: configurations, balancers on a fresh store, request pools.
//! Each bench uses part of it.
#![allow(dead_code)]

use eisodos_core::balancer::{Balancer, Decision};
use eisodos_core::config::Config;
use eisodos_core::memory_store::MemoryStore;
use eisodos_core::request_key::StaticRequest;

/// The policies, by their configuration names.
pub const POLICIES: [&str; 5] = [
    "round_robin",
    "least_request",
    "consistent_hash",
    "ip_hash",
    "random",
];

/// Requests per pool: each iteration takes the next one, wrapping.
pub const POOL: usize = 1024;

/// The plugin configuration for `policy` over `n` equal backends `backend_0`…, with active
/// health checking when `health` is set.
pub fn config_json(policy: &str, n: usize, health: bool) -> String {
    let backends: Vec<String> = (0..n)
        .map(|i| format!(r#"{{"cluster": "backend_{i}"}}"#))
        .collect();
    let mut fields = vec![format!(r#""policy": "{policy}""#)];
    if policy == "consistent_hash" {
        fields.push(r#""hash_key": [{"header": "x-user-id"}]"#.to_owned());
    }
    if health {
        fields.push(r#""health_check": {"path": "/healthz"}"#.to_owned());
    }
    fields.push(format!(r#""backends": [{}]"#, backends.join(", ")));
    format!("{{{}}}", fields.join(", "))
}

/// A balancer for `json` on a fresh store: keys created and one tick run (which builds the
/// selection from the health record when health checking is on), as the filter does at
/// configure time.
pub fn balancer_from(json: &str) -> (Balancer, MemoryStore) {
    let store = MemoryStore::new();
    let balancer = balancer_on(json, &store);
    (balancer, store)
}

/// Another worker's balancer for `json` over an existing `store`, set up as
/// [`balancer_from`] does.
pub fn balancer_on(json: &str, store: &MemoryStore) -> Balancer {
    let config = Config::parse(json.as_bytes()).expect("valid configuration");
    let balancer = Balancer::new(config, "bench", 1).expect("valid balancer");
    balancer.create_shared_keys(store).expect("keys created");
    balancer.tick(store, 0);
    balancer
}

/// [`balancer_from`] over [`config_json`].
pub fn balancer(policy: &str, n: usize, health: bool) -> (Balancer, MemoryStore) {
    balancer_from(&config_json(policy, n, health))
}

/// [`POOL`] requests, each carrying a different key for the hashing policies (a user id
/// header, or a client address); keyless for the others.
pub fn requests(policy: &str) -> Vec<StaticRequest> {
    let mut rng = fastrand::Rng::with_seed(42);
    (0..POOL)
        .map(|i| match policy {
            "consistent_hash" => StaticRequest::default()
                .with_header("x-user-id", format!("user-{:016x}", rng.u64(..))),
            "ip_hash" => StaticRequest::default().with_source(&format!(
                "10.{}.{}.{}:{}",
                rng.u8(..),
                rng.u8(..),
                rng.u8(1..255),
                1024 + i
            )),
            _ => StaticRequest::default(),
        })
        .collect()
}

/// One request's worth of balancer work: `choose`, and `release` when the choice was counted
/// (least-request pays it when the stream ends). Returns the chosen index.
pub fn one_request(balancer: &Balancer, store: &MemoryStore, request: &StaticRequest) -> usize {
    match balancer.choose(store, request) {
        Decision::Route(choice) => {
            if choice.counted {
                balancer.release(store, choice.index);
            }
            choice.index
        }
        other => panic!("expected a route, got {other:?}"),
    }
}
