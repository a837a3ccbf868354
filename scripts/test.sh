#!/usr/bin/env bash
# The project's test command: checks (and if needed starts) the local PostgreSQL and RabbitMQ,
# then runs every test of the workspace, each in its own process (cargo-nextest).
# Extra arguments go to the test runner, e.g. `./scripts/test.sh -E 'package(fake_stooq)'`.
#
# CI=true turns "service unavailable, skipping" into a failure (see shared::config::running_in_ci).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/ensure-services.sh

if ! cargo nextest --version >/dev/null 2>&1; then
    echo "--- installing cargo-nextest (once)"
    cargo install cargo-nextest --locked
fi
CI=${CI:-} cargo nextest run --workspace --no-fail-fast "$@"
