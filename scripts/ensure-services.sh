#!/usr/bin/env bash
# Makes sure the local PostgreSQL (127.0.0.1:5432) and RabbitMQ (127.0.0.1:5672) that the
# integration tests talk to are running, starting them if they are installed but stopped.
#
# Outside CI a service that cannot be brought up is only a warning: the tests that need it
# print why and skip. With CI=true (or 1) it is an error, because there a skipped
# integration test would hide a real failure.
set -euo pipefail

in_ci() { [[ "${CI:-}" == "true" || "${CI:-}" == "1" ]]; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Starting a system service needs root; use sudo only when it will not prompt.
as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo -n "$@"
    else
        echo "  (not root and no passwordless sudo: cannot run $1)" >&2
        return 1
    fi
}

postgres_ready() {
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -h 127.0.0.1 -p 5432
    else
        port_open 5432
    fi
}

# The AMQP listener opens last in RabbitMQ's boot, so an open port means it takes connections.
rabbitmq_ready() { port_open 5672; }

start_postgres() {
    command -v pg_ctlcluster >/dev/null 2>&1 && [[ -d /etc/postgresql ]] || return 1
    local version
    version="$(find /etc/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n 1)"
    [[ -n "$version" ]] || return 1
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start
}

start_rabbitmq() {
    command -v rabbitmq-server >/dev/null 2>&1 || return 1
    as_root rabbitmq-server -detached
}

unavailable() {
    if in_ci; then
        echo "error: $1 (CI=true: integration tests must not skip)" >&2
        exit 1
    fi
    echo "warning: $1; tests that need it will skip" >&2
}

# ensure NAME READY_FN START_FN
ensure() {
    local name="$1" ready="$2" start="$3"
    if "$ready"; then
        echo "$name: up"
        return 0
    fi
    echo "$name: not reachable, starting it"
    if ! "$start"; then
        # It may already be booting (started by someone else): still give it the full wait.
        echo "  start command failed or unavailable; waiting in case it is starting anyway" >&2
    fi
    local waited
    for waited in $(seq 1 60); do
        if "$ready"; then
            echo "$name: up after ${waited}s"
            return 0
        fi
        sleep 1
    done
    unavailable "$name is not reachable on 127.0.0.1 after 60 s"
}

ensure PostgreSQL postgres_ready start_postgres
ensure RabbitMQ rabbitmq_ready start_rabbitmq

# Tests and benchmarks declare durable queues with random names (quotes.rpc.test.*,
# bench.*, smoke.*) so parallel runs never share one. A policy makes the broker delete such a
# queue once nothing has used it for a minute, so crashed or finished runs leave nothing
# behind. Production queue names do not match. Best effort: only needs rabbitmqctl locally.
if rabbitmq_ready && command -v rabbitmqctl >/dev/null 2>&1; then
    as_root rabbitmqctl -q set_policy --apply-to queues --priority 10 test-queues-expire \
        '^(quotes\.rpc\.test\.|bench\.|smoke\.)' '{"expires":60000}' >/dev/null 2>&1 \
        && echo "RabbitMQ: test queues expire after 60 s unused" \
        || echo "  (could not set the test-queue expiry policy; leftover test queues stay)" >&2
fi
