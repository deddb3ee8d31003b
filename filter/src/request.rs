//! [`RequestView`] over the current request: headers and Envoy's `source.address` property,
//! read only when a configured hash source asks for them.

use eisodos_core::request_key::RequestView;
use proxy_wasm::hostcalls;
use proxy_wasm::types::MapType;

/// The request whose headers are being processed.
pub struct HostRequest;

impl RequestView for HostRequest {
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        // The bytes variant: the SDK's string variant panics on a non-UTF-8 value.
        hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name)
            .ok()
            .flatten()
    }

    fn path(&self) -> Option<Vec<u8>> {
        self.header(":path")
    }

    fn source_address(&self) -> Option<String> {
        let bytes = hostcalls::get_property(vec!["source", "address"]).ok()??;
        String::from_utf8(bytes).ok()
    }
}
