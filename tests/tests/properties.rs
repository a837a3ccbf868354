//! Property tests against the running API: arbitrary `q` values (any Unicode, any bytes) and
//! arbitrary login bodies (any bytes, any JSON shape, any strings) never produce a 5xx (a
//! panic would be caught and turned into a 500, so this also proves there is none), always
//! come back as the JSON error envelope when refused, and leave the service healthy.
//!
//! One stack serves every case (starting one per case would dominate the run time); the
//! login throttle is off so every body reaches the handler. Login bodies run on both
//! backends: what one database shrugs off (a NUL byte in a username) another may reject.

use std::time::Duration;

use api_service::store::Role;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};
use tests::{Backend, TestApp, stack};

const CASES: u32 = 128;

fn percent_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}

/// The status, after checking a refusal carries the envelope.
async fn check(response: reqwest::Response, what: &str) -> Result<u16, TestCaseError> {
    let status = response.status().as_u16();
    let body = response.bytes().await.unwrap_or_default();
    prop_assert!(
        status < 500,
        "{what}: {status} {}",
        String::from_utf8_lossy(&body)
    );
    if status >= 400 {
        let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        prop_assert!(
            value["error"]["code"].is_string(),
            "{what}: {status} without envelope"
        );
    }
    Ok(status)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: CASES,
        // Shrinking re-runs requests; a few hundred is plenty to find a minimal input.
        max_shrink_iters: 256,
        failure_persistence: None,
        ..Config::default()
    })
}

async fn app(backend: Backend) -> Option<(TestApp, String)> {
    let app = stack()
        .backend(backend)
        .api_settings(|s| {
            s.login_max_failures = 0;
            s.login_max_failures_per_ip = 0;
        })
        .spawn()
        .await?;
    let token = app.token_for("alice", Role::User).await;
    Some((app, token))
}

async fn assert_healthy(app: &TestApp, token: &str) {
    assert_eq!(app.get("/healthz").await.status(), 200);
    assert_eq!(app.stock(token, "aapl.us").await.status(), 200);
}

#[test]
fn arbitrary_q_values_never_get_a_5xx() {
    let rt = runtime();
    let Some((app, token)) = rt.block_on(app(Backend::Sqlite)) else {
        return;
    };
    let strategy = prop_oneof![
        any::<String>().prop_map(|s| percent_encode(s.as_bytes())),
        proptest::collection::vec(any::<u8>(), 0..48).prop_map(|b| percent_encode(&b)),
        "[a-zA-Z0-9.^_=-]{0,24}".prop_map(|s| percent_encode(s.as_bytes())),
        // Unencoded: whatever the URL parser makes of it.
        "[ -~]{0,32}",
    ];
    runner()
        .run(&strategy, |q| {
            rt.block_on(async {
                let response = app
                    .client
                    .get(format!("{}?q={q}", app.url("/api/v1/stock")))
                    .bearer_auth(&token)
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await
                    .map_err(|e| TestCaseError::fail(format!("q={q}: {e}")))?;
                check(response, &format!("q={q}")).await.map(|_| ())
            })
        })
        .unwrap();
    rt.block_on(assert_healthy(&app, &token));
}

#[test]
fn arbitrary_symbol_lists_never_get_a_5xx() {
    let rt = runtime();
    let Some((app, token)) = rt.block_on(app(Backend::Sqlite)) else {
        return;
    };
    let entry = prop_oneof![
        "[a-zA-Z0-9.^_=-]{0,24}".prop_map(|s| percent_encode(s.as_bytes())),
        any::<String>().prop_map(|s| percent_encode(s.as_bytes())),
        "[ -~]{0,8}",
    ];
    let strategy = prop_oneof![
        // Lists around the 50-entry limit, of symbols good and bad.
        proptest::collection::vec(entry, 0..60).prop_map(|entries| entries.join(",")),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(|b| percent_encode(&b)),
    ];
    runner()
        .run(&strategy, |q| {
            rt.block_on(async {
                let response = app
                    .client
                    .get(format!("{}?q={q}", app.url("/api/v1/quotes")))
                    .bearer_auth(&token)
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await
                    .map_err(|e| TestCaseError::fail(format!("q={q}: {e}")))?;
                check(response, &format!("q={q}")).await.map(|_| ())
            })
        })
        .unwrap();
    rt.block_on(assert_healthy(&app, &token));
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            proptest::collection::btree_map("[a-z_]{0,10}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn login_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // Any bytes at all.
        proptest::collection::vec(any::<u8>(), 0..256),
        // Any JSON value.
        json_value().prop_map(|v| v.to_string().into_bytes()),
        // The right shape with any strings, and sometimes extra fields.
        (
            any::<String>(),
            any::<String>(),
            proptest::option::of(json_value())
        )
            .prop_map(|(username, password, extra)| {
                let mut body = json!({"username": username, "password": password});
                if let Some(extra) = extra {
                    body["extra"] = extra;
                }
                body.to_string().into_bytes()
            }),
        // Usernames with control characters, NUL above all (PostgreSQL refuses it in text).
        (any::<String>(), any::<String>(), "[\\x00-\\x1f]").prop_map(|(a, b, control)| {
            json!({"username": format!("{a}{control}{b}"), "password": "x"})
                .to_string()
                .into_bytes()
        }),
        // A real username with any password: the argon2 path, every time.
        any::<String>().prop_map(|password| {
            json!({"username": "alice", "password": password})
                .to_string()
                .into_bytes()
        }),
    ]
}

#[test]
fn arbitrary_login_bodies_never_get_a_5xx_on_sqlite() {
    arbitrary_login_bodies_never_get_a_5xx(Backend::Sqlite);
}

#[test]
fn arbitrary_login_bodies_never_get_a_5xx_on_postgres() {
    arbitrary_login_bodies_never_get_a_5xx(Backend::Postgres);
}

fn arbitrary_login_bodies_never_get_a_5xx(backend: Backend) {
    let rt = runtime();
    let Some((app, token)) = rt.block_on(app(backend)) else {
        return;
    };
    runner()
        .run(&login_body(), |body| {
            rt.block_on(async {
                let what = format!("body {:?}", String::from_utf8_lossy(&body));
                let response = app
                    .client
                    .post(app.url("/api/v1/login"))
                    .header("content-type", "application/json")
                    .body(body)
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await
                    .map_err(|e| TestCaseError::fail(format!("{what}: {e}")))?;
                let status = check(response, &what).await?;
                prop_assert!(status != 200, "{what}: logged in");
                Ok(())
            })
        })
        .unwrap();
    rt.block_on(assert_healthy(&app, &token));
}
