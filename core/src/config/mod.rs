//! The plugin configuration: the JSON in the Wasm filter's `configuration`, parsed with
//! serde_json and read in one pass by small hand-written readers that check each value as they
//! read it (unknown and repeated fields rejected) into a [`Config`], or a [`ConfigError`] that
//! names the field and the reason.
//!
//! Each object's fields are read in order, each checked as it is read; then its unknown keys
//! are rejected, then a missing required field. A section that does not apply to the policy
//! is rejected before its contents are read.

use std::fmt;

mod authority;
mod backends;
mod deny;
mod hash_key;
mod health;
mod host;
mod json;
mod policy;
mod rate_limit;
mod retry;
#[cfg(test)]
#[cfg(not(target_family = "wasm"))]
mod schema_agreement;
mod session_affinity;
mod split;
mod status;

use json::{At, Object};

pub use authority::derive as derive_authority;
pub use backends::{Backend, MAX_BACKENDS, MAX_MAX_REQUESTS, MAX_WEIGHT};
pub use deny::{
    DenyRule, HeaderCondition, HeaderTest, PathMatch, MAX_DENY_BYTES, MAX_DENY_HEADERS,
    MAX_DENY_METHODS, MAX_DENY_RULES, MAX_DENY_VALUE_LEN,
};
pub use hash_key::{Empty, HashSource, MAX_HASH_SOURCES};
pub use health::{HealthCheckConfig, InitialState, OutlierDetectionConfig, MAX_EXPECTED_STATUSES};
pub use policy::{
    IpHashConfig, LeastRequestConfig, OnMissingKey, Policy, RoundRobinConfig,
    MAX_ACTIVE_REQUEST_BIAS, MAX_BOUNDED_LOAD_FACTOR, MAX_CHOICE_COUNT, MAX_LATENCY_DECAY_MS,
    MAX_TICKET_BATCH, MIN_LATENCY_DECAY_MS,
};
pub use rate_limit::{
    RateLimitConfig, DEFAULT_BUCKETS, MAX_BUCKETS, MAX_RATE, MAX_RATE_BATCH, RATE_RESOLUTION,
};
pub use retry::{RetryConfig, MAX_RETRIES, MAX_TIMEOUT_MS, RETRY_CONDITIONS};
pub use session_affinity::{
    SessionAffinityConfig, DEFAULT_AFFINITY_ATTRIBUTES, DEFAULT_AFFINITY_COOKIE,
    MAX_AFFINITY_ATTRIBUTES_LEN, MAX_AFFINITY_TTL_S,
};
pub use split::{
    Condition, Percent, Rule, Split, Subset, ValueTest, MAX_MATCH_VALUE_LEN, MAX_RULES,
    MAX_SUBSETS, MAX_SUBSET_NAME_LEN,
};
pub use status::{Cidr, StatusConfig};

/// The header eisodos writes when the configuration names none.
pub const DEFAULT_CLUSTER_HEADER: &str = "x-eisodos-cluster";
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
        write_one_line(f, &self.field)?;
        f.write_str(": ")?;
        write_one_line(f, &self.reason)
    }
}

/// `text` with control characters escaped (`\n`, `\u{1b}`): a key or value quoted from the
/// configuration cannot break the error's one line, in Envoy's log or the checker's output.
fn write_one_line(f: &mut fmt::Formatter<'_>, text: &str) -> fmt::Result {
    for c in text.chars() {
        if c.is_control() {
            write!(f, "{}", c.escape_default())?;
        } else {
            write!(f, "{c}")?;
        }
    }
    Ok(())
}

impl std::error::Error for ConfigError {}

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
    /// Whether each request's reason is left in filter state (`wasm.eisodos.reason`) for
    /// access logs and traces.
    pub filter_state: bool,
    /// Sticky sessions by cookie, if configured.
    pub session_affinity: Option<SessionAffinityConfig>,
    /// Token buckets shared by every worker, if configured.
    pub rate_limit: Option<RateLimitConfig>,
    /// Traffic splitting (`subsets`, `default_subset`, `rules`, `split_key`), if configured.
    pub split: Option<Split>,
    /// Request filtering: the first rule that matches a request denies it (empty: off).
    pub deny: Vec<DenyRule>,
    /// Retries by Envoy's router, if configured.
    pub retry: Option<RetryConfig>,
    /// The routed request's overall timeout (Envoy's router, retries included), if configured.
    pub timeout_ms: Option<u32>,
}

impl Config {
    /// Parses and validates the plugin configuration bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, ConfigError> {
        #[cfg(test)]
        #[cfg(not(target_family = "wasm"))]
        schema_agreement::record(bytes);
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ConfigError::new(
                "configuration",
                "is empty; expected a JSON object with at least `backends`",
            ));
        }
        let document = json::parse(bytes)?;
        let mut top = At::root(&document).object()?;
        let mut config = Self::read(&mut top)?;
        top.finish()?;
        hash_key::required_by(config.policy, &config.hash_key)?;
        backends::check_retry_clusters(&config.backends, config.retry.is_some())?;
        match &mut config.health_check {
            Some(check) => {
                check.probe_authorities =
                    authority::resolve(&config.backends, check.authority.as_deref())?;
            }
            None => authority::unused(&config.backends)?,
        }
        Ok(config)
    }

    /// Reads the top-level fields, in the order the unknown-field message lists them.
    fn read(top: &mut Object<'_>) -> Result<Self, ConfigError> {
        let cluster_header = read_cluster_header(top)?;
        let policy = policy::read_policy(top)?;
        let backends = backends::read(top)?;
        let round_robin = policy::read_round_robin(top, policy)?;
        let least_request = policy::read_least_request(top, policy)?;
        let hash_key = hash_key::read(top, policy)?;
        let on_missing_key = policy::read_on_missing_key(top, policy)?;
        let bounded_load_factor = policy::read_bounded_load_factor(top, policy)?;
        let ip_hash = policy::read_ip_hash(top, policy)?;
        let health_check = health::read_health_check(top)?;
        let outlier_detection = health::read_outlier_detection(top)?;
        let panic_threshold_percent = top
            .u32_in("panic_threshold_percent", 0..=100)?
            .unwrap_or(50);
        let status = status::read(top)?;
        let filter_state = match top.optional("filter_state")? {
            Some(at) => at.bool()?,
            None => true,
        };
        // The traffic controls in the order a request meets them.
        let deny = deny::read(top)?;
        let rate_limit = rate_limit::read(top)?;
        let split = split::read(top, &backends)?;
        let session_affinity = session_affinity::read(top)?;
        let retry = retry::read_retry(top)?;
        let timeout_ms = retry::read_timeout(top)?;
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
            filter_state,
            session_affinity,
            rate_limit,
            split,
            deny,
            retry,
            timeout_ms,
        })
    }
}

/// `cluster_header`, lower-cased.
fn read_cluster_header(top: &mut Object<'_>) -> Result<String, ConfigError> {
    // A default but no `Option` in serde's day: `null` is a type error.
    let Some(at) = top.get("cluster_header")? else {
        return Ok(DEFAULT_CLUSTER_HEADER.to_owned());
    };
    let name = at.str()?.to_ascii_lowercase();
    match header_name_problem(&name) {
        Some(reason) => Err(at.error(reason)),
        None => Ok(name),
    }
}

/// RFC 9110 token characters: what an HTTP header name may contain.
fn is_token_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

/// Why `name` cannot name a request header eisodos reads, if it cannot: a header name in lower
/// case (Envoy's header maps are); with `pseudo`, also a pseudo-header such as `:authority`.
fn request_header_problem(name: &str, pseudo: bool) -> Option<String> {
    if name.bytes().any(|c| c.is_ascii_uppercase()) {
        return Some(format!("\"{name}\" must be lower-case"));
    }
    match name.strip_prefix(':') {
        Some(rest) if pseudo => header_name_problem(rest),
        _ => header_name_problem(name),
    }
}

/// Why `name` cannot be a header name, if it cannot.
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

#[cfg(test)]
mod tests {
    use super::*;
    use policy::POLICIES;

    // `parse`, `rejected` and `A` serve the topic modules' tests too.

    pub(super) fn parse(json: &str) -> Result<Config, ConfigError> {
        Config::parse(json.as_bytes())
    }

    pub(super) fn rejected(json: &str) -> ConfigError {
        parse(json).expect_err("configuration should be rejected")
    }

    /// Found by the fuzz harness (`config_tree`): an unknown key holding a newline was
    /// quoted as it was, so the `field: reason` line broke in two in Envoy's log.
    #[test]
    fn an_error_quoting_a_control_character_stays_on_one_line() {
        let err = Config::parse(br#"{"a\nb\u001b": 1}"#).unwrap_err();
        assert_eq!(err.field, "a\nb\u{1b}");
        let line = err.to_string();
        assert!(!line.contains('\n') && !line.contains('\u{1b}'), "{line}");
        assert!(
            line.starts_with("a\\nb\\u{1b}: unknown field `a\\nb\\u{1b}`"),
            "{line}"
        );
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
                    backup: false,
                    authority: None,
                    max_requests: None,
                    retry_cluster: None
                },
                Backend {
                    cluster: "backend_b".into(),
                    weight: 1,
                    backup: false,
                    authority: None,
                    max_requests: None,
                    retry_cluster: None
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
    fn unknown_field_at_the_top() {
        let err = rejected(r#"{"backend": [{"cluster": "a"}]}"#);
        assert_eq!(err.field, "backend");
        assert!(err.reason.contains("unknown field `backend`"), "{err}");
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

    pub(super) const A: &str = r#""backends": [{"cluster": "a"}, {"cluster": "b"}]"#;

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
                r#""health_check": {"path": "/h", "timeout_ms": 1.5}"#,
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
    fn integers_are_integral_numbers() {
        for (weight, reason) in [
            ("-3", "invalid value: integer `-3`, expected u32"),
            (
                "99999999999",
                "invalid value: integer `99999999999`, expected u32",
            ),
            ("1.5", "invalid type: floating point, expected u32"),
            ("-2.0", "invalid value: floating point, expected u32"),
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
        // As Istio delivers a WasmPlugin's pluginConfig: every number a double.
        let config = parse(
            r#"{"backends": [{"cluster": "a", "weight": 5.0}, {"cluster": "b", "weight": 1e1}],
                "health_check": {"path": "/h", "interval_ms": 2000.0, "expected_statuses": [200.0]}}"#,
        )
        .unwrap();
        let weights: Vec<u32> = config.backends.iter().map(|b| b.weight).collect();
        assert_eq!(weights, [5, 10]);
    }

    #[test]
    fn unknown_fields_list_the_known_ones() {
        let err = rejected(r#"{"backends": [{"cluster": "a", "wieght": 2}]}"#);
        assert_eq!(
            err.reason,
            "unknown field `wieght`, expected one of `cluster`, `weight`, `backup`, `authority`, `max_requests`, `retry_cluster`"
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
                "`cluster_header`, `policy`, `backends`, `round_robin`, `least_request`, `hash_key`, `on_missing_key`, `bounded_load_factor`, `ip_hash`, `health_check`, `outlier_detection`, `panic_threshold_percent`, `status_path`, `status_allowed_cidrs`, `filter_state`, `deny`, `rate_limit`, `subsets`, `default_subset`, `rules`, `split_key`, `session_affinity`, `retry`, `timeout_ms`",
            ),
            (
                r#""rate_limit": {"requests_per_second": 1, "zz": 1}"#,
                "rate_limit.zz",
                "`requests_per_second`, `burst`, `key`, `buckets`, `batch`",
            ),
            (
                r#""policy": "round_robin", "round_robin": {"zz": 1}"#,
                "round_robin.zz",
                "`ticket_batch`",
            ),
            (
                r#""policy": "least_request", "least_request": {"zz": 1}"#,
                "least_request.zz",
                "`choice_count`, `active_request_bias`, `latency_decay_ms`, `degraded_ratio`, `degraded_trickle_ms`",
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
                "unknown field `zz`, expected one of `cluster`, `weight`, `backup`, `authority`, `max_requests`, `retry_cluster`"
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

    #[test]
    fn the_reason_goes_to_filter_state_unless_turned_off() {
        assert!(parse(&format!("{{{A}}}")).unwrap().filter_state);
        assert!(
            parse(&format!(r#"{{"filter_state": null, {A}}}"#))
                .unwrap()
                .filter_state
        );
        assert!(
            !parse(&format!(r#"{{"filter_state": false, {A}}}"#))
                .unwrap()
                .filter_state
        );
        let err = rejected(&format!(r#"{{"filter_state": "off", {A}}}"#));
        assert_eq!(
            (err.field.as_str(), err.reason.as_str()),
            (
                "filter_state",
                "invalid type: string \"off\", expected a boolean"
            )
        );
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
    fn errors_display_as_one_line_naming_the_field() {
        let err = rejected(r#"{"backends": [{"cluster": "a", "weight": 0}]}"#);
        let line = err.to_string();
        assert!(line.starts_with("backends[0].weight: "), "{line}");
        assert!(!line.contains('\n'));
    }
}
