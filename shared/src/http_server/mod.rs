//! The HTTP server both services run their axum routers on, bounded against hostile
//! clients: a time limit for the request header (from its first byte), for each request
//! (body and handling), and for idle keep-alive connections, and a cap on open connections
//! beyond which a new one gets an immediate 503 and is closed, never queued.
//!
//! `axum::serve` has none of these: a client that sends half a header holds its socket for
//! ever, and a few thousand of them exhaust the process's file descriptors.
//!
//! HTTP/1.1 only (what the services speak). Handlers can read the client's address with
//! `ConnectInfo<SocketAddr>`, as with `into_make_service_with_connect_info`.

mod activity;
mod connection;
pub mod responses;
mod settings;
#[cfg(any(test, feature = "test-support"))]
pub mod slow_client;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

pub use settings::{
    DEFAULT_HEADER_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_REQUEST_TIMEOUT,
    HttpServerSettings,
};

/// Put in a response's extensions by a handler whose body is a long-lived stream (Server-Sent
/// Events): the request timeout, which otherwise also bounds delivering the body, does not
/// cut it. The handler must bound the stream's life itself (and end it on shutdown, which
/// otherwise waits for it).
#[derive(Debug, Clone, Copy, Default)]
pub struct LongLived;

/// Pause after an accept error such as running out of file descriptors, so the loop does not
/// spin while the condition lasts (as `axum::serve` does).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// Serves `router` on `listener` until `shutdown` resolves; then stops accepting, lets each
/// connection finish the request it is serving (idle ones close after a linger of 250 ms,
/// for a request already on its way; see `connection::SHUTDOWN_IDLE_LINGER`) and returns when
/// every connection is closed. Callers bound that wait with their own grace period.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpServerSettings,
    shutdown: impl Future<Output = ()> + Send,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections as usize));
    let refusal = responses::too_many_connections();
    let mut saturated = false;
    let (stop, stopped) = watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) if is_per_connection(&err) => continue,
                Err(err) => {
                    tracing::warn!(error = %err, pause = ?ACCEPT_ERROR_PAUSE, "cannot accept connections");
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                    }
                }
            },
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            if !saturated {
                tracing::warn!(
                    limit = limits.max_connections,
                    "connection limit reached: refusing new connections with 503"
                );
                saturated = true;
            }
            refuse(stream, peer, &refusal);
            continue;
        };
        saturated = false;
        let _ = stream.set_nodelay(true);
        let connection = connection::serve(
            stream,
            peer,
            router.clone(),
            limits.clone(),
            stopped.clone(),
        );
        tokio::spawn(async move {
            connection.await;
            drop(slot);
        });
    }
    drop(listener);
    drop(stopped);
    stop.send_replace(());
    // Every connection task holds a receiver: all are gone once the channel closes.
    stop.closed().await;
}

/// Answers a connection over the limit with the canned 503 and closes it, synchronously
/// (no task, no waiting on a client that does not read). What the client already sent is
/// read first so that closing does not reset the connection before it reads the answer.
fn refuse(stream: TcpStream, peer: SocketAddr, response: &[u8]) {
    let Ok(stream) = stream.into_std() else {
        return;
    };
    let mut scratch = [0u8; 4096];
    let _ = (&stream).read(&mut scratch);
    if let Err(err) = (&stream).write_all(response) {
        tracing::debug!(%peer, error = %err, "could not send the connection-limit answer");
    }
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

/// Errors that concern one incoming connection (which is gone), not the listener.
fn is_per_connection(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
