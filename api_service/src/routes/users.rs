//! `POST /api/v1/users` (admins): create a user.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use tracing::instrument;
use utoipa::openapi::schema::{KnownFormat, Object, ObjectBuilder, SchemaFormat, Type};

use crate::auth::Admin;
use crate::error::{ApiError, ErrorEnvelope};
use crate::extract::ApiJson;
use crate::state::AppState;
use crate::store::{Role, User};
use crate::users::{self, PASSWORD_MAX_CHARS, PASSWORD_MIN_CHARS, USERNAME_MAX_CHARS};

#[derive(Deserialize, utoipa::ToSchema)]
pub struct CreateUserRequest {
    #[schema(schema_with = username_schema)]
    username: String,
    #[schema(schema_with = password_schema)]
    password: SecretString,
    role: Role,
}

/// The rules [`users::validate_username`] applies, from its own constants.
fn username_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(format!(
            "1-{USERNAME_MAX_CHARS} characters: ASCII letters, digits and `.` `_` `-` `@`."
        )))
        .min_length(Some(1))
        .max_length(Some(USERNAME_MAX_CHARS))
        .pattern(Some(users::username_pattern()))
        .examples(["bob"])
        .build()
}

/// The rules [`users::validate_password`] applies, from its own constants.
fn password_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Password)))
        .description(Some(format!(
            "{PASSWORD_MIN_CHARS}-{PASSWORD_MAX_CHARS} characters."
        )))
        .min_length(Some(PASSWORD_MIN_CHARS))
        .max_length(Some(PASSWORD_MAX_CHARS))
        .examples(["correct horse battery"])
        .build()
}

/// A user as the API shows it: never the password hash.
#[derive(Serialize, utoipa::ToSchema)]
pub struct UserView {
    #[schema(example = 2)]
    id: i64,
    #[schema(example = "bob")]
    username: String,
    role: Role,
    #[schema(example = "2024-05-10T20:00:09.123456Z")]
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

#[utoipa::path(
    post,
    path = "/api/v1/users",
    tag = "admin",
    summary = "Create a user (admins only)",
    request_body = CreateUserRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = UserView),
        (status = 400, response = crate::openapi::BadJsonBody),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 409, description = "The username is taken", body = ErrorEnvelope,
            example = json!({"error": {"code": "conflict", "message": "username \"bob\" is already taken", "request_id": "0190f6a4-3b9c-7f42-8d8e-2c5b1e9a7d10"}})),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 415, response = crate::openapi::UnsupportedMediaType),
        (status = 422, response = crate::openapi::InvalidJsonShape),
        (status = 500, response = crate::openapi::Internal),
        (status = 503, response = crate::openapi::DatabaseUnavailable),
    )
)]
#[instrument(skip_all, fields(request_id = %crate::request_id::current().unwrap_or_default(), user_id = admin.0.id, username = tracing::field::Empty))]
pub async fn create(
    State(state): State<AppState>,
    admin: Admin,
    ApiJson(body): ApiJson<CreateUserRequest>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    let _ = admin;
    let user = users::create_user_with(
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
