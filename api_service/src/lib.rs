//! The user-facing REST API: users log in for a JWT, ask for stock quotes (fetched from the
//! quote service over AMQP RPC or HTTP and recorded in their history), page through that
//! history, and admins read request statistics and create users.
//!
//! Entry points: [`Application`] (build, run, stop a server; used by `main` and tests),
//! [`Settings`] (all configuration), [`users::create_user`] (users without HTTP) and
//! [`transport::QuoteTransport`] (how quotes are fetched).

pub mod auth;
pub mod cli;
pub mod error;
pub mod extract;
pub mod fresh_read;
pub mod metrics;
pub mod openapi;
pub mod pagination;
pub mod request_id;
pub mod routes;
pub mod settings;
pub mod startup;
pub mod state;
pub mod store;
pub mod stream;
pub mod transport;
pub mod users;
pub mod web;

#[cfg(test)]
mod test_support;

pub use settings::{Settings, TestTransport, TransportKind};
pub use startup::Application;
