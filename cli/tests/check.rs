//! `eisodos check` on samples of each kind of file it reads (`tests/data/`), through the
//! library and through the binary.

// A test crate: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use eisodos_cli::check;
use eisodos_cli::find::{self, Options, What};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn lines(name: &str, options: Options) -> Vec<String> {
    let text = std::fs::read_to_string(data(name)).unwrap();
    check::file(name, &text, options)
        .unwrap()
        .iter()
        .map(|checked| checked.line(name))
        .collect()
}

/// Runs the binary; its exit code and standard output.
fn run(args: &[&str], stdin: &str) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_eisodos"))
        .args(args)
        .current_dir(data(""))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    (
        output.status.code().unwrap(),
        String::from_utf8(output.stdout).unwrap(),
    )
}

#[test]
fn istio_wasm_plugins_and_envoy_filters() {
    assert_eq!(
        lines("istio.yaml", Options::default()),
        [
            "istio.yaml: WasmPlugin istio-system/eisodos: spec.pluginConfig: ok",
            "istio.yaml: WasmPlugin istio-system/basic-auth: spec.pluginConfig: skipped, not \
             eisodos (\"basic-auth\", \"oci://registry.example/basic-auth:1.0\")",
            "istio.yaml: EnvoyFilter default/eisodos-by-hand: \
             spec.configPatches[0].patch.value.typed_config: invalid configuration: \
             backends[0].weight: must be between 1 and 1000, got 0",
        ]
    );
}

/// Istio hands a `pluginConfig` over as a protobuf `Struct`: every number a double.
#[test]
fn a_wasm_plugins_numbers_arrive_as_doubles() {
    let text = std::fs::read_to_string(data("istio.yaml")).unwrap();
    let found = find::in_file("istio.yaml", &text, Options::default()).unwrap();
    let What::Eisodos(config) = &found[0].what else {
        panic!("{found:?}");
    };
    let config = String::from_utf8(config.clone()).unwrap();
    assert!(config.contains(r#""weight":2.0"#), "{config}");
    assert!(config.contains(r#""interval_ms":1000.0"#), "{config}");
}

#[test]
fn envoy_gateway_extension_and_patch_policies() {
    assert_eq!(
        lines("envoy-gateway.yaml", Options::default()),
        [
            "envoy-gateway.yaml: EnvoyExtensionPolicy default/eisodos: spec.wasm[0].config: ok",
            "envoy-gateway.yaml: EnvoyExtensionPolicy default/eisodos: spec.wasm[1].config: \
             skipped, not eisodos (\"header-rewriter\", \"https://example.com/rewriter.wasm\")",
            "envoy-gateway.yaml: EnvoyExtensionPolicy default/eisodos: spec.wasm[2].config: \
             invalid configuration: round_robin: applies only to policy round_robin, not \
             random; remove it",
            // camelCase field names and a Struct configuration.
            "envoy-gateway.yaml: EnvoyPatchPolicy default/eisodos-filter: \
             spec.jsonPatches[0].operation.value.typedConfig: ok",
        ]
    );
}

#[test]
fn other_plugins_are_skipped_unless_every_wasm_config_is_asked_for() {
    let location = "not-eisodos.yaml: static_resources.listeners[0].filter_chains[0].filters[0].\
                    typed_config.http_filters[0].typed_config";
    assert_eq!(
        lines("not-eisodos.yaml", Options::default()),
        [format!(
            "{location}: skipped, not eisodos (\"auth\", \"auth\", \"/etc/envoy/auth.wasm\")"
        )]
    );
    assert_eq!(
        lines("not-eisodos.yaml", Options { all_wasm: true }),
        [format!(
            "{location}: invalid configuration: backends: is empty; at least one backend is required"
        )]
    );
}

#[test]
fn a_json_file_is_one_plugin_configuration_read_as_the_filter_reads_it() {
    assert_eq!(lines("good.json", Options::default()), ["good.json: ok"]);
    assert_eq!(
        lines("syntax-error.json", Options::default()),
        [
            "syntax-error.json: invalid configuration: configuration: is not valid JSON: trailing \
          comma at line 4 column 3"
        ]
    );
    // A repeated key, which a YAML reader would refuse or drop, reaches the parser.
    let checked = check::file(
        "x.json",
        r#"{"backends": [{"cluster": "a"}], "backends": []}"#,
        Options::default(),
    )
    .unwrap();
    assert_eq!(
        checked[0].line("x.json"),
        "x.json: invalid configuration: backends: duplicate field `backends`"
    );
}

#[test]
fn documents_of_a_stream_are_numbered_and_a_struct_configuration_is_read() {
    let wasm = |config: &str| {
        format!(
            "http_filters:\n- typed_config:\n    \"@type\": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm\n    config:\n      root_id: eisodos\n{config}"
        )
    };
    let text = format!(
        "{}---\n{}",
        wasm("      configuration:\n        \"@type\": type.googleapis.com/google.protobuf.Struct\n        value: {backends: [{cluster: a}]}\n"),
        wasm("")
    );
    let checked: Vec<String> = check::file("s.yaml", &text, Options::default())
        .unwrap()
        .iter()
        .map(|c| c.line("s.yaml"))
        .collect();
    assert_eq!(
        checked,
        [
            "s.yaml: document 1: http_filters[0].typed_config: ok",
            // No configuration: the filter gets nothing, and refuses it.
            "s.yaml: document 2: http_filters[0].typed_config: invalid configuration: \
             configuration: is empty; expected a JSON object with at least `backends`",
        ]
    );
}

#[test]
fn a_configuration_the_checker_cannot_read_fails_the_check() {
    let text = "\"@type\": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm\nconfig:\n  name: eisodos\n  configuration:\n    \"@type\": type.googleapis.com/google.protobuf.BytesValue\n    value: e30=\n";
    let checked = check::file("b.yaml", text, Options::default()).unwrap();
    assert!(checked[0].outcome.fails());
    assert!(
        checked[0]
            .line("b.yaml")
            .starts_with("b.yaml: cannot check: configuration of type"),
        "{checked:?}"
    );
}

#[test]
fn exit_status_zero_when_every_configuration_passes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let envoy = root.join("envoy/envoy.yaml");
    let (code, out) = run(&["check", "good.json", envoy.to_str().unwrap()], "");
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.starts_with("good.json: ok\n"), "{out}");
}

#[test]
fn exit_status_one_when_one_fails_or_nothing_is_checked() {
    let (code, out) = run(&["check", "good.json", "syntax-error.json"], "");
    assert_eq!(code, 1, "{out}");
    let (code, out) = run(&["check", "not-eisodos.yaml"], "");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.ends_with("eisodos: no eisodos configuration checked\n"),
        "{out}"
    );
    let (code, out) = run(&["check", "-"], "a: 1\n");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with("-: no eisodos configuration found\n"),
        "{out}"
    );
}

#[test]
fn standard_input_is_read_for_a_dash() {
    let (code, out) = run(&["check", "-"], r#"{"backends": [{"cluster": "a"}]}"#);
    assert_eq!((code, out.as_str()), (0, "-: ok\n"));
}

#[test]
fn exit_status_two_for_usage_errors_and_unreadable_files() {
    for args in [
        &[][..],
        &["chek", "good.json"],
        &["check"],
        &["check", "--strict", "good.json"],
    ] {
        assert_eq!(run(args, "").0, 2, "{args:?}");
    }
    let (code, out) = run(&["check", "good.json", "missing.json"], "");
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("missing.json: cannot be read: "), "{out}");
    let (code, out) = run(&["check", "-"], "a: [\n");
    assert_eq!(code, 2, "{out}");
    assert!(out.starts_with("-: is not YAML or JSON: "), "{out}");
    assert_eq!(run(&["--help"], "").0, 0);
}
