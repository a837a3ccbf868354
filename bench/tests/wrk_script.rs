//! The generated wrk script against a tiny local HTTP server: the per-thread counters add up
//! exactly (200s, non-2xx, statuses), and a draining run leaves nothing in flight, so what the
//! server answered equals what wrk counted: the "no lost rows" check depends on both.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bench::wrk::{Load, Plan, run};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Answers `GET /ok...` with 200 and anything else with 404 after `latency`; keeps
/// connections alive and counts every answer it wrote.
async fn serve(listener: tokio::net::TcpListener, latency: Duration, answered: Arc<AtomicU64>) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            return;
        };
        let answered = answered.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            let mut pending = Vec::new();
            loop {
                let n = match sock.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                pending.extend_from_slice(&buf[..n]);
                while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                    let request: Vec<u8> = pending.drain(..end + 4).collect();
                    let ok = request.starts_with(b"GET /ok");
                    let authed = String::from_utf8_lossy(&request).contains("Bearer t");
                    let status = if ok && authed {
                        "200 OK"
                    } else {
                        "404 Not Found"
                    };
                    let reply = format!("HTTP/1.1 {status}\r\nContent-Length: 2\r\n\r\nhi");
                    tokio::time::sleep(latency).await;
                    if sock.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                    answered.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
    }
}

/// Whether wrk can run here; the only tests of the counting behind "the number of 200s is
/// exact" must not skip in CI (.ci/run installs wrk).
fn wrk_available() -> bool {
    if let Err(why) = std::process::Command::new("wrk").arg("--version").output() {
        if shared::config::running_in_ci() {
            panic!("wrk is required with CI=true but cannot be run: {why}");
        }
        eprintln!("SKIPPED: wrk cannot be run ({why}); scripts/bench.sh installs it");
        return false;
    }
    true
}

/// A local server answering after `latency`, its URL and its count of answers written.
async fn spawn_server(latency: Duration) -> (String, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let answered = Arc::new(AtomicU64::new(0));
    tokio::spawn(serve(listener, latency, answered.clone()));
    (url, answered)
}

fn mixed_plan() -> Plan {
    Plan {
        method: "GET",
        targets: vec!["/ok/a".into(), "/ok/b".into(), "/missing".into()],
        tokens: vec!["t1".into(), "t2".into()],
        bodies: vec![],
        pause_ms: None,
    }
}

#[tokio::test]
async fn counters_from_every_thread_add_up() {
    if !wrk_available() {
        return;
    }
    let (url, _answered) = spawn_server(Duration::ZERO).await;
    let dir = std::env::temp_dir();
    let plan = mixed_plan();
    let load = Load {
        threads: 2,
        connections: 4,
        duration: Duration::from_secs(1),
        timeout: Duration::from_secs(2),
        drain: None,
    };
    let r = run(&url, &plan, load, &dir).await.expect("wrk runs");

    assert!(r.requests > 30, "{r:?}");
    assert_eq!(r.ok + r.non2xx, r.requests, "{r:?}");
    assert_eq!(r.statuses.values().sum::<u64>(), r.requests, "{r:?}");
    assert_eq!(r.statuses.get("200").copied().unwrap_or(0), r.ok);
    // One target in three is missing, whatever the thread's starting offset.
    let share = r.non2xx as f64 / r.requests as f64;
    assert!((0.25..0.42).contains(&share), "404 share {share}: {r:?}");
    // Without a drain, at most one request per connection is cut off when wrk stops, and
    // none is counted as sent without having been sent.
    assert!(r.sent >= r.requests && r.abandoned() <= 4, "{r:?}");
    assert_eq!(r.errors(), r.non2xx, "{r:?}");
}

#[tokio::test]
async fn a_drained_run_leaves_nothing_in_flight_and_counts_every_answer() {
    if !wrk_available() {
        return;
    }
    // Slow enough that requests are always in flight when the window closes: cutting them
    // off (as wrk does on its own) would leave the server with answers wrk never counted.
    let (url, answered) = spawn_server(Duration::from_millis(20)).await;
    let load = Load {
        threads: 2,
        connections: 8,
        duration: Duration::from_millis(1500),
        timeout: Duration::from_secs(2),
        drain: Some(Duration::from_millis(1000)),
    };

    let r = run(&url, &mixed_plan(), load, &std::env::temp_dir())
        .await
        .expect("wrk runs");

    // Let the server finish writing anything it still had (nothing, if the drain worked).
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(r.abandoned(), 0, "nothing cut off: {r:?}");
    assert_eq!(r.sent, r.requests, "{r:?}");
    assert_eq!(
        answered.load(Ordering::SeqCst),
        r.requests,
        "the server answered exactly what wrk counted: {r:?}"
    );
    assert_eq!(r.ok + r.non2xx, r.requests, "{r:?}");
    // wrk ran on through the drain (whole seconds: 3 s), but throughput is counted over the
    // 1.5 s window only; at most one answer per connection lands after it.
    assert!(r.duration_us >= 2.9e6, "{r:?}");
    let window = r.window_requests.expect("a drained run reports its window");
    assert!(window <= r.requests && window + 8 >= r.requests, "{r:?}");
    assert_eq!(r.duration_s(), 1.5);
    assert_eq!(r.rps(), window as f64 / 1.5);
    // 8 connections at >= 20 ms a request cannot exceed 400/s.
    assert!(r.rps() <= 400.0, "rps {}: {r:?}", r.rps());
}
