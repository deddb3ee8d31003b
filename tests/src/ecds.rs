//! The plugin configuration delivered through ECDS from a file, and changed while Envoy runs.
//!
//! With [`crate::envoy::EnvoyBuilder::ecds`] the Wasm filter in `http_filters` keeps its name
//! but becomes a `config_discovery` entry whose `config_source` is a `path_config_source`
//! watching a directory; the filter's whole `typed_config` (the `Wasm` message: `vm_config`,
//! `failure_policy`, `configuration`) moves into a `DiscoveryResponse` file there, as one
//! `TypedExtensionConfig` named after the filter. This is how Istio pushes a `WasmPlugin`
//! change, minus the gRPC: Envoy applies a new file without a restart or a listener drain.
//!
//! [`Envoy::reconfigure`] writes the new file beside the watched directory and renames it in
//! (Envoy reacts to the move; it never sees half a file), then waits for Envoy's ECDS stats
//! (`extension_config_discovery.http_filter.<filter name>.*`) to say how it went:
//! `update_rejected` up means it refused the update (the old config keeps serving);
//! `config_reload` up means every worker has the new filter config (Envoy counts it when the
//! last worker's update is done). Envoy counts `config_reload` also after an update it then
//! rejects, so the rejection is checked first.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::client;
use crate::envoy::Envoy;

/// The Wasm filter's config type, the only one the discovery entry accepts.
const WASM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
/// The resource type in the discovery file.
const EXTENSION_TYPE: &str = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";
/// How long [`Envoy::reconfigure`] waits for Envoy to take an update in.
const APPLY_TIMEOUT: Duration = Duration::from_secs(20);

/// The discovery file and what was last written to it.
#[derive(Debug)]
pub struct Ecds {
    name: String,
    file: PathBuf,
    staging: PathBuf,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    version: u64,
    /// The filter's `typed_config` (a `Wasm` message) as last written.
    wasm: Value,
}

/// How an accepted update went.
#[derive(Debug, Clone, Copy)]
pub struct Applied {
    /// The `version_info` written.
    pub version: u64,
    /// From the rename to the moment the stats showed every worker had it (as seen by polling
    /// every 10 ms).
    pub took: Duration,
}

impl Ecds {
    /// Moves the `typed_config` of `http_filters[index]` into a discovery file under `root`
    /// (`root/ecds/filter.json`, version 1) and replaces the entry with a `config_discovery`
    /// one of the same name. Sets the bootstrap `node` (a file subscription needs one).
    pub(crate) fn install(
        config: &mut Value,
        filter: &mut Value,
        root: &Path,
    ) -> Result<Self, String> {
        let name = filter["name"]
            .as_str()
            .ok_or("the Wasm filter has no name")?
            .to_owned();
        let wasm = filter
            .get("typed_config")
            .cloned()
            .ok_or_else(|| format!("the filter {name} has no typed_config"))?;
        let dir = root.join("ecds");
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let ecds = Self {
            file: dir.join("filter.json"),
            staging: root.join("filter.json.new"),
            state: Mutex::new(State { version: 0, wasm }),
            name,
        };
        ecds.write(|_| {})?;
        *filter = json!({
            "name": ecds.name,
            "config_discovery": {
                "config_source": {"path_config_source": {
                    "path": ecds.file.to_string_lossy(),
                    "watched_directory": {"path": dir.to_string_lossy()},
                }},
                "type_urls": [WASM_TYPE],
            },
        });
        config
            .as_object_mut()
            .ok_or("the Envoy config is not an object")?
            .entry("node")
            .or_insert_with(|| json!({"id": "eisodos-test", "cluster": "eisodos-test"}));
        Ok(ecds)
    }

    /// The prefix of this filter's ECDS stats.
    pub fn stat_prefix(&self) -> String {
        format!("extension_config_discovery.http_filter.{}.", self.name)
    }

    /// The discovery file Envoy watches.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Applies `edit` to the `Wasm` message, writes it as the next version (write aside, then
    /// rename into the watched directory) and returns that version.
    fn write(&self, edit: impl FnOnce(&mut Value)) -> Result<u64, String> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut wasm = state.wasm.clone();
        edit(&mut wasm);
        let version = state.version + 1;
        let response = json!({
            "version_info": version.to_string(),
            "resources": [{"@type": EXTENSION_TYPE, "name": self.name, "typed_config": wasm}],
        });
        let text =
            serde_json::to_string_pretty(&response).map_err(|e| format!("serialize: {e}"))?;
        std::fs::write(&self.staging, text)
            .map_err(|e| format!("write {}: {e}", self.staging.display()))?;
        std::fs::rename(&self.staging, &self.file).map_err(|e| {
            format!(
                "rename {} to {}: {e}",
                self.staging.display(),
                self.file.display()
            )
        })?;
        state.version = version;
        state.wasm = wasm;
        Ok(version)
    }
}

/// The ECDS counters [`Envoy::reconfigure`] watches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counters {
    success: u64,
    rejected: u64,
    failure: u64,
    reload: u64,
}

impl Envoy {
    /// Pushes `plugin_json` as the plugin configuration (`configuration.value`, everything
    /// else as before) through ECDS, and waits until Envoy applied it on every worker.
    ///
    /// # Errors
    /// When the Envoy was not built with [`crate::envoy::EnvoyBuilder::ecds`], the file cannot
    /// be written, Envoy rejects the update (the message has the log lines it wrote meanwhile;
    /// the old configuration keeps serving) or does not apply it within 20 s.
    pub fn reconfigure(&self, plugin_json: &str) -> Result<Applied, String> {
        self.reconfigure_filter(|wasm| {
            wasm["config"]["configuration"]["value"] = json!(plugin_json);
        })
    }

    /// Like [`Envoy::reconfigure`], with any change to the filter's `Wasm` message (`edit`
    /// gets its JSON: `{"@type": ..., "config": {"vm_config": ..., "configuration": ...}}`).
    ///
    /// # Errors
    /// As [`Envoy::reconfigure`].
    pub fn reconfigure_filter(&self, edit: impl FnOnce(&mut Value)) -> Result<Applied, String> {
        let ecds = self.ecds.as_ref().ok_or(
            "this Envoy takes its plugin configuration from the bootstrap: build it with .ecds()",
        )?;
        let before = self.ecds_counters(ecds)?;
        let log_start = self.log().len();
        let version = ecds.write(edit)?;
        let start = Instant::now();
        loop {
            let now = self.ecds_counters(ecds)?;
            if now.rejected > before.rejected || now.failure > before.failure {
                let log = self.log();
                let lines: Vec<&str> = log
                    .get(log_start..)
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| {
                        ["[warning]", "[error]", "[critical]"]
                            .iter()
                            .any(|level| l.contains(level))
                    })
                    .collect();
                return Err(format!(
                    "Envoy rejected version {version} of {}:\n{}",
                    ecds.file.display(),
                    lines.join("\n")
                ));
            }
            if now.success > before.success && now.reload > before.reload {
                return Ok(Applied {
                    version,
                    took: start.elapsed(),
                });
            }
            if start.elapsed() > APPLY_TIMEOUT {
                return Err(format!(
                    "version {version} of {} not applied after {APPLY_TIMEOUT:?} (counters before \
                     {before:?}, now {now:?}; an update identical to the last is accepted and \
                     not reloaded)",
                    ecds.file.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Envoy's ECDS counters for this filter (absent ones read 0).
    fn ecds_counters(&self, ecds: &Ecds) -> Result<Counters, String> {
        let prefix = ecds.stat_prefix();
        let url = self.admin_url("/stats?filter=^extension_config_discovery%5C.");
        let response = client::try_get_with(&url, &[])?;
        if response.status != 200 {
            return Err(format!("admin /stats answered {}", response.status));
        }
        let mut counters = Counters::default();
        for line in response.body.lines() {
            let Some((name, value)) = line.split_once(": ") else {
                continue;
            };
            let Some(stat) = name.strip_prefix(&prefix) else {
                continue;
            };
            let Ok(value) = value.trim().parse() else {
                continue;
            };
            match stat {
                "update_success" => counters.success = value,
                "update_rejected" => counters.rejected = value,
                "update_failure" => counters.failure = value,
                "config_reload" => counters.reload = value,
                _ => {}
            }
        }
        Ok(counters)
    }
}
