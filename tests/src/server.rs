//! The loopback HTTP/1.1 server under [`crate::upstream`] and [`crate::file_server`]: a
//! listener on 127.0.0.1, hyper serving each connection on one shared background tokio
//! runtime, and a handle whose drop closes the listener and every connection.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

/// The runtime every server in this process (upstreams and file servers) runs on (2
/// workers, created on first use).
fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("upstream")
            .enable_all()
            .build()
            .expect("build the upstream tokio runtime")
    })
}

/// What went wrong while serving, as the error hook of [`Server::start`] hears it.
#[derive(Debug)]
pub(crate) enum ServeError {
    /// Accepting a connection failed (out of file descriptors, say); the server backs off
    /// 10 ms and accepts again.
    Accept(std::io::Error),
    /// A connection ended in an error: the peer hung up mid-exchange, or the service
    /// answered with an error.
    Connection(hyper::Error),
}

/// A running server on 127.0.0.1. Dropping it closes the listener and every open
/// connection, and returns once they are closed, so the port refuses connections afterwards.
pub(crate) struct Server {
    port: u16,
    stop: Option<oneshot::Sender<()>>,
    stopped: std::sync::mpsc::Receiver<()>,
}

impl Server {
    /// Listens on `port` of 127.0.0.1 (reserved, so [`crate::ports::free_port`] never hands
    /// it out), or on a fresh port bound at once when `None` ([`crate::ports::bind_fresh`]), and answers every request with
    /// `service`; `on_error` hears every [`ServeError`]. Returns once the port accepts
    /// connections, or says why it cannot (typically: the port is taken).
    pub(crate) fn start<S, F, E>(
        port: Option<u16>,
        service: S,
        on_error: impl Fn(ServeError) + Send + Sync + 'static,
    ) -> Result<Server, String>
    where
        S: Fn(Request<Incoming>) -> F + Clone + Send + 'static,
        F: Future<Output = Result<Response<Full<Bytes>>, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        // Bound here, synchronously: the port is listening when `start` returns.
        let std_listener = match port {
            Some(port) => {
                crate::ports::reserve(port);
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                std::net::TcpListener::bind(addr)
                    .map_err(|e| format!("cannot listen on {addr}: {e}"))?
            }
            None => crate::ports::bind_fresh()
                .map_err(|e| format!("cannot listen on a fresh port: {e}"))?,
        };
        let addr = std_listener
            .local_addr()
            .map_err(|e| format!("local address of the listener: {e}"))?;
        let port = addr.port();
        std_listener
            .set_nonblocking(true)
            .map_err(|e| format!("set_nonblocking on {addr}: {e}"))?;
        let rt = runtime();
        let listener = {
            let _guard = rt.enter();
            tokio::net::TcpListener::from_std(std_listener)
                .map_err(|e| format!("hand {addr} to tokio: {e}"))?
        };
        let (stop_tx, stop_rx) = oneshot::channel();
        let (stopped_tx, stopped_rx) = std::sync::mpsc::channel();
        rt.spawn(serve(
            listener,
            service,
            Arc::new(on_error),
            stop_rx,
            stopped_tx,
        ));
        Ok(Server {
            port,
            stop: Some(stop_tx),
            stopped: stopped_rx,
        })
    }

    /// The port it listens on (127.0.0.1).
    pub(crate) fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Wait until the listener and connections are really closed.
        let _ = self.stopped.recv_timeout(Duration::from_secs(5));
    }
}

async fn serve<S, F, E>(
    listener: tokio::net::TcpListener,
    service: S,
    on_error: Arc<impl Fn(ServeError) + Send + Sync + 'static>,
    mut stop: oneshot::Receiver<()>,
    stopped: std::sync::mpsc::Sender<()>,
) where
    S: Fn(Request<Incoming>) -> F + Clone + Send + 'static,
    F: Future<Output = Result<Response<Full<Bytes>>, E>> + Send + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
{
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let service = service_fn(service.clone());
                    let on_error = Arc::clone(&on_error);
                    connections.spawn(async move {
                        if let Err(e) = http1::Builder::new()
                            // Above Envoy's highest `max_headers_count` in the tests (10,100):
                            // the hostile-input test sends 10,000 headers through to a backend.
                            .max_headers(10_200)
                            .serve_connection(TokioIo::new(stream), service)
                            .await
                        {
                            on_error(ServeError::Connection(e));
                        }
                    });
                }
                Err(e) => {
                    on_error(ServeError::Accept(e));
                    // Back off instead of spinning on an error that persists.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            // Reap finished connection tasks so the set does not grow forever.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    connections.shutdown().await;
    let _ = stopped.send(());
}
