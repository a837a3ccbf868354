//! `GET /api/v1/users/history`: the caller's own quote requests, newest first, keyset
//! paginated with `?limit=` and an opaque `?cursor=` from the `Link` header.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::SecondsFormat;
use serde::{Deserialize, Serialize};
use tracing::instrument;

use crate::auth::CurrentUser;
use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::pagination::{Cursor, parse_limit};
use crate::state::AppState;
use crate::store::HistoryEntry;

#[derive(Deserialize)]
pub struct HistoryParams {
    limit: Option<String>,
    cursor: Option<String>,
}

#[derive(Serialize)]
pub struct HistoryItem {
    date: String,
    name: String,
    symbol: String,
    open: f64,
    high: f64,
    low: f64,
    close: f64,
}

impl From<HistoryEntry> for HistoryItem {
    fn from(e: HistoryEntry) -> Self {
        Self {
            date: e.requested_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            name: e.name,
            symbol: e.symbol,
            open: e.open,
            high: e.high,
            low: e.low,
            close: e.close,
        }
    }
}

#[instrument(skip_all, fields(request_id = %crate::request_id::current().unwrap_or_default(), user_id = user.id))]
pub async fn history(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiQuery(params): ApiQuery<HistoryParams>,
) -> Result<Response, ApiError> {
    let limit = parse_limit(params.limit.as_deref()).map_err(ApiError::BadRequest)?;
    let before = match params.cursor.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(raw) => Some(Cursor::decode(raw).map_err(ApiError::BadRequest)?),
    };
    // One extra row tells whether another page exists without a COUNT.
    let mut rows = state
        .store
        .history_page(user.id, before.map(|c| c.0), limit + 1)
        .await?;
    let has_more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next = has_more
        .then(|| rows.last().map(|last| Cursor(last.id)))
        .flatten();

    let items: Vec<HistoryItem> = rows.into_iter().map(HistoryItem::from).collect();
    let mut response = Json(items).into_response();
    if let Some(cursor) = next {
        let link = format!(
            "</api/v1/users/history?limit={limit}&cursor={}>; rel=\"next\"",
            cursor.encode()
        );
        if let Ok(value) = HeaderValue::from_str(&link) {
            response.headers_mut().insert(header::LINK, value);
        }
    }
    Ok(response)
}
