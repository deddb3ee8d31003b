//! `hash_key`: where `consistent_hash` takes each request's key.

use super::json::{At, Object};
use super::policy::{only_for, Policy};
use super::{header_name_problem, request_header_problem, ConfigError, MAX_NAME_LEN};

/// Most `hash_key` sources.
pub const MAX_HASH_SOURCES: usize = 8;

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

/// The kinds of `hash_key` source, the key of each source's object.
const HASH_SOURCES: &[&str] = &["header", "cookie", "query", "path", "source_ip"];

/// `hash_key`, for policy `consistent_hash`: empty when absent (see [`required_by`]).
pub(super) fn read(top: &mut Object<'_>, policy: Policy) -> Result<Vec<HashSource>, ConfigError> {
    let Some(at) = top.optional("hash_key")? else {
        return Ok(Vec::new());
    };
    only_for(
        &at,
        policy,
        policy == Policy::ConsistentHash,
        "consistent_hash",
    )?;
    read_sources(&at)
}

/// A list of key sources, as `hash_key` takes them (1 to [`MAX_HASH_SOURCES`]): also the
/// form of every other field that keys a request (`rate_limit.key`, `split_key`).
pub(super) fn read_sources(at: &At<'_>) -> Result<Vec<HashSource>, ConfigError> {
    let items = at.array_within(MAX_HASH_SOURCES, "sources", "name at least one source")?;
    let mut sources = Vec::with_capacity(items.len());
    for item in items {
        sources.push(read_source(&item)?);
    }
    Ok(sources)
}

/// One `hash_key` source: `{"header": "x-user-id"}`, `{"path": {}}`...
fn read_source(at: &At<'_>) -> Result<HashSource, ConfigError> {
    let (kind, value) = at.tagged(HASH_SOURCES)?;
    match kind {
        "header" => {
            let name = value.string()?;
            match request_header_problem(&name, false) {
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

/// Rejects a `consistent_hash` policy without `hash_key` ([`read`] returns no sources then).
/// [`super::Config::parse`] calls it after the unknown keys, as a missing field is checked: a
/// misspelt `hash_key` is reported as misspelt.
pub(super) fn required_by(policy: Policy, sources: &[HashSource]) -> Result<(), ConfigError> {
    if policy == Policy::ConsistentHash && sources.is_empty() {
        return Err(ConfigError::new(
            "hash_key",
            "is required by policy consistent_hash, e.g. [{\"header\": \"x-user-id\"}]",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{parse, rejected, A};

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

    /// Each kind `tagged` accepts has its arm in `read_source`: none ends in the error arm.
    #[test]
    fn every_listed_kind_is_read() {
        for kind in HASH_SOURCES {
            let read = ["\"x\"", "{}"].iter().any(|value| {
                parse(&format!(
                    r#"{{"policy": "consistent_hash", "hash_key": [{{"{kind}": {value}}}], {A}}}"#
                ))
                .is_ok()
            });
            assert!(read, "{kind}");
        }
    }
}
