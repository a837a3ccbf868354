//! A quote worker from before contract v2, for the rolling-upgrade tests: it answers v1
//! requests with the real quote service (so quotes, not-founds and upstream failures are the
//! real ones) and refuses everything else exactly as a v1-only worker did.
//!
//! - Over AMQP: a consumer on the request queue that reads each message as a v1
//!   `QuoteRequest` and replies `bad_request` (in v1) when it cannot, the only refusal a
//!   v1 worker knew.
//! - Over HTTP: the real HTTP router with `/api/v1/quotes` answered by the bare 404 a v1
//!   quote service gives any route it does not have.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::response::IntoResponse;
use fake_stooq::FakeStooq;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, QueueDeclareOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use quote_service::health::Readiness;
use quote_service::http_server::{self, AppState};
use quote_service::metrics::Metrics;
use quote_service::quotes::QuoteService;
use quote_service::upstream::StooqClient;
use shared::{ErrorCode, QuoteReply, QuoteRequest};
use tokio_util::sync::CancellationToken;

use crate::AMQP_URL;

/// A running old worker; stopped on drop.
pub struct OldWorker {
    refused: Arc<AtomicU64>,
    stop: CancellationToken,
    /// Where the HTTP one listens (`http://127.0.0.1:port`); empty for the AMQP one.
    pub url: String,
}

impl OldWorker {
    /// Messages (AMQP) or batch requests (HTTP) it refused as unreadable.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }
}

impl Drop for OldWorker {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn service(stooq: &FakeStooq) -> QuoteService {
    let mut settings = quote_service::settings::Settings::for_tests(&stooq.url());
    settings.cache_ttl = Duration::ZERO;
    settings.not_found_cache_ttl = Duration::ZERO;
    let metrics = Metrics::new();
    let client = StooqClient::new(&settings, metrics.clone()).expect("stooq client");
    QuoteService::new(&settings, client, metrics)
}

/// What a v1-only worker answers to one message body.
async fn answer_as_v1(
    service: &QuoteService,
    payload: &[u8],
    refused: &AtomicU64,
) -> Option<Vec<u8>> {
    let reply = match serde_json::from_slice::<QuoteRequest>(payload) {
        Err(e) => QuoteReply::error(
            ErrorCode::BadRequest,
            format!("the request is not a valid quote request: {e}"),
        ),
        Ok(request) if request.v != 1 => QuoteReply::error(
            ErrorCode::BadRequest,
            format!(
                "unsupported contract version {} (this worker speaks 1)",
                request.v
            ),
        ),
        Ok(_) => {
            let reply = quote_service::rpc_server::answer(service, payload).await?;
            return Some(serde_json::to_vec(&reply).expect("reply encodes"));
        }
    };
    refused.fetch_add(1, Ordering::SeqCst);
    Some(serde_json::to_vec(&reply).expect("reply encodes"))
}

/// Consumes `queue` as a v1-only worker against `stooq`.
pub async fn spawn_amqp(queue: &str, stooq: &FakeStooq) -> OldWorker {
    let service = service(stooq);
    let connection = Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .expect("connect to RabbitMQ");
    let channel = connection.create_channel().await.expect("channel");
    channel
        .basic_qos(32, BasicQosOptions::default())
        .await
        .expect("qos");
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declare the request queue");
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "old-worker".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let refused = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let (counter, until) = (refused.clone(), stop.clone());
    tokio::spawn(async move {
        loop {
            let delivery = tokio::select! {
                _ = until.cancelled() => break,
                next = consumer.next() => match next {
                    Some(Ok(delivery)) => delivery,
                    _ => break,
                },
            };
            let (service, channel, counter) = (service.clone(), channel.clone(), counter.clone());
            tokio::spawn(async move {
                let props = &delivery.properties;
                if let (Some(reply_to), Some(json)) = (
                    props.reply_to().clone(),
                    answer_as_v1(&service, &delivery.data, &counter).await,
                ) {
                    let mut reply_props = BasicProperties::default();
                    if let Some(cid) = props.correlation_id() {
                        reply_props = reply_props.with_correlation_id(cid.clone());
                    }
                    let _ = channel
                        .basic_publish(
                            ShortString::from(""),
                            reply_to,
                            BasicPublishOptions::default(),
                            &json,
                            reply_props,
                        )
                        .await;
                }
                let _ = delivery.ack(BasicAckOptions::default()).await;
            });
        }
        let _ = connection.close(200, "old worker stopped".into()).await;
    });
    OldWorker {
        refused,
        stop,
        url: String::new(),
    }
}

/// Serves the quote service's HTTP side as it was before `/api/v1/quotes`.
pub async fn spawn_http(stooq: &FakeStooq) -> OldWorker {
    let readiness = Readiness::not_ready("starting");
    readiness.set_ready();
    let refused = Arc::new(AtomicU64::new(0));
    let counter = refused.clone();
    let router = http_server::router(AppState {
        service: service(stooq),
        metrics: Metrics::new(),
        readiness,
        request_timeout: Duration::from_secs(5),
        max_wait: Duration::from_secs(5),
    })
    .layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            let counter = counter.clone();
            async move {
                if request.uri().path() == "/api/v1/quotes" {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let body = axum::Json(serde_json::json!({ "error": "no such route" }));
                    return (axum::http::StatusCode::NOT_FOUND, body).into_response();
                }
                next.run(request).await
            }
        },
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let stop = CancellationToken::new();
    let until = stop.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(async move { until.cancelled().await })
            .await;
    });
    OldWorker { refused, stop, url }
}
