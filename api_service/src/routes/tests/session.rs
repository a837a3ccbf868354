//! Browser sessions: the cookie `/session` sets, what it authenticates, and the CSRF rule for
//! requests that change something.

use super::*;

/// What `POST /session` gives a browser: the raw `Set-Cookie`, the cookie pair to send back,
/// and the body (with the CSRF token).
pub(super) struct SignedIn {
    pub(super) set_cookie: String,
    pub(super) cookie: String,
    pub(super) csrf: String,
    pub(super) body: Value,
}

fn session_request(username: &str, password: &str) -> Request<Body> {
    Request::post("/api/v1/session")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            json!({"username": username, "password": password}).to_string(),
        ))
        .unwrap()
}

impl TestApp {
    pub(super) async fn sign_in(&self, username: &str, password: &str) -> SignedIn {
        let reply = self.send(session_request(username, password)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        let set_cookie = reply.headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .to_owned();
        let cookie = set_cookie.split(';').next().unwrap().to_owned();
        SignedIn {
            set_cookie,
            cookie,
            csrf: reply.body["csrf_token"].as_str().unwrap().to_owned(),
            body: reply.body,
        }
    }

    /// A request carrying only the cookie (and the CSRF header when given).
    pub(super) async fn with_cookie(
        &self,
        method: &str,
        uri: &str,
        cookie: &str,
        csrf: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::COOKIE, cookie);
        if let Some(csrf) = csrf {
            request = request.header("x-csrf-token", csrf);
        }
        let body = match body {
            Some(body) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(body.to_string())
            }
            None => Body::empty(),
        };
        self.send(request.body(body).unwrap()).await
    }
}

fn new_user(name: &str) -> Value {
    json!({"username": name, "password": "long-enough-password", "role": "user"})
}

#[tokio::test]
async fn signing_in_sets_an_http_only_strict_cookie_and_answers_who_and_the_csrf_token() {
    let app = app().await;

    let reply = app.send(session_request("alice", "alice-password")).await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let set_cookie = reply.headers[header::SET_COOKIE].to_str().unwrap();
    let attributes: Vec<&str> = set_cookie.split("; ").collect();
    assert!(attributes[0].starts_with("sq_session=ey"), "{set_cookie}");
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=3600"] {
        assert!(attributes.contains(&flag), "{flag} missing: {set_cookie}");
    }
    assert!(
        !attributes.contains(&"Secure"),
        "not configured: {set_cookie}"
    );
    assert_eq!(reply.headers[header::CACHE_CONTROL], "no-store");
    assert_eq!(reply.body["username"], "alice");
    assert_eq!(reply.body["role"], "user");
    assert!(
        reply.body.get("token").is_none(),
        "the token stays in the cookie"
    );
    let token = attributes[0].trim_start_matches("sq_session=");
    let claims = app.state.jwt.verify(token).unwrap();
    assert_eq!(
        reply.body["csrf_token"],
        app.state.jwt.csrf_token(&claims.jti).unwrap()
    );
    let expires_at =
        chrono::DateTime::parse_from_rfc3339(reply.body["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!(expires_at.timestamp() as u64, claims.exp);
}

#[tokio::test]
async fn the_cookie_is_secure_when_the_operator_says_so() {
    let app = app()
        .await
        .with_services(|s| s.session_cookie.secure = true);

    let signed_in = app.sign_in("alice", "alice-password").await;

    assert!(
        signed_in.set_cookie.ends_with("; Secure"),
        "{}",
        signed_in.set_cookie
    );
}

#[tokio::test]
async fn wrong_credentials_get_the_login_401_and_no_cookie() {
    let app = app().await;

    let reply = app.send(session_request("alice", "wrong-password")).await;

    assert_envelope(&reply, StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(reply.headers.get(header::SET_COOKIE).is_none());
}

#[tokio::test]
async fn the_cookie_alone_reads_history_and_the_session() {
    let app = app().await;
    let signed_in = app.sign_in("alice", "alice-password").await;

    let history = app
        .with_cookie(
            "GET",
            "/api/v1/users/history",
            &signed_in.cookie,
            None,
            None,
        )
        .await;
    let session = app
        .with_cookie("GET", "/api/v1/session", &signed_in.cookie, None, None)
        .await;

    assert_eq!(history.status, StatusCode::OK, "{}", history.body);
    assert_eq!(session.status, StatusCode::OK, "{}", session.body);
    assert_eq!(session.body, signed_in.body);
}

#[tokio::test]
async fn the_session_is_401_without_a_valid_cookie_or_token() {
    let app = app().await;

    let none = app.get("/api/v1/session", None).await;
    let forged = app
        .with_cookie("GET", "/api/v1/session", "sq_session=not.a.jwt", None, None)
        .await;

    assert_envelope(&none, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_envelope(&forged, StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn a_change_by_cookie_without_the_csrf_token_is_403() {
    let app = app().await;
    let admin = app.sign_in("root", "root-password").await;

    let reply = app
        .with_cookie(
            "POST",
            "/api/v1/users",
            &admin.cookie,
            None,
            Some(new_user("bob")),
        )
        .await;

    assert_envelope(&reply, StatusCode::FORBIDDEN, "csrf_failed");
    assert!(app.store.user_by_username("bob").await.unwrap().is_none());
}

#[tokio::test]
async fn a_change_by_cookie_with_a_wrong_or_another_sessions_csrf_token_is_403() {
    let app = app().await;
    let admin = app.sign_in("root", "root-password").await;
    let other = app.sign_in("root", "root-password").await;

    for wrong in ["nonsense", other.csrf.as_str(), ""] {
        let reply = app
            .with_cookie(
                "POST",
                "/api/v1/users",
                &admin.cookie,
                Some(wrong),
                Some(new_user("bob")),
            )
            .await;
        assert_envelope(&reply, StatusCode::FORBIDDEN, "csrf_failed");
    }
}

#[tokio::test]
async fn a_change_by_cookie_with_the_sessions_csrf_token_goes_through() {
    let app = app().await;
    let admin = app.sign_in("root", "root-password").await;

    let reply = app
        .with_cookie(
            "POST",
            "/api/v1/users",
            &admin.cookie,
            Some(&admin.csrf),
            Some(new_user("bob")),
        )
        .await;

    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
}

#[tokio::test]
async fn an_invalid_cookie_on_a_change_is_401_not_403() {
    let app = app().await;

    let reply = app
        .with_cookie(
            "DELETE",
            "/api/v1/session",
            "sq_session=eyJhbGciOiJIUzI1NiJ9.e30.AAAA",
            None,
            None,
        )
        .await;

    assert_envelope(&reply, StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn bearer_requests_need_no_csrf_token_and_win_over_a_cookie() {
    let app = app().await;
    let root = app.login("root", "root-password").await;
    let alice = app.sign_in("alice", "alice-password").await;

    // A bearer change, no CSRF header: as before.
    let plain = app
        .send_json(
            "POST",
            "/api/v1/users",
            &root,
            Some(&new_user("bob").to_string()),
        )
        .await;
    // Both present: the bearer decides who is calling (root, an admin), not alice's cookie.
    let both = app
        .send(
            Request::post("/api/v1/users")
                .header(header::AUTHORIZATION, format!("Bearer {root}"))
                .header(header::COOKIE, &alice.cookie)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(new_user("carol").to_string()))
                .unwrap(),
        )
        .await;

    assert_eq!(plain.status, StatusCode::CREATED, "{}", plain.body);
    assert_eq!(both.status, StatusCode::CREATED, "{}", both.body);
}

#[tokio::test]
async fn signing_out_revokes_the_token_and_clears_the_cookie() {
    let app = app().await;
    let signed_in = app.sign_in("alice", "alice-password").await;
    let without_csrf = app
        .with_cookie("DELETE", "/api/v1/session", &signed_in.cookie, None, None)
        .await;
    assert_envelope(&without_csrf, StatusCode::FORBIDDEN, "csrf_failed");

    let reply = app
        .with_cookie(
            "DELETE",
            "/api/v1/session",
            &signed_in.cookie,
            Some(&signed_in.csrf),
            None,
        )
        .await;

    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    let cleared = reply.headers[header::SET_COOKIE].to_str().unwrap();
    assert!(cleared.starts_with("sq_session=;"), "{cleared}");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    let after = app
        .with_cookie(
            "GET",
            "/api/v1/users/history",
            &signed_in.cookie,
            None,
            None,
        )
        .await;
    assert_envelope(&after, StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn signing_in_is_throttled_like_logging_in_and_shares_its_counts() {
    let app = app().await; // 5 failures lock a username for one address
    for _ in 0..3 {
        let reply = app.send(login_request("alice", "guess")).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    for _ in 0..2 {
        let reply = app.send(session_request("alice", "guess")).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }

    let session = app.send(session_request("alice", "alice-password")).await;
    let login = app.send(login_request("alice", "alice-password")).await;

    assert_envelope(&session, StatusCode::TOO_MANY_REQUESTS, "too_many_requests");
    let wait: u64 = session.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(wait > 0);
    assert!(session.headers.get(header::SET_COOKIE).is_none());
    assert_envelope(&login, StatusCode::TOO_MANY_REQUESTS, "too_many_requests");
}
