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
//! The readers check as they read: a value's type, then its range (`u32_in(2..=100)`: ``must
//! be between 2 and 100, got 1``), in one pass with no intermediate types. An [`Object`] learns
//! its fields from what its reader asks for, and rejects any other key when finished, so no
//! list of field names is kept beside the code that reads them.
//!
//! Hand-written rather than derived because of the .wasm's size: serde's derive and
//! serde_path_to_error monomorphise a deserializer per type. Here serde_json's parser is
//! instantiated once, for [`Json`]; the readers are non-generic but for [`At::choice`] (a short
//! loop per enum type), so each exists once in the binary.
//!
//! An integral number written as a float (`5.0`) is read as the integer wherever one is expected
//! (Istio delivers numbers as doubles). Floating-point values are never formatted (`{}` of an `f64` links ~12 KB of float
//! formatting into the filter): a float where an integer belongs is reported as
//! `floating point`, without its value.

use std::fmt;
use std::ops::RangeInclusive;

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

/// A value and its path in the document (empty for the document itself). Its readers check the
/// value's type and, where they take one, its range; [`At::error`] makes any other complaint
/// about it at its path.
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

    /// Where the value is: `backends[1].weight`, or empty for the document.
    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    /// An error about this value, at its path.
    pub(crate) fn error(&self, reason: String) -> ConfigError {
        error_at(&self.path, reason)
    }

    /// `invalid type: <what is there>, expected <expected>`.
    fn invalid_type(&self, expected: &str) -> ConfigError {
        self.error(format!(
            "invalid type: {}, expected {expected}",
            describe(self.value)
        ))
    }

    /// A string, borrowed from the document.
    pub(crate) fn str(&self) -> Result<&'a str, ConfigError> {
        match self.value {
            Json::Str(s) => Ok(s),
            _ => Err(self.invalid_type("a string")),
        }
    }

    /// A string.
    pub(crate) fn string(&self) -> Result<String, ConfigError> {
        self.str().map(str::to_owned)
    }

    /// `true` or `false`.
    pub(crate) fn bool(&self) -> Result<bool, ConfigError> {
        match self.value {
            Json::Bool(b) => Ok(*b),
            _ => Err(self.invalid_type("a boolean")),
        }
    }

    /// A JSON integer in `0..=max`; `name` is the type for errors. An integral number written
    /// with a fraction or an exponent (`5.0`, `1e3`) counts as that integer: Istio hands a
    /// `WasmPlugin`'s `pluginConfig` over as a protobuf `Struct`, whose numbers are all doubles.
    /// `max` is at most `u32::MAX`, so every value up to it is exact as an `f64`.
    fn integer(&self, max: u64, name: &str) -> Result<u64, ConfigError> {
        match *self.value {
            Json::UInt(n) if n <= max => Ok(n),
            // In range and integral: checked by the guard, so the cast is exact.
            Json::Float(f) if f.fract() == 0.0 && (0.0..=max as f64).contains(&f) => Ok(f as u64),
            Json::Float(f) if f.fract() == 0.0 => Err(self.error(format!(
                "invalid value: {}, expected {name}",
                describe(self.value)
            ))),
            Json::UInt(_) | Json::NegInt(_) => Err(self.error(format!(
                "invalid value: {}, expected {name}",
                describe(self.value)
            ))),
            _ => Err(self.invalid_type(name)),
        }
    }

    /// `n`, unless outside `min..=max`: `must be between <min> and <max>, got <n>`.
    fn within(&self, n: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
        if (min..=max).contains(&n) {
            Ok(n)
        } else {
            Err(self.error(format!("must be between {min} and {max}, got {n}")))
        }
    }

    /// An integer in `0..=255`.
    fn u8(&self) -> Result<u8, ConfigError> {
        // In range: checked by `integer`.
        self.integer(u8::MAX.into(), "u8").map(|n| n as u8)
    }

    /// An integer in `range`; one outside `0..=255` is a type error, as for [`Self::u8`].
    pub(crate) fn u8_in(&self, range: RangeInclusive<u8>) -> Result<u8, ConfigError> {
        let n = self.u8()?;
        // In range: checked by `within`.
        self.within(n.into(), (*range.start()).into(), (*range.end()).into())
            .map(|n| n as u8)
    }

    /// An integer in `0..=65535`.
    pub(crate) fn u16(&self) -> Result<u16, ConfigError> {
        // In range: checked by `integer`.
        self.integer(u16::MAX.into(), "u16").map(|n| n as u16)
    }

    /// An integer in `0..=u32::MAX`.
    fn u32(&self) -> Result<u32, ConfigError> {
        // In range: checked by `integer`.
        self.integer(u32::MAX.into(), "u32").map(|n| n as u32)
    }

    /// An integer in `range`; one outside `0..=u32::MAX` is a type error, as for [`Self::u32`].
    pub(crate) fn u32_in(&self, range: RangeInclusive<u32>) -> Result<u32, ConfigError> {
        let n = self.u32()?;
        // In range: checked by `within`.
        self.within(n.into(), (*range.start()).into(), (*range.end()).into())
            .map(|n| n as u32)
    }

    /// Any number, integers included.
    pub(crate) fn f64(&self) -> Result<f64, ConfigError> {
        match *self.value {
            Json::Float(f) => Ok(f),
            Json::UInt(n) => Ok(n as f64),
            Json::NegInt(n) => Ok(n as f64),
            _ => Err(self.invalid_type("a number")),
        }
    }

    /// A number in `range`, else `must be between <bounds>`: `bounds` spells the range out,
    /// as floats are not formatted (see the module documentation).
    pub(crate) fn f64_in(
        &self,
        range: RangeInclusive<f64>,
        bounds: &str,
    ) -> Result<f64, ConfigError> {
        let f = self.f64()?;
        if range.contains(&f) {
            Ok(f)
        } else {
            Err(self.error(format!("must be between {bounds}")))
        }
    }

    /// The items of an array, each with its path (`backends[1]`) made as it is reached.
    pub(crate) fn array(&self) -> Result<Items<'a>, ConfigError> {
        match self.value {
            Json::Array(items) => Ok(Items {
                path: self.path.clone(),
                items: items.iter().enumerate(),
            }),
            _ => Err(self.invalid_type("an array")),
        }
    }

    /// The items of an array of 1 to `max` entries: otherwise `is empty; <if_empty>` or
    /// `has <n> <entries>; at most <max> are supported`.
    pub(crate) fn array_within(
        &self,
        max: usize,
        entries: &str,
        if_empty: &str,
    ) -> Result<Items<'a>, ConfigError> {
        let items = self.array()?;
        if items.len() == 0 {
            return Err(self.error(format!("is empty; {if_empty}")));
        }
        if items.len() > max {
            return Err(self.error(format!(
                "has {} {entries}; at most {max} are supported",
                items.len()
            )));
        }
        Ok(items)
    }

    /// An object, to be read field by field and then [`Object::finish`]ed.
    pub(crate) fn object(&self) -> Result<Object<'a>, ConfigError> {
        match self.value {
            Json::Object(members) => Ok(Object {
                path: self.path.clone(),
                members,
                known: Vec::new(),
                missing: None,
            }),
            _ => Err(self.invalid_type("an object")),
        }
    }

    /// An object read as a map whose keys are names the configuration chooses (`subsets`):
    /// each member's key and value, the value with its path (`subsets.canary`), in document
    /// order, a repeated key included (the caller rejects it as a duplicate field).
    pub(crate) fn entries(&self) -> Result<Vec<(&'a str, At<'a>)>, ConfigError> {
        match self.value {
            Json::Object(members) => Ok(members
                .iter()
                .map(|(key, value)| {
                    (
                        key.as_str(),
                        At {
                            value,
                            path: join(&self.path, key),
                        },
                    )
                })
                .collect()),
            _ => Err(self.invalid_type("an object")),
        }
    }

    /// A string naming one of `options`; the error lists them.
    pub(crate) fn choice<T: Copy>(&self, options: &[(&str, T)]) -> Result<T, ConfigError> {
        match options.iter().find(|(name, _)| self.is_str(name)) {
            Some(&(_, value)) => Ok(value),
            None => Err(self.not_one_of(&mut options.iter().map(|(name, _)| *name))),
        }
    }

    fn is_str(&self, text: &str) -> bool {
        matches!(self.value, Json::Str(s) if s == text)
    }

    fn is_null(&self) -> bool {
        matches!(self.value, Json::Null)
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
        &self,
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
            None => Err(self.unknown_variant(key, names)),
        }
    }

    /// The error for a tag (see [`Self::tagged`]) that is not one of `names`.
    pub(crate) fn unknown_variant(&self, tag: &str, names: &[&str]) -> ConfigError {
        self.error(format!(
            "unknown variant `{tag}`, expected one of {}",
            list(&mut names.iter().copied())
        ))
    }
}

/// An array's items (see [`At::array`]).
pub(crate) struct Items<'a> {
    path: String,
    items: std::iter::Enumerate<std::slice::Iter<'a, Json>>,
}

impl<'a> Iterator for Items<'a> {
    type Item = At<'a>;

    fn next(&mut self) -> Option<At<'a>> {
        let (i, value) = self.items.next()?;
        Some(At {
            value,
            path: format!("{}[{i}]", self.path),
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.items.size_hint()
    }
}

impl ExactSizeIterator for Items<'_> {}

/// An object being read (see [`At::object`]). It learns its fields from the reads: every name
/// asked for is a known field, in the order first asked, and [`Self::finish`] rejects any
/// other key, listing them. So a reader asks for every field, whatever the values of the
/// others, before it finishes.
#[cfg_attr(test, derive(Debug))]
#[must_use = "an object's unknown keys are rejected only by `finish`"]
pub(crate) struct Object<'a> {
    path: String,
    members: &'a [(String, Json)],
    /// The names asked for, in the order first asked.
    known: Vec<&'static str>,
    /// The first required field found absent.
    missing: Option<&'static str>,
}

impl<'a> Object<'a> {
    /// The member `name` if present, `null` included. A key that appears twice is an error at
    /// its path.
    pub(crate) fn get(&mut self, name: &'static str) -> Result<Option<At<'a>>, ConfigError> {
        if !self.known.contains(&name) {
            self.known.push(name);
        }
        let mut found = self.members.iter().filter(|(key, _)| key == name);
        let Some((_, value)) = found.next() else {
            return Ok(None);
        };
        let path = join(&self.path, name);
        if found.next().is_some() {
            return Err(error_at(&path, format!("duplicate field `{name}`")));
        }
        Ok(Some(At { value, path }))
    }

    /// The member `name`, unless absent or `null`: `null` means "not set", as it did for
    /// serde's `Option` fields.
    pub(crate) fn optional(&mut self, name: &'static str) -> Result<Option<At<'a>>, ConfigError> {
        Ok(self.get(name)?.filter(|at| !at.is_null()))
    }

    /// The member `name`, which must be present. When it is absent, [`Self::finish`] reports
    /// `missing field` at this object's path, but after any unknown key, as serde did: a
    /// misspelt name is the likelier mistake, and its message lists the known fields. So the
    /// caller reads on without it; what it builds is dropped when `finish` fails.
    pub(crate) fn required(&mut self, name: &'static str) -> Result<Option<At<'a>>, ConfigError> {
        let at = self.get(name)?;
        if at.is_none() && self.missing.is_none() {
            self.missing = Some(name);
        }
        Ok(at)
    }

    /// An optional integer in `range` (see [`At::u8_in`]).
    pub(crate) fn u8_in(
        &mut self,
        name: &'static str,
        range: RangeInclusive<u8>,
    ) -> Result<Option<u8>, ConfigError> {
        match self.optional(name)? {
            Some(at) => at.u8_in(range).map(Some),
            None => Ok(None),
        }
    }

    /// An optional integer in `range` (see [`At::u32_in`]).
    pub(crate) fn u32_in(
        &mut self,
        name: &'static str,
        range: RangeInclusive<u32>,
    ) -> Result<Option<u32>, ConfigError> {
        match self.optional(name)? {
            Some(at) => at.u32_in(range).map(Some),
            None => Ok(None),
        }
    }

    /// An optional number in `range` (see [`At::f64_in`]).
    pub(crate) fn f64_in(
        &mut self,
        name: &'static str,
        range: RangeInclusive<f64>,
        bounds: &str,
    ) -> Result<Option<f64>, ConfigError> {
        match self.optional(name)? {
            Some(at) => at.f64_in(range, bounds).map(Some),
            None => Ok(None),
        }
    }

    /// Ends the reading: the first key that was never asked for is an unknown field, else the
    /// first required field absent is missing.
    pub(crate) fn finish(self) -> Result<(), ConfigError> {
        // Linear: each key is compared with the few names asked for.
        if let Some((key, _)) = self
            .members
            .iter()
            .find(|(key, _)| !self.known.contains(&key.as_str()))
        {
            let reason = if self.known.is_empty() {
                format!("unknown field `{key}`, there are no fields")
            } else {
                format!(
                    "unknown field `{key}`, expected one of {}",
                    list(&mut self.known.iter().copied())
                )
            };
            return Err(error_at(&join(&self.path, key), reason));
        }
        match self.missing {
            Some(name) => Err(error_at(&self.path, format!("missing field `{name}`"))),
            None => Ok(()),
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
        read: fn(&At<'static>) -> Result<T, ConfigError>,
    ) -> Result<T, ConfigError> {
        // Leaked so that plain `At::u8` and friends fit `read`: a test's few bytes.
        let json: &'static Json = Box::leak(Box::new(doc(&format!(r#"{{"a": {value}}}"#))));
        let mut object = At::root(json).object()?;
        read(&object.get("a")?.unwrap())
    }

    /// Reads the document as an object with `FIELDS`, asking for each, and finishes it.
    fn read_fields(json: &Json) -> Result<(), ConfigError> {
        let mut object = At::root(json).object()?;
        for name in FIELDS {
            object.get(name)?;
        }
        object.finish()
    }

    /// The object at `name` in the document.
    fn nested<'a>(json: &'a Json, name: &'static str) -> Object<'a> {
        let mut top = At::root(json).object().unwrap();
        top.get(name).unwrap().unwrap().object().unwrap()
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
        let err = read_fields(&json).unwrap_err();
        assert_eq!(err.field, "c");
        assert_eq!(
            err.reason,
            "unknown field `c`, expected one of `a`, `b`, `nested`"
        );
        let json = doc(r#"{"nested": {"x": 1}}"#);
        let err = nested(&json, "nested").finish().unwrap_err();
        assert_eq!(err.field, "nested.x");
        assert_eq!(err.reason, "unknown field `x`, there are no fields");
    }

    #[test]
    fn the_known_fields_are_those_asked_for_in_the_order_first_asked() {
        let json = doc(r#"{"a": 1, "c": 2}"#);
        let mut object = At::root(&json).object().unwrap();
        for name in ["b", "a", "b"] {
            object.get(name).unwrap();
        }
        let err = object.finish().unwrap_err();
        assert_eq!(err.reason, "unknown field `c`, expected one of `b`, `a`");
    }

    #[test]
    fn duplicate_keys_are_rejected() {
        let json = doc(r#"{"a": 1, "b": 2, "a": 1}"#);
        let err = read_fields(&json).unwrap_err();
        assert_eq!(err.field, "a");
        assert_eq!(err.reason, "duplicate field `a`");
        let json = doc(r#"{"nested": {"a": 1, "a": 2}}"#);
        let err = nested(&json, "nested").get("a").unwrap_err();
        assert_eq!(err.field, "nested.a");
    }

    #[test]
    fn missing_fields_name_the_object() {
        let json = doc(r#"{"nested": {}}"#);
        let mut top = At::root(&json).object().unwrap();
        assert!(top.required("a").unwrap().is_none());
        top.get("nested").unwrap();
        let err = top.finish().unwrap_err();
        assert_eq!(
            (err.field.as_str(), err.reason.as_str()),
            ("configuration", "missing field `a`")
        );
        let mut nested = nested(&json, "nested");
        assert!(nested.required("b").unwrap().is_none());
        let err = nested.finish().unwrap_err();
        assert_eq!(err.field, "nested");
    }

    #[test]
    fn an_unknown_field_is_reported_before_a_missing_one() {
        let json = doc(r#"{"aa": 1}"#);
        let mut top = At::root(&json).object().unwrap();
        assert!(top.required("a").unwrap().is_none());
        let err = top.finish().unwrap_err();
        assert_eq!(
            (err.field.as_str(), err.reason.as_str()),
            ("aa", "unknown field `aa`, expected one of `a`")
        );
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
            let err = At::root(&json).object().unwrap_err();
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
        // Istio's pluginConfig arrives with every number a double.
        for (integral, n) in [
            ("1.0", 1),
            ("1e3", 1000),
            ("-0", 0),
            ("-0.0", 0),
            ("5.00", 5),
        ] {
            assert_eq!(read_a(integral, At::u32).unwrap(), n, "{integral}");
        }
        assert_eq!(read_a("255.0", At::u8).unwrap(), 255);
        assert_eq!(read_a("4294967295.0", At::u32).unwrap(), u32::MAX);
        for (out_of_range, name) in [
            ("256.0", "u8"),
            ("4294967296.0", "u32"),
            ("18446744073709551616", "u32"),
            ("-1.0", "u32"),
            ("1e300", "u32"),
        ] {
            let read = if name == "u8" {
                read_a(out_of_range, At::u8).map(u32::from)
            } else {
                read_a(out_of_range, At::u32)
            };
            assert_eq!(
                reason(read),
                format!("invalid value: floating point, expected {name}"),
                "{out_of_range}"
            );
        }
        for float in ["1.5", "0.1", "1e-3"] {
            assert_eq!(
                reason(read_a(float, At::u32)),
                "invalid type: floating point, expected u32",
                "{float}"
            );
        }
        assert_eq!(read_a("32.0", |at| at.u8_in(1..=32)).unwrap(), 32);
        assert_eq!(
            reason(read_a("33.0", |at| at.u8_in(1..=32))),
            "must be between 1 and 32, got 33"
        );
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
    fn ranges() {
        assert_eq!(read_a("2", |at| at.u32_in(2..=100)).unwrap(), 2);
        assert_eq!(
            reason(read_a("101", |at| at.u32_in(2..=100))),
            "must be between 2 and 100, got 101"
        );
        // The type first: a value the type cannot hold is not "out of range".
        assert_eq!(
            reason(read_a("4294967296", |at| at.u32_in(2..=100))),
            "invalid value: integer `4294967296`, expected u32"
        );
        assert_eq!(read_a("32", |at| at.u8_in(1..=32)).unwrap(), 32);
        assert_eq!(
            reason(read_a("0", |at| at.u8_in(1..=32))),
            "must be between 1 and 32, got 0"
        );
        assert_eq!(
            reason(read_a("300", |at| at.u8_in(1..=128))),
            "invalid value: integer `300`, expected u8"
        );
        assert_eq!(
            read_a("2", |at| at.f64_in(1.0..=100.0, "1.0 and 100.0")).unwrap(),
            2.0
        );
        assert_eq!(
            reason(read_a("0.5", |at| at.f64_in(1.0..=100.0, "1.0 and 100.0"))),
            "must be between 1.0 and 100.0"
        );
        assert_eq!(
            reason(read_a("\"2\"", |at| at.f64_in(1.0..=100.0, "1.0 and 100.0"))),
            "invalid type: string \"2\", expected a number"
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
        let items = nested(&json, "nested")
            .get("b")
            .unwrap()
            .unwrap()
            .array()
            .unwrap();
        assert_eq!(items.len(), 3);
        let err = items.map(|at| at.u32()).nth(2).unwrap().unwrap_err();
        assert_eq!(err.field, "nested.b[2]");
        assert_eq!(err.reason, "invalid type: string \"x\", expected u32");
        assert_eq!(
            reason(read_a("{}", |at| at.array().map(|items| items.len()))),
            "invalid type: object, expected an array"
        );
    }

    #[test]
    fn null_is_unset_for_optional_fields_only() {
        let json = doc(r#"{"a": null}"#);
        let mut top = At::root(&json).object().unwrap();
        assert_eq!(top.u32_in("a", 0..=u32::MAX).unwrap(), None);
        assert_eq!(top.u32_in("b", 0..=u32::MAX).unwrap(), None);
        assert!(top.get("a").unwrap().is_some());
        let err = top.required("a").unwrap().unwrap().u32().unwrap_err();
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
        let tag = |at: &At<'static>| at.tagged(NAMES).map(|(name, value)| (name, value.path));
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
