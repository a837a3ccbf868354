//! Every knob of the quote worker, read from flags or the environment. `quote_service --help`
//! is the reference: each field's doc comment is its help text.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use secrecy::SecretString;
use shared::config::{parse_duration, parse_positive_duration};
use shared::http_server::HttpServerSettings;

/// Which transport the worker takes requests from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    /// Consume RPC requests from RabbitMQ (and serve HTTP too).
    Amqp,
    /// Serve HTTP only; RabbitMQ is never contacted.
    Http,
}

/// The internal quote worker: answers quote requests over RabbitMQ RPC and HTTP from the stooq
/// CSV feed, with caching, coalescing and batching.
///
/// Logging is set by RUST_LOG (an EnvFilter directive, default `info`) and LOG_FORMAT
/// (`json` for one JSON object per line, anything else for human-readable lines).
#[derive(Debug, Clone, Parser)]
#[command(name = "quote_service", version)]
pub struct Settings {
    /// Where requests come from: `amqp` consumes from RabbitMQ (readiness then means
    /// "consuming"); `http` serves only the HTTP fallback and never touches RabbitMQ.
    #[arg(long, env = "QUOTE_TRANSPORT", value_enum, default_value = "amqp")]
    pub transport: Transport,

    /// RabbitMQ URL. Connection loss is survived: the worker reconnects with backoff.
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        hide_env_values = true
    )]
    pub amqp_url: SecretString,

    /// Durable queue the RPC requests arrive on (shared with api_service).
    #[arg(long, env = "QUOTE_QUEUE", default_value = shared::DEFAULT_QUOTE_QUEUE)]
    pub quote_queue: String,

    /// Address of the HTTP server (quote fallback, /healthz, /readyz, /metrics). Port 0 picks
    /// a free port.
    #[arg(long, env = "QUOTE_HTTP_ADDR", default_value = "0.0.0.0:8001")]
    pub http_addr: SocketAddr,

    /// Time limits and the connection cap of the HTTP server.
    #[command(flatten)]
    pub http_server: HttpServerSettings,

    /// Base URL of the stooq feed; the worker requests `{STOOQ_URL}/q/l/?s=...`.
    #[arg(long, env = "STOOQ_URL", default_value = "https://stooq.com")]
    pub stooq_url: String,

    /// stooq API key, sent as `apikey=`. Never logged.
    #[arg(long, env = "STOOQ_API_KEY", hide_env_values = true)]
    pub stooq_api_key: Option<SecretString>,

    /// Limit for establishing a TCP/TLS connection to stooq.
    #[arg(long, env = "STOOQ_CONNECT_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub stooq_connect_timeout: Duration,

    /// Limit for one whole stooq attempt (connect, send, read the body).
    #[arg(long, env = "STOOQ_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub stooq_timeout: Duration,

    /// Retries after a 5xx, a timeout or a dropped connection (never after a refusal such as
    /// the daily limit), with exponential backoff and jitter, never past the caller's deadline.
    #[arg(long, env = "STOOQ_MAX_RETRIES", default_value_t = 2)]
    pub stooq_max_retries: u32,

    /// Circuit breaker: after this many consecutive failed stooq requests (5xx, timeouts,
    /// dropped connections, refusals, non-data pages) stop calling stooq for
    /// STOOQ_BREAKER_COOLDOWN and fail at once with the last reason, then let one trial
    /// request decide. Spares a failing or rate-limiting feed (stooq bans addresses that
    /// hammer it). `0` disables the breaker.
    #[arg(long, env = "STOOQ_BREAKER_THRESHOLD", default_value_t = 5)]
    pub stooq_breaker_threshold: u32,

    /// How long the circuit stays open (stooq not called at all) before a trial request.
    #[arg(long, env = "STOOQ_BREAKER_COOLDOWN", default_value = "10s", value_parser = parse_duration)]
    pub stooq_breaker_cooldown: Duration,

    /// How long a fetched quote is served from memory. `0` disables the cache (requests in
    /// flight are still shared).
    #[arg(long, env = "CACHE_TTL", default_value = "10s", value_parser = parse_duration)]
    pub cache_ttl: Duration,

    /// How long an unknown-symbol answer is remembered (shorter, so a newly listed symbol
    /// appears soon). `0` disables it. Failures are never cached.
    #[arg(long, env = "NOT_FOUND_CACHE_TTL", default_value = "3s", value_parser = parse_duration)]
    pub not_found_cache_ttl: Duration,

    /// Most symbols kept in the cache; when full, expired entries go first, then arbitrary
    /// cached ones (down to 90%). Requests in flight are never evicted.
    #[arg(long, env = "CACHE_MAX_ENTRIES", default_value_t = 100_000)]
    pub cache_max_entries: usize,

    /// Most symbols fetched in one upstream request (`s=a+b+c`).
    #[arg(long, env = "BATCH_SIZE", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=500))]
    pub batch_size: u32,

    /// How long the batcher waits for more symbols after the first one before it fetches.
    /// Keeps a lone request fast while letting a burst share one upstream call.
    #[arg(long, env = "BATCH_WINDOW", default_value = "2ms", value_parser = parse_duration)]
    pub batch_window: Duration,

    /// Most upstream requests in flight at once, so a burst cannot hammer stooq.
    #[arg(long, env = "UPSTREAM_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub upstream_concurrency: u32,

    /// RPC messages handled at once (the AMQP prefetch count).
    #[arg(long, env = "WORKER_CONCURRENCY", default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    pub worker_concurrency: u16,

    /// Deadline for HTTP quote requests that carry no `x-deadline-ms` header (every HTTP
    /// request is still cut off at HTTP_REQUEST_TIMEOUT).
    #[arg(long, env = "REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// On SIGTERM/Ctrl-C: stop taking requests, then give in-flight ones this long to finish.
    #[arg(long, env = "SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// Live quotes (QUOTE_TRANSPORT=amqp): how often the symbols that API instances' stream
    /// subscribers watch are fetched fresh (in upstream batches of BATCH_SIZE) and each
    /// changed quote published. However many workers run, one of them refreshes.
    #[arg(long, env = "WATCH_REFRESH", default_value = "15s", value_parser = parse_positive_duration)]
    pub watch_refresh: Duration,

    /// Most symbols refreshed per WATCH_REFRESH (the watch list's bound; the excess is not
    /// refreshed, with a warning).
    #[arg(long, env = "WATCH_MAX_SYMBOLS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub watch_max_symbols: u32,
}

impl Settings {
    /// Settings for a test against a fake feed at `stooq_url`: HTTP on a free loopback port,
    /// RabbitMQ from `AMQP_URL` (default local), and a queue name no other test shares.
    pub fn for_tests(stooq_url: &str) -> Self {
        let amqp_url = std::env::var("AMQP_URL")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
        Self {
            transport: Transport::Amqp,
            amqp_url: amqp_url.into(),
            quote_queue: format!("quotes.rpc.test.{}", uuid::Uuid::new_v4().simple()),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            http_server: HttpServerSettings::default(),
            stooq_url: stooq_url.to_owned(),
            stooq_api_key: None,
            stooq_connect_timeout: Duration::from_secs(1),
            stooq_timeout: Duration::from_secs(2),
            stooq_max_retries: 2,
            stooq_breaker_threshold: 5,
            stooq_breaker_cooldown: Duration::from_secs(10),
            cache_ttl: Duration::from_secs(10),
            not_found_cache_ttl: Duration::from_secs(3),
            cache_max_entries: 10_000,
            batch_size: 50,
            batch_window: Duration::from_millis(2),
            upstream_concurrency: 16,
            worker_concurrency: 64,
            request_timeout: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(3),
            watch_refresh: Duration::from_millis(300),
            watch_max_symbols: 10_000,
        }
    }

    /// The same, HTTP transport only (no RabbitMQ needed).
    pub fn for_http_tests(stooq_url: &str) -> Self {
        Self {
            transport: Transport::Http,
            ..Self::for_tests(stooq_url)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Settings::command().debug_assert();
    }

    #[test]
    fn defaults_match_the_documented_values() {
        let s = Settings::try_parse_from(["quote_service"]).unwrap();

        assert_eq!(s.transport, Transport::Amqp);
        assert_eq!(s.quote_queue, "quotes.rpc");
        assert_eq!(s.http_addr.port(), 8001);
        assert_eq!(s.stooq_url, "https://stooq.com");
        assert_eq!(s.stooq_connect_timeout, Duration::from_secs(2));
        assert_eq!(s.stooq_timeout, Duration::from_secs(5));
        assert_eq!(s.stooq_max_retries, 2);
        assert_eq!(s.stooq_breaker_threshold, 5);
        assert_eq!(s.stooq_breaker_cooldown, Duration::from_secs(10));
        assert_eq!(s.cache_ttl, Duration::from_secs(10));
        assert_eq!(s.not_found_cache_ttl, Duration::from_secs(3));
        assert_eq!(s.batch_size, 50);
        assert_eq!(s.batch_window, Duration::from_millis(2));
        assert_eq!(s.worker_concurrency, 64);
        assert_eq!(s.shutdown_grace, Duration::from_secs(10));
        assert_eq!(s.watch_refresh, Duration::from_secs(15));
        assert_eq!(s.watch_max_symbols, 10_000);
        assert_eq!(s.http_server, HttpServerSettings::default());
    }

    #[test]
    fn durations_use_the_shared_parser() {
        let s = Settings::try_parse_from([
            "quote_service",
            "--cache-ttl",
            "0",
            "--batch-window",
            "5ms",
        ])
        .unwrap();

        assert_eq!(s.cache_ttl, Duration::ZERO);
        assert_eq!(s.batch_window, Duration::from_millis(5));
    }

    #[test]
    fn debug_output_hides_the_api_key() {
        let s = Settings::try_parse_from(["quote_service", "--stooq-api-key", "hunter2"]).unwrap();

        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
