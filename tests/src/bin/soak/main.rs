//! `just soak [MINUTES]`: Envoy (`--concurrency 2`) with eisodos under moderate open-loop
//! load for ten minutes (by default) while upstreams flap and the plugin configuration changes
//! every minute through ECDS; Envoy's memory and eisodos' shared-data keys are sampled every
//! few seconds. Local, not in CI. Writes `bench/results/soak.md`, `soak.json` and
//! `soak-rss.svg`, and exits non-zero when a verdict fails (see `verdict.rs`).
//!
//! Usage: `soak [MINUTES] [--seconds S] [--rate R] [--clients C] [--out DIR]`.

mod configs;
mod plot;
mod report;
mod sample;
mod schedule;
mod traffic;
mod verdict;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use eisodos_core::inflight::InflightTable;
use eisodos_core::memory_store::MemoryStore;
use eisodos_core::store::SharedStore;
use eisodos_tests::envoy::Envoy;
use eisodos_tests::upstream::Upstream;
use eisodos_tests::{client, paths, shared_data_tool};

use configs::SoakConfig;
use sample::{KeyReader, Sample};
use schedule::{FlapKind, Schedule};

const USAGE: &str = "usage: soak [MINUTES] [--seconds S] [--rate R] [--clients C] [--out DIR]";

/// The upstreams' names (also their clusters).
const NAMES: [&str; 4] = ["backend_a", "backend_b", "backend_c", "backend_d"];

struct Args {
    duration: Duration,
    rate: u32,
    clients: usize,
    out: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        duration: Duration::from_secs(600),
        rate: 400,
        clients: 128,
        out: paths::repo_root().join("bench/results"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--seconds" => {
                let v = value("--seconds")?;
                args.duration =
                    Duration::from_secs(v.parse().map_err(|e| format!("--seconds {v}: {e}"))?);
            }
            "--rate" => {
                let v = value("--rate")?;
                args.rate = v.parse().map_err(|e| format!("--rate {v}: {e}"))?;
            }
            "--clients" => {
                let v = value("--clients")?;
                args.clients = v.parse().map_err(|e| format!("--clients {v}: {e}"))?;
            }
            "--out" => args.out = PathBuf::from(value("--out")?),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            minutes if minutes.parse::<f64>().is_ok() => {
                let m: f64 = minutes.parse().unwrap_or(10.0);
                args.duration = Duration::from_secs_f64(m * 60.0);
            }
            other => return Err(format!("unknown argument {other:?} ({USAGE})")),
        }
    }
    if args.duration < Duration::from_secs(30) || args.rate == 0 || args.clients == 0 {
        return Err(format!(
            "a soak lasts at least 30 s, at a rate and with clients above 0 ({USAGE})"
        ));
    }
    Ok(args)
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("soak: a verdict failed (see the summary)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("soak: {e}");
            ExitCode::from(2)
        }
    }
}

/// What happened to one configuration change.
#[derive(Debug, Clone)]
pub struct Change {
    /// When (since the start of the load).
    pub at: Duration,
    /// The configuration applied.
    pub config: &'static str,
    /// How long the reconfiguration took to be applied, or why it failed.
    pub result: Result<Duration, String>,
}

/// Everything a soak produced, for the report.
pub struct Run {
    pub args_rate: u32,
    pub clients: usize,
    pub schedule: Schedule,
    pub cycle: Vec<SoakConfig>,
    pub all_keys: Vec<(String, usize)>,
    pub samples: Vec<Sample>,
    pub changes: Vec<Change>,
    pub done: Vec<traffic::Done>,
    pub due: u64,
    pub late: u64,
    pub in_flight_status: Vec<(String, u64)>,
    pub in_flight_records: Vec<(String, Vec<u32>)>,
    pub vm_failures: Vec<String>,
    /// Envoy's `[error]` and `[warning]` lines, by how many times each message came (the
    /// timestamp and thread left out).
    pub log_lines: Vec<(String, usize)>,
    pub upstream_errors: Vec<String>,
    pub envoy_version: String,
    pub checks: Vec<verdict::Check>,
    pub per_flap: Vec<u64>,
}

fn run() -> Result<bool, String> {
    let args = parse_args()?;
    let schedule = Schedule::new(args.duration);
    let cycle = configs::cycle(&NAMES);
    let all_keys = configs::all_keys(&cycle)?;
    let mut upstreams: Vec<Option<Upstream>> = NAMES
        .iter()
        .map(|name| Upstream::builder(name).try_start().map(Some))
        .collect::<Result<_, _>>()?;
    let ports: Vec<u16> = upstreams.iter().flatten().map(Upstream::port).collect();
    let first = cycle.first().ok_or("no configuration")?;
    let started: Vec<&Upstream> = upstreams.iter().flatten().collect();
    let envoy = Envoy::builder()
        .upstreams(started)
        .plugin_config(&first.json)
        .concurrency(2)
        .ecds()
        .filter_before(shared_data_tool::filter())
        .try_start()?;
    println!(
        "soak: {:.1} min at {} req/s, Envoy pid {} (log {}), {} configuration changes, {} flaps",
        args.duration.as_secs_f64() / 60.0,
        args.rate,
        envoy.pid(),
        envoy.log_path().display(),
        schedule.changes.len(),
        schedule.flaps.len()
    );
    let reader = key_reader(&envoy);
    let read = reader.as_deref();
    let keys_read = read.is_some();
    if read.is_none() {
        println!("soak: shared-data keys NOT read (no shared-data tool in this build)");
    }
    // Let the first probes land before the load starts.
    std::thread::sleep(Duration::from_secs(2));

    let load = traffic::Load::start(envoy.listener_port(), args.rate, args.clients);
    let start = load.started();
    let mut changes = Vec::new();
    let mut events = timeline(&schedule);
    events.sort_by_key(|e| e.0);
    let stop_sampling = AtomicBool::new(false);
    // Samples in a thread of their own: reading the keys takes a request per key, and the
    // flaps and changes must happen on time.
    let samples = std::thread::scope(|scope| -> Result<Vec<Sample>, String> {
        let sampler = scope.spawn(|| -> Result<Vec<Sample>, String> {
            let mut samples = Vec::new();
            let mut next = Duration::ZERO;
            while !stop_sampling.load(Ordering::SeqCst) {
                let wait = next.saturating_sub(start.elapsed());
                if !wait.is_zero() {
                    std::thread::sleep(wait.min(Duration::from_millis(100)));
                    continue;
                }
                let s = sample::take(&envoy, start.elapsed(), read, &all_keys)?;
                print_sample(&s);
                samples.push(s);
                next += schedule.sample_every;
            }
            Ok(samples)
        });
        let events_result = (|| -> Result<(), String> {
            for (at, what) in events {
                if at >= schedule.duration {
                    break;
                }
                if let Some(wait) = at.checked_sub(start.elapsed()) {
                    std::thread::sleep(wait);
                }
                let now = start.elapsed();
                match what {
                    Event::FlapStart(i) | Event::FlapEnd(i) => {
                        let flap = schedule.flaps.get(i).ok_or("no flap")?;
                        let starting = matches!(what, Event::FlapStart(_));
                        apply_flap(&mut upstreams, &ports, flap.upstream, flap.kind, starting)?;
                        println!(
                            "{:7.1} s  {} {} {}",
                            now.as_secs_f64(),
                            NAMES.get(flap.upstream).copied().unwrap_or("?"),
                            flap.kind.label(),
                            if starting { "starts" } else { "ends" }
                        );
                    }
                    Event::Change(i) => {
                        let config = cycle.get((i + 1) % cycle.len()).ok_or("no configuration")?;
                        let began = Instant::now();
                        let result = envoy.reconfigure(&config.json).map(|_| began.elapsed());
                        println!(
                            "{:7.1} s  configuration {} ({:?})",
                            now.as_secs_f64(),
                            config.name,
                            result
                        );
                        changes.push(Change {
                            at: now,
                            config: config.name,
                            result,
                        });
                    }
                }
            }
            if let Some(wait) = schedule.duration.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
            Ok(())
        })();
        stop_sampling.store(true, Ordering::SeqCst);
        let samples = sampler
            .join()
            .map_err(|_| "the sampler panicked".to_owned())?;
        events_result?;
        samples
    })?;
    let mut samples = samples;
    let (done, due, late) = load.stop();
    // Every upstream back, and the last answers and releases home: then nothing may be in
    // flight.
    for (index, kind) in [
        (0, FlapKind::Fail),
        (1, FlapKind::Close),
        (2, FlapKind::Slow(0)),
    ] {
        apply_flap(&mut upstreams, &ports, index, kind, false)?;
    }
    std::thread::sleep(Duration::from_secs(3));
    let final_sample = sample::take(&envoy, start.elapsed(), read, &all_keys)?;
    print_sample(&final_sample);
    samples.push(final_sample);
    let in_flight_status = status_in_flight(&envoy)?;
    let in_flight_records = match read {
        Some(read) => inflight_records(read, &all_keys)?,
        None => Vec::new(),
    };
    let log = envoy.log();
    let vm_failures = verdict::vm_failures(&log);
    let log_lines = report::notable_lines(&log);
    let upstream_errors: Vec<String> = upstreams
        .iter()
        .flatten()
        .flat_map(|u| u.errors().into_iter().map(|e| format!("{}: {e}", u.name())))
        .collect();
    let envoy_version = client::try_get_with(&envoy.admin_url("/server_info"), &[])
        .ok()
        .and_then(|r| serde_json::from_str::<serde_json::Value>(&r.body).ok())
        .and_then(|v| v["version"].as_str().map(str::to_owned))
        .unwrap_or_default();
    // Envoy stops when dropped, after the report is written.

    let mut run = Run {
        args_rate: args.rate,
        clients: args.clients,
        schedule,
        cycle,
        all_keys,
        samples,
        changes,
        done,
        due,
        late,
        in_flight_status,
        in_flight_records,
        vm_failures,
        log_lines,
        upstream_errors,
        envoy_version,
        checks: Vec::new(),
        per_flap: Vec::new(),
    };
    judge(&mut run, keys_read);
    report::write(&run, &args.out)?;
    for check in &run.checks {
        println!(
            "{} {}: {}",
            if check.pass { "PASS" } else { "FAIL" },
            check.name,
            check.detail
        );
    }
    println!("soak: wrote {}", args.out.join("soak.md").display());
    Ok(run.checks.iter().all(|c| c.pass))
}

/// Every verdict of `run`.
fn judge(run: &mut Run, keys_read: bool) {
    let duration = run.schedule.duration.as_secs_f64();
    let series = |f: fn(&Sample) -> u64| -> Vec<(f64, f64)> {
        run.samples.iter().map(|s| (s.t, f(s) as f64)).collect()
    };
    let mut checks = vec![
        verdict::memory_check("RSS", &series(|s| s.rss), duration, verdict::RSS_FLAT),
        verdict::memory_check(
            "allocated",
            &series(|s| s.allocated),
            duration,
            verdict::ALLOCATED_FLAT,
        ),
    ];
    checks.push(if keys_read {
        match verdict::all_applied(&run.schedule, run.cycle.len()) {
            Some(at) => {
                verdict::keys_check(&run.samples, at + verdict::KEYS_SETTLE, run.all_keys.len())
            }
            None => verdict::Check {
                name: "shared-data keys flat".into(),
                pass: false,
                detail: "the run is too short to apply every configuration".into(),
            },
        }
    } else {
        verdict::Check {
            name: "shared-data keys flat".into(),
            pass: false,
            detail: "not measured: no shared-data tool".into(),
        }
    });
    let failed_changes: Vec<String> = run
        .changes
        .iter()
        .filter_map(|c| {
            c.result
                .as_ref()
                .err()
                .map(|e| format!("{} at {:.0} s: {e}", c.config, c.at.as_secs_f64()))
        })
        .collect();
    checks.push(verdict::Check {
        name: "every configuration change applied".into(),
        pass: failed_changes.is_empty() && !run.changes.is_empty(),
        detail: if failed_changes.is_empty() {
            format!("{} changes", run.changes.len())
        } else {
            failed_changes.join("; ")
        },
    });
    let (requests, per_flap) = verdict::requests_check(&run.done, &run.schedule, &NAMES);
    checks.push(requests);
    run.per_flap = per_flap;
    let answered = run.done.len() as u64;
    checks.push(verdict::Check {
        name: "every request due was sent and ended".into(),
        pass: answered == run.due,
        detail: format!(
            "{} due, {answered} ended, {} waited over 250 ms for a client",
            run.due, run.late
        ),
    });
    let status_busy: Vec<String> = run
        .in_flight_status
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(b, n)| format!("{b}: {n}"))
        .collect();
    let records_busy: Vec<String> = run
        .in_flight_records
        .iter()
        .filter(|(_, counts)| counts.iter().any(|&n| n > 0))
        .map(|(k, counts)| format!("{k}: {counts:?}"))
        .collect();
    checks.push(verdict::Check {
        name: "in-flight counts back to zero".into(),
        pass: status_busy.is_empty()
            && records_busy.is_empty()
            && !run.in_flight_status.is_empty()
            && (!keys_read || !run.in_flight_records.is_empty()),
        detail: format!(
            "status page: {}; in-flight records read: {}{}",
            if status_busy.is_empty() {
                "all 0".to_owned()
            } else {
                status_busy.join(", ")
            },
            run.in_flight_records.len(),
            if records_busy.is_empty() {
                ", all 0".to_owned()
            } else {
                format!(", {}", records_busy.join(", "))
            }
        ),
    });
    checks.push(verdict::Check {
        name: "no Wasm panic or VM failure in the log".into(),
        pass: run.vm_failures.is_empty(),
        detail: if run.vm_failures.is_empty() {
            "none".into()
        } else {
            run.vm_failures
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join(" | ")
        },
    });
    run.checks = checks;
}

fn print_sample(s: &Sample) {
    println!(
        "{:7.1} s  rss {:.1} MiB  allocated {:.1} MiB  heap {:.1} MiB  keys {}",
        s.t,
        verdict::mib(s.rss as f64),
        verdict::mib(s.allocated as f64),
        verdict::mib(s.heap_size as f64),
        match (s.keys, s.key_bytes) {
            (Some(k), Some(b)) => format!("{k} ({b} bytes)"),
            _ => "not read".to_owned(),
        }
    );
}

#[derive(Debug, Clone, Copy)]
enum Event {
    FlapStart(usize),
    FlapEnd(usize),
    Change(usize),
}

fn timeline(schedule: &Schedule) -> Vec<(Duration, Event)> {
    let mut events = Vec::new();
    for (i, flap) in schedule.flaps.iter().enumerate() {
        events.push((flap.start, Event::FlapStart(i)));
        events.push((flap.end, Event::FlapEnd(i)));
    }
    for (i, at) in schedule.changes.iter().enumerate() {
        events.push((*at, Event::Change(i)));
    }
    events
}

/// Starts (`starting`) or ends a flap of upstream `index`.
fn apply_flap(
    upstreams: &mut [Option<Upstream>],
    ports: &[u16],
    index: usize,
    kind: FlapKind,
    starting: bool,
) -> Result<(), String> {
    let slot = upstreams.get_mut(index).ok_or("no such upstream")?;
    match (kind, starting) {
        (FlapKind::Fail, on) => {
            if let Some(u) = slot {
                u.set_status(if on { 503 } else { 200 });
            }
        }
        (FlapKind::Slow(ms), on) => {
            if let Some(u) = slot {
                u.set_delay(Duration::from_millis(if on { ms } else { 0 }));
            }
        }
        (FlapKind::Close, true) => {
            // Dropping it closes the listener and every connection.
            *slot = None;
        }
        (FlapKind::Close, false) => {
            if slot.is_none() {
                let name = NAMES.get(index).ok_or("no such upstream")?;
                let port = *ports.get(index).ok_or("no such port")?;
                let deadline = Instant::now() + Duration::from_secs(5);
                loop {
                    match Upstream::builder(name).port(port).try_start() {
                        Ok(u) => {
                            *slot = Some(u);
                            break;
                        }
                        Err(e) if Instant::now() >= deadline => {
                            return Err(format!("restart {name} on {port}: {e}"))
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(50)),
                    }
                }
            }
        }
    }
    Ok(())
}

/// In-flight counts per backend, from the status page of the configuration serving now.
fn status_in_flight(envoy: &Envoy) -> Result<Vec<(String, u64)>, String> {
    let response = client::try_get_with(&envoy.url(configs::STATUS_PATH), &[])?;
    let status: serde_json::Value = serde_json::from_str(&response.body).map_err(|e| {
        format!(
            "status page ({}) is not JSON: {e}: {}",
            response.status, response.body
        )
    })?;
    Ok(status["backends"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| {
            (
                b["cluster"].as_str().unwrap_or("?").to_owned(),
                b["in_flight"].as_u64().unwrap_or(0),
            )
        })
        .collect())
}

/// Every in-flight record the configurations can create, decoded by the filter's own code.
fn inflight_records(
    read: &KeyReader<'_>,
    all_keys: &[(String, usize)],
) -> Result<Vec<(String, Vec<u32>)>, String> {
    let mut records = Vec::new();
    for (key, backends) in all_keys.iter().filter(|(k, _)| k.contains(".inflight.")) {
        if let Some(value) = read(key)? {
            let store = MemoryStore::new();
            store
                .set(key, &value, None)
                .map_err(|e| format!("{key}: {e:?}"))?;
            let table = InflightTable::new(key.clone(), *backends);
            records.push((key.clone(), table.counts(&store)));
        }
    }
    Ok(records)
}

/// Reads eisodos' shared data in the running Envoy through the shared-data tool (a filter
/// ahead of eisodos with its `vm_id`).
fn key_reader(envoy: &Envoy) -> Option<Box<KeyReader<'_>>> {
    Some(Box::new(move |key: &str| {
        shared_data_tool::get(envoy, key).map(|value| value.map(|v| v.bytes))
    }))
}
