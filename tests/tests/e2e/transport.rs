//! How /stock behaves with each transport, and when the quote service is gone or slow.

use api_service::store::Role;
use reqwest::StatusCode;
use serde_json::Value;
use std::time::{Duration, Instant};
use tests::{Backend, Transport, error_code, spawn_app, stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_transport_serves_quotes_and_saves_history() {
    let Some(app) = stack()
        .transport(Transport::Http)
        .backend(Backend::Postgres)
        .spawn()
        .await
    else {
        return;
    };
    let token = app.token_for("alice", Role::User).await;

    let found = app.stock(&token, "aapl.us").await;
    let unknown = app.stock(&token, "unknown.us").await;

    assert_eq!(found.status(), StatusCode::OK);
    let body: Value = found.json().await.unwrap();
    assert_eq!(body["quote"], 183.05);
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert_eq!(app.history(&token).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_quote_worker_over_amqp_is_503_within_a_second() {
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
    let response = app.stock(&token, "aapl.us").await;

    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    error_code(response).await;
    assert!(app.history(&token).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_stopped_leaves_a_queue_without_consumers_503_fast() {
    let Some(mut app) = stack().rpc_timeout(Duration::from_secs(5)).spawn().await else {
        return;
    };
    let token = app.token_for("alice", Role::User).await;
    assert_eq!(app.stock(&token, "aapl.us").await.status(), StatusCode::OK);

    // The durable queue stays; only its consumer goes away.
    app.stop_quote_service().await;
    // The API notices at its next poll of the queue's consumers.
    app.wait_for_readiness(StatusCode::SERVICE_UNAVAILABLE)
        .await;
    let started = Instant::now();
    let response = app.stock(&token, "msft.us").await;

    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        app.get("/readyz").await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_quote_service_over_http_is_503_within_a_second() {
    let Some(app) = stack()
        .transport(Transport::Http)
        .without_quote_service()
        .rpc_timeout(Duration::from_secs(5))
        .spawn()
        .await
    else {
        return;
    };
    let token = app.token_for("alice", Role::User).await;

    let started = Instant::now();
    let response = app.stock(&token, "aapl.us").await;

    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_quote_service_is_504_after_the_rpc_timeout() {
    let Some(app) = stack()
        .rpc_timeout(Duration::from_millis(500))
        .stooq_latency(Duration::from_secs(3))
        .spawn()
        .await
    else {
        return;
    };
    let token = app.token_for("alice", Role::User).await;

    let started = Instant::now();
    let response = app.stock(&token, "aapl.us").await;
    let took = started.elapsed();

    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(2),
        "took {took:?}"
    );
    error_code(response).await;
    assert!(app.history(&token).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_quote_service_over_http_is_504() {
    let Some(app) = stack()
        .transport(Transport::Http)
        .rpc_timeout(Duration::from_millis(500))
        .stooq_latency(Duration::from_secs(3))
        .spawn()
        .await
    else {
        return;
    };
    let token = app.token_for("alice", Role::User).await;

    let response = app.stock(&token, "aapl.us").await;

    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_for_one_symbol_all_succeed_and_are_all_saved() {
    let Some(app) = spawn_app().await else { return };
    let token = app.token_for("alice", Role::User).await;

    let responses = futures::future::join_all((0..50).map(|_| app.stock(&token, "aapl.us"))).await;

    assert!(responses.iter().all(|r| r.status() == StatusCode::OK));
    let page = app
        .get_with_token("/api/v1/users/history?limit=1000", &token)
        .await;
    let rows: Vec<Value> = page.json().await.unwrap();
    assert_eq!(rows.len(), 50, "every 200 has its history row");
    assert!(
        app.stooq.hits() < 50,
        "identical requests share fetches: {}",
        app.stooq.hits()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness() {
    let Some(app) = spawn_app().await else { return };

    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
    assert_eq!(app.get("/readyz").await.status(), StatusCode::OK);
    let metrics = app.get("/metrics").await;
    assert_eq!(metrics.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_without_a_quote_worker() {
    let Some(app) = stack().without_quote_service().spawn().await else {
        return;
    };
    // Not ready before the first poll of the queue, too: wait until the API has looked.
    let looked = tests::load::wait_until(Duration::from_secs(10), || async {
        let body: Value = app.get("/readyz").await.json().await.unwrap();
        body["checks"]["quote_transport"]["detail"]
            .as_str()
            .is_some_and(|d| d == "no quote worker is consuming")
    })
    .await;
    assert!(looked.is_some(), "the API never saw the idle queue");

    let response = app.get("/readyz").await;

    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
}
