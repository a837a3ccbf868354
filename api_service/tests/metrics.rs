//! `/metrics` against hostile clients and `promtool`: invented methods and random paths add
//! no series (every label comes from a fixed set), and every family the API records is
//! described, well formed and actually exported.

mod common;

use std::collections::BTreeSet;

use api_service::openapi::{DOCS_PATH, OPENAPI_PATH};
use api_service::store::provision::fresh_sqlite;
use api_service::{Settings, TestTransport, routes};
use common::{Running, echo_quote_service, start};
use serde_json::json;
use shared::test_support::exposition::{self, Exposition};
use shared::test_support::{junk_http, stray_metrics};

/// Every family the API records; each must be exported with HELP and TYPE.
const FAMILIES: &[&str] = &[
    "http_requests_total",
    "http_request_duration_seconds",
    "quote_rpc_total",
    "quote_rpc_duration_seconds",
    "quote_rpc_flights_total",
    "quote_rpc_coalesced_total",
    "quote_transport_ready",
    "db_pool_connections",
    "db_pool_idle_connections",
    "db_pool_max_connections",
    "store_group_commit_batches_total",
    "store_group_commit_rows_total",
    "streams_open",
    "stream_watched_symbols",
    "stream_feed_connected",
];

/// The API against an always-ready HTTP stand-in for the quote service.
async fn api() -> (Running, tokio_util::sync::CancellationToken) {
    let (url, peer) = echo_quote_service().await;
    let db = fresh_sqlite();
    let settings = Settings::for_tests(db.url(), TestTransport::Http { base_url: url });
    (start(settings, db).await, peer)
}

/// Every route template the router serves: the documented ones and the documentation's.
fn route_templates() -> Vec<String> {
    let mut templates: Vec<String> = routes::openapi().paths.paths.keys().cloned().collect();
    templates.extend([
        OPENAPI_PATH.to_owned(),
        DOCS_PATH.to_owned(),
        format!("{DOCS_PATH}/"),
        format!("{DOCS_PATH}/{{*rest}}"),
    ]);
    templates
}

async fn scrape(app: &Running) -> (String, Exposition) {
    exposition::read(app.get("/metrics", None).await).await
}

#[tokio::test]
async fn junk_methods_and_paths_add_no_metric_series() {
    let (app, peer) = api().await;
    let templates = route_templates();
    let routes: Vec<&str> = templates.iter().map(String::as_str).collect();
    let (_, untouched) = scrape(&app).await;
    junk_http::send_all(app.addr(), &junk_http::mix(1, 1_000, &routes)).await;
    let (_, before) = scrape(&app).await;

    junk_http::send_all(app.addr(), &junk_http::mix(2, 1_000, &routes)).await;

    let (text, after) = scrape(&app).await;
    junk_http::assert_second_round_added_no_series(&untouched, &before, &after, &text);
    let methods: BTreeSet<String> = junk_http::STANDARD_METHODS
        .iter()
        .chain(&["other"])
        .map(|m| m.to_string())
        .collect();
    let routes: BTreeSet<String> = templates
        .iter()
        .cloned()
        .chain(["unmatched".to_owned()])
        .collect();
    for family in ["http_requests_total", "http_request_duration_seconds"] {
        let seen = after.label_values(family, "method");
        assert!(seen.is_subset(&methods), "{family} methods: {seen:?}");
        assert!(seen.contains("other"), "junk methods were sent: {seen:?}");
        let seen = after.label_values(family, "route");
        assert!(seen.is_subset(&routes), "{family} routes: {seen:?}");
    }
    app.stop().await;
    peer.cancel();
}

#[tokio::test]
async fn every_recorded_metric_is_described_and_well_formed() {
    stray_metrics::install();
    let (app, peer) = api().await;
    // Every path that records: quotes (one RPC, one reused), history written through group
    // commit and read back, admin reads and writes, health, and junk.
    let user = app.login("alice").await;
    let admin = app.login("root").await;
    for _ in 0..2 {
        let quote = app.get("/api/v1/stock?q=s7", Some(&user)).await;
        assert_eq!(quote.status(), 200);
    }
    assert_eq!(
        app.get("/api/v1/users/history", Some(&user)).await.status(),
        200
    );
    assert_eq!(app.get("/api/v1/stats", Some(&admin)).await.status(), 200);
    let created = app
        .client
        .post(format!("{}/api/v1/users", app.base))
        .bearer_auth(&admin)
        .json(&json!({"username": "bob", "password": "bob-password-long", "role": "user"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(app.get("/readyz", None).await.status(), 200);
    let templates = route_templates();
    let routes: Vec<&str> = templates.iter().map(String::as_str).collect();
    junk_http::send_all(app.addr(), &junk_http::mix(3, 100, &routes)).await;

    let (text, exposition) = scrape(&app).await;

    exposition::assert_families(&exposition, FAMILIES, &text);
    exposition::assert_lines(
        &text,
        &[
            r#"quote_rpc_total{outcome="ok"} 2"#,
            "store_group_commit_rows_total 2",
            "store_group_commit_batches_total 2",
        ],
    );
    stray_metrics::assert_none();
    app.stop().await;
    peer.cancel();
}
