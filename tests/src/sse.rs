//! A small Server-Sent Events client for the stream tests: opens `GET /api/v1/stream`, and
//! reads events (and counts heartbeat comments) from the body as it arrives.

use std::time::Duration;

use reqwest::{Response, StatusCode};
use serde_json::Value;

/// One event as the server framed it.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

impl SseEvent {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("{e}: {}", self.data))
    }

    /// The `quote` field of a `quote` event.
    pub fn close(&self) -> f64 {
        self.json()["quote"].as_f64().expect("a quote event")
    }

    pub fn symbol(&self) -> String {
        self.json()["symbol"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

pub struct SseStream {
    response: Response,
    buffer: String,
    /// Comment lines seen (heartbeats).
    pub comments: usize,
}

/// Opens a stream; `Err` carries the refusal (status and parsed JSON body).
pub async fn open(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    q: &str,
    last_event_id: Option<&str>,
) -> Result<SseStream, (StatusCode, Value)> {
    let mut request = client
        .get(format!("{base}/api/v1/stream"))
        .query(&[("q", q)])
        .bearer_auth(token);
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    let response = request.send().await.expect("stream request failed");
    if response.status() != StatusCode::OK {
        let status = response.status();
        return Err((status, response.json().await.unwrap_or_default()));
    }
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    Ok(SseStream {
        response,
        buffer: String::new(),
        comments: 0,
    })
}

impl SseStream {
    /// The next event within `limit`, skipping comments; `None` on timeout or end of stream.
    pub async fn next_event(&mut self, limit: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if let Some(event) = self.parse(&block) {
                    return Some(event);
                }
            }
            match tokio::time::timeout_at(deadline, self.response.chunk()).await {
                Ok(Ok(Some(bytes))) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                _ => return None,
            }
        }
    }

    /// Events arriving within `window` (reads until it is over).
    pub async fn events_within(&mut self, window: Duration) -> Vec<SseEvent> {
        let deadline = tokio::time::Instant::now() + window;
        let mut events = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return events;
            }
            match self.next_event(left).await {
                Some(event) => events.push(event),
                None => return events,
            }
        }
    }

    fn parse(&mut self, block: &str) -> Option<SseEvent> {
        let (mut event, mut id, mut data) = (String::from("message"), None, Vec::new());
        let mut fields = 0;
        for line in block.lines() {
            if line.is_empty() {
                continue;
            }
            if line.starts_with(':') {
                self.comments += 1;
                continue;
            }
            let (name, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            fields += 1;
            match name {
                "event" => event = value.to_owned(),
                "id" => id = Some(value.to_owned()),
                "data" => data.push(value.to_owned()),
                _ => {}
            }
        }
        (fields > 0).then(|| SseEvent {
            event,
            id,
            data: data.join("\n"),
        })
    }
}
