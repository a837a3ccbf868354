use api_service::store::Role;
use reqwest::StatusCode;
use serde_json::Value;
use tests::{Backend, error_code, spawn_app, stack};

use tests::on_both_backends;

on_both_backends!(
    found_stock_is_returned_and_saved_in_history,
    unknown_symbol_is_404_and_nothing_is_saved
);

async fn found_stock_is_returned_and_saved_in_history(backend: Backend) {
    let Some(app) = stack().backend(backend).spawn().await else {
        return;
    };
    let token = app.token_for("alice", Role::User).await;

    let response = app.stock(&token, "aapl.us").await;

    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        [&body["symbol"], &body["company_name"], &body["quote"]],
        [
            &serde_json::json!("AAPL.US"),
            &serde_json::json!("APPLE"),
            &serde_json::json!(183.05)
        ],
        "{body}"
    );
    assert!(
        body["time"].is_string() && body["local_time"].is_string(),
        "{body}"
    );
    // Committed before the 200 was sent: visible at once, with every documented field.
    let history = app.history(&token).await;
    assert_eq!(history.len(), 1);
    let row = &history[0];
    assert_eq!(row["symbol"], "AAPL.US");
    assert_eq!(row["name"], "APPLE");
    assert_eq!(row["open"], 184.9);
    assert_eq!(row["high"], 185.09);
    assert_eq!(row["low"], 182.13);
    assert_eq!(row["close"], 183.05);
    let date = chrono::DateTime::parse_from_rfc3339(row["date"].as_str().unwrap()).unwrap();
    let age = chrono::Utc::now().signed_duration_since(date);
    assert!(
        age.num_seconds().abs() < 60,
        "date is the request time in UTC, got {date}"
    );
}

async fn unknown_symbol_is_404_and_nothing_is_saved(backend: Backend) {
    let Some(app) = stack().backend(backend).spawn().await else {
        return;
    };
    let token = app.token_for("alice", Role::User).await;

    let response = app.stock(&token, "unknown.us").await;

    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(response).await, "not_found");
    assert!(app.history(&token).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symbol_is_normalised_before_the_lookup() {
    let Some(app) = spawn_app().await else { return };
    let token = app.token_for("alice", Role::User).await;

    let response = app.stock(&token, "  AAPL.US ").await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(app.stooq.symbol_hits("aapl.us"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_invalid_q_is_400_without_any_upstream_call() {
    let Some(app) = spawn_app().await else { return };
    let token = app.token_for("alice", Role::User).await;

    for path in [
        "/api/v1/stock",
        "/api/v1/stock?q=",
        "/api/v1/stock?q=%20%20",
        "/api/v1/stock?q=aapl.us%2Bmsft.us",
        "/api/v1/stock?q=aaaaaaaaaaaaaaaaaaaaa",
        "/api/v1/stock?q=%27%3B%20drop%20table%20users",
    ] {
        let response = app.get_with_token(path, &token).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path}");
        let code = error_code(response).await;
        assert!(!code.is_empty(), "{path}");
    }
    assert_eq!(app.stooq.hits(), 0);
    assert!(app.history(&token).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_refusal_is_502_with_the_reason() {
    let Some(app) = spawn_app().await else { return };
    let token = app.token_for("alice", Role::User).await;
    app.stooq.set_mode(fake_stooq::Mode::DailyLimit);

    let response = app.stock(&token, "aapl.us").await;

    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let body: Value = response.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap().to_lowercase();
    assert!(
        message.contains("limit"),
        "the reason reaches the user: {message}"
    );
    assert!(app.history(&token).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_server_error_is_502() {
    let Some(app) = spawn_app().await else { return };
    let token = app.token_for("alice", Role::User).await;
    app.stooq.set_mode(fake_stooq::Mode::Status(503));

    let response = app.stock(&token, "aapl.us").await;

    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(error_code(response).await, "upstream_unavailable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_is_returned_and_kept_when_given() {
    let Some(app) = spawn_app().await else { return };
    let token = app.token_for("alice", Role::User).await;

    let generated = app.stock(&token, "aapl.us").await;
    let given = app
        .client
        .get(app.url("/api/v1/stock?q=aapl.us"))
        .bearer_auth(&token)
        .header("x-request-id", "trace-me-123")
        .send()
        .await
        .unwrap();

    assert!(generated.headers().get("x-request-id").is_some());
    assert_eq!(given.headers()["x-request-id"], "trace-me-123");
}
