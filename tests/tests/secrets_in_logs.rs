//! No secret ever reaches a log line or an error body.
//!
//! This binary installs its own global tracing subscriber, at TRACE for every crate (ours,
//! hyper, reqwest, sqlx, lapin…) with span fields, writing into memory, and runs one scenario
//! through both services: users created with passwords, right and wrong logins, throttled
//! logins, quotes fetched with a stooq API key, upstream failures of every kind (refusals,
//! dropped connections, timeouts), forged, tampered and expired tokens, a deleted user's
//! token. Then it searches everything logged, and every error body, for each password, the
//! JWT signing key, the stooq API key, the broker URL and its password alone (the services
//! use a broker user of the test's own, whose password appears nowhere else) and every full
//! token.
//!
//! It is a binary of its own because the subscriber is process-wide.

use std::time::Duration;

use api_service::store::Role;
use fake_stooq::Mode;
use serde_json::json;
use tests::broker_user::BrokerUser;
use tests::log_capture::Captured;
use tests::{JWT_SECRET, PASSWORD, TestApp, rabbitmq_or_skip, stack};
use tracing_subscriber::prelude::*;

const STOOQ_KEY: &str = "stooq-key-9f8e7d6c5b4a39281706";

/// Everything the scenario sent or received that must stay secret, and every error body.
#[derive(Default)]
struct Scenario {
    secrets: Vec<(String, String)>,
    error_bodies: Vec<String>,
}

impl Scenario {
    fn secret(&mut self, what: &str, value: &str) {
        self.secrets.push((what.to_owned(), value.to_owned()));
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> (u16, String) {
        let response = request.send().await.expect("an answer");
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        if status >= 400 {
            self.error_bodies.push(body.clone());
        }
        (status, body)
    }

    async fn login(&mut self, app: &TestApp, username: &str, password: &str) -> (u16, String) {
        self.secret("a password tried", password);
        self.send(
            app.client
                .post(app.url("/api/v1/login"))
                .json(&json!({"username": username, "password": password})),
        )
        .await
    }

    async fn get(&mut self, app: &TestApp, path: &str, token: &str) -> (u16, String) {
        self.secret("a token presented", token);
        self.send(app.client.get(app.url(path)).bearer_auth(token))
            .await
    }
}

fn token_of(body: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(body).unwrap();
    value["token"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_a_log_line_or_an_error_body() {
    let logs = Captured::default();
    tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("trace"))
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(logs.clone())
                .with_ansi(false),
        )
        .try_init()
        .expect("this binary installs the only subscriber");

    if !rabbitmq_or_skip().await {
        return;
    }
    let Some(broker_user) = BrokerUser::create_or_skip() else {
        return;
    };
    let broker_url = broker_user.url();
    let Some(mut app) = stack()
        .stooq_api_key(STOOQ_KEY)
        .quote_settings({
            let url = broker_url.clone();
            move |s| s.amqp_url = url.into()
        })
        .api_settings({
            let url = broker_url.clone();
            move |s| s.amqp_url = url.into()
        })
        .api_settings(|s| s.login_max_failures = 3)
        // Every failure mode should produce its own logs, not the breaker's refusal.
        .quote_settings(|s| s.stooq_breaker_threshold = 0)
        .spawn()
        .await
    else {
        return;
    };
    let mut run = Scenario::default();
    run.secret("the JWT signing key", JWT_SECRET);
    run.secret("the stooq API key", STOOQ_KEY);
    run.secret("the broker URL with credentials", &broker_url);
    run.secret("the broker password", &broker_user.password);
    run.secret("the default test password", PASSWORD);

    // Users and logins: created over HTTP, right and wrong passwords, a throttled account.
    let admin = app.token_for("root", Role::Admin).await;
    run.secret("the admin's token", &admin);
    let alice_password = "alice-Pa55word-unique-7731";
    run.secret("alice's password", alice_password);
    let (status, _) = run
        .send(
            app.client
                .post(app.url("/api/v1/users"))
                .bearer_auth(&admin)
                .json(&json!({"username": "alice", "password": alice_password, "role": "user"})),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _) = run
        .send(
            app.client
                .post(app.url("/api/v1/users"))
                .bearer_auth(&admin)
                .json(&json!({"username": "bob", "password": "short", "role": "user"})),
        )
        .await;
    assert_eq!(status, 422, "a rejected password must not be echoed either");
    run.secret("a rejected new password", "short");
    let (status, body) = run.login(&app, "alice", alice_password).await;
    assert_eq!(status, 200);
    let alice = token_of(&body);
    run.secret("alice's token", &alice);
    for guess in [
        "guess-one-4411",
        "guess-two-4412",
        "guess-three-4413",
        "guess-four-4414",
    ] {
        run.login(&app, "alice", guess).await;
        run.login(&app, "nobody", guess).await;
    }
    let (status, _) = run.login(&app, "alice", alice_password).await;
    assert_eq!(status, 429, "alice is locked out by now");

    // Quotes with the API key, then every upstream failure.
    let (status, _) = run.get(&app, "/api/v1/stock?q=aapl.us", &admin).await;
    assert_eq!(status, 200, "the key is sent and accepted");
    for mode in [
        Mode::ApiKeyPage,
        Mode::Status(401),
        Mode::Status(503),
        Mode::Drop,
        Mode::DailyLimit,
        Mode::Challenge,
    ] {
        app.stooq.set_mode(mode);
        run.get(&app, "/api/v1/stock?q=msft.us", &admin).await;
    }
    app.stooq.set_mode(fake_stooq::Mode::Normal);
    app.stooq.set_latency(Duration::from_secs(3));
    let (status, _) = run.get(&app, "/api/v1/stock?q=cdr", &admin).await;
    assert_eq!(status, 504, "a timeout");
    app.stooq.set_latency(Duration::ZERO);

    // Token abuse: tampered, truncated, re-signed with another key, expired, deleted user.
    let [header, payload, signature]: [&str; 3] =
        admin.split('.').collect::<Vec<_>>().try_into().unwrap();
    let mut flipped = signature.to_owned();
    flipped.replace_range(0..1, if signature.starts_with('A') { "B" } else { "A" });
    let forged = [
        format!("{header}.{payload}.{flipped}"),
        format!("{header}.{payload}"),
        format!("{header}.{payload}.{signature}x"),
    ];
    for token in &forged {
        let (status, _) = run.get(&app, "/api/v1/stats", token).await;
        assert_eq!(status, 401);
    }
    let other_key = api_service::auth::JwtKeys::new(
        &secrecy::SecretString::from("another-secret-that-is-long-enough-000000".to_owned()),
        tests::JWT_ISSUER,
        tests::JWT_AUDIENCE,
        Duration::from_secs(60),
    )
    .unwrap();
    let alice_id = app
        .store
        .user_by_username("alice")
        .await
        .unwrap()
        .unwrap()
        .id;
    let resigned = other_key.issue(alice_id, Role::Admin, 0).unwrap().token;
    let (status, _) = run.get(&app, "/api/v1/stats", &resigned).await;
    assert_eq!(status, 401);
    app.store.delete_user("alice").await.unwrap();
    // Deleted behind the API's back: refused once its user cache entry expires (≤ 2 s).
    let refused = tests::load::wait_until(Duration::from_secs(5), || async {
        let response = app.get_with_token("/api/v1/users/history", &alice).await;
        response.status() == 401
    })
    .await;
    assert!(refused.is_some(), "the deleted user's token still works");
    let (status, _) = run.get(&app, "/api/v1/users/history", &alice).await;
    assert_eq!(status, 401, "deleted user");
    run.get(&app, "/api/v1/stats", &alice).await;

    // Shut both services down so their last words are captured too.
    app.stop_quote_service().await;
    app.stop_api().await;
    let text = logs.text();

    assert!(
        text.contains("login refused"),
        "the capture works: failed logins are logged"
    );
    assert!(text.contains("login succeeded"));
    assert!(text.contains("stooq"), "upstream failures are logged");
    assert!(app.stooq.hits() > 0);
    eprintln!(
        "searched {} log lines and {} error bodies for {} secrets",
        text.lines().count(),
        run.error_bodies.len(),
        run.secrets.len()
    );
    for (what, secret) in &run.secrets {
        if let Some(at) = text.find(secret.as_str()) {
            let line = text[..at].lines().count();
            let context: String = text[at.saturating_sub(200)..].chars().take(400).collect();
            panic!("{what} is in the logs (line {line}): …{context}…");
        }
        for body in &run.error_bodies {
            assert!(
                !body.contains(secret.as_str()),
                "{what} is in an error body: {body}"
            );
        }
    }
}
