//! The RPC contract between `api_service` and `quote_service`, identical over AMQP and HTTP.
//!
//! Every message carries `v` so a future incompatible change can be detected instead of
//! silently misread. JSON on the wire, version 1 (one symbol):
//!
//! ```json
//! {"v":1,"symbol":"aapl.us","request_id":"…","deadline_ms":1715368830000}
//! {"v":1,"status":"ok","quote":{"symbol":"AAPL.US","name":"APPLE",…}}
//! {"v":1,"status":"error","error":{"code":"not_found","message":"…"}}
//! ```
//!
//! Version 2 (many symbols, one message each way; see [`BatchQuoteRequest`]):
//!
//! ```json
//! {"v":2,"symbols":["aapl.us","xxxx.us"],"request_id":"…","deadline_ms":1715368830000}
//! {"v":2,"status":"ok","results":[{"status":"ok","quote":{…}},{"status":"error","error":{…}}]}
//! {"v":2,"status":"error","error":{"code":"bad_request","message":"…"}}
//! ```
//!
//! A worker speaks both versions; version 1 messages are unchanged. Why a new version rather
//! than an optional `symbols` field on version 1: a version-1 worker ignores unknown fields
//! (see the test `unknown_fields_from_newer_peers_are_ignored`), so it would have answered a
//! batch with the quote of `symbol` alone, a reply of the wrong shape that the caller could
//! only detect by accident. Under `v: 2` the old worker refuses the message instead, with the
//! reply every version-1 worker gives to what it cannot read (`v: 1`, `bad_request`), which
//! [`read_batch_reply`] recognises so the caller can fall back to one version-1 request per
//! symbol during a rolling upgrade.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use serde::{Deserialize, Serialize};

/// Version of the single-symbol messages ([`QuoteRequest`], [`QuoteReply`]). Bumped on any
/// change an older peer would misread.
pub const CONTRACT_VERSION: u16 = 1;

/// Version of the batch messages ([`BatchQuoteRequest`], [`BatchQuoteReply`]): the first
/// version a worker must know to answer many symbols in one message.
pub const BATCH_CONTRACT_VERSION: u16 = 2;

/// Most symbols one [`BatchQuoteRequest`] may carry. Bounds what one message can make a worker
/// hold and fetch; the API's `/api/v1/quotes` takes as many.
pub const MAX_BATCH_SYMBOLS: usize = 50;

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

/// Ask for the latest quotes of several symbols at once (contract version 2).
///
/// Answered by one [`BatchQuoteReply`] whose `results[i]` answers `symbols[i]`: a symbol's own
/// failure (invalid, not found, the feed down…) is its own result, never the whole reply's.
/// The worker fetches the symbols it has no cached answer for in as few upstream calls as its
/// `BATCH_SIZE` allows. Symbols are positional and may repeat (each gets a result), but
/// callers fold duplicates first: the reply would only carry the same answer twice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchQuoteRequest {
    pub v: u16,
    /// As typed by the user; each is validated with [`crate::Symbol::parse`]. 1 to
    /// [`MAX_BATCH_SYMBOLS`] of them.
    pub symbols: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// As [`QuoteRequest::deadline_ms`]: one deadline for the whole batch.
    pub deadline_ms: u64,
}

impl BatchQuoteRequest {
    pub fn new<S: Into<String>>(
        symbols: impl IntoIterator<Item = S>,
        request_id: Option<String>,
        timeout: Duration,
    ) -> Self {
        Self {
            v: BATCH_CONTRACT_VERSION,
            symbols: symbols.into_iter().map(Into::into).collect(),
            request_id,
            deadline_ms: now_ms().saturating_add(timeout.as_millis() as u64),
        }
    }

    /// Time left before the caller gives up; `None` once the deadline has passed.
    pub fn remaining(&self) -> Option<Duration> {
        let now = now_ms();
        (self.deadline_ms > now).then(|| Duration::from_millis(self.deadline_ms - now))
    }
}

/// Only the version of a message, read before anything else so a worker can tell which
/// request type to parse, and refuse a version it does not speak in the version-1 way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct VersionProbe {
    pub v: u16,
}

/// The answer to a [`BatchQuoteRequest`]: one result per requested symbol, or an error for
/// the request as a whole (unreadable, too many symbols, the deadline passed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "wire::BatchQuoteReply")]
pub struct BatchQuoteReply {
    pub v: u16,
    #[serde(flatten)]
    pub result: BatchResult,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum BatchResult {
    Ok { results: Vec<QuoteResult> },
    Error { error: QuoteError },
}

impl BatchQuoteReply {
    pub fn ok(results: Vec<QuoteResult>) -> Self {
        Self {
            v: BATCH_CONTRACT_VERSION,
            result: BatchResult::Ok { results },
        }
    }

    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            v: BATCH_CONTRACT_VERSION,
            result: BatchResult::Error {
                error: QuoteError::new(code, message),
            },
        }
    }

    /// The HTTP status this reply is served with on the fallback transport: 200 whenever
    /// there are per-symbol results, whatever each says.
    pub fn http_status(&self) -> u16 {
        match &self.result {
            BatchResult::Ok { .. } => 200,
            BatchResult::Error { error } => error.code.http_status(),
        }
    }
}

/// What a reply to a [`BatchQuoteRequest`] means to the caller.
#[derive(Debug, Clone, PartialEq)]
pub enum BatchReplyRead {
    /// One result per requested symbol, in request order.
    Results(Vec<Result<Quote, QuoteError>>),
    /// The worker refused or failed the batch as a whole.
    Refused(QuoteError),
    /// A worker that speaks only version 1 refused the message as unreadable: ask it one
    /// symbol at a time. Carries its reason, for the log.
    OldWorker(QuoteError),
}

/// Reads a reply to a batch of `expected` symbols. `Err` says why the bytes are not a reply
/// a worker of any version would send (not JSON, a result count that does not match…).
///
/// A version-1 `bad_request` is what every version-1 worker answers to a message it cannot
/// read, a version-2 one included, and what no version-2 worker answers to a version-2
/// message (it refuses in version 2), so it identifies an old worker unambiguously.
pub fn read_batch_reply(bytes: &[u8], expected: usize) -> Result<BatchReplyRead, String> {
    let reply: BatchQuoteReply =
        serde_json::from_slice(bytes).map_err(|e| format!("not a quote reply: {e}"))?;
    match (reply.v, reply.result) {
        (CONTRACT_VERSION, BatchResult::Error { error }) if error.code == ErrorCode::BadRequest => {
            Ok(BatchReplyRead::OldWorker(error))
        }
        (BATCH_CONTRACT_VERSION, BatchResult::Error { error }) => {
            Ok(BatchReplyRead::Refused(error))
        }
        (BATCH_CONTRACT_VERSION, BatchResult::Ok { results }) if results.len() == expected => {
            Ok(BatchReplyRead::Results(
                results
                    .into_iter()
                    .map(|r| match r {
                        QuoteResult::Ok { quote } => Ok(quote),
                        QuoteResult::Error { error } => Err(error),
                    })
                    .collect(),
            ))
        }
        (BATCH_CONTRACT_VERSION, BatchResult::Ok { results }) => {
            Err(format!("{} results for {expected} symbols", results.len()))
        }
        (v, _) => Err(format!("a version-{v} reply to a version-2 request")),
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
#[serde(try_from = "wire::QuoteReply")]
pub struct QuoteReply {
    pub v: u16,
    #[serde(flatten)]
    pub result: QuoteResult,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "status",
    rename_all = "snake_case",
    try_from = "wire::QuoteResult"
)]
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

impl From<Result<Quote, QuoteError>> for QuoteResult {
    fn from(r: Result<Quote, QuoteError>) -> Self {
        match r {
            Ok(quote) => QuoteResult::Ok { quote },
            Err(error) => QuoteResult::Error { error },
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

/// How replies are read. Their shape is `{"v", "status", and "quote" / "results" / "error"}`:
/// serde's derive for that (`flatten` over an enum tagged by `status`) first copies the whole
/// message into a tree of owned keys and values and then reads the tree, every quote of a
/// batch twice over. These flat mirrors read the bytes once, straight into the types, and then
/// check what the tag promised. What is accepted and refused is unchanged: unknown fields are
/// ignored, an unknown status or code and a missing quote, results or error are refused.
mod wire {
    use serde::Deserialize;

    use super::{BatchResult, Quote, QuoteError};

    #[derive(Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Status {
        Ok,
        Error,
    }

    #[derive(Deserialize)]
    pub(super) struct QuoteResult {
        status: Status,
        quote: Option<Quote>,
        error: Option<QuoteError>,
    }

    impl TryFrom<QuoteResult> for super::QuoteResult {
        type Error = &'static str;

        fn try_from(wire: QuoteResult) -> Result<Self, &'static str> {
            result(wire.status, wire.quote, wire.error)
        }
    }

    #[derive(Deserialize)]
    pub(super) struct QuoteReply {
        v: u16,
        status: Status,
        quote: Option<Quote>,
        error: Option<QuoteError>,
    }

    impl TryFrom<QuoteReply> for super::QuoteReply {
        type Error = &'static str;

        fn try_from(wire: QuoteReply) -> Result<Self, &'static str> {
            Ok(Self {
                v: wire.v,
                result: result(wire.status, wire.quote, wire.error)?,
            })
        }
    }

    fn result(
        status: Status,
        quote: Option<Quote>,
        error: Option<QuoteError>,
    ) -> Result<super::QuoteResult, &'static str> {
        promised(status, quote, error, "missing field `quote`").map(Into::into)
    }

    /// What `status` promised: the value on `ok`, the error on `error`; refused when the
    /// promised field is missing (`missing`: the message naming the value's field).
    fn promised<T>(
        status: Status,
        value: Option<T>,
        error: Option<QuoteError>,
        missing: &'static str,
    ) -> Result<Result<T, QuoteError>, &'static str> {
        match (status, value, error) {
            (Status::Ok, Some(value), _) => Ok(Ok(value)),
            (Status::Ok, None, _) => Err(missing),
            (Status::Error, _, Some(error)) => Ok(Err(error)),
            (Status::Error, _, None) => Err("missing field `error`"),
        }
    }

    #[derive(Deserialize)]
    pub(super) struct BatchQuoteReply {
        v: u16,
        status: Status,
        results: Option<Vec<super::QuoteResult>>,
        error: Option<QuoteError>,
    }

    impl TryFrom<BatchQuoteReply> for super::BatchQuoteReply {
        type Error = &'static str;

        fn try_from(wire: BatchQuoteReply) -> Result<Self, &'static str> {
            let result = match promised(
                wire.status,
                wire.results,
                wire.error,
                "missing field `results`",
            )? {
                Ok(results) => BatchResult::Ok { results },
                Err(error) => BatchResult::Error { error },
            };
            Ok(Self { v: wire.v, result })
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
    fn replies_without_what_their_status_promises_are_refused() {
        for json in [
            r#"{"v":1,"status":"ok"}"#,
            r#"{"v":1,"status":"ok","error":{"code":"internal","message":"m"}}"#,
            r#"{"v":1,"status":"error"}"#,
            r#"{"v":1,"status":"maybe","quote":null}"#,
            r#"{"v":1,"quote":{}}"#,
        ] {
            assert!(
                serde_json::from_str::<QuoteReply>(json).is_err(),
                "{json} was read as a reply"
            );
        }
        for json in [
            r#"{"v":2,"status":"ok"}"#,
            r#"{"v":2,"status":"error","results":[]}"#,
            r#"{"v":2,"status":"ok","results":[{"status":"ok"}]}"#,
        ] {
            assert!(
                serde_json::from_str::<BatchQuoteReply>(json).is_err(),
                "{json} was read as a batch reply"
            );
        }
    }

    #[test]
    fn unknown_fields_in_replies_are_ignored() {
        let error = r#"{"code":"not_found","message":"m"}"#;
        let json = format!(r#"{{"v":1,"status":"error","error":{error},"retry_in":5}}"#);
        assert_eq!(
            serde_json::from_str::<QuoteReply>(&json).unwrap(),
            QuoteReply::error(ErrorCode::NotFound, "m")
        );
        let json = format!(
            r#"{{"v":2,"status":"ok","took_ms":3,"results":[{{"status":"error","error":{error},"x":1}}]}}"#
        );
        assert_eq!(
            serde_json::from_str::<BatchQuoteReply>(&json).unwrap(),
            BatchQuoteReply::ok(vec![Err(QuoteError::new(ErrorCode::NotFound, "m")).into()])
        );
    }

    #[test]
    fn unknown_fields_from_newer_peers_are_ignored() {
        let json = r#"{"v":1,"symbol":"aapl.us","deadline_ms":5,"priority":"high"}"#;
        assert!(serde_json::from_str::<QuoteRequest>(json).is_ok());
    }

    // --- version 2: batches ------------------------------------------------------------

    #[test]
    fn batch_request_round_trips_with_documented_shape() {
        let req = BatchQuoteRequest::new(
            ["aapl.us", "msft.us"],
            Some("req-1".into()),
            Duration::from_secs(5),
        );
        let value = serde_json::to_value(&req).unwrap();
        assert_eq!(value["v"], 2);
        assert_eq!(value["symbols"], serde_json::json!(["aapl.us", "msft.us"]));
        assert_eq!(
            serde_json::from_value::<BatchQuoteRequest>(value).unwrap(),
            req
        );
    }

    #[test]
    fn a_batch_request_is_unreadable_as_a_version_1_request() {
        // What a worker that speaks only version 1 does with it: refuse, never answer some
        // other question.
        let req = BatchQuoteRequest::new(["aapl.us"], None, Duration::from_secs(5));
        let json = serde_json::to_vec(&req).unwrap();
        assert!(serde_json::from_slice::<QuoteRequest>(&json).is_err());
        assert_eq!(serde_json::from_slice::<VersionProbe>(&json).unwrap().v, 2);
    }

    #[test]
    fn batch_reply_reads_back_as_per_symbol_results_in_order() {
        let reply = BatchQuoteReply::ok(vec![
            Ok(sample_quote()).into(),
            Err(QuoteError::new(ErrorCode::NotFound, "no such symbol")).into(),
        ]);
        let json = serde_json::to_vec(&reply).unwrap();

        let read = read_batch_reply(&json, 2).unwrap();

        assert_eq!(
            read,
            BatchReplyRead::Results(vec![
                Ok(sample_quote()),
                Err(QuoteError::new(ErrorCode::NotFound, "no such symbol")),
            ])
        );
        assert_eq!(reply.http_status(), 200);
    }

    #[test]
    fn a_version_1_bad_request_reply_means_an_old_worker() {
        let old = QuoteReply::error(
            ErrorCode::BadRequest,
            "the request is not a valid quote request: missing field `symbol`",
        );
        let json = serde_json::to_vec(&old).unwrap();

        assert!(matches!(
            read_batch_reply(&json, 3),
            Ok(BatchReplyRead::OldWorker(e)) if e.code == ErrorCode::BadRequest
        ));
    }

    #[test]
    fn a_version_2_refusal_is_the_batchs_own_error_not_an_old_worker() {
        let refused = BatchQuoteReply::error(ErrorCode::BadRequest, "too many symbols");
        let json = serde_json::to_vec(&refused).unwrap();

        assert!(matches!(
            read_batch_reply(&json, 3),
            Ok(BatchReplyRead::Refused(e)) if e.code == ErrorCode::BadRequest
        ));
        assert_eq!(refused.http_status(), 400);
    }

    #[test]
    fn batch_replies_that_no_worker_would_send_are_malformed() {
        let short =
            serde_json::to_vec(&BatchQuoteReply::ok(vec![Ok(sample_quote()).into()])).unwrap();
        assert!(
            read_batch_reply(&short, 2).is_err(),
            "result count mismatch"
        );
        let v1_ok = serde_json::to_vec(&QuoteReply::ok(sample_quote())).unwrap();
        assert!(read_batch_reply(&v1_ok, 1).is_err(), "a single reply");
        let v1_not_found =
            serde_json::to_vec(&QuoteReply::error(ErrorCode::NotFound, "n")).unwrap();
        assert!(read_batch_reply(&v1_not_found, 1).is_err());
        assert!(read_batch_reply(b"{not json", 1).is_err());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn code() -> impl Strategy<Value = ErrorCode> {
            prop_oneof![
                Just(ErrorCode::NotFound),
                Just(ErrorCode::InvalidSymbol),
                Just(ErrorCode::UpstreamUnavailable),
                Just(ErrorCode::UpstreamRejected),
                Just(ErrorCode::Timeout),
                Just(ErrorCode::BadRequest),
                Just(ErrorCode::Internal),
            ]
        }

        fn result() -> impl Strategy<Value = Result<Quote, QuoteError>> {
            prop_oneof![
                // Prices as the feed prints them (cents); serde_json's default float parser
                // is not exact for arbitrary f64s, which no feed price needs.
                (0u32..100_000_000, ".{0,12}").prop_map(|(cents, name)| Ok(Quote {
                    close: f64::from(cents) / 100.0,
                    name,
                    ..sample_quote()
                })),
                (code(), ".{0,40}").prop_map(|(code, m)| Err(QuoteError::new(code, m))),
            ]
        }

        proptest! {
            #[test]
            fn batch_requests_round_trip(
                symbols in proptest::collection::vec(".{0,24}", 0..=MAX_BATCH_SYMBOLS),
                request_id in proptest::option::of("[ -~]{0,40}"),
                deadline_ms in any::<u64>(),
            ) {
                let req = BatchQuoteRequest { v: BATCH_CONTRACT_VERSION, symbols, request_id, deadline_ms };
                let json = serde_json::to_vec(&req).unwrap();
                prop_assert_eq!(serde_json::from_slice::<BatchQuoteRequest>(&json).unwrap(), req);
            }

            #[test]
            fn batch_replies_read_back_as_sent(
                results in proptest::collection::vec(result(), 0..=MAX_BATCH_SYMBOLS),
            ) {
                let reply = BatchQuoteReply::ok(results.iter().cloned().map(Into::into).collect());
                let json = serde_json::to_vec(&reply).unwrap();
                prop_assert_eq!(
                    read_batch_reply(&json, results.len()).unwrap(),
                    BatchReplyRead::Results(results)
                );
            }

            #[test]
            fn arbitrary_bytes_never_panic_the_reader(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
                let _ = read_batch_reply(&bytes, 3);
            }
        }
    }
}
