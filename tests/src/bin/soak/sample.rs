//! What the soak measures every few seconds: Envoy's resident memory, its allocator's view
//! (`/memory`), and the number and total size of eisodos' shared-data keys.

use std::time::Duration;

use eisodos_tests::client;
use eisodos_tests::envoy::Envoy;
use serde_json::Value;

/// Reads one shared-data key of the running Envoy: its value, `None` when absent.
pub type KeyReader<'a> = dyn Fn(&str) -> Result<Option<Vec<u8>>, String> + Sync + 'a;

/// One sample.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    /// Seconds since the start of the load.
    pub t: f64,
    /// `VmRSS` of the Envoy process, bytes.
    pub rss: u64,
    /// `/memory` `allocated`, bytes.
    pub allocated: u64,
    /// `/memory` `heap_size`, bytes.
    pub heap_size: u64,
    /// eisodos' shared-data keys present (of those the configurations can create), when they
    /// could be read.
    pub keys: Option<u64>,
    /// Their names' and values' bytes together.
    pub key_bytes: Option<u64>,
}

/// The memory figures of `envoy` now.
pub fn memory(envoy: &Envoy) -> Result<(u64, u64, u64), String> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", envoy.pid()))
        .map_err(|e| format!("read /proc/{}/status: {e}", envoy.pid()))?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse().ok())
        .ok_or("no VmRSS in /proc/<pid>/status")?;
    let response = client::try_get_with(&envoy.admin_url("/memory"), &[])?;
    let memory: Value =
        serde_json::from_str(&response.body).map_err(|e| format!("/memory is not JSON: {e}"))?;
    let field = |name: &str| -> Result<u64, String> {
        match &memory[name] {
            Value::String(s) => s.parse().map_err(|e| format!("/memory {name}: {e}")),
            Value::Number(n) => n.as_u64().ok_or_else(|| format!("/memory {name}: {n}")),
            other => Err(format!("/memory {name}: {other}")),
        }
    };
    Ok((rss_kb * 1024, field("allocated")?, field("heap_size")?))
}

/// The number and total size (names and values) of `keys` present now.
pub fn keys(read: &KeyReader<'_>, keys: &[(String, usize)]) -> Result<(u64, u64), String> {
    let mut count = 0;
    let mut bytes = 0;
    for (key, _) in keys {
        if let Some(value) = read(key)? {
            count += 1;
            bytes += (key.len() + value.len()) as u64;
        }
    }
    Ok((count, bytes))
}

/// Takes one sample at `t`.
pub fn take(
    envoy: &Envoy,
    t: Duration,
    read: Option<&KeyReader<'_>>,
    all_keys: &[(String, usize)],
) -> Result<Sample, String> {
    let (rss, allocated, heap_size) = memory(envoy)?;
    let (keys, key_bytes) = match read {
        Some(read) => {
            let (k, b) = keys(read, all_keys)?;
            (Some(k), Some(b))
        }
        None => (None, None),
    };
    Ok(Sample {
        t: t.as_secs_f64(),
        rss,
        allocated,
        heap_size,
        keys,
        key_bytes,
    })
}
