//! A crash on demand, for the fail-strategy tests only (`tests/tests/fail_strategies.rs`):
//! built only with the `crash-trigger` feature, which `just build` and `just package` never
//! turn on, so the shipped `.wasm` holds neither this code nor the header's name.
//!
//! A request carrying [`HEADER`] panics in `on_request_headers`. The release profile aborts on
//! panic, so the VM traps exactly as it would on a real bug, and Envoy applies the plugin's
//! `failure_policy`.

use crate::host::Host;

/// The request header that crashes the VM (any value).
pub const HEADER: &str = "x-eisodos-test-crash";

/// Panics when the request carries [`HEADER`]; otherwise does nothing.
#[allow(clippy::panic)] // The point: the test build must die as a real panic would.
pub fn check(host: &impl Host) {
    if matches!(host.request_header(HEADER), Ok(Some(_))) {
        panic!("{HEADER}: crashing the VM on request");
    }
}
