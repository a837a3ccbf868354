//! The internal quote worker: answers quote requests over RabbitMQ RPC (and HTTP as a
//! fallback) from stooq's CSV feed, with caching, request coalescing and batching so the
//! upstream sees as few hits as possible.

pub mod stooq;
