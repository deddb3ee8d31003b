//! A loopback OpenTelemetry collector: it takes OTLP/HTTP exports (`POST /v1/traces`, protobuf
//! bodies) and keeps them, so a test can find the attributes Envoy's tracer put on its spans.
//! It decodes nothing: a span attribute with a string value has exactly one encoding
//! ([`string_attribute`]), which is searched for in the bodies.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

use crate::server::Server;

/// The path OTLP/HTTP exporters post spans to.
pub const TRACES_PATH: &str = "/v1/traces";

/// A running collector on 127.0.0.1 (on the upstreams' runtime). Dropping it closes the
/// listener and its connections.
pub struct Collector {
    bodies: Arc<Mutex<Vec<Bytes>>>,
    server: Server,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector")
            .field("port", &self.port())
            .field("exports", &self.exports())
            .finish()
    }
}

impl Collector {
    /// Listens on a free port; returns once it accepts connections.
    ///
    /// # Panics
    /// When the port cannot be bound.
    pub fn start() -> Collector {
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let service = {
            let bodies = Arc::clone(&bodies);
            move |req| receive(Arc::clone(&bodies), req)
        };
        let server =
            Server::start(None, service, |_| {}).unwrap_or_else(|e| panic!("collector: {e}"));
        Collector { bodies, server }
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// Exports received so far.
    pub fn exports(&self) -> usize {
        self.lock().len()
    }

    /// How many spans received so far carry attribute `key` with the string `value`.
    pub fn spans_with(&self, key: &str, value: &str) -> usize {
        let needle = string_attribute(key, value);
        self.lock()
            .iter()
            .map(|body| body.windows(needle.len()).filter(|w| *w == needle).count())
            .sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Bytes>> {
        self.bodies.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn receive(
    bodies: Arc<Mutex<Vec<Bytes>>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let accepted = req.method() == Method::POST && req.uri().path() == TRACES_PATH;
    let body = req.into_body().collect().await?.to_bytes();
    let status = if accepted {
        bodies.lock().unwrap_or_else(|e| e.into_inner()).push(body);
        // An empty ExportTraceServiceResponse: everything accepted.
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    };
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/x-protobuf"),
    );
    Ok(response)
}

/// The protobuf encoding of an OTLP `KeyValue` whose value is an `AnyValue` string: field 1
/// (`key`) and field 2 (`value`, holding field 1, `string_value`), each length-delimited.
pub fn string_attribute(key: &str, value: &str) -> Vec<u8> {
    let mut any_value = vec![0x0a];
    varint(value.len(), &mut any_value);
    any_value.extend_from_slice(value.as_bytes());
    let mut key_value = vec![0x0a];
    varint(key.len(), &mut key_value);
    key_value.extend_from_slice(key.as_bytes());
    key_value.push(0x12);
    varint(any_value.len(), &mut key_value);
    key_value.extend_from_slice(&any_value);
    key_value
}

fn varint(mut n: usize, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n & 0x7f) as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_string_attribute_is_encoded_as_otlp_does() {
        // What Envoy 1.40 exported for `eisodos.reason: ticket`, as captured.
        let mut expected = vec![0x0a, 14];
        expected.extend_from_slice(b"eisodos.reason");
        expected.extend_from_slice(&[0x12, 8, 0x0a, 6]);
        expected.extend_from_slice(b"ticket");
        assert_eq!(string_attribute("eisodos.reason", "ticket"), expected);
        let long = "x".repeat(200);
        assert_eq!(
            string_attribute("k", &long)[..5],
            [0x0a, 1, b'k', 0x12, 0xcb]
        );
    }
}
