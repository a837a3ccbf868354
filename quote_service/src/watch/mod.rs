//! Live quotes: the watch list and its refresher (see `shared::live` for the broker objects).
//!
//! Every worker keeps the whole watch list (every API instance's interest arrives at every
//! worker through a fanout exchange, and expires unless renewed), but only one refreshes: the
//! broker's single active consumer of the refresh queue, which receives the ticks every worker
//! posts there every `WATCH_REFRESH`. It refreshes at most once per 0.9 × `WATCH_REFRESH`,
//! whoever's tick woke it, so N workers still cost one refresh per interval; if it dies, the
//! broker makes another consumer active, and that worker already knows the watch list.
//!
//! A refresh fetches all watched symbols fresh in upstream batches of `BATCH_SIZE`, stores
//! them in the cache (so RPC callers see them too), and publishes each quote that changed
//! since the last refresh, once, to the live topic exchange.

mod broker;
mod list;
mod refresher;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

pub use broker::run;
pub use list::{Refused, WatchList};
pub use refresher::Refresher;
use secrecy::SecretString;
use shared::live::LiveNames;

/// Longest an interest entry may live without renewal, whatever its `ttl_ms` says.
pub const MAX_INTEREST_TTL: Duration = Duration::from_secs(600);

/// Most API instances the watch list remembers at once.
pub const MAX_INSTANCES: usize = 10_000;

#[derive(Clone)]
pub struct WatchConfig {
    pub amqp_url: SecretString,
    pub names: LiveNames,
    pub refresh: Duration,
    pub max_symbols: usize,
    /// Upstream time limit of one refresh.
    pub fetch_timeout: Duration,
    /// Where refreshes and published quotes are counted for `/metrics`.
    pub metrics: crate::metrics::Metrics,
}

/// What the watch is doing, for tests and diagnostics. Cheap to clone.
#[derive(Clone, Default)]
pub struct WatchStats(Arc<Counters>);

#[derive(Default)]
struct Counters {
    refreshes: AtomicU64,
    published: AtomicU64,
    watched: AtomicUsize,
    instances: AtomicUsize,
    connected: AtomicBool,
}

impl WatchStats {
    /// Refreshes this worker ran (it was the active refresher with something to watch).
    pub fn refreshes(&self) -> u64 {
        self.0.refreshes.load(Ordering::Relaxed)
    }

    /// Changed quotes this worker published.
    pub fn published(&self) -> u64 {
        self.0.published.load(Ordering::Relaxed)
    }

    /// Symbols on the watch list at the last look.
    pub fn watched(&self) -> usize {
        self.0.watched.load(Ordering::Relaxed)
    }

    /// API instances with live interest at the last look.
    pub fn instances(&self) -> usize {
        self.0.instances.load(Ordering::Relaxed)
    }

    /// Whether the watch's broker connection is up.
    pub fn connected(&self) -> bool {
        self.0.connected.load(Ordering::Relaxed)
    }
}
