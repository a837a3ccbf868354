#!/usr/bin/env bash
# The end-to-end benchmark in one command (see BENCHMARKS.md): builds the release binaries,
# installs wrk if it is missing, makes sure the local PostgreSQL and RabbitMQ run, and starts
# the harness. Arguments go to the harness, e.g.
#
#   scripts/bench.sh                                   # full run: 30 s x 3 per scenario
#   scripts/bench.sh --duration 3s --runs 1 --warmup 1s  # smoke run
#   scripts/bench.sh --scenarios stock-hot,login       # some scenarios (echo comes along)
#
# Prints a table and writes the JSON summary to target/bench/summary.json (--output).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ -d "$HOME/.cargo/bin" ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi

as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "bench.sh: need root to run: $*" >&2
        return 1
    fi
}

if ! command -v wrk >/dev/null 2>&1; then
    echo "--- installing wrk"
    as_root apt-get update -qq
    as_root apt-get install -y -qq wrk
fi

echo "--- local services"
scripts/ensure-services.sh

echo "--- release build"
cargo build --release -p fake_stooq -p quote_service -p api_service -p bench --bins

echo "--- benchmark"
exec target/release/bench --bin-dir target/release "$@"
