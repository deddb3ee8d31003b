//! A small typed reader over parsed JSON, for the configuration.
//!
//! serde_json parses the bytes (its syntax errors carry line and column) into a [`Json`] tree
//! that keeps every object member in document order, duplicates included. The readers here walk
//! that tree and turn what they find into [`ConfigError`]s that name the field's path
//! (`backends[1].weight`, `configuration` for the document itself), in the words serde used:
//! ``invalid type: string "x", expected u32``, ``invalid value: integer `300`, expected u8``,
//! ``unknown field `x`, expected one of ...``, ``duplicate field `x` ``, ``missing field `x` ``.
//! Not serde's: no `at line L column C` after them (the tree keeps no positions; the path says
//! where), and JSON's names for the types (`array`, `object`, `a number`).
//!
//! Hand-written rather than derived because of the .wasm's size: serde's derive and
//! serde_path_to_error monomorphise a deserializer per type. Here serde_json's parser is
//! instantiated once, for [`Json`]; the readers are non-generic but for [`At::choice`] (a short
//! loop per enum type), so each exists once in the binary.
//!
//! Floating-point values are never formatted (`{}` of an `f64` links ~12 KB of float
//! formatting into the filter): a float where an integer belongs is reported as
//! `floating point`, without its value.

use std::fmt;

use serde_core::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::ConfigError;

/// A parsed JSON value. Objects keep their members in document order, duplicates included, so
/// the readers can reject a duplicate (serde_json's own `Value` keeps only the last).
#[cfg_attr(test, derive(Debug, PartialEq))]
pub(crate) enum Json {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// An integer `>= 0` that fits in a `u64`.
    UInt(u64),
    /// A negative integer that fits in an `i64`.
    NegInt(i64),
    /// A number with a fraction or an exponent, or an integer too large for the above.
    Float(f64),
    /// A string.
    Str(String),
    /// An array.
    Array(Vec<Json>),
    /// An object's members, in document order.
    Object(Vec<(String, Json)>),
}

/// Parses a whole document: one JSON value and nothing after it but whitespace. Every failure
/// is `configuration: is not valid JSON: <serde_json's message, with line and column>`.
pub(crate) fn parse(bytes: &[u8]) -> Result<Json, ConfigError> {
    serde_json::from_slice(bytes)
        .map_err(|err| ConfigError::new("configuration", format!("is not valid JSON: {err}")))
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

/// Builds a [`Json`] from whatever serde_json finds; accepts every value.
struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Json, E> {
        Ok(Json::UInt(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Json, E> {
        Ok(u64::try_from(v).map_or(Json::NegInt(v), Json::UInt))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json, E> {
        Ok(Json::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Json, E> {
        Ok(Json::Str(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Json, E> {
        Ok(Json::Str(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut members = Vec::new();
        while let Some(member) = map.next_entry()? {
            members.push(member);
        }
        Ok(Json::Object(members))
    }
}

/// How a value is named in a type error: `string "x"`, `integer `5``, `object`...
fn describe(value: &Json) -> String {
    match value {
        Json::Null => "null".to_owned(),
        Json::Bool(b) => format!("boolean `{b}`"),
        Json::UInt(n) => format!("integer `{n}`"),
        Json::NegInt(n) => format!("integer `{n}`"),
        // Not echoed: see the module documentation.
        Json::Float(_) => "floating point".to_owned(),
        Json::Str(s) => format!("string {s:?}"),
        Json::Array(_) => "array".to_owned(),
        Json::Object(_) => "object".to_owned(),
    }
}

/// `` `a`, `b`, `c` ``.
fn list(names: &mut dyn Iterator<Item = &str>) -> String {
    let mut text = String::new();
    for name in names {
        if !text.is_empty() {
            text.push_str(", ");
        }
        text.push('`');
        text.push_str(name);
        text.push('`');
    }
    text
}

/// The path of `key` in the object at `path`.
fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// The error's field for a value at `path`: the document itself is `configuration`.
fn error_at(path: &str, reason: String) -> ConfigError {
    let field = if path.is_empty() {
        "configuration"
    } else {
        path
    };
    ConfigError::new(field, reason)
}

/// A value and its path in the document (empty for the document itself).
#[cfg_attr(test, derive(Debug))]
pub(crate) struct At<'a> {
    value: &'a Json,
    path: String,
}

impl<'a> At<'a> {
    /// The document.
    pub(crate) fn root(value: &'a Json) -> Self {
        Self {
            value,
            path: String::new(),
        }
    }

    fn error(&self, reason: String) -> ConfigError {
        error_at(&self.path, reason)
    }

    /// `invalid type: <what is there>, expected <expected>`.
    fn invalid_type(&self, expected: &str) -> ConfigError {
        self.error(format!(
            "invalid type: {}, expected {expected}",
            describe(self.value)
        ))
    }

    /// A string.
    pub(crate) fn string(self) -> Result<String, ConfigError> {
        match self.value {
            Json::Str(s) => Ok(s.clone()),
            _ => Err(self.invalid_type("a string")),
        }
    }

    /// `true` or `false`.
    pub(crate) fn bool(self) -> Result<bool, ConfigError> {
        match self.value {
            Json::Bool(b) => Ok(*b),
            _ => Err(self.invalid_type("a boolean")),
        }
    }

    /// A JSON integer in `0..=max` (not `1.0`, as serde); `name` is the type for errors.
    fn integer(&self, max: u64, name: &str) -> Result<u64, ConfigError> {
        match *self.value {
            Json::UInt(n) if n <= max => Ok(n),
            Json::UInt(_) | Json::NegInt(_) => Err(self.error(format!(
                "invalid value: {}, expected {name}",
                describe(self.value)
            ))),
            _ => Err(self.invalid_type(name)),
        }
    }

    /// An integer in `0..=255`.
    pub(crate) fn u8(self) -> Result<u8, ConfigError> {
        // In range: checked by `integer`.
        self.integer(u8::MAX.into(), "u8").map(|n| n as u8)
    }

    /// An integer in `0..=65535`.
    pub(crate) fn u16(self) -> Result<u16, ConfigError> {
        // In range: checked by `integer`.
        self.integer(u16::MAX.into(), "u16").map(|n| n as u16)
    }

    /// An integer in `0..=u32::MAX`.
    pub(crate) fn u32(self) -> Result<u32, ConfigError> {
        // In range: checked by `integer`.
        self.integer(u32::MAX.into(), "u32").map(|n| n as u32)
    }

    /// Any number, integers included.
    pub(crate) fn f64(self) -> Result<f64, ConfigError> {
        match *self.value {
            Json::Float(f) => Ok(f),
            Json::UInt(n) => Ok(n as f64),
            Json::NegInt(n) => Ok(n as f64),
            _ => Err(self.invalid_type("a number")),
        }
    }

    /// The items of an array, each with its path (`backends[1]`).
    pub(crate) fn array(self) -> Result<Vec<At<'a>>, ConfigError> {
        let Json::Array(items) = self.value else {
            return Err(self.invalid_type("an array"));
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, value) in items.iter().enumerate() {
            out.push(At {
                value,
                path: format!("{}[{i}]", self.path),
            });
        }
        Ok(out)
    }

    /// An object whose keys are all among `fields`, each at most once. An unknown or repeated
    /// key is an error at that key's path.
    pub(crate) fn object(self, fields: &'static [&'static str]) -> Result<Object<'a>, ConfigError> {
        let Json::Object(members) = self.value else {
            return Err(self.invalid_type("an object"));
        };
        // Bounded: it stops at the first unknown or repeated key, so it looks at no more than
        // `fields.len() + 1` keys, whatever the object's size.
        for (index, (key, _)) in members.iter().enumerate() {
            if !fields.contains(&key.as_str()) {
                let reason = if fields.is_empty() {
                    format!("unknown field `{key}`, there are no fields")
                } else {
                    format!(
                        "unknown field `{key}`, expected one of {}",
                        list(&mut fields.iter().copied())
                    )
                };
                return Err(error_at(&join(&self.path, key), reason));
            }
            if members
                .iter()
                .take(index)
                .any(|(earlier, _)| earlier == key)
            {
                return Err(error_at(
                    &join(&self.path, key),
                    format!("duplicate field `{key}`"),
                ));
            }
        }
        Ok(Object {
            path: self.path,
            members,
        })
    }

    /// A string naming one of `options`; the error lists them.
    pub(crate) fn choice<T: Copy>(self, options: &[(&str, T)]) -> Result<T, ConfigError> {
        match options.iter().find(|(name, _)| self.is_str(name)) {
            Some(&(_, value)) => Ok(value),
            None => Err(self.not_one_of(&mut options.iter().map(|(name, _)| *name))),
        }
    }

    fn is_str(&self, text: &str) -> bool {
        matches!(self.value, Json::Str(s) if s == text)
    }

    /// The error for a value that is not one of `names`.
    fn not_one_of(&self, names: &mut dyn Iterator<Item = &str>) -> ConfigError {
        let expected = format!("one of {}", list(names));
        match self.value {
            Json::Str(s) => self.error(format!("unknown variant `{s}`, expected {expected}")),
            _ => self.invalid_type(&expected),
        }
    }

    /// An object with a single key naming one of `names` (an externally tagged variant,
    /// `{"header": "x-user"}`): that name, and the value with its path.
    pub(crate) fn tagged(
        self,
        names: &'static [&'static str],
    ) -> Result<(&'static str, At<'a>), ConfigError> {
        let expected = || format!("one of {}", list(&mut names.iter().copied()));
        let Json::Object(members) = self.value else {
            return Err(self.invalid_type(&format!("an object with one key, {}", expected())));
        };
        let [(key, value)] = members.as_slice() else {
            return Err(self.error(format!(
                "must have exactly one key, {}; has {}",
                expected(),
                members.len()
            )));
        };
        match names.iter().find(|name| *name == key) {
            Some(name) => Ok((
                name,
                At {
                    value,
                    path: join(&self.path, key),
                },
            )),
            None => Err(self.error(format!("unknown variant `{key}`, expected {}", expected()))),
        }
    }
}

/// An object checked against its known fields (see [`At::object`]), read field by field.
#[cfg_attr(test, derive(Debug))]
pub(crate) struct Object<'a> {
    path: String,
    members: &'a [(String, Json)],
}

impl<'a> Object<'a> {
    /// The member `name` if present, `null` included.
    pub(crate) fn get(&self, name: &str) -> Option<At<'a>> {
        self.members
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| At {
                value,
                path: join(&self.path, name),
            })
    }

    /// The member `name`, unless absent or `null`: `null` means "not set", as it did for
    /// serde's `Option` fields.
    pub(crate) fn optional(&self, name: &str) -> Option<At<'a>> {
        self.get(name).filter(|at| !matches!(at.value, Json::Null))
    }

    /// The member `name`, which must be present: `missing field` at this object's path.
    pub(crate) fn required(&self, name: &str) -> Result<At<'a>, ConfigError> {
        self.get(name)
            .ok_or_else(|| error_at(&self.path, format!("missing field `{name}`")))
    }

    /// An optional string.
    pub(crate) fn string(&self, name: &str) -> Result<Option<String>, ConfigError> {
        self.optional(name).map(At::string).transpose()
    }

    /// An optional `u8`.
    pub(crate) fn u8(&self, name: &str) -> Result<Option<u8>, ConfigError> {
        self.optional(name).map(At::u8).transpose()
    }

    /// An optional `u32`.
    pub(crate) fn u32(&self, name: &str) -> Result<Option<u32>, ConfigError> {
        self.optional(name).map(At::u32).transpose()
    }

    /// An optional number.
    pub(crate) fn f64(&self, name: &str) -> Result<Option<f64>, ConfigError> {
        self.optional(name).map(At::f64).transpose()
    }

    /// An optional array's items.
    pub(crate) fn array(&self, name: &str) -> Result<Option<Vec<At<'a>>>, ConfigError> {
        self.optional(name).map(At::array).transpose()
    }

    /// An optional object with known `fields`.
    pub(crate) fn object(
        &self,
        name: &str,
        fields: &'static [&'static str],
    ) -> Result<Option<Object<'a>>, ConfigError> {
        match self.optional(name) {
            Some(at) => at.object(fields).map(Some),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str) -> Json {
        parse(text.as_bytes()).unwrap()
    }

    const FIELDS: &[&str] = &["a", "b", "nested"];

    /// The error reading `{"a": <value>}`'s `a` with `read`.
    fn read_a<T: std::fmt::Debug>(
        value: &str,
        read: fn(At<'static>) -> Result<T, ConfigError>,
    ) -> Result<T, ConfigError> {
        // Leaked so that plain `At::u8` and friends fit `read`: a test's few bytes.
        let json: &'static Json = Box::leak(Box::new(doc(&format!(r#"{{"a": {value}}}"#))));
        let object = At::root(json).object(FIELDS)?;
        read(object.required("a")?)
    }

    fn reason<T: std::fmt::Debug>(result: Result<T, ConfigError>) -> String {
        let err = result.unwrap_err();
        assert_eq!(err.field, "a");
        err.reason
    }

    #[test]
    fn tree_keeps_order_and_duplicates() {
        assert_eq!(
            doc(r#"{"b": [1, -2, 2.5, "s", null, true], "a": {}, "b": 0}"#),
            Json::Object(vec![
                (
                    "b".into(),
                    Json::Array(vec![
                        Json::UInt(1),
                        Json::NegInt(-2),
                        Json::Float(2.5),
                        Json::Str("s".into()),
                        Json::Null,
                        Json::Bool(true),
                    ])
                ),
                ("a".into(), Json::Object(vec![])),
                ("b".into(), Json::UInt(0)),
            ])
        );
        // serde_json reads `-0` as a float.
        assert!(matches!(doc("-0"), Json::Float(z) if z == 0.0));
        assert_eq!(
            doc("18446744073709551616"),
            Json::Float(18446744073709551616.0)
        );
    }

    #[test]
    fn syntax_errors_name_the_document_with_line_and_column() {
        for text in ["{", "{\"a\": 1,}", "[1] x", "{\"a\": tru}", "\"\\x\""] {
            let err = parse(text.as_bytes()).unwrap_err();
            assert_eq!(err.field, "configuration", "{text}");
            assert!(err.reason.starts_with("is not valid JSON: "), "{err}");
            assert!(err.reason.contains("line 1 column"), "{err}");
        }
    }

    #[test]
    fn unknown_fields_are_rejected_naming_the_expected_ones() {
        let json = doc(r#"{"a": 1, "c": 2}"#);
        let err = At::root(&json).object(FIELDS).err().unwrap();
        assert_eq!(err.field, "c");
        assert_eq!(
            err.reason,
            "unknown field `c`, expected one of `a`, `b`, `nested`"
        );
        let json = doc(r#"{"nested": {"x": 1}}"#);
        let top = At::root(&json).object(FIELDS).unwrap();
        let err = top.object("nested", &[]).err().unwrap();
        assert_eq!(err.field, "nested.x");
        assert_eq!(err.reason, "unknown field `x`, there are no fields");
    }

    #[test]
    fn duplicate_keys_are_rejected() {
        let json = doc(r#"{"a": 1, "b": 2, "a": 1}"#);
        let err = At::root(&json).object(FIELDS).err().unwrap();
        assert_eq!(err.field, "a");
        assert_eq!(err.reason, "duplicate field `a`");
        let json = doc(r#"{"nested": {"a": 1, "a": 2}}"#);
        let top = At::root(&json).object(FIELDS).unwrap();
        let err = top.object("nested", FIELDS).err().unwrap();
        assert_eq!(err.field, "nested.a");
    }

    #[test]
    fn missing_fields_name_the_object() {
        let json = doc(r#"{"nested": {}}"#);
        let top = At::root(&json).object(FIELDS).unwrap();
        let err = top.required("a").err().unwrap();
        assert_eq!(
            (err.field.as_str(), err.reason.as_str()),
            ("configuration", "missing field `a`")
        );
        let nested = top.object("nested", FIELDS).unwrap().unwrap();
        let err = nested.required("b").err().unwrap();
        assert_eq!(err.field, "nested");
    }

    #[test]
    fn the_document_must_be_an_object() {
        for (text, what) in [
            ("[]", "array"),
            ("5", "integer `5`"),
            ("\"x\"", "string \"x\""),
            ("null", "null"),
        ] {
            let json = doc(text);
            let err = At::root(&json).object(FIELDS).err().unwrap();
            assert_eq!(err.field, "configuration");
            assert_eq!(
                err.reason,
                format!("invalid type: {what}, expected an object")
            );
        }
    }

    #[test]
    fn integers() {
        assert_eq!(read_a("0", At::u8).unwrap(), 0);
        assert_eq!(read_a("255", At::u8).unwrap(), 255);
        assert_eq!(read_a("65535", At::u16).unwrap(), 65535);
        assert_eq!(read_a("4294967295", At::u32).unwrap(), u32::MAX);
        assert_eq!(
            reason(read_a("300", At::u8)),
            "invalid value: integer `300`, expected u8"
        );
        assert_eq!(
            reason(read_a("65536", At::u16)),
            "invalid value: integer `65536`, expected u16"
        );
        assert_eq!(
            reason(read_a("4294967296", At::u32)),
            "invalid value: integer `4294967296`, expected u32"
        );
        assert_eq!(
            reason(read_a("-3", At::u32)),
            "invalid value: integer `-3`, expected u32"
        );
        for float in ["1.0", "1.5", "1e3", "-0", "-0.0", "18446744073709551616"] {
            assert_eq!(
                reason(read_a(float, At::u32)),
                "invalid type: floating point, expected u32",
                "{float}"
            );
        }
        assert_eq!(
            reason(read_a("\"x\"", At::u32)),
            "invalid type: string \"x\", expected u32"
        );
        assert_eq!(
            reason(read_a("true", At::u16)),
            "invalid type: boolean `true`, expected u16"
        );
        assert_eq!(
            reason(read_a("null", At::u8)),
            "invalid type: null, expected u8"
        );
        assert_eq!(
            reason(read_a("[1]", At::u8)),
            "invalid type: array, expected u8"
        );
    }

    #[test]
    fn numbers_strings_booleans() {
        assert_eq!(read_a("2.5", At::f64).unwrap(), 2.5);
        assert_eq!(read_a("3", At::f64).unwrap(), 3.0);
        assert_eq!(read_a("-3", At::f64).unwrap(), -3.0);
        assert_eq!(
            reason(read_a("\"1.5\"", At::f64)),
            "invalid type: string \"1.5\", expected a number"
        );
        assert_eq!(read_a("\"x\"", At::string).unwrap(), "x");
        assert_eq!(
            reason(read_a("{}", At::string)),
            "invalid type: object, expected a string"
        );
        // Strings are quoted and escaped as Rust's Debug does (as serde did).
        assert_eq!(
            reason(read_a(r#""a\"b\n""#, At::u32)),
            r#"invalid type: string "a\"b\n", expected u32"#
        );
        assert!(read_a("false", At::bool).is_ok_and(|b| !b));
        assert_eq!(
            reason(read_a("1", At::bool)),
            "invalid type: integer `1`, expected a boolean"
        );
    }

    #[test]
    fn arrays_give_each_item_its_path() {
        let json = doc(r#"{"nested": {"b": [1, 2, "x"]}}"#);
        let top = At::root(&json).object(FIELDS).unwrap();
        let nested = top.object("nested", FIELDS).unwrap().unwrap();
        let items = nested.array("b").unwrap().unwrap();
        assert_eq!(items.len(), 3);
        let err = items.into_iter().map(At::u32).nth(2).unwrap().unwrap_err();
        assert_eq!(err.field, "nested.b[2]");
        assert_eq!(err.reason, "invalid type: string \"x\", expected u32");
        assert_eq!(
            reason(read_a("{}", At::array).map(|items| items.len())),
            "invalid type: object, expected an array"
        );
    }

    #[test]
    fn null_is_unset_for_optional_fields_only() {
        let json = doc(r#"{"a": null}"#);
        let top = At::root(&json).object(FIELDS).unwrap();
        assert_eq!(top.u32("a").unwrap(), None);
        assert_eq!(top.u32("b").unwrap(), None);
        assert!(top.get("a").is_some());
        let err = top.required("a").unwrap().u32().unwrap_err();
        assert_eq!(err.reason, "invalid type: null, expected u32");
    }

    #[test]
    fn choices() {
        const OPTIONS: &[(&str, u8)] = &[("one", 1), ("two", 2)];
        assert_eq!(read_a("\"two\"", |at| at.choice(OPTIONS)).unwrap(), 2);
        assert_eq!(
            reason(read_a("\"three\"", |at| at.choice(OPTIONS))),
            "unknown variant `three`, expected one of `one`, `two`"
        );
        assert_eq!(
            reason(read_a("1", |at| at.choice(OPTIONS))),
            "invalid type: integer `1`, expected one of `one`, `two`"
        );
    }

    #[test]
    fn tagged_variants() {
        const NAMES: &[&str] = &["header", "path"];
        let tag = |at: At<'_>| at.tagged(NAMES).map(|(name, value)| (name, value.path));
        assert_eq!(
            read_a(r#"{"path": {}}"#, tag).unwrap(),
            ("path", "a.path".to_owned())
        );
        assert_eq!(
            reason(read_a(r#"{"body": "x"}"#, tag)),
            "unknown variant `body`, expected one of `header`, `path`"
        );
        assert_eq!(
            reason(read_a(r#"{}"#, tag)),
            "must have exactly one key, one of `header`, `path`; has 0"
        );
        assert_eq!(
            reason(read_a(r#"{"header": "x", "path": {}}"#, tag)),
            "must have exactly one key, one of `header`, `path`; has 2"
        );
        assert_eq!(
            reason(read_a(r#""path""#, tag)),
            "invalid type: string \"path\", expected an object with one key, one of `header`, `path`"
        );
    }
}
