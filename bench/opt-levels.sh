#!/usr/bin/env bash
# Size and throughput of the filter built with each release opt-level, through real Envoy.
# Alternates the builds round by round (machines here are noisy) and prints medians.
# Needs wrk (Debian: apt-get install wrk). Usage: bench/opt-levels.sh [ROUNDS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
seconds=${2:-5}
levels=(z s 3)
envoy=${ENVOY_BIN:-.venv/bin/envoy}
work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

command -v wrk >/dev/null || { echo "wrk not found (apt-get install wrk)"; exit 1; }
cargo build -q --release -p eisodos-tests --bin upstreams
for level in "${levels[@]}"; do
    CARGO_PROFILE_RELEASE_OPT_LEVEL=$level cargo build -q --release --target wasm32-wasip1 \
        -p eisodos-filter --target-dir "target/opt-$level"
done

target/release/upstreams backend_a=18081 backend_b=18082 backend_c=18083 > /dev/null &
pids+=($!)
sleep 0.5

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

for round in $(seq "$rounds"); do
    for level in "${levels[@]}"; do
        sed -e "s#target/wasm32-wasip1/release/eisodos.wasm#$PWD/target/opt-$level/wasm32-wasip1/release/eisodos.wasm#" \
            -e 's/port_value: 10000/port_value: 18000/; s/port_value: 9901/port_value: 18901/' \
            -e 's/port_value: 8081/port_value: 18081/; s/port_value: 8082/port_value: 18082/; s/port_value: 8083/port_value: 18083/' \
            envoy/envoy.yaml > "$work/envoy.yaml"
        "$envoy" -c "$work/envoy.yaml" --concurrency 1 --disable-hot-restart -l warn > "$work/envoy.log" 2>&1 &
        pid=$!
        pids+=("$pid")
        for _ in $(seq 100); do curl -sf 127.0.0.1:18901/ready > /dev/null 2>&1 && break; sleep 0.1; done
        wrk -t1 -c16 -d1s http://127.0.0.1:18000/ > /dev/null
        before=$(cpu_ticks "$pid")
        out=$(wrk -t1 -c16 -d"${seconds}s" http://127.0.0.1:18000/)
        after=$(cpu_ticks "$pid")
        requests=$(echo "$out" | awk '/requests in/ {print $1}')
        rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
        non2xx=$(echo "$out" | awk '/Non-2xx/ {print $5}')
        cpu_us=$(awk -v t=$((after - before)) -v hz="$hz" -v n="$requests" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')
        echo "round $round opt-level $level: $rps rq/s, $cpu_us us CPU/request ${non2xx:+($non2xx non-2xx)}"
        echo "$level $rps $cpu_us" >> "$work/results"
        kill "$pid"; wait "$pid" 2>/dev/null || true
    done
done

echo
printf '%-10s %10s %14s %18s\n' opt-level bytes "median rq/s" "median us CPU/rq"
for level in "${levels[@]}"; do
    size=$(stat -c %s "target/opt-$level/wasm32-wasip1/release/eisodos.wasm")
    rps=$(awk -v l="$level" '$1 == l {print $2}' "$work/results" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    cpu=$(awk -v l="$level" '$1 == l {print $3}' "$work/results" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    printf '%-10s %10s %14s %18s\n' "$level" "$size" "$rps" "$cpu"
done
