//! The one middleware every request passes through, outside its trace span. It gives the
//! request its id and makes that id current for the request's task, counts and times the
//! request, and stamps the response with the id and the security headers.
//!
//! One layer, not six: each `from_fn` or tower-http layer cloned a boxed service and boxed a
//! future per request, which together with their header work was about 5 % of the API's
//! CPU on the stock-hot benchmark.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

use crate::metrics::{self, Metrics};
use crate::{request_id, web};

pub async fn every_request(
    State(metrics): State<Arc<Metrics>>,
    mut request: Request,
    next: Next,
) -> Response {
    let start = Instant::now();
    let id = request_id::assign(&mut request);
    let method = metrics::method_label(request.method());
    // The matched template, never the raw path: unknown URLs and query strings cannot grow
    // the set of metric series.
    let route = request.extensions().get::<MatchedPath>().cloned();
    let is_api = web::is_api_path(request.uri().path());
    let scoped: std::sync::Arc<str> = id.to_str().unwrap_or("unknown").into();
    let mut response = request_id::scope(scoped, next.run(request)).await;
    metrics.http_request(
        method,
        route.as_ref().map_or("unmatched", MatchedPath::as_str),
        response.status().as_u16(),
        start.elapsed(),
    );
    stamp(&mut response, id, is_api);
    response
}

/// The request id (unless the response carries one already) and the security headers.
fn stamp(response: &mut Response, id: HeaderValue, is_api: bool) {
    response
        .headers_mut()
        .entry(request_id::HEADER)
        .or_insert(id);
    web::add_security_headers(response.headers_mut(), is_api);
}
