//! The AMQP transport against the real local RabbitMQ, with a tiny responder (in `common`)
//! playing the quote service: correlation, 1000 concurrent calls on one channel,
//! single-flight, fast failure without consumers or queue, and timeouts.
//!
//! Every test uses its own randomly named queue. Without a reachable broker the tests print
//! why and pass, except in CI (`CI=true`), where that is a failure. The reconnection test
//! also needs `rabbitmqctl` (same rule) and finds the transport's connection by the
//! `connection_name` it sets; a listing without it is always a failure. Tests wait for the
//! event they need (a poll, a consumer, a delivery), never a fixed time.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use api_service::transport::{
    AmqpConfig, AmqpTransport, QuoteTransport, SingleFlight, TransportError,
};
use common::{Mode, Responder, amqp_url, broker, declare, delete, sym, unique_queue, wait_until};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use shared::ErrorCode;

async fn transport(queue: &str, timeout: Duration) -> AmqpTransport {
    AmqpTransport::start(AmqpConfig {
        url: amqp_url(),
        queue: queue.to_owned(),
        rpc_timeout: timeout,
    })
    .await
}

#[tokio::test]
async fn replies_reach_their_callers_with_request_metadata() {
    let Some(admin) = broker().await else { return };
    let queue = unique_queue();
    let responder = Responder::start(&queue, Mode::Echo { max_delay_ms: 50 }).await;
    let t = transport(&queue, Duration::from_secs(3)).await;
    assert!(t.is_ready(), "{}", t.readiness_detail());
    assert_eq!(t.consumer_count(), 1);

    let quote = t.get_quote(&sym("s7"), "req-seven").await.unwrap();
    assert_eq!(quote.symbol, "S7");
    assert_eq!(quote.close, 7.0);
    assert_eq!(
        responder.seen.request_ids.lock().unwrap().as_slice(),
        ["req-seven"]
    );
    assert!(
        responder.seen.expirations.lock().unwrap().contains("3000"),
        "expiration = RPC timeout in ms"
    );
    assert_eq!(responder.seen.deadlines_ok.load(Ordering::SeqCst), 1);
    assert_eq!(t.pending_calls(), 0);

    t.shutdown().await;
    responder.stop().await;
    delete(&admin, &queue).await;
}

#[tokio::test]
async fn typed_errors_from_the_worker_come_through() {
    let Some(admin) = broker().await else { return };
    let queue = unique_queue();
    let responder = Responder::start(&queue, Mode::NotFound).await;
    let t = transport(&queue, Duration::from_secs(3)).await;
    match t.get_quote(&sym("xxxx.us"), "r").await {
        Err(TransportError::Quote(q)) => assert_eq!(q.code, ErrorCode::NotFound),
        other => panic!("expected not_found, got {other:?}"),
    }
    t.shutdown().await;
    responder.stop().await;
    delete(&admin, &queue).await;
}

#[tokio::test]
async fn a_thousand_concurrent_calls_share_one_channel_and_stay_correlated() {
    let Some(admin) = broker().await else { return };
    let queue = unique_queue();
    let responder = Responder::start(&queue, Mode::Echo { max_delay_ms: 100 }).await;
    let t = Arc::new(transport(&queue, Duration::from_secs(10)).await);
    let started = Instant::now();
    let calls: Vec<_> = (0..1000)
        .map(|i| {
            let t = t.clone();
            tokio::spawn(async move {
                let q = t.get_quote(&sym(&format!("s{i}")), &format!("r{i}")).await;
                (i, q)
            })
        })
        .collect();
    for call in calls {
        let (i, result) = call.await.unwrap();
        let quote = result.unwrap_or_else(|e| panic!("call {i} failed: {e}"));
        assert_eq!(quote.close, i as f64, "call {i} got someone else's reply");
        assert_eq!(quote.symbol, format!("S{i}"));
    }
    eprintln!("1000 concurrent calls in {:?}", started.elapsed());
    assert_eq!(responder.seen.messages.load(Ordering::SeqCst), 1000);
    assert_eq!(t.pending_calls(), 0);
    t.shutdown().await;
    responder.stop().await;
    delete(&admin, &queue).await;
}

#[tokio::test]
async fn identical_concurrent_calls_send_one_message() {
    let Some(admin) = broker().await else { return };
    let queue = unique_queue();
    // The reply takes 300 ms, so all 50 callers arrive while the first call is in the air.
    let responder = Responder::start(&queue, Mode::Slow { delay_ms: 300 }).await;
    let inner = Arc::new(transport(&queue, Duration::from_secs(3)).await);
    let sf = Arc::new(SingleFlight::new(inner.clone()));
    let calls: Vec<_> = (0..50)
        .map(|i| {
            let sf = sf.clone();
            tokio::spawn(async move { sf.get_quote(&sym("s5"), &format!("r{i}")).await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap().close, 5.0);
    }
    assert_eq!(responder.seen.messages.load(Ordering::SeqCst), 1);
    // Once landed, the next call is a new flight.
    sf.get_quote(&sym("s5"), "again").await.unwrap();
    assert_eq!(responder.seen.messages.load(Ordering::SeqCst), 2);
    inner.shutdown().await;
    responder.stop().await;
    delete(&admin, &queue).await;
}

#[tokio::test]
async fn queue_without_consumer_fails_fast() {
    let Some(admin) = broker().await else { return };
    let queue = unique_queue();
    declare(&admin, &queue).await;
    let t = transport(&queue, Duration::from_secs(5)).await;
    assert!(!t.is_ready());
    let started = Instant::now();
    match t.get_quote(&sym("aapl.us"), "r").await {
        Err(TransportError::Unavailable(reason)) => {
            assert!(reason.contains("no quote worker"), "{reason}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(t.readiness_detail().contains("no quote worker"));
    t.shutdown().await;
    delete(&admin, &queue).await;
}

/// Started before any worker: the transport declares the queue as the quote service does
/// (so the worker can consume it when it comes), refuses calls at once, and logs no error -
/// the broker never has to refuse a question about a missing queue.
#[tokio::test]
async fn missing_queue_is_declared_and_calls_fail_fast_without_error_logs() {
    let Some(admin) = broker().await else { return };
    let errors = ErrorLog::install();
    let queue = unique_queue();
    let t = transport(&queue, Duration::from_secs(5)).await;
    let started = Instant::now();
    match t.get_quote(&sym("aapl.us"), "r").await {
        Err(TransportError::Unavailable(reason)) => {
            assert!(reason.contains("no quote worker"), "{reason}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(1));
    let seen = t.polls();
    wait_until(
        "two more polls of the queue",
        Duration::from_secs(5),
        async || t.polls() >= seen + 2,
    )
    .await;
    assert!(t.is_connected());
    assert!(
        t.readiness_detail().contains("no quote worker"),
        "{}",
        t.readiness_detail()
    );
    assert_eq!(errors.mentioning(&queue), Vec::<String>::new());

    // The queue exists now, durable and without arguments, exactly as the quote service
    // declares it: its own declaration succeeds.
    let channel = admin.create_channel().await.unwrap();
    let declared = channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("the quote service's declaration matches the API's");
    assert_eq!(declared.consumer_count(), 0);
    t.shutdown().await;
    delete(&admin, &queue).await;
}

/// A queue declared with other properties (here the test helpers' non-durable, expiring
/// queue) cannot be declared our way: the transport says so once and then only looks at it.
/// Also shows the error capture works: the broker's refusal is logged by lapin at ERROR.
#[tokio::test]
async fn differently_declared_queue_is_polled_passively() {
    let Some(admin) = broker().await else { return };
    let errors = ErrorLog::install();
    let queue = unique_queue();
    let responder = Responder::start(&queue, Mode::Echo { max_delay_ms: 0 }).await;
    let t = transport(&queue, Duration::from_secs(5)).await;
    assert!(t.is_ready(), "{}", t.readiness_detail());
    assert_eq!(t.consumer_count(), 1);
    let quote = t.get_quote(&sym("s7"), "r").await.unwrap();
    assert_eq!(quote.close, 7.0);
    let seen = t.polls();
    wait_until(
        "two more (passive) polls of the queue",
        Duration::from_secs(5),
        async || t.polls() >= seen + 2,
    )
    .await;
    let logged = errors.mentioning(&queue);
    assert!(
        logged.len() == 1 && logged[0].contains("PRECONDITION"),
        "one refusal, then passive polls: {logged:?}"
    );
    t.shutdown().await;
    responder.stop().await;
    delete(&admin, &queue).await;
}

/// ERROR events of this test process, from every thread (lapin logs from its own tasks).
/// One collector per process; tests pick the events that name their own queue, so tests
/// running side by side under `cargo test` do not see each other's.
struct ErrorLog;

impl ErrorLog {
    fn install() -> Self {
        ERRORS.get_or_init(|| {
            use tracing_subscriber::layer::SubscriberExt;
            let events = Arc::new(std::sync::Mutex::new(Vec::new()));
            let subscriber = tracing_subscriber::registry().with(Collect(Arc::clone(&events)));
            tracing::subscriber::set_global_default(subscriber)
                .expect("no other global subscriber in this test binary");
            events
        });
        ErrorLog
    }

    /// The events so far that mention `queue`.
    fn mentioning(&self, queue: &str) -> Vec<String> {
        let events = ERRORS.get().expect("installed").lock().unwrap();
        events
            .iter()
            .filter(|e| e.contains(queue))
            .cloned()
            .collect()
    }
}

static ERRORS: std::sync::OnceLock<Arc<std::sync::Mutex<Vec<String>>>> = std::sync::OnceLock::new();

struct Collect(Arc<std::sync::Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Collect {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if *event.metadata().level() == tracing::Level::ERROR {
            let mut text = format!("{}:", event.metadata().target());
            event.record(
                &mut |field: &tracing::field::Field, value: &dyn std::fmt::Debug| {
                    text.push_str(&format!(" {}={value:?}", field.name()));
                },
            );
            self.0.lock().unwrap().push(text);
        }
    }
}

#[tokio::test]
async fn readiness_follows_the_consumer() {
    let Some(admin) = broker().await else { return };
    let queue = unique_queue();
    declare(&admin, &queue).await;
    let t = transport(&queue, Duration::from_secs(5)).await;
    assert!(!t.is_ready());

    let responder = Responder::start(&queue, Mode::Echo { max_delay_ms: 0 }).await;
    wait_until(
        "the transport to see the consumer",
        Duration::from_secs(2),
        async || t.is_ready(),
    )
    .await;
    t.get_quote(&sym("s1"), "r").await.unwrap();

    responder.stop().await;
    wait_until(
        "the transport to see the consumer gone",
        Duration::from_secs(2),
        async || !t.is_ready(),
    )
    .await;
    let started = Instant::now();
    assert!(matches!(
        t.get_quote(&sym("s1"), "r").await,
        Err(TransportError::Unavailable(_))
    ));
    assert!(started.elapsed() < Duration::from_secs(1));
    t.shutdown().await;
    delete(&admin, &queue).await;
}

#[tokio::test]
async fn silent_worker_times_out_and_leaves_no_pending_entry() {
    let Some(admin) = broker().await else { return };
    let queue = unique_queue();
    let responder = Responder::start(&queue, Mode::Silent).await;
    let t = transport(&queue, Duration::from_millis(700)).await;
    let started = Instant::now();
    let result = t.get_quote(&sym("aapl.us"), "r").await;
    let elapsed = started.elapsed();
    assert_eq!(result, Err(TransportError::Timeout));
    assert!(
        elapsed >= Duration::from_millis(650) && elapsed < Duration::from_millis(1500),
        "{elapsed:?}"
    );
    assert_eq!(t.pending_calls(), 0);
    t.shutdown().await;
    responder.stop().await;
    delete(&admin, &queue).await;
}

#[tokio::test]
async fn unreachable_broker_means_unavailable_not_a_hang() {
    // Nothing listens on port 1.
    let t = AmqpTransport::start(AmqpConfig {
        url: "amqp://guest:guest@127.0.0.1:1/%2f".into(),
        queue: unique_queue(),
        rpc_timeout: Duration::from_secs(5),
    })
    .await;
    assert!(!t.is_ready());
    assert!(!t.is_connected());
    let started = Instant::now();
    match t.get_quote(&sym("aapl.us"), "r").await {
        Err(TransportError::Unavailable(reason)) => {
            assert!(reason.contains("not connected"), "{reason}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_millis(100));
    t.shutdown().await;
}

#[tokio::test]
async fn queue_deleted_between_polls_is_reported_by_basic_return() {
    let Some(admin) = broker().await else { return };
    let queue = unique_queue();
    let responder = Responder::start(&queue, Mode::Echo { max_delay_ms: 0 }).await;
    let t = transport(&queue, Duration::from_secs(5)).await;
    assert!(t.is_ready());
    // Deleting the queue cancels the responder's consumer; the transport still believes a
    // consumer exists until its next poll, so this publish is returned as unroutable.
    delete(&admin, &queue).await;
    let started = Instant::now();
    match t.get_quote(&sym("s1"), "r").await {
        Err(TransportError::Unavailable(reason)) => eprintln!("refused: {reason}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(1));
    t.shutdown().await;
    responder.stop().await;
}

/// Why the broker's connection list could not be read here (no rabbitmqctl, or no rights).
struct NoRabbitmqctl(String);

/// Closes the connection whose client properties carry `name` (the transport's
/// `connection_name`), as a broker restart or network failure would. Err only when
/// `rabbitmqctl` cannot be used here; a listing without our connection fails the test, since
/// the transport promises operators its name in exactly that listing.
fn close_connection_named(name: &str) -> Result<(), NoRabbitmqctl> {
    // rabbitmqctl's table shows client properties as `{"connection_name","api_service …"}`.
    let property = format!(r#"{{"connection_name","{name}"}}"#);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let pid = loop {
        let listing = rabbitmqctl(&[
            "list_connections",
            "--no-table-headers",
            "pid",
            "client_properties",
        ])?;
        let ours = listing
            .lines()
            .filter_map(|line| line.split_once('\t'))
            .find(|(_, properties)| properties.contains(&property));
        if let Some((pid, _)) = ours {
            break pid.to_owned();
        }
        // A connection is listed once its handshake is done; allow for a slow broker.
        assert!(
            std::time::Instant::now() < deadline,
            "no connection with {property} in the broker's list:\n{listing}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let closed = rabbitmqctl(&["close_connection", &pid, "reconnection test"]);
    if let Err(NoRabbitmqctl(why)) = closed {
        panic!("the listing named our connection {pid}, but closing it failed: {why}");
    }
    Ok(())
}

/// Runs `rabbitmqctl -q ARGS`; its stdout, or why it cannot be used here.
fn rabbitmqctl(args: &[&str]) -> Result<String, NoRabbitmqctl> {
    let out = std::process::Command::new("rabbitmqctl")
        .arg("-q")
        .args(args)
        .output()
        .map_err(|e| NoRabbitmqctl(format!("cannot run rabbitmqctl: {e}")))?;
    if !out.status.success() {
        return Err(NoRabbitmqctl(format!(
            "rabbitmqctl {} failed ({}): {}",
            args[0],
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test]
async fn lost_connection_fails_waiting_calls_at_once_and_reconnects() {
    let Some(admin) = broker().await else { return };
    let queue = unique_queue();
    // The stalled call can end only when the link dies (or after 60 s): a slow rabbitmqctl on
    // a loaded machine must not let a reply win the race (it did with a 3 s reply delay).
    let responder = Responder::start(&queue, Mode::StallOn { symbol: "s3" }).await;
    let t = Arc::new(transport(&queue, Duration::from_secs(60)).await);
    assert!(t.is_ready());

    let waiting = {
        let t = t.clone();
        tokio::spawn(async move { t.get_quote(&sym("s3"), "r").await })
    };
    wait_until(
        "the call to reach the worker",
        Duration::from_secs(5),
        async || responder.seen.messages.load(Ordering::SeqCst) == 1,
    )
    .await;
    let name = t.connection_name().to_owned();
    if let Err(NoRabbitmqctl(why)) =
        tokio::task::spawn_blocking(move || close_connection_named(&name))
            .await
            .unwrap()
    {
        if shared::config::running_in_ci() {
            panic!("CI=true: this test must close a connection with rabbitmqctl: {why}");
        }
        eprintln!("SKIPPED: {why}");
        t.shutdown().await;
        responder.stop().await;
        delete(&admin, &queue).await;
        return;
    }
    let started = Instant::now();
    match waiting.await.unwrap() {
        Err(TransportError::Unavailable(reason)) => eprintln!("in-flight call failed: {reason}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "in-flight call must fail when the link dies, not at its timeout"
    );
    wait_until(
        "the transport to reconnect",
        Duration::from_secs(10),
        async || t.is_ready(),
    )
    .await;
    assert_eq!(t.get_quote(&sym("s4"), "r").await.unwrap().close, 4.0);
    t.shutdown().await;
    responder.stop().await;
    delete(&admin, &queue).await;
}
