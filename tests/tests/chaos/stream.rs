//! Live quotes across a broker restart: a stream stays open through the outage and, once
//! RabbitMQ is back, delivers the change made while it was down, once.

use std::time::{Duration, Instant};

use api_service::store::Role;
use tests::faults::{self, BrokerOutage};
use tests::{sse, stack};

use crate::RECOVERY_LIMIT;

/// The worker's WATCH_REFRESH in the test settings.
const REFRESH: Duration = Duration::from_millis(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_resumes_streams_without_duplicates() {
    let _serial = crate::serial().await;
    if !tests::rabbitmq_or_skip().await || !faults::broker_controllable() {
        return;
    }
    let Some(app) = stack().spawn().await else {
        return;
    };
    let token = app.token_for("alice", Role::User).await;
    let mut stream = sse::open(&app.client, &app.address, &token, "aapl.us", None)
        .await
        .expect("a stream");
    let before = stream
        .next_event(Duration::from_secs(5))
        .await
        .expect("the first quote")
        .close();
    let hits = app.stooq.symbol_hits("aapl.us");
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.stooq.symbol_hits("aapl.us") < hits + 2 {
        assert!(Instant::now() < deadline, "aapl.us is never refreshed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let outage = tokio::task::spawn_blocking(BrokerOutage::begin)
        .await
        .unwrap();
    app.stooq.advance_prices();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let up = tokio::task::spawn_blocking(move || outage.end())
        .await
        .unwrap();

    let change = stream
        .next_event(RECOVERY_LIMIT)
        .await
        .expect("the change made during the outage arrives once the broker is back");
    eprintln!("change delivered {:?} after start_app", up.elapsed());
    assert_eq!(change.event, "quote");
    assert_ne!(change.close(), before);
    assert!(
        stream.events_within(REFRESH * 5).await.is_empty(),
        "and only once"
    );
}
