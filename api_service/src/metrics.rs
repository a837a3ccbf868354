//! Prometheus metrics owned by one application instance.
//!
//! Each `Application` has its own recorder instead of a process-global one, so tests that
//! start many applications in one process neither fight over the global slot nor see each
//! other's counts. Recording goes through `metrics::with_local_recorder`.

use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use std::sync::Arc;

/// Latency buckets in seconds: fine-grained around the 20 ms p99 target, up to the RPC
/// timeout range.
const BUCKETS: &[f64] = &[
    0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets(BUCKETS)
            .expect("bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        let metrics = Self { recorder, handle };
        metrics.record(|| {
            metrics::describe_counter!(
                "http_requests_total",
                "HTTP requests served, by method, route (matched path) and status"
            );
            metrics::describe_histogram!(
                "http_request_duration_seconds",
                metrics::Unit::Seconds,
                "HTTP request latency, by method, route and status"
            );
            metrics::describe_counter!(
                "quote_rpc_total",
                "Quote requests to the quote service, by outcome"
            );
            metrics::describe_counter!(
                "quote_rpc_flights_total",
                "Quote RPCs actually sent (identical concurrent requests share one)"
            );
            metrics::describe_counter!(
                "quote_rpc_coalesced_total",
                "Quote requests answered by joining an identical RPC already in flight"
            );
            metrics::describe_histogram!(
                "quote_rpc_duration_seconds",
                metrics::Unit::Seconds,
                "Quote request latency (including waiting on a shared in-flight request), by outcome"
            );
        });
        metrics
    }

    fn record<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&self.recorder, f)
    }

    pub fn http_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let labels = [
            ("method", method.to_owned()),
            ("route", route.to_owned()),
            ("status", status.to_string()),
        ];
        self.record(|| {
            metrics::counter!("http_requests_total", &labels).increment(1);
            metrics::histogram!("http_request_duration_seconds", &labels)
                .record(elapsed.as_secs_f64());
        });
    }

    pub fn quote_rpc(&self, outcome: &'static str, elapsed: Duration) {
        self.record(|| {
            metrics::counter!("quote_rpc_total", "outcome" => outcome).increment(1);
            metrics::histogram!("quote_rpc_duration_seconds", "outcome" => outcome)
                .record(elapsed.as_secs_f64());
        });
    }

    /// Publishes the transport's coalescing counters (read at scrape time).
    pub fn set_flight_counts(&self, flights: u64, joined: u64) {
        self.record(|| {
            metrics::counter!("quote_rpc_flights_total").absolute(flights);
            metrics::counter!("quote_rpc_coalesced_total").absolute(joined);
        });
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        self.handle.render()
    }
}

/// Middleware counting and timing every request by its matched route (not the raw path, so
/// query strings and unknown URLs cannot blow up the label set).
pub async fn track(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let start = std::time::Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(request).await;
    metrics.http_request(&method, &route, response.status().as_u16(), start.elapsed());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_do_not_share_counts() {
        let a = Metrics::new();
        let b = Metrics::new();
        a.http_request("GET", "/api/v1/stock", 200, Duration::from_millis(3));
        a.quote_rpc("ok", Duration::from_millis(2));
        let text = a.render();
        assert!(
            text.contains(
                r#"http_requests_total{method="GET",route="/api/v1/stock",status="200"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains("http_request_duration_seconds_bucket"),
            "{text}"
        );
        assert!(
            text.contains(r#"quote_rpc_total{outcome="ok"} 1"#),
            "{text}"
        );
        assert!(!b.render().contains("http_requests_total{"));
    }
}
