//! The HTTP client for stooq: one reused connection pool, per-attempt timeouts, and retries
//! with exponential backoff and jitter for failures that may pass (5xx, timeouts, dropped
//! connections), never past the caller's deadline.
//!
//! A circuit breaker ([`crate::breaker`]) sits in front of every attempt: while stooq keeps
//! failing, fetches fail fast instead of adding load to it.
//!
//! The request URL carries the API key, so neither it nor reqwest errors (whose `Display`
//! embeds the URL) are ever logged or put in a reply: errors are described here in our words.
//! For the same reason the client sends no `Referer` and follows redirects only within
//! stooq's own origin (see [`redirect_policy`]): a redirect elsewhere would hand the key,
//! in the query, to another host.

use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rand::Rng;
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use shared::{ErrorCode, QuoteError, Symbol};
use tokio::time::Instant;

use crate::breaker::Breaker;
use crate::metrics::Metrics;
use crate::settings::Settings;
use crate::stooq::{self, Rows, StooqError};

/// A quote CSV is a few hundred bytes per symbol; anything far bigger is not the feed.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// First backoff step; doubled per retry, capped at [`MAX_BACKOFF`], jittered.
const BASE_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Most redirects followed for one attempt, all within stooq's origin.
pub const MAX_REDIRECTS: usize = 3;

#[derive(Clone)]
pub struct StooqClient {
    http: reqwest::Client,
    /// `{STOOQ_URL}/q/l/`.
    endpoint: String,
    api_key: Option<SecretString>,
    attempt_timeout: Duration,
    max_retries: u32,
    metrics: Metrics,
    /// Shared by every clone: one view of stooq's health per process.
    breaker: Arc<Breaker>,
}

/// How one attempt failed, and whether trying again could help.
struct Failure {
    error: QuoteError,
    retryable: bool,
}

impl Failure {
    fn retry(message: impl Into<String>) -> Self {
        Self {
            error: QuoteError::new(ErrorCode::UpstreamUnavailable, message),
            retryable: true,
        }
    }

    fn fatal(error: QuoteError) -> Self {
        Self {
            error,
            retryable: false,
        }
    }
}

impl StooqClient {
    pub fn new(settings: &Settings, metrics: Metrics) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(settings.stooq_connect_timeout)
            // A backstop only: each attempt is bounded (more tightly) in `fetch`.
            .timeout(settings.stooq_timeout + Duration::from_secs(1))
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .user_agent(concat!("quote_service/", env!("CARGO_PKG_VERSION")))
            .referer(false)
            .redirect(redirect_policy())
            .build()?;
        Ok(Self {
            http,
            endpoint: format!("{}/q/l/", settings.stooq_url.trim_end_matches('/')),
            api_key: settings.stooq_api_key.clone(),
            attempt_timeout: settings.stooq_timeout,
            max_retries: settings.stooq_max_retries,
            metrics,
            breaker: Arc::new(Breaker::new(
                settings.stooq_breaker_threshold,
                settings.stooq_breaker_cooldown,
            )),
        })
    }

    /// Fetches `symbols` in one request (retrying as needed) and returns the rows stooq sent,
    /// keyed by lower-case symbol. A batch-level failure is one error for the whole batch.
    pub async fn fetch(&self, symbols: &[Symbol], deadline: Instant) -> Result<Rows, QuoteError> {
        self.fetch_until(symbols, || deadline).await
    }

    /// Like [`fetch`](Self::fetch), with a deadline that may move later while the fetch runs
    /// (a caller with more patience joined it). It is re-read before every wait.
    #[tracing::instrument(skip_all, fields(symbols = symbols.len()))]
    pub async fn fetch_until(
        &self,
        symbols: &[Symbol],
        deadline: impl Fn() -> Instant,
    ) -> Result<Rows, QuoteError> {
        let url = format!(
            "{}?{}",
            self.endpoint,
            stooq::query_string(
                symbols.iter().map(Symbol::as_str),
                self.api_key.as_ref().map(|k| k.expose_secret())
            )
        );
        let mut attempt: u32 = 0;
        loop {
            if deadline() <= Instant::now() {
                return Err(deadline_passed());
            }
            // While the circuit is open nothing is sent, retries included.
            self.breaker.admit()?;
            // An attempt cut by the caller's deadline (`?`) tells nothing about stooq.
            let failure = match self.attempt_within(&url, &deadline).await? {
                Ok(body) => {
                    let parsed = stooq::parse(&body).map_err(QuoteError::from);
                    match &parsed {
                        Ok(_) => self.breaker.success(),
                        Err(error) => self.breaker.failure(error),
                    }
                    return parsed;
                }
                Err(failure) => failure,
            };
            self.breaker.failure(&failure.error);
            // This failure may have opened the circuit: report it rather than the refusal.
            if !failure.retryable || attempt >= self.max_retries || self.breaker.is_open() {
                return Err(failure.error);
            }
            let pause = backoff(attempt);
            if Instant::now() + pause >= deadline() {
                // No time for another try: the real failure is more useful than "timeout".
                return Err(failure.error);
            }
            tracing::debug!(attempt, error = %failure.error, ?pause, "retrying stooq");
            self.metrics.upstream_retry();
            tokio::time::sleep(pause).await;
            attempt += 1;
        }
    }

    /// One attempt, cut at the attempt timeout or at the (possibly moving) deadline. The outer
    /// `Err` is the deadline passing; the inner result is the attempt's own outcome.
    async fn attempt_within(
        &self,
        url: &str,
        deadline: &impl Fn() -> Instant,
    ) -> Result<Result<Bytes, Failure>, QuoteError> {
        let attempt_end = Instant::now() + self.attempt_timeout;
        let attempt = self.attempt(url);
        tokio::pin!(attempt);
        loop {
            let wake = deadline().min(attempt_end);
            tokio::select! {
                result = &mut attempt => return Ok(result),
                _ = tokio::time::sleep_until(wake) => {
                    let now = Instant::now();
                    if deadline() <= now {
                        return Err(deadline_passed());
                    }
                    if now >= attempt_end {
                        return Ok(Err(Failure::retry(format!(
                            "stooq did not answer within {:?}",
                            self.attempt_timeout
                        ))));
                    }
                    // The deadline moved later: keep waiting for this attempt.
                }
            }
        }
    }

    async fn attempt(&self, url: &str) -> Result<Bytes, Failure> {
        let mut response = self.http.get(url).send().await.map_err(|e| {
            // A redirect loop will not untangle itself by the next attempt.
            if e.is_redirect() {
                Failure::fatal(QuoteError::new(
                    ErrorCode::UpstreamUnavailable,
                    describe(&e),
                ))
            } else {
                Failure::retry(describe(&e))
            }
        })?;
        let status = response.status();
        if status.is_redirection() {
            // Only a redirect the policy would not follow gets here.
            return Err(Failure::fatal(QuoteError::new(
                ErrorCode::UpstreamUnavailable,
                format!(
                    "stooq redirected (HTTP {}) to another host or without a location; not \
                     followed, since the request carries the API key",
                    status.as_u16()
                ),
            )));
        }
        if status.is_server_error() {
            return Err(Failure::retry(format!(
                "stooq answered HTTP {}",
                status.as_u16()
            )));
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(Failure::fatal(QuoteError::new(
                ErrorCode::UpstreamRejected,
                "stooq is rate limiting us (HTTP 429)",
            )));
        }
        let body = read_body(&mut response).await?;
        if status.is_success() {
            return Ok(body);
        }
        // stooq answers a missing key with a 404 or an HTML page: name it when we can.
        let error = match stooq::parse(&body) {
            Err(
                e @ (StooqError::ApiKeyRequired
                | StooqError::DailyLimit
                | StooqError::BrowserChallenge),
            ) => e.into(),
            _ if status.is_client_error() => QuoteError::new(
                ErrorCode::UpstreamRejected,
                format!(
                    "stooq answered HTTP {} (is STOOQ_API_KEY set and valid?)",
                    status.as_u16()
                ),
            ),
            _ => QuoteError::new(
                ErrorCode::UpstreamUnavailable,
                format!("stooq answered HTTP {}", status.as_u16()),
            ),
        };
        Err(Failure::fatal(error))
    }
}

/// Reads the body up to [`MAX_BODY_BYTES`]. A connection dropped mid-body is retryable.
async fn read_body(response: &mut reqwest::Response) -> Result<Bytes, Failure> {
    let mut buf = BytesMut::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if buf.len() + chunk.len() > MAX_BODY_BYTES {
                    return Err(Failure::fatal(QuoteError::new(
                        ErrorCode::UpstreamUnavailable,
                        "stooq answered with an oversized body",
                    )));
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(buf.freeze()),
            Err(e) => return Err(Failure::retry(describe(&e))),
        }
    }
}

fn deadline_passed() -> QuoteError {
    QuoteError::new(
        ErrorCode::Timeout,
        "stooq did not answer before the request's deadline",
    )
}

/// A URL-free account of a reqwest error: its kind and the causes under it (hyper and io
/// errors, which never contain the URL).
fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out talking to stooq"
    } else if e.is_connect() {
        "could not connect to stooq"
    } else if e.is_body() || e.is_decode() {
        "stooq broke off while sending the body"
    } else if e.is_redirect() {
        "stooq redirected too often"
    } else {
        "request to stooq failed"
    };
    let mut message = what.to_owned();
    let mut source = e.source();
    let mut depth = 0;
    while let Some(cause) = source {
        if depth == 3 {
            break;
        }
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
        depth += 1;
    }
    message
}

/// Follows a redirect only to the origin (scheme, host and port) the request went to, at most
/// [`MAX_REDIRECTS`] times. Any other redirect is not followed: its 3xx response comes back
/// to [`StooqClient::attempt`], which reports it.
fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        // `previous` starts with the URL first requested.
        let same_origin = attempt
            .previous()
            .first()
            .is_some_and(|first| first.origin() == attempt.url().origin());
        if !same_origin {
            attempt.stop()
        } else if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
        } else {
            attempt.follow()
        }
    })
}

/// Exponential backoff with jitter: `BASE * 2^attempt`, capped, then drawn uniformly from its
/// upper half so simultaneous failures do not retry in lockstep.
pub fn backoff(attempt: u32) -> Duration {
    let full = BASE_BACKOFF
        .saturating_mul(1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX))
        .min(MAX_BACKOFF);
    let half = full / 2;
    let jitter_ms = rand::rng().random_range(0..=half.as_millis() as u64);
    half + Duration::from_millis(jitter_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_capped() {
        for attempt in 0..40 {
            let d = backoff(attempt);
            let full = BASE_BACKOFF
                .saturating_mul(1 << attempt.min(16))
                .min(MAX_BACKOFF);
            assert!(d >= full / 2 && d <= full, "{attempt}: {d:?}");
        }
        assert!(backoff(0) <= Duration::from_millis(50));
        assert!(backoff(30) <= MAX_BACKOFF);
    }
}
