//! The web app as a browser meets it: the page, its assets, caching and security headers.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use regex::Regex;
use serde_json::Value;
use tower::ServiceExt;

use super::assets::all_assets;
use super::{PAGE_POLICY, asset_dir, page_html};
use crate::routes;
use crate::test_support::{self, FakeTransport, MemoryStore};

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: header::HeaderName) -> &str {
        self.headers
            .get(&name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

async fn state() -> crate::state::AppState {
    let store = Arc::new(MemoryStore::default());
    let transport = Arc::new(FakeTransport::default());
    test_support::state(store, transport, Duration::from_secs(2)).await
}

async fn app() -> Router {
    routes::router(state().await)
}

async fn send(router: &Router, request: Request<Body>) -> Reply {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), 1 << 22)
        .await
        .unwrap()
        .to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

async fn get(router: &Router, uri: &str) -> Reply {
    send(router, Request::get(uri).body(Body::empty()).unwrap()).await
}

/// Every `/assets/...` URL the page references.
fn asset_urls(html: &str) -> Vec<String> {
    let re = Regex::new(r#"(?:src|href)="(/assets/[^"]+)""#).unwrap();
    re.captures_iter(html).map(|c| c[1].to_owned()).collect()
}

fn asset_url(name: &str) -> String {
    format!("/assets/{}/{name}", asset_dir())
}

// ---- the page ----

#[tokio::test]
async fn the_page_is_html_that_is_never_cached() {
    let app = app().await;

    let reply = get(&app, "/").await;

    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.header(header::CONTENT_TYPE),
        "text/html; charset=utf-8"
    );
    assert_eq!(reply.header(header::CACHE_CONTROL), "no-store");
    assert!(
        String::from_utf8(reply.body)
            .unwrap()
            .starts_with("<!doctype html>")
    );
}

#[tokio::test]
async fn the_page_names_the_streams_symbol_cap_for_the_watchlist() {
    let state = state().await;
    let cap = state.streams.config.max_symbols;
    let app = routes::router(state);

    let reply = get(&app, "/").await;

    let html = String::from_utf8(reply.body).unwrap();
    assert!(
        html.contains(&format!(
            r#"<meta name="stream-max-symbols" content="{cap}">"#
        )),
        "{html}"
    );
    assert!(!html.contains("{{"), "a placeholder left unfilled: {html}");
}

#[tokio::test]
async fn the_page_carries_the_strict_content_security_policy() {
    let app = app().await;

    let reply = get(&app, "/").await;

    let policy = reply.header(header::CONTENT_SECURITY_POLICY);
    assert_eq!(policy, PAGE_POLICY);
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ] {
        assert!(policy.contains(directive), "{directive} missing: {policy}");
    }
    assert!(!policy.contains("unsafe"), "{policy}");
}

#[test]
fn the_page_has_no_inline_script_handler_or_style() {
    let html = page_html();
    let scripts = Regex::new(r"(?s)<script([^>]*)>(.*?)</script>").unwrap();
    let mut count = 0;
    for script in scripts.captures_iter(html) {
        count += 1;
        assert!(script[1].contains("src="), "inline script: {}", &script[0]);
        assert!(
            script[2].trim().is_empty(),
            "script with a body: {}",
            &script[0]
        );
    }
    assert_eq!(count, 1, "the page loads exactly its entry module");
    assert!(!html.contains("<style"), "inline <style> element");
    assert!(
        !Regex::new(r#"(?i)\s(on[a-z]+|style)\s*="#)
            .unwrap()
            .is_match(html),
        "inline event handler or style attribute"
    );
    assert!(!html.contains("javascript:"));
}

#[test]
fn the_page_loads_its_entry_as_a_module() {
    assert!(page_html().contains(&format!(
        r#"<script type="module" src="{}"></script>"#,
        asset_url("app.js")
    )));
}

#[tokio::test]
async fn every_asset_the_page_references_is_served() {
    let app = app().await;
    let urls = asset_urls(page_html());
    assert!(urls.len() >= 3, "page references {urls:?}");

    for url in urls {
        let reply = get(&app, &url).await;
        assert_eq!(reply.status, StatusCode::OK, "{url}");
        assert!(!reply.body.is_empty(), "{url}");
    }
}

#[test]
fn every_module_import_names_an_embedded_asset() {
    let names: BTreeSet<&str> = all_assets().iter().map(|a| a.name).collect();
    let import =
        Regex::new(r#"(?m)^\s*(?:import|export)\b[^'"]*?from\s+['"]([^'"]+)['"]"#).unwrap();
    let mut seen = 0;
    for asset in all_assets().iter().filter(|a| a.name.ends_with(".js")) {
        let source = std::str::from_utf8(asset.bytes).unwrap();
        for target in import.captures_iter(source) {
            seen += 1;
            let target = &target[1];
            let name = target
                .strip_prefix("./")
                .unwrap_or_else(|| panic!("{}: non-relative import {target}", asset.name));
            assert!(
                names.contains(name),
                "{} imports missing {target}",
                asset.name
            );
        }
    }
    assert!(seen > 5, "the import pattern found only {seen} imports");
}

#[test]
fn every_file_in_the_web_directory_is_embedded() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    let on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name != "index.html")
        .collect();
    let embedded: BTreeSet<String> = all_assets().iter().map(|a| a.name.to_owned()).collect();
    assert_eq!(on_disk, embedded);
}

// ---- assets ----

#[tokio::test]
async fn assets_are_immutable_with_a_strong_etag() {
    let app = app().await;

    let reply = get(&app, &asset_url("app.js")).await;

    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.header(header::CACHE_CONTROL),
        "public, max-age=31536000, immutable"
    );
    let etag = reply.header(header::ETAG);
    assert!(
        Regex::new(r#"^"[0-9a-f]{16}"$"#).unwrap().is_match(etag),
        "{etag}"
    );
}

#[tokio::test]
async fn assets_have_their_content_types() {
    let app = app().await;
    for (name, content_type) in [
        ("app.js", "text/javascript; charset=utf-8"),
        ("view-quote.js", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
        ("favicon.svg", "image/svg+xml"),
    ] {
        let reply = get(&app, &asset_url(name)).await;
        assert_eq!(reply.status, StatusCode::OK, "{name}");
        assert_eq!(reply.header(header::CONTENT_TYPE), content_type, "{name}");
    }
}

#[tokio::test]
async fn a_matching_if_none_match_gets_304_without_a_body() {
    let app = app().await;
    let url = asset_url("style.css");
    let etag = get(&app, &url).await.header(header::ETAG).to_owned();

    for presented in [
        etag.clone(),
        format!("W/{etag}"),
        format!("\"other\", {etag}"),
        "*".to_owned(),
    ] {
        let request = Request::get(&url)
            .header(header::IF_NONE_MATCH, &presented)
            .body(Body::empty())
            .unwrap();
        let reply = send(&app, request).await;
        assert_eq!(reply.status, StatusCode::NOT_MODIFIED, "{presented}");
        assert!(reply.body.is_empty());
        assert_eq!(reply.header(header::ETAG), etag);
        assert_eq!(
            reply.header(header::CACHE_CONTROL),
            "public, max-age=31536000, immutable"
        );
    }
}

#[tokio::test]
async fn a_stale_if_none_match_gets_the_file() {
    let app = app().await;
    let request = Request::get(asset_url("style.css"))
        .header(header::IF_NONE_MATCH, "\"0000000000000000\"")
        .body(Body::empty())
        .unwrap();

    let reply = send(&app, request).await;

    assert_eq!(reply.status, StatusCode::OK);
    assert!(!reply.body.is_empty());
}

#[tokio::test]
async fn etags_differ_between_files() {
    let etags: BTreeSet<String> = all_assets().iter().map(|a| a.etag().to_owned()).collect();
    assert_eq!(etags.len(), all_assets().len());
}

#[tokio::test]
async fn unknown_asset_paths_get_the_json_404_envelope() {
    let app = app().await;
    let old_dir = "/assets/0123456789abcdef/app.js".to_owned();
    for uri in [
        asset_url("nope.js"),
        old_dir,
        format!("/assets/{}", asset_dir()),
        format!("/assets/{}/", asset_dir()),
        format!("/assets/{}/../index.html", asset_dir()),
        "/assets/".to_owned(),
        format!("/assets/{}/app.js/more", asset_dir()),
    ] {
        let reply = get(&app, &uri).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(reply.header(header::CONTENT_TYPE), "application/json");
        assert_eq!(reply.json()["error"]["code"], "not_found", "{uri}");
    }
}

// ---- security headers everywhere ----

#[tokio::test]
async fn every_response_is_nosniff_without_referrer() {
    let app = app().await;
    for uri in [
        "/",
        &asset_url("app.js"),
        "/healthz",
        "/api/v1/users/history",
        "/no/such/path",
        "/api/v1/openapi.json",
        "/docs/",
    ] {
        let reply = get(&app, uri).await;
        assert_eq!(
            reply.header(header::X_CONTENT_TYPE_OPTIONS),
            "nosniff",
            "{uri}"
        );
        assert_eq!(
            reply.header(header::REFERRER_POLICY),
            "no-referrer",
            "{uri}"
        );
    }
}

#[tokio::test]
async fn responses_without_their_own_policy_cannot_be_framed() {
    let app = app().await;
    for uri in ["/healthz", "/api/v1/users/history", "/docs/"] {
        let reply = get(&app, uri).await;
        assert_eq!(
            reply.header(header::CONTENT_SECURITY_POLICY),
            "frame-ancestors 'none'",
            "{uri}"
        );
    }
}

#[tokio::test]
async fn swagger_ui_still_loads_its_own_assets_with_their_types() {
    let app = app().await;
    let page = get(&app, "/docs/").await;
    assert_eq!(page.status, StatusCode::OK);
    let html = String::from_utf8(page.body).unwrap();
    let script = Regex::new(r#"<script src="\./([^"]+)""#).unwrap();
    let scripts: Vec<String> = script
        .captures_iter(&html)
        .map(|c| c[1].to_owned())
        .collect();
    assert!(!scripts.is_empty(), "{html}");

    for name in scripts {
        let reply = get(&app, &format!("/docs/{name}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{name}");
        // nosniff makes a browser refuse a script served under a non-script type.
        assert!(
            reply.header(header::CONTENT_TYPE).contains("javascript"),
            "{name}: {}",
            reply.header(header::CONTENT_TYPE)
        );
    }
}

// ---- listeners ----

#[tokio::test]
async fn the_public_listener_serves_the_app_and_the_internal_one_does_not() {
    let state = state().await;
    let public = routes::public_router(state.clone());
    let internal = routes::internal_router(state);

    assert_eq!(get(&public, "/").await.status, StatusCode::OK);
    assert_eq!(
        get(&public, &asset_url("app.js")).await.status,
        StatusCode::OK
    );
    assert_eq!(get(&internal, "/").await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        get(&internal, "/healthz")
            .await
            .header(header::X_CONTENT_TYPE_OPTIONS),
        "nosniff"
    );
}
