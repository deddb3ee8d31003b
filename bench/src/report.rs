//! Medians, ratios, and the report: markdown, JSON and an SVG plot under `bench/results/`.

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::instructions::Count;
use crate::loadgen::LoadResult;

/// One run of one variant.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measurement {
    /// Variant name.
    pub variant: String,
    /// Envoy `--concurrency`.
    pub concurrency: usize,
    /// Round number (1-based).
    pub round: usize,
    /// Requests per second.
    pub rps: f64,
    /// Median latency.
    pub p50_ms: f64,
    /// 99th percentile latency.
    pub p99_ms: f64,
    /// Envoy CPU time per request.
    pub cpu_us_per_request: f64,
    /// Envoy resident memory at the end.
    pub rss_mb: f64,
    /// Non-2xx answers and transport errors.
    pub errors: u64,
    /// Share of answers per upstream.
    pub upstream_share: Vec<(String, f64)>,
}

impl Measurement {
    /// From a load run and Envoy's CPU time over it.
    pub fn new(
        variant: &str,
        concurrency: usize,
        load: &LoadResult,
        cpu_us: u64,
        rss_kb: u64,
    ) -> Self {
        let answered: u64 = load.upstreams.iter().map(|(_, n)| n).sum();
        Self {
            variant: variant.to_owned(),
            concurrency,
            round: 0,
            rps: load.rps(),
            p50_ms: load.percentile_ms(0.5),
            p99_ms: load.percentile_ms(0.99),
            cpu_us_per_request: cpu_us as f64 / load.requests.max(1) as f64,
            rss_mb: rss_kb as f64 / 1024.0,
            errors: load.errors,
            upstream_share: load
                .upstreams
                .iter()
                .map(|(name, n)| (name.clone(), *n as f64 / answered.max(1) as f64))
                .collect(),
        }
    }

    /// The same, numbered.
    pub fn with_round(mut self, round: usize) -> Self {
        self.round = round;
        self
    }
}

/// A whole benchmark run.
#[derive(Debug, Serialize, Deserialize)]
pub struct Report {
    /// CPU model and cores.
    pub machine: String,
    /// Envoy version.
    pub envoy: String,
    /// Rounds per variant.
    pub rounds: usize,
    /// Measured seconds per run.
    pub seconds: u64,
    /// Client connections (overhead and scale sections).
    pub connections: usize,
    /// eisodos.wasm size.
    pub wasm_bytes: u64,
    /// The empty filter's size.
    pub empty_wasm_bytes: u64,
    /// Shared-data operations per request, from the core benchmark, if it ran.
    pub ops_per_request: Option<Value>,
    /// Overhead against native balancing.
    pub main: Vec<Measurement>,
    /// eisodos with 3 and 300 clusters.
    pub scale: Vec<Measurement>,
    /// One slow upstream among fast ones.
    pub balance: Vec<Measurement>,
    /// Core selection cost, ns per pick by policy and backend count (criterion medians).
    pub selection_ns: Vec<(String, Vec<(usize, f64)>)>,
    /// Envoy instructions per request under callgrind (empty when valgrind was missing).
    #[serde(default)]
    pub instructions: Vec<Count>,
}

/// Reads criterion's medians for the `choose/<policy>` groups under `target/criterion`.
pub fn criterion_selection(target: &Path) -> Vec<(String, Vec<(usize, f64)>)> {
    let mut groups = Vec::new();
    let Ok(entries) = std::fs::read_dir(target.join("criterion")) else {
        return groups;
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with("choose_"))
        .collect();
    names.sort();
    for name in names {
        let mut points: Vec<(usize, f64)> = std::fs::read_dir(target.join("criterion").join(&name))
            .into_iter()
            .flatten()
            .filter_map(|e| {
                let entry = e.ok()?;
                let n: usize = entry.file_name().into_string().ok()?.parse().ok()?;
                let text = std::fs::read_to_string(entry.path().join("new/estimates.json")).ok()?;
                let estimates: Value = serde_json::from_str(&text).ok()?;
                Some((n, estimates["median"]["point_estimate"].as_f64()?))
            })
            .collect();
        points.sort_by_key(|(n, _)| *n);
        groups.push((name.trim_start_matches("choose_").to_owned(), points));
    }
    groups
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Per variant (in first-seen order) for one concurrency: its runs.
fn by_variant(runs: &[Measurement], concurrency: usize) -> Vec<(String, Vec<&Measurement>)> {
    let mut groups: Vec<(String, Vec<&Measurement>)> = Vec::new();
    for m in runs.iter().filter(|m| m.concurrency == concurrency) {
        match groups.iter_mut().find(|(name, _)| *name == m.variant) {
            Some((_, group)) => group.push(m),
            None => groups.push((m.variant.clone(), vec![m])),
        }
    }
    groups
}

/// Median over rounds of `f(run, the reference variant's run of the same round)`.
fn paired(
    runs: &[&Measurement],
    reference: &[&Measurement],
    f: impl Fn(&Measurement, &Measurement) -> f64,
) -> f64 {
    median(
        runs.iter()
            .filter_map(|m| {
                reference
                    .iter()
                    .find(|r| r.round == m.round)
                    .map(|r| f(m, r))
            })
            .collect(),
    )
}

/// Aggregated row.
#[derive(Debug, Serialize)]
pub struct Row {
    variant: String,
    concurrency: usize,
    rps_median: f64,
    rps_min: f64,
    rps_max: f64,
    rps_ratio_to_baseline: f64,
    rps_ratio_to_empty_filter: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us_per_request: f64,
    cpu_us_over_baseline: f64,
    cpu_us_over_empty_filter: f64,
    rss_mb: f64,
    errors: u64,
    slowest_upstream_share: f64,
}

fn rows(runs: &[Measurement], concurrency: usize) -> Vec<Row> {
    let groups = by_variant(runs, concurrency);
    let baseline = groups.first().map(|(_, g)| g.clone()).unwrap_or_default();
    let empty = groups
        .iter()
        .find(|(name, _)| name.starts_with("empty"))
        .map(|(_, g)| g.clone())
        .unwrap_or_default();
    groups
        .iter()
        .map(|(name, group)| {
            let rps: Vec<f64> = group.iter().map(|m| m.rps).collect();
            Row {
                variant: name.clone(),
                concurrency,
                rps_median: median(rps.clone()),
                rps_min: rps.iter().copied().fold(f64::INFINITY, f64::min),
                rps_max: rps.iter().copied().fold(0.0, f64::max),
                rps_ratio_to_baseline: paired(group, &baseline, |m, r| m.rps / r.rps),
                rps_ratio_to_empty_filter: paired(group, &empty, |m, r| m.rps / r.rps),
                p50_ms: median(group.iter().map(|m| m.p50_ms).collect()),
                p99_ms: median(group.iter().map(|m| m.p99_ms).collect()),
                cpu_us_per_request: median(group.iter().map(|m| m.cpu_us_per_request).collect()),
                cpu_us_over_baseline: paired(group, &baseline, |m, r| {
                    m.cpu_us_per_request - r.cpu_us_per_request
                }),
                cpu_us_over_empty_filter: paired(group, &empty, |m, r| {
                    m.cpu_us_per_request - r.cpu_us_per_request
                }),
                rss_mb: median(group.iter().map(|m| m.rss_mb).collect()),
                errors: group.iter().map(|m| m.errors).sum(),
                slowest_upstream_share: median(
                    group
                        .iter()
                        .map(|m| {
                            m.upstream_share
                                .iter()
                                .find(|(n, _)| n == "slow")
                                .map_or(0.0, |(_, s)| *s)
                        })
                        .collect(),
                ),
            }
        })
        .collect()
}

fn fmt(value: f64, digits: usize) -> String {
    if value.is_nan() {
        "–".into()
    } else {
        format!("{value:.digits$}")
    }
}

/// The instruction counts as a markdown section. With `native_cpu_us` (native round-robin's
/// CPU µs per request at `--concurrency 1` in the timed run), differences are also given in
/// µs at native's instructions per µs: an estimate, labelled so.
pub fn instructions_markdown(counts: &[Count], native_cpu_us: Option<f64>) -> String {
    let mut out = String::new();
    let native = counts.first().map(|c| c.per_request);
    let reference = |name: &str| {
        counts
            .iter()
            .find(|c| c.variant == name)
            .map(|c| c.per_request)
    };
    let empty = reference("empty Wasm filter");
    let raw = reference("raw-ABI floor + stream end");
    let us_per_instruction = native.zip(native_cpu_us).map(|(ir, us)| us / ir);
    let _ = writeln!(
        out,
        "\n#### Instructions per request (callgrind, `--concurrency 1`, {} sequential requests, idle work subtracted)\n",
        crate::instructions::REQUESTS
    );
    let _ = writeln!(
        out,
        "| variant | instructions/rq | × native RR | over SDK empty filter | ≈ µs | over raw-ABI floor + stream end | ≈ µs |"
    );
    let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- | --- |");
    for count in counts {
        let over = |floor: Option<f64>| {
            let delta = floor.map(|f| count.per_request - f);
            (
                delta.map_or("–".into(), |d| fmt(d, 0)),
                delta
                    .zip(us_per_instruction)
                    .map_or("–".into(), |(d, k)| fmt(d * k, 1)),
            )
        };
        let ((empty_ir, empty_us), (raw_ir, raw_us)) = (over(empty), over(raw));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {empty_ir} | {empty_us} | {raw_ir} | {raw_us} |",
            count.variant,
            fmt(count.per_request, 0),
            native.map_or("–".into(), |n| fmt(count.per_request / n, 3)),
        );
    }
    if let Some(k) = us_per_instruction {
        let _ = writeln!(
            out,
            "\nµs estimated at native round-robin's {:.0} instructions per CPU µs in the timed run above.",
            1.0 / k
        );
    }
    out
}

impl Report {
    /// Native round-robin's median CPU µs per request at `--concurrency 1`.
    fn native_cpu_us_per_request(&self) -> Option<f64> {
        rows(&self.main, 1)
            .first()
            .map(|row| row.cpu_us_per_request)
            .filter(|us| us.is_finite())
    }

    fn concurrencies(runs: &[Measurement]) -> Vec<usize> {
        let mut c: Vec<usize> = runs.iter().map(|m| m.concurrency).collect();
        c.sort_unstable();
        c.dedup();
        c
    }

    /// The report as markdown.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Machine: {}. Envoy {}. {} rounds of {} s per variant, variants alternating within each round; \
             {} keep-alive connections from a closed-loop generator (uncorrected HDR percentiles). \
             eisodos.wasm {} bytes, empty filter {} bytes. Medians; rq/s min–max; ratios and deltas \
             paired per round.\n",
            self.machine, self.envoy, self.rounds, self.seconds, self.connections, self.wasm_bytes, self.empty_wasm_bytes
        );
        for concurrency in Self::concurrencies(&self.main) {
            let _ = writeln!(out, "#### Overhead, `--concurrency {concurrency}`\n");
            let _ = writeln!(out, "| variant | rq/s | × native RR | × empty filter | p50 ms | p99 ms | Envoy CPU µs/rq | µs over native RR | µs over empty filter | RSS MB |");
            let _ = writeln!(
                out,
                "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
            );
            for row in rows(&self.main, concurrency) {
                let _ = writeln!(
                    out,
                    "| {} | {} ({}–{}) | {} | {} | {} | {} | {} | {} | {} | {} |",
                    row.variant,
                    fmt(row.rps_median, 0),
                    fmt(row.rps_min, 0),
                    fmt(row.rps_max, 0),
                    fmt(row.rps_ratio_to_baseline, 3),
                    fmt(row.rps_ratio_to_empty_filter, 3),
                    fmt(row.p50_ms, 2),
                    fmt(row.p99_ms, 2),
                    fmt(row.cpu_us_per_request, 1),
                    fmt(row.cpu_us_over_baseline, 1),
                    fmt(row.cpu_us_over_empty_filter, 1),
                    fmt(row.rss_mb, 0),
                );
            }
            out.push('\n');
        }
        let _ = writeln!(out, "#### Scale: backend clusters, `--concurrency 1`\n");
        let _ = writeln!(out, "| variant | rq/s | p99 ms | Envoy CPU µs/rq |");
        let _ = writeln!(out, "| --- | --- | --- | --- |");
        for row in rows(&self.scale, 1) {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                row.variant,
                fmt(row.rps_median, 0),
                fmt(row.p99_ms, 2),
                fmt(row.cpu_us_per_request, 1)
            );
        }
        let _ = writeln!(out, "\n#### Balance: two fast upstreams and one 20 ms slower, `--concurrency 2`, 32 connections\n");
        let _ = writeln!(
            out,
            "| variant | rq/s | × native RR | p50 ms | p99 ms | slow upstream's share |"
        );
        let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- |");
        for row in rows(&self.balance, 2) {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {}% |",
                row.variant,
                fmt(row.rps_median, 0),
                fmt(row.rps_ratio_to_baseline, 2),
                fmt(row.p50_ms, 2),
                fmt(row.p99_ms, 2),
                fmt(row.slowest_upstream_share * 100.0, 1)
            );
        }
        if !self.instructions.is_empty() {
            out.push_str(&instructions_markdown(
                &self.instructions,
                self.native_cpu_us_per_request(),
            ));
        }
        if !self.selection_ns.is_empty() {
            let _ = writeln!(
                out,
                "\n#### Selection cost in the core crate (criterion, ns per pick incl. release)\n"
            );
            let _ = writeln!(out, "| policy | 3 backends | 30 | 300 | 1000 | 1000 ÷ 3 |");
            let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- |");
            for (policy, points) in &self.selection_ns {
                let at = |n: usize| points.iter().find(|(m, _)| *m == n).map(|(_, v)| *v);
                let cell = |n: usize| at(n).map_or("–".to_owned(), |v| fmt(v, 0));
                let ratio = match (at(3), at(1000)) {
                    (Some(small), Some(large)) => fmt(large / small, 2),
                    _ => "–".into(),
                };
                let _ = writeln!(
                    out,
                    "| {policy} | {} | {} | {} | {} | {ratio} |",
                    cell(3),
                    cell(30),
                    cell(300),
                    cell(1000)
                );
            }
        }
        if let Some(results) = self
            .ops_per_request
            .as_ref()
            .and_then(|ops| ops["results"].as_array())
        {
            let _ = writeln!(
                out,
                "\n#### Shared-data operations per request (core benchmark, 3 backends)\n"
            );
            let _ = writeln!(out, "| policy | gets | sets |");
            let _ = writeln!(out, "| --- | --- | --- |");
            for result in results {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} |",
                    result["policy"].as_str().unwrap_or("?"),
                    fmt(result["gets_per_request"].as_f64().unwrap_or(f64::NAN), 2),
                    fmt(result["sets_per_request"].as_f64().unwrap_or(f64::NAN), 2)
                );
            }
        }
        out
    }

    /// The throughput ratios as an SVG bar chart.
    pub fn svg(&self) -> String {
        let concurrencies = Self::concurrencies(&self.main);
        let rows: Vec<Vec<Row>> = concurrencies.iter().map(|&c| rows(&self.main, c)).collect();
        let variants = rows.first().map_or(0, Vec::len);
        let (label_w, bar_w, row_h) = (260.0, 420.0, 18.0);
        let height =
            60.0 + variants as f64 * row_h * concurrencies.len() as f64 + variants as f64 * 8.0;
        let mut svg = format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="10" y="20" font-size="14">Throughput as a ratio of Envoy's native ROUND_ROBIN (median of paired rounds)</text>
"#,
            w = label_w + bar_w + 80.0
        );
        let colours = ["#4c78a8", "#f58518"];
        let mut y = 40.0;
        for v in 0..variants {
            for (ci, row_set) in rows.iter().enumerate() {
                let Some(row) = row_set.get(v) else { continue };
                let ratio = if row.rps_ratio_to_baseline.is_nan() {
                    0.0
                } else {
                    row.rps_ratio_to_baseline
                };
                let width = (ratio / 1.2).min(1.0) * bar_w;
                if ci == 0 {
                    let _ = writeln!(
                        svg,
                        r#"<text x="10" y="{}">{}</text>"#,
                        y + 13.0,
                        row.variant
                    );
                }
                let _ = writeln!(
                    svg,
                    r#"<rect x="{label_w}" y="{y}" width="{width:.1}" height="{}" fill="{}"/><text x="{:.1}" y="{}">{ratio:.2} (c={})</text>"#,
                    row_h - 2.0,
                    colours[ci % 2],
                    label_w + width + 4.0,
                    y + 13.0,
                    row.concurrency
                );
                y += row_h;
            }
            y += 8.0;
        }
        let one = label_w + bar_w / 1.2;
        let _ = writeln!(
            svg,
            r#"<line x1="{one}" y1="30" x2="{one}" y2="{y}" stroke="black" stroke-dasharray="4"/>"#
        );
        svg.push_str("</svg>\n");
        svg
    }

    /// Writes `latest.md`, `latest.json` and `latest.svg` into `dir`.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let mut json = serde_json::to_value(self).unwrap_or(Value::Null);
        let summary: Vec<Row> = Self::concurrencies(&self.main)
            .into_iter()
            .flat_map(|c| rows(&self.main, c))
            .chain(rows(&self.scale, 1))
            .chain(rows(&self.balance, 2))
            .collect();
        json["summary"] = serde_json::to_value(summary).unwrap_or(Value::Null);
        std::fs::write(
            dir.join("latest.json"),
            serde_json::to_string_pretty(&json)?,
        )?;
        std::fs::write(dir.join("latest.md"), self.markdown())?;
        std::fs::write(dir.join("latest.svg"), self.svg())
    }
}
