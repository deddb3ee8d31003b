//! The plugin configurations the soak cycles through, one a minute: two backend lists (three
//! and four backends) and, for each, two configurations that differ in everything but the
//! list (policy, caps, the rate), so both kinds of change happen and the set of shared-data
//! keys they can create is fixed: what [`all_keys`] lists.

use eisodos_core::balancer::Balancer;
use serde_json::{json, Value};

/// The plugin's name in the shipped config: the namespace of its shared-data keys.
pub const NAMESPACE: &str = "eisodos";

/// Where eisodos answers its status page (in-flight counts per backend).
pub const STATUS_PATH: &str = "/.eisodos/status";

/// The header the rate limit keys on.
pub const RATE_KEY_HEADER: &str = "x-api-key";

/// The sticky-session cookie.
pub const COOKIE: &str = "eisodos_backend";

/// Rate-limit buckets: every configuration keeps the same number, so the bucket keys
/// (`eisodos.eisodos.rate_limit.<i>`, not fingerprinted) stay the same set.
pub const BUCKETS: u32 = 64;

/// One configuration of the cycle.
#[derive(Debug, Clone)]
pub struct SoakConfig {
    /// Short name for tables and the plot.
    pub name: &'static str,
    /// The plugin configuration's JSON.
    pub json: String,
}

/// The cycle, in order; `backends` are the four upstreams' cluster names.
pub fn cycle(backends: &[&str; 4]) -> Vec<SoakConfig> {
    let three = &backends[..3];
    vec![
        SoakConfig {
            name: "3-least",
            json: config(three, "least_request", None, 20),
        },
        SoakConfig {
            name: "3-rr-capped",
            json: config(three, "round_robin", Some(100), 25),
        },
        SoakConfig {
            name: "4-least",
            json: config(backends, "least_request", None, 20),
        },
        SoakConfig {
            name: "4-rr-capped",
            json: config(backends, "round_robin", Some(100), 25),
        },
    ]
}

/// Every record: active health checks (record, version, probe lease), outlier detection,
/// in-flight counts (least-request, or `max_requests` under round-robin, whose ticket is a
/// record too), a keyed rate limit and sticky sessions.
fn config(backends: &[&str], policy: &str, cap: Option<u32>, rate: u32) -> String {
    let backends: Vec<Value> = backends
        .iter()
        .map(|cluster| match cap {
            Some(cap) => json!({"cluster": cluster, "max_requests": cap}),
            None => json!({"cluster": cluster}),
        })
        .collect();
    let config = json!({
        "policy": policy,
        "backends": backends,
        "health_check": {
            "path": "/healthz", "interval_ms": 1000, "timeout_ms": 500,
            "healthy_threshold": 2, "unhealthy_threshold": 2
        },
        "outlier_detection": {
            "consecutive_failures": 5, "base_ejection_ms": 5000, "max_ejection_percent": 50
        },
        "rate_limit": {
            "requests_per_second": rate, "burst": rate,
            "key": [{"header": RATE_KEY_HEADER}], "buckets": BUCKETS
        },
        "session_affinity": {"cookie": COOKIE},
        "status_path": STATUS_PATH
    });
    config.to_string()
}

/// Every shared-data key the configurations of `cycle` can create, each once, in a stable
/// order (from [`Balancer::shared_keys`], so it follows the filter's own naming), with the
/// number of backends of the configuration it belongs to (for decoding in-flight records).
pub fn all_keys(cycle: &[SoakConfig]) -> Result<Vec<(String, usize)>, String> {
    let mut keys: Vec<(String, usize)> = Vec::new();
    for config in cycle {
        let balancer = Balancer::configure(config.json.as_bytes(), NAMESPACE, 1)
            .map_err(|e| format!("configuration {}: {e}", config.name))?;
        let backends = balancer.config().backends.len();
        for key in balancer.shared_keys() {
            if !keys.iter().any(|(k, _)| k == key) {
                keys.push((key.to_owned(), backends));
            }
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: [&str; 4] = ["a", "b", "c", "d"];

    #[test]
    fn every_configuration_is_valid_and_the_key_set_is_bounded() {
        let keys = all_keys(&cycle(&NAMES)).expect("valid");
        // Two lists: per list health record, its version, probe lease and in-flight table;
        // one round-robin ticket; the buckets and the bucket for requests without a key.
        assert_eq!(keys.len(), 2 * 4 + 1 + BUCKETS as usize + 1, "{keys:?}");
        assert!(keys.iter().any(|(k, _)| k == "eisodos.eisodos.rr_ticket"));
    }
}
