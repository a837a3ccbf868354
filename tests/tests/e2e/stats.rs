use api_service::store::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tests::{Backend, error_code, spawn_app, stack};

use tests::on_both_backends;

on_both_backends!(stats_are_the_five_most_requested_highest_first_ties_by_symbol);

async fn stats_are_the_five_most_requested_highest_first_ties_by_symbol(backend: Backend) {
    let Some(app) = stack().backend(backend).spawn().await else {
        return;
    };
    let admin = app.token_for("root", Role::Admin).await;
    let user = app.token_for("alice", Role::User).await;
    // msft 3, aapl 2, cdr 2 (tie: by symbol), ^spx 1, t.us 1 (tie), vod.uk 1 (6th: cut).
    for (symbol, times) in [
        ("aapl.us", 2),
        ("msft.us", 3),
        ("cdr", 2),
        ("^spx", 1),
        ("vod.uk", 1),
        ("t.us", 1),
    ] {
        for _ in 0..times {
            assert_eq!(
                app.stock(&user, symbol).await.status(),
                StatusCode::OK,
                "{symbol}"
            );
        }
    }
    // Unknown symbols are not counted.
    assert_eq!(
        app.stock(&user, "unknown.us").await.status(),
        StatusCode::NOT_FOUND
    );

    let response = app.get_with_token("/api/v1/stats", &admin).await;

    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!([
            {"stock": "msft.us", "times_requested": 3},
            {"stock": "aapl.us", "times_requested": 2},
            {"stock": "cdr", "times_requested": 2},
            {"stock": "^spx", "times_requested": 1},
            {"stock": "t.us", "times_requested": 1},
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_are_forbidden_to_regular_users() {
    let Some(app) = spawn_app().await else { return };
    let user = app.token_for("alice", Role::User).await;

    let response = app.get_with_token("/api/v1/stats", &user).await;

    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    error_code(response).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_need_a_token() {
    let Some(app) = spawn_app().await else { return };

    let response = app.get("/api/v1/stats").await;

    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_are_empty_before_any_request() {
    let Some(app) = spawn_app().await else { return };
    let admin = app.token_for("root", Role::Admin).await;

    let response = app.get_with_token("/api/v1/stats", &admin).await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<Value>().await.unwrap(), json!([]));
}
