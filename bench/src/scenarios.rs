//! The scenarios of issue #5 and how each is run and checked.
//!
//! Every scenario gets a fresh stack (so `VmHWM` is that scenario's peak), an optional
//! warm-up, then `runs` measured runs whose medians are reported. Every `/stock` run drains
//! (see [`crate::wrk`]) and checks that the history rows it added equal its 200s exactly.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chrono::{TimeZone, Utc};
use clap::ValueEnum;
use serde::Serialize;

use crate::cpu;
use crate::db::Backend;
use crate::echo::EchoResult;
use crate::memory::{RssFigures, RssSampler, ServiceMemory};
use crate::stack::{BenchUser, Binaries, Service, Stack, StackOptions, Transport};
use crate::stats::median;
use crate::wrk::{self, Load, Plan, WrkResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Bare RPC echo over RabbitMQ: the baseline.
    Echo,
    /// The echo with mandatory publishes on a confirm-mode channel, as api_service publishes
    /// (informative: what the confirms cost).
    EchoConfirm,
    /// A minimal axum server answering one fixed JSON body: the bare-HTTP baseline.
    HttpBaseline,
    /// Hot symbols, AMQP transport, PostgreSQL.
    StockHot,
    /// stock-hot on SQLite.
    StockHotSqlite,
    /// stock-hot over the HTTP transport (PostgreSQL).
    StockHotHttp,
    /// Every request crosses the broker: 200 symbols, the API's reuse window off.
    StockRpc,
    /// 2,000 distinct symbols with the quote cache off: upstream requests per quote.
    StockCold,
    /// `GET /api/v1/quotes` with 20 symbols per request (AMQP, PostgreSQL), quote cache warm:
    /// one RPC and one 20-row transaction per request.
    QuotesBatch,
    /// 1,000 SSE subscribers over 100 symbols with moving prices: publish-to-client latency,
    /// upstream calls per refresh, memory.
    Stream,
    /// First page and a deep page of a 1,000,000-row history.
    History,
    /// Top-5 stats over 1,000,000 rows and 5,000 symbols.
    Stats,
    /// Concurrent logins (argon2): logins/s and the API's peak RSS.
    Login,
}

impl Scenario {
    pub fn all() -> Vec<Scenario> {
        Scenario::value_variants().to_vec()
    }

    pub fn name(self) -> String {
        self.to_possible_value()
            .map(|v| v.get_name().to_owned())
            .unwrap_or_default()
    }
}

/// Everything a scenario needs to know about the run.
#[derive(Debug, Clone)]
pub struct Config {
    pub bins: Binaries,
    pub work_dir: PathBuf,
    pub pg_base: String,
    pub amqp_url: String,
    pub duration: Duration,
    pub warmup: Duration,
    pub runs: usize,
    pub connections: usize,
    pub wrk_threads: usize,
    pub users: usize,
    pub hot_symbols: usize,
    pub rpc_symbols: usize,
    pub cold_symbols: usize,
    pub history_rows: usize,
    pub stats_symbols: usize,
    pub login_connections: usize,
    /// Connections of the paced latency runs of history and stats (see `read_runs`).
    pub latency_connections: usize,
    /// Fraction of the saturated throughput the paced runs offer.
    pub paced_load: f64,
    /// The stream scenario: subscribers, symbols among them, symbols per stream, and the
    /// quote worker's WATCH_REFRESH.
    pub stream_subscribers: usize,
    pub stream_symbols: usize,
    pub stream_symbols_each: usize,
    pub stream_refresh: Duration,
    pub api_env: Vec<(String, String)>,
    pub quote_env: Vec<(String, String)>,
}

/// One measured run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunFigures {
    pub requests: u64,
    pub duration_s: f64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub errors: u64,
    /// Responses with status 200 (counted exactly by the wrk script).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ok: Option<u64>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub statuses: BTreeMap<String, u64>,
    /// Requests sent but never answered: still in flight when wrk stopped (or lost with a
    /// broken connection). Zero for a run that drained completely.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cut_off_in_flight: Option<u64>,
    /// History rows that appeared during the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows_added: Option<i64>,
    /// Upstream (fake stooq) HTTP requests during the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_requests: Option<u64>,
    /// Symbols those upstream requests asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_symbols: Option<u64>,
    /// Quote RPCs api_service sent during the run (`quote_rpc_flights_total`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpcs: Option<u64>,
    /// `/stock` calls answered without an RPC of their own: joined one in flight or reused one
    /// landed within `QUOTE_REUSE_WINDOW` (`quote_rpc_coalesced_total`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpc_coalesced: Option<u64>,
    /// RPC request messages quote_service handled (`quote_rpc_messages_total`, all
    /// outcomes); each is answered with one reply message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_rpc_messages: Option<u64>,
    /// stream: watch-list refreshes quote_service ran during the run
    /// (`quote_watch_refreshes_total`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refreshes: Option<u64>,
    /// stream: changed quotes quote_service published (`quote_live_quotes_published_total`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live_published: Option<u64>,
    /// stream: distinct changes published in the run's window that subscribers received.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes_seen: Option<u64>,
    /// stream: deliveries those changes called for (each times its symbol's subscribers);
    /// `requests` is the deliveries received.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliveries_expected: Option<u64>,
    /// The machine's 1-minute load average when the run ended (the stack alone kept it at
    /// 2.5-5.5 on 2 cores; compare runs with it to spot one that shared the CPU).
    pub load_avg_1m: f64,
    /// Microseconds of CPU per answered request, per process (`cpu.rs`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub cpu_us_per_request: BTreeMap<String, f64>,
}

impl RunFigures {
    fn from_wrk(r: &WrkResult) -> Self {
        Self {
            requests: r.requests,
            duration_s: r.duration_s(),
            rps: r.rps(),
            p50_ms: r.p50_us / 1000.0,
            p99_ms: r.p99_us / 1000.0,
            max_ms: r.max_us / 1000.0,
            errors: r.errors(),
            ok: Some(r.ok),
            statuses: r.statuses.clone(),
            cut_off_in_flight: Some(r.abandoned()),
            load_avg_1m: load_avg_1m(),
            ..Self::default()
        }
    }

    fn from_echo(r: &EchoResult) -> Self {
        Self {
            requests: r.requests,
            duration_s: r.duration_s,
            rps: r.rps,
            p50_ms: r.p50_ms,
            p99_ms: r.p99_ms,
            max_ms: r.max_ms,
            errors: r.errors,
            load_avg_1m: load_avg_1m(),
            ..Self::default()
        }
    }
}

fn load_avg_1m() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

/// Per-metric medians over the runs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Medians {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub errors: f64,
}

impl Medians {
    fn of(runs: &[RunFigures]) -> Self {
        let m = |f: fn(&RunFigures) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
        Self {
            rps: m(|r| r.rps),
            p50_ms: m(|r| r.p50_ms),
            p99_ms: m(|r| r.p99_ms),
            max_ms: m(|r| r.max_ms),
            errors: m(|r| r.errors as f64),
        }
    }
}

/// `cpu_us_per_request.<process>`: the median over the runs of each process's CPU per
/// request, for the runs that measured it.
fn cpu_medians(runs: &[RunFigures]) -> BTreeMap<String, serde_json::Value> {
    let names: std::collections::BTreeSet<&String> = runs
        .iter()
        .flat_map(|r| r.cpu_us_per_request.keys())
        .collect();
    names
        .into_iter()
        .map(|name| {
            let values: Vec<f64> = runs
                .iter()
                .filter_map(|r| r.cpu_us_per_request.get(name).copied())
                .collect();
            (
                format!("cpu_us_per_request.{name}"),
                serde_json::json!(median(&values)),
            )
        })
        .collect()
}

/// A yes/no fact the run established (nothing lost, counters consistent, ...).
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

/// The outcome of one scenario (one table row).
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    pub name: String,
    pub description: String,
    pub connections: usize,
    pub median: Medians,
    /// stock-* only: median requests/s divided by the echo's at the same connection count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_to_echo: Option<f64>,
    /// stock-hot* only: median requests/s divided by the bare-HTTP baseline's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_to_http_baseline: Option<f64>,
    pub runs: Vec<RunFigures>,
    pub memory: BTreeMap<String, ServiceMemory>,
    pub checks: Vec<Check>,
    /// Scenario-specific figures (upstream requests per quote, seeding time, ...).
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl ScenarioReport {
    pub(crate) fn new(
        name: &str,
        description: &str,
        connections: usize,
        runs: Vec<RunFigures>,
    ) -> Self {
        Self {
            name: name.to_owned(),
            description: description.to_owned(),
            connections,
            median: Medians::of(&runs),
            ratio_to_echo: None,
            ratio_to_http_baseline: None,
            extra: cpu_medians(&runs),
            runs,
            memory: BTreeMap::new(),
            checks: Vec::new(),
        }
    }

    /// Records the services' memory and checks that it held steady over the runs.
    fn set_memory(&mut self, memory: Vec<(String, ServiceMemory)>) {
        self.memory = memory.into_iter().collect();
        self.checks.push(memory_steady(&self.memory));
    }
}

/// Runs one scenario; returns one or more table rows (history has two).
pub async fn run(scenario: Scenario, cfg: &Config) -> Result<Vec<ScenarioReport>> {
    let work_dir = cfg.work_dir.join(scenario.name());
    std::fs::create_dir_all(&work_dir)?;
    match scenario {
        Scenario::Echo => echo(cfg, &work_dir, false).await,
        Scenario::EchoConfirm => echo(cfg, &work_dir, true).await,
        Scenario::HttpBaseline => http_baseline(cfg, &work_dir).await.map(|r| vec![r]),
        Scenario::StockHot => {
            stock_hot(cfg, &work_dir, Backend::Postgres, Transport::Amqp, scenario).await
        }
        Scenario::StockHotSqlite => {
            stock_hot(cfg, &work_dir, Backend::Sqlite, Transport::Amqp, scenario).await
        }
        Scenario::StockHotHttp => {
            stock_hot(cfg, &work_dir, Backend::Postgres, Transport::Http, scenario).await
        }
        Scenario::StockRpc => stock_rpc(cfg, &work_dir).await.map(|r| vec![r]),
        Scenario::StockCold => stock_cold(cfg, &work_dir).await.map(|r| vec![r]),
        Scenario::QuotesBatch => quotes_batch(cfg, &work_dir).await.map(|r| vec![r]),
        Scenario::Stream => stream(cfg, &work_dir).await.map(|r| vec![r]),
        Scenario::History => history(cfg, &work_dir).await,
        Scenario::Stats => stats(cfg, &work_dir).await,
        Scenario::Login => login(cfg, &work_dir).await.map(|r| vec![r]),
    }
}

/// The echo at `--connections` calls in flight; the bare echo also at one call in flight
/// (row `echo-1conn`, the latency floor of one broker round trip).
async fn echo(
    cfg: &Config,
    work_dir: &std::path::Path,
    confirm: bool,
) -> Result<Vec<ScenarioReport>> {
    let name = if confirm { "echo-confirm" } else { "echo" };
    let bin = cfg.bins.path("rpc_echo")?;
    let queue = format!("bench.echo.{}", uuid::Uuid::new_v4().simple());
    let amqp = ("AMQP_URL".to_owned(), cfg.amqp_url.clone());
    let mut server = Service::spawn(
        "rpc_echo",
        &bin,
        &["serve", "--queue", &queue, "--prefetch", "64"],
        std::slice::from_ref(&amqp),
        work_dir,
    )?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let load = |inflight: usize, duration: Duration| {
        let bin = bin.clone();
        let queue = queue.clone();
        let amqp_url = cfg.amqp_url.clone();
        let inflight = inflight.to_string();
        async move {
            let out = tokio::process::Command::new(&bin)
                .args([
                    "load",
                    "--queue",
                    &queue,
                    "--inflight",
                    &inflight,
                    "--duration",
                ])
                .arg(format!("{}ms", duration.as_millis()))
                .args(confirm.then_some("--confirm"))
                .env("AMQP_URL", amqp_url)
                .kill_on_drop(true)
                .output()
                .await?;
            if !out.status.success() {
                bail!(
                    "rpc_echo load failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let stdout = String::from_utf8_lossy(&out.stdout);
            let line = stdout.lines().last().unwrap_or_default();
            serde_json::from_str::<EchoResult>(line)
                .with_context(|| format!("parsing rpc_echo output {line:?}"))
        }
    };
    let mut rows = vec![(name.to_owned(), cfg.connections)];
    if !confirm {
        rows.push((format!("{name}-1conn"), 1));
    }
    let measured = async {
        let mut reports = Vec::new();
        for (row, inflight) in rows {
            if !cfg.warmup.is_zero() {
                load(inflight, cfg.warmup).await?;
            }
            let mut runs = Vec::new();
            for n in 1..=cfg.runs {
                server.ensure_running()?;
                let r = load(inflight, cfg.duration).await?;
                progress(&row, n, cfg.runs, &format!("{:.0} calls/s", r.rps));
                runs.push(RunFigures::from_echo(&r));
            }
            let description = if confirm {
                "RPC echo, direct reply-to, mandatory publishes with publisher confirms"
            } else {
                "bare lapin RPC echo, direct reply-to, one message each way per call"
            };
            let mut report = ScenarioReport::new(
                &row,
                &format!("{description}; {inflight} in flight"),
                inflight,
                runs,
            );
            report.checks.push(zero_errors(&report.runs));
            reports.push(report);
        }
        Ok::<_, anyhow::Error>(reports)
    }
    .await;
    server.stop().await;
    if let Err(err) = crate::echo::delete_queue(&cfg.amqp_url, &queue).await {
        eprintln!("bench: could not delete queue {queue}: {err:#}");
    }
    measured
}

fn zero_errors(runs: &[RunFigures]) -> Check {
    Check {
        name: "zero errors".into(),
        passed: runs.iter().all(|r| r.errors == 0),
        detail: format!("{} errors", runs.iter().map(|r| r.errors).sum::<u64>()),
    }
}

/// A JWT-sized stand-in for the `Authorization` header the baseline is sent, so its requests
/// are as long as stock-hot's (the baseline ignores it).
const BASELINE_TOKEN: &str = "eyJhbGciOiJIUzI1NiJ9.baseline-ignores-this-header-it-only-keeps-the-request-the-size-of-a-stock-hot-one.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

/// The bare-HTTP baseline: `http_baseline` (axum, one fixed `/stock`-shaped JSON body) under
/// the same wrk load and request paths as stock-hot. What HTTP alone costs on this machine.
async fn http_baseline(cfg: &Config, work_dir: &std::path::Path) -> Result<ScenarioReport> {
    let name = "http-baseline";
    let bin = cfg.bins.path("http_baseline")?;
    let mut server = Service::spawn(
        "http_baseline",
        &bin,
        &["--addr", "127.0.0.1:0"],
        &[],
        work_dir,
    )?;
    let measured = async {
        let url = format!("http://{}", server.announced_addr().await?);
        let plan = Plan {
            method: "GET",
            targets: stock_targets(&hot_symbols(cfg.hot_symbols)),
            tokens: vec![BASELINE_TOKEN.to_owned()],
            bodies: vec![],
            pause_ms: None,
        };
        let timeout = Duration::from_secs(10);
        if !cfg.warmup.is_zero() {
            wrk::run(
                &url,
                &plan,
                load(cfg, cfg.connections, cfg.warmup, timeout),
                work_dir,
            )
            .await?;
        }
        let mut runs = Vec::new();
        for n in 1..=cfg.runs {
            server.ensure_running()?;
            // Drained like the /stock runs it is compared with, so both pay the same wrk
            // script (`delay()` before every request) and count throughput the same way.
            let result = wrk::run(
                &url,
                &plan,
                Load {
                    drain: Some(DRAIN),
                    ..load(cfg, cfg.connections, cfg.duration, timeout)
                },
                work_dir,
            )
            .await?;
            let fig = RunFigures::from_wrk(&result);
            progress(
                name,
                n,
                cfg.runs,
                &format!("{:.0} req/s, p99 {:.2} ms", fig.rps, fig.p99_ms),
            );
            runs.push(fig);
        }
        Ok::<_, anyhow::Error>(runs)
    }
    .await;
    server.stop().await;
    let mut report = ScenarioReport::new(
        name,
        "bare axum server answering one fixed /stock-shaped JSON body (no auth, no database, no RPC), same paths as stock-hot",
        cfg.connections,
        measured?,
    );
    report.checks.push(zero_errors(&report.runs));
    Ok(report)
}

/// Twenty real-looking tickers: the hot set.
const HOT_SYMBOLS: [&str; 20] = [
    "aapl.us", "msft.us", "googl.us", "amzn.us", "nvda.us", "meta.us", "tsla.us", "brk-b.us",
    "jpm.us", "v.us", "vod.uk", "sap.de", "7974.jp", "700.hk", "cdr", "pkn", "^spx", "eurusd",
    "cl.f", "ko.us",
];

fn stock_targets(symbols: &[String]) -> Vec<String> {
    symbols
        .iter()
        .map(|s| format!("/api/v1/stock?q={}", s.replace('^', "%5E")))
        .collect()
}

fn tokens(users: &[BenchUser]) -> Vec<String> {
    users.iter().map(|u| u.token.clone()).collect()
}

fn stack_options(cfg: &Config, backend: Backend, transport: Transport) -> StackOptions {
    StackOptions {
        backend,
        transport,
        cache_ttl: None,
        pg_base: cfg.pg_base.clone(),
        amqp_url: cfg.amqp_url.clone(),
        api_env: cfg.api_env.clone(),
        quote_env: cfg.quote_env.clone(),
        fake_env: Vec::new(),
    }
}

fn load(cfg: &Config, connections: usize, duration: Duration, timeout: Duration) -> Load {
    Load {
        threads: cfg.wrk_threads,
        connections,
        duration,
        timeout,
        drain: None,
    }
}

/// How long a measured `/stock` run drains after its window: far above any p99 seen, so
/// every request in flight finishes (one that does not shows as unanswered and fails the
/// exact row count).
const DRAIN: Duration = Duration::from_secs(2);

fn progress(name: &str, n: usize, of: usize, what: &str) {
    eprintln!("bench: {name} run {n}/{of}: {what}");
}

/// What the stock runs share: warm-up, then measured runs that each count history rows,
/// upstream requests and RPCs before and after.
async fn stock_runs(
    cfg: &Config,
    stack: &mut Stack,
    name: &str,
    plan: &Plan,
    work_dir: &std::path::Path,
) -> Result<StockOutcome> {
    stock_runs_at(cfg, stack, name, plan, cfg.connections, 1, work_dir).await
}

/// [`stock_runs`] over `connections` connections, where each 200 records `rows_per_ok` history
/// rows (1 for /stock, the symbols per request for /quotes). The measured runs drain (the
/// warm-up need not), so their rows can be checked against their 200s exactly.
async fn stock_runs_at(
    cfg: &Config,
    stack: &mut Stack,
    name: &str,
    plan: &Plan,
    connections: usize,
    rows_per_ok: i64,
    work_dir: &std::path::Path,
) -> Result<StockOutcome> {
    let timeout = Duration::from_secs(10);
    if !cfg.warmup.is_zero() {
        wrk::run(
            &stack.api_url,
            plan,
            load(cfg, connections, cfg.warmup, timeout),
            work_dir,
        )
        .await?;
    }
    let mut runs = Vec::new();
    let mut peaks = RssFigures::before_runs(&stack.pids());
    let mut checks = Vec::new();
    for n in 1..=cfg.runs {
        stack.ensure_running()?;
        let rows_before = stack.db.settled_history_rows().await?;
        let (hits_before, symbols_before) = stack.upstream_counters().await?;
        let rpc_before = stack.rpc_counters().await;
        let sampler = RssSampler::start(stack.pids(), Duration::from_millis(100));
        let cpu_before = cpu::Snapshot::take();
        let result = wrk::run(
            &stack.api_url,
            plan,
            Load {
                drain: Some(DRAIN),
                ..load(cfg, connections, cfg.duration, timeout)
            },
            work_dir,
        )
        .await?;
        let cpu_after = cpu::Snapshot::take();
        peaks.add_run(&sampler.finish().await);
        let rows_after = stack.db.settled_history_rows().await?;
        let (hits_after, symbols_after) = stack.upstream_counters().await?;
        let rpc_after = stack.rpc_counters().await;
        let mut fig = RunFigures::from_wrk(&result);
        fig.cpu_us_per_request = cpu_before.per_request(&cpu_after, result.requests);
        let added = rows_after - rows_before;
        fig.rows_added = Some(added);
        fig.upstream_requests = Some(hits_after.saturating_sub(hits_before));
        fig.upstream_symbols = Some(symbols_after.saturating_sub(symbols_before));
        if let (Some(before), Some(after)) = (rpc_before, rpc_after) {
            let grown = after.since(&before);
            fig.rpcs = Some(grown.api_flights);
            fig.rpc_coalesced = Some(grown.api_coalesced);
            fig.worker_rpc_messages = Some(grown.worker_messages);
        }
        checks.push(rows_check(n, &result, added, rows_per_ok));
        progress(
            name,
            n,
            cfg.runs,
            &format!(
                "{:.0} req/s, p99 {:.1} ms, {} errors, {} rows for {} x 200, {} unanswered",
                fig.rps,
                fig.p99_ms,
                fig.errors,
                added,
                result.ok,
                result.abandoned()
            ),
        );
        runs.push(fig);
    }
    let mut extra = BTreeMap::new();
    if let Some((flights, joined)) = stack.snapshot_metrics(work_dir, name).await {
        // Counters since start (warm-up included): how many /stock calls shared one RPC.
        extra.insert("api_rpc_flights".into(), serde_json::json!(flights));
        extra.insert("api_rpc_coalesced".into(), serde_json::json!(joined));
    }
    let rows = stack.db.history_rows().await?;
    let counters = stack.db.counter_total().await?;
    checks.push(Check {
        name: "counters match history".into(),
        passed: rows == counters,
        detail: format!("{rows} history rows, counters sum to {counters}"),
    });
    Ok(StockOutcome {
        runs,
        rss: peaks,
        checks,
        extra,
    })
}

struct StockOutcome {
    runs: Vec<RunFigures>,
    rss: RssFigures,
    checks: Vec<Check>,
    extra: BTreeMap<String, serde_json::Value>,
}

/// No service's memory grows from run to run (a leak shows as a staircase of run peaks; the
/// targets only look at the highest one).
fn memory_steady(memory: &BTreeMap<String, ServiceMemory>) -> Check {
    let mut passed = true;
    let mut details = Vec::new();
    for (service, m) in memory {
        if let (Some(first), Some(last)) = (m.run_peaks_mb.first(), m.run_peaks_mb.last())
            && m.run_peaks_mb.len() > 1
        {
            passed &= crate::memory::steady(*first, *last);
            details.push(format!("{service} {first:.1} -> {last:.1} MB"));
        }
    }
    Check {
        name: "memory steady from the first run to the last".into(),
        passed,
        detail: if details.is_empty() {
            "one run: nothing to compare".into()
        } else {
            format!("run peaks {}", details.join(", "))
        },
    }
}

/// Nothing lost, exactly: the run drained, so every request wrk sent was answered and the
/// server completed nothing wrk did not see; then the history rows added must equal the 200s,
/// not one more or fewer. A run that left requests unanswered (a drain too short, a broken
/// connection) cannot be counted exactly and fails too, saying so. A /quotes 200 records one
/// row per symbol (`rows_per_ok`; its plan asks only for symbols that exist).
fn rows_check(run: usize, result: &WrkResult, added: i64, rows_per_ok: i64) -> Check {
    let ok = result.ok as i64 * rows_per_ok;
    let unanswered = result.abandoned();
    let detail = if unanswered > 0 {
        format!(
            "{added} rows added, {ok} x 200, but {unanswered} of {} requests sent were never answered: not an exact count",
            result.sent
        )
    } else if added == ok {
        format!(
            "{added} rows added == {ok} x 200 ({} requests sent, all answered)",
            result.sent
        )
    } else if added < ok {
        format!("{added} rows added for {ok} x 200: {} lost", ok - added)
    } else {
        format!(
            "{added} rows added for {ok} x 200: {} rows without a 200",
            added - ok
        )
    };
    Check {
        name: if rows_per_ok == 1 {
            format!("run {run}: history rows == 200 responses")
        } else {
            format!("run {run}: history rows == {rows_per_ok} x 200 responses")
        },
        passed: unanswered == 0 && added == ok,
        detail,
    }
}

/// The hot set: the twenty real-looking tickers, then made-up ones past twenty.
fn hot_symbols(count: usize) -> Vec<String> {
    HOT_SYMBOLS
        .iter()
        .cycle()
        .take(count)
        .enumerate()
        .map(|(i, s)| {
            if i < HOT_SYMBOLS.len() {
                s.to_string()
            } else {
                format!("hot{i}.us")
            }
        })
        .collect()
}

/// One `/stock` table row from its runs: checks, memory, upstream and RPC ratios.
fn stock_report(
    name: &str,
    description: &str,
    connections: usize,
    outcome: StockOutcome,
    stack: &Stack,
) -> ScenarioReport {
    stock_report_of(name, description, connections, outcome, stack, 1)
}

/// [`stock_report`] for answers carrying `quotes_per_ok` quotes each.
fn stock_report_of(
    name: &str,
    description: &str,
    connections: usize,
    outcome: StockOutcome,
    stack: &Stack,
    quotes_per_ok: u64,
) -> ScenarioReport {
    let mut report = ScenarioReport::new(name, description, connections, outcome.runs);
    report.checks = outcome.checks;
    report.extra.extend(outcome.extra);
    report.set_memory(stack.memory(&outcome.rss));
    add_upstream_ratio(&mut report, quotes_per_ok);
    add_rpc_ratios(&mut report);
    report
}

/// stock-hot and its variants; stock-hot itself also at one connection (row
/// `stock-hot-1conn`: the tail at low load, on the same warm stack).
async fn stock_hot(
    cfg: &Config,
    work_dir: &std::path::Path,
    backend: Backend,
    transport: Transport,
    scenario: Scenario,
) -> Result<Vec<ScenarioReport>> {
    let name = scenario.name();
    let mut stack =
        Stack::start(&cfg.bins, stack_options(cfg, backend, transport), work_dir).await?;
    let outcome = async {
        let users = stack.create_users("hot_user_", cfg.users, false).await?;
        let symbols = hot_symbols(cfg.hot_symbols);
        let plan = Plan {
            method: "GET",
            targets: stock_targets(&symbols),
            tokens: tokens(&users),
            bodies: vec![],
            pause_ms: None,
        };
        let description = format!(
            "GET /stock, {} users x {} symbols, {:?} transport, {:?}, default settings",
            users.len(),
            symbols.len(),
            transport,
            backend
        );
        let outcome = stock_runs(cfg, &mut stack, &name, &plan, work_dir).await?;
        let mut reports = vec![stock_report(
            &name,
            &description,
            cfg.connections,
            outcome,
            &stack,
        )];
        if scenario == Scenario::StockHot {
            let row = format!("{name}-1conn");
            let outcome = stock_runs_at(cfg, &mut stack, &row, &plan, 1, 1, work_dir).await?;
            reports.push(stock_report(
                &row,
                &format!("{description}; one connection"),
                1,
                outcome,
                &stack,
            ));
        }
        Ok::<_, anyhow::Error>(reports)
    }
    .await;
    stack.stop().await;
    outcome
}

/// Every request crosses the broker: the API's reuse window is off (`QUOTE_REUSE_WINDOW=0`),
/// so a `/stock` call sends its own RPC unless an identical one is in flight at that moment;
/// the worker's cache stays on (default `CACHE_TTL`), so the RPCs are answered from memory
/// and what is measured is the broker round trip, not the upstream feed.
async fn stock_rpc(cfg: &Config, work_dir: &std::path::Path) -> Result<ScenarioReport> {
    let name = "stock-rpc";
    let mut options = stack_options(cfg, Backend::Postgres, Transport::Amqp);
    options
        .api_env
        .insert(0, ("QUOTE_REUSE_WINDOW".into(), "0".into()));
    let mut stack = Stack::start(&cfg.bins, options, work_dir).await?;
    let outcome = async {
        let users = stack.create_users("rpc_user_", cfg.users, false).await?;
        let symbols = hot_symbols(cfg.rpc_symbols);
        let plan = Plan {
            method: "GET",
            targets: stock_targets(&symbols),
            tokens: tokens(&users),
            bodies: vec![],
            pause_ms: None,
        };
        let outcome = stock_runs(cfg, &mut stack, name, &plan, work_dir).await?;
        Ok::<_, anyhow::Error>(stock_report(
            name,
            &format!(
                "GET /stock, {} users x {} symbols, AMQP, PostgreSQL; API reuse off (QUOTE_REUSE_WINDOW=0): \
                 an RPC per request unless an identical one is in flight; worker cache on (default CACHE_TTL)",
                users.len(),
                symbols.len()
            ),
            cfg.connections,
            outcome,
            &stack,
        ))
    }
    .await;
    stack.stop().await;
    outcome
}

/// `count / requests` for a run, when the count was read.
fn per_request(count: Option<u64>, requests: u64) -> Option<f64> {
    count.map(|c| c as f64 / requests.max(1) as f64)
}

/// Quote RPCs per `/stock` request, and broker messages per request: each RPC request
/// message quote_service handled, plus its one reply. Counted per run (the counters before
/// and after it), over every request the run answered (a drained run leaves none behind). The
/// medians over the runs; nothing for runs whose counters could not be read.
fn add_rpc_ratios(report: &mut ScenarioReport) {
    let median_of = |f: &dyn Fn(&RunFigures) -> Option<f64>| {
        let values: Vec<f64> = report.runs.iter().filter_map(f).collect();
        (!values.is_empty()).then(|| median(&values))
    };
    let rpcs = median_of(&|r| per_request(r.rpcs, r.requests));
    let without = median_of(&|r| per_request(r.rpc_coalesced, r.requests));
    let messages = median_of(&|r| per_request(r.worker_rpc_messages.map(|m| 2 * m), r.requests));
    for (key, value) in [
        ("rpcs_per_request", rpcs),
        ("answered_without_own_rpc_per_request", without),
        ("broker_messages_per_request", messages),
    ] {
        if let Some(v) = value {
            report.extra.insert(key.into(), serde_json::json!(v));
        }
    }
}

/// Upstream requests per quote served, and symbols per upstream request (batch fill).
fn add_upstream_ratio(report: &mut ScenarioReport, quotes_per_ok: u64) {
    let per_quote: Vec<f64> = report
        .runs
        .iter()
        .map(|r| {
            r.upstream_requests.unwrap_or(0) as f64
                / (r.ok.unwrap_or(0) * quotes_per_ok).max(1) as f64
        })
        .collect();
    // Batch fill only where there were upstream requests (none at all is not "0 symbols").
    let per_request: Vec<f64> = report
        .runs
        .iter()
        .filter_map(|r| {
            let requests = r.upstream_requests.filter(|n| *n > 0)?;
            Some(r.upstream_symbols.unwrap_or(0) as f64 / requests as f64)
        })
        .collect();
    report.extra.insert(
        "upstream_requests_per_quote".into(),
        serde_json::json!(median(&per_quote)),
    );
    if !per_request.is_empty() {
        report.extra.insert(
            "symbols_per_upstream_request".into(),
            serde_json::json!(median(&per_request)),
        );
    }
}

async fn stock_cold(cfg: &Config, work_dir: &std::path::Path) -> Result<ScenarioReport> {
    let mut options = stack_options(cfg, Backend::Postgres, Transport::Amqp);
    // Both caches off, so 2,000 symbols keep missing however long the run: the worker's
    // (CACHE_TTL) and the API's reuse of a landed quote (QUOTE_REUSE_WINDOW, else a symbol
    // asked again within 500 ms never reaches the worker). Concurrent requests for one symbol
    // are still shared, in the API and in the worker, and different symbols still batched.
    options.cache_ttl = Some("0".into());
    options
        .api_env
        .insert(0, ("QUOTE_REUSE_WINDOW".into(), "0".into()));
    let mut stack = Stack::start(&cfg.bins, options, work_dir).await?;
    let outcome = async {
        let users = stack.create_users("cold_user_", cfg.users, false).await?;
        let symbols: Vec<String> = (0..cfg.cold_symbols)
            .map(|i| format!("c{i:04}.us"))
            .collect();
        let plan = Plan {
            method: "GET",
            targets: stock_targets(&symbols),
            tokens: tokens(&users),
            bodies: vec![],
            pause_ms: None,
        };
        let outcome = stock_runs(cfg, &mut stack, "stock-cold", &plan, work_dir).await?;
        Ok::<_, anyhow::Error>(stock_report(
            "stock-cold",
            &format!(
                "GET /stock, {} users x {} distinct symbols; worker cache off (CACHE_TTL=0) and API reuse off \
                 (QUOTE_REUSE_WINDOW=0): every request sends an RPC unless an identical one is in flight, \
                 every RPC goes upstream unless it joins a fetch in flight or shares a batch",
                users.len(),
                symbols.len()
            ),
            cfg.connections,
            outcome,
            &stack,
        ))
    }
    .await;
    stack.stop().await;
    outcome
}

/// Symbols per `quotes-batch` request.
const BATCH_SYMBOLS: usize = 20;

/// `/api/v1/quotes?q=` lists of [`BATCH_SYMBOLS`] distinct symbols each: windows over a
/// pool of `pool` symbols (the hot tickers, then made-up ones that the fake feed also
/// quotes), so different requests ask for overlapping but different lists.
fn batch_targets(pool: usize) -> Vec<String> {
    let symbols = hot_symbols(pool.max(BATCH_SYMBOLS));
    (0..symbols.len())
        .map(|start| {
            let list: Vec<String> = (0..BATCH_SYMBOLS)
                .map(|k| symbols[(start + k) % symbols.len()].replace('^', "%5E"))
                .collect();
            format!("/api/v1/quotes?q={}", list.join(","))
        })
        .collect()
}

async fn quotes_batch(cfg: &Config, work_dir: &std::path::Path) -> Result<ScenarioReport> {
    let name = Scenario::QuotesBatch.name();
    let mut stack = Stack::start(
        &cfg.bins,
        stack_options(cfg, Backend::Postgres, Transport::Amqp),
        work_dir,
    )
    .await?;
    let outcome = async {
        let users = stack.create_users("batch_user_", cfg.users, false).await?;
        let plan = Plan {
            method: "GET",
            targets: batch_targets(cfg.hot_symbols * 2),
            tokens: tokens(&users),
            bodies: vec![],
            pause_ms: None,
        };
        let rows = BATCH_SYMBOLS as i64;
        let outcome = stock_runs_at(
            cfg,
            &mut stack,
            &name,
            &plan,
            cfg.connections,
            rows,
            work_dir,
        )
        .await?;
        let description = format!(
            "GET /quotes, {BATCH_SYMBOLS} symbols per request, {} users x {} lists, AMQP \
             transport, PostgreSQL",
            users.len(),
            plan.targets.len()
        );
        let mut report = stock_report_of(
            &name,
            &description,
            cfg.connections,
            outcome,
            &stack,
            BATCH_SYMBOLS as u64,
        );
        let quotes_per_s: Vec<f64> = report
            .runs
            .iter()
            .map(|r| r.ok.unwrap_or(0) as f64 * BATCH_SYMBOLS as f64 / r.duration_s.max(1e-9))
            .collect();
        report.extra.insert(
            "quotes_per_s".into(),
            serde_json::json!(median(&quotes_per_s)),
        );
        Ok::<_, anyhow::Error>(report)
    }
    .await;
    stack.stop().await;
    outcome
}

/// Streams opening at once (each authenticates and fetches its first quotes).
const STREAM_OPEN_CONCURRENCY: usize = 50;

/// How long the subscribers keep reading after the last run, so the changes published at its
/// end are delivered (and counted, with their latency) before the streams close.
const STREAM_GRACE: Duration = Duration::from_secs(3);

/// quote_service's default `BATCH_SIZE`: symbols per upstream call.
const DEFAULT_WORKER_BATCH_SIZE: usize = 50;

/// The worker's `BATCH_SIZE` as the stack runs it: the last `--quote-env` setting, else the
/// environment the services inherit from the harness, else quote_service's default. The
/// stream scenario's expected upstream calls per refresh follow from it.
fn worker_batch_size(quote_env: &[(String, String)], inherited: Option<String>) -> usize {
    quote_env
        .iter()
        .rev()
        .find(|(key, _)| key == "BATCH_SIZE")
        .map(|(_, value)| value.clone())
        .or(inherited)
        .and_then(|value| value.trim().parse().ok())
        .filter(|size: &usize| *size > 0)
        .unwrap_or(DEFAULT_WORKER_BATCH_SIZE)
}

fn unix_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// `stream`: `stream_subscribers` SSE streams held open over `stream_symbols` symbols
/// (`stream_symbols_each` per stream, consecutive windows, so every symbol has as many
/// subscribers), the fake feed's prices moving four times per `WATCH_REFRESH` so every refresh
/// publishes a change of every symbol. The streams open before the warm-up and stay open
/// through every run; a run is a window of wall-clock time, and each delivery belongs to the
/// run in which the worker published it. The `req/s` column is deliveries per second, the
/// latencies are publish to client.
async fn stream(cfg: &Config, work_dir: &std::path::Path) -> Result<ScenarioReport> {
    use crate::stream_load::{
        StreamSpec, Subscribers, account, ensure_open_files, per_refresh, subscribers_per_symbol,
        symbols_of,
    };
    let name = Scenario::Stream.name();
    let subscribers = cfg.stream_subscribers;
    ensure_open_files(subscribers)?;
    // Caps: the default of 5 streams per user would need 200 users (200 argon2 logins); the
    // usual bench users share the streams instead, with the per-user cap raised to fit.
    let user_count = cfg.users.min(subscribers).max(1);
    let per_user = subscribers.div_ceil(user_count);
    let each = cfg.stream_symbols_each.min(cfg.stream_symbols);
    let move_every = (cfg.stream_refresh / 4).max(Duration::from_millis(10));
    let mut options = stack_options(cfg, Backend::Postgres, Transport::Amqp);
    let mut api_env = vec![
        ("STREAM_MAX_PER_USER".to_owned(), per_user.to_string()),
        ("STREAM_MAX_SYMBOLS".to_owned(), each.max(20).to_string()),
    ];
    // One connection per stream; the default HTTP_MAX_CONNECTIONS (4096) fits 1,000.
    if subscribers + 256 > 4096 {
        api_env.push((
            "HTTP_MAX_CONNECTIONS".to_owned(),
            (subscribers + 256).to_string(),
        ));
    }
    // Before the --api-env extras, which override them.
    api_env.append(&mut options.api_env);
    options.api_env = api_env;
    options.quote_env.insert(
        0,
        (
            "WATCH_REFRESH".to_owned(),
            format!("{}ms", cfg.stream_refresh.as_millis()),
        ),
    );
    options.fake_env = vec![
        (
            "FAKE_STOOQ_MOVE_EVERY".to_owned(),
            format!("{}ms", move_every.as_millis()),
        ),
        ("FAKE_STOOQ_SEED".to_owned(), "1".to_owned()),
    ];
    let batch_size = worker_batch_size(&options.quote_env, std::env::var("BATCH_SIZE").ok());
    let mut stack = Stack::start(&cfg.bins, options, work_dir).await?;
    let outcome = async {
        let users = stack
            .create_users("stream_user_", user_count, false)
            .await?;
        let symbols = hot_symbols(cfg.stream_symbols);
        let watchers = subscribers_per_symbol(subscribers, each, symbols.len());
        let specs = (0..subscribers)
            .map(|n| StreamSpec {
                token: users[n % users.len()].token.clone(),
                symbols: symbols_of(n, each, symbols.len()),
            })
            .collect();
        let opening = std::time::Instant::now();
        let subs =
            Subscribers::open(&stack.api_url, &symbols, specs, STREAM_OPEN_CONCURRENCY).await?;
        let open_s = opening.elapsed().as_secs_f64();
        eprintln!("bench: {subscribers} streams opened in {open_s:.1} s");
        let measured = async {
            if !cfg.warmup.is_zero() {
                tokio::time::sleep(cfg.warmup).await;
            }
            let mut peaks = RssFigures::before_runs(&stack.pids());
            let mut runs = Vec::new();
            let mut windows = Vec::new();
            for n in 1..=cfg.runs {
                stack.ensure_running()?;
                let (hits_before, symbols_before) = stack.upstream_counters().await?;
                let watch_before = stack.watch_counters().await;
                let start_ms = unix_ms();
                let sampler = RssSampler::start(stack.pids(), Duration::from_millis(100));
                tokio::time::sleep(cfg.duration).await;
                peaks.add_run(&sampler.finish().await);
                let end_ms = unix_ms();
                let (hits_after, symbols_after) = stack.upstream_counters().await?;
                let watch_after = stack.watch_counters().await;
                let mut fig = RunFigures {
                    duration_s: (end_ms - start_ms) as f64 / 1000.0,
                    upstream_requests: Some(hits_after.saturating_sub(hits_before)),
                    upstream_symbols: Some(symbols_after.saturating_sub(symbols_before)),
                    load_avg_1m: load_avg_1m(),
                    ..RunFigures::default()
                };
                if let (Some(before), Some(after)) = (watch_before, watch_after) {
                    fig.refreshes = Some(after.0.saturating_sub(before.0));
                    fig.live_published = Some(after.1.saturating_sub(before.1));
                }
                progress(
                    &name,
                    n,
                    cfg.runs,
                    &format!(
                        "{:?} refreshes, {:?} upstream calls, {:?} changes published",
                        fig.refreshes, fig.upstream_requests, fig.live_published
                    ),
                );
                windows.push((start_ms, end_ms));
                runs.push(fig);
            }
            Ok::<_, anyhow::Error>((runs, windows, peaks))
        }
        .await;
        tokio::time::sleep(STREAM_GRACE).await;
        let trouble = std::sync::Arc::clone(&subs.trouble);
        let deliveries = subs.close().await?;
        let (mut runs, windows, peaks) = measured?;
        for (fig, (start_ms, end_ms)) in runs.iter_mut().zip(&windows) {
            let got = account(&deliveries, *start_ms, *end_ms, &watchers);
            fig.requests = got.delivered;
            fig.rps = got.delivered as f64 / fig.duration_s.max(1e-9);
            fig.p50_ms = got.latency.p50_ms;
            fig.p99_ms = got.latency.p99_ms;
            fig.max_ms = got.latency.max_ms;
            fig.changes_seen = Some(got.changes_seen);
            fig.deliveries_expected = Some(got.expected);
        }
        for (n, fig) in runs.iter().enumerate() {
            progress(
                &name,
                n + 1,
                cfg.runs,
                &format!(
                    "{} of {} deliveries, publish to client p50 {:.1} ms, p99 {:.1} ms",
                    fig.requests,
                    fig.deliveries_expected.unwrap_or(0),
                    fig.p50_ms,
                    fig.p99_ms
                ),
            );
        }
        let count =
            |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        let (open_failed, ended_early, error_events, unreadable) = (
            count(&trouble.open_failed),
            count(&trouble.ended_early),
            count(&trouble.error_events),
            count(&trouble.unreadable),
        );
        let description = format!(
            "GET /stream: {subscribers} SSE subscribers ({each} symbols each, {} per symbol) over {} symbols, \
             {} users (STREAM_MAX_PER_USER={per_user}), WATCH_REFRESH={:?}, fake prices move every {:?}; \
             req/s = change events delivered per second, latency = worker publish to client",
            watchers.iter().copied().max().unwrap_or(0),
            symbols.len(),
            users.len(),
            cfg.stream_refresh,
            move_every,
        );
        let mut report = ScenarioReport::new(&name, &description, subscribers, runs);
        report.checks.push(Check {
            name: "every stream opened and stayed open".into(),
            passed: open_failed == 0 && ended_early == 0,
            detail: format!("{open_failed} failed to open, {ended_early} ended early"),
        });
        report.checks.push(Check {
            name: "every event readable, with its publish instant".into(),
            passed: error_events == 0 && unreadable == 0,
            detail: format!("{error_events} error events, {unreadable} unreadable change events"),
        });
        report.checks.push(Check {
            name: "every subscriber got every change of its symbols".into(),
            passed: report.runs.iter().all(|r| {
                r.requests > 0 && Some(r.requests) == r.deliveries_expected
            }),
            detail: format!(
                "delivered / expected per run: {:?}",
                report
                    .runs
                    .iter()
                    .map(|r| format!("{}/{}", r.requests, r.deliveries_expected.unwrap_or(0)))
                    .collect::<Vec<_>>()
            ),
        });
        report.set_memory(stack.memory(&peaks));
        let median_of = |f: &dyn Fn(&RunFigures) -> Option<f64>| {
            let values: Vec<f64> = report.runs.iter().filter_map(f).collect();
            (!values.is_empty()).then(|| median(&values))
        };
        let figures = [
            (
                "upstream_calls_per_refresh",
                median_of(&|r| per_refresh(r.upstream_requests?, r.refreshes?)),
            ),
            (
                "upstream_symbols_per_refresh",
                median_of(&|r| per_refresh(r.upstream_symbols?, r.refreshes?)),
            ),
            (
                "changes_published_per_refresh",
                median_of(&|r| per_refresh(r.live_published?, r.refreshes?)),
            ),
            (
                "refreshes_per_s",
                median_of(&|r| Some(r.refreshes? as f64 / r.duration_s.max(1e-9))),
            ),
            (
                "delivered_fraction",
                median_of(&|r| {
                    let expected = r.deliveries_expected.filter(|e| *e > 0)?;
                    Some(r.requests as f64 / expected as f64)
                }),
            ),
        ];
        for (key, value) in figures {
            if let Some(v) = value {
                report.extra.insert(key.into(), serde_json::json!(v));
            }
        }
        // What one refresh should cost upstream: one call per BATCH_SIZE watched symbols.
        report.extra.insert(
            "upstream_calls_per_refresh_expected".into(),
            serde_json::json!(symbols.len().div_ceil(batch_size)),
        );
        report
            .extra
            .insert("streams_open_seconds".into(), serde_json::json!(open_s));
        let _ = stack.snapshot_metrics(work_dir, &name).await;
        Ok::<_, anyhow::Error>(report)
    }
    .await;
    stack.stop().await;
    outcome
}

/// Measured runs of a read-only plan (history, stats, login).
async fn plain_runs(
    cfg: &Config,
    stack: &mut Stack,
    name: &str,
    plan: &Plan,
    connections: usize,
    timeout: Duration,
    work_dir: &std::path::Path,
) -> Result<(Vec<RunFigures>, RssFigures)> {
    if !cfg.warmup.is_zero() {
        wrk::run(
            &stack.api_url,
            plan,
            load(cfg, connections, cfg.warmup, timeout),
            work_dir,
        )
        .await?;
    }
    let mut runs = Vec::new();
    let mut peaks = RssFigures::before_runs(&stack.pids());
    for n in 1..=cfg.runs {
        stack.ensure_running()?;
        let rows_before = stack.db.settled_history_rows().await?;
        let sampler = RssSampler::start(stack.pids(), Duration::from_millis(100));
        let cpu_before = cpu::Snapshot::take();
        let result = wrk::run(
            &stack.api_url,
            plan,
            load(cfg, connections, cfg.duration, timeout),
            work_dir,
        )
        .await?;
        let cpu_after = cpu::Snapshot::take();
        peaks.add_run(&sampler.finish().await);
        let mut fig = RunFigures::from_wrk(&result);
        fig.cpu_us_per_request = cpu_before.per_request(&cpu_after, result.requests);
        // Reads and logins must not write history: zero rows for zero /stock 200s.
        fig.rows_added = Some(stack.db.settled_history_rows().await? - rows_before);
        progress(
            name,
            n,
            cfg.runs,
            &format!(
                "{:.0} req/s, p99 {:.1} ms, {} errors",
                fig.rps, fig.p99_ms, fig.errors
            ),
        );
        runs.push(fig);
    }
    Ok((runs, peaks))
}

/// The read scenarios' share of "nothing lost": no run added or removed a history row.
fn no_rows_written(runs: &[RunFigures]) -> Check {
    let added: Vec<i64> = runs.iter().filter_map(|r| r.rows_added).collect();
    Check {
        name: "history rows unchanged".into(),
        passed: added.iter().all(|a| *a == 0),
        detail: format!("rows added per run: {added:?}"),
    }
}

/// Seeds `rows` history rows for one user through the store's own bulk insert, spread over
/// `symbols` symbols with a skewed (Zipf-like) popularity so the top five are well defined.
async fn seed(stack: &Stack, user_id: i64, rows: usize, symbols: usize) -> Result<Duration> {
    use api_service::store::NewHistoryEntry;
    let started = std::time::Instant::now();
    let store = api_service::store::connect(&stack.db.url, 2).await?;
    let base = Utc.with_ymd_and_hms(2024, 1, 2, 9, 0, 0).unwrap();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut done = 0;
    while done < rows {
        let chunk = (rows - done).min(50_000);
        let entries: Vec<NewHistoryEntry> = (done..done + chunk)
            .map(|i| {
                // xorshift64: deterministic and cheap.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let u = (state >> 11) as f64 / (1u64 << 53) as f64;
                let idx = ((u * u * u) * symbols as f64) as usize % symbols.max(1);
                let price = 10.0 + idx as f64 / 10.0;
                NewHistoryEntry {
                    requested_at: base + chrono::Duration::seconds(i as i64),
                    symbol: format!("S{idx:04}.US"),
                    name: format!("SEEDED {idx}"),
                    open: price,
                    high: price + 1.0,
                    low: price - 1.0,
                    close: price + 0.5,
                }
            })
            .collect();
        store.seed_history(user_id, &entries).await?;
        done += chunk;
    }
    store.close().await;
    Ok(started.elapsed())
}

/// A stack with one user holding `history_rows` rows (the history and stats scenarios).
async fn seeded_stack(
    cfg: &Config,
    work_dir: &std::path::Path,
) -> Result<(Stack, BenchUser, BenchUser, Duration)> {
    let stack = Stack::start(
        &cfg.bins,
        stack_options(cfg, Backend::Postgres, Transport::Amqp),
        work_dir,
    )
    .await?;
    let prepared = async {
        let user = stack
            .create_users("history_user_", 1, false)
            .await?
            .remove(0);
        let admin = stack.create_users("admin_", 1, true).await?.remove(0);
        eprintln!(
            "bench: seeding {} history rows over {} symbols",
            cfg.history_rows, cfg.stats_symbols
        );
        let took = seed(&stack, user.id, cfg.history_rows, cfg.stats_symbols).await?;
        eprintln!("bench: seeded in {:.1} s", took.as_secs_f64());
        Ok::<_, anyhow::Error>((user, admin, took))
    }
    .await;
    match prepared {
        Ok((user, admin, took)) => Ok((stack, user, admin, took)),
        Err(err) => {
            stack.stop().await;
            Err(err)
        }
    }
}

async fn history(cfg: &Config, work_dir: &std::path::Path) -> Result<Vec<ScenarioReport>> {
    let (mut stack, user, _admin, seeded) = seeded_stack(cfg, work_dir).await?;
    let outcome = async {
        let (min_id, max_id) = stack.db.id_range(user.id).await?;
        if max_id == 0 {
            bail!("seeding left the history empty");
        }
        // 90% of the way down: a client that has paged through most of a million rows.
        let deep_id = min_id + (max_id - min_id) / 10;
        let cursor = api_service::pagination::Cursor(deep_id).encode();
        let mut reports = Vec::new();
        for (name, target, what) in [
            (
                "history-first",
                "/api/v1/users/history".to_owned(),
                "first page (default limit)",
            ),
            (
                "history-deep",
                format!("/api/v1/users/history?cursor={cursor}"),
                "page at 90% depth via cursor",
            ),
        ] {
            let plan = Plan {
                method: "GET",
                targets: vec![target.clone()],
                tokens: vec![user.token.clone()],
                bodies: vec![],
                pause_ms: None,
            };
            let check = first_page_check(&stack, &target, &user.token).await?;
            reports.extend(
                read_runs(
                    cfg,
                    &mut stack,
                    name,
                    &format!(
                        "GET /users/history, {what}, one user with {} rows",
                        cfg.history_rows
                    ),
                    &plan,
                    vec![check],
                    seeded,
                    work_dir,
                )
                .await?,
            );
        }
        Ok::<_, anyhow::Error>(reports)
    }
    .await;
    stack.stop().await;
    outcome
}

/// The page is a full page of rows with a `Link: rel=next` (there are many more).
async fn first_page_check(stack: &Stack, target: &str, token: &str) -> Result<Check> {
    let resp = stack
        .http
        .get(format!("{}{target}", stack.api_url))
        .bearer_auth(token)
        .send()
        .await?;
    let status = resp.status();
    let has_next = resp
        .headers()
        .get("link")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("rel=\"next\""));
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    let rows = body.as_array().map_or(0, Vec::len);
    Ok(Check {
        name: format!("{target} answers a full page"),
        passed: status.is_success() && rows > 0 && has_next,
        detail: format!("status {status}, {rows} rows, Link rel=next: {has_next}"),
    })
}

async fn stats(cfg: &Config, work_dir: &std::path::Path) -> Result<Vec<ScenarioReport>> {
    let (mut stack, _user, admin, seeded) = seeded_stack(cfg, work_dir).await?;
    let outcome = async {
        let check = stats_check(&stack, &admin.token).await?;
        let plan = Plan {
            method: "GET",
            targets: vec!["/api/v1/stats".into()],
            tokens: vec![admin.token.clone()],
            bodies: vec![],
            pause_ms: None,
        };
        let reports = read_runs(
            cfg,
            &mut stack,
            "stats",
            &format!(
                "GET /stats (admin, top 5) over {} rows and {} symbols",
                cfg.history_rows, cfg.stats_symbols
            ),
            &plan,
            check,
            seeded,
            work_dir,
        )
        .await?;
        Ok::<_, anyhow::Error>(reports)
    }
    .await;
    stack.stop().await;
    outcome
}

/// A read scenario measured twice: saturated at `connections` (row `name`: throughput; by
/// Little's law its latency is mostly connections / throughput), then paced at
/// `paced_load` of that throughput over `latency_connections` (row `name-paced`: latency of
/// a busy but not overloaded service, what a p99 target describes).
#[allow(clippy::too_many_arguments)]
async fn read_runs(
    cfg: &Config,
    stack: &mut Stack,
    name: &str,
    description: &str,
    plan: &Plan,
    checks: Vec<Check>,
    seeded: Duration,
    work_dir: &std::path::Path,
) -> Result<Vec<ScenarioReport>> {
    let timeout = Duration::from_secs(10);
    let mut reports = Vec::new();
    let (runs, peaks) =
        plain_runs(cfg, stack, name, plan, cfg.connections, timeout, work_dir).await?;
    let mut saturated = ScenarioReport::new(name, description, cfg.connections, runs);
    saturated.checks = checks.clone();
    saturated.checks.push(no_rows_written(&saturated.runs));
    saturated.set_memory(stack.memory(&peaks));
    saturated.extra.insert(
        "seed_seconds".into(),
        serde_json::json!(seeded.as_secs_f64()),
    );
    let offered = saturated.median.rps * cfg.paced_load;
    reports.push(saturated);
    if offered > 0.0 && cfg.paced_load > 0.0 {
        let connections = cfg.latency_connections;
        let paced_plan = Plan {
            pause_ms: Some(connections as f64 / offered * 1000.0),
            ..plan.clone()
        };
        let row = format!("{name}-paced");
        let (runs, peaks) = plain_runs(
            cfg,
            stack,
            &row,
            &paced_plan,
            connections,
            timeout,
            work_dir,
        )
        .await?;
        let mut paced = ScenarioReport::new(
            &row,
            &format!(
                "{description}; paced: {connections} connections offering {:.0}% of the saturated rate ({offered:.0} req/s)",
                cfg.paced_load * 100.0
            ),
            connections,
            runs,
        );
        paced.checks = checks;
        paced.checks.push(no_rows_written(&paced.runs));
        paced.set_memory(stack.memory(&peaks));
        paced
            .extra
            .insert("offered_rps".into(), serde_json::json!(offered));
        reports.push(paced);
    }
    Ok(reports)
}

/// `/stats` agrees with a GROUP BY over the history rows, and the counters sum to the row
/// count.
async fn stats_check(stack: &Stack, token: &str) -> Result<Vec<Check>> {
    let answer: serde_json::Value = stack
        .http
        .get(format!("{}/api/v1/stats", stack.api_url))
        .bearer_auth(token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let served: Vec<(String, i64)> = answer
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|i| {
                    (
                        i["stock"].as_str().unwrap_or_default().to_lowercase(),
                        i["times_requested"].as_i64().unwrap_or(-1),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let expected = stack
        .db
        .top_from_history(served.len().max(1) as i64)
        .await?;
    let rows = stack.db.history_rows().await?;
    let counters = stack.db.counter_total().await?;
    Ok(vec![
        Check {
            name: "stats == GROUP BY over history".into(),
            passed: !served.is_empty() && served == expected,
            detail: format!("served {served:?}, history says {expected:?}"),
        },
        Check {
            name: "counters match history".into(),
            passed: rows == counters,
            detail: format!("{rows} history rows, counters sum to {counters}"),
        },
    ])
}

async fn login(cfg: &Config, work_dir: &std::path::Path) -> Result<ScenarioReport> {
    // Every wrk connection comes from 127.0.0.1, and the per-address login limit counts
    // attempts in flight, so it would hold this storm of many users to 20 at a time: the
    // per-address part is off here (as behind a reverse proxy), the per-user parts are on.
    let mut options = stack_options(cfg, Backend::Postgres, Transport::Amqp);
    options
        .api_env
        .insert(0, ("LOGIN_MAX_FAILURES_PER_IP".into(), "0".into()));
    let mut stack = Stack::start(&cfg.bins, options, work_dir).await?;
    let outcome = async {
        // One user per connection: a username's attempts in flight take slots of its failure
        // limit (extra ones queue for a slot), and a real login storm is many different users.
        let users = stack
            .create_users_with("login_user_", cfg.login_connections.max(1), false, false)
            .await?;
        let bodies = users
            .iter()
            .map(|u| {
                serde_json::json!({"username": u.username, "password": u.password}).to_string()
            })
            .collect();
        let plan = Plan {
            method: "POST",
            targets: vec!["/api/v1/login".into()],
            tokens: vec![],
            bodies,
            pause_ms: None,
        };
        let (runs, peaks) = plain_runs(
            cfg,
            &mut stack,
            "login",
            &plan,
            cfg.login_connections,
            Duration::from_secs(60),
            work_dir,
        )
        .await?;
        let mut report = ScenarioReport::new(
            "login",
            &format!(
                "POST /login (argon2id), {} concurrent, {} users",
                cfg.login_connections,
                users.len()
            ),
            cfg.login_connections,
            runs,
        );
        report.set_memory(stack.memory(&peaks));
        report.checks.push(no_rows_written(&report.runs));
        report.checks.push(Check {
            name: "zero errors".into(),
            passed: report.runs.iter().all(|r| r.errors == 0),
            detail: format!(
                "{} errors",
                report.runs.iter().map(|r| r.errors).sum::<u64>()
            ),
        });
        Ok::<_, anyhow::Error>(report)
    }
    .await;
    stack.stop().await;
    outcome
}

/// Sorts the scenario list and drops duplicates; echo always runs first when a stock scenario
/// needs its ratio.
pub fn normalise(mut scenarios: Vec<Scenario>) -> Vec<Scenario> {
    scenarios.sort();
    scenarios.dedup();
    scenarios
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_expected_batch_size_is_the_one_the_worker_runs_with() {
        let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };

        assert_eq!(worker_batch_size(&[], None), DEFAULT_WORKER_BATCH_SIZE);
        assert_eq!(worker_batch_size(&[], Some("20".into())), 20);
        assert_eq!(
            worker_batch_size(
                &env(&[("BATCH_SIZE", "10"), ("BATCH_SIZE", "25")]),
                Some("20".into())
            ),
            25,
            "the last --quote-env wins over the inherited environment"
        );
        assert_eq!(
            worker_batch_size(&env(&[("CACHE_TTL", "0")]), Some("junk".into())),
            DEFAULT_WORKER_BATCH_SIZE
        );
    }

    /// A drained wrk run: `sent` requests, `answered` of them answered, `ok` with a 200.
    fn wrk_result(sent: u64, answered: u64, ok: u64) -> WrkResult {
        WrkResult {
            requests: answered,
            duration_us: 1e6,
            p50_us: 1.0,
            p99_us: 1.0,
            max_us: 1.0,
            ok,
            non2xx: answered - ok,
            sent,
            connect_errors: 0,
            read_errors: 0,
            write_errors: 0,
            timeouts: 0,
            statuses: BTreeMap::new(),
            window_requests: Some(answered),
            window_us: Some(1e6),
        }
    }

    #[test]
    fn one_row_per_200_passes_and_says_so() {
        let check = rows_check(1, &wrk_result(1000, 1000, 990), 990, 1);
        assert!(check.passed, "{check:?}");
        assert_eq!(
            check.detail,
            "990 rows added == 990 x 200 (1000 requests sent, all answered)"
        );
    }

    #[test]
    fn a_single_lost_row_fails() {
        let check = rows_check(1, &wrk_result(1000, 1000, 1000), 999, 1);
        assert!(!check.passed);
        assert!(check.detail.contains("1 lost"), "{check:?}");
    }

    #[test]
    fn a_row_without_a_200_fails_too() {
        // The old net count allowed up to one extra row per connection; the drained count
        // has no requests cut off to explain one.
        let check = rows_check(1, &wrk_result(1000, 1000, 1000), 1001, 1);
        assert!(!check.passed);
        assert!(check.detail.contains("1 rows without a 200"), "{check:?}");
    }

    #[test]
    fn unanswered_requests_make_the_count_inexact_and_fail_even_when_the_numbers_match() {
        let check = rows_check(2, &wrk_result(1003, 1000, 1000), 1000, 1);
        assert!(!check.passed);
        assert!(
            check
                .detail
                .contains("3 of 1003 requests sent were never answered"),
            "{check:?}"
        );
    }

    fn stock_run(requests: u64, rpcs: u64, coalesced: u64, messages: u64) -> RunFigures {
        RunFigures {
            requests,
            rpcs: Some(rpcs),
            rpc_coalesced: Some(coalesced),
            worker_rpc_messages: Some(messages),
            ..RunFigures::default()
        }
    }

    #[test]
    fn rpc_ratios_are_per_request_medians_and_count_both_messages_of_an_rpc() {
        let mut report = ScenarioReport::new(
            "stock-rpc",
            "",
            64,
            vec![
                stock_run(1000, 900, 100, 900),
                stock_run(1000, 1000, 0, 1000),
                stock_run(2000, 1000, 1000, 500),
            ],
        );

        add_rpc_ratios(&mut report);

        assert_eq!(report.extra["rpcs_per_request"], serde_json::json!(0.9));
        assert_eq!(
            report.extra["answered_without_own_rpc_per_request"],
            serde_json::json!(0.1)
        );
        // A batched reply would show here as fewer than two messages per request.
        assert_eq!(
            report.extra["broker_messages_per_request"],
            serde_json::json!(1.8)
        );
    }

    #[test]
    fn runs_without_rpc_counters_report_no_rpc_ratios() {
        let mut report = ScenarioReport::new("stock-hot", "", 64, vec![RunFigures::default()]);
        add_rpc_ratios(&mut report);
        assert!(report.extra.is_empty(), "{:?}", report.extra);
    }
}
