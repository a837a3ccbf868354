//! Router-level tests against the in-memory store and a scripted transport: status codes,
//! envelopes, headers, auth and pagination exactly as a client sees them.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::auth::Claims;
use crate::state::AppState;
use crate::store::{NewHistoryEntry, Role, Store};
use crate::test_support::{self, FakeTransport, MemoryStore, quote};
use crate::transport::TransportError;
use shared::{ErrorCode, QuoteError};

mod account;
mod history_csv;
mod history_filter;
mod session;
mod users_list;

struct TestApp {
    router: Router,
    store: Arc<MemoryStore>,
    transport: Arc<FakeTransport>,
    state: AppState,
}

async fn app_with_ttl(ttl: Duration) -> TestApp {
    let store = Arc::new(MemoryStore::default());
    let transport = Arc::new(FakeTransport::default());
    transport.answer("aapl.us", Ok(quote("AAPL.US", "APPLE", 183.05)));
    let state = test_support::state(store.clone(), transport.clone(), ttl).await;
    test_support::add_user(&store, "alice", "alice-password", Role::User).await;
    test_support::add_user(&store, "root", "root-password", Role::Admin).await;
    TestApp {
        router: super::router(state.clone()),
        store,
        transport,
        state,
    }
}

async fn app() -> TestApp {
    app_with_ttl(Duration::from_secs(2)).await
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl TestApp {
    /// Rebuilds the router over the same store and users with some services changed.
    fn with_services(mut self, change: impl FnOnce(&mut crate::state::Services)) -> Self {
        let mut services = crate::state::Services::clone(&self.state);
        change(&mut services);
        self.state = AppState::new(services);
        self.router = super::router(self.state.clone());
        self
    }

    async fn send(&self, request: Request<Body>) -> Reply {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, uri: &str, token: Option<&str>) -> Reply {
        let mut request = Request::get(uri);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        self.send(request.body(Body::empty()).unwrap()).await
    }

    async fn post(&self, uri: &str, token: Option<&str>, body: &str) -> Reply {
        let mut request = Request::post(uri).header(header::CONTENT_TYPE, "application/json");
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        self.send(request.body(Body::from(body.to_owned())).unwrap())
            .await
    }

    async fn send_json(&self, method: &str, uri: &str, token: &str, body: Option<&str>) -> Reply {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "application/json");
        let body = body.map_or_else(Body::empty, |b| Body::from(b.to_owned()));
        self.send(request.body(body).unwrap()).await
    }

    async fn patch_user(&self, token: &str, username: &str, body: &str) -> Reply {
        let uri = format!("/api/v1/users/{username}");
        self.send_json("PATCH", &uri, token, Some(body)).await
    }

    async fn delete_user(&self, token: &str, username: &str) -> Reply {
        let uri = format!("/api/v1/users/{username}");
        self.send_json("DELETE", &uri, token, None).await
    }

    async fn login(&self, username: &str, password: &str) -> String {
        let reply = self
            .post(
                "/api/v1/login",
                None,
                &json!({"username": username, "password": password}).to_string(),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        reply.body["token"].as_str().unwrap().to_owned()
    }

    async fn user_id(&self, username: &str) -> i64 {
        self.store
            .user_by_username(username)
            .await
            .unwrap()
            .unwrap()
            .id
    }
}

fn assert_envelope(reply: &Reply, status: StatusCode, code: &str) {
    assert_eq!(reply.status, status, "{}", reply.body);
    assert_eq!(reply.body["error"]["code"], code, "{}", reply.body);
    assert!(reply.body["error"]["message"].is_string(), "{}", reply.body);
    let rid = reply.body["error"]["request_id"].as_str().unwrap();
    assert_eq!(
        reply.headers["x-request-id"].to_str().unwrap(),
        rid,
        "envelope and header carry the same request id"
    );
}

// ---- login ----

#[tokio::test]
async fn login_returns_a_bearer_token() {
    let app = app().await;
    let reply = app
        .post(
            "/api/v1/login",
            None,
            r#"{"username":"alice","password":"alice-password"}"#,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["token_type"], "Bearer");
    assert_eq!(reply.body["expires_in"], 3600);
    let claims = app
        .state
        .jwt
        .verify(reply.body["token"].as_str().unwrap())
        .unwrap();
    assert_eq!(claims.user_id(), Some(app.user_id("alice").await));
}

#[tokio::test]
async fn wrong_password_and_unknown_user_look_the_same() {
    let app = app().await;
    let wrong = app
        .post(
            "/api/v1/login",
            None,
            r#"{"username":"alice","password":"nope-nope"}"#,
        )
        .await;
    let unknown = app
        .post(
            "/api/v1/login",
            None,
            r#"{"username":"mallory","password":"nope-nope"}"#,
        )
        .await;
    assert_envelope(&wrong, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_envelope(&unknown, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(
        wrong.body["error"]["message"],
        unknown.body["error"]["message"]
    );
}

#[tokio::test]
async fn malformed_login_bodies_get_envelopes_not_500() {
    let app = app().await;
    let syntax = app.post("/api/v1/login", None, "{not json").await;
    assert_envelope(&syntax, StatusCode::BAD_REQUEST, "bad_request");

    let missing = app
        .post("/api/v1/login", None, r#"{"username":"alice"}"#)
        .await;
    assert_envelope(
        &missing,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );

    let wrong_type = app
        .post("/api/v1/login", None, r#"{"username":1,"password":2}"#)
        .await;
    assert_envelope(
        &wrong_type,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );

    let empty = app.post("/api/v1/login", None, "").await;
    assert_eq!(empty.status.as_u16() / 100, 4, "{}", empty.body);

    let form = app
        .send(
            Request::post("/api/v1/login")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from("username=alice&password=x"))
                .unwrap(),
        )
        .await;
    assert_envelope(
        &form,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );

    let huge = format!(
        r#"{{"username":"alice","password":"{}"}}"#,
        "x".repeat(20 * 1024)
    );
    let too_large = app.post("/api/v1/login", None, &huge).await;
    assert_envelope(
        &too_large,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
}

// ---- JSON bodies: 400 unreadable, 422 wrong shape, always in our words ----

/// The envelope's message, after checking the status and code; never axum's or serde's text.
fn message_of(reply: &Reply, status: StatusCode, code: &str) -> String {
    assert_envelope(reply, status, code);
    let message = reply.body["error"]["message"].as_str().unwrap().to_owned();
    // serde's and axum's phrasings.
    for foreign in [
        "Failed to",
        "invalid type:",
        "expected value",
        "expected `",
        "variant",
        "at line",
    ] {
        assert!(!message.contains(foreign), "{message}");
    }
    message
}

#[tokio::test]
async fn json_that_is_not_well_formed_is_400_in_our_words() {
    let app = app().await;
    for (body, says) in [
        ("", "the request body is empty; send a JSON object"),
        (
            "{not json",
            "the request body is not valid JSON (line 1, column 2)",
        ),
        (
            r#"{"username":"alice","#,
            "the request body ends in the middle of its JSON",
        ),
        (
            r#"{"username":"alice","password":"x"} x"#,
            "the request body is not valid JSON (line 1, column 37)",
        ),
    ] {
        let reply = app.post("/api/v1/login", None, body).await;

        assert_eq!(
            message_of(&reply, StatusCode::BAD_REQUEST, "bad_request"),
            says,
            "{body}"
        );
    }
}

#[tokio::test]
async fn well_formed_json_of_the_wrong_shape_is_422_naming_the_field() {
    let app = app().await;
    let admin = app.login("root", "root-password").await;
    for (body, says) in [
        (
            r#"{"username":"carol","password":"long-enough","role":{}}"#,
            r#"field `role` must be one of "user", "admin""#,
        ),
        (
            r#"{"username":"carol","password":"long-enough","role":null}"#,
            r#"field `role` must be one of "user", "admin""#,
        ),
        (
            r#"{"username":5,"password":"long-enough","role":"user"}"#,
            "field `username` must be a string, not a number",
        ),
        (
            r#"{"username":"carol","role":"user"}"#,
            "field `password` is required",
        ),
        (
            r#"{"username":"carol","password":"long-enough","role":"user","username":"dave"}"#,
            "field `username` is given more than once",
        ),
        (
            r#"["carol","long-enough","user"]"#,
            "the request body must be an object, not an array",
        ),
    ] {
        let reply = app.post("/api/v1/users", Some(&admin), body).await;

        assert_eq!(
            message_of(
                &reply,
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed"
            ),
            says,
            "{body}"
        );
    }
}

#[tokio::test]
async fn json_sent_under_another_content_type_is_415() {
    let app = app().await;
    for content_type in [
        "text/plain",
        "application/jsonx",
        "json",
        "multipart/form-data",
    ] {
        let reply = app
            .send(
                Request::post("/api/v1/login")
                    .header(header::CONTENT_TYPE, content_type)
                    .body(Body::from(r#"{"username":"alice","password":"x"}"#))
                    .unwrap(),
            )
            .await;

        message_of(
            &reply,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        );
    }
    for json_type in [
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/vnd.api+json",
    ] {
        let reply = app
            .send(
                Request::post("/api/v1/login")
                    .header(header::CONTENT_TYPE, json_type)
                    .body(Body::from(
                        r#"{"username":"alice","password":"alice-password"}"#,
                    ))
                    .unwrap(),
            )
            .await;

        assert_eq!(reply.status, StatusCode::OK, "{json_type}: {}", reply.body);
    }
}

fn login_request(username: &str, password: &str) -> Request<Body> {
    Request::post("/api/v1/login")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            json!({"username": username, "password": password}).to_string(),
        ))
        .unwrap()
}

#[tokio::test]
async fn a_login_abandoned_mid_hash_still_counts_as_a_failure() {
    let app = app().await; // 5 failures lock a username for one address
    for _ in 0..5 {
        // Polled once, which takes it past admission into the hash, then dropped: a client
        // that hangs up without waiting for the answer.
        let login = app.router.clone().oneshot(login_request("alice", "guess"));
        let abandoned = tokio::time::timeout(Duration::from_millis(1), login).await;
        assert!(abandoned.is_err(), "answered before it could be abandoned");
    }

    // Waits for the abandoned checks to end, then finds their failures counted.
    let reply = app.send(login_request("alice", "alice-password")).await;

    assert_envelope(&reply, StatusCode::TOO_MANY_REQUESTS, "too_many_requests");
}

#[tokio::test]
async fn a_login_that_cannot_get_a_hashing_slot_in_time_is_a_503_to_retry() {
    let hasher = crate::auth::Hasher::new(1)
        .await
        .unwrap()
        .with_max_wait(Duration::from_millis(1));
    let app = app().await.with_services(|s| s.hasher = hasher);

    // Two at once with one slot: the second waits 1 ms while the first hashes for far longer.
    let (first, second) = tokio::join!(
        app.send(login_request("alice", "alice-password")),
        app.send(login_request("root", "root-password")),
    );

    let mut statuses = [first.status, second.status];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::SERVICE_UNAVAILABLE]);
    let busy = if first.status == StatusCode::OK {
        &second
    } else {
        &first
    };
    assert_envelope(busy, StatusCode::SERVICE_UNAVAILABLE, "login_overloaded");
    assert!(busy.headers.contains_key(header::RETRY_AFTER));
}

// ---- auth on protected routes ----

#[tokio::test]
async fn missing_or_bad_tokens_get_401_with_www_authenticate() {
    let app = app().await;
    let missing = app.get("/api/v1/stock?q=aapl.us", None).await;
    assert_envelope(&missing, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(missing.headers[header::WWW_AUTHENTICATE], "Bearer");

    for token in ["garbage", "a.b.c", ""] {
        let reply = app.get("/api/v1/stock?q=aapl.us", Some(token)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{token}");
        assert!(
            reply.headers[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .starts_with("Bearer"),
        );
    }
    let garbage = app.get("/api/v1/stock?q=aapl.us", Some("garbage")).await;
    assert_eq!(
        garbage.headers[header::WWW_AUTHENTICATE],
        r#"Bearer error="invalid_token""#
    );

    let basic = app
        .send(
            Request::get("/api/v1/stock?q=aapl.us")
                .header(header::AUTHORIZATION, "Basic YWxpY2U6eA==")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_envelope(&basic, StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn expired_token_is_refused() {
    let app = app().await;
    let now = jsonwebtoken::get_current_timestamp();
    let claims = Claims {
        sub: app.user_id("alice").await.to_string(),
        role: Role::User,
        iat: now - 7200,
        nbf: None,
        exp: now - 3600,
        iss: "stock-quotes".into(),
        aud: "stock-quotes-api".into(),
        jti: "x".into(),
        ver: 0,
    };
    let token = app.state.jwt.sign(&claims).unwrap();
    let reply = app.get("/api/v1/stock?q=aapl.us", Some(&token)).await;
    assert_envelope(&reply, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(reply.body["error"]["message"], "token expired");
}

#[tokio::test]
async fn deleted_users_tokens_stop_working_at_once() {
    let app = app().await;
    let token = app.login("alice", "alice-password").await;
    assert_eq!(
        app.get("/api/v1/users/history", Some(&token)).await.status,
        StatusCode::OK
    );
    assert!(
        crate::users::delete_user(app.store.as_ref(), Some(&app.state.users), "alice")
            .await
            .unwrap()
    );
    let reply = app.get("/api/v1/users/history", Some(&token)).await;
    assert_envelope(&reply, StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn deletion_elsewhere_is_noticed_within_the_cache_ttl() {
    let app = app_with_ttl(Duration::from_millis(200)).await;
    let token = app.login("alice", "alice-password").await;
    // Deleted behind this instance's back (CLI, another instance): no invalidation.
    app.store.delete_user("alice").await.unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    let reply = app.get("/api/v1/users/history", Some(&token)).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn user_lookups_are_cached_on_the_hot_path() {
    let app = app().await;
    let token = app.login("alice", "alice-password").await;
    let before = app.store.user_lookups.load(Ordering::SeqCst);
    for _ in 0..20 {
        assert_eq!(
            app.get("/api/v1/stock?q=aapl.us", Some(&token))
                .await
                .status,
            StatusCode::OK
        );
    }
    assert_eq!(app.store.user_lookups.load(Ordering::SeqCst), before);
}

#[tokio::test]
async fn admin_rights_come_from_the_database_not_the_token() {
    let app = app().await;
    let alice = app.user_id("alice").await;
    let now = jsonwebtoken::get_current_timestamp();
    let forged_role = app
        .state
        .jwt
        .sign(&Claims {
            sub: alice.to_string(),
            role: Role::Admin,
            iat: now,
            nbf: Some(now),
            exp: now + 60,
            iss: "stock-quotes".into(),
            aud: "stock-quotes-api".into(),
            jti: "x".into(),
            ver: 0,
        })
        .unwrap();
    let reply = app.get("/api/v1/stats", Some(&forged_role)).await;
    assert_envelope(&reply, StatusCode::FORBIDDEN, "forbidden");
}

// ---- stock ----

#[tokio::test]
async fn stock_returns_the_quote_and_records_it_first() {
    let app = app().await;
    let token = app.login("alice", "alice-password").await;
    let reply = app.get("/api/v1/stock?q=AAPL.US", Some(&token)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(
        reply.body,
        json!({
            "symbol": "AAPL.US", "company_name": "APPLE", "quote": 183.05,
            "open": 184.05, "high": 185.05, "low": 182.05, "volume": 1000,
            "time": "2024-05-10T20:00:09Z", "local_date": "2024-05-10", "local_time": "22:00:09"
        })
    );
    let alice = app.user_id("alice").await;
    let rows = app.store.history_page(alice, None, None, 10).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].symbol, "AAPL.US");
    assert_eq!(rows[0].name, "APPLE");
    assert_eq!(rows[0].close, 183.05);
    assert_eq!(rows[0].open, 184.05);
    assert!((chrono::Utc::now() - rows[0].requested_at).num_seconds() < 5);
}

#[tokio::test]
async fn stock_input_errors_are_400() {
    let app = app().await;
    let token = app.login("alice", "alice-password").await;
    let missing = app.get("/api/v1/stock", Some(&token)).await;
    assert_envelope(&missing, StatusCode::BAD_REQUEST, "bad_request");
    for q in ["", "%20", "a%2Bb", "a;drop", &"a".repeat(21)] {
        let reply = app.get(&format!("/api/v1/stock?q={q}"), Some(&token)).await;
        assert_envelope(&reply, StatusCode::BAD_REQUEST, "invalid_symbol");
    }
    assert_eq!(app.transport.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn unknown_symbol_is_404_and_nothing_is_saved() {
    let app = app().await;
    let token = app.login("alice", "alice-password").await;
    let reply = app.get("/api/v1/stock?q=xxxx.us", Some(&token)).await;
    assert_envelope(&reply, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(app.store.history_len(app.user_id("alice").await), 0);
    assert!(app.store.top_stocks(5).await.unwrap().is_empty());
}

#[tokio::test]
async fn transport_failures_map_to_gateway_statuses() {
    let app = app().await;
    let token = app.login("alice", "alice-password").await;
    let cases = [
        (
            "down.us",
            TransportError::Unavailable("no quote worker".into()),
            StatusCode::SERVICE_UNAVAILABLE,
            "quote_service_unavailable",
        ),
        (
            "slow.us",
            TransportError::Timeout,
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
        ),
        (
            "key.us",
            TransportError::Quote(QuoteError::new(
                ErrorCode::UpstreamRejected,
                "stooq asks for an API key",
            )),
            StatusCode::BAD_GATEWAY,
            "upstream_rejected",
        ),
    ];
    for (symbol, err, status, code) in cases {
        app.transport.answer(symbol, Err(err));
        let reply = app
            .get(&format!("/api/v1/stock?q={symbol}"), Some(&token))
            .await;
        assert_envelope(&reply, status, code);
    }
    let reply = app.get("/api/v1/stock?q=key.us", Some(&token)).await;
    assert!(
        reply.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("API key")
    );
    assert_eq!(
        app.get("/api/v1/stock?q=down.us", Some(&token))
            .await
            .headers[header::RETRY_AFTER],
        "1"
    );
    assert_eq!(app.store.history_len(app.user_id("alice").await), 0);
}

#[tokio::test]
async fn database_down_is_503() {
    let app = app().await;
    let token = app.login("alice", "alice-password").await;
    app.store.down.store(true, Ordering::SeqCst);
    // The cached user still authenticates; the history write fails.
    let reply = app.get("/api/v1/stock?q=aapl.us", Some(&token)).await;
    assert_envelope(
        &reply,
        StatusCode::SERVICE_UNAVAILABLE,
        "database_unavailable",
    );
    let login = app
        .post(
            "/api/v1/login",
            None,
            r#"{"username":"alice","password":"alice-password"}"#,
        )
        .await;
    assert_envelope(
        &login,
        StatusCode::SERVICE_UNAVAILABLE,
        "database_unavailable",
    );
}

// ---- request ids ----

#[tokio::test]
async fn request_id_is_echoed_forwarded_and_in_envelopes() {
    let app = app().await;
    let token = app.login("alice", "alice-password").await;
    let reply = app
        .send(
            Request::get("/api/v1/stock?q=aapl.us")
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .header("x-request-id", "trace-abc-123")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["x-request-id"], "trace-abc-123");
    assert_eq!(
        app.transport.last_request_id.lock().unwrap().as_deref(),
        Some("trace-abc-123")
    );

    let not_found = app
        .send(
            Request::get("/nope")
                .header("x-request-id", "trace-xyz")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_envelope(&not_found, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(not_found.body["error"]["request_id"], "trace-xyz");
}

#[tokio::test]
async fn unacceptable_request_ids_are_replaced() {
    let app = app().await;
    let long = "a".repeat(500);
    for bad in ["has space", long.as_str()] {
        let reply = app
            .send(
                Request::get("/healthz")
                    .header("x-request-id", bad)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        let id = reply.headers["x-request-id"].to_str().unwrap();
        assert_ne!(id, bad);
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    }
    let generated = app.get("/healthz", None).await;
    assert!(uuid::Uuid::parse_str(generated.headers["x-request-id"].to_str().unwrap()).is_ok());
}

// ---- history ----

async fn seed(app: &TestApp, user: &str, n: usize) {
    let id = app.user_id(user).await;
    for i in 0..n {
        app.store
            .record_quote(
                id,
                NewHistoryEntry {
                    requested_at: chrono::Utc::now(),
                    symbol: format!("S{i}.US"),
                    name: format!("N{i}"),
                    open: 1.0,
                    high: 2.0,
                    low: 0.5,
                    close: i as f64,
                },
            )
            .await
            .unwrap();
    }
}

fn next_link(reply: &Reply) -> Option<String> {
    let link = reply
        .headers
        .get(header::LINK)?
        .to_str()
        .unwrap()
        .to_owned();
    assert!(link.ends_with(r#">; rel="next""#), "{link}");
    Some(link[1..link.find('>').unwrap()].to_owned())
}

#[tokio::test]
async fn history_pages_newest_first_with_link_headers() {
    let app = app().await;
    seed(&app, "alice", 5).await;
    seed(&app, "root", 3).await;
    let token = app.login("alice", "alice-password").await;

    let first = app.get("/api/v1/users/history?limit=2", Some(&token)).await;
    assert_eq!(first.status, StatusCode::OK);
    let items = first.body.as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["symbol"], "S4.US");
    assert_eq!(items[1]["symbol"], "S3.US");
    assert_eq!(items[0]["name"], "N4");
    let date = items[0]["date"].as_str().unwrap();
    assert!(date.ends_with('Z') && date.len() == 20, "{date}");
    for key in ["open", "high", "low", "close"] {
        assert!(items[0][key].is_number());
    }

    let second_url = next_link(&first).expect("a next link");
    assert!(second_url.starts_with("/api/v1/users/history?limit=2&cursor="));
    let second = app.get(&second_url, Some(&token)).await;
    let symbols: Vec<&str> = second
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["symbol"].as_str().unwrap())
        .collect();
    assert_eq!(symbols, ["S2.US", "S1.US"]);

    let third = app.get(&next_link(&second).unwrap(), Some(&token)).await;
    assert_eq!(third.body.as_array().unwrap().len(), 1);
    assert_eq!(next_link(&third), None, "last page has no next link");

    // Exactly limit rows left: no dangling link to an empty page.
    let all = app.get("/api/v1/users/history?limit=5", Some(&token)).await;
    assert_eq!(all.body.as_array().unwrap().len(), 5);
    assert_eq!(next_link(&all), None);

    // Default limit, only own entries.
    let default = app.get("/api/v1/users/history", Some(&token)).await;
    assert_eq!(default.body.as_array().unwrap().len(), 5);
}

#[tokio::test]
async fn history_rejects_bad_paging_parameters() {
    let app = app().await;
    let token = app.login("alice", "alice-password").await;
    for query in [
        "limit=0",
        "limit=1001",
        "limit=abc",
        "limit=-1",
        "limit=",
        "cursor=garbage!",
        "cursor=NDI",
    ] {
        let reply = app
            .get(&format!("/api/v1/users/history?{query}"), Some(&token))
            .await;
        assert_envelope(&reply, StatusCode::BAD_REQUEST, "bad_request");
    }
    let empty = app.get("/api/v1/users/history", Some(&token)).await;
    assert_eq!(empty.body, json!([]));
}

// ---- stats ----

#[tokio::test]
async fn stats_are_for_admins_and_ordered() {
    let app = app().await;
    let alice = app.user_id("alice").await;
    for (symbol, times) in [
        ("A.US", 2),
        ("B.US", 5),
        ("C.US", 2),
        ("D.US", 1),
        ("E.US", 7),
        ("F.US", 1),
    ] {
        for _ in 0..times {
            app.store
                .record_quote(
                    alice,
                    NewHistoryEntry {
                        requested_at: chrono::Utc::now(),
                        symbol: symbol.into(),
                        name: "X".into(),
                        open: 1.0,
                        high: 1.0,
                        low: 1.0,
                        close: 1.0,
                    },
                )
                .await
                .unwrap();
        }
    }
    let user_token = app.login("alice", "alice-password").await;
    let forbidden = app.get("/api/v1/stats", Some(&user_token)).await;
    assert_envelope(&forbidden, StatusCode::FORBIDDEN, "forbidden");

    let admin_token = app.login("root", "root-password").await;
    let reply = app.get("/api/v1/stats", Some(&admin_token)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.body,
        json!([
            {"stock":"e.us","times_requested":7},
            {"stock":"b.us","times_requested":5},
            {"stock":"a.us","times_requested":2},
            {"stock":"c.us","times_requested":2},
            {"stock":"d.us","times_requested":1},
        ])
    );
}

#[tokio::test]
async fn stats_are_503_while_the_database_is_down_and_recover_with_it() {
    let app = app().await;
    let admin_token = app.login("root", "root-password").await;
    app.store.down.store(true, Ordering::SeqCst);

    // Concurrent requests share the failed read; each gets the same 503, none a 500.
    let (a, b) = tokio::join!(
        app.get("/api/v1/stats", Some(&admin_token)),
        app.get("/api/v1/stats", Some(&admin_token))
    );
    for reply in [&a, &b] {
        assert_envelope(
            reply,
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
        );
    }

    app.store.down.store(false, Ordering::SeqCst);
    let reply = app.get("/api/v1/stats", Some(&admin_token)).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "a failed read must not be kept"
    );
}

// ---- users ----

#[tokio::test]
async fn admins_create_users() {
    let app = app().await;
    let admin = app.login("root", "root-password").await;
    let reply = app
        .post(
            "/api/v1/users",
            Some(&admin),
            r#"{"username":"bob","password":"bob-password","role":"user"}"#,
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert_eq!(reply.body["username"], "bob");
    assert_eq!(reply.body["role"], "user");
    assert!(reply.body["id"].is_i64());
    let text = reply.body.to_string();
    assert!(
        !text.contains("argon2") && !text.contains("password"),
        "{text}"
    );
    // The new user can log in.
    app.login("bob", "bob-password").await;

    let duplicate = app
        .post(
            "/api/v1/users",
            Some(&admin),
            r#"{"username":"bob","password":"other-password","role":"admin"}"#,
        )
        .await;
    assert_envelope(&duplicate, StatusCode::CONFLICT, "conflict");

    for body in [
        r#"{"username":"","password":"long-enough","role":"user"}"#,
        r#"{"username":"bad name","password":"long-enough","role":"user"}"#,
        r#"{"username":"carol","password":"short","role":"user"}"#,
        r#"{"username":"carol","password":"long-enough","role":"superuser"}"#,
        r#"{"username":"carol","password":"long-enough"}"#,
    ] {
        let reply = app.post("/api/v1/users", Some(&admin), body).await;
        assert_envelope(
            &reply,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        );
    }

    let user = app.login("alice", "alice-password").await;
    let reply = app
        .post(
            "/api/v1/users",
            Some(&user),
            r#"{"username":"eve","password":"eve-password","role":"admin"}"#,
        )
        .await;
    assert_envelope(&reply, StatusCode::FORBIDDEN, "forbidden");
    let anonymous = app
        .post(
            "/api/v1/users",
            None,
            r#"{"username":"eve","password":"eve-password","role":"admin"}"#,
        )
        .await;
    assert_envelope(&anonymous, StatusCode::UNAUTHORIZED, "unauthorized");
}

// ---- logout and account changes ----

#[tokio::test]
async fn a_logged_out_token_is_refused_while_the_users_other_tokens_work() {
    let app = app().await;
    let token = app.login("alice", "alice-password").await;
    let other = app.login("alice", "alice-password").await;

    let reply = app.post("/api/v1/logout", Some(&token), "").await;

    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    let refused = app.get("/api/v1/users/history", Some(&token)).await;
    assert_envelope(&refused, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(refused.body["error"]["message"], "the token was revoked");
    let again = app.post("/api/v1/logout", Some(&token), "").await;
    assert_envelope(&again, StatusCode::UNAUTHORIZED, "unauthorized");
    let still = app.get("/api/v1/users/history", Some(&other)).await;
    assert_eq!(still.status, StatusCode::OK, "{}", still.body);
}

#[tokio::test]
async fn logout_without_a_token_is_401() {
    let app = app().await;
    let reply = app.post("/api/v1/logout", None, "").await;
    assert_envelope(&reply, StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn a_password_reset_by_an_admin_revokes_the_users_tokens() {
    let app = app().await;
    let admin = app.login("root", "root-password").await;
    let old = app.login("alice", "alice-password").await;

    let reply = app
        .patch_user(&admin, "alice", r#"{"password":"a-new-password"}"#)
        .await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["username"], "alice");
    assert_eq!(reply.body["role"], "user");
    let refused = app.get("/api/v1/users/history", Some(&old)).await;
    assert_envelope(&refused, StatusCode::UNAUTHORIZED, "unauthorized");
    let fresh = app.login("alice", "a-new-password").await;
    let ok = app.get("/api/v1/users/history", Some(&fresh)).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
}

#[tokio::test]
async fn a_role_change_takes_effect_with_the_next_login() {
    let app = app().await;
    let admin = app.login("root", "root-password").await;
    let old = app.login("alice", "alice-password").await;

    let reply = app.patch_user(&admin, "alice", r#"{"role":"admin"}"#).await;

    assert_eq!(reply.body["role"], "admin", "{}", reply.body);
    let refused = app.get("/api/v1/stats", Some(&old)).await;
    assert_envelope(&refused, StatusCode::UNAUTHORIZED, "unauthorized");
    let promoted = app.login("alice", "alice-password").await;
    assert_eq!(
        app.get("/api/v1/stats", Some(&promoted)).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn an_admin_deletes_a_user_whose_tokens_then_stop_working() {
    let app = app().await;
    let admin = app.login("root", "root-password").await;
    let alice = app.login("alice", "alice-password").await;

    let reply = app.delete_user(&admin, "alice").await;

    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    let refused = app.get("/api/v1/users/history", Some(&alice)).await;
    assert_envelope(&refused, StatusCode::UNAUTHORIZED, "unauthorized");
    let again = app.delete_user(&admin, "alice").await;
    assert_envelope(&again, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn an_empty_patch_changes_nothing_and_revokes_nothing() {
    let app = app().await;
    let admin = app.login("root", "root-password").await;
    let alice = app.login("alice", "alice-password").await;

    let reply = app.patch_user(&admin, "alice", "{}").await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["role"], "user");
    let still = app.get("/api/v1/users/history", Some(&alice)).await;
    assert_eq!(still.status, StatusCode::OK, "{}", still.body);
    let missing = app.patch_user(&admin, "nobody", "{}").await;
    assert_envelope(&missing, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn the_last_admin_cannot_be_deleted_or_demoted() {
    let app = app().await;
    let admin = app.login("root", "root-password").await;

    let delete = app.delete_user(&admin, "root").await;
    let demote = app.patch_user(&admin, "root", r#"{"role":"user"}"#).await;

    assert_envelope(&delete, StatusCode::CONFLICT, "conflict");
    assert_envelope(&demote, StatusCode::CONFLICT, "conflict");
    let still = app.get("/api/v1/stats", Some(&admin)).await;
    assert_eq!(
        still.status,
        StatusCode::OK,
        "nothing changed: {}",
        still.body
    );
}

#[tokio::test]
async fn account_changes_refuse_bad_requests_with_the_envelope() {
    let app = app().await;
    let admin = app.login("root", "root-password").await;
    let user = app.login("alice", "alice-password").await;

    let cases = [
        (
            "PATCH",
            "/api/v1/users/alice",
            &admin,
            Some(r#"{"password":"short"}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            "PATCH",
            "/api/v1/users/nobody",
            &admin,
            Some(r#"{"role":"user"}"#),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "DELETE",
            "/api/v1/users/bad%20name",
            &admin,
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "PATCH",
            "/api/v1/users/root",
            &user,
            Some(r#"{"role":"user"}"#),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            "DELETE",
            "/api/v1/users/root",
            &user,
            None,
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
    ];
    for (method, uri, token, body, status, code) in cases {
        let reply = app.send_json(method, uri, token, body).await;
        assert_envelope(&reply, status, code);
    }
}

// ---- caching ----

/// API answers hold a user's data (quotes, history, accounts): no browser or proxy may keep
/// them, so Back after signing out, or the next user of a shared proxy, finds nothing.
#[tokio::test]
async fn api_answers_are_never_stored_by_caches() {
    let app = app().await;
    let admin = app.login("root", "root-password").await;
    let user = app.login("alice", "alice-password").await;

    let replies = [
        app.get("/api/v1/stock?q=aapl.us", Some(&user)).await,
        app.get("/api/v1/users/history", Some(&user)).await,
        app.get("/api/v1/users", Some(&admin)).await,
        app.get("/api/v1/stats", Some(&admin)).await,
        app.get("/api/v1/users/history", None).await,
    ];

    for reply in replies {
        assert_eq!(
            reply
                .headers
                .get(header::CACHE_CONTROL)
                .map(|v| v.to_str().unwrap()),
            Some("no-store"),
            "{} {}",
            reply.status,
            reply.body
        );
    }
}

#[tokio::test]
async fn a_username_in_the_path_that_is_not_utf8_is_the_json_404() {
    let app = app().await;
    let admin = app.login("root", "root-password").await;

    let patch = app.patch_user(&admin, "%FF", r#"{"role":"user"}"#).await;
    let delete = app.delete_user(&admin, "a%C0b").await;

    assert_envelope(&patch, StatusCode::NOT_FOUND, "not_found");
    assert_envelope(&delete, StatusCode::NOT_FOUND, "not_found");
}

// ---- health, metrics, fallbacks ----

#[tokio::test]
async fn health_and_readiness() {
    let app = app().await;
    let health = app.get("/healthz", None).await;
    assert_eq!(health.status, StatusCode::OK);

    let ready = app.get("/readyz", None).await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);
    assert_eq!(ready.body["status"], "ready");

    app.transport.ready.store(false, Ordering::SeqCst);
    let not_ready = app.get("/readyz", None).await;
    assert_eq!(not_ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(not_ready.body["checks"]["quote_transport"]["ok"], false);
    assert_eq!(not_ready.body["checks"]["database"]["ok"], true);

    app.transport.ready.store(true, Ordering::SeqCst);
    app.store.down.store(true, Ordering::SeqCst);
    let db_down = app.get("/readyz", None).await;
    assert_eq!(db_down.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(db_down.body["checks"]["database"]["ok"], false);
    assert_eq!(db_down.body["checks"]["quote_transport"]["ok"], true);
}

#[tokio::test]
async fn readiness_gives_fixed_phrases_not_the_database_error() {
    let app = app().await;
    let cause = crate::store::StoreError::Unavailable(sqlx::Error::PoolTimedOut).to_string();
    app.store.down.store(true, Ordering::SeqCst);

    let db_down = app.get("/readyz", None).await;

    assert_eq!(db_down.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        db_down.body["checks"]["database"]["detail"],
        "database ping failed"
    );
    assert!(
        !db_down.body.to_string().contains(&cause),
        "{}",
        db_down.body
    );
}

#[tokio::test]
async fn metrics_count_by_matched_route_and_status() {
    let app = app().await;
    let token = app.login("alice", "alice-password").await;
    app.get("/api/v1/stock?q=aapl.us", Some(&token)).await;
    app.get("/api/v1/stock?q=zzzz.us", Some(&token)).await;
    app.get("/no/such/path?x=1", None).await;
    let response = app
        .router
        .clone()
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert!(
        response.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = String::from_utf8(
        axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    for needle in [
        r#"http_requests_total{method="GET",route="/api/v1/stock",status="200"} 1"#,
        r#"http_requests_total{method="GET",route="/api/v1/stock",status="404"} 1"#,
        r#"http_requests_total{method="POST",route="/api/v1/login",status="200"} 1"#,
        r#"route="unmatched",status="404""#,
        r#"quote_rpc_total{outcome="ok"} 1"#,
        r#"quote_rpc_total{outcome="not_found"} 1"#,
        "http_request_duration_seconds_bucket",
        "quote_rpc_duration_seconds_bucket",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    // Read from the store and the transport at scrape time (the memory store reports one
    // idle connection).
    for line in [
        "db_pool_connections 1",
        "db_pool_idle_connections 1",
        "db_pool_max_connections 1",
        "quote_transport_ready 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
    }
    assert!(!text.contains("/no/such/path"));
}

#[tokio::test]
async fn unknown_routes_and_methods_use_the_envelope() {
    let app = app().await;
    let missing = app.get("/api/v1/nothing", None).await;
    assert_envelope(&missing, StatusCode::NOT_FOUND, "not_found");
    let wrong_method = app.get("/api/v1/login", None).await;
    assert_envelope(
        &wrong_method,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
}

#[tokio::test]
async fn panics_become_opaque_500_envelopes() {
    let response = crate::request_id::scope("panic-req", async {
        super::panic_response(Box::new("index out of bounds: secret detail"))
    })
    .await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        body,
        json!({"error":{"code":"internal","message":"internal error","request_id":"panic-req"}})
    );
}
