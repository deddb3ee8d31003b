//! The plugin configuration: the JSON in the Wasm filter's `configuration`, parsed with
//! serde_json and read in one pass by small hand-written readers that check each value as they
//! read it (unknown and repeated fields rejected) into a [`Config`], or a [`ConfigError`] that
//! names the field and the reason.
//!
//! Each object's fields are read in order, each checked as it is read; then its unknown keys
//! are rejected, then a missing required field. A section that does not apply to the policy
//! is rejected before its contents are read.

use std::collections::HashMap;
use std::fmt;

mod health;
mod json;

use json::{At, Object};

pub use health::{
    Cidr, HealthCheckConfig, InitialState, OutlierDetectionConfig, StatusConfig,
    MAX_EXPECTED_STATUSES,
};

/// The header eisodos writes when the configuration names none.
pub const DEFAULT_CLUSTER_HEADER: &str = "x-eisodos-cluster";
/// Most backends one filter balances over. Keeps per-configuration memory bounded.
pub const MAX_BACKENDS: usize = 1000;
/// Backend weights lie in `1..=MAX_WEIGHT`.
pub const MAX_WEIGHT: u32 = 1000;
/// Longest cluster name or header name accepted (Envoy has no limit; the header has to carry it).
pub const MAX_NAME_LEN: usize = 256;
/// Most round-robin tickets a worker claims at once.
pub const MAX_TICKET_BATCH: u32 = 1024;
/// Shortest and longest `least_request.latency_decay_ms`.
pub const MIN_LATENCY_DECAY_MS: u32 = 100;
/// See [`MIN_LATENCY_DECAY_MS`].
pub const MAX_LATENCY_DECAY_MS: u32 = 600_000;
/// Most distinct candidates least-request compares.
pub const MAX_CHOICE_COUNT: u32 = 100;
/// Most `hash_key` sources.
pub const MAX_HASH_SOURCES: usize = 8;
/// Largest `active_request_bias` accepted (Envoy sets none; beyond this the share is ~0).
pub const MAX_ACTIVE_REQUEST_BIAS: f64 = 10.0;
/// Largest `bounded_load_factor` accepted.
pub const MAX_BOUNDED_LOAD_FACTOR: f64 = 100.0;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// One global order over all workers, honouring weights (smooth weighted round-robin).
    #[default]
    RoundRobin,
    /// The least loaded of a few distinct random picks (in-flight counts in shared data).
    LeastRequest,
    /// libketama-compatible consistent hashing of a key taken from the request.
    ConsistentHash,
    /// Consistent hashing of the client address, masked to a prefix.
    IpHash,
    /// Weighted random.
    Random,
}

impl Policy {
    /// The name used in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            Policy::RoundRobin => "round_robin",
            Policy::LeastRequest => "least_request",
            Policy::ConsistentHash => "consistent_hash",
            Policy::IpHash => "ip_hash",
            Policy::Random => "random",
        }
    }

    /// Whether the policy hashes a request key (and so honours `on_missing_key` and
    /// `bounded_load_factor`).
    pub fn hashes(self) -> bool {
        matches!(self, Policy::ConsistentHash | Policy::IpHash)
    }
}

/// Where a consistent-hash key comes from; the first source present in the request wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashSource {
    /// A request header's value (lower-case name).
    Header(String),
    /// A cookie's value, from the `cookie` header.
    Cookie(String),
    /// A query parameter's raw (not percent-decoded) value.
    Query(String),
    /// The request path without the query string.
    Path(Empty),
    /// The client IP address as Envoy reports it (`source.address`, without the port).
    SourceIp(Empty),
}

/// An empty JSON object, `{}`: the argument of sources that take none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Empty {}

/// What a hashing policy does with a request that has no key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnMissingKey {
    /// Send it by the global round-robin order.
    #[default]
    RoundRobin,
    /// Answer 400 locally, naming the sources looked for.
    Reject,
}

/// Round-robin tuning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoundRobinConfig {
    /// Tickets a worker claims from the shared counter per compare-and-swap
    /// (`1..=MAX_TICKET_BATCH`). 1: every request takes its own, so sequential requests
    /// follow one order whichever worker serves them. `n`: a worker serves `n` consecutive
    /// places of the order per shared-data round trip.
    pub ticket_batch: u32,
}

impl Default for RoundRobinConfig {
    fn default() -> Self {
        Self { ticket_batch: 1 }
    }
}

/// Least-request tuning, as Envoy's `least_request_lb_config`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LeastRequestConfig {
    /// Distinct random candidates compared when weights are equal (`2..=MAX_CHOICE_COUNT`).
    pub choice_count: u32,
    /// With unequal weights, a backend's share is `weight / (active + 1) ^ bias`.
    pub active_request_bias: f64,
    /// When set, candidates are compared by `latency × (active + 1) / weight`, the latency a
    /// peak EWMA decaying with this time constant (ms).
    pub latency_decay_ms: Option<u32>,
}

impl Default for LeastRequestConfig {
    fn default() -> Self {
        Self {
            choice_count: 2,
            active_request_bias: 1.0,
            latency_decay_ms: None,
        }
    }
}

/// IP-hash tuning: how much of the client address is hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpHashConfig {
    /// Leading bits of an IPv4 address kept (`1..=32`).
    pub ipv4_prefix: u8,
    /// Leading bits of an IPv6 address kept (`1..=128`).
    pub ipv6_prefix: u8,
}

impl Default for IpHashConfig {
    fn default() -> Self {
        Self {
            ipv4_prefix: 32,
            ipv6_prefix: 128,
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
    /// Takes traffic only when no primary backend is healthy.
    pub backup: bool,
}

/// A validated configuration. Sections that do not apply to the policy are rejected at
/// parse time, so what is here is what takes effect.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The request header the route's `cluster_header` reads, lower-case.
    pub cluster_header: String,
    /// The selection policy.
    pub policy: Policy,
    /// The backends, in configuration order; at least one, cluster names distinct.
    pub backends: Vec<Backend>,
    /// Round-robin tuning (defaults unless the policy is `round_robin`).
    pub round_robin: RoundRobinConfig,
    /// Least-request tuning (defaults unless the policy is `least_request`).
    pub least_request: LeastRequestConfig,
    /// Key sources for `consistent_hash`, in order of preference (empty for other policies).
    pub hash_key: Vec<HashSource>,
    /// What `consistent_hash` and `ip_hash` do with a request that has no key.
    pub on_missing_key: OnMissingKey,
    /// For `consistent_hash` and `ip_hash`: skip a backend whose in-flight count would exceed
    /// this factor times the average.
    pub bounded_load_factor: Option<f64>,
    /// IP-hash tuning (defaults unless the policy is `ip_hash`).
    pub ip_hash: IpHashConfig,
    /// Active probes, if configured.
    pub health_check: Option<HealthCheckConfig>,
    /// Passive ejection, if configured.
    pub outlier_detection: Option<OutlierDetectionConfig>,
    /// Below this percent of healthy primaries, spread over all primaries (0 disables).
    pub panic_threshold_percent: u32,
    /// The status page, if configured.
    pub status: Option<StatusConfig>,
}

/// `policy`'s values, as [`Policy::name`] spells them.
const POLICIES: &[(&str, Policy)] = &[
    ("round_robin", Policy::RoundRobin),
    ("least_request", Policy::LeastRequest),
    ("consistent_hash", Policy::ConsistentHash),
    ("ip_hash", Policy::IpHash),
    ("random", Policy::Random),
];

/// `on_missing_key`'s values.
const ON_MISSING_KEY: &[(&str, OnMissingKey)] = &[
    ("round_robin", OnMissingKey::RoundRobin),
    ("reject", OnMissingKey::Reject),
];

/// The kinds of `hash_key` source, the key of each source's object.
const HASH_SOURCES: &[&str] = &["header", "cookie", "query", "path", "source_ip"];

impl Config {
    /// Parses and validates the plugin configuration bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, ConfigError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ConfigError::new(
                "configuration",
                "is empty; expected a JSON object with at least `backends`",
            ));
        }
        let document = json::parse(bytes)?;
        let mut top = At::root(&document).object()?;
        let config = Self::read(&mut top)?;
        top.finish()?;
        // After the unknown keys, as a missing field is: a misspelt `hash_key` is reported
        // as misspelt.
        if config.policy == Policy::ConsistentHash && config.hash_key.is_empty() {
            return Err(ConfigError::new(
                "hash_key",
                "is required by policy consistent_hash, e.g. [{\"header\": \"x-user-id\"}]",
            ));
        }
        Ok(config)
    }

    /// Reads the top-level fields, in the order the unknown-field message lists them.
    fn read(top: &mut Object<'_>) -> Result<Self, ConfigError> {
        // A field with a default but no `Option` in serde's day: `null` is a type error.
        let cluster_header = match top.get("cluster_header")? {
            Some(at) => read_cluster_header(&at)?,
            None => DEFAULT_CLUSTER_HEADER.to_owned(),
        };
        let policy = match top.get("policy")? {
            Some(at) => at.choice(POLICIES)?,
            None => Policy::default(),
        };
        let backends = match top.required("backends")? {
            Some(at) => read_backends(&at)?,
            // `top.finish()` reports it missing.
            None => Vec::new(),
        };
        let round_robin = read_round_robin(top, policy)?;
        let least_request = read_least_request(top, policy)?;
        let hash_key = read_hash_key(top, policy)?;
        let on_missing_key = match top.optional("on_missing_key")? {
            Some(at) => {
                only_for(&at, policy, policy.hashes(), "consistent_hash or ip_hash")?;
                at.choice(ON_MISSING_KEY)?
            }
            None => OnMissingKey::default(),
        };
        let bounded_load_factor = match top.optional("bounded_load_factor")? {
            Some(at) => {
                only_for(&at, policy, policy.hashes(), "consistent_hash or ip_hash")?;
                // The test `float_bounds_in_messages` keeps the text in step with the constant.
                Some(at.f64_in(1.0..=MAX_BOUNDED_LOAD_FACTOR, "1.0 and 100.0")?)
            }
            None => None,
        };
        let ip_hash = read_ip_hash(top, policy)?;
        let health_check = health::read_health_check(top)?;
        let outlier_detection = health::read_outlier_detection(top)?;
        let panic_threshold_percent = top
            .u32_in("panic_threshold_percent", 0..=100)?
            .unwrap_or(50);
        let status = health::read_status(top)?;
        Ok(Self {
            cluster_header,
            policy,
            backends,
            round_robin,
            least_request,
            hash_key,
            on_missing_key,
            bounded_load_factor,
            ip_hash,
            health_check,
            outlier_detection,
            panic_threshold_percent,
            status,
        })
    }
}

/// Rejects a section or field (`at`) that `policy` does not use: `applies` says whether it
/// does, `policies` names those that do.
fn only_for(at: &At<'_>, policy: Policy, applies: bool, policies: &str) -> Result<(), ConfigError> {
    if applies {
        Ok(())
    } else {
        Err(at.error(format!(
            "applies only to policy {policies}, not {}; remove it",
            policy.name()
        )))
    }
}

/// `cluster_header`, lower-cased.
fn read_cluster_header(at: &At<'_>) -> Result<String, ConfigError> {
    let name = at.str()?.to_ascii_lowercase();
    match header_name_problem(&name) {
        Some(reason) => Err(at.error(reason)),
        None => Ok(name),
    }
}

/// `backends`: 1 to [`MAX_BACKENDS`] distinct clusters, not all backups.
fn read_backends(at: &At<'_>) -> Result<Vec<Backend>, ConfigError> {
    let items = at.array()?;
    if items.len() == 0 {
        return Err(at.error("is empty; at least one backend is required".to_owned()));
    }
    if items.len() > MAX_BACKENDS {
        return Err(at.error(format!(
            "has {} entries; at most {MAX_BACKENDS} are supported",
            items.len()
        )));
    }
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
        backend.finish()?;
        backends.push(Backend {
            cluster,
            weight,
            backup,
        });
    }
    if backends.iter().all(|backend| backend.backup) {
        return Err(at.error(
            "are all backups; at least one must be a primary (\"backup\": false)".to_owned(),
        ));
    }
    Ok(backends)
}

/// `round_robin`, for policy `round_robin`.
fn read_round_robin(top: &mut Object<'_>, policy: Policy) -> Result<RoundRobinConfig, ConfigError> {
    let defaults = RoundRobinConfig::default();
    let Some(at) = top.optional("round_robin")? else {
        return Ok(defaults);
    };
    only_for(&at, policy, policy == Policy::RoundRobin, "round_robin")?;
    let mut section = at.object()?;
    let config = RoundRobinConfig {
        ticket_batch: section
            .u32_in("ticket_batch", 1..=MAX_TICKET_BATCH)?
            .unwrap_or(defaults.ticket_batch),
    };
    section.finish()?;
    Ok(config)
}

/// `least_request`, for policy `least_request`.
fn read_least_request(
    top: &mut Object<'_>,
    policy: Policy,
) -> Result<LeastRequestConfig, ConfigError> {
    let defaults = LeastRequestConfig::default();
    let Some(at) = top.optional("least_request")? else {
        return Ok(defaults);
    };
    only_for(&at, policy, policy == Policy::LeastRequest, "least_request")?;
    let mut section = at.object()?;
    let config = LeastRequestConfig {
        choice_count: section
            .u32_in("choice_count", 2..=MAX_CHOICE_COUNT)?
            .unwrap_or(defaults.choice_count),
        // The test `float_bounds_in_messages` keeps the text in step with the constant.
        active_request_bias: section
            .f64_in(
                "active_request_bias",
                0.0..=MAX_ACTIVE_REQUEST_BIAS,
                "0.0 and 10.0",
            )?
            .unwrap_or(defaults.active_request_bias),
        latency_decay_ms: section.u32_in(
            "latency_decay_ms",
            MIN_LATENCY_DECAY_MS..=MAX_LATENCY_DECAY_MS,
        )?,
    };
    section.finish()?;
    Ok(config)
}

/// `ip_hash`, for policy `ip_hash`.
fn read_ip_hash(top: &mut Object<'_>, policy: Policy) -> Result<IpHashConfig, ConfigError> {
    let defaults = IpHashConfig::default();
    let Some(at) = top.optional("ip_hash")? else {
        return Ok(defaults);
    };
    only_for(&at, policy, policy == Policy::IpHash, "ip_hash")?;
    let mut section = at.object()?;
    let config = IpHashConfig {
        ipv4_prefix: section
            .u8_in("ipv4_prefix", 1..=32)?
            .unwrap_or(defaults.ipv4_prefix),
        ipv6_prefix: section
            .u8_in("ipv6_prefix", 1..=128)?
            .unwrap_or(defaults.ipv6_prefix),
    };
    section.finish()?;
    Ok(config)
}

/// `hash_key`, for policy `consistent_hash`: empty when absent (which [`Config::parse`]
/// rejects for that policy).
fn read_hash_key(top: &mut Object<'_>, policy: Policy) -> Result<Vec<HashSource>, ConfigError> {
    let Some(at) = top.optional("hash_key")? else {
        return Ok(Vec::new());
    };
    only_for(
        &at,
        policy,
        policy == Policy::ConsistentHash,
        "consistent_hash",
    )?;
    let items = at.array()?;
    if items.len() == 0 {
        return Err(at.error("is empty; name at least one source".to_owned()));
    }
    if items.len() > MAX_HASH_SOURCES {
        return Err(at.error(format!(
            "has {} sources; at most {MAX_HASH_SOURCES} are supported",
            items.len()
        )));
    }
    let mut sources = Vec::with_capacity(items.len());
    for item in items {
        sources.push(read_hash_source(&item)?);
    }
    Ok(sources)
}

/// One `hash_key` source: `{"header": "x-user-id"}`, `{"path": {}}`...
fn read_hash_source(at: &At<'_>) -> Result<HashSource, ConfigError> {
    let (kind, value) = at.tagged(HASH_SOURCES)?;
    match kind {
        "header" => {
            let name = value.string()?;
            let problem = if name.bytes().any(|c| c.is_ascii_uppercase()) {
                Some(format!("\"{name}\" must be lower-case"))
            } else {
                header_name_problem(&name)
            };
            match problem {
                Some(reason) => Err(value.error(reason)),
                None => Ok(HashSource::Header(name)),
            }
        }
        "cookie" => {
            let name = value.string()?;
            match header_name_problem(&name) {
                Some(reason) => Err(value.error(reason)),
                None => Ok(HashSource::Cookie(name)),
            }
        }
        "query" => {
            let name = value.string()?;
            if name.is_empty() || name.len() > MAX_NAME_LEN {
                return Err(value.error(format!("must be 1 to {MAX_NAME_LEN} bytes")));
            }
            Ok(HashSource::Query(name))
        }
        "path" => {
            value.object()?.finish()?;
            Ok(HashSource::Path(Empty {}))
        }
        "source_ip" => {
            value.object()?.finish()?;
            Ok(HashSource::SourceIp(Empty {}))
        }
        // A kind listed in `HASH_SOURCES` but not read here: an error, not a guess.
        _ => Err(at.unknown_variant(kind, HASH_SOURCES)),
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
                    weight: 1,
                    backup: false
                },
                Backend {
                    cluster: "backend_b".into(),
                    weight: 1,
                    backup: false
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

    const A: &str = r#""backends": [{"cluster": "a"}, {"cluster": "b"}]"#;

    #[test]
    fn round_robin_takes_a_ticket_batch_of_1_to_1024() {
        let batch = |json: &str| parse(&format!(r#"{{{json}, {A}}}"#)).map(|c| c.round_robin);
        assert_eq!(batch(r#""policy": "round_robin""#).unwrap().ticket_batch, 1);
        assert_eq!(
            batch(r#""round_robin": {"ticket_batch": 16}"#).unwrap(),
            RoundRobinConfig { ticket_batch: 16 }
        );
        assert_eq!(batch(r#""round_robin": {}"#).unwrap().ticket_batch, 1);
        for bad in ["0", "1025"] {
            let err = batch(&format!(r#""round_robin": {{"ticket_batch": {bad}}}"#)).unwrap_err();
            assert_eq!(err.field, "round_robin.ticket_batch");
            assert_eq!(err.reason, format!("must be between 1 and 1024, got {bad}"));
        }
    }

    #[test]
    fn every_policy_parses_with_its_section() {
        let config = parse(&format!(
            r#"{{"policy": "least_request", "least_request": {{"choice_count": 3, "active_request_bias": 0.5, "latency_decay_ms": 10000}}, {A}}}"#
        ))
        .unwrap();
        assert_eq!(
            config.least_request,
            LeastRequestConfig {
                choice_count: 3,
                active_request_bias: 0.5,
                latency_decay_ms: Some(10_000),
            }
        );
        let config = parse(&format!(
            r#"{{"policy": "consistent_hash", "hash_key": [{{"header": "x-user-id"}}, {{"cookie": "session"}}, {{"query": "user"}}, {{"path": {{}}}}, {{"source_ip": {{}}}}], "on_missing_key": "reject", "bounded_load_factor": 1.25, {A}}}"#
        ))
        .unwrap();
        assert_eq!(config.hash_key.len(), 5);
        assert_eq!(config.hash_key[3], HashSource::Path(Empty {}));
        assert_eq!(config.on_missing_key, OnMissingKey::Reject);
        assert_eq!(config.bounded_load_factor, Some(1.25));
        let config = parse(&format!(
            r#"{{"policy": "ip_hash", "ip_hash": {{"ipv4_prefix": 24}}, {A}}}"#
        ))
        .unwrap();
        assert_eq!(
            config.ip_hash,
            IpHashConfig {
                ipv4_prefix: 24,
                ipv6_prefix: 128
            }
        );
        assert_eq!(config.on_missing_key, OnMissingKey::RoundRobin);
        assert_eq!(
            parse(&format!(r#"{{"policy": "random", {A}}}"#))
                .unwrap()
                .policy,
            Policy::Random
        );
    }

    #[test]
    fn defaults_of_the_sections() {
        let config = parse(&format!(r#"{{"policy": "least_request", {A}}}"#)).unwrap();
        assert_eq!(config.least_request.choice_count, 2);
        assert_eq!(config.least_request.active_request_bias, 1.0);
        let config = parse(&format!(r#"{{"policy": "ip_hash", {A}}}"#)).unwrap();
        assert_eq!(
            (config.ip_hash.ipv4_prefix, config.ip_hash.ipv6_prefix),
            (32, 128)
        );
        assert_eq!(config.bounded_load_factor, None);
    }

    #[test]
    fn sections_for_another_policy_are_rejected() {
        for (fields, field) in [
            (r#""least_request": {}"#, "least_request"),
            (r#""hash_key": [{"header": "x"}]"#, "hash_key"),
            (r#""on_missing_key": "reject""#, "on_missing_key"),
            (r#""bounded_load_factor": 1.5"#, "bounded_load_factor"),
            (r#""ip_hash": {}"#, "ip_hash"),
        ] {
            let err = rejected(&format!(r#"{{"policy": "round_robin", {fields}, {A}}}"#));
            assert_eq!(err.field, field);
            assert!(err.reason.contains("applies only to policy"), "{err}");
        }
        let err = rejected(&format!(
            r#"{{"policy": "ip_hash", "hash_key": [{{"path": {{}}}}], {A}}}"#
        ));
        assert_eq!(err.field, "hash_key");
        let err = rejected(&format!(
            r#"{{"policy": "random", "round_robin": {{"ticket_batch": 4}}, {A}}}"#
        ));
        assert_eq!(err.field, "round_robin");
    }

    #[test]
    fn consistent_hash_needs_a_valid_hash_key() {
        let err = rejected(&format!(r#"{{"policy": "consistent_hash", {A}}}"#));
        assert_eq!(err.field, "hash_key");
        assert!(err.reason.contains("required"), "{err}");
        let err = rejected(&format!(
            r#"{{"policy": "consistent_hash", "hash_key": [], {A}}}"#
        ));
        assert_eq!(err.field, "hash_key");
        for (source, field) in [
            (r#"{"header": "X-User"}"#, "hash_key[0].header"),
            (r#"{"header": ""}"#, "hash_key[0].header"),
            (r#"{"cookie": "a b"}"#, "hash_key[0].cookie"),
            (r#"{"query": ""}"#, "hash_key[0].query"),
        ] {
            let err = rejected(&format!(
                r#"{{"policy": "consistent_hash", "hash_key": [{source}], {A}}}"#
            ));
            assert_eq!(err.field, field, "{source}");
        }
        let err = rejected(&format!(
            r#"{{"policy": "consistent_hash", "hash_key": [{{"body": "x"}}], {A}}}"#
        ));
        assert_eq!(err.field, "hash_key[0]");
        assert!(err.reason.contains("unknown variant `body`"), "{err}");
        let err = rejected(&format!(
            r#"{{"policy": "consistent_hash", "hash_key": [{{"path": {{"x": 1}}}}], {A}}}"#
        ));
        assert!(err.field.starts_with("hash_key[0]"), "{err}");
        let many = [r#"{"path": {}}"#; MAX_HASH_SOURCES + 1].join(",");
        let err = rejected(&format!(
            r#"{{"policy": "consistent_hash", "hash_key": [{many}], {A}}}"#
        ));
        assert_eq!(err.field, "hash_key");
    }

    #[test]
    fn numeric_ranges_of_the_sections() {
        for (fields, field) in [
            (
                r#""policy": "least_request", "least_request": {"choice_count": 1}"#,
                "least_request.choice_count",
            ),
            (
                r#""policy": "least_request", "least_request": {"choice_count": 101}"#,
                "least_request.choice_count",
            ),
            (
                r#""policy": "least_request", "least_request": {"latency_decay_ms": 99}"#,
                "least_request.latency_decay_ms",
            ),
            (
                r#""policy": "least_request", "least_request": {"latency_decay_ms": 600001}"#,
                "least_request.latency_decay_ms",
            ),
            (
                r#""policy": "least_request", "least_request": {"active_request_bias": -0.1}"#,
                "least_request.active_request_bias",
            ),
            (
                r#""policy": "least_request", "least_request": {"active_request_bias": 10.5}"#,
                "least_request.active_request_bias",
            ),
            (
                r#""policy": "ip_hash", "bounded_load_factor": 0.99"#,
                "bounded_load_factor",
            ),
            (
                r#""policy": "ip_hash", "bounded_load_factor": 100.5"#,
                "bounded_load_factor",
            ),
            (
                r#""policy": "ip_hash", "ip_hash": {"ipv4_prefix": 0}"#,
                "ip_hash.ipv4_prefix",
            ),
            (
                r#""policy": "ip_hash", "ip_hash": {"ipv4_prefix": 33}"#,
                "ip_hash.ipv4_prefix",
            ),
            (
                r#""policy": "ip_hash", "ip_hash": {"ipv6_prefix": 129}"#,
                "ip_hash.ipv6_prefix",
            ),
            (
                r#""policy": "ip_hash", "ip_hash": {"ipv6_prefix": 300}"#,
                "ip_hash.ipv6_prefix",
            ),
            (
                r#""policy": "ip_hash", "ip_hash": {"ipv5_prefix": 8}"#,
                "ip_hash.ipv5_prefix",
            ),
        ] {
            let err = rejected(&format!("{{{fields}, {A}}}"));
            assert_eq!(err.field, field, "{fields}: {err}");
        }
    }

    #[test]
    fn health_sections_parse_with_defaults() {
        let config = parse(&format!(
            r#"{{"health_check": {{"path": "/healthz"}}, "outlier_detection": {{}}, {A}}}"#
        ))
        .unwrap();
        assert_eq!(
            config.health_check,
            Some(HealthCheckConfig::defaults_for_tests())
        );
        assert_eq!(
            config.outlier_detection,
            Some(OutlierDetectionConfig {
                consecutive_failures: 5,
                base_ejection_ms: 30_000,
                max_ejection_percent: 50,
            })
        );
        assert_eq!(config.panic_threshold_percent, 50);
        assert_eq!(config.status, None);
        let bare = parse(&format!("{{{A}}}")).unwrap();
        assert_eq!((bare.health_check, bare.outlier_detection), (None, None));
    }

    #[test]
    fn health_sections_in_full() {
        let config = parse(
            r#"{"health_check": {"path": "/ready", "authority": "svc.local", "method": "HEAD",
                 "interval_ms": 250, "timeout_ms": 100, "healthy_threshold": 1, "unhealthy_threshold": 2,
                 "expected_statuses": [200, 204], "interval_jitter_percent": 10, "initial_state": "unhealthy"},
                "panic_threshold_percent": 0, "status_path": "/.eisodos/status",
                "status_allowed_cidrs": ["10.0.0.0/8", "::1"],
                "backends": [{"cluster": "a"}, {"cluster": "b", "backup": true}]}"#,
        )
        .unwrap();
        let check = config.health_check.unwrap();
        assert_eq!(check.initial_state, InitialState::Unhealthy);
        assert_eq!(check.expected_statuses, [200, 204]);
        assert_eq!(check.authority.as_deref(), Some("svc.local"));
        assert!(config.backends[1].backup && !config.backends[0].backup);
        let status = config.status.unwrap();
        assert_eq!(status.path, "/.eisodos/status");
        assert_eq!(status.allowed.len(), 2);
    }

    #[test]
    fn health_sections_are_validated() {
        for (fields, field) in [
            (r#""health_check": {}"#, "health_check"),
            (
                r#""health_check": {"path": "healthz"}"#,
                "health_check.path",
            ),
            (
                r#""health_check": {"path": "/h", "method": "get"}"#,
                "health_check.method",
            ),
            (
                r#""health_check": {"path": "/h", "interval_ms": 50}"#,
                "health_check.interval_ms",
            ),
            (
                r#""health_check": {"path": "/h", "timeout_ms": 0}"#,
                "health_check.timeout_ms",
            ),
            (
                r#""health_check": {"path": "/h", "healthy_threshold": 0}"#,
                "health_check.healthy_threshold",
            ),
            (
                r#""health_check": {"path": "/h", "unhealthy_threshold": 101}"#,
                "health_check.unhealthy_threshold",
            ),
            (
                r#""health_check": {"path": "/h", "expected_statuses": []}"#,
                "health_check.expected_statuses",
            ),
            (
                r#""health_check": {"path": "/h", "expected_statuses": [200, 99]}"#,
                "health_check.expected_statuses[1]",
            ),
            (
                r#""health_check": {"path": "/h", "interval_jitter_percent": 101}"#,
                "health_check.interval_jitter_percent",
            ),
            (
                r#""health_check": {"path": "/h", "initial_state": "maybe"}"#,
                "health_check.initial_state",
            ),
            (
                r#""health_check": {"path": "/h", "intervall_ms": 5}"#,
                "health_check.intervall_ms",
            ),
            (
                r#""outlier_detection": {"consecutive_failures": 0}"#,
                "outlier_detection.consecutive_failures",
            ),
            (
                r#""outlier_detection": {"max_ejection_percent": 101}"#,
                "outlier_detection.max_ejection_percent",
            ),
            (
                r#""outlier_detection": {"base_ejection_ms": 0}"#,
                "outlier_detection.base_ejection_ms",
            ),
            (
                r#""panic_threshold_percent": 101"#,
                "panic_threshold_percent",
            ),
            (r#""status_path": "status""#, "status_path"),
            (
                r#""status_path": "/s", "status_allowed_cidrs": ["10.0.0.0/40"]"#,
                "status_allowed_cidrs[0]",
            ),
            (
                r#""status_allowed_cidrs": ["10.0.0.0/8"]"#,
                "status_allowed_cidrs",
            ),
        ] {
            let err = rejected(&format!("{{{fields}, {A}}}"));
            assert_eq!(err.field, field, "{fields}: {err}");
        }
        let err = rejected(r#"{"backends": [{"cluster": "a", "backup": true}]}"#);
        assert_eq!(err.field, "backends");
        assert!(err.reason.contains("backup"), "{err}");
    }

    #[test]
    fn the_document_must_be_one_object() {
        for text in [
            "[]",
            "5",
            "\"x\"",
            "null",
            "{} {}",
            "{\"backends\": [{\"cluster\": \"a\"}]},",
        ] {
            let err = rejected(text);
            assert_eq!(err.field, "configuration", "{text}");
        }
        assert_eq!(
            rejected("[]").reason,
            "invalid type: array, expected an object"
        );
        let err = rejected("{\n  \"backends\": [\n    {\"cluster\": \"a\"}\n  ]\n} x");
        assert!(
            err.reason
                .starts_with("is not valid JSON: trailing characters at line 5"),
            "{err}"
        );
    }

    #[test]
    fn duplicate_keys_are_rejected_where_they_are() {
        for (json, field) in [
            (
                r#"{"backends": [{"cluster": "a"}], "policy": "random", "policy": "round_robin"}"#,
                "policy",
            ),
            (
                r#"{"backends": [{"cluster": "a", "weight": 2, "weight": 3}]}"#,
                "backends[0].weight",
            ),
            (
                r#"{"health_check": {"path": "/h", "interval_ms": 200, "interval_ms": 300}, "backends": [{"cluster": "a"}]}"#,
                "health_check.interval_ms",
            ),
            (
                r#"{"policy": "least_request", "least_request": {"choice_count": 2, "choice_count": 3}, "backends": [{"cluster": "a"}]}"#,
                "least_request.choice_count",
            ),
        ] {
            let err = rejected(json);
            assert_eq!(err.field, field, "{json}");
            assert!(err.reason.starts_with("duplicate field `"), "{err}");
        }
        // A hash source is an object with one key: a repeated key makes two.
        let err = rejected(&format!(
            r#"{{"policy": "consistent_hash", "hash_key": [{{"header": "a", "header": "b"}}], {A}}}"#
        ));
        assert_eq!(err.field, "hash_key[0]");
        assert!(err.reason.contains("exactly one key"), "{err}");
    }

    #[test]
    fn type_errors_name_the_nested_field() {
        for (fields, field, reason) in [
            (
                r#""cluster_header": 5"#,
                "cluster_header",
                "invalid type: integer `5`, expected a string",
            ),
            (
                r#""policy": "least_request", "least_request": {"choice_count": "3"}"#,
                "least_request.choice_count",
                "invalid type: string \"3\", expected u32",
            ),
            (
                r#""policy": "least_request", "least_request": {"active_request_bias": "1"}"#,
                "least_request.active_request_bias",
                "invalid type: string \"1\", expected a number",
            ),
            (
                r#""policy": "ip_hash", "ip_hash": {"ipv6_prefix": -1}"#,
                "ip_hash.ipv6_prefix",
                "invalid value: integer `-1`, expected u8",
            ),
            (
                r#""policy": "consistent_hash", "hash_key": [{"path": {}}, {"header": 7}]"#,
                "hash_key[1].header",
                "invalid type: integer `7`, expected a string",
            ),
            (
                r#""policy": "consistent_hash", "hash_key": {"header": "x"}"#,
                "hash_key",
                "invalid type: object, expected an array",
            ),
            (
                r#""health_check": {"path": "/h", "expected_statuses": [200, "204"]}"#,
                "health_check.expected_statuses[1]",
                "invalid type: string \"204\", expected u16",
            ),
            (
                r#""health_check": {"path": "/h", "expected_statuses": [200, 70000]}"#,
                "health_check.expected_statuses[1]",
                "invalid value: integer `70000`, expected u16",
            ),
            (
                r#""health_check": {"path": "/h", "timeout_ms": 1.0}"#,
                "health_check.timeout_ms",
                "invalid type: floating point, expected u32",
            ),
            (
                r#""health_check": {"path": 1}"#,
                "health_check.path",
                "invalid type: integer `1`, expected a string",
            ),
            (
                r#""outlier_detection": {"base_ejection_ms": 4294967296}"#,
                "outlier_detection.base_ejection_ms",
                "invalid value: integer `4294967296`, expected u32",
            ),
            (
                r#""status_path": "/s", "status_allowed_cidrs": ["::1", 10]"#,
                "status_allowed_cidrs[1]",
                "invalid type: integer `10`, expected a string",
            ),
            (
                r#""panic_threshold_percent": true"#,
                "panic_threshold_percent",
                "invalid type: boolean `true`, expected u32",
            ),
        ] {
            let err = rejected(&format!("{{{fields}, {A}}}"));
            assert_eq!(
                (err.field.as_str(), err.reason.as_str()),
                (field, reason),
                "{fields}"
            );
        }
        let err =
            rejected(r#"{"backends": [{"cluster": "a"}, {"cluster": "b", "backup": "yes"}]}"#);
        assert_eq!(err.field, "backends[1].backup");
        assert_eq!(
            err.reason,
            "invalid type: string \"yes\", expected a boolean"
        );
        let err = rejected(r#"{"backends": [{"cluster": "a"}, "b"]}"#);
        assert_eq!(err.field, "backends[1]");
        assert_eq!(err.reason, "invalid type: string \"b\", expected an object");
        let err = rejected(r#"{"backends": [{"weight": 2}]}"#);
        assert_eq!(
            (err.field.as_str(), err.reason.as_str()),
            ("backends[0]", "missing field `cluster`")
        );
    }

    #[test]
    fn integers_are_json_integers() {
        for (weight, reason) in [
            ("-3", "invalid value: integer `-3`, expected u32"),
            (
                "99999999999",
                "invalid value: integer `99999999999`, expected u32",
            ),
            ("1.0", "invalid type: floating point, expected u32"),
            ("1e2", "invalid type: floating point, expected u32"),
            ("\"2\"", "invalid type: string \"2\", expected u32"),
        ] {
            let err = rejected(&format!(
                r#"{{"backends": [{{"cluster": "a", "weight": {weight}}}]}}"#
            ));
            assert_eq!(
                (err.field.as_str(), err.reason.as_str()),
                ("backends[0].weight", reason)
            );
        }
        // A number field takes integers too.
        let config = parse(&format!(
            r#"{{"policy": "ip_hash", "bounded_load_factor": 2, {A}}}"#
        ))
        .unwrap();
        assert_eq!(config.bounded_load_factor, Some(2.0));
    }

    #[test]
    fn unknown_fields_list_the_known_ones() {
        let err = rejected(r#"{"backends": [{"cluster": "a", "wieght": 2}]}"#);
        assert_eq!(
            err.reason,
            "unknown field `wieght`, expected one of `cluster`, `weight`, `backup`"
        );
        let err = rejected(&format!(
            r#"{{"policy": "consistent_hash", "hash_key": [{{"source_ip": {{"v6": true}}}}], {A}}}"#
        ));
        assert_eq!(
            (err.field.as_str(), err.reason.as_str()),
            (
                "hash_key[0].source_ip.v6",
                "unknown field `v6`, there are no fields"
            )
        );
    }

    /// Each object's known fields, in the order the unknown-field message lists them: the
    /// reader learns them as it reads, so this pins that every field is read, and in order.
    #[test]
    fn every_object_lists_its_known_fields() {
        for (fields, field, known) in [
            (
                r#""zz": 1"#,
                "zz",
                "`cluster_header`, `policy`, `backends`, `round_robin`, `least_request`, `hash_key`, `on_missing_key`, `bounded_load_factor`, `ip_hash`, `health_check`, `outlier_detection`, `panic_threshold_percent`, `status_path`, `status_allowed_cidrs`",
            ),
            (
                r#""policy": "round_robin", "round_robin": {"zz": 1}"#,
                "round_robin.zz",
                "`ticket_batch`",
            ),
            (
                r#""policy": "least_request", "least_request": {"zz": 1}"#,
                "least_request.zz",
                "`choice_count`, `active_request_bias`, `latency_decay_ms`",
            ),
            (
                r#""policy": "ip_hash", "ip_hash": {"zz": 1}"#,
                "ip_hash.zz",
                "`ipv4_prefix`, `ipv6_prefix`",
            ),
            (
                r#""health_check": {"path": "/h", "zz": 1}"#,
                "health_check.zz",
                "`path`, `authority`, `method`, `interval_ms`, `timeout_ms`, `healthy_threshold`, `unhealthy_threshold`, `expected_statuses`, `interval_jitter_percent`, `initial_state`",
            ),
            (
                r#""outlier_detection": {"zz": 1}"#,
                "outlier_detection.zz",
                "`consecutive_failures`, `base_ejection_ms`, `max_ejection_percent`",
            ),
        ] {
            let err = rejected(&format!("{{{fields}, {A}}}"));
            assert_eq!(
                (err.field.as_str(), err.reason.as_str()),
                (field, format!("unknown field `zz`, expected one of {known}").as_str()),
                "{fields}"
            );
        }
        let err = rejected(r#"{"backends": [{"cluster": "a", "zz": 1}]}"#);
        assert_eq!(
            (err.field.as_str(), err.reason.as_str()),
            (
                "backends[0].zz",
                "unknown field `zz`, expected one of `cluster`, `weight`, `backup`"
            )
        );
        let err = rejected(&format!(
            r#"{{"policy": "consistent_hash", "hash_key": [{{"path": {{"zz": 1}}}}], {A}}}"#
        ));
        assert_eq!(
            (err.field.as_str(), err.reason.as_str()),
            (
                "hash_key[0].path.zz",
                "unknown field `zz`, there are no fields"
            )
        );
    }

    /// A misspelt name is reported as unknown, not as the required field it was meant to be:
    /// its message lists the known fields.
    #[test]
    fn unknown_fields_before_missing_ones() {
        for (json, field) in [
            (r#"{"backend": [{"cluster": "a"}]}"#, "backend"),
            (r#"{"backends": [{"clustr": "a"}]}"#, "backends[0].clustr"),
            (
                r#"{"health_check": {"pth": "/h"}, "backends": [{"cluster": "a"}]}"#,
                "health_check.pth",
            ),
            (
                r#"{"policy": "consistent_hash", "hashkey": [{"path": {}}], "backends": [{"cluster": "a"}]}"#,
                "hashkey",
            ),
        ] {
            let err = rejected(json);
            assert_eq!(err.field, field, "{json}");
            assert!(err.reason.starts_with("unknown field `"), "{err}");
        }
    }

    #[test]
    fn choices_name_the_allowed_values() {
        let err = rejected(r#"{"policy": "fastest", "backends": [{"cluster": "a"}]}"#);
        assert_eq!(
            err.reason,
            "unknown variant `fastest`, expected one of `round_robin`, `least_request`, `consistent_hash`, `ip_hash`, `random`"
        );
        let err = rejected(r#"{"policy": 1, "backends": [{"cluster": "a"}]}"#);
        assert_eq!(err.field, "policy");
        assert!(
            err.reason
                .starts_with("invalid type: integer `1`, expected one of `round_robin`"),
            "{err}"
        );
        let err = rejected(&format!(
            r#"{{"policy": "ip_hash", "on_missing_key": "drop", {A}}}"#
        ));
        assert_eq!(
            (err.field.as_str(), err.reason.as_str()),
            (
                "on_missing_key",
                "unknown variant `drop`, expected one of `round_robin`, `reject`"
            )
        );
        let err = rejected(&format!(
            r#"{{"health_check": {{"path": "/h", "initial_state": "Healthy"}}, {A}}}"#
        ));
        assert_eq!(
            (err.field.as_str(), err.reason.as_str()),
            (
                "health_check.initial_state",
                "unknown variant `Healthy`, expected one of `healthy`, `unhealthy`"
            )
        );
        let err = rejected(&format!(
            r#"{{"policy": "consistent_hash", "hash_key": [{{"body": "x"}}], {A}}}"#
        ));
        assert_eq!(
            err.reason,
            "unknown variant `body`, expected one of `header`, `cookie`, `query`, `path`, `source_ip`"
        );
        for (name, policy) in POLICIES {
            assert_eq!(policy.name(), *name);
        }
    }

    /// `null` is "not set" for the optional fields and sections (as serde's `Option` was), and
    /// a type error for the required ones and those with plain defaults.
    #[test]
    fn null_means_unset_only_where_serde_had_an_option() {
        let config = parse(&format!(
            r#"{{"least_request": null, "hash_key": null, "health_check": null, "status_path": null,
                "panic_threshold_percent": null, {A}}}"#
        ))
        .unwrap();
        assert_eq!(config.panic_threshold_percent, 50);
        assert_eq!(config.health_check, None);
        for (json, field) in [
            (
                r#"{"policy": null, "backends": [{"cluster": "a"}]}"#,
                "policy",
            ),
            (
                r#"{"cluster_header": null, "backends": [{"cluster": "a"}]}"#,
                "cluster_header",
            ),
            (r#"{"backends": null}"#, "backends"),
        ] {
            let err = rejected(json);
            assert_eq!(err.field, field, "{json}");
            assert!(
                err.reason.starts_with("invalid type: null, expected "),
                "{err}"
            );
        }
        for backend in [
            r#"{"cluster": null}"#,
            r#"{"cluster": "a", "weight": null}"#,
            r#"{"cluster": "a", "backup": null}"#,
        ] {
            let err = rejected(&format!(r#"{{"backends": [{backend}]}}"#));
            assert!(err.field.starts_with("backends[0]."), "{err}");
            assert!(err.reason.starts_with("invalid type: null"), "{err}");
        }
    }

    #[test]
    fn float_bounds_in_messages() {
        let err = rejected(&format!(
            r#"{{"policy": "ip_hash", "bounded_load_factor": 0.5, {A}}}"#
        ));
        assert_eq!(
            err.reason,
            format!("must be between 1.0 and {MAX_BOUNDED_LOAD_FACTOR:.1}")
        );
        let err = rejected(&format!(
            r#"{{"policy": "least_request", "least_request": {{"active_request_bias": 11}}, {A}}}"#
        ));
        assert_eq!(
            err.reason,
            format!("must be between 0.0 and {MAX_ACTIVE_REQUEST_BIAS:.1}")
        );
    }

    #[test]
    fn errors_display_as_one_line_naming_the_field() {
        let err = rejected(r#"{"backends": [{"cluster": "a", "weight": 0}]}"#);
        let line = err.to_string();
        assert!(line.starts_with("backends[0].weight: "), "{line}");
        assert!(!line.contains('\n'));
    }
}
