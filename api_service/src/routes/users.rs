//! Account management for admins: `GET /api/v1/users` lists the accounts, `POST
//! /api/v1/users` creates one, `PATCH` and `DELETE /api/v1/users/{username}` change a role or
//! password and remove one. A change revokes the user's tokens; no change may leave the
//! service without an admin.

use axum::Json;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tracing::instrument;
use utoipa::openapi::schema::{KnownFormat, Object, ObjectBuilder, SchemaFormat, Type};

use utoipa::openapi::path::{Parameter, ParameterIn};

use crate::auth::Admin;
use crate::error::{ApiError, ErrorEnvelope};
use crate::extract::{ApiJson, ApiQuery};
use crate::pagination::{self, parse_limit};
use crate::state::AppState;
use crate::store::{ChangeOutcome, Role, User, UserChange};
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
pub(super) fn password_schema() -> Object {
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

#[derive(Deserialize)]
pub struct ListParams {
    limit: Option<String>,
    cursor: Option<String>,
}

/// The cursor is the last username of the previous page: any name the username rules allow
/// is a position (none after it is simply an empty page), and the empty string is the start.
fn cursor_pattern() -> String {
    let class = shared::pattern::ascii_alphanumeric_class(users::USERNAME_PUNCTUATION);
    format!("^(?:{class}{{1,{USERNAME_MAX_CHARS}}})?$")
}

/// Written by hand so the bounds come from the constants the parsers apply.
impl utoipa::IntoParams for ListParams {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            pagination::limit_param("Users"),
            pagination::cursor_param(
                cursor_pattern(),
                "Position from a previous page's `Link` header (the last username it \
                     showed); absent (or empty) for the first page",
            ),
        ]
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/users",
    tag = "admin",
    summary = "List the users by username (admins only)",
    description = "Keyset-paginated like the history, in byte order of the username: when more \
        users exist, the `Link` header holds the URL of the next page (`rel=\"next\"`).",
    params(ListParams),
    security(("bearer" = []), ("session_cookie" = [])),
    responses(
        (status = 200, description = "One page of users (possibly empty)", body = [UserView],
            headers(("Link" = String, description = "Present when another page may exist: \
                `</api/v1/users?limit=50&cursor=bob>; rel=\"next\"`"))),
        (status = 400, description = "`limit` out of range or not a number, or a cursor that is no username", body = ErrorEnvelope,
            example = json!({"error": {"code": "bad_request", "message": "limit must be a whole number between 1 and 1000, got \"0\"", "request_id": "0190f6a4-3b9c-7f42-8d8e-2c5b1e9a7d10"}})),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 500, response = crate::openapi::Internal),
        (status = 503, response = crate::openapi::DatabaseUnavailable),
    )
)]
#[instrument(skip_all, fields(request_id = %crate::request_id::current().unwrap_or_default(), user_id = admin.0.id))]
pub async fn list(
    State(state): State<AppState>,
    admin: Admin,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Response, ApiError> {
    let _ = admin;
    let limit = parse_limit(params.limit.as_deref()).map_err(ApiError::BadRequest)?;
    let after = match params.cursor.as_deref() {
        None | Some("") => None,
        Some(name) => {
            users::validate_username(name).map_err(|_| {
                ApiError::BadRequest(
                    "invalid cursor; pass back the one from the Link header".into(),
                )
            })?;
            Some(name)
        }
    };
    // One extra row tells whether another page exists without a COUNT.
    let mut rows = state.store.list_users(after, limit + 1).await?;
    let has_more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next = has_more
        .then(|| rows.last().map(|last| last.username.clone()))
        .flatten();

    let page: Vec<UserView> = rows.into_iter().map(UserView::from).collect();
    let mut response = Json(page).into_response();
    if let Some(cursor) = next {
        // Usernames are URL-safe as they are (letters, digits and . _ - @).
        let link = format!("</api/v1/users?limit={limit}&cursor={cursor}>; rel=\"next\"");
        if let Ok(value) = HeaderValue::from_str(&link) {
            response.headers_mut().insert(header::LINK, value);
        }
    }
    Ok(response)
}

#[utoipa::path(
    post,
    path = "/api/v1/users",
    tag = "admin",
    summary = "Create a user (admins only)",
    request_body = CreateUserRequest,
    security(("bearer" = []), ("session_cookie" = [])),
    responses(
        (status = 201, description = "Created", body = UserView),
        (status = 400, response = crate::openapi::BadJsonBody),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::ForbiddenOrCsrfFailed),
        (status = 409, description = "The username is taken", body = ErrorEnvelope,
            example = json!({"error": {"code": "conflict", "message": "username \"bob\" is already taken", "request_id": "0190f6a4-3b9c-7f42-8d8e-2c5b1e9a7d10"}})),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 415, response = crate::openapi::UnsupportedMediaType),
        (status = 422, response = crate::openapi::InvalidJsonShape),
        (status = 500, response = crate::openapi::Internal),
        (status = 503, response = crate::openapi::DatabaseOrHashingUnavailable),
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

/// A merge patch: fields omitted (or null) stay as they are; `{}` changes nothing and
/// revokes nothing.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct UpdateUserRequest {
    #[serde(default)]
    role: Option<Role>,
    #[serde(default)]
    #[schema(schema_with = password_schema)]
    password: Option<SecretString>,
}

const LAST_ADMIN: &str = "the last admin cannot be deleted or demoted; make another admin first";

/// Applies `change`, dropping this instance's cached view of the user at once (the others
/// within their cache TTL).
pub(super) async fn apply(
    state: &AppState,
    username: &str,
    change: UserChange,
) -> Result<ChangeOutcome, ApiError> {
    let outcome = state.store.change_user(username, change).await?;
    match &outcome {
        ChangeOutcome::Deleted { id } => state.users.invalidate(*id),
        ChangeOutcome::Updated(user) => state.users.invalidate(user.id),
        ChangeOutcome::NotFound | ChangeOutcome::LastAdmin => {}
    }
    Ok(outcome)
}

/// A name that cannot be an account cannot be found either (and is not worth a lookup, or
/// a password hash).
fn existing_name(username: &str) -> Result<(), ApiError> {
    users::validate_username(username).map_err(|_| no_such_user(username))
}

/// The `{username}` a `PATCH` or `DELETE` is about. A name that is not UTF-8 once
/// percent-decoded names no account: the JSON 404, not axum's plain-text 400.
pub struct TargetUser(String);

impl<S: Send + Sync> FromRequestParts<S> for TargetUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(name)) => Ok(Self(name)),
            Err(_) => Err(ApiError::NotFound(
                "no such user: the name in the path is not UTF-8".into(),
            )),
        }
    }
}

fn no_such_user(username: &str) -> ApiError {
    ApiError::NotFound(format!("no user named {username:?}"))
}

#[utoipa::path(
    patch,
    path = "/api/v1/users/{username}",
    tag = "admin",
    summary = "Change a user's role or password (admins only)",
    description = "Every token the user holds stops working (this instance at once, the others \
        within `USER_CACHE_TTL`): they sign in again with the new password or role.",
    params(("username" = String, Path, description = "The account to change", example = "bob")),
    request_body = UpdateUserRequest,
    security(("bearer" = []), ("session_cookie" = [])),
    responses(
        (status = 200, description = "Changed", body = UserView),
        (status = 400, response = crate::openapi::BadJsonBody),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::ForbiddenOrCsrfFailed),
        (status = 404, description = "No such user", body = ErrorEnvelope,
            example = json!({"error": {"code": "not_found", "message": "no user named \"bob\"", "request_id": "0190f6a4-3b9c-7f42-8d8e-2c5b1e9a7d10"}})),
        (status = 409, description = "It would leave no admin", body = ErrorEnvelope,
            example = json!({"error": {"code": "conflict", "message": LAST_ADMIN, "request_id": "0190f6a4-3b9c-7f42-8d8e-2c5b1e9a7d10"}})),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 415, response = crate::openapi::UnsupportedMediaType),
        (status = 422, response = crate::openapi::InvalidJsonShape),
        (status = 500, response = crate::openapi::Internal),
        (status = 503, response = crate::openapi::DatabaseOrHashingUnavailable),
    )
)]
#[instrument(skip_all, fields(request_id = %crate::request_id::current().unwrap_or_default(), user_id = admin.0.id, username = %username))]
pub async fn update(
    State(state): State<AppState>,
    admin: Admin,
    TargetUser(username): TargetUser,
    ApiJson(body): ApiJson<UpdateUserRequest>,
) -> Result<Json<UserView>, ApiError> {
    let _ = admin;
    existing_name(&username)?;
    if body.role.is_none() && body.password.is_none() {
        let user = state.store.user_by_username(&username).await?;
        return user
            .map(|user| Json(UserView::from(user)))
            .ok_or_else(|| no_such_user(&username));
    }
    let password_hash = match body.password {
        Some(password) => {
            crate::users::validate_password(password.expose_secret())
                .map_err(ApiError::Validation)?;
            Some(state.hasher.hash(password).await.map_err(ApiError::from)?)
        }
        None => None,
    };
    let change = UserChange::Update {
        role: body.role,
        password_hash,
    };
    match apply(&state, &username, change).await? {
        ChangeOutcome::Updated(user) => {
            tracing::info!(
                changed_user_id = user.id,
                role = user.role.as_str(),
                "user changed"
            );
            Ok(Json(UserView::from(user)))
        }
        ChangeOutcome::LastAdmin => Err(ApiError::Conflict(LAST_ADMIN.into())),
        ChangeOutcome::NotFound | ChangeOutcome::Deleted { .. } => Err(no_such_user(&username)),
    }
}

#[utoipa::path(
    delete,
    path = "/api/v1/users/{username}",
    tag = "admin",
    summary = "Delete a user and their history (admins only)",
    params(("username" = String, Path, description = "The account to delete", example = "bob")),
    security(("bearer" = []), ("session_cookie" = [])),
    responses(
        (status = 204, description = "Deleted; the user's tokens stop working"),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::ForbiddenOrCsrfFailed),
        (status = 404, description = "No such user", body = ErrorEnvelope,
            example = json!({"error": {"code": "not_found", "message": "no user named \"bob\"", "request_id": "0190f6a4-3b9c-7f42-8d8e-2c5b1e9a7d10"}})),
        (status = 409, description = "It is the last admin", body = ErrorEnvelope,
            example = json!({"error": {"code": "conflict", "message": LAST_ADMIN, "request_id": "0190f6a4-3b9c-7f42-8d8e-2c5b1e9a7d10"}})),
        (status = 500, response = crate::openapi::Internal),
        (status = 503, response = crate::openapi::DatabaseUnavailable),
    )
)]
#[instrument(skip_all, fields(request_id = %crate::request_id::current().unwrap_or_default(), user_id = admin.0.id, username = %username))]
pub async fn delete(
    State(state): State<AppState>,
    admin: Admin,
    TargetUser(username): TargetUser,
) -> Result<StatusCode, ApiError> {
    let _ = admin;
    existing_name(&username)?;
    match apply(&state, &username, UserChange::Delete).await? {
        ChangeOutcome::Deleted { id } => {
            tracing::info!(deleted_user_id = id, "user deleted");
            Ok(StatusCode::NO_CONTENT)
        }
        ChangeOutcome::LastAdmin => Err(ApiError::Conflict(LAST_ADMIN.into())),
        ChangeOutcome::NotFound | ChangeOutcome::Updated(_) => Err(no_such_user(&username)),
    }
}
