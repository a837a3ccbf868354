//! A fake stooq quote feed the project owns, for tests, demos and benchmarks (the real one is
//! rate-limited, needs a key and is unreachable from CI). It serves `/q/l/` byte-for-byte like
//! stooq (see `docs/stooq-feed.md`), can be switched into every failure mode the real feed shows,
//! and counts what it was asked so tests can prove caching, coalescing and batching.
//!
//! ```no_run
//! # async fn demo() {
//! use fake_stooq::{FakeStooq, Mode};
//! let fake = FakeStooq::start().await;
//! let base = fake.url(); // point STOOQ_URL here
//! fake.fail_next(2, Mode::Status(503));
//! // ... exercise the client ...
//! assert_eq!(fake.symbol_hits("aapl.us"), 1);
//! # }
//! ```

pub mod feed;
mod mode;
pub mod moving;
mod server;
pub mod settings;
mod state;

pub use mode::Mode;
pub use server::{FakeStooq, router, serve};
pub use settings::Settings;
pub use state::{FakeConfig, FakeState, Stats};
