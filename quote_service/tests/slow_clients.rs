//! The HTTP port against slow clients: connections that send half a request header are cut
//! off by the header timeout while other clients are served.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::TestApp;
use fake_stooq::FakeStooq;
use shared::http_server::slow_client::{count_closed_within, open_half_headers};

/// Slow connections opened at once.
const SLOW_CLIENTS: usize = 300;
const HEADER_TIMEOUT: Duration = Duration::from_secs(1);

#[tokio::test]
async fn slow_clients_are_closed_within_the_header_timeout_while_others_are_served() {
    let fake = FakeStooq::start().await;
    let app = TestApp::spawn(common::http_settings(&fake, |s| {
        s.http_server.header_timeout = HEADER_TIMEOUT;
    }))
    .await;
    let slow = open_half_headers(app.addr(), SLOW_CLIENTS).await;
    let opened = Instant::now();
    let probing = Arc::new(AtomicBool::new(true));
    let (served, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let prober = {
        let (probing, served, failed) = (probing.clone(), served.clone(), failed.clone());
        let (client, url) = (app.http.clone(), format!("{}/healthz", app.base));
        tokio::spawn(async move {
            while probing.load(Ordering::SeqCst) {
                let ok = client
                    .get(&url)
                    .timeout(Duration::from_secs(1))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                let counter = if ok { &served } else { &failed };
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    let closed = count_closed_within(slow, HEADER_TIMEOUT + Duration::from_millis(1500)).await;
    let took = opened.elapsed();
    probing.store(false, Ordering::SeqCst);
    prober.await.unwrap();

    assert_eq!(closed, SLOW_CLIENTS, "slow connections closed in time");
    assert!(
        took < HEADER_TIMEOUT + Duration::from_millis(1500),
        "{took:?}"
    );
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "every /healthz answered 200"
    );
    assert!(
        served.load(Ordering::SeqCst) >= 5,
        "/healthz kept being served"
    );
    app.stop().await;
}
