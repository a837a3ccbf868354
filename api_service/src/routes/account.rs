//! `PUT /api/v1/users/me/password`: a user changes their own password, proving the current
//! one first. The proof is checked like a login (same throttle, same hashing slots), so this
//! endpoint is no way around the login limits for someone holding a stolen session.

use axum::extract::State;
use axum::http::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tracing::instrument;

use super::login::verify_credentials;
use super::users::password_schema;
use crate::auth::Session;
use crate::auth::login_throttle::ClientAddr;
use crate::error::{ApiError, ErrorEnvelope};
use crate::extract::ApiJson;
use crate::state::AppState;
use crate::store::{ChangeOutcome, UserChange};

#[derive(Deserialize, utoipa::ToSchema)]
pub struct ChangePasswordRequest {
    #[schema(value_type = String, format = Password, example = "alice-password")]
    current_password: SecretString,
    #[schema(schema_with = password_schema)]
    new_password: SecretString,
}

#[utoipa::path(
    put,
    path = "/api/v1/users/me/password",
    tag = "auth",
    summary = "Change one's own password (the current one required)",
    description = "A wrong current password counts as a failed login for the login throttle. \
        On success every token of the user stops working, this one included: sign in again \
        with the new password.",
    request_body = ChangePasswordRequest,
    security(("bearer" = []), ("session_cookie" = [])),
    responses(
        (status = 204, description = "Changed; the user's tokens are revoked"),
        (status = 400, response = crate::openapi::BadJsonBody),
        (status = 401, description = "No valid token, or the current password is wrong",
            body = ErrorEnvelope,
            headers(("WWW-Authenticate" = String, description = "`Bearer`, or `Bearer error=\"invalid_token\"` when a token was sent but rejected")),
            examples(
                ("wrong current password" = (value = json!({"error": {"code": "unauthorized", "message": "the current password is wrong", "request_id": "0190f6a4-3b9c-7f42-8d8e-2c5b1e9a7d10"}}))),
                ("missing token" = (value = json!({"error": {"code": "unauthorized", "message": "missing bearer token", "request_id": "0190f6a4-3b9c-7f42-8d8e-2c5b1e9a7d10"}})))
            )),
        (status = 403, response = crate::openapi::CsrfFailed),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 415, response = crate::openapi::UnsupportedMediaType),
        (status = 422, response = crate::openapi::InvalidJsonShape),
        (status = 429, description = "Too many failed logins (or password checks) for this account",
            body = ErrorEnvelope,
            headers(("Retry-After" = u64, description = "Seconds until attempts are accepted again")),
            example = json!({"error": {"code": "too_many_requests", "message": "too many failed logins; try again later", "request_id": "0190f6a4-3b9c-7f42-8d8e-2c5b1e9a7d10"}})),
        (status = 500, response = crate::openapi::Internal),
        (status = 503, response = crate::openapi::DatabaseOrHashingUnavailable),
    )
)]
#[instrument(skip_all, fields(request_id = %crate::request_id::current().unwrap_or_default(), user_id = session.user.id, username = tracing::field::Empty))]
pub async fn change_password(
    State(state): State<AppState>,
    ClientAddr(address): ClientAddr,
    session: Session,
    ApiJson(body): ApiJson<ChangePasswordRequest>,
) -> Result<StatusCode, ApiError> {
    // Before any hashing: a refused new password costs nothing and counts as no attempt.
    crate::users::validate_password(body.new_password.expose_secret())
        .map_err(|message| ApiError::Validation(format!("field `new_password`: {message}")))?;
    let user = verify_credentials(
        &state,
        address,
        session.username.to_string(),
        body.current_password,
    )
    .await
    .map_err(|err| match err {
        ApiError::Unauthorized { .. } => ApiError::Unauthorized {
            message: "the current password is wrong".into(),
            invalid_token: false,
        },
        other => other,
    })?;
    if user.id != session.user.id {
        // The name now belongs to another account (deleted and recreated meanwhile).
        return Err(ApiError::invalid_token("the user no longer exists"));
    }
    let password_hash = state.hasher.hash(body.new_password).await?;
    let change = UserChange::Update {
        role: None,
        password_hash: Some(password_hash),
    };
    let outcome = super::users::apply(&state, &user.username, change).await?;
    match outcome {
        ChangeOutcome::Updated(_) => {
            tracing::info!("password changed by its owner");
            Ok(StatusCode::NO_CONTENT)
        }
        ChangeOutcome::NotFound | ChangeOutcome::Deleted { .. } => {
            Err(ApiError::invalid_token("the user no longer exists"))
        }
        ChangeOutcome::LastAdmin => Err(ApiError::internal(anyhow::anyhow!(
            "a password change was refused as removing the last admin"
        ))),
    }
}
