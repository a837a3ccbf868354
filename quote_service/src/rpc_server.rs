//! The RabbitMQ RPC server: consumes [`QuoteRequest`]s from a durable queue and publishes each
//! [`QuoteReply`] to the default exchange with routing key = the request's `reply_to` (callers
//! use direct reply-to, `amq.rabbitmq.reply-to.*`) and its `correlation_id`.
//!
//! A message is acked only after its reply is published, so a worker that dies mid-request
//! leaves the message to be redelivered. Requests whose deadline has passed are acked and
//! dropped unfetched: nobody is waiting. Connection loss is survived by reconnecting with
//! backoff; readiness is false meanwhile.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, BasicRejectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use secrecy::{ExposeSecret, SecretString};
use shared::{CONTRACT_VERSION, ErrorCode, QuoteReply, QuoteRequest, REQUEST_ID_HEADER, Symbol};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, Span, field};

use crate::health::Readiness;
use crate::metrics::{Metrics, RpcOutcome};
use crate::quotes::{Answer, QuoteService};

/// Longest a request may ask us to work on it, whatever its `deadline_ms` says; keeps a
/// bogus far-future deadline from pinning resources.
const MAX_WAIT: Duration = Duration::from_secs(300);

/// Reconnect backoff: doubles from the first step up to the cap.
const RECONNECT_FIRST: Duration = Duration::from_millis(100);
const RECONNECT_CAP: Duration = Duration::from_secs(2);

/// How often the consume loop double-checks the connection, in case the broker vanished
/// without the consumer stream noticing.
const LIVENESS_CHECK: Duration = Duration::from_millis(500);

/// What answering one request produced.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// Publish this reply.
    Reply(Arc<Answer>, RpcOutcome),
    /// The caller's deadline had passed: ack and drop, do not fetch.
    Expired,
}

/// Answers one request body: validates it, honours its deadline and fetches the quote.
/// `None` means the request expired and must be dropped without a reply. Unit-testable
/// without a broker.
pub async fn answer(service: &QuoteService, payload: &[u8]) -> Option<QuoteReply> {
    match decide(service, payload, &Span::none()).await {
        Verdict::Reply(answer, _) => Some(answer.reply().clone()),
        Verdict::Expired => None,
    }
}

/// The core of [`answer`]; also records the JSON `request_id` on `span` when the AMQP header
/// did not carry one.
pub async fn decide(service: &QuoteService, payload: &[u8], span: &Span) -> Verdict {
    let request: QuoteRequest = match serde_json::from_slice(payload) {
        Ok(r) => r,
        Err(e) => {
            return malformed(
                ErrorCode::BadRequest,
                format!("the request is not a valid quote request: {e}"),
            );
        }
    };
    if let Some(id) = &request.request_id
        && span.has_field("request_id")
    {
        span.record("request_id", id.as_str());
    }
    if request.v != CONTRACT_VERSION {
        return malformed(
            ErrorCode::BadRequest,
            format!(
                "unsupported contract version {} (this worker speaks {CONTRACT_VERSION})",
                request.v
            ),
        );
    }
    let Some(remaining) = request.remaining() else {
        return Verdict::Expired;
    };
    let symbol = match Symbol::parse(&request.symbol) {
        Ok(s) => s,
        Err(e) => return malformed(ErrorCode::InvalidSymbol, format!("invalid symbol: {e}")),
    };
    let deadline = Instant::now() + remaining.min(MAX_WAIT);
    let answer = service.get(&symbol, deadline).await;
    let outcome = if answer.reply().http_status() == 200 {
        RpcOutcome::Ok
    } else {
        RpcOutcome::ErrorReply
    };
    Verdict::Reply(answer, outcome)
}

fn malformed(code: ErrorCode, message: String) -> Verdict {
    Verdict::Reply(
        Arc::new(Answer::error(code, message)),
        RpcOutcome::Malformed,
    )
}

/// What the consumer needs to handle messages; cheap to clone.
#[derive(Clone)]
pub struct RpcContext {
    pub service: QuoteService,
    pub metrics: Metrics,
}

/// Handles one delivery end to end: answer, publish the reply on `channel`, then ack.
/// Never panics on bad input; publishing or acking failures are logged (the broker
/// redelivers an unacked message).
#[tracing::instrument(
    name = "rpc_request",
    skip_all,
    fields(request_id = field::Empty, correlation_id = field::Empty, outcome = field::Empty)
)]
pub async fn handle_delivery(ctx: &RpcContext, channel: &Channel, delivery: Delivery) {
    let started = Instant::now();
    let span = Span::current();
    let props = &delivery.properties;
    // The header wins; the JSON `request_id` is recorded only when the header is absent.
    let json_id_span = match header_request_id(props) {
        Some(id) => {
            span.record("request_id", id);
            Span::none()
        }
        None => span.clone(),
    };
    if let Some(cid) = props.correlation_id() {
        span.record("correlation_id", cid.as_str());
    }
    let outcome = match props.reply_to().clone() {
        None => {
            tracing::warn!("request without reply_to rejected: nobody to answer");
            reject(&delivery).await;
            RpcOutcome::Rejected
        }
        Some(reply_to) => match decide(&ctx.service, &delivery.data, &json_id_span).await {
            Verdict::Expired => {
                tracing::info!("request's deadline passed before it was picked up; dropped");
                ack(&delivery).await;
                RpcOutcome::Expired
            }
            Verdict::Reply(answer, outcome) => {
                if outcome == RpcOutcome::Malformed {
                    tracing::warn!(error = %String::from_utf8_lossy(answer.json()), "malformed request");
                }
                let mut reply_props = BasicProperties::default()
                    .with_content_type(ShortString::from("application/json"));
                if let Some(cid) = props.correlation_id() {
                    reply_props = reply_props.with_correlation_id(cid.clone());
                }
                let published = channel
                    .basic_publish(
                        ShortString::from(""),
                        reply_to,
                        BasicPublishOptions::default(),
                        answer.json(),
                        reply_props,
                    )
                    .await;
                match published {
                    Ok(_) => {
                        ack(&delivery).await;
                        outcome
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not publish the reply; the request will be redelivered");
                        // Usually the channel is gone and the broker requeues by itself; if it
                        // is not, give the message back now rather than pin a prefetch slot.
                        let _ = delivery
                            .nack(BasicNackOptions {
                                requeue: true,
                                ..BasicNackOptions::default()
                            })
                            .await;
                        RpcOutcome::PublishFailed
                    }
                }
            }
        },
    };
    span.record("outcome", outcome.as_str());
    ctx.metrics.rpc_message(outcome, started.elapsed());
}

fn header_request_id(props: &BasicProperties) -> Option<&str> {
    let value = props.headers().as_ref()?.inner().get(REQUEST_ID_HEADER)?;
    match value {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
        AMQPValue::ShortString(s) => Some(s.as_str()),
        _ => None,
    }
}

async fn ack(delivery: &Delivery) {
    if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
        tracing::warn!(error = %e, "ack failed; the broker will redeliver");
    }
}

async fn reject(delivery: &Delivery) {
    if let Err(e) = delivery.reject(BasicRejectOptions { requeue: false }).await {
        tracing::warn!(error = %e, "reject failed");
    }
}

/// Why a connection's consume loop ended.
#[derive(Debug, thiserror::Error)]
enum ConsumeError {
    #[error(transparent)]
    Amqp(#[from] lapin::Error),
    #[error("{0}")]
    Lost(&'static str),
}

/// Connection settings for the consumer.
#[derive(Clone)]
pub struct RpcConfig {
    pub amqp_url: SecretString,
    pub queue: String,
    pub prefetch: u16,
    pub shutdown_grace: Duration,
}

/// Runs the consumer until `shutdown` is cancelled, reconnecting whenever the broker is lost.
/// On shutdown: cancels the consumer (prefetched but unstarted messages go back to the queue
/// when the channel closes), waits up to the grace period for in-flight requests, then closes.
pub async fn run(
    config: RpcConfig,
    ctx: RpcContext,
    readiness: Readiness,
    shutdown: CancellationToken,
) {
    let mut pause = RECONNECT_FIRST;
    // `host:port` only: the URL holds the password.
    let broker = shared::endpoint::of_url(config.amqp_url.expose_secret());
    while !shutdown.is_cancelled() {
        match consume(&config, &ctx, &readiness, &shutdown, &mut pause).await {
            Ok(()) => break,
            Err(e) => {
                let error = shared::error_chain::report(&e);
                readiness
                    .set_not_ready(format!("not consuming from RabbitMQ at {broker}: {error}"));
                tracing::warn!(%broker, error, retry_in = ?pause, "RabbitMQ consumer down; reconnecting");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(RECONNECT_CAP);
            }
        }
    }
    readiness.set_not_ready("shutting down");
}

/// One connection's life. `Ok` only after a graceful shutdown; `Err` when the broker is lost.
async fn consume(
    config: &RpcConfig,
    ctx: &RpcContext,
    readiness: &Readiness,
    shutdown: &CancellationToken,
    pause: &mut Duration,
) -> Result<(), ConsumeError> {
    let props = ConnectionProperties::default()
        .with_connection_name(format!("quote_service:{}", config.queue).into());
    let connection = Connection::connect(config.amqp_url.expose_secret(), props).await?;
    let channel = connection.create_channel().await?;
    channel
        .basic_qos(config.prefetch, BasicQosOptions::default())
        .await?;
    channel
        .queue_declare(
            config.queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    let mut consumer = channel
        .basic_consume(
            config.queue.as_str().into(),
            ShortString::from(""),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    readiness.set_ready();
    *pause = RECONNECT_FIRST;
    tracing::info!(queue = %config.queue, prefetch = config.prefetch, "consuming quote requests");

    let tracker = TaskTracker::new();
    let mut liveness = tokio::time::interval(LIVENESS_CHECK);
    let lost = loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break None,
            next = consumer.next() => match next {
                Some(Ok(delivery)) => {
                    let ctx = ctx.clone();
                    let channel = channel.clone();
                    tracker.spawn(
                        async move { handle_delivery(&ctx, &channel, delivery).await }
                            .instrument(Span::current()),
                    );
                }
                Some(Err(e)) => break Some(e.into()),
                None => break Some(ConsumeError::Lost("the broker cancelled the consumer")),
            },
            _ = liveness.tick() => {
                if !connection.status().connected() || !channel.status().connected() {
                    break Some(ConsumeError::Lost("the connection to RabbitMQ was lost"));
                }
            }
        }
    };
    if let Some(e) = lost {
        // In-flight handlers finish on their own; their acks fail and the broker redelivers.
        tracker.close();
        return Err(e);
    }

    readiness.set_not_ready("shutting down");
    tracing::info!("shutting down: no new quote requests taken");
    if let Err(e) = channel
        .basic_cancel(consumer.tag(), BasicCancelOptions::default())
        .await
    {
        tracing::warn!(error = %e, "could not cancel the consumer");
    }
    tracker.close();
    if tokio::time::timeout(config.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            unfinished = tracker.len(),
            "shutdown grace period over; unfinished requests will be redelivered"
        );
    }
    // Closing the channel returns every unacked message (prefetched, unstarted) to the queue.
    let _ = channel.close(200, ShortString::from("shutting down")).await;
    let _ = connection
        .close(200, ShortString::from("shutting down"))
        .await;
    Ok(())
}
