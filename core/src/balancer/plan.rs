//! What a configuration decides once, before any request: the names of its shared-data keys,
//! how often its worker ticks, the bodies of its local replies.

use std::fmt::Write as _;

use crate::config::{Config, HashSource, Policy};
use crate::metrics::FLUSH_PERIOD_MS;

/// How often a worker ticks with in-flight counts: how long an idle worker's releases may
/// wait before the other workers see them.
pub const RELEASE_FLUSH_MS: u64 = 20;

/// The immutable part of a balancer: its configuration and what follows from it.
#[derive(Debug)]
pub struct Plan {
    /// The validated configuration.
    pub config: Config,
    /// Keeps this filter's keys apart from other eisodos filters in the same VM.
    namespace: String,
    /// Identifies the backend list, so records of different lists never mix.
    fingerprint: String,
    /// The tick period health checking needs (0: none); also sets the probe lease's term.
    pub health_period_ms: u64,
    /// How often the worker ticks; see [`tick_period_ms`].
    pub tick_period_ms: u64,
    /// Body of the local 400 for a request without a hash key.
    pub missing_key_body: String,
    /// Seconds for `retry-after` when nothing is healthy: the probe interval, rounded up.
    pub retry_after_s: u32,
}

impl Plan {
    /// The plan of `config` under `namespace`, ticking for health only: a policy whose
    /// requests hold in-flight counts sets [`Self::tick_period_ms`] with [`tick_period_ms`].
    pub fn new(config: Config, namespace: &str) -> Self {
        let health_period_ms = health_period_ms(&config);
        let retry_after_s = config
            .health_check
            .as_ref()
            .map_or(1000, |check| check.interval_ms)
            .div_ceil(1000)
            .max(1);
        Self {
            fingerprint: fingerprint(&config),
            namespace: namespace.to_owned(),
            health_period_ms,
            tick_period_ms: health_period_ms,
            missing_key_body: missing_key_body(&config),
            retry_after_s,
            config,
        }
    }

    /// The key of this configuration's `what` record: `eisodos.<namespace>.<what>.<fingerprint>`.
    pub fn key(&self, what: &str) -> String {
        format!("eisodos.{}.{what}.{}", self.namespace, self.fingerprint)
    }

    /// The round-robin ticket's key: one order per filter, whatever its backend list, so a
    /// reconfiguration continues the rotation.
    pub fn ticket_key(&self) -> String {
        format!("eisodos.{}.rr_ticket", self.namespace)
    }

    /// Backend `index`'s cluster name ("" for an index out of range).
    pub fn cluster(&self, index: usize) -> &str {
        self.config
            .backends
            .get(index)
            .map_or("", |backend| backend.cluster.as_str())
    }

    /// The `:authority` of backend `index`'s probes ("" without health checks or for an
    /// index out of range): resolved when the configuration was read, not per probe.
    pub fn probe_authority(&self, index: usize) -> &str {
        self.config
            .health_check
            .as_ref()
            .and_then(|check| check.probe_authorities.get(index))
            .map_or("", String::as_str)
    }
}

/// The tick period health checking needs (0: none): a quarter of the probe interval (20 to
/// 100 ms) with active checks, 100 ms with passive ejection only.
fn health_period_ms(config: &Config) -> u64 {
    if let Some(check) = &config.health_check {
        (u64::from(check.interval_ms) / 4).clamp(20, 100)
    } else if config.outlier_detection.is_some() {
        100
    } else {
        0
    }
}

/// The worker's tick period: health's, or [`RELEASE_FLUSH_MS`] when requests hold in-flight
/// counts, whichever is shorter; [`FLUSH_PERIOD_MS`] when neither needs a tick, so the
/// metrics counted per worker still reach Envoy.
pub fn tick_period_ms(health_period_ms: u64, counts_in_flight: bool) -> u64 {
    match (health_period_ms, counts_in_flight) {
        (health, true) if health > 0 => health.min(RELEASE_FLUSH_MS),
        (_, true) => RELEASE_FLUSH_MS,
        (0, false) => FLUSH_PERIOD_MS,
        (health, false) => health,
    }
}

/// Identifies a backend list, so in-flight records of different lists never mix.
fn fingerprint(config: &Config) -> String {
    let mut context = md5::Context::new();
    for backend in &config.backends {
        context.consume(backend.cluster.as_bytes());
        context.consume([0]);
    }
    let digest = context.finalize();
    digest
        .0
        .iter()
        .take(6)
        .fold(String::with_capacity(12), |mut hex, byte| {
            let _ = write!(hex, "{byte:02x}");
            hex
        })
}

/// The body of the local 400 for a request without a hash key: names where the key was looked
/// for, so the client can tell what to send.
fn missing_key_body(config: &Config) -> String {
    let sources: Vec<String> = match config.policy {
        Policy::IpHash => vec!["the client IP address".into()],
        _ => config
            .hash_key
            .iter()
            .map(|source| match source {
                HashSource::Header(name) => format!("header {name}"),
                HashSource::Cookie(name) => format!("cookie {name}"),
                HashSource::Query(name) => format!("query parameter {name}"),
                HashSource::Path(_) => "the path".into(),
                HashSource::SourceIp(_) => "the client IP address".into(),
            })
            .collect(),
    };
    format!(
        "eisodos: the request has no hash key (looked for {})\n",
        sources.join(", ")
    )
}
