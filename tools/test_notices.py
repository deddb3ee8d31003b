"""Tests of tools/notices.py (the third-party notices `just package` writes into dist/): the
crates it lists are exactly what `cargo tree` says the .wasm is built from, and each section
carries licence text.

Run by `just validate`: .venv/bin/python -m unittest discover -s tools -p 'test_*.py'
"""

import subprocess
import unittest

import notices


def cargo_tree_runtime_crates():
    """`cargo tree`'s view: the normal dependencies of eisodos-filter on wasm32-wasip1."""
    output = subprocess.run(
        ["cargo", "tree", "-p", notices.ROOT_CRATE, "--target", notices.TARGET, "-e", "normal",
         "--prefix", "none", "--format", "{p}"],
        cwd=notices.ROOT, capture_output=True, text=True, check=True,
    ).stdout
    crates = set()
    for line in output.splitlines():
        name, version, *rest = line.split()
        if not (rest and rest[0].startswith("(/")):  # the workspace's crates carry their path
            crates.add((name, version.lstrip("v")))
    return crates


class Notices(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.meta = notices.metadata()
        cls.packages = notices.runtime_packages(cls.meta)
        cls.text = notices.notices(cls.meta)

    def test_lists_exactly_the_crates_cargo_tree_shows(self):
        listed = {(p["name"], p["version"]) for p in self.packages}
        self.assertEqual(listed, cargo_tree_runtime_crates())
        self.assertNotIn("eisodos-core", {name for name, _ in listed})
        # A dev-dependency of the filter's tests and the tools' crates never reach the .wasm.
        self.assertNotIn("tempfile", {name for name, _ in listed})

    def test_every_crate_has_a_section_with_licence_text(self):
        sections = self.text.split(notices.RULE)
        for package in self.packages:
            title = f"\n{package['name']} {package['version']}\n"
            (section,) = [s for s in sections if s.startswith(title)]
            self.assertTrue(
                "Permission is hereby granted" in section or "Apache License" in section,
                f"{package['name']}: no licence text",
            )

    def test_names_the_standard_library_and_wasi_libc(self):
        self.assertIn(notices.RUST_STD_FILE, self.text)
        self.assertIn("Rich Felker", self.text)  # musl's notice, inside wasi-libc
        self.assertTrue(notices.rust_std_notices().is_file())


if __name__ == "__main__":
    unittest.main()
