#!/usr/bin/env python3
"""Writes the third-party notices of eisodos.wasm: what its MIT, BSD and Apache-2.0 parts ask to
travel with the binary.

Usage: notices.py [--out FILE]   (default: print to stdout)

The .wasm holds, besides eisodos' own two crates (Apache-2.0, LICENSE at the root):
  - the crates `cargo metadata` resolves as normal dependencies of eisodos-filter on
    wasm32-wasip1 (dev- and build-dependencies never reach the .wasm): each one's name,
    version, licence expression and repository, then the licence files its package ships
    (LICENSE*, COPYING*, UNLICENSE*, NOTICE*), verbatim;
  - Rust's standard library: its notices are the toolchain's own COPYRIGHT-library.html
    (installed with rustc), copied beside this file by package.py, and named here;
  - wasi-libc, which rustc links into every wasm32-wasip1 binary: tools/notices/wasi-libc.txt.

Only the Python standard library and `cargo`.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = "wasm32-wasip1"
ROOT_CRATE = "eisodos-filter"
WASI_LIBC = ROOT / "tools" / "notices" / "wasi-libc.txt"
# The name package.py gives the standard library's notices in dist/.
RUST_STD_FILE = "THIRD-PARTY-NOTICES-rust-std.html"
LICENSE_PREFIXES = ("license", "licence", "copying", "unlicense", "notice")
RULE = "=" * 78


def metadata() -> dict:
    """`cargo metadata` of the workspace, resolved for the wasm target only."""
    command = [
        "cargo", "metadata", "--format-version", "1", "--locked", "--filter-platform", TARGET,
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"cargo metadata failed:\n{result.stderr}")
    return json.loads(result.stdout)


def runtime_packages(meta: dict) -> list:
    """The packages eisodos-filter reaches through normal dependencies, itself excluded."""
    packages = {package["id"]: package for package in meta["packages"]}
    nodes = {node["id"]: node for node in meta["resolve"]["nodes"]}
    (root,) = [id for id, package in packages.items() if package["name"] == ROOT_CRATE]
    seen, stack = set(), [root]
    while stack:
        node = nodes[stack.pop()]
        for dep in node["deps"]:
            normal = any(kind["kind"] is None for kind in dep["dep_kinds"])
            if normal and dep["pkg"] not in seen:
                seen.add(dep["pkg"])
                stack.append(dep["pkg"])
    members = set(meta["workspace_members"])
    found = [packages[id] for id in seen if id not in members]
    return sorted(found, key=lambda package: (package["name"], package["version"]))


def licence_files(package: dict) -> list:
    """The licence files the package ships at its root, by name."""
    directory = Path(package["manifest_path"]).parent
    return sorted(
        path for path in directory.iterdir()
        if path.is_file() and path.name.lower().startswith(LICENSE_PREFIXES)
    )


def crate_section(package: dict) -> str:
    files = licence_files(package)
    if not files:
        sys.exit(f"{package['name']} {package['version']} ships no licence file")
    lines = [
        RULE,
        f"{package['name']} {package['version']}",
        f"License: {package.get('license') or package.get('license_file')}",
    ]
    if package.get("authors"):
        lines.append(f"Authors: {', '.join(package['authors'])}")
    if package.get("repository"):
        lines.append(f"Source: {package['repository']}")
    for path in files:
        lines += ["", f"--- {path.name} ---", "", path.read_text(errors="replace").rstrip()]
    return "\n".join(lines) + "\n"


def notices(meta: dict) -> str:
    packages = runtime_packages(meta)
    header = [
        "Third-party notices for eisodos.wasm",
        "",
        "eisodos itself is licensed under the Apache License, Version 2.0 (LICENSE in its",
        "source). The .wasm also contains the following, under their own licences:",
        "",
        *[f"  - {p['name']} {p['version']} ({p['license']})" for p in packages],
        "  - Rust's standard library (core, alloc, std): Apache-2.0 OR MIT, with the notices",
        f"    of its parts in {RUST_STD_FILE} (the toolchain's COPYRIGHT-library.html)",
        "  - wasi-libc, linked by rustc into every wasm32-wasip1 binary: see its section",
        "",
    ]
    sections = [crate_section(package) for package in packages]
    wasi = [RULE, WASI_LIBC.read_text().rstrip() + "\n"]
    return "\n".join(header) + "\n" + "".join(sections) + "\n".join(wasi)


def rust_std_notices() -> Path:
    """The toolchain's notices of the standard library (shipped with the rustc component)."""
    sysroot = subprocess.run(
        ["rustc", "--print", "sysroot"], capture_output=True, text=True, check=True
    ).stdout.strip()
    path = Path(sysroot) / "share" / "doc" / "rust" / "COPYRIGHT-library.html"
    if not path.is_file():
        sys.exit(f"{path} is missing: the standard library's notices come with rustc")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="the file to write (default: stdout)")
    args = parser.parse_args()
    text = notices(metadata())
    if args.out:
        args.out.write_text(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
