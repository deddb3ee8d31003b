//! The health sections of the configuration: active probes, passive ejection, panic mode and
//! the status page. Parsed as part of [`super::Config`].

use std::net::IpAddr;

use super::json::{At, Object};
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
            if authority.is_empty() || !authority.bytes().all(|c| c.is_ascii_graphic()) {
                return Err(at.error("must be a non-empty host[:port]".to_owned()));
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

/// The status page: `status_path`, and `status_allowed_cidrs` (loopback when absent), which
/// needs it.
pub(super) fn read_status(top: &mut Object<'_>) -> Result<Option<StatusConfig>, ConfigError> {
    let path = match top.optional("status_path")? {
        Some(at) => {
            let path = at.string()?;
            if !path.starts_with('/')
                || path.contains('?')
                || path.len() > super::MAX_NAME_LEN
                || !path.bytes().all(|c| c.is_ascii_graphic())
            {
                return Err(at.error(
                    "must be a path starting with /, without a query, printable ASCII".to_owned(),
                ));
            }
            Some(path)
        }
        None => None,
    };
    let cidrs = top.optional("status_allowed_cidrs")?;
    let Some(path) = path else {
        return match cidrs {
            Some(at) => {
                Err(at.error("applies only with status_path; set it or remove this".to_owned()))
            }
            None => Ok(None),
        };
    };
    let allowed = match cidrs {
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
        Some(at) => {
            let items = at.array()?;
            let mut allowed = Vec::with_capacity(items.len());
            for item in items {
                let text = item.str()?;
                match Cidr::parse(text) {
                    Some(cidr) => allowed.push(cidr),
                    None => {
                        return Err(
                            item.error(format!("\"{text}\" is not an address or address/prefix"))
                        )
                    }
                }
            }
            allowed
        }
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
