//! The instance's live quotes: per watched symbol, how many streams watch it and the latest
//! quote seen (a `tokio::sync::watch` channel, so a slow stream only ever skips to the newest
//! value and nothing queues up per subscriber). Fed by a feed ([`super::amqp_feed`] or
//! [`super::poll_feed`]), which in turn follows [`StreamHub::watched`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use shared::live::fingerprint;
use shared::{Quote, Symbol};
use tokio::sync::watch;

/// A quote with its fingerprint, computed once.
#[derive(Debug, Clone, PartialEq)]
pub struct Latest {
    pub quote: Quote,
    pub fingerprint: u64,
    /// When the quote worker published it (Unix ms), for quotes that came over the live
    /// exchange; passed on in the event so clients can measure delivery latency. Not part of
    /// the fingerprint: a republished quote is still no news.
    pub published_at_ms: Option<i64>,
}

impl Latest {
    pub fn new(quote: Quote) -> Self {
        Self {
            fingerprint: fingerprint(&quote),
            quote,
            published_at_ms: None,
        }
    }
}

pub type LatestRx = watch::Receiver<Option<Arc<Latest>>>;

struct Entry {
    subscribers: usize,
    tx: watch::Sender<Option<Arc<Latest>>>,
}

#[derive(Default)]
struct Inner {
    symbols: HashMap<Symbol, Entry>,
}

/// Cheap to share (`Arc`). Holds entries only for symbols some stream of this instance
/// watches, so its size is bounded by the streams' caps.
pub struct StreamHub {
    inner: Mutex<Inner>,
    /// Bumped whenever the set of watched symbols changes; feeds wait on it.
    generation: watch::Sender<u64>,
}

impl Default for StreamHub {
    fn default() -> Self {
        Self {
            inner: Mutex::default(),
            generation: watch::Sender::new(0),
        }
    }
}

/// A stream's hold on its symbols: their receivers, in the order asked for. Dropping it
/// releases the symbols (the last holder of one stops the instance watching it).
pub struct Subscription {
    hub: Arc<StreamHub>,
    symbols: Vec<Symbol>,
    pub receivers: Vec<LatestRx>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.release(&self.symbols);
    }
}

impl StreamHub {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update is a single insert, remove or counter step: a panic cannot leave the
        // map half-changed.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts watching `symbols` (distinct) for one stream.
    pub fn subscribe(self: &Arc<Self>, symbols: &[Symbol]) -> Subscription {
        let mut added = false;
        let receivers = {
            let mut inner = self.lock();
            symbols
                .iter()
                .map(|symbol| {
                    let entry = inner.symbols.entry(symbol.clone()).or_insert_with(|| {
                        added = true;
                        Entry {
                            subscribers: 0,
                            tx: watch::Sender::new(None),
                        }
                    });
                    entry.subscribers += 1;
                    entry.tx.subscribe()
                })
                .collect()
        };
        if added {
            self.generation.send_modify(|g| *g += 1);
        }
        Subscription {
            hub: Arc::clone(self),
            symbols: symbols.to_vec(),
            receivers,
        }
    }

    fn release(&self, symbols: &[Symbol]) {
        let mut removed = false;
        {
            let mut inner = self.lock();
            for symbol in symbols {
                if let Some(entry) = inner.symbols.get_mut(symbol) {
                    entry.subscribers -= 1;
                    if entry.subscribers == 0 {
                        inner.symbols.remove(symbol);
                        removed = true;
                    }
                }
            }
        }
        if removed {
            self.generation.send_modify(|g| *g += 1);
        }
    }

    /// A quote from the feed: handed to the symbol's streams unless nobody here watches it or
    /// it is what they already have (a repeat after a leader change or a reconnect).
    /// Returns whether it was news.
    pub fn publish(&self, symbol: &Symbol, quote: Quote) -> bool {
        self.publish_at(symbol, quote, None)
    }

    /// [`publish`](Self::publish) for a quote the worker published at `published_at_ms`.
    pub fn publish_at(&self, symbol: &Symbol, quote: Quote, published_at_ms: Option<i64>) -> bool {
        let latest = Latest {
            published_at_ms,
            ..Latest::new(quote)
        };
        let inner = self.lock();
        let Some(entry) = inner.symbols.get(symbol) else {
            return false;
        };
        entry.tx.send_if_modified(|current| {
            if current.as_ref().map(|c| c.fingerprint) == Some(latest.fingerprint) {
                return false;
            }
            *current = Some(Arc::new(latest));
            true
        })
    }

    /// A quote a stream fetched for its first event: kept only while the symbol has no quote
    /// yet, so an RPC answer can never replace a newer one from the feed.
    pub fn offer(&self, symbol: &Symbol, quote: Quote) {
        let inner = self.lock();
        if let Some(entry) = inner.symbols.get(symbol) {
            entry.tx.send_if_modified(|current| {
                if current.is_some() {
                    return false;
                }
                *current = Some(Arc::new(Latest::new(quote)));
                true
            });
        }
    }

    /// The symbols some stream of this instance watches, sorted.
    pub fn watched(&self) -> Vec<Symbol> {
        let mut symbols: Vec<Symbol> = self.lock().symbols.keys().cloned().collect();
        symbols.sort();
        symbols
    }

    /// How many symbols [`watched`](Self::watched) would list, without copying them.
    pub fn watched_count(&self) -> usize {
        self.lock().symbols.len()
    }

    /// Changes whenever [`watched`](Self::watched) may have changed.
    pub fn watched_changes(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quote(close: f64) -> Quote {
        Quote {
            symbol: "AAPL.US".into(),
            name: "APPLE".into(),
            open: 1.0,
            high: 2.0,
            low: 0.5,
            close,
            volume: None,
            time: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            local_date: chrono::NaiveDate::from_ymd_opt(2023, 11, 14).unwrap(),
            local_time: chrono::NaiveTime::from_hms_opt(23, 13, 20).unwrap(),
        }
    }

    fn sym(s: &str) -> Symbol {
        Symbol::parse(s).unwrap()
    }

    #[test]
    fn watched_while_any_subscription_holds_it() {
        let hub = StreamHub::new();
        let a = hub.subscribe(&[sym("aapl.us"), sym("t.us")]);
        let b = hub.subscribe(&[sym("aapl.us")]);
        assert_eq!(hub.watched(), [sym("aapl.us"), sym("t.us")]);

        drop(a);
        assert_eq!(hub.watched(), [sym("aapl.us")]);
        drop(b);
        assert!(hub.watched().is_empty());
    }

    #[test]
    fn publish_reaches_subscribers_once_per_change() {
        let hub = StreamHub::new();
        let sub = hub.subscribe(&[sym("aapl.us")]);
        let mut rx = sub.receivers[0].clone();
        rx.mark_unchanged();

        assert!(hub.publish(&sym("aapl.us"), quote(1.5)));
        assert!(
            !hub.publish(&sym("aapl.us"), quote(1.5)),
            "a repeat is no news"
        );
        assert!(rx.has_changed().unwrap());
        assert_eq!(rx.borrow_and_update().as_ref().unwrap().quote.close, 1.5);
        assert!(
            !hub.publish(&sym("msft.us"), quote(1.0)),
            "nobody watches it"
        );
    }

    #[test]
    fn a_repeat_keeps_the_first_publish_instant() {
        let hub = StreamHub::new();
        let sub = hub.subscribe(&[sym("aapl.us")]);

        assert!(hub.publish_at(&sym("aapl.us"), quote(1.5), Some(1_000)));
        assert!(!hub.publish_at(&sym("aapl.us"), quote(1.5), Some(2_000)));

        let latest = sub.receivers[0].borrow().clone().unwrap();
        assert_eq!(latest.published_at_ms, Some(1_000));
    }

    #[test]
    fn an_offer_never_replaces_a_feed_quote() {
        let hub = StreamHub::new();
        let sub = hub.subscribe(&[sym("aapl.us")]);
        hub.publish(&sym("aapl.us"), quote(2.0));
        hub.offer(&sym("aapl.us"), quote(1.0));

        assert_eq!(sub.receivers[0].borrow().as_ref().unwrap().quote.close, 2.0);
    }

    #[test]
    fn the_watched_set_signals_its_changes() {
        let hub = StreamHub::new();
        let mut changes = hub.watched_changes();
        changes.mark_unchanged();
        let sub = hub.subscribe(&[sym("aapl.us")]);
        assert!(changes.has_changed().unwrap());
        changes.mark_unchanged();

        let again = hub.subscribe(&[sym("aapl.us")]);
        assert!(!changes.has_changed().unwrap(), "no new symbol");
        drop((sub, again));
        assert!(changes.has_changed().unwrap());
    }
}
