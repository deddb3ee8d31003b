//! A fuzz harness for eisodos-core that runs on the stable toolchain.
//!
//! `cargo fuzz` (libFuzzer, coverage-guided) needs a nightly compiler for its sanitizer
//! flags; this harness is a seeded, mutational loop instead: each target gets inputs that are
//! either fresh random bytes or mutations of its seed corpus, and turns them into structured
//! values with [`arbitrary::Unstructured`]. One `(target, seed)` pair replays a run exactly.
//!
//! A target fails by panicking: with a panic of the code under test (which in Envoy would
//! abort the VM) or with one of its own assertions (a property of the decoded value). The
//! loop catches it, writes the input to a file and stops.
//!
//! This crate is a workspace member of its own, so nothing in it reaches the filter's `.wasm`.

// A failing property is a panic, which the loop catches: that is this crate's job. The other
// lints (no unwrap, no indexing) still hold, so the harness itself cannot be the crash.
#![allow(clippy::panic)]

pub mod mutate;
#[cfg(test)]
mod smoke_tests;
pub mod targets;

use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// One fuzz target.
pub struct Target {
    /// Its name on the command line and in reports.
    pub name: &'static str,
    /// What it exercises, one line.
    pub about: &'static str,
    /// The inputs mutations start from (may be empty: then every input is random).
    pub seeds: fn() -> Vec<Vec<u8>>,
    /// Runs one input; panics on a failure.
    pub run: fn(&[u8]),
}

/// How long a run lasts.
#[derive(Debug, Clone, Copy)]
pub enum Budget {
    /// Exactly this many executions (deterministic: the smoke runs).
    Executions(u64),
    /// Until this much time has passed.
    Time(Duration),
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct Report {
    /// The target's name.
    pub target: &'static str,
    /// Inputs run.
    pub executions: u64,
    /// Wall time.
    pub elapsed: Duration,
}

impl Report {
    /// Executions per second.
    pub fn per_second(&self) -> f64 {
        self.executions as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A failing input.
#[derive(Debug, Clone)]
pub struct Crash {
    /// The target's name.
    pub target: &'static str,
    /// Which execution failed (0-based).
    pub execution: u64,
    /// The panic message.
    pub message: String,
    /// The input.
    pub input: Vec<u8>,
    /// Where the input was written, if it could be.
    pub saved: Option<PathBuf>,
}

/// Longest random input: long enough for 64 KiB-class keys would cost too much per
/// execution; the mutations grow seeds past this when they need to.
const MAX_RANDOM_LEN: usize = 4096;

/// Runs `target` with inputs from `seed` for `budget`.
///
/// # Errors
/// The first input that made the target panic.
pub fn run(target: &Target, seed: u64, budget: Budget) -> Result<Report, Crash> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let seeds = (target.seeds)();
    let start = Instant::now();
    let mut executions = 0u64;
    let mut input = Vec::new();
    loop {
        match budget {
            Budget::Executions(n) if executions >= n => break,
            // Checking the clock every 64 executions keeps it off the profile.
            Budget::Time(limit) if executions % 64 == 0 && start.elapsed() >= limit => break,
            _ => {}
        }
        next_input(&mut rng, &seeds, &mut input);
        if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| (target.run)(&input))) {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "panic".to_owned());
            let saved = save(target.name, seed, executions, &input);
            return Err(Crash {
                target: target.name,
                execution: executions,
                message,
                input,
                saved,
            });
        }
        executions += 1;
    }
    Ok(Report {
        target: target.name,
        executions,
        elapsed: start.elapsed(),
    })
}

/// Replays one saved input (a crash file) through `target`.
pub fn replay(target: &Target, input: &[u8]) {
    (target.run)(input);
}

/// The next input: a quarter fresh random bytes, the rest a seed mutated 1 to 8 times.
fn next_input(rng: &mut fastrand::Rng, seeds: &[Vec<u8>], input: &mut Vec<u8>) {
    input.clear();
    let picked = if rng.u8(..4) == 0 {
        None
    } else {
        pick(rng, seeds)
    };
    match picked {
        Some(seed) => {
            input.extend_from_slice(seed);
            for _ in 0..rng.u8(1..=8) {
                mutate::bytes(rng, input, seeds);
            }
        }
        None => {
            let len = rng.usize(..=MAX_RANDOM_LEN);
            input.extend((0..len).map(|_| rng.u8(..)));
        }
    }
}

fn pick<'a>(rng: &mut fastrand::Rng, seeds: &'a [Vec<u8>]) -> Option<&'a Vec<u8>> {
    if seeds.is_empty() {
        return None;
    }
    seeds.get(rng.usize(..seeds.len()))
}

/// Writes a failing input under `target/fuzz-crashes/`, for `eisodos-fuzz --replay`.
fn save(target: &str, seed: u64, execution: u64, input: &[u8]) -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/fuzz-crashes");
    std::fs::create_dir_all(&dir).ok()?;
    let path = dir.join(format!("{target}-{seed}-{execution}.bin"));
    std::fs::write(&path, input).ok()?;
    Some(path)
}

/// Every target, in the order the runner and the smoke test run them.
pub fn all() -> &'static [Target] {
    targets::ALL
}

/// The target called `name`.
pub fn find(name: &str) -> Option<&'static Target> {
    targets::ALL.iter().find(|target| target.name == name)
}
