//! Helpers for both services' tests (feature `test-support`, never in a release build):
//! hostile HTTP traffic, a strict check of the Prometheus exposition both serve, a trap
//! for metrics recorded where no exporter sees them, waiting for an event, and a port that
//! refuses connections. The end-to-end crate (`tests`) uses them too.

pub mod exposition;
pub mod junk_http;
pub mod poll;
pub mod ports;
pub mod stray_metrics;
