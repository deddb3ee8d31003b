//! The policy and its tuning: `policy`, and the sections and fields only some policies take
//! (`round_robin`, `least_request`, `on_missing_key`, `bounded_load_factor`, `ip_hash`).
//! `hash_key` has its own module.

use super::json::{At, Object};
use super::ConfigError;

/// Most round-robin tickets a worker claims at once.
pub const MAX_TICKET_BATCH: u32 = 1024;
/// Shortest and longest `least_request.latency_decay_ms`.
pub const MIN_LATENCY_DECAY_MS: u32 = 100;
/// See [`MIN_LATENCY_DECAY_MS`].
pub const MAX_LATENCY_DECAY_MS: u32 = 600_000;
/// Default `least_request.degraded_ratio` with latency weighting: a backend whose fastest
/// recent response is over 3 times the fastest backend's (and 1 ms more) gets only a trickle.
/// `just bench-openloop` ran with 3: both a 20 ms slower and a 5× slower upstream were
/// screened (0.0–0.1% of requests at 30 and 60% load). Other ratios were not measured.
pub const DEFAULT_DEGRADED_RATIO: f64 = 3.0;
/// Smallest `degraded_ratio` other than 0 (off): below it, noise between equal backends
/// would screen one of them.
pub const MIN_DEGRADED_RATIO: f64 = 1.5;
/// Largest `degraded_ratio`.
pub const MAX_DEGRADED_RATIO: f64 = 1000.0;
/// Default `least_request.degraded_trickle_ms`: one request per second per worker to a
/// degraded backend, 0.1% of 2,000 rq/s over two workers, and a recovery seen within a second.
pub const DEFAULT_DEGRADED_TRICKLE_MS: u32 = 1000;
/// Shortest and longest `degraded_trickle_ms`.
pub const MIN_DEGRADED_TRICKLE_MS: u32 = 10;
/// See [`MIN_DEGRADED_TRICKLE_MS`].
pub const MAX_DEGRADED_TRICKLE_MS: u32 = 600_000;
/// Most distinct candidates least-request compares.
pub const MAX_CHOICE_COUNT: u32 = 100;
/// Largest `active_request_bias` accepted (Envoy sets none; beyond this the share is ~0).
pub const MAX_ACTIVE_REQUEST_BIAS: f64 = 10.0;
/// Largest `bounded_load_factor` accepted.
pub const MAX_BOUNDED_LOAD_FACTOR: f64 = 100.0;

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
    /// With latency weighting: a backend whose fastest recent response is over this many
    /// times the fastest backend's is degraded and gets only a trickle; 0 turns it off.
    pub degraded_ratio: f64,
    /// One request per this many ms per worker to each degraded backend.
    pub degraded_trickle_ms: u32,
}

impl Default for LeastRequestConfig {
    fn default() -> Self {
        Self {
            choice_count: 2,
            active_request_bias: 1.0,
            latency_decay_ms: None,
            degraded_ratio: DEFAULT_DEGRADED_RATIO,
            degraded_trickle_ms: DEFAULT_DEGRADED_TRICKLE_MS,
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

/// `policy`'s values, as [`Policy::name`] spells them.
pub(super) const POLICIES: &[(&str, Policy)] = &[
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

/// `policy`.
pub(super) fn read_policy(top: &mut Object<'_>) -> Result<Policy, ConfigError> {
    // A default but no `Option` in serde's day: `null` is a type error.
    match top.get("policy")? {
        Some(at) => at.choice(POLICIES),
        None => Ok(Policy::default()),
    }
}

/// Rejects a section or field (`at`) that `policy` does not use: `applies` says whether it
/// does, `policies` names those that do.
pub(super) fn only_for(
    at: &At<'_>,
    policy: Policy,
    applies: bool,
    policies: &str,
) -> Result<(), ConfigError> {
    if applies {
        Ok(())
    } else {
        Err(at.error(format!(
            "applies only to policy {policies}, not {}; remove it",
            policy.name()
        )))
    }
}

/// `round_robin`, for policy `round_robin`.
pub(super) fn read_round_robin(
    top: &mut Object<'_>,
    policy: Policy,
) -> Result<RoundRobinConfig, ConfigError> {
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
pub(super) fn read_least_request(
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
        degraded_ratio: defaults.degraded_ratio,
        degraded_trickle_ms: defaults.degraded_trickle_ms,
    };
    let ratio = section.optional("degraded_ratio")?;
    let trickle = section.optional("degraded_trickle_ms")?;
    if config.latency_decay_ms.is_none() {
        if let Some(at) = ratio.as_ref().or(trickle.as_ref()) {
            return Err(at.error(
                "applies only with `latency_decay_ms` (latency weighting); set it or remove this"
                    .to_owned(),
            ));
        }
    }
    let degraded_ratio = match ratio {
        None => config.degraded_ratio,
        Some(at) => match at.f64()? {
            0.0 => 0.0,
            r if (MIN_DEGRADED_RATIO..=MAX_DEGRADED_RATIO).contains(&r) => r,
            _ => return Err(at.error("must be 0 (off) or between 1.5 and 1000.0".to_owned())),
        },
    };
    let degraded_trickle_ms = match trickle {
        None => config.degraded_trickle_ms,
        Some(at) => at.u32_in(MIN_DEGRADED_TRICKLE_MS..=MAX_DEGRADED_TRICKLE_MS)?,
    };
    section.finish()?;
    Ok(LeastRequestConfig {
        degraded_ratio,
        degraded_trickle_ms,
        ..config
    })
}

/// `on_missing_key`, for the hashing policies.
pub(super) fn read_on_missing_key(
    top: &mut Object<'_>,
    policy: Policy,
) -> Result<OnMissingKey, ConfigError> {
    let Some(at) = top.optional("on_missing_key")? else {
        return Ok(OnMissingKey::default());
    };
    only_for(&at, policy, policy.hashes(), "consistent_hash or ip_hash")?;
    at.choice(ON_MISSING_KEY)
}

/// `bounded_load_factor`, for the hashing policies.
pub(super) fn read_bounded_load_factor(
    top: &mut Object<'_>,
    policy: Policy,
) -> Result<Option<f64>, ConfigError> {
    let Some(at) = top.optional("bounded_load_factor")? else {
        return Ok(None);
    };
    only_for(&at, policy, policy.hashes(), "consistent_hash or ip_hash")?;
    // The test `float_bounds_in_messages` keeps the text in step with the constant.
    at.f64_in(1.0..=MAX_BOUNDED_LOAD_FACTOR, "1.0 and 100.0")
        .map(Some)
}

/// `ip_hash`, for policy `ip_hash`.
pub(super) fn read_ip_hash(
    top: &mut Object<'_>,
    policy: Policy,
) -> Result<IpHashConfig, ConfigError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{parse, rejected, A};
    use crate::config::{Empty, HashSource};

    #[test]
    fn unknown_policy() {
        let err = rejected(r#"{"policy": "fastest", "backends": [{"cluster": "a"}]}"#);
        assert_eq!(err.field, "policy");
        assert!(err.reason.contains("unknown variant `fastest`"), "{err}");
    }

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
                degraded_ratio: DEFAULT_DEGRADED_RATIO,
                degraded_trickle_ms: DEFAULT_DEGRADED_TRICKLE_MS,
            }
        );
        let degraded = |fields: &str| {
            parse(&format!(
                r#"{{"policy": "least_request", "least_request": {{"latency_decay_ms": 1000, {fields}}}, {A}}}"#
            ))
            .map(|c| (c.least_request.degraded_ratio, c.least_request.degraded_trickle_ms))
        };
        assert_eq!(
            degraded(r#""degraded_ratio": 0, "degraded_trickle_ms": 10"#).unwrap(),
            (0.0, 10)
        );
        assert_eq!(degraded(r#""degraded_ratio": 1.5"#).unwrap(), (1.5, 1000));
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
                r#""policy": "least_request", "least_request": {"latency_decay_ms": 1000, "degraded_ratio": 1.4}"#,
                "least_request.degraded_ratio",
            ),
            (
                r#""policy": "least_request", "least_request": {"latency_decay_ms": 1000, "degraded_ratio": 1001}"#,
                "least_request.degraded_ratio",
            ),
            (
                r#""policy": "least_request", "least_request": {"latency_decay_ms": 1000, "degraded_trickle_ms": 9}"#,
                "least_request.degraded_trickle_ms",
            ),
            (
                r#""policy": "least_request", "least_request": {"degraded_ratio": 3}"#,
                "least_request.degraded_ratio",
            ),
            (
                r#""policy": "least_request", "least_request": {"degraded_trickle_ms": 500}"#,
                "least_request.degraded_trickle_ms",
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
}
