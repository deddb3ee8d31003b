//! eisodos: a load-balancing proxy-wasm filter for Envoy.
//!
//! This crate is the glue: each callback Envoy makes (`exports`) reads its inputs from the host
//! (`abi`, the proxy-wasm ABI's host calls with every status handled), calls one function of
//! `eisodos-core`, and applies the result. It speaks the ABI directly rather than through the
//! proxy-wasm Rust SDK: see `abi` for why.

mod abi;
mod exports;
mod host;
mod http;
mod logger;
mod metrics;
mod probe;
mod request;
mod root;
mod shared_data;
