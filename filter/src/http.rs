//! The stream context: one per request. Chooses the backend and writes its cluster into the
//! header the route's `cluster_header` reads (Envoy then matches the route again), or answers
//! locally (status page, rate limited, missing key, nothing healthy); either way it leaves why
//! in filter state for Envoy's access log and tracer. With `session_affinity`, adds the
//! `set-cookie` the choice asked for to the response. When the stream ends, gives back the
//! in-flight count and tells passive health how the request went.

use std::cell::Cell;
use std::rc::Rc;

use eisodos_core::balancer::{Balancer, Decision, LocalReply, Report};
use eisodos_core::health::request_outcome;
use eisodos_core::request_key::{self, RequestView};
use log::{debug, error, warn};

use crate::host::Host;
use crate::request::HostRequest;
use crate::{abi, health_log};

/// The filter state eisodos sets on every request it routes or refuses: Envoy keeps it as
/// `wasm.eisodos.reason`, read by `%FILTER_STATE(wasm.eisodos.reason:PLAIN)%`. The backend
/// needs no filter state of its own: it is the cluster header eisodos sets (and Envoy's
/// `%UPSTREAM_CLUSTER%`), so the decision costs one host call more per request, not two.
pub const REASON_KEY: &str = "eisodos.reason";

/// The header on every local reply that names why eisodos answered (a [`LocalReply`] name).
pub const REASON_HEADER: &str = "x-eisodos-reason";

/// Envoy's response code details for the status page.
const STATUS_PAGE_DETAILS: &str = "eisodos_status_page";

/// Per-request state.
#[derive(Clone)]
pub struct EisodosHttp {
    balancer: Option<Rc<Balancer>>,
    /// The backend this request was sent to.
    routed: Option<usize>,
    /// Whether it holds an in-flight count there.
    counted: bool,
    /// When the request reached the filter (µs), if the balancer weighs latency.
    started_us: Option<u64>,
    /// Whether the response is to set the affinity cookie for the `routed` backend.
    set_cookie: bool,
}

impl EisodosHttp {
    /// A context that chooses with `balancer`, or does nothing without one.
    pub fn new(balancer: Option<Rc<Balancer>>) -> Self {
        Self {
            balancer,
            routed: None,
            counted: false,
            started_us: None,
            set_cookie: false,
        }
    }

    /// Whether the response headers are to carry a `set-cookie` (see
    /// [`Self::on_response_headers`]).
    pub fn cookie_pending(&self) -> bool {
        self.set_cookie
    }

    /// The request headers are in: route, or answer. Returns the ABI action.
    pub fn on_request_headers(&mut self, host: &impl Host) -> u32 {
        let Some(balancer) = &self.balancer else {
            return abi::CONTINUE;
        };
        // First, before the status page and any shared data: a deny rule matching the status
        // path denies it too.
        if let Some(denied) = balancer.deny(&HostRequest(host)) {
            return answer(host, balancer, &denied);
        }
        if is_status_request(host, balancer) {
            let body = balancer.status_json(host, host.now_ms());
            let headers = [
                ("content-type", "application/json"),
                ("cache-control", "no-store"),
            ];
            return reply(host, 200, STATUS_PAGE_DETAILS, &headers, &body);
        }
        if balancer.wants_latency() {
            self.started_us = host.now_us();
        }
        let decision = balancer.choose(host, &HostRequest(host));
        match &decision {
            Decision::Route(choice) => {
                self.routed = Some(choice.index);
                self.counted = choice.counted;
                self.set_cookie = choice.set_cookie.is_some();
                // Replaces any value, including one a client sent; the shipped configs also
                // remove the client's value before the first route match.
                let cluster = balancer.route_cluster(choice.index);
                match host.set_request_header(balancer.cluster_header(), cluster) {
                    Ok(()) => debug!("{:?} -> {}", choice.reason, cluster),
                    Err(status) => error!(
                        "cannot set {} to {}: {}",
                        balancer.cluster_header(),
                        cluster,
                        status.name()
                    ),
                }
                apply_router_headers(host, balancer);
                if balancer.config().filter_state {
                    set_reason(host, choice.why.name());
                }
                abi::CONTINUE
            }
            Decision::Reject { .. } => answer(host, balancer, &decision),
        }
    }

    /// The response headers are in (from the backend, or Envoy's own answer such as a 503 for a
    /// refused connection or a 504; eisodos' own local replies set no cookie): adds the
    /// affinity cookie when the choice asked for one, once. Decided from this stream's state,
    /// so a response with nothing to set costs no host call.
    pub fn on_response_headers(&mut self, host: &impl Host) -> u32 {
        if !std::mem::take(&mut self.set_cookie) {
            return abi::CONTINUE;
        }
        let (Some(balancer), Some(index)) = (&self.balancer, self.routed) else {
            return abi::CONTINUE;
        };
        if let Some(cookie) = balancer.set_cookie(index) {
            if let Err(status) = host.add_response_header("set-cookie", cookie) {
                warn!("cannot add the affinity cookie: {}", status.name());
            }
        }
        abi::CONTINUE
    }

    /// Runs once when the stream ends, however it ends (done, reset, aborted, timed out,
    /// answered locally): the one place to give the in-flight count back.
    pub fn on_log(&self, host: &impl Host) {
        let (Some(balancer), Some(index)) = (&self.balancer, self.routed) else {
            return;
        };
        if self.counted {
            balancer.release(host, index);
        }
        // The clock is read only when latency is wanted: a host call costs even when unused.
        if let Some(started) = self.started_us {
            if let Some(ended) = host.now_us() {
                balancer.observe_latency(index, ended.saturating_sub(started), ended);
            }
        }
        if balancer.wants_reports() {
            // No response sent (the client went away first) says nothing of the backend; a
            // response cut short after its headers is a failure whatever its status (the
            // details are read only for a status below 500).
            let code = host.int_property(&["response", "code"]).unwrap_or(0);
            let failed = request_outcome::backend_failed(code, || {
                host.property(&["response", "code_details"]).ok().flatten()
            });
            if let Some(failed) = failed {
                // The time the report read, if it read one: an ejection is logged with it.
                let now = Cell::new(0);
                let clock = || {
                    now.set(host.now_ms());
                    now.get()
                };
                let report = balancer.report_with_clock(host, index, failed, &clock);
                if report != Report::default() {
                    let change = report.change.map(|change| (index, change));
                    health_log::log(balancer, change, report.mode_change, now.get());
                }
            }
        }
    }
}

/// Sets the router headers of `retry` and `timeout_ms` and removes what a client sent of the
/// kind (nothing without them). A failure leaves Envoy's route defaults, so it is logged.
fn apply_router_headers(host: &impl Host, balancer: &Balancer) {
    for edit in balancer.router_headers() {
        let done = match &edit.value {
            Some(value) => host.set_request_header(edit.name, value),
            None => host.remove_request_header(edit.name),
        };
        if let Err(status) = done {
            warn!("cannot set or remove {}: {}", edit.name, status.name());
        }
    }
}

/// Answers a [`Decision::Reject`] locally (a route is left alone): its status and body,
/// `content-type: text/plain`, the reason in [`REASON_HEADER`] and filter state, and
/// `retry-after` when it has one.
fn answer(host: &impl Host, balancer: &Balancer, decision: &Decision<'_>) -> u32 {
    let Decision::Reject {
        reply: why,
        status,
        body,
        retry_after,
        rate,
    } = decision
    else {
        return abi::CONTINUE;
    };
    debug!("answered {status} locally: {}", body.trim_end());
    if balancer.config().filter_state {
        set_reason(host, why.name());
    }
    let retry_after = retry_after.map(|seconds| seconds.to_string());
    let mut headers = vec![("content-type", "text/plain"), (REASON_HEADER, why.name())];
    if let Some(seconds) = &retry_after {
        headers.push(("retry-after", seconds));
    }
    let rate = rate.map(|rate| (rate.limit.to_string(), rate.remaining.to_string()));
    if let Some((limit, remaining)) = &rate {
        headers.push(("x-ratelimit-limit", limit));
        headers.push(("x-ratelimit-remaining", remaining));
    }
    reply(host, *status, LocalReply::details(*why), &headers, body)
}

/// Whether this request asks for the status page from an allowed address.
fn is_status_request(host: &impl Host, balancer: &Balancer) -> bool {
    let Some(status) = &balancer.config().status else {
        return false;
    };
    let request = HostRequest(host);
    let Some(path) = request.path() else {
        return false;
    };
    let without_query = path.split(|&c| c == b'?').next().unwrap_or_default();
    if without_query != status.path.as_bytes() {
        return false;
    }
    let client = request
        .source_address()
        .and_then(|address| request_key::client_ip(&address));
    let allowed = client.is_some_and(|ip| status.allowed.iter().any(|cidr| cidr.contains(ip)));
    if !allowed {
        debug!("status page refused to {client:?}");
    }
    allowed
}

/// Leaves the decision's reason where Envoy's access log and tracer read it. A failure costs
/// the request nothing but that, so it is only worth a debug line.
fn set_reason(host: &impl Host, reason: &str) {
    if let Err(status) = host.set_filter_state(REASON_KEY, reason) {
        debug!("cannot set filter state {REASON_KEY}: {}", status.name());
    }
}

fn reply(
    host: &impl Host,
    status: u32,
    details: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> u32 {
    match host.send_response(status, details, headers, body.as_bytes()) {
        Ok(()) => abi::PAUSE,
        Err(err) => {
            warn!("cannot send the {status} reply: {}", err.name());
            abi::CONTINUE
        }
    }
}
