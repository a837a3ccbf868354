//! The harness's command line. Defaults are the figures of issue #5 (64 connections, 30 s,
//! three runs); `--duration 3s --runs 1 --warmup 0` is a quick smoke run.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use shared::config::parse_duration;

use crate::scenarios::Scenario;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "bench",
    about = "End-to-end benchmark: starts the stack from release builds and drives it with wrk"
)]
pub struct Settings {
    /// Scenarios to run, comma-separated (default: all). The baselines a stock scenario is
    /// reported as a ratio to run first with it: echo for stock-hot* and stock-rpc,
    /// http-baseline for stock-hot*.
    #[arg(long, env = "BENCH_SCENARIOS", value_delimiter = ',', value_enum)]
    pub scenarios: Vec<Scenario>,

    /// Length of each measured run.
    #[arg(long, env = "BENCH_DURATION", default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Measured runs per scenario; medians are reported.
    #[arg(long, env = "BENCH_RUNS", default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..))]
    pub runs: u16,

    /// Unmeasured load before the runs (fills caches, opens connections); 0 skips it.
    #[arg(long, env = "BENCH_WARMUP", default_value = "5s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// Concurrent connections (and calls in flight for the echo).
    #[arg(long, env = "BENCH_CONNECTIONS", default_value_t = 64)]
    pub connections: usize,

    /// Concurrent connections of the login scenario.
    #[arg(long, env = "BENCH_LOGIN_CONNECTIONS", default_value_t = 200)]
    pub login_connections: usize,

    /// Connections of the paced history and stats runs (their `-paced` rows).
    #[arg(long, env = "BENCH_LATENCY_CONNECTIONS", default_value_t = 16)]
    pub latency_connections: usize,

    /// Load the paced history and stats runs offer, as a fraction of the throughput their
    /// saturated run reached; 0 skips the paced runs.
    #[arg(long, env = "BENCH_PACED_LOAD", default_value_t = 0.5)]
    pub paced_load: f64,

    /// Extra KEY=VALUE environment for api_service (repeatable), e.g. allocator experiments.
    #[arg(long = "api-env", value_parser = parse_key_value)]
    pub api_env: Vec<(String, String)>,

    /// Extra KEY=VALUE environment for quote_service (repeatable).
    #[arg(long = "quote-env", value_parser = parse_key_value)]
    pub quote_env: Vec<(String, String)>,

    /// wrk threads (the machine has 2 cores; more only adds contention).
    #[arg(long, env = "BENCH_WRK_THREADS", default_value_t = 2)]
    pub wrk_threads: usize,

    /// Users whose tokens the stock and login scenarios rotate through.
    #[arg(long, env = "BENCH_USERS", default_value_t = 16)]
    pub users: usize,

    /// Distinct symbols of stock-hot.
    #[arg(long, env = "BENCH_HOT_SYMBOLS", default_value_t = 20)]
    pub hot_symbols: usize,

    /// Distinct symbols of stock-rpc (every request crosses the broker).
    #[arg(long, env = "BENCH_RPC_SYMBOLS", default_value_t = 200)]
    pub rpc_symbols: usize,

    /// Distinct symbols of stock-cold.
    #[arg(long, env = "BENCH_COLD_SYMBOLS", default_value_t = 2000)]
    pub cold_symbols: usize,

    /// History rows seeded for the history and stats scenarios.
    #[arg(long, env = "BENCH_HISTORY_ROWS", default_value_t = 1_000_000)]
    pub history_rows: usize,

    /// Distinct symbols among the seeded rows (stats).
    #[arg(long, env = "BENCH_STATS_SYMBOLS", default_value_t = 5000)]
    pub stats_symbols: usize,

    /// Concurrent SSE subscribers of the stream scenario.
    #[arg(long, env = "BENCH_STREAM_SUBSCRIBERS", default_value_t = 1000)]
    pub stream_subscribers: usize,

    /// Distinct symbols the stream scenario's subscribers watch between them.
    #[arg(long, env = "BENCH_STREAM_SYMBOLS", default_value_t = 100)]
    pub stream_symbols: usize,

    /// Symbols per stream (consecutive windows over the stream symbols).
    #[arg(long, env = "BENCH_STREAM_SYMBOLS_EACH", default_value_t = 10)]
    pub stream_symbols_each: usize,

    /// quote_service `WATCH_REFRESH` in the stream scenario (the default 15 s would give few
    /// changes per run).
    #[arg(long, env = "BENCH_STREAM_REFRESH", default_value = "1s", value_parser = parse_duration)]
    pub stream_refresh: Duration,

    /// Directory holding the release binaries (fake_stooq, quote_service, api_service,
    /// rpc_echo, http_baseline).
    #[arg(long, env = "BENCH_BIN_DIR", default_value = "target/release")]
    pub bin_dir: PathBuf,

    /// A second directory of release binaries to compare with `--bin-dir`'s: every run of
    /// every scenario is made once with each build, back to back, the order swapped from one
    /// run to the next, and the report gives each row's candidate / baseline ratio within
    /// each run, median over the runs (see `compare.rs`).
    #[arg(long, env = "BENCH_COMPARE_WITH")]
    pub compare_with: Option<PathBuf>,

    /// PostgreSQL server (no database) on which `bench_<uuid>` databases are created.
    #[arg(
        long,
        env = "BENCH_PG_BASE",
        default_value = "postgres://postgres@127.0.0.1:5432"
    )]
    pub pg_base: String,

    /// RabbitMQ used by the services and the echo baseline.
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        hide_env_values = true
    )]
    pub amqp_url: String,

    /// Where the JSON summary is written.
    #[arg(
        long,
        env = "BENCH_OUTPUT",
        default_value = "target/bench/summary.json"
    )]
    pub output: PathBuf,

    /// Where service logs and generated wrk scripts go (one sub-directory per scenario).
    #[arg(long, env = "BENCH_WORK_DIR", default_value = "target/bench/work")]
    pub work_dir: PathBuf,
}

fn parse_key_value(raw: &str) -> Result<(String, String), String> {
    match raw.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{raw:?} is not KEY=VALUE")),
    }
}
