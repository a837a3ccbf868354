//! State every instance must share, through two separate api_service processes: a logout and
//! a login lockout reached through one instance hold on the other. No quote worker is needed.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tests::processes::Process;

use crate::Cluster;

/// `USER_CACHE_TTL`'s ceiling (2 s) plus scheduling slack.
const PROPAGATION: Duration = Duration::from_secs(3);

async fn history_status(cluster: &Cluster, api: &Process, token: &str) -> StatusCode {
    cluster
        .http
        .get(api.url("/api/v1/users/history"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_through_one_instance_is_refused_by_the_other_within_3_s() {
    // Arrange: the token is known good on both instances (B has it cached).
    let Some(cluster) = Cluster::start(&[]).await else {
        return;
    };
    let api_a = cluster.api("api-a").await;
    let api_b = cluster.api("api-b").await;
    let alice = cluster.client(&api_a, "alice").await;
    assert_eq!(
        history_status(&cluster, &api_b, &alice.token).await,
        StatusCode::OK
    );

    // Act
    let logout = cluster
        .http
        .post(api_a.url("/api/v1/logout"))
        .bearer_auth(&alice.token)
        .send()
        .await
        .unwrap();
    let logged_out = Instant::now();

    // Assert
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    loop {
        let status = history_status(&cluster, &api_b, &alice.token).await;
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(status, StatusCode::OK, "api B on the logged-out token");
        assert!(
            logged_out.elapsed() < PROPAGATION,
            "api B still accepts the token {PROPAGATION:?} after the logout on api A"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "api B refused the token {:?} after the logout",
        logged_out.elapsed()
    );
}

/// Run on its own with `cargo nextest run -p tests --test scale_out lockout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_lockout_through_one_instance_holds_on_the_other() {
    const MAX_FAILURES: u32 = 3;
    // Arrange: both instances lock a username and address after MAX_FAILURES failures.
    let max_failures = MAX_FAILURES.to_string();
    let Some(cluster) = Cluster::start(&[
        ("LOGIN_MAX_FAILURES", &max_failures),
        ("LOGIN_LOCKOUT", "5m"),
    ])
    .await
    else {
        return;
    };
    let api_a = cluster.api("api-a").await;
    let api_b = cluster.api("api-b").await;
    cluster.create_user("alice").await;

    // Act: every failure through A, from 127.0.0.1; then the right password through B.
    for attempt in 1..=MAX_FAILURES {
        let failed = cluster.login(&api_a, "alice", "not the password").await;
        assert_eq!(
            failed.status(),
            StatusCode::UNAUTHORIZED,
            "failed login {attempt} through api A"
        );
    }
    let through_b = cluster.login(&api_b, "alice", tests::PASSWORD).await;

    // Assert
    assert_eq!(
        through_b.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "api B let alice in from the address api A locked out after {MAX_FAILURES} failures"
    );
    assert!(
        through_b.headers().contains_key("retry-after"),
        "the 429 says when to try again"
    );
}
