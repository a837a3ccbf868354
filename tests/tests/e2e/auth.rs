use api_service::store::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Instant;
use tests::{PASSWORD, error_code, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_returns_a_bearer_token() {
    let Some(app) = spawn_app().await else { return };
    app.create_user("alice", Role::User).await;

    let response = app.login("alice", PASSWORD).await;

    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["expires_in"].as_u64().unwrap() > 0);
    assert_eq!(body["token"].as_str().unwrap().split('.').count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_and_unknown_user_get_the_same_401() {
    let Some(app) = spawn_app().await else { return };
    app.create_user("alice", Role::User).await;

    let started = Instant::now();
    let wrong = app.login("alice", "not the password").await;
    let wrong_took = started.elapsed();
    let started = Instant::now();
    let unknown = app.login("nobody", "not the password").await;
    let unknown_took = started.elapsed();

    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    let wrong: Value = wrong.json().await.unwrap();
    let unknown: Value = unknown.json().await.unwrap();
    assert_eq!(wrong["error"]["code"], unknown["error"]["code"]);
    assert_eq!(wrong["error"]["message"], unknown["error"]["message"]);
    // Both paths run one argon2 verification: an unknown user is no faster by an order of
    // magnitude. (The statistical timing test lives in the security suite.)
    assert!(
        unknown_took * 5 > wrong_took,
        "unknown {unknown_took:?} vs wrong {wrong_took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_login_bodies_get_a_json_4xx() {
    let Some(app) = spawn_app().await else { return };

    let cases: Vec<(&str, &str)> = vec![
        ("application/json", "{"),
        ("application/json", ""),
        ("application/json", "[]"),
        ("application/json", r#"{"username":"alice"}"#),
        ("application/json", r#"{"username":1,"password":2}"#),
        ("text/plain", r#"{"username":"a","password":"b"}"#),
    ];
    for (content_type, body) in cases {
        let response = app
            .client
            .post(app.url("/api/v1/login"))
            .header("content-type", content_type)
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        let status = response.status();
        assert!(
            status.is_client_error(),
            "{content_type} {body:?} gave {status}"
        );
        error_code(response).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_creates_users_who_can_log_in() {
    let Some(app) = spawn_app().await else { return };
    let admin = app.token_for("root", Role::Admin).await;

    let response = app
        .client
        .post(app.url("/api/v1/users"))
        .bearer_auth(&admin)
        .json(&json!({"username": "carol", "password": "carols password", "role": "user"}))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["username"], "carol");
    assert_eq!(body["role"], "user");
    assert!(body.get("password_hash").is_none() && body.get("password").is_none());
    assert_eq!(
        app.login("carol", "carols password").await.status(),
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_username_is_409() {
    let Some(app) = spawn_app().await else { return };
    let admin = app.token_for("root", Role::Admin).await;
    app.create_user("carol", Role::User).await;

    let response = app
        .client
        .post(app.url("/api/v1/users"))
        .bearer_auth(&admin)
        .json(&json!({"username": "carol", "password": "another password", "role": "admin"}))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::CONFLICT);
    error_code(response).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admins_create_users() {
    let Some(app) = spawn_app().await else { return };
    let user = app.token_for("alice", Role::User).await;

    let response = app
        .client
        .post(app.url("/api/v1/users"))
        .bearer_auth(&user)
        .json(&json!({"username": "mallory", "password": "mallorys password", "role": "admin"}))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        app.login("mallory", "mallorys password").await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_new_users_are_rejected_with_422() {
    let Some(app) = spawn_app().await else { return };
    let admin = app.token_for("root", Role::Admin).await;

    for body in [
        json!({"username": "", "password": "long enough password", "role": "user"}),
        json!({"username": "dave", "password": "short", "role": "user"}),
        json!({"username": "dave", "password": "long enough password", "role": "superuser"}),
        json!({"username": "dave"}),
        json!({"username": "dave", "password": "long enough password", "role": {}}),
        json!({"username": "dave", "password": "long enough password", "role": null}),
    ] {
        let response = app
            .client
            .post(app.url("/api/v1/users"))
            .bearer_auth(&admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}"
        );
        assert_eq!(error_code(response).await, "validation_failed", "{body}");
    }
}

tests::on_both_backends!(usernames_that_cannot_be_accounts_get_the_ordinary_401);

/// A NUL byte is an error to PostgreSQL, not a miss: the username's form is checked before
/// any lookup, so both backends give the same answer as for any unknown user.
async fn usernames_that_cannot_be_accounts_get_the_ordinary_401(backend: tests::Backend) {
    let Some(app) = tests::stack().backend(backend).spawn().await else {
        return;
    };
    app.create_user("admin", Role::Admin).await;

    for username in [
        "ad\u{0}min",
        "admin\u{0}",
        "ad min",
        "ädmin",
        &"a".repeat(65),
    ] {
        let response = app.login(username, PASSWORD).await;

        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{username:?}");
        assert_eq!(error_code(response).await, "unauthorized", "{username:?}");
    }
    assert_eq!(app.login("admin", PASSWORD).await.status(), StatusCode::OK);
}

/// A browser's whole session over real HTTP: sign in, read with the cookie alone, be refused a
/// change without the CSRF token, change the password with it, and find the old cookie dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_session_lives_in_its_cookie_and_dies_with_a_password_change() {
    let Some(app) = spawn_app().await else { return };
    app.create_user("alice", Role::User).await;
    let signed_in = app
        .client
        .post(app.url("/api/v1/session"))
        .json(&json!({"username": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), StatusCode::OK);
    let set_cookie = signed_in.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(set_cookie.contains("; HttpOnly"), "{set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let body: Value = signed_in.json().await.unwrap();
    let csrf = body["csrf_token"].as_str().unwrap().to_owned();
    let change = json!({"current_password": PASSWORD, "new_password": "a brand new passphrase"});
    let put = |csrf: Option<&str>| {
        let mut request = app
            .client
            .put(app.url("/api/v1/users/me/password"))
            .header("cookie", &cookie)
            .json(&change);
        if let Some(csrf) = csrf {
            request = request.header("x-csrf-token", csrf);
        }
        request.send()
    };

    let history = app
        .client
        .get(app.url("/api/v1/users/history"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    let without_csrf = put(None).await.unwrap();
    let with_csrf = put(Some(&csrf)).await.unwrap();
    let after = app
        .client
        .get(app.url("/api/v1/session"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();

    assert_eq!(history.status(), StatusCode::OK);
    assert_eq!(without_csrf.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_code(without_csrf).await, "csrf_failed");
    assert_eq!(with_csrf.status(), StatusCode::NO_CONTENT);
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED);
    let relogin = app.login("alice", "a brand new passphrase").await;
    assert_eq!(relogin.status(), StatusCode::OK);
}
