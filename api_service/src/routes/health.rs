//! Liveness, readiness and metrics: for orchestrators and Prometheus, no authentication.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::state::AppState;

/// How long `/readyz` waits for the database before calling it down.
const DB_PING_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    status: &'static str,
}

/// 200 whenever the process serves HTTP at all.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    summary = "Liveness: the process serves HTTP",
    responses((status = 200, description = "Alive", body = Health))
)]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Check {
    ok: bool,
    /// A fixed phrase: `ok`/`ready`, or which way the check failed. The cause (error text,
    /// broker state) goes to the server log only: this endpoint may be public.
    #[schema(example = "ok")]
    detail: &'static str,
}

impl Check {
    fn pass(detail: &'static str) -> Self {
        Self { ok: true, detail }
    }

    fn fail(detail: &'static str) -> Self {
        Self { ok: false, detail }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Checks {
    database: Check,
    quote_transport: Check,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    #[schema(example = "ready")]
    status: &'static str,
    checks: Checks,
}

/// 200 only when a `/stock` request could succeed now: the database answers a ping and the
/// quote transport has a consumer. 503 with the failing check(s) otherwise.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    summary = "Readiness: a quote request could succeed now",
    description = "Pings the database and checks that a quote service is there to answer. \
        Unlike every other endpoint, the 503 body is this report, not the error envelope.",
    responses(
        (status = 200, description = "Ready", body = Readiness,
            example = json!({"status": "ready", "checks": {"database": {"ok": true, "detail": "ok"}, "quote_transport": {"ok": true, "detail": "ready"}}})),
        (status = 503, description = "Not ready; the failing checks say why", body = Readiness,
            example = json!({"status": "not_ready", "checks": {"database": {"ok": true, "detail": "ok"}, "quote_transport": {"ok": false, "detail": "not ready"}}})),
    )
)]
#[tracing::instrument(skip_all)]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let database = match tokio::time::timeout(DB_PING_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => Check::pass("ok"),
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "readiness: database ping failed");
            Check::fail("database ping failed")
        }
        Err(_) => {
            tracing::warn!(limit = ?DB_PING_TIMEOUT, "readiness: database ping timed out");
            Check::fail("database ping timed out")
        }
    };
    let quote_transport = if state.transport.is_ready() {
        Check::pass("ready")
    } else {
        tracing::warn!(
            detail = state.transport.readiness_detail(),
            "readiness: quote transport not ready"
        );
        Check::fail(state.transport.readiness_phrase())
    };
    let ready = database.ok && quote_transport.ok;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Readiness {
        status: if ready { "ready" } else { "not_ready" },
        checks: Checks {
            database,
            quote_transport,
        },
    };
    (status, Json(body)).into_response()
}

/// Prometheus text exposition of this instance's counters and histograms.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    summary = "Prometheus metrics",
    description = "HTTP requests and latency by route and status, quote RPCs by outcome and \
        latency, coalesced quote requests, batched quote requests and the calls they carried, \
        quote transport readiness, database pool size, idle connections and ceiling, \
        group-commit batches and rows, open live-quote streams, their watched symbols and \
        whether their feed is up.",
    responses(
        (status = 200, description = "Prometheus text format 0.0.4", body = String,
            content_type = "text/plain; version=0.0.4; charset=utf-8"),
    )
)]
pub async fn metrics(State(state): State<AppState>) -> Response {
    if let Some((flights, joined)) = state.transport.flight_counts() {
        state.metrics.set_flight_counts(flights, joined);
    }
    if let Some((requests, calls)) = state.transport.batch_counts() {
        state.metrics.set_batch_counts(requests, calls);
    }
    state.metrics.set_pool_stats(state.store.pool_stats());
    state.metrics.set_write_stats(state.store.write_stats());
    state
        .metrics
        .set_transport_ready(state.transport.is_ready());
    state.metrics.set_stream_stats(
        state.streams.caps.open_streams(),
        state.streams.hub.watched_count(),
        state.streams.feed_connected(),
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}
