//! Request ids: one per request, from the caller's `x-request-id` when it is sane, otherwise a
//! fresh UUID. It is echoed in the response header, recorded on the request's trace span,
//! written into error envelopes and forwarded to the quote service, so one user request can
//! be followed through both services' logs.
//!
//! [`assign`] validates the caller's id (a client must not be able to inject megabytes or
//! control characters into our logs) or makes one; the request's middleware
//! (`routes::every_request`) echoes it and makes it the task-local current id, so code far
//! from the request (error rendering, transports) can read it without threading it through.

use std::future::Future;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use tower_http::request_id::RequestId;

/// Longest accepted incoming id; UUIDs are 36 characters, trace ids 32.
pub const MAX_REQUEST_ID_LEN: usize = 128;

tokio::task_local! {
    static CURRENT: Arc<str>;
}

/// The id of the request being served by this task, if any.
pub fn current() -> Option<String> {
    CURRENT.try_with(|id| id.to_string()).ok()
}

/// Runs `fut` with `id` as the current request id.
pub async fn scope<F: Future>(id: impl Into<Arc<str>>, fut: F) -> F::Output {
    CURRENT.scope(id.into(), fut).await
}

/// Short and printable ASCII without spaces: safe to log, to put in a header and to forward.
pub fn is_valid(value: &[u8]) -> bool {
    !value.is_empty()
        && value.len() <= MAX_REQUEST_ID_LEN
        && value.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// The request-id header, as a typed name (no parsing per request).
pub const HEADER: HeaderName = HeaderName::from_static(shared::REQUEST_ID_HEADER);

/// Gives `request` its id: the caller's `x-request-id` when it sent exactly one acceptable
/// value, else a fresh UUID. The id is set as the request's header and as its [`RequestId`]
/// extension (which the trace span reads), and returned for the response.
pub fn assign(request: &mut Request) -> HeaderValue {
    let mut sent = request.headers().get_all(&HEADER).iter();
    let id = match (sent.next(), sent.next()) {
        (Some(value), None) if is_valid(value.as_bytes()) => value.clone(),
        _ => fresh(),
    };
    request.headers_mut().insert(HEADER, id.clone());
    request.extensions_mut().insert(RequestId::new(id.clone()));
    id
}

fn fresh() -> HeaderValue {
    let mut buffer = uuid::Uuid::encode_buffer();
    let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buffer);
    HeaderValue::from_str(text).expect("a UUID is a valid header value")
}

/// The request id of a request as seen by middleware (for trace spans).
pub fn of_request<B>(request: &axum::http::Request<B>) -> &str {
    request
        .extensions()
        .get::<RequestId>()
        .map(RequestId::header_value)
        .and_then(|v: &HeaderValue| v.to_str().ok())
        .unwrap_or("unknown")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_uuids_and_trace_ids() {
        assert!(is_valid(b"6f1c1d2e-8d8e-4b4a-9d1b-2b9c6a8e1f00"));
        assert!(is_valid(b"abc_DEF.123:xyz"));
    }

    #[test]
    fn rejects_empty_long_and_unprintable() {
        assert!(!is_valid(b""));
        assert!(!is_valid(&[b'a'; MAX_REQUEST_ID_LEN + 1]));
        assert!(is_valid(&[b'a'; MAX_REQUEST_ID_LEN]));
        assert!(!is_valid(b"has space"));
        assert!(!is_valid(b"line\nbreak"));
        assert!(!is_valid("żółw".as_bytes()));
    }

    #[tokio::test]
    async fn current_is_scoped() {
        assert_eq!(current(), None);
        let inside = scope("r-1", async { current() }).await;
        assert_eq!(inside.as_deref(), Some("r-1"));
        assert_eq!(current(), None);
    }
}
