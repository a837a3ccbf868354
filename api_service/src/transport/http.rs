//! Quote RPC over plain HTTP: the fallback when no broker is available.
//!
//! Same contract as AMQP: the quote service answers `GET /api/v1/quote?symbol=…` with a
//! `shared::QuoteReply` body for 200/400/404/502/504, and a batch, `GET
//! /api/v1/quotes?symbols=a,b,c`, with a `shared::BatchQuoteReply` (contract v2); it gets our
//! request id and deadline as headers. A quote service older than v2 has no `/api/v1/quotes`
//! and answers it with its bare 404 (`{"error":"no such route"}`, not a reply): that is its
//! "I do not speak v2", and the batch falls back to one `/api/v1/quote` per symbol. Connection refused means nobody is there (fail fast, 503); readiness is the
//! quote service's own `/readyz`, polled in the background so `is_ready` costs nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;
use shared::{BatchQuoteRequest, ErrorCode, Quote, QuoteError, QuoteReply, QuoteRequest, Symbol};
use tokio_util::sync::CancellationToken;
use tracing::instrument;

use super::batch::{self, OldWorkerNotice};
use super::{QuoteTransport, SymbolResult, TransportError};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const READINESS_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// e.g. `http://127.0.0.1:8001` (no trailing slash needed).
    pub base_url: String,
    pub rpc_timeout: Duration,
}

struct Readiness {
    ready: AtomicBool,
    detail: Mutex<String>,
}

pub struct HttpTransport {
    client: reqwest::Client,
    quote_url: String,
    quotes_url: String,
    rpc_timeout: Duration,
    readiness: Arc<Readiness>,
    stop: CancellationToken,
    old_worker: OldWorkerNotice,
}

impl HttpTransport {
    /// Builds the client, probes readiness once (so a server that is up is usable at once)
    /// and starts the background readiness probe.
    pub async fn start(config: HttpConfig) -> anyhow::Result<Self> {
        let base = config.base_url.trim_end_matches('/').to_owned();
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(config.rpc_timeout)
            .build()?;
        let readiness = Arc::new(Readiness {
            ready: AtomicBool::new(false),
            detail: Mutex::new("not probed yet".into()),
        });
        let stop = CancellationToken::new();
        let readyz = format!("{base}/readyz");
        probe_once(&client, &readyz, &readiness).await;
        tokio::spawn(probe_readiness(
            client.clone(),
            readyz,
            Arc::clone(&readiness),
            stop.clone(),
        ));
        Ok(Self {
            client,
            quote_url: format!("{base}/api/v1/quote"),
            quotes_url: format!("{base}/api/v1/quotes"),
            rpc_timeout: config.rpc_timeout,
            readiness,
            stop,
            old_worker: OldWorkerNotice::default(),
        })
    }
}

impl Drop for HttpTransport {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn probe_readiness(
    client: reqwest::Client,
    url: String,
    readiness: Arc<Readiness>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(READINESS_INTERVAL) => {}
        }
        probe_once(&client, &url, &readiness).await;
    }
}

async fn probe_once(client: &reqwest::Client, url: &str, readiness: &Readiness) {
    let (ready, detail) = match client
        .get(url)
        .timeout(Duration::from_millis(800))
        .send()
        .await
    {
        Ok(resp) if resp.status().is_success() => (true, "quote service ready".to_owned()),
        Ok(resp) => (
            false,
            format!("quote service not ready ({})", resp.status()),
        ),
        Err(err) => (
            false,
            format!("quote service unreachable: {}", describe(&err)),
        ),
    };
    readiness.ready.store(ready, Ordering::Relaxed);
    *readiness.detail.lock().unwrap_or_else(|e| e.into_inner()) = detail;
}

/// A short description without the URL reqwest's Display includes (it is ours).
fn describe(err: &reqwest::Error) -> String {
    let kind = if err.is_connect() {
        "connection failed"
    } else if err.is_timeout() {
        "timed out"
    } else {
        "request failed"
    };
    match std::error::Error::source(err) {
        Some(source) => format!("{kind}: {source}"),
        None => kind.to_owned(),
    }
}

#[async_trait]
impl QuoteTransport for HttpTransport {
    #[instrument(skip_all, fields(symbol = %symbol, request_id))]
    async fn get_quote(&self, symbol: &Symbol, request_id: &str) -> Result<Quote, TransportError> {
        tracing::Span::current().record("request_id", request_id);
        let request = QuoteRequest::new(symbol.as_str(), None, self.rpc_timeout);
        let response = self
            .client
            .get(&self.quote_url)
            .query(&[("symbol", symbol.as_str())])
            .header(shared::REQUEST_ID_HEADER, request_id)
            .header(shared::DEADLINE_HEADER, request.deadline_ms.to_string())
            .send()
            .await
            .map_err(classify)?;
        let status = response.status();
        let body = response.bytes().await.map_err(classify)?;
        match serde_json::from_slice::<QuoteReply>(&body) {
            Ok(reply) => reply.into_result().map_err(TransportError::Quote),
            Err(_) if status == StatusCode::SERVICE_UNAVAILABLE => Err(
                TransportError::Unavailable("the quote service is not ready (503)".into()),
            ),
            Err(_) => Err(TransportError::Quote(QuoteError::new(
                ErrorCode::Internal,
                format!("unexpected answer from the quote service (HTTP {status})"),
            ))),
        }
    }

    /// One `GET /api/v1/quotes` for the whole batch; an old quote service's 404 (or a v1
    /// refusal) falls back to one `GET /api/v1/quote` per symbol.
    #[instrument(skip_all, fields(symbols = symbols.len(), request_id))]
    async fn get_quotes(
        &self,
        symbols: &[Symbol],
        request_id: &str,
    ) -> Result<Vec<SymbolResult>, TransportError> {
        tracing::Span::current().record("request_id", request_id);
        let request =
            BatchQuoteRequest::new(symbols.iter().map(Symbol::as_str), None, self.rpc_timeout);
        let response = self
            .client
            .get(&self.quotes_url)
            .query(&[("symbols", request.symbols.join(","))])
            .header(shared::REQUEST_ID_HEADER, request_id)
            .header(shared::DEADLINE_HEADER, request.deadline_ms.to_string())
            .send()
            .await
            .map_err(classify)?;
        let status = response.status();
        let body = response.bytes().await.map_err(classify)?;
        let read = shared::read_batch_reply(&body, symbols.len());
        if read.is_err() {
            if status == StatusCode::NOT_FOUND {
                self.old_worker
                    .note("the quote service has no /api/v1/quotes (HTTP 404)");
                return batch::one_by_one(self, symbols, request_id).await;
            }
            if status == StatusCode::SERVICE_UNAVAILABLE {
                return Err(TransportError::Unavailable(
                    "the quote service is not ready (503)".into(),
                ));
            }
            return Err(batch::malformed(&format!(
                "unexpected answer to a batch (HTTP {status})"
            )));
        }
        batch::settle_read(self, &self.old_worker, read, symbols, request_id).await
    }

    fn is_ready(&self) -> bool {
        self.readiness.ready.load(Ordering::Relaxed)
    }

    fn readiness_detail(&self) -> String {
        self.readiness
            .detail
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn shutdown(&self) {
        self.stop.cancel();
    }
}

fn classify(err: reqwest::Error) -> TransportError {
    if err.is_connect() {
        TransportError::Unavailable(format!(
            "cannot reach the quote service: {}",
            describe(&err)
        ))
    } else if err.is_timeout() {
        TransportError::Timeout
    } else {
        TransportError::Unavailable(format!("quote service request failed: {}", describe(&err)))
    }
}
