//! The SSE subscribers of the `stream` scenario and the accounting of what they received.
//!
//! Each subscriber is a tokio task holding one `GET /api/v1/stream` open (reqwest, reading the
//! body chunk by chunk) and parsing its events. The first `quote` event of each symbol is the
//! stream's opening snapshot and is not a delivery; every later one is a change the quote
//! worker published, and its `published_at_ms` (stamped by the worker right before it handed
//! the message to RabbitMQ) against the arrival instant gives the delivery latency. Worker and
//! subscribers run on one machine, so their wall clocks agree; the stamp has millisecond
//! resolution, so a latency may read up to 1 ms high.
//!
//! Deliveries are assigned to the measured run in whose window they were *published*, so a
//! change published just before a window closes and delivered just after still counts, with
//! its latency, in that run.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::stats::LatencySummary;

/// One change delivered to one subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// Index of the symbol in the scenario's symbol list.
    pub symbol: u16,
    /// The worker's publish instant (Unix ms), from the event.
    pub published_ms: i64,
    /// When the event was read off the socket (Unix µs).
    pub received_us: i64,
}

impl Delivery {
    /// Publish to arrival, in microseconds (never negative: the stamp is rounded down).
    pub fn latency_us(&self) -> u64 {
        (self.received_us - self.published_ms * 1000).max(0) as u64
    }
}

/// What the subscribers received of the changes published within one run's window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunDeliveries {
    /// Change events received (one per subscriber per change).
    pub delivered: u64,
    /// Distinct changes (symbol, publish instant) at least one subscriber received.
    pub changes_seen: u64,
    /// Deliveries those changes called for: each one times the subscribers of its symbol.
    pub expected: u64,
    pub latency: LatencySummary,
}

/// Accounts the deliveries of changes published in `[start_ms, end_ms)`;
/// `subscribers[i]` is how many streams watch symbol `i`.
pub fn account(
    deliveries: &[Delivery],
    start_ms: i64,
    end_ms: i64,
    subscribers: &[u64],
) -> RunDeliveries {
    let in_window: Vec<&Delivery> = deliveries
        .iter()
        .filter(|d| (start_ms..end_ms).contains(&d.published_ms))
        .collect();
    let changes: HashSet<(u16, i64)> = in_window
        .iter()
        .map(|d| (d.symbol, d.published_ms))
        .collect();
    let expected = changes
        .iter()
        .map(|(symbol, _)| subscribers.get(usize::from(*symbol)).copied().unwrap_or(0))
        .sum();
    let mut latencies: Vec<u64> = in_window.iter().map(|d| d.latency_us()).collect();
    RunDeliveries {
        delivered: in_window.len() as u64,
        changes_seen: changes.len() as u64,
        expected,
        latency: LatencySummary::from_micros(&mut latencies),
    }
}

/// `count / refreshes`, when there were refreshes.
pub fn per_refresh(count: u64, refreshes: u64) -> Option<f64> {
    (refreshes > 0).then(|| count as f64 / refreshes as f64)
}

/// The symbols of subscriber `n`: `per` consecutive ones (wrapping) of `symbols` from
/// position `n`, so every symbol is watched by equally many subscribers when `subscribers` is
/// a multiple of `symbols`.
pub fn symbols_of(n: usize, per: usize, symbols: usize) -> Vec<usize> {
    let per = per.min(symbols);
    (0..per).map(|k| (n + k) % symbols).collect()
}

/// How many of `subscribers` subscribers watch each of `symbols` symbols.
pub fn subscribers_per_symbol(subscribers: usize, per: usize, symbols: usize) -> Vec<u64> {
    let mut counts = vec![0u64; symbols];
    for n in 0..subscribers {
        for s in symbols_of(n, per, symbols) {
            counts[s] += 1;
        }
    }
    counts
}

/// The soft "Max open files" limit in a `/proc/<pid>/limits` text.
pub fn soft_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .strip_prefix("Max open files")?
        .split_whitespace()
        .next()?;
    if soft == "unlimited" {
        return Some(u64::MAX);
    }
    soft.parse().ok()
}

/// Fails clearly when this process (and so the services it starts, which inherit the limit)
/// may not open enough descriptors for `subscribers` streams.
pub fn ensure_open_files(subscribers: usize) -> Result<()> {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let needed = subscribers as u64 + 512;
    match soft_open_files(&limits) {
        Some(soft) if soft < needed => bail!(
            "the open-files limit is {soft}; {subscribers} streams need about {needed} \
             (one socket each in the harness and in api_service): raise it with `ulimit -n {needed}`"
        ),
        _ => Ok(()),
    }
}

/// Splits an SSE body into events, across chunk boundaries.
#[derive(Debug, Default)]
pub struct SseParser {
    buffer: String,
}

/// One event: its `event:` name (`message` when absent) and its `data:` lines joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
}

impl SseParser {
    /// Feeds a chunk; returns the events it completed (comments such as heartbeats are skipped).
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        self.buffer.push_str(&String::from_utf8_lossy(chunk));
        let mut events = Vec::new();
        while let Some(end) = self.buffer.find("\n\n") {
            let block: String = self.buffer.drain(..end + 2).collect();
            let (mut event, mut data, mut fields) = ("message".to_owned(), Vec::new(), 0);
            for line in block
                .lines()
                .filter(|l| !l.is_empty() && !l.starts_with(':'))
            {
                let (name, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                fields += 1;
                match name {
                    "event" => event = value.to_owned(),
                    "data" => data.push(value.to_owned()),
                    _ => {}
                }
            }
            if fields > 0 {
                events.push(SseEvent {
                    event,
                    data: data.join("\n"),
                });
            }
        }
        events
    }
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// Problems the subscribers ran into (all should stay zero).
#[derive(Debug, Default)]
pub struct Trouble {
    /// Streams refused or failed to open (status, or a connection error).
    pub open_failed: AtomicU64,
    /// Streams that ended before the harness closed them.
    pub ended_early: AtomicU64,
    /// `event: error` received (a symbol without a quote).
    pub error_events: AtomicU64,
    /// Change events without a readable `published_at_ms` or symbol.
    pub unreadable: AtomicU64,
}

/// The running subscribers.
pub struct Subscribers {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<Delivery>>>,
    pub trouble: Arc<Trouble>,
}

/// One subscriber's stream, as the harness opens it.
pub struct StreamSpec {
    pub token: String,
    /// Indices into the symbol list.
    pub symbols: Vec<usize>,
}

impl Subscribers {
    /// Opens every stream (at most `concurrency` opening at once) and returns once each has
    /// received its opening snapshot (one event per symbol) or failed.
    pub async fn open(
        api_url: &str,
        symbols: &[String],
        specs: Vec<StreamSpec>,
        concurrency: usize,
    ) -> Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        let index: Arc<HashMap<String, u16>> = Arc::new(
            symbols
                .iter()
                .enumerate()
                .map(|(i, s)| (s.to_ascii_uppercase(), i as u16))
                .collect(),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let trouble = Arc::new(Trouble::default());
        let gate = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
        let mut tasks = Vec::with_capacity(specs.len());
        let mut opened = Vec::with_capacity(specs.len());
        for spec in specs {
            let q: Vec<&str> = spec.symbols.iter().map(|i| symbols[*i].as_str()).collect();
            let request = client
                .get(format!("{api_url}/api/v1/stream"))
                .query(&[("q", q.join(","))])
                .bearer_auth(&spec.token);
            let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
            opened.push(ready_rx);
            tasks.push(tokio::spawn(subscriber(
                request,
                spec.symbols.len(),
                Arc::clone(&index),
                Arc::clone(&gate),
                Arc::clone(&stop),
                Arc::clone(&trouble),
                ready_tx,
            )));
        }
        for ready in opened {
            let _ = ready.await;
        }
        Ok(Self {
            stop,
            tasks,
            trouble,
        })
    }

    /// Closes every stream and returns what they were delivered.
    pub async fn close(self) -> Result<Vec<Delivery>> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for task in self.tasks {
            all.extend(task.await.context("a subscriber task panicked")?);
        }
        Ok(all)
    }
}

/// How often an idle subscriber looks at the stop flag.
const STOP_CHECK: Duration = Duration::from_millis(200);

async fn subscriber(
    request: reqwest::RequestBuilder,
    symbols: usize,
    index: Arc<HashMap<String, u16>>,
    gate: Arc<tokio::sync::Semaphore>,
    stop: Arc<AtomicBool>,
    trouble: Arc<Trouble>,
    ready: tokio::sync::oneshot::Sender<()>,
) -> Vec<Delivery> {
    let mut deliveries = Vec::new();
    let mut ready = Some(ready);
    let permit = gate.acquire_owned().await.ok();
    let mut response = match request.send().await {
        Ok(r) if r.status().is_success() => r,
        Ok(r) => {
            eprintln!("bench: stream refused: {}", r.status());
            trouble.open_failed.fetch_add(1, Ordering::Relaxed);
            return deliveries;
        }
        Err(e) => {
            eprintln!("bench: stream open failed: {e}");
            trouble.open_failed.fetch_add(1, Ordering::Relaxed);
            return deliveries;
        }
    };
    let mut parser = SseParser::default();
    let mut snapshot: HashSet<String> = HashSet::with_capacity(symbols);
    let mut held = Some(permit);
    loop {
        let chunk = match tokio::time::timeout(STOP_CHECK, response.chunk()).await {
            Err(_) if stop.load(Ordering::Relaxed) => break,
            Err(_) => continue,
            Ok(Ok(Some(chunk))) => chunk,
            Ok(_) => {
                if !stop.load(Ordering::Relaxed) {
                    trouble.ended_early.fetch_add(1, Ordering::Relaxed);
                }
                break;
            }
        };
        let received_us = now_us();
        for event in parser.push(&chunk) {
            match event.event.as_str() {
                "quote" => {
                    let data: serde_json::Value =
                        serde_json::from_str(&event.data).unwrap_or_default();
                    let symbol = data["symbol"].as_str().unwrap_or_default().to_owned();
                    if snapshot.len() < symbols && snapshot.insert(symbol.clone()) {
                        continue;
                    }
                    match (index.get(&symbol), data["published_at_ms"].as_i64()) {
                        (Some(i), Some(published_ms)) => deliveries.push(Delivery {
                            symbol: *i,
                            published_ms,
                            received_us,
                        }),
                        _ => {
                            trouble.unreadable.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                "error" => {
                    trouble.error_events.fetch_add(1, Ordering::Relaxed);
                    // A symbol without a quote still completes the snapshot.
                    let data: serde_json::Value =
                        serde_json::from_str(&event.data).unwrap_or_default();
                    let symbol = data["symbol"].as_str().unwrap_or_default();
                    snapshot.insert(symbol.to_ascii_uppercase());
                }
                _ => {}
            }
        }
        if snapshot.len() >= symbols
            && let Some(tx) = ready.take()
        {
            held = None;
            let _ = tx.send(());
        }
    }
    drop(held);
    deliveries
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(symbol: u16, published_ms: i64, received_ms: f64) -> Delivery {
        Delivery {
            symbol,
            published_ms,
            received_us: (received_ms * 1000.0) as i64,
        }
    }

    #[test]
    fn latency_is_publish_to_arrival_and_never_negative() {
        assert_eq!(delivery(0, 1_000, 1_002.5).latency_us(), 2_500);
        assert_eq!(delivery(0, 1_000, 999.0).latency_us(), 0);
    }

    #[test]
    fn a_run_counts_what_was_published_in_its_window_however_late_it_arrived() {
        let subscribers = [2, 3];
        let deliveries = [
            delivery(0, 999, 1_001.0),   // published before the window
            delivery(0, 1_000, 1_001.0), // symbol 0's change: both subscribers got it
            delivery(0, 1_000, 1_004.0),
            delivery(1, 1_500, 1_502.0), // symbol 1's change: 2 of its 3 subscribers
            delivery(1, 1_500, 1_503.0),
            delivery(1, 1_999, 2_100.0), // published in the window, arrived after it
            delivery(1, 2_000, 2_001.0), // the next window's
        ];

        let run = account(&deliveries, 1_000, 2_000, &subscribers);

        assert_eq!(run.delivered, 5);
        assert_eq!(run.changes_seen, 3);
        assert_eq!(run.expected, 2 + 3 + 3);
        assert_eq!(run.latency.p50_ms, 3.0);
        assert_eq!(run.latency.max_ms, 101.0);
    }

    #[test]
    fn an_empty_window_accounts_nothing() {
        let run = account(&[delivery(0, 5, 6.0)], 10, 20, &[1]);
        assert_eq!(run, RunDeliveries::default());
    }

    #[test]
    fn upstream_calls_per_refresh_needs_a_refresh() {
        assert_eq!(per_refresh(20, 10), Some(2.0));
        assert_eq!(per_refresh(3, 0), None);
    }

    #[test]
    fn every_symbol_gets_as_many_subscribers() {
        assert_eq!(symbols_of(98, 3, 100), [98, 99, 0]);
        assert_eq!(
            symbols_of(0, 30, 4),
            [0, 1, 2, 3],
            "at most every symbol once"
        );
        let counts = subscribers_per_symbol(1000, 10, 100);
        assert!(counts.iter().all(|c| *c == 100), "{counts:?}");
        assert_eq!(counts.iter().sum::<u64>(), 10_000);
    }

    #[test]
    fn reads_the_soft_open_files_limit() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max cpu time              unlimited            unlimited            seconds\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(soft_open_files(limits), Some(1024));
        assert_eq!(
            soft_open_files("Max open files            unlimited            unlimited  files"),
            Some(u64::MAX)
        );
        assert_eq!(soft_open_files(""), None);
    }

    #[test]
    fn sse_events_are_split_across_chunks_and_comments_skipped() {
        let mut parser = SseParser::default();
        assert!(parser.push(b"event: quote\nid: a.b\nda").is_empty());
        let events = parser.push(b"ta: {\"x\":1}\n\n: heartbeat\n\nevent: error\ndata: e\n\n");
        assert_eq!(
            events,
            [
                SseEvent {
                    event: "quote".into(),
                    data: "{\"x\":1}".into()
                },
                SseEvent {
                    event: "error".into(),
                    data: "e".into()
                },
            ]
        );
    }
}
