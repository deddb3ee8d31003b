//! eisodos: a load-balancing proxy-wasm filter for Envoy.
//!
//! This crate is the glue: each callback Envoy makes (`exports`) reads its inputs from the host
//! (`host::Host`; in the module `abi_host::AbiHost`, the proxy-wasm ABI's host calls of `abi`
//! with every status handled), calls one function of `eisodos-core`, and applies the result.
//! It speaks the ABI directly rather than through the proxy-wasm Rust SDK: see `abi` for why.
//!
//! The ABI's imports exist only in Envoy, so the real host and the exports are built only for
//! `wasm32`; natively the glue is built for its unit tests, which run it against
//! `fake_host::FakeHost`.
// Natively, outside the tests, nothing calls the glue: the exports that do are wasm32-only.
#![cfg_attr(not(any(target_arch = "wasm32", test)), allow(dead_code))]

mod abi;
#[cfg(target_arch = "wasm32")]
mod abi_host;
#[cfg(test)]
mod affinity_tests;
#[cfg(all(target_arch = "wasm32", feature = "crash-trigger"))]
mod crash_trigger;
#[cfg(test)]
mod deny_tests;
#[cfg(target_arch = "wasm32")]
mod exports;
#[cfg(test)]
mod fake_host;
#[cfg(test)]
mod garbage_tests;
mod health_log;
mod host;
mod http;
mod logger;
#[cfg(test)]
mod max_requests_tests;
mod metrics;
#[cfg(test)]
mod metrics_tests;
mod probe;
#[cfg(test)]
mod rate_limit_tests;
#[cfg(test)]
mod reload_tests;
mod request;
#[cfg(test)]
mod retry_tests;
mod root;
#[cfg(target_arch = "wasm32")]
mod shared_data;
#[cfg(test)]
mod split_tests;
#[cfg(test)]
mod wiring_tests;
