//! [`RequestView`] over the current request: headers and Envoy's `source.address` property,
//! read only when a configured hash source asks for them.

use eisodos_core::request_key::RequestView;

use crate::abi::{self, MapType};

/// The request whose headers are being processed.
pub struct HostRequest;

impl RequestView for HostRequest {
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        // Bytes, not a String: a header value need not be UTF-8.
        abi::header(MapType::RequestHeaders, name).ok().flatten()
    }

    fn path(&self) -> Option<Vec<u8>> {
        self.header(":path")
    }

    fn source_address(&self) -> Option<String> {
        let bytes = abi::property(&["source", "address"]).ok()??;
        String::from_utf8(bytes).ok()
    }
}
