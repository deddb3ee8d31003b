//! [`SharedStore`] over Envoy's proxy-wasm shared data.

use eisodos_core::store::{Cas, GetError, SetError, SharedStore};

use crate::abi::{self, Status};
use crate::abi_host::AbiHost;

/// Envoy's process-wide shared data for this VM id.
impl SharedStore for AbiHost {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, Cas)>, GetError> {
        match abi::shared_data(key) {
            Ok(Some((value, cas))) => Ok(Some((value, cas))),
            Ok(None) => Ok(None),
            Err(status) => Err(GetError(status.name())),
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<Cas>) -> Result<(), SetError> {
        match abi::set_shared_data(key, value, cas.unwrap_or(0)) {
            Ok(()) => Ok(()),
            Err(Status::CAS_MISMATCH) => Err(SetError::CasMismatch),
            Err(status) => Err(SetError::Host(status.name())),
        }
    }
}
