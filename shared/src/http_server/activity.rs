//! What one connection is doing, as far as the timeouts care: waiting for a request, reading
//! a request's header, or serving a request. The socket wrapper reports bytes read, the
//! service reports requests starting and their responses ending, and the connection's
//! watchdog sleeps until the deadline of the current phase.
//!
//! Phase changes do not wake the watchdog (three changes per request, each a wake-up and a
//! timer reset, were measurable on the benchmark). Instead it never sleeps longer than the
//! shortest limit: a phase that begins while it sleeps cannot run out before it looks again.
//!
//! hyper's own `header_read_timeout` is not used: its clock starts whenever hyper waits for
//! the next request head, so it also caps how long a keep-alive connection may sit idle. Here
//! the header clock starts at the header's first byte, and idleness has its own limit.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::HttpServerSettings;

/// How long after the request timeout a response may still be in delivery (the 408 itself,
/// or a large body going to a slow reader) before the connection is cut.
pub(super) const RESPONSE_DELIVERY_GRACE: Duration = Duration::from_secs(1);

/// While a long-lived response streams there is no deadline; the watchdog just looks again
/// this often (and whenever the phase changes).
const LONG_LIVED_RECHECK: Duration = Duration::from_secs(3600);

/// Which limit ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expiry {
    Idle,
    Header,
    Request,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    /// No request in progress and no byte of the next one read.
    Idle { since: Instant },
    /// Bytes of a request's header have arrived, the header is not complete yet.
    ReadingHeader { since: Instant },
    /// A request is being served: its body read, its handler run or its response delivered.
    /// `long_lived`: its response is a stream marked [`super::LongLived`], delivered for as
    /// long as its handler keeps it open (the handler bounds it), not cut at the request
    /// timeout.
    Busy {
        since: Instant,
        requests: usize,
        long_lived: bool,
    },
}

pub(super) struct Activity {
    phase: Mutex<Phase>,
}

impl Activity {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self {
            phase: Mutex::new(Phase::Idle {
                since: Instant::now(),
            }),
        })
    }

    fn phase(&self) -> MutexGuard<'_, Phase> {
        // The lock guards plain data with no invariant a panic could break.
        self.phase
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Bytes arrived: while idle, they start the next request's header and its clock.
    /// (Bytes of a pipelined request read while the previous one is still busy are not
    /// timed as a header; they wait at most the idle timeout.)
    fn bytes_read(&self) {
        let mut phase = self.phase();
        if let Phase::Idle { .. } = *phase {
            *phase = Phase::ReadingHeader {
                since: Instant::now(),
            };
        }
    }

    /// A complete header was parsed. The request counts as busy until the returned guard
    /// is dropped, which happens when its response body has been delivered (or abandoned).
    pub(super) fn request_started(self: &Arc<Self>) -> RequestGuard {
        let mut phase = self.phase();
        *phase = match *phase {
            Phase::Busy {
                since,
                requests,
                long_lived,
            } => Phase::Busy {
                since,
                requests: requests + 1,
                long_lived,
            },
            Phase::Idle { .. } | Phase::ReadingHeader { .. } => Phase::Busy {
                since: Instant::now(),
                requests: 1,
                long_lived: false,
            },
        };
        drop(phase);
        RequestGuard(Arc::clone(self))
    }

    /// Whether a request is being served (its header is complete and its response not yet
    /// delivered).
    pub(super) fn is_busy(&self) -> bool {
        matches!(*self.phase(), Phase::Busy { .. })
    }

    /// The response being delivered is a long-lived stream: the request timeout no longer
    /// applies to this request.
    pub(super) fn response_is_long_lived(&self) {
        let mut phase = self.phase();
        if let Phase::Busy {
            since, requests, ..
        } = *phase
        {
            *phase = Phase::Busy {
                since,
                requests,
                long_lived: true,
            };
        }
    }

    fn request_finished(&self) {
        let mut phase = self.phase();
        *phase = match *phase {
            // Pipelined requests behind a finished stream are timed from now.
            Phase::Busy {
                since,
                requests,
                long_lived,
            } if requests > 1 => Phase::Busy {
                since: if long_lived { Instant::now() } else { since },
                requests: requests - 1,
                long_lived: false,
            },
            _ => Phase::Idle {
                since: Instant::now(),
            },
        };
    }

    fn deadline(&self, limits: &HttpServerSettings) -> (Instant, Expiry) {
        match *self.phase() {
            Phase::Idle { since } => (since + limits.idle_timeout, Expiry::Idle),
            Phase::ReadingHeader { since } => (since + limits.header_timeout, Expiry::Header),
            Phase::Busy {
                long_lived: true, ..
            } => (Instant::now() + LONG_LIVED_RECHECK, Expiry::Request),
            Phase::Busy { since, .. } => (
                since + limits.request_timeout + RESPONSE_DELIVERY_GRACE,
                Expiry::Request,
            ),
        }
    }

    /// Resolves once the current phase has lasted longer than its limit. Looks at least once
    /// per shortest limit, so that a phase that begins between two looks (with a deadline at
    /// least that limit after it began) is caught on time.
    pub(super) async fn expired(&self, limits: &HttpServerSettings) -> Expiry {
        let shortest = limits
            .header_timeout
            .min(limits.request_timeout + RESPONSE_DELIVERY_GRACE)
            .min(limits.idle_timeout);
        loop {
            let now = Instant::now();
            let (deadline, expiry) = self.deadline(limits);
            if now >= deadline {
                return expiry;
            }
            tokio::time::sleep_until(deadline.min(now + shortest)).await;
        }
    }
}

/// Marks one request as in progress while it lives.
pub(super) struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// The client socket, reporting to [`Activity`] whenever bytes arrive.
pub(super) struct TrackedStream {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl TrackedStream {
    pub(super) fn new(inner: TcpStream, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl AsyncRead for TrackedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.bytes_read();
        }
        polled
    }
}

impl AsyncWrite for TrackedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A response body that keeps its request counted as busy until hyper has sent it all and
/// dropped it.
pub(super) struct GuardedBody {
    inner: Body,
    _guard: RequestGuard,
}

impl GuardedBody {
    pub(super) fn new(inner: Body, guard: RequestGuard) -> Self {
        Self {
            inner,
            _guard: guard,
        }
    }
}

impl http_body::Body for GuardedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
