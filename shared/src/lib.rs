//! The pieces both services must agree on. Anything that crosses the wire between
//! `api_service` and `quote_service`, or that both must interpret identically, lives here
//! so the two sides cannot drift apart.

pub mod config;
pub mod contract;
pub mod endpoint;
pub mod error_chain;
pub mod http_server;
pub mod live;
pub mod pattern;
pub mod reconnect;
pub mod symbol;
pub mod telemetry;
#[cfg(feature = "test-support")]
pub mod test_support;

pub use contract::{
    BATCH_CONTRACT_VERSION, BatchQuoteReply, BatchQuoteRequest, BatchReplyRead, BatchResult,
    CONTRACT_VERSION, ErrorCode, MAX_BATCH_SYMBOLS, Quote, QuoteError, QuoteReply, QuoteRequest,
    QuoteResult, read_batch_reply,
};
pub use symbol::{Symbol, SymbolError};

/// Header that carries the request id, on HTTP requests and in AMQP message headers alike,
/// so one user request can be followed through both services' logs.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// HTTP header on the fallback transport carrying [`QuoteRequest::deadline_ms`], so the quote
/// service honours the caller's deadline over HTTP exactly as it does over AMQP.
pub const DEADLINE_HEADER: &str = "x-deadline-ms";

/// Default name of the durable RPC request queue; both services read `QUOTE_QUEUE`.
pub const DEFAULT_QUOTE_QUEUE: &str = "quotes.rpc";
