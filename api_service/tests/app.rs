//! The whole application in-process: real SQLite store, real HTTP server, and the quote
//! service played by test peers (an AMQP responder on a unique queue, or a tiny HTTP
//! server). The end-to-end suite with the real quote service lives in the `tests` crate.

mod common;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api_service::settings::TestTransport;
use api_service::store::Role;
use api_service::store::provision::{TestDatabase, fresh_sqlite};
use api_service::{Application, Settings, users};
use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use common::{
    Mode, Responder, amqp_url, broker, declare, delete, quote_for, start, unique_queue, wait_until,
};
use secrecy::SecretString;
use serde_json::{Value, json};
use shared::{ErrorCode, QuoteReply};
use tokio_util::sync::CancellationToken;

fn amqp_settings(db: &TestDatabase, queue: &str) -> Settings {
    Settings::for_tests(
        db.url(),
        TestTransport::Amqp {
            url: amqp_url(),
            queue: queue.to_owned(),
        },
    )
}

#[tokio::test]
async fn quotes_are_served_recorded_and_counted_over_amqp() {
    let Some(admin) = broker().await else { return };
    let queue = unique_queue();
    let responder = Responder::start(&queue, Mode::Echo { max_delay_ms: 0 }).await;
    let db = fresh_sqlite();
    let app = start(amqp_settings(&db, &queue), db).await;

    let ready = app.get("/readyz", None).await;
    assert_eq!(
        ready.status(),
        StatusCode::OK,
        "{}",
        ready.text().await.unwrap()
    );

    let token = app.login("alice").await;
    let reply = app
        .client
        .get(format!("{}/api/v1/stock?q=S42", app.base))
        .bearer_auth(&token)
        .header("x-request-id", "e2e-request-1")
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::OK);
    assert_eq!(reply.headers()["x-request-id"], "e2e-request-1");
    let body: Value = reply.json().await.unwrap();
    assert_eq!(
        [&body["symbol"], &body["company_name"], &body["quote"]],
        [&json!("S42"), &json!("NAME s42"), &json!(42.0)],
        "{body}"
    );
    assert!(
        responder
            .seen
            .request_ids
            .lock()
            .unwrap()
            .contains(&"e2e-request-1".to_owned())
    );

    let history: Value = app
        .get("/api/v1/users/history", Some(&token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(history.as_array().unwrap().len(), 1);
    assert_eq!(history[0]["symbol"], "S42");
    assert_eq!(history[0]["name"], "NAME s42");
    assert_eq!(history[0]["close"], 42.0);

    let admin_token = app.login("root").await;
    let stats: Value = app
        .get("/api/v1/stats", Some(&admin_token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stats, json!([{"stock":"s42","times_requested":1}]));
    assert_eq!(
        app.get("/api/v1/stats", Some(&token)).await.status(),
        StatusCode::FORBIDDEN
    );

    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    assert!(
        metrics.contains(r#"route="/api/v1/stock",status="200""#),
        "{metrics}"
    );

    app.stop().await;
    responder.stop().await;
    delete(&admin, &queue).await;
}

#[tokio::test]
async fn no_worker_means_a_fast_503_and_not_ready() {
    let Some(admin) = broker().await else { return };
    let queue = unique_queue();
    declare(&admin, &queue).await;
    let db = fresh_sqlite();
    let app = start(amqp_settings(&db, &queue), db).await;
    let token = app.login("alice").await;

    let started = Instant::now();
    let reply = app.get("/api/v1/stock?q=aapl.us", Some(&token)).await;
    assert_eq!(reply.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(started.elapsed() < Duration::from_secs(1));
    let body: Value = reply.json().await.unwrap();
    assert_eq!(body["error"]["code"], "quote_service_unavailable");

    let ready = app.get("/readyz", None).await;
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["checks"]["database"]["ok"], true);
    assert_eq!(body["checks"]["quote_transport"]["ok"], false);

    let history: Value = app
        .get("/api/v1/users/history", Some(&token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(history, json!([]), "nothing saved for a failed quote");
    app.stop().await;
    delete(&admin, &queue).await;
}

#[tokio::test]
async fn silent_worker_gives_504_after_the_rpc_timeout() {
    let Some(admin) = broker().await else { return };
    let queue = unique_queue();
    let responder = Responder::start(&queue, Mode::Silent).await;
    let db = fresh_sqlite();
    let mut settings = amqp_settings(&db, &queue);
    settings.rpc_timeout = Duration::from_millis(600);
    let app = start(settings, db).await;
    let token = app.login("alice").await;
    let started = Instant::now();
    let reply = app.get("/api/v1/stock?q=aapl.us", Some(&token)).await;
    let elapsed = started.elapsed();
    assert_eq!(reply.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(elapsed >= Duration::from_millis(550) && elapsed < Duration::from_secs(2));
    let body: Value = reply.json().await.unwrap();
    assert_eq!(body["error"]["code"], "timeout");
    app.stop().await;
    responder.stop().await;
    delete(&admin, &queue).await;
}

#[tokio::test]
async fn graceful_shutdown_lets_in_flight_requests_finish() {
    let Some(admin) = broker().await else { return };
    let queue = unique_queue();
    let responder = Responder::start(&queue, Mode::Slow { delay_ms: 800 }).await;
    let db = fresh_sqlite();
    let app = start(amqp_settings(&db, &queue), db).await;
    let token = app.login("alice").await;

    let in_flight = {
        let client = app.client.clone();
        let url = format!("{}/api/v1/stock?q=s9", app.base);
        tokio::spawn(async move { client.get(url).bearer_auth(token).send().await })
    };
    wait_until(
        "the request to reach the worker",
        Duration::from_secs(5),
        async || responder.seen.messages.load(Ordering::SeqCst) == 1,
    )
    .await;
    let base = app.base.clone();
    app.stop().await;
    let reply = in_flight.await.unwrap().unwrap();
    assert_eq!(reply.status(), StatusCode::OK);
    // The listener is gone.
    assert!(reqwest::get(format!("{base}/healthz")).await.is_err());
    responder.stop().await;
    delete(&admin, &queue).await;
}

#[tokio::test]
async fn deleting_a_user_through_the_app_state_revokes_their_tokens_at_once() {
    let Some(admin) = broker().await else { return };
    let queue = unique_queue();
    let responder = Responder::start(&queue, Mode::Echo { max_delay_ms: 0 }).await;
    let db = fresh_sqlite();
    let app = Application::build(amqp_settings(&db, &queue))
        .await
        .unwrap();
    // Cloned before running: the state outlives `run_until_stopped`, which consumes the app.
    let state = app.state().clone();
    users::create_user(
        state.store.as_ref(),
        "carol",
        &SecretString::from("carol-password"),
        Role::User,
    )
    .await
    .unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let stop = app.shutdown_token();
    let serving = tokio::spawn(app.run_until_stopped());
    let client = reqwest::Client::new();
    let login: Value = client
        .post(format!("{base}/api/v1/login"))
        .json(&json!({"username":"carol","password":"carol-password"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().unwrap().to_owned();
    let history = |token: String| {
        let client = client.clone();
        let url = format!("{base}/api/v1/users/history");
        async move { client.get(url).bearer_auth(token).send().await.unwrap() }
    };
    assert_eq!(history(token.clone()).await.status(), StatusCode::OK);

    assert!(
        users::delete_user(state.store.as_ref(), Some(&state.users), "carol")
            .await
            .unwrap()
    );
    let gone = history(token).await;
    assert_eq!(gone.status(), StatusCode::UNAUTHORIZED);
    assert!(
        gone.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
    stop.cancel();
    serving.await.unwrap().unwrap();
    responder.stop().await;
    delete(&admin, &queue).await;
}

/// What the HTTP peer saw.
#[derive(Default)]
struct PeerLog {
    request_ids: Vec<String>,
    deadlines: Vec<u64>,
}

async fn http_peer() -> (String, Arc<Mutex<PeerLog>>, CancellationToken) {
    let log = Arc::new(Mutex::new(PeerLog::default()));
    let log2 = log.clone();
    let router = axum::Router::new()
        .route(
            "/api/v1/quote",
            axum::routing::get(
                move |Query(params): Query<std::collections::HashMap<String, String>>,
                      headers: HeaderMap| {
                    let log = log2.clone();
                    async move {
                        {
                            let mut log = log.lock().unwrap();
                            if let Some(id) = headers.get(shared::REQUEST_ID_HEADER) {
                                log.request_ids.push(id.to_str().unwrap().to_owned());
                            }
                            if let Some(d) = headers.get(shared::DEADLINE_HEADER) {
                                log.deadlines.push(d.to_str().unwrap().parse().unwrap());
                            }
                        }
                        let symbol = params.get("symbol").cloned().unwrap_or_default();
                        if symbol == "slow" {
                            tokio::time::sleep(Duration::from_secs(3)).await;
                        }
                        let reply = if symbol.starts_with('s') {
                            QuoteReply::ok(quote_for(&symbol))
                        } else {
                            QuoteReply::error(ErrorCode::NotFound, "no such symbol")
                        };
                        let status = StatusCode::from_u16(reply.http_status()).unwrap();
                        (status, axum::Json(reply)).into_response()
                    }
                },
            ),
        )
        .route("/readyz", axum::routing::get(|| async { "ok" }));
    let (url, stop) = common::serve(router).await;
    (url, log, stop)
}

#[tokio::test]
async fn http_transport_serves_quotes_and_forwards_headers() {
    let (url, log, peer_stop) = http_peer().await;
    let db = fresh_sqlite();
    let mut settings = Settings::for_tests(
        db.url(),
        TestTransport::Http {
            base_url: url.clone(),
        },
    );
    settings.rpc_timeout = Duration::from_millis(700);
    let app = start(settings, db).await;
    let token = app.login("alice").await;

    let reply = app
        .client
        .get(format!("{}/api/v1/stock?q=s5", app.base))
        .bearer_auth(&token)
        .header("x-request-id", "http-req-1")
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::OK);
    let body: Value = reply.json().await.unwrap();
    assert_eq!(body["quote"], 5.0);
    {
        let log = log.lock().unwrap();
        assert_eq!(log.request_ids, ["http-req-1"]);
        let now = shared::contract::now_ms();
        assert!(log.deadlines[0] > now && log.deadlines[0] <= now + 1_000);
    }

    let started = Instant::now();
    let slow = app.get("/api/v1/stock?q=slow", Some(&token)).await;
    assert_eq!(slow.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(started.elapsed() < Duration::from_millis(1500));

    let missing = app.get("/api/v1/stock?q=xxxx.us", Some(&token)).await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    // Probed once at start-up, so ready at once.
    assert_eq!(app.get("/readyz", None).await.status(), StatusCode::OK);

    peer_stop.cancel();
    let peer = url.trim_start_matches("http://").to_owned();
    wait_until(
        "the quote peer to stop listening",
        Duration::from_secs(5),
        async || tokio::net::TcpStream::connect(&peer).await.is_err(),
    )
    .await;
    let started = Instant::now();
    let down = app.get("/api/v1/stock?q=s6", Some(&token)).await;
    assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(started.elapsed() < Duration::from_secs(1));
    app.stop().await;
}

#[tokio::test]
async fn refuses_to_start_without_a_jwt_secret() {
    let db = fresh_sqlite();
    let mut settings = Settings::for_tests(
        db.url(),
        TestTransport::Http {
            base_url: "http://127.0.0.1:1".into(),
        },
    );
    settings.jwt_secret = None;
    let err = Application::build(settings.clone()).await.err().unwrap();
    assert!(err.to_string().contains("JWT_SECRET"), "{err}");

    settings.jwt_secret = Some(SecretString::from("too-short"));
    let err = Application::build(settings).await.err().unwrap();
    assert!(err.to_string().contains("32"), "{err}");
}

#[test]
fn every_setting_has_an_env_var_and_help() {
    let vars = api_service::cli::env_vars();
    for expected in [
        "API_ADDR",
        "INTERNAL_ADDR",
        "HTTP_HEADER_TIMEOUT",
        "HTTP_REQUEST_TIMEOUT",
        "HTTP_IDLE_TIMEOUT",
        "HTTP_MAX_CONNECTIONS",
        "DATABASE_URL",
        "DATABASE_MAX_CONNECTIONS",
        "JWT_SECRET",
        "JWT_TTL",
        "JWT_ISSUER",
        "JWT_AUDIENCE",
        "ALLOW_INSECURE_DEV_SECRET",
        "QUOTE_TRANSPORT",
        "AMQP_URL",
        "QUOTE_QUEUE",
        "QUOTE_SERVICE_URL",
        "RPC_TIMEOUT",
        "HASH_CONCURRENCY",
        "USER_CACHE_TTL",
        "COOKIE_SECURE",
        "SHUTDOWN_GRACE",
        "RUST_LOG",
        "LOG_FORMAT",
    ] {
        assert!(vars.iter().any(|v| v == expected), "{expected} missing");
    }
    let command = api_service::cli::cli_command();
    for arg in command.get_arguments() {
        if arg.get_env().is_some() {
            assert!(arg.get_help().is_some(), "{:?} has no doc", arg.get_id());
        }
    }
    let help = api_service::cli::cli_command()
        .render_long_help()
        .to_string();
    assert!(help.contains("LOG_FORMAT"));
    // Values that may hold credentials are never echoed from the environment by --help.
    for secret in ["JWT_SECRET", "DATABASE_URL", "AMQP_URL"] {
        let arg = command
            .get_arguments()
            .find(|a| a.get_env().is_some_and(|e| e == secret))
            .unwrap();
        assert!(arg.is_hide_env_values_set(), "{secret}");
    }
}

#[test]
fn defaults_parse_and_bad_values_are_refused() {
    use clap::Parser;
    let cli = api_service::cli::Cli::try_parse_from(["api_service"]).unwrap();
    assert!(cli.command.is_none(), "serve is the default");
    assert_eq!(cli.settings.rpc_timeout, Duration::from_secs(5));
    assert_eq!(cli.settings.shutdown_grace, Duration::from_secs(10));
    assert_eq!(cli.settings.jwt_ttl, Duration::from_secs(3600));
    assert_eq!(cli.settings.database_max_connections, 10);
    assert_eq!(cli.settings.quote_queue, shared::DEFAULT_QUOTE_QUEUE);
    assert!(cli.settings.handle_signals);
    assert!(
        !cli.settings.cookie_secure,
        "plain HTTP works out of the box"
    );
    let secure =
        api_service::cli::Cli::try_parse_from(["api_service", "--cookie-secure", "true"]).unwrap();
    assert!(secure.settings.cookie_secure);

    for bad in [
        vec!["api_service", "--rpc-timeout", "soon"],
        vec!["api_service", "--user-cache-ttl", "10s"],
        vec!["api_service", "--jwt-ttl", "25h"],
        vec!["api_service", "--quote-transport", "carrier-pigeon"],
        vec!["api_service", "--hash-concurrency", "0"],
    ] {
        assert!(
            api_service::cli::Cli::try_parse_from(&bad).is_err(),
            "{bad:?}"
        );
    }
    let longest = api_service::cli::Cli::try_parse_from(["api_service", "--jwt-ttl", "24h"]);
    assert_eq!(
        longest.unwrap().settings.jwt_ttl,
        Duration::from_secs(24 * 3600)
    );
    let users = api_service::cli::Cli::try_parse_from([
        "api_service",
        "users",
        "create",
        "--username",
        "u",
        "--role",
        "admin",
        "--password-stdin",
    ]);
    assert!(users.is_ok());
    assert!(
        api_service::cli::Cli::try_parse_from([
            "api_service",
            "users",
            "create",
            "--username",
            "u",
            "--role",
            "root"
        ])
        .is_err()
    );
}
