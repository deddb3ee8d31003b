//! A real HTTP/1.1 upstream (hyper on a shared background tokio runtime) that tells who
//! answered and counts what it saw.
//!
//! Every response carries the configured status (default 200), the body `"<name>\n"`, and
//! the headers `x-upstream: <name>` and `x-seen-cluster-header: <x-eisodos-cluster of the
//! request, or empty>`. Two request-driven behaviours let a test shape one request: a
//! header `x-delay-ms: N` delays that answer by N ms (on top of the configured delay), and a
//! path starting with `/reset` gets its connection closed without an answer (an upstream
//! reset, as Envoy sees it). A path starting with `/hold` is held until the test calls
//! [`Upstream::release_held`]: a request that is certainly in flight while the test looks,
//! however slow the machine, instead of a delay and the hope that it is long enough.
//! [`UpstreamBuilder::only_host`] makes it a strict server: any other `Host` gets a 400.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};

use crate::server::{ServeError, Server};

/// The request header the filter sets and the route reads.
pub const CLUSTER_HEADER: &str = "x-eisodos-cluster";

struct Shared {
    name: String,
    status: AtomicU16,
    delay_ms: AtomicU64,
    hits: AtomicU64,
    /// Requests being answered now, health probes left out.
    in_flight: AtomicU64,
    /// The most `in_flight` has been at once, since the start or the last reset.
    peak_in_flight: AtomicU64,
    hits_by_path: Mutex<HashMap<String, u64>>,
    errors: Mutex<Vec<String>>,
    /// Requests waiting on the gate now.
    held: AtomicU64,
    /// `true` once the test released the held requests.
    gate: tokio::sync::watch::Sender<bool>,
    /// The only `Host` answered; any other gets a 400 (see [`UpstreamBuilder::only_host`]).
    only_host: Option<String>,
    /// Requests refused for their `Host`, with the `Host` they had.
    wrong_hosts: Mutex<Vec<String>>,
}

impl Shared {
    fn record_error(&self, error: String) {
        self.errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(error);
    }
}

/// Configures an [`Upstream`] before it starts; see [`Upstream::builder`].
#[derive(Debug, Clone)]
pub struct UpstreamBuilder {
    name: String,
    port: Option<u16>,
    delay: Duration,
    status: u16,
    only_host: Option<String>,
}

impl UpstreamBuilder {
    /// Listen on this port of 127.0.0.1 (default: a fresh free port).
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Wait this long before answering each request (default: no delay).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Answer with this status (default 200).
    pub fn status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// Serve only requests whose `Host` (HTTP/1.1's `:authority`) is `host`, compared
    /// ASCII-case-insensitively, as strict servers do: any other, probes included, gets a 400
    /// and is recorded in [`Upstream::wrong_hosts`].
    pub fn only_host(mut self, host: &str) -> Self {
        self.only_host = Some(host.to_owned());
        self
    }

    /// Starts listening; returns once the port accepts connections.
    ///
    /// # Panics
    /// When the port cannot be bound (see [`UpstreamBuilder::try_start`]).
    pub fn start(self) -> Upstream {
        let name = self.name.clone();
        self.try_start()
            .unwrap_or_else(|e| panic!("upstream {name}: {e}"))
    }

    /// Starts listening, or says why not (typically: the port is taken).
    pub fn try_start(self) -> Result<Upstream, String> {
        let shared = Arc::new(Shared {
            name: self.name,
            status: AtomicU16::new(self.status),
            delay_ms: AtomicU64::new(duration_ms(self.delay)),
            hits: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            peak_in_flight: AtomicU64::new(0),
            hits_by_path: Mutex::new(HashMap::new()),
            errors: Mutex::new(Vec::new()),
            held: AtomicU64::new(0),
            gate: tokio::sync::watch::Sender::new(false),
            only_host: self.only_host,
            wrong_hosts: Mutex::new(Vec::new()),
        });
        let service = {
            let shared = Arc::clone(&shared);
            move |req| handle(Arc::clone(&shared), req)
        };
        let on_error = {
            let shared = Arc::clone(&shared);
            move |error| match error {
                ServeError::Accept(e) => shared.record_error(format!("accept: {e}")),
                ServeError::Connection(e) => {
                    // Resets the test asked for are not errors.
                    let requested = std::error::Error::source(&e)
                        .is_some_and(|source| source.is::<ResetRequested>());
                    if !requested {
                        shared.record_error(format!("connection: {e}"));
                    }
                }
            }
        };
        let server = Server::start(self.port, service, on_error)?;
        Ok(Upstream { shared, server })
    }
}

/// A running upstream on 127.0.0.1. Dropping it closes the listener and every open
/// connection, so the port refuses connections afterwards.
pub struct Upstream {
    shared: Arc<Shared>,
    server: Server,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name())
            .field("port", &self.port())
            .field("hits", &self.hits())
            .finish()
    }
}

impl Upstream {
    /// Starts configuring an upstream called `name` (also the Envoy cluster name).
    pub fn builder(name: &str) -> UpstreamBuilder {
        UpstreamBuilder {
            name: name.to_owned(),
            port: None,
            delay: Duration::ZERO,
            status: 200,
            only_host: None,
        }
    }

    /// Starts one default upstream per name.
    pub fn start_all(names: &[&str]) -> Vec<Upstream> {
        names
            .iter()
            .map(|name| Upstream::builder(name).start())
            .collect()
    }

    /// The name, as sent in `x-upstream` and the body.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// Requests received so far, health probes left out (counted on arrival, before any
    /// delay).
    pub fn hits(&self) -> u64 {
        self.shared.hits.load(Ordering::SeqCst)
    }

    /// Requests being answered now (arrived, not yet answered or dropped), health probes
    /// left out.
    pub fn in_flight(&self) -> u64 {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// The most requests this upstream has been answering at once (health probes left out),
    /// since it started or the last [`Upstream::reset_peak_in_flight`]: its own record of
    /// concurrency, not a guess from timing.
    pub fn peak_in_flight(&self) -> u64 {
        self.shared.peak_in_flight.load(Ordering::SeqCst)
    }

    /// Starts [`Upstream::peak_in_flight`] again from the requests in flight now.
    pub fn reset_peak_in_flight(&self) {
        let now = self.shared.in_flight.load(Ordering::SeqCst);
        self.shared.peak_in_flight.store(now, Ordering::SeqCst);
    }

    /// Health probes received so far (requests for [`PROBE_PATH`]); not counted in
    /// [`Upstream::hits`].
    pub fn probes(&self) -> u64 {
        self.hits_for(PROBE_PATH)
    }

    /// Requests received so far whose path (without query) is `path`.
    pub fn hits_for(&self, path: &str) -> u64 {
        let by_path = self
            .shared
            .hits_by_path
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        by_path.get(path).copied().unwrap_or(0)
    }

    /// Answers later requests with `status`.
    pub fn set_status(&self, status: u16) {
        self.shared.status.store(status, Ordering::SeqCst);
    }

    /// Delays later requests by `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.shared
            .delay_ms
            .store(duration_ms(delay), Ordering::SeqCst);
    }

    /// Requests under [`HOLD_PATH`] waiting to be released now.
    pub fn held(&self) -> u64 {
        self.shared.held.load(Ordering::SeqCst)
    }

    /// Answers every held request, and every later one under [`HOLD_PATH`] at once.
    pub fn release_held(&self) {
        self.shared.gate.send_replace(true);
    }

    /// Server-side errors seen so far (accept failures, broken connections, bad statuses).
    /// A healthy test expects this to be empty.
    pub fn errors(&self) -> Vec<String> {
        self.shared
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The `Host` of every request refused by [`UpstreamBuilder::only_host`], in order.
    pub fn wrong_hosts(&self) -> Vec<String> {
        self.shared
            .wrong_hosts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Asserts that no upstream refused a request for its `Host` (see
/// [`UpstreamBuilder::only_host`]) and that none saw a server-side error.
#[track_caller]
pub fn assert_no_wrong_hosts(upstreams: &[Upstream]) {
    for upstream in upstreams {
        assert_eq!(
            upstream.wrong_hosts(),
            Vec::<String>::new(),
            "{} refused these Hosts",
            upstream.name()
        );
        assert_eq!(
            upstream.errors(),
            Vec::<String>::new(),
            "{}",
            upstream.name()
        );
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One request in [`Shared::in_flight`] until dropped: when the answer is sent, or when
/// hyper drops the request's future because the connection went away.
struct InFlight(Arc<Shared>);

impl InFlight {
    fn enter(shared: &Arc<Shared>) -> Self {
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.peak_in_flight.fetch_max(now, Ordering::SeqCst);
        Self(Arc::clone(shared))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Returned by the service to make hyper drop the connection without answering.
#[derive(Debug)]
struct ResetRequested;

impl std::fmt::Display for ResetRequested {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("reset requested by the test")
    }
}

impl std::error::Error for ResetRequested {}

/// The path eisodos' health probes use in the shipped configs and the tests.
pub const PROBE_PATH: &str = "/healthz";

/// Path prefix that makes the upstream reset the connection.
pub const RESET_PATH: &str = "/reset";

/// Path prefix whose first request of each path is answered 503, the next ones as usual: a
/// backend failing once, for retries.
pub const FAIL_FIRST_PATH: &str = "/fail-first";

/// Path prefix whose requests wait for [`Upstream::release_held`] before the answer.
pub const HOLD_PATH: &str = "/hold";

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ResetRequested> {
    let _in_flight = (req.uri().path() != PROBE_PATH).then(|| {
        shared.hits.fetch_add(1, Ordering::SeqCst);
        InFlight::enter(&shared)
    });
    let hits_of_path = {
        let mut hits = shared
            .hits_by_path
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let hits = hits.entry(req.uri().path().to_owned()).or_insert(0);
        *hits += 1;
        *hits
    };
    let seen = req
        .headers()
        .get(CLUSTER_HEADER)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    if let Some(expected) = &shared.only_host {
        let host = req
            .headers()
            .get(hyper::header::HOST)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        if !host.eq_ignore_ascii_case(expected) {
            shared
                .wrong_hosts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(host);
            let mut response = Response::new(Full::new(Bytes::from("unknown host\n")));
            *response.status_mut() = hyper::StatusCode::BAD_REQUEST;
            return Ok(response);
        }
    }
    if req.uri().path().starts_with(RESET_PATH) {
        return Err(ResetRequested);
    }
    let extra_delay = req
        .headers()
        .get("x-delay-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    if req.uri().path().starts_with(HOLD_PATH) {
        let mut gate = shared.gate.subscribe();
        shared.held.fetch_add(1, Ordering::SeqCst);
        // The sender lives in `shared`, which this task holds: the wait ends only on release.
        let _ = gate.wait_for(|open| *open).await;
        shared.held.fetch_sub(1, Ordering::SeqCst);
    }
    let delay = shared.delay_ms.load(Ordering::SeqCst) + extra_delay;
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let status = if req.uri().path().starts_with(FAIL_FIRST_PATH) && hits_of_path == 1 {
        503
    } else {
        shared.status.load(Ordering::SeqCst)
    };
    let mut response = Response::new(Full::new(Bytes::from(format!("{}\n", shared.name))));
    match hyper::StatusCode::from_u16(status) {
        Ok(code) => *response.status_mut() = code,
        Err(_) => {
            shared.record_error(format!("invalid status {status}, answered 500"));
            *response.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
        }
    }
    let headers = response.headers_mut();
    if let Ok(v) = hyper::header::HeaderValue::from_str(&shared.name) {
        headers.insert("x-upstream", v);
    }
    if let Ok(v) = hyper::header::HeaderValue::from_str(&seen) {
        headers.insert("x-seen-cluster-header", v);
    }
    Ok(response)
}
