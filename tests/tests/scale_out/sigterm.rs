//! A real SIGTERM to an api_service process under load: the signal handler is installed, the
//! requests it is serving finish (and are recorded), and the process exits 0.

use std::time::{Duration, Instant};

use tests::ledger::{Call, Ledger, Outcome};
use tests::load::{Load, summary, wait_until};

use crate::{CLIENT_TIMEOUT, Cluster, PAUSE, SYMBOLS, assert_rows_match, hangs};

const CLIENTS: usize = 4;
/// Keeps every client's call inside the API (waiting for its quote) for a long while.
const FEED_LATENCY: Duration = Duration::from_millis(800);
/// A call started this long before the signal has surely reached the server: it must be
/// served. One started closer to it may have raced the closing listener.
const ON_THE_WIRE: Duration = Duration::from_millis(150);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_to_an_api_process_under_load_finishes_in_flight_requests_and_exits_zero() {
    // Arrange
    // No reuse of landed quotes: every call waits for its own RPC (and the feed's latency).
    let Some(cluster) = Cluster::start(&[("QUOTE_REUSE_WINDOW", "0")]).await else {
        return;
    };
    cluster.stooq.set_latency(FEED_LATENCY);
    let _worker = cluster.worker("worker").await;
    let mut api = cluster.api("api").await;
    api.wait_ready(&cluster.http).await;
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        clients.push(cluster.client(&api, &format!("user{i}")).await);
    }
    let ledger = Ledger::with_client_timeout(CLIENT_TIMEOUT);
    let load = Load::start_at(
        &cluster.http,
        &format!("http://{}", api.addr),
        &clients,
        &SYMBOLS,
        PAUSE,
        ledger,
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The clients run in step: signal just after a fetch began, when their calls are all
    // inside the API waiting for quotes, and have been for ON_THE_WIRE.
    let hits = cluster.stooq.hits();
    wait_until(Duration::from_secs(5), || async {
        cluster.stooq.hits() > hits
    })
    .await
    .expect("the feed is asked for quotes");
    tokio::time::sleep(ON_THE_WIRE).await;

    // Act: SIGTERM; the clients send nothing new from then on.
    let signalled = Instant::now();
    api.sigterm();
    let calls = load.stop().await;
    let exit = api.wait_exit(Duration::from_secs(8)).await;
    let exit_took = signalled.elapsed();

    // Assert
    let status = exit.unwrap_or_else(|| panic!("api still running {exit_took:?} after SIGTERM"));
    assert_eq!(status.code(), Some(0), "api after SIGTERM: {status}");
    let hung = hangs(&calls);
    assert!(
        hung.is_empty(),
        "{} call(s) hung: {:?}",
        hung.len(),
        &hung[..hung.len().min(3)]
    );
    let in_flight: Vec<&Call> = calls
        .iter()
        .filter(|c| c.started + ON_THE_WIRE <= signalled && c.ended() > signalled)
        .collect();
    assert!(
        in_flight.len() >= CLIENTS / 2,
        "only {} call(s) in flight at the signal: nothing was tested",
        in_flight.len()
    );
    assert!(
        in_flight.iter().all(|c| c.status() == Some(200)),
        "calls in flight at SIGTERM were not all served: {}",
        summary(&in_flight)
    );
    let before: Vec<&Call> = calls.iter().filter(|c| c.ended() <= signalled).collect();
    assert!(
        before.iter().all(|c| c.status() == Some(200)),
        "before the signal: {}",
        summary(&before)
    );
    // Calls that raced the signal got an answer or never reached the server; a call cut off
    // mid-way may have been recorded.
    let raced: Vec<&Call> = calls
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::Lost(_)))
        .collect();
    eprintln!(
        "sigterm: {} call(s) in flight finished, {} raced the signal, exit 0 after {exit_took:?}",
        in_flight.len(),
        raced.len()
    );
    assert_rows_match(cluster.store.as_ref(), &calls, &raced).await;
}
