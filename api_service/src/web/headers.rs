//! Security headers. Every response (API, docs, errors, the page) is marked `nosniff` and
//! sends no `Referer`; any response that sets no policy of its own may not be framed. The
//! page sets [`PAGE_POLICY`]: scripts, styles and connections only from this origin, no
//! inline script or style, no plugins, no `<base>`, no framing, forms post only here.
//!
//! Every `/api/` response that says nothing about caching is `Cache-Control: no-store`: the
//! API's answers are a user's own data (quotes, history, accounts, the CSRF token), and no
//! browser cache or proxy may keep them for Back after signing out or for another user.

use axum::http::{HeaderMap, HeaderValue, header};

/// The Content-Security-Policy of the web app's HTML.
pub const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; \
    frame-ancestors 'none'";

/// For responses without a policy of their own (JSON, Swagger UI): forbids framing only, so
/// Swagger UI keeps working while it cannot be clickjacked.
const NO_FRAMING: &str = "frame-ancestors 'none'";

/// Where the API lives: its answers are never stored.
const API_PREFIX: &str = "/api/";

/// Whether a request path is the API's, whose answers are never stored.
pub fn is_api_path(path: &str) -> bool {
    path.starts_with(API_PREFIX)
}

/// Adds the security headers to a response (see the module's doc), after its handler and
/// every other layer have set theirs.
pub fn add_security_headers(headers: &mut HeaderMap, is_api: bool) {
    if is_api && !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(NO_FRAMING),
        );
    }
}
