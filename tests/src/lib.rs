//! Helpers for the end-to-end suite: start the whole stack in-process (fake stooq,
//! quote_service, api_service, a fresh database) on free ports, and talk to it like a client.
//!
//! Every test file starts with `let Some(app) = spawn_app().await else { return };`: the
//! stack needs the local RabbitMQ (and PostgreSQL for that backend). When one is missing the
//! test prints why and returns early, except under `CI=true`, where it fails.

use std::time::{Duration, Instant};

use api_service::settings::TestTransport;
use api_service::store::provision::{self, TestDatabase};
use api_service::store::{Role, Store};
use fake_stooq::FakeStooq;
use reqwest::{Response, StatusCode};
use secrecy::SecretString;
use serde_json::{Value, json};
pub use shared::test_support::ports::refusing_addr;
use std::sync::Arc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub mod broker_user;
pub mod faults;
pub mod ledger;
pub mod load;
pub mod log_capture;
pub mod old_worker;
pub mod processes;
pub mod sse;

pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// Password every helper-created user gets unless a test picks its own.
pub const PASSWORD: &str = "correct horse battery staple";
/// The signing key the API under test uses, so token tests can forge tokens.
pub const JWT_SECRET: &str = "e2e-test-secret-that-is-long-enough-0123456789";
pub const JWT_ISSUER: &str = "stock-quotes";
pub const JWT_AUDIENCE: &str = "stock-quotes-api";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Amqp,
    Http,
}

/// Returns false (after saying why) when RabbitMQ is not reachable; panics under CI.
pub async fn rabbitmq_or_skip() -> bool {
    service_or_skip("RabbitMQ", "127.0.0.1:5672").await
}

async fn service_or_skip(name: &str, addr: &str) -> bool {
    let reachable =
        tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
            .await
            .is_ok_and(|r| r.is_ok());
    if reachable {
        return true;
    }
    if shared::config::running_in_ci() {
        panic!("{name} is not reachable at {addr}, and CI=true requires it");
    }
    eprintln!("SKIPPED: {name} is not reachable at {addr} (start it to run this test)");
    false
}

/// How to build a [`TestApp`]; the defaults are SQLite, AMQP, a 2 s RPC timeout.
pub struct StackBuilder {
    backend: Backend,
    transport: Transport,
    rpc_timeout: Duration,
    start_quote_service: bool,
    stooq_latency: Duration,
    stooq_api_key: Option<String>,
    quote_tweaks: Vec<QuoteTweak>,
    api_tweaks: Vec<ApiTweak>,
}

type QuoteTweak = Box<dyn FnOnce(&mut quote_service::settings::Settings) + Send>;
type ApiTweak = Box<dyn FnOnce(&mut api_service::settings::Settings) + Send>;

pub fn stack() -> StackBuilder {
    StackBuilder {
        backend: Backend::Sqlite,
        transport: Transport::Amqp,
        rpc_timeout: Duration::from_secs(2),
        start_quote_service: true,
        stooq_latency: Duration::ZERO,
        stooq_api_key: None,
        quote_tweaks: Vec::new(),
        api_tweaks: Vec::new(),
    }
}

/// The default stack: SQLite and the AMQP transport.
pub async fn spawn_app() -> Option<TestApp> {
    stack().spawn().await
}

impl StackBuilder {
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }
    pub fn rpc_timeout(mut self, timeout: Duration) -> Self {
        self.rpc_timeout = timeout;
        self
    }
    /// Start no quote worker at all (the queue exists only if someone declares it).
    pub fn without_quote_service(mut self) -> Self {
        self.start_quote_service = false;
        self
    }
    pub fn stooq_latency(mut self, latency: Duration) -> Self {
        self.stooq_latency = latency;
        self
    }
    /// The fake feed requires this `apikey` (and the worker is configured to send it).
    pub fn stooq_api_key(mut self, key: &str) -> Self {
        self.stooq_api_key = Some(key.to_owned());
        self
    }
    /// Adjusts the quote worker's settings after the test defaults are applied (the same
    /// settings are reused by [`TestApp::restart_quote_service`]).
    pub fn quote_settings(
        mut self,
        tweak: impl FnOnce(&mut quote_service::settings::Settings) + Send + 'static,
    ) -> Self {
        self.quote_tweaks.push(Box::new(tweak));
        self
    }
    /// Adjusts the API's settings after the test defaults are applied.
    pub fn api_settings(
        mut self,
        tweak: impl FnOnce(&mut api_service::settings::Settings) + Send + 'static,
    ) -> Self {
        self.api_tweaks.push(Box::new(tweak));
        self
    }

    pub async fn spawn(self) -> Option<TestApp> {
        shared::telemetry::init_for_tests();
        if self.transport == Transport::Amqp && !rabbitmq_or_skip().await {
            return None;
        }
        let db = match self.backend {
            Backend::Sqlite => provision::fresh_sqlite(),
            Backend::Postgres => provision::fresh_postgres_or_skip().await?,
        };

        let stooq = FakeStooq::start_with(fake_stooq::FakeConfig {
            api_key: self.stooq_api_key.clone(),
            ..fake_stooq::FakeConfig::default()
        })
        .await;
        stooq.set_latency(self.stooq_latency);

        let mut quote_settings = match self.transport {
            Transport::Amqp => quote_service::settings::Settings::for_tests(&stooq.url()),
            Transport::Http => quote_service::settings::Settings::for_http_tests(&stooq.url()),
        };
        // Fetch every request from the fake so tests can count upstream hits themselves.
        quote_settings.cache_ttl = Duration::ZERO;
        quote_settings.not_found_cache_ttl = Duration::ZERO;
        quote_settings.stooq_api_key = self.stooq_api_key.map(SecretString::from);
        for tweak in self.quote_tweaks {
            tweak(&mut quote_settings);
        }
        let queue = quote_settings.quote_queue.clone();

        let quote = if self.start_quote_service {
            Some(QuoteHandle::spawn(quote_settings.clone()).await)
        } else {
            None
        };

        // Over HTTP without a quote service, the API is pointed at a port that refuses.
        let refusing = (self.transport == Transport::Http && quote.is_none()).then(refusing_addr);
        let transport = match self.transport {
            Transport::Amqp => TestTransport::Amqp {
                url: AMQP_URL.into(),
                queue: queue.clone(),
            },
            Transport::Http => TestTransport::Http {
                base_url: match (&quote, &refusing) {
                    (Some(q), _) => format!("http://127.0.0.1:{}", q.port),
                    (None, Some((_, addr))) => format!("http://{addr}"),
                    (None, None) => unreachable!("a refusing address is made for this case"),
                },
            },
        };
        let mut settings = api_service::settings::Settings::for_tests(db.url(), transport);
        settings.rpc_timeout = self.rpc_timeout;
        settings.jwt_secret = Some(SecretString::from(JWT_SECRET.to_owned()));
        settings.jwt_issuer = JWT_ISSUER.into();
        settings.jwt_audience = JWT_AUDIENCE.into();
        for tweak in self.api_tweaks {
            tweak(&mut settings);
        }
        let app = api_service::startup::Application::build(settings.clone())
            .await
            .expect("api_service failed to start");
        let port = app.port();
        let store = app.store();
        let api_shutdown = app.shutdown_token();
        let api_task = tokio::spawn(async move { app.run_until_stopped().await });

        let test_app = TestApp {
            address: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            store,
            stooq,
            quote,
            queue,
            quote_settings,
            api_shutdown,
            api_task: Some(api_task),
            api_settings: settings,
            backend: self.backend,
            _db: db,
            _refusing: refusing.map(|(socket, _)| socket),
        };
        if test_app.quote.is_some() {
            test_app.wait_until_ready().await;
        }
        Some(test_app)
    }
}

/// A quote_service running in this process.
pub struct QuoteHandle {
    pub port: u16,
    /// What the worker's live-quote watch is doing (refreshes run, symbols watched).
    pub watch: quote_service::watch::WatchStats,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl QuoteHandle {
    pub async fn spawn(settings: quote_service::settings::Settings) -> Self {
        let app = quote_service::startup::Application::build(settings)
            .await
            .expect("quote_service failed to start");
        let port = app.port();
        let shutdown = app.shutdown_token();
        let watch = app.watch_stats();
        let task = tokio::spawn(async move { app.run_until_stopped().await });
        Self {
            port,
            watch,
            shutdown,
            task,
        }
    }

    /// Graceful stop, as SIGTERM would; returns once the worker has exited.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(15), self.task).await;
    }
}

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub store: Arc<dyn Store>,
    pub stooq: FakeStooq,
    pub quote: Option<QuoteHandle>,
    pub queue: String,
    pub backend: Backend,
    /// What the quote worker was started with (reused to restart it on the same queue).
    pub quote_settings: quote_service::settings::Settings,
    api_shutdown: CancellationToken,
    api_task: Option<JoinHandle<anyhow::Result<()>>>,
    /// What the API was started with (reused to start more instances beside it).
    api_settings: api_service::settings::Settings,
    _db: TestDatabase,
    /// Keeps the "quote service down" port of an HTTP stack without one taken.
    _refusing: Option<tokio::net::TcpSocket>,
}

/// One more api_service instance beside a [`TestApp`]'s: same database, same quote
/// transport, same JWT key, its own process state (caches, throttle). Stopped on drop.
pub struct OtherApi {
    pub address: String,
    shutdown: CancellationToken,
}

impl OtherApi {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }
}

impl Drop for OtherApi {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// Polls `/readyz` until the API reports both the database and the quote transport
    /// ready (the worker consuming, seen by the API's consumer-count check).
    pub async fn wait_until_ready(&self) {
        self.wait_for_readiness(StatusCode::OK).await;
    }

    /// Polls `/readyz` until it answers `want` (e.g. 503 once the API has noticed that the
    /// worker is gone); fails the test after 15 s. Returns the body of that answer.
    pub async fn wait_for_readiness(&self, want: StatusCode) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let response = self.get("/readyz").await;
            let status = response.status();
            let body: Value = response.json().await.unwrap_or_default();
            if status == want {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "/readyz not {want} after 15 s (last {status}: {body})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Creates a user directly in the store (no HTTP, no admin needed) and returns its id.
    pub async fn create_user(&self, username: &str, role: Role) -> i64 {
        api_service::users::create_user(
            self.store.as_ref(),
            username,
            &SecretString::from(PASSWORD.to_owned()),
            role,
        )
        .await
        .expect("create user")
        .id
    }

    pub async fn login(&self, username: &str, password: &str) -> Response {
        self.client
            .post(self.url("/api/v1/login"))
            .json(&json!({ "username": username, "password": password }))
            .send()
            .await
            .unwrap()
    }

    /// Creates a user with [`PASSWORD`] and returns a bearer token for them.
    pub async fn token_for(&self, username: &str, role: Role) -> String {
        self.create_user(username, role).await;
        let response = self.login(username, PASSWORD).await;
        assert_eq!(response.status(), StatusCode::OK, "login of {username}");
        let body: Value = response.json().await.unwrap();
        body["token"]
            .as_str()
            .expect("token in login body")
            .to_owned()
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    pub async fn get_with_token(&self, path: &str, token: &str) -> Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub async fn stock(&self, token: &str, q: &str) -> Response {
        self.client
            .get(self.url("/api/v1/stock"))
            .query(&[("q", q)])
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// `GET /api/v1/quotes?q=…` (`q` URL-encoded here).
    pub async fn quotes(&self, token: &str, q: &str) -> Response {
        self.client
            .get(self.url("/api/v1/quotes"))
            .query(&[("q", q)])
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub async fn history(&self, token: &str) -> Vec<Value> {
        let response = self.get_with_token("/api/v1/users/history", token).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    /// Stops the quote worker (graceful), leaving the API running.
    pub async fn stop_quote_service(&mut self) {
        if let Some(quote) = self.quote.take() {
            quote.stop().await;
        }
    }

    /// Stops the API gracefully and waits for it (pending history writes are flushed).
    pub async fn stop_api(&mut self) {
        self.api_shutdown.cancel();
        if let Some(task) = self.api_task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(15), task).await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.api_shutdown.cancel();
        if let Some(quote) = &self.quote {
            quote.shutdown.cancel();
        }
    }
}

/// The error envelope's `code`, asserting the body is the project's JSON envelope.
pub async fn error_code(response: Response) -> String {
    let body: Value = response.json().await.expect("error body is JSON");
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error.code in {body}"))
        .to_owned()
}

// --- Fault-injection helpers (reliability and security suites) -------------------------------

impl QuoteHandle {
    /// Begins a graceful stop (what SIGTERM does) without waiting for it.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Graceful stop; `Some(how long it took)` when the worker exited cleanly within `limit`.
    pub async fn stop_within(self, limit: Duration) -> Option<Duration> {
        let started = Instant::now();
        self.shutdown.cancel();
        match tokio::time::timeout(limit, self.task).await {
            Ok(Ok(Ok(()))) => Some(started.elapsed()),
            _ => None,
        }
    }
}

impl TestApp {
    /// The sum of a metric's series (a counter's labels, or a gauge's one value) on the
    /// `/metrics` of the service at `base` (`app.address` for the API).
    pub async fn metric(&self, base: &str, name: &str) -> f64 {
        let exposition = self
            .client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .expect("/metrics answers")
            .text()
            .await
            .expect("/metrics has a body");
        exposition
            .lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// The test database's URL, for raw SQL (SQLite file or PostgreSQL database).
    pub fn database_url(&self) -> &str {
        self._db.url()
    }

    /// Starts a fresh quote worker with [`TestApp::quote_settings`] (same queue), stopping the
    /// current one first if any. AMQP stacks only: over HTTP the API keeps the old port.
    pub async fn restart_quote_service(&mut self) {
        self.stop_quote_service().await;
        self.quote = Some(QuoteHandle::spawn(self.quote_settings.clone()).await);
    }

    /// Starts another API instance on this stack's database and transport (PostgreSQL for
    /// a real several-instances deployment).
    pub async fn spawn_other_api(&self) -> OtherApi {
        let app = api_service::startup::Application::build(self.api_settings.clone())
            .await
            .expect("second api_service failed to start");
        let address = format!("http://127.0.0.1:{}", app.port());
        let shutdown = app.shutdown_token();
        tokio::spawn(async move { app.run_until_stopped().await });
        OtherApi { address, shutdown }
    }

    /// A clone of the API's shutdown token: cancelling it is the in-process SIGTERM.
    pub fn api_shutdown_token(&self) -> CancellationToken {
        self.api_shutdown.clone()
    }

    /// Graceful API stop; `Some(how long it took)` when `run_until_stopped` returned Ok
    /// within `limit`.
    pub async fn stop_api_within(&mut self, limit: Duration) -> Option<Duration> {
        let started = Instant::now();
        self.api_shutdown.cancel();
        let task = self.api_task.take()?;
        match tokio::time::timeout(limit, task).await {
            Ok(Ok(Ok(()))) => Some(started.elapsed()),
            _ => None,
        }
    }
}

/// Generates `name::sqlite` and `name::postgres` tests from `async fn name(Backend)`, so a
/// storage-dependent behaviour is proven on both backends by one body.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::Backend::Postgres).await
            }
        }
    )*};
}
