//! The answers the server gives by itself, before or instead of the application: in the
//! same JSON error envelope as the API's own errors (`{"error":{"code","message"}}`; there is
//! no request id, as no request reached the application).

use std::time::Duration;

use axum::body::Body;
use axum::http::header::{CONNECTION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use axum::http::{Response, StatusCode};

/// Stable codes of these answers.
pub const TOO_MANY_CONNECTIONS: &str = "too_many_connections";
pub const REQUEST_TIMEOUT: &str = "request_timeout";

fn envelope(code: &str, message: &str) -> String {
    serde_json::json!({ "error": { "code": code, "message": message } }).to_string()
}

/// 408 for a request whose body or handling outlasted the request timeout. The connection
/// is closed after it: the rest of the body may still be on its way.
pub(super) fn request_timeout(limit: Duration) -> Response<Body> {
    let message = format!("the request was not complete and answered within {limit:?}");
    let mut response = Response::new(Body::from(envelope(REQUEST_TIMEOUT, &message)));
    *response.status_mut() = StatusCode::REQUEST_TIMEOUT;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The raw HTTP/1.1 bytes of the 503 written straight to a connection over the limit,
/// without reading its request: no task or parser is spent on it.
pub(super) fn too_many_connections() -> Vec<u8> {
    let body = envelope(
        TOO_MANY_CONNECTIONS,
        "the server is at its connection limit; try again shortly",
    );
    format!(
        "HTTP/1.1 503 Service Unavailable\r\n\
         {CONTENT_TYPE}: application/json\r\n\
         content-length: {}\r\n\
         {RETRY_AFTER}: 1\r\n\
         {CONNECTION}: close\r\n\
         \r\n\
         {body}",
        body.len()
    )
    .into_bytes()
}
