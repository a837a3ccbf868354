//! `POST /api/v1/login`: username and password in, bearer token out.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use tracing::instrument;

use crate::auth::login_throttle::{ClientAddr, Refusal};
use crate::auth::user_cache::UserRecord;
use crate::error::{ApiError, ErrorEnvelope};
use crate::extract::ApiJson;
use crate::state::AppState;

#[derive(Deserialize, utoipa::ToSchema)]
pub struct LoginRequest {
    #[schema(example = "alice")]
    username: String,
    #[schema(value_type = String, format = Password, example = "alice-password")]
    password: SecretString,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct LoginResponse {
    /// Send as `Authorization: Bearer <token>`.
    #[schema(example = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl")]
    token: String,
    #[schema(example = "Bearer")]
    token_type: &'static str,
    /// Seconds until the token expires.
    #[schema(example = 3600)]
    expires_in: u64,
}

/// Wrong password and unknown user give the same 401 after the same argon2 work, so
/// neither the answer nor its timing tells which usernames exist. Repeated failures for a
/// username or from an address get 429 before any work (see `auth::login_throttle`), as
/// does, after a short wait, a username with too many logins still in progress.
#[utoipa::path(
    post,
    path = "/api/v1/login",
    tag = "auth",
    summary = "Exchange a username and password for a bearer token",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = LoginResponse),
        (status = 400, response = crate::openapi::BadJsonBody),
        (status = 401, description = "Wrong username or password (the same answer for both)",
            body = ErrorEnvelope,
            headers(("WWW-Authenticate" = String, description = "`Bearer`")),
            example = json!({"error": {"code": "unauthorized", "message": "invalid username or password", "request_id": "0190f6a4-3b9c-7f42-8d8e-2c5b1e9a7d10"}})),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 415, response = crate::openapi::UnsupportedMediaType),
        (status = 422, response = crate::openapi::InvalidJsonShape),
        (status = 429, description = "Too many failed logins for this username or from this address, or too many logins in progress for this username",
            body = ErrorEnvelope,
            headers(("Retry-After" = u64, description = "Seconds until logins are accepted again")),
            example = json!({"error": {"code": "too_many_requests", "message": "too many failed logins; try again later", "request_id": "0190f6a4-3b9c-7f42-8d8e-2c5b1e9a7d10"}})),
        (status = 500, response = crate::openapi::Internal),
        (status = 503, response = crate::openapi::DatabaseUnavailable),
    )
)]
#[instrument(skip_all, fields(request_id = %crate::request_id::current().unwrap_or_default(), username = tracing::field::Empty))]
pub async fn login(
    State(state): State<AppState>,
    ClientAddr(address): ClientAddr,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<Json<LoginResponse>, ApiError> {
    if crate::users::validate_username(&body.username).is_ok() {
        tracing::Span::current().record("username", body.username.as_str());
    }
    let attempt = match state.login_throttle.admit(&body.username, address).await {
        Ok(attempt) => attempt,
        Err(Refusal::LockedOut(retry_after)) => {
            tracing::warn!(?address, "login throttled after repeated failures");
            return Err(ApiError::TooManyRequests {
                message: "too many failed logins; try again later".into(),
                retry_after,
            });
        }
        Err(Refusal::Busy) => {
            tracing::warn!(?address, "login throttled: too many attempts in flight");
            return Err(ApiError::TooManyRequests {
                message: "too many logins in progress for this username; try again later".into(),
                retry_after: Duration::from_secs(1),
            });
        }
    };
    let user = state.store.user_by_username(&body.username).await?;
    let stored = user.as_ref().map(|u| u.password_hash.clone());
    let verified = state
        .hasher
        .verify(body.password, stored)
        .await
        .map_err(ApiError::internal)?;
    let user = match user {
        Some(user) if verified => user,
        _ => {
            attempt.failed();
            tracing::info!("login refused");
            return Err(ApiError::Unauthorized {
                message: "invalid username or password".into(),
                invalid_token: false,
            });
        }
    };
    attempt.succeeded();
    // The next request will almost certainly present this token: warm the cache.
    state.users.insert(user.id, Some(UserRecord::from(&user)));
    let issued = state
        .jwt
        .issue(user.id, user.role)
        .map_err(ApiError::internal)?;
    tracing::info!(user_id = user.id, "login succeeded");
    Ok(Json(LoginResponse {
        token: issued.token,
        token_type: "Bearer",
        expires_in: issued.expires_in,
    }))
}
