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
# It also installs schemathesis (pinned, in its own virtualenv) for the contract fuzzing test
# (tests/tests/contract_fuzz.rs); SCHEMATHESIS_BIN points the test at another executable.
# And it installs the browser tests' tools if missing (Debian's chromium and chromium-driver,
# the pinned npm packages of tests/browser; see scripts/install-browser-tools.sh).
#
# CI=true turns "service unavailable, skipping" into a failure (see shared::config::running_in_ci).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/ensure-services.sh
scripts/install-schemathesis.sh
scripts/install-browser-tools.sh

if ! cargo nextest --version >/dev/null 2>&1; then
    echo "--- installing cargo-nextest (once)"
    cargo install cargo-nextest --locked
fi

if [[ $# -gt 0 ]]; then
    exec env CI="${CI:-}" cargo nextest run --workspace --no-fail-fast "$@"
fi

status=0
echo "--- all tests except the chaos suite"
CI=${CI:-} cargo nextest run --workspace --no-fail-fast -E 'not binary(chaos)' || status=$?
echo "--- chaos suite (broker and database outages), alone"
CI=${CI:-} cargo nextest run -p tests --test chaos --no-fail-fast || status=$?
if [[ $status -ne 0 ]]; then
    echo "tests FAILED (see the two summaries above)" >&2
fi
exit "$status"
