//! Every configuration this crate's unit tests parse, judged by the parser and by the JSON
//! Schema (`schema/eisodos.schema.json`): they must agree, but for the rules listed in
//! `eisodos_schema::EXCEPTIONS`.
//!
//! The corpus is recorded, not copied: [`Config::parse`](super::Config::parse) hands every
//! input to [`record`], which writes it down when `EISODOS_RECORD_CONFIGS` names a file. The
//! test runs this test binary again with that variable set (all tests but this one), so it
//! sees every configuration every other test parses, whatever they are and however they are
//! built, and only after they have all run. Not on `wasm32-wasip1`, which cannot start a
//! process.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use serde_json::Value;

use crate::balancer::Balancer;

/// Names the file [`record`] appends to.
const RECORD_TO: &str = "EISODOS_RECORD_CONFIGS";
/// This module's name in test paths: the child run skips it.
const THIS: &str = "schema_agreement";

/// Writes `bytes` down, one JSON line (a string, or an array of bytes when not UTF-8), when
/// [`RECORD_TO`] names a file.
pub(super) fn record(bytes: &[u8]) {
    static FILE: Mutex<()> = Mutex::new(());
    let Some(path) = std::env::var_os(RECORD_TO) else {
        return;
    };
    let value = match std::str::from_utf8(bytes) {
        Ok(text) => Value::from(text),
        Err(_) => Value::from(bytes.to_vec()),
    };
    let _guard = FILE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap();
    writeln!(file, "{value}").unwrap();
}

/// Removes the record when the test ends, passed or not.
struct Removed(PathBuf);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The distinct configurations the other tests parse, in the order first parsed.
fn corpus(record: &Path) -> Vec<Vec<u8>> {
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--skip", THIS, "-q"])
        .env(RECORD_TO, record)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "the unit tests must pass for the corpus to be whole:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(record).unwrap();
    let mut configs: Vec<Vec<u8>> = Vec::new();
    for line in text.lines() {
        let bytes = match serde_json::from_str(line).unwrap() {
            Value::String(text) => text.into_bytes(),
            bytes => serde_json::from_value(bytes).unwrap(),
        };
        if !configs.contains(&bytes) {
            configs.push(bytes);
        }
    }
    configs
}

#[test]
fn every_configuration_the_unit_tests_parse_gets_the_schemas_verdict() {
    if std::env::var_os(RECORD_TO).is_some() {
        return; // The child run: `--skip` keeps it out already.
    }
    let record = Removed(
        std::env::temp_dir().join(format!("eisodos-core-configs-{}.jsonl", std::process::id())),
    );
    let configs = corpus(&record.0);
    let schema = eisodos_schema::shared().unwrap();
    let mut tally = eisodos_schema::Tally::default();
    for (i, config) in configs.iter().enumerate() {
        let parser = Balancer::configure(config, "t", 0)
            .map(drop)
            .map_err(|err| err.to_string());
        let agreement = eisodos_schema::judge(schema, config, parser);
        tally.add(&format!("unit-test config #{i}"), config, agreement);
    }
    println!("schema agreement, configurations the core unit tests parse: {tally}");
    assert!(
        tally.disagreements.is_empty(),
        "the schema and the parser disagree (fix the one that is wrong, or list a rule the \
         schema cannot express in eisodos_schema::EXCEPTIONS):\n{}",
        tally.disagreements.join("\n")
    );
    // The corpus is the test suite's: a handful would mean the recording broke.
    assert!(tally.configs > 100, "{tally}");
}
