//! `POST /api/v1/logout`: revoke the presented token on every instance.

use axum::extract::State;
use axum::http::StatusCode;
use tracing::instrument;

use crate::auth::Session;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::RevokedToken;

#[utoipa::path(
    post,
    path = "/api/v1/logout",
    tag = "auth",
    summary = "Revoke the token this request presents",
    description = "The token is refused from then on, by this instance at once and by every \
        other instance sharing the database within `USER_CACHE_TTL` (at most 2 s), until it \
        would have expired anyway. Other tokens of the same user stay valid.",
    security(("bearer" = []), ("session_cookie" = [])),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::CsrfFailed),
        (status = 500, response = crate::openapi::Internal),
        (status = 503, response = crate::openapi::DatabaseUnavailable),
    )
)]
#[instrument(skip_all, fields(request_id = %crate::request_id::current().unwrap_or_default(), user_id = session.user.id))]
pub async fn logout(
    State(state): State<AppState>,
    session: Session,
) -> Result<StatusCode, ApiError> {
    revoke(&state, session).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Refuses the session's token from now on: at once here, within `USER_CACHE_TTL` on the
/// other instances. Shared with `DELETE /session`.
pub(super) async fn revoke(state: &AppState, session: Session) -> Result<(), ApiError> {
    let token = RevokedToken {
        user_id: session.user.id,
        jti: session.jti,
        expires_at: i64::try_from(session.expires_at).unwrap_or(i64::MAX),
    };
    let now = chrono::Utc::now().timestamp();
    state.store.revoke_token(token, now).await?;
    state.users.invalidate(session.user.id);
    tracing::info!("logged out");
    Ok(())
}
