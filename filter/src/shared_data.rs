//! [`SharedStore`] over Envoy's proxy-wasm shared data.

use eisodos_core::store::{Cas, GetError, SetError, SharedStore};
use proxy_wasm::hostcalls;
use proxy_wasm::types::Status;

/// Envoy's process-wide shared data for this VM id.
pub struct HostStore;

impl SharedStore for HostStore {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, Cas)>, GetError> {
        match hostcalls::get_shared_data(key) {
            Ok((Some(value), Some(cas))) => Ok(Some((value, cas))),
            // Envoy always sends a cas with a value; without one the entry cannot be CAS-written.
            Ok((Some(_), None)) => Err(GetError("value without cas")),
            Ok((None, _)) => Ok(None),
            Err(status) => Err(GetError(status_name(status))),
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<Cas>) -> Result<(), SetError> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(SetError::CasMismatch),
            Err(status) => Err(SetError::Host(status_name(status))),
        }
    }
}

fn status_name(status: Status) -> &'static str {
    match status {
        Status::Ok => "Ok",
        Status::NotFound => "NotFound",
        Status::BadArgument => "BadArgument",
        Status::SerializationFailure => "SerializationFailure",
        Status::ParseFailure => "ParseFailure",
        Status::Empty => "Empty",
        Status::CasMismatch => "CasMismatch",
        Status::InternalFailure => "InternalFailure",
        _ => "unknown status",
    }
}
