//! Authorization angles the end-to-end spec does not already cover (it has: each user sees
//! only their own history, regular users get 403 on stats and user creation, a role claim in
//! a token grants nothing, deleted users' tokens stop working).

use std::time::Duration;

use api_service::store::Role;
use serde_json::{Value, json};
use tests::spawn_app;

fn next_link(response: &reqwest::Response) -> Option<String> {
    let link = response.headers().get("link")?.to_str().ok()?;
    let start = link.find('<')? + 1;
    let end = link.find('>')?;
    let target = &link[start..end];
    Some(target[target.find("/api/")?..].to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_in_a_request_selects_another_users_history() {
    let Some(app) = spawn_app().await else {
        return;
    };
    let alice = app.token_for("alice", Role::User).await;
    let bob = app.token_for("bob", Role::User).await;
    let alice_id = app
        .store
        .user_by_username("alice")
        .await
        .unwrap()
        .unwrap()
        .id;
    for _ in 0..3 {
        assert_eq!(app.stock(&alice, "aapl.us").await.status(), 200);
    }
    assert_eq!(app.stock(&bob, "msft.us").await.status(), 200);
    // A cursor from alice's pages, replayed by bob.
    let page = app
        .get_with_token("/api/v1/users/history?limit=1", &alice)
        .await;
    let alices_next = next_link(&page).expect("alice has a next page");

    for path in [
        format!("/api/v1/users/history?user_id={alice_id}"),
        "/api/v1/users/history?username=alice".to_owned(),
        format!("/api/v1/users/{alice_id}/history"),
        "/api/v1/users/alice/history".to_owned(),
        alices_next,
    ] {
        let response = app.get_with_token(&path, &bob).await;
        let status = response.status().as_u16();
        if status == 200 {
            let rows: Vec<Value> = response.json().await.unwrap();
            assert!(
                rows.iter().all(|r| r["symbol"] == "MSFT.US"),
                "{path}: bob sees only his own rows, got {rows:?}"
            );
        } else {
            assert!((400..500).contains(&status), "{path}: {status}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_method_changes_or_deletes_anyones_history() {
    let Some(app) = spawn_app().await else {
        return;
    };
    let alice = app.token_for("alice", Role::User).await;
    let admin = app.token_for("root", Role::Admin).await;
    assert_eq!(app.stock(&alice, "aapl.us").await.status(), 200);

    for token in [&alice, &admin] {
        for method in [
            reqwest::Method::DELETE,
            reqwest::Method::PUT,
            reqwest::Method::PATCH,
        ] {
            let response = app
                .client
                .request(method.clone(), app.url("/api/v1/users/history"))
                .bearer_auth(token)
                .json(&json!([]))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 405, "{method}");
        }
    }
    assert_eq!(app.history(&alice).await.len(), 1);
    assert!(
        app.history(&admin).await.is_empty(),
        "an admin's history is their own too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_callers_cannot_create_users() {
    let Some(app) = spawn_app().await else {
        return;
    };

    let response = app
        .client
        .post(app.url("/api/v1/users"))
        .json(&json!({"username": "mallory", "password": "mallorys password", "role": "admin"}))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 401);
    assert!(
        app.store
            .user_by_username("mallory")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_admins_token_loses_admin_powers() {
    let Some(app) = spawn_app().await else {
        return;
    };
    let admin = app.token_for("root", Role::Admin).await;
    assert_eq!(
        app.get_with_token("/api/v1/stats", &admin).await.status(),
        200
    );

    app.store.delete_user("root").await.unwrap();

    // Deleted behind the API's back: refused within USER_CACHE_TTL (2 s in tests).
    let refused = tests::load::wait_until(Duration::from_secs(3), || async {
        app.get_with_token("/api/v1/stats", &admin).await.status() == 401
    })
    .await;
    assert!(refused.is_some(), "stats still served to a deleted admin");
    let create = app
        .client
        .post(app.url("/api/v1/users"))
        .bearer_auth(&admin)
        .json(&json!({"username": "mallory", "password": "mallorys password", "role": "admin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(create.status(), 401);
    assert!(
        app.store
            .user_by_username("mallory")
            .await
            .unwrap()
            .is_none()
    );
}
