//! Integration-test harness for eisodos: real upstreams, a real Envoy running the shipped
//! `envoy/envoy.yaml` with the built filter, and a plain HTTP client.
//!
//! ```no_run
//! use eisodos_tests::{client, envoy::Envoy, upstream::Upstream};
//!
//! let a = Upstream::builder("backend_a").start();
//! let envoy = Envoy::builder().upstreams([&a]).start();
//! let response = client::get(&envoy.url("/"));
//! assert_eq!(response.header("x-upstream"), Some("backend_a"));
//! ```

#![warn(missing_docs)]

pub mod client;
pub mod collector;
pub mod crash_wasm;
pub mod ecds;
pub mod envoy;
pub mod envoy_gateway;
pub mod exclusive;
pub mod faulty;
pub mod file_server;
pub mod istio;
pub mod load;
pub mod oci;
pub mod packager;
pub mod paths;
pub mod ports;
pub mod prometheus;
pub mod pty;
pub mod raw;
pub mod remote_code;
pub mod schema;
mod server;
pub mod shared_data_tool;
pub mod timed_load;
pub mod upstream;
pub mod wait;
pub mod wasm_build;
