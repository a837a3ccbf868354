//! Several API instances on one PostgreSQL database: a token revoked through one instance
//! is refused by the other (within its user cache's `USER_CACHE_TTL`, 2 s at most).

use std::time::{Duration, Instant};

use api_service::store::Role;
use reqwest::StatusCode;
use tests::{Backend, OtherApi, TestApp, Transport, stack};

/// `USER_CACHE_TTL`'s ceiling plus scheduling slack.
const PROPAGATION: Duration = Duration::from_secs(3);

async fn two_instances() -> Option<(TestApp, OtherApi)> {
    let app = stack()
        .backend(Backend::Postgres)
        .transport(Transport::Http)
        .spawn()
        .await?;
    let other = app.spawn_other_api().await;
    Some((app, other))
}

async fn history_status(app: &TestApp, base_url: &str, token: &str) -> StatusCode {
    app.client
        .get(format!("{base_url}/api/v1/users/history"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
}

/// Polls until `base_url` refuses the token; how long that took.
async fn refused_within(app: &TestApp, base_url: &str, token: &str) -> Duration {
    let started = Instant::now();
    loop {
        let status = history_status(app, base_url, token).await;
        if status == StatusCode::UNAUTHORIZED {
            return started.elapsed();
        }
        assert_eq!(status, StatusCode::OK);
        assert!(
            started.elapsed() < PROPAGATION,
            "{base_url} still accepts the revoked token"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_through_one_instance_holds_on_the_other() {
    let Some((app, other)) = two_instances().await else {
        return;
    };
    let token = app.token_for("alice", Role::User).await;
    // The other instance has seen (and cached) the token as good.
    assert_eq!(
        history_status(&app, &other.address, &token).await,
        StatusCode::OK
    );

    let logout = app
        .client
        .post(app.url("/api/v1/logout"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();

    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        history_status(&app, &app.address, &token).await,
        StatusCode::UNAUTHORIZED,
        "the instance that logged out refuses at once"
    );
    refused_within(&app, &other.address, &token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_reset_through_one_instance_revokes_on_the_other() {
    let Some((app, other)) = two_instances().await else {
        return;
    };
    let admin = app.token_for("root", Role::Admin).await;
    let token = app.token_for("alice", Role::User).await;
    assert_eq!(
        history_status(&app, &app.address, &token).await,
        StatusCode::OK
    );

    let reset = app
        .client
        .patch(other.url("/api/v1/users/alice"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"password": "a brand new password"}))
        .send()
        .await
        .unwrap();

    assert_eq!(reset.status(), StatusCode::OK);
    refused_within(&app, &app.address, &token).await;
    let login = app.login("alice", "a brand new password").await;
    assert_eq!(login.status(), StatusCode::OK);
}
