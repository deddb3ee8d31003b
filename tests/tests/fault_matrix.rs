//! The fault matrix against real Envoy (`--concurrency 2`): one test per row, every row run by
//! the same [`run`] from a few lines of data ([`Row`]): which upstream misbehaves and how, the
//! plugin configuration, and what Envoy and eisodos are expected to do.
//!
//! Each row asserts, from values measured in the run and printed:
//! 1. nothing crashed: Envoy is alive, its admin answers, a follow-up request succeeds and
//!    the log has no Wasm panic or failed VM;
//! 2. health converges: from the moment the fault starts to `eisodos_backend_healthy` showing
//!    it, within the probe bound ([`down_bound`]) or the ejection bound; and back up within
//!    [`up_bound`] (or the ejection time) once the fault ends, where it ends;
//! 3. in-flight counts return to zero: every backend has a `max_requests`, so requests are
//!    counted; `eisodos_in_flight` and every worker's status page read 0 once the traffic
//!    stopped and a flush passed;
//! 4. failed client requests: at most the bound derived from the requests that started while
//!    the fault was not yet detected (a third of them go to the bad backend: round-robin over
//!    three), plus one per connection for the requests already in flight.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eisodos_tests::envoy::Envoy;
use eisodos_tests::faulty::{Fault, FaultyUpstream, Scope};
use eisodos_tests::timed_load::{Timed, TimedLoad};
use eisodos_tests::upstream::Upstream;
use eisodos_tests::{client, exclusive, wait};
use serde_json::Value;

const INTERVAL_MS: u64 = 100;
const TIMEOUT_MS: u64 = 150;
const UNHEALTHY_THRESHOLD: u64 = 2;
const HEALTHY_THRESHOLD: u64 = 2;
/// The health tick at a 100 ms interval: a quarter of it (at least 20 ms).
const TICK_MS: u64 = 25;
/// Passive ejection, for the row whose probes cannot see the fault.
const CONSECUTIVE_FAILURES: u64 = 3;
const BASE_EJECTION_MS: u64 = 1500;
/// The tick with passive ejection only (no probes): 100 ms.
const PASSIVE_TICK_MS: u64 = 100;
/// The period of the in-flight gauges (`FLUSH_PERIOD_MS`).
const FLUSH_MS: u64 = 1000;
/// What a measured time may exceed its bound by. The bounds assume timers that fire on time;
/// the measure adds the poll of the gauge (every 10 ms, and an admin answer on the busy 2-core
/// machine can take tens of ms) and Envoy's timers fire late when five test suites share two
/// cores: three runs on the shared machine measured at most 81 ms beyond a bound (a flap
/// detected after 581 ms against 500). 250 ms is ten ticks, and still leaves a flap phase
/// (1 s) longer than any bound plus it, so each flip must be seen within its own phase.
const SLACK_MS: u64 = 250;
/// Route timeout: a request the upstream never answers ends in a 504 this soon.
const ROUTE_TIMEOUT: Duration = Duration::from_secs(1);
/// Keep-alive client connections of the steady load, and their pause between requests.
const CONNECTIONS: usize = 3;
const PAUSE: Duration = Duration::from_millis(5);
/// Fresh connections asking for the status page before a state counts as every worker's: the
/// kernel spreads them over the two workers, so all 16 land on one with a chance of 2^-15.
const POLLS_FOR_EVERY_WORKER: usize = 16;

const GOOD: [&str; 2] = ["good_a", "good_b"];
const BAD: &str = "bad";

/// The probe bound: when a fault starts, a probe in flight may still get the old answer (it
/// fails by the timeout at the latest, and is written on the next tick); each of the
/// threshold's probes then goes out within an interval and a tick of the last write, fails
/// within `fail_ms` (at once for an error, the timeout for an upstream that does not answer in
/// time), and is written on the next tick; the gauge is set on the tick after.
fn down_bound(fail_ms: u64) -> u64 {
    (TIMEOUT_MS + TICK_MS) + UNHEALTHY_THRESHOLD * (INTERVAL_MS + 2 * TICK_MS + fail_ms) + TICK_MS
}

/// The same for coming back: `healthy_threshold` passing probes.
fn up_bound() -> u64 {
    (TIMEOUT_MS + TICK_MS) + HEALTHY_THRESHOLD * (INTERVAL_MS + 2 * TICK_MS) + TICK_MS
}

/// What happens to the upstreams in a row.
#[derive(Debug, Clone, Copy)]
enum Script {
    /// `bad`, one of three backends, misbehaves for `hold` after its fault was seen, then
    /// recovers.
    OneBad {
        fault: Fault,
        scope: Scope,
        /// How long a failing probe takes to fail: 0, or the timeout.
        fail_ms: u64,
        /// Passive ejection only (no probes): the fault is seen through failed requests.
        passive: bool,
    },
    /// `bad` answers 503 and 200 in turns of `period`, for `duration`.
    Flap {
        period: Duration,
        duration: Duration,
    },
    /// The plugin names a cluster Envoy does not have (`ghost`, besides the two good ones).
    AbsentCluster,
    /// Every upstream stops listening (connection refused), then comes back on its port.
    AllDown { hold: Duration },
}

/// One row of the matrix.
#[derive(Debug, Clone, Copy)]
struct Row {
    name: &'static str,
    script: Script,
    /// The `last_probe_status` the status page shows for the bad backend while the fault is
    /// on (0: the probe got no answer at all); `None` for a passive-only row.
    probe_status: Option<u16>,
    /// The statuses the failed client requests may have (0: a transport error, such as a
    /// response cut short).
    failure_statuses: &'static [u16],
    /// Lines the Envoy log must have (eisodos says what it saw).
    log: &'static [&'static str],
}

/// Everything a row measured.
#[derive(Debug, Default)]
struct Outcome {
    /// From each fault start to the gauge showing it, and the bound.
    detections: Vec<(Duration, u64)>,
    /// From each fault end to the gauge showing the backend back, and the bound.
    recoveries: Vec<(Duration, u64)>,
    failed: usize,
    failed_bound: usize,
    sent: usize,
    failure_statuses: BTreeMap<u16, usize>,
    probe_status: Option<Value>,
    in_flight_after: Vec<u64>,
}

/// When a poll's answer came, and `eisodos_backend_healthy` of each backend in it.
type GaugeSample = (Instant, BTreeMap<String, u64>);

/// `eisodos_backend_healthy` per backend, polled every 10 ms in the background.
struct GaugeWatch {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<GaugeSample>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GaugeWatch {
    fn start(envoy: &Envoy) -> Self {
        let url = envoy.admin_url("/stats?filter=backend_healthy");
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, samples) = (Arc::clone(&stop), Arc::clone(&samples));
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    if let Ok(response) = client::try_get_with(&url, &[]) {
                        let gauges = parse_gauges(&response.body);
                        samples.lock().unwrap().push((Instant::now(), gauges));
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        Self {
            stop,
            samples,
            thread: Some(thread),
        }
    }

    /// How long after `from` the gauge of `backend` first read `value`, if it did.
    fn first(&self, backend: &str, value: u64, from: Instant) -> Option<Duration> {
        self.samples
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, _)| *at >= from)
            .find(|(_, gauges)| gauges.get(backend) == Some(&value))
            .map(|(at, _)| at.duration_since(from))
    }

    /// Waits until the gauge of `backend` read `value` after `from`; how long after `from`.
    fn wait_for(&self, backend: &str, value: u64, from: Instant) -> Duration {
        wait::until(Duration::from_secs(20), || {
            self.first(backend, value, from).ok_or_else(|| {
                let last = self.samples.lock().unwrap().last().cloned();
                format!("eisodos_backend_healthy of {backend} never {value}; last {last:?}")
            })
        })
    }
}

impl Drop for GaugeWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `backend=.=<name>;.;backend_healthy: <0|1>` lines of admin `/stats`.
fn parse_gauges(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(": ")?;
            let backend = name.split("backend=.=").nth(1)?.split(";.;").next()?;
            Some((backend.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

fn plugin_config(backends: &[&str], script: Script) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|n| format!(r#"{{"cluster": "{n}", "max_requests": 1000}}"#))
        .collect();
    let health = match script {
        Script::OneBad { passive: true, .. } => format!(
            r#""outlier_detection": {{"consecutive_failures": {CONSECUTIVE_FAILURES},
                "base_ejection_ms": {BASE_EJECTION_MS}, "max_ejection_percent": 50}}"#
        ),
        _ => format!(
            r#""health_check": {{"path": "/healthz", "interval_ms": {INTERVAL_MS},
                "timeout_ms": {TIMEOUT_MS}, "unhealthy_threshold": {UNHEALTHY_THRESHOLD},
                "healthy_threshold": {HEALTHY_THRESHOLD}}}"#
        ),
    };
    format!(
        r#"{{"policy": "round_robin", "status_path": "/.eisodos/status", {health},
            "backends": [{}]}}"#,
        list.join(", ")
    )
}

/// The status page, as the worker that took a fresh connection sees it.
fn status(envoy: &Envoy) -> Value {
    let response = client::get_with(&envoy.url("/.eisodos/status"), &[("connection", "close")]);
    assert_eq!(response.status, 200, "{response:?}");
    serde_json::from_str(&response.body).unwrap()
}

/// Backend `index`'s `last_probe_status`, from a status page that shows it down. Called once
/// the gauge shows it down: the gauge is written by whichever worker learnt it first, and the
/// worker whose page answers follows the shared record on its next tick, so its page may be a
/// tick behind. A page still showing it up after a tick and the slack gives its status as is.
fn probe_status_once_down(envoy: &Envoy, index: usize) -> Value {
    let deadline = Instant::now() + Duration::from_millis(TICK_MS + SLACK_MS);
    loop {
        let backend = status(envoy)["backends"][index].clone();
        if backend["healthy"] == false || Instant::now() >= deadline {
            return backend["last_probe_status"].clone();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Requests that started in `[from, from + length]`.
fn started_in(samples: &[Timed], from: Instant, length: Duration) -> usize {
    samples
        .iter()
        .filter(|s| s.sent >= from && s.sent <= from + length)
        .count()
}

/// The failure bound of one window in which the bad backend was in rotation though faulty:
/// the third of the requests started in it that round-robin gives the bad backend (plus one
/// for the rounding and the ticket's position), and one per connection for a request already
/// on its way there when the window opened.
fn window_bound(samples: &[Timed], from: Instant, length: Duration) -> usize {
    started_in(samples, from, length).div_ceil(3) + 1 + CONNECTIONS
}

/// What proves the VM and Envoy survived.
fn assert_alive(envoy: &Envoy, row: &str) {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", envoy.pid())).unwrap_or_default();
    let state = stat.rsplit(')').next().unwrap_or("").trim_start();
    assert!(
        state.starts_with(['R', 'S', 'D']),
        "{row}: Envoy is not running: {stat:?}"
    );
    assert_eq!(
        client::get(&envoy.admin_url("/ready")).status,
        200,
        "{row}: admin"
    );
    let follow_up = client::get_with(&envoy.url("/follow-up"), &[("connection", "close")]);
    assert_eq!(
        follow_up.status, 200,
        "{row}: follow-up request: {follow_up:?}"
    );
    let log = envoy.log().to_ascii_lowercase();
    for sign in [
        "panicked at",
        "vm failed",
        "uncaught",
        "runtimeerror",
        "failed to load",
    ] {
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(sign)).collect();
        assert!(lines.is_empty(), "{row}: the log says {sign:?}: {lines:#?}");
    }
    let function_failed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("function: ") && l.contains(" failed"))
        .collect();
    assert!(
        function_failed.is_empty(),
        "{row}: a Wasm function failed: {function_failed:#?}"
    );
}

/// In-flight counts after the traffic stopped: the gauges (after a flush) and every worker's
/// status page.
fn in_flight_after(envoy: &Envoy, backends: &[&str]) -> Vec<u64> {
    std::thread::sleep(Duration::from_millis(
        FLUSH_MS + 2 * PASSIVE_TICK_MS + SLACK_MS,
    ));
    let scrape = envoy.scrape();
    let mut counts: Vec<u64> = backends
        .iter()
        .map(|b| {
            scrape
                .value("eisodos_in_flight", &[("backend", b)])
                .unwrap_or_else(|| panic!("no eisodos_in_flight for {b}")) as u64
        })
        .collect();
    for _ in 0..POLLS_FOR_EVERY_WORKER {
        let page = status(envoy);
        for (i, count) in counts.iter_mut().enumerate() {
            *count += page["backends"][i]["in_flight"]
                .as_u64()
                .unwrap_or(u64::MAX / 64);
        }
    }
    counts
}

fn run(row: &Row) -> Outcome {
    let _machine = exclusive::machine();
    let mut outcome = Outcome::default();
    let goods: Vec<Upstream> = GOOD.iter().map(|n| Upstream::builder(n).start()).collect();
    let mut bad = Some(FaultyUpstream::start(BAD, None));
    let bad_port = bad.as_ref().map(FaultyUpstream::port).unwrap();
    let (backends, envoy_upstreams): (Vec<&str>, Vec<&Upstream>) = match row.script {
        Script::AbsentCluster => (vec![GOOD[0], GOOD[1], "ghost"], goods.iter().collect()),
        _ => (vec![GOOD[0], GOOD[1], BAD], goods.iter().collect()),
    };
    let mut builder = Envoy::builder()
        .upstreams(envoy_upstreams)
        .plugin_config(&plugin_config(&backends, row.script))
        .concurrency(2)
        .route_timeout(ROUTE_TIMEOUT);
    if !matches!(row.script, Script::AbsentCluster) {
        builder = builder.extra_cluster(static_cluster(BAD, bad_port));
    }
    let envoy = builder.start();
    let ready = Instant::now();
    let watch = GaugeWatch::start(&envoy);
    let faulty = backends[2];

    let probe_status = |envoy: &Envoy| probe_status_once_down(envoy, 2);
    let load;
    let mut windows: Vec<(Instant, Duration)> = Vec::new();
    let mut extra_allowed = 0;
    let mut revived: Vec<Upstream> = Vec::new();
    match row.script {
        Script::OneBad {
            fault,
            scope,
            fail_ms,
            passive,
        } => {
            let bad_ref = bad.as_ref().unwrap();
            watch.wait_for(faulty, 1, ready);
            load = TimedLoad::start(envoy.listener_port(), "/", CONNECTIONS, PAUSE);
            wait::until(Duration::from_secs(10), || {
                (bad_ref.hits() > 10)
                    .then_some(())
                    .ok_or("no load on the bad backend yet".to_owned())
            });
            let start = Instant::now();
            bad_ref.set(fault, scope);
            let detected = watch.wait_for(faulty, 0, start);
            if passive {
                // Ejected after CONSECUTIVE_FAILURES failed requests, counted across workers;
                // the gauge is set on the ejecting worker's next tick, the other worker
                // stops routing there on its own next tick.
                outcome.detections.push((detected, 0));
                let window = detected + Duration::from_millis(2 * PASSIVE_TICK_MS + SLACK_MS);
                let samples_now = load.samples();
                extra_allowed = CONSECUTIVE_FAILURES as usize
                    + started_in(&samples_now, start + detected, window - detected).div_ceil(3)
                    + CONNECTIONS;
                std::thread::sleep(Duration::from_millis(BASE_EJECTION_MS / 2));
                bad_ref.set(Fault::None, Scope::All);
                let healed = Instant::now();
                // Back when the ejection runs out: BASE_EJECTION_MS after it began.
                let back = watch.wait_for(faulty, 1, healed);
                let ejected_for = (healed + back).duration_since(start + detected);
                outcome
                    .recoveries
                    .push((ejected_for, BASE_EJECTION_MS + PASSIVE_TICK_MS));
            } else {
                let bound = down_bound(fail_ms);
                outcome.detections.push((detected, bound));
                windows.push((start, Duration::from_millis(bound + TICK_MS + SLACK_MS)));
                outcome.probe_status = Some(probe_status(&envoy));
                std::thread::sleep(Duration::from_millis(500));
                bad_ref.set(Fault::None, Scope::All);
                let healed = Instant::now();
                let back = watch.wait_for(faulty, 1, healed);
                outcome.recoveries.push((back, up_bound()));
            }
        }
        Script::Flap { period, duration } => {
            let bad_ref = bad.as_ref().unwrap();
            watch.wait_for(faulty, 1, ready);
            load = TimedLoad::start(envoy.listener_port(), "/", CONNECTIONS, PAUSE);
            let begin = Instant::now();
            let mut flips = Vec::new();
            let mut down = false;
            while begin.elapsed() < duration {
                down = !down;
                let at = Instant::now();
                bad_ref.set(
                    if down {
                        Fault::Status(503)
                    } else {
                        Fault::None
                    },
                    Scope::All,
                );
                flips.push((at, down));
                if down {
                    windows.push((
                        at,
                        Duration::from_millis(down_bound(0) + TICK_MS + SLACK_MS),
                    ));
                }
                let next = begin + period * u32::try_from(flips.len()).unwrap();
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
                if down && outcome.probe_status.is_none() {
                    outcome.probe_status = Some(probe_status(&envoy));
                }
            }
            if down {
                bad_ref.set(Fault::None, Scope::All);
                flips.push((Instant::now(), false));
            }
            let last = flips.last().map(|f| f.0).unwrap();
            watch.wait_for(faulty, 1, last);
            for (at, down) in flips {
                let took = watch
                    .first(faulty, u64::from(!down), at)
                    .unwrap_or(Duration::MAX);
                if down {
                    outcome.detections.push((took, down_bound(0)));
                } else {
                    outcome.recoveries.push((took, up_bound()));
                }
            }
        }
        Script::AbsentCluster => {
            // The fault is there from the start: measured from when Envoy was ready, which
            // is after the first probes went out (so the measure is short, never long).
            load = TimedLoad::start(envoy.listener_port(), "/", CONNECTIONS, PAUSE);
            let detected = watch.wait_for(faulty, 0, ready);
            outcome.detections.push((detected, down_bound(0)));
            outcome.probe_status = Some(probe_status(&envoy));
            windows.push((
                ready,
                Duration::from_millis(down_bound(0) + TICK_MS + SLACK_MS),
            ));
            std::thread::sleep(Duration::from_millis(1000));
        }
        Script::AllDown { hold } => {
            watch.wait_for(faulty, 1, ready);
            load = TimedLoad::start(envoy.listener_port(), "/", CONNECTIONS, PAUSE);
            std::thread::sleep(Duration::from_millis(300));
            let start = Instant::now();
            let ports: Vec<u16> = goods.iter().map(Upstream::port).collect();
            drop(goods);
            drop(bad.take());
            let mut detected = Duration::ZERO;
            for backend in &backends {
                detected = detected.max(watch.wait_for(backend, 0, start));
            }
            outcome.detections.push((detected, down_bound(0)));
            outcome.probe_status = Some(probe_status(&envoy));
            std::thread::sleep(hold);
            revived = GOOD
                .iter()
                .zip(&ports)
                .map(|(n, p)| Upstream::builder(n).port(*p).start())
                .collect();
            bad = Some(FaultyUpstream::start(BAD, Some(bad_port)));
            let healed = Instant::now();
            let mut back = Duration::ZERO;
            for backend in &backends {
                back = back.max(watch.wait_for(backend, 1, healed));
            }
            outcome.recoveries.push((back, up_bound()));
            // Every request from the outage to the recovery bound may fail; none after.
            let until = healed + Duration::from_millis(up_bound() + TICK_MS + SLACK_MS);
            std::thread::sleep(Duration::from_millis(500));
            let samples = load.samples();
            let late: Vec<&Timed> = samples
                .iter()
                .filter(|s| s.sent > until && s.status != 200)
                .collect();
            assert!(
                late.is_empty(),
                "{}: failed after the recovery bound: {late:?}",
                row.name
            );
            windows.push((start, until.duration_since(start)));
        }
    }
    let samples = load.stop();
    outcome.sent = samples.len();
    let failed: Vec<&Timed> = samples.iter().filter(|s| s.status != 200).collect();
    if std::env::var_os("FAULT_DEBUG").is_some() {
        for s in &failed {
            eprintln!(
                "failed {} after {:?}",
                s.status,
                s.done.duration_since(s.sent)
            );
        }
    }
    outcome.failed = failed.len();
    for s in &failed {
        *outcome.failure_statuses.entry(s.status).or_insert(0) += 1;
    }
    outcome.failed_bound = if matches!(row.script, Script::AllDown { .. }) {
        windows
            .iter()
            .map(|(from, length)| started_in(&samples, *from, *length) + CONNECTIONS)
            .sum()
    } else {
        windows
            .iter()
            .map(|(from, length)| window_bound(&samples, *from, *length))
            .sum::<usize>()
            + extra_allowed
    };
    outcome.in_flight_after = in_flight_after(&envoy, &backends);
    eprintln!(
        "fault matrix | {} | detected {:?} | back {:?} | failed {} of {} (bound {}) {:?} | \
         probe status {:?} | in flight after {:?}",
        row.name,
        outcome
            .detections
            .iter()
            .map(|(d, b)| if *b > 0 {
                format!("{} ms (bound {b})", d.as_millis())
            } else {
                format!(
                    "{} ms (ejected after {CONSECUTIVE_FAILURES} failed requests)",
                    d.as_millis()
                )
            })
            .collect::<Vec<_>>(),
        outcome
            .recoveries
            .iter()
            .map(|(d, b)| format!("{} ms (bound {b})", d.as_millis()))
            .collect::<Vec<_>>(),
        outcome.failed,
        outcome.sent,
        outcome.failed_bound,
        outcome.failure_statuses,
        outcome.probe_status,
        outcome.in_flight_after,
    );
    assert_alive(&envoy, row.name);
    let log = envoy.log();
    for line in row.log {
        assert!(log.contains(line), "{}: the log lacks {line:?}", row.name);
    }
    check(row, &outcome);
    drop(watch);
    drop((revived, bad));
    outcome
}

fn check(row: &Row, outcome: &Outcome) {
    let name = row.name;
    for (took, bound) in &outcome.detections {
        if *bound > 0 {
            assert!(
                *took <= Duration::from_millis(bound + SLACK_MS),
                "{name}: detected after {took:?}, bound {bound} ms + {SLACK_MS} ms"
            );
        }
    }
    for (took, bound) in &outcome.recoveries {
        assert!(
            *took <= Duration::from_millis(bound + SLACK_MS),
            "{name}: back after {took:?}, bound {bound} ms + {SLACK_MS} ms"
        );
    }
    assert!(
        outcome.failed <= outcome.failed_bound,
        "{name}: {} requests failed, bound {}",
        outcome.failed,
        outcome.failed_bound
    );
    for status in outcome.failure_statuses.keys() {
        assert!(
            row.failure_statuses.contains(status),
            "{name}: a request failed with {status}: {:?}",
            outcome.failure_statuses
        );
    }
    if let Some(expected) = row.probe_status {
        assert_eq!(
            outcome.probe_status,
            Some(Value::from(expected)),
            "{name}: what the probe got"
        );
    }
    assert!(
        outcome.in_flight_after.iter().all(|&n| n == 0),
        "{name}: in flight after the traffic stopped: {:?}",
        outcome.in_flight_after
    );
}

/// A cluster like the harness's, for an upstream that is not an [`Upstream`].
fn static_cluster(name: &str, port: u16) -> Value {
    serde_json::json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                "address": "127.0.0.1", "port_value": port}}}}]}]
        }
    })
}

#[test]
fn reset_after_the_headers() {
    run(&Row {
        name: "reset after the headers",
        script: Script::OneBad {
            fault: Fault::ResetAfterHeaders,
            scope: Scope::All,
            fail_ms: 0,
            passive: false,
        },
        probe_status: Some(0),
        failure_statuses: &[0],
        log: &[
            "backend bad unhealthy: 2 consecutive probes failed",
            "backend bad healthy: 2 consecutive probes passed",
        ],
    });
}

#[test]
fn reset_mid_body_seen_only_by_requests() {
    run(&Row {
        name: "reset mid-body, passive ejection only",
        script: Script::OneBad {
            fault: Fault::ResetMidBody,
            scope: Scope::Traffic,
            fail_ms: 0,
            passive: true,
        },
        probe_status: None,
        failure_statuses: &[0],
        log: &["backend bad ejected for 1500 ms (ejection 1): consecutive failed requests"],
    });
}

#[test]
fn accepts_and_never_answers() {
    run(&Row {
        name: "accepts, never answers",
        script: Script::OneBad {
            fault: Fault::Silent,
            scope: Scope::All,
            fail_ms: TIMEOUT_MS,
            passive: false,
        },
        probe_status: Some(504),
        failure_statuses: &[504],
        log: &[
            "backend bad unhealthy: 2 consecutive probes failed",
            "backend bad healthy: 2 consecutive probes passed",
        ],
    });
}

#[test]
fn answers_with_bytes_that_are_not_http() {
    run(&Row {
        name: "answers with bytes that are not HTTP",
        script: Script::OneBad {
            fault: Fault::NotHttp,
            scope: Scope::All,
            fail_ms: 0,
            passive: false,
        },
        probe_status: Some(502),
        failure_statuses: &[502],
        log: &[
            "backend bad unhealthy: 2 consecutive probes failed",
            "backend bad healthy: 2 consecutive probes passed",
        ],
    });
}

#[test]
fn answers_after_the_probe_timeout() {
    run(&Row {
        name: "answers after the probe timeout",
        script: Script::OneBad {
            fault: Fault::Slow(Duration::from_millis(2 * TIMEOUT_MS)),
            scope: Scope::All,
            fail_ms: TIMEOUT_MS,
            passive: false,
        },
        probe_status: Some(504),
        failure_statuses: &[],
        log: &[
            "backend bad unhealthy: 2 consecutive probes failed",
            "backend bad healthy: 2 consecutive probes passed",
        ],
    });
}

#[test]
fn flaps_every_second_for_20_s() {
    run(&Row {
        name: "flaps every second for 20 s",
        script: Script::Flap {
            period: Duration::from_secs(1),
            duration: Duration::from_secs(20),
        },
        probe_status: Some(503),
        failure_statuses: &[503],
        log: &[
            "backend bad unhealthy: 2 consecutive probes failed",
            "backend bad healthy: 2 consecutive probes passed",
        ],
    });
}

#[test]
fn redirects_the_probe() {
    run(&Row {
        name: "redirects the probe",
        script: Script::OneBad {
            fault: Fault::Redirect,
            scope: Scope::Probes,
            fail_ms: 0,
            passive: false,
        },
        probe_status: Some(302),
        failure_statuses: &[],
        log: &[
            "backend bad unhealthy: 2 consecutive probes failed",
            "backend bad healthy: 2 consecutive probes passed",
        ],
    });
}

#[test]
fn a_cluster_envoy_does_not_have() {
    run(&Row {
        name: "a cluster Envoy does not have",
        script: Script::AbsentCluster,
        probe_status: Some(0),
        failure_statuses: &[503],
        log: &[
            "cannot probe ghost: Envoy refused the call",
            "backend ghost unhealthy: 2 consecutive probes failed",
        ],
    });
}

#[test]
fn all_backends_down_then_back() {
    run(&Row {
        name: "all backends down, then back",
        script: Script::AllDown {
            hold: Duration::from_secs(1),
        },
        probe_status: Some(503),
        failure_statuses: &[503],
        log: &[
            "no backend healthy: answering 503",
            "selection back to normal (was all_down)",
        ],
    });
}
