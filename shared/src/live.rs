//! The live-quote contract: how API instances tell the quote workers which symbols their
//! stream subscribers watch, and how workers push each changed quote back.
//!
//! Three broker objects, named after the RPC queue so that every deployment (and every test)
//! sharing a `QUOTE_QUEUE` shares one watch and nothing else:
//!
//! - `{queue}.interest`, a fanout exchange: API instances publish [`Interest`] (the whole set
//!   of symbols they watch) whenever it changes and every `ttl / 3`; every worker binds its own
//!   exclusive queue, so all workers know all interest, and an entry not renewed within its
//!   `ttl` is dropped (a crashed instance leaves no refresh load behind).
//! - `{queue}.refresh`, a queue with `x-single-active-consumer`: every worker consumes it and
//!   posts a tick to it every `WATCH_REFRESH`; only the broker-chosen active consumer receives
//!   ticks, and only it refreshes. When it dies the broker activates another, so there is one
//!   refresh per interval in total however many workers run.
//! - `{queue}.live`, a topic exchange: the refresher publishes each changed quote as a
//!   [`LiveQuote`] with routing key = the lower-case symbol. API instances bind only the
//!   symbols their own subscribers watch.
//!
//! Both exchanges are auto-delete and not durable: they exist while something is bound to
//! them, every side declares one right before it binds to or publishes on it, and a restarted
//! broker or a finished deployment (or test) leaves nothing behind.

use serde::{Deserialize, Serialize};

use crate::Quote;

/// Version of [`Interest`] and [`LiveQuote`]; bumped on a change an older peer would misread.
pub const LIVE_VERSION: u16 = 1;

/// Most symbols one [`Interest`] message may carry; a worker ignores the excess.
pub const MAX_INTEREST_SYMBOLS: usize = 10_000;

/// The broker objects of one deployment (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveNames {
    pub interest_exchange: String,
    pub live_exchange: String,
    pub refresh_queue: String,
}

impl LiveNames {
    pub fn for_queue(quote_queue: &str) -> Self {
        Self {
            interest_exchange: format!("{quote_queue}.interest"),
            live_exchange: format!("{quote_queue}.live"),
            refresh_queue: format!("{quote_queue}.refresh"),
        }
    }
}

/// "Instance `instance` watches `symbols`, for `ttl_ms` from now." Replaces whatever the same
/// instance said before; an empty list withdraws its interest at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interest {
    pub v: u16,
    pub instance: String,
    /// Lower-case symbols (as [`crate::Symbol`] spells them).
    pub symbols: Vec<String>,
    pub ttl_ms: u64,
}

/// A quote that changed since the refresher last published it. The routing key is `symbol`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveQuote {
    pub v: u16,
    /// Lower-case, as watched (the quote itself carries the feed's upper-case spelling).
    pub symbol: String,
    pub quote: Quote,
    /// When the refresher handed this message to the broker (Unix milliseconds, its wall
    /// clock), passed on to stream clients so they can measure delivery latency. Added within
    /// version 1: older workers leave it out and older API instances ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_at_ms: Option<i64>,
}

/// A stable 64-bit fingerprint of everything a quote says: equal fingerprints mean "no change"
/// to the refresher (publish or not), to the API (fan out or not) and to `Last-Event-ID`.
pub fn fingerprint(quote: &Quote) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        // A separator, so field boundaries matter.
        h = (h ^ 0xff).wrapping_mul(0x0100_0000_01b3);
    };
    feed(quote.symbol.as_bytes());
    feed(quote.name.as_bytes());
    for price in [quote.open, quote.high, quote.low, quote.close] {
        feed(&price.to_bits().to_le_bytes());
    }
    feed(&quote.volume.unwrap_or(u64::MAX).to_le_bytes());
    feed(&quote.time.timestamp_millis().to_le_bytes());
    h
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
            volume: Some(10),
            time: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            local_date: chrono::NaiveDate::from_ymd_opt(2023, 11, 14).unwrap(),
            local_time: chrono::NaiveTime::from_hms_opt(23, 13, 20).unwrap(),
        }
    }

    #[test]
    fn fingerprint_changes_with_the_price_only() {
        assert_eq!(fingerprint(&quote(1.5)), fingerprint(&quote(1.5)));
        assert_ne!(fingerprint(&quote(1.5)), fingerprint(&quote(1.51)));
    }

    #[test]
    fn a_live_quote_without_a_publish_instant_still_reads() {
        let live = LiveQuote {
            v: LIVE_VERSION,
            symbol: "aapl.us".into(),
            quote: quote(1.5),
            published_at_ms: None,
        };
        let json = serde_json::to_value(&live).unwrap();
        assert!(json.get("published_at_ms").is_none(), "{json}");
        let back: LiveQuote = serde_json::from_value(json).unwrap();
        assert_eq!(back, live);

        let stamped = LiveQuote {
            published_at_ms: Some(1_700_000_000_123),
            ..live
        };
        let json = serde_json::to_string(&stamped).unwrap();
        assert_eq!(serde_json::from_str::<LiveQuote>(&json).unwrap(), stamped);
    }

    #[test]
    fn names_follow_the_rpc_queue() {
        let names = LiveNames::for_queue("quotes.rpc");
        assert_eq!(names.live_exchange, "quotes.rpc.live");
        assert_eq!(names.interest_exchange, "quotes.rpc.interest");
        assert_eq!(names.refresh_queue, "quotes.rpc.refresh");
    }
}
