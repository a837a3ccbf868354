//! Who is calling: [`CurrentUser`] for any valid token of an existing user, [`Admin`]
//! for users whose role *in the database* is admin.
//!
//! The token comes from `Authorization: Bearer` or, for browsers, from the session cookie
//! (see [`super::session_cookie`]); when both are sent the header wins. A cookie-authenticated
//! request that may change something must also carry the session's CSRF token (403
//! `csrf_failed` otherwise).
//!
//! The token proves identity; the database (through the short-lived [`super::UserCache`])
//! decides whether that identity still exists, whether the token was revoked (logged out, or
//! issued before a password or role change) and what the user may do, so none of that waits
//! for tokens to expire.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::session_cookie::{self, CSRF_HEADER};

use crate::error::ApiError;
use crate::state::AppState;
use crate::store::Role;

/// An authenticated caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CurrentUser {
    pub id: i64,
    /// From the database, not from the token.
    pub role: Role,
}

/// An authenticated caller whose database role is admin; 403 for anyone else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admin(pub CurrentUser);

/// Where the request's token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Carrier {
    Bearer,
    Cookie,
}

/// The request's token: the `Authorization` header's when there is one (even a malformed
/// one, which is refused rather than passed over), else the session cookie's.
fn presented_token(parts: &Parts) -> Result<(&str, Carrier), ApiError> {
    if let Some(value) = parts.headers.get(AUTHORIZATION) {
        return bearer_token(value).map(|token| (token, Carrier::Bearer));
    }
    match session_cookie::from_headers(&parts.headers) {
        Some(token) => Ok((token, Carrier::Cookie)),
        None => Err(ApiError::missing_credentials()),
    }
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer_token(value: &axum::http::HeaderValue) -> Result<&str, ApiError> {
    let value = value
        .to_str()
        .map_err(|_| ApiError::invalid_token("malformed Authorization header"))?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::Unauthorized {
            message: "expected an Authorization: Bearer token".into(),
            invalid_token: false,
        });
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(ApiError::invalid_token("empty bearer token"));
    }
    Ok(token)
}

/// The caller and the token they presented: what `POST /logout` revokes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user: CurrentUser,
    /// As stored now.
    pub username: Arc<str>,
    pub jti: String,
    /// The token's `exp` (Unix seconds): its revocation is kept until then.
    pub expires_at: u64,
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Ok(Session::from_request_parts(parts, state).await?.user)
    }
}

impl FromRequestParts<AppState> for Session {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let (token, carrier) = presented_token(parts)?;
        let claims = state
            .jwt
            .verify(token)
            .map_err(|err| ApiError::invalid_token(err.to_string()))?;
        let id = claims
            .user_id()
            .ok_or_else(|| ApiError::invalid_token("invalid token"))?;
        let record = state.users.resolve(state.store.as_ref(), id).await?;
        let Some(record) = record else {
            return Err(ApiError::invalid_token("the user no longer exists"));
        };
        // Ids are never reused by the store, but a restored or recreated database could
        // hand an old token's id to a new user: such a token predates its user.
        if (claims.iat as i64) < record.created_at {
            return Err(ApiError::invalid_token("the token predates its user"));
        }
        // Logged out, or issued before a password or role change.
        if !record.accepts(&claims.jti, claims.ver) {
            return Err(ApiError::invalid_token("the token was revoked"));
        }
        tracing::Span::current().record("user_id", id);
        if carrier == Carrier::Cookie && !session_cookie::is_safe(&parts.method) {
            let presented = parts
                .headers
                .get(CSRF_HEADER)
                .and_then(|value| value.to_str().ok());
            match presented {
                Some(csrf) if state.jwt.csrf_matches(&claims.jti, csrf.trim()) => {}
                Some(_) => return Err(ApiError::CsrfFailed("wrong X-CSRF-Token".into())),
                None => {
                    return Err(ApiError::CsrfFailed(
                        "missing X-CSRF-Token: a request signed in by the session cookie that \
                         changes something must carry the session's CSRF token"
                            .into(),
                    ));
                }
            }
        }
        Ok(Session {
            user: CurrentUser {
                id,
                role: record.role,
            },
            username: record.username,
            jti: claims.jti,
            expires_at: claims.exp,
        })
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let user = CurrentUser::from_request_parts(parts, state).await?;
        if user.role != Role::Admin {
            return Err(ApiError::Forbidden(
                "this endpoint is for admins only".into(),
            ));
        }
        Ok(Admin(user))
    }
}
