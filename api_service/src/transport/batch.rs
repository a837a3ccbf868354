//! What both wire transports share for batches: reading a contract-v2 reply, and the
//! rolling-upgrade fallback to one v1 request per symbol when the worker is older.
//!
//! An old worker is recognised per reply (see [`shared::read_batch_reply`]), never
//! remembered: during a rolling upgrade the next request may well reach a new worker, and
//! asking costs one refused round trip. The fallback is logged at WARN once per transport
//! (so a fleet of old workers does not flood the log) and at DEBUG every time.

use std::sync::atomic::{AtomicBool, Ordering};

use shared::{BatchReplyRead, ErrorCode, QuoteError, Symbol};

use super::{QuoteTransport, SymbolResult, TransportError};

/// Asks for each symbol with [`QuoteTransport::get_quote`], all at once. When every one of
/// them failed for want of an answer (nobody there, no reply in time) rather than with the
/// quote service's own verdict, the batch as a whole did (`Err`), as it would in one call.
pub(super) async fn one_by_one<T: QuoteTransport + ?Sized>(
    transport: &T,
    symbols: &[Symbol],
    request_id: &str,
) -> Result<Vec<SymbolResult>, TransportError> {
    let mut results = futures::future::join_all(
        symbols
            .iter()
            .map(|symbol| transport.get_quote(symbol, request_id)),
    )
    .await;
    let none_answered = !results.is_empty()
        && results.iter().all(|r| {
            matches!(
                r,
                Err(TransportError::Unavailable(_) | TransportError::Timeout)
            )
        });
    if none_answered && let Err(first) = results.swap_remove(0) {
        return Err(first);
    }
    Ok(results)
}

/// Whether the fallback to v1 was already logged at WARN by this transport.
#[derive(Debug, Default)]
pub(super) struct OldWorkerNotice(AtomicBool);

impl OldWorkerNotice {
    /// Logs the fallback; returns whether this was the WARN (the first time).
    pub(super) fn note(&self, reason: &str) -> bool {
        if self.0.swap(true, Ordering::Relaxed) {
            tracing::debug!(reason, "old quote worker: batch asked one symbol at a time");
            false
        } else {
            tracing::warn!(
                reason,
                "the quote worker does not speak contract v2 (batches): asking it one symbol \
                 at a time until it is upgraded (logged once)"
            );
            true
        }
    }
}

/// Turns the reply to one v2 request into per-symbol results, falling back to v1 requests
/// when an old worker refused it.
pub(super) async fn settle<T: QuoteTransport + ?Sized>(
    transport: &T,
    notice: &OldWorkerNotice,
    reply: &[u8],
    symbols: &[Symbol],
    request_id: &str,
) -> Result<Vec<SymbolResult>, TransportError> {
    let read = shared::read_batch_reply(reply, symbols.len());
    settle_read(transport, notice, read, symbols, request_id).await
}

/// [`settle`] for a reply already read (the HTTP transport reads it first to tell a worker's
/// reply from a proxy's error page by status).
pub(super) async fn settle_read<T: QuoteTransport + ?Sized>(
    transport: &T,
    notice: &OldWorkerNotice,
    read: Result<BatchReplyRead, String>,
    symbols: &[Symbol],
    request_id: &str,
) -> Result<Vec<SymbolResult>, TransportError> {
    match read {
        Ok(BatchReplyRead::Results(results)) => Ok(results
            .into_iter()
            .map(|r| r.map_err(TransportError::Quote))
            .collect()),
        Ok(BatchReplyRead::Refused(error)) => Err(TransportError::Quote(error)),
        Ok(BatchReplyRead::OldWorker(reason)) => {
            notice.note(&reason.message);
            one_by_one(transport, symbols, request_id).await
        }
        Err(why) => Err(malformed(&why)),
    }
}

/// A reply no worker of any version sends: logged, and a failure of the quote service.
pub(super) fn malformed(why: &str) -> TransportError {
    tracing::error!(error = why, "malformed batch reply from the quote service");
    TransportError::Quote(QuoteError::new(
        ErrorCode::Internal,
        "malformed reply from the quote service",
    ))
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;
    use shared::Quote;

    use super::*;

    /// Quotes every symbol except `down.us` (nobody there) and `slow.us` (no reply in time).
    struct PerSymbol;

    #[async_trait]
    impl QuoteTransport for PerSymbol {
        async fn get_quote(&self, symbol: &Symbol, _: &str) -> Result<Quote, TransportError> {
            match symbol.as_str() {
                "down.us" => Err(TransportError::Unavailable("no worker".into())),
                "slow.us" => Err(TransportError::Timeout),
                "nosuch.us" => Err(TransportError::Quote(QuoteError::new(
                    ErrorCode::NotFound,
                    "no such symbol",
                ))),
                other => Ok(crate::test_support::quote(&other.to_uppercase(), "N", 1.0)),
            }
        }
        fn is_ready(&self) -> bool {
            true
        }
    }

    fn symbols(list: &[&str]) -> Vec<Symbol> {
        list.iter().map(|s| Symbol::parse(s).unwrap()).collect()
    }

    #[test]
    fn the_fallback_is_a_warning_once_then_quiet() {
        let notice = OldWorkerNotice::default();

        assert!(notice.note("refused"));
        assert!(!notice.note("refused"));
        assert!(!notice.note("refused"));
    }

    #[tokio::test]
    async fn one_by_one_answers_each_symbol_in_order() {
        let results = one_by_one(&PerSymbol, &symbols(&["a.us", "nosuch.us", "slow.us"]), "r")
            .await
            .unwrap();

        assert_eq!(results[0].as_ref().unwrap().symbol, "A.US");
        assert!(
            matches!(&results[1], Err(TransportError::Quote(e)) if e.code == ErrorCode::NotFound)
        );
        assert_eq!(results[2], Err(TransportError::Timeout));
    }

    #[tokio::test]
    async fn one_by_one_fails_whole_when_no_symbol_got_an_answer() {
        let result = one_by_one(&PerSymbol, &symbols(&["down.us", "slow.us"]), "r").await;

        assert!(matches!(result, Err(TransportError::Unavailable(_))));
    }

    #[tokio::test]
    async fn an_old_workers_refusal_falls_back_and_a_malformed_reply_does_not() {
        let notice = OldWorkerNotice::default();
        let refusal = serde_json::to_vec(&shared::QuoteReply::error(
            ErrorCode::BadRequest,
            "unsupported contract version 2 (this worker speaks 1)",
        ))
        .unwrap();
        let asked = symbols(&["a.us", "b.us"]);

        let fallback = settle(&PerSymbol, &notice, &refusal, &asked, "r")
            .await
            .unwrap();
        let garbage = settle(&PerSymbol, &notice, b"{}", &asked, "r").await;

        assert_eq!(fallback.len(), 2);
        assert!(fallback.iter().all(Result::is_ok));
        assert!(matches!(garbage, Err(TransportError::Quote(e)) if e.code == ErrorCode::Internal));
    }
}
