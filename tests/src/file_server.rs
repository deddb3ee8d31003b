//! A loopback HTTP/1.1 server that serves one file at one path, for Envoy's
//! `vm_config.code.remote` to fetch the filter from. It counts the fetches, so a test can
//! tell a module Envoy fetched and refused from one it never got.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use crate::server::Server;

struct Shared {
    path: String,
    body: Bytes,
    served: AtomicU64,
}

/// A running file server on 127.0.0.1 (on the upstreams' runtime). Dropping it closes the
/// listener and its connections.
pub struct FileServer {
    shared: Arc<Shared>,
    server: Server,
}

impl std::fmt::Debug for FileServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileServer")
            .field("path", &self.shared.path)
            .field("port", &self.port())
            .field("served", &self.served())
            .finish()
    }
}

impl FileServer {
    /// Serves `body` with status 200 at `GET path` on a free port (404 for any other path);
    /// returns once the port accepts connections.
    ///
    /// # Panics
    /// When the port cannot be bound.
    pub fn start(path: &str, body: Vec<u8>) -> FileServer {
        let shared = Arc::new(Shared {
            path: path.to_owned(),
            body: Bytes::from(body),
            served: AtomicU64::new(0),
        });
        let service = {
            let shared = Arc::clone(&shared);
            move |req| answer(Arc::clone(&shared), req)
        };
        // Accept failures are retried, and a fetcher that hangs up early is its own business.
        let server =
            Server::start(None, service, |_| {}).unwrap_or_else(|e| panic!("file server: {e}"));
        FileServer { shared, server }
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// The path the file is served at.
    pub fn path(&self) -> &str {
        &self.shared.path
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}{}", self.port(), self.shared.path)
    }

    /// How many times the file was served (200 answers) so far.
    pub fn served(&self) -> u64 {
        self.shared.served.load(Ordering::SeqCst)
    }
}

async fn answer(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    if req.method() == hyper::Method::GET && req.uri().path() == shared.path {
        shared.served.fetch_add(1, Ordering::SeqCst);
        return Ok(Response::new(Full::new(shared.body.clone())));
    }
    let mut response = Response::new(Full::new(Bytes::from_static(b"not found\n")));
    *response.status_mut() = StatusCode::NOT_FOUND;
    Ok(response)
}
