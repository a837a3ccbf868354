//! The live-quote feed without a broker (QUOTE_TRANSPORT=http): every `WATCH_REFRESH` the
//! instance asks the quote service for the symbols its streams watch and hands the answers
//! to the [`StreamHub`], which passes on only what changed. Same SSE contract; the cost is
//! one batch request (contract v2, up to [`MAX_BATCH_SYMBOLS`] symbols each) per instance per
//! interval, and answers may be as old as the quote service's CACHE_TTL.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use shared::{MAX_BATCH_SYMBOLS, Symbol};

use super::hub::StreamHub;
use crate::transport::QuoteTransport;

/// Batch requests in flight at once per poll (each up to [`MAX_BATCH_SYMBOLS`] symbols).
const POLL_CONCURRENCY: usize = 4;

pub async fn run(
    transport: Arc<dyn QuoteTransport>,
    hub: Arc<StreamHub>,
    every: Duration,
    shutdown: CancellationToken,
) {
    // The first poll is one interval away: a new stream fetches its first quotes itself.
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let watched = hub.watched();
        if watched.is_empty() {
            continue;
        }
        let request_id = format!("watch-poll-{}", uuid::Uuid::new_v4().simple());
        let batches: Vec<Vec<Symbol>> = watched
            .chunks(MAX_BATCH_SYMBOLS)
            .map(<[Symbol]>::to_vec)
            .collect();
        let answers = futures::stream::iter(batches)
            .map(|batch| {
                let transport = Arc::clone(&transport);
                let request_id = request_id.clone();
                async move {
                    let results = transport.get_quotes(&batch, &request_id).await;
                    (batch, results)
                }
            })
            .buffer_unordered(POLL_CONCURRENCY)
            .collect::<Vec<_>>();
        let answers = tokio::select! {
            _ = shutdown.cancelled() => return,
            answers = answers => answers,
        };
        for (batch, results) in answers {
            let results = match results {
                Ok(results) => results,
                Err(e) => {
                    tracing::debug!(symbols = batch.len(), error = %e, "watch poll got no answer");
                    continue;
                }
            };
            for (symbol, result) in batch.iter().zip(results) {
                match result {
                    Ok(quote) => {
                        hub.publish(symbol, quote);
                    }
                    Err(e) => tracing::debug!(%symbol, error = %e, "watch poll got no quote"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;
    use shared::Quote;

    use super::*;
    use crate::transport::{SymbolResult, TransportError};

    /// Records each batch it is asked for; a single-symbol call is a failure of the poller.
    #[derive(Default)]
    struct RecordingTransport {
        batches: Mutex<Vec<usize>>,
    }

    #[async_trait]
    impl QuoteTransport for RecordingTransport {
        async fn get_quote(&self, symbol: &Symbol, _: &str) -> Result<Quote, TransportError> {
            panic!("{symbol} polled on its own instead of in a batch")
        }
        async fn get_quotes(
            &self,
            symbols: &[Symbol],
            _: &str,
        ) -> Result<Vec<SymbolResult>, TransportError> {
            self.batches.lock().unwrap().push(symbols.len());
            Ok(symbols
                .iter()
                .map(|_| Err(TransportError::Unavailable("test".into())))
                .collect())
        }
        fn is_ready(&self) -> bool {
            true
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_poll_asks_for_the_watched_symbols_in_batches_of_the_contract_maximum() {
        let transport = Arc::new(RecordingTransport::default());
        let hub = StreamHub::new();
        let symbols: Vec<Symbol> = (0..MAX_BATCH_SYMBOLS + 10)
            .map(|i| Symbol::parse(&format!("s{i}.us")).unwrap())
            .collect();
        let _subscription = hub.subscribe(&symbols);
        let shutdown = CancellationToken::new();
        let every = Duration::from_secs(15);

        let poller = tokio::spawn(run(
            transport.clone(),
            Arc::clone(&hub),
            every,
            shutdown.clone(),
        ));
        tokio::time::sleep(every + Duration::from_millis(1)).await;
        shutdown.cancel();
        poller.await.unwrap();

        let mut batches = transport.batches.lock().unwrap().clone();
        batches.sort_unstable();
        assert_eq!(batches, [10, MAX_BATCH_SYMBOLS]);
    }
}
