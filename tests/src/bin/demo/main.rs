//! `just demo`: three upstreams on 127.0.0.1:8081-8083, Envoy with the shipped
//! `envoy/envoy.yaml` as is, and the balancing shown live: a light steady load and a table
//! of where it goes, refreshed every second, with keys to slow down, fail, kill and restore an
//! upstream (see `live.rs`). `--exit` sends one burst, prints the spread and stops.
//!
//! Usage: `demo [--exit] [--requests N] [--free-ports]`.

mod backends;
mod frame;
mod input;
mod live;

use std::process::ExitCode;

use eisodos_tests::envoy::Envoy;
use eisodos_tests::upstream::Upstream;
use eisodos_tests::{client, paths};

const BACKENDS: [(&str, u16); 3] = [
    ("backend_a", 8081),
    ("backend_b", 8082),
    ("backend_c", 8083),
];

const USAGE: &str = "usage: demo [--exit] [--requests N] [--free-ports]";

struct Args {
    requests: u64,
    exit: bool,
    free_ports: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        requests: 300,
        exit: false,
        free_ports: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--exit" => args.exit = true,
            "--free-ports" => args.free_ports = true,
            "--requests" => {
                let n = it.next().ok_or("--requests needs a number")?;
                args.requests = n.parse().map_err(|e| format!("--requests {n}: {e}"))?;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                println!(
                    "  --exit        send one burst of requests, print the spread and stop\n  \
                     --requests N  the burst's size (default 300; with --exit)\n  \
                     --free-ports  upstreams, Envoy's listener and admin on free ports instead of\n                \
                     8081-8083, 10000 and 9901 (the shipped config re-pointed, as the tests do)"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} ({USAGE})")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    let (upstreams, mut envoy) = if args.free_ports {
        start_on_free_ports()?
    } else {
        start_on_shipped_ports()?
    };
    println!(
        "Envoy is up (pid {}), log: {}",
        envoy.pid(),
        envoy.log_path().display()
    );
    if args.exit {
        burst(&envoy, &upstreams, args.requests);
    } else {
        live::run(&envoy, upstreams)?;
    }
    envoy.stop();
    println!("stopped");
    Ok(())
}

/// The upstreams on 8081-8083 and Envoy on the shipped config as is.
fn start_on_shipped_ports() -> Result<(Vec<Upstream>, Envoy), String> {
    let root = paths::repo_root();
    let config = paths::shipped_config();

    let upstreams = BACKENDS
        .iter()
        .map(|(name, port)| {
            Upstream::builder(name)
                .port(*port)
                .try_start()
                .map_err(|e| format!("upstream {name}: {e} (is another demo running?)"))
        })
        .collect::<Result<Vec<_>, _>>()?;

    // Envoy's own ports: say clearly if they are taken instead of showing its log.
    let parsed: serde_json::Value = serde_yaml::from_str(
        &std::fs::read_to_string(&config).map_err(|e| format!("read {}: {e}", config.display()))?,
    )
    .map_err(|e| format!("parse {}: {e}", config.display()))?;
    for (what, ptr) in [
        ("admin", "/admin/address/socket_address/port_value"),
        (
            "listener",
            "/static_resources/listeners/0/address/socket_address/port_value",
        ),
    ] {
        if let Some(port) = parsed.pointer(ptr).and_then(serde_json::Value::as_u64) {
            std::net::TcpListener::bind(format!("127.0.0.1:{port}")).map_err(|e| {
                format!("Envoy {what} port 127.0.0.1:{port} is not free: {e} (is another Envoy running?)")
            })?;
        }
    }

    let log = root.join("target/demo/envoy.log");
    let envoy = Envoy::start_with_config_file(&config, &root, &log, 2)?;
    Ok((upstreams, envoy))
}

/// The upstreams and Envoy on free ports: the shipped config re-pointed by the test harness,
/// so a demo can run next to another one, and the tests can run it.
fn start_on_free_ports() -> Result<(Vec<Upstream>, Envoy), String> {
    let upstreams = BACKENDS
        .iter()
        .map(|(name, _)| Upstream::builder(name).try_start())
        .collect::<Result<Vec<_>, _>>()?;
    let envoy = Envoy::builder().upstreams(&upstreams).try_start()?;
    Ok((upstreams, envoy))
}

/// `--exit`: `requests` requests, each on a new connection, and the table of where they went.
/// Scripts read this output: keep it as it is.
fn burst(envoy: &Envoy, upstreams: &[Upstream], requests: u64) {
    let url = envoy.url("/");
    let mut non_200 = 0u64;
    let mut failed = 0u64;
    // A new connection per request, so the kernel spreads them over both workers and the
    // spread shows the one global order, not one worker's.
    for _ in 0..requests {
        match client::try_get_with(&url, &[("connection", "close")]) {
            Ok(r) if r.status == 200 => {}
            Ok(_) => non_200 += 1,
            Err(_) => failed += 1,
        }
    }

    println!("\n{requests} requests to {url}\n");
    println!("{:<12} {:>8} {:>8}", "backend", "requests", "percent");
    let total = requests.max(1) as f64;
    for upstream in upstreams {
        let hits = upstream.hits();
        println!(
            "{:<12} {:>8} {:>7.1}%",
            upstream.name(),
            hits,
            hits as f64 * 100.0 / total
        );
    }
    println!(
        "{:<12} {:>8} {:>7.1}%",
        "non-200",
        non_200,
        non_200 as f64 * 100.0 / total
    );
    if failed > 0 {
        println!(
            "{:<12} {:>8} {:>7.1}%",
            "no answer",
            failed,
            failed as f64 * 100.0 / total
        );
    }
    let per_worker: Vec<String> = envoy
        .connections_per_worker(2)
        .iter()
        .enumerate()
        .map(|(w, n)| format!("worker_{w}: {n}"))
        .collect();
    println!("\nconnections per Envoy worker: {}", per_worker.join(", "));
    for upstream in upstreams {
        for error in upstream.errors() {
            eprintln!("{}: server error: {error}", upstream.name());
        }
    }
}
