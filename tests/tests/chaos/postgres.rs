//! PostgreSQL stopped and started under load.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tests::faults::{self, PostgresOutage};
use tests::ledger::wait_for_store;
use tests::load::{Load, first_ok_after, summary, wait_until, within};
use tests::{Backend, stack};

use crate::{PAUSE, RECOVERY_LIMIT, SYMBOLS, api_ready, clients};

/// The store's pool acquire timeout (2 s) bounds how long a call waits for a dead database,
/// plus slack for a loaded machine.
const DB_OUTAGE_ANSWER_LIMIT: Duration = Duration::from_millis(3500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_gives_503s_and_the_api_recovers_by_itself() {
    let _serial = crate::serial().await;
    if !faults::postgres_controllable() {
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
    let outage = tokio::task::spawn_blocking(PostgresOutage::begin)
        .await
        .unwrap();
    let down = Instant::now();
    eprintln!("stopping PostgreSQL took {:?}", down - stopping);
    let noticed = wait_until(Duration::from_secs(4), || async {
        api_ready(&app).await == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let up = tokio::task::spawn_blocking(move || outage.end())
        .await
        .unwrap();
    eprintln!("PostgreSQL was down for {:?}", up - down);
    let recovered = wait_until(RECOVERY_LIMIT, || async {
        api_ready(&app).await == StatusCode::OK
    })
    .await;
    let recovered_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let calls = load.stop().await;

    assert!(noticed.is_some(), "/readyz reports the database outage");
    assert!(recovered.is_some(), "ready again by itself");
    let recovered = recovered_at.duration_since(up);
    let first_ok = first_ok_after(&calls, up).expect("a 200 after the database's return");
    eprintln!("ready {recovered:?} and first 200 {first_ok:?} after the start was issued");
    assert!(
        recovered <= RECOVERY_LIMIT,
        "ready only {recovered:?} after the return"
    );
    assert!(first_ok <= RECOVERY_LIMIT);

    let outage_calls: Vec<_> = calls
        .iter()
        .filter(|c| c.ended() >= stopping && c.started <= up)
        .collect();
    for call in &outage_calls {
        assert!(
            matches!(call.status(), Some(200 | 503)),
            "during the outage a call got {:?}: {}",
            call.outcome,
            summary(&outage_calls)
        );
        assert!(
            call.took < DB_OUTAGE_ANSWER_LIMIT,
            "a call took {:?} during the outage",
            call.took
        );
    }
    let while_down = within(&calls, down, up);
    assert!(!while_down.is_empty());
    assert!(
        while_down.iter().all(|c| c.status() == Some(503)),
        "while the database is down every call is a 503: {}",
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
    wait_for_store(app.store.as_ref(), RECOVERY_LIMIT).await;
    ledger.assert_consistent(app.store.as_ref()).await;
}
