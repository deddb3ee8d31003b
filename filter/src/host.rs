//! Small readings from the host: the clock and request properties.

use crate::abi;

/// Milliseconds since the Unix epoch by Envoy's clock (the same for every worker); 0 if the
/// host cannot say.
pub fn now_ms() -> u64 {
    abi::current_time_ns().map_or(0, |ns| ns / 1_000_000)
}

/// Microseconds since the Unix epoch by Envoy's clock, if the host can say.
pub fn now_us() -> Option<u64> {
    abi::current_time_ns().ok().map(|ns| ns / 1_000)
}

/// An integer property (Envoy encodes them as 8 little-endian bytes).
pub fn int_property(path: &[&str]) -> Option<i64> {
    let bytes = abi::property(path).ok()??;
    <[u8; 8]>::try_from(bytes.as_slice())
        .ok()
        .map(i64::from_le_bytes)
}
