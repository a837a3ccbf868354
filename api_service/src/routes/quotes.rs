//! `GET /api/v1/quotes?q=aapl.us,msft.us`: many quotes in one answer, one result per distinct
//! symbol, each found quote recorded in the caller's history (all in one transaction) before
//! the answer leaves.
//!
//! A symbol's own failure (invalid, unknown, the feed down, no answer in time) is its result,
//! not the request's: the answer is 200 as long as the quote service answered for the batch,
//! even when every symbol failed, so a client reads one shape whatever its list contained.
//! Only what fails the whole request fails it: a bad `q` (400), no quote service (503), no
//! answer to the batch in time (504), the database (503).

use std::collections::HashSet;

use axum::Json;
use axum::extract::State;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use shared::{MAX_BATCH_SYMBOLS, Symbol};
use tracing::instrument;
use utoipa::openapi::Required;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};

use crate::auth::CurrentUser;
use crate::error::{ApiError, ErrorEnvelope};
use crate::extract::ApiQuery;
use crate::request_id;
use crate::routes::stock::StockResponse;
use crate::state::AppState;
use crate::store::NewHistoryEntry;
use crate::transport::TransportError;

/// Most characters `q` may have: every symbol at its longest with room for the whitespace
/// around it. Bounds the work a request can ask for before it is split.
pub const MAX_Q_LEN: usize = MAX_BATCH_SYMBOLS * 40;

#[derive(Deserialize)]
pub struct QuotesParams {
    q: Option<String>,
}

/// `q`'s documented pattern: at most [`MAX_BATCH_SYMBOLS`] comma-separated entries of
/// anything (an entry that breaks the symbol rules is that entry's own error, not the
/// request's, so the pattern does not constrain characters).
pub fn q_pattern() -> String {
    format!("^[^,]*(?:,[^,]*){{0,{}}}$", MAX_BATCH_SYMBOLS - 1)
}

/// Written by hand so the documented bounds are the constants the handler checks.
impl utoipa::IntoParams for QuotesParams {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let list = ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(MAX_Q_LEN))
            .pattern(Some(q_pattern()));
        vec![
            ParameterBuilder::new()
                .name("q")
                .parameter_in(ParameterIn::Query)
                .required(Required::True)
                .description(Some(format!(
                    "Comma-separated stock symbols, 1 to {MAX_BATCH_SYMBOLS} entries, at most \
                     {MAX_Q_LEN} characters. Each is read as in `/api/v1/stock` (trimmed, \
                     case-insensitive); entries equal after that are answered once, at the \
                     place of their first appearance."
                )))
                .schema(Some(list))
                .example(Some("aapl.us,msft.us,xxxx.us".into()))
                .build(),
        ]
    }
}

/// The answer: one result per distinct entry of `q`, in the order of `q`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct QuotesResponse {
    results: Vec<SymbolQuote>,
}

/// One symbol's result: exactly one of `quote` and `error`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SymbolQuote {
    /// The entry as read: trimmed and lower-case when it is a valid symbol, else trimmed.
    #[schema(example = "aapl.us")]
    symbol: String,
    /// The quote, as `/api/v1/stock` gives it (recorded in the caller's history).
    #[serde(skip_serializing_if = "Option::is_none")]
    quote: Option<StockResponse>,
    /// Why this symbol has no quote (nothing is recorded for it).
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<SymbolError>,
}

/// A symbol's own error: the `code` and `message` `/api/v1/stock` would have answered for it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SymbolError {
    /// `invalid_symbol`, `not_found`, `upstream_unavailable`, `upstream_rejected`,
    /// `quote_service_error`, `quote_service_unavailable` or `timeout`.
    #[schema(example = "not_found")]
    code: &'static str,
    #[schema(example = "stooq has no quote for symbol XXXX.US")]
    message: String,
}

impl SymbolError {
    fn from_transport(err: TransportError) -> Self {
        let err = ApiError::from(err);
        // Unavailable's detail (broker, queue) stays out: its Display is the public message.
        Self {
            code: err.code(),
            message: err.to_string(),
        }
    }
}

/// One distinct entry of `q`: a symbol to ask for, or the reason it is not one.
enum Entry {
    Valid(Symbol),
    Invalid { raw: String, reason: String },
}

/// Splits and reads `q`, folding entries that are equal once read. Errors are the request's.
fn parse_q(raw: &str) -> Result<Vec<Entry>, ApiError> {
    if raw.is_empty() {
        return Err(ApiError::BadRequest(
            "q lists no symbols (e.g. ?q=aapl.us,msft.us)".into(),
        ));
    }
    let chars = raw.chars().count();
    if chars > MAX_Q_LEN {
        return Err(ApiError::BadRequest(format!(
            "q is too long: {chars} characters, at most {MAX_Q_LEN}"
        )));
    }
    let listed = raw.split(',').count();
    if listed > MAX_BATCH_SYMBOLS {
        return Err(ApiError::BadRequest(format!(
            "q lists {listed} symbols; at most {MAX_BATCH_SYMBOLS} per request"
        )));
    }
    let mut seen = HashSet::new();
    let mut entries = Vec::with_capacity(listed);
    for part in raw.split(',') {
        let entry = match Symbol::parse(part) {
            Ok(symbol) => Entry::Valid(symbol),
            Err(err) => Entry::Invalid {
                raw: part.trim().to_owned(),
                reason: err.to_string(),
            },
        };
        let key = match &entry {
            Entry::Valid(symbol) => symbol.as_str().to_owned(),
            Entry::Invalid { raw, .. } => raw.clone(),
        };
        // Valid keys are lower-case symbols and invalid ones never are, so they cannot clash.
        if seen.insert(key) {
            entries.push(entry);
        }
    }
    Ok(entries)
}

#[utoipa::path(
    get,
    path = "/api/v1/quotes",
    tag = "quotes",
    summary = "Get many stock quotes at once (and record them in the caller's history)",
    description = "One result per distinct symbol of `q`, in order: its quote, or its own \
        error. Every quote found is committed to the caller's history (one transaction for \
        all of them) before answering, so each quote in a 200 is in `/api/v1/users/history`. \
        The answer is 200 whenever the quote service answered, even if every symbol failed; \
        the request as a whole fails only for a bad `q`, an unreachable quote service, a \
        timeout or the database.",
    params(QuotesParams),
    security(("bearer" = []), ("session_cookie" = [])),
    responses(
        (status = 200, description = "One result per distinct symbol", body = QuotesResponse,
            example = json!({"results": [
                {"symbol": "aapl.us", "quote": {"symbol": "AAPL.US", "company_name": "APPLE", "quote": 183.05, "open": 182.35, "high": 184.2, "low": 181.9, "volume": 52345678, "time": "2024-05-10T20:00:09Z", "local_date": "2024-05-10", "local_time": "22:00:09"}},
                {"symbol": "xxxx.us", "error": {"code": "not_found", "message": "stooq has no quote for symbol XXXX.US"}},
                {"symbol": "a/b", "error": {"code": "invalid_symbol", "message": "symbol contains '/'; only ASCII letters, digits and . ^ - _ are allowed"}}
            ]})),
        (status = 400, description = "`q` is missing or empty, lists too many symbols, or is too long", body = ErrorEnvelope,
            examples(
                ("missing q" = (value = json!({"error": {"code": "bad_request", "message": "missing query parameter q (e.g. ?q=aapl.us,msft.us)", "request_id": "0190f6a4-3b9c-7f42-8d8e-2c5b1e9a7d10"}}))),
                ("too many" = (value = json!({"error": {"code": "bad_request", "message": "q lists 51 symbols; at most 50 per request", "request_id": "0190f6a4-3b9c-7f42-8d8e-2c5b1e9a7d10"}})))
            )),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 500, response = crate::openapi::Internal),
        (status = 502, description = "The quote service failed the batch as a whole", body = ErrorEnvelope,
            example = json!({"error": {"code": "quote_service_error", "message": "quote service failed: internal error", "request_id": "0190f6a4-3b9c-7f42-8d8e-2c5b1e9a7d10"}})),
        (status = 503, description = "No quote service is available, or the database is down; `Retry-After: 1`", body = ErrorEnvelope,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying")),
            examples(
                ("no quote service" = (value = json!({"error": {"code": "quote_service_unavailable", "message": "the quote service is unavailable, try again shortly", "request_id": "0190f6a4-3b9c-7f42-8d8e-2c5b1e9a7d10"}}))),
                ("database down" = (value = json!({"error": {"code": "database_unavailable", "message": "the database is unavailable, try again shortly", "request_id": "0190f6a4-3b9c-7f42-8d8e-2c5b1e9a7d10"}})))
            )),
        (status = 504, description = "No answer to the batch within the RPC timeout", body = ErrorEnvelope,
            example = json!({"error": {"code": "timeout", "message": "the quote service did not answer in time", "request_id": "0190f6a4-3b9c-7f42-8d8e-2c5b1e9a7d10"}})),
    )
)]
#[instrument(skip_all, fields(request_id = %crate::request_id::current().unwrap_or_default(), user_id = user.id, symbols = tracing::field::Empty))]
pub async fn quotes(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiQuery(params): ApiQuery<QuotesParams>,
) -> Result<Json<QuotesResponse>, ApiError> {
    let raw = params.q.ok_or_else(|| {
        ApiError::BadRequest("missing query parameter q (e.g. ?q=aapl.us,msft.us)".into())
    })?;
    let entries = parse_q(&raw)?;
    tracing::Span::current().record("symbols", entries.len());
    let symbols: Vec<Symbol> = entries
        .iter()
        .filter_map(|e| match e {
            Entry::Valid(symbol) => Some(symbol.clone()),
            Entry::Invalid { .. } => None,
        })
        .collect();

    let requested_at = Utc::now();
    let mut answers = if symbols.is_empty() {
        Vec::new()
    } else {
        let request_id = request_id::current().unwrap_or_default();
        state
            .metrics
            .quote_call(state.transport.get_quotes(&symbols, &request_id))
            .await?
    }
    .into_iter();

    let mut found = Vec::new();
    let mut results = Vec::with_capacity(entries.len());
    for entry in entries {
        let result = match entry {
            Entry::Invalid { raw, reason } => SymbolQuote {
                symbol: raw,
                quote: None,
                error: Some(SymbolError {
                    code: "invalid_symbol",
                    message: reason,
                }),
            },
            Entry::Valid(symbol) => match answers.next() {
                Some(Ok(quote)) => {
                    found.push(NewHistoryEntry {
                        requested_at,
                        symbol: quote.symbol.clone(),
                        name: quote.name.clone(),
                        open: quote.open,
                        high: quote.high,
                        low: quote.low,
                        close: quote.close,
                    });
                    SymbolQuote {
                        symbol: symbol.into_string(),
                        quote: Some(StockResponse::from(quote)),
                        error: None,
                    }
                }
                Some(Err(err)) => SymbolQuote {
                    symbol: symbol.into_string(),
                    quote: None,
                    error: Some(SymbolError::from_transport(err)),
                },
                None => {
                    return Err(ApiError::internal(anyhow::anyhow!(
                        "the transport answered fewer symbols than asked"
                    )));
                }
            },
        };
        results.push(result);
    }

    // Committed before the 200 leaves, all in one transaction: every quote in the answer is
    // in the caller's history, or the request fails and none is.
    record(&state, user.id, found).await?;

    Ok(Json(QuotesResponse { results }))
}

#[instrument(skip_all, fields(user_id = user_id, rows = entries.len()))]
async fn record(
    state: &AppState,
    user_id: i64,
    entries: Vec<NewHistoryEntry>,
) -> Result<(), ApiError> {
    state.store.record_quotes(user_id, entries).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(raw: &str) -> Vec<String> {
        parse_q(raw)
            .unwrap()
            .into_iter()
            .map(|e| match e {
                Entry::Valid(s) => s.into_string(),
                Entry::Invalid { raw, .. } => format!("invalid:{raw}"),
            })
            .collect()
    }

    #[test]
    fn entries_equal_once_read_are_folded_at_their_first_place() {
        assert_eq!(
            read("aapl.us, MSFT.US ,AAPL.US,msft.us,a/b, a/b"),
            ["aapl.us", "msft.us", "invalid:a/b"]
        );
    }

    #[test]
    fn empty_entries_are_their_own_invalid_result() {
        assert_eq!(read("aapl.us,,"), ["aapl.us", "invalid:"]);
    }

    #[test]
    fn fifty_entries_are_accepted_and_fifty_one_refused() {
        let list = |n: usize| {
            (0..n)
                .map(|i| format!("s{i}.us"))
                .collect::<Vec<_>>()
                .join(",")
        };
        assert_eq!(read(&list(MAX_BATCH_SYMBOLS)).len(), MAX_BATCH_SYMBOLS);
        let err = parse_q(&list(MAX_BATCH_SYMBOLS + 1)).err().unwrap();
        assert_eq!(err.code(), "bad_request");
        assert!(err.to_string().contains("at most 50"), "{err}");
    }

    #[test]
    fn an_empty_or_too_long_q_is_the_requests_error() {
        assert!(parse_q("").is_err());
        let long = format!("aapl.us{}", " ".repeat(MAX_Q_LEN));
        assert!(
            parse_q(&long)
                .err()
                .unwrap()
                .to_string()
                .contains("too long")
        );
    }

    #[test]
    fn the_documented_pattern_admits_exactly_the_accepted_entry_counts() {
        let pattern = regex::Regex::new(&q_pattern()).unwrap();
        for n in [
            1,
            2,
            MAX_BATCH_SYMBOLS,
            MAX_BATCH_SYMBOLS + 1,
            MAX_BATCH_SYMBOLS + 7,
        ] {
            let q = vec!["x"; n].join(",");
            assert_eq!(pattern.is_match(&q), parse_q(&q).is_ok(), "{n} entries");
        }
    }
}
