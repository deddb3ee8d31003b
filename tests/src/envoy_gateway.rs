//! Runs real Envoy on what Envoy Gateway would make of `deploy/envoy-gateway/`: the manifests
//! rendered by `tools/render_envoy_gateway.py` (Envoy Gateway's translation rules, endpoints on
//! loopback, the built `.wasm`), on free ports.
//!
//! ```no_run
//! use eisodos_tests::envoy_gateway::{self, Gateway};
//! use eisodos_tests::upstream::Upstream;
//!
//! let backends = envoy_gateway::backends();
//! let upstreams: Vec<Upstream> = backends
//!     .iter()
//!     .map(|b| Upstream::builder(&b.service).start())
//!     .collect();
//! let gateway = Gateway::builder().start(&upstreams);
//! ```

use std::ops::Deref;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::envoy::Envoy;
use crate::upstream::Upstream;
use crate::{paths, ports};

/// One eisodos backend of the shipped manifests and the Service behind it, as the render
/// script describes them (it also checks that the HTTPRoute and the eisodos configuration
/// agree on the cluster names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// The cluster Envoy Gateway generates for the backend's HTTPRoute rule.
    pub cluster: String,
    /// The Service the rule sends to.
    pub service: String,
    /// `backends[].authority`: the Host of the backend's probes.
    pub authority: Option<String>,
    /// The Host the rule rewrites requests to (its `URLRewrite` hostname).
    pub host_rewrite: Option<String>,
}

/// The render script.
pub fn script() -> PathBuf {
    paths::repo_root().join("tools/render_envoy_gateway.py")
}

/// The Python that runs the script: `$EISODOS_PYTHON`, else `.venv/bin/python` (where
/// `just setup` installs PyYAML), else `python3`.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("EISODOS_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let venv = paths::repo_root().join(".venv/bin/python");
    if venv.is_file() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

/// Runs the render script with `args`; its stdout, or why it failed.
fn run_script(args: &[String]) -> Result<String, String> {
    let output = Command::new(python())
        .arg(script())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("run {} {}: {e}", python().display(), script().display()))?;
    if !output.status.success() {
        return Err(format!(
            "{} {} failed ({}): {} (PyYAML missing? run `just setup`, or set EISODOS_PYTHON)",
            python().display(),
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    String::from_utf8(output.stdout).map_err(|e| format!("render output is not UTF-8: {e}"))
}

/// The shipped manifests' eisodos backends, in configuration order.
///
/// # Panics
/// When the script fails (the manifests disagree, or Python lacks PyYAML).
pub fn backends() -> Vec<Backend> {
    let out = run_script(&["--describe".to_owned()]).unwrap_or_else(|e| panic!("{e}"));
    let described: Vec<Value> = serde_json::from_str(&out).expect("--describe prints JSON");
    let text = |v: &Value, key: &str| v[key].as_str().map(str::to_owned);
    described
        .iter()
        .map(|b| Backend {
            cluster: text(b, "cluster").expect("a cluster"),
            service: text(b, "service").expect("a service"),
            authority: text(b, "authority"),
            host_rewrite: text(b, "host_rewrite"),
        })
        .collect()
}

/// Configures a [`Gateway`]; see [`Gateway::builder`].
#[derive(Debug, Clone)]
pub struct GatewayBuilder {
    concurrency: usize,
    bypass_wasm: bool,
}

impl GatewayBuilder {
    /// Worker threads (`--concurrency`, default 2).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// Removes the Wasm filters from the rendered config: what Envoy does to a request when
    /// the filter is bypassed (`failOpen: true` and a module that failed).
    pub fn bypass_wasm(mut self) -> Self {
        self.bypass_wasm = true;
        self
    }

    /// Renders the manifests with each Service's endpoint at the upstream named after it
    /// and starts Envoy on the result; returns once Envoy is ready.
    ///
    /// # Panics
    /// When the render fails or Envoy does not start (the message has its log).
    pub fn start(self, upstreams: &[Upstream]) -> Gateway {
        self.try_start(upstreams).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`GatewayBuilder::start`], returning the error instead.
    pub fn try_start(self, upstreams: &[Upstream]) -> Result<Gateway, String> {
        let dir = tempfile::Builder::new()
            .prefix("eisodos-envoy-gateway-")
            .tempdir()
            .map_err(|e| format!("create a tempdir: {e}"))?;
        let mut args = vec![
            "--wasm".to_owned(),
            paths::try_wasm_path()?.to_string_lossy().into_owned(),
            "--admin-port".to_owned(),
            ports::free_port().to_string(),
            "--listener-port".to_owned(),
            ports::free_port().to_string(),
        ];
        for upstream in upstreams {
            args.push("--endpoint".to_owned());
            args.push(format!("{}=127.0.0.1:{}", upstream.name(), upstream.port()));
        }
        let mut config: Value = serde_json::from_str(&run_script(&args)?)
            .map_err(|e| format!("the render is not JSON: {e}"))?;
        if self.bypass_wasm {
            remove_wasm_filters(&mut config)?;
        }
        let path = dir.path().join("envoy-gateway.json");
        let text = serde_json::to_string_pretty(&config).map_err(|e| format!("serialize: {e}"))?;
        std::fs::write(&path, text).map_err(|e| format!("write {}: {e}", path.display()))?;
        let envoy = Envoy::start_with_config_file(
            &path,
            dir.path(),
            &dir.path().join("envoy.log"),
            self.concurrency,
        )?;
        Ok(Gateway { envoy, _dir: dir })
    }
}

/// A running Envoy on the rendered Envoy Gateway config; derefs to [`Envoy`]. Dropping it
/// stops Envoy, then removes its directory (config and log).
#[derive(Debug)]
pub struct Gateway {
    // Declared first: dropped (Envoy stopped, its log printed on a panic) before the directory.
    envoy: Envoy,
    _dir: tempfile::TempDir,
}

impl Gateway {
    /// Starts configuring a gateway.
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder {
            concurrency: 2,
            bypass_wasm: false,
        }
    }
}

impl Deref for Gateway {
    type Target = Envoy;

    fn deref(&self) -> &Envoy {
        &self.envoy
    }
}

fn remove_wasm_filters(config: &mut Value) -> Result<(), String> {
    let filters = config
        .pointer_mut(
            "/static_resources/listeners/0/default_filter_chain/filters/0/typed_config/http_filters",
        )
        .and_then(Value::as_array_mut)
        .ok_or("the render has no http_filters where expected")?;
    let before = filters.len();
    filters.retain(|f| {
        !f["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("envoy.filters.http.wasm"))
    });
    if filters.len() == before {
        return Err("the render has no Wasm filter to remove".to_owned());
    }
    Ok(())
}
