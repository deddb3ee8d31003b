//! `--instructions`: Envoy's CPU instructions per request, counted by valgrind's callgrind.
//!
//! Wall-clock CPU time on a small shared VM moves by several µs per request from run to run;
//! an instruction count does not (the same binary, config and requests give the same count to
//! within ~0.1%, whatever else the machine is doing). So the small differences the targets
//! speak of (1 µs ≈ 3k instructions here) are measured this way: each variant's Envoy runs
//! under callgrind with one worker, gets warmed up, then the counters are zeroed, N sequential
//! requests are sent on one keep-alive connection and the counters dumped. Work that goes on
//! without traffic (timers, health-check ticks and probes) is measured over an idle interval
//! just before and subtracted at its rate, since under valgrind requests are ~100× slower
//! than in production and that work would otherwise be charged to them.
//!
//! Instructions are not time: cache misses, lock waits and the kernel are not in them. The
//! timed benchmark says what things cost; this one says, reproducibly, where the difference is.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use eisodos_tests::paths;
use eisodos_tests::ports::free_port;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::configs::{self, Routing};
use crate::Variant;

/// Requests sent before counting (JIT tiers, connection pools).
const WARM_UP: usize = 600;
/// Requests counted.
pub const REQUESTS: usize = 1000;
/// Idle interval whose rate is subtracted.
const IDLE: Duration = Duration::from_secs(3);

/// One variant's count.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Count {
    /// Variant name.
    pub variant: String,
    /// Envoy instructions per request, idle work subtracted.
    pub per_request: f64,
    /// Envoy instructions per second with no traffic (subtracted above).
    pub idle_per_second: f64,
}

/// Counts every variant in turn over `upstream_ports`.
pub fn count_all(variants: &[Variant], upstream_ports: &[u16], work: &Path) -> Vec<Count> {
    variants
        .iter()
        .map(|variant| {
            let count = count(variant, upstream_ports, work);
            eprintln!(
                "instructions | {:<34} {:>9.0} Ir/request  (idle {:.0} Ir/s subtracted)",
                count.variant, count.per_request, count.idle_per_second
            );
            count
        })
        .collect()
}

fn count(variant: &Variant, upstream_ports: &[u16], work: &Path) -> Count {
    let (listener, admin) = (free_port(), free_port());
    let wasm_dir = paths::repo_root().join("target/wasm32-wasip1/release");
    let routing = patient_probes(&variant.routing);
    let mut config = configs::render(&routing, listener, admin, upstream_ports, &wasm_dir);
    // Without these, Envoy's periodic stats flush and watchdog work vary with wall time.
    config["stats_flush_on_admin"] = json!(true);
    let relaxed = json!({"miss_timeout": "3600s", "megamiss_timeout": "3600s"});
    config["watchdogs"] = json!({"main_thread_watchdog": relaxed, "worker_watchdog": relaxed});
    let config_path = work.join("envoy-callgrind.json");
    std::fs::write(&config_path, config.to_string()).expect("write the Envoy config");
    let dumps = work.join("callgrind");
    let _ = std::fs::remove_dir_all(&dumps);
    std::fs::create_dir_all(&dumps).expect("create the dump directory");
    let mut envoy = Callgrind::start(&config_path, &dumps, work);
    wait_ready(admin, &mut envoy);
    send(listener, WARM_UP);

    envoy.zero();
    let idle_start = Instant::now();
    std::thread::sleep(IDLE);
    let idle = envoy.dump(idle_start.elapsed());
    let idle_per_second = idle.0 as f64 / idle.1.as_secs_f64();

    envoy.zero();
    let start = Instant::now();
    send(listener, REQUESTS);
    let (total, elapsed) = envoy.dump(start.elapsed());
    let per_request = (total as f64 - idle_per_second * elapsed.as_secs_f64()) / REQUESTS as f64;
    Count {
        variant: variant.name.to_owned(),
        per_request,
        idle_per_second,
    }
}

/// The routing with its probes' timeout at the maximum (60 s). Under callgrind Envoy runs
/// tens of times slower: a probe answer that takes a millisecond can miss the usual 500 ms
/// timeout, three misses take a backend out, and the count stops at a local 503. The probes'
/// schedule (the interval) and so their share of the idle work are unchanged.
fn patient_probes(routing: &Routing) -> Routing {
    let mut routing = routing.clone();
    if let Routing::Filter { plugin_config, .. } = &mut routing {
        if let Some(check) = plugin_config.get_mut("health_check") {
            check["timeout_ms"] = json!(60_000);
        }
    }
    routing
}

/// Envoy (`--concurrency 1`) under `valgrind --tool=callgrind`; killed on drop.
struct Callgrind {
    child: Child,
    dumps: PathBuf,
}

impl Callgrind {
    fn start(config: &Path, dumps: &Path, work: &Path) -> Self {
        let log = std::fs::File::create(work.join("envoy-callgrind.log")).expect("create log");
        let child = Command::new("valgrind")
            .args([
                "--tool=callgrind",
                "--smc-check=all",
                "--trace-children=yes",
            ])
            // The .venv `envoy` is a Python script that execs the real binary.
            .arg(format!("--callgrind-out-file={}/cg.%p", dumps.display()))
            .arg(paths::envoy_bin())
            .arg("-c")
            .arg(config)
            .args([
                "--concurrency",
                "1",
                "--disable-hot-restart",
                "-l",
                "warning",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("run valgrind (apt-get install valgrind)");
        Self {
            child,
            dumps: dumps.to_owned(),
        }
    }

    fn control(&self, flag: &str) {
        let status = Command::new("callgrind_control")
            .arg(flag)
            .arg(self.child.id().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run callgrind_control");
        assert!(status.success(), "callgrind_control {flag} failed");
    }

    fn zero(&self) {
        self.control("-z");
    }

    /// Dumps the counters; returns the instructions since the last zero and `elapsed`.
    fn dump(&self, elapsed: Duration) -> (u64, Duration) {
        let before = self.dump_files();
        self.control("-d");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let new: Vec<PathBuf> = self
                .dump_files()
                .into_iter()
                .filter(|path| !before.contains(path))
                .collect();
            if let Some(path) = new.first() {
                if let Some(total) = summary(path) {
                    let _ = std::fs::remove_file(path);
                    return (total, elapsed);
                }
            }
            assert!(Instant::now() < deadline, "no callgrind dump appeared");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn dump_files(&self) -> Vec<PathBuf> {
        std::fs::read_dir(&self.dumps)
            .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default()
    }
}

impl Drop for Callgrind {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `summary:` line of a callgrind dump (complete once it is there).
fn summary(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("summary:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Waits (up to 3 minutes: V8 under valgrind starts slowly) for admin `/ready`.
fn wait_ready(admin: u16, envoy: &mut Callgrind) {
    let deadline = Instant::now() + Duration::from_secs(180);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = envoy.child.try_wait() {
            panic!("Envoy under valgrind exited: {status}");
        }
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", admin)) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let request = "GET /ready HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n";
            let mut response = String::new();
            if stream.write_all(request.as_bytes()).is_ok()
                && stream.read_to_string(&mut response).is_ok()
                && response.starts_with("HTTP/1.1 200")
            {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("Envoy under valgrind not ready in 3 minutes");
}

/// `n` sequential GETs on one keep-alive connection, each with a hash key; all must be 200.
fn send(port: u16, n: usize) {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to Envoy");
    stream.set_nodelay(true).expect("nodelay");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut writer = stream.try_clone().expect("clone the stream");
    let mut reader = BufReader::new(stream);
    for i in 0..n {
        let request = format!(
            "GET / HTTP/1.1\r\nhost: bench.eisodos\r\nx-user-id: user-{}\r\n\r\n",
            i % 64
        );
        writer.write_all(request.as_bytes()).expect("send");
        let mut status = String::new();
        reader.read_line(&mut status).expect("status line");
        assert!(status.starts_with("HTTP/1.1 200"), "request {i}: {status}");
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("header");
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().expect("content-length");
                }
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).expect("body");
    }
}
