//! Live quotes across processes: a SIGKILLed API instance cannot withdraw its interest, so
//! the workers must drop it on their own once its INTEREST_TTL runs out, and stop fetching
//! the symbols only it watched, while symbols another instance still watches go on.

use std::time::Duration;

use tests::processes::Process;
use tests::sse;

use crate::Cluster;

const INTEREST_TTL: &str = "1s";
/// The workers' WATCH_REFRESH in [`Cluster::worker`].
const REFRESH: Duration = Duration::from_millis(300);

fn base(api: &Process) -> String {
    format!("http://{}", api.addr)
}

/// Waits until the feed has been asked for `symbol` at least once more.
async fn refreshed(cluster: &Cluster, symbol: &str) {
    let before = cluster.stooq.symbol_hits(symbol);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while cluster.stooq.symbol_hits(symbol) <= before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{symbol} is not refreshed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_instances_symbols_stop_being_refreshed_once_its_interest_expires() {
    let Some(cluster) = Cluster::start(&[("INTEREST_TTL", INTEREST_TTL)]).await else {
        return;
    };
    let _worker = cluster.worker("worker").await;
    let mut doomed = cluster.api("api-doomed").await;
    let mut survivor = cluster.api("api-survivor").await;
    doomed.wait_ready(&cluster.http).await;
    survivor.wait_ready(&cluster.http).await;
    let alice = cluster.client(&doomed, "alice").await;
    let mut only_doomed = sse::open(
        &cluster.http,
        &base(&doomed),
        &alice.token,
        "alone.us,both.us",
        None,
    )
    .await
    .expect("a stream on the doomed instance");
    let mut on_survivor = sse::open(
        &cluster.http,
        &base(&survivor),
        &alice.token,
        "both.us",
        None,
    )
    .await
    .expect("a stream on the survivor");
    only_doomed
        .next_event(Duration::from_secs(5))
        .await
        .expect("first quote");
    on_survivor
        .next_event(Duration::from_secs(5))
        .await
        .expect("first quote");
    refreshed(&cluster, "alone.us").await;
    refreshed(&cluster, "both.us").await;

    doomed.kill_9();
    drop(only_doomed);
    // Its interest lapses within the TTL; give the refresher one more interval to notice.
    tokio::time::sleep(Duration::from_secs(1) + REFRESH * 2).await;
    let (alone, both) = (
        cluster.stooq.symbol_hits("alone.us"),
        cluster.stooq.symbol_hits("both.us"),
    );
    tokio::time::sleep(REFRESH * 6).await;

    assert_eq!(
        cluster.stooq.symbol_hits("alone.us") - alone,
        0,
        "nobody watches alone.us any more"
    );
    assert!(
        cluster.stooq.symbol_hits("both.us") - both >= 3,
        "the survivor's symbol is still refreshed"
    );
    cluster.stooq.advance_prices();
    let change = on_survivor
        .next_event(REFRESH * 3)
        .await
        .expect("the survivor's stream still moves");
    assert_eq!(change.symbol(), "BOTH.US");
}
