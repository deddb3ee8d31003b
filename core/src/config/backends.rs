//! `backends`: the Envoy clusters requests are spread over.

use std::collections::HashMap;

use super::json::Object;
use super::{host, ConfigError, MAX_NAME_LEN};

/// Most backends one filter balances over. Keeps per-configuration memory bounded.
pub const MAX_BACKENDS: usize = 1000;
/// Backend weights lie in `1..=MAX_WEIGHT`.
pub const MAX_WEIGHT: u32 = 1000;
/// A backend's `max_requests` lies in `1..=MAX_MAX_REQUESTS`: far above what one Envoy process
/// keeps in flight, and small enough that a count plus every worker's pending change stays
/// far from `u32::MAX`.
pub const MAX_MAX_REQUESTS: u32 = 1_000_000;

/// A backend: an Envoy cluster, its weight, and what its probes say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// The Envoy cluster the request goes to; written into the cluster header.
    pub cluster: String,
    /// Relative share of requests, `1..=MAX_WEIGHT`.
    pub weight: u32,
    /// Takes traffic only when no primary backend is healthy.
    pub backup: bool,
    /// The `:authority` (Host) of this backend's probes, as configured: it overrides
    /// `health_check.authority`. See [`HealthCheckConfig::probe_authorities`] for the one used.
    ///
    /// [`HealthCheckConfig::probe_authorities`]: super::HealthCheckConfig::probe_authorities
    pub authority: Option<String>,
    /// The most requests in flight on this backend at once, all workers of the Envoy process
    /// together (Envoy's circuit breaker `max_requests`, nginx's `max_conns`); `None`: no cap.
    /// A backend at its cap is skipped; when every backend a request may go to is, the
    /// request is answered 503 `circuit_open`.
    pub max_requests: Option<u32>,
    /// With `retry`: the cluster written into the cluster header instead of [`Self::cluster`],
    /// an aggregate cluster listing this backend's cluster first and the others after, so
    /// Envoy's retries move to another backend (see the README's "Retries and timeouts").
    pub retry_cluster: Option<String>,
}

/// `backends`: 1 to [`MAX_BACKENDS`] distinct clusters, not all backups.
pub(super) fn read(top: &mut Object<'_>) -> Result<Vec<Backend>, ConfigError> {
    let Some(at) = top.required("backends")? else {
        // `top.finish()` reports it missing.
        return Ok(Vec::new());
    };
    let items = at.array_within(MAX_BACKENDS, "entries", "at least one backend is required")?;
    let mut backends = Vec::with_capacity(items.len());
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(items.len());
    for (i, item) in items.enumerate() {
        let mut backend = item.object()?;
        let cluster = match backend.required("cluster")? {
            Some(cluster) => {
                let name = cluster.str()?;
                if let Some(reason) = cluster_name_problem(name) {
                    return Err(cluster.error(reason));
                }
                if let Some(first) = seen.insert(name, i) {
                    return Err(cluster.error(format!(
                        "duplicate cluster \"{name}\" (already {}[{first}])",
                        at.path()
                    )));
                }
                name.to_owned()
            }
            // `backend.finish()` reports it missing.
            None => String::new(),
        };
        // Defaults without `Option` in serde's day: `null` is a type error.
        let weight = match backend.get("weight")? {
            Some(weight) => weight.u32_in(1..=MAX_WEIGHT)?,
            None => 1,
        };
        let backup = match backend.get("backup")? {
            Some(backup) => backup.bool()?,
            None => false,
        };
        let authority = match backend.optional("authority")? {
            Some(authority) => {
                let value = authority.string()?;
                if let Some(reason) = host::host_problem(&value) {
                    return Err(authority.error(reason));
                }
                Some(value)
            }
            None => None,
        };
        let max_requests = backend.u32_in("max_requests", 1..=MAX_MAX_REQUESTS)?;
        let retry_cluster = match backend.optional("retry_cluster")? {
            Some(retry_cluster) => {
                let name = retry_cluster.str()?;
                if let Some(reason) = cluster_name_problem(name) {
                    return Err(retry_cluster.error(reason));
                }
                Some(name.to_owned())
            }
            None => None,
        };
        backend.finish()?;
        backends.push(Backend {
            cluster,
            weight,
            backup,
            authority,
            max_requests,
            retry_cluster,
        });
    }
    if backends.iter().all(|backend| backend.backup) {
        return Err(at.error(
            "are all backups; at least one must be a primary (\"backup\": false)".to_owned(),
        ));
    }
    Ok(backends)
}

/// Checks `backends[].retry_cluster` against the rest: only with `retry` (without it Envoy
/// would not retry), and never a name that would send a first try to another backend: not
/// any backend's cluster, not another backend's retry cluster.
pub(super) fn check_retry_clusters(
    backends: &[Backend],
    retry_on: bool,
) -> Result<(), ConfigError> {
    for (i, backend) in backends.iter().enumerate() {
        let Some(name) = &backend.retry_cluster else {
            continue;
        };
        let field = format!("backends[{i}].retry_cluster");
        if !retry_on {
            return Err(ConfigError::new(
                field,
                "applies only with retry (Envoy retries only when told to); set retry or remove this",
            ));
        }
        let clash = backends.iter().enumerate().find(|(j, other)| {
            other.cluster == *name || (*j != i && other.retry_cluster.as_ref() == Some(name))
        });
        if let Some((j, _)) = clash {
            return Err(ConfigError::new(
                field,
                format!(
                    "\"{name}\" is also backends[{j}]'s cluster or retry cluster; each backend \
                     needs an aggregate cluster of its own that lists its cluster first"
                ),
            ));
        }
    }
    Ok(())
}

/// Why `name` cannot be a cluster name, if it cannot.
fn cluster_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("is empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Some(format!("is longer than {MAX_NAME_LEN} bytes"));
    }
    // The name travels in a header value: printable ASCII without spaces keeps it intact.
    if !name.bytes().all(|c| c.is_ascii_graphic()) {
        return Some(format!(
            "\"{}\" has a character that cannot go in a header (printable ASCII without spaces only)",
            name.escape_default()
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{parse, rejected};

    #[test]
    fn no_backends() {
        let err = rejected(r#"{"backends": []}"#);
        assert_eq!(err.field, "backends");
        let err = rejected(r#"{"policy": "round_robin"}"#);
        assert_eq!(err.field, "configuration");
        assert!(err.reason.contains("missing field `backends`"), "{err}");
    }

    #[test]
    fn too_many_backends() {
        let backends: Vec<String> = (0..=MAX_BACKENDS)
            .map(|i| format!(r#"{{"cluster": "c{i}"}}"#))
            .collect();
        let err = rejected(&format!(r#"{{"backends": [{}]}}"#, backends.join(",")));
        assert_eq!(err.field, "backends");
    }

    #[test]
    fn duplicate_cluster() {
        let err =
            rejected(r#"{"backends": [{"cluster": "a"}, {"cluster": "b"}, {"cluster": "a"}]}"#);
        assert_eq!(err.field, "backends[2].cluster");
        assert!(err.reason.contains("duplicate"), "{err}");
        assert!(err.reason.contains("backends[0]"), "{err}");
    }

    #[test]
    fn weight_out_of_range() {
        for weight in ["0", "1001"] {
            let json = format!(
                r#"{{"backends": [{{"cluster": "a"}}, {{"cluster": "b", "weight": {weight}}}]}}"#
            );
            let err = rejected(&json);
            assert_eq!(err.field, "backends[1].weight");
            assert!(err.reason.contains("between 1 and 1000"), "{err}");
        }
        for weight in ["-1", "1.5", "\"2\"", "99999999999"] {
            let json = format!(r#"{{"backends": [{{"cluster": "a", "weight": {weight}}}]}}"#);
            assert_eq!(rejected(&json).field, "backends[0].weight", "{weight}");
        }
    }

    #[test]
    fn weights_at_the_bounds_are_accepted() {
        parse(r#"{"backends": [{"cluster": "a", "weight": 1}, {"cluster": "b", "weight": 1000}]}"#)
            .unwrap();
    }

    #[test]
    fn max_requests_out_of_range() {
        for value in ["0", "1000001", "-1", "1.5", "\"2\"", "true"] {
            let json = format!(
                r#"{{"backends": [{{"cluster": "a"}}, {{"cluster": "b", "max_requests": {value}}}]}}"#
            );
            let err = rejected(&json);
            assert_eq!(err.field, "backends[1].max_requests", "{value}");
        }
        let err = rejected(r#"{"backends": [{"cluster": "a", "max_requests": 0}]}"#);
        assert_eq!(
            err.to_string(),
            "backends[0].max_requests: must be between 1 and 1000000, got 0"
        );
    }

    #[test]
    fn max_requests_is_per_backend_and_optional() {
        let config = parse(
            r#"{"backends": [{"cluster": "a", "max_requests": 1}, {"cluster": "b"},
                {"cluster": "c", "max_requests": 1000000}, {"cluster": "d", "max_requests": null}]}"#,
        )
        .unwrap();
        let caps: Vec<_> = config.backends.iter().map(|b| b.max_requests).collect();
        assert_eq!(caps, [Some(1), None, Some(1_000_000), None]);
    }

    #[test]
    fn unknown_field_in_a_backend() {
        let err = rejected(r#"{"backends": [{"cluster": "a", "wieght": 2}]}"#);
        assert_eq!(err.field, "backends[0].wieght");
    }

    #[test]
    fn bad_cluster_names() {
        for name in ["", "has space", "new\nline", "caf\u{e9}"] {
            let json = serde_json::json!({"backends": [{"cluster": name}]}).to_string();
            assert_eq!(rejected(&json).field, "backends[0].cluster", "{name:?}");
        }
        let long = "a".repeat(MAX_NAME_LEN + 1);
        let json = serde_json::json!({"backends": [{"cluster": long}]}).to_string();
        assert_eq!(rejected(&json).field, "backends[0].cluster");
    }
}
