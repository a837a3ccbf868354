//! The HTTP side: the fallback quote transport (`GET /api/v1/quote?symbol=`, and
//! `GET /api/v1/quotes?symbols=a,b,c` for batches), answering the same [`shared::QuoteReply`]
//! and [`shared::BatchQuoteReply`] JSON as the RPC path, plus `/healthz`, `/readyz` and
//! `/metrics`.

use std::time::Duration;

use axum::extract::{FromRequestParts, MatchedPath, Query, Request, State};
use axum::http::header::{CONTENT_TYPE, HeaderValue};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use serde::Deserialize;
use shared::{
    BatchQuoteReply, DEADLINE_HEADER, ErrorCode, MAX_BATCH_SYMBOLS, REQUEST_ID_HEADER, Symbol,
    contract::now_ms,
};
use tokio::time::Instant;
use tracing::{Span, field};

use crate::health::Readiness;
use crate::metrics::Metrics;
use crate::quotes::{Answer, QuoteService};

/// Longest request id echoed into logs and the response; longer ones are cut.
const MAX_REQUEST_ID_LEN: usize = 128;

/// Longest an `x-deadline-ms` may make us wait, before the HTTP server's own request limit.
const MAX_WAIT: Duration = Duration::from_secs(300);

/// How long before `HTTP_REQUEST_TIMEOUT` cuts a request off this service answers its own 504.
const ANSWER_MARGIN: Duration = Duration::from_millis(500);

/// Longest a request may wait for its quote: `x-deadline-ms` is capped so that the caller
/// gets this service's `timeout` reply rather than the bounded server's bare 408.
pub fn max_wait(http_request_timeout: Duration) -> Duration {
    MAX_WAIT.min(http_request_timeout.saturating_sub(ANSWER_MARGIN))
}

#[derive(Clone)]
pub struct AppState {
    pub service: QuoteService,
    pub metrics: Metrics,
    pub readiness: Readiness,
    /// Deadline for requests without `x-deadline-ms`.
    pub request_timeout: Duration,
    /// Cap on any deadline (see [`max_wait`]).
    pub max_wait: Duration,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/quote", get(quote))
        .route("/api/v1/quotes", get(quotes))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            state.metrics.clone(),
            record_metrics,
        ))
        .with_state(state)
}

/// A reply with the status its error code maps to, as JSON.
struct ReplyResponse {
    status: u16,
    json: Bytes,
    request_id: Option<HeaderValue>,
}

impl ReplyResponse {
    fn from_answer(answer: &Answer, request_id: Option<HeaderValue>) -> Self {
        Self {
            status: answer.http_status(),
            json: answer.json().clone(),
            request_id,
        }
    }
}

impl IntoResponse for ReplyResponse {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (
            status,
            [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            self.json,
        )
            .into_response();
        if let Some(id) = self.request_id {
            response.headers_mut().insert(REQUEST_ID_HEADER, id);
        }
        response
    }
}

#[derive(Deserialize)]
struct QuoteParams {
    symbol: Option<String>,
}

/// The validated `symbol` query parameter. Every way the query can be wrong is a JSON reply
/// with 400, never axum's plain-text rejection: a query that cannot be read as a quote request
/// (malformed, `symbol` missing) is `bad_request`, like an unreadable RPC message; a symbol
/// that breaks the rules (empty, bad characters) is `invalid_symbol`, on both transports.
pub struct SymbolQuery(pub Symbol);

impl<S: Send + Sync> FromRequestParts<S> for SymbolQuery {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let request_id = request_id(&parts.headers);
        let refuse = |code: ErrorCode, message: String| {
            ReplyResponse::from_answer(&Answer::error(code, message), request_id.clone())
                .into_response()
        };
        let Query(params) = Query::<QuoteParams>::try_from_uri(&parts.uri).map_err(|e| {
            refuse(
                ErrorCode::BadRequest,
                format!("malformed query string: {}", e.body_text()),
            )
        })?;
        let raw = params.symbol.ok_or_else(|| {
            refuse(
                ErrorCode::BadRequest,
                "missing query parameter `symbol`".to_owned(),
            )
        })?;
        Symbol::parse(&raw)
            .map(SymbolQuery)
            .map_err(|e| refuse(ErrorCode::InvalidSymbol, format!("invalid symbol: {e}")))
    }
}

fn request_id(headers: &HeaderMap) -> Option<HeaderValue> {
    let value = headers.get(REQUEST_ID_HEADER)?;
    let text = value.to_str().ok()?;
    if text.is_empty() {
        return None;
    }
    if text.len() <= MAX_REQUEST_ID_LEN {
        return Some(value.clone());
    }
    HeaderValue::from_str(&text[..MAX_REQUEST_ID_LEN]).ok()
}

/// The caller's deadline from `x-deadline-ms` (Unix ms), `Err(())` when it has already passed.
/// A header that is not a number is ignored (the default timeout applies) rather than failing
/// a request that could be answered.
fn deadline(headers: &HeaderMap, default: Duration, max_wait: Duration) -> Result<Instant, ()> {
    let now = Instant::now();
    let Some(raw) = headers.get(DEADLINE_HEADER) else {
        return Ok(now + default.min(max_wait));
    };
    let Some(deadline_ms) = raw.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()) else {
        tracing::warn!(
            header = DEADLINE_HEADER,
            "unreadable deadline header ignored"
        );
        return Ok(now + default.min(max_wait));
    };
    let now_ms = now_ms();
    if deadline_ms <= now_ms {
        return Err(());
    }
    Ok(now + Duration::from_millis(deadline_ms - now_ms).min(max_wait))
}

#[tracing::instrument(
    name = "http_quote",
    skip_all,
    fields(request_id = field::Empty, symbol = %symbol.0)
)]
async fn quote(
    State(state): State<AppState>,
    headers: HeaderMap,
    symbol: SymbolQuery,
) -> ReplyResponse {
    let request_id = request_id(&headers);
    if let Some(id) = request_id.as_ref().and_then(|v| v.to_str().ok()) {
        Span::current().record("request_id", id);
    }
    let answer = match deadline(&headers, state.request_timeout, state.max_wait) {
        Ok(deadline) => state.service.get(&symbol.0, deadline).await,
        Err(()) => {
            return ReplyResponse::from_answer(
                &Answer::error(
                    ErrorCode::Timeout,
                    "the request's deadline had passed before it was handled",
                ),
                request_id,
            );
        }
    };
    ReplyResponse::from_answer(&answer, request_id)
}

#[derive(Deserialize)]
struct BatchParams {
    symbols: Option<String>,
}

/// The version-2 request over HTTP: `symbols` is a comma-separated list (a comma is never
/// part of a symbol), 1 to [`MAX_BATCH_SYMBOLS`] of them, answered with one
/// [`BatchQuoteReply`]: 200 with a result per symbol whatever each says, or 400/504 with the
/// error of the request as a whole.
#[tracing::instrument(
    name = "http_quotes",
    skip_all,
    fields(request_id = field::Empty, symbols = field::Empty)
)]
async fn quotes(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    let request_id = request_id(&headers);
    if let Some(id) = request_id.as_ref().and_then(|v| v.to_str().ok()) {
        Span::current().record("request_id", id);
    }
    let respond = |reply: BatchQuoteReply| {
        let status = reply.http_status();
        let json = serde_json::to_vec(&reply).map(Bytes::from).unwrap_or_else(|_| {
            Bytes::from_static(
                br#"{"v":2,"status":"error","error":{"code":"internal","message":"could not encode the reply"}}"#,
            )
        });
        ReplyResponse {
            status,
            json,
            request_id: request_id.clone(),
        }
        .into_response()
    };
    let raw = match Query::<BatchParams>::try_from_uri(&uri) {
        Err(e) => {
            return respond(BatchQuoteReply::error(
                ErrorCode::BadRequest,
                format!("malformed query string: {}", e.body_text()),
            ));
        }
        Ok(Query(BatchParams { symbols: None })) => {
            return respond(BatchQuoteReply::error(
                ErrorCode::BadRequest,
                "missing query parameter `symbols`",
            ));
        }
        Ok(Query(BatchParams {
            symbols: Some(symbols),
        })) => symbols,
    };
    let symbols: Vec<String> = raw.split(',').map(str::to_owned).collect();
    Span::current().record("symbols", symbols.len());
    if raw.is_empty() || symbols.len() > MAX_BATCH_SYMBOLS {
        return respond(BatchQuoteReply::error(
            ErrorCode::BadRequest,
            format!(
                "`symbols` lists 1 to {MAX_BATCH_SYMBOLS} symbols, comma-separated; got {}",
                if raw.is_empty() { 0 } else { symbols.len() }
            ),
        ));
    }
    let Ok(deadline) = deadline(&headers, state.request_timeout, state.max_wait) else {
        return respond(BatchQuoteReply::error(
            ErrorCode::Timeout,
            "the request's deadline had passed before it was handled",
        ));
    };
    let results = crate::rpc_server::answer_symbols(&state.service, &symbols, deadline).await;
    respond(BatchQuoteReply::ok(results))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> Response {
    match state.readiness.reason() {
        None => (StatusCode::OK, Json(serde_json::json!({ "ready": true }))).into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "ready": false, "reason": reason })),
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({ "error": "no such route" })),
    )
        .into_response()
}

async fn record_metrics(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    metrics.http_request(&route, response.status().as_u16(), started.elapsed());
    response
}

#[cfg(test)]
mod deadline_tests {
    use super::*;

    #[test]
    fn the_wait_ends_before_the_http_servers_own_request_limit() {
        assert_eq!(
            max_wait(Duration::from_secs(30)),
            Duration::from_millis(29_500)
        );
        assert_eq!(max_wait(Duration::from_secs(3600)), MAX_WAIT);
    }

    #[test]
    fn a_far_deadline_is_shortened_to_the_cap() {
        let mut headers = HeaderMap::new();
        let far = now_ms() + 600_000;
        headers.insert(DEADLINE_HEADER, far.to_string().parse().unwrap());
        let cap = Duration::from_secs(2);

        let until = deadline(&headers, Duration::from_secs(5), cap).unwrap();

        assert!(until <= Instant::now() + cap);
    }
}
