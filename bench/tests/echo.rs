//! The echo baseline against the real local RabbitMQ: every call answered, none lost.

use std::time::Duration;

const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

async fn broker_or_skip() -> bool {
    let url = std::env::var("AMQP_URL").unwrap_or_else(|_| AMQP_URL.to_owned());
    match lapin::Connection::connect(&url, lapin::ConnectionProperties::default()).await {
        Ok(conn) => {
            let _ = conn.close(200, "probe".into()).await;
            true
        }
        Err(err) if !shared::config::running_in_ci() => {
            eprintln!("SKIPPED (RabbitMQ needed): {err}");
            false
        }
        Err(err) => panic!("RabbitMQ unreachable in CI: {err}"),
    }
}

#[tokio::test]
async fn echo_answers_every_call_over_direct_reply_to() {
    if !broker_or_skip().await {
        return;
    }
    let url = std::env::var("AMQP_URL").unwrap_or_else(|_| AMQP_URL.to_owned());
    let queue = format!("bench.test.echo.{}", uuid::Uuid::new_v4().simple());
    let server = {
        let (url, queue) = (url.clone(), queue.clone());
        tokio::spawn(async move { bench::echo::serve(&url, &queue, 16).await })
    };
    let result = bench::echo::load(
        &url,
        &queue,
        8,
        Duration::from_millis(1500),
        Duration::from_secs(5),
        false,
    )
    .await
    .expect("load runs");
    server.abort();
    bench::echo::delete_queue(&url, &queue)
        .await
        .expect("queue deleted");

    assert_eq!(result.errors, 0, "{result:?}");
    assert!(
        result.requests > 50,
        "only {} calls in 1.5 s",
        result.requests
    );
    assert!(result.p50_ms <= result.p99_ms && result.p99_ms <= result.max_ms);
    assert!(result.rps > 0.0);
}
