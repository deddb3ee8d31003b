//! Runs the packager (`tools/package.py`, what `just package` runs) on the built filter into a
//! directory of the test's choosing, so a test never depends on an earlier `just package`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::paths;

/// The packager script.
pub fn script() -> PathBuf {
    paths::repo_root().join("tools").join("package.py")
}

/// Packages the built filter (see [`paths::wasm_path`]) into `out`; returns what the
/// packager printed (the listing).
///
/// # Errors
/// When `python3` cannot be run or the packager fails; the message has its output.
pub fn package_into(out: &Path) -> Result<String, String> {
    let wasm = paths::try_wasm_path()?;
    let output = Command::new("python3")
        .arg(script())
        .arg("--wasm")
        .arg(&wasm)
        .arg("--out")
        .arg(out)
        .output()
        .map_err(|e| format!("cannot run python3 {}: {e}", script().display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{} failed ({}):\n{stdout}{}",
            script().display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}
