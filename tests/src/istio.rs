//! eisodos as Istio would run it: `deploy/istio/` rendered by `tools/render_istio.py` into the
//! Envoy config istiod would hand the ingress gateway, on free loopback ports, in front of
//! three upstreams standing for the three subsets of `shop.default.svc.cluster.local`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::envoy::Envoy;
use crate::upstream::Upstream;
use crate::{client::Response, paths, ports, raw};

/// The Service the subsets belong to: the Host the backends serve and the probes send.
pub const SERVICE_HOST: &str = "shop.default.svc.cluster.local";
/// The public host the Gateway and the VirtualService serve.
pub const PUBLIC_HOST: &str = "shop.example.com";
/// The subsets, as `tools/istio-mesh.yaml` names their endpoints.
pub const SUBSETS: [&str; 3] = ["blue", "green", "canary"];
/// The port the gateway pod binds for the Gateway's server (the Service's targetPort).
const GATEWAY_TARGET_PORT: u16 = 8080;

/// The Envoy cluster Istio builds for a subset of [`SERVICE_HOST`]:
/// `outbound|80|<subset>|shop.default.svc.cluster.local`.
pub fn cluster(subset: &str) -> String {
    format!("outbound|80|{subset}|{SERVICE_HOST}")
}

/// One upstream per subset, named after its cluster, answering only [`SERVICE_HOST`].
pub fn strict_upstreams() -> Vec<Upstream> {
    SUBSETS
        .iter()
        .map(|s| {
            Upstream::builder(&cluster(s))
                .only_host(SERVICE_HOST)
                .start()
        })
        .collect()
}

/// The Python that runs the render: `.venv`'s (where `just setup` installs PyYAML), else
/// `python3` on `PATH`.
fn python() -> PathBuf {
    let venv = paths::repo_root().join(".venv/bin/python");
    if venv.is_file() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

/// Runs `tools/render_istio.py` on `deploy` (default `deploy/istio`) with these ports and
/// returns the config, or the render's error output.
pub fn render(
    deploy: Option<&Path>,
    admin_port: u16,
    listener_port: u16,
    upstreams: &[Upstream],
) -> Result<Value, String> {
    let root = paths::repo_root();
    let mut command = Command::new(python());
    command
        .arg(root.join("tools/render_istio.py"))
        .arg("--wasm")
        .arg(paths::try_wasm_path()?)
        .args(["--admin-port", &admin_port.to_string()])
        .args([
            "--listen",
            &format!("{GATEWAY_TARGET_PORT}={listener_port}"),
        ]);
    if let Some(deploy) = deploy {
        command.arg("--deploy").arg(deploy);
    }
    for (subset, upstream) in SUBSETS.iter().zip(upstreams) {
        command.args(["--endpoint", &format!("{subset}={}", upstream.port())]);
    }
    let output = command
        .output()
        .map_err(|e| format!("run {}: {e}", python().display()))?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    serde_json::from_slice(&output.stdout).map_err(|e| format!("the render's output: {e}"))
}

/// The gateway listener's connection manager config.
pub fn hcm(config: &mut Value) -> &mut Value {
    config
        .pointer_mut("/static_resources/listeners/0/filter_chains/0/filters/0/typed_config")
        .expect("the rendered listener has a connection manager")
}

/// The rendered Wasm filter's config (`typed_config.config`).
pub fn wasm_config(config: &mut Value) -> &mut Value {
    hcm(config)["http_filters"]
        .as_array_mut()
        .expect("http_filters")
        .iter_mut()
        .find(|f| {
            f["typed_config"]["@type"]
                == "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
        })
        .map(|f| &mut f["typed_config"]["config"])
        .expect("the rendered config has the eisodos Wasm filter")
}

/// A running gateway: Envoy on the rendered config, with its working directory.
pub struct Gateway {
    /// The Envoy process.
    pub envoy: Envoy,
    _dir: tempfile::TempDir,
}

/// Renders `deploy/istio` for `upstreams`, lets `edit` change the config (a test that takes
/// a filter out, say), and starts Envoy on it with two workers.
///
/// # Panics
/// When the render fails or Envoy does not start; the message includes its log.
pub fn start(upstreams: &[Upstream], edit: impl FnOnce(&mut Value)) -> Gateway {
    let mut config = render(None, ports::free_port(), ports::free_port(), upstreams)
        .unwrap_or_else(|e| panic!("render deploy/istio: {e}"));
    edit(&mut config);
    let dir = tempfile::Builder::new()
        .prefix("eisodos-istio-")
        .tempdir()
        .expect("a tempdir");
    let path = dir.path().join("envoy.json");
    std::fs::write(&path, serde_json::to_string_pretty(&config).expect("JSON")).expect("write");
    let envoy = Envoy::start_with_config_file(&path, dir.path(), &dir.path().join("envoy.log"), 2)
        .unwrap_or_else(|e| panic!("{e}"));
    Gateway { envoy, _dir: dir }
}

impl Gateway {
    /// GET `path` on a new connection with `Host: shop.example.com` and `headers`.
    ///
    /// # Panics
    /// On a transport error.
    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        let mut request =
            format!("GET {path} HTTP/1.1\r\nhost: {PUBLIC_HOST}\r\nconnection: close\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        raw::exchange(self.envoy.listener_port(), request.as_bytes())
            .unwrap_or_else(|e| panic!("GET {path} through the gateway: {e}"))
    }
}
