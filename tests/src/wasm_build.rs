//! Release builds of the workspace's test-only Wasm modules (the crash-trigger filter, the
//! shared-data tool), each into a target directory of its own under `target/`, so they never
//! replace or share artifacts with the shipped `eisodos.wasm`.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use crate::paths;

/// Runs `cargo build --release --target wasm32-wasip1 -p <package> [--features <features>]`
/// with `CARGO_TARGET_DIR=<root>/target/<target_subdir>` (cargo makes a rebuild incremental)
/// and returns the path of `<file>` it built.
///
/// # Errors
/// When cargo cannot run or fails (with its output), or built no such file.
pub fn release(
    package: &str,
    features: Option<&str>,
    target_subdir: &str,
    file: &str,
) -> Result<PathBuf, String> {
    let root = paths::repo_root();
    let target_dir = root.join("target").join(target_subdir);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.args([
        "build",
        "--release",
        "--target",
        "wasm32-wasip1",
        "-p",
        package,
    ]);
    if let Some(features) = features {
        command.args(["--features", features]);
    }
    let output = command
        .env("CARGO_TARGET_DIR", &target_dir)
        .current_dir(&root)
        .output()
        .map_err(|e| format!("run cargo to build {package}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "building {package} for wasm32-wasip1 failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let wasm = target_dir.join("wasm32-wasip1/release").join(file);
    if wasm.is_file() {
        Ok(wasm)
    } else {
        Err(format!("cargo built no {}", wasm.display()))
    }
}

/// The module `build` makes, built once per test binary and kept in `built`.
///
/// # Panics
/// When the build fails, with cargo's output.
pub fn once(
    built: &'static OnceLock<Result<PathBuf, String>>,
    build: impl FnOnce() -> Result<PathBuf, String>,
) -> PathBuf {
    built
        .get_or_init(build)
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}
