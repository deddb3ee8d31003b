//! The schema carries the README's configuration reference: the same fields, each with its
//! type, default, range and allowed values, and no field the reference does not document.

// A test crate: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

/// A row of the reference table.
struct Row {
    field: String,
    kind: String,
    default: String,
    meaning: String,
}

fn reference() -> Vec<Row> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(path).unwrap();
    let start = readme.find("## Configuration reference").unwrap();
    let section = &readme[start..];
    let end = section[3..].find("\n#").map_or(section.len(), |i| i + 3);
    section[..end]
        .lines()
        .filter(|line| line.starts_with("| `"))
        .map(|line| {
            let inner = line.trim_start_matches("| ").trim_end_matches(" |");
            let cells: Vec<&str> = inner.splitn(4, " | ").collect();
            assert_eq!(cells.len(), 4, "{line}");
            Row {
                field: cells[0].trim_matches('`').to_owned(),
                kind: cells[1].to_owned(),
                default: cells[2].to_owned(),
                meaning: cells[3].to_owned(),
            }
        })
        .collect()
}

fn schema() -> Value {
    serde_json::from_str(eisodos_schema::SCHEMA).unwrap()
}

/// Follows a `$ref` into `$defs`.
fn resolve<'a>(schema: &'a Value, node: &'a Value) -> &'a Value {
    match node.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let name = reference.strip_prefix("#/$defs/").unwrap();
            &schema["$defs"][name]
        }
        None => node,
    }
}

/// The node of `backends[].cluster`, `health_check.path`..., and its parent object's node.
fn node<'a>(schema: &'a Value, field: &str) -> (&'a Value, &'a Value) {
    let mut parent = schema;
    let mut node = schema;
    for segment in field.split('.') {
        let (name, items) = match segment.strip_suffix("[]") {
            Some(name) => (name, true),
            None => (segment, false),
        };
        parent = node;
        node = resolve(schema, &node["properties"][name]);
        assert!(!node.is_null(), "{field}: no {name} in the schema");
        if items {
            node = resolve(schema, &node["items"]);
        }
    }
    (parent, node)
}

/// The node's types, `null` left out (an enum's from its values).
fn types(node: &Value) -> BTreeSet<String> {
    let named = match &node["type"] {
        Value::String(kind) => vec![kind.clone()],
        Value::Array(kinds) => kinds
            .iter()
            .map(|k| k.as_str().unwrap().to_owned())
            .collect(),
        _ => node["enum"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| !v.is_null())
            .map(|v| if v.is_string() { "string" } else { "other" }.to_owned())
            .collect(),
    };
    named.into_iter().filter(|k| k != "null").collect()
}

/// The first `<n> to <m>` in the text, commas in numbers ignored.
fn range(text: &str) -> Option<(f64, f64)> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let number = |word: &str| {
        word.trim_end_matches([',', ';', ')', '.'])
            .replace(',', "")
            .parse::<f64>()
            .ok()
    };
    words.windows(3).find_map(|w| match w {
        [low, "to", high] => Some((number(low)?, number(high)?)),
        _ => None,
    })
}

#[test]
fn every_field_of_the_reference_is_in_the_schema_as_documented() {
    let schema = schema();
    let rows = reference();
    assert!(rows.len() > 30, "{} rows", rows.len());
    for row in &rows {
        let field = &row.field;
        let (parent, node) = node(&schema, field);
        // Type.
        let expected: BTreeSet<String> = match row.kind.as_str() {
            "array of integers" => {
                assert_eq!(
                    types(resolve(&schema, &node["items"])),
                    ["integer".into()].into()
                );
                ["array".to_owned()].into()
            }
            "array of strings" => {
                assert_eq!(
                    types(resolve(&schema, &node["items"])),
                    ["string".into()].into()
                );
                ["array".to_owned()].into()
            }
            // `string or array`: a value or a list of them.
            kind => kind.split(" or ").map(str::to_owned).collect(),
        };
        assert_eq!(types(node), expected, "{field}: type");
        // Default.
        let documented = row
            .default
            .strip_prefix('`')
            .and_then(|d| d.strip_suffix('`'))
            .filter(|d| !d.contains('`'))
            .and_then(|d| serde_json::from_str::<Value>(d).ok());
        match documented {
            Some(default) => assert_eq!(node.get("default"), Some(&default), "{field}: default"),
            None => {
                assert_eq!(node.get("default"), None, "{field}: default");
                let name = field.rsplit('.').next().unwrap().trim_end_matches("[]");
                let required = parent["required"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|n| n == name));
                assert_eq!(row.default == "required", required, "{field}: required");
            }
        }
        // Range.
        let text = format!("{} {}", row.meaning, row.default);
        let kind = expected.iter().next().unwrap().as_str();
        let (low, high) = match kind {
            "integer" | "number" => ("minimum", "maximum"),
            "array" => ("minItems", "maxItems"),
            _ => ("", ""),
        };
        if !low.is_empty() {
            let bounds = node.get(low).map(|low| {
                (
                    low.as_f64().unwrap(),
                    node[high].as_f64().unwrap_or(f64::NAN),
                )
            });
            let documented = range(&row.meaning);
            if kind == "array" && documented.is_none() {
                assert_eq!(bounds, None, "{field}: the reference gives no length");
            } else {
                assert_eq!(
                    bounds, documented,
                    "{field}: range (from {:?})",
                    row.meaning
                );
            }
        }
        // Allowed values.
        for value in node["enum"].as_array().into_iter().flatten() {
            if let Some(value) = value.as_str() {
                assert!(text.contains(&format!("`{value}`")), "{field}: {value}");
            }
        }
        // A one-key object per item (hash_key's sources): each key is named in the text.
        let items = resolve(&schema, &node["items"]);
        if items["maxProperties"] == 1 {
            for key in items["properties"].as_object().unwrap().keys() {
                assert!(text.contains(&format!("{{\"{key}\"")), "{field}: {key}");
            }
        }
    }
}

/// Every field the schema knows, as the reference names it.
fn schema_fields(schema: &Value, node: &Value, prefix: &str, fields: &mut BTreeSet<String>) {
    let node = resolve(schema, node);
    for (name, child) in node["properties"].as_object().into_iter().flatten() {
        let field = format!("{prefix}{name}");
        fields.insert(field.clone());
        let child = resolve(schema, child);
        schema_fields(schema, child, &format!("{field}."), fields);
        let items = resolve(schema, &child["items"]);
        if items["maxProperties"] != 1 {
            schema_fields(schema, items, &format!("{field}[]."), fields);
        }
    }
}

#[test]
fn the_schema_has_no_field_the_reference_does_not_document() {
    let schema = schema();
    let mut fields = BTreeSet::new();
    schema_fields(&schema, &schema, "", &mut fields);
    let documented: BTreeSet<String> = reference().into_iter().map(|row| row.field).collect();
    assert_eq!(fields, documented);
}

#[test]
fn the_schema_is_draft_2020_12_and_compiles() {
    assert_eq!(
        schema()["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    eisodos_schema::Schema::load().unwrap();
}
