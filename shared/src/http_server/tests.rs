//! The server's limits against real sockets, with short timeouts.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::{get, post};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::slow_client::{HALF_HEADER, closed_within, raw_get, read_response};
use super::{HttpServerSettings, serve};

const HANDLER_PAUSE: Duration = Duration::from_millis(300);

fn app() -> Router {
    Router::new()
        .route("/fast", get(|| async { "ok" }))
        .route(
            "/pause",
            get(|| async {
                tokio::time::sleep(HANDLER_PAUSE).await;
                "done"
            }),
        )
        .route(
            "/stuck",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                "too late"
            }),
        )
        .route("/echo", post(|body: String| async move { body }))
        .route("/trickle", get(|| async { trickle(false) }))
        .route("/trickle-long-lived", get(|| async { trickle(true) }))
        .route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
        )
}

/// A body of ten chunks, 200 ms apart (two seconds in all: past the request timeout plus the
/// delivery grace of the test limits), optionally marked long-lived.
fn trickle(long_lived: bool) -> axum::response::Response {
    let chunks = futures::stream::unfold(0, |i| async move {
        if i == 10 {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        Some((
            Ok::<_, std::convert::Infallible>(format!("chunk{i}\n")),
            i + 1,
        ))
    });
    let mut response = axum::response::Response::new(axum::body::Body::from_stream(chunks));
    if long_lived {
        response.extensions_mut().insert(super::LongLived);
    }
    response
}

fn limits(
    header_ms: u64,
    request_ms: u64,
    idle_ms: u64,
    max_connections: u32,
) -> HttpServerSettings {
    HttpServerSettings {
        header_timeout: Duration::from_millis(header_ms),
        request_timeout: Duration::from_millis(request_ms),
        idle_timeout: Duration::from_millis(idle_ms),
        max_connections,
    }
}

/// Generous limits except where a test shortens one.
fn relaxed() -> HttpServerSettings {
    limits(10_000, 10_000, 10_000, 100)
}

struct Server {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

async fn start(limits: HttpServerSettings) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(serve(listener, app(), limits, async {
        let _ = stopped.await;
    }));
    Server { addr, stop, task }
}

impl Server {
    async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.addr).await.unwrap()
    }

    /// Signals shutdown and waits for `serve` to return, up to `limit`.
    async fn stop_within(self, limit: Duration) -> bool {
        let _ = self.stop.send(());
        tokio::time::timeout(limit, self.task).await.is_ok()
    }
}

#[tokio::test]
async fn a_complete_request_is_answered() {
    let server = start(relaxed()).await;
    let mut client = server.connect().await;

    let response = raw_get(&mut client, "/fast", Duration::from_secs(2)).await;

    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("ok"), "{response}");
}

#[tokio::test]
async fn handlers_see_the_client_address() {
    let server = start(relaxed()).await;
    let mut client = server.connect().await;
    let own_address = client.local_addr().unwrap().to_string();

    let response = raw_get(&mut client, "/peer", Duration::from_secs(2)).await;

    assert!(response.ends_with(&own_address), "{response}");
}

#[tokio::test]
async fn a_half_sent_header_is_closed_after_the_header_timeout() {
    let server = start(limits(300, 10_000, 10_000, 100)).await;
    let mut client = server.connect().await;

    client.write_all(HALF_HEADER).await.unwrap();

    assert!(!closed_within(&mut client, Duration::from_millis(150)).await);
    assert!(closed_within(&mut client, Duration::from_secs(1)).await);
}

#[tokio::test]
async fn the_header_clock_starts_at_the_first_byte_not_at_connect() {
    let server = start(limits(300, 10_000, 10_000, 100)).await;
    let mut client = server.connect().await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let response = raw_get(&mut client, "/fast", Duration::from_secs(2)).await;

    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

#[tokio::test]
async fn a_connection_that_never_sends_is_closed_after_the_idle_timeout() {
    let server = start(limits(10_000, 10_000, 300, 100)).await;
    let mut client = server.connect().await;

    assert!(!closed_within(&mut client, Duration::from_millis(150)).await);
    assert!(closed_within(&mut client, Duration::from_secs(1)).await);
}

#[tokio::test]
async fn a_keep_alive_connection_outlives_the_header_timeout_until_the_idle_timeout() {
    let server = start(limits(200, 10_000, 900, 100)).await;
    let mut client = server.connect().await;
    let response = raw_get(&mut client, "/fast", Duration::from_secs(2)).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    assert!(!closed_within(&mut client, Duration::from_millis(500)).await);
    assert!(closed_within(&mut client, Duration::from_secs(1)).await);
}

#[tokio::test]
async fn a_handler_past_the_request_timeout_gets_408_and_the_connection_closes() {
    let server = start(limits(10_000, 300, 10_000, 100)).await;
    let mut client = server.connect().await;
    let started = Instant::now();

    let response = raw_get(&mut client, "/stuck", Duration::from_secs(2)).await;

    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(started.elapsed() < Duration::from_secs(1));
    let body: serde_json::Value =
        serde_json::from_str(response.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(body["error"]["code"], "request_timeout");
    assert!(closed_within(&mut client, Duration::from_secs(1)).await);
}

#[tokio::test]
async fn a_body_that_trickles_in_past_the_request_timeout_gets_408() {
    let server = start(limits(10_000, 300, 10_000, 100)).await;
    let mut client = server.connect().await;

    client
        .write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nonly ten b")
        .await
        .unwrap();
    let response = read_response(&mut client, Duration::from_secs(2)).await;

    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
}

#[tokio::test]
async fn a_connection_over_the_limit_gets_503_at_once() {
    let server = start(limits(10_000, 10_000, 10_000, 2)).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut client = server.connect().await;
        let response = raw_get(&mut client, "/fast", Duration::from_secs(2)).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        held.push(client);
    }
    let mut extra = server.connect().await;
    let started = Instant::now();

    let response = read_response(&mut extra, Duration::from_secs(2)).await;

    assert!(started.elapsed() < Duration::from_millis(500));
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");
    let body: serde_json::Value =
        serde_json::from_str(response.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(body["error"]["code"], "too_many_connections");
    assert!(closed_within(&mut extra, Duration::from_secs(1)).await);
}

#[tokio::test]
async fn a_closed_connection_frees_its_slot() {
    let server = start(limits(10_000, 10_000, 10_000, 1)).await;
    let mut first = server.connect().await;
    let response = raw_get(&mut first, "/fast", Duration::from_secs(2)).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    drop(first);

    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let mut next = server.connect().await;
        let response = raw_get(&mut next, "/fast", Duration::from_secs(2)).await;
        if response.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "slot never freed: {response}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn shutdown_finishes_the_request_in_flight_then_returns() {
    let server = start(relaxed()).await;
    let mut client = server.connect().await;
    client
        .write_all(b"GET /pause HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(HANDLER_PAUSE / 3).await;

    let reader =
        tokio::spawn(async move { read_response(&mut client, Duration::from_secs(2)).await });
    let stopped = server.stop_within(Duration::from_secs(2)).await;

    let response = reader.await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("done"), "{response}");
    assert!(stopped);
}

#[tokio::test]
async fn shutdown_closes_idle_connections_after_a_short_linger() {
    let server = start(relaxed()).await;
    let mut client = server.connect().await;
    let response = raw_get(&mut client, "/fast", Duration::from_secs(2)).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    let stopped = server.stop_within(Duration::from_secs(1)).await;

    assert!(stopped);
    assert!(closed_within(&mut client, Duration::from_millis(100)).await);
}

#[tokio::test]
async fn a_request_sent_on_a_kept_alive_connection_as_shutdown_begins_is_answered() {
    let server = start(relaxed()).await;
    let mut client = server.connect().await;
    let response = raw_get(&mut client, "/fast", Duration::from_secs(2)).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    // The shutdown reaches the idle connection before the client's next request does.
    let _ = server.stop.send(());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let response = raw_get(&mut client, "/fast", Duration::from_secs(2)).await;

    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.to_ascii_lowercase().contains("connection: close"),
        "the client is told to send no more here: {response}"
    );
    assert!(closed_within(&mut client, Duration::from_millis(100)).await);
    assert!(
        tokio::time::timeout(Duration::from_secs(1), server.task)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn a_long_lived_stream_outlasts_the_request_timeout_and_an_unmarked_one_is_cut() {
    let server = start(limits(10_000, 300, 10_000, 100)).await;

    let mut client = server.connect().await;
    let response = raw_get(&mut client, "/trickle-long-lived", Duration::from_secs(3)).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("chunk9"), "delivered whole: {response}");

    let mut client = server.connect().await;
    let response = raw_get(&mut client, "/trickle", Duration::from_secs(3)).await;
    assert!(response.contains("chunk0"), "{response}");
    assert!(
        !response.contains("chunk9"),
        "cut at the request timeout: {response}"
    );
}
