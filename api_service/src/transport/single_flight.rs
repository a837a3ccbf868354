//! Coalesces identical quote requests into one RPC.
//!
//! Under load many users ask for the same few symbols at once; without coalescing each
//! would cost a broker round trip and, worse, a stooq fetch. The first caller for a symbol
//! starts a flight (a spawned task, so it completes even if that caller goes away); callers
//! arriving while it is in the air await the same shared result.
//!
//! A flight that lands with a quote stays joinable for a short reuse window
//! (`QUOTE_REUSE_WINDOW`): the quote worker serves quotes from its own cache for seconds
//! (`CACHE_TTL`), so asking it again a fraction of a second later buys no freshness, only a
//! broker round trip. The window bounds how much older than a fresh RPC's answer a reused
//! quote can be. Errors (not found, upstream failures, timeouts, unavailable) are never
//! reused: the flight removes itself on landing, so the next request asks afresh and fast
//! failure reporting is unchanged. Once half the window has passed, the next request for the
//! symbol starts a refresh in the background (still answered with the landed quote), so hot
//! symbols are refreshed ahead and no request waits for their RPC. Landed entries expire and
//! are pruned as new flights are inserted, so many distinct symbols cannot grow the map
//! without bound.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use shared::{ErrorCode, Quote, QuoteError, Symbol};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

use super::{QuoteTransport, TransportError};

type FlightResult = Result<Quote, TransportError>;
type SharedResult = Shared<BoxFuture<'static, FlightResult>>;

/// The map is pruned of expired entries when it reaches this size at least (and then when
/// it doubles past what survived), so pruning costs amortised O(1) per inserted flight.
const MIN_PRUNE_AT: usize = 1024;

enum Entry {
    /// An RPC in the air; joiners await its shared result.
    InFlight { id: u64, result: SharedResult },
    /// A successful answer, handed out until `expires`. The first request after
    /// `refresh_at` (half the window) starts a refresh in the background and is still
    /// answered with this quote, so a symbol asked for steadily never makes a request wait
    /// for an RPC: the refresh lands and replaces it before it expires.
    Landed {
        quote: Quote,
        expires: Instant,
        refresh_at: Instant,
        /// The refreshing flight's id, while one is in the air.
        refreshing: Option<u64>,
    },
}

impl Entry {
    fn landed(quote: Quote, now: Instant, window: Duration) -> Self {
        Entry::Landed {
            quote,
            expires: now + window,
            refresh_at: now + window / 2,
            refreshing: None,
        }
    }
}

struct Flights {
    entries: HashMap<Symbol, Entry>,
    /// Size at which the next insert first drops expired entries.
    prune_at: usize,
}

impl Default for Flights {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
            prune_at: MIN_PRUNE_AT,
        }
    }
}

impl Flights {
    fn prune_if_large(&mut self, now: Instant) {
        if self.entries.len() < self.prune_at {
            return;
        }
        self.entries.retain(|_, entry| match entry {
            Entry::InFlight { .. } => true,
            Entry::Landed { expires, .. } => *expires > now,
        });
        self.prune_at = (self.entries.len() * 2).max(MIN_PRUNE_AT);
    }
}

type SharedFlights = Arc<Mutex<Flights>>;

pub struct SingleFlight {
    inner: Arc<dyn QuoteTransport>,
    flights: SharedFlights,
    reuse_window: Duration,
    next_id: AtomicU64,
    joined: AtomicU64,
}

impl SingleFlight {
    /// Shares only RPCs in flight: once one lands, the next request sends a new one.
    pub fn new(inner: Arc<dyn QuoteTransport>) -> Self {
        Self::with_reuse_window(inner, Duration::ZERO)
    }

    /// Also hands out a landed successful quote for `reuse_window` after it arrived
    /// (`Duration::ZERO`: only in-flight sharing, as [`SingleFlight::new`]).
    pub fn with_reuse_window(inner: Arc<dyn QuoteTransport>, reuse_window: Duration) -> Self {
        Self {
            inner,
            flights: Arc::default(),
            reuse_window,
            next_id: AtomicU64::new(0),
            joined: AtomicU64::new(0),
        }
    }

    /// Number of flights in the air (for tests and debugging).
    pub fn in_flight(&self) -> usize {
        lock(&self.flights)
            .entries
            .values()
            .filter(|e| matches!(e, Entry::InFlight { .. }))
            .count()
    }

    /// Number of entries in the map, landed ones included (for tests).
    pub fn entries(&self) -> usize {
        lock(&self.flights).entries.len()
    }
}

fn lock(flights: &SharedFlights) -> std::sync::MutexGuard<'_, Flights> {
    // A panic while holding this lock cannot leave the map inconsistent (single inserts,
    // replacements and removes), so a poisoned lock is still usable.
    flights.lock().unwrap_or_else(|e| e.into_inner())
}

impl SingleFlight {
    /// Spawns the RPC for `symbol` (a task, so it lands even if every caller goes away) and
    /// returns its id and task. The caller holds the map lock and records the flight before
    /// releasing it, so the task's update on landing always comes after.
    fn launch(&self, symbol: &Symbol, request_id: &str) -> (u64, JoinHandle<FlightResult>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let inner = Arc::clone(&self.inner);
        let map = Arc::clone(&self.flights);
        let key = symbol.clone();
        let request_id = request_id.to_owned();
        let window = self.reuse_window;
        let task = tokio::spawn(
            async move {
                let result = inner.get_quote(&key, &request_id).await;
                let now = Instant::now();
                let mut flights = lock(&map);
                let (ours, refreshing) = match flights.entries.get(&key) {
                    Some(Entry::InFlight { id: current, .. }) => (*current == id, false),
                    Some(Entry::Landed { refreshing, .. }) => (*refreshing == Some(id), true),
                    None => (false, false),
                };
                if ours {
                    match &result {
                        Ok(quote) if !window.is_zero() => {
                            flights
                                .entries
                                .insert(key, Entry::landed(quote.clone(), now, window));
                        }
                        // A failed refresh: the landed quote serves out its window, then the
                        // next request asks afresh and meets the error itself.
                        Err(_) if refreshing => {
                            if let Some(Entry::Landed { refreshing, .. }) =
                                flights.entries.get_mut(&key)
                            {
                                *refreshing = None;
                            }
                        }
                        _ => {
                            flights.entries.remove(&key);
                        }
                    }
                }
                result
            }
            .instrument(tracing::Span::current()),
        );
        (id, task)
    }
}

/// A flight's result, for every request that joins it.
fn shared(task: JoinHandle<FlightResult>) -> SharedResult {
    async move {
        task.await.unwrap_or_else(|err| {
            tracing::error!(error = %err, "quote request task failed");
            Err(TransportError::Quote(QuoteError::new(
                ErrorCode::Internal,
                "quote request task failed",
            )))
        })
    }
    .boxed()
    .shared()
}

#[async_trait]
impl QuoteTransport for SingleFlight {
    async fn get_quote(&self, symbol: &Symbol, request_id: &str) -> FlightResult {
        let result = {
            let mut flights = lock(&self.flights);
            let now = Instant::now();
            match flights.entries.get_mut(symbol) {
                Some(Entry::InFlight { id, result }) => {
                    tracing::debug!(%symbol, flight = id, "joining in-flight quote request");
                    self.joined.fetch_add(1, Ordering::Relaxed);
                    result.clone()
                }
                Some(Entry::Landed {
                    quote,
                    expires,
                    refresh_at,
                    refreshing,
                }) if *expires > now => {
                    tracing::debug!(%symbol, "reusing a quote that landed moments ago");
                    if refreshing.is_none() && now >= *refresh_at {
                        *refreshing = Some(self.launch(symbol, request_id).0);
                    }
                    self.joined.fetch_add(1, Ordering::Relaxed);
                    return Ok(quote.clone());
                }
                _ => {
                    let (id, task) = self.launch(symbol, request_id);
                    let shared = shared(task);
                    flights.prune_if_large(now);
                    flights.entries.insert(
                        symbol.clone(),
                        Entry::InFlight {
                            id,
                            result: shared.clone(),
                        },
                    );
                    shared
                }
            }
        };
        result.await
    }

    /// Passed straight to the transport: a batch is one RPC of its own, neither joining
    /// single-symbol flights nor offering itself for them to join (a batch's symbols are
    /// fetched together by the worker; splitting it over flights would cost more RPCs).
    async fn get_quotes(
        &self,
        symbols: &[Symbol],
        request_id: &str,
    ) -> Result<Vec<super::SymbolResult>, TransportError> {
        self.inner.get_quotes(symbols, request_id).await
    }

    fn is_ready(&self) -> bool {
        self.inner.is_ready()
    }

    fn flight_counts(&self) -> Option<(u64, u64)> {
        Some((
            self.next_id.load(Ordering::Relaxed),
            self.joined.load(Ordering::Relaxed),
        ))
    }

    fn batch_counts(&self) -> Option<(u64, u64)> {
        self.inner.batch_counts()
    }

    fn readiness_phrase(&self) -> &'static str {
        self.inner.readiness_phrase()
    }

    fn readiness_detail(&self) -> String {
        self.inner.readiness_detail()
    }

    async fn shutdown(&self) {
        self.inner.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    /// Counts calls and answers after a delay, so concurrent callers overlap.
    struct Slow {
        calls: AtomicUsize,
    }

    #[async_trait]
    impl QuoteTransport for Slow {
        async fn get_quote(&self, symbol: &Symbol, _: &str) -> FlightResult {
            self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            Err(TransportError::Quote(QuoteError::new(
                ErrorCode::NotFound,
                symbol.as_str(),
            )))
        }
        fn is_ready(&self) -> bool {
            true
        }
    }

    #[tokio::test]
    async fn identical_concurrent_requests_share_one_call() {
        let slow = Arc::new(Slow {
            calls: AtomicUsize::new(0),
        });
        let sf = Arc::new(SingleFlight::new(slow.clone()));
        let aapl = Symbol::parse("aapl.us").unwrap();
        let msft = Symbol::parse("msft.us").unwrap();
        let mut tasks = Vec::new();
        for i in 0..50 {
            let sf = sf.clone();
            let sym = if i % 2 == 0 {
                aapl.clone()
            } else {
                msft.clone()
            };
            tasks.push(tokio::spawn(async move {
                (sym.clone(), sf.get_quote(&sym, "r").await)
            }));
        }
        for t in tasks {
            let (sym, result) = t.await.unwrap();
            // Each caller gets the answer for its own symbol.
            match result {
                Err(TransportError::Quote(q)) => assert_eq!(q.message, sym.as_str()),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(slow.calls.load(Ordering::SeqCst), 2);
        assert_eq!(sf.in_flight(), 0);
        assert_eq!(sf.flight_counts(), Some((2, 48)));

        // After landing, the next request flies again.
        let _ = sf.get_quote(&aapl, "r").await;
        assert_eq!(slow.calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn flight_completes_when_its_caller_goes_away() {
        let slow = Arc::new(Slow {
            calls: AtomicUsize::new(0),
        });
        let sf = Arc::new(SingleFlight::new(slow.clone()));
        let aapl = Symbol::parse("aapl.us").unwrap();
        let first = {
            let sf = sf.clone();
            let aapl = aapl.clone();
            tokio::spawn(async move { sf.get_quote(&aapl, "r").await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        first.abort();
        // The abandoned flight still lands and clears itself.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(sf.in_flight(), 0);
        assert_eq!(slow.calls.load(Ordering::SeqCst), 1);
    }

    fn test_quote(symbol: &Symbol, close: f64) -> Quote {
        crate::test_support::quote(&symbol.as_str().to_uppercase(), "Test", close)
    }

    /// Answers every call with a quote after a short delay, counting calls.
    struct Succeeds {
        calls: AtomicUsize,
        delay: Duration,
    }

    #[async_trait]
    impl QuoteTransport for Succeeds {
        async fn get_quote(&self, symbol: &Symbol, _: &str) -> FlightResult {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            Ok(test_quote(symbol, n as f64))
        }
        fn is_ready(&self) -> bool {
            true
        }
    }

    #[tokio::test]
    async fn landed_quote_is_reused_within_the_window_then_fetched_again() {
        let up = Arc::new(Succeeds {
            calls: AtomicUsize::new(0),
            delay: Duration::from_millis(20),
        });
        let sf = SingleFlight::with_reuse_window(up.clone(), Duration::from_millis(300));
        let aapl = Symbol::parse("aapl.us").unwrap();
        let first = sf.get_quote(&aapl, "r").await.unwrap();
        // Landed, not in flight, yet the next requests get the same answer without an RPC.
        assert_eq!(sf.in_flight(), 0);
        for _ in 0..5 {
            assert_eq!(sf.get_quote(&aapl, "r").await.unwrap(), first);
        }
        assert_eq!(up.calls.load(Ordering::SeqCst), 1);
        assert_eq!(sf.flight_counts(), Some((1, 5)));

        // Past the window the quote is asked for again.
        tokio::time::sleep(Duration::from_millis(350)).await;
        let second = sf.get_quote(&aapl, "r").await.unwrap();
        assert_eq!(second.close, 1.0);
        assert_eq!(up.calls.load(Ordering::SeqCst), 2);
        assert_eq!(sf.flight_counts(), Some((2, 5)));
    }

    #[tokio::test]
    async fn past_half_its_window_a_quote_is_refreshed_in_the_background() {
        let up = Arc::new(Succeeds {
            calls: AtomicUsize::new(0),
            delay: Duration::from_millis(20),
        });
        let sf = SingleFlight::with_reuse_window(up.clone(), Duration::from_millis(300));
        let aapl = Symbol::parse("aapl.us").unwrap();
        let first = sf.get_quote(&aapl, "r").await.unwrap();

        tokio::time::sleep(Duration::from_millis(170)).await;
        // Answered with the landed quote at once; the refresh flies behind it.
        assert_eq!(sf.get_quote(&aapl, "r").await.unwrap(), first);
        assert_eq!(sf.flight_counts(), Some((2, 1)), "a refresh was launched");
        assert_eq!(sf.get_quote(&aapl, "r").await.unwrap(), first);
        assert_eq!(sf.flight_counts(), Some((2, 2)), "one refresh at a time");

        tokio::time::sleep(Duration::from_millis(60)).await;
        let refreshed = sf.get_quote(&aapl, "r").await.unwrap();
        assert_eq!(
            refreshed.close, 1.0,
            "the refreshed quote replaced the first"
        );
        // Past the first quote's window, the refreshed one is still served without a wait.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(sf.get_quote(&aapl, "r").await.unwrap(), refreshed);
        assert_eq!(sf.in_flight(), 0, "no request waited on a flight");
    }

    /// Answers the first call with a quote and every later one with an upstream error.
    struct FailsAfterFirst {
        calls: AtomicUsize,
    }

    #[async_trait]
    impl QuoteTransport for FailsAfterFirst {
        async fn get_quote(&self, symbol: &Symbol, _: &str) -> FlightResult {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(10)).await;
            if n > 0 {
                return Err(TransportError::Quote(QuoteError::new(
                    ErrorCode::UpstreamUnavailable,
                    "feed down",
                )));
            }
            Ok(test_quote(symbol, 1.0))
        }
        fn is_ready(&self) -> bool {
            true
        }
    }

    #[tokio::test]
    async fn a_failed_refresh_leaves_the_quote_to_its_window_then_the_error_is_met() {
        let up = Arc::new(FailsAfterFirst {
            calls: AtomicUsize::new(0),
        });
        let sf = SingleFlight::with_reuse_window(up.clone(), Duration::from_millis(200));
        let aapl = Symbol::parse("aapl.us").unwrap();
        let first = sf.get_quote(&aapl, "r").await.unwrap();

        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(sf.get_quote(&aapl, "r").await.unwrap(), first);
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(
            sf.get_quote(&aapl, "r").await.unwrap(),
            first,
            "the refresh failed, the quote is still within its window"
        );
        assert!(sf.flight_counts().unwrap().0 >= 2, "a refresh was tried");

        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            sf.get_quote(&aapl, "r").await.is_err(),
            "past the window the caller meets the feed's error"
        );
    }

    #[tokio::test]
    async fn errors_are_never_reused() {
        let slow = Arc::new(Slow {
            calls: AtomicUsize::new(0),
        });
        let sf = SingleFlight::with_reuse_window(slow.clone(), Duration::from_secs(60));
        let aapl = Symbol::parse("aapl.us").unwrap();
        for n in 1..=3 {
            assert!(sf.get_quote(&aapl, "r").await.is_err());
            assert_eq!(slow.calls.load(Ordering::SeqCst), n);
            assert_eq!(sf.entries(), 0);
        }
    }

    #[tokio::test]
    async fn zero_window_only_shares_flights_in_the_air() {
        let up = Arc::new(Succeeds {
            calls: AtomicUsize::new(0),
            delay: Duration::from_millis(20),
        });
        let sf = SingleFlight::with_reuse_window(up.clone(), Duration::ZERO);
        let aapl = Symbol::parse("aapl.us").unwrap();
        sf.get_quote(&aapl, "r").await.unwrap();
        sf.get_quote(&aapl, "r").await.unwrap();
        assert_eq!(up.calls.load(Ordering::SeqCst), 2);
        assert_eq!(sf.entries(), 0);
    }

    #[tokio::test]
    async fn expired_entries_are_pruned_so_many_symbols_do_not_grow_the_map() {
        let up = Arc::new(Succeeds {
            calls: AtomicUsize::new(0),
            delay: Duration::ZERO,
        });
        let sf = SingleFlight::with_reuse_window(up.clone(), Duration::from_millis(50));
        let symbols: Vec<Symbol> = (0..3 * MIN_PRUNE_AT)
            .map(|i| Symbol::parse(&format!("s{i}.us")).unwrap())
            .collect();
        let (old, new) = symbols.split_at(MIN_PRUNE_AT);
        futures::future::join_all(old.iter().map(|s| sf.get_quote(s, "r"))).await;
        assert_eq!(sf.entries(), MIN_PRUNE_AT);
        tokio::time::sleep(Duration::from_millis(100)).await;
        // All of the first batch expired: inserting new flights drops them.
        for s in new {
            sf.get_quote(s, "r").await.unwrap();
            assert!(
                sf.entries() <= 2 * MIN_PRUNE_AT,
                "map grew to {}",
                sf.entries()
            );
        }
        assert!(sf.entries() < new.len() + old.len());
    }
}
