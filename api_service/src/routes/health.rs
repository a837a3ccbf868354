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

/// 200 whenever the process serves HTTP at all.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

#[derive(Serialize)]
struct Check {
    ok: bool,
    detail: String,
}

#[derive(Serialize)]
struct Checks {
    database: Check,
    quote_transport: Check,
}

#[derive(Serialize)]
struct Readiness {
    status: &'static str,
    checks: Checks,
}

/// 200 only when a `/stock` request could succeed now: the database answers a ping and the
/// quote transport has a consumer. 503 with the failing check(s) otherwise.
#[tracing::instrument(skip_all)]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let database = match tokio::time::timeout(DB_PING_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => Check {
            ok: true,
            detail: "ok".into(),
        },
        Ok(Err(err)) => Check {
            ok: false,
            detail: format!("database ping failed: {err}"),
        },
        Err(_) => Check {
            ok: false,
            detail: "database ping timed out".into(),
        },
    };
    let quote_transport = Check {
        ok: state.transport.is_ready(),
        detail: state.transport.readiness_detail(),
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

pub async fn metrics(State(state): State<AppState>) -> Response {
    if let Some((flights, joined)) = state.transport.flight_counts() {
        state.metrics.set_flight_counts(flights, joined);
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}
