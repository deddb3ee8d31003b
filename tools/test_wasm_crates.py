"""Tests of tools/wasm_crates.py (`just wasm-crates`) on names as the name section holds them,
and on a module written here byte by byte.

Run by `just validate`: .venv/bin/python -m unittest discover -s tools -p 'test_*.py'
"""

import os
import tempfile
import unittest

import wasm_crates


class Names(unittest.TestCase):
    def crate(self, raw):
        return wasm_crates.crate_of(wasm_crates.demangle(raw))

    def test_legacy_mangling(self):
        self.assertEqual(wasm_crates.demangle("_ZN3md57Context7consume17h2b4aec62deec83f2E"),
                         "md5::Context::consume")
        self.assertEqual(self.crate("_ZN3md57Context7consume17h2b4aec62deec83f2E"), "md5")

    def test_escapes_without_zn(self):
        raw = ("_$LT$eisodos_core..config..json..Json$u20$as$u20$serde_core..de..Deserialize"
               "$GT$::deserialize::hec91794a3dba23e8")
        self.assertEqual(self.crate(raw), "eisodos_core")

    def test_primitive_impls_are_std(self):
        self.assertEqual(self.crate("<u32 as core::fmt::Display>::fmt"), wasm_crates.STD)
        self.assertEqual(self.crate("<char>::escape_debug_ext"), wasm_crates.STD)
        # A primitive implementing another crate's trait counts for that crate.
        self.assertEqual(self.crate("<u8 as serde_json::read::Fragment>::f"), "serde_json")

    def test_v0_mangling_first_crate(self):
        raw = "_RNvMsa_NtCsdHhIpgkcIfN_4core3fmtNtB5_9Formatter3pad"
        self.assertEqual(self.crate(raw), wasm_crates.STD)

    def test_exports_and_libc(self):
        self.assertEqual(self.crate("proxy_on_request_headers"), wasm_crates.EXPORTS)
        self.assertEqual(self.crate("dlmalloc"), wasm_crates.LIBC)


def leb(n):
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def section(sid, body):
    return bytes([sid]) + leb(len(body)) + body


def name(text):
    return leb(len(text)) + text.encode()


class Module(unittest.TestCase):
    def test_sizes_by_crate_after_imports(self):
        # One imported function (index 0), then two defined ones (indexes 1 and 2) whose
        # bodies are 4 and 6 bytes long (plus one byte of length each).
        imports = leb(1) + name("env") + name("proxy_log") + bytes([0]) + leb(0)
        code = leb(2) + leb(4) + bytes(4) + leb(6) + bytes(6)
        names = leb(3) + leb(0) + name("proxy_log") + leb(1) + name(
            "_ZN3md54core17h0123456789abcdefE") + leb(2) + name("proxy_on_tick")
        custom = name("name") + bytes([1]) + leb(len(names)) + names
        module = (b"\0asm\1\0\0\0" + section(2, imports) + section(10, code)
                  + section(0, custom))
        with tempfile.NamedTemporaryFile(suffix=".wasm", delete=False) as f:
            f.write(module)
        try:
            sections, imported, bodies, function_names = wasm_crates.read(f.name)
        finally:
            os.unlink(f.name)
        self.assertEqual(imported, 1)
        self.assertEqual(bodies, [5, 7])
        self.assertEqual(sections["code"], len(code))
        self.assertEqual(wasm_crates.crate_of(wasm_crates.demangle(function_names[1])), "md5")
        self.assertEqual(wasm_crates.crate_of(function_names[2]), wasm_crates.EXPORTS)


if __name__ == "__main__":
    unittest.main()
