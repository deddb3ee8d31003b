#!/usr/bin/env python3
"""Runs the integration tests N times on an idle machine and N times with one core kept busy,
from a clean build directory, and prints a table of test x failures.

Usage: stress_tests.py N [--target-dir DIR]

Each run's output, with what the passing tests printed, is kept in DIR/logs.

The build directory (default target/stress) is deleted and rebuilt first, so no artifact of an
earlier build takes part. Each run executes every integration-test binary of the tests crate
the way `cargo test` would (working directory: the crate; the binary's own parallelism). The
busy runs start one CPU burner, a process spinning on one core, and stop it by its PID
afterwards, whatever happens. Exits 1 if any test failed in any run.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS_CRATE = ROOT / "tests"
RESULT = re.compile(r"^test (\S+) \.\.\. (ok|FAILED|ignored)")


def build(target_dir: Path) -> list[Path]:
    """Builds the filter and the integration-test binaries into `target_dir`."""
    if target_dir.exists():
        shutil.rmtree(target_dir)
    env = dict(os.environ, CARGO_TARGET_DIR=str(target_dir))
    subprocess.run(
        ["cargo", "build", "--release", "--target", "wasm32-wasip1", "-p", "eisodos-filter"],
        cwd=ROOT, env=env, check=True,
    )
    out = subprocess.run(
        ["cargo", "test", "-p", "eisodos-tests", "--tests", "--no-run", "--message-format=json"],
        cwd=ROOT, env=env, check=True, stdout=subprocess.PIPE, text=True,
    ).stdout
    binaries = []
    for line in out.splitlines():
        message = json.loads(line)
        target = message.get("target", {})
        if (message.get("reason") == "compiler-artifact" and target.get("kind") == ["test"]
                and message.get("executable")):
            binaries.append(Path(message["executable"]))
    return sorted(binaries, key=lambda path: path.name)


def run_once(binaries: list[Path], env: dict, logs: Path, label: str) -> dict[str, bool]:
    """Every test of every binary once: name -> passed. Each binary's output, with what
    passing tests printed (their measured figures), goes to `logs/<label>-<suite>.log`."""
    outcomes = {}
    for binary in binaries:
        suite = binary.name.rsplit("-", 1)[0]
        proc = subprocess.run([str(binary), "--show-output"], cwd=TESTS_CRATE, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        (logs / f"{label}-{suite}.log").write_text(proc.stdout)
        named_failure = False
        for line in proc.stdout.splitlines():
            match = RESULT.match(line)
            if match and match.group(2) != "ignored":
                passed = match.group(2) == "ok"
                outcomes[f"{suite}::{match.group(1)}"] = passed
                named_failure |= not passed
        # A binary that failed without naming a failing test crashed: count that too.
        outcomes[f"{suite} (the binary itself)"] = proc.returncode == 0 or named_failure
        if proc.returncode != 0:
            print(proc.stdout[-4000:], file=sys.stderr)
    return outcomes


def start_burner() -> subprocess.Popen:
    """One process spinning on one core."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=int, help="runs per condition (idle, busy)")
    parser.add_argument("--target-dir", default=str(ROOT / "target" / "stress"))
    args = parser.parse_args()
    target_dir = Path(args.target_dir).resolve()

    binaries = build(target_dir)
    logs = target_dir / "logs"
    logs.mkdir()
    env = dict(os.environ, EISODOS_WASM=str(
        target_dir / "wasm32-wasip1" / "release" / "eisodos.wasm"))
    failures = {"idle": defaultdict(int), "busy": defaultdict(int)}
    tests = set()
    durations = {"idle": [], "busy": []}
    for condition in ("idle", "busy"):
        burner = start_burner() if condition == "busy" else None
        try:
            for run in range(1, args.runs + 1):
                started = time.monotonic()
                outcomes = run_once(binaries, env, logs, f"{condition}-{run}")
                durations[condition].append(time.monotonic() - started)
                failed = sorted(name for name, ok in outcomes.items() if not ok)
                tests.update(outcomes)
                for name in failed:
                    failures[condition][name] += 1
                print(f"{condition} run {run}/{args.runs}: {len(outcomes)} tests, "
                      f"{len(failed)} failed {failed if failed else ''}"
                      f"({durations[condition][-1]:.0f} s)", flush=True)
        finally:
            if burner is not None:
                burner.kill()
                burner.wait()

    width = max(len(name) for name in tests)
    print()
    print(f"| {'test'.ljust(width)} | idle failures | busy failures |")
    print(f"| {'-' * width} | ------------- | ------------- |")
    for name in sorted(tests):
        idle, busy = failures["idle"][name], failures["busy"][name]
        print(f"| {name.ljust(width)} | {idle:>5} of {args.runs:<4} | {busy:>5} of {args.runs:<4} |")
    total = {c: sum(failures[c].values()) for c in failures}
    for condition in ("idle", "busy"):
        times = durations[condition]
        print(f"{condition}: {args.runs} runs, {total[condition]} test failures, "
              f"{min(times):.0f}-{max(times):.0f} s per run")
    print(f"each run's output, with the figures the tests printed: {logs}")
    return 1 if any(total.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
