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

use std::sync::atomic::{AtomicU64, Ordering};
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
    counts: Arc<Counts>,
    rpc_timeout: Duration,
    queue: mpsc::Sender<Waiting>,
    sender: Mutex<Option<JoinHandle<()>>>,
}

impl<T: BatchWire> Batcher<T> {
    /// Starts the sender task. `rpc_timeout` is each call's own deadline, counted from when
    /// it is made.
    pub fn new(wire: T, rpc_timeout: Duration) -> Self {
        Self::with_queue_capacity(wire, rpc_timeout, QUEUE_CAPACITY)
    }

    fn with_queue_capacity(wire: T, rpc_timeout: Duration, capacity: usize) -> Self {
        let wire = Arc::new(wire);
        let counts = Arc::new(Counts::default());
        let (queue, waiting) = mpsc::channel(capacity);
        let sender = tokio::spawn(send_loop(Arc::clone(&wire), waiting, Arc::clone(&counts)));
        Self {
            wire,
            counts,
            rpc_timeout,
            queue,
            sender: Mutex::new(Some(sender)),
        }
    }

    /// The wrapped transport (for tests and diagnostics).
    pub fn wire(&self) -> &T {
        &self.wire
    }

    /// Calls waiting for the sender task (for tests: to know a burst has queued up).
    pub fn queued(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
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

    fn batch_counts(&self) -> Option<(u64, u64)> {
        Some((
            self.counts.requests.load(Ordering::Relaxed),
            self.counts.calls.load(Ordering::Relaxed),
        ))
    }

    async fn shutdown(&self) {
        let sender = self.sender.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(sender) = sender {
            sender.abort();
        }
        self.wire.shutdown().await;
    }
}

/// What the sender task has sent, for `/metrics`.
#[derive(Debug, Default)]
struct Counts {
    requests: AtomicU64,
    calls: AtomicU64,
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
async fn send_loop<T: BatchWire>(
    wire: Arc<T>,
    mut waiting: mpsc::Receiver<Waiting>,
    counts: Arc<Counts>,
) {
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
        let calls = batch.callers.iter().map(Vec::len).sum::<usize>();
        counts.requests.fetch_add(1, Ordering::Relaxed);
        counts.calls.fetch_add(calls as u64, Ordering::Relaxed);
        if calls > 1 && tracing::enabled!(tracing::Level::DEBUG) {
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

#[cfg(test)]
mod tests {
    use shared::{ErrorCode, QuoteError};
    use tokio::sync::Semaphore;

    use super::*;

    const RPC_TIMEOUT: Duration = Duration::from_secs(1);
    /// How long the fake worker takes to answer a request once it is published.
    const REPLY_AFTER: Duration = Duration::from_millis(100);

    /// One request the fake wire put out.
    #[derive(Debug, Clone)]
    struct Sent {
        symbols: Vec<String>,
        deadline: Instant,
    }

    /// A wire whose publishes wait at a gate the test opens, and whose worker answers every
    /// symbol after [`REPLY_AFTER`]: `nosuch.us` with not-found, the rest with a quote whose
    /// name is the symbol. A request carrying `down.us` fails whole at publish.
    struct FakeWire {
        gate: Semaphore,
        sent: Mutex<Vec<Sent>>,
    }

    impl FakeWire {
        fn open() -> Self {
            Self {
                gate: Semaphore::new(Semaphore::MAX_PERMITS),
                sent: Mutex::new(Vec::new()),
            }
        }

        fn closed() -> Self {
            Self {
                gate: Semaphore::new(0),
                sent: Mutex::new(Vec::new()),
            }
        }

        fn sent(&self) -> Vec<Sent> {
            self.sent.lock().unwrap().clone()
        }

        fn requests(&self) -> Vec<Vec<String>> {
            self.sent().into_iter().map(|s| s.symbols).collect()
        }
    }

    #[async_trait]
    impl QuoteTransport for FakeWire {
        async fn get_quote(&self, _: &Symbol, _: &str) -> Result<Quote, TransportError> {
            unreachable!("the batcher sends through BatchWire::send")
        }
        fn is_ready(&self) -> bool {
            true
        }
    }

    #[async_trait]
    impl BatchWire for FakeWire {
        async fn send(
            self: Arc<Self>,
            symbols: Vec<Symbol>,
            _request_id: String,
            deadline: Instant,
        ) -> Result<Landing, TransportError> {
            self.sent.lock().unwrap().push(Sent {
                symbols: symbols.iter().map(|s| s.as_str().to_owned()).collect(),
                deadline,
            });
            self.gate.acquire().await.unwrap().forget();
            if symbols.iter().any(|s| s.as_str() == "down.us") {
                return Err(TransportError::Unavailable("no worker".into()));
            }
            Ok(Box::pin(async move {
                tokio::time::sleep(REPLY_AFTER).await;
                Ok(symbols.iter().map(answer).collect())
            }))
        }
    }

    fn answer(symbol: &Symbol) -> SymbolResult {
        if symbol.as_str() == "nosuch.us" {
            return Err(TransportError::Quote(QuoteError::new(
                ErrorCode::NotFound,
                "no such symbol",
            )));
        }
        Ok(crate::test_support::quote(
            &symbol.as_str().to_uppercase(),
            symbol.as_str(),
            1.0,
        ))
    }

    fn batcher(wire: FakeWire) -> Arc<Batcher<FakeWire>> {
        Arc::new(Batcher::new(wire, RPC_TIMEOUT))
    }

    fn call(
        batcher: &Arc<Batcher<FakeWire>>,
        symbol: &str,
    ) -> JoinHandle<Result<Quote, TransportError>> {
        let batcher = Arc::clone(batcher);
        let symbol = Symbol::parse(symbol).unwrap();
        tokio::spawn(async move { batcher.get_quote(&symbol, "req").await })
    }

    /// Holds the wire busy with a lone call, then queues `symbols` behind it: what the
    /// sender task finds when the publish in progress ends.
    async fn queue_behind_a_publish(
        batcher: &Arc<Batcher<FakeWire>>,
        symbols: &[&str],
    ) -> Vec<JoinHandle<Result<Quote, TransportError>>> {
        let first = call(batcher, "first.us");
        while batcher.wire().sent().is_empty() {
            tokio::task::yield_now().await;
        }
        let calls = symbols.iter().map(|s| call(batcher, s)).collect();
        while batcher.queued() < symbols.len() {
            tokio::task::yield_now().await;
        }
        drop(first);
        calls
    }

    async fn results(
        calls: Vec<JoinHandle<Result<Quote, TransportError>>>,
    ) -> Vec<Result<Quote, TransportError>> {
        futures::future::join_all(calls)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_call_goes_out_at_once_and_alone() {
        let batcher = batcher(FakeWire::open());
        let started = Instant::now();

        let quote = batcher
            .get_quote(&Symbol::parse("aapl.us").unwrap(), "req")
            .await
            .unwrap();

        assert_eq!(quote.symbol, "AAPL.US");
        assert_eq!(batcher.wire().requests(), vec![vec!["aapl.us".to_owned()]]);
        assert_eq!(
            started.elapsed(),
            REPLY_AFTER,
            "no wait added before sending"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn calls_queued_during_a_publish_go_out_together_in_the_next_request() {
        let batcher = batcher(FakeWire::closed());
        let calls = queue_behind_a_publish(&batcher, &["a.us", "b.us", "c.us"]).await;

        batcher.wire().gate.add_permits(2);
        let results = results(calls).await;

        assert_eq!(
            batcher.wire().requests(),
            vec![
                vec!["first.us".to_owned()],
                vec!["a.us".to_owned(), "b.us".to_owned(), "c.us".to_owned()]
            ]
        );
        let names: Vec<_> = results.into_iter().map(|r| r.unwrap().name).collect();
        assert_eq!(names, ["a.us", "b.us", "c.us"]);
        assert_eq!(
            batcher.batch_counts(),
            Some((2, 4)),
            "(requests, calls) for /metrics"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn each_caller_gets_its_own_symbols_result_or_error() {
        let batcher = batcher(FakeWire::closed());
        let calls = queue_behind_a_publish(&batcher, &["a.us", "nosuch.us", "b.us"]).await;

        batcher.wire().gate.add_permits(2);
        let results = results(calls).await;

        assert_eq!(
            batcher.wire().requests()[1].len(),
            3,
            "one request for all three"
        );
        assert_eq!(results[0].as_ref().unwrap().name, "a.us");
        assert!(
            matches!(&results[1], Err(TransportError::Quote(e)) if e.code == ErrorCode::NotFound)
        );
        assert_eq!(results[2].as_ref().unwrap().name, "b.us");
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_that_fails_whole_fails_every_call_in_it_and_no_other() {
        let batcher = batcher(FakeWire::closed());
        let calls = queue_behind_a_publish(&batcher, &["a.us", "down.us"]).await;

        batcher.wire().gate.add_permits(3);
        let results = results(calls).await;
        let later = batcher
            .get_quote(&Symbol::parse("c.us").unwrap(), "req")
            .await;

        assert!(matches!(results[0], Err(TransportError::Unavailable(_))));
        assert!(matches!(results[1], Err(TransportError::Unavailable(_))));
        assert_eq!(later.unwrap().name, "c.us");
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_past_its_own_deadline_times_out_while_the_rest_of_its_batch_is_answered() {
        let batcher = batcher(FakeWire::closed());
        let first = call(&batcher, "first.us");
        while batcher.wire().sent().is_empty() {
            tokio::task::yield_now().await;
        }
        let early = call(&batcher, "early.us");
        tokio::time::sleep(RPC_TIMEOUT - REPLY_AFTER / 2).await;
        let late = call(&batcher, "late.us");
        while batcher.queued() < 2 {
            tokio::task::yield_now().await;
        }
        let late_deadline = Instant::now() + RPC_TIMEOUT;

        // The request leaves now; its answer lands after `early`'s deadline, before `late`'s.
        batcher.wire().gate.add_permits(2);
        let (early, late) = (early.await.unwrap(), late.await.unwrap());

        assert_eq!(early, Err(TransportError::Timeout));
        assert_eq!(late.unwrap().name, "late.us");
        let sent = batcher.wire().sent();
        assert_eq!(sent[1].symbols, ["early.us", "late.us"]);
        assert_eq!(
            sent[1].deadline, late_deadline,
            "the request lives as long as its latest caller"
        );
        drop(first);
    }

    #[tokio::test(start_paused = true)]
    async fn identical_symbols_queued_together_are_sent_once_and_answer_every_caller() {
        let batcher = batcher(FakeWire::closed());
        let calls = queue_behind_a_publish(&batcher, &["a.us", "b.us", "a.us"]).await;

        batcher.wire().gate.add_permits(2);
        let results = results(calls).await;

        assert_eq!(
            batcher.wire().requests()[1],
            ["a.us".to_owned(), "b.us".to_owned()]
        );
        let names: Vec<_> = results.into_iter().map(|r| r.unwrap().name).collect();
        assert_eq!(names, ["a.us", "b.us", "a.us"]);
    }

    #[tokio::test(start_paused = true)]
    async fn more_distinct_symbols_than_one_request_takes_are_split() {
        let batcher = batcher(FakeWire::closed());
        let symbols: Vec<String> = (0..MAX_BATCH_SYMBOLS + 10)
            .map(|i| format!("s{i}.us"))
            .collect();
        let symbol_refs: Vec<&str> = symbols.iter().map(String::as_str).collect();
        let calls = queue_behind_a_publish(&batcher, &symbol_refs).await;

        batcher.wire().gate.add_permits(3);
        let results = results(calls).await;

        let sizes: Vec<usize> = batcher.wire().requests().iter().map(Vec::len).collect();
        assert_eq!(sizes, [1, MAX_BATCH_SYMBOLS, 10]);
        assert!(results.iter().all(Result::is_ok));
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_queue_bound_a_call_waits_for_room_and_times_out_at_its_own_deadline() {
        let batcher = Arc::new(Batcher::with_queue_capacity(
            FakeWire::closed(),
            RPC_TIMEOUT,
            2,
        ));
        let queued = queue_behind_a_publish(&batcher, &["a.us", "b.us"]).await;

        let started = Instant::now();
        let over_bound = batcher
            .get_quote(&Symbol::parse("c.us").unwrap(), "req")
            .await;

        assert_eq!(over_bound, Err(TransportError::Timeout));
        assert_eq!(started.elapsed(), RPC_TIMEOUT);
        assert_eq!(
            batcher.queued(),
            2,
            "the queue never held more than its bound"
        );
        batcher.wire().gate.add_permits(2);
        let results = results(queued).await;
        assert!(results.iter().all(|r| *r == Err(TransportError::Timeout)));
        assert_eq!(
            batcher.wire().requests().len(),
            1,
            "expired calls are not sent"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_that_went_away_before_the_publish_is_not_sent() {
        let batcher = batcher(FakeWire::closed());
        let calls = queue_behind_a_publish(&batcher, &["gone.us", "a.us"]).await;
        let mut calls = calls.into_iter();
        let gone = calls.next().unwrap();
        gone.abort();
        let _ = gone.await;

        batcher.wire().gate.add_permits(2);
        let results = results(calls.collect()).await;

        assert_eq!(batcher.wire().requests()[1], ["a.us".to_owned()]);
        assert_eq!(results[0].as_ref().unwrap().name, "a.us");
    }
}
