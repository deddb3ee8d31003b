//! `eisodos-fuzz [--seconds N] [--seed S] [TARGET...]`: runs each target (all by default) for
//! N seconds and prints its executions; `eisodos-fuzz --replay TARGET FILE` runs one saved
//! input. Exit 1 on a failing input, which is saved under `target/fuzz-crashes/`.

use std::process::ExitCode;
use std::time::Duration;

use eisodos_fuzz::{Budget, Target};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match parse(&args) {
        Ok(Command::Run {
            seconds,
            seed,
            targets,
        }) => run(seconds, seed, &targets),
        Ok(Command::Replay(target, file)) => match std::fs::read(&file) {
            Ok(input) => {
                eisodos_fuzz::replay(target, &input);
                println!("{}: {file} passes", target.name);
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("eisodos-fuzz: {file}: {err}");
                ExitCode::from(2)
            }
        },
        Err(message) => {
            eprintln!("eisodos-fuzz: {message}");
            eprintln!(
                "usage: eisodos-fuzz [--seconds N] [--seed S] [TARGET...] | --replay TARGET FILE"
            );
            eprintln!("targets:");
            for target in eisodos_fuzz::all() {
                eprintln!("  {:<13} {}", target.name, target.about);
            }
            ExitCode::from(2)
        }
    }
}

enum Command {
    Run {
        seconds: u64,
        seed: u64,
        targets: Vec<&'static Target>,
    },
    Replay(&'static Target, String),
}

fn target(name: &str) -> Result<&'static Target, String> {
    eisodos_fuzz::find(name).ok_or_else(|| format!("no target {name}"))
}

fn parse(args: &[String]) -> Result<Command, String> {
    let mut seconds = 60;
    let mut seed = 1;
    let mut targets = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--seconds" => seconds = value()?.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--seed" => seed = value()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--replay" => {
                let name = value()?.clone();
                let file = value()?.clone();
                return Ok(Command::Replay(target(&name)?, file));
            }
            name => targets.push(target(name)?),
        }
    }
    if targets.is_empty() {
        targets = eisodos_fuzz::all().iter().collect();
    }
    Ok(Command::Run {
        seconds,
        seed,
        targets,
    })
}

fn run(seconds: u64, seed: u64, targets: &[&Target]) -> ExitCode {
    println!(
        "{:<13} {:>12} {:>10} {:>8}",
        "target", "executions", "per second", "seconds"
    );
    let mut total = 0;
    for target in targets {
        match eisodos_fuzz::run(target, seed, Budget::Time(Duration::from_secs(seconds))) {
            Ok(report) => {
                total += report.executions;
                println!(
                    "{:<13} {:>12} {:>10.0} {:>8.1}",
                    report.target,
                    report.executions,
                    report.per_second(),
                    report.elapsed.as_secs_f64()
                );
                if report.target.starts_with("config_") {
                    // Counted since the previous config target.
                    println!("  configs {}", eisodos_fuzz::targets::config_outcomes());
                }
            }
            Err(crash) => {
                println!(
                    "{}: FAILED at execution {} (seed {seed}): {}",
                    crash.target, crash.execution, crash.message
                );
                match crash.saved {
                    Some(path) => println!(
                        "input saved: {} (replay: eisodos-fuzz --replay {} {})",
                        path.display(),
                        crash.target,
                        path.display()
                    ),
                    None => println!("input ({} bytes): {:?}", crash.input.len(), crash.input),
                }
                return ExitCode::FAILURE;
            }
        }
    }
    println!("total executions: {total}");
    ExitCode::SUCCESS
}
