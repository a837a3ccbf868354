//! Quote RPC over RabbitMQ with direct reply-to.
//!
//! One long-lived connection carries every call: requests are published on one channel with
//! `reply_to = amq.rabbitmq.reply-to` and a fresh correlation id, replies come back to a
//! no-ack consumer on that same channel (direct reply-to requires both on one channel), and
//! a correlation map hands each reply to its waiting caller. No reply queue is declared per
//! call, so thousands of concurrent calls cost nothing but map entries.
//!
//! Failing fast matters more than anything else here: a durable queue with no worker
//! happily accepts messages that nobody will ever answer, so a background task polls the
//! queue's consumer count (a declare on a separate channel, every 500 ms) and calls are
//! refused at once while it is zero, the queue is missing or the connection is down.
//!
//! The poll declares the queue exactly as the quote service does (durable, no arguments:
//! see `quote_service/src/rpc_server.rs`), which is idempotent and answers with the consumer
//! count. So the queue exists as soon as either side starts, and asking about it never
//! fails: a passive declare of a missing queue would make the broker close the channel, which
//! lapin logs at ERROR on every poll while the API waits for its first worker. Only a queue
//! declared with other properties (which the quote service itself could not consume) makes
//! the declare fail; the poll then falls back to passive declares for that connection.
//! Publishes are `mandatory` on a confirm-mode channel, so a queue deleted between two polls
//! still fails the call immediately through basic.return.
//!
//! Reconnection is done here rather than by lapin's auto-recovery: when the link dies every
//! waiting call must fail at once (its reply can no longer arrive), which is easiest to get
//! right when this module owns the whole life cycle.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, PublisherConfirm,
};
use shared::{BatchQuoteRequest, ErrorCode, Quote, QuoteError, QuoteReply, QuoteRequest, Symbol};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::instrument;

use super::batch::{self, OldWorkerNotice};
use super::batcher::{BatchWire, Landing};
use super::{QuoteTransport, SymbolResult, TransportError};

/// RabbitMQ's pseudo-queue for direct reply-to.
const REPLY_TO: &str = "amq.rabbitmq.reply-to";
/// How often the consumer count is refreshed: the window in which a vanished worker can
/// still cause a call to wait for its timeout instead of failing fast.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct AmqpConfig {
    /// Broker URL; may contain credentials, so never logged.
    pub url: String,
    pub queue: String,
    pub rpc_timeout: Duration,
}

type Reply = Result<Quote, TransportError>;

/// A reply's raw body, read by the caller that knows which version it asked in.
type RawReply = Result<Vec<u8>, TransportError>;

/// The live connection and its RPC channel; replaced wholesale on reconnect.
struct Link {
    connection: Connection,
    rpc: Channel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QueueState {
    Unknown,
    Missing,
    Present,
}

struct Shared {
    config: AmqpConfig,
    /// Shown in the broker's connection list; unique per transport so operators (and the
    /// reconnection test) can tell instances apart.
    connection_name: String,
    /// `host:port` of the broker (never the URL, which holds the password), named in every
    /// connection failure so an operator sees which address was tried.
    broker: String,
    link: RwLock<Option<Arc<Link>>>,
    pending: Mutex<HashMap<String, oneshot::Sender<RawReply>>>,
    consumers: AtomicU32,
    /// Polls that updated the queue state (lets tests wait for the next one, not sleep).
    polls: AtomicU64,
    queue_state: Mutex<QueueState>,
    last_error: Mutex<String>,
    shutdown: CancellationToken,
    old_worker: OldWorkerNotice,
}

pub struct AmqpTransport {
    shared: Arc<Shared>,
    supervisor: Mutex<Option<JoinHandle<()>>>,
}

impl AmqpTransport {
    /// Starts the background connection manager and waits (a few seconds at most) for the
    /// first connection attempt and consumer-count poll, so a server that is up right after
    /// start-up can be used at once. Never fails: an unreachable broker means "not ready".
    pub async fn start(config: AmqpConfig) -> Self {
        let shared = Arc::new(Shared {
            broker: ::shared::endpoint::of_url(&config.url),
            config,
            connection_name: format!(
                "api_service {}",
                &uuid::Uuid::new_v4().simple().to_string()[..12]
            ),
            link: RwLock::new(None),
            pending: Mutex::new(HashMap::new()),
            consumers: AtomicU32::new(0),
            polls: AtomicU64::new(0),
            queue_state: Mutex::new(QueueState::Unknown),
            last_error: Mutex::new("not connected yet".into()),
            shutdown: CancellationToken::new(),
            old_worker: OldWorkerNotice::default(),
        });
        let (first_tx, first_rx) = oneshot::channel();
        let supervisor = tokio::spawn(supervise(Arc::clone(&shared), first_tx));
        let _ = tokio::time::timeout(CONNECT_TIMEOUT + Duration::from_secs(1), first_rx).await;
        Self {
            shared,
            supervisor: Mutex::new(Some(supervisor)),
        }
    }

    /// Consumers on the request queue at the last poll (0 while disconnected).
    pub fn consumer_count(&self) -> u32 {
        self.shared.consumers.load(Ordering::Relaxed)
    }

    /// Polls that updated the queue state since start (for tests: a test that must see what
    /// the next polls do waits for this to grow rather than sleeping a few intervals).
    pub fn polls(&self) -> u64 {
        self.shared.polls.load(Ordering::Relaxed)
    }

    /// Waiting calls (for tests: entries must not leak after timeouts).
    pub fn pending_calls(&self) -> usize {
        lock(&self.shared.pending).len()
    }

    pub fn connection_name(&self) -> &str {
        &self.shared.connection_name
    }

    pub fn is_connected(&self) -> bool {
        self.shared.current_link().is_some()
    }
}

impl Drop for AmqpTransport {
    fn drop(&mut self) {
        // Without this the supervisor would keep a connection open forever.
        self.shared.shutdown.cancel();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn current_link(&self) -> Option<Arc<Link>> {
        self.link.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_link(&self, link: Option<Arc<Link>>) {
        *self.link.write().unwrap_or_else(|e| e.into_inner()) = link;
    }

    fn set_error(&self, error: String) {
        *lock(&self.last_error) = error;
    }

    /// Why a call cannot be sent right now, or `None` when it can.
    fn refusal(&self) -> Option<String> {
        self.refusal_with_phrase().map(|(_, detail)| detail)
    }

    /// Why no request can be answered now: a fixed phrase anyone may read (`/readyz`), and the
    /// detail (broker error, queue name) for the log and the operator.
    fn refusal_with_phrase(&self) -> Option<(&'static str, String)> {
        if self.current_link().is_none() {
            return Some((
                "not connected to the message broker",
                format!(
                    "not connected to the message broker ({})",
                    lock(&self.last_error)
                ),
            ));
        }
        let queue = &self.config.queue;
        match *lock(&self.queue_state) {
            QueueState::Unknown => Some((
                "request queue not checked yet",
                format!("state of queue {queue:?} not known yet"),
            )),
            QueueState::Missing => Some((
                "request queue missing",
                format!("request queue {queue:?} does not exist"),
            )),
            QueueState::Present if self.consumers.load(Ordering::Relaxed) == 0 => Some((
                "no quote worker is consuming",
                format!("no quote worker is consuming queue {queue:?}"),
            )),
            QueueState::Present => None,
        }
    }

    /// Fails every waiting call: after the link is gone their replies can never arrive.
    fn fail_all_pending(&self, reason: &str) {
        let waiting: Vec<_> = lock(&self.pending).drain().collect();
        if !waiting.is_empty() {
            tracing::warn!(
                calls = waiting.len(),
                reason,
                "failing in-flight quote calls"
            );
        }
        for (_, tx) in waiting {
            let _ = tx.send(Err(TransportError::Unavailable(reason.to_owned())));
        }
    }

    /// Hands one reply to the call waiting for it.
    fn dispatch(&self, delivery: Delivery) {
        let Some(correlation_id) = delivery.properties.correlation_id().as_ref() else {
            tracing::warn!("reply without correlation id dropped");
            return;
        };
        let Some(tx) = lock(&self.pending).remove(correlation_id.as_str()) else {
            // The caller timed out or went away; nothing to do.
            tracing::debug!(
                correlation_id = correlation_id.as_str(),
                "late reply dropped"
            );
            return;
        };
        let _ = tx.send(Ok(delivery.data));
    }
}

/// Removes a call's correlation entry however the call ends (reply, timeout, a failed
/// publish, the caller going away), so entries never outlive their callers.
struct PendingEntry {
    shared: Arc<Shared>,
    correlation_id: String,
}

impl Drop for PendingEntry {
    fn drop(&mut self) {
        lock(&self.shared.pending).remove(&self.correlation_id);
    }
}

/// A request on the wire whose reply has not been read yet. `'static`, so the
/// [`super::batcher`] can publish one request and leave the wait for its reply to another
/// task while it publishes the next.
pub(super) struct Outstanding {
    entry: PendingEntry,
    reply: oneshot::Receiver<RawReply>,
    confirm: PublisherConfirm,
    deadline: tokio::time::Instant,
}

impl Outstanding {
    /// Waits for the reply's raw body until the deadline, watching the publish confirmation
    /// for a basic.return meanwhile (the reply may well arrive first).
    async fn reply(mut self) -> RawReply {
        let sleep = tokio::time::sleep_until(self.deadline);
        tokio::pin!(sleep);
        let mut confirmed = false;
        loop {
            tokio::select! {
                biased;
                reply = &mut self.reply => {
                    return reply.unwrap_or_else(|_| Err(TransportError::Unavailable(
                        "connection to the message broker lost".into(),
                    )));
                }
                confirmation = &mut self.confirm, if !confirmed => {
                    confirmed = true;
                    match confirmation {
                        Ok(Confirmation::Ack(None)) | Ok(Confirmation::NotRequested) => {}
                        Ok(Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned))) => {
                            return Err(TransportError::Unavailable(format!(
                                "the broker returned the request ({}): queue {:?} is missing",
                                returned.reply_text, self.entry.shared.config.queue
                            )));
                        }
                        Ok(Confirmation::Nack(None)) => {
                            return Err(TransportError::Unavailable(
                                "the broker refused the request".into(),
                            ));
                        }
                        Err(err) => {
                            return Err(TransportError::Unavailable(format!(
                                "publish not confirmed: {err}"
                            )));
                        }
                    }
                }
                _ = &mut sleep => return Err(TransportError::Timeout),
            }
        }
    }
}

/// Connects, runs until the link breaks, and reconnects with exponential backoff until
/// shutdown.
async fn supervise(shared: Arc<Shared>, first_attempt: oneshot::Sender<()>) {
    let mut first_attempt = Some(first_attempt);
    let mut backoff = Duration::from_millis(100);
    loop {
        if shared.shutdown.is_cancelled() {
            break;
        }
        match tokio::time::timeout(CONNECT_TIMEOUT, connect(&shared)).await {
            Ok(Ok((link, monitor, replies))) => {
                tracing::info!(
                    broker = %shared.broker,
                    queue = %shared.config.queue,
                    "connected to the message broker"
                );
                backoff = Duration::from_millis(100);
                shared.set_link(Some(Arc::clone(&link)));
                let reason = watch(&shared, &link, monitor, replies, &mut first_attempt).await;
                shared.set_link(None);
                shared.consumers.store(0, Ordering::Relaxed);
                *lock(&shared.queue_state) = QueueState::Unknown;
                shared.set_error(reason.clone());
                shared.fail_all_pending(&reason);
                if shared.shutdown.is_cancelled() {
                    // Channel first, so the reply consumer ends as cancelled, not as an error.
                    let _ = link.rpc.close(200, "shutting down".into()).await;
                    let _ = link.connection.close(200, "shutting down".into()).await;
                    break;
                }
                tracing::warn!(broker = %shared.broker, reason, "lost the message broker, reconnecting");
                let _ = link.connection.close(200, "reconnecting".into()).await;
            }
            Ok(Err(err)) => {
                let error = ::shared::error_chain::report(&err);
                tracing::warn!(broker = %shared.broker, error, "cannot connect to the message broker");
                shared.set_error(format!("RabbitMQ at {}: {error}", shared.broker));
            }
            Err(_) => {
                tracing::warn!(broker = %shared.broker, "connecting to the message broker timed out");
                shared.set_error(format!(
                    "RabbitMQ at {}: connection attempt timed out",
                    shared.broker
                ));
            }
        }
        if let Some(tx) = first_attempt.take() {
            let _ = tx.send(());
        }
        tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    shared.fail_all_pending("shutting down");
}

/// Opens the connection, the RPC channel with its reply consumer, and the monitor channel.
async fn connect(shared: &Arc<Shared>) -> lapin::Result<(Arc<Link>, Channel, JoinHandle<()>)> {
    let connection = Connection::connect(
        &shared.config.url,
        ConnectionProperties::default()
            .with_connection_name(shared.connection_name.as_str().into()),
    )
    .await?;
    let rpc = connection.create_channel().await?;
    // Confirm mode: a mandatory publish that cannot be routed comes back attached to its
    // confirmation, which tells that call (and only it) that the queue is gone.
    rpc.confirm_select(ConfirmSelectOptions::default()).await?;
    let mut consumer = rpc
        .basic_consume(
            REPLY_TO.into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    let monitor = connection.create_channel().await?;
    let reader_shared = Arc::clone(shared);
    let replies = tokio::spawn(async move {
        while let Some(delivery) = consumer.next().await {
            match delivery {
                Ok(delivery) => reader_shared.dispatch(delivery),
                Err(err) => {
                    if !reader_shared.shutdown.is_cancelled() {
                        tracing::warn!(error = %err, "reply consumer failed");
                    }
                    break;
                }
            }
        }
    });
    Ok((Arc::new(Link { connection, rpc }), monitor, replies))
}

/// How the poll asks about the request queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Poll {
    /// Declare it as the quote service does: creates it when missing, never fails.
    Declare,
    /// Only look (the queue exists with other properties than ours); a missing queue closes
    /// the monitor channel.
    Passive,
}

impl Poll {
    fn options(self) -> QueueDeclareOptions {
        match self {
            // Must equal the quote service's declaration, or the broker refuses one of them
            // (PRECONDITION_FAILED).
            Poll::Declare => QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            Poll::Passive => QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
        }
    }
}

/// PRECONDITION_FAILED: the queue exists, declared with other properties.
fn is_precondition_failed(err: &lapin::Error) -> bool {
    matches!(err.kind(), lapin::ErrorKind::ProtocolError(e) if e.get_id() == 406)
}

/// Keeps the consumer count fresh until the link breaks or shutdown; returns why it ended.
async fn watch(
    shared: &Arc<Shared>,
    link: &Link,
    mut monitor: Channel,
    mut replies: JoinHandle<()>,
    first_attempt: &mut Option<oneshot::Sender<()>>,
) -> String {
    let queue = shared.config.queue.as_str();
    let mut poll = Poll::Declare;
    loop {
        if !link.connection.status().connected() {
            return "connection to the message broker closed".into();
        }
        if !link.rpc.status().connected() {
            return "RPC channel closed".into();
        }
        let declared = tokio::time::timeout(
            Duration::from_secs(2),
            monitor.queue_declare(queue.into(), poll.options(), FieldTable::default()),
        )
        .await;
        match declared {
            Ok(Ok(state)) => {
                shared
                    .consumers
                    .store(state.consumer_count(), Ordering::Relaxed);
                *lock(&shared.queue_state) = QueueState::Present;
            }
            Ok(Err(err)) => {
                if !link.connection.status().connected() {
                    return format!("connection to the message broker lost: {err}");
                }
                // Either refusal closes the monitor channel: open a fresh one for the next poll.
                match link.connection.create_channel().await {
                    Ok(channel) => monitor = channel,
                    Err(err) => return format!("cannot open a channel: {err}"),
                }
                if poll == Poll::Declare && is_precondition_failed(&err) {
                    tracing::warn!(
                        queue,
                        "the request queue exists with other properties than the quote \
                         service declares (durable, no arguments); checking it passively"
                    );
                    poll = Poll::Passive;
                    // Ask again at once rather than report a consumer count we do not have.
                    continue;
                }
                // Passive declare of a missing queue (404): note the absence.
                shared.consumers.store(0, Ordering::Relaxed);
                *lock(&shared.queue_state) = QueueState::Missing;
                tracing::debug!(error = %err, queue, "request queue not available");
            }
            Err(_) => return "broker stopped answering".into(),
        }
        shared.polls.fetch_add(1, Ordering::Relaxed);
        if let Some(tx) = first_attempt.take() {
            let _ = tx.send(());
        }
        tokio::select! {
            _ = shared.shutdown.cancelled() => return "shutting down".into(),
            _ = &mut replies => return "the broker closed the RPC channel or connection".into(),
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
        }
    }
}

impl AmqpTransport {
    /// Publishes one request body and waits for its reply's raw body (or why none can come).
    /// Records the correlation id on the caller's span.
    async fn call(&self, body: &[u8], request_id: &str) -> RawReply {
        self.publish(body, request_id, self.shared.config.rpc_timeout)
            .await?
            .reply()
            .await
    }

    /// Puts one request body on the wire, answerable for `timeout` from now (its message
    /// expiration, and how long [`Outstanding::reply`] waits); returns once the broker has it,
    /// before any reply. Fails at once when nobody can answer.
    async fn publish(
        &self,
        body: &[u8],
        request_id: &str,
        timeout: Duration,
    ) -> Result<Outstanding, TransportError> {
        let shared = &self.shared;
        if let Some(reason) = shared.refusal() {
            return Err(TransportError::Unavailable(reason));
        }
        let Some(link) = shared.current_link() else {
            return Err(TransportError::Unavailable(
                "not connected to the message broker".into(),
            ));
        };
        if timeout.is_zero() {
            return Err(TransportError::Timeout);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let correlation_id = uuid::Uuid::new_v4().simple().to_string();
        tracing::Span::current().record("request_id", request_id);
        tracing::Span::current().record("correlation_id", correlation_id.as_str());

        let mut headers = FieldTable::default();
        headers.insert(
            shared::REQUEST_ID_HEADER.into(),
            AMQPValue::LongString(LongString::from(request_id)),
        );
        let properties = BasicProperties::default()
            .with_reply_to(REPLY_TO.into())
            .with_correlation_id(ShortString::from(correlation_id.as_str()))
            // The broker drops a request nobody picked up before the caller gave up.
            .with_expiration(ShortString::from(timeout.as_millis().max(1).to_string()))
            .with_content_type("application/json".into())
            .with_delivery_mode(1)
            .with_headers(headers);

        let (tx, reply) = oneshot::channel();
        lock(&shared.pending).insert(correlation_id.clone(), tx);
        let entry = PendingEntry {
            shared: Arc::clone(shared),
            correlation_id,
        };
        let confirm = link
            .rpc
            .basic_publish(
                "".into(),
                shared.config.queue.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                body,
                properties,
            )
            .await
            .map_err(|err| TransportError::Unavailable(format!("publish failed: {err}")))?;
        Ok(Outstanding {
            entry,
            reply,
            confirm,
            deadline,
        })
    }
}

/// Reads the reply to a version-1 request.
fn read_reply(reply: &[u8]) -> Reply {
    match serde_json::from_slice::<QuoteReply>(reply) {
        Ok(reply) => {
            if reply.v != shared::CONTRACT_VERSION {
                tracing::warn!(v = reply.v, "reply with a different contract version");
            }
            reply.into_result().map_err(TransportError::Quote)
        }
        Err(err) => {
            tracing::error!(error = %err, "malformed reply from the quote service");
            Err(TransportError::Quote(QuoteError::new(
                ErrorCode::Internal,
                "malformed reply from the quote service",
            )))
        }
    }
}

/// Calls the batcher sends: a lone symbol as the version-1 request it always was, several as
/// one version-2 request (falling back to version 1 per symbol for an old worker).
#[async_trait]
impl BatchWire for AmqpTransport {
    #[instrument(skip_all, fields(symbols = symbols.len(), request_id, correlation_id))]
    async fn send(
        self: Arc<Self>,
        symbols: Vec<Symbol>,
        request_id: String,
        deadline: tokio::time::Instant,
    ) -> Result<Landing, TransportError> {
        let timeout = deadline.saturating_duration_since(tokio::time::Instant::now());
        if let [symbol] = symbols.as_slice() {
            let request = QuoteRequest::new(symbol.as_str(), Some(request_id.clone()), timeout);
            let outstanding = self
                .publish(&encode(&request)?, &request_id, timeout)
                .await?;
            return Ok(Box::pin(async move {
                Ok(vec![read_reply(&outstanding.reply().await?)])
            }));
        }
        let request = BatchQuoteRequest::new(
            symbols.iter().map(Symbol::as_str),
            Some(request_id.clone()),
            timeout,
        );
        let outstanding = self
            .publish(&encode(&request)?, &request_id, timeout)
            .await?;
        Ok(Box::pin(async move {
            let reply = outstanding.reply().await?;
            batch::settle(
                &*self,
                &self.shared.old_worker,
                &reply,
                &symbols,
                &request_id,
            )
            .await
        }))
    }
}

/// The request body as JSON; serialising our own types cannot fail, but if it did it is ours.
fn encode<T: serde::Serialize>(request: &T) -> Result<Vec<u8>, TransportError> {
    serde_json::to_vec(request)
        .map_err(|err| TransportError::Quote(QuoteError::new(ErrorCode::Internal, err.to_string())))
}

#[async_trait]
impl QuoteTransport for AmqpTransport {
    #[instrument(skip_all, fields(symbol = %symbol, request_id, correlation_id))]
    async fn get_quote(&self, symbol: &Symbol, request_id: &str) -> Reply {
        let timeout = self.shared.config.rpc_timeout;
        let request = QuoteRequest::new(symbol.as_str(), Some(request_id.to_owned()), timeout);
        read_reply(&self.call(&encode(&request)?, request_id).await?)
    }

    /// One v2 request for the whole batch; an old worker's refusal falls back to v1.
    #[instrument(skip_all, fields(symbols = symbols.len(), request_id, correlation_id))]
    async fn get_quotes(
        &self,
        symbols: &[Symbol],
        request_id: &str,
    ) -> Result<Vec<SymbolResult>, TransportError> {
        let timeout = self.shared.config.rpc_timeout;
        let request = BatchQuoteRequest::new(
            symbols.iter().map(Symbol::as_str),
            Some(request_id.to_owned()),
            timeout,
        );
        let reply = self.call(&encode(&request)?, request_id).await?;
        batch::settle(self, &self.shared.old_worker, &reply, symbols, request_id).await
    }

    fn is_ready(&self) -> bool {
        self.shared.refusal().is_none()
    }

    fn readiness_phrase(&self) -> &'static str {
        self.shared
            .refusal_with_phrase()
            .map_or("ready", |(phrase, _)| phrase)
    }

    fn readiness_detail(&self) -> String {
        match self.shared.refusal() {
            None => format!(
                "connected, {} consumer(s) on queue {:?}",
                self.consumer_count(),
                self.shared.config.queue
            ),
            Some(reason) => reason,
        }
    }

    async fn shutdown(&self) {
        self.shared.shutdown.cancel();
        let handle = lock(&self.supervisor).take();
        if let Some(handle) = handle {
            let _ = tokio::time::timeout(Duration::from_secs(3), handle).await;
        }
    }
}
