//! The HTTP side: the `/q/l/` feed, the `/fake/*` control endpoints, and an accept loop that
//! can hang up on a request without answering (the one failure axum's own `serve` cannot fake).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tower::ServiceExt;

use crate::Mode;
use crate::feed;
use crate::state::{FakeConfig, FakeState, Stats};

const API_KEY_PAGE: &str = "<!DOCTYPE html><html><head><title>stooq</title></head><body>\
<p>Access to this service now requires an API key.</p>\
<p><a href=\"/q/l/apikey\">Get your apikey</a> and add <code>&amp;apikey=...</code> to the request.</p>\
</body></html>";

const CHALLENGE_PAGE: &str = "<!DOCTYPE html><html><head><title>Just a moment...</title></head>\
<body><noscript>This site requires JavaScript to verify your browser.</noscript>\
<form id=\"challenge\" method=\"POST\" action=\"/__verify\"><input type=\"hidden\" name=\"t\" value=\"0\"></form>\
<script>document.getElementById('challenge').submit();</script></body></html>";

const OTHER_HTML_PAGE: &str = "<!DOCTYPE html><html><head><title>Stooq</title></head>\
<body><h1>Service temporarily unavailable</h1><p>We are upgrading our servers. Please come back later.</p></body></html>";

const DAILY_LIMIT: &str = "Exceeded the daily hits limit";

/// The column set the fake serves; anything else is a bug in the client under test.
const COLUMNS: &str = "sd2t2ohlcvn";

/// Marks a response that [`serve`] must not send: it closes the connection instead.
#[derive(Debug, Clone, Copy)]
struct DropConnection;

/// The fake's routes. Served by [`serve`], `Mode::Drop` hangs up; under plain `axum::serve`
/// it can only answer 502 instead.
pub fn router(state: FakeState) -> Router {
    Router::new()
        .route("/q/l/", get(quotes))
        .route("/q/l", get(quotes))
        .route("/fake/stats", get(stats))
        .route("/fake/reset", post(reset))
        .route("/fake/mode", post(set_mode))
        .route("/fake/latency", post(set_latency))
        .route("/fake/tick", post(tick))
        .with_state(state)
}

/// Splits `s=` into symbols: `+` arrives decoded as a space, a literal `%2B` as `+`.
fn split_symbols(raw: &str) -> Vec<String> {
    raw.split([' ', '+'])
        .filter(|s| !s.is_empty())
        .map(str::to_ascii_lowercase)
        .collect()
}

#[tracing::instrument(skip_all, fields(symbols))]
async fn quotes(
    State(state): State<FakeState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let symbols = split_symbols(q.get("s").map_or("", String::as_str));
    tracing::Span::current().record("symbols", symbols.len());
    let plan = state.record(&symbols);
    if !plan.latency.is_zero() {
        tokio::time::sleep(plan.latency).await;
    }
    let mut mode = plan.mode;
    if mode == Mode::Normal
        && let Some(key) = &state.config().api_key
        && q.get("apikey") != Some(key)
    {
        mode = Mode::ApiKeyPage;
    }
    tracing::debug!(%mode, "answering");
    match mode {
        Mode::Normal => {
            if q.get("f").map(String::as_str) != Some(COLUMNS) {
                return bad_request(format!("fake_stooq serves only f={COLUMNS}"));
            }
            if q.get("e").map(String::as_str) != Some("csv") {
                return bad_request("fake_stooq serves only e=csv".into());
            }
            let config = state.config();
            let body = feed::csv_body_at(
                &symbols,
                q.contains_key("h"),
                &config.not_found,
                config.seed,
                state.price_tick(),
            );
            csv(body)
        }
        Mode::DailyLimit => text(StatusCode::OK, DAILY_LIMIT),
        Mode::ApiKeyPage => html(API_KEY_PAGE),
        Mode::Challenge => html(CHALLENGE_PAGE),
        Mode::OtherHtml => html(OTHER_HTML_PAGE),
        Mode::Empty => csv(String::new()),
        Mode::Truncated => csv(feed::truncated_body(&symbols)),
        Mode::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            text(status, status.canonical_reason().unwrap_or("error"))
        }
        Mode::Drop => {
            let mut resp = text(
                StatusCode::BAD_GATEWAY,
                "fake_stooq: Drop mode needs fake_stooq::serve to close the connection",
            );
            resp.extensions_mut().insert(DropConnection);
            resp
        }
    }
}

fn csv(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response()
}

fn html(body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

fn text(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, message).into_response()
}

async fn stats(State(state): State<FakeState>) -> Json<Stats> {
    Json(state.stats())
}

async fn reset(State(state): State<FakeState>) -> StatusCode {
    state.reset();
    StatusCode::NO_CONTENT
}

/// `POST /fake/mode?mode=status:503[&next=3]`: switch the mode of a running process, for
/// demos and benchmarks that cannot reach the in-process handle.
async fn set_mode(
    State(state): State<FakeState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mode = match q.get("mode").map(|m| m.parse::<Mode>()) {
        Some(Ok(mode)) => mode,
        Some(Err(e)) => return bad_request(e),
        None => return bad_request("missing mode=".into()),
    };
    match q.get("next").map(|n| n.parse::<u32>()) {
        None => state.set_mode(mode),
        Some(Ok(n)) => state.fail_next(n, mode),
        Some(Err(_)) => return bad_request("next= must be a whole number".into()),
    }
    StatusCode::NO_CONTENT.into_response()
}

/// `POST /fake/tick`: moves every price one tick on; answers the new tick.
async fn tick(State(state): State<FakeState>) -> Json<u64> {
    Json(state.advance_prices())
}

/// `POST /fake/latency?value=250ms`.
async fn set_latency(
    State(state): State<FakeState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    match q.get("value").map(|v| shared::config::parse_duration(v)) {
        Some(Ok(d)) => {
            state.set_latency(d);
            StatusCode::NO_CONTENT.into_response()
        }
        Some(Err(e)) => bad_request(e),
        None => bad_request("missing value=".into()),
    }
}

/// Serves the fake on `listener` until the task is dropped or aborted. Each connection is run
/// by hyper directly so that a `Mode::Drop` answer can fail the service call, which makes hyper
/// close the socket without writing a byte of response.
pub async fn serve(listener: TcpListener, state: FakeState) {
    let app = router(state);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Usually EMFILE under a benchmark; back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let app = app.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let app = app.clone();
                async move {
                    let resp = match app.oneshot(req).await {
                        Ok(resp) => resp,
                        Err(never) => match never {},
                    };
                    if resp.extensions().get::<DropConnection>().is_some() {
                        return Err(std::io::Error::other("connection dropped on purpose"));
                    }
                    Ok::<_, std::io::Error>(resp)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Aborts the accept loop when the last [`FakeStooq`] clone goes away.
#[derive(Debug)]
struct ServerTask(JoinHandle<()>);

impl Drop for ServerTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A running fake feed. Clones share the server and counters; the server stops accepting when
/// the last clone is dropped.
#[derive(Debug, Clone)]
pub struct FakeStooq {
    state: FakeState,
    addr: SocketAddr,
    _task: Arc<ServerTask>,
}

impl FakeStooq {
    /// Starts on an ephemeral loopback port with the default config.
    pub async fn start() -> FakeStooq {
        Self::start_with(FakeConfig::default()).await
    }

    /// Starts with `config`. Panics if the address cannot be bound: this is a test fixture,
    /// use [`try_start_with`](Self::try_start_with) to handle that.
    pub async fn start_with(config: FakeConfig) -> FakeStooq {
        let addr = config.addr;
        Self::try_start_with(config)
            .await
            .unwrap_or_else(|e| panic!("fake_stooq cannot bind {addr}: {e}"))
    }

    /// Binds before returning, so the fake accepts connections as soon as this resolves.
    pub async fn try_start_with(config: FakeConfig) -> std::io::Result<FakeStooq> {
        let listener = TcpListener::bind(config.addr).await?;
        let addr = listener.local_addr()?;
        let state = FakeState::new(config);
        let task = tokio::spawn(serve(listener, state.clone()));
        Ok(FakeStooq {
            state,
            addr,
            _task: Arc::new(ServerTask(task)),
        })
    }

    /// Base URL, e.g. `http://127.0.0.1:41234` (no path, no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn state(&self) -> &FakeState {
        &self.state
    }

    /// Requests to `/q/l/`, whatever they were answered with.
    pub fn hits(&self) -> u64 {
        self.state.hits()
    }

    /// Requests that asked for `symbol` (case-insensitive).
    pub fn symbol_hits(&self, symbol: &str) -> u64 {
        self.state.symbol_hits(symbol)
    }

    /// Sum over requests of the number of symbols asked for.
    pub fn symbols_requested(&self) -> u64 {
        self.state.symbols_requested()
    }

    /// The lower-case symbols of each request, in arrival order (proves batching).
    pub fn requests(&self) -> Vec<Vec<String>> {
        self.state.requests()
    }

    pub fn stats(&self) -> Stats {
        self.state.stats()
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state.set_mode(mode);
    }

    /// The next `n` requests get `mode`, then the regular mode again.
    pub fn fail_next(&self, n: u32, mode: Mode) {
        self.state.fail_next(n, mode);
    }

    pub fn set_latency(&self, latency: Duration) {
        self.state.set_latency(latency);
    }

    /// Moves every price one tick on (see [`crate::moving`]); returns the new tick.
    pub fn advance_prices(&self) -> u64 {
        self.state.advance_prices()
    }

    /// Zeroes the counters and restores the configured mode and latency.
    pub fn reset(&self) {
        self.state.reset();
    }
}
