#!/usr/bin/env python3
"""Which crate the .wasm's code comes from: `just wasm-crates` (README, "Runtime dependencies").

Reads an unstripped build (the name section names every function), sums the code section's
function bodies by the crate that leads each function's demangled name, and prints one line a
crate. An attribution, not a measurement of what removing a crate would save: LTO inlines
across crates, so a function's body counts for the crate it was inlined into (most of the core
is inlined into the filter's `proxy_on_*` exports, which are counted apart).

Usage: wasm_crates.py UNSTRIPPED.wasm [STRIPPED.wasm]
"""

import collections
import re
import sys

SECTIONS = {1: "type", 2: "import", 3: "function", 4: "table", 5: "memory", 6: "global",
            7: "export", 9: "elem", 10: "code", 11: "data", 12: "datacount"}
# Types whose impls are std's own, whatever trait they implement.
PRIMITIVES = {"char", "str", "bool", "T", "u8", "u16", "u32", "u64", "u128", "usize", "i8",
              "i16", "i32", "i64", "i128", "isize", "f32", "f64"}
STD = "std (core, alloc, std and its hashbrown, wasi)"
LIBC = "wasi-libc (dlmalloc, memcpy, pow...)"
EXPORTS = "eisodos exports (proxy_on_*, core inlined)"


def leb(data, i):
    """An unsigned LEB128 at `i`: (value, index after it)."""
    value = shift = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def read(path):
    """(section sizes, imported function count, body sizes, function names by index)."""
    with open(path, "rb") as file:
        data = file.read()
    sections, names, bodies, imported = collections.Counter(), {}, [], 0
    i = 8
    while i < len(data):
        sid = data[i]
        size, i = leb(data, i + 1)
        body, i = data[i:i + size], i + size
        if sid == 0:
            length, j = leb(body, 0)
            custom = body[j:j + length].decode()
            sections["custom " + custom] += size
            if custom == "name":
                names = function_names(body, j + length)
            continue
        sections[SECTIONS.get(sid, str(sid))] += size
        if sid == 2:
            imported = imported_functions(body)
        elif sid == 10:
            count, j = leb(body, 0)
            for _ in range(count):
                length, k = leb(body, j)
                bodies.append(k - j + length)
                j = k + length
    return sections, imported, bodies, names


def function_names(body, j):
    """The name section's function-name map."""
    names = {}
    while j < len(body):
        sub = body[j]
        size, j = leb(body, j + 1)
        if sub == 1:
            count, k = leb(body, j)
            for _ in range(count):
                index, k = leb(body, k)
                length, k = leb(body, k)
                names[index] = body[k:k + length].decode("utf-8", "replace")
                k += length
        j += size
    return names


def imported_functions(body):
    """How many functions the import section declares (they come first in the index space)."""
    count, j = leb(body, 0)
    functions = 0
    for _ in range(count):
        for _ in range(2):  # module and field names
            length, j = leb(body, j)
            j += length
        kind = body[j]
        j += 1
        if kind == 0:
            _, j = leb(body, j)
            functions += 1
        elif kind in (1, 2):  # table (element type first), memory: limits
            j += kind == 1
            flags, j = leb(body, j)
            _, j = leb(body, j)
            if flags & 1:
                _, j = leb(body, j)
        elif kind == 3:
            j += 2
    return functions


def demangle(name):
    """A Rust symbol as a path: legacy mangling (`_ZN` length-prefixed segments `E`) in full,
    v0 mangling (`_R`, the standard library's) only as far as its first crate."""
    if name.startswith("_R"):
        match = re.search(r"C(?:s[0-9A-Za-z]*_)?(\d+)", name)
        if match:
            return name[match.end():match.end() + int(match.group(1))] + "::" + name
    if name.startswith("_ZN") and name.endswith("E"):
        segments, i = [], 3
        while i < len(name) - 1:
            match = re.match(r"\d+", name[i:])
            if not match:
                return name
            start = i + len(match.group())
            segments.append(name[start:start + int(match.group())])
            i = start + int(match.group())
        if segments and re.fullmatch(r"h[0-9a-f]{16}", segments[-1]):
            segments.pop()
        name = "::".join(segments)
    return legacy(name)


def legacy(name):
    """Undo the legacy mangling's escapes (`$LT$`, `..`), which the name section also keeps
    on names that are not wrapped in `_ZN`."""
    if name.startswith("_$") or ".." in name or "$LT$" in name:
        name = name.lstrip("_")
        for escaped, plain in (("$LT$", "<"), ("$GT$", ">"), ("$u20$", " "), ("$RF$", "&"),
                               ("$BP$", "*"), ("$C$", ","), ("$u7b$", "{"), ("$u7d$", "}"),
                               ("$u5b$", "["), ("$u5d$", "]"), ("$u27$", "'"), ("..", "::")):
            name = name.replace(escaped, plain)
    return name


def crate_of(name):
    if name.startswith("proxy_on_") or name.startswith("proxy_abi_version"):
        return EXPORTS
    if "::" not in name:
        return LIBC
    match = re.match(r"<*&?(?:mut )?(?:dyn )?([A-Za-z_]\w*)", name)
    crate = match.group(1) if match else "?"
    if crate in PRIMITIVES and " as " in name:
        # `<u32 as core::fmt::Display>::fmt`: the trait's crate.
        match = re.match(r"&?(?:dyn )?([A-Za-z_]\w*)", name.split(" as ", 1)[1])
        crate = match.group(1) if match else "?"
    if crate in PRIMITIVES or crate.lstrip("_").startswith("rust") or crate in (
            "core", "alloc", "std", "hashbrown", "wasi"):
        return STD
    return crate


def main():
    sections, imported, bodies, names = read(sys.argv[1])
    size, count = collections.Counter(), collections.Counter()
    for function, body in enumerate(bodies):
        crate = crate_of(demangle(names.get(imported + function, "?")))
        size[crate] += body
        count[crate] += 1
    total = sum(bodies)
    if len(sys.argv) > 2:
        stripped = read(sys.argv[2])[0]
        print(f"stripped .wasm: code {stripped['code']} B, data {stripped['data']} B")
    print(f"code section {sections['code']} B in {len(bodies)} functions, "
          f"data section {sections['data']} B")
    for crate, body in size.most_common():
        print(f"{body:8d} B {100 * body / total:5.1f}% {count[crate]:4d} functions  {crate}")


if __name__ == "__main__":
    main()
