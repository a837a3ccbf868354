//! Cache, coalescing and batching of the quote service against the fake feed.

mod common;

use std::sync::Arc;
use std::time::Duration;

use fake_stooq::{FakeStooq, Mode};
use quote_service::quotes::{Answer, QuoteService};
use shared::{ErrorCode, QuoteResult, Symbol};
use tokio::time::Instant;

fn sym(s: &str) -> Symbol {
    Symbol::parse(s).unwrap()
}

async fn get(service: &QuoteService, symbol: &str) -> Arc<Answer> {
    service
        .get(&sym(symbol), Instant::now() + Duration::from_secs(5))
        .await
}

fn code(answer: &Answer) -> Option<ErrorCode> {
    match &answer.reply().result {
        QuoteResult::Ok { .. } => None,
        QuoteResult::Error { error } => Some(error.code),
    }
}

#[tokio::test]
async fn repeated_request_within_ttl_is_served_from_cache() {
    let fake = FakeStooq::start().await;
    let service = common::quote_service(&fake, |_| {});

    let first = get(&service, "aapl.us").await;
    let second = get(&service, "aapl.us").await;

    assert_eq!(code(&first), None);
    assert_eq!(second.reply(), first.reply());
    assert_eq!(fake.hits(), 1);
}

#[tokio::test]
async fn expired_entry_is_fetched_again() {
    let fake = FakeStooq::start().await;
    let service = common::quote_service(&fake, |s| s.cache_ttl = Duration::from_millis(150));

    get(&service, "aapl.us").await;
    tokio::time::sleep(Duration::from_millis(250)).await;
    get(&service, "aapl.us").await;

    assert_eq!(fake.hits(), 2);
}

#[tokio::test]
async fn zero_ttl_disables_the_cache() {
    let fake = FakeStooq::start().await;
    let service = common::quote_service(&fake, |s| s.cache_ttl = Duration::ZERO);

    get(&service, "aapl.us").await;
    get(&service, "aapl.us").await;

    assert_eq!(fake.hits(), 2);
}

#[tokio::test]
async fn not_found_is_cached_for_the_shorter_ttl() {
    let fake = FakeStooq::start().await;
    let service = common::quote_service(&fake, |s| {
        s.cache_ttl = Duration::from_secs(10);
        s.not_found_cache_ttl = Duration::from_millis(200);
    });

    let first = get(&service, "nosuch.us").await;
    get(&service, "nosuch.us").await;
    let hits_while_cached = fake.hits();
    tokio::time::sleep(Duration::from_millis(300)).await;
    get(&service, "nosuch.us").await;

    assert_eq!(code(&first), Some(ErrorCode::NotFound));
    assert_eq!(hits_while_cached, 1);
    assert_eq!(fake.hits(), 2);
}

#[tokio::test]
async fn failures_are_not_cached() {
    let fake = FakeStooq::start().await;
    fake.fail_next(1, Mode::DailyLimit);
    let service = common::quote_service(&fake, |_| {});

    let failed = get(&service, "aapl.us").await;
    let retried = get(&service, "aapl.us").await;

    assert_eq!(code(&failed), Some(ErrorCode::UpstreamRejected));
    assert_eq!(code(&retried), None);
    assert_eq!(fake.hits(), 2);
}

#[tokio::test]
async fn concurrent_requests_for_one_symbol_cause_one_fetch() {
    let fake = FakeStooq::start().await;
    fake.set_latency(Duration::from_millis(200));
    let service = common::quote_service(&fake, |_| {});

    let answers = futures::future::join_all((0..100).map(|_| get(&service, "aapl.us"))).await;

    assert!(answers.iter().all(|a| code(a).is_none()));
    assert_eq!(fake.hits(), 1);
}

#[tokio::test]
async fn concurrent_requests_share_one_fetch_even_without_cache() {
    let fake = FakeStooq::start().await;
    fake.set_latency(Duration::from_millis(200));
    let service = common::quote_service(&fake, |s| s.cache_ttl = Duration::ZERO);

    let answers = futures::future::join_all((0..50).map(|_| get(&service, "msft.us"))).await;

    assert!(answers.iter().all(|a| code(a).is_none()));
    assert_eq!(fake.hits(), 1);
}

#[tokio::test]
async fn distinct_concurrent_symbols_are_batched() {
    let fake = FakeStooq::start().await;
    fake.set_latency(Duration::from_millis(50));
    let service = common::quote_service(&fake, |_| {});
    let symbols: Vec<String> = (0..20).map(|i| format!("sym{i}.us")).collect();

    let answers = futures::future::join_all(symbols.iter().map(|s| get(&service, s))).await;

    assert!(answers.iter().all(|a| code(a).is_none()));
    assert!(fake.hits() <= 3, "{:?}", fake.requests());
    assert_eq!(fake.symbols_requested(), 20);
}

#[tokio::test]
async fn batches_respect_the_batch_size() {
    let fake = FakeStooq::start().await;
    fake.set_latency(Duration::from_millis(50));
    let service = common::quote_service(&fake, |s| {
        s.batch_size = 5;
        s.upstream_concurrency = 1;
    });
    let symbols: Vec<String> = (0..20).map(|i| format!("sym{i}.us")).collect();

    futures::future::join_all(symbols.iter().map(|s| get(&service, s))).await;

    let requests = fake.requests();
    assert!(requests.iter().all(|r| r.len() <= 5), "{requests:?}");
    assert_eq!(requests.iter().map(Vec::len).sum::<usize>(), 20);
}

#[tokio::test]
async fn lone_request_is_not_held_back_by_the_batch_window() {
    let fake = FakeStooq::start().await;
    let service = common::quote_service(&fake, |s| s.batch_window = Duration::from_millis(2));
    get(&service, "warmup.us").await; // opens the pooled connection
    let started = Instant::now();

    let answer = get(&service, "aapl.us").await;

    assert_eq!(code(&answer), None);
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn batch_level_failure_reaches_every_waiter() {
    let fake = FakeStooq::start().await;
    fake.set_mode(Mode::DailyLimit);
    fake.set_latency(Duration::from_millis(30));
    let service = common::quote_service(&fake, |_| {});
    let symbols = ["a.us", "b.us", "c.us", "d.us", "e.us"];

    let answers = futures::future::join_all(symbols.iter().map(|s| get(&service, s))).await;

    assert!(
        answers
            .iter()
            .all(|a| code(a) == Some(ErrorCode::UpstreamRejected))
    );
}

#[tokio::test]
async fn symbol_missing_from_a_batch_answer_is_not_found() {
    // A feed that answers with AAPL only, whatever was asked.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/q/l/",
        axum::routing::get(|| async {
            "Symbol,Date,Time,Open,High,Low,Close,Volume,Name\r\n\
             AAPL.US,2024-05-10,22:00:09,184.9,185.09,182.13,183.05,50759496,APPLE\r\n"
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mut settings = quote_service::Settings::for_http_tests(&url);
    settings.batch_window = Duration::from_millis(20);
    let metrics = quote_service::metrics::Metrics::new();
    let client = quote_service::upstream::StooqClient::new(&settings, metrics.clone()).unwrap();
    let service = QuoteService::new(&settings, client, metrics);

    let (aapl, msft) = tokio::join!(get(&service, "aapl.us"), get(&service, "msft.us"));

    assert_eq!(code(&aapl), None);
    assert_eq!(code(&msft), Some(ErrorCode::NotFound));
}

#[tokio::test]
async fn waiter_gives_up_at_its_deadline_and_the_fetch_still_fills_the_cache() {
    let fake = FakeStooq::start().await;
    fake.set_latency(Duration::from_millis(400));
    let service = common::quote_service(&fake, |_| {});
    let symbol = sym("aapl.us");

    let early = service
        .get(&symbol, Instant::now() + Duration::from_millis(100))
        .await;
    let patient = get(&service, "aapl.us").await;

    assert_eq!(code(&early), Some(ErrorCode::Timeout));
    assert_eq!(code(&patient), None);
    assert_eq!(fake.hits(), 1);
}

#[tokio::test]
async fn cache_size_stays_bounded() {
    let fake = FakeStooq::start().await;
    let service = common::quote_service(&fake, |s| s.cache_max_entries = 10);

    for i in 0..50 {
        get(&service, &format!("s{i}.us")).await;
    }

    assert!(
        service.cached_symbols() <= 10,
        "{}",
        service.cached_symbols()
    );
}

#[tokio::test]
async fn cache_and_fetch_counters_are_recorded() {
    let fake = FakeStooq::start().await;
    fake.set_latency(Duration::from_millis(100));
    let settings = common::http_settings(&fake, |_| {});
    let metrics = quote_service::metrics::Metrics::new();
    let client = quote_service::upstream::StooqClient::new(&settings, metrics.clone()).unwrap();
    let service = QuoteService::new(&settings, client, metrics.clone());

    futures::future::join_all((0..3).map(|_| get(&service, "aapl.us"))).await;
    get(&service, "aapl.us").await;

    let text = metrics.render();
    assert!(text.contains("quote_cache_misses_total 1"), "{text}");
    assert!(text.contains("quote_coalesced_requests_total 2"), "{text}");
    assert!(text.contains("quote_cache_hits_total 1"), "{text}");
    assert!(text.contains("quote_upstream_fetches_total 1"), "{text}");
}
