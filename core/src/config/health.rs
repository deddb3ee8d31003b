//! The health sections of the configuration: active probes (`health_check`) and passive
//! ejection (`outlier_detection`).

use super::json::{At, Object};
use super::{host, ConfigError};

/// Most expected statuses listed.
pub const MAX_EXPECTED_STATUSES: usize = 32;

/// Where a backend starts before any probe has answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InitialState {
    /// In rotation until probes say otherwise.
    #[default]
    Healthy,
    /// Out of rotation until `healthy_threshold` probes succeed.
    Unhealthy,
}

/// Active health checking: HTTP probes sent through each backend's cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckConfig {
    /// Request path of the probe.
    pub path: String,
    /// `:authority` of the probes of a backend without its own `authority`.
    pub authority: Option<String>,
    /// The `:authority` each backend is probed with, by backend index, resolved once at
    /// configure time: `backends[i].authority`, else [`Self::authority`], else the host its
    /// cluster name carries (see [`derive_authority`](super::derive_authority)).
    pub probe_authorities: Vec<String>,
    /// HTTP method of the probe.
    pub method: String,
    /// Time between probes of one backend.
    pub interval_ms: u32,
    /// A probe unanswered after this long has failed.
    pub timeout_ms: u32,
    /// Consecutive successes that make an unhealthy backend healthy.
    pub healthy_threshold: u32,
    /// Consecutive failures that make a healthy backend unhealthy.
    pub unhealthy_threshold: u32,
    /// Statuses that count as success.
    pub expected_statuses: Vec<u16>,
    /// Each interval is lengthened by a random 0..=this percent, so probes of many backends
    /// (and of many Envoys) do not march in step.
    pub interval_jitter_percent: u32,
    /// State before the first probes answer.
    pub initial_state: InitialState,
}

#[cfg(test)]
impl HealthCheckConfig {
    /// The documented defaults with path `/healthz`: what `{"path": "/healthz"}` parses to.
    pub(crate) fn defaults_for_tests() -> Self {
        Self {
            path: "/healthz".into(),
            authority: None,
            probe_authorities: Vec::new(),
            method: "GET".into(),
            interval_ms: 1000,
            timeout_ms: 500,
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            expected_statuses: vec![200],
            interval_jitter_percent: 0,
            initial_state: InitialState::Healthy,
        }
    }
}

/// Passive ejection: consecutive failed requests take a backend out for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierDetectionConfig {
    /// Consecutive failed requests (5xx, connect failure, reset, timeout) that eject.
    pub consecutive_failures: u32,
    /// Ejection time; the n-th ejection of a backend lasts n times this.
    pub base_ejection_ms: u32,
    /// Never eject beyond this percent of the primary backends (at least one may always be).
    pub max_ejection_percent: u32,
}

/// `initial_state`'s values.
const INITIAL_STATES: &[(&str, InitialState)] = &[
    ("healthy", InitialState::Healthy),
    ("unhealthy", InitialState::Unhealthy),
];

/// `health_check`, if present.
pub(super) fn read_health_check(
    top: &mut Object<'_>,
) -> Result<Option<HealthCheckConfig>, ConfigError> {
    let Some(at) = top.optional("health_check")? else {
        return Ok(None);
    };
    let mut section = at.object()?;
    let path = match section.required("path")? {
        Some(at) => {
            let path = at.string()?;
            if !path.starts_with('/') || path.len() > super::MAX_NAME_LEN {
                return Err(at.error(format!(
                    "must start with / and be at most {} bytes",
                    super::MAX_NAME_LEN
                )));
            }
            if !path.bytes().all(|c| c.is_ascii_graphic()) {
                return Err(at.error("must be printable ASCII without spaces".to_owned()));
            }
            path
        }
        // `section.finish()` reports it missing.
        None => String::new(),
    };
    let authority = match section.optional("authority")? {
        Some(at) => {
            let authority = at.string()?;
            if let Some(reason) = host::host_problem(&authority) {
                return Err(at.error(reason));
            }
            Some(authority)
        }
        None => None,
    };
    let method = match section.optional("method")? {
        Some(at) => {
            let method = at.string()?;
            if method.is_empty() || !method.bytes().all(|c| c.is_ascii_uppercase()) {
                return Err(at.error(format!(
                    "\"{method}\" is not an HTTP method (upper-case letters, e.g. GET)"
                )));
            }
            method
        }
        None => "GET".to_owned(),
    };
    let interval_ms = section
        .u32_in("interval_ms", 100..=3_600_000)?
        .unwrap_or(1000);
    let timeout_ms = section.u32_in("timeout_ms", 1..=60_000)?.unwrap_or(500);
    let healthy_threshold = section.u32_in("healthy_threshold", 1..=100)?.unwrap_or(2);
    let unhealthy_threshold = section.u32_in("unhealthy_threshold", 1..=100)?.unwrap_or(3);
    let expected_statuses = match section.optional("expected_statuses")? {
        Some(at) => read_statuses(&at)?,
        None => vec![200],
    };
    let interval_jitter_percent = section
        .u32_in("interval_jitter_percent", 0..=100)?
        .unwrap_or(0);
    let initial_state = match section.optional("initial_state")? {
        Some(at) => at.choice(INITIAL_STATES)?,
        None => InitialState::default(),
    };
    section.finish()?;
    Ok(Some(HealthCheckConfig {
        path,
        authority,
        // Filled by `authority::resolve` once the backends are known.
        probe_authorities: Vec::new(),
        method,
        interval_ms,
        timeout_ms,
        healthy_threshold,
        unhealthy_threshold,
        expected_statuses,
        interval_jitter_percent,
        initial_state,
    }))
}

/// `expected_statuses`: 1 to [`MAX_EXPECTED_STATUSES`] HTTP statuses.
fn read_statuses(at: &At<'_>) -> Result<Vec<u16>, ConfigError> {
    let items = at.array()?;
    if items.len() == 0 || items.len() > MAX_EXPECTED_STATUSES {
        return Err(at.error(format!("must list 1 to {MAX_EXPECTED_STATUSES} statuses")));
    }
    let mut statuses = Vec::with_capacity(items.len());
    for item in items {
        let status = item.u16()?;
        if !(100..=599).contains(&status) {
            return Err(item.error(format!("must be an HTTP status (100 to 599), got {status}")));
        }
        statuses.push(status);
    }
    Ok(statuses)
}

/// `outlier_detection`, if present.
pub(super) fn read_outlier_detection(
    top: &mut Object<'_>,
) -> Result<Option<OutlierDetectionConfig>, ConfigError> {
    let Some(at) = top.optional("outlier_detection")? else {
        return Ok(None);
    };
    let mut section = at.object()?;
    let config = OutlierDetectionConfig {
        consecutive_failures: section
            .u32_in("consecutive_failures", 1..=1000)?
            .unwrap_or(5),
        base_ejection_ms: section
            .u32_in("base_ejection_ms", 1..=86_400_000)?
            .unwrap_or(30_000),
        max_ejection_percent: section
            .u32_in("max_ejection_percent", 0..=100)?
            .unwrap_or(50),
    };
    section.finish()?;
    Ok(Some(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{parse, rejected, A};

    #[test]
    fn health_sections_parse_with_defaults() {
        let config = parse(&format!(
            r#"{{"health_check": {{"path": "/healthz"}}, "outlier_detection": {{}}, {A}}}"#
        ))
        .unwrap();
        assert_eq!(
            config.health_check,
            Some(HealthCheckConfig {
                probe_authorities: vec!["a".into(), "b".into()],
                ..HealthCheckConfig::defaults_for_tests()
            })
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
}
