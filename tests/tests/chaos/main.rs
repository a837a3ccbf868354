//! Infrastructure faults under steady load: the local RabbitMQ's connections force-closed,
//! its application stopped and started, PostgreSQL stopped and started. Each scenario ends
//! with the ledger invariant (every 200 has its history row and counter increment, nothing
//! else was stored).
//!
//! These tests break services every other test on the machine uses, so this binary runs on
//! its own: nextest puts it in the serial `chaos` group (`.config/nextest.toml`) and
//! `scripts/test.sh` runs it in a second invocation after the rest of the workspace. Every
//! outage is a guard that restores the service in `Drop`, even when an assertion fails.

mod broker;
mod postgres;
mod stream;

use std::time::Duration;

use reqwest::StatusCode;
use tests::TestApp;
use tests::ledger::Client;

/// Clients in the steady load, and the pause each takes between calls.
pub const CLIENTS: usize = 4;
pub const PAUSE: Duration = Duration::from_millis(25);
pub const SYMBOLS: [&str; 4] = ["aapl.us", "msft.us", "^spx", "cdr"];

/// Both services recover within this long of the broker's (or database's) return.
pub const RECOVERY_LIMIT: Duration = Duration::from_secs(10);

pub async fn clients(app: &TestApp) -> Vec<Client> {
    Client::many(app, "client", CLIENTS).await
}

/// The API's `/readyz` status.
pub async fn api_ready(app: &TestApp) -> StatusCode {
    app.get("/readyz").await.status()
}

/// The quote worker's own `/readyz` status.
pub async fn worker_ready(app: &TestApp) -> StatusCode {
    let port = app.quote.as_ref().expect("a quote worker").port;
    app.client
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .send()
        .await
        .map(|r| r.status())
        .unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
}

/// Under plain `cargo test` (no nextest) the tests of this binary share one process and would
/// run in parallel threads: each takes this lock first so outages never overlap.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}
