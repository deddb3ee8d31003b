//! Where things live: the repository root, the built `.wasm`, the Envoy binary.

use std::path::{Path, PathBuf};

/// The repository root (the directory holding the workspace `Cargo.toml`).
pub fn repo_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    root.canonicalize().unwrap_or(root)
}

/// The shipped demo configuration, `<root>/envoy/envoy.yaml`.
pub fn shipped_config() -> PathBuf {
    repo_root().join("envoy").join("envoy.yaml")
}

/// The filter under test: `$EISODOS_WASM` if set, else
/// `<root>/target/wasm32-wasip1/release/eisodos.wasm`. Always absolute.
///
/// # Panics
/// When the file does not exist, with a message telling how to build it.
pub fn wasm_path() -> PathBuf {
    try_wasm_path().unwrap_or_else(|e| panic!("{e}"))
}

/// Like [`wasm_path`], but returns the error message instead of panicking.
pub fn try_wasm_path() -> Result<PathBuf, String> {
    let (path, source) = match std::env::var_os("EISODOS_WASM") {
        Some(p) if !p.is_empty() => (PathBuf::from(p), "$EISODOS_WASM"),
        _ => (
            repo_root().join("target/wasm32-wasip1/release/eisodos.wasm"),
            "the default location",
        ),
    };
    let path = absolute(&path);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "eisodos wasm not found at {} ({source}): run `just build` first \
             (or point EISODOS_WASM at a built .wasm)",
            path.display()
        ))
    }
}

/// The Envoy binary: `$ENVOY_BIN`, else `<root>/.venv/bin/envoy`, else `envoy` on `PATH`.
pub fn envoy_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("ENVOY_BIN").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let venv = repo_root().join(".venv/bin/envoy");
    if venv.is_file() {
        return venv;
    }
    PathBuf::from("envoy")
}

fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|cwd| cwd.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    }
}
