//! Waiting for an event instead of sleeping and hoping.

use std::process::{Child, ExitStatus};
use std::time::Duration;

/// Polls `check` every 20 ms until it holds, so a test waits for the event it needs (a fetch
/// under way, a consumer attached, a counter moved) instead of sleeping and hoping; fails the
/// test, naming `what`, if it does not hold within `within`.
pub async fn wait_until(what: &str, within: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited {within:?} for {what}, in vain"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The child's exit status once it has exited, or `None` if it still runs after `limit`
/// (polled every 20 ms, so a test of a signal's effect does not sleep a guessed time).
pub async fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let until = tokio::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if tokio::time::Instant::now() >= until {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
