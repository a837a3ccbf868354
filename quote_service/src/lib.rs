//! The internal quote worker: answers quote requests over RabbitMQ RPC (and HTTP as a
//! fallback) from stooq's CSV feed, with caching, request coalescing and batching so the
//! upstream sees as few hits as possible.

pub mod breaker;
pub mod health;
pub mod http_server;
pub mod metrics;
pub mod quotes;
pub mod rpc_server;
pub mod settings;
pub mod startup;
pub mod stooq;
pub mod upstream;
pub mod watch;

pub use settings::{Settings, Transport};
pub use startup::Application;
