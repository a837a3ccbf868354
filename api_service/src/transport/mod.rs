//! How the API asks the quote service for a quote: one trait, two wire protocols.
//!
//! AMQP RPC is the production path (workers scale by just consuming the queue); plain HTTP
//! is a fallback for set-ups without a broker. Handlers see only [`QuoteTransport`], and
//! [`SingleFlight`] sits in front of either so a burst of identical requests costs one RPC.
//! Over AMQP, [`Batcher`] sits between the two (unless `RPC_BATCHING=false`) so calls for
//! distinct symbols waiting at the same moment share one request.

mod amqp;
mod batch;
mod batcher;
mod http;
mod single_flight;

use std::sync::Arc;

use async_trait::async_trait;
use secrecy::ExposeSecret;
use shared::{Quote, QuoteError, Symbol};

pub use amqp::{AmqpConfig, AmqpTransport};
pub use batcher::{BatchWire, Batcher, Landing};
pub use http::{HttpConfig, HttpTransport};
pub use single_flight::SingleFlight;

use crate::settings::{Settings, TransportKind};

/// Why no quote came back. `Clone` because one RPC's outcome is shared by every caller that
/// joined it (see [`SingleFlight`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TransportError {
    /// The quote service answered with a typed error (not found, upstream failure…).
    #[error(transparent)]
    Quote(#[from] QuoteError),
    /// Nobody can answer right now: broker or service down, queue missing, no worker
    /// consuming. Reported at once instead of after the timeout.
    #[error("{0}")]
    Unavailable(String),
    /// The request went out but no answer arrived within the RPC timeout.
    #[error("no reply within the RPC timeout")]
    Timeout,
}

impl TransportError {
    /// Label for metrics and logs.
    pub fn outcome(&self) -> &'static str {
        match self {
            TransportError::Quote(q) => q.code.as_str(),
            TransportError::Unavailable(_) => "unavailable",
            TransportError::Timeout => "rpc_timeout",
        }
    }
}

/// One symbol's outcome within a batch.
pub type SymbolResult = Result<Quote, TransportError>;

#[async_trait]
pub trait QuoteTransport: Send + Sync + 'static {
    /// One quote; `request_id` travels with the request for log correlation.
    async fn get_quote(&self, symbol: &Symbol, request_id: &str) -> Result<Quote, TransportError>;

    /// Quotes for several distinct symbols: one result per symbol, in order. `Err` when the
    /// call as a whole failed (nobody to answer, no reply in time), so no symbol has one.
    ///
    /// The wire transports send one contract-v2 request per call (falling back to concurrent
    /// v1 requests when the worker is older); this default asks one symbol at a time,
    /// concurrently, for transports that have nothing better.
    async fn get_quotes(
        &self,
        symbols: &[Symbol],
        request_id: &str,
    ) -> Result<Vec<SymbolResult>, TransportError> {
        batch::one_by_one(self, symbols, request_id).await
    }

    /// Whether a request sent now could be answered (connected and someone is consuming).
    /// Cheap: backed by state refreshed in the background.
    fn is_ready(&self) -> bool;

    /// A fixed phrase for the public `/readyz`: says what kind of problem, names nothing
    /// internal (hosts, queues, driver errors go to [`Self::readiness_detail`] and the log).
    fn readiness_phrase(&self) -> &'static str {
        if self.is_ready() {
            "ready"
        } else {
            "not ready"
        }
    }

    /// Human-readable reason when not ready, for the log.
    fn readiness_detail(&self) -> String {
        if self.is_ready() {
            "ready".into()
        } else {
            "not ready".into()
        }
    }

    /// `(flights, joined)`: calls that went out as an RPC, and calls answered by joining
    /// one in flight or reusing one that landed within the reuse window. `None` for transports that do not coalesce.
    fn flight_counts(&self) -> Option<(u64, u64)> {
        None
    }

    /// `(requests, calls)`: requests the [`Batcher`] sent and the single-symbol calls they
    /// carried (calls / requests is the average batch). `None` when calls are not batched.
    fn batch_counts(&self) -> Option<(u64, u64)> {
        None
    }

    /// Stops background tasks and closes connections (graceful shutdown).
    async fn shutdown(&self) {}
}

/// Builds the transport `settings` ask for, wrapped in [`SingleFlight`]. Never fails because
/// the quote service or broker is down: the API starts anyway, reports not-ready and keeps
/// reconnecting in the background.
pub async fn build(settings: &Settings) -> anyhow::Result<Arc<dyn QuoteTransport>> {
    let transport: Arc<dyn QuoteTransport> = match settings.quote_transport {
        TransportKind::Amqp => {
            let amqp = AmqpTransport::start(AmqpConfig {
                url: settings.amqp_url.expose_secret().to_owned(),
                queue: settings.quote_queue.clone(),
                rpc_timeout: settings.rpc_timeout,
            })
            .await;
            if settings.rpc_batching {
                Arc::new(Batcher::new(amqp, settings.rpc_timeout))
            } else {
                Arc::new(amqp)
            }
        }
        TransportKind::Http => Arc::new(
            HttpTransport::start(HttpConfig {
                base_url: settings.quote_service_url.clone(),
                rpc_timeout: settings.rpc_timeout,
            })
            .await?,
        ),
    };
    Ok(Arc::new(SingleFlight::with_reuse_window(
        transport,
        settings.quote_reuse_window,
    )))
}
