//! `GET /api/v1/users/history.csv`: the caller's whole history (or one symbol's) as a CSV
//! download, newest first.
//!
//! The rows are streamed: one keyset page of [`PAGE_ROWS`] is read, encoded and handed to the
//! connection, and the next is read only when the client has taken it. Memory stays one page
//! whatever the history's size, no database connection is held between pages, and a slow
//! client slows the reads instead of piling rows up in the server. The first page is read
//! before answering, so an unavailable database is still a 503, not a cut-off download.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::SecondsFormat;
use futures::TryStreamExt;
use serde::Deserialize;
use shared::Symbol;
use tracing::instrument;
use utoipa::openapi::path::{Parameter, ParameterIn};

use super::history::{parse_symbol_filter, symbol_filter_param};
use crate::auth::CurrentUser;
use crate::error::{ApiError, ErrorEnvelope};
use crate::extract::ApiQuery;
use crate::state::AppState;
use crate::store::{HistoryEntry, Store, StoreError};

/// Rows read per store call: large enough that a long history costs few round trips, small
/// enough that one page (about 100 bytes a row) is all the memory a download holds.
pub const PAGE_ROWS: u32 = 500;

/// The CSV's first line.
pub const HEADER: &str = "date,symbol,name,open,high,low,close\n";

#[derive(Deserialize)]
pub struct CsvParams {
    symbol: Option<String>,
}

impl utoipa::IntoParams for CsvParams {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![symbol_filter_param()]
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/users/history.csv",
    tag = "quotes",
    summary = "The caller's whole history as CSV, newest first",
    description = "Columns `date,symbol,name,open,high,low,close` (dates UTC RFC 3339, numbers \
        as in the JSON history), quoted per RFC 4180 where a name needs it. A name or symbol starting with `=`, `+`, `-`, \
        `@`, a tab or a carriage return is written behind a `'` so spreadsheets show it as text \
        rather than run it as a formula. Streamed page by \
        page, so any size downloads in constant server memory; the download must finish \
        within `HTTP_REQUEST_TIMEOUT`. Should the database fail mid-download the connection \
        is cut, so a partial file never looks complete.",
    params(CsvParams),
    security(("bearer" = []), ("session_cookie" = [])),
    responses(
        (status = 200, description = "The history as CSV",
            content_type = "text/csv; charset=utf-8", body = String,
            headers(("Content-Disposition" = String, description = "`attachment; filename=\"history.csv\"`")),
            example = json!("date,symbol,name,open,high,low,close\n2024-05-10T20:00:09Z,AAPL.US,APPLE,182.35,184.2,181.9,183.05\n")),
        (status = 400, description = "A `symbol` that breaks the symbol rules", body = ErrorEnvelope,
            example = json!({"error": {"code": "invalid_symbol", "message": "symbol contains '/'; only ASCII letters, digits and . ^ - _ are allowed", "request_id": "0190f6a4-3b9c-7f42-8d8e-2c5b1e9a7d10"}})),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 500, response = crate::openapi::Internal),
        (status = 503, response = crate::openapi::DatabaseUnavailable),
    )
)]
#[instrument(skip_all, fields(request_id = %crate::request_id::current().unwrap_or_default(), user_id = user.id))]
pub async fn history_csv(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiQuery(params): ApiQuery<CsvParams>,
) -> Result<Response, ApiError> {
    let symbol = parse_symbol_filter(params.symbol.as_deref())?;
    let store = Arc::clone(&state.store);
    let first = store
        .history_page(
            user.id,
            symbol.as_ref().map(Symbol::as_str),
            None,
            PAGE_ROWS,
        )
        .await?;
    let pages = Pages {
        store,
        user_id: user.id,
        symbol,
        pending: Some(first),
        before: None,
    };
    let request_id = crate::request_id::current().unwrap_or_default();
    let user_id = user.id;
    let rows = futures::stream::try_unfold(pages, Pages::next_chunk).inspect_err(move |err| {
        tracing::error!(%request_id, user_id, error = %err, "history CSV cut short");
    });
    let header = futures::stream::once(async { Ok(Bytes::from_static(HEADER.as_bytes())) });
    let body = futures::StreamExt::chain(header, rows);
    let mut response = Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"history.csv\""),
    );
    Ok(response)
}

/// Where a download is in the user's history.
struct Pages {
    store: Arc<dyn Store>,
    user_id: i64,
    symbol: Option<Symbol>,
    /// A page read but not sent yet (the first, read before answering).
    pending: Option<Vec<HistoryEntry>>,
    /// The keyset cursor of the next page to read; `None` once the last was sent.
    before: Option<i64>,
}

impl Pages {
    /// The next page as CSV bytes, or the end.
    async fn next_chunk(mut self) -> Result<Option<(Bytes, Self)>, DownloadError> {
        let page = match self.pending.take() {
            Some(page) => page,
            None => match self.before {
                None => return Ok(None),
                Some(before) => {
                    self.store
                        .history_page(
                            self.user_id,
                            self.symbol.as_ref().map(Symbol::as_str),
                            Some(before),
                            PAGE_ROWS,
                        )
                        .await?
                }
            },
        };
        if page.is_empty() {
            return Ok(None);
        }
        // A short page is the last; a full one may have more behind it.
        self.before = (page.len() == PAGE_ROWS as usize)
            .then(|| page.last().map(|row| row.id))
            .flatten();
        Ok(Some((encode(&page)?, self)))
    }
}

#[derive(Debug, thiserror::Error)]
enum DownloadError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("encoding CSV: {0}")]
    Csv(#[from] csv::Error),
}

/// One page as CSV lines (no header). Numbers are written as the JSON history writes them,
/// so the two agree digit for digit.
fn encode(page: &[HistoryEntry]) -> Result<Bytes, csv::Error> {
    let mut writer = csv::WriterBuilder::new()
        .has_headers(false)
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::with_capacity(page.len() * 96));
    for row in page {
        writer.write_record([
            row.requested_at
                .to_rfc3339_opts(SecondsFormat::Secs, true)
                .as_str(),
            &as_text(&row.symbol),
            &as_text(&row.name),
            &number(row.open),
            &number(row.high),
            &number(row.low),
            &number(row.close),
        ])?;
    }
    let bytes = writer
        .into_inner()
        .map_err(|err| csv::Error::from(err.into_error()))?;
    Ok(Bytes::from(bytes))
}

/// A text cell a spreadsheet will not run: one starting with `=`, `+`, `-`, `@`, a tab or a
/// carriage return (what Excel, LibreOffice and Sheets read as the start of a formula) gets a
/// leading `'`, which they show as text. Names come from the quote feed, so a hostile or
/// broken feed must not turn a download into a formula that fetches URLs or runs commands.
/// The numbers are written as numbers: a negative one is data, not a formula.
fn as_text(value: &str) -> std::borrow::Cow<'_, str> {
    if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}").into()
    } else {
        value.into()
    }
}

/// `serde_json`'s spelling of a number (`183.0`, `183.05`); the store holds finite values only.
fn number(value: f64) -> String {
    serde_json::Number::from_f64(value)
        .map(|n| n.to_string())
        .unwrap_or_default()
}
