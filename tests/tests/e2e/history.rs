use api_service::store::Role;
use reqwest::StatusCode;
use serde_json::Value;
use tests::{Backend, TestApp, error_code, spawn_app, stack};

use tests::on_both_backends;

on_both_backends!(
    history_lists_own_queries_newest_first,
    pagination_walks_every_row_once_while_new_rows_arrive,
    users_never_see_each_others_history,
);

async fn history_lists_own_queries_newest_first(backend: Backend) {
    let Some(app) = stack().backend(backend).spawn().await else {
        return;
    };
    let token = app.token_for("alice", Role::User).await;
    for symbol in ["aapl.us", "msft.us", "^spx"] {
        assert_eq!(app.stock(&token, symbol).await.status(), StatusCode::OK);
    }

    let history = app.history(&token).await;

    let symbols: Vec<&str> = history
        .iter()
        .map(|r| r["symbol"].as_str().unwrap())
        .collect();
    assert_eq!(symbols, ["^SPX", "MSFT.US", "AAPL.US"]);
    let dates: Vec<&str> = history
        .iter()
        .map(|r| r["date"].as_str().unwrap())
        .collect();
    assert!(
        dates.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {dates:?}"
    );
}

/// Follows `Link: <...>; rel="next"` until it disappears.
async fn walk_pages(app: &TestApp, token: &str, first: &str) -> (Vec<Value>, usize) {
    let mut next = Some(first.to_owned());
    let mut rows = Vec::new();
    let mut pages = 0;
    while let Some(path) = next.take() {
        let response = app.get_with_token(&path, token).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        next = response
            .headers()
            .get("link")
            .map(|l| l.to_str().unwrap().to_owned())
            .and_then(|l| parse_next_link(&l));
        let page: Vec<Value> = response.json().await.unwrap();
        rows.extend(page);
        pages += 1;
        assert!(pages < 100, "pagination does not end");
    }
    (rows, pages)
}

fn parse_next_link(header: &str) -> Option<String> {
    header
        .split(',')
        .find(|part| part.contains("rel=\"next\""))
        .map(|part| {
            let start = part.find('<').unwrap() + 1;
            let end = part.find('>').unwrap();
            let target = &part[start..end];
            // Accept absolute or relative targets.
            match target.find("/api/") {
                Some(i) => target[i..].to_owned(),
                None => target.to_owned(),
            }
        })
}

async fn pagination_walks_every_row_once_while_new_rows_arrive(backend: Backend) {
    let Some(app) = stack().backend(backend).spawn().await else {
        return;
    };
    let token = app.token_for("alice", Role::User).await;
    for _ in 0..7 {
        assert_eq!(app.stock(&token, "aapl.us").await.status(), StatusCode::OK);
    }

    let first = app
        .get_with_token("/api/v1/users/history?limit=3", &token)
        .await;
    assert_eq!(first.status(), StatusCode::OK);
    let next = parse_next_link(first.headers()["link"].to_str().unwrap()).expect("rel=next");
    let first_page: Vec<Value> = first.json().await.unwrap();
    // New rows arrive between pages: the cursor must not shift.
    for _ in 0..2 {
        assert_eq!(app.stock(&token, "msft.us").await.status(), StatusCode::OK);
    }
    let (rest, pages) = walk_pages(&app, &token, &next).await;

    assert_eq!(first_page.len(), 3);
    assert_eq!(rest.len(), 4, "the 7 original rows, each exactly once");
    assert!(rest.iter().all(|r| r["symbol"] == "AAPL.US"));
    assert!(pages >= 2);
    let (all, _) = walk_pages(&app, &token, "/api/v1/users/history?limit=4").await;
    assert_eq!(all.len(), 9);
}

async fn users_never_see_each_others_history(backend: Backend) {
    let Some(app) = stack().backend(backend).spawn().await else {
        return;
    };
    let alice = app.token_for("alice", Role::User).await;
    let bob = app.token_for("bob", Role::User).await;
    assert_eq!(app.stock(&alice, "aapl.us").await.status(), StatusCode::OK);
    assert_eq!(app.stock(&bob, "msft.us").await.status(), StatusCode::OK);

    let alices = app.history(&alice).await;
    let bobs = app.history(&bob).await;

    assert_eq!(alices.len(), 1);
    assert_eq!(alices[0]["symbol"], "AAPL.US");
    assert_eq!(bobs.len(), 1);
    assert_eq!(bobs[0]["symbol"], "MSFT.US");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_defaults_to_100_and_bad_limits_are_400() {
    let Some(app) = spawn_app().await else { return };
    let token = app.token_for("alice", Role::User).await;

    for path in [
        "/api/v1/users/history?limit=0",
        "/api/v1/users/history?limit=1001",
        "/api/v1/users/history?limit=abc",
        "/api/v1/users/history?cursor=not-a-cursor",
    ] {
        let response = app.get_with_token(path, &token).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path}");
        error_code(response).await;
    }
    let response = app.get_with_token("/api/v1/users/history", &token).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers().get("link").is_none(),
        "empty history has no next page"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_requires_a_token() {
    let Some(app) = spawn_app().await else { return };

    let response = app.get("/api/v1/users/history").await;

    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
}
