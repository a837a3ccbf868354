//! The generated wrk script against a tiny local HTTP server: the per-thread counters add up
//! exactly (200s, non-2xx, statuses), which the "no lost rows" check depends on.

use std::time::Duration;

use bench::wrk::{Load, Plan, run};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Answers `GET /ok...` with 200 and anything else with 404; keeps connections alive.
async fn serve(listener: tokio::net::TcpListener) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            return;
        };
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
                    if sock.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
}

#[tokio::test]
async fn counters_from_every_thread_add_up() {
    if let Err(why) = std::process::Command::new("wrk").arg("--version").output() {
        // The only test of the counting behind "the number of 200s is exact": CI must run it
        // (.ci/run installs wrk).
        if shared::config::running_in_ci() {
            panic!("wrk is required with CI=true but cannot be run: {why}");
        }
        eprintln!("SKIPPED: wrk cannot be run ({why}); scripts/bench.sh installs it");
        return;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(serve(listener));
    let dir = std::env::temp_dir();
    let plan = Plan {
        method: "GET",
        targets: vec!["/ok/a".into(), "/ok/b".into(), "/missing".into()],
        tokens: vec!["t1".into(), "t2".into()],
        bodies: vec![],
        pause_ms: None,
    };
    let load = Load {
        threads: 2,
        connections: 4,
        duration: Duration::from_secs(1),
        timeout: Duration::from_secs(2),
    };
    let r = run(&url, &plan, load, &dir).await.expect("wrk runs");

    assert!(r.requests > 30, "{r:?}");
    assert_eq!(r.ok + r.non2xx, r.requests, "{r:?}");
    assert_eq!(r.statuses.values().sum::<u64>(), r.requests, "{r:?}");
    assert_eq!(r.statuses.get("200").copied().unwrap_or(0), r.ok);
    // One target in three is missing, whatever the thread's starting offset.
    let share = r.non2xx as f64 / r.requests as f64;
    assert!((0.25..0.42).contains(&share), "404 share {share}: {r:?}");
    // At most about one request per connection is cut off when wrk stops (a reconnect can
    // generate one more), and none is counted as sent without having been generated.
    assert!(r.sent >= r.requests && r.abandoned() <= 8, "{r:?}");
    assert_eq!(r.errors(), r.non2xx, "{r:?}");
}
