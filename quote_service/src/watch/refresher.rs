//! One refresh of the watch list: fetch every watched symbol fresh (batched upstream), and
//! keep only the quotes that changed since this refresher last published them.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use shared::live::{LIVE_VERSION, LiveQuote, fingerprint};
use shared::{QuoteResult, Symbol};
use tokio::time::Instant;

use crate::quotes::QuoteService;

pub struct Refresher {
    service: QuoteService,
    /// Fingerprint of the quote last published per watched symbol.
    published: HashMap<Symbol, u64>,
    /// How long one refresh may take upstream (retries included).
    timeout: Duration,
}

impl Refresher {
    pub fn new(service: QuoteService, timeout: Duration) -> Self {
        Self {
            service,
            published: HashMap::new(),
            timeout,
        }
    }

    /// The quotes of `symbols` that differ from what was last published (all of them the
    /// first time: a new leader does not know what the old one sent, and the API instances
    /// drop what they already have). Failed fetches publish nothing: a stream keeps its last
    /// good quote rather than flapping to an error.
    pub async fn refresh(&mut self, symbols: &[Symbol]) -> Vec<LiveQuote> {
        let watched: HashSet<&Symbol> = symbols.iter().collect();
        self.published.retain(|s, _| watched.contains(s));
        if symbols.is_empty() {
            return Vec::new();
        }
        let answers = self
            .service
            .refresh(symbols, Instant::now() + self.timeout)
            .await;
        let mut changed = Vec::new();
        for (symbol, answer) in answers {
            let QuoteResult::Ok { quote } = &answer.reply().result else {
                continue;
            };
            let fp = fingerprint(quote);
            if self.published.insert(symbol.clone(), fp) != Some(fp) {
                changed.push(LiveQuote {
                    v: LIVE_VERSION,
                    symbol: symbol.as_str().to_owned(),
                    quote: quote.clone(),
                    // Stamped by the publisher, right before the message goes out.
                    published_at_ms: None,
                });
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::settings::Settings;
    use crate::upstream::StooqClient;
    use fake_stooq::FakeStooq;

    async fn refresher(fake: &FakeStooq, batch_size: u32) -> Refresher {
        let mut settings = Settings::for_http_tests(&fake.url());
        settings.batch_size = batch_size;
        let metrics = Metrics::new();
        let client = StooqClient::new(&settings, metrics.clone()).unwrap();
        let service = QuoteService::new(&settings, client, metrics);
        Refresher::new(service, Duration::from_secs(2))
    }

    fn symbols(names: &[&str]) -> Vec<Symbol> {
        names.iter().map(|s| Symbol::parse(s).unwrap()).collect()
    }

    #[tokio::test]
    async fn publishes_everything_first_then_only_changes() {
        let fake = FakeStooq::start().await;
        let mut refresher = refresher(&fake, 50).await;
        let watched = symbols(&["aapl.us", "msft.us"]);

        assert_eq!(refresher.refresh(&watched).await.len(), 2);
        assert!(
            refresher.refresh(&watched).await.is_empty(),
            "nothing moved"
        );
        fake.advance_prices();
        let changed = refresher.refresh(&watched).await;

        assert_eq!(changed.len(), 2);
        assert_eq!(changed[0].v, LIVE_VERSION);
    }

    #[tokio::test]
    async fn goes_upstream_past_the_cache_in_batches() {
        let fake = FakeStooq::start().await;
        let mut refresher = refresher(&fake, 2).await;
        let watched = symbols(&["a.us", "b.us", "c.us"]);

        refresher.refresh(&watched).await;
        refresher.refresh(&watched).await;

        assert_eq!(fake.hits(), 4, "two batches per refresh, cache or not");
        assert_eq!(fake.symbols_requested(), 6);
    }

    #[tokio::test]
    async fn not_found_and_failures_publish_nothing() {
        let fake = FakeStooq::start().await;
        let mut refresher = refresher(&fake, 50).await;
        let watched = symbols(&["xxxx.us", "aapl.us"]);
        assert_eq!(refresher.refresh(&watched).await.len(), 1);

        fake.advance_prices();
        fake.set_mode(fake_stooq::Mode::Status(404));
        assert!(refresher.refresh(&watched).await.is_empty());
    }
}
