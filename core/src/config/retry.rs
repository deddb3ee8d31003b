//! `retry` and `timeout_ms`: what Envoy's router does with a routed request, told through its
//! `x-envoy-*` request headers.

use super::json::{At, Object};
use super::ConfigError;

/// The router's retry conditions (`x-envoy-retry-on`), as Envoy 1.40 documents them.
pub const RETRY_CONDITIONS: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
];
/// Most retries a request may make (`num_retries`).
pub const MAX_RETRIES: u32 = 10;
/// Longest timeout, per try or overall: a day.
pub const MAX_TIMEOUT_MS: u32 = 86_400_000;

/// Retries by Envoy's router, for every routed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryConfig {
    /// The conditions, comma-separated as `x-envoy-retry-on` takes them, each once.
    pub retry_on: String,
    /// Retries after the first try, 1 to [`MAX_RETRIES`].
    pub num_retries: u32,
    /// Each try's timeout; `None`: only the overall timeout bounds a try.
    pub per_try_timeout_ms: Option<u32>,
}

/// `retry`, if configured.
pub(super) fn read_retry(top: &mut Object<'_>) -> Result<Option<RetryConfig>, ConfigError> {
    let Some(at) = top.optional("retry")? else {
        return Ok(None);
    };
    let mut object = at.object()?;
    let retry_on = match object.required("retry_on")? {
        Some(at) => Some(read_conditions(&at)?),
        None => None,
    };
    let num_retries = object.u32_in("num_retries", 1..=MAX_RETRIES)?.unwrap_or(1);
    let per_try_timeout_ms = object.u32_in("per_try_timeout_ms", 1..=MAX_TIMEOUT_MS)?;
    object.finish()?;
    Ok(retry_on.map(|retry_on| RetryConfig {
        retry_on,
        num_retries,
        per_try_timeout_ms,
    }))
}

/// `timeout_ms`: the whole request's timeout, retries included, if configured.
pub(super) fn read_timeout(top: &mut Object<'_>) -> Result<Option<u32>, ConfigError> {
    top.u32_in("timeout_ms", 1..=MAX_TIMEOUT_MS)
}

/// `retry_on`: known conditions, comma-separated; kept without spaces, a repeated one once.
fn read_conditions(at: &At<'_>) -> Result<String, ConfigError> {
    let text = at.str()?;
    let mut conditions: Vec<&str> = Vec::new();
    for condition in text.split(',').map(str::trim) {
        if !RETRY_CONDITIONS.contains(&condition) {
            return Err(at.error(format!(
                "\"{condition}\" is not a retry condition of Envoy's router; expected \
                 comma-separated {}",
                RETRY_CONDITIONS.join(", ")
            )));
        }
        if !conditions.contains(&condition) {
            conditions.push(condition);
        }
    }
    Ok(conditions.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{parse, rejected, A};

    #[test]
    fn off_unless_configured() {
        let config = parse(&format!("{{{A}}}")).unwrap();
        assert_eq!(config.retry, None);
        assert_eq!(config.timeout_ms, None);
        let config = parse(&format!(r#"{{"retry": null, "timeout_ms": null, {A}}}"#)).unwrap();
        assert_eq!((config.retry, config.timeout_ms), (None, None));
    }

    #[test]
    fn the_issue_example_and_the_defaults() {
        let config = parse(&format!(
            r#"{{"retry": {{"retry_on": "5xx,connect-failure", "num_retries": 2,
                 "per_try_timeout_ms": 1000}}, "timeout_ms": 5000, {A}}}"#
        ))
        .unwrap();
        assert_eq!(
            config.retry,
            Some(RetryConfig {
                retry_on: "5xx,connect-failure".into(),
                num_retries: 2,
                per_try_timeout_ms: Some(1000)
            })
        );
        assert_eq!(config.timeout_ms, Some(5000));
        let config = parse(&format!(
            r#"{{"retry": {{"retry_on": " gateway-error , reset"}}, {A}}}"#
        ))
        .unwrap();
        assert_eq!(
            config.retry,
            Some(RetryConfig {
                retry_on: "gateway-error,reset".into(),
                num_retries: 1,
                per_try_timeout_ms: None
            })
        );
        let config = parse(&format!(
            r#"{{"retry": {{"retry_on": "reset,5xx,reset"}}, {A}}}"#
        ))
        .unwrap();
        assert_eq!(config.retry.unwrap().retry_on, "reset,5xx");
        let all = RETRY_CONDITIONS.join(",");
        let config = parse(&format!(r#"{{"retry": {{"retry_on": "{all}"}}, {A}}}"#)).unwrap();
        assert_eq!(config.retry.unwrap().retry_on, all);
    }

    #[test]
    fn bad_values_name_the_field() {
        for (fields, field, reason) in [
            (r#""retry": {}"#, "retry", "missing field `retry_on`"),
            (r#""retry": {"retry_on": ""}"#, "retry.retry_on", "\"\" is not a retry condition"),
            (
                r#""retry": {"retry_on": "5xx,"}"#,
                "retry.retry_on",
                "\"\" is not a retry condition",
            ),
            (
                r#""retry": {"retry_on": "5XX"}"#,
                "retry.retry_on",
                "\"5XX\" is not a retry condition of Envoy's router; expected comma-separated 5xx, gateway-error",
            ),
            (
                r#""retry": {"retry_on": ["5xx"]}"#,
                "retry.retry_on",
                "invalid type: array, expected a string",
            ),
            (
                r#""retry": {"retry_on": "5xx", "num_retries": 0}"#,
                "retry.num_retries",
                "must be between 1 and 10, got 0",
            ),
            (
                r#""retry": {"retry_on": "5xx", "num_retries": 11}"#,
                "retry.num_retries",
                "must be between 1 and 10, got 11",
            ),
            (
                r#""retry": {"retry_on": "5xx", "per_try_timeout_ms": 0}"#,
                "retry.per_try_timeout_ms",
                "must be between 1 and 86400000, got 0",
            ),
            (
                r#""retry": {"retry_on": "5xx", "attempts": 2}"#,
                "retry.attempts",
                "unknown field `attempts`, expected one of `retry_on`, `num_retries`, `per_try_timeout_ms`",
            ),
            (r#""retry": "5xx""#, "retry", "invalid type: string \"5xx\", expected an object"),
            (r#""timeout_ms": 0"#, "timeout_ms", "must be between 1 and 86400000, got 0"),
            (
                r#""timeout_ms": 86400001"#,
                "timeout_ms",
                "must be between 1 and 86400000, got 86400001",
            ),
        ] {
            let err = rejected(&format!("{{{fields}, {A}}}"));
            assert_eq!(
                (err.field.as_str(), err.reason.starts_with(reason)),
                (field, true),
                "{fields}: {err}"
            );
        }
    }

    #[test]
    fn retry_clusters_need_retry_and_a_name_of_their_own() {
        let backends = r#""backends": [{"cluster": "a", "retry_cluster": "retry_a"},
                                       {"cluster": "b", "retry_cluster": "retry_b"}, {"cluster": "c"}]"#;
        let config = parse(&format!(
            r#"{{"retry": {{"retry_on": "5xx"}}, {backends}}}"#
        ))
        .unwrap();
        let retry_clusters: Vec<Option<&str>> = config
            .backends
            .iter()
            .map(|b| b.retry_cluster.as_deref())
            .collect();
        assert_eq!(retry_clusters, [Some("retry_a"), Some("retry_b"), None]);
        let err = rejected(&format!("{{{backends}}}"));
        assert_eq!(err.field, "backends[0].retry_cluster");
        assert!(err.reason.starts_with("applies only with retry"), "{err}");
        for (list, field) in [
            (
                r#"[{"cluster": "a", "retry_cluster": "b"}, {"cluster": "b"}]"#,
                "backends[0].retry_cluster",
            ),
            (
                r#"[{"cluster": "a", "retry_cluster": "a"}]"#,
                "backends[0].retry_cluster",
            ),
            (
                r#"[{"cluster": "a", "retry_cluster": "r"}, {"cluster": "b", "retry_cluster": "r"}]"#,
                "backends[0].retry_cluster",
            ),
            (
                r#"[{"cluster": "a", "retry_cluster": "r r"}]"#,
                "backends[0].retry_cluster",
            ),
        ] {
            let err = rejected(&format!(
                r#"{{"retry": {{"retry_on": "5xx"}}, "backends": {list}}}"#
            ));
            assert_eq!(err.field, field, "{list}: {err}");
        }
    }
}
