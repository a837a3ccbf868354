//! Helpers for both services' tests (feature `test-support`, never in a release build):
//! hostile HTTP traffic and a strict check of the Prometheus exposition both serve.

pub mod exposition;
pub mod junk_http;
