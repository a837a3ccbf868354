//! The RabbitMQ RPC server: consumes [`QuoteRequest`]s (contract version 1) and
//! [`BatchQuoteRequest`]s (version 2) from a durable queue and publishes each reply
//! ([`QuoteReply`], [`BatchQuoteReply`]) to the default exchange with routing key = the request's `reply_to` (callers
//! use direct reply-to, `amq.rabbitmq.reply-to.*`) and its `correlation_id`.
//!
//! A message is acked only after its reply is published, so a worker that dies mid-request
//! leaves the message to be redelivered. Requests whose deadline has passed are acked and
//! dropped unfetched: nobody is waiting. Connection loss is survived by reconnecting with
//! backoff; readiness is false meanwhile.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, BasicRejectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use secrecy::{ExposeSecret, SecretString};
use shared::contract::VersionProbe;
use shared::reconnect::Reconnect;
use shared::{
    BATCH_CONTRACT_VERSION, BatchQuoteReply, BatchQuoteRequest, CONTRACT_VERSION, ErrorCode,
    MAX_BATCH_SYMBOLS, QuoteReply, QuoteRequest, QuoteResult, REQUEST_ID_HEADER, Symbol,
};
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

/// How often the consume loop double-checks the connection, in case the broker vanished
/// without the consumer stream noticing.
const LIVENESS_CHECK: Duration = Duration::from_millis(500);

/// What answering one request produced.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// Publish this reply (to a version-1 request, or a refusal in version 1).
    Reply(Arc<Answer>, RpcOutcome),
    /// Publish this serialised [`BatchQuoteReply`] (to a version-2 request).
    Batch(Bytes, RpcOutcome),
    /// The caller's deadline had passed: ack and drop, do not fetch.
    Expired,
}

impl Verdict {
    /// The reply to publish, `None` for an expired request.
    pub fn json(&self) -> Option<&Bytes> {
        match self {
            Verdict::Reply(answer, _) => Some(answer.json()),
            Verdict::Batch(json, _) => Some(json),
            Verdict::Expired => None,
        }
    }
}

/// Answers one request body: validates it, honours its deadline and fetches the quote(s).
/// `None` means the request expired and must be dropped without a reply; otherwise the
/// reply exactly as it would be published. Unit-testable without a broker.
pub async fn answer_bytes(service: &QuoteService, payload: &[u8]) -> Option<Bytes> {
    decide(service, payload, &Span::none())
        .await
        .json()
        .cloned()
}

/// [`answer_bytes`] read as a version-1 reply (what a version-1 request, or any message this
/// worker cannot read, is answered with).
pub async fn answer(service: &QuoteService, payload: &[u8]) -> Option<QuoteReply> {
    let json = answer_bytes(service, payload).await?;
    Some(serde_json::from_slice(&json).expect("the worker's own reply parses"))
}

/// [`answer_bytes`] read as a reply to a batch: a version-2 reply, or the version-1 refusal of
/// a message this worker cannot read (same shape, `v: 1`).
pub async fn answer_batch(service: &QuoteService, payload: &[u8]) -> Option<BatchQuoteReply> {
    let json = answer_bytes(service, payload).await?;
    Some(serde_json::from_slice(&json).expect("the worker's own reply parses"))
}

/// The core of [`answer`]; also records the JSON `request_id` on `span` when the AMQP header
/// did not carry one.
///
/// The version is read first: 1 and 2 are answered in their own version; anything else (or
/// a message without a readable `v`) is refused in version 1, the refusal every worker has
/// always given, so a newer caller recognises an older worker by it.
pub async fn decide(service: &QuoteService, payload: &[u8], span: &Span) -> Verdict {
    match serde_json::from_slice::<VersionProbe>(payload) {
        Ok(VersionProbe {
            v: BATCH_CONTRACT_VERSION,
        }) => decide_batch(service, payload, span).await,
        Ok(VersionProbe { v }) if v != CONTRACT_VERSION => malformed(
            ErrorCode::BadRequest,
            format!(
                "unsupported contract version {v} (this worker speaks \
                 {CONTRACT_VERSION} and {BATCH_CONTRACT_VERSION})"
            ),
        ),
        _ => decide_single(service, payload, span).await,
    }
}

/// A version-1 request: one symbol.
async fn decide_single(service: &QuoteService, payload: &[u8], span: &Span) -> Verdict {
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

/// A version-2 request: many symbols, one reply with a result per symbol. The symbols that
/// break the rules get their own `invalid_symbol` result; the others are fetched together
/// (see [`QuoteService::get_many`]).
async fn decide_batch(service: &QuoteService, payload: &[u8], span: &Span) -> Verdict {
    let request: BatchQuoteRequest = match serde_json::from_slice(payload) {
        Ok(r) => r,
        Err(e) => {
            return batch_refused(
                ErrorCode::BadRequest,
                format!("the request is not a valid batch quote request: {e}"),
            );
        }
    };
    if let Some(id) = &request.request_id
        && span.has_field("request_id")
    {
        span.record("request_id", id.as_str());
    }
    if request.symbols.is_empty() || request.symbols.len() > MAX_BATCH_SYMBOLS {
        return batch_refused(
            ErrorCode::BadRequest,
            format!(
                "a batch carries 1 to {MAX_BATCH_SYMBOLS} symbols, not {}",
                request.symbols.len()
            ),
        );
    }
    let Some(remaining) = request.remaining() else {
        return Verdict::Expired;
    };
    let deadline = Instant::now() + remaining.min(MAX_WAIT);
    let answers = answer_symbols(service, &request.symbols, deadline).await;
    let outcome = if answers.iter().any(|r| matches!(r, QuoteResult::Ok { .. })) {
        RpcOutcome::Ok
    } else {
        RpcOutcome::ErrorReply
    };
    batch_verdict(&BatchQuoteReply::ok(answers), outcome)
}

/// One result per raw symbol, in order: `invalid_symbol` for those that break the rules,
/// the service's answer for the rest (all fetched in one [`QuoteService::get_many`]).
pub async fn answer_symbols(
    service: &QuoteService,
    raw: &[String],
    deadline: Instant,
) -> Vec<QuoteResult> {
    let parsed: Vec<Result<Symbol, String>> = raw
        .iter()
        .map(|s| Symbol::parse(s).map_err(|e| format!("invalid symbol: {e}")))
        .collect();
    let valid: Vec<Symbol> = parsed.iter().filter_map(|p| p.clone().ok()).collect();
    let mut answers = service.get_many(&valid, deadline).await.into_iter();
    parsed
        .into_iter()
        .map(|p| match p {
            Ok(_) => answers
                .next()
                .map(|answer| answer.reply().result.clone())
                .unwrap_or_else(|| QuoteResult::Error {
                    error: shared::QuoteError::new(ErrorCode::Internal, "no answer"),
                }),
            Err(message) => QuoteResult::Error {
                error: shared::QuoteError::new(ErrorCode::InvalidSymbol, message),
            },
        })
        .collect()
}

/// A version-2 reply for the request as a whole.
pub fn batch_refused(code: ErrorCode, message: String) -> Verdict {
    batch_verdict(
        &BatchQuoteReply::error(code, message),
        RpcOutcome::Malformed,
    )
}

fn batch_verdict(reply: &BatchQuoteReply, outcome: RpcOutcome) -> Verdict {
    match serde_json::to_vec(reply) {
        Ok(json) => Verdict::Batch(Bytes::from(json), outcome),
        Err(e) => malformed(
            ErrorCode::Internal,
            format!("could not encode the reply: {e}"),
        ),
    }
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
                publish(&delivery, channel, reply_to, answer.json(), outcome).await
            }
            Verdict::Batch(json, outcome) => {
                publish(&delivery, channel, reply_to, &json, outcome).await
            }
        },
    };
    span.record("outcome", outcome.as_str());
    ctx.metrics.rpc_message(outcome, started.elapsed());
}

/// Publishes the reply with the request's correlation id, then acks the request.
async fn publish(
    delivery: &Delivery,
    channel: &Channel,
    reply_to: ShortString,
    json: &[u8],
    outcome: RpcOutcome,
) -> RpcOutcome {
    let props = &delivery.properties;
    if outcome == RpcOutcome::Malformed {
        tracing::warn!(error = %String::from_utf8_lossy(json), "malformed request");
    }
    let mut reply_props =
        BasicProperties::default().with_content_type(ShortString::from("application/json"));
    if let Some(cid) = props.correlation_id() {
        reply_props = reply_props.with_correlation_id(cid.clone());
    }
    let published = channel
        .basic_publish(
            ShortString::from(""),
            reply_to,
            BasicPublishOptions::default(),
            json,
            reply_props,
        )
        .await;
    match published {
        Ok(_) => {
            ack(delivery).await;
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
    // `host:port` only: the URL holds the password.
    let broker = shared::endpoint::of_url(config.amqp_url.expose_secret());
    let mut reconnect = Reconnect::new("RPC consumer", broker.clone());
    while !shutdown.is_cancelled() {
        let Err(e) = consume(&config, &ctx, &readiness, &shutdown, &mut reconnect).await else {
            break;
        };
        let error = shared::error_chain::report(&e);
        readiness.set_not_ready(format!("not consuming from RabbitMQ at {broker}: {error}"));
        if !reconnect.after_loss(&error, &shutdown).await {
            break;
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
    reconnect: &mut Reconnect,
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
    reconnect.connected();
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
