//! A circuit breaker in front of stooq: while the feed keeps failing, stop calling it.
//!
//! Retries help with a blip, but against a feed that is down, rate limiting us or answering
//! with non-data pages they multiply the load on it (1 + `STOOQ_MAX_RETRIES` requests per
//! fetch), and stooq is known to ban addresses that hammer it. So after
//! `STOOQ_BREAKER_THRESHOLD` consecutive failed requests the circuit opens: for
//! `STOOQ_BREAKER_COOLDOWN` every fetch fails at once, without a request, with the last
//! failure's code and reason. Then the circuit is half-open: one trial request goes out (the
//! others keep failing fast); success closes the circuit, failure opens it for another
//! cooldown. So a dead feed sees about one request per cooldown, whatever our traffic.
//!
//! An attempt cut short by the caller's own deadline says nothing about the feed and counts
//! neither way. A trial whose outcome is never reported (its fetch abandoned) is replaced by
//! a new one after a cooldown, so the circuit cannot stay half-open forever.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use shared::QuoteError;
use tokio::time::Instant;

#[derive(Debug)]
pub struct Breaker {
    /// Consecutive failures that open the circuit; 0 disables the breaker.
    threshold: u32,
    cooldown: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
        last: QuoteError,
    },
    HalfOpen {
        trial_since: Instant,
        last: QuoteError,
    },
}

/// What [`Breaker::admit`] lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The circuit is closed: call stooq.
    Call,
    /// The single trial request after a cooldown.
    Trial,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            threshold,
            cooldown,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update replaces the state whole: a poisoned lock holds a consistent value.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// May a request go to stooq now? `Err` is the answer to give instead: the last failure's
    /// code, and a message saying why nothing was tried.
    pub fn admit(&self) -> Result<Admission, QuoteError> {
        if self.threshold == 0 {
            return Ok(Admission::Call);
        }
        let now = Instant::now();
        let mut state = self.lock();
        match &*state {
            State::Closed { .. } => Ok(Admission::Call),
            State::Open { until, last } if now < *until => {
                Err(self.refusal(last, until.saturating_duration_since(now)))
            }
            State::HalfOpen { trial_since, last } if now < *trial_since + self.cooldown => {
                Err(self.refusal(last, Duration::ZERO))
            }
            State::Open { last, .. } | State::HalfOpen { last, .. } => {
                let last = last.clone();
                tracing::info!("stooq circuit half-open: sending one trial request");
                *state = State::HalfOpen {
                    trial_since: now,
                    last,
                };
                Ok(Admission::Trial)
            }
        }
    }

    fn refusal(&self, last: &QuoteError, left: Duration) -> QuoteError {
        let when = if left.is_zero() {
            "a trial request is under way".to_owned()
        } else {
            format!("next try in {:.1} s", left.as_secs_f64())
        };
        QuoteError::new(
            last.code,
            format!(
                "stooq is not being called after {} consecutive failures ({when}); last failure: {}",
                self.threshold, last.message
            ),
        )
    }

    /// stooq answered with data (including "no such symbol"): the circuit closes.
    pub fn success(&self) {
        if self.threshold == 0 {
            return;
        }
        let mut state = self.lock();
        if !matches!(*state, State::Closed { .. }) {
            tracing::info!("stooq answered again: circuit closed");
        }
        *state = State::Closed { failures: 0 };
    }

    /// stooq failed (any upstream failure or refusal): counts towards opening the circuit, or
    /// reopens it after a failed trial.
    pub fn failure(&self, error: &QuoteError) {
        if self.threshold == 0 {
            return;
        }
        let mut state = self.lock();
        let failures = match &*state {
            State::Closed { failures } => failures + 1,
            // A failed trial, or a request admitted before the circuit opened.
            State::Open { .. } | State::HalfOpen { .. } => self.threshold,
        };
        *state = if failures >= self.threshold {
            if matches!(*state, State::Closed { .. }) {
                tracing::warn!(
                    failures,
                    cooldown = ?self.cooldown,
                    error = %error.message,
                    "stooq keeps failing: circuit open, not calling it during the cooldown"
                );
            }
            State::Open {
                until: Instant::now() + self.cooldown,
                last: error.clone(),
            }
        } else {
            State::Closed { failures }
        };
    }

    /// Whether requests are currently refused without calling stooq (for tests and metrics).
    pub fn is_open(&self) -> bool {
        self.admit_peek().is_err()
    }

    fn admit_peek(&self) -> Result<(), ()> {
        let now = Instant::now();
        match &*self.lock() {
            State::Closed { .. } => Ok(()),
            State::Open { until, .. } if now < *until => Err(()),
            State::HalfOpen { trial_since, .. } if now < *trial_since + self.cooldown => Err(()),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::ErrorCode;

    fn failure(code: ErrorCode) -> QuoteError {
        QuoteError::new(code, "stooq answered HTTP 503")
    }

    #[tokio::test]
    async fn opens_after_the_threshold_and_fails_fast_with_the_last_reason() {
        let breaker = Breaker::new(3, Duration::from_secs(60));
        for _ in 0..2 {
            assert_eq!(breaker.admit(), Ok(Admission::Call));
            breaker.failure(&failure(ErrorCode::UpstreamUnavailable));
        }
        assert!(!breaker.is_open(), "two failures are not enough");
        breaker.failure(&failure(ErrorCode::UpstreamRejected));

        let refused = breaker.admit().unwrap_err();
        assert!(breaker.is_open());
        assert_eq!(
            refused.code,
            ErrorCode::UpstreamRejected,
            "the last failure's code"
        );
        assert!(refused.message.contains("HTTP 503"), "{}", refused.message);
        assert!(
            refused.message.contains("not being called"),
            "{}",
            refused.message
        );
    }

    #[tokio::test]
    async fn a_success_resets_the_count() {
        let breaker = Breaker::new(3, Duration::from_secs(60));
        breaker.failure(&failure(ErrorCode::UpstreamUnavailable));
        breaker.failure(&failure(ErrorCode::UpstreamUnavailable));
        breaker.success();
        breaker.failure(&failure(ErrorCode::UpstreamUnavailable));
        breaker.failure(&failure(ErrorCode::UpstreamUnavailable));
        assert_eq!(breaker.admit(), Ok(Admission::Call));
    }

    // Paused clock: a descheduled thread cannot let the cooldown run out between two lines.
    #[tokio::test(start_paused = true)]
    async fn after_the_cooldown_one_trial_decides() {
        let cooldown = Duration::from_secs(30);
        let breaker = Breaker::new(1, cooldown);
        breaker.failure(&failure(ErrorCode::UpstreamUnavailable));
        assert!(breaker.admit().is_err());
        tokio::time::sleep(cooldown).await;

        assert_eq!(breaker.admit(), Ok(Admission::Trial));
        let meanwhile = breaker.admit().unwrap_err();
        assert!(meanwhile.message.contains("trial"), "{}", meanwhile.message);
        // The trial fails: open for another cooldown.
        breaker.failure(&failure(ErrorCode::UpstreamUnavailable));
        assert!(breaker.admit().is_err());
        tokio::time::sleep(cooldown).await;
        assert_eq!(breaker.admit(), Ok(Admission::Trial));
        breaker.success();
        assert_eq!(breaker.admit(), Ok(Admission::Call));
        assert_eq!(breaker.admit(), Ok(Admission::Call));
    }

    // Paused clock: a descheduled thread cannot let the cooldown run out between two lines.
    #[tokio::test(start_paused = true)]
    async fn an_abandoned_trial_is_replaced_after_a_cooldown() {
        let cooldown = Duration::from_secs(30);
        let breaker = Breaker::new(1, cooldown);
        breaker.failure(&failure(ErrorCode::UpstreamUnavailable));
        tokio::time::sleep(cooldown).await;
        assert_eq!(breaker.admit(), Ok(Admission::Trial));
        // Its outcome never comes.
        tokio::time::sleep(cooldown).await;
        assert_eq!(breaker.admit(), Ok(Admission::Trial));
    }

    #[tokio::test]
    async fn threshold_zero_disables_it() {
        let breaker = Breaker::new(0, Duration::from_secs(60));
        for _ in 0..100 {
            breaker.failure(&failure(ErrorCode::UpstreamUnavailable));
        }
        assert_eq!(breaker.admit(), Ok(Admission::Call));
    }
}
