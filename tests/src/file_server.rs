//! A loopback HTTP/1.1 server that serves one file at one path, for Envoy's
//! `vm_config.code.remote` to fetch the filter from. It counts the fetches, so a test can
//! tell a module Envoy fetched and refused from one it never got.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

struct Shared {
    path: String,
    body: Bytes,
    served: AtomicU64,
}

/// A running file server on 127.0.0.1 (on the upstreams' runtime). Dropping it closes the
/// listener and its connections.
pub struct FileServer {
    shared: Arc<Shared>,
    port: u16,
    stop: Option<oneshot::Sender<()>>,
    stopped: std::sync::mpsc::Receiver<()>,
}

impl std::fmt::Debug for FileServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileServer")
            .field("path", &self.shared.path)
            .field("port", &self.port)
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
        let port = crate::ports::free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let std_listener = std::net::TcpListener::bind(addr)
            .unwrap_or_else(|e| panic!("file server: cannot listen on {addr}: {e}"));
        std_listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("file server: set_nonblocking on {addr}: {e}"));
        let rt = crate::upstream::runtime();
        let listener = {
            let _guard = rt.enter();
            tokio::net::TcpListener::from_std(std_listener)
                .unwrap_or_else(|e| panic!("file server: hand {addr} to tokio: {e}"))
        };
        let shared = Arc::new(Shared {
            path: path.to_owned(),
            body: Bytes::from(body),
            served: AtomicU64::new(0),
        });
        let (stop_tx, stop_rx) = oneshot::channel();
        let (stopped_tx, stopped_rx) = std::sync::mpsc::channel();
        rt.spawn(serve(listener, Arc::clone(&shared), stop_rx, stopped_tx));
        FileServer {
            shared,
            port,
            stop: Some(stop_tx),
            stopped: stopped_rx,
        }
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The path the file is served at.
    pub fn path(&self) -> &str {
        &self.shared.path
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}{}", self.port, self.shared.path)
    }

    /// How many times the file was served (200 answers) so far.
    pub fn served(&self) -> u64 {
        self.shared.served.load(Ordering::SeqCst)
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.stopped.recv_timeout(Duration::from_secs(5));
    }
}

async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<()>,
    stopped: std::sync::mpsc::Sender<()>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let shared = Arc::clone(&shared);
                    connections.spawn(async move {
                        let service = service_fn(move |req| answer(Arc::clone(&shared), req));
                        // A fetcher that hangs up early is its own business.
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
                // Out of file descriptors, say: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    connections.shutdown().await;
    let _ = stopped.send(());
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
