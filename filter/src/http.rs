//! The HTTP context: one per request. Chooses the backend and writes its cluster into the
//! header the route's `cluster_header` reads (Envoy then matches the route again), or answers
//! locally; gives back the in-flight count when the stream ends.

use std::rc::Rc;

use eisodos_core::balancer::{Balancer, Decision};
use log::{debug, error};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, MapType};

use crate::request::HostRequest;
use crate::shared_data::HostStore;

/// Per-request state.
pub struct EisodosHttp {
    balancer: Option<Rc<Balancer>>,
    /// The backend whose in-flight count this request holds.
    counted: Option<usize>,
}

impl EisodosHttp {
    /// A context that chooses with `balancer`, or does nothing without one.
    pub fn new(balancer: Option<Rc<Balancer>>) -> Self {
        Self {
            balancer,
            counted: None,
        }
    }
}

impl Context for EisodosHttp {}

impl HttpContext for EisodosHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(balancer) = &self.balancer else {
            return Action::Continue;
        };
        match balancer.choose(&HostStore, &HostRequest) {
            Decision::Route(choice) => {
                if choice.counted {
                    self.counted = Some(choice.index);
                }
                // Replaces any value, including one a client sent; the shipped configs also
                // remove the client's value before the first route match.
                match hostcalls::set_map_value(
                    MapType::HttpRequestHeaders,
                    balancer.cluster_header(),
                    Some(choice.cluster),
                ) {
                    Ok(()) => debug!("{:?} -> {}", choice.reason, choice.cluster),
                    Err(status) => error!(
                        "cannot set {} to {}: {status:?}",
                        balancer.cluster_header(),
                        choice.cluster
                    ),
                }
                Action::Continue
            }
            Decision::Reject { status, body } => {
                debug!("rejected with {status}: {}", body.trim_end());
                let headers = vec![("content-type", "text/plain; charset=utf-8")];
                match hostcalls::send_http_response(status, headers, Some(body.as_bytes())) {
                    Ok(()) => Action::Pause,
                    Err(err) => {
                        error!("cannot send the {status} reply: {err:?}");
                        Action::Continue
                    }
                }
            }
        }
    }

    /// Runs once when the stream ends, however it ends (done, reset, aborted, timed out,
    /// answered locally): the one place to give the in-flight count back.
    fn on_log(&mut self) {
        if let (Some(balancer), Some(index)) = (&self.balancer, self.counted.take()) {
            balancer.release(&HostStore, index);
        }
    }
}
