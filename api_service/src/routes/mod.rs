//! The HTTP surface: one small module per endpoint, assembled with the cross-cutting layers
//! (request ids, metrics and security headers in [`every_request`], tracing, body limit,
//! panic safety net) in [`router`].

mod account;
mod every_request;
mod health;
mod history;
mod history_csv;
mod login;
mod logout;
mod quotes;
mod session;
mod stats;
mod stock;
mod users;

#[cfg(test)]
mod tests;

use std::any::Any;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::response::Response;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

use crate::error::{ApiError, envelope_response};
use crate::extract::BODY_LIMIT;
use crate::openapi::{ApiDoc, DOCS_PATH, OPENAPI_PATH};
use crate::state::AppState;
use crate::{request_id, web};

/// Every endpoint, each registered through its `#[utoipa::path]` annotation: the one place
/// that decides both what the router serves and what the OpenAPI document lists.
pub fn api_routes() -> OpenApiRouter<AppState> {
    public_routes().merge(operations_routes())
}

/// What clients use, and liveness.
fn public_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(login::login))
        .routes(routes!(logout::logout))
        .routes(routes!(session::create, session::show, session::delete))
        .routes(routes!(stock::stock))
        .routes(routes!(quotes::quotes))
        .routes(routes!(crate::stream::route::stream))
        .routes(routes!(history::history))
        .routes(routes!(history_csv::history_csv))
        .routes(routes!(users::list, users::create))
        .routes(routes!(account::change_password))
        .routes(routes!(users::update, users::delete))
        .routes(routes!(stats::stats))
        .routes(routes!(health::healthz))
}

/// What only operators need: readiness and metrics (the docs are added by [`with_docs`]).
/// Served on INTERNAL_ADDR when it is set.
fn operations_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
}

/// The OpenAPI document as served at [`OPENAPI_PATH`].
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_routes().into_openapi()
}

/// Everything on one listener (INTERNAL_ADDR unset): the API, the docs and the web app.
pub fn router(state: AppState) -> Router {
    let (api, _) = api_routes().split_for_parts();
    finish(with_docs(api).merge(web::routes()), state)
}

/// The public listener when INTERNAL_ADDR is set: the API and the web app; no metrics,
/// readiness or docs.
pub fn public_router(state: AppState) -> Router {
    let (api, _) = public_routes().split_for_parts();
    finish(api.merge(web::routes()), state)
}

/// The internal listener (INTERNAL_ADDR): metrics, readiness, the docs, and liveness.
pub fn internal_router(state: AppState) -> Router {
    let (operations, _) = operations_routes()
        .routes(routes!(health::healthz))
        .split_for_parts();
    finish(with_docs(operations), state)
}

/// Adds Swagger UI and the OpenAPI document, which always describes the whole API.
fn with_docs(routes: axum::Router<AppState>) -> axum::Router<AppState> {
    routes.merge(SwaggerUi::new(DOCS_PATH).url(OPENAPI_PATH, openapi()))
}

/// The fallbacks and cross-cutting layers every listener shares.
fn finish(routes: axum::Router<AppState>, state: AppState) -> Router {
    let layers = ServiceBuilder::new()
        // Outermost, so error envelopes, panics and Swagger UI get the headers too, and the
        // request id is set before the span that records it.
        .layer(from_fn_with_state(
            state.metrics.clone(),
            every_request::every_request,
        ))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(make_span)
                // Failures are logged once, by ApiError, with their cause.
                .on_failure(()),
        )
        .layer(CatchPanicLayer::custom(panic_response));

    routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(layers)
        .with_state(state)
}

fn make_span(request: &Request) -> tracing::Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str)
        .unwrap_or("unmatched");
    tracing::info_span!(
        "http_request",
        method = %request.method(),
        route,
        request_id = request_id::of_request(request),
        user_id = tracing::field::Empty,
    )
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    tracing::error!(panic = detail, "handler panicked");
    envelope_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error",
    )
}
