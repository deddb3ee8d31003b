//! The crash-trigger build of the filter, for the fail-strategy tests: the same crate built
//! with `--features crash-trigger` into a target directory of its own (`target/crash`), so it
//! never replaces or shares artifacts with the shipped `eisodos.wasm`. A request carrying
//! [`HEADER`] makes that build panic.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use crate::paths;

/// The request header that crashes the crash-trigger build (the filter's
/// `crash_trigger::HEADER`).
pub const HEADER: &str = "x-eisodos-test-crash";

/// Builds the crash-trigger `.wasm` (once per test binary; cargo makes the rebuild
/// incremental) and returns its path,
/// `<root>/target/crash/wasm32-wasip1/release/eisodos.wasm`.
///
/// # Panics
/// When cargo fails, with its output.
pub fn path() -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(build)
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn build() -> Result<PathBuf, String> {
    let root = paths::repo_root();
    let target_dir = root.join("target/crash");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip1",
            "-p",
            "eisodos-filter",
            "--features",
            "crash-trigger",
        ])
        .env("CARGO_TARGET_DIR", &target_dir)
        .current_dir(&root)
        .output()
        .map_err(|e| format!("run cargo to build the crash-trigger wasm: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "building the crash-trigger wasm failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let wasm = target_dir.join("wasm32-wasip1/release/eisodos.wasm");
    if wasm.is_file() {
        Ok(wasm)
    } else {
        Err(format!("cargo built no {}", wasm.display()))
    }
}
