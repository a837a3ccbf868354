//! Logging set-up shared by both binaries: readable lines for humans, JSON for log shippers.

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Installs the global subscriber. `RUST_LOG` filters (default `info`); `LOG_FORMAT=json`
/// switches to one JSON object per line. Text lines are coloured only when stdout is a
/// terminal. Safe to call more than once (tests do): later calls are
/// no-ops.
pub fn init(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = if json {
        registry
            .with(
                fmt::layer()
                    .json()
                    // The whole span list, not just the innermost span: the request id is
                    // recorded on the outer request span, and every line must carry it.
                    .with_current_span(false)
                    .with_span_list(true),
            )
            .try_init()
    } else {
        // Colour is for a person at a terminal. Piped into a file, `docker logs` or a log
        // shipper, escape codes would be noise in every line.
        let colour = std::io::stdout().is_terminal();
        registry
            .with(fmt::layer().with_target(true).with_ansi(colour))
            .try_init()
    };
    // Already initialised (a second test in the same process): keep the first subscriber.
    let _ = result;
}

/// Like [`init`] but writes through the test harness's capture, for use inside tests.
pub fn init_for_tests() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt::layer().with_test_writer())
        .try_init();
}
