//! The OpenAPI 3.1 document, generated from the code: each handler's `#[utoipa::path]`
//! annotation registers its route *and* documents it (see [`crate::routes::api_routes`]), so
//! the router and the document cannot list different endpoints. This module holds what is
//! shared across operations: the document's header, the bearer scheme and the reusable error
//! responses, all of which use the one error envelope ([`crate::error::ErrorEnvelope`]).
//!
//! Served at [`OPENAPI_PATH`], browsable with Swagger UI at [`DOCS_PATH`].

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToResponse};

use crate::error::ErrorEnvelope;

/// Where the JSON document is served.
pub const OPENAPI_PATH: &str = "/api/v1/openapi.json";
/// Where Swagger UI is served (its assets are embedded in the binary at build time).
pub const DOCS_PATH: &str = "/docs";
/// Name of the security scheme the authenticated operations require.
pub const BEARER: &str = "bearer";
/// Name of the alternative scheme browsers use: the session cookie (with the CSRF header on
/// requests that change something).
pub const SESSION_COOKIE: &str = "session_cookie";

/// The document's header and shared components; paths are added by the router.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Stock quotes API",
        description = "Log in for a bearer token, ask for stock quotes (each one is recorded in \
            your history), page through that history, and - as an admin - read the most \
            requested symbols and create users.\n\n\
            Every error response has the same JSON envelope: \
            `{\"error\":{\"code\":\"...\",\"message\":\"...\",\"request_id\":\"...\"}}`. \
            Branch on `code` (stable); `message` is for humans; quote `request_id` (also in the \
            `x-request-id` response header) when reporting a problem."
    ),
    modifiers(&SecuritySchemes),
    components(
        schemas(ErrorEnvelope),
        responses(
            Unauthorized,
            Forbidden,
            CsrfFailed,
            ForbiddenOrCsrfFailed,
            BadJsonBody,
            PayloadTooLarge,
            UnsupportedMediaType,
            InvalidJsonShape,
            DatabaseUnavailable,
            DatabaseOrHashingUnavailable,
            Internal
        )
    ),
    tags(
        (name = "auth", description = "Obtaining and revoking bearer tokens and browser sessions"),
        (name = "quotes", description = "Stock quotes and the caller's own history"),
        (name = "admin", description = "Admins only: statistics and user management"),
        (name = "operations", description = "Health, readiness and Prometheus metrics")
    )
)]
pub struct ApiDoc;

/// Registers the `bearer` scheme (`Authorization: Bearer <JWT from /api/v1/login>`) and the
/// browsers' `session_cookie` scheme.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "The `token` from `POST /api/v1/login`, sent as \
                         `Authorization: Bearer <token>`. HS256 JWT; expires after JWT_TTL.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            SESSION_COOKIE,
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                crate::auth::session_cookie::COOKIE_NAME,
                "For browsers: the HttpOnly cookie `POST /api/v1/session` sets (the same kind of \
                 token as a bearer's). A request it authenticates whose method is not GET, HEAD \
                 or OPTIONS must also send `X-CSRF-Token: <csrf_token>`, the value the session \
                 endpoints answer, else 403 `csrf_failed`. An `Authorization` header, when \
                 present, is used instead of the cookie.",
            ))),
        );
    }
}

/// No usable credentials: the bearer token is missing, malformed, expired, or its user no
/// longer exists. `WWW-Authenticate` says which (RFC 6750).
#[derive(ToResponse)]
#[response(
    headers(("WWW-Authenticate" = String, description = "`Bearer`, or `Bearer error=\"invalid_token\"` when a token was sent but rejected")),
    examples(
        ("missing token" = (value = json!({"error": {"code": "unauthorized", "message": "missing bearer token", "request_id": "0190f6a4-3b9c-7f42-8d8e-2c5b1e9a7d10"}}))),
        ("invalid token" = (value = json!({"error": {"code": "unauthorized", "message": "token expired", "request_id": "0190f6a4-3b9c-7f42-8d8e-2c5b1e9a7d10"}})))
    )
)]
pub struct Unauthorized(pub ErrorEnvelope<'static>);

/// Authenticated, but the caller's role (as stored now, not as in the token) is not admin.
#[derive(ToResponse)]
#[response(
    example = json!({"error": {"code": "forbidden", "message": "this endpoint is for admins only", "request_id": "0190f6a4-3b9c-7f42-8d8e-2c5b1e9a7d10"}})
)]
pub struct Forbidden(pub ErrorEnvelope<'static>);

/// Signed in by the session cookie, but the request changes something and came without the
/// session's `X-CSRF-Token` (or with another session's).
#[derive(ToResponse)]
#[response(
    example = json!({"error": {"code": "csrf_failed", "message": "wrong X-CSRF-Token", "request_id": "0190f6a4-3b9c-7f42-8d8e-2c5b1e9a7d10"}})
)]
pub struct CsrfFailed(pub ErrorEnvelope<'static>);

/// An admin endpoint called by a user (`forbidden`), or, signed in by the session cookie,
/// without the session's `X-CSRF-Token` (`csrf_failed`).
#[derive(ToResponse)]
#[response(
    examples(
        ("not an admin" = (value = json!({"error": {"code": "forbidden", "message": "this endpoint is for admins only", "request_id": "0190f6a4-3b9c-7f42-8d8e-2c5b1e9a7d10"}}))),
        ("no CSRF token" = (value = json!({"error": {"code": "csrf_failed", "message": "wrong X-CSRF-Token", "request_id": "0190f6a4-3b9c-7f42-8d8e-2c5b1e9a7d10"}})))
    )
)]
pub struct ForbiddenOrCsrfFailed(pub ErrorEnvelope<'static>);

/// The body is not one well-formed JSON value (empty, cut short, or not JSON at all).
#[derive(ToResponse)]
#[response(
    example = json!({"error": {"code": "bad_request", "message": "the request body is not valid JSON (line 1, column 2)", "request_id": "0190f6a4-3b9c-7f42-8d8e-2c5b1e9a7d10"}})
)]
pub struct BadJsonBody(pub ErrorEnvelope<'static>);

/// The body is over the 16 KiB limit.
#[derive(ToResponse)]
#[response(
    example = json!({"error": {"code": "payload_too_large", "message": "request body is larger than 16 KiB", "request_id": "0190f6a4-3b9c-7f42-8d8e-2c5b1e9a7d10"}})
)]
pub struct PayloadTooLarge(pub ErrorEnvelope<'static>);

/// The body was not sent as `Content-Type: application/json`.
#[derive(ToResponse)]
#[response(
    example = json!({"error": {"code": "unsupported_media_type", "message": "expected a JSON body with Content-Type: application/json", "request_id": "0190f6a4-3b9c-7f42-8d8e-2c5b1e9a7d10"}})
)]
pub struct UnsupportedMediaType(pub ErrorEnvelope<'static>);

/// Well-formed JSON of the wrong shape (a missing field, a wrong type, an unknown role, a key
/// given twice) or a value the rules refuse (a password that is too short); the message names
/// the field.
#[derive(ToResponse)]
#[response(
    examples(
        ("missing field" = (value = json!({"error": {"code": "validation_failed", "message": "field `password` is required", "request_id": "0190f6a4-3b9c-7f42-8d8e-2c5b1e9a7d10"}}))),
        ("wrong type" = (value = json!({"error": {"code": "validation_failed", "message": "field `role` must be one of \"user\", \"admin\"", "request_id": "0190f6a4-3b9c-7f42-8d8e-2c5b1e9a7d10"}})))
    )
)]
pub struct InvalidJsonShape(pub ErrorEnvelope<'static>);

/// The database cannot be reached; `Retry-After: 1`. Details go to the server log only.
#[derive(ToResponse)]
#[response(
    headers(("Retry-After" = u32, description = "Seconds to wait before retrying")),
    example = json!({"error": {"code": "database_unavailable", "message": "the database is unavailable, try again shortly", "request_id": "0190f6a4-3b9c-7f42-8d8e-2c5b1e9a7d10"}})
)]
pub struct DatabaseUnavailable(pub ErrorEnvelope<'static>);

/// For routes that hash a password: the database cannot be reached, or every password
/// hashing slot stayed busy for 5 s (`login_overloaded`); `Retry-After` either way.
#[derive(ToResponse)]
#[response(
    headers(("Retry-After" = u32, description = "Seconds to wait before retrying")),
    examples(
        ("database" = (value = json!({"error": {"code": "database_unavailable", "message": "the database is unavailable, try again shortly", "request_id": "0190f6a4-3b9c-7f42-8d8e-2c5b1e9a7d10"}}))),
        ("hashing" = (value = json!({"error": {"code": "login_overloaded", "message": "too many logins are being checked right now; try again shortly", "request_id": "0190f6a4-3b9c-7f42-8d8e-2c5b1e9a7d10"}})))
    )
)]
pub struct DatabaseOrHashingUnavailable(pub ErrorEnvelope<'static>);

/// A bug or unexpected failure; the cause is in the server log under the request id.
#[derive(ToResponse)]
#[response(
    example = json!({"error": {"code": "internal", "message": "internal error", "request_id": "0190f6a4-3b9c-7f42-8d8e-2c5b1e9a7d10"}})
)]
pub struct Internal(pub ErrorEnvelope<'static>);
