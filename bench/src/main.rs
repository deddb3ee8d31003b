//! `just bench`: what eisodos costs next to Envoy's own load balancing.
//!
//! Real Envoy (the binary the tests use), the same local upstreams for every variant, variants
//! run one after another in each round and the rounds repeated (A/B/A/B), every figure also a
//! ratio to the native round-robin baseline of the same round; medians and min–max reported.
//! Never asserts absolute times: the machine is noisy.
//!
//! Usage: `eisodos-bench [--rounds N] [--seconds S] [--connections C] [--quick]
//! [--only overhead|scale|balance|instructions|openloop] [--filter TEXT]` (openloop: see `openloop.rs` for its options), or `eisodos-bench --from-json`
//! to redo the markdown and plot from `bench/results/latest.json`. `--only` runs one section
//! and prints its lines (and, for `instructions`, its table) without writing the report;
//! `--filter` keeps the instruction-count variants whose name contains TEXT (and the
//! references). The instruction section runs when valgrind is
//! installed (see `instructions.rs`).

mod configs;
mod instructions;
mod loadgen;
mod openloop;
mod openloop_gen;
mod process;
mod report;

use std::path::{Path, PathBuf};
use std::time::Duration;

use eisodos_tests::envoy::Envoy;
use eisodos_tests::paths;
use eisodos_tests::ports::free_port;
use eisodos_tests::upstream::Upstream;
use serde_json::{json, Value};

use configs::Routing;
use report::{Measurement, Report};

/// One configuration compared.
pub struct Variant {
    /// Short name in tables.
    pub name: &'static str,
    /// How it routes.
    pub routing: Routing,
}

struct Options {
    rounds: usize,
    seconds: u64,
    connections: usize,
    /// Run only this section, and write no report.
    only: Option<String>,
    /// Instruction-count variants to keep (by name), besides the references.
    filter: Option<String>,
    /// A smoke run: one short round, no instruction counts.
    quick: bool,
    /// The open-loop section's choices.
    openloop: openloop::Selection,
}

fn options() -> Options {
    let mut options = Options {
        rounds: 3,
        seconds: 5,
        connections: 16,
        only: None,
        filter: None,
        quick: false,
        openloop: openloop::Selection {
            scenario: None,
            decays: vec![openloop::LATENCY_DECAY_MS],
            variant: None,
            loads: None,
            seconds: openloop::SECONDS,
            rounds: openloop::ROUNDS,
            no_baseline: false,
        },
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = |name: &str| -> u64 {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} needs a number"))
        };
        match arg.as_str() {
            "--rounds" => options.rounds = number("--rounds") as usize,
            "--seconds" => options.seconds = number("--seconds"),
            "--connections" => options.connections = number("--connections") as usize,
            "--only" => {
                let section = args.next().unwrap_or_default();
                assert!(
                    ["overhead", "scale", "balance", "instructions", "openloop"]
                        .contains(&section.as_str()),
                    "--only needs overhead, scale, balance, instructions or openloop"
                );
                options.only = Some(section);
            }
            "--filter" => options.filter = args.next(),
            "--scenario" => options.openloop.scenario = args.next(),
            "--variant" => options.openloop.variant = args.next(),
            "--decays" => {
                options.openloop.decays = list(args.next()).iter().map(|d| *d as u64).collect()
            }
            "--loads" => {
                let loads = list(args.next());
                // A percentage (60) read as a fraction would ask for 60 times the capacity.
                if let Some(bad) = loads.iter().find(|l| !(**l > 0.0 && **l <= 2.0)) {
                    panic!("--loads takes fractions of the capacity (0.6 for 60%), not {bad}");
                }
                options.openloop.loads = Some(loads)
            }
            "--openloop-seconds" => options.openloop.seconds = number("--openloop-seconds"),
            "--no-baseline" => options.openloop.no_baseline = true,
            "--openloop-rounds" => options.openloop.rounds = number("--openloop-rounds") as usize,
            "--quick" => {
                options.quick = true;
                options.rounds = 1;
                options.seconds = 2;
            }
            other => panic!("unknown argument {other}"),
        }
    }
    options
}

/// A comma-separated list of numbers.
fn list(text: Option<String>) -> Vec<f64> {
    text.unwrap_or_default()
        .split(',')
        .map(|v| {
            v.trim()
                .parse()
                .unwrap_or_else(|_| panic!("not a number: {v}"))
        })
        .collect()
}

fn native(name: &'static str, lb_policy: &'static str) -> Variant {
    Variant {
        name,
        routing: Routing::Native {
            lb_policy,
            extra: None,
        },
    }
}

fn health_check() -> Value {
    json!({"path": "/healthz", "interval_ms": 1000, "timeout_ms": 500})
}

fn eisodos(policy_fields: Value) -> Routing {
    let mut plugin = policy_fields;
    plugin["health_check"] = health_check();
    Routing::Filter {
        wasm: "eisodos.wasm",
        plugin_config: plugin,
        clusters: 3,
    }
}

fn main_variants() -> Vec<Variant> {
    vec![
        native("native ROUND_ROBIN", "ROUND_ROBIN"),
        Variant {
            name: "empty Wasm filter",
            routing: Routing::Filter {
                wasm: "empty_filter.wasm",
                plugin_config: json!({}),
                clusters: 3,
            },
        },
        Variant {
            name: "raw-ABI floor",
            routing: Routing::Filter {
                wasm: "raw_floor.wasm",
                plugin_config: json!({}),
                clusters: 3,
            },
        },
        Variant {
            name: "raw-ABI floor + stream end",
            routing: Routing::Filter {
                wasm: "raw_floor_stream_end.wasm",
                plugin_config: json!({}),
                clusters: 3,
            },
        },
        Variant {
            name: "empty filter + shared-data ticket",
            routing: Routing::Filter {
                wasm: "empty_filter.wasm",
                plugin_config: json!({"shared_data_ticket": true}),
                clusters: 3,
            },
        },
        Variant {
            name: "eisodos round_robin",
            routing: eisodos(json!({"policy": "round_robin"})),
        },
        Variant {
            name: "eisodos round_robin, ticket_batch 16",
            routing: eisodos(json!({"policy": "round_robin", "round_robin": {"ticket_batch": 16}})),
        },
        Variant {
            name: "eisodos rate_limit",
            routing: eisodos(json!({"rate_limit": {"requests_per_second": 1_000_000}})),
        },
        Variant {
            name: "eisodos rate_limit, batch 16",
            routing: eisodos(
                json!({"rate_limit": {"requests_per_second": 1_000_000, "batch": 16}}),
            ),
        },
        Variant {
            name: "eisodos least_request",
            routing: eisodos(json!({"policy": "least_request"})),
        },
        Variant {
            name: "eisodos least_request, latency-weighted",
            routing: eisodos(
                json!({"policy": "least_request", "least_request": {"latency_decay_ms": 10000}}),
            ),
        },
        Variant {
            name: "eisodos consistent_hash",
            routing: eisodos(
                json!({"policy": "consistent_hash", "hash_key": [{"header": "x-user-id"}]}),
            ),
        },
        Variant {
            name: "eisodos random",
            routing: eisodos(json!({"policy": "random"})),
        },
        Variant {
            // The bench sends no cookie: every request is routed by the policy and its
            // response gets a set-cookie, the worst case.
            name: "eisodos session_affinity",
            routing: eisodos(json!({
                "policy": "round_robin",
                "session_affinity": {"cookie": "eisodos_backend", "ttl_s": 3600,
                                     "attributes": "Path=/; HttpOnly; SameSite=Lax"}
            })),
        },
        Variant {
            // A cap never reached: what counting every request costs round-robin.
            name: "eisodos max_requests",
            routing: eisodos(json!({
                "policy": "round_robin",
                "backends": [{"cluster": "backend_a", "max_requests": 1000},
                             {"cluster": "backend_b", "max_requests": 1000},
                             {"cluster": "backend_c", "max_requests": 1000}]
            })),
        },
        Variant {
            // Two header reads per request (x-beta, then the split key, absent, so the percent
            // rule draws per request): the cost of splitting on top of round-robin.
            name: "eisodos split",
            routing: eisodos(json!({
                "policy": "round_robin",
                "subsets": {"stable": ["backend_a", "backend_b"], "canary": ["backend_c"]},
                "default_subset": "stable",
                "rules": [
                    {"match": {"header": {"name": "x-beta", "exact": "yes"}}, "subset": "canary"},
                    {"percent": 5, "subset": "canary"}
                ],
                "split_key": [{"header": "x-split-user"}]
            })),
        },
        Variant {
            // Four realistic rules the bench's GETs never match: the cost of checking them
            // (the method, the path, two headers read per request).
            name: "eisodos deny",
            routing: eisodos(json!({"policy": "round_robin", "deny": [
                {"method": ["TRACE", "CONNECT"]},
                {"path_prefix": "/admin"},
                {"header": {"name": "user-agent", "prefix": "sqlmap"}},
                {"header": {"name": "x-debug", "present": true}}
            ]})),
        },
        Variant {
            name: "eisodos retry",
            routing: eisodos(json!({"policy": "round_robin",
                "retry": {"retry_on": "5xx,connect-failure", "num_retries": 2,
                          "per_try_timeout_ms": 1000},
                "timeout_ms": 5000})),
        },
        Variant {
            // Every issue-13 control on at once, as each is alone above: deny rules checked,
            // a token taken, the split drawn, the cookie read and set, the cap counted, the
            // router headers written.
            name: "eisodos all traffic controls",
            routing: eisodos(json!({
                "policy": "round_robin",
                "deny": [
                    {"method": ["TRACE", "CONNECT"]},
                    {"path_prefix": "/admin"},
                    {"header": {"name": "user-agent", "prefix": "sqlmap"}},
                    {"header": {"name": "x-debug", "present": true}}
                ],
                "rate_limit": {"requests_per_second": 1_000_000},
                "subsets": {"stable": ["backend_a", "backend_b"], "canary": ["backend_c"]},
                "default_subset": "stable",
                "rules": [
                    {"match": {"header": {"name": "x-beta", "exact": "yes"}}, "subset": "canary"},
                    {"percent": 5, "subset": "canary"}
                ],
                "split_key": [{"header": "x-split-user"}],
                "session_affinity": {"cookie": "eisodos_backend", "ttl_s": 3600,
                                     "attributes": "Path=/; HttpOnly; SameSite=Lax"},
                "backends": [{"cluster": "backend_a", "max_requests": 1000},
                             {"cluster": "backend_b", "max_requests": 1000},
                             {"cluster": "backend_c", "max_requests": 1000}],
                "retry": {"retry_on": "5xx,connect-failure", "num_retries": 2,
                          "per_try_timeout_ms": 1000},
                "timeout_ms": 5000
            })),
        },
        Variant {
            name: "eisodos everything",
            routing: Routing::Filter {
                wasm: "eisodos.wasm",
                plugin_config: json!({
                    "policy": "least_request",
                    "health_check": health_check(),
                    "outlier_detection": {"consecutive_failures": 5},
                    "status_path": "/.eisodos/status",
                    "backends": [{"cluster": "backend_a"}, {"cluster": "backend_b"},
                                 {"cluster": "backend_c"}, {"cluster": "backend_d", "backup": true}]
                }),
                clusters: 4,
            },
        },
        native("native LEAST_REQUEST", "LEAST_REQUEST"),
        native("native RING_HASH", "RING_HASH"),
    ]
}

/// The overhead variants worth counting instructions for (Envoy's other native balancers
/// are not what eisodos is compared with there), narrowed by `--filter`.
fn instruction_variants(filter: Option<&str>) -> Vec<Variant> {
    main_variants()
        .into_iter()
        .filter(|v| v.name == "native ROUND_ROBIN" || !v.name.starts_with("native"))
        .filter(|v| {
            v.name == "native ROUND_ROBIN"
                || v.name == "empty Wasm filter"
                || v.name == "raw-ABI floor + stream end"
                || filter.is_none_or(|text| v.name.contains(text))
        })
        .collect()
}

fn valgrind_installed() -> bool {
    std::process::Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success())
}

fn scale_variants() -> Vec<Variant> {
    let eisodos_over = |clusters: usize| Routing::Filter {
        wasm: "eisodos.wasm",
        plugin_config: json!({"policy": "round_robin", "health_check": health_check()}),
        clusters,
    };
    vec![
        native("native ROUND_ROBIN, 3 endpoints", "ROUND_ROBIN"),
        Variant {
            name: "native ROUND_ROBIN, 300 endpoints",
            routing: Routing::Native {
                lb_policy: "ROUND_ROBIN",
                extra: Some(json!({"endpoints_per_port": 100})),
            },
        },
        Variant {
            name: "eisodos round_robin, 3 clusters",
            routing: eisodos_over(3),
        },
        Variant {
            name: "eisodos round_robin, 300 clusters",
            routing: eisodos_over(300),
        },
    ]
}

fn balance_variants() -> Vec<Variant> {
    vec![
        native("native ROUND_ROBIN", "ROUND_ROBIN"),
        native("native LEAST_REQUEST", "LEAST_REQUEST"),
        Variant {
            name: "native LEAST_REQUEST FULL_SCAN",
            routing: Routing::Native {
                lb_policy: "LEAST_REQUEST",
                extra: Some(
                    json!({"load_balancing_policy": {"policies": [{"typed_extension_config": {
                    "name": "envoy.load_balancing_policies.least_request",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest",
                        "selection_method": "FULL_SCAN"}}}]}}),
                ),
            },
        },
        Variant {
            name: "eisodos least_request",
            routing: eisodos(json!({"policy": "least_request"})),
        },
        Variant {
            name: "eisodos least_request, all compared",
            routing: eisodos(
                json!({"policy": "least_request", "least_request": {"choice_count": 3}}),
            ),
        },
        Variant {
            name: "eisodos least_request, latency-weighted",
            routing: eisodos(
                json!({"policy": "least_request", "least_request": {"latency_decay_ms": 10000}}),
            ),
        },
    ]
}

/// Runs one variant once: a fresh Envoy, 1 s of warm-up, then the measured load.
fn measure(
    variant: &Variant,
    concurrency: usize,
    upstream_ports: &[u16],
    connections: usize,
    seconds: u64,
    work: &Path,
) -> Measurement {
    let (listener, admin) = (free_port(), free_port());
    let wasm_dir = paths::repo_root().join("target/wasm32-wasip1/release");
    let config = configs::render(&variant.routing, listener, admin, upstream_ports, &wasm_dir);
    let config_path = work.join("envoy.json");
    std::fs::write(&config_path, config.to_string()).expect("write the Envoy config");
    let mut envoy =
        Envoy::start_with_config_file(&config_path, work, &work.join("envoy.log"), concurrency)
            .unwrap_or_else(|e| panic!("{}: {e}", variant.name));
    loadgen::run(listener, connections, Duration::from_secs(1));
    let pid = envoy.pid();
    let cpu_before = process::cpu_micros(pid).unwrap_or(0);
    let load = loadgen::run(listener, connections, Duration::from_secs(seconds));
    let cpu_after = process::cpu_micros(pid).unwrap_or(0);
    let rss_kb = process::rss_kb(pid).unwrap_or(0);
    envoy.stop();
    Measurement::new(
        variant.name,
        concurrency,
        &load,
        cpu_after - cpu_before,
        rss_kb,
    )
}

fn run_section(
    title: &str,
    variants: &[Variant],
    concurrencies: &[usize],
    upstream_ports: &[u16],
    connections: usize,
    options: &Options,
    work: &Path,
) -> Vec<Measurement> {
    let mut all = Vec::new();
    for &concurrency in concurrencies {
        for round in 1..=options.rounds {
            for variant in variants {
                let m = measure(
                    variant,
                    concurrency,
                    upstream_ports,
                    connections,
                    options.seconds,
                    work,
                );
                eprintln!(
                    "{title} | --concurrency {concurrency} round {round}: {:<34} {:>9.0} rq/s  p50 {:.2} ms  p99 {:.2} ms  {:.1} us CPU/rq{}{}",
                    m.variant,
                    m.rps,
                    m.p50_ms,
                    m.p99_ms,
                    m.cpu_us_per_request,
                    if m.errors > 0 { format!("  ({} errors)", m.errors) } else { String::new() },
                    m.upstream_share
                        .iter()
                        .find(|(name, _)| name == "slow")
                        .map(|(_, share)| format!("  slow {:.1}%", share * 100.0))
                        .unwrap_or_default()
                );
                all.push(m.with_round(round));
            }
        }
    }
    all
}

fn main() {
    // `--from-json`: rewrite the markdown and the plot of the last run without running again.
    if std::env::args().any(|arg| arg == "--from-json") {
        let results = paths::repo_root().join("bench/results");
        let text = std::fs::read_to_string(results.join("latest.json")).expect("read latest.json");
        let report: Report = serde_json::from_str(&text).expect("parse latest.json");
        report.write(&results).expect("write the report");
        println!("{}", report.markdown());
        return;
    }
    let options = options();
    let work = tempdir();
    let results = paths::repo_root().join("bench/results");
    std::fs::create_dir_all(&results).expect("create bench/results");

    if let Some(section) = &options.only {
        run_only(section, &options, &work);
        let _ = std::fs::remove_dir_all(&work);
        return;
    }
    let upstreams = Upstream::start_all(&["bench_a", "bench_b", "bench_c"]);
    let ports: Vec<u16> = upstreams.iter().map(Upstream::port).collect();
    let main = run_section(
        "overhead",
        &main_variants(),
        &[1, 2],
        &ports,
        options.connections,
        &options,
        &work,
    );
    let instructions = if options.quick {
        Vec::new()
    } else if valgrind_installed() {
        instructions::count_all(
            &instruction_variants(options.filter.as_deref()),
            &ports,
            &work,
        )
    } else {
        eprintln!("valgrind not installed: no instruction counts");
        Vec::new()
    };
    let scale = run_section(
        "scale",
        &scale_variants(),
        &[1],
        &ports,
        options.connections,
        &options,
        &work,
    );
    drop(upstreams);

    let balance = run_balance(&options, &work);

    let report = Report {
        machine: process::machine(),
        envoy: envoy_version(),
        rounds: options.rounds,
        seconds: options.seconds,
        connections: options.connections,
        wasm_bytes: wasm_size("eisodos.wasm"),
        empty_wasm_bytes: wasm_size("empty_filter.wasm"),
        ops_per_request: std::fs::read_to_string(results.join("ops-per-request.json"))
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok()),
        main,
        scale,
        balance,
        selection_ns: report::criterion_selection(&paths::repo_root().join("target")),
        instructions,
    };
    report.write(&results).expect("write the report");
    println!("{}", report.markdown());
    let _ = std::fs::remove_dir_all(&work);
}

/// Two fast upstreams and one 20 ms slower, `--concurrency 2`, 32 connections.
fn run_balance(options: &Options, work: &Path) -> Vec<Measurement> {
    let fast_a = Upstream::builder("fast_a").start();
    let fast_b = Upstream::builder("fast_b").start();
    let slow = Upstream::builder("slow")
        .delay(Duration::from_millis(20))
        .start();
    let ports = [fast_a.port(), fast_b.port(), slow.port()];
    run_section(
        "balance",
        &balance_variants(),
        &[2],
        &ports,
        32,
        options,
        work,
    )
}

/// `--only`: one section, its lines on stderr, no report.
fn run_only(section: &str, options: &Options, work: &Path) {
    if section == "openloop" {
        let report = openloop::run(&options.openloop, work);
        let results = paths::repo_root().join("bench/results");
        report.write(&results).expect("write the open-loop report");
        println!("{}", report.markdown());
        return;
    }
    if section == "balance" {
        run_balance(options, work);
        return;
    }
    let upstreams = Upstream::start_all(&["bench_a", "bench_b", "bench_c"]);
    let ports: Vec<u16> = upstreams.iter().map(Upstream::port).collect();
    if section == "instructions" {
        let counts = instructions::count_all(
            &instruction_variants(options.filter.as_deref()),
            &ports,
            work,
        );
        println!("{}", report::instructions_markdown(&counts, None));
        return;
    }
    let (variants, concurrencies): (Vec<Variant>, &[usize]) = match section {
        "scale" => (scale_variants(), &[1]),
        _ => (main_variants(), &[1, 2]),
    };
    run_section(
        section,
        &variants,
        concurrencies,
        &ports,
        options.connections,
        options,
        work,
    );
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("eisodos-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create a work directory");
    dir
}

fn wasm_size(name: &str) -> u64 {
    std::fs::metadata(
        paths::repo_root()
            .join("target/wasm32-wasip1/release")
            .join(name),
    )
    .map_or(0, |m| m.len())
}

pub(crate) fn envoy_version() -> String {
    std::process::Command::new(paths::envoy_bin())
        .arg("--version")
        .output()
        .ok()
        .and_then(|out| {
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .skip_while(|word| *word != "version:")
                .nth(1)
                .and_then(|word| word.split('/').nth(1).map(str::to_owned))
        })
        .unwrap_or_else(|| "unknown".into())
}
