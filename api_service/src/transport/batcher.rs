//! Nagle-style batching of single-symbol calls: calls for distinct symbols that are waiting
//! to be sent at the same moment go out as one contract-v2 request.
//!
//! Every call costs the broker two messages and the worker one delivery, whatever it carries,
//! so under load the message rate, not the work, is the ceiling. One sender task owns the
//! wire: it takes the first waiting call, drains whatever else is queued at that instant (up
//! to [`shared::MAX_BATCH_SYMBOLS`] distinct symbols), publishes, and goes back for more; the
//! wait for a reply happens in a task of its own. So a lone call leaves at once, alone (no
//! timer, nothing to tune), and calls that arrive while a publish is under way queue up and
//! leave together in the next one: the busier the wire, the bigger the batches.
//!
//! Each call keeps its own deadline and its own result. The request carries the latest
//! deadline of its calls, because a worker drops an expired request entirely and an earlier
//! one would cut off calls that still have time; each caller stops waiting at its own
//! deadline instead. A symbol's failure reaches only the calls for that symbol; a failure
//! of the request as a whole (nobody consuming, no reply in time) reaches all of them.
//! Identical symbols queued together are sent once and the answer handed to each caller,
//! though [`super::SingleFlight`], in front, already folds most of them.
//!
//! A call that waits alone goes out as a version-1 request, the very message it was before
//! batching; a batch whose worker speaks only version 1 falls back to one version-1 request
//! per symbol (see [`super::batch`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use shared::{MAX_BATCH_SYMBOLS, Quote, Symbol};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::instrument;

use super::{QuoteTransport, SymbolResult, TransportError};

/// Calls that may wait to be sent. A call holds a connection's request open anyway, so this
/// is only a backstop: past it callers wait (within their deadline) for room.
const QUEUE_CAPACITY: usize = 4096;

/// The answers to one request on the wire, one per symbol, in order.
pub type Landing = BoxFuture<'static, Result<Vec<SymbolResult>, TransportError>>;

/// What the batcher needs from a wire transport: sending one request and waiting for its
/// answers as two separate steps, so the next request can be sent before this one is answered.
#[async_trait]
pub trait BatchWire: QuoteTransport {
    /// Puts one request for `symbols` (distinct, 1 to [`MAX_BATCH_SYMBOLS`]) on the wire,
    /// answerable until `deadline`, and returns once it is sent. The [`Landing`] then yields
    /// one result per symbol, in order, or why none came.
    async fn send(
        self: Arc<Self>,
        symbols: Vec<Symbol>,
        request_id: String,
        deadline: Instant,
    ) -> Result<Landing, TransportError>;
}

/// A call waiting to be sent.
struct Waiting {
    symbol: Symbol,
    request_id: String,
    deadline: Instant,
    answer: oneshot::Sender<SymbolResult>,
}

/// Wraps a wire transport so its single-symbol calls share requests; everything else (batch
/// calls, readiness, shutdown) goes straight to the wire transport.
pub struct Batcher<T> {
    wire: Arc<T>,
    rpc_timeout: Duration,
    queue: mpsc::Sender<Waiting>,
    sender: Mutex<Option<JoinHandle<()>>>,
}

impl<T: BatchWire> Batcher<T> {
    /// Starts the sender task. `rpc_timeout` is each call's own deadline, counted from when
    /// it is made.
    pub fn new(wire: T, rpc_timeout: Duration) -> Self {
        let wire = Arc::new(wire);
        let (queue, waiting) = mpsc::channel(QUEUE_CAPACITY);
        let sender = tokio::spawn(send_loop(Arc::clone(&wire), waiting));
        Self {
            wire,
            rpc_timeout,
            queue,
            sender: Mutex::new(Some(sender)),
        }
    }

    /// The wrapped transport (for tests and diagnostics).
    pub fn wire(&self) -> &T {
        &self.wire
    }
}

impl<T> Drop for Batcher<T> {
    fn drop(&mut self) {
        if let Some(sender) = self.sender.lock().unwrap_or_else(|e| e.into_inner()).take() {
            sender.abort();
        }
    }
}

#[async_trait]
impl<T: BatchWire> QuoteTransport for Batcher<T> {
    #[instrument(skip_all, fields(symbol = %symbol, request_id = request_id))]
    async fn get_quote(&self, symbol: &Symbol, request_id: &str) -> Result<Quote, TransportError> {
        let deadline = Instant::now() + self.rpc_timeout;
        let (answer, answered) = oneshot::channel();
        let call = Waiting {
            symbol: symbol.clone(),
            request_id: request_id.to_owned(),
            deadline,
            answer,
        };
        match tokio::time::timeout_at(deadline, self.queue.send(call)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(stopped()),
            Err(_) => return Err(TransportError::Timeout),
        }
        match tokio::time::timeout_at(deadline, answered).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(stopped()),
            Err(_) => Err(TransportError::Timeout),
        }
    }

    async fn get_quotes(
        &self,
        symbols: &[Symbol],
        request_id: &str,
    ) -> Result<Vec<SymbolResult>, TransportError> {
        self.wire.get_quotes(symbols, request_id).await
    }

    fn is_ready(&self) -> bool {
        self.wire.is_ready()
    }

    fn readiness_phrase(&self) -> &'static str {
        self.wire.readiness_phrase()
    }

    fn readiness_detail(&self) -> String {
        self.wire.readiness_detail()
    }

    fn flight_counts(&self) -> Option<(u64, u64)> {
        self.wire.flight_counts()
    }

    async fn shutdown(&self) {
        let sender = self
            .sender
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(sender) = sender {
            sender.abort();
        }
        self.wire.shutdown().await;
    }
}

fn stopped() -> TransportError {
    TransportError::Unavailable("the quote transport is shutting down".into())
}

/// Calls going out in one request, grouped by symbol (distinct, in arrival order).
struct Batch {
    symbols: Vec<Symbol>,
    callers: Vec<Vec<Waiting>>,
}

impl Batch {
    fn new() -> Self {
        Self {
            symbols: Vec::new(),
            callers: Vec::new(),
        }
    }

    fn is_full(&self) -> bool {
        self.symbols.len() >= MAX_BATCH_SYMBOLS
    }

    /// Adds a call; one for a symbol already in the batch joins it. A call whose caller has
    /// gone or whose deadline has passed is not sent (the caller has its timeout already).
    fn add(&mut self, call: Waiting, now: Instant) {
        if call.answer.is_closed() || call.deadline <= now {
            return;
        }
        match self.symbols.iter().position(|s| *s == call.symbol) {
            Some(i) => self.callers[i].push(call),
            None => {
                self.symbols.push(call.symbol.clone());
                self.callers.push(vec![call]);
            }
        }
    }

    /// The latest deadline of the calls: a worker drops an expired request whole, so the
    /// request must live as long as its longest-waiting caller; earlier ones time out alone.
    fn deadline(&self) -> Option<Instant> {
        self.callers.iter().flatten().map(|c| c.deadline).max()
    }

    /// The request id the request travels under: the first caller's (the others are logged
    /// with it, so each caller's id still leads to the request).
    fn request_id(&self) -> String {
        self.callers
            .first()
            .and_then(|c| c.first())
            .map(|c| c.request_id.clone())
            .unwrap_or_default()
    }

    /// Hands every caller its symbol's result, or the request's failure.
    fn settle(self, outcome: Result<Vec<SymbolResult>, TransportError>) {
        match outcome {
            Ok(results) if results.len() == self.callers.len() => {
                for (callers, result) in self.callers.into_iter().zip(results) {
                    for caller in callers {
                        let _ = caller.answer.send(result.clone());
                    }
                }
            }
            Ok(results) => {
                // A wire transport's bug, not the worker's: never leave callers hanging.
                tracing::error!(
                    results = results.len(),
                    symbols = self.callers.len(),
                    "batched request answered with the wrong number of results"
                );
                self.fail(TransportError::Unavailable(
                    "the quote transport lost track of a batched call".into(),
                ));
            }
            Err(error) => self.fail(error),
        }
    }

    fn fail(self, error: TransportError) {
        for caller in self.callers.into_iter().flatten() {
            let _ = caller.answer.send(Err(error.clone()));
        }
    }
}

/// The sender task: waits for a call, takes everything queued behind it (up to the cap),
/// publishes it as one request, leaves the reply to a task of its own, and goes back for more.
async fn send_loop<T: BatchWire>(wire: Arc<T>, mut waiting: mpsc::Receiver<Waiting>) {
    while let Some(first) = waiting.recv().await {
        let now = Instant::now();
        let mut batch = Batch::new();
        batch.add(first, now);
        // Only what is queued right now: a call arriving later waits for the next request,
        // and so does one past the cap (even for a symbol in this batch: not looked for).
        while !batch.is_full() {
            match waiting.try_recv() {
                Ok(call) => batch.add(call, now),
                Err(_) => break,
            }
        }
        let Some(deadline) = batch.deadline() else {
            continue;
        };
        let request_id = batch.request_id();
        if batch.callers.iter().map(Vec::len).sum::<usize>() > 1 {
            let request_ids: Vec<&str> = batch
                .callers
                .iter()
                .flatten()
                .map(|c| c.request_id.as_str())
                .collect();
            tracing::debug!(
                request_id,
                symbols = batch.symbols.len(),
                ?request_ids,
                "calls sent as one request"
            );
        }
        let symbols = batch.symbols.clone();
        match Arc::clone(&wire).send(symbols, request_id, deadline).await {
            Ok(landing) => {
                tokio::spawn(async move { batch.settle(landing.await) });
            }
            Err(error) => batch.fail(error),
        }
    }
}
