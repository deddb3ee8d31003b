//! The health sections of the configuration: active probes, passive ejection, panic mode and
//! the status page. Parsed as part of [`super::Config`].

use std::net::IpAddr;

use super::json::Object;
use super::ConfigError;

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
    /// `:authority` of the probe; the cluster name when unset.
    pub authority: Option<String>,
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

/// An IP network, `address/prefix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `10.0.0.0/8`, `::1/128`, or a bare address (a single host).
    pub fn parse(text: &str) -> Option<Self> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix.parse::<u8>().ok()?)),
            None => (text, None),
        };
        let network: IpAddr = address.parse().ok()?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Self { network, prefix })
    }

    /// Whether `ip` lies in this network. An IPv4-mapped IPv6 address matches IPv4 networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The status page: a JSON view of every backend's health, for operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusConfig {
    /// Request path that answers with the status (exact match, query string ignored).
    pub path: String,
    /// Clients allowed to see it; others get the normal routing.
    pub allowed: Vec<Cidr>,
}

/// `health_check`'s fields.
pub(super) const HEALTH_CHECK_FIELDS: &[&str] = &[
    "path",
    "authority",
    "method",
    "interval_ms",
    "timeout_ms",
    "healthy_threshold",
    "unhealthy_threshold",
    "expected_statuses",
    "interval_jitter_percent",
    "initial_state",
];

/// `outlier_detection`'s fields.
pub(super) const OUTLIER_DETECTION_FIELDS: &[&str] = &[
    "consecutive_failures",
    "base_ejection_ms",
    "max_ejection_percent",
];

/// `initial_state`'s values.
const INITIAL_STATES: &[(&str, InitialState)] = &[
    ("healthy", InitialState::Healthy),
    ("unhealthy", InitialState::Unhealthy),
];

/// `health_check` as written, before validation.
pub(super) struct RawHealthCheck {
    path: String,
    authority: Option<String>,
    method: Option<String>,
    interval_ms: Option<u32>,
    timeout_ms: Option<u32>,
    healthy_threshold: Option<u32>,
    unhealthy_threshold: Option<u32>,
    expected_statuses: Option<Vec<u16>>,
    interval_jitter_percent: Option<u32>,
    initial_state: Option<InitialState>,
}

/// `outlier_detection` as written, before validation.
pub(super) struct RawOutlierDetection {
    consecutive_failures: Option<u32>,
    base_ejection_ms: Option<u32>,
    max_ejection_percent: Option<u32>,
}

impl RawHealthCheck {
    /// Reads the fields' types from the section (checked against [`HEALTH_CHECK_FIELDS`]).
    pub(super) fn read(section: &Object<'_>) -> Result<Self, ConfigError> {
        let path = section.required("path")?.string()?;
        let expected_statuses = match section.array("expected_statuses")? {
            Some(items) => {
                let mut statuses = Vec::with_capacity(items.len());
                for at in items {
                    statuses.push(at.u16()?);
                }
                Some(statuses)
            }
            None => None,
        };
        let initial_state = match section.optional("initial_state") {
            Some(at) => Some(at.choice(INITIAL_STATES)?),
            None => None,
        };
        Ok(Self {
            path,
            authority: section.string("authority")?,
            method: section.string("method")?,
            interval_ms: section.u32("interval_ms")?,
            timeout_ms: section.u32("timeout_ms")?,
            healthy_threshold: section.u32("healthy_threshold")?,
            unhealthy_threshold: section.u32("unhealthy_threshold")?,
            expected_statuses,
            interval_jitter_percent: section.u32("interval_jitter_percent")?,
            initial_state,
        })
    }
}

impl RawOutlierDetection {
    /// Reads the fields' types from the section (checked against
    /// [`OUTLIER_DETECTION_FIELDS`]).
    pub(super) fn read(section: &Object<'_>) -> Result<Self, ConfigError> {
        Ok(Self {
            consecutive_failures: section.u32("consecutive_failures")?,
            base_ejection_ms: section.u32("base_ejection_ms")?,
            max_ejection_percent: section.u32("max_ejection_percent")?,
        })
    }
}

fn in_range(field: &str, value: u32, min: u32, max: u32) -> Result<u32, ConfigError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError::new(
            field,
            format!("must be between {min} and {max}, got {value}"),
        ))
    }
}

impl RawHealthCheck {
    pub(super) fn validate(self) -> Result<HealthCheckConfig, ConfigError> {
        if !self.path.starts_with('/') || self.path.len() > super::MAX_NAME_LEN {
            return Err(ConfigError::new(
                "health_check.path",
                format!(
                    "must start with / and be at most {} bytes",
                    super::MAX_NAME_LEN
                ),
            ));
        }
        if !self.path.bytes().all(|c| c.is_ascii_graphic()) {
            return Err(ConfigError::new(
                "health_check.path",
                "must be printable ASCII without spaces",
            ));
        }
        if let Some(authority) = &self.authority {
            if authority.is_empty() || !authority.bytes().all(|c| c.is_ascii_graphic()) {
                return Err(ConfigError::new(
                    "health_check.authority",
                    "must be a non-empty host[:port]",
                ));
            }
        }
        let method = self.method.unwrap_or_else(|| "GET".to_owned());
        if method.is_empty() || !method.bytes().all(|c| c.is_ascii_uppercase()) {
            return Err(ConfigError::new(
                "health_check.method",
                format!("\"{method}\" is not an HTTP method (upper-case letters, e.g. GET)"),
            ));
        }
        let interval_ms = in_range(
            "health_check.interval_ms",
            self.interval_ms.unwrap_or(1000),
            100,
            3_600_000,
        )?;
        let timeout_ms = in_range(
            "health_check.timeout_ms",
            self.timeout_ms.unwrap_or(500),
            1,
            60_000,
        )?;
        let healthy_threshold = in_range(
            "health_check.healthy_threshold",
            self.healthy_threshold.unwrap_or(2),
            1,
            100,
        )?;
        let unhealthy_threshold = in_range(
            "health_check.unhealthy_threshold",
            self.unhealthy_threshold.unwrap_or(3),
            1,
            100,
        )?;
        let expected_statuses = self.expected_statuses.unwrap_or_else(|| vec![200]);
        if expected_statuses.is_empty() || expected_statuses.len() > MAX_EXPECTED_STATUSES {
            return Err(ConfigError::new(
                "health_check.expected_statuses",
                format!("must list 1 to {MAX_EXPECTED_STATUSES} statuses"),
            ));
        }
        if let Some((i, status)) = expected_statuses
            .iter()
            .enumerate()
            .find(|(_, s)| !(100..=599).contains(*s))
        {
            return Err(ConfigError::new(
                format!("health_check.expected_statuses[{i}]"),
                format!("must be an HTTP status (100 to 599), got {status}"),
            ));
        }
        let interval_jitter_percent = in_range(
            "health_check.interval_jitter_percent",
            self.interval_jitter_percent.unwrap_or(0),
            0,
            100,
        )?;
        Ok(HealthCheckConfig {
            path: self.path,
            authority: self.authority,
            method,
            interval_ms,
            timeout_ms,
            healthy_threshold,
            unhealthy_threshold,
            expected_statuses,
            interval_jitter_percent,
            initial_state: self.initial_state.unwrap_or_default(),
        })
    }
}

impl RawOutlierDetection {
    pub(super) fn validate(self) -> Result<OutlierDetectionConfig, ConfigError> {
        Ok(OutlierDetectionConfig {
            consecutive_failures: in_range(
                "outlier_detection.consecutive_failures",
                self.consecutive_failures.unwrap_or(5),
                1,
                1000,
            )?,
            base_ejection_ms: in_range(
                "outlier_detection.base_ejection_ms",
                self.base_ejection_ms.unwrap_or(30_000),
                1,
                86_400_000,
            )?,
            max_ejection_percent: in_range(
                "outlier_detection.max_ejection_percent",
                self.max_ejection_percent.unwrap_or(50),
                0,
                100,
            )?,
        })
    }
}

/// The status page's path and allow-list.
pub(super) fn validate_status(
    path: Option<String>,
    allowed: Option<Vec<String>>,
) -> Result<Option<StatusConfig>, ConfigError> {
    let Some(path) = path else {
        return match allowed {
            Some(_) => Err(ConfigError::new(
                "status_allowed_cidrs",
                "applies only with status_path; set it or remove this",
            )),
            None => Ok(None),
        };
    };
    if !path.starts_with('/')
        || path.contains('?')
        || path.len() > super::MAX_NAME_LEN
        || !path.bytes().all(|c| c.is_ascii_graphic())
    {
        return Err(ConfigError::new(
            "status_path",
            "must be a path starting with /, without a query, printable ASCII",
        ));
    }
    let allowed = match allowed {
        None => vec![
            Cidr::parse("127.0.0.0/8").unwrap_or(Cidr {
                network: IpAddr::from([127, 0, 0, 1]),
                prefix: 8,
            }),
            Cidr::parse("::1/128").unwrap_or(Cidr {
                network: IpAddr::from([0, 0, 0, 0, 0, 0, 0, 1]),
                prefix: 128,
            }),
        ],
        Some(list) => list
            .iter()
            .enumerate()
            .map(|(i, text)| {
                Cidr::parse(text).ok_or_else(|| {
                    ConfigError::new(
                        format!("status_allowed_cidrs[{i}]"),
                        format!("\"{text}\" is not an address or address/prefix"),
                    )
                })
            })
            .collect::<Result<_, _>>()?,
    };
    Ok(Some(StatusConfig { path, allowed }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        let loopback = Cidr::parse("127.0.0.0/8").unwrap();
        assert!(loopback.contains("127.1.2.3".parse().unwrap()));
        assert!(!loopback.contains("128.0.0.1".parse().unwrap()));
        assert!(loopback.contains("::ffff:127.0.0.1".parse().unwrap()));
        let host = Cidr::parse("10.1.2.3").unwrap();
        assert!(host.contains("10.1.2.3".parse().unwrap()));
        assert!(!host.contains("10.1.2.4".parse().unwrap()));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains("2001:db8:1::5".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        let everyone = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(everyone.contains("8.8.8.8".parse().unwrap()));
        for bad in ["10.0.0.0/33", "::/129", "nonsense", "10.0.0.0/x", ""] {
            assert_eq!(Cidr::parse(bad), None, "{bad}");
        }
    }
}
