//! Waiting for an event instead of sleeping and hoping.

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
