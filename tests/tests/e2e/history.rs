use api_service::store::{NewHistoryEntry, Role};
use reqwest::StatusCode;
use serde_json::Value;
use tests::{Backend, TestApp, error_code, spawn_app, stack};

use tests::on_both_backends;

on_both_backends!(
    history_lists_own_queries_newest_first,
    pagination_walks_every_row_once_while_new_rows_arrive,
    users_never_see_each_others_history,
    a_large_history_downloads_as_csv_complete_and_newest_first,
    the_csv_and_the_pages_keep_to_one_symbol,
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

/// Reads a CSV download: its header checked, its records returned.
async fn csv_rows(app: &TestApp, token: &str, path: &str) -> Vec<csv::StringRecord> {
    let response = app.get_with_token(path, token).await;
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    assert_eq!(
        response.headers()["content-type"],
        "text/csv; charset=utf-8",
        "{path}"
    );
    let text = response.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    assert_eq!(
        reader.headers().unwrap(),
        vec!["date", "symbol", "name", "open", "high", "low", "close"]
    );
    reader.records().map(Result::unwrap).collect()
}

async fn a_large_history_downloads_as_csv_complete_and_newest_first(backend: Backend) {
    let Some(app) = stack().backend(backend).spawn().await else {
        return;
    };
    let token = app.token_for("alice", Role::User).await;
    let user_id = app
        .store
        .user_by_username("alice")
        .await
        .unwrap()
        .unwrap()
        .id;
    // Several download pages' worth, with names a spreadsheet must not split or mangle.
    const ROWS: usize = 3_210;
    let entries: Vec<NewHistoryEntry> = (0..ROWS)
        .map(|i| NewHistoryEntry {
            requested_at: chrono::DateTime::from_timestamp(1_700_000_000 + i as i64, 0).unwrap(),
            symbol: "ACME.US".into(),
            name: format!("Acme, \"No. {i}\"\nHoldings"),
            open: 1.0,
            high: 2.0,
            low: 0.5,
            close: i as f64 + 0.25,
        })
        .collect();
    app.store.seed_history(user_id, &entries).await.unwrap();

    let rows = csv_rows(&app, &token, "/api/v1/users/history.csv").await;

    assert_eq!(rows.len(), ROWS);
    for (k, row) in rows.iter().enumerate() {
        let i = ROWS - 1 - k;
        assert_eq!(&row[2], format!("Acme, \"No. {i}\"\nHoldings"), "row {k}");
        assert_eq!(&row[6], format!("{}", i as f64 + 0.25), "row {k}");
        let date = chrono::DateTime::from_timestamp(1_700_000_000 + i as i64, 0).unwrap();
        assert_eq!(
            &row[0],
            date.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
    }
}

async fn the_csv_and_the_pages_keep_to_one_symbol(backend: Backend) {
    let Some(app) = stack().backend(backend).spawn().await else {
        return;
    };
    let token = app.token_for("alice", Role::User).await;
    for symbol in ["aapl.us", "msft.us", "aapl.us", "^spx", "aapl.us"] {
        assert_eq!(app.stock(&token, symbol).await.status(), StatusCode::OK);
    }

    let (pages, _) = walk_pages(&app, &token, "/api/v1/users/history?symbol=AAPL.US&limit=2").await;
    let csv = csv_rows(&app, &token, "/api/v1/users/history.csv?symbol=aapl.us").await;
    let caret = csv_rows(&app, &token, "/api/v1/users/history.csv?symbol=%5Espx").await;

    assert_eq!(pages.len(), 3);
    assert!(pages.iter().all(|r| r["symbol"] == "AAPL.US"), "{pages:?}");
    assert_eq!(csv.len(), 3);
    assert!(csv.iter().all(|r| &r[1] == "AAPL.US"));
    let csv_dates: Vec<&str> = csv.iter().map(|r| &r[0]).collect();
    let page_dates: Vec<&str> = pages.iter().map(|r| r["date"].as_str().unwrap()).collect();
    assert_eq!(csv_dates, page_dates, "the same rows in the same order");
    assert_eq!(caret.len(), 1);
    assert_eq!(&caret[0][1], "^SPX");
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
