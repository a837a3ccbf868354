//! `/metrics` against hostile clients and `promtool`: junk methods and paths add no series,
//! and every family the service records is described and well formed.

mod common;

use std::collections::BTreeSet;

use common::TestApp;
use fake_stooq::{FakeStooq, Mode};
use shared::test_support::exposition::{self, Exposition};
use shared::test_support::{junk_http, stray_metrics};

/// The HTTP routes, as their templates: the only `route` label values besides `unmatched`.
const ROUTES: &[&str] = &["/api/v1/quote", "/healthz", "/readyz", "/metrics"];

/// Every family the service records; each must be exported with HELP and TYPE.
const FAMILIES: &[&str] = &[
    "quote_cache_hits_total",
    "quote_cache_misses_total",
    "quote_coalesced_requests_total",
    "quote_upstream_fetches_total",
    "quote_upstream_symbols_total",
    "quote_upstream_retries_total",
    "quote_upstream_fetch_seconds",
    "quote_upstream_errors_total",
    "quote_rpc_messages_total",
    "quote_rpc_handle_seconds",
    "quote_watch_refreshes_total",
    "quote_watch_symbols_skipped_total",
    "quote_live_quotes_published_total",
    "quote_http_requests_total",
    "quote_http_request_seconds",
];

async fn scrape(app: &TestApp) -> (String, Exposition) {
    exposition::read(app.get("/metrics").await).await
}

#[tokio::test]
async fn junk_methods_and_paths_add_no_metric_series() {
    let fake = FakeStooq::start().await;
    let app = TestApp::spawn(common::http_settings(&fake, |_| {})).await;
    let (_, untouched) = scrape(&app).await;
    junk_http::send_all(app.addr(), &junk_http::mix(1, 1_000, ROUTES)).await;
    let (_, before) = scrape(&app).await;

    junk_http::send_all(app.addr(), &junk_http::mix(2, 1_000, ROUTES)).await;

    let (text, after) = scrape(&app).await;
    junk_http::assert_second_round_added_no_series(&untouched, &before, &after, &text);
    let allowed: BTreeSet<String> = ROUTES
        .iter()
        .copied()
        .chain(["unmatched"])
        .map(String::from)
        .collect();
    for family in ["quote_http_requests_total", "quote_http_request_seconds"] {
        let routes = after.label_values(family, "route");
        assert!(routes.is_subset(&allowed), "{family}: {routes:?}");
    }
    let statuses = after.label_values("quote_http_requests_total", "status");
    assert!(
        statuses
            .iter()
            .all(|s| s.len() == 3 && s.parse::<u16>().is_ok()),
        "{statuses:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn every_recorded_metric_is_described_and_well_formed() {
    stray_metrics::install();
    let fake = FakeStooq::start().await;
    let app = TestApp::spawn(common::http_settings(&fake, |s| s.stooq_max_retries = 1)).await;
    // Every path that records: a fetch, a cache hit, an unknown and an invalid symbol, an
    // unreadable query, an upstream failure after a retry, and junk.
    for (path, status) in [
        ("/api/v1/quote?symbol=aapl.us", 200),
        ("/api/v1/quote?symbol=aapl.us", 200),
        ("/api/v1/quote?symbol=nosuch.us", 404),
        ("/api/v1/quote?symbol=a%20b", 400),
        ("/api/v1/quote", 400),
        ("/nowhere", 404),
    ] {
        assert_eq!(app.get(path).await.status(), status, "{path}");
    }
    fake.set_mode(Mode::Status(503));
    assert_eq!(app.get("/api/v1/quote?symbol=msft.us").await.status(), 502);
    junk_http::send_all(app.addr(), &junk_http::mix(3, 50, ROUTES)).await;

    let (text, exposition) = scrape(&app).await;

    exposition::assert_families(&exposition, FAMILIES, &text);
    exposition::assert_lines(
        &text,
        &[
            "quote_cache_hits_total 1",
            "quote_upstream_retries_total 1",
            r#"quote_upstream_errors_total{code="upstream_unavailable"} 1"#,
        ],
    );
    stray_metrics::assert_none();
    app.stop().await;
}
