//! The shared-data tool (`tests/shared-data-tool`): a test-only Wasm filter that reads and
//! writes a running Envoy's shared data, so a test can look at eisodos' records in a live
//! Envoy and put garbage under its keys while Envoy serves.
//!
//! Envoy keeps one shared-data map per `vm_id` per process, so the tool, configured with
//! eisodos' `vm_id` ([`VM_ID`]) and placed ahead of eisodos ([`filter`] with
//! [`crate::envoy::EnvoyBuilder::filter_before`]), sees eisodos' keys. It answers only paths
//! under `/.shared-data/`; every other request passes through untouched (one `:path` read).
//!
//! ```no_run
//! use eisodos_tests::{envoy::Envoy, shared_data_tool, upstream::Upstream};
//!
//! let a = Upstream::builder("backend_a").start();
//! let envoy = Envoy::builder()
//!     .upstreams([&a])
//!     .filter_before(shared_data_tool::filter())
//!     .start();
//! let ticket = shared_data_tool::get(&envoy, "eisodos.eisodos.rr_ticket").unwrap();
//! shared_data_tool::set(&envoy, "eisodos.eisodos.rr_ticket", b"garbage").unwrap();
//! ```

use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::{json, Value};

use crate::envoy::Envoy;
use crate::raw;

/// The shipped configuration's `vm_id` (`envoy/envoy.yaml`): the tool must share it.
pub const VM_ID: &str = "eisodos";

/// A value read from shared data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedValue {
    /// The bytes (only the first ones, with [`get_prefix`]).
    pub bytes: Vec<u8>,
    /// The whole value's length.
    pub size: usize,
    /// Its compare-and-swap token.
    pub cas: u32,
}

/// Builds the tool's `.wasm` (once per test binary) into a target directory of its own
/// (`target/shared-data-tool`) and returns its path.
///
/// # Panics
/// When cargo fails, with its output.
pub fn wasm_path() -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    crate::wasm_build::once(&BUILT, build)
}

fn build() -> Result<PathBuf, String> {
    crate::wasm_build::release(
        "eisodos-shared-data-tool",
        None,
        "shared-data-tool",
        "shared_data_tool.wasm",
    )
}

/// The tool's HTTP filter, for [`crate::envoy::EnvoyBuilder::filter_before`] (builds the
/// `.wasm` if needed).
pub fn filter() -> Value {
    json!({
        "name": "eisodos.test.shared_data_tool",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": "shared-data-tool",
                "root_id": "shared-data-tool",
                "vm_config": {
                    "vm_id": VM_ID,
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": wasm_path().to_string_lossy()}}
                }
            }
        }
    })
}

/// The value under `key`, or `None` when there is none.
///
/// # Errors
/// When the request fails or the tool answers anything but a value or `absent`.
pub fn get(envoy: &Envoy, key: &str) -> Result<Option<SharedValue>, String> {
    get_prefix(envoy, key, usize::MAX)
}

/// [`get`], fetching only the first `max` bytes (the size is the whole value's): cheap for a
/// key that may hold a huge value.
///
/// # Errors
/// When the request fails or the tool answers anything but a value or `absent`.
pub fn get_prefix(envoy: &Envoy, key: &str, max: usize) -> Result<Option<SharedValue>, String> {
    let request = format!(
        "GET /.shared-data/get/{key}?max={max} HTTP/1.1\r\nhost: tool\r\nconnection: close\r\n\r\n"
    );
    let response = raw::exchange(envoy.listener_port(), request.as_bytes())?;
    match response.status {
        404 if response.body == "absent\n" => Ok(None),
        200 => {
            let bytes = unhex(&response.body)?;
            let size: usize = header(&response, "x-shared-data-size")?;
            if bytes.len() != size.min(max) {
                return Err(format!("size {size}, max {max}, but {} bytes", bytes.len()));
            }
            let cas = header(&response, "x-shared-data-cas")?;
            Ok(Some(SharedValue { bytes, size, cas }))
        }
        _ => Err(format!("get {key}: {response:?}")),
    }
}

/// Sets `key` to `bytes`, unconditionally.
///
/// # Errors
/// When the request fails or the tool does not answer `ok`.
pub fn set(envoy: &Envoy, key: &str, bytes: &[u8]) -> Result<(), String> {
    set_with(envoy, key, bytes, 1, None).map(|_| ())
}

/// Sets `key` to `bytes` repeated `repeat` times (a value larger than a request header
/// holds), with the compare-and-swap token `cas` when given (`Some(0)` is unconditional, as in
/// the ABI). `Ok(false)` when the CAS did not match. `bytes` goes as hex in a request header:
/// keep it under ~25 KB and use `repeat` for more.
///
/// # Errors
/// When the request fails or the tool answers neither `ok` nor a CAS mismatch.
pub fn set_with(
    envoy: &Envoy,
    key: &str,
    bytes: &[u8],
    repeat: usize,
    cas: Option<u32>,
) -> Result<bool, String> {
    let cas_header = cas.map_or(String::new(), |cas| format!("x-shared-data-cas: {cas}\r\n"));
    let request = format!(
        "GET /.shared-data/set/{key}?repeat={repeat} HTTP/1.1\r\nhost: tool\r\n\
         connection: close\r\nx-shared-data-value: {}\r\n{cas_header}\r\n",
        hex(bytes)
    );
    let response = raw::exchange(envoy.listener_port(), request.as_bytes())?;
    match response.status {
        200 => Ok(true),
        409 => Ok(false),
        _ => Err(format!("set {key}: {response:?}")),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn header<T: std::str::FromStr>(
    response: &crate::client::Response,
    name: &str,
) -> Result<T, String> {
    response
        .header(name)
        .and_then(|value| value.parse().ok())
        .ok_or_else(|| format!("no valid {name} in {response:?}"))
}

fn unhex(text: &str) -> Result<Vec<u8>, String> {
    let pairs = text.trim().as_bytes().chunks_exact(2);
    if !pairs.remainder().is_empty() {
        return Err(format!("odd hex length {}", text.trim().len()));
    }
    pairs
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| format!("not hex: {pair:?}"))
        })
        .collect()
}
