//! The cheapest filter that does eisodos' job: set the cluster header, to a fixed cluster.
//! What any Wasm filter pays (VM entry, context creation, one host call) and nothing more:
//! the floor the benchmark measures eisodos against.
//!
//! With the plugin configuration `{"shared_data_ticket": true}` it also takes a ticket from
//! shared data per request (one get and one CAS set, as eisodos' round-robin does), so the
//! benchmark can tell what those two host calls cost on their own.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, MapType};

/// The module's entry point.
mod entry {
    #![allow(missing_docs)]
    proxy_wasm::main! {{
        proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
            Box::new(super::Root { ticket: false })
        });
    }}
}

const TICKET_KEY: &str = "bench.ticket";

struct Root {
    ticket: bool,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, size: usize) -> bool {
        let config = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, size)
            .ok()
            .flatten()
            .unwrap_or_default();
        self.ticket = String::from_utf8_lossy(&config).contains("\"shared_data_ticket\": true")
            || String::from_utf8_lossy(&config).contains("\"shared_data_ticket\":true");
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(SetHeader {
            ticket: self.ticket,
        }))
    }
}

struct SetHeader {
    ticket: bool,
}

impl Context for SetHeader {}

impl HttpContext for SetHeader {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        if self.ticket {
            take_ticket();
        }
        let _ = hostcalls::set_map_value(
            MapType::HttpRequestHeaders,
            "x-eisodos-cluster",
            Some("backend_a"),
        );
        Action::Continue
    }
}

/// One read and one compare-and-swap write of a counter (no retry: the cost, not the order).
fn take_ticket() {
    let (value, cas) = hostcalls::get_shared_data(TICKET_KEY).unwrap_or((None, None));
    let current = value
        .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_slice()).ok())
        .map_or(0, u64::from_le_bytes);
    let _ = hostcalls::set_shared_data(TICKET_KEY, Some(&(current + 1).to_le_bytes()), cas);
}
