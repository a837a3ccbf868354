//! `POST /api/v1/login`: username and password in, bearer token out.

use std::net::IpAddr;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use tracing::instrument;

use tracing::Instrument as _;

use crate::auth::jwt::IssuedToken;
use crate::auth::login_throttle::{Attempt, ClientAddr, Refusal};
use crate::auth::password;
use crate::error::{ApiError, ErrorEnvelope};
use crate::extract::ApiJson;
use crate::state::AppState;
use crate::store::User;

#[derive(Deserialize, utoipa::ToSchema)]
pub struct LoginRequest {
    #[schema(example = "alice")]
    pub(super) username: String,
    #[schema(value_type = String, format = Password, example = "alice-password")]
    pub(super) password: SecretString,
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
/// neither the answer nor its timing tells which usernames exist. Repeated failures get 429
/// before any work (see `auth::login_throttle`): for this username from this address, from
/// this address, or (paced, unless this address has logged in as the user before) for this
/// username from anywhere; so does, after a short wait, a username or address with too many
/// logins still in progress. When every hashing slot stays busy for a few seconds, 503.
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
        (status = 429, description = "Too many failed logins for this username from this address, from this address, or for this username from anywhere (paced); or too many logins in progress for this username or address",
            body = ErrorEnvelope,
            headers(("Retry-After" = u64, description = "Seconds until logins are accepted again")),
            example = json!({"error": {"code": "too_many_requests", "message": "too many failed logins; try again later", "request_id": "0190f6a4-3b9c-7f42-8d8e-2c5b1e9a7d10"}})),
        (status = 500, response = crate::openapi::Internal),
        (status = 503, description = "The database is unavailable (`database_unavailable`), or every password hashing slot stayed busy (`login_overloaded`)",
            body = ErrorEnvelope,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying")),
            example = json!({"error": {"code": "login_overloaded", "message": "too many logins are being checked right now; try again shortly", "request_id": "0190f6a4-3b9c-7f42-8d8e-2c5b1e9a7d10"}})),
    )
)]
#[instrument(skip_all, fields(request_id = %crate::request_id::current().unwrap_or_default(), username = tracing::field::Empty))]
pub async fn login(
    State(state): State<AppState>,
    ClientAddr(address): ClientAddr,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<Json<LoginResponse>, ApiError> {
    let (_, issued) = sign_in(&state, address, body).await?;
    Ok(Json(LoginResponse {
        token: issued.token,
        token_type: "Bearer",
        expires_in: issued.expires_in,
    }))
}

/// Checks the credentials under the login throttle and issues a token: what `/login` and
/// `/session` share, so a browser sign-in is throttled, counted and answered exactly like
/// an API client's.
pub(super) async fn sign_in(
    state: &AppState,
    address: Option<IpAddr>,
    body: LoginRequest,
) -> Result<(User, IssuedToken), ApiError> {
    let LoginRequest { username, password } = body;
    let user = verify_credentials(state, address, username, password).await?;
    // The next request will almost certainly present this token: warm the cache.
    state.users.warm(state.store.as_ref(), &user).await?;
    let issued = state
        .jwt
        .issue(user.id, user.role, user.token_version)
        .map_err(ApiError::internal)?;
    tracing::info!(user_id = user.id, "login succeeded");
    Ok((user, issued))
}

/// The user, if `password` is theirs: admitted by the login throttle first, the verdict
/// counted by it after (also what a password change uses to check the current password).
pub(super) async fn verify_credentials(
    state: &AppState,
    address: Option<IpAddr>,
    username: String,
    password: SecretString,
) -> Result<User, ApiError> {
    let well_formed = crate::users::validate_username(&username).is_ok();
    if well_formed {
        tracing::Span::current().record("username", username.as_str());
    }
    let attempt = state
        .login_throttle
        .admit(&username, address)
        .await
        .map_err(|refusal| refused(refusal, address))?;
    // The check runs to its verdict in a task of its own: a client that hangs up mid-hash
    // has still cost a full argon2 run, so its attempt must still be counted.
    let check =
        check_password(state.clone(), attempt, username, password, well_formed).in_current_span();
    tokio::spawn(check).await.map_err(ApiError::internal)?
}

pub(super) fn refused(refusal: Refusal, address: Option<IpAddr>) -> ApiError {
    let (message, retry_after) = match refusal {
        Refusal::LockedOut(wait) => ("too many failed logins; try again later", wait),
        Refusal::Paced(wait) => (
            "too many failed logins for this account; try again later",
            wait,
        ),
        Refusal::Busy => (
            "too many logins in progress for this account or address; try again later",
            Duration::from_secs(1),
        ),
        Refusal::Full(wait) => ("too many logins being tracked; try again later", wait),
        Refusal::Unavailable => {
            return ApiError::Unavailable {
                code: "database_unavailable",
                message: "the database is unavailable, try again shortly".into(),
                detail: "the login throttle's shared counts could not be read".into(),
            };
        }
    };
    tracing::warn!(?address, ?refusal, "login throttled");
    ApiError::TooManyRequests {
        message: message.into(),
        retry_after,
    }
}

/// Looks the user up and verifies the password, reporting the verdict to the throttle.
async fn check_password(
    state: AppState,
    attempt: Attempt,
    username: String,
    password: SecretString,
    well_formed: bool,
) -> Result<User, ApiError> {
    // A name that cannot be an account is not looked up (on PostgreSQL a NUL byte is an
    // error, not a miss), but it costs the same hash as any wrong login.
    let user = match well_formed {
        true => state.store.user_by_username(&username).await?,
        false => None,
    };
    let stored = user.as_ref().map(|u| u.password_hash.clone());
    let verified = state
        .hasher
        .verify(password.clone(), stored)
        .await
        .map_err(ApiError::from)?;
    match user {
        Some(user) if verified => {
            attempt.succeeded();
            if password::needs_rehash(&user.password_hash) {
                tokio::spawn(upgrade_hash(state, user.clone(), password).in_current_span());
            }
            Ok(user)
        }
        _ => {
            attempt.failed();
            tracing::info!("login refused");
            Err(ApiError::Unauthorized {
                message: "invalid username or password".into(),
                invalid_token: false,
            })
        }
    }
}

/// Stores a hash at the current cost in place of an older, cheaper one, now that a login has
/// proved the password. Best effort: if it fails, the next login tries again. Only replaces
/// the hash that was verified, never a password changed meanwhile.
async fn upgrade_hash(state: AppState, user: User, password: SecretString) {
    let upgraded = match state.hasher.hash(password).await {
        Ok(hash) => hash,
        Err(err) => {
            tracing::warn!(error = %err, user_id = user.id, "could not rehash a password");
            return;
        }
    };
    match state
        .store
        .replace_password_hash(user.id, &user.password_hash, &upgraded)
        .await
    {
        Ok(true) => tracing::info!(
            user_id = user.id,
            "password hash upgraded to the current cost"
        ),
        Ok(false) => tracing::info!(
            user_id = user.id,
            "password changed meanwhile; hash left alone"
        ),
        Err(err) => {
            tracing::warn!(error = %err, user_id = user.id, "could not store a rehashed password")
        }
    }
}
