//! RPC batching over the real broker: concurrent /stock calls for distinct symbols share
//! requests to the worker, and every one of them is still answered and recorded.

use std::time::Duration;

use api_service::store::Role;
use reqwest::StatusCode;
use tests::{Backend, TestApp, stack};

/// Concurrent calls, each for its own symbol: none can be folded by single-flight, so any
/// saving in messages is the batcher's.
const CALLS: usize = 64;

/// A stack where every /stock call must cross the broker (the API's reuse window off).
async fn stack_without_reuse(batching: bool) -> Option<TestApp> {
    stack()
        .backend(Backend::Postgres)
        .rpc_timeout(Duration::from_secs(5))
        .api_settings(move |s| {
            s.quote_reuse_window = Duration::ZERO;
            s.rpc_batching = batching;
        })
        .spawn()
        .await
}

/// Request messages the worker has handled, all outcomes (its `/metrics` counter).
async fn worker_messages(app: &TestApp) -> u64 {
    let port = app.quote.as_ref().expect("a quote worker runs").port;
    app.metric(
        &format!("http://127.0.0.1:{port}"),
        "quote_rpc_messages_total",
    )
    .await as u64
}

/// Sends [`CALLS`] /stock requests for distinct symbols at once; returns their statuses and
/// the worker messages they cost.
async fn burst(app: &TestApp, token: &str) -> (Vec<StatusCode>, u64) {
    let before = worker_messages(app).await;
    let statuses = futures::future::join_all(
        (0..CALLS).map(|i| async move { app.stock(token, &format!("burst{i}.us")).await.status() }),
    )
    .await;
    (statuses, worker_messages(app).await - before)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_for_distinct_symbols_cost_fewer_worker_messages_than_calls() {
    let Some(app) = stack_without_reuse(true).await else {
        return;
    };
    let token = app.token_for("alice", Role::User).await;

    let (statuses, messages) = burst(&app, &token).await;

    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    assert!(
        messages < CALLS as u64,
        "{messages} worker messages for {CALLS} calls: nothing was batched"
    );
    assert_eq!(
        app.history(&token).await.len(),
        CALLS,
        "every answered call recorded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_batching_off_every_call_is_its_own_worker_message() {
    let Some(app) = stack_without_reuse(false).await else {
        return;
    };
    let token = app.token_for("alice", Role::User).await;

    let (statuses, messages) = burst(&app, &token).await;

    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    assert_eq!(messages, CALLS as u64);
    assert_eq!(app.history(&token).await.len(), CALLS);
}
