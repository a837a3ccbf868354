//! `GET /api/v1/users/history.csv`: every row, in order, read page by page as the client
//! takes them.

use futures::StreamExt;

use super::*;
use crate::routes::history_csv::{HEADER, PAGE_ROWS};

/// `n` rows for `user`, oldest first: row `i` closes at `i` and is named `name(i)`.
async fn seed_rows(app: &TestApp, user: &str, n: usize, name: impl Fn(usize) -> String) {
    let id = app.user_id(user).await;
    let rows: Vec<NewHistoryEntry> = (0..n)
        .map(|i| NewHistoryEntry {
            requested_at: chrono::DateTime::from_timestamp(1_700_000_000 + i as i64, 0).unwrap(),
            symbol: if i % 2 == 0 { "AAPL.US" } else { "MSFT.US" }.to_owned(),
            name: name(i),
            open: 1.5,
            high: 2.0,
            low: 0.25,
            close: i as f64,
        })
        .collect();
    app.store.seed_history(id, &rows).await.unwrap();
}

fn csv_request(uri: &str, token: &str) -> Request<Body> {
    Request::get(uri)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap()
}

fn parse(text: &str) -> Vec<csv::StringRecord> {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    assert_eq!(
        reader.headers().unwrap(),
        vec!["date", "symbol", "name", "open", "high", "low", "close"]
    );
    reader.records().map(Result::unwrap).collect()
}

impl TestApp {
    fn page_reads(&self) -> Vec<u32> {
        self.store.history_page_limits.lock().unwrap().clone()
    }

    fn forget_page_reads(&self) {
        self.store.history_page_limits.lock().unwrap().clear();
    }
}

#[tokio::test]
async fn a_large_history_downloads_complete_and_newest_first_in_bounded_pages() {
    let app = app().await;
    const ROWS: usize = 2_345;
    seed_rows(&app, "alice", ROWS, |i| format!("N{i}")).await;
    let token = app.login("alice", "alice-password").await;
    app.forget_page_reads();

    let reply = app.get("/api/v1/users/history.csv", Some(&token)).await;

    assert_eq!(reply.status, StatusCode::OK);
    let rows = parse(reply.body.as_str().unwrap());
    assert_eq!(rows.len(), ROWS);
    for (k, row) in rows.iter().enumerate() {
        let i = ROWS - 1 - k;
        assert_eq!(&row[2], format!("N{i}"), "row {k}");
        assert_eq!(row[6].parse::<f64>().unwrap(), i as f64, "row {k}");
    }
    let reads = app.page_reads();
    assert!(reads.iter().all(|&limit| limit == PAGE_ROWS), "{reads:?}");
    assert_eq!(reads.len(), ROWS.div_ceil(PAGE_ROWS as usize), "{reads:?}");
}

#[tokio::test]
async fn pages_are_read_only_as_the_client_takes_them() {
    let app = app().await;
    seed_rows(&app, "alice", 4 * PAGE_ROWS as usize, |i| format!("N{i}")).await;
    let token = app.login("alice", "alice-password").await;
    app.forget_page_reads();

    let response = app
        .router
        .clone()
        .oneshot(csv_request("/api/v1/users/history.csv", &token))
        .await
        .unwrap();
    let mut body = response.into_body().into_data_stream();
    let header_line = body.next().await.unwrap().unwrap();
    let first_page = body.next().await.unwrap().unwrap();

    assert_eq!(header_line, HEADER.as_bytes());
    assert_eq!(
        first_page.iter().filter(|&&b| b == b'\n').count(),
        PAGE_ROWS as usize
    );
    assert_eq!(
        app.page_reads().len(),
        1,
        "nothing read ahead of the client"
    );
    let mut chunks = 2;
    while let Some(chunk) = body.next().await {
        chunk.unwrap();
        chunks += 1;
    }
    assert_eq!(chunks, 2 + 3, "the header, then one chunk per page");
    assert_eq!(
        app.page_reads().len(),
        5,
        "4 full pages and the empty one after"
    );
}

#[tokio::test]
async fn names_with_commas_quotes_and_line_breaks_are_quoted() {
    let app = app().await;
    let names = ["Foo, Inc.", "The \"Best\" Co", "Two\nLines", "Plain"];
    seed_rows(&app, "alice", names.len(), |i| names[i].to_owned()).await;
    let token = app.login("alice", "alice-password").await;

    let reply = app.get("/api/v1/users/history.csv", Some(&token)).await;

    let text = reply.body.as_str().unwrap();
    assert!(text.contains(r#","Foo, Inc.","#), "{text}");
    assert!(text.contains(r#","The ""Best"" Co","#), "{text}");
    let read: Vec<String> = parse(text).iter().map(|r| r[2].to_owned()).collect();
    let mut expected: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    expected.reverse();
    assert_eq!(read, expected);
}

/// Company names come from the feed: one a spreadsheet would read as a formula (`=`, `+`,
/// `-`, `@`, or a tab or carriage return before one) is written as text, behind a `'`.
#[tokio::test]
async fn names_a_spreadsheet_would_run_as_formulas_are_written_as_text() {
    let app = app().await;
    let names = [
        "=HYPERLINK(\"http://evil.example\",\"x\")",
        "+1+2",
        "-2+3",
        "@SUM(A1)",
        "\t=1",
        "\r=1",
        "A=B",
        "Plain",
    ];
    seed_rows(&app, "alice", names.len(), |i| names[i].to_owned()).await;
    let token = app.login("alice", "alice-password").await;

    let reply = app.get("/api/v1/users/history.csv", Some(&token)).await;

    let mut read: Vec<String> = parse(reply.body.as_str().unwrap())
        .iter()
        .map(|r| r[2].to_owned())
        .collect();
    read.reverse();
    assert_eq!(
        read,
        [
            "'=HYPERLINK(\"http://evil.example\",\"x\")",
            "'+1+2",
            "'-2+3",
            "'@SUM(A1)",
            "'\t=1",
            "'\r=1",
            "A=B",
            "Plain",
        ]
    );
}

#[tokio::test]
async fn the_csv_is_an_attachment_with_the_json_historys_values() {
    let app = app().await;
    seed_rows(&app, "alice", 1, |_| "APPLE".into()).await;
    let token = app.login("alice", "alice-password").await;

    let csv = app.get("/api/v1/users/history.csv", Some(&token)).await;
    let json = app.get("/api/v1/users/history", Some(&token)).await;

    assert_eq!(csv.headers[header::CONTENT_TYPE], "text/csv; charset=utf-8");
    assert_eq!(
        csv.headers[header::CONTENT_DISPOSITION],
        r#"attachment; filename="history.csv""#
    );
    let row = &json.body[0];
    let line = format!(
        "{},{},{},{},{},{},{}",
        row["date"].as_str().unwrap(),
        row["symbol"].as_str().unwrap(),
        row["name"].as_str().unwrap(),
        row["open"],
        row["high"],
        row["low"],
        row["close"]
    );
    assert_eq!(csv.body.as_str().unwrap(), format!("{HEADER}{line}\n"));
}

#[tokio::test]
async fn an_empty_history_is_the_header_line_alone() {
    let app = app().await;
    let token = app.login("alice", "alice-password").await;

    let reply = app.get("/api/v1/users/history.csv", Some(&token)).await;

    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body.as_str().unwrap(), HEADER);
}

#[tokio::test]
async fn the_csv_can_be_one_symbols() {
    let app = app().await;
    seed_rows(&app, "alice", 10, |i| format!("N{i}")).await;
    let token = app.login("alice", "alice-password").await;

    let reply = app
        .get("/api/v1/users/history.csv?symbol=msft.US", Some(&token))
        .await;

    let rows = parse(reply.body.as_str().unwrap());
    let names: Vec<&str> = rows.iter().map(|r| &r[2]).collect();
    assert_eq!(names, ["N9", "N7", "N5", "N3", "N1"]);
    assert!(rows.iter().all(|r| &r[1] == "MSFT.US"));
}

#[tokio::test]
async fn the_csv_needs_a_user_and_refuses_a_bad_symbol() {
    let app = app().await;
    let token = app.login("alice", "alice-password").await;

    let anonymous = app.get("/api/v1/users/history.csv", None).await;
    let bad = app
        .get("/api/v1/users/history.csv?symbol=a%2Fb", Some(&token))
        .await;

    assert_envelope(&anonymous, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_envelope(&bad, StatusCode::BAD_REQUEST, "invalid_symbol");
}

#[tokio::test]
async fn a_database_outage_is_a_503_not_a_cut_off_file() {
    let app = app().await;
    let token = app.login("alice", "alice-password").await;
    app.get("/api/v1/users/history", Some(&token)).await; // the user is cached now
    app.store.down.store(true, Ordering::SeqCst);

    let reply = app.get("/api/v1/users/history.csv", Some(&token)).await;

    assert_envelope(
        &reply,
        StatusCode::SERVICE_UNAVAILABLE,
        "database_unavailable",
    );
}

#[tokio::test]
async fn the_session_cookie_downloads_without_a_csrf_token() {
    let app = app().await;
    seed_rows(&app, "alice", 3, |i| format!("N{i}")).await;
    let signed_in = app
        .send(
            Request::post("/api/v1/session")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(
                    json!({"username": "alice", "password": "alice-password"}).to_string(),
                ))
                .unwrap(),
        )
        .await;
    let set_cookie = signed_in.headers[header::SET_COOKIE].to_str().unwrap();
    let cookie = set_cookie.split(';').next().unwrap();

    let reply = app
        .send(
            Request::get("/api/v1/users/history.csv")
                .header(header::COOKIE, cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await;

    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(parse(reply.body.as_str().unwrap()).len(), 3);
}
