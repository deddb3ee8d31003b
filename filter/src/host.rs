//! What the glue needs from its host, as a trait: Envoy through the proxy-wasm ABI in the
//! module (`abi_host::AbiHost`), a recording fake in unit tests (`fake_host::FakeHost`), so the
//! wiring of the callbacks is tested without Envoy.
//!
//! The glue takes the host as a generic parameter, never `&dyn Host`: the module has one
//! instantiation, a zero-sized type, so the trait costs nothing per request.

use eisodos_core::store::SharedStore;

use crate::abi::{HeaderPairs, LogLevel, MetricKind, Status};

/// The host calls eisodos makes. Shared data is the host's [`SharedStore`].
pub trait Host: SharedStore {
    /// A request header's value as bytes (not necessarily UTF-8); `None` when absent.
    fn request_header(&self, name: &str) -> Result<Option<Vec<u8>>, Status>;

    /// Every request header as (name, value) bytes, pseudo-headers included: one host call
    /// that returns the whole map (`proxy_get_header_map_pairs`).
    fn request_header_pairs(&self) -> Result<HeaderPairs, Status>;

    /// Sets a request header, replacing any value it had.
    fn set_request_header(&self, name: &str, value: &str) -> Result<(), Status>;

    /// Adds a response header, keeping any values it has (inside the response-headers
    /// callback only).
    fn add_response_header(&self, name: &str, value: &str) -> Result<(), Status>;

    /// Removes a request header, every value of it.
    fn remove_request_header(&self, name: &str) -> Result<(), Status>;

    /// Answers the current request locally; `details` is what Envoy's access log shows as
    /// `%RESPONSE_CODE_DETAILS%`.
    fn send_response(
        &self,
        status: u32,
        details: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), Status>;

    /// Sets filter state of the current stream, which Envoy keeps under `wasm.<name>` for
    /// its access log (`%FILTER_STATE(wasm.<name>:PLAIN)%`) and tracer to read. Only passes
    /// data in: one of the cheap host calls.
    fn set_filter_state(&self, name: &str, value: &str) -> Result<(), Status>;

    /// A property (`["source", "address"]`, `["response", "code"]`, `["plugin_name"]`);
    /// `None` when absent.
    fn property(&self, path: &[&str]) -> Result<Option<Vec<u8>>, Status>;

    /// Nanoseconds since the Unix epoch by the host's clock.
    fn current_time_ns(&self) -> Result<u64, Status>;

    /// Sends an HTTP request to `cluster`; the answer comes back to the root context with the
    /// returned token.
    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        timeout_ms: u32,
    ) -> Result<u32, Status>;

    /// The `:status` of the HTTP call being answered (inside the answer's callback only);
    /// `None` when the call failed without a response.
    fn http_call_status(&self) -> Result<Option<Vec<u8>>, Status>;

    /// Sets the root context's tick period (0 stops it).
    fn set_tick_period_ms(&self, period: u32) -> Result<(), Status>;

    /// The plugin configuration bytes (`size` as the host announced it).
    fn plugin_configuration(&self, size: usize) -> Result<Vec<u8>, Status>;

    /// Defines (or finds again) a metric; returns its id (per VM; the stat is one per name
    /// for the whole process).
    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<u32, Status>;

    /// Sets a gauge.
    fn record_metric(&self, id: u32, value: u64) -> Result<(), Status>;

    /// Adds `delta` (not 0: Envoy refuses it) to a counter.
    fn increment_metric(&self, id: u32, delta: u64) -> Result<(), Status>;

    /// Writes a line to the host's log.
    fn log(&self, level: LogLevel, message: &str) -> Result<(), Status>;

    /// The level below which the host drops log lines.
    fn log_level(&self) -> Result<LogLevel, Status>;

    /// Milliseconds since the Unix epoch by the host's clock (the same for every worker); 0 if
    /// the host cannot say.
    fn now_ms(&self) -> u64 {
        self.current_time_ns().map_or(0, |ns| ns / 1_000_000)
    }

    /// Microseconds since the Unix epoch by the host's clock, if the host can say.
    fn now_us(&self) -> Option<u64> {
        self.current_time_ns().ok().map(|ns| ns / 1_000)
    }

    /// An integer property (Envoy encodes them as 8 little-endian bytes).
    fn int_property(&self, path: &[&str]) -> Option<i64> {
        let bytes = self.property(path).ok()??;
        <[u8; 8]>::try_from(bytes.as_slice())
            .ok()
            .map(i64::from_le_bytes)
    }
}
