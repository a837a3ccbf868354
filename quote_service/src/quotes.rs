//! Getting a quote for a symbol while sparing stooq: a TTL cache, coalescing (concurrent
//! requests for one symbol share one fetch), and batching (distinct symbols requested together
//! go upstream in one `s=a+b+c` call).
//!
//! Every symbol has at most one slot: either a cached [`Answer`] or an in-flight fetch with
//! its waiters. A miss turns the slot in-flight and queues the symbol for the collector task,
//! which takes the first queued symbol, drains whatever else is queued within the batch window
//! and fetches them together. The slot map's lock is never held across an await.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use shared::{ErrorCode, Quote, QuoteError, QuoteReply, Symbol};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::settings::Settings;
use crate::upstream::StooqClient;

/// A finished answer for one symbol, shared by every request it serves. The reply is
/// serialised once here, so a cache hit costs no JSON encoding.
#[derive(Debug)]
pub struct Answer {
    reply: QuoteReply,
    json: Bytes,
}

impl Answer {
    pub fn new(result: Result<Quote, QuoteError>) -> Self {
        let reply = QuoteReply::from(result);
        let json = serde_json::to_vec(&reply)
            .map(Bytes::from)
            .unwrap_or_else(|_| Bytes::from_static(INTERNAL_JSON));
        Self { reply, json }
    }

    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(Err(QuoteError::new(code, message)))
    }

    pub fn reply(&self) -> &QuoteReply {
        &self.reply
    }

    /// The reply as JSON, ready for the wire.
    pub fn json(&self) -> &Bytes {
        &self.json
    }

    pub fn http_status(&self) -> u16 {
        self.reply.http_status()
    }

    fn error_code(&self) -> Option<ErrorCode> {
        match &self.reply.result {
            shared::QuoteResult::Ok { .. } => None,
            shared::QuoteResult::Error { error } => Some(error.code),
        }
    }
}

const INTERNAL_JSON: &[u8] =
    br#"{"v":1,"status":"error","error":{"code":"internal","message":"could not encode the reply"}}"#;

enum Slot {
    Ready {
        answer: Arc<Answer>,
        expires: Instant,
    },
    InFlight {
        waiters: Vec<oneshot::Sender<Arc<Answer>>>,
        /// The latest deadline among the waiters: the fetch may run (and retry) until then.
        deadline: FetchDeadline,
    },
}

/// A deadline that waiters joining an in-flight fetch can push later, so a patient caller
/// who coalesced onto an impatient one's fetch is not failed at the impatient one's deadline.
#[derive(Clone)]
struct FetchDeadline(Arc<AtomicU64>);

/// Reference point for [`FetchDeadline`]'s atomic representation (ms since this instant).
fn clock_base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

impl FetchDeadline {
    fn new(at: Instant) -> Self {
        Self(Arc::new(AtomicU64::new(Self::encode(at))))
    }

    fn encode(at: Instant) -> u64 {
        // Rounded up so the fetch never stops before a waiter's deadline.
        let since = at.saturating_duration_since(clock_base());
        since.as_millis() as u64 + 1
    }

    fn extend(&self, at: Instant) {
        self.0.fetch_max(Self::encode(at), Ordering::Relaxed);
    }

    fn get(&self) -> Instant {
        clock_base() + Duration::from_millis(self.0.load(Ordering::Relaxed))
    }
}

/// One symbol's answer as [`QuoteService::claim`] left it: at hand, or still to come.
enum Pending {
    Ready(Arc<Answer>),
    Waiting(oneshot::Receiver<Arc<Answer>>),
}

impl Pending {
    async fn resolve(self, symbol: &Symbol, deadline: Instant) -> Arc<Answer> {
        let rx = match self {
            Pending::Ready(answer) => return answer,
            Pending::Waiting(rx) => rx,
        };
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Arc::new(Answer::error(
                ErrorCode::Internal,
                "the fetch for this symbol was abandoned",
            )),
            Err(_) => Arc::new(Answer::error(
                ErrorCode::Timeout,
                format!("no answer for {symbol} before the request's deadline"),
            )),
        }
    }
}

/// A symbol waiting for the collector, with the deadline its fetch may run until.
struct Queued {
    symbol: Symbol,
    deadline: FetchDeadline,
}

struct Shared {
    slots: Mutex<HashMap<Symbol, Slot>>,
    ttl: Duration,
    not_found_ttl: Duration,
    max_entries: usize,
    metrics: Metrics,
}

/// Cheap to clone. The collector task stops once every clone is dropped.
#[derive(Clone)]
pub struct QuoteService {
    shared: Arc<Shared>,
    /// Groups of symbols to fetch: one request's misses travel together (see `collect`).
    queue: mpsc::UnboundedSender<Vec<Queued>>,
    /// For [`refresh`](Self::refresh), which goes upstream past the cache.
    client: StooqClient,
    batch: BatchConfig,
}

/// How the collector forms batches.
#[derive(Debug, Clone, Copy)]
pub struct BatchConfig {
    pub size: usize,
    pub window: Duration,
    pub upstream_concurrency: usize,
}

impl QuoteService {
    /// Starts the collector task on the current runtime.
    pub fn new(settings: &Settings, client: StooqClient, metrics: Metrics) -> Self {
        let shared = Arc::new(Shared {
            slots: Mutex::new(HashMap::new()),
            ttl: settings.cache_ttl,
            not_found_ttl: settings.not_found_cache_ttl,
            max_entries: settings.cache_max_entries.max(1),
            metrics,
        });
        let (queue, rx) = mpsc::unbounded_channel();
        let config = BatchConfig {
            size: settings.batch_size as usize,
            window: settings.batch_window,
            upstream_concurrency: settings.upstream_concurrency as usize,
        };
        tokio::spawn(collect(shared.clone(), rx, client.clone(), config));
        Self {
            shared,
            queue,
            client,
            batch: config,
        }
    }

    /// Fetches `symbols` fresh from upstream, whatever the cache holds, in batches of
    /// `BATCH_SIZE` (at most `UPSTREAM_CONCURRENCY` at once), and stores the answers in the
    /// cache (waking any request waiting on one of them). This is the watch list's refresh
    /// (see [`crate::watch`]): a cached quote would hide the change it is looking for.
    pub async fn refresh(
        &self,
        symbols: &[Symbol],
        deadline: Instant,
    ) -> Vec<(Symbol, Arc<Answer>)> {
        use futures::StreamExt;
        // Owned futures (no borrow of `self` or `symbols`), so the caller's future is `Send`.
        let chunks: Vec<Vec<Symbol>> = symbols
            .chunks(self.batch.size.max(1))
            .map(<[Symbol]>::to_vec)
            .collect();
        let concurrency = self.batch.upstream_concurrency.max(1);
        futures::stream::iter(chunks)
            .map(|chunk| {
                let this = self.clone();
                async move { this.refresh_batch(chunk, deadline).await }
            })
            .buffer_unordered(concurrency)
            .flat_map(futures::stream::iter)
            .collect()
            .await
    }

    async fn refresh_batch(
        &self,
        chunk: Vec<Symbol>,
        deadline: Instant,
    ) -> Vec<(Symbol, Arc<Answer>)> {
        let started = Instant::now();
        let result = self.client.fetch(&chunk, deadline).await;
        self.shared
            .metrics
            .upstream_fetch(chunk.len(), started.elapsed());
        let answers: Vec<(Symbol, Arc<Answer>)> = match result {
            Ok(mut rows) => chunk
                .into_iter()
                .map(|symbol| {
                    let result = rows.remove(symbol.as_str()).unwrap_or_else(|| {
                        Err(QuoteError::new(
                            ErrorCode::NotFound,
                            format!("stooq sent no row for symbol {symbol}"),
                        ))
                    });
                    (symbol, Arc::new(Answer::new(result)))
                })
                .collect(),
            Err(error) => {
                tracing::warn!(code = %error.code, error = %error.message, "watch refresh fetch failed");
                self.shared.metrics.upstream_error(error.code);
                let answer = Arc::new(Answer::new(Err(error)));
                chunk.into_iter().map(|s| (s, answer.clone())).collect()
            }
        };
        for (symbol, answer) in &answers {
            self.shared.resolve(symbol.clone(), answer.clone());
        }
        answers
    }

    /// The answer for `symbol`, from the cache, from a fetch already in flight, or from a new
    /// (batched) fetch. Gives up with a timeout answer at `deadline`; the fetch itself goes on
    /// and fills the cache for whoever asks next.
    pub async fn get(&self, symbol: &Symbol, deadline: Instant) -> Arc<Answer> {
        let mut misses = Vec::new();
        let pending = self.claim(symbol, deadline, &mut misses);
        if let Err(answer) = self.enqueue(misses) {
            return answer;
        }
        pending.resolve(symbol, deadline).await
    }

    /// The answers for `symbols`, in order, as [`Self::get`] gives each. The symbols that need
    /// fetching are queued together, in one message to the collector, so they go upstream in
    /// `ceil(misses / BATCH_SIZE)` calls rather than depending on how the batch window happens
    /// to cut them. A symbol listed twice is fetched once.
    pub async fn get_many(&self, symbols: &[Symbol], deadline: Instant) -> Vec<Arc<Answer>> {
        let mut misses = Vec::new();
        let pending: Vec<Pending> = symbols
            .iter()
            .map(|symbol| self.claim(symbol, deadline, &mut misses))
            .collect();
        if let Err(answer) = self.enqueue(misses) {
            return vec![answer; symbols.len()];
        }
        futures::future::join_all(
            pending
                .into_iter()
                .zip(symbols)
                .map(|(pending, symbol)| pending.resolve(symbol, deadline)),
        )
        .await
    }

    /// Takes the cached answer, joins the fetch in flight, or opens a slot and adds the symbol
    /// to `misses` (which the caller must [`Self::enqueue`]). Never awaits.
    fn claim(&self, symbol: &Symbol, deadline: Instant, misses: &mut Vec<Queued>) -> Pending {
        let now = Instant::now();
        let mut slots = self.shared.lock();
        match slots.get_mut(symbol) {
            Some(Slot::Ready { answer, expires }) if *expires > now => {
                self.shared.metrics.cache_hit();
                Pending::Ready(answer.clone())
            }
            Some(Slot::InFlight {
                waiters,
                deadline: fetch_deadline,
            }) => {
                self.shared.metrics.coalesced();
                fetch_deadline.extend(deadline);
                let (tx, rx) = oneshot::channel();
                waiters.push(tx);
                Pending::Waiting(rx)
            }
            _ => {
                self.shared.metrics.cache_miss();
                let (tx, rx) = oneshot::channel();
                if slots.len() >= self.shared.max_entries {
                    evict(&mut slots, self.shared.max_entries, now);
                }
                let fetch_deadline = FetchDeadline::new(deadline);
                slots.insert(
                    symbol.clone(),
                    Slot::InFlight {
                        waiters: vec![tx],
                        deadline: fetch_deadline.clone(),
                    },
                );
                misses.push(Queued {
                    symbol: symbol.clone(),
                    deadline: fetch_deadline,
                });
                Pending::Waiting(rx)
            }
        }
    }

    /// Hands the symbols [`Self::claim`] opened slots for to the collector, as one group.
    /// If the collector has stopped, their slots are failed (waking every waiter) and the
    /// answer they got is returned.
    fn enqueue(&self, misses: Vec<Queued>) -> Result<(), Arc<Answer>> {
        if misses.is_empty() {
            return Ok(());
        }
        let Err(mpsc::error::SendError(misses)) = self.queue.send(misses) else {
            return Ok(());
        };
        let answer = Arc::new(Answer::error(
            ErrorCode::Internal,
            "the quote fetcher has stopped",
        ));
        for queued in misses {
            self.shared.resolve(queued.symbol, answer.clone());
        }
        Err(answer)
    }

    /// Number of symbols with a slot (cached or in flight); for tests and diagnostics.
    pub fn cached_symbols(&self) -> usize {
        self.shared.lock().len()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, HashMap<Symbol, Slot>> {
        // A panic while holding the lock cannot leave the map inconsistent (every update is a
        // single insert or remove), so a poisoned lock is safe to keep using.
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores the answer (or drops the slot when it must not be cached) and wakes the waiters.
    fn resolve(&self, symbol: Symbol, answer: Arc<Answer>) {
        let ttl = match answer.error_code() {
            None => self.ttl,
            Some(ErrorCode::NotFound) => self.not_found_ttl,
            Some(_) => Duration::ZERO,
        };
        let previous = {
            let mut slots = self.lock();
            if ttl.is_zero() {
                slots.remove(&symbol)
            } else {
                let expires = Instant::now() + ttl;
                slots.insert(
                    symbol,
                    Slot::Ready {
                        answer: answer.clone(),
                        expires,
                    },
                )
            }
        };
        if let Some(Slot::InFlight { waiters, .. }) = previous {
            for waiter in waiters {
                let _ = waiter.send(answer.clone());
            }
        }
    }
}

/// Makes room: drops expired answers, then (if still full) cached answers in arbitrary order
/// down to 90% of the bound. In-flight slots are never dropped: they have waiters.
fn evict(slots: &mut HashMap<Symbol, Slot>, max: usize, now: Instant) {
    slots.retain(|_, slot| !matches!(slot, Slot::Ready { expires, .. } if *expires <= now));
    let target = max - max / 10;
    if slots.len() >= target.max(1) {
        let mut excess = slots.len() + 1 - target.max(1);
        slots.retain(|_, slot| {
            if excess > 0 && matches!(slot, Slot::Ready { .. }) {
                excess -= 1;
                false
            } else {
                true
            }
        });
    }
}

/// The collector: forms batches from the queue and starts one fetch task per batch, at most
/// `upstream_concurrency` at a time. While it waits for a free slot, symbols keep queueing
/// and join the next batch, so a slow upstream gets fewer, fuller requests. A group larger
/// than a batch (one request's misses) is cut into full batches, its remainder topped up by
/// whatever else arrives within the window.
async fn collect(
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<Vec<Queued>>,
    client: StooqClient,
    config: BatchConfig,
) {
    let limit = Arc::new(Semaphore::new(config.upstream_concurrency.max(1)));
    let size = config.size.max(1);
    let mut pending: VecDeque<Queued> = VecDeque::new();
    loop {
        if pending.is_empty() {
            match rx.recv().await {
                Some(group) => pending.extend(group),
                None => break,
            }
        }
        let Ok(permit) = limit.clone().acquire_owned().await else {
            break;
        };
        let window_end = Instant::now() + config.window;
        while pending.len() < size {
            match rx.try_recv() {
                Ok(group) => {
                    pending.extend(group);
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
            if config.window.is_zero() {
                break;
            }
            match tokio::time::timeout_at(window_end, rx.recv()).await {
                Ok(Some(group)) => pending.extend(group),
                _ => break,
            }
        }
        let take = pending.len().min(size);
        let batch: Vec<Queued> = pending.drain(..take).collect();
        tokio::spawn(fetch_batch(shared.clone(), client.clone(), batch, permit));
    }
}

/// Fails the waiters of any symbol still in flight when dropped, so a panicking or aborted
/// fetch task never leaves a slot that later requests would wait on forever.
struct InFlightGuard {
    shared: Arc<Shared>,
    symbols: Vec<Symbol>,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.symbols.is_empty() {
            return;
        }
        let answer = Arc::new(Answer::error(
            ErrorCode::Internal,
            "the fetch for this symbol was abandoned",
        ));
        for symbol in self.symbols.drain(..) {
            self.shared.resolve(symbol, answer.clone());
        }
    }
}

#[tracing::instrument(skip_all, fields(symbols = batch.len()))]
async fn fetch_batch(
    shared: Arc<Shared>,
    client: StooqClient,
    batch: Vec<Queued>,
    _permit: OwnedSemaphorePermit,
) {
    let (symbols, deadlines): (Vec<Symbol>, Vec<FetchDeadline>) =
        batch.into_iter().map(|q| (q.symbol, q.deadline)).unzip();
    let deadline = || {
        deadlines
            .iter()
            .map(FetchDeadline::get)
            .max()
            .unwrap_or_else(Instant::now)
    };
    let mut guard = InFlightGuard {
        shared: shared.clone(),
        symbols,
    };
    let started = Instant::now();
    let result = client.fetch_until(&guard.symbols, deadline).await;
    shared
        .metrics
        .upstream_fetch(guard.symbols.len(), started.elapsed());
    let symbols = std::mem::take(&mut guard.symbols);
    match result {
        Ok(mut rows) => {
            for symbol in symbols {
                let result = rows.remove(symbol.as_str()).unwrap_or_else(|| {
                    Err(QuoteError::new(
                        ErrorCode::NotFound,
                        format!("stooq sent no row for symbol {symbol}"),
                    ))
                });
                shared.resolve(symbol, Arc::new(Answer::new(result)));
            }
        }
        Err(error) => {
            tracing::warn!(code = %error.code, error = %error.message, "stooq fetch failed");
            shared.metrics.upstream_error(error.code);
            let answer = Arc::new(Answer::new(Err(error)));
            for symbol in symbols {
                shared.resolve(symbol, answer.clone());
            }
        }
    }
}
