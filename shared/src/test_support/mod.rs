//! Helpers for both services' tests (feature `test-support`, never in a release build):
//! hostile HTTP traffic, a strict check of the Prometheus exposition both serve, and a trap
//! for metrics recorded where no exporter sees them.

pub mod exposition;
pub mod junk_http;
pub mod stray_metrics;
