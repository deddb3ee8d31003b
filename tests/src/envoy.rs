//! Runs a real Envoy with the shipped configuration (`envoy/envoy.yaml`), re-pointed at
//! test ports, test upstreams and the built filter.
//!
//! The rendered config is the shipped one with only these changes: admin and listener
//! ports, the `.wasm` filename (absolute), the plugin configuration, the clusters (one per
//! upstream, copied from the first shipped cluster) and, on request, the Wasm filter removed
//! or its code fetched from a URL ([`crate::remote_code`]), or a connection manager field
//! (such as `tracing`) and clusters added.
//! So tests exercise the configuration users get, not a private copy.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::ecds::Ecds;
use crate::prometheus::Scrape;
use crate::remote_code::RemoteCode;
use crate::upstream::Upstream;
use crate::{client, paths, ports, schema};

/// Name of the Wasm HTTP filter in `http_filters`.
const WASM_FILTER: &str = "envoy.filters.http.wasm";
/// Name of the HTTP connection manager network filter.
const HCM: &str = "envoy.filters.network.http_connection_manager";
/// How long [`EnvoyBuilder::start`] waits for admin `/ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long [`Envoy::stop`] waits after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How many of the last log lines a start error shows (the whole log is mostly the
/// config dump; the reason is at the end).
const ERROR_LOG_LINES: usize = 60;

/// The outcome of `envoy --mode validate`.
#[derive(Debug, Clone)]
pub struct Validation {
    /// Whether Envoy exited with status 0.
    pub success: bool,
    /// Envoy's stdout followed by its stderr.
    pub output: String,
}

/// Configures an [`Envoy`]; see [`Envoy::builder`].
#[derive(Debug, Clone)]
pub struct EnvoyBuilder {
    upstreams: Vec<(String, u16)>,
    plugin_config: Option<String>,
    concurrency: usize,
    with_filter: bool,
    route_timeout: Option<Duration>,
    remote_code: Option<RemoteCode>,
    hcm_fields: Vec<(String, Value)>,
    extra_clusters: Vec<Value>,
    wasm_file: Option<PathBuf>,
    failure_policy: Option<String>,
    ecds: bool,
    filters_before: Vec<Value>,
}

impl EnvoyBuilder {
    /// One cluster per upstream, named after it, pointing at its port. Replaces the
    /// shipped clusters.
    pub fn upstreams<'a>(mut self, upstreams: impl IntoIterator<Item = &'a Upstream>) -> Self {
        self.upstreams = upstreams
            .into_iter()
            .map(|u| (u.name().to_owned(), u.port()))
            .collect();
        self
    }

    /// The plugin configuration, raw (put as is into `configuration.value`). Default: the
    /// shipped value with `backends` = one entry per upstream. Rendering fails when the JSON
    /// Schema and the parser disagree on it (see [`crate::schema`]).
    pub fn plugin_config(mut self, json: &str) -> Self {
        self.plugin_config = Some(json.to_owned());
        self
    }

    /// Worker threads (`--concurrency`, default 2).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// Sets `timeout` on the shipped routes (Envoy's default is 15 s).
    pub fn route_timeout(mut self, timeout: Duration) -> Self {
        self.route_timeout = Some(timeout);
        self
    }

    /// Loads the filter from a URL (`vm_config.code.remote`) instead of the built file, and
    /// adds the cluster it is fetched through.
    pub fn remote_code(mut self, remote: RemoteCode) -> Self {
        self.remote_code = Some(remote);
        self
    }

    /// Sets `field` of the HTTP connection manager's `typed_config` (for example `tracing`).
    pub fn hcm_field(mut self, field: &str, value: Value) -> Self {
        self.hcm_fields.push((field.to_owned(), value));
        self
    }

    /// Adds a cluster beside the upstreams' (for example the one a tracer exports to).
    pub fn extra_cluster(mut self, cluster: Value) -> Self {
        self.extra_clusters.push(cluster);
        self
    }

    /// Loads this `.wasm` instead of the built filter (for example the crash-trigger build,
    /// [`crate::crash_wasm`]).
    pub fn wasm_file(mut self, path: &Path) -> Self {
        self.wasm_file = Some(path.to_path_buf());
        self
    }

    /// Sets the Wasm filter's `failure_policy` (`FAIL_CLOSED`, `FAIL_OPEN`, `FAIL_RELOAD`)
    /// instead of the shipped one.
    pub fn failure_policy(mut self, policy: &str) -> Self {
        self.failure_policy = Some(policy.to_owned());
        self
    }

    /// Delivers the Wasm filter's config through ECDS from a watched file instead of inline
    /// (see [`crate::ecds`]), so [`Envoy::reconfigure`] can change it while Envoy runs.
    pub fn ecds(mut self) -> Self {
        self.ecds = true;
        self
    }

    /// Adds an HTTP filter ahead of eisodos' Wasm filter (for example the shared-data tool,
    /// [`crate::shared_data_tool`]); several run in the order added.
    pub fn filter_before(mut self, filter: Value) -> Self {
        self.filters_before.push(filter);
        self
    }

    /// Removes the Wasm filter from `http_filters` (the route protection must still hold).
    pub fn without_filter(mut self) -> Self {
        self.with_filter = false;
        self
    }

    /// The Envoy config this builder produces (as JSON), for the given ports.
    ///
    /// # Errors
    /// When the shipped config does not have the expected shape or the wasm is missing.
    pub fn render(&self, admin_port: u16, listener_port: u16) -> Result<Value, String> {
        let shipped = paths::shipped_config();
        let text = std::fs::read_to_string(&shipped)
            .map_err(|e| format!("read {}: {e}", shipped.display()))?;
        let mut config: Value =
            serde_yaml::from_str(&text).map_err(|e| format!("parse {}: {e}", shipped.display()))?;

        *at(&mut config, "/admin/address/socket_address/port_value")? = json!(admin_port);
        let listener = at(&mut config, "/static_resources/listeners/0")?;
        *at(listener, "/address/socket_address/port_value")? = json!(listener_port);

        let http_filters = http_filters(listener)?;
        let wasm_index = http_filters
            .iter()
            .position(|f| f["name"] == WASM_FILTER)
            .ok_or_else(|| format!("no {WASM_FILTER} in http_filters of {}", shipped.display()))?;
        if self.with_filter {
            let wasm = at(
                http_filters
                    .get_mut(wasm_index)
                    .ok_or("wasm filter index out of range")?,
                "/typed_config/config",
            )?;
            if let Some(remote) = &self.remote_code {
                *at(wasm, "/vm_config/code")? = remote.code();
            } else {
                let wasm_path = match &self.wasm_file {
                    Some(path) => path.clone(),
                    None => paths::try_wasm_path()?,
                };
                *at(wasm, "/vm_config/code/local/filename")? = json!(wasm_path.to_string_lossy());
            }
            if let Some(policy) = &self.failure_policy {
                *at(wasm, "/failure_policy")? = json!(policy);
            }
            let value = at(wasm, "/configuration/value")?;
            let plugin = match &self.plugin_config {
                Some(raw) => raw.clone(),
                None => default_plugin_config(value, &self.upstreams)?,
            };
            schema::agrees(&plugin)?;
            *value = json!(plugin);
        } else {
            http_filters.remove(wasm_index);
        }
        for (offset, filter) in self.filters_before.iter().enumerate() {
            http_filters.insert(wasm_index + offset, filter.clone());
        }

        for (field, value) in &self.hcm_fields {
            *hcm(listener)?
                .get_mut("typed_config")
                .ok_or_else(|| format!("no typed_config on the shipped {HCM}"))?
                .as_object_mut()
                .ok_or_else(|| format!("the shipped {HCM}'s typed_config is not an object"))?
                .entry(field.as_str())
                .or_insert(Value::Null) = value.clone();
        }

        if let Some(timeout) = self.route_timeout {
            let routes = at(
                hcm(listener)?,
                "/typed_config/route_config/virtual_hosts/0/routes",
            )?;
            for route in routes.as_array_mut().into_iter().flatten() {
                if let Some(action) = route.get_mut("route") {
                    action["timeout"] = json!(format!("{}s", timeout.as_secs_f64()));
                }
            }
        }

        let clusters = at(&mut config, "/static_resources/clusters")?;
        let template = clusters
            .get(0)
            .cloned()
            .ok_or_else(|| format!("no cluster in {} to copy", shipped.display()))?;
        let mut rendered = Vec::new();
        for (name, port) in &self.upstreams {
            let mut cluster = template.clone();
            *at(&mut cluster, "/name")? = json!(name);
            *at(&mut cluster, "/load_assignment/cluster_name")? = json!(name);
            *at(
                &mut cluster,
                "/load_assignment/endpoints/0/lb_endpoints/0/endpoint/address/socket_address/port_value",
            )? = json!(port);
            rendered.push(cluster);
        }
        if let Some(remote) = &self.remote_code {
            rendered.push(remote.cluster());
        }
        rendered.extend(self.extra_clusters.iter().cloned());
        *clusters = Value::Array(rendered);
        Ok(config)
    }

    /// Renders the config and starts Envoy; returns once admin `/ready` answers 200.
    ///
    /// # Panics
    /// When Envoy exits or is not ready within 20 s; the message includes its log.
    pub fn start(self) -> Envoy {
        self.try_start().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`EnvoyBuilder::start`], returning the error (with the log) instead.
    pub fn try_start(self) -> Result<Envoy, String> {
        let (dir, config_path, admin_port, listener_port, ecds) = self.write_config()?;
        let log = dir.path().join("envoy.log");
        let cwd = dir.path().to_path_buf();
        let mut envoy = launch(
            &config_path,
            &cwd,
            &log,
            self.concurrency,
            admin_port,
            listener_port,
            Some(dir),
        )?;
        envoy.ecds = ecds;
        Ok(envoy)
    }

    /// Renders the config and runs `envoy --mode validate` on it.
    ///
    /// # Panics
    /// When the config cannot be rendered or Envoy cannot be run at all.
    pub fn validate(self) -> Validation {
        let (dir, config_path, _, _, _) = self.write_config().unwrap_or_else(|e| panic!("{e}"));
        let bin = paths::envoy_bin();
        let output = Command::new(&bin)
            .args([
                "--mode",
                "validate",
                "-l",
                "info",
                "--disable-hot-restart",
                "-c",
            ])
            .arg(&config_path)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {} --mode validate: {e}", bin.display()));
        Validation {
            success: output.status.success(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        }
    }

    #[allow(clippy::type_complexity)]
    fn write_config(&self) -> Result<(tempfile::TempDir, PathBuf, u16, u16, Option<Ecds>), String> {
        let admin_port = ports::free_port();
        let listener_port = ports::free_port();
        let mut config = self.render(admin_port, listener_port)?;
        let dir = tempfile::Builder::new()
            .prefix("eisodos-envoy-")
            .tempdir()
            .map_err(|e| format!("create a tempdir: {e}"))?;
        let ecds = if self.ecds && self.with_filter {
            let mut filters =
                http_filters(at(&mut config, "/static_resources/listeners/0")?)?.clone();
            let filter = filters
                .iter_mut()
                .find(|f| f["name"] == WASM_FILTER)
                .ok_or_else(|| format!("no {WASM_FILTER} in http_filters"))?;
            let ecds = Ecds::install(&mut config, filter, dir.path())?;
            *http_filters(at(&mut config, "/static_resources/listeners/0")?)? = filters;
            Some(ecds)
        } else {
            None
        };
        let path = dir.path().join("envoy.json");
        let text = serde_json::to_string_pretty(&config).map_err(|e| format!("serialize: {e}"))?;
        std::fs::write(&path, text).map_err(|e| format!("write {}: {e}", path.display()))?;
        Ok((dir, path, admin_port, listener_port, ecds))
    }
}

/// A running Envoy. Dropping it stops it (SIGTERM, then SIGKILL after 5 s); if the
/// thread is panicking, its log is printed to stderr.
#[derive(Debug)]
pub struct Envoy {
    child: Child,
    exit: Option<ExitStatus>,
    admin_port: u16,
    listener_port: u16,
    log_path: PathBuf,
    config_path: PathBuf,
    /// The plugin configuration's discovery file, with [`EnvoyBuilder::ecds`].
    pub(crate) ecds: Option<Ecds>,
    _dir: Option<tempfile::TempDir>,
}

impl Envoy {
    /// Starts configuring an Envoy from the shipped config.
    pub fn builder() -> EnvoyBuilder {
        EnvoyBuilder {
            upstreams: Vec::new(),
            plugin_config: None,
            concurrency: 2,
            with_filter: true,
            route_timeout: None,
            remote_code: None,
            hcm_fields: Vec::new(),
            extra_clusters: Vec::new(),
            wasm_file: None,
            failure_policy: None,
            ecds: false,
            filters_before: Vec::new(),
        }
    }

    /// Starts Envoy on an existing config file, as is (no rendering): `cwd` is its working
    /// directory (relative paths in the config resolve from it), stdout and stderr go to
    /// `log`. The admin and listener ports are read from the config. Returns once admin
    /// `/ready` answers 200.
    ///
    /// # Errors
    /// When the config cannot be read, Envoy cannot be spawned, exits, or is not ready in
    /// 20 s (the message includes the log).
    pub fn start_with_config_file(
        config: &Path,
        cwd: &Path,
        log: &Path,
        concurrency: usize,
    ) -> Result<Envoy, String> {
        let text = std::fs::read_to_string(config)
            .map_err(|e| format!("read {}: {e}", config.display()))?;
        let value: Value =
            serde_yaml::from_str(&text).map_err(|e| format!("parse {}: {e}", config.display()))?;
        let port = |ptr: &str| {
            value
                .pointer(ptr)
                .and_then(Value::as_u64)
                .and_then(|p| u16::try_from(p).ok())
                .ok_or_else(|| format!("no port at {ptr} in {}", config.display()))
        };
        let admin_port = port("/admin/address/socket_address/port_value")?;
        let listener_port =
            port("/static_resources/listeners/0/address/socket_address/port_value")?;
        launch(
            config,
            cwd,
            log,
            concurrency,
            admin_port,
            listener_port,
            None,
        )
    }

    /// `http://127.0.0.1:<listener port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.listener_port)
    }

    /// `http://127.0.0.1:<admin port><path>`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    /// The listener port.
    pub fn listener_port(&self) -> u16 {
        self.listener_port
    }

    /// The admin port.
    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }

    /// GET an admin path and return the body.
    ///
    /// # Panics
    /// On a transport error or a non-200 answer.
    pub fn admin_get(&self, path: &str) -> String {
        let response = client::get(&self.admin_url(path));
        assert_eq!(
            response.status, 200,
            "admin GET {path} answered {}: {}",
            response.status, response.body
        );
        response.body
    }

    /// All stats, as the admin `/stats` text.
    pub fn stats(&self) -> String {
        self.admin_get("/stats")
    }

    /// The value of one counter or gauge by its full name (e.g.
    /// `cluster.backend_a.upstream_rq_total`), if Envoy has it.
    pub fn stat(&self, name: &str) -> Option<u64> {
        self.stats().lines().find_map(|line| {
            let (n, v) = line.split_once(": ")?;
            if n == name {
                v.trim().parse().ok()
            } else {
                None
            }
        })
    }

    /// Connections each of the first `workers` workers accepted on the main listener: that
    /// every worker served is what makes a test about shared state mean anything.
    pub fn connections_per_worker(&self, workers: usize) -> Vec<u64> {
        let listener = format!("listener.127.0.0.1_{}", self.listener_port());
        (0..workers)
            .map(|w| {
                self.stat(&format!("{listener}.worker_{w}.downstream_cx_total"))
                    .unwrap_or(0)
            })
            .collect()
    }

    /// Admin `/stats/prometheus`, parsed.
    ///
    /// # Panics
    /// When the scrape is not in the Prometheus text format.
    pub fn scrape(&self) -> Scrape {
        let text = self.admin_get("/stats/prometheus");
        Scrape::parse(&text).unwrap_or_else(|err| panic!("/stats/prometheus: {err}"))
    }

    /// Everything Envoy has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The access log so far: the shipped config writes one JSON object per request to stdout,
    /// which shares the log file with Envoy's own lines (those never start with `{`). Envoy
    /// writes it out every 10 s by default, so wait for the entries a test expects.
    pub fn access_log(&self) -> Vec<Value> {
        self.log()
            .lines()
            .filter(|line| line.starts_with('{'))
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Where the log is written.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The config file Envoy runs with.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops Envoy: SIGTERM, up to 5 s to exit, then SIGKILL. Idempotent.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = terminate(&mut self.child);
        }
        self.exit
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "\n===== Envoy log ({}) =====\n{}\n===== end of Envoy log =====\n",
                self.log_path.display(),
                self.log()
            );
        }
    }
}

fn launch(
    config: &Path,
    cwd: &Path,
    log: &Path,
    concurrency: usize,
    admin_port: u16,
    listener_port: u16,
    dir: Option<tempfile::TempDir>,
) -> Result<Envoy, String> {
    if let Some(parent) = log.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("create {}: {e}", parent.display()))?;
    }
    let log_file = File::create(log).map_err(|e| format!("create {}: {e}", log.display()))?;
    let log_err = log_file
        .try_clone()
        .map_err(|e| format!("clone {}: {e}", log.display()))?;
    let bin = paths::envoy_bin();
    let child = Command::new(&bin)
        .arg("-c")
        .arg(config)
        .args(["--concurrency", &concurrency.to_string()])
        .args(["--disable-hot-restart", "-l", "info"])
        // Access logs reach the log within 100 ms instead of Envoy's default 10 s, so a test
        // that reads them does not wait on the flush timer.
        .args(["--file-flush-interval-msec", "100"])
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_err)
        .spawn()
        .map_err(|e| {
            format!(
                "cannot run Envoy `{}`: {e} (set ENVOY_BIN or install it into .venv)",
                bin.display()
            )
        })?;
    let mut envoy = Envoy {
        child,
        exit: None,
        admin_port,
        listener_port,
        log_path: log.to_path_buf(),
        config_path: config.to_path_buf(),
        ecds: None,
        _dir: dir,
    };
    match wait_ready(&mut envoy) {
        Ok(()) => Ok(envoy),
        Err(why) => {
            envoy.stop();
            Err(format!(
                "Envoy ({}, config {}) {why}\n===== Envoy log ({}) =====\n{}\n===== end of Envoy log =====",
                bin.display(),
                config.display(),
                log.display(),
                tail(&envoy.log(), ERROR_LOG_LINES)
            ))
        }
    }
}

fn wait_ready(envoy: &mut Envoy) -> Result<(), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let ready_url = envoy.admin_url("/ready");
    let listener = std::net::SocketAddr::from(([127, 0, 0, 1], envoy.listener_port));
    loop {
        if let Ok(Some(status)) = envoy.child.try_wait() {
            envoy.exit = Some(status);
            return Err(format!("exited before it was ready ({status})"));
        }
        let ready = matches!(client::try_get_with(&ready_url, &[]), Ok(r) if r.status == 200);
        if ready
            && std::net::TcpStream::connect_timeout(&listener, Duration::from_millis(200)).is_ok()
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "not ready after {READY_TIMEOUT:?} (admin {ready_url}, listener {listener})"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last `n` lines of `text`, saying how many were left out.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let skip = lines.len().saturating_sub(n);
    let kept = lines.get(skip..).unwrap_or_default().join("\n");
    if skip == 0 {
        kept
    } else {
        format!("[... {skip} earlier lines left out ...]\n{kept}")
    }
}

/// SIGTERM by PID, wait up to [`STOP_TIMEOUT`], then SIGKILL; always reaps the child.
fn terminate(child: &mut Child) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: plain kill(2) on our own, not yet reaped, child.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait().ok()
}

/// The shipped plugin configuration with `backends` = one entry per upstream (each a copy
/// of the first shipped entry with its `cluster` replaced).
fn default_plugin_config(shipped: &Value, upstreams: &[(String, u16)]) -> Result<String, String> {
    let text = shipped
        .as_str()
        .ok_or("the shipped configuration.value is not a string")?;
    let mut plugin: Value = serde_json::from_str(text)
        .map_err(|e| format!("the shipped configuration.value is not JSON: {e}"))?;
    let template = plugin
        .pointer("/backends/0")
        .cloned()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    let backends = upstreams
        .iter()
        .map(|(name, _)| {
            let mut backend = template.clone();
            backend["cluster"] = json!(name);
            backend
        })
        .collect();
    plugin
        .as_object_mut()
        .ok_or("the shipped configuration.value is not a JSON object")?
        .insert("backends".to_owned(), Value::Array(backends));
    serde_json::to_string_pretty(&plugin).map_err(|e| format!("serialize: {e}"))
}

/// The listener's HTTP connection manager.
fn hcm(listener: &mut Value) -> Result<&mut Value, String> {
    listener
        .get_mut("filter_chains")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(|chain| chain.get_mut("filters").and_then(Value::as_array_mut))
        .flatten()
        .find(|f| f["name"] == HCM)
        .ok_or_else(|| format!("no {HCM} in the shipped listener"))
}

/// The `http_filters` list of the listener's HTTP connection manager.
fn http_filters(listener: &mut Value) -> Result<&mut Vec<Value>, String> {
    hcm(listener)?
        .pointer_mut("/typed_config/http_filters")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| format!("no http_filters in the shipped {HCM}"))
}

fn at<'a>(value: &'a mut Value, pointer: &str) -> Result<&'a mut Value, String> {
    value
        .pointer_mut(pointer)
        .ok_or_else(|| format!("the shipped envoy.yaml has no {pointer}"))
}
