//! [`RequestView`] over the current request: headers and Envoy's `source.address` property,
//! read only when a configured hash source asks for them.

use eisodos_core::request_key::RequestView;

use crate::host::Host;

/// The request whose headers are being processed, on `host`.
pub struct HostRequest<'a, H>(pub &'a H);

impl<H: Host> RequestView for HostRequest<'_, H> {
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        // Bytes, not a String: a header value need not be UTF-8.
        self.0.request_header(name).ok().flatten()
    }

    fn path(&self) -> Option<Vec<u8>> {
        self.header(":path")
    }

    fn source_address(&self) -> Option<String> {
        let bytes = self.0.property(&["source", "address"]).ok()??;
        String::from_utf8(bytes).ok()
    }

    fn now_ms(&self) -> u64 {
        self.0.now_ms()
    }

    fn headers_size(&self) -> Option<usize> {
        let pairs = self.0.request_header_pairs().ok()?;
        Some(
            pairs
                .iter()
                .map(|(name, value)| name.len() + value.len())
                .sum(),
        )
    }
}
