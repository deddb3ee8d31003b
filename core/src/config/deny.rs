//! `deny`: request filtering rules, checked before anything else a request meets.

use super::json::{At, Object};
use super::{is_token_char, request_header_problem, ConfigError};

/// Most rules in `deny`.
pub const MAX_DENY_RULES: usize = 64;
/// Most methods in one rule's `method` list.
pub const MAX_DENY_METHODS: usize = 16;
/// Most header conditions in one rule.
pub const MAX_DENY_HEADERS: usize = 8;
/// Longest `path`, `path_prefix`, header `exact` or `prefix` value.
pub const MAX_DENY_VALUE_LEN: usize = 8192;
/// Largest size limit (`max_uri_bytes`, `max_header_bytes`, a header's `max_bytes`): 8 MiB,
/// Envoy's own ceiling for `max_request_headers_kb`.
pub const MAX_DENY_BYTES: u32 = 8 * 1024 * 1024;

/// One `deny` rule: every condition it names must hold for it to match. At least one is named.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DenyRule {
    /// The request's `:method` is one of these (upper-case tokens); empty: any method.
    pub methods: Vec<String>,
    /// The request's `:path`, without its query string, matches this.
    pub path: Option<PathMatch>,
    /// Conditions on request headers.
    pub headers: Vec<HeaderCondition>,
    /// The request's `:path` (query included) is longer than this many bytes.
    pub max_uri_bytes: Option<u32>,
    /// All request headers together (names and values, pseudo-headers included) are longer
    /// than this many bytes.
    pub max_header_bytes: Option<u32>,
}

impl DenyRule {
    /// Whether the rule limits a size (and answers 431 rather than 403).
    pub fn is_size_rule(&self) -> bool {
        self.max_uri_bytes.is_some()
            || self.max_header_bytes.is_some()
            || self
                .headers
                .iter()
                .any(|header| matches!(header.test, HeaderTest::MaxBytes(_)))
    }
}

/// How a rule matches the path (raw bytes: not percent-decoded, not normalised).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// `path`: the whole path, without the query string.
    Exact(String),
    /// `path_prefix`: the path starts with this.
    Prefix(String),
}

/// A condition on one request header (the first value Envoy gives for the name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderCondition {
    /// Lower-case header name.
    pub name: String,
    /// What must hold of it.
    pub test: HeaderTest,
}

/// What a [`HeaderCondition`] checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderTest {
    /// `present: true`: the header is there (any value, empty too); `false`: it is not.
    Present(bool),
    /// `exact`: the value is these bytes.
    Exact(String),
    /// `prefix`: the value starts with these bytes.
    Prefix(String),
    /// `max_bytes`: the header is there and its value is longer than this.
    MaxBytes(u32),
}

/// The ways a header condition can test its header, one per condition.
const HEADER_TESTS: &[&str] = &["present", "exact", "prefix", "max_bytes"];

/// `deny`: 1 to [`MAX_DENY_RULES`] rules, or none when absent.
pub(super) fn read(top: &mut Object<'_>) -> Result<Vec<DenyRule>, ConfigError> {
    let Some(at) = top.optional("deny")? else {
        return Ok(Vec::new());
    };
    let items = at.array_within(
        MAX_DENY_RULES,
        "rules",
        "give at least one rule, or leave deny out",
    )?;
    let mut rules = Vec::with_capacity(items.len());
    for item in items {
        rules.push(read_rule(&item)?);
    }
    Ok(rules)
}

/// One rule: an object of conditions.
fn read_rule(at: &At<'_>) -> Result<DenyRule, ConfigError> {
    let mut object = at.object()?;
    let methods = match object.optional("method")? {
        Some(method) => read_methods(&method)?,
        None => Vec::new(),
    };
    let exact = read_path(&mut object, "path")?.map(PathMatch::Exact);
    let prefix = read_path(&mut object, "path_prefix")?;
    let path = match (exact, prefix) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                format!("{}.path_prefix", at.path()),
                "cannot be combined with path in one rule; give one of them",
            ))
        }
        (Some(exact), None) => Some(exact),
        (None, prefix) => prefix.map(PathMatch::Prefix),
    };
    let headers = match object.optional("header")? {
        Some(header) => read_headers(&header)?,
        None => Vec::new(),
    };
    let max_uri_bytes = object.u32_in("max_uri_bytes", 1..=MAX_DENY_BYTES)?;
    let max_header_bytes = object.u32_in("max_header_bytes", 1..=MAX_DENY_BYTES)?;
    object.finish()?;
    let rule = DenyRule {
        methods,
        path,
        headers,
        max_uri_bytes,
        max_header_bytes,
    };
    if rule == DenyRule::default() {
        return Err(at.error(
            "has no condition; a rule denies what matches all of method, path, path_prefix, \
             header, max_uri_bytes and max_header_bytes that it names"
                .to_owned(),
        ));
    }
    Ok(rule)
}

/// `method`: one method or a list of 1 to [`MAX_DENY_METHODS`].
fn read_methods(at: &At<'_>) -> Result<Vec<String>, ConfigError> {
    let mut methods = Vec::new();
    match at.str() {
        Ok(_) => methods.push(read_method(at)?),
        Err(_) => {
            let items = at.array().map_err(|_| {
                at.error(
                    "expected a method (\"TRACE\") or a list of methods ([\"TRACE\", \"CONNECT\"])"
                        .to_owned(),
                )
            })?;
            if items.len() == 0 || items.len() > MAX_DENY_METHODS {
                return Err(at.error(format!("must list 1 to {MAX_DENY_METHODS} methods")));
            }
            for item in items {
                methods.push(read_method(&item)?);
            }
        }
    }
    Ok(methods)
}

/// A method: an upper-case token, as Envoy passes `:method` on (it does not change its case).
fn read_method(at: &At<'_>) -> Result<String, ConfigError> {
    let method = at.string()?;
    if method.is_empty()
        || method.len() > 32
        || !method.bytes().all(is_token_char)
        || method.bytes().any(|c| c.is_ascii_lowercase())
    {
        return Err(at.error(format!(
            "\"{method}\" is not an upper-case method token (e.g. \"TRACE\"); methods match exactly"
        )));
    }
    Ok(method)
}

/// `path` or `path_prefix`: starts with `/`, no query, printable ASCII.
fn read_path(object: &mut Object<'_>, name: &'static str) -> Result<Option<String>, ConfigError> {
    let Some(at) = object.optional(name)? else {
        return Ok(None);
    };
    let path = at.string()?;
    if !path.starts_with('/')
        || path.contains('?')
        || path.len() > MAX_DENY_VALUE_LEN
        || !path.bytes().all(|c| c.is_ascii_graphic())
    {
        return Err(at.error(format!(
            "must start with /, without a query, printable ASCII, at most {MAX_DENY_VALUE_LEN} \
             bytes; it is compared with the raw path"
        )));
    }
    Ok(Some(path))
}

/// `header`: one condition, or a list of 1 to [`MAX_DENY_HEADERS`] that must all hold.
fn read_headers(at: &At<'_>) -> Result<Vec<HeaderCondition>, ConfigError> {
    if at.object().is_ok() {
        return Ok(vec![read_header(at)?]);
    }
    let items = at.array().map_err(|_| {
        at.error(
            "expected a header condition ({\"name\": \"x-debug\", \"present\": true}) or a list \
             of them"
                .to_owned(),
        )
    })?;
    if items.len() == 0 || items.len() > MAX_DENY_HEADERS {
        return Err(at.error(format!(
            "must list 1 to {MAX_DENY_HEADERS} header conditions"
        )));
    }
    let mut headers = Vec::with_capacity(items.len());
    for item in items {
        headers.push(read_header(&item)?);
    }
    Ok(headers)
}

/// `{"name": "...", <one of present, exact, prefix, max_bytes>}`.
fn read_header(at: &At<'_>) -> Result<HeaderCondition, ConfigError> {
    let mut object = at.object()?;
    let name = match object.required("name")? {
        Some(name_at) => {
            let name = name_at.string()?;
            if let Some(reason) = request_header_problem(&name, true) {
                return Err(name_at.error(reason));
            }
            name
        }
        None => String::new(),
    };
    let mut tests = Vec::new();
    if let Some(present) = object.optional("present")? {
        tests.push(HeaderTest::Present(present.bool()?));
    }
    if let Some(value) = read_value(&mut object, "exact")? {
        tests.push(HeaderTest::Exact(value));
    }
    if let Some(value) = read_value(&mut object, "prefix")? {
        tests.push(HeaderTest::Prefix(value));
    }
    if let Some(max) = object.u32_in("max_bytes", 0..=MAX_DENY_BYTES)? {
        tests.push(HeaderTest::MaxBytes(max));
    }
    object.finish()?;
    let mut tests = tests.into_iter();
    match (tests.next(), tests.next()) {
        (Some(test), None) => Ok(HeaderCondition { name, test }),
        _ => Err(at.error(format!(
            "must have exactly one of {}; use a list of conditions to combine them",
            HEADER_TESTS
                .iter()
                .map(|t| format!("`{t}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// A header condition's `exact` or `prefix` value: any string of at most
/// [`MAX_DENY_VALUE_LEN`] bytes, compared byte for byte.
fn read_value(object: &mut Object<'_>, name: &'static str) -> Result<Option<String>, ConfigError> {
    let Some(at) = object.optional(name)? else {
        return Ok(None);
    };
    let value = at.string()?;
    if value.len() > MAX_DENY_VALUE_LEN {
        return Err(at.error(format!("is longer than {MAX_DENY_VALUE_LEN} bytes")));
    }
    Ok(Some(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{parse, rejected, A};

    fn rules(deny: &str) -> Vec<DenyRule> {
        parse(&format!(r#"{{"deny": {deny}, {A}}}"#)).unwrap().deny
    }

    fn refused(deny: &str) -> ConfigError {
        rejected(&format!(r#"{{"deny": {deny}, {A}}}"#))
    }

    #[test]
    fn off_unless_configured() {
        assert!(parse(&format!("{{{A}}}")).unwrap().deny.is_empty());
        assert!(parse(&format!(r#"{{"deny": null, {A}}}"#))
            .unwrap()
            .deny
            .is_empty());
    }

    #[test]
    fn every_condition_is_read() {
        let read = rules(
            r#"[{"method": "TRACE"},
                {"method": ["PUT", "DELETE"], "path_prefix": "/admin"},
                {"path": "/.env"},
                {"header": {"name": "x-debug", "present": true}},
                {"header": [{"name": "user-agent", "exact": "curl/8"},
                            {"name": ":authority", "prefix": "internal."},
                            {"name": "x-token", "present": false}]},
                {"max_uri_bytes": 2048},
                {"max_header_bytes": 8192},
                {"header": {"name": "cookie", "max_bytes": 4096}}]"#,
        );
        assert_eq!(read.len(), 8);
        assert_eq!(read[0].methods, ["TRACE"]);
        assert_eq!(read[1].methods, ["PUT", "DELETE"]);
        assert_eq!(read[1].path, Some(PathMatch::Prefix("/admin".into())));
        assert_eq!(read[2].path, Some(PathMatch::Exact("/.env".into())));
        assert_eq!(
            read[3].headers,
            [HeaderCondition {
                name: "x-debug".into(),
                test: HeaderTest::Present(true)
            }]
        );
        assert_eq!(
            read[4].headers.iter().map(|h| &h.test).collect::<Vec<_>>(),
            [
                &HeaderTest::Exact("curl/8".into()),
                &HeaderTest::Prefix("internal.".into()),
                &HeaderTest::Present(false)
            ]
        );
        assert_eq!(read[5].max_uri_bytes, Some(2048));
        assert_eq!(read[6].max_header_bytes, Some(8192));
        assert_eq!(read[7].headers[0].test, HeaderTest::MaxBytes(4096));
        let sizes: Vec<bool> = read.iter().map(DenyRule::is_size_rule).collect();
        assert_eq!(sizes, [false, false, false, false, false, true, true, true]);
    }

    #[test]
    fn bad_rules_name_the_field() {
        for (deny, field, reason) in [
            ("[]", "deny", "is empty"),
            ("{}", "deny", "invalid type: object, expected an array"),
            ("[{}]", "deny[0]", "has no condition"),
            (r#"[{"method": "get"}]"#, "deny[0].method", "upper-case"),
            (r#"[{"method": ""}]"#, "deny[0].method", "upper-case"),
            (r#"[{"method": "GET POST"}]"#, "deny[0].method", "upper-case"),
            (r#"[{"method": []}]"#, "deny[0].method", "1 to 16"),
            (r#"[{"method": ["GET", 1]}]"#, "deny[0].method[1]", "invalid type"),
            (r#"[{"method": 1}]"#, "deny[0].method", "a list of methods"),
            (r#"[{"path": "admin"}]"#, "deny[0].path", "start with /"),
            (r#"[{"path": "/a?b"}]"#, "deny[0].path", "without a query"),
            (r#"[{"path_prefix": "/a b"}]"#, "deny[0].path_prefix", "printable"),
            (
                r#"[{"path": "/a", "path_prefix": "/b"}]"#,
                "deny[0].path_prefix",
                "cannot be combined",
            ),
            (r#"[{"max_uri_bytes": 0}]"#, "deny[0].max_uri_bytes", "between 1"),
            (
                r#"[{"max_header_bytes": 8388609}]"#,
                "deny[0].max_header_bytes",
                "between 1",
            ),
            (r#"[{"header": {"present": true}}]"#, "deny[0].header", "missing field `name`"),
            (
                r#"[{"header": {"name": "X-Debug", "present": true}}]"#,
                "deny[0].header.name",
                "lower-case",
            ),
            (
                r#"[{"header": {"name": "x debug", "present": true}}]"#,
                "deny[0].header.name",
                "not a valid HTTP header name",
            ),
            (
                r#"[{"header": {"name": "x-debug"}}]"#,
                "deny[0].header",
                "exactly one of `present`, `exact`, `prefix`, `max_bytes`",
            ),
            (
                r#"[{"header": {"name": "x", "exact": "a", "prefix": "b"}}]"#,
                "deny[0].header",
                "exactly one of",
            ),
            (
                r#"[{"header": {"name": "x", "present": "yes"}}]"#,
                "deny[0].header.present",
                "expected a boolean",
            ),
            (
                r#"[{"header": {"name": "x", "regex": ".*"}}]"#,
                "deny[0].header.regex",
                "unknown field `regex`, expected one of `name`, `present`, `exact`, `prefix`, `max_bytes`",
            ),
            (r#"[{"header": []}]"#, "deny[0].header", "1 to 8"),
            (r#"[{"header": "x-debug"}]"#, "deny[0].header", "expected a header condition"),
            (
                r#"[{"method": "TRACE"}, {"header": [{"name": "x", "present": true}, {"name": "y"}]}]"#,
                "deny[1].header[1]",
                "exactly one of",
            ),
            (
                r#"[{"methods": "TRACE"}]"#,
                "deny[0].methods",
                "unknown field `methods`, expected one of `method`, `path`, `path_prefix`, `header`, `max_uri_bytes`, `max_header_bytes`",
            ),
        ] {
            let err = refused(deny);
            assert_eq!(err.field, field, "{deny}: {err}");
            assert!(err.reason.contains(reason), "{deny}: {err}");
        }
        let many = vec![r#"{"method": "TRACE"}"#; MAX_DENY_RULES + 1].join(",");
        assert_eq!(refused(&format!("[{many}]")).field, "deny");
        let fits = vec![r#"{"method": "TRACE"}"#; MAX_DENY_RULES].join(",");
        assert_eq!(rules(&format!("[{fits}]")).len(), MAX_DENY_RULES);
        let long = "a".repeat(MAX_DENY_VALUE_LEN + 1);
        let err = refused(&format!(
            r#"[{{"header": {{"name": "x", "exact": "{long}"}}}}]"#
        ));
        assert_eq!(err.field, "deny[0].header.exact");
    }
}
