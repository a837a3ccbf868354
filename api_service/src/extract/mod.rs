//! `Json` and `Query` extractors whose rejections use the API's error envelope and the API's
//! own words, never axum's or serde's.
//!
//! One rule for JSON bodies: 415 when it is not sent as JSON, 413 over the limit, 400 when
//! the bytes are not one well-formed JSON value, 422 when well-formed JSON has the wrong
//! shape (wrong type, missing field, unknown enum value, a key given twice), naming the field
//! (see [`json_body`]). A query string that cannot be read is a 400.

mod json_body;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use json_body::BodyError;

/// Largest accepted request body. Every body this API takes is a few hundred bytes.
pub const BODY_LIMIT: usize = 16 * 1024;

/// A JSON request body of type `T`; see the module documentation for the statuses.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(request.headers()) {
            return Err(ApiError::UnsupportedMediaType(
                "expected a JSON body with Content-Type: application/json".into(),
            ));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(unreadable_body)?;
        match json_body::parse(&bytes) {
            Ok(value) => Ok(ApiJson(value)),
            Err(BodyError::Syntax(message)) => Err(ApiError::BadRequest(message)),
            Err(BodyError::Shape(message)) => Err(ApiError::Validation(message)),
        }
    }
}

/// `application/json`, or any `application/*+json`, parameters (`; charset=utf-8`) aside.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    let subtype = subtype.to_ascii_lowercase();
    kind.eq_ignore_ascii_case("application") && (subtype == "json" || subtype.ends_with("+json"))
}

fn unreadable_body(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge(format!(
            "request body is larger than {} KiB",
            BODY_LIMIT / 1024
        ))
    } else {
        ApiError::BadRequest("the request body could not be read".into())
    }
}

pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(query_rejection(rejection)),
        }
    }
}

/// What serde found wrong (for these all-optional string parameters, a name given twice),
/// without axum's "Failed to deserialize query string" around it.
fn query_rejection(rejection: QueryRejection) -> ApiError {
    let mut cause: &dyn std::error::Error = &rejection;
    while let Some(source) = cause.source() {
        cause = source;
    }
    ApiError::BadRequest(format!("invalid query string: {cause}"))
}
