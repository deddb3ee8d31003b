//! Free TCP ports on 127.0.0.1, never the same one twice in this process, and never one that
//! an outgoing connection can take before it is used.

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
/// The port is released before returning, for Envoy to bind. It is taken from below the
/// kernel's ephemeral range ([`ephemeral_start`]): every outgoing connection on the machine
/// (Envoy's to its upstreams, the tests' to Envoy) takes its local port from that range, so a
/// port from there could be taken between this check and Envoy's bind, and Envoy would exit.
pub fn free_port() -> u16 {
    let mut seen = handed_out().lock().unwrap_or_else(|e| e.into_inner());
    let high = ephemeral_start();
    let low = high.saturating_sub(POOL).max(1024);
    let span = u32::from(high.saturating_sub(low));
    if span == 0 {
        // No room below the ephemeral range: any fresh port the kernel gives.
        for _ in 0..1000 {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
            let port = listener.local_addr().expect("local_addr").port();
            if seen.insert(port) {
                return port;
            }
        }
        panic!("no fresh free port on 127.0.0.1 after 1000 tries");
    }
    // Processes that run one after another start at different places of the pool.
    let start = std::process::id() % span;
    for i in 0..span {
        let port = low + u16::try_from((start + i) % span).expect("below the ephemeral start");
        if seen.contains(&port) || TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        seen.insert(port);
        return port;
    }
    panic!("no free port on 127.0.0.1 in {low}..{high}");
}

/// How many ports below the ephemeral range [`free_port`] chooses from.
const POOL: u16 = 12_000;

/// The first port of the kernel's ephemeral range (Linux's default when it cannot be read).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
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
