//! `session_affinity`: sticky sessions by a cookie that names the backend.
//!
//! The cookie's name and attributes end up in a `set-cookie` header eisodos writes, so they
//! are checked here, once: a name that is an RFC 6265 token, and attributes that are
//! `;`-separated `Name` or `Name=value` pairs of printable ASCII, naming attributes a browser
//! knows, each at most once, consistent with each other and with the name's prefix. Nothing a
//! configuration can say breaks the header or makes a browser drop the cookie silently.

use super::json::{At, Object};
use super::{is_token_char, ConfigError, MAX_NAME_LEN};

/// The cookie's name when the configuration names none.
pub const DEFAULT_AFFINITY_COOKIE: &str = "eisodos_backend";
/// The attributes when the configuration gives none: the whole site, out of scripts' reach,
/// sent on top-level navigation from other sites but not on their subrequests.
pub const DEFAULT_AFFINITY_ATTRIBUTES: &str = "Path=/; HttpOnly; SameSite=Lax";
/// Longest `ttl_s`: 400 days, the most a browser keeps a cookie (RFC 6265bis caps `Max-Age`
/// there, and Chrome does).
pub const MAX_AFFINITY_TTL_S: u32 = 400 * 24 * 3600;
/// Longest `attributes` string.
pub const MAX_AFFINITY_ATTRIBUTES_LEN: usize = 512;

/// Attributes a browser knows, as written in the canonical case. `Max-Age` and `Expires` are
/// not here: `ttl_s` sets the lifetime.
const ATTRIBUTES: &[&str] = &[
    "Path",
    "Domain",
    "Secure",
    "HttpOnly",
    "SameSite",
    "Partitioned",
    "Priority",
];

/// Sticky sessions: a request whose cookie names a backend that may take it goes there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionAffinityConfig {
    /// The cookie's name: an RFC 6265 token.
    pub cookie: String,
    /// Its `Max-Age` in seconds; 0: a session cookie (no `Max-Age`, gone when the browser
    /// closes).
    pub ttl_s: u32,
    /// What follows `Max-Age` in the `set-cookie` header, as configured (checked, not
    /// rewritten); may be empty.
    pub attributes: String,
}

/// `session_affinity`, if configured.
pub(super) fn read(top: &mut Object<'_>) -> Result<Option<SessionAffinityConfig>, ConfigError> {
    let Some(at) = top.optional("session_affinity")? else {
        return Ok(None);
    };
    let mut section = at.object()?;
    let cookie_at = section.optional("cookie")?;
    let cookie = match &cookie_at {
        Some(at) => read_cookie(at)?,
        None => DEFAULT_AFFINITY_COOKIE.to_owned(),
    };
    let ttl_s = section
        .u32_in("ttl_s", 0..=MAX_AFFINITY_TTL_S)?
        .unwrap_or(0);
    let attributes = match section.optional("attributes")? {
        Some(at) => {
            let attributes = at.string()?;
            if let Some(reason) = attributes_problem(&attributes, &cookie) {
                return Err(at.error(reason));
            }
            attributes
        }
        None => {
            // The defaults are well formed; only the name's prefix can disagree with them.
            if let (Some(at), Some(reason)) = (
                &cookie_at,
                attributes_problem(DEFAULT_AFFINITY_ATTRIBUTES, &cookie),
            ) {
                return Err(at.error(reason));
            }
            DEFAULT_AFFINITY_ATTRIBUTES.to_owned()
        }
    };
    section.finish()?;
    Ok(Some(SessionAffinityConfig {
        cookie,
        ttl_s,
        attributes,
    }))
}

fn read_cookie(at: &At<'_>) -> Result<String, ConfigError> {
    let name = at.string()?;
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(at.error(format!("must be 1 to {MAX_NAME_LEN} bytes")));
    }
    if !name.bytes().all(is_token_char) {
        return Err(at.error(format!(
            "\"{name}\" is not a valid cookie name (RFC 6265 token: letters, digits and \
             !#$%&'*+-.^_`|~ only)"
        )));
    }
    Ok(name)
}

/// Why `attributes` cannot follow `Max-Age` in a `set-cookie` header for cookie `cookie`,
/// if it cannot. Two kinds of problem: its syntax (what the schema's pattern also says) and
/// its meaning (attribute names, which are case-insensitive, and their agreement).
fn attributes_problem(attributes: &str, cookie: &str) -> Option<String> {
    if attributes.is_empty() {
        return prefix_problem(cookie, &[]);
    }
    if attributes.len() > MAX_AFFINITY_ATTRIBUTES_LEN {
        return Some(format!(
            "is longer than {MAX_AFFINITY_ATTRIBUTES_LEN} bytes"
        ));
    }
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for part in attributes.split(';') {
        let part = part.trim_matches(' ');
        let (name, value) = match part.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (part, None),
        };
        let syntax_ok = !name.is_empty()
            && name.bytes().all(is_token_char)
            && value.is_none_or(|value| value.bytes().all(|c| (b' '..=b'~').contains(&c)));
        if !syntax_ok {
            return Some(format!(
                "{part:?} is not a cookie attribute: write `Name` or `Name=value` pairs of \
                 printable ASCII separated by `;`, e.g. \"{DEFAULT_AFFINITY_ATTRIBUTES}\""
            ));
        }
        let Some(known) = ATTRIBUTES
            .iter()
            .find(|known| known.eq_ignore_ascii_case(name))
        else {
            if name.eq_ignore_ascii_case("Max-Age") || name.eq_ignore_ascii_case("Expires") {
                return Some(format!(
                    "sets {name}; the lifetime is ttl_s (0: a session cookie)"
                ));
            }
            return Some(format!(
                "unknown cookie attribute `{name}`, expected one of {}",
                ATTRIBUTES.join(", ")
            ));
        };
        if seen.iter().any(|(name, _)| name == known) {
            return Some(format!("sets {known} twice"));
        }
        let value = value.map(|value| value.trim_matches(' '));
        if let Some(reason) = value_problem(known, value) {
            return Some(reason);
        }
        seen.push((known, value.unwrap_or_default()));
    }
    prefix_problem(cookie, &seen)
}

/// Why attribute `name` (canonical) cannot take `value`, if it cannot.
fn value_problem(name: &str, value: Option<&str>) -> Option<String> {
    match (name, value) {
        ("Secure" | "HttpOnly" | "Partitioned", Some(_)) => Some(format!("{name} takes no value")),
        ("Path", Some(path)) if !path.starts_with('/') => {
            Some(format!("Path must start with /, got \"{path}\""))
        }
        ("Domain", Some("")) => Some("Domain is empty".to_owned()),
        ("SameSite", Some(same_site))
            if ["Strict", "Lax", "None"]
                .iter()
                .any(|known| known.eq_ignore_ascii_case(same_site)) =>
        {
            None
        }
        ("SameSite", _) => Some("SameSite must be Strict, Lax or None".to_owned()),
        ("Priority", Some(priority))
            if ["Low", "Medium", "High"]
                .iter()
                .any(|known| known.eq_ignore_ascii_case(priority)) =>
        {
            None
        }
        ("Priority", _) => Some("Priority must be Low, Medium or High".to_owned()),
        ("Path" | "Domain", None) => Some(format!("{name} needs a value")),
        _ => None,
    }
}

/// What browsers require of a cookie by its name's prefix and its `SameSite`; they drop a
/// cookie that breaks it, and affinity would quietly never hold.
fn prefix_problem(cookie: &str, attributes: &[(&str, &str)]) -> Option<String> {
    let has = |name: &str| attributes.iter().any(|(known, _)| *known == name);
    let value = |name: &str| {
        attributes
            .iter()
            .find(|(known, _)| *known == name)
            .map(|(_, value)| *value)
    };
    let secure = has("Secure");
    let lower = cookie.to_ascii_lowercase();
    if value("SameSite").is_some_and(|v| v.eq_ignore_ascii_case("None")) && !secure {
        return Some("SameSite=None needs Secure (browsers drop the cookie otherwise)".to_owned());
    }
    if has("Partitioned") && !secure {
        return Some("Partitioned needs Secure (browsers drop the cookie otherwise)".to_owned());
    }
    if lower.starts_with("__secure-") && !secure {
        return Some(format!(
            "cookie \"{cookie}\" has the __Secure- prefix, which needs Secure"
        ));
    }
    if lower.starts_with("__host-") && (!secure || value("Path") != Some("/") || has("Domain")) {
        return Some(format!(
            "cookie \"{cookie}\" has the __Host- prefix, which needs Secure, Path=/ and no Domain"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{parse, rejected, A};

    fn affinity(fields: &str) -> Result<Option<SessionAffinityConfig>, ConfigError> {
        parse(&format!(r#"{{"session_affinity": {{{fields}}}, {A}}}"#))
            .map(|config| config.session_affinity)
    }

    fn refused(fields: &str) -> ConfigError {
        affinity(fields).expect_err(fields)
    }

    #[test]
    fn the_issue_s_example_and_the_defaults() {
        let config = affinity(
            r#""cookie": "eisodos_backend", "ttl_s": 3600, "attributes": "Path=/; HttpOnly; SameSite=Lax""#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            config,
            SessionAffinityConfig {
                cookie: "eisodos_backend".into(),
                ttl_s: 3600,
                attributes: "Path=/; HttpOnly; SameSite=Lax".into()
            }
        );
        assert_eq!(
            affinity("").unwrap().unwrap(),
            SessionAffinityConfig {
                cookie: DEFAULT_AFFINITY_COOKIE.into(),
                ttl_s: 0,
                attributes: DEFAULT_AFFINITY_ATTRIBUTES.into()
            }
        );
        assert_eq!(parse(&format!("{{{A}}}")).unwrap().session_affinity, None);
        assert_eq!(
            parse(&format!(r#"{{"session_affinity": null, {A}}}"#))
                .unwrap()
                .session_affinity,
            None
        );
        let bare = affinity(r#""attributes": """#).unwrap().unwrap();
        assert_eq!(bare.attributes, "", "no attributes at all is allowed");
        let loose = affinity(
            r#""attributes": "path=/app;secure ;  samesite=none; Domain=example.com; Priority=High; Partitioned""#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            loose.attributes,
            "path=/app;secure ;  samesite=none; Domain=example.com; Priority=High; Partitioned",
            "kept as written: names are case-insensitive, spaces around `;` optional"
        );
        assert_eq!(
            affinity(&format!(r#""ttl_s": {MAX_AFFINITY_TTL_S}"#))
                .unwrap()
                .unwrap()
                .ttl_s,
            MAX_AFFINITY_TTL_S
        );
    }

    #[test]
    fn the_cookie_name_is_a_token() {
        for name in [
            "",
            "a b",
            "a;b",
            "a=b",
            "caf\u{e9}",
            "a\"b",
            "a,b",
            &"c".repeat(257),
        ] {
            let json = serde_json::json!({ "cookie": name }).to_string();
            let fields = json.trim_start_matches('{').trim_end_matches('}');
            let err = refused(fields);
            assert_eq!(err.field, "session_affinity.cookie", "{name:?}: {err}");
        }
        let err = refused(r#""cookie": 5"#);
        assert_eq!(err.reason, "invalid type: integer `5`, expected a string");
        assert!(affinity(r#""cookie": "SERVERID""#).is_ok());
        assert!(affinity(r#""cookie": "!#$%&'*+-.^_`|~""#).is_ok());
    }

    #[test]
    fn ttl_is_bounded() {
        for ttl in ["-1", "34560001", "1.5", "\"60\""] {
            let err = refused(&format!(r#""ttl_s": {ttl}"#));
            assert_eq!(err.field, "session_affinity.ttl_s", "{ttl}");
        }
    }

    #[test]
    fn attributes_that_would_break_the_header_are_refused() {
        for (attributes, reason) in [
            ("Path=/\r\nX-Evil: 1", "is not a cookie attribute"),
            ("Path=/\u{7f}", "is not a cookie attribute"),
            ("Path=/caf\u{e9}", "is not a cookie attribute"),
            ("Path=/;; HttpOnly", "is not a cookie attribute"),
            ("Path=/;", "is not a cookie attribute"),
            ("; Path=/", "is not a cookie attribute"),
            ("   ", "is not a cookie attribute"),
            ("Http Only", "is not a cookie attribute"),
            ("=x", "is not a cookie attribute"),
            ("Path =/", "is not a cookie attribute"),
            ("HttpOnyl", "unknown cookie attribute `HttpOnyl`"),
            ("Max-Age=60", "sets Max-Age; the lifetime is ttl_s"),
            ("expires=Wed, 21 Oct 2026 07:28:00 GMT", "sets expires;"),
            ("Path=/; path=/x", "sets Path twice"),
            ("Secure=yes", "Secure takes no value"),
            ("Path=x", "Path must start with /"),
            ("Path", "Path needs a value"),
            ("Domain=", "Domain is empty"),
            ("SameSite=Loose", "SameSite must be Strict, Lax or None"),
            ("SameSite", "SameSite must be Strict, Lax or None"),
            ("Priority=Urgent", "Priority must be Low, Medium or High"),
            ("SameSite=None", "SameSite=None needs Secure"),
            ("Partitioned", "Partitioned needs Secure"),
        ] {
            let fields = format!(
                r#""attributes": {}"#,
                serde_json::to_string(attributes).unwrap()
            );
            let err = refused(&fields);
            assert_eq!(err.field, "session_affinity.attributes", "{attributes:?}");
            assert!(err.reason.contains(reason), "{attributes:?}: {err}");
            assert!(!err.to_string().contains('\n'), "one line: {err}");
        }
        let long = format!(r#""attributes": "Path=/{}""#, "a".repeat(512));
        assert!(refused(&long).reason.contains("longer than 512"));
    }

    #[test]
    fn cookie_prefixes_are_honoured() {
        let err = refused(r#""cookie": "__Secure-lb", "attributes": "Path=/""#);
        assert!(err.reason.contains("__Secure- prefix"), "{err}");
        assert!(affinity(r#""cookie": "__Secure-lb", "attributes": "Path=/; Secure""#).is_ok());
        for attributes in [
            "Path=/",
            "Secure; Path=/x",
            "Secure; Path=/; Domain=example.com",
        ] {
            let err = refused(&format!(
                r#""cookie": "__Host-lb", "attributes": "{attributes}""#
            ));
            assert!(err.reason.contains("__Host- prefix"), "{attributes}: {err}");
        }
        assert!(affinity(r#""cookie": "__Host-lb", "attributes": "Secure; Path=/""#).is_ok());
        // Without `attributes` the defaults apply, and they are not Secure.
        let err = refused(r#""cookie": "__host-lb""#);
        assert!(err.reason.contains("__Host- prefix"), "{err}");
        assert_eq!(err.field, "session_affinity.cookie");
    }

    #[test]
    fn the_section_lists_its_fields() {
        let err = refused(r#""zz": 1"#);
        assert_eq!(
            err.to_string(),
            "session_affinity.zz: unknown field `zz`, expected one of `cookie`, `ttl_s`, `attributes`"
        );
        let err = rejected(&format!(r#"{{"session_affinity": "on", {A}}}"#));
        assert_eq!(err.field, "session_affinity");
    }
}
