//! `GET /api/v1/stream?q=aapl.us,msft.us`: the SSE endpoint.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use shared::Symbol;
use tokio::sync::mpsc;
use tracing::{Instrument, instrument};

use super::event_id::{self, short};
use super::hub::{Latest, LatestRx, Subscription};
use super::{StreamPermit, Streams};
use crate::auth::CurrentUser;
use crate::error::{ApiError, ErrorEnvelope};
use crate::extract::ApiQuery;
use crate::state::AppState;
use crate::transport::QuoteTransport;

/// Events waiting for a slow client before the stream waits for it (then it skips to the
/// newest quotes: nothing older than that queues up).
const OUTBOX: usize = 16;

/// How often an open stream checks that its user still exists with the same token version
/// (through the user cache, so at most one database read per user per `USER_CACHE_TTL`).
const REVOCATION_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamParams {
    /// Comma-separated symbols (case-insensitive, each by the rules of `/api/v1/stock`);
    /// duplicates are folded. At most STREAM_MAX_SYMBOLS (default 20).
    #[param(example = "aapl.us,msft.us")]
    q: Option<String>,
}

/// The data of a `quote` event.
#[derive(Serialize, utoipa::ToSchema)]
pub struct QuoteEvent {
    #[schema(example = "AAPL.US")]
    symbol: String,
    #[schema(example = "APPLE")]
    company_name: String,
    /// The latest close price.
    #[schema(example = 183.05)]
    quote: f64,
    open: f64,
    high: f64,
    low: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    volume: Option<u64>,
    /// When the feed took the quote.
    time: chrono::DateTime<chrono::Utc>,
    /// When the quote worker published this quote to the live exchange (Unix milliseconds,
    /// the worker's clock): subtract it from the arrival time to get the delivery latency.
    /// Only on quotes that came over the live feed (AMQP transport); absent on a quote the
    /// stream fetched for its first event and over the HTTP transport. A first event may carry
    /// an earlier instant (the quote the instance already held).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = 1715371209123_i64)]
    published_at_ms: Option<i64>,
}

/// The data of an `error` event: no quote for one symbol at the start of the stream (the
/// stream goes on and sends its quote once there is one).
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorEvent {
    /// As asked for (lower case).
    symbol: String,
    /// The code `/api/v1/stock` would answer with (`not_found`, `upstream_unavailable`…).
    code: &'static str,
    message: String,
}

#[utoipa::path(
    get,
    path = "/api/v1/stream",
    tag = "quotes",
    summary = "Stream live quotes (Server-Sent Events)",
    description = "Sends an `event: quote` with the current quote of every symbol at once, then \
        one whenever a symbol's quote changes (checked every WATCH_REFRESH, 15 s by default), \
        and a `: heartbeat` comment line every STREAM_HEARTBEAT. A symbol without a quote at \
        the start gets an `event: error` instead. Every event's `id` describes what the \
        client has been sent: reconnecting with `Last-Event-ID` (as EventSource does by \
        itself) sends only the symbols that changed since, on any instance. Caps per user \
        and instance: STREAM_MAX_PER_USER concurrent streams and STREAM_MAX_SYMBOLS symbols \
        per stream (429 past either). A stream ends within seconds when its user is deleted or \
        their password or role changes, after STREAM_MAX_LIFETIME (reconnect to \
        re-authenticate), and on shutdown. Nothing is recorded in the history.",
    params(StreamParams),
    security(("bearer" = []), ("session_cookie" = [])),
    responses(
        (status = 200, description = "An event stream: `event: quote` (data: QuoteEvent) and `event: error` (data: ErrorEvent)",
            content_type = "text/event-stream", body = String),
        (status = 400, description = "`q` is missing, empty or has a symbol that breaks the rules", body = ErrorEnvelope),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 429, description = "Past STREAM_MAX_PER_USER open streams or STREAM_MAX_SYMBOLS symbols", body = ErrorEnvelope,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying")),
            example = json!({"error": {"code": "too_many_requests", "message": "at most 5 open streams per user; close one first", "request_id": "0190f6a4-3b9c-7f42-8d8e-2c5b1e9a7d10"}})),
        (status = 500, response = crate::openapi::Internal),
    )
)]
#[instrument(skip_all, fields(request_id = %crate::request_id::current().unwrap_or_default(), user_id = user.id, symbols = tracing::field::Empty))]
pub async fn stream(
    State(state): State<AppState>,
    user: CurrentUser,
    headers: HeaderMap,
    ApiQuery(params): ApiQuery<StreamParams>,
) -> Result<Response, ApiError> {
    let streams = Arc::clone(&state.streams);
    let symbols = parse_symbols(params.q.as_deref(), streams.config.max_symbols)?;
    tracing::Span::current().record("symbols", symbols.len());
    let permit = streams
        .caps
        .try_open(user.id)
        .ok_or_else(|| ApiError::TooManyRequests {
            message: format!(
                "at most {} open streams per user; close one first",
                streams.caps.max_per_user()
            ),
            retry_after: std::time::Duration::from_secs(1),
        })?;
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|id| event_id::decode(id, symbols.len()));
    // The user's token version now: a password or role change (or a forced sign-out) bumps
    // it, and ends this stream (see `Run::revoked`).
    let token_version = match state.users.resolve(state.store.as_ref(), user.id).await? {
        Some(record) => record.token_version,
        None => return Err(ApiError::invalid_token("the user no longer exists")),
    };
    let subscription = streams.hub.subscribe(&symbols);
    let request_id = crate::request_id::current().unwrap_or_default();

    let (tx, rx) = mpsc::channel(OUTBOX);
    let run = Run {
        state: state.clone(),
        user_id: user.id,
        token_version,
        streams: Arc::clone(&streams),
        transport: Arc::clone(&state.transport),
        symbols,
        sent: resume.unwrap_or_else(|| vec![None; subscription.receivers.len()]),
        subscription,
        _permit: permit,
        request_id,
        tx,
    };
    tokio::spawn(run.run().instrument(tracing::Span::current()));
    let events = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|event| (Ok::<_, std::convert::Infallible>(event), rx))
    });
    let mut response = Sse::new(events)
        .keep_alive(
            KeepAlive::new()
                .interval(streams.config.heartbeat)
                .text("heartbeat"),
        )
        .into_response();
    // Not cut at HTTP_REQUEST_TIMEOUT: its life is bounded by STREAM_MAX_LIFETIME instead.
    response
        .extensions_mut()
        .insert(shared::http_server::LongLived);
    Ok(response)
}

/// `q` split on commas, each symbol checked, duplicates folded, sorted (the order event ids
/// are written in). Invalid symbols are 400; past `max` distinct ones, 429.
fn parse_symbols(q: Option<&str>, max: usize) -> Result<Vec<Symbol>, ApiError> {
    let raw = q.ok_or_else(|| {
        ApiError::BadRequest("missing query parameter q (e.g. ?q=aapl.us,msft.us)".into())
    })?;
    let mut symbols = std::collections::BTreeSet::new();
    for part in raw.split(',') {
        if part.trim().is_empty() {
            continue;
        }
        let symbol = Symbol::parse(part)
            .map_err(|e| ApiError::InvalidSymbol(format!("{:?}: {e}", part.trim())))?;
        symbols.insert(symbol);
        // Refused as soon as it is too many, so a huge list is not parsed whole.
        if symbols.len() > max {
            return Err(ApiError::TooManyRequests {
                message: format!("at most {max} symbols per stream"),
                retry_after: std::time::Duration::from_secs(1),
            });
        }
    }
    if symbols.is_empty() {
        return Err(ApiError::BadRequest(
            "q names no symbol (e.g. ?q=aapl.us,msft.us)".into(),
        ));
    }
    Ok(symbols.into_iter().collect())
}

/// One open stream, run by its own task until the client leaves (the receiving end of `tx`
/// is dropped), its lifetime is up or the instance shuts down. Holds its permit and its
/// subscription until then.
struct Run {
    /// For the periodic check that the user may still stream.
    state: AppState,
    user_id: i64,
    token_version: i64,
    streams: Arc<Streams>,
    transport: Arc<dyn QuoteTransport>,
    symbols: Vec<Symbol>,
    /// Per symbol, the short fingerprint of the quote the client has (the event id).
    sent: Vec<Option<u64>>,
    subscription: Subscription,
    _permit: StreamPermit,
    request_id: String,
    tx: mpsc::Sender<Event>,
}

impl Run {
    async fn run(mut self) {
        let end = tokio::time::Instant::now() + self.streams.config.max_lifetime;
        let shutdown = self.streams.shutdown.clone();
        let tx = self.tx.clone();
        let state = self.state.clone();
        tokio::select! {
            _ = tx.closed() => {}
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep_until(end) => tracing::debug!("stream lifetime over"),
            _ = Self::revoked(&state, self.user_id, self.token_version) => {
                tracing::info!("user deleted or signed out everywhere; stream ended");
            }
            _ = self.serve() => {}
        }
    }

    /// Resolves once the user is deleted or their token version moves on (a password or role
    /// change, or a forced sign-out), checked every [`REVOCATION_CHECK`] through the user
    /// cache. A database that cannot be read ends nothing. (Logging out one token is not
    /// seen here: that stream ends with its `STREAM_MAX_LIFETIME`.)
    async fn revoked(state: &AppState, user_id: i64, token_version: i64) {
        loop {
            tokio::time::sleep(REVOCATION_CHECK).await;
            match state.users.resolve(state.store.as_ref(), user_id).await {
                Ok(None) => return,
                Ok(Some(record)) if record.token_version != token_version => return,
                Ok(Some(_)) => {}
                Err(e) => tracing::debug!(error = %e, "could not re-check the streaming user"),
            }
        }
    }

    async fn serve(&mut self) {
        if self.first_events().await.is_err() {
            return;
        }
        let mut receivers = self.subscription.receivers.clone();
        while let Some(i) = next_change(&mut receivers).await {
            let latest = receivers[i].borrow_and_update().clone();
            if let Some(latest) = latest
                && self.send_quote(i, &latest).await.is_err()
            {
                return;
            }
        }
    }

    /// The current quote of every symbol the client does not already have: the hub's when
    /// the feed has one, else one fetched through the quote transport (and offered to the
    /// hub for the streams that come next).
    async fn first_events(&mut self) -> Result<(), ()> {
        let current: Vec<Option<Arc<Latest>>> = self
            .subscription
            .receivers
            .iter_mut()
            .map(|rx| rx.borrow_and_update().clone())
            .collect();
        let fetches = self.symbols.iter().zip(&current).map(|(symbol, latest)| {
            let transport = Arc::clone(&self.transport);
            let request_id = self.request_id.clone();
            let known = latest.clone();
            async move {
                match known {
                    Some(latest) => Ok(latest),
                    None => transport
                        .get_quote(symbol, &request_id)
                        .await
                        .map(|quote| Arc::new(Latest::new(quote))),
                }
            }
        });
        let results = futures::future::join_all(fetches).await;
        for (i, result) in results.into_iter().enumerate() {
            match result {
                Ok(latest) => {
                    if current[i].is_none() {
                        self.streams
                            .hub
                            .offer(&self.symbols[i], latest.quote.clone());
                    }
                    self.send_quote(i, &latest).await?;
                }
                Err(err) => {
                    let err = ApiError::from(err);
                    let data = ErrorEvent {
                        symbol: self.symbols[i].as_str().to_owned(),
                        code: err.code(),
                        message: err.to_string(),
                    };
                    self.send(event("error", &data, &self.sent)).await?;
                }
            }
        }
        Ok(())
    }

    /// Sends symbol `i`'s quote unless the client already has it.
    async fn send_quote(&mut self, i: usize, latest: &Latest) -> Result<(), ()> {
        let fp = short(latest.fingerprint);
        if self.sent[i] == Some(fp) {
            return Ok(());
        }
        self.sent[i] = Some(fp);
        let q = &latest.quote;
        let data = QuoteEvent {
            symbol: q.symbol.clone(),
            company_name: q.name.clone(),
            quote: q.close,
            open: q.open,
            high: q.high,
            low: q.low,
            volume: q.volume,
            time: q.time,
            published_at_ms: latest.published_at_ms,
        };
        self.send(event("quote", &data, &self.sent)).await
    }

    async fn send(&self, event: Event) -> Result<(), ()> {
        self.tx.send(event).await.map_err(|_| ())
    }
}

fn event(kind: &str, data: &impl Serialize, sent: &[Option<u64>]) -> Event {
    let data = serde_json::to_string(data).unwrap_or_else(|_| "{}".into());
    Event::default()
        .event(kind)
        .id(event_id::encode(sent))
        .data(data)
}

/// The index of the next symbol whose latest quote changed; `None` if the hub went away.
async fn next_change(receivers: &mut [LatestRx]) -> Option<usize> {
    let waits = receivers
        .iter_mut()
        .enumerate()
        .map(|(i, rx)| Box::pin(async move { rx.changed().await.ok().map(|()| i) }));
    let (first, _, _) = futures::future::select_all(waits).await;
    first
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(q: &str, max: usize) -> Result<Vec<String>, String> {
        parse_symbols(Some(q), max)
            .map(|s| s.iter().map(|s| s.as_str().to_owned()).collect())
            .map_err(|e| e.code().to_owned())
    }

    #[test]
    fn symbols_are_checked_folded_and_sorted() {
        assert_eq!(
            names("MSFT.us, aapl.us,,msft.us", 5).unwrap(),
            ["aapl.us", "msft.us"]
        );
        assert_eq!(names("aapl.us,no/slash", 5).unwrap_err(), "invalid_symbol");
        assert_eq!(names(" , ", 5).unwrap_err(), "bad_request");
        assert_eq!(parse_symbols(None, 5).unwrap_err().code(), "bad_request");
    }

    #[test]
    fn too_many_symbols_is_429_even_for_a_huge_list() {
        assert_eq!(names("a,b,c", 2).unwrap_err(), "too_many_requests");
        let huge = (0..100_000)
            .map(|i| format!("s{i}"))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(names(&huge, 20).unwrap_err(), "too_many_requests");
        assert_eq!(
            names("a,a,a,b", 2).unwrap(),
            ["a", "b"],
            "duplicates do not count"
        );
    }
}
