//! Test peers shared by the integration tests: broker access with the skip rule, a tiny
//! responder playing the quote service on a uniquely named queue, a way to serve an HTTP
//! stand-in for it, and the API itself running on a free port with two users.
#![allow(dead_code)]

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
// Re-exported where the tests call them; each test binary uses a different subset.
#[allow(unused_imports)]
pub use shared::test_support::poll::wait_until;
use shared::{ErrorCode, Quote, QuoteReply, QuoteRequest, Symbol};

const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| URL.to_owned())
}

/// Connects, or decides the test must be skipped (outside CI).
pub async fn broker() -> Option<Connection> {
    match tokio::time::timeout(
        Duration::from_secs(5),
        Connection::connect(&amqp_url(), ConnectionProperties::default()),
    )
    .await
    {
        Ok(Ok(conn)) => Some(conn),
        other => {
            let reason = match other {
                Ok(Err(e)) => e.to_string(),
                _ => "timed out".into(),
            };
            if shared::config::running_in_ci() {
                panic!("RabbitMQ is required in CI but unreachable: {reason}");
            }
            eprintln!("SKIPPED: RabbitMQ unreachable at {}: {reason}", amqp_url());
            None
        }
    }
}

pub fn unique_queue() -> String {
    format!("test.api.quotes.{}", uuid::Uuid::new_v4().simple())
}

/// Declares the queue like the quote service would (durable-ish; expires when unused so a
/// crashed test leaves nothing behind).
pub async fn declare(conn: &Connection, queue: &str) {
    let channel = conn.create_channel().await.unwrap();
    let mut args = FieldTable::default();
    args.insert("x-expires".into(), AMQPValue::LongUInt(120_000));
    channel
        .queue_declare(queue.into(), QueueDeclareOptions::default(), args)
        .await
        .unwrap();
}

pub async fn delete(conn: &Connection, queue: &str) {
    if let Ok(channel) = conn.create_channel().await {
        let _ = channel
            .queue_delete(queue.into(), QueueDeleteOptions::default())
            .await;
    }
}

#[derive(Clone, Copy)]
pub enum Mode {
    /// Replies with a quote whose close is the number in the symbol (`s42` → 42.0) after a
    /// per-message delay, so replies arrive out of order.
    Echo { max_delay_ms: u64 },
    /// Echoes after a fixed delay.
    Slow { delay_ms: u64 },
    /// Replies `not_found` for every symbol.
    NotFound,
    /// Consumes and never replies.
    Silent,
    /// Never replies for this symbol, echoes every other at once: a call that can end only
    /// by its timeout or a failure of the link, however slow the machine is.
    StallOn { symbol: &'static str },
}

#[derive(Default)]
pub struct Seen {
    pub messages: AtomicUsize,
    pub request_ids: Mutex<Vec<String>>,
    pub expirations: Mutex<HashSet<String>>,
    pub deadlines_ok: AtomicUsize,
}

pub struct Responder {
    conn: Connection,
    pub seen: Arc<Seen>,
}

impl Responder {
    pub async fn start(queue: &str, mode: Mode) -> Responder {
        let conn = Connection::connect(&amqp_url(), ConnectionProperties::default())
            .await
            .unwrap();
        declare(&conn, queue).await;
        let channel = conn.create_channel().await.unwrap();
        let mut consumer = channel
            .basic_consume(
                queue.into(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let seen = Arc::new(Seen::default());
        let seen2 = seen.clone();
        tokio::spawn(async move {
            while let Some(Ok(delivery)) = consumer.next().await {
                seen2.messages.fetch_add(1, Ordering::SeqCst);
                let props = delivery.properties.clone();
                if let Some(AMQPValue::LongString(id)) = props
                    .headers()
                    .as_ref()
                    .and_then(|h| h.inner().get(shared::REQUEST_ID_HEADER))
                {
                    seen2.request_ids.lock().unwrap().push(id.to_string());
                }
                if let Some(exp) = props.expiration() {
                    seen2.expirations.lock().unwrap().insert(exp.to_string());
                }
                let request: QuoteRequest = serde_json::from_slice(&delivery.data).unwrap();
                if request.remaining().is_some() {
                    seen2.deadlines_ok.fetch_add(1, Ordering::SeqCst);
                }
                let reply = match mode {
                    Mode::Silent => continue,
                    Mode::StallOn { symbol } if request.symbol.eq_ignore_ascii_case(symbol) => {
                        continue;
                    }
                    Mode::NotFound => QuoteReply::error(ErrorCode::NotFound, "no such symbol"),
                    Mode::Echo { .. } | Mode::Slow { .. } | Mode::StallOn { .. } => {
                        QuoteReply::ok(quote_for(&request.symbol))
                    }
                };
                let delay = match mode {
                    Mode::Echo { max_delay_ms } if max_delay_ms > 0 => {
                        Duration::from_millis(rand_delay(&request.symbol, max_delay_ms))
                    }
                    Mode::Slow { delay_ms } => Duration::from_millis(delay_ms),
                    _ => Duration::ZERO,
                };
                let channel = channel.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let reply_to = props.reply_to().clone().unwrap();
                    let mut out = BasicProperties::default();
                    if let Some(c) = props.correlation_id() {
                        out = out.with_correlation_id(c.clone());
                    }
                    let _ = channel
                        .basic_publish(
                            "".into(),
                            reply_to,
                            BasicPublishOptions::default(),
                            &serde_json::to_vec(&reply).unwrap(),
                            out,
                        )
                        .await;
                });
            }
        });
        Responder { conn, seen }
    }

    pub async fn stop(self) {
        let _ = self.conn.close(200, "bye".into()).await;
    }
}

fn rand_delay(symbol: &str, max: u64) -> u64 {
    let h = symbol
        .bytes()
        .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
    h % max
}

pub fn quote_for(symbol: &str) -> Quote {
    let n: f64 = symbol
        .trim_start_matches(|c: char| c.is_ascii_alphabetic())
        .parse()
        .unwrap_or(-1.0);
    Quote {
        symbol: symbol.to_uppercase(),
        name: format!("NAME {symbol}"),
        open: n,
        high: n,
        low: n,
        close: n,
        volume: None,
        time: Utc.with_ymd_and_hms(2024, 5, 10, 20, 0, 9).unwrap(),
        local_date: chrono::NaiveDate::from_ymd_opt(2024, 5, 10).unwrap(),
        local_time: chrono::NaiveTime::from_hms_opt(22, 0, 9).unwrap(),
    }
}

pub fn sym(s: &str) -> Symbol {
    Symbol::parse(s).unwrap()
}

/// Serves `router` (an HTTP stand-in for the quote service) on a free loopback port until the
/// returned token is cancelled; returns its base URL.
pub async fn serve(router: axum::Router) -> (String, tokio_util::sync::CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = tokio_util::sync::CancellationToken::new();
    let stopped = stop.clone();
    tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(stopped.cancelled_owned())
            .await
    });
    (url, stop)
}

/// An HTTP stand-in for the quote service that answers every symbol with [`quote_for`] and
/// is always ready; returns its base URL and the token that stops it.
pub async fn echo_quote_service() -> (String, tokio_util::sync::CancellationToken) {
    let router = axum::Router::new()
        .route(
            "/api/v1/quote",
            axum::routing::get(
                |axum::extract::Query(params): axum::extract::Query<
                    std::collections::HashMap<String, String>,
                >| async move {
                    let symbol = params.get("symbol").cloned().unwrap_or_default();
                    axum::Json(QuoteReply::ok(quote_for(&symbol)))
                },
            ),
        )
        .route("/readyz", axum::routing::get(|| async { "ok" }));
    serve(router).await
}

/// The API served on a free port, with `alice` (user) and `root` (admin), each with the
/// password `<name>-password`.
pub struct Running {
    pub base: String,
    /// Base URL of the operators' listener, when INTERNAL_ADDR is set.
    pub internal: Option<String>,
    pub client: reqwest::Client,
    pub state: api_service::state::AppState,
    stop: tokio_util::sync::CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
    _db: api_service::store::provision::TestDatabase,
}

pub async fn start(
    settings: api_service::settings::Settings,
    db: api_service::store::provision::TestDatabase,
) -> Running {
    use api_service::store::Role;
    let app = api_service::startup::Application::build(settings)
        .await
        .expect("application builds");
    let store = app.store();
    for (name, role) in [("alice", Role::User), ("root", Role::Admin)] {
        let password = secrecy::SecretString::from(format!("{name}-password"));
        api_service::users::create_user(store.as_ref(), name, &password, role)
            .await
            .unwrap();
    }
    Running {
        base: format!("http://127.0.0.1:{}", app.port()),
        internal: app.internal_addr().map(|addr| format!("http://{addr}")),
        client: reqwest::Client::new(),
        state: app.state().clone(),
        stop: app.shutdown_token(),
        handle: tokio::spawn(app.run_until_stopped()),
        _db: db,
    }
}

impl Running {
    /// A bearer token for one of the two users.
    pub async fn login(&self, username: &str) -> String {
        let reply: serde_json::Value = self
            .client
            .post(format!("{}/api/v1/login", self.base))
            .json(&serde_json::json!({"username": username, "password": format!("{username}-password")}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        reply["token"].as_str().expect("token").to_owned()
    }

    /// `GET path` on the operators' listener (INTERNAL_ADDR must be set).
    pub async fn get_internal(&self, path: &str) -> reqwest::Response {
        let base = self.internal.as_deref().expect("INTERNAL_ADDR is set");
        self.client
            .get(format!("{base}{path}"))
            .send()
            .await
            .unwrap()
    }

    /// The address the API listens on.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.base
            .trim_start_matches("http://")
            .parse()
            .expect("base is http://ip:port")
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut request = self.client.get(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }

    /// Stops the server and waits for its graceful shutdown.
    pub async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.handle)
            .await
            .expect("stops within the grace period")
            .unwrap()
            .unwrap();
    }
}
