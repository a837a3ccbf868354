//! Coalesces identical concurrent quote requests into one RPC.
//!
//! Under load many users ask for the same few symbols at once; without coalescing each
//! would cost a broker round trip and, worse, a stooq fetch. The first caller for a symbol
//! starts a flight (a spawned task, so it completes even if that caller goes away); callers
//! arriving while it is in the air await the same shared result. The flight removes itself
//! from the map when it lands, so the next request after that fetches afresh.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use shared::{ErrorCode, Quote, QuoteError, Symbol};
use tracing::Instrument;

use super::{QuoteTransport, TransportError};

type FlightResult = Result<Quote, TransportError>;

struct Flight {
    id: u64,
    result: Shared<BoxFuture<'static, FlightResult>>,
}

type Flights = Arc<Mutex<HashMap<Symbol, Flight>>>;

pub struct SingleFlight {
    inner: Arc<dyn QuoteTransport>,
    flights: Flights,
    next_id: AtomicU64,
    joined: AtomicU64,
}

impl SingleFlight {
    pub fn new(inner: Arc<dyn QuoteTransport>) -> Self {
        Self {
            inner,
            flights: Arc::default(),
            next_id: AtomicU64::new(0),
            joined: AtomicU64::new(0),
        }
    }

    /// Number of flights in the air (for tests and debugging).
    pub fn in_flight(&self) -> usize {
        lock(&self.flights).len()
    }
}

fn lock(flights: &Flights) -> std::sync::MutexGuard<'_, HashMap<Symbol, Flight>> {
    // A panic while holding this lock cannot leave the map inconsistent (single inserts and
    // removes), so a poisoned lock is still usable.
    flights.lock().unwrap_or_else(|e| e.into_inner())
}

#[async_trait]
impl QuoteTransport for SingleFlight {
    async fn get_quote(&self, symbol: &Symbol, request_id: &str) -> FlightResult {
        let result = {
            let mut flights = lock(&self.flights);
            if let Some(flight) = flights.get(symbol) {
                tracing::debug!(%symbol, flight = flight.id, "joining in-flight quote request");
                self.joined.fetch_add(1, Ordering::Relaxed);
                flight.result.clone()
            } else {
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                let inner = Arc::clone(&self.inner);
                let map = Arc::clone(&self.flights);
                let key = symbol.clone();
                let request_id = request_id.to_owned();
                // The map lock is held until the flight is inserted, so the task's removal
                // below can never run before the insertion.
                let task = tokio::spawn(
                    async move {
                        let result = inner.get_quote(&key, &request_id).await;
                        let mut flights = lock(&map);
                        if flights.get(&key).is_some_and(|f| f.id == id) {
                            flights.remove(&key);
                        }
                        result
                    }
                    .instrument(tracing::Span::current()),
                );
                let shared = async move {
                    task.await.unwrap_or_else(|err| {
                        tracing::error!(error = %err, "quote request task failed");
                        Err(TransportError::Quote(QuoteError::new(
                            ErrorCode::Internal,
                            "quote request task failed",
                        )))
                    })
                }
                .boxed()
                .shared();
                flights.insert(
                    symbol.clone(),
                    Flight {
                        id,
                        result: shared.clone(),
                    },
                );
                shared
            }
        };
        result.await
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
}
