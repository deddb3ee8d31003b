//! The shared-data interface eisodos needs from its host.
//!
//! It mirrors proxy-wasm shared data as Envoy implements it: one map per VM id for the whole
//! process, behind one lock; every `get` returns a copy of the value and its `cas`; there is no
//! atomic increment; `set` with a `cas` fails with [`SetError::CasMismatch`] when the key exists
//! and its `cas` changed since it was read, while a write to a missing key always succeeds; and
//! every successful write gives the key a new `cas`.

/// The compare-and-swap token Envoy hands out with every value. Never 0.
pub type Cas = u32;

/// Why a `set` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetError {
    /// The key was written by someone else since the `cas` passed in was read.
    CasMismatch,
    /// The host refused the call for another reason (its status is in the text).
    Host(&'static str),
}

/// Why a `get` failed (a missing key is not a failure: it is `Ok(None)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetError(pub &'static str);

/// Process-wide key/value store shared by every worker's VM.
pub trait SharedStore {
    /// A copy of the value under `key` with its current `cas`, or `None` when the key is missing.
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, Cas)>, GetError>;

    /// Writes `value` under `key`. With `Some(cas)`, the write happens only if the key is missing
    /// or still has that `cas`; with `None`, it always happens.
    fn set(&self, key: &str, value: &[u8], cas: Option<Cas>) -> Result<(), SetError>;
}
