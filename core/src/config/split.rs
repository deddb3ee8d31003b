//! `subsets`, `default_subset`, `rules` and `split_key`: traffic splitting and canaries.
//!
//! ```json
//! "subsets": {"stable": ["v1_a", "v1_b"], "canary": ["v2"]},
//! "default_subset": "stable",
//! "rules": [{"match": {"header": {"name": "x-beta", "exact": "yes"}}, "subset": "canary"},
//!           {"percent": 5, "subset": "canary"}],
//! "split_key": [{"cookie": "session"}]
//! ```
//!
//! Names are resolved here, once: a subset's members become backend indices, a rule's subset
//! and `default_subset` become subset indices, a percentage becomes a threshold on a 32-bit
//! bucket. Nothing is looked up by name per request.

use std::collections::HashMap;

use super::hash_key::{read_sources, HashSource};
use super::json::{At, Object};
use super::{header_name_problem, request_header_problem, Backend, ConfigError};

/// Most subsets.
pub const MAX_SUBSETS: usize = 64;
/// Most rules.
pub const MAX_RULES: usize = 64;
/// Longest subset name.
pub const MAX_SUBSET_NAME_LEN: usize = 64;
/// Longest value a header, cookie or path condition compares with.
pub const MAX_MATCH_VALUE_LEN: usize = 4096;

/// Traffic splitting: which subset of the backends a request may go to.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// The subsets, in document order.
    pub subsets: Vec<Subset>,
    /// Index into `subsets` of the subset for requests no rule takes, and the fallback of a
    /// subset with no backend up; `None`: all backends.
    pub default_subset: Option<usize>,
    /// Evaluated in order; the first that takes a request names its subset.
    pub rules: Vec<Rule>,
    /// Where a request's percentage bucket comes from; empty: a random bucket per request.
    pub split_key: Vec<HashSource>,
}

/// A named group of backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subset {
    /// Its name in `subsets`.
    pub name: String,
    /// Indices into `backends`, in the order of `backends` (whatever the order listed).
    pub members: Vec<usize>,
}

/// One rule: when its conditions all hold and its percentage takes the request, the request
/// goes to `subset`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// `match`: all must hold (none: only the percentage decides).
    pub conditions: Vec<Condition>,
    /// `percent`: the share of buckets it takes (none: every request its conditions hold for).
    pub percent: Option<Percent>,
    /// Index into [`Split::subsets`].
    pub subset: usize,
}

/// One condition of a rule's `match`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// `{"header": {"name": "x-beta", "exact": "yes"}}`: a request header (lower-case name).
    Header {
        /// Lower-case header name.
        name: String,
        /// What its value must be.
        test: ValueTest,
    },
    /// `{"cookie": {"name": "beta", "present": true}}`: a cookie in the `cookie` header.
    Cookie {
        /// Cookie name.
        name: String,
        /// What its value must be (`exact` or `present`).
        test: ValueTest,
    },
    /// `{"path_prefix": "/api"}`: the raw `:path` (query string included) starts with it.
    PathPrefix(String),
}

/// What a header's or cookie's value must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueTest {
    /// Exactly these bytes.
    Exact(String),
    /// Starts with these bytes (headers only).
    Prefix(String),
    /// Present (`true`) or absent (`false`), whatever the value.
    Present(bool),
}

impl ValueTest {
    /// Whether `value` (`None`: absent) passes.
    pub fn holds(&self, value: Option<&[u8]>) -> bool {
        match (self, value) {
            (Self::Present(present), value) => value.is_some() == *present,
            (Self::Exact(exact), Some(value)) => value == exact.as_bytes(),
            (Self::Prefix(prefix), Some(value)) => value.starts_with(prefix.as_bytes()),
            (_, None) => false,
        }
    }
}

/// A percentage as a threshold on a request's 32-bit bucket: the bucket takes the request when
/// it is below `percent / 100 × 2^32`. Any fraction is kept, to 2^-32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Percent {
    threshold: u64,
}

impl Percent {
    /// `percent`, 0 to 100.
    fn new(percent: f64) -> Self {
        let scaled = (percent / 100.0 * 4_294_967_296.0).round();
        // 0..=2^32 by the reader's range check; the cast saturates anyway.
        Self {
            threshold: scaled as u64,
        }
    }

    /// Whether a request whose bucket is `bucket` is taken.
    pub fn takes(self, bucket: u32) -> bool {
        u64::from(bucket) < self.threshold
    }
}

/// The top-level traffic-splitting fields, read after `backends` (members name them). `None`
/// when none is set; any of `default_subset`, `rules` or `split_key` needs `subsets`.
pub(super) fn read(
    top: &mut Object<'_>,
    backends: &[Backend],
) -> Result<Option<Split>, ConfigError> {
    let subsets_at = top.optional("subsets")?;
    let default_at = top.optional("default_subset")?;
    let rules_at = top.optional("rules")?;
    let key_at = top.optional("split_key")?;
    let Some(subsets_at) = subsets_at else {
        if let Some(at) = default_at.or(rules_at).or(key_at) {
            return Err(at.error("needs `subsets`, the backend groups it names".to_owned()));
        }
        return Ok(None);
    };
    let subsets = read_subsets(&subsets_at, backends)?;
    let default_subset = match &default_at {
        Some(at) => Some(subset_index(at, &subsets)?),
        None => None,
    };
    let rules = match &rules_at {
        Some(at) => read_rules(at, &subsets)?,
        None => Vec::new(),
    };
    if rules.is_empty() && default_subset.is_none() {
        return Err(subsets_at.error(
            "are used by nothing: add `rules` or a `default_subset` that name them".to_owned(),
        ));
    }
    let split_key = match &key_at {
        Some(at) => {
            let sources = read_sources(at)?;
            if rules.iter().all(|rule| rule.percent.is_none()) {
                return Err(at.error(
                    "buckets only `percent` rules, and no rule has a `percent`; remove it"
                        .to_owned(),
                ));
            }
            sources
        }
        None => Vec::new(),
    };
    Ok(Some(Split {
        subsets,
        default_subset,
        rules,
        split_key,
    }))
}

/// `subsets`: 1 to [`MAX_SUBSETS`] names, each with 1 or more distinct backends, not all
/// backups.
fn read_subsets(at: &At<'_>, backends: &[Backend]) -> Result<Vec<Subset>, ConfigError> {
    let entries = at.entries()?;
    if entries.is_empty() {
        return Err(at.error("is empty; name at least one subset".to_owned()));
    }
    if entries.len() > MAX_SUBSETS {
        return Err(at.error(format!(
            "has {} subsets; at most {MAX_SUBSETS} are supported",
            entries.len()
        )));
    }
    let by_cluster: HashMap<&str, usize> = backends
        .iter()
        .enumerate()
        .map(|(i, backend)| (backend.cluster.as_str(), i))
        .collect();
    let mut subsets: Vec<Subset> = Vec::with_capacity(entries.len());
    for (name, members_at) in entries {
        if subsets.iter().any(|subset| subset.name == name) {
            return Err(members_at.error(format!("duplicate field `{name}`")));
        }
        if let Some(reason) = subset_name_problem(name) {
            return Err(members_at.error(reason));
        }
        let items = members_at.array()?;
        if items.len() == 0 {
            return Err(members_at.error("is empty; list at least one backend".to_owned()));
        }
        let mut members: Vec<usize> = Vec::with_capacity(items.len());
        let mut listed: Vec<(usize, String)> = Vec::with_capacity(items.len());
        for member in items {
            let cluster = member.str()?;
            let Some(&index) = by_cluster.get(cluster) else {
                return Err(member.error(format!(
                    "unknown backend \"{cluster}\"; a member is a `backends[].cluster`"
                )));
            };
            if let Some((_, first)) = listed.iter().find(|(i, _)| *i == index) {
                return Err(
                    member.error(format!("duplicate member \"{cluster}\" (already {first})"))
                );
            }
            listed.push((index, member.path().to_owned()));
            members.push(index);
        }
        if members
            .iter()
            .all(|&i| backends.get(i).is_some_and(|b| b.backup))
        {
            return Err(members_at
                .error("are all backups; at least one member must be a primary".to_owned()));
        }
        members.sort_unstable();
        subsets.push(Subset {
            name: name.to_owned(),
            members,
        });
    }
    Ok(subsets)
}

/// Why `name` cannot name a subset, if it cannot: it appears in error paths
/// (`subsets.canary[0]`), so it is kept to letters, digits, `_` and `-`.
fn subset_name_problem(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > MAX_SUBSET_NAME_LEN {
        return Some(format!(
            "a subset name must be 1 to {MAX_SUBSET_NAME_LEN} bytes"
        ));
    }
    if !name
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
    {
        return Some(format!(
            "\"{}\" is not a valid subset name (letters, digits, _ and - only)",
            name.escape_default()
        ));
    }
    None
}

/// A string naming one of `subsets`: its index.
fn subset_index(at: &At<'_>, subsets: &[Subset]) -> Result<usize, ConfigError> {
    let name = at.str()?;
    subsets
        .iter()
        .position(|subset| subset.name == name)
        .ok_or_else(|| {
            let known: Vec<String> = subsets.iter().map(|s| format!("`{}`", s.name)).collect();
            at.error(format!(
                "unknown subset \"{name}\"; the subsets are {}",
                known.join(", ")
            ))
        })
}

/// `rules`: 1 to [`MAX_RULES`] rules.
fn read_rules(at: &At<'_>, subsets: &[Subset]) -> Result<Vec<Rule>, ConfigError> {
    let items = at.array_within(
        MAX_RULES,
        "rules",
        "give at least one rule, or leave it out",
    )?;
    let mut rules = Vec::with_capacity(items.len());
    for item in items {
        let mut rule = item.object()?;
        let conditions = match rule.optional("match")? {
            Some(at) => read_match(&at)?,
            None => Vec::new(),
        };
        let percent = rule
            .f64_in("percent", 0.0..=100.0, "0 and 100")?
            .map(Percent::new);
        let subset = match rule.required("subset")? {
            Some(at) => subset_index(&at, subsets)?,
            // `rule.finish()` reports it missing.
            None => 0,
        };
        rule.finish()?;
        if conditions.is_empty() && percent.is_none() {
            return Err(item.error(
                "has neither `match` nor `percent`, so it would take every request; \
                 use `default_subset` for that"
                    .to_owned(),
            ));
        }
        rules.push(Rule {
            conditions,
            percent,
            subset,
        });
    }
    Ok(rules)
}

/// A rule's `match`: at most one `header`, one `cookie` and one `path_prefix`, all to hold.
fn read_match(at: &At<'_>) -> Result<Vec<Condition>, ConfigError> {
    let mut object = at.object()?;
    let mut conditions = Vec::new();
    if let Some(header_at) = object.optional("header")? {
        let (name, test) = read_named(&header_at, true)?;
        conditions.push(Condition::Header { name, test });
    }
    if let Some(cookie_at) = object.optional("cookie")? {
        let (name, test) = read_named(&cookie_at, false)?;
        conditions.push(Condition::Cookie { name, test });
    }
    if let Some(prefix_at) = object.optional("path_prefix")? {
        let prefix = prefix_at.string()?;
        if !prefix.starts_with('/') || prefix.len() > MAX_MATCH_VALUE_LEN {
            return Err(prefix_at.error(format!(
                "must start with `/` and be at most {MAX_MATCH_VALUE_LEN} bytes"
            )));
        }
        conditions.push(Condition::PathPrefix(prefix));
    }
    object.finish()?;
    if conditions.is_empty() {
        return Err(at.error(
            "is empty; give `header`, `cookie` or `path_prefix` (or leave `match` out)".to_owned(),
        ));
    }
    Ok(conditions)
}

/// A header condition (`header` set: a lower-case header name, and `prefix` allowed) or a
/// cookie condition: `name` and exactly one of `exact`, `prefix` and `present`.
fn read_named(at: &At<'_>, header: bool) -> Result<(String, ValueTest), ConfigError> {
    let mut object = at.object()?;
    let name = match object.required("name")? {
        Some(name_at) => {
            let name = name_at.string()?;
            let problem = if header {
                request_header_problem(&name, false)
            } else {
                header_name_problem(&name)
            };
            if let Some(reason) = problem {
                return Err(name_at.error(reason));
            }
            name
        }
        // `object.finish()` reports it missing.
        None => String::new(),
    };
    let mut tests = Vec::new();
    if let Some(exact) = object.optional("exact")? {
        tests.push((
            exact.path().to_owned(),
            ValueTest::Exact(value(&exact, false)?),
        ));
    }
    if header {
        if let Some(prefix) = object.optional("prefix")? {
            tests.push((
                prefix.path().to_owned(),
                ValueTest::Prefix(value(&prefix, true)?),
            ));
        }
    }
    if let Some(present) = object.optional("present")? {
        tests.push((
            present.path().to_owned(),
            ValueTest::Present(present.bool()?),
        ));
    }
    object.finish()?;
    let one_of = if header {
        "`exact`, `prefix` or `present`"
    } else {
        "`exact` or `present`"
    };
    let mut tests = tests.into_iter();
    match (tests.next(), tests.next()) {
        (Some((_, test)), None) => Ok((name, test)),
        (Some(_), Some((path, _))) => {
            Err(ConfigError::new(path, format!("give only one of {one_of}")))
        }
        (None, _) => Err(at.error(format!("needs one of {one_of}"))),
    }
}

/// A value to compare with: at most [`MAX_MATCH_VALUE_LEN`] bytes, and not empty when a
/// prefix (an empty prefix is `present`).
fn value(at: &At<'_>, prefix: bool) -> Result<String, ConfigError> {
    let text = at.string()?;
    if prefix && text.is_empty() {
        return Err(at.error("is empty; use `\"present\": true`".to_owned()));
    }
    if text.len() > MAX_MATCH_VALUE_LEN {
        return Err(at.error(format!("is longer than {MAX_MATCH_VALUE_LEN} bytes")));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{parse, rejected};

    const BACKENDS: &str = r#""backends": [{"cluster": "v1_a"}, {"cluster": "v1_b"},
        {"cluster": "v2"}, {"cluster": "spare", "backup": true}]"#;

    fn with(fields: &str) -> String {
        format!("{{{fields}, {BACKENDS}}}")
    }

    #[test]
    fn the_issue_configuration_is_read_into_indices() {
        let config = parse(&with(
            r#""subsets": {"stable": ["v1_b", "v1_a"], "canary": ["v2"]},
               "default_subset": "stable",
               "rules": [{"match": {"header": {"name": "x-beta", "exact": "yes"}}, "subset": "canary"},
                         {"percent": 5, "subset": "canary"}],
               "split_key": [{"cookie": "session"}]"#,
        ))
        .unwrap();
        let split = config.split.unwrap();
        assert_eq!(
            split.subsets,
            [
                Subset {
                    name: "stable".into(),
                    members: vec![0, 1],
                },
                Subset {
                    name: "canary".into(),
                    members: vec![2],
                }
            ],
            "members in the order of `backends`"
        );
        assert_eq!(split.default_subset, Some(0));
        assert_eq!(split.rules.len(), 2);
        assert_eq!(
            split.rules[0].conditions,
            [Condition::Header {
                name: "x-beta".into(),
                test: ValueTest::Exact("yes".into())
            }]
        );
        assert_eq!(split.rules[0].percent, None);
        assert_eq!(
            (split.rules[1].subset, split.rules[1].conditions.len()),
            (1, 0)
        );
        assert_eq!(split.split_key, [HashSource::Cookie("session".into())]);
        assert_eq!(parse(&with(r#""policy": "random""#)).unwrap().split, None);
    }

    #[test]
    fn percentages_are_thresholds_on_the_bucket() {
        let at = |percent: f64, bucket: u32| Percent::new(percent).takes(bucket);
        assert!(!at(0.0, 0));
        assert!(at(100.0, u32::MAX));
        assert!(at(50.0, (1 << 31) - 1) && !at(50.0, 1 << 31));
        // 0.5%: 21,474,836.48 of 2^32 buckets, rounded: buckets 0 to 21,474,835.
        assert!(at(0.5, 21_474_835) && !at(0.5, 21_474_836));
        for percent in ["0", "0.01", "12.5", "100", "5.0"] {
            parse(&with(&format!(
                r#""subsets": {{"c": ["v2"]}}, "rules": [{{"percent": {percent}, "subset": "c"}}]"#
            )))
            .unwrap();
        }
    }

    /// Every rejection names its field.
    #[test]
    fn bad_splits_are_rejected_with_the_field_named() {
        let rule = |r: &str| {
            format!(
                r#""subsets": {{"stable": ["v1_a"], "canary": ["v2"]}}, "rules": [{{"percent": 1, "subset": "canary"}}, {r}]"#
            )
        };
        for (fields, field, reason) in [
            (
                r#""subsets": {"canary": ["v3"]}, "default_subset": "canary""#.to_owned(),
                "subsets.canary[0]",
                "unknown backend \"v3\"",
            ),
            (
                r#""subsets": {"canary": []}, "default_subset": "canary""#.to_owned(),
                "subsets.canary",
                "is empty",
            ),
            (r#""subsets": {}"#.to_owned(), "subsets", "is empty"),
            (
                r#""subsets": ["v2"]"#.to_owned(),
                "subsets",
                "invalid type: array, expected an object",
            ),
            (
                r#""subsets": {"canary": ["v2", "v1_a", "v2"]}, "default_subset": "canary""#
                    .to_owned(),
                "subsets.canary[2]",
                "duplicate member \"v2\" (already subsets.canary[0])",
            ),
            (
                r#""subsets": {"canary": ["v2"], "canary": ["v1_a"]}, "default_subset": "canary""#
                    .to_owned(),
                "subsets.canary",
                "duplicate field `canary`",
            ),
            (
                r#""subsets": {"can ary": ["v2"]}, "default_subset": "can ary""#.to_owned(),
                "subsets.can ary",
                "not a valid subset name",
            ),
            (
                r#""subsets": {"spares": ["spare"]}, "default_subset": "spares""#.to_owned(),
                "subsets.spares",
                "are all backups",
            ),
            (
                r#""subsets": {"canary": ["v2"]}, "default_subset": "stable""#.to_owned(),
                "default_subset",
                "unknown subset \"stable\"; the subsets are `canary`",
            ),
            (
                r#""subsets": {"canary": ["v2"]}"#.to_owned(),
                "subsets",
                "are used by nothing",
            ),
            (rule(r#"{"percent": 1, "subset": "beta"}"#), "rules[1].subset", "unknown subset \"beta\""),
            (rule(r#"{"percent": 101, "subset": "canary"}"#), "rules[1].percent", "must be between 0 and 100"),
            (rule(r#"{"percent": -0.5, "subset": "canary"}"#), "rules[1].percent", "must be between 0 and 100"),
            (rule(r#"{"percent": "5", "subset": "canary"}"#), "rules[1].percent", "invalid type"),
            (rule(r#"{"percent": 5}"#), "rules[1]", "missing field `subset`"),
            (rule(r#"{"subset": "canary"}"#), "rules[1]", "has neither `match` nor `percent`"),
            (rule(r#"{"match": {}, "subset": "canary"}"#), "rules[1].match", "is empty"),
            (rule(r#"{"match": {"query": "x"}, "subset": "canary"}"#), "rules[1].match.query", "unknown field `query`, expected one of `header`, `cookie`, `path_prefix`"),
            (rule(r#"{"match": {"header": {"name": "X-Beta", "exact": "1"}}, "subset": "canary"}"#), "rules[1].match.header.name", "must be lower-case"),
            (rule(r#"{"match": {"header": {"name": "x-beta"}}, "subset": "canary"}"#), "rules[1].match.header", "needs one of `exact`, `prefix` or `present`"),
            (rule(r#"{"match": {"header": {"exact": "1"}}, "subset": "canary"}"#), "rules[1].match.header", "missing field `name`"),
            (rule(r#"{"match": {"header": {"name": "x-beta", "exact": "1", "present": true}}, "subset": "canary"}"#), "rules[1].match.header.present", "give only one of"),
            (rule(r#"{"match": {"header": {"name": "x-beta", "prefix": ""}}, "subset": "canary"}"#), "rules[1].match.header.prefix", "is empty"),
            (rule(r#"{"match": {"cookie": {"name": "b", "prefix": "1"}}, "subset": "canary"}"#), "rules[1].match.cookie.prefix", "unknown field `prefix`, expected one of `name`, `exact`, `present`"),
            (rule(r#"{"match": {"cookie": {"name": "a b", "present": true}}, "subset": "canary"}"#), "rules[1].match.cookie.name", "not a valid HTTP header name"),
            (rule(r#"{"match": {"path_prefix": "api"}, "subset": "canary"}"#), "rules[1].match.path_prefix", "must start with `/`"),
            (r#""subsets": {"canary": ["v2"]}, "rules": []"#.to_owned(), "rules", "is empty"),
            (r#""rules": [{"percent": 5, "subset": "canary"}]"#.to_owned(), "rules", "needs `subsets`"),
            (r#""default_subset": "canary""#.to_owned(), "default_subset", "needs `subsets`"),
            (r#""split_key": [{"header": "x-user"}]"#.to_owned(), "split_key", "needs `subsets`"),
            (
                r#""subsets": {"canary": ["v2"]}, "default_subset": "canary", "split_key": [{"header": "x-user"}]"#.to_owned(),
                "split_key",
                "no rule has a `percent`",
            ),
            (
                r#""subsets": {"canary": ["v2"]}, "rules": [{"percent": 5, "subset": "canary"}], "split_key": []"#.to_owned(),
                "split_key",
                "is empty",
            ),
            (
                r#""subsets": {"canary": ["v2"]}, "rules": [{"percent": 5, "subset": "canary"}], "split_key": [{"header": "X"}]"#.to_owned(),
                "split_key[0].header",
                "must be lower-case",
            ),
        ] {
            let err = rejected(&with(&fields));
            assert_eq!(err.field, field, "{fields}: {err}");
            assert!(err.reason.contains(reason), "{fields}: {err}");
        }
    }

    #[test]
    fn too_many_subsets_or_rules() {
        let subsets: Vec<String> = (0..=MAX_SUBSETS)
            .map(|i| format!(r#""s{i}": ["v2"]"#))
            .collect();
        let err = rejected(&with(&format!(
            r#""subsets": {{{}}}, "default_subset": "s0""#,
            subsets.join(", ")
        )));
        assert_eq!(err.field, "subsets");
        let rules = vec![r#"{"percent": 1, "subset": "c"}"#; MAX_RULES + 1].join(", ");
        let err = rejected(&with(&format!(
            r#""subsets": {{"c": ["v2"]}}, "rules": [{rules}]"#
        )));
        assert_eq!(err.field, "rules");
    }
}
