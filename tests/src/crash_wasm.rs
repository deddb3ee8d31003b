//! The crash-trigger build of the filter, for the fail-strategy tests: the same crate built
//! with `--features crash-trigger` into a target directory of its own (`target/crash`), so it
//! never replaces or shares artifacts with the shipped `eisodos.wasm`. A request carrying
//! [`HEADER`] makes that build panic.

use std::path::PathBuf;
use std::sync::OnceLock;

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
    crate::wasm_build::once(&BUILT, build)
}

fn build() -> Result<PathBuf, String> {
    crate::wasm_build::release(
        "eisodos-filter",
        Some("crash-trigger"),
        "crash",
        "eisodos.wasm",
    )
}
