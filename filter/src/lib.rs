//! eisodos: a load-balancing proxy-wasm filter for Envoy.
//!
//! This crate is the glue: each callback reads its inputs from the host, calls one function of
//! `eisodos-core`, and applies the result. Host calls go through `proxy_wasm::hostcalls` with
//! every error handled, because the SDK's trait helpers `unwrap` them and a panic kills the VM.

mod host;
mod http;
mod logger;
mod metrics;
mod probe;
mod request;
mod root;
mod shared_data;

/// The module's entry point (`_initialize`), which Envoy calls once per VM.
mod entry {
    #![allow(missing_docs)]
    proxy_wasm::main! {{
        crate::logger::install();
        proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
            Box::new(crate::root::EisodosRoot::default())
        });
    }}
}
