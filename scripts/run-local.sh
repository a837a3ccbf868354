#!/usr/bin/env bash
# The whole system on this machine without Docker, in one command:
#
#   scripts/run-local.sh                 # then open http://127.0.0.1:8000/
#   scripts/run-local.sh --demo-users    # also creates admin/admin and johndoe/john
#
# It builds the binaries (cargo, dev profile), then runs each service as its own process on
# embedded defaults, all bound to 127.0.0.1:
#
# - database: SQLite in the state directory (LOCAL_STATE_DIR, default .local/ in the
#   repository, git-ignored), created and migrated on the first start and kept afterwards;
# - feed: the bundled fake stooq (fake_stooq), unless STOOQ_API_KEY is set: then the real
#   stooq (or STOOQ_URL);
# - transport: RabbitMQ RPC when a broker answers the AMQP handshake at AMQP_URL (default
#   amqp://guest:guest@127.0.0.1:5672/%2f), plain HTTP otherwise; QUOTE_TRANSPORT forces one;
# - JWT signing key: generated once into LOCAL_STATE_DIR/jwt-secret (mode 0600) and reused,
#   so tokens survive a restart; JWT_SECRET, when set, wins;
# - users: none are created unless --demo-users is given (public passwords, demos only).
#
# Ports: API_PORT (8000), QUOTE_PORT (8001), FAKE_STOOQ_PORT (8002); each is checked to be
# free first. Each service logs to LOCAL_STATE_DIR/logs/<name>.log; other settings in the
# environment (RUST_LOG, CACHE_TTL, QUOTE_QUEUE, ...) reach the services unchanged.
#
# It waits until every service answers /readyz, prints the web app's URL and what it chose,
# and stops every service on Ctrl-C or SIGTERM (exit 0). If a service dies on its own, the
# others are stopped too and it exits 1 naming the one that died.
#
# Why a script rather than a Rust supervisor: it is the same few commands an operator would
# type (cargo build, then the binaries), readable in one screen, and adds no crate for CI to
# build. Needs bash (4 or newer) and cargo; the probes use bash's /dev/tcp, no curl.
set -euo pipefail

readonly START_LIMIT_SECS=60
# Longer than the services' default SHUTDOWN_GRACE (10 s): in-flight requests may finish.
readonly STOP_LIMIT_SECS=15

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

demo_users=false
for arg in "$@"; do
    case $arg in
        --demo-users) demo_users=true ;;
        -h | --help) usage; exit 0 ;;
        *) echo "run-local: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
    esac
done

say() { printf 'run-local: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
state_dir=${LOCAL_STATE_DIR:-$repo/.local}
if [[ $state_dir != /* ]]; then state_dir=$PWD/$state_dir; fi
logs=$state_dir/logs

# --- ports -----------------------------------------------------------------------------------

api_port=${API_PORT:-8000}
quote_port=${QUOTE_PORT:-8001}
feed_port=${FAKE_STOOQ_PORT:-8002}
use_fake_feed=true
if [[ -n ${STOOQ_API_KEY:-} ]]; then use_fake_feed=false; fi

check_port() { # VAR value
    local var=$1 port=$2
    if ! [[ $port =~ ^[0-9]+$ ]] || ((port < 1 || port > 65535)); then
        die "$var=$port is not a port number (1-65535)"
    fi
    # Anything accepting on 127.0.0.1 (a listener on 0.0.0.0 included) would take our requests.
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        die "port $port ($var) is in use on 127.0.0.1: stop what listens there or set $var to a free port"
    fi
}
check_port API_PORT "$api_port"
check_port QUOTE_PORT "$quote_port"
if $use_fake_feed; then check_port FAKE_STOOQ_PORT "$feed_port"; fi
if [[ $api_port == "$quote_port" ]] || { $use_fake_feed && [[ $feed_port == "$api_port" || $feed_port == "$quote_port" ]]; }; then
    die "API_PORT, QUOTE_PORT and FAKE_STOOQ_PORT must differ ($api_port, $quote_port, $feed_port)"
fi

# --- transport ---------------------------------------------------------------------------------

amqp_url=${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}

# host:port of an AMQP URL, without the credentials (it is printed).
amqp_endpoint() {
    local url=$1 scheme rest host port
    scheme=${url%%://*}
    rest=${url#*://}
    rest=${rest%%/*}
    rest=${rest%%\?*}
    rest=${rest##*@}
    if [[ $rest == \[* ]]; then
        host=${rest%%]*}; host=${host#[}; port=${rest##*]}; port=${port#:}
    else
        host=${rest%%:*}; port=${rest#"$host"}; port=${port#:}
    fi
    if [[ -z $port ]]; then
        if [[ $scheme == amqps ]]; then port=5671; else port=5672; fi
    fi
    printf '%s %s %s\n' "$scheme" "${host:-127.0.0.1}" "$port"
}

# True when a RabbitMQ answers at host:port: it replies to the AMQP 0-9-1 protocol header with
# a method frame (type 1, Connection.Start). Over TLS (amqps) an accepted connection is taken
# as the answer. Bounded to 3 s, so an address that drops packets cannot hang the start.
amqp_answers() { # scheme host port
    local scheme=$1 host=$2 port=$3 probe i
    (
        exec 3<>"/dev/tcp/$host/$port" || exit 1
        [[ $scheme == amqps ]] && exit 0
        printf 'AMQP\000\000\011\001' >&3
        IFS= read -r -t 2 -n 1 -d '' byte <&3 || exit 1
        [[ $byte == $'\001' ]]
    ) 2>/dev/null &
    probe=$!
    for ((i = 0; i < 30; i++)); do
        kill -0 "$probe" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$probe" 2>/dev/null; then
        kill -KILL "$probe" 2>/dev/null || true
        wait "$probe" 2>/dev/null || true
        return 1
    fi
    wait "$probe"
}

read -r amqp_scheme amqp_host amqp_port < <(amqp_endpoint "$amqp_url")
broker="$amqp_host:$amqp_port"
case ${QUOTE_TRANSPORT:-} in
    amqp)
        amqp_answers "$amqp_scheme" "$amqp_host" "$amqp_port" ||
            die "QUOTE_TRANSPORT=amqp but no RabbitMQ answers at $broker (AMQP_URL)"
        transport=amqp; transport_note="RabbitMQ at $broker (QUOTE_TRANSPORT=amqp)" ;;
    http)
        transport=http; transport_note="HTTP (QUOTE_TRANSPORT=http)" ;;
    "")
        if amqp_answers "$amqp_scheme" "$amqp_host" "$amqp_port"; then
            transport=amqp; transport_note="RabbitMQ at $broker"
        else
            transport=http; transport_note="HTTP (no RabbitMQ answers at $broker)"
        fi ;;
    *) die "QUOTE_TRANSPORT must be amqp or http, not '$QUOTE_TRANSPORT'" ;;
esac

# --- build -------------------------------------------------------------------------------------

# RUN_LOCAL_PROFILE picks the cargo profile (dev; `release` for speed after a longer build).
profile=${RUN_LOCAL_PROFILE:-dev}
say "building the services (cargo build --profile $profile)"
(cd "$repo" && cargo build --profile "$profile" --bins -p api_service -p quote_service -p fake_stooq)
target_dir=$(cd "$repo" && cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
[[ -n $target_dir ]] || die "cannot find cargo's target directory (cargo metadata)"
if [[ $profile == dev ]]; then bin=$target_dir/debug; else bin=$target_dir/$profile; fi

# --- state: database and signing key ---------------------------------------------------------

# Everything the services write here (key, database, logs) is for this user only.
umask 077
mkdir -p "$logs"

db_path=$state_dir/api_service.db
# sqlx percent-decodes the path: escape the characters it would read otherwise.
db_url_path=${db_path//%/%25}
db_url_path=${db_url_path//\?/%3F}
db_url_path=${db_url_path//#/%23}
database_url=sqlite://$db_url_path

key_file=$state_dir/jwt-secret
if [[ -n ${JWT_SECRET:-} ]]; then
    jwt_secret=$JWT_SECRET
    key_note="from JWT_SECRET"
else
    if [[ ! -e $key_file ]]; then
        # 32 random bytes as 64 hex characters, written under a temporary name (mode 0600 from
        # mktemp and the umask) and moved into place, so a crash never leaves half a key.
        tmp=$(mktemp "$state_dir/.jwt-secret.XXXXXX")
        od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$tmp"
        mv "$tmp" "$key_file"
        key_note="$key_file (generated, 0600)"
    else
        key_note="$key_file (reused)"
    fi
    # Whoever could read it could sign tokens: refuse a key others may have read.
    if [[ -z $(find "$key_file" -prune -type f -perm 600 -user "$(id -u)") ]]; then
        die "$key_file must be a file of yours with mode 0600 (chmod 600 it, or delete it for a new key)"
    fi
    jwt_secret=$(<"$key_file")
    ((${#jwt_secret} >= 32)) ||
        die "$key_file holds fewer than 32 characters; delete it and a new key is generated"
fi

if $demo_users; then
    say "creating the demo users (admin/admin, johndoe/john): public passwords, demos only"
    DATABASE_URL=$database_url "$bin/api_service" users seed-demo >>"$logs/users.log" 2>&1 ||
        die "creating the demo users failed; see $logs/users.log"
fi

# --- the services ------------------------------------------------------------------------------

names=()
pids=()
stop_requested=false

# Ctrl-C in a terminal signals the whole process group: the services too (they begin their
# graceful stop), and the command bash is running (a `sleep`), which then fails with 130.
# So every command of the supervision below tolerates failing by a signal (`|| true`): under
# set -e such a failure would end the script before the trap's stop ran.
trap 'stop_requested=true' INT TERM
# However the script ends (an error under set -e included), no service outlives it.
trap 'stop_all' EXIT

# start NAME COMMAND...: in the background, output appended to logs/NAME.log.
start() {
    local name=$1
    shift
    # Logs are kept across runs: mark where this one begins.
    printf -- '--- run-local start %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >>"$logs/$name.log"
    "$@" </dev/null >>"$logs/$name.log" 2>&1 &
    names+=("$name")
    pids+=("$!")
}

alive() { kill -0 "$1" 2>/dev/null; }

# SIGTERM to every service, SIGKILL to any still running after STOP_LIMIT_SECS; prints each
# one's exit. Returns 1 when one ended badly (neither 0 nor by our signals).
stop_all() {
    local i pid status failed=0 deadline=$((SECONDS + STOP_LIMIT_SECS))
    for pid in ${pids[@]+"${pids[@]}"}; do kill -TERM "$pid" 2>/dev/null || true; done
    for i in ${pids[@]+"${!pids[@]}"}; do
        while alive "${pids[i]}" && ((SECONDS < deadline)); do sleep 0.1 || true; done
        if alive "${pids[i]}"; then
            say "${names[i]} still running ${STOP_LIMIT_SECS}s after SIGTERM: killing it"
            kill -KILL "${pids[i]}" 2>/dev/null || true
        fi
    done
    for i in ${pids[@]+"${!pids[@]}"}; do
        status=0
        wait "${pids[i]}" 2>/dev/null || status=$?
        case $status in
            0 | 130 | 143 | 127) ;; # done, by SIGINT/SIGTERM, or reaped already
            *) say "${names[i]} exited with status $status (log: $logs/${names[i]}.log)"; failed=1 ;;
        esac
    done
    pids=()
    names=()
    return "$failed"
}

# The first service that is no longer running, as "index", or nothing.
dead_service() {
    local i
    for i in "${!pids[@]}"; do
        if ! alive "${pids[i]}"; then echo "$i"; return; fi
    done
}

# Stops the rest after service number $1 died, shows its log's end and exits 1.
on_death() {
    local i=$1 name=${names[$1]} status=0
    # A service that ended because Ctrl-C reached it too is part of the stop, not a death.
    if $stop_requested; then on_stop; fi
    wait "${pids[i]}" 2>/dev/null || status=$?
    say "$name exited on its own (status $status); stopping the others"
    tail -n 15 "$logs/$name.log" | sed "s/^/  $name| /" >&2 || true
    unset 'pids[i]' 'names[i]'
    stop_all || true
    die "stopped because $name died (log: $logs/$name.log)"
}

on_stop() {
    say "stopping"
    if stop_all; then
        say "stopped"
        exit 0
    fi
    exit 1
}

# True when GET 127.0.0.1:PORT PATH answers 200 (HTTP/1.0 over bash's /dev/tcp).
http_ok() {
    local port=$1 path=$2
    (
        exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
        printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$path" >&3
        IFS= read -r -t 2 line <&3 || exit 1
        [[ $line == "HTTP/1."[01]" 200"* ]]
    ) 2>/dev/null
}

# Polls until service NAME answers 200 at PORT PATH; handles a stop request or a death meanwhile.
wait_ready() {
    local name=$1 port=$2 path=$3 deadline=$((SECONDS + START_LIMIT_SECS)) dead
    until http_ok "$port" "$path"; do
        if $stop_requested; then on_stop; fi
        dead=$(dead_service) || true
        if [[ -n $dead ]]; then on_death "$dead"; fi
        if ((SECONDS >= deadline)); then
            stop_all || true
            die "$name not ready within ${START_LIMIT_SECS}s (log: $logs/$name.log)"
        fi
        sleep 0.1 || true
    done
}

common_env=(RUST_LOG="${RUST_LOG:-info}" QUOTE_TRANSPORT="$transport")

if $use_fake_feed; then
    start fake_stooq env FAKE_STOOQ_ADDR="127.0.0.1:$feed_port" "$bin/fake_stooq"
    wait_ready fake_stooq "$feed_port" /fake/stats
    stooq_url=http://127.0.0.1:$feed_port
    feed_note="bundled fake stooq at $stooq_url (set STOOQ_API_KEY for the real stooq)"
else
    stooq_url=${STOOQ_URL:-https://stooq.com}
    feed_note="real stooq at $stooq_url (STOOQ_API_KEY is set)"
fi

start quote_service env "${common_env[@]}" STOOQ_URL="$stooq_url" \
    QUOTE_HTTP_ADDR="127.0.0.1:$quote_port" "$bin/quote_service"
wait_ready quote_service "$quote_port" /readyz

start api_service env "${common_env[@]}" API_ADDR="127.0.0.1:$api_port" INTERNAL_ADDR= \
    DATABASE_URL="$database_url" JWT_SECRET="$jwt_secret" ALLOW_INSECURE_DEV_SECRET=false \
    QUOTE_SERVICE_URL="http://127.0.0.1:$quote_port" "$bin/api_service"
wait_ready api_service "$api_port" /readyz

if $demo_users; then
    users_note="demo users admin/admin and johndoe/john (public passwords)"
else
    users_note="none created by this command: --demo-users adds admin/admin and johndoe/john,
             or: DATABASE_URL='$database_url' $bin/api_service users create --username NAME --role admin"
fi

cat <<EOF
stock-quotes is running: http://127.0.0.1:$api_port/
  transport: $transport_note
  feed:      $feed_note
  database:  $db_path
  jwt key:   $key_note
  users:     $users_note
  API docs:  http://127.0.0.1:$api_port/docs
  logs:      $logs/
Ctrl-C stops everything.
EOF

while :; do
    if $stop_requested; then on_stop; fi
    dead=$(dead_service) || true
    if [[ -n $dead ]]; then on_death "$dead"; fi
    sleep 0.2 || true
done
