//! The quote worker disappearing under load, and what it does with the requests that waited
//! for it in the queue.

use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use reqwest::StatusCode;
use shared::QuoteRequest;
use tests::ledger::Client;
use tests::load::{Load, first_ok_after, summary, wait_until, within};
use tests::{AMQP_URL, stack};

use crate::{CLIENTS, PAUSE, SYMBOLS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_worker_means_503_or_504_and_a_restarted_one_serves_again() {
    let Some(mut app) = stack().spawn().await else {
        return;
    };
    let clients = Client::many(&app, "client", CLIENTS).await;
    let load = Load::start(&app, &clients, &SYMBOLS, PAUSE);
    let ledger = load.ledger.clone();
    tokio::time::sleep(Duration::from_secs(1)).await;

    let stopping = Instant::now();
    app.stop_quote_service().await;
    let gone = Instant::now();
    // Calls racing the API's consumer poll (every 500 ms) may still be published; each one
    // gets its own symbol so we can tell afterwards whether anything fetched it.
    let raced: Vec<_> = futures::future::join_all((0..8).map(|i| {
        let (ledger, app, client) = (&ledger, &app, &clients[0]);
        async move {
            let symbol = format!("gone{i}.us");
            ledger
                .stock(&app.client, &app.address, client, &symbol)
                .await
        }
    }))
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let ready_while_gone = app.get("/readyz").await.status();
    tokio::time::sleep(Duration::from_millis(1000)).await;

    let restarting = Instant::now();
    app.restart_quote_service().await;
    let recovered = wait_until(Duration::from_secs(10), || async {
        app.get("/readyz").await.status() == StatusCode::OK
    })
    .await;
    let recovered_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let calls = load.stop().await;

    assert_eq!(ready_while_gone, StatusCode::SERVICE_UNAVAILABLE);
    let outage: Vec<_> = calls
        .iter()
        .filter(|c| c.ended() >= stopping && c.started < restarting)
        .collect();
    for call in &outage {
        assert!(
            matches!(call.status(), Some(200 | 503 | 504)),
            "while the worker was gone: {}",
            summary(&outage)
        );
    }
    // Once the API has seen the queue without consumers, refusals are immediate.
    let settled = within(&calls, gone + Duration::from_secs(1), restarting);
    assert!(!settled.is_empty());
    for call in &settled {
        assert_eq!(call.status(), Some(503), "{}", summary(&settled));
        assert!(call.took < Duration::from_secs(1), "took {:?}", call.took);
    }
    let recovered = recovered.expect("ready within 10 s of the restart");
    let first_ok = first_ok_after(&calls, restarting).expect("a 200 after the restart");
    eprintln!("ready {recovered:?}, first 200 {first_ok:?} after the restart");
    let after = within(
        &calls,
        recovered_at + Duration::from_millis(500),
        Instant::now(),
    );
    assert!(
        !after.is_empty() && after.iter().all(|c| c.status() == Some(200)),
        "{}",
        summary(&after)
    );

    // A call that timed out (504) while nobody consumed was queued; its deadline has passed,
    // so the restarted worker must not have fetched it.
    let queued: Vec<_> = raced.iter().filter(|c| c.status() == Some(504)).collect();
    eprintln!(
        "{} of {} calls raced the consumer poll and were queued",
        queued.len(),
        raced.len()
    );
    for call in &raced {
        assert!(
            matches!(call.status(), Some(503 | 504)),
            "{:?}",
            call.outcome
        );
    }
    for call in queued {
        assert_eq!(
            app.stooq.symbol_hits(&call.symbol),
            0,
            "{} fetched",
            call.symbol
        );
    }
    ledger.assert_consistent(app.store.as_ref()).await;
}

/// Requests published straight onto the queue while no worker runs (no broker-side TTL, so
/// only the worker's own deadline check stands between them and the upstream).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_whose_deadline_passed_in_the_queue_are_never_fetched_upstream() {
    let Some(mut app) = stack().spawn().await else {
        return;
    };
    app.stop_quote_service().await;

    let connection = Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let replies = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let reply_queue = replies.name().to_string();
    let publish = |symbol: &str, timeout: Duration| {
        let request = QuoteRequest::new(symbol, Some(format!("req-{symbol}")), timeout);
        let body = serde_json::to_vec(&request).unwrap();
        let properties = BasicProperties::default()
            .with_reply_to(ShortString::from(reply_queue.as_str()))
            .with_correlation_id(ShortString::from(symbol))
            .with_content_type("application/json".into());
        let channel = channel.clone();
        let queue = app.queue.clone();
        async move {
            channel
                .basic_publish(
                    "".into(),
                    queue.as_str().into(),
                    BasicPublishOptions::default(),
                    &body,
                    properties,
                )
                .await
                .unwrap()
                .await
                .unwrap();
        }
    };
    let late: Vec<String> = (0..5).map(|i| format!("late{i}.us")).collect();
    for symbol in &late {
        publish(symbol, Duration::from_millis(300)).await;
    }
    publish("ontime.us", Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    app.restart_quote_service().await;
    let mut consumer = channel
        .basic_consume(
            reply_queue.as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut answered = Vec::new();
    let collect_until = Instant::now() + Duration::from_secs(10);
    // The on-time request sits behind the late ones in the queue; once it is answered, give
    // any (wrong) late answers a moment to show up too.
    let mut quiet_after: Option<Instant> = None;
    loop {
        let until = quiet_after.unwrap_or(collect_until).min(collect_until);
        match tokio::time::timeout_at(until.into(), consumer.next()).await {
            Ok(Some(Ok(delivery))) => {
                let id = delivery
                    .properties
                    .correlation_id()
                    .as_ref()
                    .map(|c| c.to_string())
                    .unwrap_or_default();
                if id == "ontime.us" {
                    quiet_after = Some(Instant::now() + Duration::from_millis(500));
                }
                answered.push(id);
            }
            Ok(other) => panic!("reply consumer ended: {other:?}"),
            Err(_) => break,
        }
    }

    assert_eq!(
        answered,
        ["ontime.us"],
        "only the request still awaited is answered"
    );
    assert_eq!(app.stooq.symbol_hits("ontime.us"), 1);
    for symbol in &late {
        assert_eq!(app.stooq.symbol_hits(symbol), 0, "{symbol} was fetched");
    }
    let queue = channel
        .queue_declare(
            app.queue.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(queue.message_count(), 0, "the late requests were consumed");
    let _ = connection.close(200, "done".into()).await;
}
