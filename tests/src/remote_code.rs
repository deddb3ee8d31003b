//! The filter loaded from a URL instead of a file: Envoy's `vm_config.code.remote`, an
//! `http_uri` on a cluster of its own plus the module's `sha256`, which Envoy checks before
//! it loads the bytes. See [`crate::envoy::EnvoyBuilder::remote_code`].

use serde_json::{json, Value};

use crate::file_server::FileServer;

/// The cluster Envoy fetches the module through.
pub const CLUSTER: &str = "eisodos_wasm_server";

/// Where Envoy fetches the filter from, and the digest it must have.
#[derive(Debug, Clone)]
pub struct RemoteCode {
    port: u16,
    path: String,
    sha256: String,
}

impl RemoteCode {
    /// The file `server` serves, expected to have the SHA-256 `sha256` (64 hex digits).
    pub fn new(server: &FileServer, sha256: &str) -> RemoteCode {
        RemoteCode {
            port: server.port(),
            path: server.path().to_owned(),
            sha256: sha256.to_owned(),
        }
    }

    /// The `vm_config.code` value: `remote` with Envoy's default retry policy (one retry),
    /// as users get it.
    pub fn code(&self) -> Value {
        json!({
            "remote": {
                "http_uri": {
                    "uri": format!("http://127.0.0.1:{}{}", self.port, self.path),
                    "cluster": CLUSTER,
                    // Far beyond a loopback fetch of a few hundred KB, even on a busy machine.
                    "timeout": "10s",
                },
                "sha256": self.sha256,
            }
        })
    }

    /// The static cluster [`RemoteCode::code`] fetches through.
    pub fn cluster(&self) -> Value {
        json!({
            "name": CLUSTER,
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": {
                "cluster_name": CLUSTER,
                "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                    "address": "127.0.0.1",
                    "port_value": self.port,
                }}}}]}],
            },
        })
    }
}
