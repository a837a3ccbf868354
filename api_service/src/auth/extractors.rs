//! Who is calling: [`CurrentUser`] for any valid bearer token of an existing user, [`Admin`]
//! for users whose role *in the database* is admin.
//!
//! The token proves identity; the database (through the short-lived [`super::UserCache`])
//! decides whether that identity still exists, whether the token was revoked (logged out, or
//! issued before a password or role change) and what the user may do, so none of that waits
//! for tokens to expire.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

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

/// The token of an `Authorization: Bearer <token>` header.
fn bearer_token(parts: &Parts) -> Result<&str, ApiError> {
    let Some(value) = parts.headers.get(AUTHORIZATION) else {
        return Err(ApiError::missing_credentials());
    };
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
        let token = bearer_token(parts)?;
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
        Ok(Session {
            user: CurrentUser {
                id,
                role: record.role,
            },
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
