//! Serves the harness's upstreams until stopped, for benchmarks and manual runs:
//! `upstreams backend_a=8081 backend_b=8082 ...`. Each answers 200 with its name (see
//! `eisodos_tests::upstream`). Stops on SIGINT or SIGTERM.

use std::process::ExitCode;

use eisodos_tests::upstream::Upstream;

fn main() -> ExitCode {
    let mut upstreams = Vec::new();
    for arg in std::env::args().skip(1) {
        let Some((name, port)) = arg.split_once('=') else {
            eprintln!("usage: upstreams NAME=PORT...");
            return ExitCode::FAILURE;
        };
        let Ok(port) = port.parse::<u16>() else {
            eprintln!("upstreams: bad port in {arg:?}");
            return ExitCode::FAILURE;
        };
        match Upstream::builder(name).port(port).try_start() {
            Ok(upstream) => upstreams.push(upstream),
            Err(err) => {
                eprintln!("upstreams: {name}: {err}");
                return ExitCode::FAILURE;
            }
        }
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("upstreams: tokio runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    });
    for upstream in &upstreams {
        println!("{}: {} requests", upstream.name(), upstream.hits());
    }
    ExitCode::SUCCESS
}
