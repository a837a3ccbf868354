//! The API's listeners against hostile clients and the operators' separate address: slow
//! clients are cut off by the header timeout while others are served, and INTERNAL_ADDR moves
//! /metrics, /readyz and the docs off the public port.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use api_service::Settings;
use api_service::settings::{OptionalAddr, TestTransport};
use api_service::store::provision::fresh_sqlite;
use axum::http::StatusCode;
use clap::Parser;
use common::{Running, start};
use serde_json::Value;
use shared::http_server::slow_client::{open_half_headers, watch_cut_off};

/// Slow connections opened at once: far more than the API would serve concurrently.
const SLOW_CLIENTS: usize = 300;
const HEADER_TIMEOUT: Duration = Duration::from_secs(1);
/// How long every slow connection may take to be closed: the header timeout and some slack.
const CLOSE_LIMIT: Duration = HEADER_TIMEOUT.saturating_add(Duration::from_millis(1500));

/// Routes meant for operators only when INTERNAL_ADDR is set.
const OPERATOR_PATHS: [&str; 4] = ["/metrics", "/readyz", "/docs/", "/api/v1/openapi.json"];

/// An API whose quote service is nowhere (these tests ask for no quotes).
async fn api(tweak: impl FnOnce(&mut Settings)) -> Running {
    let db = fresh_sqlite();
    let mut settings = Settings::for_tests(
        db.url(),
        TestTransport::Http {
            base_url: "http://127.0.0.1:9".into(),
        },
    );
    tweak(&mut settings);
    start(settings, db).await
}

fn loopback_port_0() -> OptionalAddr {
    OptionalAddr(Some(SocketAddr::from(([127, 0, 0, 1], 0))))
}

#[tokio::test]
async fn slow_clients_are_closed_within_the_header_timeout_while_others_are_served() {
    let app = api(|s| s.http_server.header_timeout = HEADER_TIMEOUT).await;
    let slow = open_half_headers(app.addr(), SLOW_CLIENTS).await;

    let seen = watch_cut_off(slow, CLOSE_LIMIT, format!("{}/healthz", app.base)).await;

    assert_eq!(seen.closed, SLOW_CLIENTS, "slow connections closed in time");
    assert!(seen.took < CLOSE_LIMIT, "{:?}", seen.took);
    assert_eq!(seen.probes_failed, 0, "every /healthz answered 200");
    assert!(seen.probes_served >= 5, "/healthz kept being served");
    app.stop().await;
}

#[tokio::test]
async fn without_internal_addr_the_public_port_serves_the_operator_routes() {
    let app = api(|_| {}).await;

    for path in OPERATOR_PATHS {
        let response = app.get(path, None).await;

        assert_ne!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
    assert!(app.internal.is_none());
    app.stop().await;
}

#[tokio::test]
async fn with_internal_addr_the_operator_routes_leave_the_public_port() {
    let app = api(|s| s.internal_addr = loopback_port_0()).await;

    for path in OPERATOR_PATHS {
        let response = app.get(path, None).await;

        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_found", "{path}");
    }
    assert_eq!(app.get("/healthz", None).await.status(), StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn with_internal_addr_the_operator_routes_are_served_there_and_nothing_else() {
    let app = api(|s| s.internal_addr = loopback_port_0()).await;

    for path in OPERATOR_PATHS {
        let response = app.get_internal(path).await;

        assert_ne!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
    assert_eq!(app.get_internal("/metrics").await.status(), StatusCode::OK);
    assert_eq!(app.get_internal("/healthz").await.status(), StatusCode::OK);
    let login = app.get_internal("/api/v1/login").await;
    assert_eq!(login.status(), StatusCode::NOT_FOUND);
    app.stop().await;
}

#[test]
fn internal_addr_is_unset_when_empty_or_absent() {
    let parse = |args: &[&str]| api_service::cli::Cli::try_parse_from(args).map(|c| c.settings);

    assert_eq!(parse(&["api_service"]).unwrap().internal_addr(), None);
    assert_eq!(
        parse(&["api_service", "--internal-addr", ""])
            .unwrap()
            .internal_addr(),
        None
    );
    assert_eq!(
        parse(&["api_service", "--internal-addr", "127.0.0.1:9100"])
            .unwrap()
            .internal_addr(),
        Some(SocketAddr::from(([127, 0, 0, 1], 9100)))
    );
    assert!(parse(&["api_service", "--internal-addr", "metrics-host"]).is_err());
}

#[test]
fn http_limits_have_their_documented_defaults() {
    let settings = api_service::cli::Cli::try_parse_from(["api_service"])
        .unwrap()
        .settings;

    assert_eq!(
        settings.http_server,
        shared::http_server::HttpServerSettings::default()
    );
    assert_eq!(settings.http_server.header_timeout, Duration::from_secs(10));
    assert_eq!(
        settings.http_server.request_timeout,
        Duration::from_secs(30)
    );
    assert_eq!(settings.http_server.idle_timeout, Duration::from_secs(75));
    assert_eq!(settings.http_server.max_connections, 4096);
}
