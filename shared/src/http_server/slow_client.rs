//! Hostile HTTP clients for tests (feature `test-support`): connections that send half a
//! request header and then nothing, and a way to see when the server closes them while
//! well-behaved clients are still served.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The start of a request: a request line, one header, and an unfinished header line.
pub const HALF_HEADER: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: slow-client\r\nX-Unfinished: ab";

/// Opens `count` connections to `addr`, each having sent [`HALF_HEADER`].
pub async fn open_half_headers(addr: SocketAddr, count: usize) -> Vec<TcpStream> {
    let mut streams = Vec::with_capacity(count);
    for _ in 0..count {
        let mut stream = TcpStream::connect(addr)
            .await
            .expect("slow client connects");
        stream
            .write_all(HALF_HEADER)
            .await
            .expect("slow client sends half a header");
        streams.push(stream);
    }
    streams
}

/// Whether the server closes `stream` within `limit`: reads (and discards anything the
/// server sends) until end of stream or a reset.
pub async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// How many of `streams` the server has closed within `limit` (all are watched at once).
pub async fn count_closed_within(streams: Vec<TcpStream>, limit: Duration) -> usize {
    let watches = streams
        .into_iter()
        .map(|mut stream| tokio::spawn(async move { closed_within(&mut stream, limit).await }));
    let mut closed = 0;
    for watch in watches.collect::<Vec<_>>() {
        if watch.await.unwrap_or(false) {
            closed += 1;
        }
    }
    closed
}

/// What [`watch_cut_off`] saw.
#[cfg(feature = "test-support")]
#[derive(Debug, Clone, Copy)]
pub struct CutOff {
    /// Slow connections the server closed within the limit.
    pub closed: usize,
    /// From the start of the watch until every slow connection was closed or the limit passed.
    pub took: Duration,
    /// Probes answered `200 OK` meanwhile.
    pub probes_served: usize,
    /// Probes that failed or got another status meanwhile.
    pub probes_failed: usize,
}

/// Waits up to `limit` for the server to close the `slow` connections (from
/// [`open_half_headers`]) while a well-behaved client probes `probe_url` every 50 ms, each
/// probe with a 1 s timeout: the server must shed the slow clients without starving others.
#[cfg(feature = "test-support")]
pub async fn watch_cut_off(slow: Vec<TcpStream>, limit: Duration, probe_url: String) -> CutOff {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    let started = Instant::now();
    let probing = Arc::new(AtomicBool::new(true));
    let (served, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let prober = {
        let (probing, served, failed) = (probing.clone(), served.clone(), failed.clone());
        let client = reqwest::Client::new();
        tokio::spawn(async move {
            while probing.load(Ordering::SeqCst) {
                let ok = client
                    .get(&probe_url)
                    .timeout(Duration::from_secs(1))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == reqwest::StatusCode::OK);
                let counter = if ok { &served } else { &failed };
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    let closed = count_closed_within(slow, limit).await;
    let took = started.elapsed();
    probing.store(false, Ordering::SeqCst);
    prober.await.expect("the prober does not panic");

    CutOff {
        closed,
        took,
        probes_served: served.load(Ordering::SeqCst),
        probes_failed: failed.load(Ordering::SeqCst),
    }
}

/// Sends one complete `GET path` on `stream` and returns the raw response head and body
/// read until the server closes the connection or `limit` passes.
pub async fn raw_get(stream: &mut TcpStream, path: &str, limit: Duration) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("request is sent");
    read_response(stream, limit).await
}

/// Reads one response from `stream`: its head and, when it has a `content-length`, its
/// body; or whatever arrives until the connection closes or `limit` passes.
pub async fn read_response(stream: &mut TcpStream, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(text) = complete_response(&received) {
            return text;
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => received.extend_from_slice(&buf[..n]),
            _ => return String::from_utf8_lossy(&received).into_owned(),
        }
    }
}

fn complete_response(received: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(received);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let length: usize = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())
            .flatten()
    })?;
    (body.len() >= length).then(|| text.into_owned())
}
