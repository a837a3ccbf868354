//! The HTTP port against slow clients: connections that send half a request header are cut
//! off by the header timeout while other clients are served.

mod common;

use std::time::Duration;

use common::TestApp;
use fake_stooq::FakeStooq;
use shared::http_server::slow_client::{open_half_headers, watch_cut_off};

/// Slow connections opened at once.
const SLOW_CLIENTS: usize = 300;
const HEADER_TIMEOUT: Duration = Duration::from_secs(1);
/// How long every slow connection may take to be closed: the header timeout and some slack.
const CLOSE_LIMIT: Duration = HEADER_TIMEOUT.saturating_add(Duration::from_millis(1500));

#[tokio::test]
async fn slow_clients_are_closed_within_the_header_timeout_while_others_are_served() {
    let fake = FakeStooq::start().await;
    let app = TestApp::spawn(common::http_settings(&fake, |s| {
        s.http_server.header_timeout = HEADER_TIMEOUT;
    }))
    .await;
    let slow = open_half_headers(app.addr(), SLOW_CLIENTS).await;

    let seen = watch_cut_off(slow, CLOSE_LIMIT, format!("{}/healthz", app.base)).await;

    assert_eq!(seen.closed, SLOW_CLIENTS, "slow connections closed in time");
    assert!(seen.took < CLOSE_LIMIT, "{:?}", seen.took);
    assert_eq!(seen.probes_failed, 0, "every /healthz answered 200");
    assert!(seen.probes_served >= 5, "/healthz kept being served");
    app.stop().await;
}
