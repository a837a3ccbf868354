//! End-to-end specification of the API: both services in-process on free ports, the real
//! local RabbitMQ, a fresh SQLite or PostgreSQL database, and the project's fake stooq.
//! One binary (faster to build than one per file); one behaviour per test.

mod auth;
mod history;
mod instances;
mod quotes;
mod rpc_batching;
mod stats;
mod stock;
mod stream;
mod tokens;
mod transport;
