//! eisodos' host-independent core.
//!
//! Everything here is plain Rust with no proxy-wasm dependency, so it is unit-tested natively
//! and on `wasm32-wasip1`. The filter crate implements [`store::SharedStore`] with Envoy's
//! shared data and [`request_key::RequestView`] with request headers and properties, and calls
//! [`balancer::Balancer`] once per request.

pub mod balancer;
pub mod cas;
pub mod checksum;
pub mod config;
pub mod health;
pub mod inflight;
pub mod ip;
mod json_out;
pub mod local_reply;
pub mod memory_store;
pub mod metrics;
pub mod policy;
pub mod request_key;
pub mod store;
pub mod ticket;
pub mod token_bucket;
