//! `/api/v1/session`: the web app's sign-in, "who am I" and sign-out. The token travels in
//! an HttpOnly cookie instead of the body, and the answer carries the CSRF token the page
//! sends back on requests that change something (see `auth::session_cookie`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use tracing::instrument;

use super::login::{LoginRequest, sign_in};
use super::logout::revoke;
use crate::auth::Session;
use crate::auth::login_throttle::ClientAddr;
use crate::error::{ApiError, ErrorEnvelope};
use crate::extract::ApiJson;
use crate::state::AppState;
use crate::store::Role;

#[derive(Serialize, utoipa::ToSchema)]
pub struct SessionView {
    #[schema(example = "alice")]
    username: String,
    role: Role,
    /// Send as `X-CSRF-Token` on every request that is not GET, HEAD or OPTIONS. Bound to
    /// this session's token: a new sign-in gets a new one.
    #[schema(example = "dGhpcyBpcyBub3QgYSByZWFsIHRva2VuIGF0IGFsbCEh")]
    csrf_token: String,
    /// When the session ends (UTC, RFC 3339): sign in again after it.
    #[schema(format = DateTime, example = "2024-05-10T21:00:09Z")]
    expires_at: String,
}

impl SessionView {
    fn new(
        state: &AppState,
        username: &str,
        role: Role,
        jti: &str,
        expires_at: u64,
    ) -> Result<Self, ApiError> {
        let expires_at = DateTime::<Utc>::from_timestamp(i64::try_from(expires_at).unwrap_or(0), 0)
            .unwrap_or_default()
            .to_rfc3339_opts(SecondsFormat::Secs, true);
        Ok(Self {
            username: username.to_owned(),
            role,
            csrf_token: state.jwt.csrf_token(jti).map_err(ApiError::internal)?,
            expires_at,
        })
    }
}

/// The same checks, throttle and answers as `POST /api/v1/login`; the token is set as the
/// `sq_session` cookie (HttpOnly, SameSite=Strict, Path=/, Max-Age = the token's lifetime,
/// Secure when COOKIE_SECURE=true) instead of being returned.
#[utoipa::path(
    post,
    path = "/api/v1/session",
    tag = "auth",
    summary = "Sign a browser in: the token goes into an HttpOnly session cookie",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in", body = SessionView,
            headers(("Set-Cookie" = String, description = "`sq_session=<token>; HttpOnly; SameSite=Strict; Path=/; Max-Age=<JWT_TTL seconds>` (`; Secure` with COOKIE_SECURE=true)"))),
        (status = 400, response = crate::openapi::BadJsonBody),
        (status = 401, description = "Wrong username or password (the same answer for both)",
            body = ErrorEnvelope,
            headers(("WWW-Authenticate" = String, description = "`Bearer`")),
            example = json!({"error": {"code": "unauthorized", "message": "invalid username or password", "request_id": "0190f6a4-3b9c-7f42-8d8e-2c5b1e9a7d10"}})),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 415, response = crate::openapi::UnsupportedMediaType),
        (status = 422, response = crate::openapi::InvalidJsonShape),
        (status = 429, description = "Throttled exactly like `POST /api/v1/login` (the two share the counts)",
            body = ErrorEnvelope,
            headers(("Retry-After" = u64, description = "Seconds until logins are accepted again")),
            example = json!({"error": {"code": "too_many_requests", "message": "too many failed logins; try again later", "request_id": "0190f6a4-3b9c-7f42-8d8e-2c5b1e9a7d10"}})),
        (status = 500, response = crate::openapi::Internal),
        (status = 503, response = crate::openapi::DatabaseOrHashingUnavailable),
    )
)]
#[instrument(skip_all, fields(request_id = %crate::request_id::current().unwrap_or_default(), username = tracing::field::Empty))]
pub async fn create(
    State(state): State<AppState>,
    ClientAddr(address): ClientAddr,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<Response, ApiError> {
    let (user, issued) = sign_in(&state, address, body).await?;
    let view = SessionView::new(
        &state,
        &user.username,
        user.role,
        &issued.jti,
        issued.expires_at,
    )?;
    let cookie = state
        .session_cookie
        .set(&issued.token)
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("a token that is not a header")))?;
    Ok(([cookie], Json(view)).into_response())
}

/// The page asks this at start-up: who is signed in (by the cookie, or a bearer token), and
/// the CSRF token to send with changes.
#[utoipa::path(
    get,
    path = "/api/v1/session",
    tag = "auth",
    summary = "Who is signed in, and the session's CSRF token",
    security(("bearer" = []), ("session_cookie" = [])),
    responses(
        (status = 200, description = "Signed in", body = SessionView),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 500, response = crate::openapi::Internal),
        (status = 503, response = crate::openapi::DatabaseUnavailable),
    )
)]
#[instrument(skip_all, fields(request_id = %crate::request_id::current().unwrap_or_default(), user_id = session.user.id))]
pub async fn show(State(state): State<AppState>, session: Session) -> Result<Response, ApiError> {
    let view = SessionView::new(
        &state,
        &session.username,
        session.user.role,
        &session.jti,
        session.expires_at,
    )?;
    Ok(Json(view).into_response())
}

/// Revokes the presented token (like `POST /api/v1/logout`) and tells the browser to drop
/// the cookie.
#[utoipa::path(
    delete,
    path = "/api/v1/session",
    tag = "auth",
    summary = "Sign out: revoke the session's token and clear the cookie",
    security(("bearer" = []), ("session_cookie" = [])),
    responses(
        (status = 204, description = "Signed out",
            headers(("Set-Cookie" = String, description = "`sq_session=; …; Max-Age=0`: the browser drops the cookie"))),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::CsrfFailed),
        (status = 500, response = crate::openapi::Internal),
        (status = 503, response = crate::openapi::DatabaseUnavailable),
    )
)]
#[instrument(skip_all, fields(request_id = %crate::request_id::current().unwrap_or_default(), user_id = session.user.id))]
pub async fn delete(State(state): State<AppState>, session: Session) -> Result<Response, ApiError> {
    revoke(&state, session).await?;
    let cookie = state.session_cookie.clear();
    Ok((StatusCode::NO_CONTENT, [cookie]).into_response())
}
