//! Checks the configurations [`find`](crate::find) finds, with the filter's own validation,
//! and words the outcome as the report's lines.

use eisodos_core::balancer::Balancer;
use eisodos_core::config::ConfigError;

use crate::find::{self, Found, Options, What};

/// The namespace a checked configuration is built under: it names shared-data keys only, and
/// no validation depends on it.
const NAMESPACE: &str = "eisodos";

/// The filter's verdict on a plugin configuration's bytes: exactly what `on_configure` checks.
///
/// # Errors
/// The error the filter logs after `invalid configuration: `.
pub fn validate(bytes: &[u8]) -> Result<(), ConfigError> {
    Balancer::configure(bytes, NAMESPACE, 0).map(drop)
}

/// How one found configuration fared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The filter would accept it.
    Ok,
    /// The filter would refuse it, with this error.
    Invalid(ConfigError),
    /// Another plugin's configuration, not checked.
    Skipped(String),
    /// eisodos' configuration in a form the checker cannot read.
    CannotCheck(String),
}

impl Outcome {
    /// Whether this outcome fails the check.
    pub fn fails(&self) -> bool {
        matches!(self, Outcome::Invalid(_) | Outcome::CannotCheck(_))
    }

    /// The end of the report's line: `ok`, or `invalid configuration: <field>: <reason>` as
    /// the filter logs it.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Ok => "ok".to_owned(),
            Outcome::Invalid(err) => format!("invalid configuration: {err}"),
            Outcome::Skipped(names) => format!("skipped, not eisodos ({names})"),
            Outcome::CannotCheck(why) => format!("cannot check: {why}"),
        }
    }
}

/// A checked configuration: where it is in the file, and how it fared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// See [`Found::location`].
    pub location: String,
    /// The verdict.
    pub outcome: Outcome,
}

impl Checked {
    /// The report's line for it: `FILE: <location>: <outcome>`.
    pub fn line(&self, file: &str) -> String {
        if self.location.is_empty() {
            format!("{file}: {}", self.outcome.describe())
        } else {
            format!("{file}: {}: {}", self.location, self.outcome.describe())
        }
    }
}

/// Checks every Wasm plugin configuration in one file's text (`name` is the file's name).
///
/// # Errors
/// When the file can be read neither as YAML nor as a plugin configuration.
pub fn file(name: &str, text: &str, options: Options) -> Result<Vec<Checked>, String> {
    let found = find::in_file(name, text, options)?;
    Ok(found.into_iter().map(check).collect())
}

fn check(found: Found) -> Checked {
    let outcome = match found.what {
        What::Eisodos(bytes) => match validate(&bytes) {
            Ok(()) => Outcome::Ok,
            Err(err) => Outcome::Invalid(err),
        },
        What::Other(names) => Outcome::Skipped(names),
        What::Unreadable(why) => Outcome::CannotCheck(why),
    };
    Checked {
        location: found.location,
        outcome,
    }
}
