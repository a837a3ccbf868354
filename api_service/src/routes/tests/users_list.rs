//! `GET /api/v1/users`: the admins' paged list of accounts.

use super::*;

async fn add_users(app: &TestApp, names: &[&str]) {
    for name in names {
        test_support::add_user(&app.store, name, "long-enough-password", Role::User).await;
    }
}

fn usernames(reply: &Reply) -> Vec<String> {
    reply
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn admins_page_through_every_user_in_username_order() {
    let app = app().await; // alice and root
    add_users(&app, &["zed", "bob", "Carol", "_x", "dan.k"]).await;
    let admin = app.login("root", "root-password").await;

    let mut seen = Vec::new();
    let mut next = Some("/api/v1/users?limit=2".to_owned());
    let mut pages = 0;
    while let Some(uri) = next {
        let reply = app.get(&uri, Some(&admin)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert!(reply.body.as_array().unwrap().len() <= 2);
        seen.extend(usernames(&reply));
        next = next_link(&reply);
        pages += 1;
    }

    // Byte order: upper case before `_` before lower case.
    assert_eq!(
        seen,
        ["Carol", "_x", "alice", "bob", "dan.k", "root", "zed"]
    );
    assert_eq!(pages, 4);
}

#[tokio::test]
async fn a_listed_user_shows_name_role_and_creation_never_the_hash() {
    let app = app().await;
    let admin = app.login("root", "root-password").await;

    let reply = app.get("/api/v1/users", Some(&admin)).await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert!(
        reply.headers.get(header::LINK).is_none(),
        "one page holds both"
    );
    let root = &reply.body[1];
    assert_eq!(root["username"], "root");
    assert_eq!(root["role"], "admin");
    assert!(root["created_at"].is_string());
    assert!(!reply.body.to_string().contains("argon2"), "{}", reply.body);
}

#[tokio::test]
async fn the_user_list_is_for_admins_only() {
    let app = app().await;
    let user = app.login("alice", "alice-password").await;

    let reply = app.get("/api/v1/users", Some(&user)).await;
    let anonymous = app.get("/api/v1/users", None).await;

    assert_envelope(&reply, StatusCode::FORBIDDEN, "forbidden");
    assert_envelope(&anonymous, StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn the_user_list_refuses_bad_paging_parameters() {
    let app = app().await;
    let admin = app.login("root", "root-password").await;

    for uri in [
        "/api/v1/users?limit=0",
        "/api/v1/users?limit=1001",
        "/api/v1/users?limit=ten",
        "/api/v1/users?cursor=a%20b",
        "/api/v1/users?cursor=%C5%BC",
    ] {
        let reply = app.get(uri, Some(&admin)).await;
        assert_envelope(&reply, StatusCode::BAD_REQUEST, "bad_request");
    }
    let past_the_end = app.get("/api/v1/users?cursor=zzz", Some(&admin)).await;
    assert_eq!(past_the_end.status, StatusCode::OK);
    assert_eq!(past_the_end.body, json!([]));
}
