//! What the fake remembers: its configuration, the mode tests switch at run time, and the
//! counters that let tests prove caching, coalescing and batching upstream.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;

use crate::Mode;

/// How a fake starts. `Default` binds an ephemeral port on loopback, answers at once, needs no
/// API key and runs in [`Mode::Normal`].
#[derive(Debug, Clone)]
pub struct FakeConfig {
    /// Where to listen; port 0 picks a free one.
    pub addr: SocketAddr,
    /// Delay before every `/q/l/` answer (also before a dropped connection).
    pub latency: Duration,
    /// When set, `/q/l/` requests without this `apikey` get the "Get your apikey" page.
    pub api_key: Option<String>,
    /// Mode at start and after [`FakeState::reset`].
    pub mode: Mode,
    /// Extra symbols answered with the `N/D` row (case-insensitive).
    pub not_found: Vec<String>,
    /// Seed of the moving prices (see [`crate::moving`]).
    pub seed: u64,
    /// Prices move one tick every this long; zero: only when asked
    /// ([`FakeState::advance_prices`], `POST /fake/tick`).
    pub move_every: Duration,
}

impl Default for FakeConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            latency: Duration::ZERO,
            api_key: None,
            mode: Mode::Normal,
            not_found: Vec::new(),
            seed: 0,
            move_every: Duration::ZERO,
        }
    }
}

/// Counters as served by `GET /fake/stats`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Stats {
    /// Requests to `/q/l/`, whatever the answer.
    pub hits: u64,
    /// Sum over requests of the number of symbols asked for.
    pub symbols_requested: u64,
    /// Lower-case symbol → number of requests that asked for it.
    pub symbol_hits: BTreeMap<String, u64>,
    /// Lower-case symbols of each request, in arrival order.
    pub requests: Vec<Vec<String>>,
    /// The mode requests currently get once any `fail_next` budget is used up.
    pub mode: String,
    /// The price tick quotes are served at (0: the static feed).
    pub price_tick: u64,
}

#[derive(Debug)]
struct Control {
    mode: Mode,
    /// Mode for the next N requests, taking precedence over `mode`.
    fail_next: Option<(u32, Mode)>,
    latency: Duration,
}

#[derive(Debug, Default)]
struct Counters {
    hits: u64,
    symbols_requested: u64,
    symbol_hits: BTreeMap<String, u64>,
    requests: Vec<Vec<String>>,
}

#[derive(Debug)]
struct Inner {
    config: FakeConfig,
    /// When the fake started: `move_every` ticks count from here.
    started: std::time::Instant,
    /// Ticks asked for explicitly, on top of the timed ones.
    manual_ticks: std::sync::atomic::AtomicU64,
    control: Mutex<Control>,
    counters: Mutex<Counters>,
}

/// Shared state behind the router; cheap to clone.
#[derive(Debug, Clone)]
pub struct FakeState {
    inner: Arc<Inner>,
}

/// How one `/q/l/` request is to be answered, decided when it arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Plan {
    pub mode: Mode,
    pub latency: Duration,
}

/// A poisoned lock only means another request panicked mid-update of plain counters; the data
/// is still usable, and a test fake must keep answering.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl FakeState {
    pub fn new(config: FakeConfig) -> Self {
        let control = Control {
            mode: config.mode,
            fail_next: None,
            latency: config.latency,
        };
        Self {
            inner: Arc::new(Inner {
                config,
                started: std::time::Instant::now(),
                manual_ticks: std::sync::atomic::AtomicU64::new(0),
                control: Mutex::new(control),
                counters: Mutex::new(Counters::default()),
            }),
        }
    }

    pub fn config(&self) -> &FakeConfig {
        &self.inner.config
    }

    /// The price tick quotes are served at now: explicit advances plus, with `move_every`,
    /// one per period since start. Never goes back (not even on [`reset`](Self::reset)).
    pub fn price_tick(&self) -> u64 {
        let manual = self
            .inner
            .manual_ticks
            .load(std::sync::atomic::Ordering::Relaxed);
        let every = self.inner.config.move_every;
        let timed = if every.is_zero() {
            0
        } else {
            (self.inner.started.elapsed().as_nanos() / every.as_nanos()) as u64
        };
        manual + timed
    }

    /// Moves every price one tick on, at once. Returns the new tick.
    pub fn advance_prices(&self) -> u64 {
        self.inner
            .manual_ticks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.price_tick()
    }

    pub fn hits(&self) -> u64 {
        lock(&self.inner.counters).hits
    }

    pub fn symbols_requested(&self) -> u64 {
        lock(&self.inner.counters).symbols_requested
    }

    pub fn symbol_hits(&self, symbol: &str) -> u64 {
        let key = symbol.trim().to_ascii_lowercase();
        lock(&self.inner.counters)
            .symbol_hits
            .get(&key)
            .copied()
            .unwrap_or(0)
    }

    pub fn requests(&self) -> Vec<Vec<String>> {
        lock(&self.inner.counters).requests.clone()
    }

    pub fn stats(&self) -> Stats {
        let mode = lock(&self.inner.control).mode.to_string();
        let c = lock(&self.inner.counters);
        Stats {
            hits: c.hits,
            symbols_requested: c.symbols_requested,
            symbol_hits: c.symbol_hits.clone(),
            requests: c.requests.clone(),
            mode,
            price_tick: self.price_tick(),
        }
    }

    /// Mode for every request from now on (after any `fail_next` budget).
    pub fn set_mode(&self, mode: Mode) {
        lock(&self.inner.control).mode = mode;
    }

    /// The next `n` requests get `mode`, then requests get the mode set by
    /// [`set_mode`](Self::set_mode) again. Replaces any earlier budget; `n = 0` clears it.
    pub fn fail_next(&self, n: u32, mode: Mode) {
        lock(&self.inner.control).fail_next = (n > 0).then_some((n, mode));
    }

    pub fn set_latency(&self, latency: Duration) {
        lock(&self.inner.control).latency = latency;
    }

    /// Zeroes the counters and puts mode and latency back to the configured start values.
    pub fn reset(&self) {
        {
            let mut ctl = lock(&self.inner.control);
            ctl.mode = self.inner.config.mode;
            ctl.fail_next = None;
            ctl.latency = self.inner.config.latency;
        }
        *lock(&self.inner.counters) = Counters::default();
    }

    /// Counts one `/q/l/` request and decides how to answer it.
    pub(crate) fn record(&self, symbols: &[String]) -> Plan {
        {
            let mut c = lock(&self.inner.counters);
            c.hits += 1;
            c.symbols_requested += symbols.len() as u64;
            for s in symbols {
                *c.symbol_hits.entry(s.clone()).or_default() += 1;
            }
            c.requests.push(symbols.to_vec());
        }
        let mut ctl = lock(&self.inner.control);
        let mode = match ctl.fail_next {
            Some((n, mode)) => {
                ctl.fail_next = (n > 1).then_some((n - 1, mode));
                mode
            }
            None => ctl.mode,
        };
        Plan {
            mode,
            latency: ctl.latency,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_next_runs_out_then_falls_back() {
        let state = FakeState::new(FakeConfig::default());
        state.fail_next(2, Mode::Status(503));
        let modes: Vec<Mode> = (0..3).map(|_| state.record(&[]).mode).collect();
        assert_eq!(modes, [Mode::Status(503), Mode::Status(503), Mode::Normal]);
        assert_eq!(state.hits(), 3);
    }

    #[test]
    fn counts_symbols_case_insensitively_and_resets() {
        let state = FakeState::new(FakeConfig::default());
        state.record(&["aapl.us".into(), "msft.us".into()]);
        state.record(&["aapl.us".into()]);
        assert_eq!(state.symbol_hits("AAPL.US"), 2);
        assert_eq!(state.symbols_requested(), 3);
        assert_eq!(state.requests().len(), 2);
        state.set_mode(Mode::Drop);
        state.reset();
        assert_eq!(
            state.stats(),
            Stats {
                mode: "normal".into(),
                ..Stats::default()
            }
        );
    }

    #[test]
    fn prices_move_only_when_asked_unless_timed() {
        let state = FakeState::new(FakeConfig::default());
        assert_eq!(state.price_tick(), 0);
        assert_eq!(state.advance_prices(), 1);
        state.reset();
        assert_eq!(state.price_tick(), 1, "reset does not move prices back");

        let timed = FakeState::new(FakeConfig {
            move_every: Duration::from_millis(10),
            ..FakeConfig::default()
        });
        std::thread::sleep(Duration::from_millis(35));
        assert!(timed.price_tick() >= 3);
    }
}
