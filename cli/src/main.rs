//! `eisodos check [--all-wasm] FILE...`: one line per eisodos configuration found, `ok` or
//! the error the filter would log. Exit status 0 when every configuration passes, 1 when one
//! fails (or none was found at all), 2 for a wrong command line or a file that cannot be read.

use std::io::Read;
use std::process::ExitCode;

use eisodos_cli::check;
use eisodos_cli::find::Options;

const USAGE: &str = "\
usage: eisodos check [--all-wasm] FILE...

Runs the filter's own configuration validation on every eisodos configuration in each FILE
(`-` reads standard input): a plugin configuration (JSON), or an Envoy config, an Istio
WasmPlugin or EnvoyFilter, an Envoy Gateway EnvoyExtensionPolicy or EnvoyPatchPolicy (YAML or
JSON, several documents allowed). Prints one line per configuration:
    FILE: WHERE: ok
    FILE: WHERE: invalid configuration: FIELD: REASON
A Wasm config is eisodos' when its plugin name, root id, VM id or code file/URL contains
\"eisodos\"; --all-wasm takes every Wasm config for eisodos'.

Exit status: 0 all pass, 1 one fails or none was found, 2 usage error or unreadable file.";

/// What the command line asks for.
struct Command {
    options: Options,
    files: Vec<String>,
}

fn parse_args(args: &[String]) -> Result<Option<Command>, String> {
    let mut args = args.iter();
    match args.next().map(String::as_str) {
        Some("check") => {}
        Some("-h" | "--help" | "help") => return Ok(None),
        Some(other) => return Err(format!("unknown command `{other}`")),
        None => return Err("no command".to_owned()),
    }
    let mut options = Options::default();
    let mut files = Vec::new();
    let mut only_files = false;
    for arg in args {
        match arg.as_str() {
            "--" if !only_files => only_files = true,
            "--all-wasm" if !only_files => options.all_wasm = true,
            "-h" | "--help" if !only_files => return Ok(None),
            flag if !only_files && flag.starts_with('-') && flag != "-" => {
                return Err(format!("unknown option `{flag}`"))
            }
            file => files.push(file.to_owned()),
        }
    }
    if files.is_empty() {
        return Err("no FILE to check".to_owned());
    }
    Ok(Some(Command { options, files }))
}

fn read(file: &str) -> std::io::Result<String> {
    if file == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        Ok(text)
    } else {
        std::fs::read_to_string(file)
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match parse_args(&args) {
        Ok(Some(command)) => command,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("eisodos: {err}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let (mut checked, mut failed, mut unreadable) = (0, false, false);
    for file in &command.files {
        let results = read(file)
            .map_err(|err| format!("cannot be read: {err}"))
            .and_then(|text| check::file(file, &text, command.options));
        match results {
            Err(err) => {
                println!("{file}: {err}");
                unreadable = true;
            }
            Ok(results) if results.is_empty() => {
                println!("{file}: no eisodos configuration found");
            }
            Ok(results) => {
                for result in results {
                    println!("{}", result.line(file));
                    failed |= result.outcome.fails();
                    checked += usize::from(matches!(result.outcome, check::Outcome::Ok))
                        + usize::from(result.outcome.fails());
                }
            }
        }
    }
    if unreadable {
        ExitCode::from(2)
    } else if failed {
        ExitCode::from(1)
    } else if checked == 0 {
        println!("eisodos: no eisodos configuration checked");
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
