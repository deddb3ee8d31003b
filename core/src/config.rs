//! The plugin configuration: the JSON in the Wasm filter's `configuration`, parsed with serde
//! (unknown fields rejected) and validated into a [`Config`], or a [`ConfigError`] that names the
//! field and the reason.

use std::collections::HashMap;
use std::fmt;

use serde::Deserialize;

/// The header eisodos writes when the configuration names none.
pub const DEFAULT_CLUSTER_HEADER: &str = "x-eisodos-cluster";
/// Most backends one filter balances over. Keeps per-configuration memory bounded.
pub const MAX_BACKENDS: usize = 1000;
/// Backend weights lie in `1..=MAX_WEIGHT`.
pub const MAX_WEIGHT: u32 = 1000;
/// Longest cluster name or header name accepted (Envoy has no limit; the header has to carry it).
pub const MAX_NAME_LEN: usize = 256;

/// A configuration rejected: which field, and why. Displays as one line, `field: reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The field, as a path into the JSON (`backends[1].weight`), or `configuration` for the
    /// document as a whole.
    pub field: String,
    /// Why it was rejected.
    pub reason: String,
}

impl ConfigError {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// How a backend is chosen for each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// One global order over all workers, honouring weights (smooth weighted round-robin).
    #[default]
    RoundRobin,
}

impl Policy {
    /// The name used in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            Policy::RoundRobin => "round_robin",
        }
    }
}

/// A backend: an Envoy cluster and its weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// The Envoy cluster the request goes to; written into the cluster header.
    pub cluster: String,
    /// Relative share of requests, `1..=MAX_WEIGHT`.
    pub weight: u32,
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The request header the route's `cluster_header` reads, lower-case.
    pub cluster_header: String,
    /// The selection policy.
    pub policy: Policy,
    /// The backends, in configuration order; at least one, cluster names distinct.
    pub backends: Vec<Backend>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "default_cluster_header")]
    cluster_header: String,
    #[serde(default)]
    policy: Policy,
    backends: Vec<RawBackend>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    cluster: String,
    #[serde(default = "default_weight")]
    weight: u32,
}

fn default_cluster_header() -> String {
    DEFAULT_CLUSTER_HEADER.to_owned()
}

fn default_weight() -> u32 {
    1
}

impl Config {
    /// Parses and validates the plugin configuration bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, ConfigError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ConfigError::new(
                "configuration",
                "is empty; expected a JSON object with at least `backends`",
            ));
        }
        let mut deserializer = serde_json::Deserializer::from_slice(bytes);
        let raw: RawConfig =
            serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
                let path = err.path().to_string();
                let inner = err.into_inner();
                let field = if inner.is_syntax() || inner.is_eof() || path == "." {
                    "configuration".to_owned()
                } else {
                    path
                };
                let reason = if inner.is_syntax() || inner.is_eof() {
                    format!("is not valid JSON: {inner}")
                } else {
                    inner.to_string()
                };
                ConfigError::new(field, reason)
            })?;
        deserializer.end().map_err(|err| {
            ConfigError::new("configuration", format!("is not valid JSON: {err}"))
        })?;
        raw.validate()
    }
}

impl RawConfig {
    fn validate(self) -> Result<Config, ConfigError> {
        let cluster_header = self.cluster_header.to_ascii_lowercase();
        if let Some(reason) = header_name_problem(&cluster_header) {
            return Err(ConfigError::new("cluster_header", reason));
        }
        if self.backends.is_empty() {
            return Err(ConfigError::new(
                "backends",
                "is empty; at least one backend is required",
            ));
        }
        if self.backends.len() > MAX_BACKENDS {
            return Err(ConfigError::new(
                "backends",
                format!(
                    "has {} entries; at most {MAX_BACKENDS} are supported",
                    self.backends.len()
                ),
            ));
        }
        let mut seen: HashMap<&str, usize> = HashMap::with_capacity(self.backends.len());
        for (i, backend) in self.backends.iter().enumerate() {
            if let Some(reason) = cluster_name_problem(&backend.cluster) {
                return Err(ConfigError::new(format!("backends[{i}].cluster"), reason));
            }
            if let Some(first) = seen.insert(&backend.cluster, i) {
                return Err(ConfigError::new(
                    format!("backends[{i}].cluster"),
                    format!(
                        "duplicate cluster \"{}\" (already backends[{first}])",
                        backend.cluster
                    ),
                ));
            }
            if !(1..=MAX_WEIGHT).contains(&backend.weight) {
                return Err(ConfigError::new(
                    format!("backends[{i}].weight"),
                    format!("must be between 1 and {MAX_WEIGHT}, got {}", backend.weight),
                ));
            }
        }
        Ok(Config {
            cluster_header,
            policy: self.policy,
            backends: self
                .backends
                .into_iter()
                .map(|raw| Backend {
                    cluster: raw.cluster,
                    weight: raw.weight,
                })
                .collect(),
        })
    }
}

/// RFC 9110 token characters: what an HTTP header name may contain.
fn is_token_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

fn header_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("is empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Some(format!("is longer than {MAX_NAME_LEN} bytes"));
    }
    if !name.bytes().all(is_token_char) {
        return Some(format!(
            "\"{name}\" is not a valid HTTP header name (letters, digits and !#$%&'*+-.^_`|~ only)"
        ));
    }
    None
}

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

    fn parse(json: &str) -> Result<Config, ConfigError> {
        Config::parse(json.as_bytes())
    }

    fn rejected(json: &str) -> ConfigError {
        parse(json).expect_err("configuration should be rejected")
    }

    #[test]
    fn minimal_configuration_takes_the_defaults() {
        let config = parse(r#"{"backends": [{"cluster": "a"}, {"cluster": "b"}]}"#).unwrap();
        assert_eq!(config.cluster_header, "x-eisodos-cluster");
        assert_eq!(config.policy, Policy::RoundRobin);
        assert_eq!(config.backends.len(), 2);
        assert!(config.backends.iter().all(|b| b.weight == 1));
    }

    #[test]
    fn full_configuration_from_the_readme() {
        let config = parse(
            r#"{
              "cluster_header": "X-Eisodos-Cluster",
              "policy": "round_robin",
              "backends": [ {"cluster": "backend_a", "weight": 1}, {"cluster": "backend_b"} ]
            }"#,
        )
        .unwrap();
        assert_eq!(config.cluster_header, "x-eisodos-cluster", "lower-cased");
        assert_eq!(
            config.backends,
            [
                Backend {
                    cluster: "backend_a".into(),
                    weight: 1
                },
                Backend {
                    cluster: "backend_b".into(),
                    weight: 1
                }
            ]
        );
    }

    #[test]
    fn not_json() {
        let err = rejected("backends: [a, b]");
        assert_eq!(err.field, "configuration");
        assert!(err.reason.starts_with("is not valid JSON"), "{err}");
    }

    #[test]
    fn trailing_garbage_is_not_json() {
        let err = rejected(r#"{"backends": [{"cluster": "a"}]} x"#);
        assert_eq!(err.field, "configuration");
    }

    #[test]
    fn empty() {
        assert_eq!(rejected("  \n").field, "configuration");
    }

    #[test]
    fn unknown_policy() {
        let err = rejected(r#"{"policy": "fastest", "backends": [{"cluster": "a"}]}"#);
        assert_eq!(err.field, "policy");
        assert!(err.reason.contains("unknown variant `fastest`"), "{err}");
    }

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
    fn unknown_field_at_the_top() {
        let err = rejected(r#"{"backend": [{"cluster": "a"}]}"#);
        assert_eq!(err.field, "backend");
        assert!(err.reason.contains("unknown field `backend`"), "{err}");
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

    #[test]
    fn bad_cluster_headers() {
        for header in ["", ":authority", "x cluster", "x-\u{e9}"] {
            let json =
                serde_json::json!({"cluster_header": header, "backends": [{"cluster": "a"}]})
                    .to_string();
            assert_eq!(rejected(&json).field, "cluster_header", "{header:?}");
        }
    }

    #[test]
    fn errors_display_as_one_line_naming_the_field() {
        let err = rejected(r#"{"backends": [{"cluster": "a", "weight": 0}]}"#);
        let line = err.to_string();
        assert!(line.starts_with("backends[0].weight: "), "{line}");
        assert!(!line.contains('\n'));
    }
}
