//! Small readings from the host: the clock and request properties.

use std::time::UNIX_EPOCH;

use proxy_wasm::hostcalls;

/// Milliseconds since the Unix epoch by Envoy's clock (the same for every worker); 0 if the
/// host cannot say.
pub fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
        .and_then(|since| u64::try_from(since.as_millis()).ok())
        .unwrap_or(0)
}

/// An integer property (Envoy encodes them as 8 little-endian bytes).
pub fn int_property(path: Vec<&str>) -> Option<i64> {
    let bytes = hostcalls::get_property(path).ok()??;
    <[u8; 8]>::try_from(bytes.as_slice())
        .ok()
        .map(i64::from_le_bytes)
}
