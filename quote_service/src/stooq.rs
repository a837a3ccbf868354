//! Reading stooq's quote CSV, and telling it apart from everything stooq sends instead of data.
//!
//! stooq answers HTTP 200 for nearly everything: real quotes, unknown symbols (an `N/D` row),
//! the daily-limit notice, API-key pages and browser challenges. This module turns a body
//! into per-symbol results, or into one [`StooqError`] saying why the whole answer is unusable,
//! and never panics whatever the bytes (see the property tests).

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeDelta, TimeZone, Utc};
use chrono_tz::Europe::Warsaw;
use shared::{ErrorCode, Quote, QuoteError};

/// The columns requested with `f=sd2t2ohlcvn`, in order.
pub const FIELDS: &str = "sd2t2ohlcvn";

/// The header stooq prints for [`FIELDS`] (compared case-insensitively).
const FULL_HEADER: &str = "symbol,date,time,open,high,low,close,volume,name";

/// How much of a non-CSV body is inspected to classify it; the tell-tale phrases sit near the
/// top and lower-casing a multi-megabyte page would waste time for nothing.
const SNIFF_LIMIT: usize = 16 * 1024;

/// Why a whole answer from stooq carries no quotes. Each case has its own message so an
/// operator reading a reply or a log line knows what to do (get a key, wait a day, ...).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StooqError {
    #[error("stooq refused the request: daily hits limit exceeded")]
    DailyLimit,
    #[error("stooq asks for an API key: set STOOQ_API_KEY (or check that it is valid)")]
    ApiKeyRequired,
    #[error("stooq answered with a browser challenge (JavaScript verification) instead of data")]
    BrowserChallenge,
    #[error("stooq answered with an unexpected HTML page instead of CSV")]
    Html,
    #[error("stooq answered with an empty body")]
    Empty,
    #[error("stooq answered with a truncated CSV")]
    Truncated,
    #[error("stooq answered with something that is not a quote CSV: {0}")]
    Unrecognised(String),
}

impl StooqError {
    /// Refusals (key, limit, challenge) will not go away by retrying soon; everything else is
    /// stooq being broken or unreachable.
    pub fn code(&self) -> ErrorCode {
        match self {
            StooqError::DailyLimit | StooqError::ApiKeyRequired | StooqError::BrowserChallenge => {
                ErrorCode::UpstreamRejected
            }
            StooqError::Html
            | StooqError::Empty
            | StooqError::Truncated
            | StooqError::Unrecognised(_) => ErrorCode::UpstreamUnavailable,
        }
    }
}

impl From<StooqError> for QuoteError {
    fn from(e: StooqError) -> Self {
        QuoteError::new(e.code(), e.to_string())
    }
}

/// The outcome for one symbol of a batch answer.
pub type RowResult = Result<Quote, QuoteError>;

/// Per-symbol results keyed by the lower-cased Symbol column (the form [`shared::Symbol`] uses).
pub type Rows = HashMap<String, RowResult>;

/// Parses a whole stooq answer. Rows are keyed by their Symbol column, never by position,
/// because stooq may reorder or drop rows in a multi-symbol answer.
pub fn parse(body: &[u8]) -> Result<Rows, StooqError> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let body = body.trim_ascii_start();
    if body.trim_ascii_end().is_empty() {
        return Err(StooqError::Empty);
    }
    if !looks_like_csv_header(body) {
        return Err(classify_non_csv(body));
    }
    parse_csv(body)
}

/// Names the kind of non-data answer. Called only when the body does not start with the CSV
/// header, so a quote whose name happens to contain one of the phrases is never misread.
fn classify_non_csv(body: &[u8]) -> StooqError {
    let head = &body[..body.len().min(SNIFF_LIMIT)];
    let text = String::from_utf8_lossy(head).to_ascii_lowercase();
    let has = |needle: &str| text.contains(needle);
    if has("daily hits limit") {
        StooqError::DailyLimit
    } else if has("verify your browser") || has("/__verify") || has("requires javascript") {
        StooqError::BrowserChallenge
    } else if has("apikey") || has("api key") {
        StooqError::ApiKeyRequired
    } else if text.starts_with('<') || has("<html") || has("<!doctype") {
        StooqError::Html
    } else if FULL_HEADER.starts_with(text.trim_end()) {
        // The body stops inside the header line itself.
        StooqError::Truncated
    } else {
        StooqError::Unrecognised(format!("starts with {:?}", preview(&text)))
    }
}

fn preview(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    line.chars().take(60).collect()
}

/// Column positions, found by name so a reordered or extended header still reads right.
struct Columns {
    symbol: usize,
    date: usize,
    time: usize,
    open: usize,
    high: usize,
    low: usize,
    close: usize,
    volume: Option<usize>,
    name: Option<usize>,
}

impl Columns {
    fn from_header(header: &csv::ByteRecord) -> Result<Self, &'static str> {
        let find = |name: &str| {
            header
                .iter()
                .position(|field| field.trim_ascii().eq_ignore_ascii_case(name.as_bytes()))
        };
        let need = |name: &'static str| find(name).ok_or(name);
        Ok(Self {
            symbol: need("symbol")?,
            date: need("date")?,
            time: need("time")?,
            open: need("open")?,
            high: need("high")?,
            low: need("low")?,
            close: need("close")?,
            volume: find("volume"),
            name: find("name"),
        })
    }

    /// The number of fields a row needs before every required column is present.
    fn required_len(&self) -> usize {
        [
            self.symbol,
            self.date,
            self.time,
            self.open,
            self.high,
            self.low,
            self.close,
        ]
        .into_iter()
        .max()
        .unwrap_or(0)
            + 1
    }

    /// The number of fields a complete row has (optional columns included).
    fn full_len(&self) -> usize {
        self.required_len()
            .max(self.volume.map_or(0, |v| v + 1))
            .max(self.name.map_or(0, |n| n + 1))
    }
}

fn parse_csv(body: &[u8]) -> Result<Rows, StooqError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(body);
    let mut records = reader.byte_records();

    let header = match records.next() {
        Some(Ok(h)) => h,
        Some(Err(e)) => return Err(StooqError::Unrecognised(format!("unreadable header: {e}"))),
        None => return Err(StooqError::Empty),
    };
    let mut rows: Vec<csv::ByteRecord> = Vec::new();
    for record in records {
        match record {
            Ok(r) if r.iter().all(|f| f.is_empty()) => continue,
            Ok(r) => rows.push(r),
            Err(e) => return Err(StooqError::Unrecognised(format!("unreadable CSV: {e}"))),
        }
    }
    let columns = match Columns::from_header(&header) {
        Ok(c) => c,
        // A header cut short with nothing after it is a truncated answer; a complete-looking
        // body with a foreign header is something else entirely.
        Err(_) if rows.is_empty() => return Err(StooqError::Truncated),
        Err(missing) => {
            return Err(StooqError::Unrecognised(format!(
                "the header has no {missing} column"
            )));
        }
    };
    // stooq prints one row per requested symbol, so a header alone means the body was cut.
    let Some(last) = rows.last() else {
        return Err(StooqError::Truncated);
    };
    if last.len() < columns.full_len() {
        return Err(StooqError::Truncated);
    }

    let mut out = Rows::with_capacity(rows.len());
    for record in &rows {
        let Some(symbol) = record.get(columns.symbol) else {
            continue;
        };
        let symbol = String::from_utf8_lossy(symbol);
        if symbol.is_empty() {
            continue;
        }
        let key = symbol.to_ascii_lowercase();
        if out.contains_key(&key) {
            continue;
        }
        let result = parse_row(record, &columns, &symbol);
        out.insert(key, result);
    }
    Ok(out)
}

fn is_nd(field: &[u8]) -> bool {
    field.eq_ignore_ascii_case(b"N/D")
}

fn parse_row(record: &csv::ByteRecord, c: &Columns, symbol: &str) -> RowResult {
    let field = |i: usize| record.get(i).unwrap_or_default();
    if record.len() < c.required_len() {
        return Err(malformed(symbol, "the row has too few fields"));
    }
    if is_nd(field(c.date)) || is_nd(field(c.close)) {
        return Err(QuoteError::new(
            ErrorCode::NotFound,
            format!("stooq has no quote for symbol {symbol}"),
        ));
    }
    let date = text(field(c.date))
        .and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
        .ok_or_else(|| malformed(symbol, "bad date"))?;
    let time = text(field(c.time))
        .and_then(|s| {
            NaiveTime::parse_from_str(s, "%H:%M:%S")
                .or_else(|_| NaiveTime::parse_from_str(s, "%H:%M"))
                .ok()
        })
        .ok_or_else(|| malformed(symbol, "bad time"))?;
    let price = |i: usize, what: &str| {
        text(field(i))
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|v| v.is_finite())
            .ok_or_else(|| malformed(symbol, &format!("bad {what}")))
    };
    let open = price(c.open, "open")?;
    let high = price(c.high, "high")?;
    let low = price(c.low, "low")?;
    let close = price(c.close, "close")?;
    let volume = match c.volume.map(field) {
        None => None,
        Some(v) if v.is_empty() || is_nd(v) => None,
        Some(v) => Some(parse_volume(v).ok_or_else(|| malformed(symbol, "bad volume"))?),
    };
    let name = match c.name.map(field) {
        Some(n) if !n.is_empty() => String::from_utf8_lossy(n).into_owned(),
        _ => symbol.to_owned(),
    };
    let time_utc = warsaw_to_utc(date, time)
        .ok_or_else(|| malformed(symbol, "date out of range for Europe/Warsaw"))?;
    Ok(Quote {
        symbol: symbol.to_owned(),
        name,
        open,
        high,
        low,
        close,
        volume,
        time: time_utc,
        local_date: date,
        local_time: time,
    })
}

fn text(field: &[u8]) -> Option<&str> {
    std::str::from_utf8(field).ok()
}

/// Whole numbers as stooq prints them; a decimal volume (seen for some instruments in other
/// feeds) is accepted and rounded rather than failing the quote.
fn parse_volume(field: &[u8]) -> Option<u64> {
    let s = text(field)?;
    s.parse::<u64>().ok().or_else(|| {
        s.parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .map(|v| v.round() as u64)
    })
}

fn malformed(symbol: &str, why: &str) -> QuoteError {
    QuoteError::new(
        ErrorCode::UpstreamUnavailable,
        format!("stooq sent a malformed row for {symbol}: {why}"),
    )
}

/// stooq prints Warsaw wall-clock time. Around DST changes that is not a unique instant:
/// an ambiguous autumn time is read as the earlier one (still summer time), and a spring time
/// inside the skipped hour is read with the offset in force just before the jump. Returns
/// `None` only for dates chrono cannot represent, never panics.
pub fn warsaw_to_utc(date: NaiveDate, time: NaiveTime) -> Option<DateTime<Utc>> {
    let local = NaiveDateTime::new(date, time);
    if let Some(t) = Warsaw.from_local_datetime(&local).earliest() {
        return Some(t.with_timezone(&Utc));
    }
    // In a gap: take the offset in force a few hours earlier (before the clocks jumped).
    let probe = local.checked_sub_signed(TimeDelta::hours(6))?;
    let offset = Warsaw.offset_from_utc_datetime(&probe).fix();
    let utc = local.checked_sub_signed(TimeDelta::seconds(offset.local_minus_utc().into()))?;
    Some(Utc.from_utc_datetime(&utc))
}

/// A body is read as CSV when its first line names both a Symbol and a Date column, in any
/// order; anything else is classified as a non-data answer.
fn looks_like_csv_header(body: &[u8]) -> bool {
    let first_line = body.split(|b| *b == b'\n').next().unwrap_or_default();
    let mut has_symbol = false;
    let mut has_date = false;
    for field in first_line.split(|b| *b == b',') {
        let field = field.trim_ascii();
        has_symbol |= field.eq_ignore_ascii_case(b"symbol");
        has_date |= field.eq_ignore_ascii_case(b"date");
    }
    has_symbol && has_date
}

/// Builds the query string for a batch (without the leading `?`); symbols are joined with `+`
/// (an encoded space), as stooq expects. Only the key is secret: callers must not log the result.
pub fn query_string<'a>(
    symbols: impl IntoIterator<Item = &'a str>,
    api_key: Option<&str>,
) -> String {
    let mut q = String::with_capacity(64);
    q.push_str("s=");
    for (i, s) in symbols.into_iter().enumerate() {
        if i > 0 {
            q.push('+');
        }
        percent_encode_into(&mut q, s);
    }
    q.push_str("&f=");
    q.push_str(FIELDS);
    q.push_str("&h&e=csv");
    if let Some(key) = api_key {
        q.push_str("&apikey=");
        percent_encode_into(&mut q, key);
    }
    q
}

fn percent_encode_into(out: &mut String, raw: &str) {
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b >> 4)]));
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b & 0xF)]));
        }
    }
}

#[cfg(test)]
mod tests;
