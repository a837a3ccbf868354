//! `GET /api/v1/stock?q=SYMBOL`: a quote from the quote service, recorded in the caller's
//! history before it is returned.

use std::time::Instant;

use axum::Json;
use axum::extract::State;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use shared::Symbol;
use tracing::instrument;

use crate::auth::CurrentUser;
use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::request_id;
use crate::state::AppState;
use crate::store::NewHistoryEntry;

#[derive(Deserialize)]
pub struct StockParams {
    q: Option<String>,
}

#[derive(Serialize)]
pub struct StockResponse {
    symbol: String,
    company_name: String,
    quote: f64,
}

#[instrument(skip_all, fields(request_id = %crate::request_id::current().unwrap_or_default(), user_id = user.id, symbol = tracing::field::Empty))]
pub async fn stock(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiQuery(params): ApiQuery<StockParams>,
) -> Result<Json<StockResponse>, ApiError> {
    let raw = params.q.ok_or_else(|| {
        ApiError::BadRequest("missing query parameter q (e.g. ?q=aapl.us)".into())
    })?;
    let symbol = Symbol::parse(&raw).map_err(|err| ApiError::InvalidSymbol(err.to_string()))?;
    tracing::Span::current().record("symbol", symbol.as_str());

    let requested_at = Utc::now();
    let request_id = request_id::current().unwrap_or_default();
    let started = Instant::now();
    let result = state.transport.get_quote(&symbol, &request_id).await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(err) => err.outcome(),
    };
    state.metrics.quote_rpc(outcome, started.elapsed());
    let quote = result?;

    // Committed before the 200 leaves: a client that got its quote finds it in its history.
    record(
        &state,
        user.id,
        NewHistoryEntry {
            requested_at,
            symbol: quote.symbol.clone(),
            name: quote.name.clone(),
            open: quote.open,
            high: quote.high,
            low: quote.low,
            close: quote.close,
        },
    )
    .await?;

    Ok(Json(StockResponse {
        symbol: quote.symbol,
        company_name: quote.name,
        quote: quote.close,
    }))
}

#[instrument(skip_all, fields(user_id = user_id))]
async fn record(state: &AppState, user_id: i64, entry: NewHistoryEntry) -> Result<(), ApiError> {
    state.store.record_quote(user_id, entry).await?;
    Ok(())
}
