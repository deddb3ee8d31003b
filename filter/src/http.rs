//! The HTTP context: one per request. Chooses the backend and writes its cluster into the
//! header the route's `cluster_header` reads; Envoy then matches the route again.

use std::rc::Rc;

use eisodos_core::balancer::Balancer;
use log::{debug, error};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, MapType};

use crate::shared_data::HostStore;

/// Per-request state.
pub struct EisodosHttp {
    balancer: Option<Rc<Balancer>>,
}

impl EisodosHttp {
    /// A context that chooses with `balancer`, or does nothing without one.
    pub fn new(balancer: Option<Rc<Balancer>>) -> Self {
        Self { balancer }
    }
}

impl Context for EisodosHttp {}

impl HttpContext for EisodosHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(balancer) = &self.balancer else {
            return Action::Continue;
        };
        let choice = balancer.choose(&HostStore);
        // Replaces any value, including one a client sent; the shipped configs also remove the
        // client's value before the first route match.
        match hostcalls::set_map_value(
            MapType::HttpRequestHeaders,
            balancer.cluster_header(),
            Some(choice.cluster),
        ) {
            Ok(()) => debug!(
                "ticket {} ({:?}) -> {}",
                choice.ticket.value, choice.ticket.source, choice.cluster
            ),
            Err(status) => error!(
                "cannot set {} to {}: {status:?}",
                balancer.cluster_header(),
                choice.cluster
            ),
        }
        Action::Continue
    }
}
