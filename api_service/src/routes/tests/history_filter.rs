//! `GET /api/v1/users/history?symbol=`: one symbol's rows, paged like the rest.

use super::*;

async fn ask(app: &TestApp, token: &str, symbols: &[&str]) {
    for symbol in symbols {
        app.transport
            .answer(symbol, Ok(quote(&symbol.to_uppercase(), "CO", 1.0)));
        let reply = app
            .get(&format!("/api/v1/stock?q={symbol}"), Some(token))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
}

fn symbols(reply: &Reply) -> Vec<String> {
    reply
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["symbol"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_filter_keeps_one_symbol_in_any_case_and_pages_keep_it() {
    let app = app().await;
    let token = app.login("alice", "alice-password").await;
    ask(
        &app,
        &token,
        &["aapl.us", "msft.us", "aapl.us", "^spx", "aapl.us"],
    )
    .await;

    let first = app
        .get("/api/v1/users/history?symbol=AAPL.us&limit=2", Some(&token))
        .await;
    let next = next_link(&first).expect("a third AAPL row");
    let second = app.get(&next, Some(&token)).await;

    assert_eq!(symbols(&first), ["AAPL.US", "AAPL.US"]);
    assert!(next.contains("&symbol=aapl.us"), "{next}");
    assert_eq!(symbols(&second), ["AAPL.US"]);
    assert!(next_link(&second).is_none());
}

#[tokio::test]
async fn a_caret_symbol_survives_the_link() {
    let app = app().await;
    let token = app.login("alice", "alice-password").await;
    ask(&app, &token, &["^spx", "^spx"]).await;

    let first = app
        .get("/api/v1/users/history?symbol=%5Espx&limit=1", Some(&token))
        .await;
    let next = next_link(&first).unwrap();
    let second = app.get(&next, Some(&token)).await;

    assert!(next.contains("symbol=%5Espx"), "{next}");
    assert_eq!(symbols(&second), ["^SPX"]);
}

#[tokio::test]
async fn an_empty_filter_is_no_filter_and_a_bad_one_is_400() {
    let app = app().await;
    let token = app.login("alice", "alice-password").await;
    ask(&app, &token, &["aapl.us", "msft.us"]).await;

    let empty = app.get("/api/v1/users/history?symbol=", Some(&token)).await;
    let unknown = app
        .get("/api/v1/users/history?symbol=ibm.us", Some(&token))
        .await;
    let bad = app
        .get("/api/v1/users/history?symbol=a%2Fb", Some(&token))
        .await;
    let long = app
        .get(
            &format!("/api/v1/users/history?symbol={}", "x".repeat(21)),
            Some(&token),
        )
        .await;

    assert_eq!(symbols(&empty), ["MSFT.US", "AAPL.US"]);
    assert_eq!(unknown.body, json!([]));
    assert_envelope(&bad, StatusCode::BAD_REQUEST, "invalid_symbol");
    assert_envelope(&long, StatusCode::BAD_REQUEST, "invalid_symbol");
}

#[tokio::test]
async fn a_parameter_given_twice_is_a_400_in_the_apis_words() {
    let app = app().await;
    let token = app.login("alice", "alice-password").await;

    let reply = app
        .get(
            "/api/v1/users/history?symbol=aapl.us&symbol=msft.us",
            Some(&token),
        )
        .await;

    let message = message_of(&reply, StatusCode::BAD_REQUEST, "bad_request");
    assert_eq!(message, "invalid query string: duplicate field `symbol`");
}
