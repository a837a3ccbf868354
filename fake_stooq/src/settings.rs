//! Command-line / environment settings of the `fake_stooq` binary.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

use crate::{FakeConfig, Mode};

/// A fake stooq quote feed (`GET /q/l/`) with failure modes and hit counters
/// (`GET /fake/stats`, `POST /fake/reset`, `POST /fake/mode?mode=..&next=N`,
/// `POST /fake/latency?value=250ms`, `POST /fake/tick` to move every price).
#[derive(Debug, Clone, Parser)]
#[command(name = "fake_stooq", version)]
pub struct Settings {
    /// Address to listen on.
    #[arg(long, env = "FAKE_STOOQ_ADDR", default_value = "127.0.0.1:8002")]
    pub addr: SocketAddr,

    /// Delay before every quote answer, to play a slow upstream (e.g. 250ms, 2s).
    #[arg(long, env = "FAKE_STOOQ_LATENCY", default_value = "0", value_parser = shared::config::parse_duration)]
    pub latency: Duration,

    /// When set, quote requests must carry `apikey=` with this value, otherwise they get the
    /// "Get your apikey" page, as the real feed does since 2026.
    #[arg(long, env = "FAKE_STOOQ_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// How to answer: normal, daily_limit, api_key_page, challenge, other_html, empty,
    /// truncated, status:NNN, drop.
    #[arg(long, env = "FAKE_STOOQ_MODE", default_value = "normal")]
    pub mode: Mode,

    /// Prices move one tick every this long (deterministic, from FAKE_STOOQ_SEED), so
    /// streams and demos see changes; `0` keeps them still unless `POST /fake/tick` moves them.
    #[arg(long, env = "FAKE_STOOQ_MOVE_EVERY", default_value = "0", value_parser = shared::config::parse_duration)]
    pub move_every: Duration,

    /// Seed of the moving prices: the same seed and tick give the same prices.
    #[arg(long, env = "FAKE_STOOQ_SEED", default_value_t = 0)]
    pub seed: u64,
}

impl Settings {
    pub fn to_config(&self) -> FakeConfig {
        FakeConfig {
            addr: self.addr,
            latency: self.latency,
            api_key: self.api_key.clone().filter(|k| !k.is_empty()),
            mode: self.mode,
            not_found: Vec::new(),
            seed: self.seed,
            move_every: self.move_every,
        }
    }
}
