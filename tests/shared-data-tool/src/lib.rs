//! A test-only HTTP filter that reads and writes a running Envoy's shared data, for tests that
//! put garbage under eisodos' keys while Envoy serves (`tests/tests/shared_data_garbage.rs`)
//! and for reading record sizes in a live Envoy. Never shipped, never in `just build`.
//!
//! Envoy keeps one shared-data map per `vm_id` per process: configured with eisodos' `vm_id`
//! (a VM of its own, since the code differs), this filter sees and writes eisodos' keys. It
//! answers requests under `/.shared-data/` itself and lets every other request through
//! untouched:
//!
//! - `GET /.shared-data/get/<key>[?max=N]`: `200` with the value as lowercase hex in the body
//!   (only its first `N` bytes with `max`) and headers `x-shared-data-size` (the whole value's
//!   bytes) and `x-shared-data-cas`; `404` `absent` when the key does not exist.
//! - `GET /.shared-data/set/<key>[?repeat=N]` with header `x-shared-data-value: <hex>`: sets
//!   the key to those bytes (repeated `N` times, for values larger than a request header
//!   holds; no header: the empty value); an optional `x-shared-data-cas` header makes it a
//!   compare-and-swap (`0`: unconditional, as in the
//!   ABI). `200` `ok`, `409` `cas mismatch`, `500` for another host error.
//!
//! The key is the rest of the path as it is (no percent-decoding; eisodos' keys need none).

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, MapType, Status};

/// The module's entry point.
mod entry {
    #![allow(missing_docs)]
    proxy_wasm::main! {{
        proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
            Box::new(super::Root)
        });
    }}
}

/// The paths this filter answers.
const PREFIX: &str = "/.shared-data/";
/// Largest `repeat` accepted.
const MAX_REPEAT: usize = 1 << 20;

struct Root;

impl Context for Root {}

impl RootContext for Root {
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Request))
    }
}

/// A set, as the request asks for it.
struct Set {
    key: String,
    repeat: usize,
    cas: Option<u32>,
    value: Vec<u8>,
}

struct Request;

impl Context for Request {}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let path = header(":path").unwrap_or_default();
        let Some(rest) = path.strip_prefix(PREFIX) else {
            return Action::Continue;
        };
        let (operation, rest) = rest.split_once('/').unwrap_or((rest, ""));
        let (key, query) = rest.split_once('?').unwrap_or((rest, ""));
        match operation {
            "get" => match max(query) {
                Some(max) => answer_get(key, max),
                None => reply(400, "bad max\n", &[]),
            },
            "set" => match parse_set(key, query) {
                Ok(set) => answer_set(&set),
                Err(reason) => reply(400, &format!("{reason}\n"), &[]),
            },
            _ => reply(404, "unknown operation: use get or set\n", &[]),
        }
        Action::Pause
    }
}

fn header(name: &str) -> Option<String> {
    hostcalls::get_map_value(MapType::HttpRequestHeaders, name)
        .ok()
        .flatten()
}

fn parse_set(key: &str, query: &str) -> Result<Set, &'static str> {
    let repeat = repeat(query).ok_or("bad repeat")?;
    let cas = match header("x-shared-data-cas") {
        None => None,
        Some(cas) => Some(cas.parse().map_err(|_| "bad x-shared-data-cas")?),
    };
    let value = unhex(&header("x-shared-data-value").unwrap_or_default())
        .ok_or("bad x-shared-data-value")?;
    Ok(Set {
        key: key.to_owned(),
        repeat,
        cas,
        value,
    })
}

/// `repeat=N` from the query (1 when absent); `None` when malformed or too large.
fn repeat(query: &str) -> Option<usize> {
    match query
        .split('&')
        .find_map(|pair| pair.strip_prefix("repeat="))
    {
        None => Some(1),
        Some(n) => n.parse().ok().filter(|&n| n <= MAX_REPEAT),
    }
}

/// `max=N` from the query (no limit when absent; any `u64`, more than the VM can address is no
/// limit either); `None` when malformed.
fn max(query: &str) -> Option<usize> {
    match query.split('&').find_map(|pair| pair.strip_prefix("max=")) {
        None => Some(usize::MAX),
        Some(n) => n
            .parse::<u64>()
            .ok()
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
    }
}

fn answer_get(key: &str, max: usize) {
    match hostcalls::get_shared_data(key) {
        Ok((Some(value), cas)) => {
            let size = value.len().to_string();
            let value = value.get(..max).unwrap_or(&value);
            let cas = cas.unwrap_or(0).to_string();
            reply(
                200,
                &hex(value),
                &[
                    ("x-shared-data-size", size.as_str()),
                    ("x-shared-data-cas", cas.as_str()),
                ],
            );
        }
        Ok((None, _)) => reply(404, "absent\n", &[]),
        Err(status) => reply(500, &format!("get failed: {status:?}\n"), &[]),
    }
}

fn answer_set(set: &Set) {
    let value = set.value.repeat(set.repeat);
    match hostcalls::set_shared_data(&set.key, Some(&value), set.cas) {
        Ok(()) => reply(200, "ok\n", &[]),
        Err(Status::CasMismatch) => reply(409, "cas mismatch\n", &[]),
        Err(status) => reply(500, &format!("set failed: {status:?}\n"), &[]),
    }
}

fn reply(status: u32, body: &str, headers: &[(&str, &str)]) {
    let _ = hostcalls::send_http_response(status, headers.to_vec(), Some(body.as_bytes()));
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        for nibble in [byte >> 4, byte & 15] {
            out.push(char::from(
                *DIGITS.get(usize::from(nibble)).unwrap_or(&b'0'),
            ));
        }
    }
    out
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    let digits = text.trim().as_bytes();
    if digits.len() % 2 != 0 {
        return None;
    }
    digits
        .chunks_exact(2)
        .map(|pair| {
            let text = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(text, 16).ok()
        })
        .collect()
}
