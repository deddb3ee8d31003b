//! A fake [`Host`] for the glue's unit tests: it serves the request, properties, clock and
//! configuration a test sets, records what the glue does (headers set, local replies, HTTP
//! calls, gauges, log lines, every host call by name), and keeps shared data in core's
//! [`MemoryStore`], which follows Envoy's compare-and-swap rules.
//!
//! Like the real host it is zero-sized, its state living outside the VM (here in a
//! thread-local: each test runs on its own thread), so the same `HostLogger` as in the module
//! sends the glue's `log` lines to [`Host::log`].

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Once;

use eisodos_core::memory_store::MemoryStore;
use eisodos_core::store::{Cas, GetError, SetError, SharedStore};

use crate::abi::{HeaderPairs, LogLevel, MetricKind, Status};
use crate::host::Host;
use crate::logger::HostLogger;

/// A local reply the glue sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status.
    pub status: u32,
    /// Envoy's response code details.
    pub details: String,
    /// Headers, in order.
    pub headers: Vec<(String, String)>,
    /// Body, as text.
    pub body: String,
}

impl Reply {
    /// The value of header `name`, if the reply has it.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTP call the glue made (a probe).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCall {
    /// The cluster it was sent through.
    pub cluster: String,
    /// Headers, in order.
    pub headers: Vec<(String, String)>,
    /// Timeout.
    pub timeout_ms: u32,
    /// The token the answer comes back with.
    pub token: u32,
}

impl HttpCall {
    /// The value of header `name`, if the call has it.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct State {
    configuration: Vec<u8>,
    request_headers: Vec<(String, Vec<u8>)>,
    /// The names of the request headers read, in order.
    headers_read: Vec<String>,
    /// Keyed by the path joined with `.`.
    properties: HashMap<String, Vec<u8>>,
    now_ns: u64,
    refuse_http_calls: bool,
    /// The `:status` of the HTTP call being answered.
    call_status: Option<String>,
    headers_set: Vec<(String, String)>,
    /// Response headers the glue added, in order.
    response_headers_added: Vec<(String, String)>,
    /// Request headers the glue removed, in order.
    headers_removed: Vec<String>,
    /// Filter state of the current request, by name (without Envoy's `wasm.` prefix).
    filter_state: HashMap<String, String>,
    replies: Vec<Reply>,
    http_calls: Vec<HttpCall>,
    tick_period_ms: Option<u32>,
    /// Metrics by name, the index being the id: kind and value (`None` until set).
    metrics: Vec<(String, MetricKind, Option<u64>)>,
    logs: Vec<(LogLevel, String)>,
    calls: Vec<&'static str>,
    store: MemoryStore,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

/// Start of the fake clock: any time that is not 0 (0 is what the glue uses when the host
/// cannot tell the time).
pub const START_MS: u64 = 1_700_000_000_000;

/// The fake host of the current test thread.
#[derive(Debug, Clone, Copy)]
pub struct FakeHost;

impl FakeHost {
    /// A fresh host for this test: no request, clock at [`START_MS`], empty shared data.
    pub fn new() -> Self {
        static LOGGER: HostLogger<FakeHost> = HostLogger(FakeHost);
        static INSTALL: Once = Once::new();
        INSTALL.call_once(|| {
            let _ = log::set_logger(&LOGGER);
            // As `logger::install` does; every fake host reports `info`, so that
            // `follow_host_level` on one test thread does not change it under another.
            log::set_max_level(log::LevelFilter::Info);
        });
        Self::with(|state| {
            *state = State {
                now_ns: START_MS * 1_000_000,
                ..State::default()
            }
        });
        FakeHost
    }

    fn with<R>(f: impl FnOnce(&mut State) -> R) -> R {
        STATE.with(|state| f(&mut state.borrow_mut()))
    }

    fn call(&self, name: &'static str) {
        Self::with(|state| state.calls.push(name));
    }

    /// The plugin configuration `on_configure` reads.
    pub fn set_configuration(&self, json: &str) {
        Self::with(|state| state.configuration = json.as_bytes().to_vec());
    }

    /// A new request with these headers: the response code and what the previous request
    /// set are forgotten.
    pub fn set_request(&self, headers: &[(&str, &str)]) {
        Self::with(|state| {
            state.request_headers = headers
                .iter()
                .map(|(name, value)| ((*name).to_owned(), value.as_bytes().to_vec()))
                .collect();
            state.properties.remove("response.code");
            state.properties.remove("response.code_details");
            state.headers_set.clear();
            state.headers_removed.clear();
            state.filter_state.clear();
        });
    }

    /// A property, as Envoy would give its bytes.
    pub fn set_property(&self, path: &[&str], value: &[u8]) {
        Self::with(|state| {
            state.properties.insert(path.join("."), value.to_vec());
        });
    }

    /// The `response.code` property of the current request (8 little-endian bytes).
    pub fn set_response_code(&self, code: i64) {
        self.set_property(&["response", "code"], &code.to_le_bytes());
    }

    /// The clock moves on.
    pub fn advance_ms(&self, ms: u64) {
        Self::with(|state| state.now_ns += ms * 1_000_000);
    }

    /// The time the fake clock says, in ms.
    pub fn now(&self) -> u64 {
        Self::with(|state| state.now_ns / 1_000_000)
    }

    /// From now on, HTTP calls are refused (as Envoy refuses one to an unknown cluster).
    pub fn refuse_http_calls(&self) {
        Self::with(|state| state.refuse_http_calls = true);
    }

    /// Sends HTTP calls again after [`Self::refuse_http_calls`].
    pub fn accept_http_calls(&self) {
        Self::with(|state| state.refuse_http_calls = false);
    }

    /// The `:status` of the HTTP call answered next (`None`: it failed without a response).
    pub fn set_http_call_status(&self, status: Option<&str>) {
        Self::with(|state| state.call_status = status.map(str::to_owned));
    }

    /// The request headers the glue set, in order.
    pub fn headers_set(&self) -> Vec<(String, String)> {
        Self::with(|state| state.headers_set.clone())
    }

    /// The response headers the glue added, taken (a later call returns only newer ones).
    pub fn take_response_headers(&self) -> Vec<(String, String)> {
        Self::with(|state| std::mem::take(&mut state.response_headers_added))
    }

    /// The request headers the glue removed, in order.
    pub fn headers_removed(&self) -> Vec<String> {
        Self::with(|state| state.headers_removed.clone())
    }

    /// The request's headers now, after what the glue set and removed.
    pub fn request_headers(&self) -> Vec<(String, String)> {
        Self::with(|state| {
            state
                .request_headers
                .iter()
                .map(|(name, value)| (name.clone(), String::from_utf8_lossy(value).into_owned()))
                .collect()
        })
    }

    /// Filter state `name` of the current request, as the glue set it.
    pub fn filter_state(&self, name: &str) -> Option<String> {
        Self::with(|state| state.filter_state.get(name).cloned())
    }

    /// The local replies sent so far.
    pub fn replies(&self) -> Vec<Reply> {
        Self::with(|state| state.replies.clone())
    }

    /// The HTTP calls made so far, taken (a later call returns only newer ones).
    pub fn take_http_calls(&self) -> Vec<HttpCall> {
        Self::with(|state| std::mem::take(&mut state.http_calls))
    }

    /// The tick period last set.
    pub fn tick_period_ms(&self) -> Option<u32> {
        Self::with(|state| state.tick_period_ms)
    }

    /// A metric's value: `None` if never defined, `Some(None)` if never set or incremented.
    pub fn metric(&self, name: &str) -> Option<Option<u64>> {
        Self::with(|state| {
            state
                .metrics
                .iter()
                .find(|(metric, _, _)| metric == name)
                .map(|(_, _, value)| *value)
        })
    }

    /// Every metric defined, with its kind, in the order of definition.
    pub fn metrics(&self) -> Vec<(String, MetricKind, Option<u64>)> {
        Self::with(|state| state.metrics.clone())
    }

    /// The log lines so far, taken.
    pub fn take_logs(&self) -> Vec<(LogLevel, String)> {
        Self::with(|state| std::mem::take(&mut state.logs))
    }

    /// Shared data's key count and the bytes of its keys and values (see
    /// [`MemoryStore::footprint`]).
    pub fn shared_data_footprint(&self) -> (usize, usize) {
        Self::with(|state| state.store.footprint())
    }

    /// The names of the request headers read so far, in order, taken.
    pub fn take_headers_read(&self) -> Vec<String> {
        Self::with(|state| std::mem::take(&mut state.headers_read))
    }

    /// The host calls made so far, by name, taken.
    pub fn take_calls(&self) -> Vec<&'static str> {
        Self::with(|state| std::mem::take(&mut state.calls))
    }
}

impl SharedStore for FakeHost {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, Cas)>, GetError> {
        self.call("get_shared_data");
        Self::with(|state| state.store.get(key))
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<Cas>) -> Result<(), SetError> {
        self.call("set_shared_data");
        Self::with(|state| state.store.set(key, value, cas))
    }
}

impl Host for FakeHost {
    fn request_header(&self, name: &str) -> Result<Option<Vec<u8>>, Status> {
        self.call("request_header");
        Ok(Self::with(|state| {
            state.headers_read.push(name.to_owned());
            state
                .request_headers
                .iter()
                .find(|(header, _)| header == name)
                .map(|(_, value)| value.clone())
        }))
    }

    fn request_header_pairs(&self) -> Result<HeaderPairs, Status> {
        self.call("request_header_pairs");
        Ok(Self::with(|state| {
            state
                .request_headers
                .iter()
                .map(|(name, value)| (name.as_bytes().to_vec(), value.clone()))
                .collect()
        }))
    }

    fn set_request_header(&self, name: &str, value: &str) -> Result<(), Status> {
        self.call("set_request_header");
        Self::with(|state| {
            state.request_headers.retain(|(header, _)| header != name);
            state
                .request_headers
                .push((name.to_owned(), value.as_bytes().to_vec()));
            state.headers_set.push((name.to_owned(), value.to_owned()));
        });
        Ok(())
    }

    fn add_response_header(&self, name: &str, value: &str) -> Result<(), Status> {
        self.call("add_response_header");
        Self::with(|state| {
            state
                .response_headers_added
                .push((name.to_owned(), value.to_owned()));
        });
        Ok(())
    }

    fn remove_request_header(&self, name: &str) -> Result<(), Status> {
        self.call("remove_request_header");
        Self::with(|state| {
            state.request_headers.retain(|(header, _)| header != name);
            state.headers_removed.push(name.to_owned());
        });
        Ok(())
    }

    fn send_response(
        &self,
        status: u32,
        details: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), Status> {
        self.call("send_response");
        let reply = Reply {
            status,
            details: details.to_owned(),
            headers: headers
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
            body: String::from_utf8_lossy(body).into_owned(),
        };
        Self::with(|state| state.replies.push(reply));
        Ok(())
    }

    fn set_filter_state(&self, name: &str, value: &str) -> Result<(), Status> {
        self.call("set_property");
        Self::with(|state| state.filter_state.insert(name.to_owned(), value.to_owned()));
        Ok(())
    }

    fn property(&self, path: &[&str]) -> Result<Option<Vec<u8>>, Status> {
        self.call("property");
        Ok(Self::with(|state| {
            state.properties.get(&path.join(".")).cloned()
        }))
    }

    fn current_time_ns(&self) -> Result<u64, Status> {
        self.call("current_time");
        Ok(Self::with(|state| state.now_ns))
    }

    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        timeout_ms: u32,
    ) -> Result<u32, Status> {
        self.call("http_call");
        Self::with(|state| {
            if state.refuse_http_calls {
                // What Envoy answers for a cluster it does not know.
                return Err(Status(2));
            }
            let token = u32::try_from(state.http_calls.len()).unwrap_or(u32::MAX) + 1_000;
            state.http_calls.push(HttpCall {
                cluster: cluster.to_owned(),
                headers: headers
                    .iter()
                    .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                    .collect(),
                timeout_ms,
                token,
            });
            Ok(token)
        })
    }

    fn http_call_status(&self) -> Result<Option<Vec<u8>>, Status> {
        self.call("http_call_status");
        Ok(Self::with(|state| {
            state.call_status.as_ref().map(|s| s.as_bytes().to_vec())
        }))
    }

    fn set_tick_period_ms(&self, period: u32) -> Result<(), Status> {
        self.call("set_tick_period");
        Self::with(|state| state.tick_period_ms = Some(period));
        Ok(())
    }

    fn plugin_configuration(&self, size: usize) -> Result<Vec<u8>, Status> {
        self.call("plugin_configuration");
        Ok(Self::with(|state| {
            state.configuration.iter().copied().take(size).collect()
        }))
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<u32, Status> {
        self.call("define_metric");
        Self::with(|state| {
            let id = match state
                .metrics
                .iter()
                .position(|(metric, _, _)| metric == name)
            {
                Some(id) => id,
                None => {
                    state.metrics.push((name.to_owned(), kind, None));
                    state.metrics.len() - 1
                }
            };
            Ok(u32::try_from(id).unwrap_or(u32::MAX))
        })
    }

    fn record_metric(&self, id: u32, value: u64) -> Result<(), Status> {
        self.call("record_metric");
        Self::with(|state| match state.metrics.get_mut(id as usize) {
            Some((_, MetricKind::Gauge, gauge)) => {
                *gauge = Some(value);
                Ok(())
            }
            // Envoy adds to a counter instead; eisodos never records one.
            _ => Err(Status(2)),
        })
    }

    fn increment_metric(&self, id: u32, delta: u64) -> Result<(), Status> {
        self.call("increment_metric");
        Self::with(|state| match state.metrics.get_mut(id as usize) {
            // Envoy refuses to add 0 (BadArgument).
            Some((_, _, value)) if delta > 0 => {
                *value = Some(value.unwrap_or(0) + delta);
                Ok(())
            }
            _ => Err(Status(2)),
        })
    }

    fn log(&self, level: LogLevel, message: &str) -> Result<(), Status> {
        self.call("log");
        Self::with(|state| state.logs.push((level, message.to_owned())));
        Ok(())
    }

    fn log_level(&self) -> Result<LogLevel, Status> {
        self.call("log_level");
        // Always `info`: the level filter `follow_host_level` sets is global to the process.
        Ok(LogLevel::Info)
    }
}
