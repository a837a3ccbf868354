#!/usr/bin/env bash
# The project's test command: checks (and if needed starts) the local PostgreSQL and RabbitMQ,
# then runs every test of the workspace, each in its own process (cargo-nextest).
# Extra arguments go to the test runner, e.g. `./scripts/test.sh -E 'package(fake_stooq)'`.
#
# The `chaos` test binary (tests/tests/chaos) stops RabbitMQ and PostgreSQL on purpose, which
# would break any test running next to it. So the workspace runs first without it, then the
# chaos binary runs alone (its tests one at a time, see .config/nextest.toml). Both runs must
# pass. With extra arguments there is a single run, exactly as asked.
#
# CI=true turns "service unavailable, skipping" into a failure (see shared::config::running_in_ci).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/ensure-services.sh

status=0
if cargo nextest --version >/dev/null 2>&1; then
    if [[ $# -gt 0 ]]; then
        CI=${CI:-} cargo nextest run --workspace --no-fail-fast "$@"
        exit
    fi
    echo "=== all tests except the chaos suite"
    CI=${CI:-} cargo nextest run --workspace --no-fail-fast -E 'not binary(chaos)' || status=$?
    echo "=== chaos suite (broker and database outages), alone"
    CI=${CI:-} cargo nextest run -p tests --test chaos --no-fail-fast || status=$?
else
    echo "cargo-nextest is not installed (cargo install cargo-nextest --locked);" \
        "falling back to cargo test" >&2
    # cargo test runs one test binary at a time, so the chaos binary is alone; its tests
    # take a process-wide lock so they do not overlap each other either.
    CI=${CI:-} cargo test --workspace --no-fail-fast "$@" || status=$?
fi
if [[ $status -ne 0 ]]; then
    echo "tests FAILED (see the summaries above)" >&2
fi
exit "$status"
