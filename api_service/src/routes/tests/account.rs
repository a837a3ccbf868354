//! `PUT /api/v1/users/me/password`: users change their own password.

use super::*;

fn change(current: &str, new: &str) -> String {
    json!({"current_password": current, "new_password": new}).to_string()
}

const URI: &str = "/api/v1/users/me/password";

#[tokio::test]
async fn a_user_changes_their_password_and_every_token_of_theirs_stops_working() {
    let app = app().await;
    let token = app.login("alice", "alice-password").await;
    let other = app.login("alice", "alice-password").await;

    let reply = app
        .send_json(
            "PUT",
            URI,
            &token,
            Some(&change("alice-password", "a-brand-new-one")),
        )
        .await;

    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    for old in [&token, &other] {
        let after = app.get("/api/v1/users/history", Some(old)).await;
        assert_envelope(&after, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let refused = app
        .post(
            "/api/v1/login",
            None,
            &json!({"username": "alice", "password": "alice-password"}).to_string(),
        )
        .await;
    assert_envelope(&refused, StatusCode::UNAUTHORIZED, "unauthorized");
    app.login("alice", "a-brand-new-one").await;
}

#[tokio::test]
async fn a_wrong_current_password_is_401_and_changes_nothing() {
    let app = app().await;
    let token = app.login("alice", "alice-password").await;

    let reply = app
        .send_json(
            "PUT",
            URI,
            &token,
            Some(&change("not-my-password", "a-brand-new-one")),
        )
        .await;

    assert_envelope(&reply, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(
        reply.body["error"]["message"],
        "the current password is wrong"
    );
    let still = app.get("/api/v1/users/history", Some(&token)).await;
    assert_eq!(still.status, StatusCode::OK, "the token still works");
    app.login("alice", "alice-password").await;
}

#[tokio::test]
async fn wrong_current_passwords_count_toward_the_login_throttle() {
    let app = app().await; // 5 failures lock a username for one address
    let token = app.login("alice", "alice-password").await;
    for _ in 0..5 {
        let reply = app
            .send_json(
                "PUT",
                URI,
                &token,
                Some(&change("guess-guess", "a-brand-new-one")),
            )
            .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.body);
    }

    let right = app
        .send_json(
            "PUT",
            URI,
            &token,
            Some(&change("alice-password", "a-brand-new-one")),
        )
        .await;
    let login = app.send(login_request("alice", "alice-password")).await;

    assert_envelope(&right, StatusCode::TOO_MANY_REQUESTS, "too_many_requests");
    assert!(right.headers.contains_key(header::RETRY_AFTER));
    assert_envelope(&login, StatusCode::TOO_MANY_REQUESTS, "too_many_requests");
}

#[tokio::test]
async fn a_weak_new_password_is_422_naming_the_field_before_any_check() {
    let app = app().await;
    let token = app.login("alice", "alice-password").await;

    for weak in ["short", &"x".repeat(129)] {
        let reply = app
            .send_json("PUT", URI, &token, Some(&change("alice-password", weak)))
            .await;
        assert_envelope(
            &reply,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        );
        let message = reply.body["error"]["message"].as_str().unwrap();
        assert!(message.contains("new_password"), "{message}");
    }
    let missing = app
        .send_json(
            "PUT",
            URI,
            &token,
            Some(r#"{"current_password":"alice-password"}"#),
        )
        .await;
    assert_envelope(
        &missing,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    app.login("alice", "alice-password").await;
}

#[tokio::test]
async fn changing_ones_password_needs_a_token() {
    let app = app().await;

    let reply = app
        .post(URI, None, &change("alice-password", "a-brand-new-one"))
        .await;
    let put = app
        .send(
            Request::put(URI)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(change("alice-password", "a-brand-new-one")))
                .unwrap(),
        )
        .await;

    assert_envelope(&reply, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    assert_envelope(&put, StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn by_cookie_the_change_needs_the_csrf_token() {
    let app = app().await;
    let reply = app
        .send(
            Request::post("/api/v1/session")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(
                    json!({"username": "alice", "password": "alice-password"}).to_string(),
                ))
                .unwrap(),
        )
        .await;
    let set_cookie = reply.headers[header::SET_COOKIE].to_str().unwrap();
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let csrf = reply.body["csrf_token"].as_str().unwrap().to_owned();
    let put = |csrf: Option<String>| {
        let mut request = Request::put(URI)
            .header(header::COOKIE, &cookie)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(csrf) = csrf {
            request = request.header("x-csrf-token", csrf);
        }
        request
            .body(Body::from(change("alice-password", "a-brand-new-one")))
            .unwrap()
    };

    let without = app.send(put(None)).await;
    let with = app.send(put(Some(csrf))).await;

    assert_envelope(&without, StatusCode::FORBIDDEN, "csrf_failed");
    assert_eq!(with.status, StatusCode::NO_CONTENT, "{}", with.body);
}
