//! `GET /api/v1/stats` (admins): the five most requested symbols.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use tracing::instrument;

use crate::auth::Admin;
use crate::error::ApiError;
use crate::state::AppState;

pub const TOP_N: u32 = 5;

#[derive(Serialize, utoipa::ToSchema)]
pub struct StatsItem {
    /// Lower-case symbol (requests are counted case-insensitively).
    #[schema(example = "aapl.us")]
    stock: String,
    #[schema(example = 42)]
    times_requested: i64,
}

#[utoipa::path(
    get,
    path = "/api/v1/stats",
    tag = "admin",
    summary = "The five most requested symbols (admins only)",
    description = "Counts every quote served to any user; highest count first, ties by symbol.",
    security(("bearer" = []), ("session_cookie" = [])),
    responses(
        (status = 200, description = "Up to five symbols with their request counts", body = [StatsItem]),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 500, response = crate::openapi::Internal),
        (status = 503, response = crate::openapi::DatabaseUnavailable),
    )
)]
#[instrument(skip_all, fields(request_id = %crate::request_id::current().unwrap_or_default(), user_id = admin.0.id))]
pub async fn stats(
    State(state): State<AppState>,
    admin: Admin,
) -> Result<Json<Vec<StatsItem>>, ApiError> {
    let store = std::sync::Arc::clone(&state.store);
    // Concurrent admins share one query that started after they all arrived.
    let top = state
        .top_stocks
        .get(move || async move { store.top_stocks(TOP_N).await })
        .await?;
    Ok(Json(
        top.into_iter()
            .map(|c| StatsItem {
                stock: c.stock,
                times_requested: c.times_requested,
            })
            .collect(),
    ))
}
