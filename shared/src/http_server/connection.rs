//! Serving one accepted connection: HTTP/1.1 through hyper, the application as the service,
//! and a watchdog that closes the connection when its current phase outlasts its limit.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tower::ServiceExt;

use super::activity::{Activity, Expiry, GuardedBody, TrackedStream};
use super::{HttpServerSettings, responses};

/// At shutdown, how long a connection with no request in progress stays open for one its
/// client may be sending at that very moment. Closing it at once loses such a request (the
/// client sees the connection drop with no answer: a keep-alive client in a loop meets this
/// on most restarts under load). Requests answered while draining carry `Connection: close`,
/// so the client sends no more on the connection; after the linger it is closed anyway.
const SHUTDOWN_IDLE_LINGER: Duration = Duration::from_millis(250);

/// Serves `stream` until the client closes it, a limit runs out, or `shutdown` fires (then
/// the request in progress is finished and the connection closed).
pub(super) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: HttpServerSettings,
    mut shutdown: watch::Receiver<()>,
) {
    let activity = Activity::new();
    let io = TokioIo::new(TrackedStream::new(stream, activity.clone()));
    let request_timeout = limits.request_timeout;
    let on_request = activity.clone();
    let draining = Arc::new(AtomicBool::new(false));
    let answer_closing = Arc::clone(&draining);
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        let guard = on_request.request_started();
        let answer_closing = Arc::clone(&answer_closing);
        // What `into_make_service_with_connect_info` would add: handlers read the peer.
        request.extensions_mut().insert(ConnectInfo(peer));
        let router = router.clone();
        let activity = on_request.clone();
        async move {
            let mut response = match tokio::time::timeout(request_timeout, router.oneshot(request))
                .await
            {
                Ok(Ok(response)) => response,
                Ok(Err(never)) => match never {},
                Err(_) => {
                    tracing::info!(%peer, limit = ?request_timeout, "request timed out; answering 408");
                    responses::request_timeout(request_timeout)
                }
            };
            if response.extensions().get::<super::LongLived>().is_some() {
                activity.response_is_long_lived();
            }
            if answer_closing.load(Ordering::Relaxed) {
                // hyper closes the connection after a response that says so.
                response.headers_mut().insert(
                    axum::http::header::CONNECTION,
                    axum::http::HeaderValue::from_static("close"),
                );
            }
            Ok::<_, Infallible>(response.map(|body| GuardedBody::new(body, guard)))
        }
    });
    let connection = http1::Builder::new().serve_connection(io, service);
    let mut connection = std::pin::pin!(connection);
    let mut linger: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    loop {
        tokio::select! {
            finished = connection.as_mut() => {
                if let Err(err) = finished {
                    tracing::debug!(%peer, error = %err, "HTTP connection ended with an error");
                }
                return;
            }
            _ = shutdown.changed(), if !draining.load(Ordering::Relaxed) => {
                draining.store(true, Ordering::Relaxed);
                if activity.is_busy() {
                    // Closes after the response in progress.
                    connection.as_mut().graceful_shutdown();
                } else {
                    linger = Some(Box::pin(tokio::time::sleep(SHUTDOWN_IDLE_LINGER)));
                }
            }
            () = async { linger.as_mut().expect("guarded").await }, if linger.is_some() => {
                linger = None;
                // Closes at once when idle, else after the response in progress.
                connection.as_mut().graceful_shutdown();
            }
            expiry = activity.expired(&limits) => {
                match expiry {
                    Expiry::Idle => tracing::debug!(%peer, "closing an idle connection"),
                    Expiry::Header => tracing::debug!(
                        %peer, limit = ?limits.header_timeout,
                        "closing a connection whose request header did not arrive in time"
                    ),
                    Expiry::Request => tracing::debug!(
                        %peer, limit = ?limits.request_timeout,
                        "cutting off a connection whose response was not delivered in time"
                    ),
                }
                return;
            }
        }
    }
}
