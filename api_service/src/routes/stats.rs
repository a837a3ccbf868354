//! `GET /api/v1/stats` (admins): the five most requested symbols.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use tracing::instrument;

use crate::auth::Admin;
use crate::error::ApiError;
use crate::state::AppState;

pub const TOP_N: u32 = 5;

#[derive(Serialize)]
pub struct StatsItem {
    stock: String,
    times_requested: i64,
}

#[instrument(skip_all, fields(request_id = %crate::request_id::current().unwrap_or_default(), user_id = admin.0.id))]
pub async fn stats(
    State(state): State<AppState>,
    admin: Admin,
) -> Result<Json<Vec<StatsItem>>, ApiError> {
    let top = state.store.top_stocks(TOP_N).await?;
    Ok(Json(
        top.into_iter()
            .map(|c| StatsItem {
                stock: c.stock,
                times_requested: c.times_requested,
            })
            .collect(),
    ))
}
