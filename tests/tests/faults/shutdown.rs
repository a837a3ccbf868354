//! Graceful shutdown (what SIGTERM triggers: the services' shutdown token) under load.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tests::QuoteHandle;
use tests::ledger::{Client, Outcome};
use tests::load::{Load, summary, wait_until};
use tests::stack;

use crate::SYMBOLS;

/// Upstream latency that keeps requests in flight when the shutdown begins.
const IN_FLIGHT: Duration = Duration::from_millis(250);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_shutdown_under_load_completes_accepted_requests_and_exits_within_the_grace() {
    let Some(mut app) = stack().stooq_latency(IN_FLIGHT).spawn().await else {
        return;
    };
    let grace = Duration::from_secs(5); // api Settings::for_tests
    let clients = Client::many(&app, "client", 6).await;
    let load = Load::start(&app, &clients, &SYMBOLS, Duration::ZERO);
    let ledger = load.ledger.clone();
    tokio::time::sleep(Duration::from_secs(1)).await;

    let signalled = Instant::now();
    let exited = app.stop_api_within(grace + Duration::from_secs(2)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let calls = load.stop().await;

    let took = exited.expect("the API exits cleanly after the shutdown signal");
    eprintln!(
        "API exited {took:?} after the signal: {}",
        summary(&calls.iter().collect::<Vec<_>>())
    );
    assert!(took < grace, "exit took {took:?}, grace is {grace:?}");
    let answered: Vec<_> = calls.iter().filter(|c| c.status().is_some()).collect();
    assert!(
        answered.iter().all(|c| c.status() == Some(200)),
        "every request the API accepted completed with 200: {}",
        summary(&answered)
    );
    let in_flight = calls
        .iter()
        .filter(|c| c.started < signalled && c.ended() > signalled)
        .count();
    assert!(in_flight > 0, "some calls were in flight at the signal");
    for call in calls.iter().filter(|c| c.started >= signalled + took) {
        assert!(
            matches!(call.outcome, Outcome::Refused(_)),
            "after the exit connections are refused, not answered: {:?}",
            call.outcome
        );
    }
    // The API closed its store on the way out: read the database with a fresh one.
    let store = api_service::store::connect(app.database_url(), 1)
        .await
        .unwrap();
    ledger.assert_consistent(store.as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopped_under_load_finishes_its_requests_while_its_peer_takes_over() {
    let Some(mut app) = stack().stooq_latency(IN_FLIGHT).spawn().await else {
        return;
    };
    let grace = app.quote_settings.shutdown_grace;
    let peer = QuoteHandle::spawn(app.quote_settings.clone()).await;
    let peer_ready = wait_until(Duration::from_secs(10), || async {
        app.client
            .get(format!("http://127.0.0.1:{}/readyz", peer.port))
            .send()
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK)
    })
    .await;
    assert!(peer_ready.is_some(), "second worker consuming");
    let clients = Client::many(&app, "client", 6).await;
    let load = Load::start(&app, &clients, &SYMBOLS, Duration::ZERO);
    let ledger = load.ledger.clone();
    tokio::time::sleep(Duration::from_secs(1)).await;

    let first = app.quote.take().expect("first worker");
    let exited = first.stop_within(grace + Duration::from_secs(2)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let calls = load.stop().await;

    let took = exited.expect("the stopped worker exits cleanly");
    eprintln!("worker exited {took:?} after the signal");
    assert!(
        took <= grace + Duration::from_millis(500),
        "exit took {took:?}, grace is {grace:?}"
    );
    let all: Vec<_> = calls.iter().collect();
    assert!(
        calls.iter().all(|c| c.status() == Some(200)),
        "stopping one of two workers costs no request: {}",
        summary(&all)
    );
    ledger.assert_consistent(app.store.as_ref()).await;
    peer.stop().await;
}
