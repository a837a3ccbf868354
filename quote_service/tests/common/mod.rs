//! Helpers shared by the integration tests: starting the fake feed and the application, a
//! small RPC client on a private reply queue, and the "skip unless CI" rule for RabbitMQ.

#![allow(dead_code)] // each test binary uses a different subset

use std::time::Duration;

use fake_stooq::FakeStooq;
use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer};
use quote_service::metrics::Metrics;
use quote_service::quotes::QuoteService;
use quote_service::upstream::StooqClient;
use quote_service::{Application, Settings};
// Re-exported where the tests call them; each test binary uses a different subset.
#[allow(unused_imports)]
pub use shared::test_support::{poll::wait_until, ports::refusing_addr};
use shared::{QuoteReply, QuoteRequest};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// True when RabbitMQ answers. Outside CI a missing broker skips the test (with a note);
/// in CI it fails it.
pub async fn rabbitmq_available() -> bool {
    let attempt = tokio::time::timeout(
        Duration::from_secs(3),
        Connection::connect(&amqp_url(), ConnectionProperties::default()),
    )
    .await;
    match attempt {
        Ok(Ok(conn)) => {
            let _ = conn.close(200, "probe".into()).await;
            true
        }
        other => {
            let why = match other {
                Ok(Err(e)) => e.to_string(),
                _ => "connect timed out".into(),
            };
            if shared::config::running_in_ci() {
                panic!(
                    "RabbitMQ is required in CI but unreachable at {}: {why}",
                    amqp_url()
                );
            }
            eprintln!("SKIPPED: RabbitMQ unreachable ({why})");
            false
        }
    }
}

/// Settings against `fake`, HTTP transport only; `tweak` adjusts them.
pub fn http_settings(fake: &FakeStooq, tweak: impl FnOnce(&mut Settings)) -> Settings {
    let mut s = Settings::for_http_tests(&fake.url());
    tweak(&mut s);
    s
}

/// A [`QuoteService`] against `fake`, without any server around it.
pub fn quote_service(fake: &FakeStooq, tweak: impl FnOnce(&mut Settings)) -> QuoteService {
    let settings = http_settings(fake, tweak);
    let metrics = Metrics::new();
    let client = StooqClient::new(&settings, metrics.clone()).expect("client builds");
    QuoteService::new(&settings, client, metrics)
}

/// A [`StooqClient`] against `fake`.
pub fn stooq_client(fake: &FakeStooq, tweak: impl FnOnce(&mut Settings)) -> StooqClient {
    let settings = http_settings(fake, tweak);
    StooqClient::new(&settings, Metrics::new()).expect("client builds")
}

/// Serves `router` on a free loopback port for the rest of the test; returns its address.
/// For stand-ins of stooq that behave in ways the fake feed does not (redirects).
pub async fn serve(router: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a free port");
    let addr = listener.local_addr().expect("bound address");
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// A running application. Dropping it does not stop it: call [`TestApp::stop`].
pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub token: CancellationToken,
    pub readiness: quote_service::health::Readiness,
    pub metrics: Metrics,
    pub queue: String,
    pub task: JoinHandle<anyhow::Result<()>>,
}

impl TestApp {
    pub async fn spawn(settings: Settings) -> TestApp {
        shared::telemetry::init_for_tests();
        let queue = settings.quote_queue.clone();
        let app = Application::build(settings).await.expect("app builds");
        let base = format!("http://127.0.0.1:{}", app.port());
        let token = app.shutdown_token();
        let readiness = app.readiness();
        let metrics = app.metrics();
        let task = tokio::spawn(app.run_until_stopped());
        TestApp {
            base,
            http: reqwest::Client::new(),
            token,
            readiness,
            metrics,
            queue,
            task,
        }
    }

    /// The address the HTTP server listens on.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.base
            .trim_start_matches("http://")
            .parse()
            .expect("base is http://ip:port")
    }

    pub async fn get(&self, path_and_query: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path_and_query}", self.base))
            .send()
            .await
            .expect("HTTP request reaches the app")
    }

    /// Waits until readiness is `want`, up to `limit`.
    pub async fn wait_ready(&self, want: bool, limit: Duration) -> bool {
        let until = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < until {
            if self.readiness.is_ready() == want {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.readiness.is_ready() == want
    }

    /// `quote_rpc_messages_total{outcome}` as `/metrics` would show it (0 before the first).
    pub fn rpc_messages(&self, outcome: &str) -> u64 {
        let prefix = format!(r#"quote_rpc_messages_total{{outcome="{outcome}"}} "#);
        self.metrics
            .render()
            .lines()
            .find_map(|line| line.strip_prefix(prefix.as_str()))
            .map_or(0, |n| n.trim().parse().expect("a counter value"))
    }

    /// Graceful stop; returns once `run_until_stopped` has.
    pub async fn stop(self) {
        self.token.cancel();
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("app stops within the grace period")
            .expect("app task did not panic")
            .expect("app stopped cleanly");
    }
}

/// A test's own RabbitMQ client: publishes requests with `reply_to` set to an exclusive,
/// server-named reply queue it consumes.
pub struct RpcClient {
    pub connection: Connection,
    pub channel: Channel,
    pub reply_queue: String,
    replies: Consumer,
}

/// A reply as received: body and the properties the worker set.
#[derive(Debug)]
pub struct Received {
    pub reply: QuoteReply,
    pub correlation_id: Option<String>,
    pub content_type: Option<String>,
}

impl RpcClient {
    pub async fn connect() -> RpcClient {
        let connection = Connection::connect(&amqp_url(), ConnectionProperties::default())
            .await
            .expect("test connects to RabbitMQ");
        let channel = connection.create_channel().await.expect("channel");
        let q = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("reply queue");
        let reply_queue = q.name().as_str().to_owned();
        let replies = channel
            .basic_consume(
                reply_queue.as_str().into(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("consume replies");
        RpcClient {
            connection,
            channel,
            reply_queue,
            replies,
        }
    }

    /// Publishes raw bytes to `queue` with the given properties.
    pub async fn publish_raw(&self, queue: &str, body: &[u8], props: BasicProperties) {
        self.channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                body,
                props,
            )
            .await
            .expect("publish")
            .await
            .expect("publish confirm");
    }

    /// Properties for a request answered on this client's reply queue.
    pub fn props(&self, correlation_id: &str) -> BasicProperties {
        BasicProperties::default()
            .with_reply_to(self.reply_queue.as_str().into())
            .with_correlation_id(correlation_id.into())
            .with_content_type("application/json".into())
    }

    pub fn props_with_request_id(&self, correlation_id: &str, request_id: &str) -> BasicProperties {
        let mut headers = FieldTable::default();
        headers.insert(
            ShortString::from(shared::REQUEST_ID_HEADER),
            AMQPValue::LongString(LongString::from(request_id)),
        );
        self.props(correlation_id).with_headers(headers)
    }

    pub async fn send(&self, queue: &str, request: &QuoteRequest, correlation_id: &str) {
        let body = serde_json::to_vec(request).unwrap();
        self.publish_raw(queue, &body, self.props(correlation_id))
            .await;
    }

    /// The next reply, or `None` after `limit`.
    pub async fn next_reply(&mut self, limit: Duration) -> Option<Received> {
        let delivery = tokio::time::timeout(limit, self.replies.next())
            .await
            .ok()??
            .expect("reply delivery");
        let reply = serde_json::from_slice(&delivery.data).expect("reply is a QuoteReply");
        Some(Received {
            reply,
            correlation_id: delivery
                .properties
                .correlation_id()
                .as_ref()
                .map(|c| c.as_str().to_owned()),
            content_type: delivery
                .properties
                .content_type()
                .as_ref()
                .map(|c| c.as_str().to_owned()),
        })
    }

    /// Consumers the broker has on `queue` right now.
    pub async fn consumer_count(&self, queue: &str) -> u32 {
        self.inspect(queue).await.consumer_count()
    }

    /// Messages ready in `queue` (not counting unacked ones).
    pub async fn ready_count(&self, queue: &str) -> u32 {
        self.inspect(queue).await.message_count()
    }

    /// The broker's view of `queue`, which must exist: a passive declare creates nothing.
    async fn inspect(&self, queue: &str) -> lapin::Queue {
        self.channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("queue exists")
    }

    pub async fn delete_queue(&self, queue: &str) {
        let _ = self
            .channel
            .queue_delete(queue.into(), QueueDeleteOptions::default())
            .await;
    }
}

/// Settings for an AMQP app against `fake` with a fresh queue.
pub fn amqp_settings(fake: &FakeStooq, tweak: impl FnOnce(&mut Settings)) -> Settings {
    let mut s = Settings::for_tests(&fake.url());
    tweak(&mut s);
    s
}
