//! The watch list: which symbols some API instance's subscribers watch, per instance, each
//! instance's entry good until its interest's TTL runs out.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use shared::Symbol;
use shared::live::{Interest, LIVE_VERSION, MAX_INTEREST_SYMBOLS};
use tokio::time::Instant;

/// Why an interest message was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("interest message version {0} (this worker speaks {LIVE_VERSION})")]
    Version(u16),
    #[error("the watch list already holds {0} instances")]
    TooManyInstances(usize),
}

struct Entry {
    symbols: BTreeSet<Symbol>,
    expires: Instant,
}

/// Bounded: at most `max_instances` instances, each with at most [`MAX_INTEREST_SYMBOLS`]
/// symbols, each entry at most `max_ttl` long; [`symbols`](Self::symbols) returns at most
/// `max_symbols` (the ones past it are not refreshed: counted in [`skipped`](Self::skipped),
/// and said in the log once when the list goes over the bound).
pub struct WatchList {
    entries: HashMap<String, Entry>,
    max_ttl: Duration,
    max_symbols: usize,
    max_instances: usize,
    /// Symbols past `max_symbols` at the last [`symbols`](Self::symbols).
    skipped: usize,
}

impl WatchList {
    pub fn new(max_ttl: Duration, max_symbols: usize, max_instances: usize) -> Self {
        Self {
            entries: HashMap::new(),
            max_ttl,
            max_symbols: max_symbols.max(1),
            max_instances: max_instances.max(1),
            skipped: 0,
        }
    }

    /// Takes an instance's whole interest, replacing what it said before. Symbols that break
    /// the rules are skipped; an empty list removes the instance.
    pub fn apply(&mut self, interest: Interest, now: Instant) -> Result<(), Refused> {
        if interest.v != LIVE_VERSION {
            return Err(Refused::Version(interest.v));
        }
        self.expire(now);
        if interest.symbols.is_empty() || interest.ttl_ms == 0 {
            self.entries.remove(&interest.instance);
            return Ok(());
        }
        if !self.entries.contains_key(&interest.instance)
            && self.entries.len() >= self.max_instances
        {
            return Err(Refused::TooManyInstances(self.entries.len()));
        }
        let symbols = interest
            .symbols
            .iter()
            .take(MAX_INTEREST_SYMBOLS)
            .filter_map(|s| Symbol::parse(s).ok())
            .collect();
        let ttl = Duration::from_millis(interest.ttl_ms).min(self.max_ttl);
        self.entries.insert(
            interest.instance,
            Entry {
                symbols,
                expires: now + ttl,
            },
        );
        Ok(())
    }

    /// Every symbol some live entry watches, sorted, at most `max_symbols`. Drops expired
    /// entries first.
    pub fn symbols(&mut self, now: Instant) -> Vec<Symbol> {
        self.expire(now);
        let all: BTreeSet<&Symbol> = self.entries.values().flat_map(|e| &e.symbols).collect();
        let skipped = all.len().saturating_sub(self.max_symbols);
        // Once per episode, not at every refresh: an overflow lasts as long as the interest
        // that caused it, and a warning every WATCH_REFRESH would bury the rest of the log.
        // `quote_watch_symbols_skipped_total` counts it meanwhile.
        if skipped > 0 && self.skipped == 0 {
            tracing::warn!(
                watched = all.len(),
                refreshed = self.max_symbols,
                "more symbols watched than WATCH_MAX_SYMBOLS; refreshing the first ones only \
                 until the list is back under it"
            );
        } else if skipped == 0 && self.skipped > 0 {
            tracing::info!(
                watched = all.len(),
                "the watch list is back under WATCH_MAX_SYMBOLS; refreshing every symbol"
            );
        }
        self.skipped = skipped;
        all.into_iter().take(self.max_symbols).cloned().collect()
    }

    /// Watched symbols the last [`symbols`](Self::symbols) left out (past `max_symbols`).
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// Instances with live interest.
    pub fn instances(&self) -> usize {
        self.entries.len()
    }

    fn expire(&mut self, now: Instant) {
        self.entries.retain(|_, e| e.expires > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interest(instance: &str, symbols: &[&str], ttl_ms: u64) -> Interest {
        Interest {
            v: LIVE_VERSION,
            instance: instance.into(),
            symbols: symbols.iter().map(|s| s.to_string()).collect(),
            ttl_ms,
        }
    }

    fn names(list: &mut WatchList, now: Instant) -> Vec<String> {
        list.symbols(now)
            .iter()
            .map(|s| s.as_str().to_owned())
            .collect()
    }

    fn list() -> WatchList {
        WatchList::new(Duration::from_secs(600), 100, 10)
    }

    #[test]
    fn union_of_instances_sorted_and_deduplicated() {
        let (mut list, now) = (list(), Instant::now());
        list.apply(interest("a", &["msft.us", "aapl.us"], 1000), now)
            .unwrap();
        list.apply(interest("b", &["AAPL.US", "t.us"], 1000), now)
            .unwrap();

        assert_eq!(names(&mut list, now), ["aapl.us", "msft.us", "t.us"]);
    }

    #[test]
    fn an_instance_that_stops_renewing_expires_on_its_own() {
        let (mut list, now) = (list(), Instant::now());
        list.apply(interest("a", &["aapl.us"], 1000), now).unwrap();
        list.apply(interest("b", &["t.us"], 5000), now).unwrap();

        assert_eq!(
            names(&mut list, now + Duration::from_millis(1001)),
            ["t.us"]
        );
        assert_eq!(list.instances(), 1);
    }

    #[test]
    fn renewal_replaces_and_empty_withdraws() {
        let (mut list, now) = (list(), Instant::now());
        list.apply(interest("a", &["aapl.us", "t.us"], 1000), now)
            .unwrap();
        list.apply(interest("a", &["t.us"], 1000), now).unwrap();
        assert_eq!(names(&mut list, now), ["t.us"]);

        list.apply(interest("a", &[], 1000), now).unwrap();
        assert!(names(&mut list, now).is_empty());
    }

    #[test]
    fn ttl_is_capped_and_bad_symbols_skipped() {
        let mut list = WatchList::new(Duration::from_secs(1), 100, 10);
        let now = Instant::now();
        list.apply(interest("a", &["aapl.us", "no/slash"], u64::MAX), now)
            .unwrap();

        assert_eq!(names(&mut list, now), ["aapl.us"]);
        assert!(names(&mut list, now + Duration::from_secs(2)).is_empty());
    }

    #[test]
    fn bounded_in_instances_and_symbols() {
        let mut list = WatchList::new(Duration::from_secs(60), 2, 1);
        let now = Instant::now();
        list.apply(interest("a", &["c.us", "b.us", "a.us"], 1000), now)
            .unwrap();

        assert_eq!(
            list.apply(interest("b", &["d.us"], 1000), now),
            Err(Refused::TooManyInstances(1))
        );
        assert_eq!(names(&mut list, now), ["a.us", "b.us"]);
    }

    #[test]
    fn symbols_past_the_bound_are_counted_until_the_list_is_back_under_it() {
        let mut list = WatchList::new(Duration::from_secs(60), 2, 10);
        let now = Instant::now();
        list.apply(interest("a", &["a.us", "b.us"], 1000), now)
            .unwrap();
        list.apply(interest("b", &["c.us", "d.us", "e.us"], 1000), now)
            .unwrap();

        assert_eq!(names(&mut list, now), ["a.us", "b.us"]);
        assert_eq!(list.skipped(), 3);

        list.apply(interest("b", &[], 1000), now).unwrap();
        assert_eq!(names(&mut list, now), ["a.us", "b.us"]);
        assert_eq!(list.skipped(), 0);
    }

    #[test]
    fn other_versions_are_refused() {
        let mut bad = interest("a", &["aapl.us"], 1000);
        bad.v = 99;
        assert_eq!(list().apply(bad, Instant::now()), Err(Refused::Version(99)));
    }
}
