//! Every knob of the API service, read once at start-up from flags or the environment.
//!
//! One struct so `--help` documents the whole surface and tests can build a complete,
//! valid configuration in one call ([`Settings::for_tests`]).

use std::net::SocketAddr;
use std::time::Duration;

use secrecy::SecretString;
use shared::config::{parse_duration, parse_positive_duration};
use shared::http_server::HttpServerSettings;

/// How the API reaches the quote service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TransportKind {
    /// RPC over RabbitMQ (direct reply-to): the production path.
    Amqp,
    /// Plain HTTP to the quote service: a fallback when no broker is available.
    Http,
}

/// Environment variables read outside clap (by `shared::telemetry::init`), listed so the
/// complete set the binary reads can be enumerated next to [`crate::cli::cli_command`].
pub const LOGGING_ENV_VARS: &[&str] = &["RUST_LOG", "LOG_FORMAT"];

/// Shown under `--help`: the variables clap does not own.
pub const LOGGING_HELP: &str = "Logging (read from the environment only):\n  \
    RUST_LOG    tracing filter, e.g. `info,api_service=debug` (default: info)\n  \
    LOG_FORMAT  `json` for one JSON object per line; anything else prints human-readable lines";

/// Settings of the `serve` command (the other commands use the database part only).
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// Address the HTTP server listens on. Port 0 picks a free port (used by tests).
    #[arg(long, env = "API_ADDR", default_value = "0.0.0.0:8000")]
    pub api_addr: SocketAddr,

    /// Address for the operators' endpoints: /metrics, /readyz, /docs and the OpenAPI
    /// document are served only there, no longer on API_ADDR (/healthz stays on both).
    /// Unset or empty: everything on API_ADDR.
    #[arg(long, env = "INTERNAL_ADDR", default_value = "", hide_default_value = true,
          value_parser = parse_optional_addr)]
    pub internal_addr: OptionalAddr,

    /// Time limits and the connection cap of both listeners.
    #[command(flatten)]
    pub http_server: HttpServerSettings,

    /// Database URL: `sqlite://file.db` (embedded, one API instance) or
    /// `postgres://user:pass@host/db` (shared by several API instances).
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://api_service.db",
          value_parser = parse_secret, hide_env_values = true)]
    pub database_url: SecretString,

    /// Size of the database connection pool.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub database_max_connections: u32,

    /// HS256 signing key for access tokens, at least 32 bytes. Required unless
    /// ALLOW_INSECURE_DEV_SECRET=true.
    #[arg(long, env = "JWT_SECRET", value_parser = parse_secret, hide_env_values = true)]
    pub jwt_secret: Option<SecretString>,

    /// Lifetime of issued access tokens (e.g. 15m, 1h; at most 24h).
    #[arg(long, env = "JWT_TTL", default_value = "1h", value_parser = parse_jwt_ttl)]
    pub jwt_ttl: Duration,

    /// `iss` claim written into and required from every token.
    #[arg(long, env = "JWT_ISSUER", default_value = "stock-quotes")]
    pub jwt_issuer: String,

    /// `aud` claim written into and required from every token.
    #[arg(long, env = "JWT_AUDIENCE", default_value = "stock-quotes-api")]
    pub jwt_audience: String,

    /// Development only: without JWT_SECRET, sign with a random per-process key (tokens die
    /// with the process and are not shared between instances).
    #[arg(long, env = "ALLOW_INSECURE_DEV_SECRET", default_value_t = false,
          action = clap::ArgAction::Set)]
    pub allow_insecure_dev_secret: bool,

    /// How quotes are requested from the quote service.
    #[arg(long, env = "QUOTE_TRANSPORT", value_enum, default_value_t = TransportKind::Amqp)]
    pub quote_transport: TransportKind,

    /// RabbitMQ URL (QUOTE_TRANSPORT=amqp).
    #[arg(long, env = "AMQP_URL", default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
          value_parser = parse_secret, hide_env_values = true)]
    pub amqp_url: SecretString,

    /// Durable RPC queue the quote workers consume (QUOTE_TRANSPORT=amqp).
    #[arg(long, env = "QUOTE_QUEUE", default_value = shared::DEFAULT_QUOTE_QUEUE)]
    pub quote_queue: String,

    /// Base URL of the quote service's HTTP API (QUOTE_TRANSPORT=http).
    #[arg(
        long,
        env = "QUOTE_SERVICE_URL",
        default_value = "http://127.0.0.1:8001"
    )]
    pub quote_service_url: String,

    /// How long one quote RPC may take before the API answers 504; also the request's
    /// deadline, so workers drop requests nobody waits for any more.
    #[arg(long, env = "RPC_TIMEOUT", default_value = "5s", value_parser = parse_positive_duration)]
    pub rpc_timeout: Duration,

    /// How long a landed quote is handed to further requests for the same symbol instead of
    /// sending a new RPC. The quote worker caches quotes for seconds (CACHE_TTL) anyway, so
    /// re-asking sooner only costs a broker round trip; this bounds the extra staleness.
    /// Errors are never reused. `0` shares only RPCs still in flight.
    #[arg(long, env = "QUOTE_REUSE_WINDOW", default_value = "500ms", value_parser = parse_duration)]
    pub quote_reuse_window: Duration,

    /// Over AMQP: send single-symbol calls for distinct symbols that are waiting at the same
    /// moment as one multi-symbol request (contract v2), so a busy API costs the broker fewer
    /// messages. Never delays a call: a lone call leaves at once; calls arriving while a
    /// request is being published leave together in the next one (up to 50 symbols). Each
    /// call keeps its own RPC_TIMEOUT and its own error; an old worker that speaks only v1 is
    /// asked one symbol at a time. `false`: one message per call.
    #[arg(long, env = "RPC_BATCHING", default_value_t = true, action = clap::ArgAction::Set)]
    pub rpc_batching: bool,

    /// How many argon2 hashes may run at once (each takes ~19 MiB). Default: number of CPUs.
    #[arg(long, env = "HASH_CONCURRENCY", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub hash_concurrency: Option<u32>,

    /// How long a user's existence and role may be served from memory instead of the
    /// database. Bounds how long a token of a user deleted through another process (CLI,
    /// another instance) keeps working. At most 2s; 0 checks the database on every request.
    #[arg(long, env = "USER_CACHE_TTL", default_value = "2s", value_parser = parse_user_cache_ttl)]
    pub user_cache_ttl: Duration,

    /// Brute-force protection: failed logins for one username from one client address after
    /// which that pair gets 429 with Retry-After for LOGIN_LOCKOUT, even with the right
    /// password (other addresses, the owner's included, are unaffected). Past as many failures
    /// from anywhere, the username is paced: one attempt per 1 s, 2 s, 4 s… up to
    /// LOGIN_LOCKOUT / LOGIN_MAX_FAILURES, except from addresses it has logged in from before.
    /// Unknown usernames count like real ones. Logins still being checked take slots too:
    /// more concurrent ones wait (up to 5 s) for a slot. `0` disables it.
    #[arg(long, env = "LOGIN_MAX_FAILURES", default_value_t = 5)]
    pub login_max_failures: u32,

    /// Failed logins and logins still being checked, together, from one client address (any
    /// usernames; an IPv6 client counts per /64) after which that address waits for a slot or,
    /// once the failures alone reach it, gets 429 for LOGIN_LOCKOUT. A success gives back its
    /// slot but forgives no failure. The address is the TCP peer's (X-Forwarded-For is not
    /// trusted): behind a reverse proxy all clients share the proxy's, so raise this or use `0`.
    #[arg(long, env = "LOGIN_MAX_FAILURES_PER_IP", default_value_t = 20)]
    pub login_max_failures_per_ip: u32,

    /// How long failed logins are remembered after the latest one, and how long a lock lasts.
    #[arg(long, env = "LOGIN_LOCKOUT", default_value = "5m", value_parser = parse_positive_duration)]
    pub login_lockout: Duration,

    /// Mark the web app's session cookie `Secure`, so browsers send it over HTTPS only. Set
    /// it whenever clients reach the API over TLS (directly or through a TLS-terminating
    /// proxy); leave it off for plain-HTTP local use, where browsers would drop the cookie.
    #[arg(long, env = "COOKIE_SECURE", default_value_t = false,
          action = clap::ArgAction::Set)]
    pub cookie_secure: bool,

    /// Live quotes (`GET /api/v1/stream`): most streams one user may have open at once on
    /// this instance; past it, 429.
    #[arg(long, env = "STREAM_MAX_PER_USER", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub stream_max_per_user: u32,

    /// Most distinct symbols in one stream's `q`; past it, 429.
    #[arg(long, env = "STREAM_MAX_SYMBOLS", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub stream_max_symbols: u32,

    /// How often an idle stream sends a heartbeat (an SSE comment line), so proxies keep it.
    #[arg(long, env = "STREAM_HEARTBEAT", default_value = "15s", value_parser = parse_positive_duration)]
    pub stream_heartbeat: Duration,

    /// A stream ends after this long; the client reconnects (EventSource does so by itself)
    /// with `Last-Event-ID`, which re-checks its credentials and misses nothing.
    #[arg(long, env = "STREAM_MAX_LIFETIME", default_value = "1h", value_parser = parse_positive_duration)]
    pub stream_max_lifetime: Duration,

    /// Over QUOTE_TRANSPORT=http: how often the quote service is polled for the symbols this
    /// instance's streams watch. (Over AMQP the quote workers' WATCH_REFRESH decides.)
    #[arg(long, env = "WATCH_REFRESH", default_value = "15s", value_parser = parse_positive_duration)]
    pub watch_refresh: Duration,

    /// Over QUOTE_TRANSPORT=amqp: how long the quote workers keep refreshing this instance's
    /// watched symbols without hearing from it; renewed every third of it. Bounds how long a
    /// crashed instance leaves refresh load behind (a clean shutdown withdraws at once).
    #[arg(long, env = "INTEREST_TTL", default_value = "45s", value_parser = parse_positive_duration)]
    pub interest_ttl: Duration,

    /// On SIGTERM/Ctrl-C: how long in-flight requests may still finish before exit.
    #[arg(long, env = "SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// Whether `run_until_stopped` listens for SIGTERM/Ctrl-C. Off in [`Settings::for_tests`]
    /// so in-process test servers leave the test runner's signal handling alone.
    #[arg(skip = true)]
    pub handle_signals: bool,
}

impl Settings {
    /// Complete settings for an in-process test server: random port on 127.0.0.1, a fixed
    /// test signing key, a 2 s RPC timeout, and the given database and quote transport.
    /// Adjust fields afterwards as needed.
    pub fn for_tests(database_url: &str, transport: TestTransport) -> Self {
        let mut settings = Self {
            api_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            internal_addr: OptionalAddr(None),
            http_server: HttpServerSettings::default(),
            database_url: SecretString::from(database_url.to_owned()),
            database_max_connections: 5,
            jwt_secret: Some(SecretString::from(
                "test-only-secret-that-is-long-enough-0123456789".to_owned(),
            )),
            jwt_ttl: Duration::from_secs(3600),
            jwt_issuer: "stock-quotes".into(),
            jwt_audience: "stock-quotes-api".into(),
            allow_insecure_dev_secret: false,
            quote_transport: TransportKind::Amqp,
            amqp_url: SecretString::from("amqp://guest:guest@127.0.0.1:5672/%2f".to_owned()),
            quote_queue: shared::DEFAULT_QUOTE_QUEUE.into(),
            quote_service_url: "http://127.0.0.1:8001".into(),
            rpc_timeout: Duration::from_secs(2),
            quote_reuse_window: Duration::from_millis(500),
            rpc_batching: true,
            hash_concurrency: None,
            user_cache_ttl: Duration::from_secs(2),
            login_max_failures: 5,
            login_max_failures_per_ip: 20,
            login_lockout: Duration::from_secs(300),
            cookie_secure: false,
            shutdown_grace: Duration::from_secs(5),
            stream_max_per_user: 5,
            stream_max_symbols: 20,
            stream_heartbeat: Duration::from_secs(15),
            stream_max_lifetime: Duration::from_secs(3600),
            watch_refresh: Duration::from_millis(300),
            interest_ttl: Duration::from_secs(3),
            handle_signals: false,
        };
        match transport {
            TestTransport::Amqp { url, queue } => {
                settings.quote_transport = TransportKind::Amqp;
                settings.amqp_url = SecretString::from(url);
                settings.quote_queue = queue;
            }
            TestTransport::Http { base_url } => {
                settings.quote_transport = TransportKind::Http;
                settings.quote_service_url = base_url;
            }
        }
        settings
    }

    /// Where the operators' endpoints are served apart from the API, if anywhere.
    pub fn internal_addr(&self) -> Option<SocketAddr> {
        self.internal_addr.0
    }

    /// Argon2 concurrency actually used.
    pub fn effective_hash_concurrency(&self) -> usize {
        self.hash_concurrency
            .map(|n| n as usize)
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(2)
            })
    }
}

/// Which quote service a test server talks to.
#[derive(Debug, Clone)]
pub enum TestTransport {
    Amqp { url: String, queue: String },
    Http { base_url: String },
}

fn parse_secret(raw: &str) -> Result<SecretString, String> {
    Ok(SecretString::from(raw.to_owned()))
}

/// A listen address that may be absent: empty means none, so `INTERNAL_ADDR=` in a `.env`
/// reads as unset rather than failing to parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionalAddr(pub Option<SocketAddr>);

fn parse_optional_addr(raw: &str) -> Result<OptionalAddr, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(OptionalAddr(None));
    }
    raw.parse()
        .map(|addr| OptionalAddr(Some(addr)))
        .map_err(|e| format!("{raw:?} is not an address like 127.0.0.1:9000: {e}"))
}

/// Upper bound on [`Settings::jwt_ttl`]: a stolen token is good for at most this long, and
/// logged-out tokens are remembered (one row each) for at most this long.
pub const MAX_JWT_TTL: Duration = Duration::from_secs(24 * 3600);

fn parse_jwt_ttl(raw: &str) -> Result<Duration, String> {
    let d = parse_positive_duration(raw)?;
    if d > MAX_JWT_TTL {
        return Err("at most 24h".into());
    }
    Ok(d)
}

/// Upper bound on [`Settings::user_cache_ttl`]: the documented promise of how long a deleted
/// user's token can outlive the deletion.
pub const MAX_USER_CACHE_TTL: Duration = Duration::from_secs(2);

fn parse_user_cache_ttl(raw: &str) -> Result<Duration, String> {
    let d = parse_duration(raw)?;
    if d > MAX_USER_CACHE_TTL {
        return Err(format!("at most {MAX_USER_CACHE_TTL:?}"));
    }
    Ok(d)
}
