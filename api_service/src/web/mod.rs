//! The web app: one HTML page at `/` and its scripts, styles and icon under
//! `/assets/<content-hash>/<file>`, all embedded in the binary at compile time (no Node
//! toolchain, no CDN, nothing read from disk at run time). The page talks to the JSON API on
//! the same origin with the session cookie; see `api_service/web/` for the app itself.
//!
//! Caching: the HTML is `no-store` (it names the current asset directory, and a signed-out
//! page must not come back from a cache); assets are immutable under a name that changes with
//! their content, and answer `If-None-Match` with 304.
//!
//! [`add_security_headers`] adds `nosniff` and `Referrer-Policy` to every response of every
//! listener; the page itself carries the strict [`PAGE_POLICY`].

mod assets;
mod headers;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

pub use assets::{ASSETS_PREFIX, Asset, asset_dir, find_asset, page_for, page_html};
pub use headers::{PAGE_POLICY, add_security_headers, is_api_path};

use crate::error::ApiError;
use crate::state::AppState;

/// Assets never change under their URL (the URL names the content), so caches may keep them
/// for a year without asking again.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// Where the page is served.
pub const PAGE_PATH: &str = "/";
/// The route template of the assets (see [`ASSETS_PREFIX`]).
pub const ASSET_ROUTE: &str = "/assets/{hash}/{file}";

/// `GET /` and `GET /assets/{hash}/{file}`: served, not part of the API or its document.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(PAGE_PATH, get(page))
        .route(ASSET_ROUTE, get(asset))
}

/// The app's single HTML page.
async fn page(State(state): State<AppState>) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(PAGE_POLICY),
            ),
        ],
        page_for(state.streams.config.max_symbols),
    )
        .into_response()
}

/// One embedded asset, or the JSON 404 envelope for a file that does not exist or a hash that
/// is not the current one (an old page asking for old files must not get new ones cached
/// forever under the old name).
async fn asset(uri: Uri, request_headers: HeaderMap) -> Result<Response, ApiError> {
    let found = uri
        .path()
        .strip_prefix(ASSETS_PREFIX)
        .and_then(|rest| rest.split_once('/'))
        .filter(|(hash, _)| *hash == asset_dir())
        .and_then(|(_, file)| find_asset(file))
        .ok_or_else(|| ApiError::NotFound("no such asset".into()))?;

    let etag = HeaderValue::from_str(found.etag()).map_err(ApiError::internal)?;
    let cache = HeaderValue::from_static(IMMUTABLE);
    if if_none_match_hits(&request_headers, found.etag()) {
        return Ok((
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, etag), (header::CACHE_CONTROL, cache)],
        )
            .into_response());
    }
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(found.content_type),
            ),
            (header::ETAG, etag),
            (header::CACHE_CONTROL, cache),
        ],
        found.bytes,
    )
        .into_response())
}

/// Whether `If-None-Match` names `etag` (or is `*`). The comparison is the weak one RFC 9110
/// prescribes for this header: a `W/` prefix on the client's copy does not matter.
fn if_none_match_hits(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|tag| tag.trim())
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

#[cfg(test)]
mod tests;
