"""Run a WASI (wasm32-wasip1) command module under Wasmtime and exit with its status.

Usage: wasm_runner.py MODULE.wasm [ARGS...]. Stdio and environment are inherited; the current
directory is preopened as `.` so tests that read relative files work.
"""
import os
import sys

import wasmtime


def main() -> int:
    if len(sys.argv) < 2:
        print("usage: wasm_runner.py MODULE.wasm [ARGS...]", file=sys.stderr)
        return 2
    module_path = sys.argv[1]
    engine = wasmtime.Engine()
    store = wasmtime.Store(engine)
    wasi = wasmtime.WasiConfig()
    wasi.argv = [os.path.basename(module_path)] + sys.argv[2:]
    wasi.inherit_stdin()
    wasi.inherit_stdout()
    wasi.inherit_stderr()
    wasi.inherit_env()
    wasi.preopen_dir(".", ".")
    store.set_wasi(wasi)
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    module = wasmtime.Module.from_file(engine, module_path)
    instance = linker.instantiate(store, module)
    start = instance.exports(store)["_start"]
    try:
        start(store)
    except wasmtime.ExitTrap as exit_trap:
        return exit_trap.code
    except wasmtime.Trap as trap:
        # A Rust panic on wasm32-wasip1 aborts: a failed test ends here.
        print(f"wasm-runner: trap: {trap}", file=sys.stderr)
        return 101
    return 0


if __name__ == "__main__":
    sys.exit(main())
