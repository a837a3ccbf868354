//! `GET /api/v1/stock?q=SYMBOL`: a quote from the quote service, recorded in the caller's
//! history before it is returned.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use serde::{Deserialize, Serialize};
use shared::Symbol;
use tracing::instrument;
use utoipa::openapi::Required;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};

use crate::auth::CurrentUser;
use crate::error::{ApiError, ErrorEnvelope};
use crate::extract::ApiQuery;
use crate::request_id;
use crate::state::AppState;
use crate::store::NewHistoryEntry;

#[derive(Deserialize)]
pub struct StockParams {
    q: Option<String>,
}

/// Written by hand so the documented pattern is [`shared::symbol::pattern`], built from the
/// rules [`Symbol::parse`] applies.
impl utoipa::IntoParams for StockParams {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let symbol = ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .pattern(Some(shared::symbol::pattern()));
        vec![
            ParameterBuilder::new()
                .name("q")
                .parameter_in(ParameterIn::Query)
                .required(Required::True)
                .description(Some(format!(
                    "Stock symbol as stooq spells it (case-insensitive): ASCII letters, digits \
                     and `.` `^` `-` `_`, at most {} characters (surrounding whitespace is \
                     ignored)",
                    shared::symbol::MAX_SYMBOL_LEN
                )))
                .schema(Some(symbol))
                .example(Some("aapl.us".into()))
                .build(),
        ]
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct StockResponse {
    /// As the feed spells it (upper case).
    #[schema(example = "AAPL.US")]
    symbol: String,
    #[schema(example = "APPLE")]
    company_name: String,
    /// The latest close price.
    #[schema(example = 183.05)]
    quote: f64,
    #[schema(example = 182.35)]
    open: f64,
    #[schema(example = 184.2)]
    high: f64,
    #[schema(example = 181.9)]
    low: f64,
    /// Shares traded; absent for indices, currencies and futures.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = 52345678)]
    volume: Option<u64>,
    /// When the quote was taken (UTC).
    #[schema(example = "2024-05-10T20:00:09Z")]
    time: DateTime<Utc>,
    /// The feed's own date and time of the quote, Europe/Warsaw local time.
    #[schema(example = "2024-05-10")]
    local_date: NaiveDate,
    #[schema(example = "22:00:09")]
    local_time: NaiveTime,
}

impl From<shared::Quote> for StockResponse {
    fn from(quote: shared::Quote) -> Self {
        Self {
            symbol: quote.symbol,
            company_name: quote.name,
            quote: quote.close,
            open: quote.open,
            high: quote.high,
            low: quote.low,
            volume: quote.volume,
            time: quote.time,
            local_date: quote.local_date,
            local_time: quote.local_time,
        }
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/stock",
    tag = "quotes",
    summary = "Get a stock quote (and record it in the caller's history)",
    description = "Fetches the quote from the quote service and commits it to the caller's \
        history before answering, so a 200 is always found in `/api/v1/users/history`.",
    params(StockParams),
    security(("bearer" = []), ("session_cookie" = [])),
    responses(
        (status = 200, description = "The quote", body = StockResponse),
        (status = 400, description = "`q` is missing or breaks the symbol rules", body = ErrorEnvelope,
            examples(
                ("missing q" = (value = json!({"error": {"code": "bad_request", "message": "missing query parameter q (e.g. ?q=aapl.us)", "request_id": "0190f6a4-3b9c-7f42-8d8e-2c5b1e9a7d10"}}))),
                ("invalid symbol" = (value = json!({"error": {"code": "invalid_symbol", "message": "symbol contains '/'; only ASCII letters, digits and . ^ - _ are allowed", "request_id": "0190f6a4-3b9c-7f42-8d8e-2c5b1e9a7d10"}})))
            )),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 404, description = "The feed knows no such symbol", body = ErrorEnvelope,
            example = json!({"error": {"code": "not_found", "message": "stooq has no quote for symbol xxxx.us", "request_id": "0190f6a4-3b9c-7f42-8d8e-2c5b1e9a7d10"}})),
        (status = 500, response = crate::openapi::Internal),
        (status = 502, description = "The quote service or the feed behind it failed", body = ErrorEnvelope,
            examples(
                ("feed down" = (value = json!({"error": {"code": "upstream_unavailable", "message": "stooq answered with an empty body", "request_id": "0190f6a4-3b9c-7f42-8d8e-2c5b1e9a7d10"}}))),
                ("feed refused" = (value = json!({"error": {"code": "upstream_rejected", "message": "stooq asks for an API key: set STOOQ_API_KEY (or check that it is valid)", "request_id": "0190f6a4-3b9c-7f42-8d8e-2c5b1e9a7d10"}}))),
                ("quote service failed" = (value = json!({"error": {"code": "quote_service_error", "message": "quote service failed: internal error", "request_id": "0190f6a4-3b9c-7f42-8d8e-2c5b1e9a7d10"}})))
            )),
        (status = 503, description = "No quote service is available, or the database is down; `Retry-After: 1`", body = ErrorEnvelope,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying")),
            examples(
                ("no quote service" = (value = json!({"error": {"code": "quote_service_unavailable", "message": "the quote service is unavailable, try again shortly", "request_id": "0190f6a4-3b9c-7f42-8d8e-2c5b1e9a7d10"}}))),
                ("database down" = (value = json!({"error": {"code": "database_unavailable", "message": "the database is unavailable, try again shortly", "request_id": "0190f6a4-3b9c-7f42-8d8e-2c5b1e9a7d10"}})))
            )),
        (status = 504, description = "No quote within the RPC timeout", body = ErrorEnvelope,
            example = json!({"error": {"code": "timeout", "message": "the quote service did not answer in time", "request_id": "0190f6a4-3b9c-7f42-8d8e-2c5b1e9a7d10"}})),
    )
)]
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
    let quote = state
        .metrics
        .quote_call(state.transport.get_quote(&symbol, &request_id))
        .await?;

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

    Ok(Json(StockResponse::from(quote)))
}

#[instrument(skip_all, fields(user_id = user_id))]
async fn record(state: &AppState, user_id: i64, entry: NewHistoryEntry) -> Result<(), ApiError> {
    state.store.record_quote(user_id, entry).await?;
    Ok(())
}
