//! The one error type handlers return, and the one JSON envelope every error response uses:
//! `{"error":{"code":"not_found","message":"…","request_id":"…"}}`.
//!
//! Clients can branch on `code` (stable, snake_case) and quote `request_id` in a support
//! request; `message` is for humans. Internal failures are logged here, once, with their
//! cause, and leave the process as an opaque `internal` error.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::request_id;
use crate::store::StoreError;
use crate::transport::TransportError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed (bad query string, unreadable JSON, bad cursor…).
    #[error("{0}")]
    BadRequest(String),
    /// 400: the symbol breaks the symbol rules.
    #[error("{0}")]
    InvalidSymbol(String),
    /// 401: no usable credentials. `invalid_token` adds `error="invalid_token"` to
    /// `WWW-Authenticate` (a token was sent but rejected), per RFC 6750 §3.
    #[error("{message}")]
    Unauthorized {
        message: String,
        invalid_token: bool,
    },
    /// 403: authenticated, but not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// 403: signed in by the session cookie, but a request that changes something came
    /// without the session's CSRF token (or with another one).
    #[error("{0}")]
    CsrfFailed(String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 405.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 409.
    #[error("{0}")]
    Conflict(String),
    /// 413.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 415.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 429: too many failed logins, or too many logins for one username or address still in
    /// progress; `retry_after` becomes the `Retry-After` header.
    #[error("{message}")]
    TooManyRequests {
        message: String,
        retry_after: std::time::Duration,
    },
    /// 422: well-formed but semantically invalid (unknown role, short password…).
    #[error("{0}")]
    Validation(String),
    /// 502: the quote service or stooq failed; `code` says how (`upstream_unavailable`…).
    #[error("{message}")]
    BadGateway { code: &'static str, message: String },
    /// 503: a dependency is down (`quote_service_unavailable`, `database_unavailable`), or
    /// password hashing is saturated (`login_overloaded`).
    /// `detail` (broker, queue and database specifics) is logged, never sent to clients.
    #[error("{message}")]
    Unavailable {
        code: &'static str,
        message: String,
        detail: String,
    },
    /// 504: the quote did not arrive in time.
    #[error("{0}")]
    GatewayTimeout(String),
    /// 500: a bug or unexpected failure; details are logged, never sent.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn internal(err: impl Into<anyhow::Error>) -> Self {
        ApiError::Internal(err.into())
    }

    pub fn missing_credentials() -> Self {
        ApiError::Unauthorized {
            message: "missing bearer token".into(),
            invalid_token: false,
        }
    }

    pub fn invalid_token(message: impl Into<String>) -> Self {
        ApiError::Unauthorized {
            message: message.into(),
            invalid_token: true,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::InvalidSymbol(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::CsrfFailed(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::BadGateway { .. } => StatusCode::BAD_GATEWAY,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::GatewayTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable machine-readable code for the envelope.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::InvalidSymbol(_) => "invalid_symbol",
            ApiError::Unauthorized { .. } => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::CsrfFailed(_) => "csrf_failed",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Conflict(_) => "conflict",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::TooManyRequests { .. } => "too_many_requests",
            ApiError::Validation(_) => "validation_failed",
            ApiError::BadGateway { code, .. } | ApiError::Unavailable { code, .. } => code,
            ApiError::GatewayTimeout(_) => "timeout",
            ApiError::Internal(_) => "internal",
        }
    }
}

/// The body of every error response (4xx and 5xx). Also the OpenAPI schema of those
/// responses, so the document describes exactly what is serialised here.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorEnvelope<'a> {
    pub error: ErrorBody<'a>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody<'a> {
    /// Stable, machine-readable reason: `bad_request`, `invalid_symbol`, `unauthorized`,
    /// `forbidden`, `csrf_failed`, `not_found`, `method_not_allowed`, `conflict`, `payload_too_large`,
    /// `unsupported_media_type`, `validation_failed`, `too_many_requests`,
    /// `upstream_unavailable`, `upstream_rejected`, `quote_service_error`,
    /// `quote_service_unavailable`, `database_unavailable`, `login_overloaded`, `timeout`,
    /// `internal`.
    #[schema(example = "not_found")]
    pub code: &'a str,
    /// For humans; wording may change.
    #[schema(example = "no such symbol")]
    pub message: &'a str,
    /// The request's id (also the `x-request-id` response header): quote it in a support
    /// request, it finds the request in both services' logs.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "0190f6a4-3b9c-7f42-8d8e-2c5b1e9a7d10")]
    pub request_id: Option<&'a str>,
}

/// Renders the envelope; also used for responses produced outside handlers (panics).
pub fn envelope_response(status: StatusCode, code: &str, message: &str) -> Response {
    let request_id = request_id::current();
    let body = serde_json::to_vec(&ErrorEnvelope {
        error: ErrorBody {
            code,
            message,
            request_id: request_id.as_deref(),
        },
    })
    .unwrap_or_else(|_| br#"{"error":{"code":"internal","message":"internal error"}}"#.to_vec());
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            ApiError::Internal(err) => {
                // Each cause once: sqlx errors print their cause and return it as source too.
                let error = shared::error_chain::report(err.as_ref());
                tracing::error!(error, "internal error");
                "internal error".to_owned()
            }
            ApiError::Unavailable {
                code,
                message,
                detail,
            } => {
                tracing::warn!(code, detail, "dependency unavailable");
                message.clone()
            }
            other => {
                if status.is_server_error() {
                    tracing::warn!(code = other.code(), error = %other, "dependency failure");
                }
                other.to_string()
            }
        };
        let mut response = envelope_response(status, self.code(), &message);
        let headers = response.headers_mut();
        match &self {
            ApiError::Unauthorized { invalid_token, .. } => {
                let value = if *invalid_token {
                    HeaderValue::from_static(r#"Bearer error="invalid_token""#)
                } else {
                    HeaderValue::from_static("Bearer")
                };
                headers.insert(header::WWW_AUTHENTICATE, value);
            }
            ApiError::Unavailable { .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::TooManyRequests { retry_after, .. } => {
                // Whole seconds, rounded up: retrying at the given time must succeed.
                let seconds = retry_after.as_millis().div_ceil(1000).max(1);
                headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds as u64));
            }
            ApiError::PayloadTooLarge(_) => {
                // The body was refused unread, so the server will not reuse this connection;
                // saying so stops a keep-alive client from sending its next request into a
                // socket that is being closed (it got "connection reset" otherwise).
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

/// Every path that hashes or verifies a password (login, creating a user, resetting a
/// password) shares the hashing slots: all of them answer a full house with 503 + Retry-After.
impl From<crate::auth::password::PasswordError> for ApiError {
    fn from(err: crate::auth::password::PasswordError) -> Self {
        use crate::auth::password::{MAX_WAIT, PasswordError};
        match err {
            PasswordError::Busy => ApiError::Unavailable {
                code: "login_overloaded",
                message: "too many logins are being checked right now; try again shortly".into(),
                detail: format!("every password hashing slot stayed busy for {MAX_WAIT:?}"),
            },
            other => ApiError::internal(other),
        }
    }
}

fn unavailable_database(source: &sqlx::Error) -> ApiError {
    ApiError::Unavailable {
        code: "database_unavailable",
        message: "the database is unavailable, try again shortly".into(),
        detail: source.to_string(),
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Conflict => ApiError::Conflict("already exists".into()),
            StoreError::Unavailable(source) => unavailable_database(&source),
            StoreError::Other(source) => ApiError::Internal(source.into()),
        }
    }
}

/// A store error shared by several requests (a `/stats` read they joined): the same answer for
/// each, the driver error kept as the source of a 500.
impl From<std::sync::Arc<StoreError>> for ApiError {
    fn from(err: std::sync::Arc<StoreError>) -> Self {
        match &*err {
            StoreError::Conflict => ApiError::Conflict("already exists".into()),
            StoreError::Unavailable(source) => unavailable_database(source),
            StoreError::Other(_) => ApiError::Internal(err.into()),
        }
    }
}

impl From<TransportError> for ApiError {
    fn from(err: TransportError) -> Self {
        use shared::ErrorCode;
        match err {
            TransportError::Quote(q) => match q.code {
                ErrorCode::NotFound => ApiError::NotFound(q.message),
                ErrorCode::InvalidSymbol => ApiError::InvalidSymbol(q.message),
                ErrorCode::Timeout => ApiError::GatewayTimeout(q.message),
                ErrorCode::UpstreamUnavailable | ErrorCode::UpstreamRejected => {
                    ApiError::BadGateway {
                        code: q.code.as_str(),
                        message: q.message,
                    }
                }
                // The worker's own failure is still an upstream failure from our side: 502
                // with its reason, not a 500 that would blame this service.
                ErrorCode::Internal => ApiError::BadGateway {
                    code: "quote_service_error",
                    message: format!("quote service failed: {}", q.message),
                },
                // The worker could not read the request this service built: our own bug, not
                // the client's nor the worker's. Logged with the worker's reason, sent opaque.
                ErrorCode::BadRequest => ApiError::internal(anyhow::anyhow!(
                    "the quote service refused our request as malformed: {}",
                    q.message
                )),
            },
            TransportError::Unavailable(reason) => ApiError::Unavailable {
                code: "quote_service_unavailable",
                message: "the quote service is unavailable, try again shortly".into(),
                detail: reason,
            },
            TransportError::Timeout => {
                ApiError::GatewayTimeout("the quote service did not answer in time".into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::{ErrorCode, QuoteError};

    async fn body_json(response: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn envelope_has_code_message_and_request_id() {
        let response = request_id::scope("req-42", async {
            ApiError::NotFound("no such symbol".into()).into_response()
        })
        .await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let json = body_json(response).await;
        assert_eq!(
            json,
            serde_json::json!({"error":{"code":"not_found","message":"no such symbol","request_id":"req-42"}})
        );
    }

    #[tokio::test]
    async fn internal_errors_are_opaque() {
        let response =
            ApiError::internal(anyhow::anyhow!("password hash column corrupted")).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let text = body_json(response).await.to_string();
        assert!(text.contains(r#""code":"internal""#));
        assert!(text.contains("internal error"));
        assert!(!text.contains("corrupted"));
    }

    #[tokio::test]
    async fn unauthorized_sets_www_authenticate() {
        let missing = ApiError::missing_credentials().into_response();
        assert_eq!(missing.headers()[header::WWW_AUTHENTICATE], "Bearer");
        let invalid = ApiError::invalid_token("expired").into_response();
        assert_eq!(
            invalid.headers()[header::WWW_AUTHENTICATE],
            r#"Bearer error="invalid_token""#
        );
        assert_eq!(invalid.status(), StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn transport_errors_map_to_documented_statuses() {
        let cases = [
            (
                TransportError::Quote(QuoteError::new(ErrorCode::NotFound, "")),
                404,
            ),
            (
                TransportError::Quote(QuoteError::new(ErrorCode::InvalidSymbol, "")),
                400,
            ),
            (
                TransportError::Quote(QuoteError::new(ErrorCode::UpstreamRejected, "")),
                502,
            ),
            (
                TransportError::Quote(QuoteError::new(ErrorCode::UpstreamUnavailable, "")),
                502,
            ),
            (
                TransportError::Quote(QuoteError::new(ErrorCode::Internal, "")),
                502,
            ),
            (
                TransportError::Quote(QuoteError::new(ErrorCode::Timeout, "")),
                504,
            ),
            (
                TransportError::Quote(QuoteError::new(ErrorCode::BadRequest, "")),
                500,
            ),
            (TransportError::Unavailable("no consumer".into()), 503),
            (TransportError::Timeout, 504),
        ];
        for (err, status) in cases {
            assert_eq!(ApiError::from(err).status().as_u16(), status);
        }
    }

    #[tokio::test]
    async fn unavailability_details_stay_in_the_logs() {
        let err = ApiError::from(TransportError::Unavailable(
            "no quote worker is consuming queue \"quotes.rpc\"".into(),
        ));
        let text = body_json(err.into_response()).await.to_string();
        assert!(text.contains("quote_service_unavailable"), "{text}");
        assert!(!text.contains("quotes.rpc"), "{text}");
    }

    #[tokio::test]
    async fn a_request_the_worker_could_not_read_is_our_bug_and_stays_opaque() {
        let err = ApiError::from(TransportError::Quote(QuoteError::new(
            ErrorCode::BadRequest,
            "unsupported contract version 7 (this worker speaks 1)",
        )));

        let response = err.into_response();

        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let json = body_json(response).await;
        assert_eq!(json["error"]["code"], "internal");
        assert_eq!(json["error"]["message"], "internal error");
        assert!(!json.to_string().contains("version"), "{json}");
    }

    #[test]
    fn upstream_reason_is_kept() {
        let err = ApiError::from(TransportError::Quote(QuoteError::new(
            ErrorCode::UpstreamRejected,
            "stooq wants an API key",
        )));
        assert_eq!(err.code(), "upstream_rejected");
        assert!(err.to_string().contains("API key"));
    }
}
