//! The live-quote feed without a broker (QUOTE_TRANSPORT=http): every `WATCH_REFRESH` the
//! instance asks the quote service for each symbol its streams watch and hands the answers
//! to the [`StreamHub`], which passes on only what changed. Same SSE contract; the cost is
//! one quote request per watched symbol per instance per interval, and answers may be as old
//! as the quote service's CACHE_TTL.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::hub::StreamHub;
use crate::transport::QuoteTransport;

/// Quote requests in flight at once per poll.
const POLL_CONCURRENCY: usize = 16;

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
        let answers = futures::stream::iter(watched)
            .map(|symbol| {
                let transport = Arc::clone(&transport);
                let request_id = request_id.clone();
                async move {
                    let result = transport.get_quote(&symbol, &request_id).await;
                    (symbol, result)
                }
            })
            .buffer_unordered(POLL_CONCURRENCY)
            .collect::<Vec<_>>();
        let answers = tokio::select! {
            _ = shutdown.cancelled() => return,
            answers = answers => answers,
        };
        for (symbol, result) in answers {
            match result {
                Ok(quote) => {
                    hub.publish(&symbol, quote);
                }
                Err(e) => tracing::debug!(%symbol, error = %e, "watch poll got no quote"),
            }
        }
    }
}
