//! The proxy-wasm ABI (0.2.1) host calls eisodos makes, each wrapped so that every status the
//! host can return becomes a `Result`: nothing here panics, whatever Envoy answers.
//!
//! Why not the proxy-wasm Rust SDK: its host-call wrappers `panic!` on statuses they do not
//! expect, and its dispatcher exports every callback of the ABI, so Envoy enters the VM for
//! response headers, response body and `on_done` of every request although eisodos has nothing
//! to do there. Measured with callgrind on Envoy 1.40, an empty SDK filter costs ~11k
//! instructions per request more than one that exports only the callbacks it uses. The
//! callbacks eisodos exports are in `exports.rs`.
//!
//! Memory the host returns (header values, shared data, properties) is allocated in the VM by
//! `proxy_on_memory_allocate` as a `Vec<u8>` of exactly the requested size, and taken back here
//! with `Vec::from_raw_parts(ptr, size, size)`, the same layout.
//!
//! The host calls themselves exist only on `wasm32`; the types and the encoding are compiled
//! natively too, for the unit tests, where the parts only the calls use are unused.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use std::mem::MaybeUninit;

/// A host call's status (proxy-wasm `WasmResult`), kept as the host's number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub u32);

impl Status {
    const OK: u32 = 0;
    const NOT_FOUND: u32 = 1;
    /// A compare-and-swap write lost to another writer.
    pub const CAS_MISMATCH: Status = Status(8);

    /// The ABI's name for the status, for logs.
    pub fn name(self) -> &'static str {
        match self.0 {
            0 => "Ok",
            1 => "NotFound",
            2 => "BadArgument",
            3 => "SerializationFailure",
            4 => "ParseFailure",
            5 => "BadExpression",
            6 => "InvalidMemoryAccess",
            7 => "Empty",
            8 => "CasMismatch",
            9 => "ResultMismatch",
            10 => "InternalFailure",
            11 => "BrokenConnection",
            12 => "Unimplemented",
            _ => "unknown status",
        }
    }
}

/// Host log levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// `trace`.
    Trace = 0,
    /// `debug`.
    Debug = 1,
    /// `info`.
    Info = 2,
    /// `warn`.
    Warn = 3,
    /// `error`.
    Error = 4,
    /// `critical`.
    Critical = 5,
}

/// What a stream callback tells Envoy: go on with the filter chain.
pub const CONTINUE: u32 = 0;
/// What a stream callback tells Envoy: stop here (the filter answered locally).
pub const PAUSE: u32 = 1;

/// The ABI's header-map encoding: the count, each name and value length (u32 little-endian),
/// then each name and value followed by a NUL.
fn serialize_map(pairs: &[(&str, &str)]) -> Vec<u8> {
    let size = 4 + pairs
        .iter()
        .map(|(n, v)| 10 + n.len() + v.len())
        .sum::<usize>();
    let mut bytes = Vec::with_capacity(size);
    let length = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
    bytes.extend_from_slice(&length(pairs.len()));
    for (name, value) in pairs {
        bytes.extend_from_slice(&length(name.len()));
        bytes.extend_from_slice(&length(value.len()));
    }
    for (name, value) in pairs {
        bytes.extend_from_slice(name.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(value.as_bytes());
        bytes.push(0);
    }
    bytes
}

/// A header map's (name, value) pairs, as bytes.
pub type HeaderPairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Decodes a header map in the ABI's encoding (see [`serialize_map`]) into (name, value)
/// pairs; `None` when the bytes do not hold what their table says.
pub fn deserialize_map(bytes: &[u8]) -> Option<HeaderPairs> {
    let word = |at: usize| -> Option<usize> {
        let word: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
        usize::try_from(u32::from_le_bytes(word)).ok()
    };
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let count = word(0)?;
    // Each pair takes at least its two lengths and two NULs: a count beyond that is a lie.
    if count > bytes.len() / 10 {
        return None;
    }
    let mut pairs = Vec::with_capacity(count);
    let mut data = 4 + count * 8;
    for i in 0..count {
        let name_len = word(4 + i * 8)?;
        let value_len = word(8 + i * 8)?;
        // Each name and value, then its NUL.
        let mut field = |len: usize| -> Option<Vec<u8>> {
            let end = data.checked_add(len)?;
            let field = bytes.get(data..end)?.to_vec();
            (*bytes.get(end)? == 0).then_some(())?;
            data = end + 1;
            Some(field)
        };
        let name = field(name_len)?;
        let value = field(value_len)?;
        pairs.push((name, value));
    }
    Some(pairs)
}

/// Takes ownership of bytes the host allocated through `proxy_on_memory_allocate`.
///
/// # Safety
/// `data` is null, or came from `proxy_on_memory_allocate(size)` and is not used elsewhere.
unsafe fn take_bytes(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() || size == 0 {
        return Vec::new();
    }
    // SAFETY: per the contract above, a Vec<u8> of capacity `size` was leaked at `data`.
    unsafe { Vec::from_raw_parts(data, size, size) }
}

/// Memory the host asks for, to return data into (exported as `proxy_on_memory_allocate`).
pub fn allocate(size: usize) -> *mut u8 {
    let mut buffer: Vec<MaybeUninit<u8>> = Vec::with_capacity(size);
    // SAFETY: `MaybeUninit` needs no initialisation; the host writes the bytes.
    unsafe { buffer.set_len(size) };
    // A boxed slice has exactly `size` bytes of capacity, the layout `take_bytes` frees with.
    Box::into_raw(buffer.into_boxed_slice()).cast::<u8>()
}

/// `proxy_define_metric`'s metric types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up (`proxy_increment_metric` with a positive offset).
    Counter = 0,
    /// Set with `proxy_record_metric`.
    Gauge = 1,
}

#[cfg(target_arch = "wasm32")]
pub use calls::*;

/// The host calls: only in the Wasm module, where Envoy provides their imports. Native test
/// binaries must not link against imports nothing provides.
#[cfg(target_arch = "wasm32")]
mod calls {
    use std::ptr::null_mut;

    use super::{
        deserialize_map, serialize_map, take_bytes, HeaderPairs, LogLevel, MetricKind, Status,
    };

    /// Header maps the host gives access to.
    #[derive(Debug, Clone, Copy)]
    #[allow(clippy::enum_variant_names)] // The ABI's names: every map is of headers.
    pub enum MapType {
        /// The request headers of the current stream.
        RequestHeaders = 0,
        /// The response headers of the current stream (in the response-headers callback).
        ResponseHeaders = 2,
        /// The response headers of a `dispatch_http_call` answer.
        HttpCallResponseHeaders = 6,
    }

    /// `proxy_get_buffer_bytes`' plugin configuration buffer.
    const PLUGIN_CONFIGURATION: u32 = 7;

    #[link(wasm_import_module = "env")]
    extern "C" {
        fn proxy_log(level: u32, message: *const u8, size: usize) -> u32;
        fn proxy_get_log_level(level: *mut u32) -> u32;
        fn proxy_get_current_time_nanoseconds(time: *mut u64) -> u32;
        fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
        fn proxy_get_buffer_bytes(
            buffer: u32,
            start: usize,
            max_size: usize,
            data: *mut *mut u8,
            size: *mut usize,
        ) -> u32;
        fn proxy_get_header_map_value(
            map: u32,
            key: *const u8,
            key_size: usize,
            value: *mut *mut u8,
            value_size: *mut usize,
        ) -> u32;
        fn proxy_add_header_map_value(
            map: u32,
            key: *const u8,
            key_size: usize,
            value: *const u8,
            value_size: usize,
        ) -> u32;
        fn proxy_get_header_map_pairs(map: u32, data: *mut *mut u8, size: *mut usize) -> u32;
        fn proxy_remove_header_map_value(map: u32, key: *const u8, key_size: usize) -> u32;
        fn proxy_replace_header_map_value(
            map: u32,
            key: *const u8,
            key_size: usize,
            value: *const u8,
            value_size: usize,
        ) -> u32;
        fn proxy_send_local_response(
            status: u32,
            details: *const u8,
            details_size: usize,
            body: *const u8,
            body_size: usize,
            headers: *const u8,
            headers_size: usize,
            grpc_status: i32,
        ) -> u32;
        fn proxy_get_property(
            path: *const u8,
            path_size: usize,
            value: *mut *mut u8,
            value_size: *mut usize,
        ) -> u32;
        fn proxy_set_property(
            path: *const u8,
            path_size: usize,
            value: *const u8,
            value_size: usize,
        ) -> u32;
        fn proxy_get_shared_data(
            key: *const u8,
            key_size: usize,
            value: *mut *mut u8,
            value_size: *mut usize,
            cas: *mut u32,
        ) -> u32;
        fn proxy_set_shared_data(
            key: *const u8,
            key_size: usize,
            value: *const u8,
            value_size: usize,
            cas: u32,
        ) -> u32;
        fn proxy_http_call(
            upstream: *const u8,
            upstream_size: usize,
            headers: *const u8,
            headers_size: usize,
            body: *const u8,
            body_size: usize,
            trailers: *const u8,
            trailers_size: usize,
            timeout_ms: u32,
            token: *mut u32,
        ) -> u32;
        fn proxy_define_metric(kind: u32, name: *const u8, name_size: usize, id: *mut u32) -> u32;
        fn proxy_record_metric(id: u32, value: u64) -> u32;
        fn proxy_increment_metric(id: u32, offset: i64) -> u32;
    }

    fn check(status: u32) -> Result<(), Status> {
        if status == Status::OK {
            Ok(())
        } else {
            Err(Status(status))
        }
    }

    /// A read that returns host-allocated bytes: `Ok(None)` when the host says `NotFound`.
    fn read(call: impl FnOnce(*mut *mut u8, *mut usize) -> u32) -> Result<Option<Vec<u8>>, Status> {
        let mut data: *mut u8 = null_mut();
        let mut size: usize = 0;
        let status = call(&mut data, &mut size);
        // SAFETY: the host fills `data`/`size` from `proxy_on_memory_allocate` (or leaves null).
        let bytes = unsafe { take_bytes(data, size) };
        match status {
            Status::OK => Ok(Some(bytes)),
            Status::NOT_FOUND => Ok(None),
            other => Err(Status(other)),
        }
    }

    /// Writes a line to Envoy's log.
    pub fn log(level: LogLevel, message: &str) -> Result<(), Status> {
        // SAFETY: pointer and length of a live str.
        check(unsafe { proxy_log(level as u32, message.as_ptr(), message.len()) })
    }

    /// Envoy's current log level for Wasm.
    pub fn log_level() -> Result<LogLevel, Status> {
        let mut level = 0;
        // SAFETY: a valid out-pointer.
        check(unsafe { proxy_get_log_level(&mut level) })?;
        Ok(match level {
            0 => LogLevel::Trace,
            1 => LogLevel::Debug,
            2 => LogLevel::Info,
            3 => LogLevel::Warn,
            4 => LogLevel::Error,
            _ => LogLevel::Critical,
        })
    }

    /// Nanoseconds since the Unix epoch by Envoy's clock.
    pub fn current_time_ns() -> Result<u64, Status> {
        let mut time = 0;
        // SAFETY: a valid out-pointer.
        check(unsafe { proxy_get_current_time_nanoseconds(&mut time) })?;
        Ok(time)
    }

    /// Sets the root context's tick period (0 stops it).
    pub fn set_tick_period_ms(period: u32) -> Result<(), Status> {
        // SAFETY: no pointers.
        check(unsafe { proxy_set_tick_period_milliseconds(period) })
    }

    /// The plugin configuration bytes (`size` as `proxy_on_configure` gave it).
    pub fn plugin_configuration(size: usize) -> Result<Vec<u8>, Status> {
        read(|data, out_size| {
            // SAFETY: valid out-pointers.
            unsafe { proxy_get_buffer_bytes(PLUGIN_CONFIGURATION, 0, size, data, out_size) }
        })
        .map(Option::unwrap_or_default)
    }

    /// A header's value as bytes (not necessarily UTF-8); `None` when absent.
    pub fn header(map: MapType, name: &str) -> Result<Option<Vec<u8>>, Status> {
        read(|data, size| {
            // SAFETY: pointer and length of a live str, valid out-pointers.
            unsafe { proxy_get_header_map_value(map as u32, name.as_ptr(), name.len(), data, size) }
        })
    }

    /// Every header of a map, as (name, value) bytes in the host's order.
    pub fn header_pairs(map: MapType) -> Result<HeaderPairs, Status> {
        let bytes = read(|data, size| {
            // SAFETY: valid out-pointers.
            unsafe { proxy_get_header_map_pairs(map as u32, data, size) }
        })?
        .unwrap_or_default();
        // What the host sent is not a map: the ABI's SerializationFailure.
        deserialize_map(&bytes).ok_or(Status(3))
    }

    /// Removes a header (every value of it); a header that is not there is no error.
    pub fn remove_header(map: MapType, name: &str) -> Result<(), Status> {
        // SAFETY: pointer and length of a live str.
        check(unsafe { proxy_remove_header_map_value(map as u32, name.as_ptr(), name.len()) })
    }

    /// Sets a header, replacing any value it had.
    pub fn set_header(map: MapType, name: &str, value: &str) -> Result<(), Status> {
        // SAFETY: pointers and lengths of live strs.
        check(unsafe {
            proxy_replace_header_map_value(
                map as u32,
                name.as_ptr(),
                name.len(),
                value.as_ptr(),
                value.len(),
            )
        })
    }

    /// Adds a header, keeping any values it has (a `set-cookie` beside the upstream's own).
    pub fn add_header(map: MapType, name: &str, value: &str) -> Result<(), Status> {
        // SAFETY: pointers and lengths of live strs.
        check(unsafe {
            proxy_add_header_map_value(
                map as u32,
                name.as_ptr(),
                name.len(),
                value.as_ptr(),
                value.len(),
            )
        })
    }

    /// Answers the current request locally; `details` becomes Envoy's response code details.
    pub fn send_response(
        status: u32,
        details: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), Status> {
        let headers = serialize_map(headers);
        // SAFETY: pointers and lengths of live buffers.
        check(unsafe {
            proxy_send_local_response(
                status,
                details.as_ptr(),
                details.len(),
                body.as_ptr(),
                body.len(),
                headers.as_ptr(),
                headers.len(),
                -1,
            )
        })
    }

    /// A property (`["source", "address"]`, `["response", "code"]`); `None` when absent.
    pub fn property(path: &[&str]) -> Result<Option<Vec<u8>>, Status> {
        let path = path.join("\0");
        read(|data, size| {
            // SAFETY: pointer and length of a live String, valid out-pointers.
            unsafe { proxy_get_property(path.as_ptr(), path.len(), data, size) }
        })
    }

    /// Sets the one-segment property `name` of the current stream: Envoy keeps it as filter
    /// state `wasm.<name>` (a `CelState` of bytes, as long as the filter chain).
    pub fn set_property(name: &str, value: &str) -> Result<(), Status> {
        // SAFETY: pointers and lengths of live strs.
        check(unsafe { proxy_set_property(name.as_ptr(), name.len(), value.as_ptr(), value.len()) })
    }

    /// A shared-data value and its cas; `None` when the key does not exist.
    pub fn shared_data(key: &str) -> Result<Option<(Vec<u8>, u32)>, Status> {
        let mut cas = 0;
        let value = read(|data, size| {
            // SAFETY: pointer and length of a live str, valid out-pointers.
            unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), data, size, &mut cas) }
        })?;
        Ok(value.map(|bytes| (bytes, cas)))
    }

    /// Writes a shared-data value; with `cas` other than 0, only if the key's cas still matches
    /// (Envoy checks it only on keys that exist). A lost race is `Err(Status::CAS_MISMATCH)`.
    pub fn set_shared_data(key: &str, value: &[u8], cas: u32) -> Result<(), Status> {
        // SAFETY: pointers and lengths of live buffers.
        check(unsafe {
            proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas)
        })
    }

    /// Sends an HTTP request to `cluster`; the answer arrives in `proxy_on_http_call_response`
    /// with the returned token.
    pub fn http_call(
        cluster: &str,
        headers: &[(&str, &str)],
        timeout_ms: u32,
    ) -> Result<u32, Status> {
        let headers = serialize_map(headers);
        let trailers = serialize_map(&[]);
        let mut token = 0;
        // SAFETY: pointers and lengths of live buffers, a valid out-pointer.
        check(unsafe {
            proxy_http_call(
                cluster.as_ptr(),
                cluster.len(),
                headers.as_ptr(),
                headers.len(),
                std::ptr::null(),
                0,
                trailers.as_ptr(),
                trailers.len(),
                timeout_ms,
                &mut token,
            )
        })?;
        Ok(token)
    }

    /// Defines (or finds again) a metric; returns its id.
    pub fn define_metric(kind: MetricKind, name: &str) -> Result<u32, Status> {
        let mut id = 0;
        // SAFETY: pointer and length of a live str, a valid out-pointer.
        check(unsafe { proxy_define_metric(kind as u32, name.as_ptr(), name.len(), &mut id) })?;
        Ok(id)
    }

    /// Sets a gauge.
    pub fn record_metric(id: u32, value: u64) -> Result<(), Status> {
        // SAFETY: no pointers.
        check(unsafe { proxy_record_metric(id, value) })
    }

    /// Adds `delta` to a counter (Envoy refuses 0).
    pub fn increment_metric(id: u32, delta: u64) -> Result<(), Status> {
        let offset = i64::try_from(delta).unwrap_or(i64::MAX);
        // SAFETY: no pointers.
        check(unsafe { proxy_increment_metric(id, offset) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_are_encoded_as_the_abi_says() {
        let bytes = serialize_map(&[(":path", "/x"), ("a", "")]);
        let mut expected = vec![2, 0, 0, 0, 5, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0];
        expected.extend_from_slice(b":path\0/x\0a\0\0");
        assert_eq!(bytes, expected);
        assert_eq!(serialize_map(&[]), [0, 0, 0, 0]);
    }

    #[test]
    fn maps_decode_as_they_encode() {
        let bytes = serialize_map(&[(":path", "/x"), ("a", ""), ("b", "é")]);
        let pairs = deserialize_map(&bytes).unwrap();
        let expected: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (b":path".to_vec(), b"/x".to_vec()),
            (b"a".to_vec(), Vec::new()),
            (b"b".to_vec(), "é".as_bytes().to_vec()),
        ];
        assert_eq!(pairs, expected);
        assert_eq!(deserialize_map(&[]), Some(Vec::new()));
        assert_eq!(deserialize_map(&serialize_map(&[])), Some(Vec::new()));
        // Cut short anywhere, or a table that claims more than is there: refused, no panic.
        for end in 1..bytes.len() {
            assert_eq!(deserialize_map(&bytes[..end]), None, "cut at {end}");
        }
        let mut lying = bytes.clone();
        lying[4] = 200;
        assert_eq!(deserialize_map(&lying), None);
        assert_eq!(deserialize_map(&[255, 255, 255, 255, 0, 0, 0, 0]), None);
    }

    #[test]
    fn host_memory_round_trips() {
        let data = allocate(5);
        // SAFETY: test-only: fill what `allocate` returned, as the host would.
        unsafe { std::ptr::copy_nonoverlapping(b"hello".as_ptr(), data, 5) };
        // SAFETY: `data` came from `allocate(5)`.
        assert_eq!(unsafe { take_bytes(data, 5) }, b"hello");
    }
}
