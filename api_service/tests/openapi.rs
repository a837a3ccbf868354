//! The OpenAPI document checked against the code and the running application:
//!
//! - it is OpenAPI 3.1 and the served document is the one generated from the code;
//! - the router's own route table (read from the router the application serves) equals the
//!   documented paths plus Swagger UI's, and each path answers exactly its documented
//!   methods;
//! - real responses, for every endpoint and the statuses a client meets (200/201, 400, 401,
//!   403, 404, 409, 413, 415, 422, 429, 502, 503, 504), are documented for that operation
//!   and validate against the documented schema, headers included;
//! - the error envelope is the one schema of every 4xx/5xx, and every example in the
//!   document validates against its schema.
//!
//! The application runs in-process on SQLite with the HTTP quote transport pointed at a
//! scripted peer, so nothing here needs RabbitMQ.

mod common;
#[path = "openapi/schema.rs"]
mod schema;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use api_service::openapi::{BEARER, DOCS_PATH, OPENAPI_PATH, SESSION_COOKIE};
use api_service::settings::TestTransport;
use api_service::state::AppState;
use api_service::store::provision::fresh_sqlite;
use api_service::{Settings, pagination, routes, users, web};
use axum::extract::Query;
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use common::{Running, quote_for};
use serde_json::{Value, json};
use shared::{ErrorCode, QuoteReply};
use tokio_util::sync::CancellationToken;

const ERROR_ENVELOPE: &str = "#/components/schemas/ErrorEnvelope";
/// Methods probed on every path to find out which ones the router answers.
const METHODS: &[&str] = &["get", "post", "put", "patch", "delete"];
const USER_CACHE_TTL: Duration = Duration::from_millis(200);

/// The API over HTTP to a scripted quote service (see [`quote_peer`]).
struct App {
    running: Running,
    peer_stop: CancellationToken,
}

impl std::ops::Deref for App {
    type Target = Running;
    fn deref(&self) -> &Running {
        &self.running
    }
}

/// The quote service, scripted by symbol: `s<n>` quotes n, `rejected` is a 502 from the feed,
/// `slow` outlives the RPC timeout, `down` is a 503 without a reply body (not ready), anything
/// else is not found.
async fn quote_peer() -> (String, CancellationToken) {
    let router = axum::Router::new()
        .route(
            "/api/v1/quote",
            axum::routing::get(
                |Query(params): Query<BTreeMap<String, String>>| async move {
                    let symbol = params.get("symbol").cloned().unwrap_or_default();
                    let reply = match symbol.as_str() {
                        "down" => {
                            return (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response();
                        }
                        "slow" => {
                            tokio::time::sleep(Duration::from_secs(3)).await;
                            QuoteReply::ok(quote_for("s1"))
                        }
                        "rejected" => QuoteReply::error(
                            ErrorCode::UpstreamRejected,
                            "stooq asks for an API key",
                        ),
                        s if s.starts_with('s') => QuoteReply::ok(quote_for(s)),
                        _ => QuoteReply::error(ErrorCode::NotFound, "no such symbol"),
                    };
                    let status = StatusCode::from_u16(reply.http_status()).unwrap();
                    (status, axum::Json(reply)).into_response()
                },
            ),
        )
        .route("/readyz", axum::routing::get(|| async { "ok" }));
    let (url, stop) = common::serve(router).await;
    (url, stop)
}

async fn start() -> App {
    let (peer, peer_stop) = quote_peer().await;
    let db = fresh_sqlite();
    let mut settings = Settings::for_tests(db.url(), TestTransport::Http { base_url: peer });
    settings.rpc_timeout = Duration::from_millis(700);
    // Short, so the database-down cases below do not wait long for cached users to expire.
    settings.user_cache_ttl = USER_CACHE_TTL;
    App {
        running: common::start(settings, db).await,
        peer_stop,
    }
}

impl App {
    async fn document(&self) -> Value {
        let reply = self
            .client
            .get(format!("{}{OPENAPI_PATH}", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), StatusCode::OK);
        reply.json().await.unwrap()
    }

    async fn stop(self) {
        self.peer_stop.cancel();
        self.running.stop().await;
    }
}

/// The generated document, as a JSON value.
fn generated() -> Value {
    serde_json::to_value(routes::openapi()).unwrap()
}

/// `(method, path)` of every documented operation.
fn documented_operations(document: &Value) -> BTreeSet<(String, String)> {
    let mut operations = BTreeSet::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in item.as_object().unwrap().keys() {
            operations.insert((method.clone(), path.clone()));
        }
    }
    operations
}

/// The paths in the route table of the router the application serves. axum has no API to
/// list routes, so this reads them from its `Debug` output (`RouteId(n): "/path"` entries of
/// the path router); the caller checks that the known routes are found, so a change in that
/// format fails the test instead of emptying the list.
fn registered_paths(state: AppState) -> BTreeSet<String> {
    let debug = format!("{:?}", routes::router(state));
    let start = debug
        .find("path_router:")
        .expect("Router's Debug output names its path router");
    let end = debug[start..]
        .find("fallback_router:")
        .map_or(debug.len(), |i| start + i);
    let section = &debug[start..end];
    let mut paths = BTreeSet::new();
    for piece in section.split("RouteId(").skip(1) {
        if let Some((_, rest)) = piece.split_once("): \"") {
            let path = rest.split('"').next().unwrap();
            paths.insert(path.to_owned());
        }
    }
    paths
}

/// Swagger UI's routes, the document's own and the web app's page and assets: served,
/// deliberately not in the document.
fn documentation_routes() -> BTreeSet<String> {
    [
        OPENAPI_PATH.to_owned(),
        DOCS_PATH.to_owned(),
        format!("{DOCS_PATH}/"),
        format!("{DOCS_PATH}/{{*rest}}"),
        web::PAGE_PATH.to_owned(),
        web::ASSET_ROUTE.to_owned(),
    ]
    .into_iter()
    .collect()
}

/// The response object documented for `status` on an operation, `$ref`s followed.
/// The documented path a request target falls under: itself, or a template whose `{param}`
/// segments stand for the target's (`/api/v1/users/bob` → `/api/v1/users/{username}`).
fn documented_path(document: &Value, target: &str) -> String {
    let path = target.split('?').next().unwrap();
    let paths = document["paths"].as_object().expect("paths");
    if paths.contains_key(path) {
        return path.to_owned();
    }
    let segments: Vec<&str> = path.split('/').collect();
    paths
        .keys()
        .find(|template| {
            let parts: Vec<&str> = template.split('/').collect();
            parts.len() == segments.len()
                && parts
                    .iter()
                    .zip(&segments)
                    .all(|(t, s)| t == s || (t.starts_with('{') && t.ends_with('}')))
        })
        .cloned()
        .unwrap_or_else(|| path.to_owned())
}

fn documented_response<'a>(
    document: &'a Value,
    method: &str,
    path: &str,
    status: u16,
) -> Result<&'a Value, String> {
    let path = documented_path(document, path);
    let operation = document["paths"]
        .get(&path)
        .and_then(|item| item.get(method))
        .ok_or_else(|| format!("{method} {path} is not documented"))?;
    let response = operation["responses"]
        .get(status.to_string())
        .ok_or_else(|| format!("{method} {path} answered {status}, which is not documented"))?;
    Ok(match response.get("$ref").and_then(Value::as_str) {
        Some(reference) => schema::resolve(document, reference),
        None => response,
    })
}

/// Headers a client acts on: when a response carries one, its documentation must say so.
const MEANINGFUL_HEADERS: &[&str] = &["link", "retry-after", "www-authenticate", "set-cookie"];

/// Checks one real response against the document: status documented for the operation,
/// content type documented, body valid against the schema, meaningful headers documented.
fn check_response(
    document: &Value,
    method: &str,
    path: &str,
    status: u16,
    headers: &reqwest::header::HeaderMap,
    body: &[u8],
) -> Result<(), String> {
    let response = documented_response(document, method, path, status)?;
    let documented_headers: BTreeSet<String> = response
        .get("headers")
        .and_then(Value::as_object)
        .map(|h| h.keys().map(|k| k.to_ascii_lowercase()).collect())
        .unwrap_or_default();
    for header in MEANINGFUL_HEADERS {
        if headers.contains_key(*header) && !documented_headers.contains(*header) {
            return Err(format!(
                "{method} {path} {status} sends a {header} header the document does not mention"
            ));
        }
    }
    let Some(content) = response.get("content").and_then(Value::as_object) else {
        return if body.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{method} {path} {status}: a body was sent but none is documented"
            ))
        };
    };
    let content_type = headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let essence = |t: &str| t.split(';').next().unwrap_or_default().trim().to_owned();
    let (_, media) = content
        .iter()
        .find(|(documented, _)| essence(documented) == essence(content_type))
        .ok_or_else(|| {
            format!(
                "{method} {path} {status}: content type {content_type:?} is not one of the documented {:?}",
                content.keys().collect::<Vec<_>>()
            )
        })?;
    let Some(schema) = media.get("schema") else {
        return Ok(());
    };
    let instance: Value = if essence(content_type) == "application/json" {
        serde_json::from_slice(body)
            .map_err(|e| format!("{method} {path} {status}: body is not JSON: {e}"))?
    } else {
        Value::String(String::from_utf8_lossy(body).into_owned())
    };
    let errors = schema::validate(document, schema, &instance);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{method} {path} {status}: body {instance} does not match the documented schema:\n  {}",
            errors.join("\n  ")
        ))
    }
}

#[tokio::test]
async fn document_is_openapi_3_1_and_served_as_generated() {
    let app = start().await;
    let served = app.document().await;
    let version = served["openapi"].as_str().expect("openapi version");
    assert!(version.starts_with("3.1."), "{version}");
    assert_eq!(
        served,
        generated(),
        "the served document is the generated one"
    );

    let docs = app
        .client
        .get(format!("{}{DOCS_PATH}/", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(docs.status(), StatusCode::OK);
    let html = docs.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    // The UI's initialiser points at our document, and its assets are embedded.
    let init = app
        .client
        .get(format!("{}{DOCS_PATH}/swagger-initializer.js", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(init.status(), StatusCode::OK);
    assert!(init.text().await.unwrap().contains(OPENAPI_PATH));
    let bundle = app
        .client
        .get(format!("{}{DOCS_PATH}/swagger-ui-bundle.js", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(bundle.status(), StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn every_route_is_documented_and_every_documented_route_is_served() {
    let app = start().await;
    let document = app.document().await;
    let documented = documented_operations(&document);
    let documented_paths: BTreeSet<String> = documented.iter().map(|(_, p)| p.clone()).collect();

    let registered = registered_paths(app.state.clone());
    let docs = documentation_routes();
    assert!(
        docs.is_subset(&registered) && registered.contains("/api/v1/stock"),
        "could not read the route table (axum's Debug format changed?): {registered:?}"
    );
    let undocumented: Vec<_> = registered
        .difference(&documented_paths)
        .filter(|p| !docs.contains(*p))
        .collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from the document: {undocumented:?}"
    );
    let unserved: Vec<_> = documented_paths.difference(&registered).collect();
    assert!(
        unserved.is_empty(),
        "documented paths the router lacks: {unserved:?}"
    );

    // Which methods each path really answers: anything but the router's 405.
    let mut served = BTreeSet::new();
    for path in &documented_paths {
        for method in METHODS {
            let reply = app
                .client
                .request(
                    Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
                    format!("{}{path}", app.base),
                )
                .send()
                .await
                .unwrap();
            let status = reply.status();
            let body: Value = reply.json().await.unwrap_or(Value::Null);
            assert_ne!(
                (status, body["error"]["code"].as_str()),
                (StatusCode::NOT_FOUND, Some("not_found")),
                "{method} {path} fell through to the router's fallback"
            );
            if status != StatusCode::METHOD_NOT_ALLOWED {
                served.insert((method.to_string(), path.clone()));
            }
        }
    }
    assert_eq!(served, documented, "methods served vs documented");

    // The endpoints this API promises, so a dropped annotation cannot pass unnoticed.
    for (method, path) in [
        ("post", "/api/v1/login"),
        ("get", "/api/v1/stock"),
        ("get", "/api/v1/quotes"),
        ("get", "/api/v1/users/history"),
        ("get", "/api/v1/stats"),
        ("post", "/api/v1/users"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
    ] {
        assert!(
            documented.contains(&(method.into(), path.into())),
            "{method} {path}"
        );
    }
    app.stop().await;
}

#[test]
fn document_describes_parameters_security_and_the_error_envelope() {
    let document = generated();
    let scheme = &document["components"]["securitySchemes"][BEARER];
    assert_eq!(scheme["type"], "http");
    assert_eq!(scheme["scheme"], "bearer");
    assert_eq!(scheme["bearerFormat"], "JWT");

    let cookie = &document["components"]["securitySchemes"][SESSION_COOKIE];
    assert_eq!(cookie["type"], "apiKey");
    assert_eq!(cookie["in"], "cookie");
    assert_eq!(cookie["name"], "sq_session");

    let public = [
        "post /api/v1/login",
        "post /api/v1/session",
        "get /healthz",
        "get /readyz",
        "get /metrics",
    ];
    for (method, path) in documented_operations(&document) {
        let operation = &document["paths"][&path][&method];
        let at = format!("{method} {path}");
        assert!(operation["summary"].is_string(), "{at} has no summary");
        assert!(operation["tags"].is_array(), "{at} has no tag");
        let security = operation.get("security");
        if public.contains(&at.as_str()) {
            assert!(security.is_none(), "{at} is public but documents security");
        } else {
            assert_eq!(
                security,
                Some(&json!([{BEARER: []}, {SESSION_COOKIE: []}])),
                "{at} must require the bearer or the session cookie"
            );
            for status in [401, 500] {
                documented_response(&document, &method, &path, status).unwrap();
            }
        }
        for (status, _) in operation["responses"].as_object().unwrap() {
            let status: u16 = status.parse().unwrap();
            let response = documented_response(&document, &method, &path, status).unwrap();
            if status >= 400 && !(path == "/readyz" && status == 503) {
                assert_eq!(
                    response["content"]["application/json"]["schema"]["$ref"], ERROR_ENVELOPE,
                    "{at} {status} must use the error envelope"
                );
            }
        }
    }

    let parameters = |path: &str| -> BTreeMap<String, Value> {
        document["paths"][path]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["name"].as_str().unwrap().to_owned(), p.clone()))
            .collect()
    };
    // The rules the server enforces, from the constants its validators use.
    let stock = parameters("/api/v1/stock");
    assert_eq!(stock["q"]["in"], "query");
    assert_eq!(stock["q"]["required"], true);
    assert_eq!(stock["q"]["schema"]["pattern"], shared::symbol::pattern());
    let history = parameters("/api/v1/users/history");
    assert_eq!(history["limit"]["required"], false);
    assert_eq!(history["limit"]["schema"]["type"], "integer");
    assert_eq!(history["limit"]["schema"]["minimum"], pagination::MIN_LIMIT);
    assert_eq!(history["limit"]["schema"]["maximum"], pagination::MAX_LIMIT);
    assert_eq!(history["cursor"]["required"], false);
    assert_eq!(
        history["cursor"]["schema"]["pattern"],
        pagination::cursor_pattern()
    );
    assert_eq!(history["symbol"]["required"], false);
    let filter = regex::Regex::new(history["symbol"]["schema"]["pattern"].as_str().unwrap());
    let filter = filter.unwrap();
    for raw in [
        "",
        " ",
        "aapl.us",
        " ^SPX ",
        "a/b",
        "x".repeat(21).as_str(),
        "a b",
    ] {
        let accepted = raw.trim().is_empty() || shared::Symbol::parse(raw).is_ok();
        assert_eq!(filter.is_match(raw), accepted, "{raw:?}");
    }
    let csv = parameters("/api/v1/users/history.csv");
    assert_eq!(csv["symbol"], history["symbol"]);
    let new_user = &document["components"]["schemas"]["CreateUserRequest"]["properties"];
    assert_eq!(new_user["username"]["pattern"], users::username_pattern());
    assert_eq!(new_user["username"]["maxLength"], users::USERNAME_MAX_CHARS);
    assert_eq!(new_user["password"]["minLength"], users::PASSWORD_MIN_CHARS);
    assert_eq!(new_user["password"]["maxLength"], users::PASSWORD_MAX_CHARS);
    let ok = documented_response(&document, "get", "/api/v1/users/history", 200).unwrap();
    assert!(
        ok["headers"]["Link"].is_object(),
        "the Link header is documented"
    );
}

/// Every example the document gives (responses, request bodies, schemas) is itself valid,
/// so the examples shown in Swagger UI are ones the API could really send.
#[test]
fn every_example_in_the_document_validates() {
    let document = generated();
    let mut checked = 0;
    let mut check = |schema: &Value, example: &Value, at: String| {
        let errors = schema::validate(&document, schema, example);
        assert!(errors.is_empty(), "example at {at} is invalid: {errors:?}");
        checked += 1;
    };
    let mut media_types = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            for (status, response) in operation["responses"].as_object().unwrap() {
                let response = match response.get("$ref").and_then(Value::as_str) {
                    Some(r) => schema::resolve(&document, r),
                    None => response,
                };
                media_types.push((
                    format!("{method} {path} {status}"),
                    response["content"].clone(),
                ));
            }
            media_types.push((
                format!("{method} {path} request"),
                operation["requestBody"]["content"].clone(),
            ));
        }
    }
    for (at, content) in media_types {
        for (media_type, media) in content.as_object().into_iter().flatten() {
            let Some(schema) = media.get("schema") else {
                continue;
            };
            if let Some(example) = media.get("example") {
                check(schema, example, format!("{at} {media_type}"));
            }
            for (name, example) in media["examples"].as_object().into_iter().flatten() {
                check(
                    schema,
                    &example["value"],
                    format!("{at} {media_type} {name:?}"),
                );
            }
        }
    }
    for (name, component) in document["components"]["schemas"].as_object().unwrap() {
        for (field, property) in component["properties"].as_object().into_iter().flatten() {
            if let Some(example) = property.get("example") {
                check(property, example, format!("schema {name}.{field}"));
            }
            for example in property["examples"].as_array().into_iter().flatten() {
                check(property, example, format!("schema {name}.{field}"));
            }
        }
    }
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                if let Some(example) = parameter.get("example") {
                    let at = format!("{method} {path} parameter {}", parameter["name"]);
                    check(&parameter["schema"], example, at);
                }
            }
        }
    }
    assert!(checked > 30, "only {checked} examples found");
}

enum Auth {
    None,
    Alice,
    /// Another token of alice's, for the case that logs it out.
    Spare,
    Root,
    Garbage,
    /// A third token of alice's, for the session cases that sign it out.
    Other,
    /// That third token as the session cookie, with no CSRF header.
    CookieWithoutCsrf,
}

enum Body {
    None,
    Json(Value),
    Raw(Option<&'static str>, Vec<u8>),
}

struct Case {
    method: &'static str,
    /// Path and query, e.g. `/api/v1/stock?q=s5`.
    target: String,
    auth: Auth,
    body: Body,
    expect: u16,
    /// The error code expected in the envelope.
    expect_code: Option<&'static str>,
}

fn case(method: &'static str, target: &str, auth: Auth, body: Body, expect: u16) -> Case {
    Case {
        method,
        target: target.to_owned(),
        auth,
        body,
        expect,
        expect_code: None,
    }
}

impl Case {
    fn code(mut self, code: &'static str) -> Case {
        self.expect_code = Some(code);
        self
    }
}

struct Tokens {
    alice: String,
    spare: String,
    root: String,
    other: String,
}

/// Sends one case, checks its status and validates the response against the document.
/// Returns the response headers for extra checks.
async fn run(
    app: &App,
    document: &Value,
    tokens: &Tokens,
    case: Case,
) -> reqwest::header::HeaderMap {
    let method = Method::from_bytes(case.method.to_uppercase().as_bytes()).unwrap();
    let mut request = app
        .client
        .request(method, format!("{}{}", app.base, case.target));
    match case.auth {
        Auth::None => {}
        Auth::Alice => request = request.bearer_auth(&tokens.alice),
        Auth::Spare => request = request.bearer_auth(&tokens.spare),
        Auth::Root => request = request.bearer_auth(&tokens.root),
        Auth::Garbage => request = request.bearer_auth("not-a-jwt"),
        Auth::Other => request = request.bearer_auth(&tokens.other),
        Auth::CookieWithoutCsrf => {
            request = request.header(
                reqwest::header::COOKIE,
                format!("sq_session={}", tokens.other),
            );
        }
    }
    match case.body {
        Body::None => {}
        Body::Json(value) => request = request.json(&value),
        Body::Raw(content_type, bytes) => {
            if let Some(content_type) = content_type {
                request = request.header(reqwest::header::CONTENT_TYPE, content_type);
            }
            request = request.body(bytes);
        }
    }
    let reply = request.send().await.unwrap();
    let status = reply.status().as_u16();
    let headers = reply.headers().clone();
    let body = reply.bytes().await.unwrap();
    let label = format!("{} {}", case.method.to_uppercase(), case.target);
    assert_eq!(
        status,
        case.expect,
        "{label}: {}",
        String::from_utf8_lossy(&body)
    );
    if let Some(code) = case.expect_code {
        let json: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["error"]["code"], code, "{label}");
    }
    let path = case.target.split('?').next().unwrap();
    if let Err(problem) = check_response(document, case.method, path, status, &headers, &body) {
        panic!("{label}: {problem}");
    }
    headers
}

#[tokio::test]
async fn real_responses_validate_against_the_documented_schemas() {
    let app = start().await;
    let document = app.document().await;
    let tokens = Tokens {
        alice: app.login("alice").await,
        spare: app.login("alice").await,
        root: app.login("root").await,
        other: app.login("alice").await,
    };
    let mut seen: BTreeMap<String, BTreeSet<u16>> = BTreeMap::new();
    let big = vec![b' '; 20 * 1024];
    let too_many = format!(
        "/api/v1/quotes?q={}",
        vec!["s1"; shared::MAX_BATCH_SYMBOLS + 1].join(",")
    );
    let too_many_symbols = format!(
        "/api/v1/stream?q={}",
        (0..50)
            .map(|i| format!("s{i}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let cases = vec![
        case("get", "/healthz", Auth::None, Body::None, 200),
        case("get", "/readyz", Auth::None, Body::None, 200),
        // Login.
        case(
            "post",
            "/api/v1/login",
            Auth::None,
            Body::Json(json!({"username": "alice", "password": "alice-password"})),
            200,
        ),
        case(
            "post",
            "/api/v1/login",
            Auth::None,
            Body::Raw(Some("application/json"), b"{not json".to_vec()),
            400,
        )
        .code("bad_request"),
        case(
            "post",
            "/api/v1/login",
            Auth::None,
            Body::Json(json!({"username": "ghost", "password": "wrong-password"})),
            401,
        )
        .code("unauthorized"),
        case(
            "post",
            "/api/v1/login",
            Auth::None,
            Body::Raw(Some("application/json"), big.clone()),
            413,
        )
        .code("payload_too_large"),
        case(
            "post",
            "/api/v1/login",
            Auth::None,
            Body::Raw(None, br#"{"username":"a","password":"b"}"#.to_vec()),
            415,
        )
        .code("unsupported_media_type"),
        case(
            "post",
            "/api/v1/login",
            Auth::None,
            Body::Json(json!({"username": "alice"})),
            422,
        )
        .code("validation_failed"),
        // Quotes.
        case("get", "/api/v1/stock?q=s5", Auth::Alice, Body::None, 200),
        case("get", "/api/v1/stock?q=s6", Auth::Alice, Body::None, 200),
        case("get", "/api/v1/stock", Auth::Alice, Body::None, 400).code("bad_request"),
        case("get", "/api/v1/stock?q=a%2Fb", Auth::Alice, Body::None, 400).code("invalid_symbol"),
        case("get", "/api/v1/stock?q=s5", Auth::None, Body::None, 401).code("unauthorized"),
        case("get", "/api/v1/stock?q=s5", Auth::Garbage, Body::None, 401).code("unauthorized"),
        case("get", "/api/v1/stream", Auth::Alice, Body::None, 400).code("bad_request"),
        case(
            "get",
            "/api/v1/stream?q=a%2Fb",
            Auth::Alice,
            Body::None,
            400,
        )
        .code("invalid_symbol"),
        case("get", "/api/v1/stream?q=s5", Auth::None, Body::None, 401).code("unauthorized"),
        case("get", &too_many_symbols, Auth::Alice, Body::None, 429).code("too_many_requests"),
        case(
            "get",
            "/api/v1/stock?q=nosuch.us",
            Auth::Alice,
            Body::None,
            404,
        )
        .code("not_found"),
        case(
            "get",
            "/api/v1/stock?q=rejected",
            Auth::Alice,
            Body::None,
            502,
        )
        .code("upstream_rejected"),
        case("get", "/api/v1/stock?q=down", Auth::Alice, Body::None, 503)
            .code("quote_service_unavailable"),
        case("get", "/api/v1/stock?q=slow", Auth::Alice, Body::None, 504).code("timeout"),
        // History: two entries, pages of one, so the first page links to the next.
        case(
            "get",
            "/api/v1/users/history?limit=1",
            Auth::Alice,
            Body::None,
            200,
        ),
        case("get", "/api/v1/users/history", Auth::Root, Body::None, 200),
        case(
            "get",
            "/api/v1/users/history?limit=0",
            Auth::Alice,
            Body::None,
            400,
        )
        .code("bad_request"),
        case(
            "get",
            "/api/v1/users/history?cursor=nonsense",
            Auth::Alice,
            Body::None,
            400,
        )
        .code("bad_request"),
        case("get", "/api/v1/users/history", Auth::None, Body::None, 401).code("unauthorized"),
        case(
            "get",
            "/api/v1/users/history?symbol=S5&limit=1",
            Auth::Alice,
            Body::None,
            200,
        ),
        case(
            "get",
            "/api/v1/users/history?symbol=a%2Fb",
            Auth::Alice,
            Body::None,
            400,
        )
        .code("invalid_symbol"),
        case(
            "get",
            "/api/v1/users/history.csv",
            Auth::Alice,
            Body::None,
            200,
        ),
        case(
            "get",
            "/api/v1/users/history.csv?symbol=s6",
            Auth::Alice,
            Body::None,
            200,
        ),
        case(
            "get",
            "/api/v1/users/history.csv?symbol=a%2Fb",
            Auth::Alice,
            Body::None,
            400,
        )
        .code("invalid_symbol"),
        case(
            "get",
            "/api/v1/users/history.csv",
            Auth::None,
            Body::None,
            401,
        )
        .code("unauthorized"),
        // Batches (this peer speaks only v1: the API falls back to one request per symbol).
        case(
            "get",
            "/api/v1/quotes?q=s7,nosuch.us,a%2Fb,S7,rejected",
            Auth::Alice,
            Body::None,
            200,
        ),
        case("get", "/api/v1/quotes", Auth::Alice, Body::None, 400).code("bad_request"),
        case("get", "/api/v1/quotes?q=", Auth::Alice, Body::None, 400).code("bad_request"),
        case("get", &too_many, Auth::Alice, Body::None, 400).code("bad_request"),
        case("get", "/api/v1/quotes?q=s5", Auth::None, Body::None, 401).code("unauthorized"),
        case("get", "/api/v1/quotes?q=down", Auth::Alice, Body::None, 503)
            .code("quote_service_unavailable"),
        case("get", "/api/v1/quotes?q=slow", Auth::Alice, Body::None, 504).code("timeout"),
        // Admin.
        case("get", "/api/v1/stats", Auth::Root, Body::None, 200),
        case("get", "/api/v1/stats", Auth::None, Body::None, 401).code("unauthorized"),
        case("get", "/api/v1/stats", Auth::Alice, Body::None, 403).code("forbidden"),
        case(
            "post",
            "/api/v1/users",
            Auth::Root,
            Body::Json(json!({"username": "bob", "password": "bob-password", "role": "user"})),
            201,
        ),
        case(
            "post",
            "/api/v1/users",
            Auth::Root,
            Body::Json(json!({"username": "bob", "password": "bob-password", "role": "user"})),
            409,
        )
        .code("conflict"),
        case(
            "post",
            "/api/v1/users",
            Auth::Root,
            Body::Raw(Some("application/json"), b"[".to_vec()),
            400,
        )
        .code("bad_request"),
        case(
            "post",
            "/api/v1/users",
            Auth::None,
            Body::Json(json!({"username": "carol", "password": "carol-password", "role": "user"})),
            401,
        )
        .code("unauthorized"),
        case(
            "post",
            "/api/v1/users",
            Auth::Alice,
            Body::Json(json!({"username": "carol", "password": "carol-password", "role": "user"})),
            403,
        )
        .code("forbidden"),
        case(
            "post",
            "/api/v1/users",
            Auth::Root,
            Body::Raw(Some("application/json"), big.clone()),
            413,
        )
        .code("payload_too_large"),
        case(
            "post",
            "/api/v1/users",
            Auth::Root,
            Body::Raw(Some("text/plain"), b"{}".to_vec()),
            415,
        )
        .code("unsupported_media_type"),
        case(
            "post",
            "/api/v1/users",
            Auth::Root,
            Body::Json(json!({"username": "carol", "password": "short", "role": "user"})),
            422,
        )
        .code("validation_failed"),
        case(
            "post",
            "/api/v1/users",
            Auth::Root,
            Body::Json(json!({"username": "carol", "password": "carol-password", "role": "boss"})),
            422,
        )
        .code("validation_failed"),
        case("delete", "/api/v1/users/root", Auth::Root, Body::None, 409).code("conflict"),
        case("get", "/api/v1/users?limit=1", Auth::Root, Body::None, 200),
        case(
            "get",
            "/api/v1/users?cursor=bob",
            Auth::Root,
            Body::None,
            200,
        ),
        case("get", "/api/v1/users?limit=0", Auth::Root, Body::None, 400).code("bad_request"),
        case("get", "/api/v1/users", Auth::Alice, Body::None, 403).code("forbidden"),
        case("get", "/api/v1/users", Auth::None, Body::None, 401).code("unauthorized"),
        case(
            "patch",
            "/api/v1/users/bob",
            Auth::Root,
            Body::Json(json!({"role": "admin"})),
            200,
        ),
        case(
            "patch",
            "/api/v1/users/bob",
            Auth::Root,
            Body::Json(json!({})),
            200,
        ),
        case(
            "patch",
            "/api/v1/users/bob",
            Auth::Root,
            Body::Json(json!({"password": "short"})),
            422,
        )
        .code("validation_failed"),
        case(
            "patch",
            "/api/v1/users/nobody",
            Auth::Root,
            Body::Json(json!({"role": "user"})),
            404,
        )
        .code("not_found"),
        case(
            "patch",
            "/api/v1/users/bob",
            Auth::Root,
            Body::Raw(Some("application/json"), b"[".to_vec()),
            400,
        )
        .code("bad_request"),
        case(
            "patch",
            "/api/v1/users/bob",
            Auth::Root,
            Body::Raw(Some("application/json"), big.clone()),
            413,
        )
        .code("payload_too_large"),
        case(
            "patch",
            "/api/v1/users/bob",
            Auth::Root,
            Body::Raw(Some("text/plain"), b"{}".to_vec()),
            415,
        )
        .code("unsupported_media_type"),
        case(
            "patch",
            "/api/v1/users/bob",
            Auth::None,
            Body::Json(json!({"role": "user"})),
            401,
        )
        .code("unauthorized"),
        case(
            "patch",
            "/api/v1/users/bob",
            Auth::Alice,
            Body::Json(json!({"role": "user"})),
            403,
        )
        .code("forbidden"),
        case(
            "delete",
            "/api/v1/users/nobody",
            Auth::Root,
            Body::None,
            404,
        )
        .code("not_found"),
        case("delete", "/api/v1/users/bob", Auth::None, Body::None, 401).code("unauthorized"),
        case("delete", "/api/v1/users/bob", Auth::Alice, Body::None, 403).code("forbidden"),
        case("delete", "/api/v1/users/bob", Auth::Root, Body::None, 204),
        case("post", "/api/v1/logout", Auth::None, Body::None, 401).code("unauthorized"),
        // Browser sessions.
        case(
            "post",
            "/api/v1/session",
            Auth::None,
            Body::Json(json!({"username": "alice", "password": "alice-password"})),
            200,
        ),
        case(
            "post",
            "/api/v1/session",
            Auth::None,
            Body::Json(json!({"username": "alice", "password": "wrong-password"})),
            401,
        )
        .code("unauthorized"),
        case(
            "post",
            "/api/v1/session",
            Auth::None,
            Body::Raw(Some("application/json"), b"{".to_vec()),
            400,
        )
        .code("bad_request"),
        case("get", "/api/v1/session", Auth::Other, Body::None, 200),
        case("get", "/api/v1/session", Auth::None, Body::None, 401).code("unauthorized"),
        case(
            "delete",
            "/api/v1/session",
            Auth::CookieWithoutCsrf,
            Body::None,
            403,
        )
        .code("csrf_failed"),
        case("delete", "/api/v1/session", Auth::Other, Body::None, 204),
        case("delete", "/api/v1/session", Auth::Other, Body::None, 401).code("unauthorized"),
        case("post", "/api/v1/logout", Auth::Spare, Body::None, 204),
        case("post", "/api/v1/logout", Auth::Spare, Body::None, 401).code("unauthorized"),
        // Own password: the wrong current one, a weak new one, then a real change (which
        // signs out every token of alice's: the last case that uses one).
        case(
            "put",
            "/api/v1/users/me/password",
            Auth::Alice,
            Body::Json(
                json!({"current_password": "not-it-at-all", "new_password": "a-brand-new-one"}),
            ),
            401,
        )
        .code("unauthorized"),
        case(
            "put",
            "/api/v1/users/me/password",
            Auth::Alice,
            Body::Json(json!({"current_password": "alice-password", "new_password": "short"})),
            422,
        )
        .code("validation_failed"),
        case(
            "put",
            "/api/v1/users/me/password",
            Auth::Alice,
            Body::Json(
                json!({"current_password": "alice-password", "new_password": "a-brand-new-one"}),
            ),
            204,
        ),
        case("get", "/metrics", Auth::None, Body::None, 200),
    ];
    for case in cases {
        let path = documented_path(&document, &case.target);
        let (method, status, target) = (case.method, case.expect, case.target.clone());
        let headers = run(&app, &document, &tokens, case).await;
        seen.entry(format!("{method} {path}"))
            .or_default()
            .insert(status);
        if target == "/api/v1/users/history?limit=1" {
            let link = headers.get("link").expect("a Link to the next page");
            assert!(link.to_str().unwrap().contains("rel=\"next\""), "{link:?}");
        }
        if status == 401 {
            assert!(headers.contains_key("www-authenticate"), "{target}");
        }
    }

    // 200 from the stream: an event stream, as documented (it never ends, so only its head
    // and first event are read). As root: the last case above signed every token of alice's out.
    let mut stream = app
        .client
        .get(format!("{}/api/v1/stream?q=s5", app.base))
        .bearer_auth(&tokens.root)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    let content_type = stream.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    let documented = documented_response(&document, "get", "/api/v1/stream", 200).unwrap();
    assert!(
        documented["content"].get(&content_type).is_some(),
        "{content_type}"
    );
    let first = stream.chunk().await.unwrap().expect("a first event");
    assert!(
        String::from_utf8_lossy(&first).contains("event: quote"),
        "{first:?}"
    );
    drop(stream);
    seen.entry("get /api/v1/stream".into())
        .or_default()
        .insert(200);

    // 429: failed logins for one username until it is locked out.
    let mut locked = false;
    for _ in 0..10 {
        let reply = app
            .client
            .post(format!("{}/api/v1/login", app.base))
            .json(&json!({"username": "mallory", "password": "wrong-password"}))
            .send()
            .await
            .unwrap();
        if reply.status() == StatusCode::TOO_MANY_REQUESTS {
            let headers = reply.headers().clone();
            let body = reply.bytes().await.unwrap();
            check_response(&document, "post", "/api/v1/login", 429, &headers, &body).unwrap();
            assert!(headers.contains_key("retry-after"));
            seen.entry("post /api/v1/login".into())
                .or_default()
                .insert(429);
            locked = true;
            break;
        }
    }
    assert!(locked, "repeated failed logins were never throttled");

    // 503 from the database: close the store under the running server.
    app.state.store.close().await;
    // The user cache may still vouch for the tokens' users for up to its TTL; what follows
    // must fail on the database itself.
    tokio::time::sleep(USER_CACHE_TTL + Duration::from_millis(100)).await;
    let unavailable = vec![
        case("get", "/readyz", Auth::None, Body::None, 503),
        case(
            "post",
            "/api/v1/login",
            Auth::None,
            Body::Json(json!({"username": "alice", "password": "alice-password"})),
            503,
        )
        .code("database_unavailable"),
        case("get", "/api/v1/stock?q=s5", Auth::Alice, Body::None, 503)
            .code("database_unavailable"),
        case("get", "/api/v1/users/history", Auth::Alice, Body::None, 503)
            .code("database_unavailable"),
        case(
            "get",
            "/api/v1/users/history.csv",
            Auth::Alice,
            Body::None,
            503,
        )
        .code("database_unavailable"),
        case("get", "/api/v1/stats", Auth::Root, Body::None, 503).code("database_unavailable"),
        case(
            "post",
            "/api/v1/users",
            Auth::Root,
            Body::Json(json!({"username": "dave", "password": "dave-password", "role": "user"})),
            503,
        )
        .code("database_unavailable"),
    ];
    for case in unavailable {
        let path = documented_path(&document, &case.target);
        let (method, status) = (case.method, case.expect);
        let headers = run(&app, &document, &tokens, case).await;
        if path != "/readyz" {
            assert_eq!(headers["retry-after"], "1", "{method} {path}");
        }
        seen.entry(format!("{method} {path}"))
            .or_default()
            .insert(status);
    }

    // Every documented operation was exercised, with every status the brief names.
    let operations: BTreeSet<String> = documented_operations(&document)
        .into_iter()
        .map(|(m, p)| format!("{m} {p}"))
        .collect();
    let exercised: BTreeSet<String> = seen.keys().cloned().collect();
    assert_eq!(exercised, operations);
    let statuses: BTreeSet<u16> = seen.values().flatten().copied().collect();
    for status in [
        200, 201, 400, 401, 403, 404, 409, 413, 415, 422, 429, 502, 503, 504,
    ] {
        assert!(
            statuses.contains(&status),
            "no {status} was validated: {seen:?}"
        );
    }
    app.stop().await;
}

/// The validator must be able to fail: real bodies, broken in the ways drift breaks them.
#[test]
fn the_validator_rejects_bodies_that_break_the_schema() {
    let document = generated();
    let schema = |name: &str| json!({"$ref": format!("#/components/schemas/{name}")});
    let user =
        json!({"id": 2, "username": "bob", "role": "user", "created_at": "2024-05-10T20:00:09Z"});
    assert_eq!(
        schema::validate(&document, &schema("UserView"), &user),
        Vec::<String>::new()
    );

    let mut broken = Vec::new();
    let mut missing = user.clone();
    missing.as_object_mut().unwrap().remove("role");
    broken.push(("missing required field", missing));
    broken.push((
        "wrong type",
        json!({"id": "2", "username": "bob", "role": "user", "created_at": "2024-05-10T20:00:09Z"}),
    ));
    broken.push((
        "unknown enum value",
        json!({"id": 2, "username": "bob", "role": "boss", "created_at": "2024-05-10T20:00:09Z"}),
    ));
    broken.push((
        "bad date-time",
        json!({"id": 2, "username": "bob", "role": "user", "created_at": "yesterday"}),
    ));
    broken.push(("undocumented field", json!({"id": 2, "username": "bob", "role": "user", "created_at": "2024-05-10T20:00:09Z", "password_hash": "x"})));
    broken.push((
        "null where not nullable",
        json!({"id": 2, "username": null, "role": "user", "created_at": "2024-05-10T20:00:09Z"}),
    ));
    broken.push(("not an object", json!([user])));
    for (why, body) in broken {
        assert!(
            !schema::validate(&document, &schema("UserView"), &body).is_empty(),
            "{why} passed: {body}"
        );
    }
    let new_user = json!({"username": "bob", "password": "correct horse battery", "role": "user"});
    assert!(schema::validate(&document, &schema("CreateUserRequest"), &new_user).is_empty());
    let mut spaced = new_user.clone();
    spaced["username"] = json!("bob smith");
    assert!(
        !schema::validate(&document, &schema("CreateUserRequest"), &spaced).is_empty(),
        "a username breaking the pattern passed"
    );

    let envelope = schema("ErrorEnvelope");
    let ok = json!({"error": {"code": "not_found", "message": "x", "request_id": "r"}});
    assert!(schema::validate(&document, &envelope, &ok).is_empty());
    let no_request_id = json!({"error": {"code": "not_found", "message": "x"}});
    assert!(schema::validate(&document, &envelope, &no_request_id).is_empty());
    let flat = json!({"code": "not_found", "message": "x"});
    assert!(!schema::validate(&document, &envelope, &flat).is_empty());

    let history = json!({"type": "array", "items": schema("HistoryItem")});
    let item = json!({"date": "2024-05-10T20:00:09Z", "name": "N", "symbol": "S1", "open": 1.0, "high": 1, "low": 1.0, "close": 1.0});
    assert!(schema::validate(&document, &history, &json!([item])).is_empty());
    let mut bad_item = item.clone();
    bad_item["close"] = json!("1.0");
    assert!(!schema::validate(&document, &history, &json!([item, bad_item])).is_empty());
}

#[test]
#[should_panic(expected = "does not check")]
fn the_validator_refuses_keywords_it_does_not_know() {
    let document = json!({});
    schema::validate(
        &document,
        &json!({"type": "number", "multipleOf": 2}),
        &json!(4),
    );
}
