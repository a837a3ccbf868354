//! Prometheus metrics owned by one [`Application`](crate::startup::Application).
//!
//! The recorder is deliberately not installed globally: a process can install a global
//! recorder only once, and tests start many applications in one process. Each application owns
//! its recorder and records through handles registered on it; `/metrics` renders that one.

use std::sync::Arc;
use std::time::Duration;

use metrics::{Counter, Histogram, Key, KeyName, Label, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use shared::ErrorCode;

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// Latency buckets in seconds: from a cache hit (sub-millisecond) to a slow upstream.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// What a family is, for its `# TYPE` line.
#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Histogram,
}

/// Every family this module records, with the `# HELP` text `/metrics` shows for it. A family
/// recorded but missing here would be exposed without HELP, which `promtool check metrics`
/// and the exposition test refuse.
const FAMILIES: &[(&str, Kind, &str)] = &[
    (
        "quote_cache_hits_total",
        Kind::Counter,
        "Quote requests answered from the cache without an upstream fetch",
    ),
    (
        "quote_cache_misses_total",
        Kind::Counter,
        "Quote requests that started an upstream fetch (not cached, none in flight)",
    ),
    (
        "quote_coalesced_requests_total",
        Kind::Counter,
        "Quote requests that joined a fetch already in flight instead of starting their own",
    ),
    (
        "quote_upstream_fetches_total",
        Kind::Counter,
        "Upstream fetches from stooq, one per batch of symbols (retries not counted)",
    ),
    (
        "quote_upstream_symbols_total",
        Kind::Counter,
        "Symbols asked of stooq, summed over upstream fetches",
    ),
    (
        "quote_upstream_retries_total",
        Kind::Counter,
        "Upstream attempts retried after a failure that may pass (5xx, timeout, dropped connection)",
    ),
    (
        "quote_upstream_fetch_seconds",
        Kind::Histogram,
        "Duration of one upstream fetch, retries and backoff included",
    ),
    (
        "quote_upstream_errors_total",
        Kind::Counter,
        "Upstream fetches that failed, by the error code given to the waiting requests",
    ),
    (
        "quote_rpc_messages_total",
        Kind::Counter,
        "RPC messages handled, by outcome",
    ),
    (
        "quote_rpc_handle_seconds",
        Kind::Histogram,
        "Time to handle one RPC message, from receipt to ack",
    ),
    (
        "quote_watch_refreshes_total",
        Kind::Counter,
        "Watch-list refreshes this worker ran (it was the active refresher and something was watched)",
    ),
    (
        "quote_watch_symbols_skipped_total",
        Kind::Counter,
        "Watched symbols left out of a refresh because the watch list was over WATCH_MAX_SYMBOLS, summed over refreshes",
    ),
    (
        "quote_live_quotes_published_total",
        Kind::Counter,
        "Changed quotes this worker published to the live exchange",
    ),
    (
        "quote_http_requests_total",
        Kind::Counter,
        "HTTP requests served, by route (matched template, else unmatched) and status",
    ),
    (
        "quote_http_request_seconds",
        Kind::Histogram,
        "HTTP request latency, by route (matched template, else unmatched)",
    ),
];

/// What became of one RPC message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpcOutcome {
    /// A quote was sent back.
    Ok,
    /// An error reply was sent (not found, upstream failure, ...).
    ErrorReply,
    /// Unreadable request answered with an error reply.
    Malformed,
    /// Unreadable request without `reply_to`: rejected, nobody to answer.
    Rejected,
    /// The caller's deadline had passed: acked and dropped without fetching.
    Expired,
    /// The reply could not be published (broker gone); the message is redelivered later.
    PublishFailed,
}

impl RpcOutcome {
    const ALL: [RpcOutcome; 6] = [
        RpcOutcome::Ok,
        RpcOutcome::ErrorReply,
        RpcOutcome::Malformed,
        RpcOutcome::Rejected,
        RpcOutcome::Expired,
        RpcOutcome::PublishFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RpcOutcome::Ok => "ok",
            RpcOutcome::ErrorReply => "error_reply",
            RpcOutcome::Malformed => "malformed",
            RpcOutcome::Rejected => "rejected",
            RpcOutcome::Expired => "expired",
            RpcOutcome::PublishFailed => "publish_failed",
        }
    }
}

const ERROR_CODES: [ErrorCode; 6] = [
    ErrorCode::NotFound,
    ErrorCode::InvalidSymbol,
    ErrorCode::UpstreamUnavailable,
    ErrorCode::UpstreamRejected,
    ErrorCode::Timeout,
    ErrorCode::Internal,
];

/// Cheap to clone; every counter is a pre-registered handle, so recording is an atomic add.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    cache_hits: Counter,
    cache_misses: Counter,
    coalesced: Counter,
    upstream_fetches: Counter,
    upstream_symbols: Counter,
    upstream_retries: Counter,
    upstream_latency: Histogram,
    upstream_errors: [Counter; 6],
    rpc_messages: [Counter; 6],
    rpc_latency: Histogram,
    watch_refreshes: Counter,
    watch_skipped: Counter,
    live_published: Counter,
}

impl Metrics {
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets(LATENCY_BUCKETS)
            .expect("the bucket list is non-empty")
            .build_recorder();
        let handle = recorder.handle();
        for (name, kind, help) in FAMILIES {
            let name = KeyName::from_const_str(name);
            let help = SharedString::const_str(help);
            match kind {
                Kind::Counter => recorder.describe_counter(name, None, help),
                Kind::Histogram => recorder.describe_histogram(name, Some(Unit::Seconds), help),
            }
        }
        let counter =
            |name: &'static str| recorder.register_counter(&Key::from_name(name), &METADATA);
        let labelled = |name: &'static str, label: &'static str, value: &'static str| {
            recorder.register_counter(
                &Key::from_parts(name, vec![Label::new(label, value)]),
                &METADATA,
            )
        };
        let histogram =
            |name: &'static str| recorder.register_histogram(&Key::from_name(name), &METADATA);
        let inner = Inner {
            cache_hits: counter("quote_cache_hits_total"),
            cache_misses: counter("quote_cache_misses_total"),
            coalesced: counter("quote_coalesced_requests_total"),
            upstream_fetches: counter("quote_upstream_fetches_total"),
            upstream_symbols: counter("quote_upstream_symbols_total"),
            upstream_retries: counter("quote_upstream_retries_total"),
            upstream_latency: histogram("quote_upstream_fetch_seconds"),
            upstream_errors: ERROR_CODES
                .map(|c| labelled("quote_upstream_errors_total", "code", c.as_str())),
            rpc_messages: RpcOutcome::ALL
                .map(|o| labelled("quote_rpc_messages_total", "outcome", o.as_str())),
            rpc_latency: histogram("quote_rpc_handle_seconds"),
            watch_refreshes: counter("quote_watch_refreshes_total"),
            watch_skipped: counter("quote_watch_symbols_skipped_total"),
            live_published: counter("quote_live_quotes_published_total"),
            handle,
            recorder,
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The Prometheus text exposition of everything recorded so far.
    pub fn render(&self) -> String {
        self.inner.handle.render()
    }

    /// Drains histogram samples into their buckets; run periodically so an unscraped
    /// process does not accumulate samples without bound.
    pub fn run_upkeep(&self) {
        self.inner.handle.run_upkeep();
    }

    pub fn cache_hit(&self) {
        self.inner.cache_hits.increment(1);
    }

    pub fn cache_miss(&self) {
        self.inner.cache_misses.increment(1);
    }

    /// A request that joined a fetch already in flight instead of starting its own.
    pub fn coalesced(&self) {
        self.inner.coalesced.increment(1);
    }

    /// One upstream HTTP request (a batch of `symbols`), counted once per batch, not attempt.
    pub fn upstream_fetch(&self, symbols: usize, took: Duration) {
        self.inner.upstream_fetches.increment(1);
        self.inner.upstream_symbols.increment(symbols as u64);
        self.inner.upstream_latency.record(took.as_secs_f64());
    }

    /// One refresh of the watch list (counted whether or not anything changed).
    pub fn watch_refreshed(&self) {
        self.inner.watch_refreshes.increment(1);
    }

    /// Watched symbols one refresh left out (over `WATCH_MAX_SYMBOLS`).
    pub fn watch_symbols_skipped(&self, symbols: usize) {
        self.inner.watch_skipped.increment(symbols as u64);
    }

    /// One changed quote published to the live exchange.
    pub fn live_published(&self) {
        self.inner.live_published.increment(1);
    }

    pub fn upstream_retry(&self) {
        self.inner.upstream_retries.increment(1);
    }

    /// A batch-level upstream failure, by the code given to its waiters.
    pub fn upstream_error(&self, code: ErrorCode) {
        let i = ERROR_CODES.iter().position(|c| *c == code).unwrap_or(5);
        self.inner.upstream_errors[i].increment(1);
    }

    pub fn rpc_message(&self, outcome: RpcOutcome, took: Duration) {
        let i = RpcOutcome::ALL
            .iter()
            .position(|o| *o == outcome)
            .unwrap_or(0);
        self.inner.rpc_messages[i].increment(1);
        self.inner.rpc_latency.record(took.as_secs_f64());
    }

    /// One HTTP request. Routes are the matched patterns (bounded set), so label cardinality
    /// stays small.
    pub fn http_request(&self, route: &str, status: u16, took: Duration) {
        let labels = vec![
            Label::new("route", route.to_owned()),
            Label::new("status", status.to_string()),
        ];
        let counter_key = Key::from_parts("quote_http_requests_total", labels.clone());
        self.inner
            .recorder
            .register_counter(&counter_key, &METADATA)
            .increment(1);
        let latency_key = Key::from_parts(
            "quote_http_request_seconds",
            vec![Label::new("route", route.to_owned())],
        );
        self.inner
            .recorder
            .register_histogram(&latency_key, &METADATA)
            .record(took.as_secs_f64());
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_instances_in_one_process_record_independently() {
        let a = Metrics::new();
        let b = Metrics::new();

        a.cache_hit();
        a.cache_hit();
        b.cache_miss();

        assert!(a.render().contains("quote_cache_hits_total 2"));
        assert!(b.render().contains("quote_cache_hits_total 0"));
        assert!(b.render().contains("quote_cache_misses_total 1"));
    }

    #[test]
    fn labelled_series_render() {
        let m = Metrics::new();

        m.rpc_message(RpcOutcome::Expired, Duration::from_millis(1));
        m.http_request("/api/v1/quote", 404, Duration::from_millis(3));
        m.upstream_error(ErrorCode::UpstreamRejected);

        let text = m.render();
        assert!(
            text.contains(r#"quote_rpc_messages_total{outcome="expired"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"quote_http_requests_total{route="/api/v1/quote",status="404"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"quote_upstream_errors_total{code="upstream_rejected"} 1"#));
        assert!(text.contains("quote_http_request_seconds_bucket"), "{text}");
    }
}
