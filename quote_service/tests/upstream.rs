//! The stooq client against the fake feed: what is retried, what is not, and deadlines.

mod common;

use std::time::Duration;

use fake_stooq::{FakeConfig, FakeStooq, Mode};
use shared::{ErrorCode, Symbol};
use tokio::time::Instant;

fn sym(s: &str) -> Symbol {
    Symbol::parse(s).unwrap()
}

fn in_secs(s: u64) -> Instant {
    Instant::now() + Duration::from_secs(s)
}

#[tokio::test]
async fn found_symbol_is_returned_keyed_by_lower_case() {
    let fake = FakeStooq::start().await;
    let client = common::stooq_client(&fake, |_| {});

    let rows = client.fetch(&[sym("AAPL.US")], in_secs(5)).await.unwrap();

    let quote = rows["aapl.us"].as_ref().unwrap();
    assert_eq!(quote.close, 183.05);
    assert_eq!(fake.hits(), 1);
}

#[tokio::test]
async fn several_symbols_go_in_one_request() {
    let fake = FakeStooq::start().await;
    let client = common::stooq_client(&fake, |_| {});

    let rows = client
        .fetch(&[sym("aapl.us"), sym("msft.us"), sym("^spx")], in_secs(5))
        .await
        .unwrap();

    assert_eq!(rows.len(), 3);
    assert_eq!(fake.requests(), vec![vec!["aapl.us", "msft.us", "^spx"]]);
}

#[tokio::test]
async fn server_error_then_success_is_retried() {
    let fake = FakeStooq::start().await;
    fake.fail_next(1, Mode::Status(503));
    let client = common::stooq_client(&fake, |_| {});

    let rows = client.fetch(&[sym("aapl.us")], in_secs(5)).await.unwrap();

    assert!(rows["aapl.us"].is_ok());
    assert_eq!(fake.hits(), 2);
}

#[tokio::test]
async fn dropped_connection_is_retried() {
    let fake = FakeStooq::start().await;
    fake.fail_next(2, Mode::Drop);
    let client = common::stooq_client(&fake, |_| {});

    let rows = client.fetch(&[sym("aapl.us")], in_secs(5)).await.unwrap();

    assert!(rows["aapl.us"].is_ok());
    assert_eq!(fake.hits(), 3);
}

#[tokio::test]
async fn persistent_server_error_gives_up_after_max_retries() {
    let fake = FakeStooq::start().await;
    fake.set_mode(Mode::Status(500));
    let client = common::stooq_client(&fake, |s| s.stooq_max_retries = 2);

    let err = client
        .fetch(&[sym("aapl.us")], in_secs(5))
        .await
        .unwrap_err();

    assert_eq!(err.code, ErrorCode::UpstreamUnavailable);
    assert!(err.message.contains("500"), "{}", err.message);
    assert_eq!(fake.hits(), 3);
}

#[tokio::test]
async fn daily_limit_is_not_retried() {
    let fake = FakeStooq::start().await;
    fake.set_mode(Mode::DailyLimit);
    let client = common::stooq_client(&fake, |_| {});

    let err = client
        .fetch(&[sym("aapl.us")], in_secs(5))
        .await
        .unwrap_err();

    assert_eq!(err.code, ErrorCode::UpstreamRejected);
    assert!(err.message.contains("daily hits limit"), "{}", err.message);
    assert_eq!(fake.hits(), 1);
}

#[tokio::test]
async fn non_data_answers_are_not_retried_and_keep_their_own_error() {
    let cases = [
        (Mode::ApiKeyPage, ErrorCode::UpstreamRejected, "API key"),
        (
            Mode::Challenge,
            ErrorCode::UpstreamRejected,
            "browser challenge",
        ),
        (Mode::OtherHtml, ErrorCode::UpstreamUnavailable, "HTML"),
        (Mode::Empty, ErrorCode::UpstreamUnavailable, "empty"),
        (Mode::Truncated, ErrorCode::UpstreamUnavailable, "truncated"),
    ];
    for (mode, code, phrase) in cases {
        let fake = FakeStooq::start().await;
        fake.set_mode(mode);
        let client = common::stooq_client(&fake, |_| {});

        let err = client
            .fetch(&[sym("aapl.us")], in_secs(5))
            .await
            .unwrap_err();

        assert_eq!(err.code, code, "{mode:?}");
        assert!(err.message.contains(phrase), "{mode:?}: {}", err.message);
        assert_eq!(fake.hits(), 1, "{mode:?}");
    }
}

#[tokio::test]
async fn client_error_status_is_a_rejection_not_retried() {
    let fake = FakeStooq::start().await;
    fake.set_mode(Mode::Status(404));
    let client = common::stooq_client(&fake, |_| {});

    let err = client
        .fetch(&[sym("aapl.us")], in_secs(5))
        .await
        .unwrap_err();

    assert_eq!(err.code, ErrorCode::UpstreamRejected);
    assert_eq!(fake.hits(), 1);
}

#[tokio::test]
async fn slow_answer_beyond_the_deadline_is_a_timeout() {
    let fake = FakeStooq::start().await;
    fake.set_latency(Duration::from_secs(3));
    let client = common::stooq_client(&fake, |_| {});
    let started = Instant::now();

    let err = client
        .fetch(&[sym("aapl.us")], started + Duration::from_millis(300))
        .await
        .unwrap_err();

    assert_eq!(err.code, ErrorCode::Timeout);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn slow_attempts_are_cut_at_the_attempt_timeout_and_retried() {
    let fake = FakeStooq::start().await;
    fake.set_latency(Duration::from_millis(600));
    let client = common::stooq_client(&fake, |s| {
        s.stooq_timeout = Duration::from_millis(150);
        s.stooq_max_retries = 2;
    });

    let err = client
        .fetch(&[sym("aapl.us")], in_secs(5))
        .await
        .unwrap_err();

    assert_eq!(err.code, ErrorCode::UpstreamUnavailable);
    assert!(
        err.message.contains("did not answer within"),
        "{}",
        err.message
    );
    assert_eq!(fake.hits(), 3);
}

#[tokio::test]
async fn retries_stop_at_the_deadline() {
    let fake = FakeStooq::start().await;
    fake.set_mode(Mode::Status(503));
    let client = common::stooq_client(&fake, |s| s.stooq_max_retries = 50);
    let started = Instant::now();

    let err = client
        .fetch(&[sym("aapl.us")], started + Duration::from_millis(400))
        .await
        .unwrap_err();

    assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(
        err.code,
        ErrorCode::UpstreamUnavailable | ErrorCode::Timeout
    ));
    assert!(fake.hits() < 50);
}

#[tokio::test]
async fn api_key_is_sent_when_configured() {
    let fake = FakeStooq::start_with(FakeConfig {
        api_key: Some("k3y".into()),
        ..FakeConfig::default()
    })
    .await;
    let client = common::stooq_client(&fake, |s| s.stooq_api_key = Some("k3y".into()));

    let rows = client.fetch(&[sym("aapl.us")], in_secs(5)).await.unwrap();

    assert!(rows["aapl.us"].is_ok());
}

#[tokio::test]
async fn missing_api_key_is_reported_as_such() {
    let fake = FakeStooq::start_with(FakeConfig {
        api_key: Some("k3y".into()),
        ..FakeConfig::default()
    })
    .await;
    let client = common::stooq_client(&fake, |_| {});

    let err = client
        .fetch(&[sym("aapl.us")], in_secs(5))
        .await
        .unwrap_err();

    assert_eq!(err.code, ErrorCode::UpstreamRejected);
    assert!(err.message.contains("STOOQ_API_KEY"), "{}", err.message);
}

#[tokio::test]
async fn errors_never_contain_the_api_key_or_url() {
    let (_refusing, addr) = common::refusing_addr();
    let url = format!("http://{addr}");
    let mut settings = quote_service::Settings::for_http_tests(&url);
    settings.stooq_api_key = Some("sup3rs3cret".into());
    settings.stooq_max_retries = 1;
    let client = quote_service::upstream::StooqClient::new(
        &settings,
        quote_service::metrics::Metrics::new(),
    )
    .unwrap();

    let err = client
        .fetch(&[sym("aapl.us")], in_secs(5))
        .await
        .unwrap_err();

    assert_eq!(err.code, ErrorCode::UpstreamUnavailable);
    assert!(!err.message.contains("sup3rs3cret"), "{}", err.message);
    assert!(!err.message.contains("apikey"), "{}", err.message);
    assert!(err.message.contains("connect"), "{}", err.message);
}
