//! `GET /api/v1/quotes`: many symbols in one request, over both transports and against a
//! worker that predates contract v2 (a rolling upgrade).

use std::time::{Duration, Instant};

use api_service::store::Role;
use fake_stooq::FakeStooq;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tests::{Backend, TestApp, Transport, error_code, old_worker, on_both_backends, stack};

/// Found, unknown, invalid and repeated symbols in one list.
const MIXED: &str = "aapl.us,XXXX.US,a/b,AAPL.US, msft.us ,unknown.us,a/b";

/// What [`MIXED`] must be answered with: five distinct entries, in order.
fn mixed_outcomes() -> Vec<(&'static str, &'static str)> {
    vec![
        ("aapl.us", "AAPL.US"),
        ("xxxx.us", "not_found"),
        ("a/b", "invalid_symbol"),
        ("msft.us", "MSFT.US"),
        ("unknown.us", "not_found"),
    ]
}

/// Each result as (requested symbol, quoted symbol or error code).
fn outcomes(body: &Value) -> Vec<(String, String)> {
    body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            let outcome = match (&r["quote"], &r["error"]) {
                (Value::Object(q), Value::Null) => q["symbol"].as_str().unwrap().to_owned(),
                (Value::Null, Value::Object(e)) => e["code"].as_str().unwrap().to_owned(),
                _ => panic!("exactly one of quote and error: {r}"),
            };
            (r["symbol"].as_str().unwrap().to_owned(), outcome)
        })
        .collect()
}

fn expected(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

async fn stats(app: &TestApp) -> Value {
    let admin = app.token_for("root", Role::Admin).await;
    let response = app.get_with_token("/api/v1/stats", &admin).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

/// The mixed batch against `app`: per-symbol results, history and counters for found
/// symbols only, and `upstream_calls` stooq calls on `stooq`.
async fn check_mixed_batch(app: &TestApp, stooq: &FakeStooq) {
    let token = app.token_for("alice", Role::User).await;

    let response = app.quotes(&token, MIXED).await;

    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(outcomes(&body), expected(&mixed_outcomes()));
    assert_eq!(
        body["results"][0]["quote"],
        json!({
            "symbol": "AAPL.US", "company_name": "APPLE", "quote": 183.05,
            "open": 184.9, "high": 185.09, "low": 182.13, "volume": 50759496u64,
            "time": "2024-05-10T20:00:09Z", "local_date": "2024-05-10", "local_time": "22:00:09"
        }),
        "the same shape as /stock"
    );
    assert_eq!(
        stooq.symbol_hits("a/b"),
        0,
        "an invalid symbol is never fetched"
    );
    // Committed before the 200: the found ones, in request order (newest first here).
    let history = app.history(&token).await;
    let symbols: Vec<&str> = history
        .iter()
        .map(|h| h["symbol"].as_str().unwrap())
        .collect();
    assert_eq!(symbols, ["MSFT.US", "AAPL.US"]);
    assert_eq!(
        stats(app).await,
        json!([{"stock": "aapl.us", "times_requested": 1}, {"stock": "msft.us", "times_requested": 1}])
    );
}

on_both_backends!(a_batch_answers_each_symbol_and_records_the_found_ones);

async fn a_batch_answers_each_symbol_and_records_the_found_ones(backend: Backend) {
    let Some(app) = stack().backend(backend).spawn().await else {
        return;
    };

    check_mixed_batch(&app, &app.stooq).await;

    assert_eq!(app.stooq.hits(), 1, "one upstream call for the whole batch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http_a_batch_answers_each_symbol_and_records_the_found_ones() {
    let Some(app) = stack()
        .transport(Transport::Http)
        .backend(Backend::Postgres)
        .spawn()
        .await
    else {
        return;
    };

    check_mixed_batch(&app, &app.stooq).await;

    assert_eq!(app.stooq.hits(), 1, "one upstream call for the whole batch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_symbols_cost_one_upstream_call_and_twenty_history_rows() {
    let Some(app) = stack().spawn().await else {
        return;
    };
    let token = app.token_for("alice", Role::User).await;
    let symbols: Vec<String> = (0..20).map(|i| format!("sym{i}.us")).collect();

    let response = app.quotes(&token, &symbols.join(",")).await;

    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["results"].as_array().unwrap().len(), 20);
    assert_eq!(app.stooq.hits(), 1);
    assert_eq!(app.history(&token).await.len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_where_every_symbol_fails_is_still_200_and_records_nothing() {
    let Some(app) = stack().spawn().await else {
        return;
    };
    let token = app.token_for("alice", Role::User).await;

    let response = app.quotes(&token, "unknown.us,xxxx.us,a/b").await;

    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        outcomes(&body),
        expected(&[
            ("unknown.us", "not_found"),
            ("xxxx.us", "not_found"),
            ("a/b", "invalid_symbol")
        ])
    );
    assert!(app.history(&token).await.is_empty());
    assert_eq!(stats(&app).await, json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_one_symbols_are_400_and_nothing_is_fetched() {
    let Some(app) = stack().spawn().await else {
        return;
    };
    let token = app.token_for("alice", Role::User).await;
    let symbols: Vec<String> = (0..51).map(|i| format!("sym{i}.us")).collect();

    let response = app.quotes(&token, &symbols.join(",")).await;

    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(response).await, "bad_request");
    assert_eq!(app.stooq.hits(), 0);
    assert!(app.history(&token).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_missing_or_too_long_q_is_400() {
    let Some(app) = stack().spawn().await else {
        return;
    };
    let token = app.token_for("alice", Role::User).await;
    let long = format!("aapl.us{}", " ".repeat(3_000));

    for response in [
        app.quotes(&token, "").await,
        app.get_with_token("/api/v1/quotes", &token).await,
        app.quotes(&token, &long).await,
    ] {
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(error_code(response).await, "bad_request");
    }
    assert_eq!(app.stooq.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_needs_a_token() {
    let Some(app) = stack().spawn().await else {
        return;
    };

    let response = app.get("/api/v1/quotes?q=aapl.us,msft.us").await;

    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(response).await, "unauthorized");
    assert_eq!(app.stooq.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_quote_worker_is_503_within_a_second_as_on_stock() {
    let Some(app) = stack()
        .without_quote_service()
        .rpc_timeout(Duration::from_secs(5))
        .spawn()
        .await
    else {
        return;
    };
    let token = app.token_for("alice", Role::User).await;

    let started = Instant::now();
    let response = app.quotes(&token, "aapl.us,msft.us").await;

    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(error_code(response).await, "quote_service_unavailable");
    assert!(app.history(&token).await.is_empty());
}

// --- rolling upgrade: the API is newer than its worker ----------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_worker_over_amqp_is_asked_one_symbol_at_a_time() {
    let Some(app) = stack().without_quote_service().spawn().await else {
        return;
    };
    let old = old_worker::spawn_amqp(&app.queue, &app.stooq).await;
    app.wait_until_ready().await;

    check_mixed_batch(&app, &app.stooq).await;

    assert_eq!(
        old.refused(),
        1,
        "one v2 request, refused; then v1 requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_quote_service_over_http_is_asked_one_symbol_at_a_time() {
    let stooq = FakeStooq::start().await;
    let old = old_worker::spawn_http(&stooq).await;
    let url = old.url.clone();
    let Some(app) = stack()
        .transport(Transport::Http)
        .without_quote_service()
        .api_settings(move |s| s.quote_service_url = url)
        .spawn()
        .await
    else {
        return;
    };
    app.wait_until_ready().await;

    check_mixed_batch(&app, &stooq).await;

    assert_eq!(
        old.refused(),
        1,
        "one batch request, refused; then v1 requests"
    );
}
