//! eisodos' plugin configuration as a JSON Schema (`schema/eisodos.schema.json`, draft
//! 2020-12), and what holds the schema and the filter's parser to one verdict.
//!
//! The schema is for editors and CI linters; the parser (`Balancer::configure` in
//! `eisodos-core`) is what the filter runs. [`judge`] puts one configuration through both: they
//! must agree on accepting or rejecting it, except where the parser checks a rule a schema
//! cannot express, each listed in [`EXCEPTIONS`] with a configuration that breaks it. This crate
//! does not depend on the parser; callers pass its verdict in, so the core crate's own tests
//! can use it.
//!
//! Where it is used: the core crate's unit tests (every configuration they parse), the
//! integration-test harness (every plugin configuration it gives Envoy) and this crate's
//! `agreement` test (the configurations in `envoy/`, `deploy/` and the READMEs, pattern probes,
//! the exceptions' examples).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::OnceLock;

use serde_json::Value;

/// The schema's text.
pub const SCHEMA: &str = include_str!("../eisodos.schema.json");

/// The schema, compiled for draft 2020-12.
pub struct Schema {
    validator: jsonschema::Validator,
}

impl Schema {
    /// Compiles [`SCHEMA`], after checking it against the draft 2020-12 meta-schema.
    ///
    /// # Errors
    /// When the schema is not JSON, breaks the meta-schema or cannot be compiled.
    pub fn load() -> Result<Self, String> {
        let schema: Value = serde_json::from_str(SCHEMA)
            .map_err(|err| format!("eisodos.schema.json is not JSON: {err}"))?;
        jsonschema::meta::validate(&schema)
            .map_err(|err| format!("eisodos.schema.json breaks the meta-schema: {err}"))?;
        let validator = jsonschema::draft202012::new(&schema)
            .map_err(|err| format!("eisodos.schema.json does not compile: {err}"))?;
        Ok(Self { validator })
    }

    /// The schema's verdict on a configuration's bytes: a document that is not JSON is
    /// rejected, as by any validator, which must parse it first. The error lists every
    /// violation, `; `-separated, each as `<JSON pointer>: <message>`.
    ///
    /// # Errors
    /// When the document is not JSON or breaks the schema.
    pub fn check(&self, text: &[u8]) -> Result<(), String> {
        let document: Value =
            serde_json::from_slice(text).map_err(|err| format!("not JSON: {err}"))?;
        let errors: Vec<String> = self
            .validator
            .iter_errors(&document)
            .map(|err| format!("{}: {err}", err.instance_path()))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

/// The schema, compiled once per process.
///
/// # Errors
/// See [`Schema::load`].
pub fn shared() -> Result<&'static Schema, String> {
    static SHARED: OnceLock<Result<Schema, String>> = OnceLock::new();
    SHARED
        .get_or_init(Schema::load)
        .as_ref()
        .map_err(Clone::clone)
}

/// A rule the parser checks and the schema cannot express: a configuration that breaks only
/// this rule is rejected by the parser and accepted by the schema.
pub struct Exception {
    /// A short name, for the counts.
    pub name: &'static str,
    /// Why JSON Schema cannot say it.
    pub why: &'static str,
    /// A configuration that breaks this rule and no other.
    pub example: fn() -> String,
    /// Whether the parser's error (`field: reason`) is this rule's.
    is_this_rule: fn(&str) -> bool,
}

impl Exception {
    /// Whether the parser's one-line error is this rule's.
    pub fn is_this_rule(&self, parser_error: &str) -> bool {
        (self.is_this_rule)(parser_error)
    }
}

impl fmt::Debug for Exception {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

/// The rules the parser checks beyond the schema. A disagreement not listed here is a bug in
/// the schema or in the parser.
pub const EXCEPTIONS: &[Exception] = &[
    Exception {
        name: "repeated key",
        why: "a key given twice in one object: a validator sees the parsed document, where one \
              of the two is already gone",
        example: || r#"{"backends": [{"cluster": "a", "weight": 2, "weight": 3}]}"#.to_owned(),
        is_this_rule: |error| {
            error.contains(": duplicate field `")
                // A hash_key source with its key repeated: two keys to the parser, one to a
                // validator (a source with two different keys breaks the schema too).
                || (error.starts_with("hash_key[") && error.contains("must have exactly one key"))
        },
    },
    Exception {
        name: "duplicate cluster",
        why: "uniqueItems compares whole backends; two with one cluster and different weights \
              are distinct items",
        example: || r#"{"backends": [{"cluster": "a"}, {"cluster": "a", "weight": 2}]}"#.to_owned(),
        is_this_rule: |error| {
            error.starts_with("backends[") && error.contains(".cluster: duplicate cluster \"")
        },
    },
    Exception {
        name: "retry cluster shared",
        why: "a backend's retry_cluster must differ from every backend's cluster and every \
              other retry_cluster, a comparison across items a schema cannot make",
        example: || {
            r#"{"retry": {"retry_on": "5xx"}, "backends": [{"cluster": "a", "retry_cluster": "b"}, {"cluster": "b"}]}"#
                .to_owned()
        },
        is_this_rule: |error| {
            error.starts_with("backends[")
                && error.contains(".retry_cluster: \"")
                && error.contains("\" is also backends[")
        },
    },
    Exception {
        name: "round-robin cycle too large",
        why: "whether the weights' cycle can be laid out depends on their sum over their \
              greatest common divisor",
        example: cycle_example,
        is_this_rule: |error| error.starts_with("backends: weights make a round-robin cycle of "),
    },
    Exception {
        name: "cluster name that carries no Host",
        why: "with health checks on and no authority, a probe's Host comes from the cluster name \
              by Istio's and Envoy Gateway's naming rules (outbound|port|subset|fqdn, \
              httproute/ns/route/rule/n), which a pattern per backend could only copy in part",
        example: || {
            r#"{"health_check": {"path": "/h"}, "backends": [{"cluster": "httproute/default/web/rule/0"}]}"#
                .to_owned()
        },
        is_this_rule: |error| {
            error.starts_with("backends[")
                && error.contains(".authority: not set, and health checks are on: ")
        },
    },
    Exception {
        name: "query name over 256 bytes",
        why: "maxLength counts characters; the parser counts the name's UTF-8 bytes",
        example: query_bytes_example,
        is_this_rule: |error| {
            error.starts_with("hash_key[") && error.contains(".query: must be 1 to 256 bytes")
        },
    },
    Exception {
        name: "cookie attribute meaning",
        why: "cookie attribute names are case-insensitive, each may be given once, and some \
              depend on others or on the cookie's name (SameSite=None and the __Secure- and \
              __Host- prefixes need Secure); the pattern checks the syntax only",
        example: || {
            r#"{"session_affinity": {"attributes": "Path=/; HttpOnyl"}, "backends": [{"cluster": "a"}]}"#
                .to_owned()
        },
        is_this_rule: |error| {
            (error.starts_with("session_affinity.attributes: ")
                && !error.contains(" is not a cookie attribute: ")
                && !error.contains(": is longer than "))
                || (error.starts_with("session_affinity.cookie: ")
                    && error.contains(" prefix, which needs Secure"))
        },
    },
    Exception {
        name: "subset member that is not a backend",
        why: "a subset's members name backends[].cluster values: a reference from one part of \
              the document to another's values",
        example: || {
            r#"{"subsets": {"canary": ["v3"]}, "default_subset": "canary", "backends": [{"cluster": "v2"}]}"#
                .to_owned()
        },
        is_this_rule: |error| {
            error.starts_with("subsets.") && error.contains(": unknown backend \"")
        },
    },
    Exception {
        name: "unknown subset",
        why: "default_subset and rules[].subset name keys of subsets: a reference from one part \
              of the document to another's keys",
        example: || {
            r#"{"subsets": {"canary": ["v2"]}, "default_subset": "stable", "backends": [{"cluster": "v2"}]}"#
                .to_owned()
        },
        is_this_rule: |error| {
            (error.starts_with("default_subset: ")
                || (error.starts_with("rules[") && error.contains("].subset: ")))
                && error.contains("unknown subset \"")
        },
    },
    Exception {
        name: "subset of backups only",
        why: "whether a subset's members are all backups depends on their backends' backup flags",
        example: || {
            r#"{"subsets": {"spares": ["b"]}, "default_subset": "spares", "backends": [{"cluster": "a"}, {"cluster": "b", "backup": true}]}"#
                .to_owned()
        },
        is_this_rule: |error| error.starts_with("subsets.") && error.contains(": are all backups;"),
    },
];

/// 1000 backends with distinct weights near 1000: a cycle of ~10^6 slots, each step over 1000
/// backends.
fn cycle_example() -> String {
    let backends: Vec<String> = (0..1000)
        .map(|i| format!(r#"{{"cluster": "c{i}", "weight": {}}}"#, 1000 - i % 500))
        .collect();
    format!(r#"{{"backends": [{}]}}"#, backends.join(", "))
}

/// A query name of 200 characters, 400 bytes.
fn query_bytes_example() -> String {
    format!(
        r#"{{"policy": "consistent_hash", "hash_key": [{{"query": "{}"}}], "backends": [{{"cluster": "a"}}]}}"#,
        "é".repeat(200)
    )
}

/// How the parser and the schema judged one configuration.
#[derive(Debug)]
pub enum Agreement {
    /// Both accepted it (`true`) or both rejected it (`false`).
    Both(bool),
    /// The parser rejected it for a listed rule the schema cannot express.
    Exception(&'static Exception),
    /// They disagree: a bug in the schema or in the parser.
    Disagree {
        /// The parser's verdict.
        parser: Result<(), String>,
        /// The schema's verdict.
        schema: Result<(), String>,
    },
}

/// Judges one configuration: `parser` is the parser's verdict on `text` (its error as the
/// filter logs it, `field: reason`).
pub fn judge(schema: &Schema, text: &[u8], parser: Result<(), String>) -> Agreement {
    let by_schema = schema.check(text);
    match (parser, by_schema) {
        (Ok(()), Ok(())) => Agreement::Both(true),
        (Err(_), Err(_)) => Agreement::Both(false),
        (Err(error), Ok(())) => match EXCEPTIONS.iter().find(|e| e.is_this_rule(&error)) {
            Some(exception) => Agreement::Exception(exception),
            None => Agreement::Disagree {
                parser: Err(error),
                schema: Ok(()),
            },
        },
        (parser, schema) => Agreement::Disagree { parser, schema },
    }
}

/// Counts of a corpus's verdicts.
#[derive(Debug, Default)]
pub struct Tally {
    /// Configurations judged.
    pub configs: usize,
    /// Accepted by both.
    pub accepted: usize,
    /// Rejected by both.
    pub rejected: usize,
    /// Rejected by the parser for a listed rule, per rule.
    pub exceptions: BTreeMap<&'static str, usize>,
    /// Each disagreement, described.
    pub disagreements: Vec<String>,
}

impl Tally {
    /// Counts one verdict; `what` names the configuration in a disagreement's description.
    pub fn add(&mut self, what: &str, text: &[u8], agreement: Agreement) {
        self.configs += 1;
        match agreement {
            Agreement::Both(true) => self.accepted += 1,
            Agreement::Both(false) => self.rejected += 1,
            Agreement::Exception(exception) => {
                *self.exceptions.entry(exception.name).or_default() += 1;
            }
            Agreement::Disagree { parser, schema } => self.disagreements.push(format!(
                "{what}:\n  config: {}\n  parser: {}\n  schema: {}",
                String::from_utf8_lossy(text),
                verdict(&parser),
                verdict(&schema)
            )),
        }
    }

    /// Configurations both judged alike.
    pub fn agreeing(&self) -> usize {
        self.accepted + self.rejected
    }
}

fn verdict(verdict: &Result<(), String>) -> String {
    match verdict {
        Ok(()) => "accepts".to_owned(),
        Err(error) => format!("rejects: {error}"),
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let exceptions: usize = self.exceptions.values().sum();
        write!(
            f,
            "{} configs: {} accepted, {} rejected, {} agreeing, {} listed exceptions",
            self.configs,
            self.accepted,
            self.rejected,
            self.agreeing(),
            exceptions
        )?;
        if exceptions > 0 {
            let each: Vec<String> = self
                .exceptions
                .iter()
                .map(|(name, n)| format!("{name}: {n}"))
                .collect();
            write!(f, " ({})", each.join(", "))?;
        }
        write!(f, ", {} disagreements", self.disagreements.len())
    }
}
