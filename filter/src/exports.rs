//! The callbacks Envoy calls, and which context each goes to.
//!
//! Only what eisodos uses is exported: Envoy skips a callback the module does not export, so a
//! request enters the VM five times (context created, request headers, response headers, log,
//! delete) and never for bodies or trailers. Response headers are exported for
//! `session_affinity`'s `set-cookie` only, but Envoy then enters the VM for them under every
//! configuration: that entry returns at once, before any table lookup, while no stream on this
//! worker has a cookie to set (a per-VM count), so without sticky sessions it costs the entry
//! itself and one load.
//!
//! Contexts live in two per-VM tables: root contexts (one per plugin configuration, usually
//! one) and stream contexts (one per request in flight on this worker). No table is borrowed
//! across a host call, so a host that called back in the middle of one (it does not today)
//! would find the tables free rather than panic.
//!
//! This is where the real host, [`AbiHost`], is wired in; everything behind these functions
//! takes the host as a parameter, so unit tests drive it with a fake.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;

use crate::abi;
use crate::abi_host::AbiHost;
use crate::http::EisodosHttp;
use crate::root::EisodosRoot;

thread_local! {
    static ROOTS: RefCell<Vec<(u32, Rc<EisodosRoot>)>> = const { RefCell::new(Vec::new()) };
    static STREAMS: RefCell<HashMap<u32, EisodosHttp, BuildHasherDefault<ContextIdHasher>>> =
        RefCell::new(HashMap::default());
    /// Streams on this VM whose response is to set the affinity cookie: while 0 (always, without
    /// `session_affinity`) the response-headers callback looks nothing up.
    static COOKIES_PENDING: Cell<u32> = const { Cell::new(0) };
}

/// One stream's cookie became pending (`true`) or stopped being (`false`).
fn count_pending(pending: bool) {
    COOKIES_PENDING.with(|count| {
        count.set(if pending {
            count.get().saturating_add(1)
        } else {
            count.get().saturating_sub(1)
        });
    });
}

/// Context ids are small integers Envoy hands out in sequence: a multiplication spreads them
/// over the table without SipHash's cost.
#[derive(Default)]
struct ContextIdHasher(u64);

impl Hasher for ContextIdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(byte)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u32(&mut self, id: u32) {
        self.0 = u64::from(id).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

fn root(id: u32) -> Option<Rc<EisodosRoot>> {
    ROOTS.with(|roots| {
        roots
            .borrow()
            .iter()
            .find(|(root_id, _)| *root_id == id)
            .map(|(_, root)| Rc::clone(root))
    })
}

/// The module's initialiser: runs static constructors (WASI), installs the logger.
#[no_mangle]
pub extern "C" fn _initialize() {
    extern "C" {
        fn __wasm_call_ctors();
    }
    // SAFETY: the WASI reactor contract: called once, before anything else.
    unsafe { __wasm_call_ctors() };
    crate::logger::install();
}

/// The ABI version this module speaks.
#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

/// Memory for data the host returns.
#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    abi::allocate(size)
}

/// The VM started; nothing to read from its configuration.
#[no_mangle]
pub extern "C" fn proxy_on_vm_start(_root_id: u32, _vm_configuration_size: usize) -> bool {
    true
}

/// A root context (`parent_id` 0) or a stream context of root `parent_id` was created.
#[no_mangle]
pub extern "C" fn proxy_on_context_create(id: u32, parent_id: u32) {
    if parent_id == 0 {
        ROOTS.with(|roots| {
            roots
                .borrow_mut()
                .push((id, Rc::new(EisodosRoot::default())))
        });
        return;
    }
    // Without a root (not possible with a sane host) the stream passes through untouched.
    let balancer = root(parent_id).and_then(|root| root.balancer());
    STREAMS.with(|streams| streams.borrow_mut().insert(id, EisodosHttp::new(balancer)));
}

/// The plugin configuration arrived (again, on reconfiguration).
#[no_mangle]
pub extern "C" fn proxy_on_configure(root_id: u32, configuration_size: usize) -> bool {
    root(root_id).is_some_and(|root| root.on_configure(&AbiHost, configuration_size))
}

/// The root context's timer.
#[no_mangle]
pub extern "C" fn proxy_on_tick(root_id: u32) {
    if let Some(root) = root(root_id) {
        root.on_tick(&AbiHost);
    }
}

/// A probe came back (or failed: then without `:status`).
#[no_mangle]
pub extern "C" fn proxy_on_http_call_response(
    root_id: u32,
    token: u32,
    _headers: usize,
    _body_size: usize,
    _trailers: usize,
) {
    if let Some(root) = root(root_id) {
        root.on_http_call_response(&AbiHost, token);
    }
}

/// The request headers: choose the backend. Returns the ABI's action (0 continue, 1 pause).
/// Flags arrive as `u32`, not `bool`: a host value other than 0 or 1 must not be undefined
/// behaviour.
#[no_mangle]
pub extern "C" fn proxy_on_request_headers(id: u32, _headers: usize, _end_of_stream: u32) -> u32 {
    // Test builds only (the `crash-trigger` feature): a request can kill the VM on purpose.
    #[cfg(feature = "crash-trigger")]
    crate::crash_trigger::check(&AbiHost);
    let stream = STREAMS.with(|streams| streams.borrow().get(&id).cloned());
    let Some(mut stream) = stream else {
        return abi::CONTINUE;
    };
    let was_pending = stream.cookie_pending();
    let action = stream.on_request_headers(&AbiHost);
    if stream.cookie_pending() != was_pending {
        count_pending(stream.cookie_pending());
    }
    STREAMS.with(|streams| {
        if let Some(slot) = streams.borrow_mut().get_mut(&id) {
            *slot = stream;
        }
    });
    action
}

/// The response headers (the backend's, or Envoy's own answer): set the affinity cookie if the
/// request's choice asked for one. Returns the ABI's action (always continue).
#[no_mangle]
pub extern "C" fn proxy_on_response_headers(id: u32, _headers: usize, _end_of_stream: u32) -> u32 {
    if COOKIES_PENDING.with(Cell::get) == 0 {
        return abi::CONTINUE;
    }
    let stream = STREAMS.with(|streams| {
        streams
            .borrow()
            .get(&id)
            .filter(|stream| stream.cookie_pending())
            .cloned()
    });
    let Some(mut stream) = stream else {
        return abi::CONTINUE;
    };
    let action = stream.on_response_headers(&AbiHost);
    count_pending(false);
    STREAMS.with(|streams| {
        if let Some(slot) = streams.borrow_mut().get_mut(&id) {
            *slot = stream;
        }
    });
    action
}

/// The stream ended, however it ended.
#[no_mangle]
pub extern "C" fn proxy_on_log(id: u32) {
    let stream = STREAMS.with(|streams| streams.borrow().get(&id).cloned());
    if let Some(stream) = stream {
        stream.on_log(&AbiHost);
    }
}

/// A context is gone: forget it. A root context's balancer is retired (requests it admitted
/// may still end and give their counts back).
#[no_mangle]
pub extern "C" fn proxy_on_delete(id: u32) {
    let removed = STREAMS.with(|streams| streams.borrow_mut().remove(&id));
    if let Some(stream) = removed {
        // No response headers came (the client went away first): nothing is pending now.
        if stream.cookie_pending() {
            count_pending(false);
        }
        return;
    }
    let root = ROOTS.with(|roots| {
        let mut roots = roots.borrow_mut();
        let position = roots.iter().position(|(root_id, _)| *root_id == id)?;
        Some(roots.swap_remove(position).1)
    });
    if let Some(root) = root {
        root.retire(&AbiHost);
    }
}
