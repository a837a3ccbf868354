//! The stooq client against the fake feed: what is retried, what is not, and deadlines; and
//! against small stand-ins that redirect.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::IntoResponse;
use fake_stooq::{FakeConfig, FakeStooq, Mode};
use quote_service::metrics::Metrics;
use quote_service::upstream::{MAX_REDIRECTS, StooqClient};
use shared::{ErrorCode, QuoteError, Symbol};
use tokio::time::Instant;

fn sym(s: &str) -> Symbol {
    Symbol::parse(s).unwrap()
}

fn in_secs(s: u64) -> Instant {
    Instant::now() + Duration::from_secs(s)
}

/// Fetches `aapl.us` with five seconds to spare, in a test where that fetch must fail.
async fn failed_fetch(client: &StooqClient) -> QuoteError {
    client
        .fetch(&[sym("aapl.us")], in_secs(5))
        .await
        .unwrap_err()
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

    let err = failed_fetch(&client).await;

    assert_eq!(err.code, ErrorCode::UpstreamUnavailable);
    assert!(err.message.contains("500"), "{}", err.message);
    assert_eq!(fake.hits(), 3);
}

#[tokio::test]
async fn daily_limit_is_not_retried() {
    let fake = FakeStooq::start().await;
    fake.set_mode(Mode::DailyLimit);
    let client = common::stooq_client(&fake, |_| {});

    let err = failed_fetch(&client).await;

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

        let err = failed_fetch(&client).await;

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

    let err = failed_fetch(&client).await;

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

    let err = failed_fetch(&client).await;

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

    let err = failed_fetch(&client).await;

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

    let err = failed_fetch(&client).await;

    assert_eq!(err.code, ErrorCode::UpstreamUnavailable);
    assert!(!err.message.contains("sup3rs3cret"), "{}", err.message);
    assert!(!err.message.contains("apikey"), "{}", err.message);
    assert!(err.message.contains("connect"), "{}", err.message);
}

// --- redirects: the API key is in the query, so it must never travel to another host -----

/// A stand-in for stooq's `/q/l/` that answers every request with a redirect to
/// `target(path_and_query)`, counting its hits.
async fn redirecting_stooq(
    target: impl Fn(&str) -> String + Clone + Send + Sync + 'static,
) -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let router = Router::new().fallback(move |uri: Uri| {
        counted.fetch_add(1, Ordering::SeqCst);
        let location = target(uri.path_and_query().map_or("/", |pq| pq.as_str()));
        async move { (StatusCode::FOUND, [(header::LOCATION, location)]) }
    });
    (format!("http://{}", common::serve(router).await), hits)
}

/// A host that answers the feed's CSV for AAPL.US, counting its hits.
async fn other_host() -> (SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let router = Router::new().fallback(move || {
        counted.fetch_add(1, Ordering::SeqCst);
        async { fake_stooq::feed::csv_body(&["aapl.us".to_owned()], true, &[]) }
    });
    (common::serve(router).await, hits)
}

fn client_with_key(stooq_url: &str) -> StooqClient {
    let mut settings = quote_service::Settings::for_http_tests(stooq_url);
    settings.stooq_api_key = Some("sup3rs3cret".into());
    StooqClient::new(&settings, Metrics::new()).unwrap()
}

#[tokio::test]
async fn a_redirect_to_another_host_is_not_followed() {
    let (elsewhere, elsewhere_hits) = other_host().await;
    let (stooq, stooq_hits) =
        redirecting_stooq(move |pq| format!("http://localhost:{}{pq}", elsewhere.port())).await;
    let client = client_with_key(&stooq);

    let err = failed_fetch(&client).await;

    assert_eq!(err.code, ErrorCode::UpstreamUnavailable);
    assert!(err.message.contains("another host"), "{}", err.message);
    assert!(!err.message.contains("sup3rs3cret"), "{}", err.message);
    assert_eq!(elsewhere_hits.load(Ordering::SeqCst), 0, "the key left");
    assert_eq!(stooq_hits.load(Ordering::SeqCst), 1, "not retried");
}

#[tokio::test]
async fn a_redirect_to_another_port_of_the_same_host_is_not_followed() {
    let (elsewhere, elsewhere_hits) = other_host().await;
    let (stooq, _) = redirecting_stooq(move |pq| format!("http://{elsewhere}{pq}")).await;
    let client = client_with_key(&stooq);

    let err = failed_fetch(&client).await;

    assert!(err.message.contains("another host"), "{}", err.message);
    assert_eq!(elsewhere_hits.load(Ordering::SeqCst), 0, "the key left");
}

#[tokio::test]
async fn a_redirect_within_stooq_is_followed_without_a_referer() {
    // Each request's path and query, and its Referer if any.
    type Seen = Vec<(String, Option<String>)>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let log = seen.clone();
    let router = Router::new().fallback(move |uri: Uri, headers: HeaderMap| {
        let log = log.clone();
        async move {
            let referer = headers
                .get(header::REFERER)
                .map(|v| v.to_str().unwrap_or("?").to_owned());
            log.lock().unwrap().push((uri.to_string(), referer));
            let query = uri.query().unwrap_or_default();
            if uri.path().starts_with("/moved") {
                fake_stooq::feed::csv_body(&["aapl.us".to_owned()], true, &[]).into_response()
            } else {
                let location = format!("/moved{}?{query}", uri.path());
                (
                    StatusCode::MOVED_PERMANENTLY,
                    [(header::LOCATION, location)],
                )
                    .into_response()
            }
        }
    });
    let stooq = format!("http://{}", common::serve(router).await);
    let client = client_with_key(&stooq);

    let rows = client.fetch(&[sym("aapl.us")], in_secs(5)).await.unwrap();

    assert_eq!(rows["aapl.us"].as_ref().unwrap().close, 183.05);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen[1].0.starts_with("/moved/q/l/"), "{seen:?}");
    assert!(seen[1].0.contains("apikey=sup3rs3cret"), "{seen:?}");
    assert!(
        seen.iter().all(|(_, referer)| referer.is_none()),
        "a Referer was sent: {seen:?}"
    );
}

#[tokio::test]
async fn a_redirect_loop_within_stooq_stops_after_three_hops_and_is_not_retried() {
    let (stooq, hits) = redirecting_stooq(|pq| format!("/again{pq}")).await;
    let client = client_with_key(&stooq);

    let err = failed_fetch(&client).await;

    assert_eq!(err.code, ErrorCode::UpstreamUnavailable);
    assert!(err.message.contains("redirect"), "{}", err.message);
    assert!(!err.message.contains("sup3rs3cret"), "{}", err.message);
    assert_eq!(hits.load(Ordering::SeqCst), 1 + MAX_REDIRECTS);
}
