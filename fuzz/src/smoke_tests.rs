//! The smoke run `cargo test` (and so CI) makes: every target, a fixed number of executions
//! from a fixed seed, so a run is the same every time and takes a few seconds. Long runs:
//! `just fuzz`.

use crate::{Budget, Target};

fn smoke(name: &str, executions: u64) {
    let target: &Target = crate::find(name).expect("a target");
    match crate::run(target, 20_261_129, Budget::Executions(executions)) {
        Ok(report) => assert_eq!(report.executions, executions),
        Err(crash) => panic!(
            "{} failed at execution {}: {} (input saved: {:?})",
            crash.target, crash.execution, crash.message, crash.saved
        ),
    }
}

#[test]
fn every_target_is_smoked() {
    let names: Vec<&str> = crate::all().iter().map(|t| t.name).collect();
    assert_eq!(
        names,
        [
            "config_bytes",
            "config_tree",
            "request_key",
            "ticket",
            "inflight",
            "health",
            "bucket",
            "lease"
        ]
    );
}

#[test]
fn config_bytes() {
    smoke("config_bytes", 2_000);
}

#[test]
fn config_tree() {
    smoke("config_tree", 2_000);
}

#[test]
fn request_key() {
    smoke("request_key", 20_000);
}

#[test]
fn ticket() {
    smoke("ticket", 20_000);
}

#[test]
fn inflight() {
    smoke("inflight", 20_000);
}

#[test]
fn health() {
    smoke("health", 20_000);
}

#[test]
fn bucket() {
    smoke("bucket", 20_000);
}

#[test]
fn lease() {
    smoke("lease", 20_000);
}
