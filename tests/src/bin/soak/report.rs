//! The soak's output: `soak.md` (the summary), `soak.json` (every sample, change and flap,
//! and the outcome counts) and `soak-rss.svg` (the plot), into one directory.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde_json::{json, Value};

use crate::verdict::{is_failure, mib};
use crate::Run;

/// Writes the three files into `dir`.
pub fn write(run: &Run, dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let names: Vec<&str> = run.cycle.iter().map(|c| c.name).collect();
    let files = [
        ("soak.md", markdown(run)),
        (
            "soak.json",
            serde_json::to_string_pretty(&to_json(run)).map_err(|e| e.to_string())? + "\n",
        ),
        (
            "soak-rss.svg",
            crate::plot::svg(&run.samples, &run.schedule, &names),
        ),
    ];
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| format!("write {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Requests by outcome label, most frequent first.
fn outcomes(run: &Run) -> Vec<(String, u64)> {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for done in &run.done {
        *counts.entry(done.outcome.label()).or_default() += 1;
    }
    let mut counts: Vec<(String, u64)> = counts.into_iter().collect();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    counts
}

struct Figures {
    rss_first: f64,
    rss_last: f64,
    rss_peak: f64,
    alloc_first: f64,
    alloc_last: f64,
    alloc_peak: f64,
    heap_last: f64,
}

fn figures(run: &Run) -> Figures {
    let s = &run.samples;
    let get = |f: fn(&crate::Sample) -> u64| -> (f64, f64, f64) {
        (
            s.first().map_or(0.0, |x| mib(f(x) as f64)),
            s.last().map_or(0.0, |x| mib(f(x) as f64)),
            s.iter().map(|x| mib(f(x) as f64)).fold(0.0, f64::max),
        )
    };
    let (rss_first, rss_last, rss_peak) = get(|x| x.rss);
    let (alloc_first, alloc_last, alloc_peak) = get(|x| x.allocated);
    Figures {
        rss_first,
        rss_last,
        rss_peak,
        alloc_first,
        alloc_last,
        alloc_peak,
        heap_last: s.last().map_or(0.0, |x| mib(x.heap_size as f64)),
    }
}

fn markdown(run: &Run) -> String {
    let mut out = String::new();
    let f = figures(run);
    let minutes = run.schedule.duration.as_secs_f64() / 60.0;
    let failures = run.done.iter().filter(|d| is_failure(&d.outcome)).count();
    let moved = run.done.iter().filter(|d| d.moved).count();
    let pass = run.checks.iter().all(|c| c.pass);
    let _ = writeln!(
        out,
        "# Soak: {minutes:.1} minutes ({})\n",
        if pass { "PASS" } else { "FAIL" }
    );
    let _ = writeln!(
        out,
        "`just soak` on {}: Envoy {} (`--concurrency 2`), {} req/s open loop from {} keep-alive \
         clients, 4 upstreams, {} configuration changes through ECDS, {} flaps, a sample every \
         {:.0} s. Plot: [soak-rss.svg](soak-rss.svg); samples: [soak.json](soak.json).\n",
        machine(),
        run.envoy_version,
        run.args_rate,
        run.clients,
        run.changes.len(),
        run.schedule.flaps.len(),
        run.schedule.sample_every.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "## Verdicts\n\n| check | result | figures |\n| --- | --- | --- |"
    );
    for c in &run.checks {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            c.name,
            if c.pass { "pass" } else { "**FAIL**" },
            c.detail.replace('|', "\\|")
        );
    }
    let key = |v: Option<u64>| v.map_or("not read".to_owned(), |v| v.to_string());
    let first_keys = run.samples.first();
    let last_keys = run.samples.last();
    let peak_keys = run.samples.iter().filter_map(|s| s.keys).max();
    let _ = writeln!(
        out,
        "\n## Memory and keys\n\n| | start | end | peak |\n| --- | ---: | ---: | ---: |\n\
         | RSS (MiB) | {:.1} | {:.1} | {:.1} |\n| allocated (MiB) | {:.1} | {:.1} | {:.1} |\n\
         | heap_size (MiB) | | {:.1} | |\n| eisodos shared-data keys | {} | {} | {} |\n\
         | their bytes (names and values) | {} | {} | {} |\n",
        f.rss_first,
        f.rss_last,
        f.rss_peak,
        f.alloc_first,
        f.alloc_last,
        f.alloc_peak,
        f.heap_last,
        key(first_keys.and_then(|s| s.keys)),
        key(last_keys.and_then(|s| s.keys)),
        key(peak_keys),
        key(first_keys.and_then(|s| s.key_bytes)),
        key(last_keys.and_then(|s| s.key_bytes)),
        key(run.samples.iter().filter_map(|s| s.key_bytes).max()),
    );
    let _ = writeln!(
        out,
        "The configurations can create {} keys: per backend list (3 and 4 backends) the health \
         record, its version, the probe lease and the in-flight table; the round-robin ticket; \
         and the rate limit's {} buckets and its bucket for requests without a key.\n",
        run.all_keys.len(),
        crate::configs::BUCKETS
    );
    let _ = writeln!(
        out,
        "## Configuration changes\n\n| at | configuration | applied in | keys in the sample before (bytes) |\n| ---: | --- | ---: | ---: |"
    );
    for c in &run.changes {
        let _ = writeln!(
            out,
            "| {:.0} s | {} | {} | {} |",
            c.at.as_secs_f64(),
            c.config,
            match &c.result {
                Ok(d) => format!("{:.0} ms", d.as_secs_f64() * 1000.0),
                Err(e) => format!("failed: {e}"),
            },
            keys_before(run, c.at.as_secs_f64())
                .map_or("not read".to_owned(), |(k, b)| format!("{k} ({b})"))
        );
    }
    let _ = writeln!(
        out,
        "\n## Requests\n\n{} due, {} ended, {} failed (5xx or no answer), {} waited over 250 ms \
         for a client; {} sticky requests came back re-pinned (their backend could not take \
         them).\n\n| outcome | requests |\n| --- | ---: |",
        run.due,
        run.done.len(),
        failures,
        run.late,
        moved
    );
    for (label, n) in outcomes(run) {
        let _ = writeln!(out, "| {label} | {n} |");
    }
    let (p50, p99, max) = latency_ms(run);
    let _ = writeln!(
        out,
        "\nTime from when a request was due to its answer (waiting for a free client included), \
         all outcomes: p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.0} ms."
    );
    let _ = writeln!(
        out,
        "\n## Flaps\n\n| flap | upstream | what | times | failed requests it explains |\n| --- | --- | --- | --- | ---: |"
    );
    for (i, flap) in run.schedule.flaps.iter().enumerate() {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.0}-{:.0} s | {} |",
            i + 1,
            crate::NAMES.get(flap.upstream).copied().unwrap_or("?"),
            flap.kind.label(),
            flap.start.as_secs_f64(),
            flap.end.as_secs_f64(),
            run.per_flap.get(i).copied().unwrap_or(0)
        );
    }
    let _ = writeln!(
        out,
        "\n## Envoy's warnings and errors\n\n| count | message (timestamp and thread left out) |\n| ---: | --- |"
    );
    for (line, n) in &run.log_lines {
        let _ = writeln!(
            out,
            "| {n} | `{}` |",
            line.replace('|', "\\|").replace('`', "'")
        );
    }
    if !run.upstream_errors.is_empty() {
        let _ = writeln!(out, "\nUpstream-side errors: {}", run.upstream_errors.len());
    }
    out
}

/// Envoy's `[warning]`, `[error]` and `[critical]` lines, each message once with its count,
/// most frequent first: the first `[...]` fields (time, thread) are left out, and digits
/// become `#` so one message with different numbers counts as one.
pub fn notable_lines(log: &str) -> Vec<(String, usize)> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for line in log.lines() {
        let Some(level_at) = ["[warning]", "[error]", "[critical]"]
            .iter()
            .find_map(|level| line.find(level))
        else {
            continue;
        };
        let message: String = line
            .get(level_at..)
            .unwrap_or(line)
            .chars()
            .map(|c| if c.is_ascii_digit() { '#' } else { c })
            .take(200)
            .collect();
        *counts.entry(message).or_default() += 1;
    }
    let mut counts: Vec<(String, usize)> = counts.into_iter().collect();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    counts.truncate(20);
    counts
}

/// p50, p99 and max of the time from due to answer, in ms.
fn latency_ms(run: &Run) -> (f64, f64, f64) {
    let mut ms: Vec<f64> = run
        .done
        .iter()
        .map(|d| d.at.saturating_sub(d.due).as_secs_f64() * 1000.0)
        .collect();
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| {
        ms.get(((ms.len() as f64 * q) as usize).min(ms.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    (at(0.5), at(0.99), ms.last().copied().unwrap_or(0.0))
}

/// The keys and their bytes of the last sample before `t`.
fn keys_before(run: &Run, t: f64) -> Option<(u64, u64)> {
    let s = run.samples.iter().rev().find(|s| s.t < t)?;
    Some((s.keys?, s.key_bytes?))
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    format!("{cpus} CPUs")
}

fn to_json(run: &Run) -> Value {
    json!({
        "duration_s": run.schedule.duration.as_secs_f64(),
        "rate": run.args_rate,
        "clients": run.clients,
        "envoy": run.envoy_version,
        "configs": run.cycle.iter().map(|c| json!({"name": c.name, "json": c.json})).collect::<Vec<_>>(),
        "keys_possible": run.all_keys.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
        "samples": run.samples.iter().map(|s| json!({
            "t": (s.t * 10.0).round() / 10.0, "rss": s.rss, "allocated": s.allocated,
            "heap_size": s.heap_size, "keys": s.keys, "key_bytes": s.key_bytes,
        })).collect::<Vec<_>>(),
        "changes": run.changes.iter().map(|c| json!({
            "at_s": c.at.as_secs_f64(), "config": c.config,
            "applied_ms": c.result.as_ref().ok().map(|d| d.as_secs_f64() * 1000.0),
            "error": c.result.as_ref().err(),
            "keys_before": keys_before(run, c.at.as_secs_f64()).map(|k| k.0),
            "key_bytes_before": keys_before(run, c.at.as_secs_f64()).map(|k| k.1),
        })).collect::<Vec<_>>(),
        "flaps": run.schedule.flaps.iter().enumerate().map(|(i, f)| json!({
            "upstream": crate::NAMES.get(f.upstream), "kind": f.kind.label(),
            "start_s": f.start.as_secs_f64(), "end_s": f.end.as_secs_f64(),
            "failures": run.per_flap.get(i),
        })).collect::<Vec<_>>(),
        "requests": {
            "due": run.due, "ended": run.done.len(), "late": run.late,
            "re_pinned": run.done.iter().filter(|d| d.moved).count(),
            "latency_ms": {"p50": latency_ms(run).0, "p99": latency_ms(run).1, "max": latency_ms(run).2},
            "outcomes": outcomes(run).into_iter().map(|(k, v)| (k, json!(v))).collect::<serde_json::Map<_, _>>(),
        },
        "in_flight_at_end": {
            "status_page": run.in_flight_status.iter().map(|(b, n)| (b.clone(), json!(n))).collect::<serde_json::Map<_, _>>(),
            "records": run.in_flight_records.iter().map(|(k, c)| (k.clone(), json!(c))).collect::<serde_json::Map<_, _>>(),
        },
        "vm_failures": run.vm_failures,
        "log_warnings_and_errors": run.log_lines.iter().map(|(l, n)| json!({"line": l, "count": n})).collect::<Vec<_>>(),
        "upstream_errors": run.upstream_errors,
        "checks": run.checks.iter().map(|c| json!({"name": c.name, "pass": c.pass, "detail": c.detail})).collect::<Vec<_>>(),
    })
}
