//! The broker dropping the worker's connection (what `rabbitmqctl close_all_connections` or a
//! broker restart does to it): the worker must reconnect and serve again within 10 s.
//!
//! By default the test force-closes only the worker's own connection (found by its
//! connection name), so tests of other crates running at the same time keep theirs.
//! DISRUPTIVE variant: with `QUOTE_TEST_CLOSE_ALL_CONNECTIONS=1` it runs the literal
//! `rabbitmqctl close_all_connections`, dropping EVERY connection on the local broker.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{RpcClient, TestApp};
use fake_stooq::FakeStooq;
use shared::QuoteRequest;

const REASON: &str = "quote_service broker-loss test";

fn rabbitmqctl(args: &[&str]) -> Result<String, String> {
    let output = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run rabbitmqctl: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "rabbitmqctl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// Force-closes the worker's connections (named `quote_service:<queue>`), or every
/// connection when asked to; returns how many were closed.
fn drop_worker_connections(queue: &str) -> Result<usize, String> {
    if std::env::var("QUOTE_TEST_CLOSE_ALL_CONNECTIONS").is_ok_and(|v| v == "1") {
        rabbitmqctl(&["close_all_connections", REASON])?;
        return Ok(1);
    }
    let listing = rabbitmqctl(&[
        "list_connections",
        "--quiet",
        "--no-table-headers",
        "pid",
        "client_properties",
    ])?;
    let name = format!("quote_service:{queue}");
    let mut closed = 0;
    // One line per connection: the pid (`<rabbit@host.1.2.3>`), a tab, the properties.
    for line in listing.lines().filter(|l| l.contains(&name)) {
        if let Some(pid) = line.split('\t').next().filter(|p| p.starts_with('<')) {
            rabbitmqctl(&["close_connection", pid.trim(), REASON])?;
            closed += 1;
        }
    }
    Ok(closed)
}

#[tokio::test]
async fn worker_serves_again_within_ten_seconds_after_the_broker_drops_all_connections() {
    if !common::rabbitmq_available().await {
        return;
    }
    let fake = FakeStooq::start().await;
    let app = TestApp::spawn(common::amqp_settings(&fake, |_| {})).await;
    assert!(app.wait_ready(true, Duration::from_secs(10)).await);
    let queue = app.queue.clone();

    match drop_worker_connections(&queue) {
        Ok(closed) => assert!(closed > 0, "the worker's connection was not found"),
        Err(why) if !shared::config::running_in_ci() => {
            eprintln!("SKIPPED: {why}");
            app.stop().await;
            return;
        }
        Err(why) => panic!("{why}"),
    }
    let noticed = app.wait_ready(false, Duration::from_secs(5)).await;
    let recovered = app.wait_ready(true, Duration::from_secs(10)).await;
    let mut client = RpcClient::connect().await;
    client
        .send(
            &queue,
            &QuoteRequest::new("aapl.us", None, Duration::from_secs(5)),
            "after-loss",
        )
        .await;
    let received = client.next_reply(Duration::from_secs(5)).await;

    assert!(
        noticed,
        "readiness never dropped after the connections were closed"
    );
    assert!(
        recovered,
        "worker not consuming again within 10 s: {:?}",
        app.readiness.reason()
    );
    assert_eq!(
        received
            .expect("a reply after reconnecting")
            .correlation_id
            .as_deref(),
        Some("after-loss")
    );
    app.stop().await;
    client.delete_queue(&queue).await;
}
