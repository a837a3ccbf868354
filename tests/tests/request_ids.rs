//! One request can be followed across both services: the id the client sent (or the API
//! generated) appears in the API's log lines and in the quote worker's, having travelled in
//! the AMQP message headers. A binary of its own because it installs the process-wide
//! log subscriber.

use api_service::store::Role;
use reqwest::StatusCode;
use serde_json::Value;
use tests::log_capture::Captured;
use tests::{Transport, stack};
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::prelude::*;

/// Installs the JSON log format operators use (`LOG_FORMAT=json`: one object per line with
/// the span list), writing into memory. Span closes are logged too, so every span of the
/// request leaves a line even when nothing inside it logs: what matters is that whatever the
/// worker logs while handling the request (a warning, an upstream error) carries its id.
fn capture_json_logs() -> Captured {
    let captured = Captured::default();
    tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("info"))
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_current_span(true)
                .with_span_list(true)
                .with_span_events(FmtSpan::CLOSE)
                .with_writer(captured.clone()),
        )
        .init();
    captured
}

/// Log lines (parsed) whose target starts with `crate_name` and whose spans carry `id`.
fn lines_with_request_id(logs: &str, crate_name: &str, id: &str) -> usize {
    let carries_id = |span: &Value| span["request_id"].as_str() == Some(id);
    logs.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| {
            line["target"]
                .as_str()
                .is_some_and(|t| t.starts_with(crate_name))
        })
        .filter(|line| {
            carries_id(&line["span"])
                || line["spans"]
                    .as_array()
                    .is_some_and(|spans| spans.iter().any(carries_id))
        })
        .count()
}

async fn request_id_is_logged_by_both_services(transport: Transport, logs: &Captured) {
    let Some(app) = stack().transport(transport).spawn().await else {
        return;
    };
    let token = app.token_for("alice", Role::User).await;
    let id = format!("follow-me-{}", uuid::Uuid::new_v4().simple());

    let response = app
        .client
        .get(app.url("/api/v1/stock?q=aapl.us"))
        .bearer_auth(&token)
        .header("x-request-id", &id)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-request-id"], id.as_str());
    assert!(
        lines_with_request_id(&logs.text(), "api_service", &id) > 0,
        "api_service logged nothing with request_id {id}"
    );
    // The worker's span closes after it has published the reply and acked, which may be a
    // moment after the API answered.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while lines_with_request_id(&logs.text(), "quote_service", &id) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "quote_service logged nothing with request_id {id} ({transport:?})"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_is_followed_across_both_services() {
    let logs = capture_json_logs();
    request_id_is_logged_by_both_services(Transport::Amqp, &logs).await;
    request_id_is_logged_by_both_services(Transport::Http, &logs).await;
}
