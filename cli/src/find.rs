//! Finds eisodos' plugin configurations in a file, and turns each into the bytes the filter
//! would receive in `on_configure`.
//!
//! A file is read as a YAML stream (JSON is YAML), and every document is searched, at any depth:
//! - an Envoy Wasm HTTP filter config: a mapping whose `@type` is
//!   `envoy.extensions.filters.http.wasm.v3.Wasm` (a bootstrap, a listener, an `EnvoyFilter`'s or
//!   an `EnvoyPatchPolicy`'s patch, an extension config), or a `TypedStruct` whose `type_url` is.
//!   Its `config.configuration` is a `google.protobuf.StringValue`, whose string the filter gets
//!   as is, or a `google.protobuf.Struct`, which Envoy turns into JSON; absent, the filter gets
//!   nothing.
//! - an Istio `WasmPlugin` (`extensions.istio.io`): `spec.pluginConfig`, a `Struct` that Istio
//!   turns into JSON with every number a double (`pilot/pkg/model/wasm.go`,
//!   `buildPluginConfig`), so `5` arrives as `5.0` here; absent or empty, the filter gets
//!   nothing.
//! - an Envoy Gateway `EnvoyExtensionPolicy` (`gateway.envoyproxy.io`): each `spec.wasm[].config`,
//!   passed on as its raw JSON (`internal/xds/translator/wasm.go`, `wasmConfig`); absent, the
//!   filter gets an empty string.
//!
//! A Wasm config is eisodos' when one of the names it carries contains `eisodos` (any case): the
//! plugin's `name`, `root_id` or `vm_id`, the code's file name or URL; for a `WasmPlugin` its
//! name, `pluginName` or `url`; for an `EnvoyExtensionPolicy` entry its `name`, `rootID` or code
//! URL. Other plugins' configs are reported as skipped. [`Options::all_wasm`] takes every Wasm
//! config for eisodos' (an image renamed beyond recognition).
//!
//! A file with none of these, which is not an Envoy config or a Kubernetes resource, and is a
//! JSON object (or named `*.json`), is one plugin configuration: its bytes go to the parser
//! unchanged, so a syntax error is reported with its line and column, as the filter would.

use serde_json::Value as Json;
use serde_yaml::{Mapping, Value as Yaml};

/// What the search looks for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Take every Wasm config for eisodos', whatever its names.
    pub all_wasm: bool,
}

/// One Wasm plugin configuration found in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Where in the file: `static_resources.listeners[0]...typed_config`,
    /// `WasmPlugin istio-system/eisodos: spec.pluginConfig`; empty for a file that is one
    /// plugin configuration.
    pub location: String,
    /// What is there.
    pub what: What,
}

/// A found configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum What {
    /// eisodos' configuration: the bytes the filter receives.
    Eisodos(Vec<u8>),
    /// Another plugin's: not checked. The names it carries, for the report.
    Other(String),
    /// eisodos', but in a form the checker cannot turn into what the filter receives.
    Unreadable(String),
}

/// The type of Envoy's Wasm HTTP filter config.
const WASM_TYPE: &str = "envoy.extensions.filters.http.wasm.v3.Wasm";
/// What marks a name as eisodos'.
const MARK: &str = "eisodos";

/// Every Wasm plugin configuration in `text`; `name` (the file's) decides, with the content,
/// whether a file without any is itself a plugin configuration.
///
/// # Errors
/// When the file is neither YAML nor a plugin configuration.
pub fn in_file(name: &str, text: &str, options: Options) -> Result<Vec<Found>, String> {
    let documents = match documents(text) {
        Ok(documents) => documents,
        // Not YAML, so not an Envoy config or a manifest; a JSON configuration with a syntax
        // error is still one, and the parser says where the error is.
        Err(_) if is_plugin_config(name, text) => return Ok(vec![whole_file(text)]),
        Err(err) => return Err(format!("is not YAML or JSON: {err}")),
    };
    let mut search = Search {
        options,
        found: Vec::new(),
    };
    let several = documents.len() > 1;
    let mut containers = false;
    for (i, document) in documents.iter().enumerate() {
        containers |= is_container(document);
        let context = if several {
            format!("document {}", i + 1)
        } else {
            String::new()
        };
        search.walk(document, &context, &mut Vec::new());
    }
    if search.found.is_empty() && !containers && is_plugin_config(name, text) {
        return Ok(vec![whole_file(text)]);
    }
    Ok(search.found)
}

/// The documents of a YAML stream.
fn documents(text: &str) -> Result<Vec<Yaml>, serde_yaml::Error> {
    serde_yaml::Deserializer::from_str(text)
        .map(<Yaml as serde_core::Deserialize>::deserialize)
        .collect()
}

/// Whether a file without Wasm configs in it is a plugin configuration.
fn is_plugin_config(name: &str, text: &str) -> bool {
    name.ends_with(".json") || text.trim_start().starts_with('{')
}

/// Whether a document is something that holds configs (an Envoy bootstrap or config dump, a
/// Kubernetes resource) rather than a plugin configuration.
fn is_container(document: &Yaml) -> bool {
    let Some(map) = document.as_mapping() else {
        return false;
    };
    let has = |key: &str| map.contains_key(key);
    (has("apiVersion") && has("kind"))
        || has("static_resources")
        || has("staticResources")
        || has("dynamic_resources")
        || has("dynamicResources")
        || has("configs")
}

fn whole_file(text: &str) -> Found {
    Found {
        location: String::new(),
        what: What::Eisodos(text.as_bytes().to_vec()),
    }
}

/// One step of a path into a document.
enum Step {
    Key(String),
    Index(usize),
}

/// `a.b[0].c`.
fn path(steps: &[Step]) -> String {
    let mut text = String::new();
    for step in steps {
        match step {
            Step::Key(key) => {
                if !text.is_empty() {
                    text.push('.');
                }
                text.push_str(key);
            }
            Step::Index(i) => text.push_str(&format!("[{i}]")),
        }
    }
    text
}

/// `context: path`, either part possibly empty.
fn location(context: &str, steps: &[Step]) -> String {
    let path = path(steps);
    match (context.is_empty(), path.is_empty()) {
        (true, _) => path,
        (false, true) => context.to_owned(),
        (false, false) => format!("{context}: {path}"),
    }
}

struct Search {
    options: Options,
    found: Vec<Found>,
}

impl Search {
    /// Looks for configs in `value`, at `steps` below `context`.
    fn walk(&mut self, value: &Yaml, context: &str, steps: &mut Vec<Step>) {
        match value {
            Yaml::Mapping(map) => {
                if let Some((kind, name)) = resource(map) {
                    // A resource (at the root, or in a List) names itself; paths restart in it.
                    let context = if steps.is_empty() {
                        format!("{kind} {name}")
                    } else {
                        format!("{} {kind} {name}", location(context, steps))
                    };
                    self.resource(map, &kind, &context);
                    self.walk_members(map, &context, &mut Vec::new());
                } else if let Some(wasm) = wasm_filter(map) {
                    self.wasm_filter(wasm, location(context, steps));
                } else {
                    self.walk_members(map, context, steps);
                }
            }
            Yaml::Sequence(items) => {
                for (i, item) in items.iter().enumerate() {
                    steps.push(Step::Index(i));
                    self.walk(item, context, steps);
                    steps.pop();
                }
            }
            Yaml::Tagged(tagged) => self.walk(&tagged.value, context, steps),
            _ => {}
        }
    }

    fn walk_members(&mut self, map: &Mapping, context: &str, steps: &mut Vec<Step>) {
        for (key, value) in map {
            let key = match key {
                Yaml::String(key) => key.clone(),
                other => serde_yaml::to_string(other)
                    .map(|key| key.trim_end().to_owned())
                    .unwrap_or_default(),
            };
            steps.push(Step::Key(key));
            self.walk(value, context, steps);
            steps.pop();
        }
    }

    /// The configs an Istio `WasmPlugin` or an Envoy Gateway `EnvoyExtensionPolicy` carries.
    fn resource(&mut self, map: &Mapping, kind: &str, context: &str) {
        let spec = map.get("spec").and_then(Yaml::as_mapping);
        match kind {
            "WasmPlugin" => {
                let names = [
                    map.get("metadata").and_then(|m| m.get("name")),
                    spec.and_then(|s| s.get("pluginName")),
                    spec.and_then(|s| s.get("url")),
                ];
                let config = spec.and_then(|s| s.get("pluginConfig"));
                let what = self.what(&names, || istio_plugin_config(config));
                self.found.push(Found {
                    location: format!("{context}: spec.pluginConfig"),
                    what,
                });
            }
            "EnvoyExtensionPolicy" => {
                let wasms = spec
                    .and_then(|s| s.get("wasm"))
                    .and_then(Yaml::as_sequence)
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                for (i, wasm) in wasms.iter().enumerate() {
                    let code = wasm.get("code");
                    let names = [
                        wasm.get("name"),
                        wasm.get("rootID"),
                        code.and_then(|c| c.get("image")).and_then(|i| i.get("url")),
                        code.and_then(|c| c.get("http")).and_then(|h| h.get("url")),
                    ];
                    let config = wasm.get("config");
                    let what = self.what(&names, || gateway_plugin_config(config));
                    self.found.push(Found {
                        location: format!("{context}: spec.wasm[{i}].config"),
                        what,
                    });
                }
            }
            _ => {}
        }
    }

    /// An Envoy Wasm filter config (the `Wasm` message's fields).
    fn wasm_filter(&mut self, wasm: &Mapping, location: String) {
        let plugin = field(wasm, "config", "config");
        let vm = plugin.and_then(|p| field_of(p, "vm_config", "vmConfig"));
        let code = vm.and_then(|vm| field_of(vm, "code", "code"));
        let names = [
            plugin.and_then(|p| field_of(p, "name", "name")),
            plugin.and_then(|p| field_of(p, "root_id", "rootId")),
            vm.and_then(|vm| field_of(vm, "vm_id", "vmId")),
            code.and_then(|c| field_of(c, "local", "local"))
                .and_then(|l| field_of(l, "filename", "filename")),
            code.and_then(|c| field_of(c, "remote", "remote"))
                .and_then(|r| field_of(r, "http_uri", "httpUri"))
                .and_then(|h| field_of(h, "uri", "uri")),
        ];
        let configuration = plugin.and_then(|p| field_of(p, "configuration", "configuration"));
        let what = self.what(&names, || envoy_configuration(configuration));
        self.found.push(Found { location, what });
    }

    /// eisodos' configuration (read by `read`) if a name says so, else another plugin's.
    fn what(
        &self,
        names: &[Option<&Yaml>],
        read: impl FnOnce() -> Result<Vec<u8>, String>,
    ) -> What {
        let names: Vec<&str> = names.iter().flatten().filter_map(|n| n.as_str()).collect();
        let ours = names
            .iter()
            .any(|name| name.to_ascii_lowercase().contains(MARK));
        if !ours && !self.options.all_wasm {
            let names: Vec<String> = names.iter().map(|name| format!("{name:?}")).collect();
            return What::Other(if names.is_empty() {
                "no names".to_owned()
            } else {
                names.join(", ")
            });
        }
        match read() {
            Ok(bytes) => What::Eisodos(bytes),
            Err(why) => What::Unreadable(why),
        }
    }
}

/// `(kind, "namespace/name")` of a Kubernetes resource.
fn resource(map: &Mapping) -> Option<(String, String)> {
    map.get("apiVersion")?.as_str()?;
    let kind = map.get("kind")?.as_str()?.to_owned();
    let metadata = map.get("metadata");
    let text = |key: &str| metadata.and_then(|m| m.get(key)).and_then(Yaml::as_str);
    let name = match (text("namespace"), text("name")) {
        (Some(namespace), Some(name)) => format!("{namespace}/{name}"),
        (None, Some(name)) => name.to_owned(),
        (_, None) => "(unnamed)".to_owned(),
    };
    Some((kind, name))
}

/// The `Wasm` message in `map`, if `map` is an `Any` of it (its fields beside `@type`) or a
/// `TypedStruct` of it (its fields in `value`).
fn wasm_filter(map: &Mapping) -> Option<&Mapping> {
    let is_wasm = |url: Option<&Yaml>| {
        url.and_then(Yaml::as_str)
            .is_some_and(|url| url.ends_with(WASM_TYPE))
    };
    if is_wasm(map.get("@type")) {
        return Some(map);
    }
    if is_wasm(field(map, "type_url", "typeUrl")) {
        return field(map, "value", "value").and_then(Yaml::as_mapping);
    }
    None
}

/// A field of a protobuf message in YAML, by its proto name or its JSON (lowerCamelCase) name:
/// Envoy accepts both.
fn field<'a>(map: &'a Mapping, proto: &str, json: &str) -> Option<&'a Yaml> {
    map.get(proto).or_else(|| map.get(json))
}

fn field_of<'a>(value: &'a Yaml, proto: &str, json: &str) -> Option<&'a Yaml> {
    field(value.as_mapping()?, proto, json)
}

/// What the filter receives from a `PluginConfig.configuration` (an `Any`).
fn envoy_configuration(configuration: Option<&Yaml>) -> Result<Vec<u8>, String> {
    let Some(configuration) = configuration.filter(|c| !c.is_null()) else {
        return Ok(Vec::new());
    };
    let url = field_of(configuration, "@type", "@type")
        .and_then(Yaml::as_str)
        .unwrap_or_default();
    let value = field_of(configuration, "value", "value");
    if url.ends_with("google.protobuf.StringValue") {
        return match value {
            None => Ok(Vec::new()),
            Some(Yaml::String(text)) => Ok(text.as_bytes().to_vec()),
            Some(_) => Err("configuration.value of a StringValue is not a string".to_owned()),
        };
    }
    if url.ends_with("google.protobuf.Struct") {
        let json = to_json(value.unwrap_or(&Yaml::Mapping(Mapping::new())))?;
        return serialize(&json);
    }
    Err(format!(
        "configuration of type {url:?}: the checker reads google.protobuf.StringValue and google.protobuf.Struct"
    ))
}

/// What the filter receives from a `WasmPlugin`'s `pluginConfig`: its JSON, every number a
/// double; nothing when it is absent or empty.
fn istio_plugin_config(config: Option<&Yaml>) -> Result<Vec<u8>, String> {
    let Some(config) = config.filter(|c| !c.is_null()) else {
        return Ok(Vec::new());
    };
    let mut json = to_json(config)?;
    if json.as_object().is_some_and(serde_json::Map::is_empty) {
        return Ok(Vec::new());
    }
    as_doubles(&mut json);
    serialize(&json)
}

/// What the filter receives from an `EnvoyExtensionPolicy`'s `wasm[].config`: its JSON, an
/// empty string when absent.
fn gateway_plugin_config(config: Option<&Yaml>) -> Result<Vec<u8>, String> {
    match config.filter(|c| !c.is_null()) {
        None => Ok(Vec::new()),
        Some(config) => serialize(&to_json(config)?),
    }
}

fn to_json(value: &Yaml) -> Result<Json, String> {
    serde_json::to_value(value).map_err(|err| format!("cannot be expressed as JSON: {err}"))
}

fn serialize(json: &Json) -> Result<Vec<u8>, String> {
    serde_json::to_vec(json).map_err(|err| format!("cannot be written as JSON: {err}"))
}

/// Every number as a double, as in a protobuf `Struct`.
fn as_doubles(json: &mut Json) {
    match json {
        Json::Number(n) => {
            if let Some(double) = n.as_f64().and_then(serde_json::Number::from_f64) {
                *n = double;
            }
        }
        Json::Array(items) => items.iter_mut().for_each(as_doubles),
        Json::Object(members) => members.values_mut().for_each(as_doubles),
        _ => {}
    }
}
