//! A minimal JSON writer for the status page, in place of serde's `Serialize` derive (whose
//! monomorphised serializers cost the .wasm more than this whole file).
//!
//! The output is laid out as `serde_json::to_string_pretty` lays it out (two-space indent,
//! `"key": value`, `[]` and `{}` when empty), so the page reads as it always has. Strings are
//! escaped per RFC 8259: `"` and `\` with a backslash, control characters (U+0000 to U+001F)
//! as `\u00XX`; everything else, non-ASCII included, is written as is (the output is UTF-8).

use std::fmt::Write as _;

/// Builds one JSON document into a `String`. The caller nests `begin_*`/`end_*` correctly and
/// puts a [`Self::key`] before each value inside an object; the writer adds the commas,
/// newlines and indentation.
pub(crate) struct JsonWriter {
    out: String,
    depth: usize,
    /// Nothing written yet in the innermost open object or array.
    first: bool,
    /// A key was just written: the value follows on its line.
    after_key: bool,
}

impl JsonWriter {
    /// An empty document.
    pub(crate) fn new() -> Self {
        Self {
            out: String::new(),
            depth: 0,
            first: true,
            after_key: false,
        }
    }

    /// The document written.
    pub(crate) fn finish(self) -> String {
        self.out
    }

    /// Starts a new line inside the innermost container, after a comma unless it is the first.
    fn next_line(&mut self) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        self.newline();
    }

    fn newline(&mut self) {
        self.out.push('\n');
        for _ in 0..self.depth {
            self.out.push_str("  ");
        }
    }

    /// Where a value goes: after its key, or on the next line of an array.
    fn value_position(&mut self) {
        if self.after_key {
            self.after_key = false;
        } else if self.depth > 0 {
            self.next_line();
        }
    }

    /// The key of the next value in the current object.
    pub(crate) fn key(&mut self, name: &str) {
        self.next_line();
        write_string(&mut self.out, name);
        self.out.push_str(": ");
        self.after_key = true;
    }

    fn open(&mut self, bracket: char) {
        self.value_position();
        self.out.push(bracket);
        self.depth += 1;
        self.first = true;
    }

    fn close(&mut self, bracket: char) {
        self.depth = self.depth.saturating_sub(1);
        if !self.first {
            self.newline();
        }
        self.out.push(bracket);
        self.first = false;
    }

    /// `{`.
    pub(crate) fn begin_object(&mut self) {
        self.open('{');
    }

    /// `}`.
    pub(crate) fn end_object(&mut self) {
        self.close('}');
    }

    /// `[`.
    pub(crate) fn begin_array(&mut self) {
        self.open('[');
    }

    /// `]`.
    pub(crate) fn end_array(&mut self) {
        self.close(']');
    }

    /// A string value.
    pub(crate) fn string(&mut self, value: &str) {
        self.value_position();
        write_string(&mut self.out, value);
    }

    /// An integer value.
    pub(crate) fn uint(&mut self, value: u64) {
        self.value_position();
        let _ = write!(self.out, "{value}");
    }

    /// An integer value, or `null`.
    pub(crate) fn opt_uint(&mut self, value: Option<u64>) {
        match value {
            Some(value) => self.uint(value),
            None => {
                self.value_position();
                self.out.push_str("null");
            }
        }
    }

    /// `true` or `false`.
    pub(crate) fn bool(&mut self, value: bool) {
        self.value_position();
        self.out.push_str(if value { "true" } else { "false" });
    }
}

/// `text` as a JSON string, quoted and escaped per RFC 8259.
pub(crate) fn write_string(out: &mut String, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{0}'..='\u{1f}' => {
                let byte = c as usize;
                out.push_str("\\u00");
                out.push(char::from(HEX.get(byte >> 4).copied().unwrap_or(b'0')));
                out.push(char::from(HEX.get(byte & 0xf).copied().unwrap_or(b'0')));
            }
            _ => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quoted(text: &str) -> String {
        let mut out = String::new();
        write_string(&mut out, text);
        out
    }

    #[test]
    fn escaping() {
        assert_eq!(quoted("plain-name_1"), r#""plain-name_1""#);
        assert_eq!(quoted(r#"q"uo\te"#), r#""q\"uo\\te""#);
        assert_eq!(
            quoted("a\nb\tc\r\u{0}\u{1f}\u{8}\u{c}"),
            r#""a\u000ab\u0009c\u000d\u0000\u001f\u0008\u000c""#
        );
        // Not control characters: written as they are.
        assert_eq!(quoted("\u{7f}/é€😀"), "\"\u{7f}/é€😀\"");
        assert_eq!(quoted(""), r#""""#);
    }

    #[test]
    fn every_string_round_trips_through_serde_json() {
        let mut all: String = (0u32..0x80).filter_map(char::from_u32).collect();
        all.push_str("é\u{2028}\u{fffd}😀");
        let back: String = serde_json::from_str(&quoted(&all)).unwrap();
        assert_eq!(back, all);
    }

    #[test]
    fn layout_is_serde_json_pretty() {
        let mut w = JsonWriter::new();
        w.begin_object();
        w.key("s");
        w.string("x");
        w.key("n");
        w.uint(u64::MAX);
        w.key("none");
        w.opt_uint(None);
        w.key("some");
        w.opt_uint(Some(0));
        w.key("b");
        w.bool(true);
        w.key("empty_array");
        w.begin_array();
        w.end_array();
        w.key("empty_object");
        w.begin_object();
        w.end_object();
        w.key("list");
        w.begin_array();
        w.uint(1);
        w.begin_object();
        w.key("k");
        w.bool(false);
        w.end_object();
        w.begin_array();
        w.string("deep");
        w.end_array();
        w.end_array();
        w.end_object();
        let text = w.finish();
        let expected = serde_json::json!({
            "s": "x",
            "n": u64::MAX,
            "none": null,
            "some": 0,
            "b": true,
            "empty_array": [],
            "empty_object": {},
            "list": [1, {"k": false}, ["deep"]],
        });
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed, expected);
        assert_eq!(
            text,
            r#"{
  "s": "x",
  "n": 18446744073709551615,
  "none": null,
  "some": 0,
  "b": true,
  "empty_array": [],
  "empty_object": {},
  "list": [
    1,
    {
      "k": false
    },
    [
      "deep"
    ]
  ]
}"#
        );
    }

    #[test]
    fn top_level_values() {
        let mut w = JsonWriter::new();
        w.begin_array();
        w.end_array();
        assert_eq!(w.finish(), "[]");
        let mut w = JsonWriter::new();
        w.string("a\"");
        assert_eq!(w.finish(), r#""a\"""#);
    }
}
