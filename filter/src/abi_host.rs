//! The real [`Host`]: Envoy, through the proxy-wasm ABI calls of [`crate::abi`].

use crate::abi::{self, HeaderPairs, LogLevel, MapType, MetricKind, Status};
use crate::host::Host;

/// Envoy. Zero-sized: the glue's generic code compiles to the ABI calls themselves.
#[derive(Debug, Clone, Copy, Default)]
pub struct AbiHost;

impl Host for AbiHost {
    fn request_header(&self, name: &str) -> Result<Option<Vec<u8>>, Status> {
        abi::header(MapType::RequestHeaders, name)
    }

    fn request_header_pairs(&self) -> Result<HeaderPairs, Status> {
        abi::header_pairs(MapType::RequestHeaders)
    }

    fn set_request_header(&self, name: &str, value: &str) -> Result<(), Status> {
        abi::set_header(MapType::RequestHeaders, name, value)
    }

    fn add_response_header(&self, name: &str, value: &str) -> Result<(), Status> {
        abi::add_header(MapType::ResponseHeaders, name, value)
    }

    fn remove_request_header(&self, name: &str) -> Result<(), Status> {
        abi::remove_header(MapType::RequestHeaders, name)
    }

    fn send_response(
        &self,
        status: u32,
        details: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), Status> {
        abi::send_response(status, details, headers, body)
    }

    fn set_filter_state(&self, name: &str, value: &str) -> Result<(), Status> {
        abi::set_property(name, value)
    }

    fn property(&self, path: &[&str]) -> Result<Option<Vec<u8>>, Status> {
        abi::property(path)
    }

    fn current_time_ns(&self) -> Result<u64, Status> {
        abi::current_time_ns()
    }

    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        timeout_ms: u32,
    ) -> Result<u32, Status> {
        abi::http_call(cluster, headers, timeout_ms)
    }

    fn http_call_status(&self) -> Result<Option<Vec<u8>>, Status> {
        abi::header(MapType::HttpCallResponseHeaders, ":status")
    }

    fn set_tick_period_ms(&self, period: u32) -> Result<(), Status> {
        abi::set_tick_period_ms(period)
    }

    fn plugin_configuration(&self, size: usize) -> Result<Vec<u8>, Status> {
        abi::plugin_configuration(size)
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<u32, Status> {
        abi::define_metric(kind, name)
    }

    fn record_metric(&self, id: u32, value: u64) -> Result<(), Status> {
        abi::record_metric(id, value)
    }

    fn increment_metric(&self, id: u32, delta: u64) -> Result<(), Status> {
        abi::increment_metric(id, delta)
    }

    fn log(&self, level: LogLevel, message: &str) -> Result<(), Status> {
        abi::log(level, message)
    }

    fn log_level(&self) -> Result<LogLevel, Status> {
        abi::log_level()
    }
}
