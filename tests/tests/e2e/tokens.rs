//! Every token attack the API must refuse with 401 and `WWW-Authenticate: Bearer`.

use api_service::auth::{Claims, JwtKeys};
use api_service::store::Role;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use reqwest::StatusCode;
use secrecy::SecretString;
use std::time::Duration;
use tests::{JWT_AUDIENCE, JWT_ISSUER, JWT_SECRET, TestApp, spawn_app};

fn keys(secret: &str) -> JwtKeys {
    JwtKeys::new(
        &SecretString::from(secret.to_owned()),
        JWT_ISSUER,
        JWT_AUDIENCE,
        Duration::from_secs(3600),
    )
    .unwrap()
}

fn valid_claims(user_id: i64, role: Role) -> Claims {
    let now = jsonwebtoken::get_current_timestamp();
    Claims {
        sub: user_id.to_string(),
        role,
        iat: now,
        nbf: None,
        exp: now + 600,
        iss: JWT_ISSUER.into(),
        aud: JWT_AUDIENCE.into(),
        jti: uuid::Uuid::new_v4().to_string(),
        ver: 0,
    }
}

/// header.payload signed with HMAC-SHA256 under the real secret, whatever `alg` claims.
fn hmac_signed(header_json: &str, claims: &Claims) -> String {
    let header = URL_SAFE_NO_PAD.encode(header_json);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap());
    let message = format!("{header}.{payload}");
    let key = EncodingKey::from_secret(JWT_SECRET.as_bytes());
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256).unwrap();
    format!("{message}.{signature}")
}

async fn assert_refused(app: &TestApp, token: &str, what: &str) {
    let response = app.get_with_token("/api/v1/users/history", token).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{what}");
    let challenge = response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(challenge.starts_with("Bearer"), "{what}: {challenge}");
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["error"]["code"].is_string(), "{what}: envelope");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correctly_signed_token_is_accepted() {
    let Some(app) = spawn_app().await else { return };
    let id = app.create_user("alice", Role::User).await;

    let token = keys(JWT_SECRET)
        .sign(&valid_claims(id, Role::User))
        .unwrap();

    let response = app.get_with_token("/api/v1/users/history", &token).await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "the forging helpers produce valid tokens"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_expired_and_malformed_tokens_are_401() {
    let Some(app) = spawn_app().await else { return };
    let id = app.create_user("alice", Role::User).await;
    let real = keys(JWT_SECRET);
    let now = jsonwebtoken::get_current_timestamp();
    let claims = valid_claims(id, Role::User);
    let good = real.sign(&claims).unwrap();
    let [header, payload, signature]: [&str; 3] =
        good.split('.').collect::<Vec<_>>().try_into().unwrap();

    let mut cases: Vec<(String, &str)> = vec![
        (
            real.sign(&Claims {
                exp: now - 3600,
                iat: now - 7200,
                ..claims.clone()
            })
            .unwrap(),
            "expired",
        ),
        (
            real.sign(&Claims {
                nbf: Some(now + 3600),
                ..claims.clone()
            })
            .unwrap(),
            "not yet valid",
        ),
        (
            real.sign(&Claims {
                iss: "someone-else".into(),
                ..claims.clone()
            })
            .unwrap(),
            "wrong issuer",
        ),
        (
            real.sign(&Claims {
                aud: "another-api".into(),
                ..claims.clone()
            })
            .unwrap(),
            "wrong audience",
        ),
        (
            real.sign(&Claims {
                sub: "not-a-number".into(),
                ..claims.clone()
            })
            .unwrap(),
            "bad subject",
        ),
        (
            keys("a-completely-different-secret-of-32-bytes!")
                .sign(&claims)
                .unwrap(),
            "wrong key",
        ),
        (
            hmac_signed(r#"{"alg":"none","typ":"JWT"}"#, &claims),
            "alg none, signed anyway",
        ),
        (
            hmac_signed(r#"{"alg":"RS256","typ":"JWT"}"#, &claims),
            "HS/RS confusion",
        ),
        (
            hmac_signed(r#"{"alg":"HS512","typ":"JWT"}"#, &claims),
            "other HMAC alg",
        ),
        ("not-a-token".into(), "garbage"),
        (format!("{header}.{payload}"), "two segments"),
        (format!("{header}.{payload}.{signature}.x"), "four segments"),
        (String::new(), "empty"),
    ];
    let none_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    cases.push((
        format!("{none_header}.{payload}."),
        "alg none, no signature",
    ));
    let admin_claims = Claims {
        role: Role::Admin,
        ..claims.clone()
    };
    let tampered = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&admin_claims).unwrap());
    cases.push((
        format!("{header}.{tampered}.{signature}"),
        "tampered role claim",
    ));

    for (token, what) in &cases {
        assert_refused(&app, token, what).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_non_bearer_authorization_is_401() {
    let Some(app) = spawn_app().await else { return };

    for header in [
        None,
        Some("Basic YWxpY2U6cHc="),
        Some("Bearer"),
        Some("bearer  "),
    ] {
        let mut request = app.client.get(app.url("/api/v1/users/history"));
        if let Some(value) = header {
            request = request.header("authorization", value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{header:?}");
        assert!(
            response.headers().contains_key("www-authenticate"),
            "{header:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_users_token_stops_working() {
    let Some(app) = spawn_app().await else { return };
    let token = app.token_for("alice", Role::User).await;
    assert_eq!(
        app.get_with_token("/api/v1/users/history", &token)
            .await
            .status(),
        StatusCode::OK
    );

    app.store.delete_user("alice").await.unwrap();

    // Deleted behind the API's back (as the CLI does): refused within the documented
    // USER_CACHE_TTL bound (2 s in tests).
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let status = app
            .get_with_token("/api/v1/users/history", &token)
            .await
            .status();
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "token still accepted: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_claim_does_not_grant_admin() {
    let Some(app) = spawn_app().await else { return };
    let id = app.create_user("alice", Role::User).await;

    // Correctly signed, but the database says alice is a user.
    let token = keys(JWT_SECRET)
        .sign(&valid_claims(id, Role::Admin))
        .unwrap();

    let response = app.get_with_token("/api/v1/stats", &token).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}
