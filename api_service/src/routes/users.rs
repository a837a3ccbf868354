//! `POST /api/v1/users` (admins): create a user.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use tracing::instrument;

use crate::auth::Admin;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::AppState;
use crate::store::{Role, User};

#[derive(Deserialize)]
pub struct CreateUserRequest {
    username: String,
    password: SecretString,
    role: Role,
}

/// A user as the API shows it: never the password hash.
#[derive(Serialize)]
pub struct UserView {
    id: i64,
    username: String,
    role: Role,
    created_at: DateTime<Utc>,
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        Self {
            id: u.id,
            username: u.username,
            role: u.role,
            created_at: u.created_at,
        }
    }
}

#[instrument(skip_all, fields(request_id = %crate::request_id::current().unwrap_or_default(), user_id = admin.0.id, username = tracing::field::Empty))]
pub async fn create(
    State(state): State<AppState>,
    admin: Admin,
    ApiJson(body): ApiJson<CreateUserRequest>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    let _ = admin;
    let user = crate::users::create_user_with(
        state.store.as_ref(),
        &state.hasher,
        &body.username,
        body.password,
        body.role,
    )
    .await?;
    tracing::Span::current().record("username", user.username.as_str());
    tracing::info!(
        new_user_id = user.id,
        role = user.role.as_str(),
        "user created"
    );
    Ok((StatusCode::CREATED, Json(UserView::from(user))))
}
