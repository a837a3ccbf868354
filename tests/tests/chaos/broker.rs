//! RabbitMQ going away under load: connections force-closed, the broker application stopped.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tests::faults::{self, BrokerOutage};
use tests::load::{Load, first_ok_after, summary, wait_until, within};
use tests::{Backend, stack};

use crate::{PAUSE, RECOVERY_LIMIT, SYMBOLS, api_ready, clients, worker_ready};

/// Statuses a `/stock` call may get while the broker misbehaves: served, refused at once
/// (503), or (for a call caught mid-flight) timed out (504). Never 500 or 502.
const OUTAGE_STATUSES: [u16; 3] = [200, 503, 504];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_services_recover_after_the_broker_force_closes_every_connection() {
    let _serial = crate::serial().await;
    if !tests::rabbitmq_or_skip().await || !faults::broker_controllable() {
        return;
    }
    let Some(app) = stack().spawn().await else {
        return;
    };
    let clients = clients(&app).await;
    let load = Load::start(&app, &clients, &SYMBOLS, PAUSE);
    let ledger = load.ledger.clone();
    tokio::time::sleep(Duration::from_secs(1)).await;

    let cut = Instant::now();
    tokio::task::spawn_blocking(faults::close_all_broker_connections)
        .await
        .unwrap();
    let recovered = wait_until(RECOVERY_LIMIT, || async {
        api_ready(&app).await == StatusCode::OK && worker_ready(&app).await == StatusCode::OK
    })
    .await;
    let recovered_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let calls = load.stop().await;

    let recovered = recovered.expect("both services ready again within 10 s of the cut");
    eprintln!("ready again {recovered:?} after the cut");
    let during: Vec<_> = calls.iter().filter(|c| c.ended() >= cut).collect();
    for call in &during {
        let status = call.status().unwrap_or(0);
        assert!(
            OUTAGE_STATUSES.contains(&status),
            "during the cut a call got {:?}: {}",
            call.outcome,
            summary(&during)
        );
        assert!(
            call.took < Duration::from_secs(3),
            "a call hung for {:?} (the RPC timeout is 2 s)",
            call.took
        );
    }
    let after = within(
        &calls,
        recovered_at + Duration::from_millis(500),
        Instant::now(),
    );
    assert!(!after.is_empty());
    assert!(
        after.iter().all(|c| c.status() == Some(200)),
        "once ready, every call is served: {}",
        summary(&after)
    );
    ledger.assert_consistent(app.store.as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_broker_gives_fast_503s_and_both_services_come_back_by_themselves() {
    let _serial = crate::serial().await;
    if !tests::rabbitmq_or_skip().await || !faults::broker_controllable() {
        return;
    }
    let Some(app) = stack().backend(Backend::Postgres).spawn().await else {
        return;
    };
    let clients = clients(&app).await;
    let load = Load::start(&app, &clients, &SYMBOLS, PAUSE);
    let ledger = load.ledger.clone();
    tokio::time::sleep(Duration::from_secs(1)).await;

    let stopping = Instant::now();
    let outage = tokio::task::spawn_blocking(BrokerOutage::begin)
        .await
        .unwrap();
    let down = Instant::now();
    eprintln!("stop_app took {:?}", down - stopping);
    // Readiness reflects the outage on both services.
    let noticed = wait_until(Duration::from_secs(2), || async {
        api_ready(&app).await == StatusCode::SERVICE_UNAVAILABLE
            && worker_ready(&app).await == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let still_down = api_ready(&app).await == StatusCode::SERVICE_UNAVAILABLE
        && worker_ready(&app).await == StatusCode::SERVICE_UNAVAILABLE;
    let up = tokio::task::spawn_blocking(move || outage.end())
        .await
        .unwrap();
    eprintln!("the broker was down for {:?}", up - down);
    let recovered = wait_until(RECOVERY_LIMIT, || async {
        api_ready(&app).await == StatusCode::OK && worker_ready(&app).await == StatusCode::OK
    })
    .await;
    let recovered_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let calls = load.stop().await;

    assert!(
        noticed.is_some(),
        "both /readyz answer 503 within 2 s of the outage"
    );
    assert!(
        still_down,
        "and keep answering 503 while the broker is down"
    );
    assert!(
        recovered.is_some(),
        "both services ready again by themselves"
    );
    let recovered = recovered_at.duration_since(up);
    let first_ok = first_ok_after(&calls, up).expect("a 200 after the broker's return");
    eprintln!("ready {recovered:?} and first 200 {first_ok:?} after start_app was issued");
    assert!(
        recovered <= RECOVERY_LIMIT,
        "ready only {recovered:?} after the return"
    );
    assert!(
        first_ok <= RECOVERY_LIMIT,
        "first 200 only {first_ok:?} after the return"
    );

    // From the moment the broker starts going down until it is back, nothing hangs: every
    // call is answered within a second, and once it is down every answer is 503.
    let outage_calls: Vec<_> = calls
        .iter()
        .filter(|c| c.ended() >= stopping && c.started <= up)
        .collect();
    assert!(
        outage_calls.len() > 20,
        "load kept running: {}",
        outage_calls.len()
    );
    for call in &outage_calls {
        assert!(
            call.took < Duration::from_secs(1),
            "a call took {:?} during the outage: {:?}",
            call.took,
            call.outcome
        );
        assert!(
            OUTAGE_STATUSES.contains(&call.status().unwrap_or(0)),
            "{:?}",
            call.outcome
        );
    }
    // A quote that landed just before the broker went away may still answer its symbol for
    // QUOTE_REUSE_WINDOW (500 ms by default): a correct, fresh 200. After that, 503 only.
    let reuse_window = Duration::from_millis(500) + Duration::from_millis(200);
    if let Some(last_ok) = within(&calls, down, up)
        .iter()
        .filter(|c| c.status() == Some(200))
        .map(|c| c.ended())
        .max()
    {
        eprintln!(
            "last reused 200 {:?} after the broker was down",
            last_ok - down
        );
    }
    let while_down = within(&calls, down + reuse_window, up);
    assert!(!while_down.is_empty());
    assert!(
        while_down.iter().all(|c| c.status() == Some(503)),
        "while the broker is down (past the reuse window) every call is a 503: {}",
        summary(&while_down)
    );
    let after = within(
        &calls,
        recovered_at + Duration::from_millis(500),
        Instant::now(),
    );
    assert!(
        !after.is_empty() && after.iter().all(|c| c.status() == Some(200)),
        "once ready, every call is served: {}",
        summary(&after)
    );
    ledger.assert_consistent(app.store.as_ref()).await;
}
