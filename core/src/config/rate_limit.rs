//! `rate_limit`: token buckets shared by every worker, keyed like `hash_key`.

use super::hash_key::{read_sources, HashSource};
use super::json::Object;
use super::ConfigError;

/// Highest `rate_limit.requests_per_second` (and `burst`): far above what one Envoy serves,
/// and low enough that a bucket's capacity in micro-tokens (`burst × 10^6`) and a second's
/// refill cannot overflow a `u64`.
pub const MAX_RATE: u32 = 1_000_000_000;
/// Most `rate_limit.buckets`: each bucket is one shared-data key (~150 bytes in Envoy), created
/// by every worker at configure time.
pub const MAX_BUCKETS: u32 = 65_536;
/// Default `rate_limit.buckets`.
pub const DEFAULT_BUCKETS: u32 = 4096;
/// Most tokens a worker takes from a bucket at once (`rate_limit.batch`).
pub const MAX_RATE_BATCH: u32 = 1024;
/// The finest rate: `requests_per_second` is kept in thousandths.
pub const RATE_RESOLUTION: f64 = 0.001;

/// Rate limiting: one token bucket per key, shared by every worker of the Envoy process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Sustained rate per bucket in thousandths of a request per second (`requests_per_second`
    /// × 1000, rounded to the nearest): 1 to `MAX_RATE × 1000`.
    pub milli_rps: u64,
    /// Bucket capacity: requests a bucket admits at once after being idle.
    pub burst: u32,
    /// Where a request's key comes from (empty: every request shares one bucket).
    pub key: Vec<HashSource>,
    /// Buckets the keys are hashed into (1 without `key`); requests without any key source
    /// present share one more bucket of their own.
    pub buckets: u32,
    /// Tokens a worker takes from a shared bucket per compare-and-swap and spends locally.
    pub batch: u32,
}

/// `rate_limit`, if present.
pub(super) fn read(top: &mut Object<'_>) -> Result<Option<RateLimitConfig>, ConfigError> {
    let Some(at) = top.optional("rate_limit")? else {
        return Ok(None);
    };
    let mut section = at.object()?;
    let milli_rps = match section.required("requests_per_second")? {
        Some(at) => {
            let rate = at.f64_in(
                RATE_RESOLUTION..=f64::from(MAX_RATE),
                "0.001 and 1000000000 (requests per second, in steps of 0.001)",
            )?;
            // In range (checked above), so the rounded product fits a u64 exactly.
            (rate * 1000.0).round() as u64
        }
        // `section.finish()` reports it missing.
        None => 1,
    };
    // A bucket must hold at least one whole token, else it never admits.
    let default_burst = u32::try_from(milli_rps.div_ceil(1000)).unwrap_or(MAX_RATE);
    let burst = section
        .u32_in("burst", 1..=MAX_RATE)?
        .unwrap_or(default_burst.max(1));
    let key = match section.optional("key")? {
        Some(at) => read_sources(&at)?,
        None => Vec::new(),
    };
    let buckets =
        match section.optional("buckets")? {
            Some(at) if key.is_empty() => return Err(at.error(
                "applies only with rate_limit.key; without a key every request shares one bucket"
                    .to_owned(),
            )),
            Some(at) => at.u32_in(1..=MAX_BUCKETS)?,
            None if key.is_empty() => 1,
            None => DEFAULT_BUCKETS,
        };
    let batch = section.u32_in("batch", 1..=MAX_RATE_BATCH)?.unwrap_or(1);
    section.finish()?;
    Ok(Some(RateLimitConfig {
        milli_rps,
        burst,
        key,
        buckets,
        batch,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{parse, rejected, A};

    fn read(section: &str) -> Result<Option<RateLimitConfig>, ConfigError> {
        parse(&format!(r#"{{"rate_limit": {section}, {A}}}"#)).map(|config| config.rate_limit)
    }

    #[test]
    fn absent_is_off() {
        assert_eq!(parse(&format!("{{{A}}}")).unwrap().rate_limit, None);
        assert_eq!(read("null").unwrap(), None);
    }

    #[test]
    fn the_example_from_the_issue() {
        let config = read(
            r#"{"requests_per_second": 100, "burst": 200, "key": [{"header": "x-api-key"}], "buckets": 4096}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            config,
            RateLimitConfig {
                milli_rps: 100_000,
                burst: 200,
                key: vec![HashSource::Header("x-api-key".into())],
                buckets: 4096,
                batch: 1,
            }
        );
    }

    #[test]
    fn defaults() {
        let config = read(r#"{"requests_per_second": 50}"#).unwrap().unwrap();
        assert_eq!(
            (config.burst, config.buckets, config.batch, config.key.len()),
            (50, 1, 1, 0),
            "burst = the rate, one bucket without a key"
        );
        let keyed = read(r#"{"requests_per_second": 50, "key": [{"source_ip": {}}]}"#)
            .unwrap()
            .unwrap();
        assert_eq!(keyed.buckets, DEFAULT_BUCKETS);
    }

    #[test]
    fn fractional_rates_in_thousandths() {
        let config = read(r#"{"requests_per_second": 0.5}"#).unwrap().unwrap();
        assert_eq!(
            (config.milli_rps, config.burst),
            (500, 1),
            "burst at least 1"
        );
        let config = read(r#"{"requests_per_second": 2.5}"#).unwrap().unwrap();
        assert_eq!((config.milli_rps, config.burst), (2500, 3));
        let config = read(r#"{"requests_per_second": 0.001}"#).unwrap().unwrap();
        assert_eq!(config.milli_rps, 1);
        let config = read(r#"{"requests_per_second": 1e9}"#).unwrap().unwrap();
        assert_eq!(
            (config.milli_rps, config.burst),
            (1_000_000_000_000, MAX_RATE)
        );
    }

    #[test]
    fn bad_values_name_the_field() {
        for (section, field) in [
            ("{}", "rate_limit"),
            (
                r#"{"requests_per_second": 0}"#,
                "rate_limit.requests_per_second",
            ),
            (
                r#"{"requests_per_second": 0.0004}"#,
                "rate_limit.requests_per_second",
            ),
            (
                r#"{"requests_per_second": -1}"#,
                "rate_limit.requests_per_second",
            ),
            (
                r#"{"requests_per_second": 2e9}"#,
                "rate_limit.requests_per_second",
            ),
            (
                r#"{"requests_per_second": "5"}"#,
                "rate_limit.requests_per_second",
            ),
            (
                r#"{"requests_per_second": 5, "burst": 0}"#,
                "rate_limit.burst",
            ),
            (
                r#"{"requests_per_second": 5, "burst": 1.5}"#,
                "rate_limit.burst",
            ),
            (
                r#"{"requests_per_second": 5, "buckets": 16}"#,
                "rate_limit.buckets",
            ),
            (
                r#"{"requests_per_second": 5, "key": [{"path": {}}], "buckets": 0}"#,
                "rate_limit.buckets",
            ),
            (
                r#"{"requests_per_second": 5, "key": [{"path": {}}], "buckets": 65537}"#,
                "rate_limit.buckets",
            ),
            (r#"{"requests_per_second": 5, "key": []}"#, "rate_limit.key"),
            (
                r#"{"requests_per_second": 5, "key": [{"header": "X"}]}"#,
                "rate_limit.key[0].header",
            ),
            (
                r#"{"requests_per_second": 5, "batch": 0}"#,
                "rate_limit.batch",
            ),
            (
                r#"{"requests_per_second": 5, "batch": 1025}"#,
                "rate_limit.batch",
            ),
            (
                r#"{"requests_per_second": 5, "rate": 1}"#,
                "rate_limit.rate",
            ),
            ("[]", "rate_limit"),
        ] {
            let err = rejected(&format!(r#"{{"rate_limit": {section}, {A}}}"#));
            assert_eq!(err.field, field, "{section}: {err}");
        }
        let err = rejected(&format!(r#"{{"rate_limit": {{}}, {A}}}"#));
        assert_eq!(err.reason, "missing field `requests_per_second`");
    }
}
