//! Starts and stops the stack under test from release binaries: fake_stooq, quote_service and
//! api_service as child processes, a fresh database, a unique queue name.
//!
//! Each service binds port 0 and its start-up log line says which port it got: the harness
//! reads the address from there, so no port is picked first and raced for.
//!
//! Every service logs (at `warn`, plus that start-up line, as JSON) to a file in the run's
//! work dir; when one dies or never gets ready, the error quotes the tail of its log.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use secrecy::SecretString;
use serde::Deserialize;
use tokio::process::{Child, Command};

use crate::db::{Backend, BenchDb};
use crate::memory::{RssFigures, ServiceMemory, kib_to_mib, status_kib};

/// How quote requests travel from api_service to quote_service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Amqp,
    Http,
}

impl Transport {
    fn as_env(self) -> &'static str {
        match self {
            Transport::Amqp => "amqp",
            Transport::Http => "http",
        }
    }
}

/// Where the release binaries are.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub dir: PathBuf,
}

impl Binaries {
    pub fn path(&self, name: &str) -> Result<PathBuf> {
        let path = self.dir.join(name);
        if !path.is_file() {
            bail!(
                "{} not found: build first (cargo build --release --workspace --bins) or pass --bin-dir",
                path.display()
            );
        }
        Ok(path)
    }
}

/// The shape of one stack.
#[derive(Debug, Clone)]
pub struct StackOptions {
    pub backend: Backend,
    pub transport: Transport,
    /// quote_service `CACHE_TTL`; `None` keeps its default.
    pub cache_ttl: Option<String>,
    pub pg_base: String,
    pub amqp_url: String,
    /// Extra environment for api_service / quote_service (experiments such as allocator
    /// tuning); applied last, so they override the harness's own settings.
    pub api_env: Vec<(String, String)>,
    pub quote_env: Vec<(String, String)>,
    /// Extra environment for fake_stooq (moving prices).
    pub fake_env: Vec<(String, String)>,
}

/// A child process of the stack.
pub struct Service {
    pub name: &'static str,
    pub pid: u32,
    child: Child,
    log: PathBuf,
}

impl Service {
    pub(crate) fn spawn(
        name: &'static str,
        bin: &Path,
        args: &[&str],
        env: &[(String, String)],
        work_dir: &Path,
    ) -> Result<Self> {
        let log = work_dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log)?;
        let err = out.try_clone()?;
        let child = Command::new(bin)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id().context("child has no pid")?;
        Ok(Self {
            name,
            pid,
            child,
            log,
        })
    }

    /// The address the service says it bound (the `addr` field of its INFO start-up line in
    /// JSON; see [`log_env`]), once it has said so.
    pub(crate) async fn announced_addr(&mut self) -> Result<SocketAddr> {
        let started = Instant::now();
        loop {
            self.ensure_running()?;
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if let Some(addr) = text.lines().find_map(announced_in) {
                return Ok(addr);
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!(
                    "{} did not log its address within {READY_TIMEOUT:?}; last log lines:\n{}",
                    self.name,
                    log_tail(&self.log)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Fails (quoting the log) if the process has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}); last log lines:\n{}",
                self.name,
                log_tail(&self.log)
            );
        }
        Ok(())
    }

    pub fn rss_mb(&self) -> f64 {
        kib_to_mib(status_kib(self.pid, "VmRSS").unwrap_or(0))
    }

    pub fn hwm_mb(&self) -> f64 {
        kib_to_mib(status_kib(self.pid, "VmHWM").unwrap_or(0))
    }

    /// SIGTERM, then SIGKILL if it has not exited within a few seconds.
    pub(crate) async fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// The bound address in one JSON log line, if it is the INFO line announcing it.
fn announced_in(line: &str) -> Option<SocketAddr> {
    let event: serde_json::Value = serde_json::from_str(line).ok()?;
    if event["level"] != "INFO" {
        return None;
    }
    event["fields"]["addr"].as_str()?.parse().ok()
}

/// Logging for a service: warnings, plus INFO from `startup_target`, whose line carries the
/// bound address; JSON so that line can be read reliably.
fn log_env(startup_target: &str) -> [(String, String); 2] {
    [
        ("RUST_LOG".to_owned(), format!("warn,{startup_target}=info")),
        ("LOG_FORMAT".to_owned(), "json".to_owned()),
    ]
}

/// A user created for the run, with a token from a real login.
#[derive(Debug, Clone)]
pub struct BenchUser {
    pub id: i64,
    pub username: String,
    pub password: String,
    pub token: String,
}

pub struct Stack {
    pub fake: Service,
    pub quote: Service,
    pub api: Service,
    pub api_url: String,
    pub quote_url: String,
    pub fake_url: String,
    pub queue: String,
    pub db: BenchDb,
    pub http: reqwest::Client,
    /// VmRSS of (fake, quote, api) once started and idle, before any load.
    idle_rss_mb: [f64; 3],
    options: StackOptions,
}

const READY_TIMEOUT: Duration = Duration::from_secs(60);

impl Stack {
    pub async fn start(bins: &Binaries, options: StackOptions, work_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(work_dir)?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        let db = BenchDb::create(options.backend, &options.pg_base, work_dir).await?;
        let queue = format!("bench.quotes.{}", uuid::Uuid::new_v4().simple());
        let kv = |k: &str, v: String| (k.to_owned(), v);

        let mut fake_env = log_env("fake_stooq").to_vec();
        fake_env.extend(options.fake_env.iter().cloned());
        let mut fake = Service::spawn(
            "fake_stooq",
            &bins.path("fake_stooq")?,
            &["--addr", "127.0.0.1:0"],
            &fake_env,
            work_dir,
        )?;
        let fake_url = format!("http://{}", fake.announced_addr().await?);
        wait_ready(&http, &format!("{fake_url}/fake/stats"), &mut fake).await?;

        let mut env = vec![
            kv("QUOTE_TRANSPORT", options.transport.as_env().to_owned()),
            kv("AMQP_URL", options.amqp_url.clone()),
            kv("QUOTE_QUEUE", queue.clone()),
            kv("QUOTE_HTTP_ADDR", "127.0.0.1:0".to_owned()),
            kv("STOOQ_URL", fake_url.clone()),
        ];
        env.extend(log_env("quote_service::startup"));
        if let Some(ttl) = &options.cache_ttl {
            env.push(kv("CACHE_TTL", ttl.clone()));
        }
        env.extend(options.quote_env.iter().cloned());
        let mut quote = Service::spawn(
            "quote_service",
            &bins.path("quote_service")?,
            &[],
            &env,
            work_dir,
        )?;
        let quote_url = format!("http://{}", quote.announced_addr().await?);
        wait_ready(&http, &format!("{quote_url}/readyz"), &mut quote).await?;

        let jwt_secret = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let mut api_env = vec![
            kv("API_ADDR", "127.0.0.1:0".to_owned()),
            kv("DATABASE_URL", db.url.clone()),
            kv("JWT_SECRET", jwt_secret),
            kv("QUOTE_TRANSPORT", options.transport.as_env().to_owned()),
            kv("QUOTE_SERVICE_URL", quote_url.clone()),
            kv("AMQP_URL", options.amqp_url.clone()),
            kv("QUOTE_QUEUE", queue.clone()),
        ];
        api_env.extend(log_env("api_service::startup"));
        api_env.extend(options.api_env.iter().cloned());
        let api_bin = bins.path("api_service")?;
        let migrated = Command::new(&api_bin)
            .arg("migrate")
            .envs(api_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .output()
            .await?;
        if !migrated.status.success() {
            bail!(
                "api_service migrate failed: {}",
                String::from_utf8_lossy(&migrated.stderr)
            );
        }
        let mut api = Service::spawn("api_service", &api_bin, &["serve"], &api_env, work_dir)?;
        let api_url = format!("http://{}", api.announced_addr().await?);
        wait_ready(&http, &format!("{api_url}/readyz"), &mut api).await?;

        // Let start-up allocations settle before calling the footprint "idle".
        tokio::time::sleep(Duration::from_millis(500)).await;
        let idle_rss_mb = [fake.rss_mb(), quote.rss_mb(), api.rss_mb()];
        Ok(Self {
            fake,
            quote,
            api,
            api_url,
            quote_url,
            fake_url,
            queue,
            db,
            http,
            idle_rss_mb,
            options,
        })
    }

    pub fn pids(&self) -> Vec<u32> {
        vec![self.fake.pid, self.quote.pid, self.api.pid]
    }

    pub fn ensure_running(&mut self) -> Result<()> {
        self.fake.ensure_running()?;
        self.quote.ensure_running()?;
        self.api.ensure_running()
    }

    /// Memory of quote_service and api_service (the services under test; the fake is not
    /// part of the product), given what was sampled around the runs.
    pub fn memory(&self, rss: &RssFigures) -> Vec<(String, ServiceMemory)> {
        let mb = |v: &[u64], i: usize| kib_to_mib(v.get(i).copied().unwrap_or_default());
        [(1, &self.quote), (2, &self.api)]
            .into_iter()
            .map(|(i, svc)| {
                (
                    svc.name.to_owned(),
                    ServiceMemory {
                        idle_rss_mb: self.idle_rss_mb[i],
                        before_runs_rss_mb: mb(&rss.before_runs, i),
                        sampled_peak_rss_mb: mb(&rss.peak, i),
                        run_peaks_mb: rss.run_peaks.iter().map(|run| mb(run, i)).collect(),
                        peak_rss_mb: svc.hwm_mb(),
                    },
                )
            })
            .collect()
    }

    /// Creates `count` users named `{prefix}{n}` (role user, or admin) straight through
    /// api_service's library, then logs each in over HTTP for a real token.
    pub async fn create_users(
        &self,
        prefix: &str,
        count: usize,
        admin: bool,
    ) -> Result<Vec<BenchUser>> {
        self.create_users_with(prefix, count, admin, true).await
    }

    /// [`Self::create_users`], logging in only when `login` (otherwise `token` is empty).
    pub async fn create_users_with(
        &self,
        prefix: &str,
        count: usize,
        admin: bool,
        login: bool,
    ) -> Result<Vec<BenchUser>> {
        use api_service::store::Role;
        let store = api_service::store::connect(&self.db.url, 2).await?;
        let role = if admin { Role::Admin } else { Role::User };
        let mut created = Vec::with_capacity(count);
        for n in 0..count {
            let username = format!("{prefix}{n:03}");
            let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
            let user = api_service::users::create_user(
                store.as_ref(),
                &username,
                &SecretString::from(password.clone()),
                role,
            )
            .await
            .with_context(|| format!("creating user {username}"))?;
            created.push((user.id, username, password));
        }
        store.close().await;
        let mut users = Vec::with_capacity(count);
        for (id, username, password) in created {
            let token = if login {
                self.login(&username, &password).await?
            } else {
                String::new()
            };
            users.push(BenchUser {
                id,
                username,
                password,
                token,
            });
        }
        Ok(users)
    }

    async fn login(&self, username: &str, password: &str) -> Result<String> {
        #[derive(Deserialize)]
        struct Token {
            token: String,
        }
        let resp = self
            .http
            .post(format!("{}/api/v1/login", self.api_url))
            .json(&serde_json::json!({"username": username, "password": password}))
            .send()
            .await?;
        let status = resp.status();
        if !status.is_success() {
            bail!(
                "login as {username} failed: {status} {}",
                resp.text().await?
            );
        }
        Ok(resp.json::<Token>().await?.token)
    }

    /// Total upstream HTTP requests the fake has answered (`hits` in `/fake/stats`) and the
    /// total symbols they asked for.
    pub async fn upstream_counters(&self) -> Result<(u64, u64)> {
        let stats: serde_json::Value = self
            .http
            .get(format!("{}/fake/stats", self.fake_url))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let field = |name: &str| stats.get(name).and_then(|v| v.as_u64()).unwrap_or(0);
        Ok((field("hits"), field("symbols_requested")))
    }

    /// The RPC counters of both services' `/metrics` now; `None` when either cannot be read
    /// (the figures are then left out, not guessed).
    pub async fn rpc_counters(&self) -> Option<RpcCounters> {
        let scrape = |base: &str| {
            let url = format!("{base}/metrics");
            async move {
                let resp = self.http.get(url).send().await.ok()?;
                resp.error_for_status().ok()?.text().await.ok()
            }
        };
        let api = scrape(&self.api_url).await?;
        let quote = scrape(&self.quote_url).await?;
        Some(RpcCounters {
            api_flights: metric_sum(&api, "quote_rpc_flights_total"),
            api_coalesced: metric_sum(&api, "quote_rpc_coalesced_total"),
            worker_messages: metric_sum(&quote, "quote_rpc_messages_total"),
        })
    }

    /// quote_service's watch counters now: (refreshes run, changed quotes published);
    /// `None` when its `/metrics` cannot be read.
    pub async fn watch_counters(&self) -> Option<(u64, u64)> {
        let resp = self
            .http
            .get(format!("{}/metrics", self.quote_url))
            .send()
            .await
            .ok()?;
        let text = resp.error_for_status().ok()?.text().await.ok()?;
        Some((
            metric_sum(&text, "quote_watch_refreshes_total"),
            metric_sum(&text, "quote_live_quotes_published_total"),
        ))
    }

    /// Saves both services' `/metrics` into the work dir (for analysis after a run) and
    /// returns the api_service's quote RPC coalescing counters, when it exposes them.
    pub async fn snapshot_metrics(&self, work_dir: &Path, label: &str) -> Option<(f64, f64)> {
        let mut coalescing = None;
        for (name, base) in [
            ("api_service", &self.api_url),
            ("quote_service", &self.quote_url),
        ] {
            let Ok(resp) = self.http.get(format!("{base}/metrics")).send().await else {
                continue;
            };
            let Ok(text) = resp.text().await else {
                continue;
            };
            let _ = std::fs::write(work_dir.join(format!("{label}.{name}.metrics.txt")), &text);
            if name == "api_service" {
                let value = |metric: &str| {
                    text.lines()
                        .find(|l| l.starts_with(metric) && !l.starts_with('#'))
                        .and_then(|l| l.split_whitespace().last())
                        .and_then(|v| v.parse::<f64>().ok())
                };
                if let (Some(flights), Some(joined)) = (
                    value("quote_rpc_flights_total"),
                    value("quote_rpc_coalesced_total"),
                ) {
                    coalescing = Some((flights, joined));
                }
            }
        }
        coalescing
    }

    /// Stops the services, drops the database and deletes the queue.
    pub async fn stop(self) {
        self.api.stop().await;
        self.quote.stop().await;
        self.fake.stop().await;
        self.db.close().await;
        if let Err(err) = crate::echo::delete_queue(&self.options.amqp_url, &self.queue).await {
            eprintln!("bench: could not delete queue {}: {err:#}", self.queue);
        }
    }
}

/// The RPC counters the runs are accounted with (totals since the services started).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RpcCounters {
    /// api_service: quote RPCs actually sent (`quote_rpc_flights_total`).
    pub api_flights: u64,
    /// api_service: calls answered without their own RPC (`quote_rpc_coalesced_total`).
    pub api_coalesced: u64,
    /// quote_service: RPC request messages handled, all outcomes (`quote_rpc_messages_total`).
    pub worker_messages: u64,
}

impl RpcCounters {
    /// What the counters grew by since `before`.
    pub fn since(&self, before: &RpcCounters) -> RpcCounters {
        RpcCounters {
            api_flights: self.api_flights.saturating_sub(before.api_flights),
            api_coalesced: self.api_coalesced.saturating_sub(before.api_coalesced),
            worker_messages: self.worker_messages.saturating_sub(before.worker_messages),
        }
    }
}

/// The sum of one metric family's samples over all its label sets in a Prometheus text
/// exposition (0 when absent). Only that exact family: `name` followed by `{` or a space.
pub fn metric_sum(exposition: &str, name: &str) -> u64 {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            if !(rest.starts_with('{') || rest.starts_with(' ')) {
                return None;
            }
            l.split_whitespace().last()?.parse::<f64>().ok()
        })
        .sum::<f64>() as u64
}

async fn wait_ready(http: &reqwest::Client, url: &str, service: &mut Service) -> Result<()> {
    let started = Instant::now();
    loop {
        service.ensure_running()?;
        if let Ok(resp) = http.get(url).send().await
            && resp.status().is_success()
        {
            return Ok(());
        }
        if started.elapsed() > READY_TIMEOUT {
            bail!(
                "{} not ready at {url} after {READY_TIMEOUT:?}; last log lines:\n{}",
                service.name,
                log_tail(&service.log)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPOSITION: &str = "\
# HELP quote_rpc_messages_total RPC messages handled, by outcome
# TYPE quote_rpc_messages_total counter
quote_rpc_messages_total{outcome=\"ok\"} 120
quote_rpc_messages_total{outcome=\"upstream_error\"} 3
quote_rpc_messages_total_extra 999
quote_rpc_flights_total 42
";

    #[test]
    fn a_family_is_summed_over_its_label_sets_and_nothing_else() {
        assert_eq!(metric_sum(EXPOSITION, "quote_rpc_messages_total"), 123);
        assert_eq!(metric_sum(EXPOSITION, "quote_rpc_flights_total"), 42);
        assert_eq!(metric_sum(EXPOSITION, "quote_rpc_coalesced_total"), 0);
    }

    #[test]
    fn counters_grow_by_the_difference_and_never_below_zero() {
        let before = RpcCounters {
            api_flights: 10,
            api_coalesced: 5,
            worker_messages: 10,
        };
        let after = RpcCounters {
            api_flights: 25,
            api_coalesced: 5,
            worker_messages: 8,
        };
        assert_eq!(
            after.since(&before),
            RpcCounters {
                api_flights: 15,
                api_coalesced: 0,
                worker_messages: 0,
            }
        );
    }
}
