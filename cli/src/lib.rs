//! `eisodos check`: the filter's own configuration validation ([`Balancer::configure`], what
//! `on_configure` runs) on plugin configurations found in files ([`find`]), before they are
//! pushed to a proxy.
//!
//! [`Balancer::configure`]: eisodos_core::balancer::Balancer::configure

pub mod check;
pub mod find;
