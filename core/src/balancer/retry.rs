//! After the pick, for a routed request: the `x-envoy-*` request headers that tell Envoy's
//! router how to retry and time it out (`retry`, `timeout_ms`), decided once per
//! configuration. With either configured, every such header a client sent is replaced or
//! removed, so a client can neither raise its own limits nor add conditions; with neither, the
//! list is empty and a request pays nothing.

use crate::config::Config;

/// The router's request headers that set retries and timeouts, as Envoy 1.40's router reads
/// them (and its connection manager strips from requests it takes for external): eisodos sets
/// or removes each of them on every routed request when `retry` or `timeout_ms` is configured.
pub const ROUTER_HEADERS: [&str; 10] = [
    RETRY_ON,
    MAX_RETRIES,
    PER_TRY_TIMEOUT,
    TIMEOUT,
    "x-envoy-retry-grpc-on",
    "x-envoy-retriable-status-codes",
    "x-envoy-retriable-header-names",
    "x-envoy-hedge-on-per-try-timeout",
    "x-envoy-expected-rq-timeout-ms",
    "x-envoy-upstream-rq-timeout-alt-response",
];

const RETRY_ON: &str = "x-envoy-retry-on";
const MAX_RETRIES: &str = "x-envoy-max-retries";
const PER_TRY_TIMEOUT: &str = "x-envoy-upstream-rq-per-try-timeout-ms";
const TIMEOUT: &str = "x-envoy-upstream-rq-timeout-ms";

/// One request-header edit: set `name` to `value`, or remove it (`None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderEdit {
    /// The header.
    pub name: &'static str,
    /// Its value, or `None` to remove what the client sent.
    pub value: Option<String>,
}

/// The edits for `config`: none without `retry` and `timeout_ms`, else one per
/// [`ROUTER_HEADERS`] entry.
pub fn router_headers(config: &Config) -> Vec<HeaderEdit> {
    if config.retry.is_none() && config.timeout_ms.is_none() {
        return Vec::new();
    }
    let retry = config.retry.as_ref();
    ROUTER_HEADERS
        .iter()
        .map(|&name| {
            let value = match name {
                RETRY_ON => retry.map(|retry| retry.retry_on.clone()),
                MAX_RETRIES => retry.map(|retry| retry.num_retries.to_string()),
                PER_TRY_TIMEOUT => retry
                    .and_then(|retry| retry.per_try_timeout_ms)
                    .map(|ms| ms.to_string()),
                TIMEOUT => config.timeout_ms.map(|ms| ms.to_string()),
                _ => None,
            };
            HeaderEdit { name, value }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edits(fields: &str) -> Vec<(&'static str, Option<String>)> {
        let json = format!(r#"{{{fields} "backends": [{{"cluster": "a"}}]}}"#);
        router_headers(&Config::parse(json.as_bytes()).unwrap())
            .into_iter()
            .map(|edit| (edit.name, edit.value))
            .collect()
    }

    fn set<'a>(edits: &'a [(&'static str, Option<String>)]) -> Vec<(&'static str, &'a str)> {
        edits
            .iter()
            .filter_map(|(name, value)| Some((*name, value.as_deref()?)))
            .collect()
    }

    #[test]
    fn off_without_retry_or_timeout() {
        assert!(edits("").is_empty());
    }

    #[test]
    fn retry_sets_its_headers_and_removes_every_other() {
        let all = edits(
            r#""retry": {"retry_on": "5xx,connect-failure", "num_retries": 2,
                "per_try_timeout_ms": 1000}, "timeout_ms": 5000,"#,
        );
        assert_eq!(
            set(&all),
            [
                ("x-envoy-retry-on", "5xx,connect-failure"),
                ("x-envoy-max-retries", "2"),
                ("x-envoy-upstream-rq-per-try-timeout-ms", "1000"),
                ("x-envoy-upstream-rq-timeout-ms", "5000"),
            ]
        );
        let names: Vec<&str> = all.iter().map(|(name, _)| *name).collect();
        assert_eq!(names, ROUTER_HEADERS, "every router header, each once");
        let retry_only = edits(r#""retry": {"retry_on": "reset"},"#);
        assert_eq!(
            set(&retry_only),
            [("x-envoy-retry-on", "reset"), ("x-envoy-max-retries", "1")]
        );
        assert_eq!(retry_only.len(), ROUTER_HEADERS.len(), "the rest removed");
    }

    #[test]
    fn a_timeout_alone_still_removes_the_clients_retry_headers() {
        let timeout = edits(r#""timeout_ms": 300,"#);
        assert_eq!(set(&timeout), [("x-envoy-upstream-rq-timeout-ms", "300")]);
        assert_eq!(timeout.len(), ROUTER_HEADERS.len());
    }
}
