//! `GET /api/v1/users/history`: the caller's own quote requests, newest first, keyset
//! paginated with `?limit=` and an opaque `?cursor=` from the `Link` header, optionally only
//! those of one `?symbol=`.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};
use serde::{Deserialize, Serialize};
use tracing::instrument;
use utoipa::openapi::Required;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};

use crate::auth::CurrentUser;
use crate::error::{ApiError, ErrorEnvelope};
use crate::extract::ApiQuery;
use crate::pagination::{self, Cursor, parse_limit};
use crate::state::AppState;
use crate::store::HistoryEntry;
use shared::Symbol;

#[derive(Deserialize)]
pub struct HistoryParams {
    limit: Option<String>,
    cursor: Option<String>,
    symbol: Option<String>,
}

/// `?symbol=`: absent, empty or blank means every symbol; anything else must follow the
/// symbol rules (400 `invalid_symbol` otherwise).
pub(super) fn parse_symbol_filter(raw: Option<&str>) -> Result<Option<Symbol>, ApiError> {
    match raw {
        Some(raw) if !raw.trim().is_empty() => Symbol::parse(raw)
            .map(Some)
            .map_err(|err| ApiError::InvalidSymbol(err.to_string())),
        _ => Ok(None),
    }
}

/// The `symbol` query parameter as documented: the symbol rules of [`Symbol::parse`], or
/// nothing but whitespace (no filter).
pub(super) fn symbol_filter_param() -> Parameter {
    let space = shared::pattern::whitespace_class();
    let symbol = shared::pattern::ascii_alphanumeric_class(shared::symbol::SYMBOL_PUNCTUATION);
    let max = shared::symbol::MAX_SYMBOL_LEN;
    let schema = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(format!("^{space}*(?:{symbol}{{1,{max}}}{space}*)?$")));
    ParameterBuilder::new()
        .name("symbol")
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some(
            "Only the entries of this symbol (case-insensitive, the rules of `q` on \
             `/api/v1/stock`); absent or empty for every symbol",
        ))
        .schema(Some(schema))
        .example(Some("aapl.us".into()))
        .build()
}

/// A symbol as it may stand in a URL's query: its only character outside the unreserved
/// set is `^`.
pub(super) fn symbol_in_query(symbol: &Symbol) -> String {
    symbol.as_str().replace('^', "%5E")
}

/// Written by hand so the bounds and the cursor's form come from [`pagination`]'s constants,
/// the ones [`parse_limit`] and [`Cursor::decode`] apply.
impl utoipa::IntoParams for HistoryParams {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            pagination::limit_param("Entries"),
            pagination::cursor_param(
                pagination::cursor_pattern(),
                "Opaque position from a previous page's `Link` header; absent (or empty) \
                     for the first page",
            ),
            symbol_filter_param(),
        ]
    }
}

/// The documented shape of a page entry; pages are written by [`ItemView`], checked to
/// match in the tests.
#[derive(Serialize, utoipa::ToSchema)]
pub struct HistoryItem {
    /// When the quote was requested (UTC, RFC 3339, whole seconds).
    #[schema(format = DateTime, example = "2024-05-10T20:00:09Z")]
    date: String,
    #[schema(example = "APPLE")]
    name: String,
    #[schema(example = "AAPL.US")]
    symbol: String,
    #[schema(example = 182.35)]
    open: f64,
    #[schema(example = 184.2)]
    high: f64,
    #[schema(example = 181.9)]
    low: f64,
    #[schema(example = 183.05)]
    close: f64,
}

/// A page entry written as a [`HistoryItem`] straight from the store's row: no intermediate
/// item, and the date formatted into the output rather than into a `String` of its own.
struct ItemView<'a>(&'a HistoryEntry);

impl Serialize for ItemView<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let e = self.0;
        let mut item = serializer.serialize_struct("HistoryItem", 7)?;
        item.serialize_field("date", &Rfc3339Seconds(e.requested_at))?;
        item.serialize_field("name", &e.name)?;
        item.serialize_field("symbol", &e.symbol)?;
        item.serialize_field("open", &e.open)?;
        item.serialize_field("high", &e.high)?;
        item.serialize_field("low", &e.low)?;
        item.serialize_field("close", &e.close)?;
        item.end()
    }
}

/// `2024-05-10T20:00:09Z`: what `to_rfc3339_opts(SecondsFormat::Secs, true)` gives, written
/// digit by digit for the four-digit years every row has (formatting it through `fmt`, field
/// by field, was a tenth of a page's serialization).
struct Rfc3339Seconds(DateTime<Utc>);

impl Serialize for Rfc3339Seconds {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let t = self.0.naive_utc();
        let four_digits = u32::try_from(t.year()).ok().filter(|year| *year <= 9999);
        let Some(year) = four_digits else {
            return serializer.serialize_str(&self.0.to_rfc3339_opts(SecondsFormat::Secs, true));
        };
        let mut text = *b"0000-00-00T00:00:00Z";
        let fields = [
            (0, 4, year),
            (5, 2, t.month()),
            (8, 2, t.day()),
            (11, 2, t.hour()),
            (14, 2, t.minute()),
            (17, 2, t.second()),
        ];
        for (start, width, mut value) in fields {
            for digit in text[start..start + width].iter_mut().rev() {
                *digit = b'0' + (value % 10) as u8;
                value /= 10;
            }
        }
        let text = std::str::from_utf8(&text).map_err(serde::ser::Error::custom)?;
        serializer.serialize_str(text)
    }
}

/// A page written as a JSON array of [`ItemView`]s.
struct PageView<'a>(&'a [HistoryEntry]);

impl Serialize for PageView<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(ItemView))
    }
}

/// The page as JSON, written once into a buffer sized for it (a 100-entry page is ~11 KB).
fn page_json(rows: &[HistoryEntry]) -> Result<Vec<u8>, ApiError> {
    let mut body = Vec::with_capacity(2 + rows.len() * 128);
    serde_json::to_writer(&mut body, &PageView(rows))
        .map_err(|err| ApiError::Internal(err.into()))?;
    Ok(body)
}

#[utoipa::path(
    get,
    path = "/api/v1/users/history",
    tag = "quotes",
    summary = "The caller's own quote requests, newest first",
    description = "Keyset-paginated: when more entries exist, the `Link` header holds the URL \
        of the next page (`rel=\"next\"`, keeping the `symbol` filter); follow it until it is \
        absent. Pages stay stable while new quotes are recorded.",
    params(HistoryParams),
    security(("bearer" = []), ("session_cookie" = [])),
    responses(
        (status = 200, description = "One page of history (possibly empty)", body = [HistoryItem],
            headers(("Link" = String, description = "Present when another page exists: \
                `</api/v1/users/history?limit=50&cursor=AQAAAAAAAAAq>; rel=\"next\"`"))),
        (status = 400, description = "`limit` out of range or not a number, a cursor this API did not issue, or a `symbol` that breaks the symbol rules (`invalid_symbol`)", body = ErrorEnvelope,
            examples(
                ("bad symbol" = (value = json!({"error": {"code": "invalid_symbol", "message": "symbol contains '/'; only ASCII letters, digits and . ^ - _ are allowed", "request_id": "0190f6a4-3b9c-7f42-8d8e-2c5b1e9a7d10"}}))),
                ("bad limit" = (value = json!({"error": {"code": "bad_request", "message": "limit must be a whole number between 1 and 1000, got \"0\"", "request_id": "0190f6a4-3b9c-7f42-8d8e-2c5b1e9a7d10"}}))),
                ("bad cursor" = (value = json!({"error": {"code": "bad_request", "message": "invalid cursor; pass back the one from the Link header", "request_id": "0190f6a4-3b9c-7f42-8d8e-2c5b1e9a7d10"}})))
            )),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 500, response = crate::openapi::Internal),
        (status = 503, response = crate::openapi::DatabaseUnavailable),
    )
)]
#[instrument(skip_all, fields(request_id = %crate::request_id::current().unwrap_or_default(), user_id = user.id))]
pub async fn history(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiQuery(params): ApiQuery<HistoryParams>,
) -> Result<Response, ApiError> {
    let limit = parse_limit(params.limit.as_deref()).map_err(ApiError::BadRequest)?;
    let before = match params.cursor.as_deref() {
        None | Some("") => None,
        Some(raw) => Some(Cursor::decode(raw).map_err(ApiError::BadRequest)?),
    };
    let symbol = parse_symbol_filter(params.symbol.as_deref())?;
    // One extra row tells whether another page exists without a COUNT.
    let mut rows = state
        .store
        .history_page(
            user.id,
            symbol.as_ref().map(Symbol::as_str),
            before.map(|c| c.0),
            limit + 1,
        )
        .await?;
    let has_more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next = has_more
        .then(|| rows.last().map(|last| Cursor(last.id)))
        .flatten();

    let mut response = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        page_json(&rows)?,
    )
        .into_response();
    if let Some(cursor) = next {
        let filter = symbol
            .as_ref()
            .map(|s| format!("&symbol={}", symbol_in_query(s)))
            .unwrap_or_default();
        let link = format!(
            "</api/v1/users/history?limit={limit}&cursor={}{filter}>; rel=\"next\"",
            cursor.encode()
        );
        if let Ok(value) = HeaderValue::from_str(&link) {
            response.headers_mut().insert(header::LINK, value);
        }
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_written_exactly_as_the_documented_item() {
        let outside_four_digits = [10_000, -1].map(|year| {
            chrono::NaiveDate::from_ymd_opt(year, 6, 7)
                .unwrap()
                .and_hms_opt(8, 9, 10)
                .unwrap()
                .and_utc()
        });
        let stamps = [
            "2024-05-10T20:00:09.123456Z",
            "1999-01-02T03:04:05Z",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999Z",
        ]
        .map(|stamp| stamp.parse::<DateTime<Utc>>().unwrap());
        for requested_at in stamps.into_iter().chain(outside_four_digits) {
            let entry = HistoryEntry {
                id: 7,
                requested_at,
                symbol: "AAPL.US".into(),
                name: "Apple \"Inc\", \u{e9}".into(),
                open: 182.35,
                high: 184.2,
                low: 1e-7,
                close: 183.05,
            };
            let item = HistoryItem {
                date: requested_at.to_rfc3339_opts(SecondsFormat::Secs, true),
                name: entry.name.clone(),
                symbol: entry.symbol.clone(),
                open: entry.open,
                high: entry.high,
                low: entry.low,
                close: entry.close,
            };

            let written =
                String::from_utf8(page_json(std::slice::from_ref(&entry)).unwrap()).unwrap();

            assert_eq!(
                written,
                format!("[{}]", serde_json::to_string(&item).unwrap())
            );
        }
    }
}
