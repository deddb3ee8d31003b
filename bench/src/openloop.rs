//! The open-loop balance section (`--only openloop`): balance quality at a fixed arrival rate
//! set from the capacity the same run measured, so the figures mean the same on a fast or a
//! slow machine. A closed loop at saturation measures CPU cost, not balance: there every
//! backend's queue grows and in-flight counts stop telling slow from fast.
//!
//! First native ROUND_ROBIN's capacity over three fast upstreams (closed loop, 64
//! connections, median of three); then each scenario × load (30, 60, 90% of it): `ROUNDS`
//! rounds in which every variant runs once on a fresh Envoy, `--concurrency 2` (1 s of warm-up
//! at the rate, then `SECONDS` s measured, latencies from the intended send time), the rounds
//! pooled per variant. Interleaving short runs spreads every variant over the same moments of
//! a busy machine, where one long run each would give one variant a quiet minute and the
//! next a loaded one. Fast upstreams answer after `FAST_MS`; the third ("slow") is the
//! scenario's. Capacity is measured again at the end, to show how much the machine moved.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use eisodos_tests::envoy::Envoy;
use eisodos_tests::paths;
use eisodos_tests::ports::free_port;
use eisodos_tests::upstream::Upstream;
use serde::Serialize;
use serde_json::{json, Value};

use crate::configs::{self, Routing};
use crate::openloop_gen::{self, OpenLoopResult, Schedule};
use crate::{loadgen, process, Variant};

/// Measured seconds per run (default).
pub const SECONDS: u64 = 3;
/// Runs per scenario × load × variant (default), interleaved and pooled.
pub const ROUNDS: usize = 3;
/// The fast upstreams' service time.
const FAST_MS: u64 = 2;
/// Load levels, as fractions of the measured capacity.
const LOADS: [f64; 3] = [0.3, 0.6, 0.9];
/// The most client connections a run may open.
const MAX_CONNECTIONS: usize = 512;

/// What the third upstream does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// `FAST_MS` + 20 ms.
    Slower20,
    /// 5 × `FAST_MS`.
    Times5,
    /// `FAST_MS`, then + 20 ms during the middle third of each run, then `FAST_MS` again.
    SlowMidRun,
    /// 503 at once.
    FailFast,
}

impl Scenario {
    const ALL: [Scenario; 4] = [
        Scenario::Slower20,
        Scenario::Times5,
        Scenario::SlowMidRun,
        Scenario::FailFast,
    ];

    fn title(self) -> String {
        match self {
            Scenario::Slower20 => format!(
                "one upstream 20 ms slower ({FAST_MS} ms and {} ms)",
                FAST_MS + 20
            ),
            Scenario::Times5 => format!(
                "one upstream 5× slower ({FAST_MS} ms and {} ms)",
                FAST_MS * 5
            ),
            Scenario::SlowMidRun => {
                "one upstream 20 ms slower in the middle third of each run, then recovered".into()
            }
            Scenario::FailFast => "one upstream answers 503 at once".into(),
        }
    }

    fn key(self) -> &'static str {
        match self {
            Scenario::Slower20 => "slower_20ms",
            Scenario::Times5 => "slower_5x",
            Scenario::SlowMidRun => "slow_mid_run",
            Scenario::FailFast => "fail_fast_503",
        }
    }

    fn third(self) -> Upstream {
        let builder = Upstream::builder("slow");
        match self {
            Scenario::Slower20 => builder.delay(Duration::from_millis(FAST_MS + 20)),
            Scenario::Times5 => builder.delay(Duration::from_millis(FAST_MS * 5)),
            Scenario::SlowMidRun => builder.delay(Duration::from_millis(FAST_MS)),
            Scenario::FailFast => builder.delay(Duration::from_millis(FAST_MS)).status(503),
        }
        .start()
    }
}

/// One row of the open-loop table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    scenario: String,
    load: f64,
    variant: String,
    target_rps: f64,
    achieved_rps: f64,
    slow_share: f64,
    /// Mid-run scenario only: the share while slow, and after it recovered.
    slow_share_during: Option<f64>,
    slow_share_after: Option<f64>,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    /// Non-2xx answers, transport errors and requests unfinished at the end.
    failed: u64,
    /// Requests due while all connections were busy (sent late, latency from the due time).
    waited: u64,
    /// The generator's own lateness, p99: from the due time to the hand-over to a connection.
    send_lag_p99_ms: f64,
    connections: usize,
    /// Fail-fast scenario only: passive ejections over all rounds (warm-up included), from
    /// eisodos' `ejections_total` or the native cluster's `ejections_enforced_total`.
    ejections: Option<u64>,
}

/// The whole section's result.
#[derive(Debug, Serialize)]
pub struct OpenLoopReport {
    machine: String,
    nproc: usize,
    envoy: String,
    load_average_before: String,
    load_average_after: String,
    capacity_rps: f64,
    capacity_rps_at_end: f64,
    seconds: u64,
    rounds: usize,
    fast_ms: u64,
    rows: Vec<Row>,
}

fn native(name: &'static str, lb_policy: &'static str, extra: Value) -> Variant {
    Variant {
        name,
        routing: Routing::Native {
            lb_policy,
            extra: Some(extra),
        },
    }
}

/// Envoy's own passive ejection, for a fair fail-fast row: 5 consecutive 5xx.
fn native_outlier() -> Value {
    json!({"outlier_detection": {"consecutive_5xx": 5, "interval": "1s",
        "base_ejection_time": "30s", "max_ejection_percent": 50}})
}

fn eisodos(name: &'static str, policy: Value, clusters: usize) -> Variant {
    let mut plugin = policy;
    plugin["outlier_detection"] = json!({"consecutive_failures": 5});
    Variant {
        name,
        routing: Routing::Filter {
            wasm: "eisodos.wasm",
            plugin_config: plugin,
            clusters,
        },
    }
}

/// The latency-weighted variant's decay, ms.
pub const LATENCY_DECAY_MS: u64 = 10_000;

fn variants(decays: &[u64]) -> Vec<Variant> {
    let mut full_scan = native_outlier();
    full_scan["load_balancing_policy"] = json!({"policies": [{"typed_extension_config": {
        "name": "envoy.load_balancing_policies.least_request",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest",
            "selection_method": "FULL_SCAN"}}}]});
    let mut all = vec![
        native("native ROUND_ROBIN", "ROUND_ROBIN", native_outlier()),
        native("native LEAST_REQUEST", "LEAST_REQUEST", native_outlier()),
        native("native LEAST_REQUEST FULL_SCAN", "LEAST_REQUEST", full_scan),
        eisodos("eisodos round_robin", json!({"policy": "round_robin"}), 3),
        eisodos(
            "eisodos least_request",
            json!({"policy": "least_request"}),
            3,
        ),
    ];
    for &decay in decays {
        let name: &'static str = if decay == LATENCY_DECAY_MS {
            "eisodos latency-weighted"
        } else {
            Box::leak(format!("eisodos latency-weighted, decay {decay} ms").into_boxed_str())
        };
        all.push(eisodos(
            name,
            json!({"policy": "least_request", "least_request": {"latency_decay_ms": decay}}),
            3,
        ));
    }
    if decays.contains(&LATENCY_DECAY_MS) {
        // The same without the degraded screen: what the screen adds.
        all.push(eisodos(
            "eisodos latency-weighted, no screen (degraded_ratio 0)",
            json!({"policy": "least_request", "least_request": {"latency_decay_ms": LATENCY_DECAY_MS, "degraded_ratio": 0}}),
            3,
        ));
    }
    all
}

/// The p99 goal's reference: the latency-weighted variant over the two fast upstreams only.
fn baseline() -> Variant {
    eisodos(
        "baseline: slow upstream removed (eisodos latency-weighted, 2 fast)",
        json!({"policy": "least_request", "least_request": {"latency_decay_ms": LATENCY_DECAY_MS}}),
        2,
    )
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn start_envoy(variant: &Variant, ports: &[u16], work: &Path) -> (Envoy, u16) {
    let (listener, admin) = (free_port(), free_port());
    let wasm_dir = paths::repo_root().join("target/wasm32-wasip1/release");
    let config = configs::render(&variant.routing, listener, admin, ports, &wasm_dir);
    let config_path = work.join("envoy.json");
    std::fs::write(&config_path, config.to_string()).expect("write the Envoy config");
    let envoy = Envoy::start_with_config_file(&config_path, work, &work.join("envoy.log"), 2)
        .unwrap_or_else(|e| panic!("{}: {e}", variant.name));
    (envoy, listener)
}

/// Native ROUND_ROBIN's closed-loop throughput over `ports`: 64 connections, 1 s warm-up, 5 s.
fn capacity(ports: &[u16], work: &Path) -> f64 {
    let variant = native("native ROUND_ROBIN (capacity)", "ROUND_ROBIN", json!({}));
    let (mut envoy, listener) = start_envoy(&variant, ports, work);
    loadgen::run(listener, 64, Duration::from_secs(1));
    let load = loadgen::run(listener, 64, Duration::from_secs(5));
    envoy.stop();
    load.rps()
}

fn schedule(rate: f64, seconds: u64) -> Schedule {
    Schedule {
        rate,
        duration: Duration::from_secs(seconds),
        initial_connections: 16,
        max_connections: MAX_CONNECTIONS,
        grace: Duration::from_secs(2),
    }
}

/// The seconds of a run during which the mid-run scenario's upstream is slow: the middle
/// third.
fn slow_window(seconds: u64) -> (usize, usize) {
    let third = (seconds as usize).div_ceil(3);
    (third, (2 * third).min(seconds as usize))
}

/// Passive ejections Envoy counted: eisodos' `ejections_total` of every backend, or the
/// native cluster's `outlier_detection.ejections_enforced_total`.
fn ejections(envoy: &Envoy) -> u64 {
    envoy
        .stats()
        .lines()
        .filter_map(|line| line.split_once(": "))
        .filter(|(name, _)| {
            name.ends_with(";.;ejections_total")
                || name.ends_with(".outlier_detection.ejections_enforced_total")
        })
        .filter_map(|(_, value)| value.trim().parse::<u64>().ok())
        .sum()
}

/// One run of one variant on a fresh Envoy: 1 s of warm-up at the rate, then `seconds`; with
/// the passive ejections counted in the fail-fast scenario.
fn run_one(
    variant: &Variant,
    scenario: Scenario,
    rate: f64,
    ports: &[u16],
    slow: &Upstream,
    seconds: u64,
    work: &Path,
) -> (OpenLoopResult, Option<u64>) {
    let (mut envoy, listener) = start_envoy(variant, ports, work);
    openloop_gen::run(listener, schedule(rate, 1), |_| {});
    let window = slow_window(seconds);
    let result = openloop_gen::run(listener, schedule(rate, seconds), |second| {
        if scenario == Scenario::SlowMidRun {
            let slow_now = (window.0..window.1).contains(&second);
            let extra = if slow_now { 20 } else { 0 };
            slow.set_delay(Duration::from_millis(FAST_MS + extra));
        }
    });
    let ejected = (scenario == Scenario::FailFast).then(|| ejections(&envoy));
    envoy.stop();
    if scenario == Scenario::SlowMidRun {
        slow.set_delay(Duration::from_millis(FAST_MS));
    }
    (result, ejected)
}

fn row(
    scenario: &str,
    mid: bool,
    load: f64,
    variant: &str,
    rate: f64,
    seconds: u64,
    r: &OpenLoopResult,
) -> Row {
    let window = slow_window(seconds);
    let seconds = seconds as usize;
    Row {
        scenario: scenario.into(),
        load,
        variant: variant.into(),
        target_rps: rate,
        achieved_rps: r.achieved_rps(),
        slow_share: r.share("slow", 0, seconds),
        slow_share_during: mid.then(|| r.share("slow", window.0, window.1)),
        slow_share_after: mid.then(|| r.share("slow", window.1, seconds)),
        p50_ms: r.percentile_ms(0.5),
        p99_ms: r.percentile_ms(0.99),
        p999_ms: r.percentile_ms(0.999),
        failed: r.errors + r.unfinished,
        waited: r.waited,
        send_lag_p99_ms: r.send_lag_us.value_at_quantile(0.99) as f64 / 1000.0,
        connections: r.connections,
        ejections: None,
    }
}

/// Options of the section: which scenarios and decays, how many load levels.
pub struct Selection {
    /// Only scenarios whose key contains this.
    pub scenario: Option<String>,
    /// Latency-weighted variants' decays, ms.
    pub decays: Vec<u64>,
    /// Only variants whose name contains this (the baseline always runs).
    pub variant: Option<String>,
    /// Only these loads (fractions), if set.
    pub loads: Option<Vec<f64>>,
    /// Measured seconds per run.
    pub seconds: u64,
    /// Runs per variant, interleaved with the other variants', pooled.
    pub rounds: usize,
    /// Skip the baseline runs.
    pub no_baseline: bool,
}

fn print(row: &Row) {
    eprintln!(
        "openloop | {:<14} {:>3.0}% {:<44} {:>7.0}/{:<7.0} rq/s  slow {:>5.1}%{}  p50 {:>6.2}  p99 {:>7.2}  p99.9 {:>7.2} ms  failed {}  waited {}  lag p99 {:.2} ms  conns {}{}",
        row.scenario,
        row.load * 100.0,
        row.variant,
        row.achieved_rps,
        row.target_rps,
        row.slow_share * 100.0,
        match (row.slow_share_during, row.slow_share_after) {
            (Some(d), Some(a)) => format!(" (during {:.1}%, after {:.1}%)", d * 100.0, a * 100.0),
            _ => String::new(),
        },
        row.p50_ms,
        row.p99_ms,
        row.p999_ms,
        row.failed,
        row.waited,
        row.send_lag_p99_ms,
        row.connections,
        row.ejections
            .map_or(String::new(), |n| format!("  ejections {n}"))
    );
}

/// Native ROUND_ROBIN's capacity: the median of three closed-loop measurements.
fn capacity_median(ports: &[u16], work: &Path) -> f64 {
    let mut runs: Vec<f64> = (0..3).map(|_| capacity(ports, work)).collect();
    runs.sort_by(f64::total_cmp);
    runs[1]
}

/// Runs the section, prints a line per row on stderr, returns the report.
pub fn run(selection: &Selection, work: &Path) -> OpenLoopReport {
    let load_average_before = load_average();
    let fast = |name: &str| {
        Upstream::builder(name)
            .delay(Duration::from_millis(FAST_MS))
            .start()
    };
    let (fast_a, fast_b) = (fast("fast_a"), fast("fast_b"));
    let capacity_rps = {
        let fast_c = fast("fast_c");
        capacity_median(&[fast_a.port(), fast_b.port(), fast_c.port()], work)
    };
    eprintln!("openloop | capacity (native ROUND_ROBIN, closed loop, 64 connections, median of 3): {capacity_rps:.0} rq/s; load average {load_average_before}");
    let loads = selection.loads.clone().unwrap_or_else(|| LOADS.to_vec());
    let variants: Vec<Variant> = variants(&selection.decays)
        .into_iter()
        .filter(|v| {
            selection
                .variant
                .as_deref()
                .is_none_or(|text| v.name.contains(text))
        })
        .collect();
    let mut rows = Vec::new();
    for scenario in Scenario::ALL {
        if selection
            .scenario
            .as_deref()
            .is_some_and(|text| !scenario.key().contains(text))
        {
            continue;
        }
        let slow = scenario.third();
        let ports = [fast_a.port(), fast_b.port(), slow.port()];
        // The baseline (the slow upstream removed) runs among the 20 ms scenario's variants.
        let with_baseline = scenario == Scenario::Slower20 && !selection.no_baseline;
        let reference = baseline();
        for &load in &loads {
            let rate = capacity_rps * load;
            let mut pooled: Vec<Option<OpenLoopResult>> = vec![None; variants.len() + 1];
            let mut ejected: Vec<Option<u64>> = vec![None; variants.len() + 1];
            for _round in 0..selection.rounds.max(1) {
                for (i, variant) in variants.iter().enumerate() {
                    let (result, ejections) = run_one(
                        variant,
                        scenario,
                        rate,
                        &ports,
                        &slow,
                        selection.seconds,
                        work,
                    );
                    match &mut pooled[i] {
                        Some(total) => total.merge(&result),
                        slot => *slot = Some(result),
                    }
                    if let Some(n) = ejections {
                        *ejected[i].get_or_insert(0) += n;
                    }
                }
                if with_baseline {
                    let fast_only = [fast_a.port(), fast_b.port()];
                    let (result, _) = run_one(
                        &reference,
                        scenario,
                        rate,
                        &fast_only,
                        &slow,
                        selection.seconds,
                        work,
                    );
                    match &mut pooled[variants.len()] {
                        Some(total) => total.merge(&result),
                        slot => *slot = Some(result),
                    }
                }
            }
            let names = variants.iter().map(|v| v.name).chain([reference.name]);
            for ((name, result), ejections) in names.zip(&pooled).zip(&ejected) {
                let Some(result) = result else { continue };
                let mut row = row(
                    scenario.key(),
                    scenario == Scenario::SlowMidRun,
                    load,
                    name,
                    rate,
                    selection.seconds,
                    result,
                );
                row.ejections = *ejections;
                print(&row);
                rows.push(row);
            }
        }
    }
    let capacity_rps_at_end = {
        let fast_c = fast("fast_c");
        capacity_median(&[fast_a.port(), fast_b.port(), fast_c.port()], work)
    };
    let load_average_after = load_average();
    eprintln!("openloop | capacity at the end: {capacity_rps_at_end:.0} rq/s; load average {load_average_after}");
    OpenLoopReport {
        machine: process::machine(),
        nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
        envoy: crate::envoy_version(),
        load_average_before,
        load_average_after,
        capacity_rps,
        capacity_rps_at_end,
        seconds: selection.seconds,
        rounds: selection.rounds.max(1),
        fast_ms: FAST_MS,
        rows,
    }
}

fn fmt(value: f64, digits: usize) -> String {
    if value.is_nan() {
        "–".into()
    } else {
        format!("{value:.digits$}")
    }
}

impl OpenLoopReport {
    /// The section as markdown.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Machine: {} (nproc {}), Envoy {}, `--concurrency 2`. Load average (1, 5, 15 min) {} before, {} after. \
             Capacity: native ROUND_ROBIN over three {} ms upstreams, closed loop, 64 connections, median of three: {:.0} rq/s at the start, {:.0} at the end. \
             Each row pools {} run(s), interleaved with the other variants' (round by round): a fresh Envoy, 1 s of warm-up at the rate, then {} s at a fixed arrival rate (30, 60, 90% of the start capacity) over keep-alive \
             connections opened as needed (up to {MAX_CONNECTIONS}); latency from each request's intended send time. \
             `failed`: non-2xx, transport errors and requests unfinished 2 s after the last was due. \
             `client lag`: the generator's own lateness (from the due time to the hand-over to a connection), part of every latency: on a busy machine, its scheduling delay. \
             The baseline row (in the 20 ms table) is latency-weighted eisodos over the two fast upstreams only, the slow one removed. \
             Every variant has passive ejection on (eisodos `outlier_detection`, Envoy's `outlier_detection`, 5 consecutive 5xx); `ejections` (fail-fast table) counts the ejections Envoy reported over all rounds, warm-up included (eisodos `ejections_total`, native `outlier_detection.ejections_enforced_total`). The `no screen` row is latency-weighted eisodos with `degraded_ratio: 0`.\n",
            self.machine,
            self.nproc,
            self.envoy,
            self.load_average_before,
            self.load_average_after,
            self.fast_ms,
            self.capacity_rps,
            self.capacity_rps_at_end,
            self.rounds,
            self.seconds
        );
        for scenario in Scenario::ALL {
            let rows: Vec<&Row> = self
                .rows
                .iter()
                .filter(|r| r.scenario == scenario.key())
                .collect();
            if rows.is_empty() {
                continue;
            }
            let share_name = if scenario == Scenario::FailFast {
                "failing upstream's share"
            } else if scenario == Scenario::SlowMidRun {
                "slow share: all, while slow, after"
            } else {
                "slow share"
            };
            let fail_fast = scenario == Scenario::FailFast;
            let _ = writeln!(out, "#### {}\n", scenario.title());
            let _ = writeln!(
                out,
                "| load | variant | rq/s (target) | {share_name} | p50 ms | p99 ms | p99.9 ms | failed | client lag p99 ms |{}",
                if fail_fast { " ejections |" } else { "" }
            );
            let _ = writeln!(
                out,
                "| --- | --- | --- | --- | --- | --- | --- | --- | --- |{}",
                if fail_fast { " --- |" } else { "" }
            );
            for r in rows {
                let share = match (r.slow_share_during, r.slow_share_after) {
                    (Some(d), Some(a)) => format!(
                        "{}%, {}%, {}%",
                        fmt(r.slow_share * 100.0, 1),
                        fmt(d * 100.0, 1),
                        fmt(a * 100.0, 1)
                    ),
                    _ => format!("{}%", fmt(r.slow_share * 100.0, 1)),
                };
                let _ = writeln!(
                    out,
                    "| {:.0}% | {} | {} ({}) | {share} | {} | {} | {} | {} | {} |{}",
                    r.load * 100.0,
                    r.variant,
                    fmt(r.achieved_rps, 0),
                    fmt(r.target_rps, 0),
                    fmt(r.p50_ms, 2),
                    fmt(r.p99_ms, 2),
                    fmt(r.p999_ms, 2),
                    r.failed,
                    fmt(r.send_lag_p99_ms, 2),
                    r.ejections.map_or(String::new(), |n| format!(" {n} |"))
                );
            }
            out.push('\n');
        }
        out
    }

    /// Writes `openloop.md` and `openloop.json` into `dir`.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::write(
            dir.join("openloop.json"),
            serde_json::to_string_pretty(self)?,
        )?;
        std::fs::write(dir.join("openloop.md"), self.markdown())
    }
}
