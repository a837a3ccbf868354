//! Staying connected to RabbitMQ. Every long-lived broker session in both services (the quote
//! service's RPC consumer and watch list, the API's live-quote feed) backs off the same way
//! through [`Reconnect`], so a broker outage reads the same in every log. Each caller keeps its
//! own short loop, because each session watches shutdown itself to finish what it holds.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// The first pause after a lost session: short, because most losses are a broker restart or
/// a dropped connection that the next attempt already gets past.
pub const FIRST_PAUSE: Duration = Duration::from_millis(100);
/// The longest pause: an outage is noticed within this long of its end, and the broker is
/// asked at most once per this long while it lasts.
pub const MAX_PAUSE: Duration = Duration::from_secs(2);

/// The pause between attempts to reach the broker: doubles after every lost session, up to
/// [`MAX_PAUSE`], and starts again from [`FIRST_PAUSE`] once a session reports itself
/// [`connected`](Self::connected), so one long outage does not slow the recovery from the
/// next short one.
#[derive(Debug)]
pub struct Reconnect {
    what: &'static str,
    broker: String,
    pause: Duration,
}

impl Reconnect {
    /// `what` names the session in the log; `broker` is `host:port`, never the URL (it holds
    /// the password).
    pub fn new(what: &'static str, broker: String) -> Self {
        Self {
            what,
            broker,
            pause: FIRST_PAUSE,
        }
    }

    /// Called by a session once it is bound and consuming.
    pub fn connected(&mut self) {
        self.pause = FIRST_PAUSE;
    }

    /// How long [`after_loss`](Self::after_loss) would wait now.
    pub fn pause(&self) -> Duration {
        self.pause
    }

    /// After a lost session: warns with `why`, waits the pause and doubles it. False when
    /// `shutdown` came first (the caller stops instead of reconnecting).
    pub async fn after_loss(&mut self, why: &str, shutdown: &CancellationToken) -> bool {
        tracing::warn!(
            broker = %self.broker,
            error = why,
            retry_in = ?self.pause,
            "{} lost RabbitMQ; reconnecting",
            self.what
        );
        let waited = tokio::select! {
            _ = shutdown.cancelled() => false,
            _ = tokio::time::sleep(self.pause) => true,
        };
        self.pause = (self.pause * 2).min(MAX_PAUSE);
        waited
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reconnect() -> Reconnect {
        Reconnect::new("test session", "127.0.0.1:1".into())
    }

    #[tokio::test(start_paused = true)]
    async fn pauses_double_up_to_the_cap_and_a_connection_resets_them() {
        // Arrange
        let shutdown = CancellationToken::new();
        let mut reconnect = reconnect();
        let mut seen = Vec::new();

        // Act: six losses, a session that connects, one more loss.
        for _ in 0..6 {
            seen.push(reconnect.pause());
            assert!(reconnect.after_loss("broker gone", &shutdown).await);
        }
        let capped = reconnect.pause();
        reconnect.connected();
        let after_connecting = reconnect.pause();
        assert!(reconnect.after_loss("broker gone", &shutdown).await);

        // Assert
        let ms = Duration::from_millis;
        assert_eq!(
            seen,
            [ms(100), ms(200), ms(400), ms(800), ms(1600), MAX_PAUSE]
        );
        assert_eq!(capped, MAX_PAUSE);
        assert_eq!(after_connecting, FIRST_PAUSE);
        assert_eq!(reconnect.pause(), ms(200));
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_cuts_the_pause_short_and_says_stop() {
        // Arrange: shutdown comes 30 ms into a 100 ms pause.
        let shutdown = CancellationToken::new();
        let cancel = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            cancel.cancel();
        });
        let started = tokio::time::Instant::now();

        // Act
        let go_on = reconnect().after_loss("broker gone", &shutdown).await;

        // Assert
        assert!(!go_on);
        assert_eq!(started.elapsed(), Duration::from_millis(30));
    }
}
