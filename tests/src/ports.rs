//! Free TCP ports on 127.0.0.1, never the same one twice in this process.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::{Mutex, OnceLock};

fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(|| Mutex::new(HashSet::new()))
}

/// A port on 127.0.0.1 that was free a moment ago and that this process has not
/// handed out before (so two Envoys or upstreams in one test run never collide).
///
/// The port is released before returning: another process could still grab it.
pub fn free_port() -> u16 {
    let mut seen = handed_out().lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..1000 {
        let listener =
            TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 to find a free port");
        let port = listener
            .local_addr()
            .expect("local_addr of a bound listener")
            .port();
        if seen.insert(port) {
            return port;
        }
    }
    panic!("no fresh free port on 127.0.0.1 after 1000 tries");
}

/// A listener on a fresh port of 127.0.0.1, bound here: unlike a port from [`free_port`],
/// which is released before it is used, no other process (an Envoy's outgoing connection
/// takes ports from the same ephemeral range) can take it in between. The port is recorded,
/// so [`free_port`] never hands it out.
///
/// # Errors
/// When binding fails, or every port tried had been handed out before.
pub fn bind_fresh() -> std::io::Result<TcpListener> {
    let mut seen = handed_out().lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..1000 {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        if seen.insert(listener.local_addr()?.port()) {
            return Ok(listener);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        "no fresh port on 127.0.0.1 after 1000 tries",
    ))
}

/// Records `port` as used so [`free_port`] never returns it (for fixed ports like 8081).
pub fn reserve(port: u16) {
    handed_out()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(port);
}
