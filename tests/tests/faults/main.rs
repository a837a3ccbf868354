//! Faults that stay inside one test's own stack, so these run in parallel with everything
//! else: the quote worker stopped and restarted under load, requests left in its queue past
//! their deadline, graceful shutdown (the in-process SIGTERM) of either service under load,
//! and every way the upstream feed misbehaves, including the circuit breaker that stops the
//! worker from multiplying load on a failing feed.
//!
//! Each load scenario ends with the ledger invariant: every 200 has exactly its history row
//! and counter increment, and nothing is stored for a call that did not get a 200.

mod shutdown;
mod upstream;
mod worker;

use std::time::Duration;

/// Clients in the steady load, and the pause each takes between calls.
pub const CLIENTS: usize = 4;
pub const PAUSE: Duration = Duration::from_millis(25);
pub const SYMBOLS: [&str; 4] = ["aapl.us", "msft.us", "^spx", "cdr"];
