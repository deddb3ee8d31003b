//! An upstream that misbehaves on demand, for the fault matrix: HTTP/1.1 written by hand over
//! plain sockets (one thread per connection), so it can do what a correct server library
//! refuses to: reset in the middle of a response, never answer, answer with bytes that are not
//! HTTP, answer late, redirect.
//!
//! Healthy, it answers like [`crate::upstream::Upstream`]: 200, body `"<name>\n"`,
//! `x-upstream: <name>`, keep-alive. [`FaultyUpstream::set`] switches the [`Fault`] and the
//! [`Scope`] it applies to (probes, that is requests for [`PROBE_PATH`], traffic, or both) for
//! every request read from then on.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::upstream::PROBE_PATH;

/// How a request is (mis)answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// A correct answer: 200, `"<name>\n"`.
    None,
    /// A correct answer with this status (and the usual body).
    Status(u16),
    /// `302 Found` with `location: http://127.0.0.1:1/elsewhere` (nothing listens there).
    Redirect,
    /// The status line and headers of a 200 (with a `content-length` of 64 bytes), then the
    /// connection reset (RST: `SO_LINGER` 0) before any of the body.
    ResetAfterHeaders,
    /// The headers and 16 of the 64 body bytes, then the connection reset.
    ResetMidBody,
    /// The request is read and never answered; the connection stays open until the peer
    /// closes it.
    Silent,
    /// Bytes that are not HTTP (an SSH server's banner, as when a port is taken by another
    /// service), then the connection closed.
    NotHttp,
    /// A correct answer, this long after the request.
    Slow(Duration),
}

/// Which requests a [`Fault`] applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Health probes (requests for [`PROBE_PATH`]) only; traffic is answered correctly.
    Probes,
    /// Traffic only; probes are answered correctly.
    Traffic,
    /// Every request.
    All,
}

/// The banner [`Fault::NotHttp`] sends.
pub const NOT_HTTP: &[u8] = b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13\r\n";

const BODY_LEN: usize = 64;

struct Shared {
    name: String,
    state: Mutex<(Fault, Scope)>,
    stop: AtomicBool,
    probes: AtomicU64,
    hits: AtomicU64,
    /// A handle on every open connection, to shut them all when stopped; each connection's
    /// thread takes its own out when it ends, so its socket closes with its last handle.
    connections: Mutex<HashMap<u64, TcpStream>>,
    next_id: AtomicU64,
}

/// A running misbehaving upstream on 127.0.0.1. Dropping it closes the listener and every
/// connection, so the port refuses connections afterwards.
pub struct FaultyUpstream {
    shared: Arc<Shared>,
    port: u16,
    acceptor: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for FaultyUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyUpstream")
            .field("name", &self.shared.name)
            .field("port", &self.port)
            .finish()
    }
}

impl FaultyUpstream {
    /// Starts a correct upstream called `name` on a fresh port (`None`) or on `port`.
    ///
    /// # Panics
    /// When the port cannot be bound.
    pub fn start(name: &str, port: Option<u16>) -> Self {
        let listener = match port {
            Some(port) => {
                crate::ports::reserve(port);
                TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
            }
            None => crate::ports::bind_fresh(),
        }
        .unwrap_or_else(|e| panic!("faulty upstream {name}: cannot listen: {e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("faulty upstream {name}: {e}"))
            .port();
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            state: Mutex::new((Fault::None, Scope::All)),
            stop: AtomicBool::new(false),
            probes: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            connections: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || accept_loop(&listener, &shared))
        };
        Self {
            shared,
            port,
            acceptor: Some(acceptor),
        }
    }

    /// The name (also the Envoy cluster name).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Misbehaves with `fault` on the requests of `scope` read from now on.
    pub fn set(&self, fault: Fault, scope: Scope) {
        *self.shared.state.lock().unwrap_or_else(|e| e.into_inner()) = (fault, scope);
    }

    /// Probes read so far.
    pub fn probes(&self) -> u64 {
        self.shared.probes.load(Ordering::SeqCst)
    }

    /// Requests other than probes read so far.
    pub fn hits(&self) -> u64 {
        self.shared.hits.load(Ordering::SeqCst)
    }
}

impl Drop for FaultyUpstream {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the acceptor; it sees `stop` and drops the listener.
        let _ = TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], self.port)),
            Duration::from_secs(1),
        );
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let connections = std::mem::take(
            &mut *self
                .shared
                .connections
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for connection in connections.values() {
            let _ = connection.shutdown(Shutdown::Both);
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
        if let Ok(clone) = stream.try_clone() {
            shared
                .connections
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, clone);
        }
        let shared = Arc::clone(shared);
        std::thread::spawn(move || {
            serve(&stream, &shared);
            // The clone goes first: the socket closes (FIN, or RST after `reset`) when the
            // last handle does.
            drop(
                shared
                    .connections
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id),
            );
            drop(stream);
        });
    }
}

/// Serves one connection until the peer closes it or a fault ends it.
fn serve(stream: &TcpStream, shared: &Shared) {
    let _ = stream.set_nodelay(true);
    let mut buffered = Vec::new();
    loop {
        let Some(path) = read_head(stream, &mut buffered) else {
            return;
        };
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let probe = path == PROBE_PATH;
        if probe {
            shared.probes.fetch_add(1, Ordering::SeqCst);
        } else {
            shared.hits.fetch_add(1, Ordering::SeqCst);
        }
        let (fault, scope) = *shared.state.lock().unwrap_or_else(|e| e.into_inner());
        let applies = match scope {
            Scope::All => true,
            Scope::Probes => probe,
            Scope::Traffic => !probe,
        };
        let fault = if applies { fault } else { Fault::None };
        if !answer(stream, shared, fault) {
            return;
        }
    }
}

/// Answers one request with `fault`; `false` when the connection is done.
fn answer(mut stream: &TcpStream, shared: &Shared, fault: Fault) -> bool {
    let name = &shared.name;
    let body = format!("{name}\n");
    let ok = |status: u16, extra: &str| {
        format!(
            "HTTP/1.1 {status} {}\r\ncontent-length: {}\r\nx-upstream: {name}\r\n{extra}\r\n{body}",
            reason(status),
            body.len()
        )
    };
    match fault {
        Fault::None => stream.write_all(ok(200, "").as_bytes()).is_ok(),
        Fault::Status(status) => stream.write_all(ok(status, "").as_bytes()).is_ok(),
        Fault::Redirect => stream
            .write_all(ok(302, "location: http://127.0.0.1:1/elsewhere\r\n").as_bytes())
            .is_ok(),
        Fault::Slow(delay) => {
            std::thread::sleep(delay);
            stream.write_all(ok(200, "").as_bytes()).is_ok()
        }
        Fault::ResetAfterHeaders | Fault::ResetMidBody => {
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {BODY_LEN}\r\nx-upstream: {name}\r\n\r\n"
            );
            let _ = stream.write_all(head.as_bytes());
            if fault == Fault::ResetMidBody {
                let _ = stream.write_all(&[b'x'; BODY_LEN / 4]);
            }
            let _ = stream.flush();
            // Let the peer read what was sent before the reset (an RST discards unread data
            // at the receiver's side only if it arrives first).
            std::thread::sleep(Duration::from_millis(20));
            // Closed with an RST instead of a FIN once the last handle goes (the caller's).
            let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
            false
        }
        Fault::Silent => {
            // Read and drop whatever comes until the peer gives up.
            let mut sink = [0_u8; 1024];
            while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
            false
        }
        Fault::NotHttp => {
            let _ = stream.write_all(NOT_HTTP);
            let _ = stream.shutdown(Shutdown::Both);
            false
        }
    }
}

/// Reads one request head (requests here have no body); returns its path, or `None` when the
/// connection ended.
fn read_head(mut stream: &TcpStream, buffered: &mut Vec<u8>) -> Option<String> {
    let mut chunk = [0_u8; 4096];
    loop {
        if let Some(end) = buffered.windows(4).position(|w| w == b"\r\n\r\n") {
            let head: Vec<u8> = buffered.drain(..end + 4).collect();
            let text = String::from_utf8_lossy(&head);
            let target = text.split(' ').nth(1).unwrap_or("");
            let path = target.split('?').next().unwrap_or("");
            return Some(path.to_owned());
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buffered.extend_from_slice(chunk.get(..n)?),
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        302 => "Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}
