//! The cheapest Wasm filter that does eisodos' job: set the cluster header to a fixed value,
//! speaking the proxy-wasm ABI directly and exporting nothing it does not use, so Envoy enters
//! the VM twice per request (context created, request headers). With the feature `stream-end`
//! it also exports empty `proxy_on_log` and `proxy_on_delete`, as a filter that gives something
//! back at the end of the stream must: the floor eisodos itself can reach.
//!
//! The benchmark's other floor, `empty-filter`, is the same filter written with the proxy-wasm
//! Rust SDK, which exports every callback.

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_replace_header_map_value(
        map: u32,
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
    ) -> u32;
}

/// WASI reactor initialiser.
#[no_mangle]
pub extern "C" fn _initialize() {
    extern "C" {
        fn __wasm_call_ctors();
    }
    // SAFETY: called once by the host before anything else.
    unsafe { __wasm_call_ctors() };
}

/// The ABI version.
#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

/// Memory for data the host returns (this filter asks for none).
#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    Box::into_raw(vec![0_u8; size].into_boxed_slice()).cast::<u8>()
}

/// Accepts any VM configuration.
#[no_mangle]
pub extern "C" fn proxy_on_vm_start(_root: u32, _size: usize) -> bool {
    true
}

/// Accepts any plugin configuration.
#[no_mangle]
pub extern "C" fn proxy_on_configure(_root: u32, _size: usize) -> bool {
    true
}

/// Nothing to keep per context.
#[no_mangle]
pub extern "C" fn proxy_on_context_create(_id: u32, _parent: u32) {}

/// Routes every request to `backend_a`; continues.
#[no_mangle]
pub extern "C" fn proxy_on_request_headers(_id: u32, _headers: usize, _end: u32) -> u32 {
    let (name, value) = (b"x-eisodos-cluster", b"backend_a");
    // SAFETY: pointers and lengths of static byte strings. A failure leaves the request to the
    // catch-all route, which the benchmark would count as an error.
    unsafe {
        proxy_replace_header_map_value(0, name.as_ptr(), name.len(), value.as_ptr(), value.len())
    };
    0
}

/// The stream ended.
#[cfg(feature = "stream-end")]
#[no_mangle]
pub extern "C" fn proxy_on_log(_id: u32) {}

/// A context is gone.
#[cfg(feature = "stream-end")]
#[no_mangle]
pub extern "C" fn proxy_on_delete(_id: u32) {}
