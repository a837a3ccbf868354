//! End-to-end benchmark of the stock-quote stack.
//!
//! `bench` (src/main.rs) starts fake_stooq, quote_service and api_service from release builds,
//! seeds users and history, drives each scenario with wrk and compares `stock-hot` with the bare
//! RPC echo of [`echo`] measured in the same run. `scripts/bench.sh` is the one command.

pub mod echo;
pub mod stats;
