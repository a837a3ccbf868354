//! Steady background load: a few concurrent clients, each calling `/stock` in a loop with a
//! short pause, every call recorded in a [`Ledger`]. Faults are injected while it runs; the
//! ledger then says what each client saw, when, and whether the database agrees.

use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::TestApp;
use crate::ledger::{Call, Client, Ledger};

pub struct Load {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    pub ledger: Ledger,
    pub started: Instant,
}

impl Load {
    /// Starts one task per client; client `i` cycles through `symbols` starting at offset `i`,
    /// pausing `pause` between calls (so the load is steady, not a flood).
    pub fn start(app: &TestApp, clients: &[Client], symbols: &[&str], pause: Duration) -> Load {
        Self::start_with(app, clients, symbols, pause, Ledger::new())
    }

    /// Like [`start`](Self::start), appending to an existing ledger.
    pub fn start_with(
        app: &TestApp,
        clients: &[Client],
        symbols: &[&str],
        pause: Duration,
        ledger: Ledger,
    ) -> Load {
        Self::start_at(&app.client, &app.address, clients, symbols, pause, ledger)
    }

    /// Like [`start_with`](Self::start_with), against any API instance: `base` is its URL
    /// (e.g. an api_service process started by the test).
    pub fn start_at(
        http: &reqwest::Client,
        base: &str,
        clients: &[Client],
        symbols: &[&str],
        pause: Duration,
        ledger: Ledger,
    ) -> Load {
        assert!(!symbols.is_empty());
        let stop = CancellationToken::new();
        let symbols: Vec<String> = symbols.iter().map(|s| s.to_string()).collect();
        let tasks = clients
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, client)| {
                let http = http.clone();
                let base = base.to_owned();
                let ledger = ledger.clone();
                let stop = stop.clone();
                let symbols = symbols.clone();
                tokio::spawn(async move {
                    let mut n = i;
                    while !stop.is_cancelled() {
                        let symbol = &symbols[n % symbols.len()];
                        n += 1;
                        ledger.stock(&http, &base, &client, symbol).await;
                        tokio::select! {
                            _ = stop.cancelled() => break,
                            _ = tokio::time::sleep(pause) => {}
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            tasks,
            ledger,
            started: Instant::now(),
        }
    }

    /// Stops the clients (calls in flight finish) and returns every call made.
    pub async fn stop(self) -> Vec<Call> {
        self.stop.cancel();
        for task in self.tasks {
            task.await.expect("load task panicked");
        }
        self.ledger.calls()
    }
}

/// Calls that started at or after `from` and ended at or before `to`.
pub fn within(calls: &[Call], from: Instant, to: Instant) -> Vec<&Call> {
    calls
        .iter()
        .filter(|c| c.started >= from && c.ended() <= to)
        .collect()
}

/// The first call started at or after `from` that got a 200, and how long after `from`.
pub fn first_ok_after(calls: &[Call], from: Instant) -> Option<Duration> {
    calls
        .iter()
        .filter(|c| c.started >= from && c.status() == Some(200))
        .map(|c| c.ended().duration_since(from))
        .min()
}

/// Polls `check` every 50 ms until it returns true or `limit` passes; returns how long it took.
pub async fn wait_until<F, Fut>(limit: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return Some(started.elapsed());
        }
        if started.elapsed() >= limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A compact account of calls for assertion messages: status → count.
pub fn summary(calls: &[&Call]) -> String {
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for call in calls {
        let key = match &call.outcome {
            crate::ledger::Outcome::Answer { status, code } => {
                format!(
                    "{status}{}",
                    code.as_ref().map(|c| format!("/{c}")).unwrap_or_default()
                )
            }
            crate::ledger::Outcome::Refused(_) => "refused".into(),
            crate::ledger::Outcome::Lost(_) => "lost".into(),
        };
        *counts.entry(key).or_default() += 1;
    }
    format!("{counts:?}")
}
