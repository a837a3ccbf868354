//! The RPC contract between `api_service` and `quote_service`, identical over AMQP and HTTP.
//!
//! Every message carries `v` so a future incompatible change can be detected instead of
//! silently misread. JSON on the wire:
//!
//! ```json
//! {"v":1,"symbol":"aapl.us","request_id":"…","deadline_ms":1715368830000}
//! {"v":1,"status":"ok","quote":{"symbol":"AAPL.US","name":"APPLE",…}}
//! {"v":1,"status":"error","error":{"code":"not_found","message":"…"}}
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use serde::{Deserialize, Serialize};

/// Bumped on any change an older peer would misread.
pub const CONTRACT_VERSION: u16 = 1;

/// Ask for the latest quote of one symbol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuoteRequest {
    pub v: u16,
    /// As typed by the user; the quote service validates it with [`crate::Symbol::parse`].
    pub symbol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Unix time in milliseconds after which the caller has given up. A worker that picks the
    /// request up later drops it instead of fetching for nobody.
    pub deadline_ms: u64,
}

impl QuoteRequest {
    pub fn new(symbol: impl Into<String>, request_id: Option<String>, timeout: Duration) -> Self {
        Self {
            v: CONTRACT_VERSION,
            symbol: symbol.into(),
            request_id,
            deadline_ms: now_ms().saturating_add(timeout.as_millis() as u64),
        }
    }

    /// Time left before the caller gives up; `None` once the deadline has passed.
    pub fn remaining(&self) -> Option<Duration> {
        let now = now_ms();
        (self.deadline_ms > now).then(|| Duration::from_millis(self.deadline_ms - now))
    }

    pub fn is_expired(&self) -> bool {
        self.remaining().is_none()
    }
}

/// Milliseconds since the Unix epoch, the unit of [`QuoteRequest::deadline_ms`].
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One stooq quote row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quote {
    /// As stooq returns it: upper-case, e.g. `AAPL.US`.
    pub symbol: String,
    pub name: String,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    /// Absent for indices, currencies and futures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<u64>,
    /// When the quote was taken, converted from Warsaw local time.
    pub time: DateTime<Utc>,
    /// The date and time exactly as stooq printed them (Europe/Warsaw local time).
    pub local_date: NaiveDate,
    pub local_time: NaiveTime,
}

/// Why a quote could not be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// stooq knows no such symbol (its `N/D` row).
    NotFound,
    /// The symbol breaks the rules in [`crate::symbol`]; nothing was fetched.
    InvalidSymbol,
    /// stooq could not be reached or failed (5xx, timeouts, dropped connections, garbage).
    UpstreamUnavailable,
    /// stooq answered but refused us: API key missing or wrong, daily limit, browser challenge.
    UpstreamRejected,
    /// The request's deadline passed before an answer was had.
    Timeout,
    /// The request itself could not be read: not JSON, a field missing or of the wrong type,
    /// or a contract version the worker does not speak. The caller's fault, not the worker's.
    ///
    /// Added without bumping [`CONTRACT_VERSION`]: codes deserialise strictly (no catch-all
    /// variant), so a peer built before this code fails to parse a reply carrying it and
    /// takes its "malformed reply" path, which api_service has always answered as an internal
    /// failure of the quote service. That is the right reading: a worker only sends this code
    /// to a caller that sent something unreadable, which a well-built caller never does. No
    /// old peer misreads it as a different outcome, which is what a version bump is for.
    BadRequest,
    /// A bug on the worker's side.
    Internal,
}

impl ErrorCode {
    /// The HTTP status both services use for this code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::NotFound => 404,
            ErrorCode::InvalidSymbol | ErrorCode::BadRequest => 400,
            ErrorCode::UpstreamUnavailable | ErrorCode::UpstreamRejected => 502,
            ErrorCode::Timeout => 504,
            ErrorCode::Internal => 500,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NotFound => "not_found",
            ErrorCode::InvalidSymbol => "invalid_symbol",
            ErrorCode::UpstreamUnavailable => "upstream_unavailable",
            ErrorCode::UpstreamRejected => "upstream_rejected",
            ErrorCode::Timeout => "timeout",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A typed failure with a message meant for humans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct QuoteError {
    pub code: ErrorCode,
    pub message: String,
}

impl QuoteError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// The answer to a [`QuoteRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuoteReply {
    pub v: u16,
    #[serde(flatten)]
    pub result: QuoteResult,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum QuoteResult {
    Ok { quote: Quote },
    Error { error: QuoteError },
}

impl QuoteReply {
    pub fn ok(quote: Quote) -> Self {
        Self {
            v: CONTRACT_VERSION,
            result: QuoteResult::Ok { quote },
        }
    }

    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::from(QuoteError::new(code, message))
    }

    pub fn into_result(self) -> Result<Quote, QuoteError> {
        match self.result {
            QuoteResult::Ok { quote } => Ok(quote),
            QuoteResult::Error { error } => Err(error),
        }
    }

    /// The HTTP status this reply is served with on the fallback transport.
    pub fn http_status(&self) -> u16 {
        match &self.result {
            QuoteResult::Ok { .. } => 200,
            QuoteResult::Error { error } => error.code.http_status(),
        }
    }
}

impl From<QuoteError> for QuoteReply {
    fn from(error: QuoteError) -> Self {
        Self {
            v: CONTRACT_VERSION,
            result: QuoteResult::Error { error },
        }
    }
}

impl From<Result<Quote, QuoteError>> for QuoteReply {
    fn from(r: Result<Quote, QuoteError>) -> Self {
        match r {
            Ok(q) => Self::ok(q),
            Err(e) => e.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn sample_quote() -> Quote {
        Quote {
            symbol: "AAPL.US".into(),
            name: "APPLE".into(),
            open: 184.9,
            high: 185.09,
            low: 182.13,
            close: 183.05,
            volume: Some(50_759_496),
            time: Utc.with_ymd_and_hms(2024, 5, 10, 20, 0, 9).unwrap(),
            local_date: NaiveDate::from_ymd_opt(2024, 5, 10).unwrap(),
            local_time: NaiveTime::from_hms_opt(22, 0, 9).unwrap(),
        }
    }

    #[test]
    fn request_round_trips() {
        let req = QuoteRequest::new("aapl.us", Some("req-1".into()), Duration::from_secs(5));
        let json = serde_json::to_string(&req).unwrap();
        assert_eq!(serde_json::from_str::<QuoteRequest>(&json).unwrap(), req);
    }

    #[test]
    fn request_without_request_id_round_trips() {
        let json = r#"{"v":1,"symbol":"aapl.us","deadline_ms":5}"#;
        let req: QuoteRequest = serde_json::from_str(json).unwrap();
        assert_eq!(req.request_id, None);
        assert_eq!(serde_json::to_string(&req).unwrap(), json);
    }

    #[test]
    fn deadline_in_the_past_is_expired() {
        let mut req = QuoteRequest::new("aapl.us", None, Duration::from_secs(5));
        assert!(!req.is_expired());
        req.deadline_ms = now_ms() - 1;
        assert!(req.is_expired());
    }

    #[test]
    fn ok_reply_round_trips_with_documented_shape() {
        let reply = QuoteReply::ok(sample_quote());
        let value = serde_json::to_value(&reply).unwrap();
        assert_eq!(value["v"], 1);
        assert_eq!(value["status"], "ok");
        assert_eq!(value["quote"]["close"], 183.05);
        assert_eq!(value["quote"]["time"], "2024-05-10T20:00:09Z");
        assert_eq!(value["quote"]["local_time"], "22:00:09");
        assert_eq!(serde_json::from_value::<QuoteReply>(value).unwrap(), reply);
    }

    #[test]
    fn quote_without_volume_round_trips() {
        let reply = QuoteReply::ok(Quote {
            volume: None,
            ..sample_quote()
        });
        let json = serde_json::to_string(&reply).unwrap();
        assert!(!json.contains("volume"));
        assert_eq!(serde_json::from_str::<QuoteReply>(&json).unwrap(), reply);
    }

    #[test]
    fn every_error_code_round_trips() {
        for code in [
            ErrorCode::NotFound,
            ErrorCode::InvalidSymbol,
            ErrorCode::UpstreamUnavailable,
            ErrorCode::UpstreamRejected,
            ErrorCode::Timeout,
            ErrorCode::BadRequest,
            ErrorCode::Internal,
        ] {
            let reply = QuoteReply::error(code, "why");
            let value = serde_json::to_value(&reply).unwrap();
            assert_eq!(value["status"], "error");
            assert_eq!(value["error"]["code"], code.as_str());
            assert_eq!(serde_json::from_value::<QuoteReply>(value).unwrap(), reply);
        }
    }

    #[test]
    fn statuses_match_the_documented_mapping() {
        assert_eq!(QuoteReply::ok(sample_quote()).http_status(), 200);
        assert_eq!(
            QuoteReply::error(ErrorCode::InvalidSymbol, "").http_status(),
            400
        );
        assert_eq!(
            QuoteReply::error(ErrorCode::NotFound, "").http_status(),
            404
        );
        assert_eq!(
            QuoteReply::error(ErrorCode::UpstreamRejected, "").http_status(),
            502
        );
        assert_eq!(
            QuoteReply::error(ErrorCode::UpstreamUnavailable, "").http_status(),
            502
        );
        assert_eq!(QuoteReply::error(ErrorCode::Timeout, "").http_status(), 504);
        assert_eq!(
            QuoteReply::error(ErrorCode::BadRequest, "").http_status(),
            400
        );
        assert_eq!(
            QuoteReply::error(ErrorCode::Internal, "").http_status(),
            500
        );
    }

    #[test]
    fn a_code_this_peer_does_not_know_fails_to_parse_rather_than_being_misread() {
        // What a peer older than a new code sees: an error, which callers treat as a
        // malformed reply (see `ErrorCode::BadRequest`), never some other code.
        let json = r#"{"v":1,"status":"error","error":{"code":"from_the_future","message":"m"}}"#;
        assert!(serde_json::from_str::<QuoteReply>(json).is_err());
    }

    #[test]
    fn unknown_fields_from_newer_peers_are_ignored() {
        let json = r#"{"v":1,"symbol":"aapl.us","deadline_ms":5,"priority":"high"}"#;
        assert!(serde_json::from_str::<QuoteRequest>(json).is_ok());
    }
}
