//! The real binary under real signals. The other suites stop an in-process `Application` with
//! its shutdown token, which cannot show what a dead process leaves behind or whether the
//! SIGTERM handler is actually installed. Here the worker runs as a child process:
//!
//! - SIGKILL mid-load: nothing is acked before its reply is published, so every request comes
//!   back to the queue and a successor answers it; requests whose caller gave up meanwhile are
//!   dropped by the successor without an upstream fetch.
//! - SIGTERM under load: requests being worked on are finished, the rest stay in the queue for
//!   a successor, and the process exits 0 within SHUTDOWN_GRACE.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::Duration;

use common::RpcClient;
use fake_stooq::{FakeConfig, FakeStooq};
use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use shared::{QuoteReply, QuoteRequest};
use tokio::time::Instant;

/// Generous: a cold process start on a loaded 2-core machine.
const START_LIMIT: Duration = Duration::from_secs(20);
/// How long replies that must come may take to arrive.
const REPLY_LIMIT: Duration = Duration::from_secs(30);
/// Deadline of the requests that must be answered: far beyond the test's restarts.
const LONG_DEADLINE: Duration = Duration::from_secs(20);

/// A worker process. Dropping it SIGKILLs and reaps it, so a failing test leaves no orphan.
struct Worker {
    child: Child,
    /// Where its `/metrics` is: the process binds port 0 and says which port it got.
    http_addr: SocketAddr,
}

impl Worker {
    /// Starts the `quote_service` binary against `fake` on `queue`, with `extra` env on top,
    /// and waits for it to announce its HTTP address.
    async fn spawn(fake: &FakeStooq, queue: &str, extra: &[(&str, &str)]) -> Worker {
        let mut command = Command::new(env!("CARGO_BIN_EXE_quote_service"));
        command
            .env("QUOTE_TRANSPORT", "amqp")
            .env("AMQP_URL", common::amqp_url())
            .env("QUOTE_QUEUE", queue)
            .env("QUOTE_HTTP_ADDR", "127.0.0.1:0")
            .env("STOOQ_URL", fake.url())
            .env_remove("STOOQ_API_KEY")
            .env("CACHE_TTL", "0")
            // Warnings, plus the start-up line that carries the bound address, as JSON.
            .env("RUST_LOG", "warn,quote_service::startup=info")
            .env("LOG_FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        for (key, value) in extra {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("the quote_service binary starts");
        let announced = announced_addr(child.stdout.take().expect("piped stdout"));
        let mut worker = Worker {
            child,
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        worker.http_addr = match tokio::time::timeout(START_LIMIT, announced).await {
            Ok(Ok(addr)) => addr,
            Ok(Err(_)) => panic!(
                "the worker's output ended without its address (exit: {:?})",
                worker.child.try_wait()
            ),
            Err(_) => panic!("the worker did not announce its address within {START_LIMIT:?}"),
        };
        worker
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, then reap: once this returns the process is gone and its TCP connections are
    /// closed, so the broker has requeued whatever it held.
    fn kill_9(&mut self) {
        self.child.kill().expect("SIGKILL the worker");
        self.child.wait().expect("reap the worker");
    }

    fn sigterm(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .expect("run kill -TERM");
        assert!(status.success(), "kill -TERM {} failed", self.pid());
    }

    /// The exit status once the process has exited, or `None` if it is still running after
    /// `limit`.
    async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        shared::test_support::poll::wait_exit(&mut self.child, limit).await
    }

    /// Polls until the queue has a consumer (the worker's), failing at once if the worker
    /// died instead.
    async fn wait_consuming(&mut self, client: &RpcClient, queue: &str) {
        let until = Instant::now() + START_LIMIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("the worker exited before consuming: {status}");
            }
            if consumer_count(client, queue).await > 0 {
                return;
            }
            assert!(
                Instant::now() < until,
                "the worker did not consume from {queue} within {START_LIMIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `quote_rpc_messages_total{outcome="expired"}` as the worker's `/metrics` reports it.
    async fn expired_count(&self) -> u64 {
        let url = format!("http://{}/metrics", self.http_addr);
        let text = reqwest::get(&url)
            .await
            .and_then(reqwest::Response::error_for_status)
            .expect("/metrics answers")
            .text()
            .await
            .expect("/metrics body");
        text.lines()
            .find_map(|l| l.strip_prefix(r#"quote_rpc_messages_total{outcome="expired"} "#))
            .map_or(0, |n| n.trim().parse().expect("a counter value"))
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Deletes the test's durable queue when dropped, even if the test panicked.
struct QueueCleanup(String);

impl Drop for QueueCleanup {
    fn drop(&mut self) {
        let queue = self.0.clone();
        // Drop cannot await; a throwaway runtime on its own thread can.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let _ = tokio::time::timeout(Duration::from_secs(5), async {
                    let conn =
                        Connection::connect(&common::amqp_url(), ConnectionProperties::default())
                            .await?;
                    let channel = conn.create_channel().await?;
                    channel
                        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                        .await?;
                    conn.close(200, "test done".into()).await
                })
                .await;
            });
        })
        .join();
    }
}

fn test_queue() -> String {
    format!("quotes.rpc.test.{}", uuid::Uuid::new_v4().simple())
}

/// The address in the worker's JSON start-up line (`"fields":{"addr":…}`), read from its
/// stdout on a thread that passes every line on to ours and drains the pipe to the end.
fn announced_addr(stdout: ChildStdout) -> tokio::sync::oneshot::Receiver<SocketAddr> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("worker: {line}");
            let addr = serde_json::from_str::<serde_json::Value>(&line)
                .ok()
                .and_then(|event| event["fields"]["addr"].as_str()?.parse().ok());
            if let Some(addr) = addr
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(addr);
            }
        }
    });
    rx
}

/// Consumers on `queue`. Declares it exactly as the worker does (durable, no arguments), which
/// is idempotent and, unlike a passive declare, does not close the channel if the queue does
/// not exist yet.
async fn consumer_count(client: &RpcClient, queue: &str) -> u32 {
    client
        .channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declare the test queue")
        .consumer_count()
}

/// Replies received, by correlation id (the tests use the symbol as correlation id).
type Tally = HashMap<String, Vec<QuoteReply>>;

/// Collects replies into `tally` until `done(tally)` holds (returns true) or `limit` passes
/// (returns false). With `done = |_| false` it simply collects for `limit`.
async fn collect(
    client: &mut RpcClient,
    tally: &mut Tally,
    done: impl Fn(&Tally) -> bool,
    limit: Duration,
) -> bool {
    let until = Instant::now() + limit;
    loop {
        if done(tally) {
            return true;
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        if let Some(received) = client
            .next_reply(left.min(Duration::from_millis(200)))
            .await
        {
            tally
                .entry(received.correlation_id.unwrap_or_default())
                .or_default()
                .push(received.reply);
        }
    }
}

/// Collects whatever replies arrive within `limit`.
async fn linger(client: &mut RpcClient, tally: &mut Tally, limit: Duration) {
    collect(client, tally, |_| false, limit).await;
}

fn replies(tally: &Tally, id: &str) -> usize {
    tally.get(id).map_or(0, Vec::len)
}

/// Every reply for `id` is a successful quote of that symbol.
fn assert_quotes(tally: &Tally, id: &str) {
    for reply in tally.get(id).into_iter().flatten() {
        let quote = reply
            .clone()
            .into_result()
            .unwrap_or_else(|e| panic!("{id}: error reply {e}"));
        assert_eq!(quote.symbol, id.to_ascii_uppercase());
    }
}

/// Polls `cond` every 10 ms up to `limit`; true once it holds.
async fn eventually(limit: Duration, cond: impl Fn() -> bool) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cond()
}

#[tokio::test]
async fn sigkill_mid_load_loses_no_request_and_never_fetches_expired_ones() {
    // Callers that give up quickly; the restart happens only after they have.
    const SHORT_DEADLINE: Duration = Duration::from_secs(2);
    if !common::rabbitmq_available().await {
        return;
    }
    let started = Instant::now();
    // The latency keeps every request in flight (fetched, unanswered, unacked) at the kill.
    let fake = FakeStooq::start_with(FakeConfig {
        latency: Duration::from_millis(300),
        ..FakeConfig::default()
    })
    .await;
    let queue = test_queue();
    let _cleanup = QueueCleanup(queue.clone());
    let mut client = RpcClient::connect().await;
    let mut first = Worker::spawn(&fake, &queue, &[]).await;
    first.wait_consuming(&client, &queue).await;
    let long: Vec<String> = (0..20).map(|i| format!("long{i}.us")).collect();
    let short: Vec<String> = (0..5).map(|i| format!("short{i}.us")).collect();

    for symbol in &long {
        let request = QuoteRequest::new(symbol, None, LONG_DEADLINE);
        client.send(&queue, &request, symbol).await;
    }
    for symbol in &short {
        let request = QuoteRequest::new(symbol, None, SHORT_DEADLINE);
        client.send(&queue, &request, symbol).await;
    }
    // Every short deadline (wall clock) has passed by then, with a margin for clock reads.
    let short_expired_at = Instant::now() + SHORT_DEADLINE + Duration::from_millis(300);
    let all_in_flight = eventually(Duration::from_secs(10), || {
        long.iter().chain(&short).all(|s| fake.symbol_hits(s) > 0)
    })
    .await;
    assert!(
        all_in_flight,
        "the first worker never fetched every request: {:?}",
        fake.requests()
    );
    first.kill_9();
    let mut before = Tally::new();
    let wait = short_expired_at.saturating_duration_since(Instant::now());
    linger(&mut client, &mut before, wait).await;
    let short_hits_at_restart: Vec<u64> = short.iter().map(|s| fake.symbol_hits(s)).collect();
    let mut second = Worker::spawn(&fake, &queue, &[]).await;
    second.wait_consuming(&client, &queue).await;
    let mut after = Tally::new();
    let all_answered = collect(
        &mut client,
        &mut after,
        |after| {
            long.iter()
                .all(|id| replies(&before, id) + replies(after, id) > 0)
        },
        REPLY_LIMIT,
    )
    .await;
    // Short requests the first worker did not answer cannot have been acked by it either, so
    // each must reach the second worker and be dropped there as expired.
    let must_expire = short.iter().filter(|id| replies(&before, id) == 0).count() as u64;
    let mut expired = second.expired_count().await;
    let until = Instant::now() + Duration::from_secs(10);
    while expired < must_expire && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
        expired = second.expired_count().await;
    }
    // Give a stray late reply (a duplicate, or an expired request wrongly answered) a chance.
    linger(&mut client, &mut after, Duration::from_millis(500)).await;
    let short_hits_now: Vec<u64> = short.iter().map(|s| fake.symbol_hits(s)).collect();

    let missing: Vec<&String> = long
        .iter()
        .filter(|id| replies(&before, id) + replies(&after, id) == 0)
        .collect();
    assert!(
        all_answered && missing.is_empty(),
        "requests lost to the SIGKILL: {missing:?}"
    );
    for id in &long {
        assert!(
            replies(&before, id) <= 1 && replies(&after, id) <= 1,
            "{id}: answered {} times before and {} after the restart",
            replies(&before, id),
            replies(&after, id)
        );
        assert_quotes(&before, id);
        assert_quotes(&after, id);
    }
    for id in &short {
        assert_eq!(
            replies(&after, id),
            0,
            "{id}: an expired request was answered after the restart"
        );
    }
    assert_eq!(
        short_hits_now, short_hits_at_restart,
        "expired requests were fetched upstream after the restart"
    );
    assert!(
        must_expire > 0,
        "the first worker answered every short request before the kill; nothing was tested"
    );
    assert!(
        (must_expire..=short.len() as u64).contains(&expired),
        "the second worker dropped {expired} expired requests, expected {must_expire}..={}",
        short.len()
    );
    let duplicates = long
        .iter()
        .filter(|id| replies(&before, id) + replies(&after, id) > 1)
        .count();
    eprintln!(
        "sigkill: {} answered by the first worker, {} by the second ({duplicates} twice), \
         {expired} expired dropped unfetched; took {:?}",
        before.len(),
        after.len(),
        started.elapsed()
    );
    drop(second);
}

#[tokio::test]
async fn sigterm_under_load_finishes_in_flight_requests_and_exits_zero() {
    const GRACE: Duration = Duration::from_secs(5);
    if !common::rabbitmq_available().await {
        return;
    }
    let started = Instant::now();
    let fake = FakeStooq::start_with(FakeConfig {
        latency: Duration::from_millis(500),
        ..FakeConfig::default()
    })
    .await;
    let queue = test_queue();
    let _cleanup = QueueCleanup(queue.clone());
    let mut client = RpcClient::connect().await;
    // A prefetch of 4 keeps most of the 20 requests in the queue when the signal comes, so
    // both halves are exercised: finishing in-flight work and leaving the rest for a successor.
    let mut first = Worker::spawn(
        &fake,
        &queue,
        &[("SHUTDOWN_GRACE", "5s"), ("WORKER_CONCURRENCY", "4")],
    )
    .await;
    first.wait_consuming(&client, &queue).await;
    let symbols: Vec<String> = (0..20).map(|i| format!("term{i}.us")).collect();

    for symbol in &symbols {
        let request = QuoteRequest::new(symbol, None, LONG_DEADLINE);
        client.send(&queue, &request, symbol).await;
    }
    let fetching = eventually(Duration::from_secs(10), || fake.hits() > 0).await;
    assert!(fetching, "the first worker never fetched anything");
    let in_flight: BTreeSet<String> = fake.stats().symbol_hits.into_keys().collect();
    let signalled = Instant::now();
    first.sigterm();
    let status = first.wait_exit(GRACE + Duration::from_secs(2)).await;
    let exit_took = signalled.elapsed();
    let mut by_first = Tally::new();
    collect(
        &mut client,
        &mut by_first,
        |t| in_flight.iter().all(|id| replies(t, id) > 0),
        Duration::from_secs(5),
    )
    .await;
    linger(&mut client, &mut by_first, Duration::from_millis(500)).await;
    let left_for_successor = (symbols.len() - by_first.len()) as u32;
    let mut queued = client.ready_count(&queue).await;
    let until = Instant::now() + Duration::from_secs(5);
    while queued != left_for_successor && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
        queued = client.ready_count(&queue).await;
    }
    let mut second = Worker::spawn(&fake, &queue, &[]).await;
    second.wait_consuming(&client, &queue).await;
    let mut by_second = Tally::new();
    collect(
        &mut client,
        &mut by_second,
        |t| {
            symbols
                .iter()
                .all(|id| replies(&by_first, id) + replies(t, id) > 0)
        },
        REPLY_LIMIT,
    )
    .await;
    linger(&mut client, &mut by_second, Duration::from_millis(500)).await;

    let status = status.unwrap_or_else(|| {
        panic!("the worker was still running {exit_took:?} after SIGTERM (grace {GRACE:?})")
    });
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM: {status}"
    );
    let unfinished: Vec<&String> = in_flight
        .iter()
        .filter(|id| replies(&by_first, id) == 0)
        .collect();
    assert!(
        unfinished.is_empty(),
        "requests in flight at SIGTERM not answered before exit: {unfinished:?}"
    );
    assert_eq!(
        queued, left_for_successor,
        "after the exit the queue should hold exactly the unanswered requests"
    );
    for id in &symbols {
        let total = replies(&by_first, id) + replies(&by_second, id);
        assert_eq!(total, 1, "{id}: answered {total} times in all");
        assert_quotes(&by_first, id);
        assert_quotes(&by_second, id);
    }
    assert!(
        !by_second.is_empty(),
        "the first worker answered everything; the hand-over to a successor was not exercised"
    );
    eprintln!(
        "sigterm: {} in flight at the signal, {} answered by the first worker, {} left for \
         the second; exited 0 after {exit_took:?}; took {:?}",
        in_flight.len(),
        by_first.len(),
        by_second.len(),
        started.elapsed()
    );
    drop(second);
}
