//! The HTTP fallback transport and the health endpoints, over real HTTP.

mod common;

use std::time::Duration;

use common::{TestApp, wait_until};
use fake_stooq::{FakeStooq, Mode};
use shared::{DEADLINE_HEADER, QuoteReply, REQUEST_ID_HEADER, contract::now_ms};

async fn http_app(fake: &FakeStooq) -> TestApp {
    TestApp::spawn(common::http_settings(fake, |_| {})).await
}

async fn reply(response: reqwest::Response) -> (u16, QuoteReply) {
    let status = response.status().as_u16();
    let body = response.text().await.unwrap();
    let reply = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (status, reply)
}

fn error_code(reply: &QuoteReply) -> String {
    match &reply.result {
        shared::QuoteResult::Error { error } => error.code.to_string(),
        shared::QuoteResult::Ok { .. } => "ok".into(),
    }
}

#[tokio::test]
async fn known_symbol_is_200_with_the_quote() {
    let fake = FakeStooq::start().await;
    let app = http_app(&fake).await;

    let response = app.get("/api/v1/quote?symbol=AAPL.US").await;

    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let (status, reply) = reply(response).await;
    assert_eq!(status, 200);
    let quote = reply.into_result().unwrap();
    assert_eq!(quote.symbol, "AAPL.US");
    assert_eq!(quote.close, 183.05);
    app.stop().await;
}

#[tokio::test]
async fn missing_symbol_parameter_is_a_400_bad_request() {
    let fake = FakeStooq::start().await;
    let app = http_app(&fake).await;

    let (status, reply) = reply(app.get("/api/v1/quote").await).await;

    assert_eq!(status, 400);
    assert_eq!(error_code(&reply), "bad_request");
    assert_eq!(fake.hits(), 0);
    app.stop().await;
}

#[tokio::test]
async fn invalid_symbol_is_400_json_without_upstream_hit() {
    let fake = FakeStooq::start().await;
    let app = http_app(&fake).await;

    let (status, reply) = reply(app.get("/api/v1/quote?symbol=aapl%2Bmsft").await).await;

    assert_eq!(status, 400);
    assert_eq!(error_code(&reply), "invalid_symbol");
    assert_eq!(fake.hits(), 0);
    app.stop().await;
}

#[tokio::test]
async fn malformed_query_string_is_a_400_bad_request() {
    let fake = FakeStooq::start().await;
    let app = http_app(&fake).await;

    let (status, reply) = reply(app.get("/api/v1/quote?symbol=a&symbol=b").await).await;

    assert_eq!(status, 400);
    assert_eq!(error_code(&reply), "bad_request");
    app.stop().await;
}

#[tokio::test]
async fn unknown_symbol_is_404() {
    let fake = FakeStooq::start().await;
    let app = http_app(&fake).await;

    let (status, reply) = reply(app.get("/api/v1/quote?symbol=nosuch.us").await).await;

    assert_eq!(status, 404);
    assert_eq!(error_code(&reply), "not_found");
    app.stop().await;
}

#[tokio::test]
async fn upstream_refusal_is_502() {
    let fake = FakeStooq::start().await;
    fake.set_mode(Mode::DailyLimit);
    let app = http_app(&fake).await;

    let (status, reply) = reply(app.get("/api/v1/quote?symbol=aapl.us").await).await;

    assert_eq!(status, 502);
    assert_eq!(error_code(&reply), "upstream_rejected");
    app.stop().await;
}

#[tokio::test]
async fn upstream_failure_is_502() {
    let fake = FakeStooq::start().await;
    fake.set_mode(Mode::Status(503));
    let app = TestApp::spawn(common::http_settings(&fake, |s| s.stooq_max_retries = 0)).await;

    let (status, reply) = reply(app.get("/api/v1/quote?symbol=aapl.us").await).await;

    assert_eq!(status, 502);
    assert_eq!(error_code(&reply), "upstream_unavailable");
    app.stop().await;
}

#[tokio::test]
async fn slow_upstream_past_the_callers_deadline_is_504() {
    let fake = FakeStooq::start().await;
    fake.set_latency(Duration::from_secs(2));
    let app = http_app(&fake).await;

    let response = app
        .http
        .get(format!("{}/api/v1/quote?symbol=aapl.us", app.base))
        .header(DEADLINE_HEADER, (now_ms() + 300).to_string())
        .send()
        .await
        .unwrap();

    let (status, reply) = reply(response).await;
    assert_eq!(status, 504);
    assert_eq!(error_code(&reply), "timeout");
    app.stop().await;
}

#[tokio::test]
async fn deadline_already_past_is_504_without_upstream_hit() {
    let fake = FakeStooq::start().await;
    let app = http_app(&fake).await;

    let response = app
        .http
        .get(format!("{}/api/v1/quote?symbol=aapl.us", app.base))
        .header(DEADLINE_HEADER, (now_ms() - 1000).to_string())
        .send()
        .await
        .unwrap();

    assert_eq!(response.status().as_u16(), 504);
    assert_eq!(fake.hits(), 0);
    app.stop().await;
}

#[tokio::test]
async fn request_id_is_echoed() {
    let fake = FakeStooq::start().await;
    let app = http_app(&fake).await;

    let response = app
        .http
        .get(format!("{}/api/v1/quote?symbol=aapl.us", app.base))
        .header(REQUEST_ID_HEADER, "req-42")
        .send()
        .await
        .unwrap();

    assert_eq!(response.headers()[REQUEST_ID_HEADER], "req-42");
    app.stop().await;
}

#[tokio::test]
async fn healthz_is_200() {
    let fake = FakeStooq::start().await;
    let app = http_app(&fake).await;

    let response = app.get("/healthz").await;

    assert_eq!(response.status().as_u16(), 200);
    app.stop().await;
}

#[tokio::test]
async fn readyz_is_200_with_http_transport() {
    let fake = FakeStooq::start().await;
    let app = http_app(&fake).await;
    assert!(app.wait_ready(true, Duration::from_secs(2)).await);

    let response = app.get("/readyz").await;

    assert_eq!(response.status().as_u16(), 200);
    app.stop().await;
}

#[tokio::test]
async fn readyz_is_503_with_a_reason_while_rabbitmq_is_unreachable() {
    let fake = FakeStooq::start().await;
    let (_refusing, broker) = common::refusing_addr();
    let mut settings = quote_service::Settings::for_tests(&fake.url());
    settings.amqp_url = format!("amqp://guest:guest@{broker}/%2f").into();
    let app = TestApp::spawn(settings).await;
    wait_until(
        "a failed connection attempt",
        Duration::from_secs(5),
        async || {
            app.readiness.reason().is_some_and(|r| {
                r.starts_with(&format!("not consuming from RabbitMQ at {broker}:"))
            })
        },
    )
    .await;

    let response = app.get("/readyz").await;

    assert_eq!(response.status().as_u16(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["ready"], false);
    assert!(
        body["reason"].as_str().unwrap().contains("RabbitMQ"),
        "{body}"
    );
    app.stop().await;
}

#[tokio::test]
async fn quotes_are_still_served_over_http_while_rabbitmq_is_down() {
    let fake = FakeStooq::start().await;
    let mut settings = quote_service::Settings::for_tests(&fake.url());
    settings.amqp_url = "amqp://guest:guest@127.0.0.1:1/%2f".to_owned().into();
    let app = TestApp::spawn(settings).await;

    let (status, _) = reply(app.get("/api/v1/quote?symbol=aapl.us").await).await;

    assert_eq!(status, 200);
    app.stop().await;
}

#[tokio::test]
async fn metrics_expose_cache_and_http_series() {
    let fake = FakeStooq::start().await;
    let app = http_app(&fake).await;
    app.get("/api/v1/quote?symbol=aapl.us").await;
    app.get("/api/v1/quote?symbol=aapl.us").await;

    let text = app.get("/metrics").await.text().await.unwrap();

    assert!(text.contains("quote_cache_hits_total 1"), "{text}");
    assert!(text.contains("quote_upstream_fetches_total 1"), "{text}");
    assert!(
        text.contains(r#"quote_http_requests_total{route="/api/v1/quote",status="200"} 2"#),
        "{text}"
    );
    assert!(text.contains("quote_http_request_seconds_bucket"), "{text}");
    app.stop().await;
}

#[tokio::test]
async fn unknown_route_is_404_json() {
    let fake = FakeStooq::start().await;
    let app = http_app(&fake).await;

    let response = app.get("/nope").await;

    assert_eq!(response.status().as_u16(), 404);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["error"].is_string());
    app.stop().await;
}

#[tokio::test]
async fn shutdown_token_stops_the_app_and_readiness_drops() {
    let fake = FakeStooq::start().await;
    let app = http_app(&fake).await;
    assert!(app.wait_ready(true, Duration::from_secs(2)).await);
    let readiness = app.readiness.clone();

    app.stop().await;

    assert!(!readiness.is_ready());
}

// --- version 2: GET /api/v1/quotes?symbols= ---------------------------------------------

async fn batch_reply(response: reqwest::Response) -> (u16, shared::BatchQuoteReply) {
    let status = response.status().as_u16();
    let body = response.text().await.unwrap();
    let reply = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (status, reply)
}

#[tokio::test]
async fn a_batch_is_200_with_one_result_per_symbol_from_one_upstream_call() {
    let fake = FakeStooq::start().await;
    let app = http_app(&fake).await;

    let (status, reply) = batch_reply(
        app.get("/api/v1/quotes?symbols=aapl.us,xxxx.us,a%2Fb,msft.us")
            .await,
    )
    .await;

    assert_eq!(status, 200);
    let shared::BatchResult::Ok { results } = reply.result else {
        panic!("refused: {reply:?}");
    };
    let codes: Vec<String> = results
        .iter()
        .map(|r| match r {
            shared::QuoteResult::Ok { quote } => quote.symbol.clone(),
            shared::QuoteResult::Error { error } => error.code.to_string(),
        })
        .collect();
    assert_eq!(codes, ["AAPL.US", "not_found", "invalid_symbol", "MSFT.US"]);
    assert_eq!(fake.hits(), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_batch_without_symbols_or_with_too_many_is_a_400_in_version_2() {
    let fake = FakeStooq::start().await;
    let app = http_app(&fake).await;
    let too_many: Vec<String> = (0..=shared::MAX_BATCH_SYMBOLS)
        .map(|i| format!("s{i}.us"))
        .collect();

    for path in [
        "/api/v1/quotes".to_owned(),
        "/api/v1/quotes?symbols=".to_owned(),
        format!("/api/v1/quotes?symbols={}", too_many.join(",")),
    ] {
        let (status, reply) = batch_reply(app.get(&path).await).await;

        assert_eq!(status, 400, "{path}");
        assert_eq!(reply.v, 2, "{path}");
        assert!(
            matches!(&reply.result, shared::BatchResult::Error { error } if error.code == shared::ErrorCode::BadRequest),
            "{path}: {reply:?}"
        );
    }
    assert_eq!(fake.hits(), 0);
    app.stop().await;
}
