//! The RPC path: the single-message function directly, then end to end through the local
//! RabbitMQ (skipped outside CI when the broker is unreachable).

mod common;

use std::time::Duration;

use common::{RpcClient, TestApp, wait_until};
use fake_stooq::FakeStooq;
use lapin::BasicProperties;
use quote_service::rpc_server::{answer, answer_batch};
use shared::{
    BatchQuoteReply, BatchQuoteRequest, BatchResult, CONTRACT_VERSION, ErrorCode,
    MAX_BATCH_SYMBOLS, QuoteReply, QuoteRequest, QuoteResult, contract::now_ms,
};

const REPLY_WAIT: Duration = Duration::from_secs(5);

fn code(reply: &QuoteReply) -> Option<ErrorCode> {
    match &reply.result {
        QuoteResult::Ok { .. } => None,
        QuoteResult::Error { error } => Some(error.code),
    }
}

fn request(symbol: &str) -> QuoteRequest {
    QuoteRequest::new(symbol, Some("req-1".into()), Duration::from_secs(5))
}

// --- the single-message function, no broker -------------------------------------------

#[tokio::test]
async fn answer_gives_the_quote_for_a_valid_request() {
    let fake = FakeStooq::start().await;
    let service = common::quote_service(&fake, |_| {});
    let body = serde_json::to_vec(&request("aapl.us")).unwrap();

    let reply = answer(&service, &body).await.unwrap();

    assert_eq!(reply.into_result().unwrap().symbol, "AAPL.US");
}

#[tokio::test]
async fn answer_reports_bad_json_as_the_callers_fault() {
    let fake = FakeStooq::start().await;
    let service = common::quote_service(&fake, |_| {});

    let reply = answer(&service, b"{not json").await.unwrap();

    assert_eq!(code(&reply), Some(ErrorCode::BadRequest));
    assert_eq!(fake.hits(), 0);
}

#[tokio::test]
async fn answer_reports_an_unknown_contract_version_as_the_callers_fault() {
    let fake = FakeStooq::start().await;
    let service = common::quote_service(&fake, |_| {});
    let mut req = request("aapl.us");
    req.v = 99;

    let reply = answer(&service, &serde_json::to_vec(&req).unwrap())
        .await
        .unwrap();

    assert_eq!(code(&reply), Some(ErrorCode::BadRequest));
    assert!(reply.into_result().unwrap_err().message.contains("version"));
    assert_eq!(fake.hits(), 0);
}

#[tokio::test]
async fn answer_rejects_an_invalid_symbol_without_fetching() {
    let fake = FakeStooq::start().await;
    let service = common::quote_service(&fake, |_| {});

    let reply = answer(&service, &serde_json::to_vec(&request("a b")).unwrap())
        .await
        .unwrap();

    assert_eq!(code(&reply), Some(ErrorCode::InvalidSymbol));
    assert_eq!(fake.hits(), 0);
}

#[tokio::test]
async fn answer_drops_an_expired_request_without_fetching() {
    let fake = FakeStooq::start().await;
    let service = common::quote_service(&fake, |_| {});
    let mut req = request("aapl.us");
    req.deadline_ms = now_ms() - 1;

    let reply = answer(&service, &serde_json::to_vec(&req).unwrap()).await;

    assert!(reply.is_none());
    assert_eq!(fake.hits(), 0);
}

#[tokio::test]
async fn answer_survives_arbitrary_bytes_and_blames_the_caller() {
    let fake = FakeStooq::start().await;
    let service = common::quote_service(&fake, |_| {});

    for body in [
        &b""[..],
        b"\xff\xfe",
        b"null",
        b"[]",
        br#"{"v":1}"#,
        br#"{"v":1,"symbol":7,"deadline_ms":1}"#,
    ] {
        let reply = answer(&service, body).await.expect("an error reply");

        assert_eq!(code(&reply), Some(ErrorCode::BadRequest), "{body:?}");
    }
}

// --- the single-message function, version 2 (batches) -----------------------------------

fn batch_request(symbols: &[&str]) -> Vec<u8> {
    let request = BatchQuoteRequest::new(
        symbols.iter().copied(),
        Some("req-b".into()),
        Duration::from_secs(5),
    );
    serde_json::to_vec(&request).unwrap()
}

/// The per-symbol results of a version-2 reply, as `ok:SYMBOL` or the error code.
fn outcomes(reply: BatchQuoteReply) -> Vec<String> {
    assert_eq!(reply.v, 2, "a version-2 reply");
    let BatchResult::Ok { results } = reply.result else {
        panic!("the batch was refused as a whole: {reply:?}");
    };
    results
        .into_iter()
        .map(|r| match r {
            QuoteResult::Ok { quote } => format!("ok:{}", quote.symbol),
            QuoteResult::Error { error } => error.code.to_string(),
        })
        .collect()
}

fn refusal(reply: &BatchQuoteReply) -> Option<ErrorCode> {
    match &reply.result {
        BatchResult::Error { error } => Some(error.code),
        BatchResult::Ok { .. } => None,
    }
}

#[tokio::test]
async fn a_batch_of_twenty_symbols_costs_one_upstream_call() {
    let fake = FakeStooq::start().await;
    let service = common::quote_service(&fake, |s| s.batch_size = 50);
    let symbols: Vec<String> = (0..20).map(|i| format!("sym{i}.us")).collect();
    let refs: Vec<&str> = symbols.iter().map(String::as_str).collect();

    let reply = answer_batch(&service, &batch_request(&refs)).await.unwrap();

    let expected: Vec<String> = symbols
        .iter()
        .map(|s| format!("ok:{}", s.to_ascii_uppercase()))
        .collect();
    assert_eq!(outcomes(reply), expected, "one result per symbol, in order");
    assert_eq!(fake.hits(), 1);
    assert_eq!(fake.requests()[0].len(), 20);
}

#[tokio::test]
async fn a_batch_larger_than_batch_size_costs_one_call_per_batch_size_symbols() {
    let fake = FakeStooq::start().await;
    // No window: only the request's own grouping can keep its symbols together.
    let service = common::quote_service(&fake, |s| {
        s.batch_size = 3;
        s.batch_window = Duration::ZERO;
    });
    let refs = ["a.us", "b.us", "c.us", "d.us", "e.us", "f.us", "g.us"];

    let reply = answer_batch(&service, &batch_request(&refs)).await.unwrap();

    assert_eq!(outcomes(reply).len(), 7);
    let mut sizes: Vec<usize> = fake.requests().iter().map(Vec::len).collect();
    sizes.sort_unstable();
    assert_eq!(sizes, vec![1, 3, 3], "ceil(7 / 3) upstream calls");
}

#[tokio::test]
async fn a_batch_answers_each_symbol_with_its_own_outcome() {
    let fake = FakeStooq::start().await;
    let service = common::quote_service(&fake, |_| {});

    let reply = answer_batch(
        &service,
        &batch_request(&["aapl.us", "xxxx.us", "a b", "MSFT.US"]),
    )
    .await
    .unwrap();

    assert_eq!(
        outcomes(reply),
        ["ok:AAPL.US", "not_found", "invalid_symbol", "ok:MSFT.US"]
    );
    assert_eq!(fake.hits(), 1);
    assert_eq!(
        fake.symbol_hits("a b"),
        0,
        "the invalid symbol is never fetched"
    );
}

#[tokio::test]
async fn a_batch_of_symbols_that_all_fail_is_still_answered_per_symbol() {
    let fake = FakeStooq::start().await;
    let service = common::quote_service(&fake, |_| {});
    fake.set_mode(fake_stooq::Mode::Status(503));

    let reply = answer_batch(&service, &batch_request(&["aapl.us", "msft.us"]))
        .await
        .unwrap();

    assert_eq!(
        outcomes(reply),
        ["upstream_unavailable", "upstream_unavailable"]
    );
}

#[tokio::test]
async fn a_batch_over_the_symbol_limit_is_refused_as_a_whole_without_fetching() {
    let fake = FakeStooq::start().await;
    let service = common::quote_service(&fake, |_| {});
    let symbols: Vec<String> = (0..=MAX_BATCH_SYMBOLS)
        .map(|i| format!("s{i}.us"))
        .collect();
    let refs: Vec<&str> = symbols.iter().map(String::as_str).collect();

    let reply = answer_batch(&service, &batch_request(&refs)).await.unwrap();

    assert_eq!(reply.v, 2);
    assert_eq!(refusal(&reply), Some(ErrorCode::BadRequest));
    assert_eq!(fake.hits(), 0);
}

#[tokio::test]
async fn an_empty_batch_is_refused_as_a_whole() {
    let fake = FakeStooq::start().await;
    let service = common::quote_service(&fake, |_| {});

    let reply = answer_batch(&service, &batch_request(&[])).await.unwrap();

    assert_eq!(refusal(&reply), Some(ErrorCode::BadRequest));
}

#[tokio::test]
async fn an_unreadable_version_2_message_is_refused_in_version_2() {
    let fake = FakeStooq::start().await;
    let service = common::quote_service(&fake, |_| {});

    let reply = answer_batch(&service, br#"{"v":2,"symbols":"aapl.us","deadline_ms":1}"#)
        .await
        .unwrap();

    assert_eq!(reply.v, 2, "not mistaken for an old worker's refusal");
    assert_eq!(refusal(&reply), Some(ErrorCode::BadRequest));
}

#[tokio::test]
async fn an_expired_batch_is_dropped_without_fetching() {
    let fake = FakeStooq::start().await;
    let service = common::quote_service(&fake, |_| {});
    let mut request = BatchQuoteRequest::new(["aapl.us"], None, Duration::from_secs(5));
    request.deadline_ms = now_ms() - 1;

    let reply = answer_batch(&service, &serde_json::to_vec(&request).unwrap()).await;

    assert!(reply.is_none());
    assert_eq!(fake.hits(), 0);
}

#[tokio::test]
async fn a_version_1_request_is_still_answered_in_version_1() {
    let fake = FakeStooq::start().await;
    let service = common::quote_service(&fake, |_| {});

    let reply = answer(&service, &serde_json::to_vec(&request("aapl.us")).unwrap())
        .await
        .unwrap();

    assert_eq!(reply.v, CONTRACT_VERSION);
    assert_eq!(reply.into_result().unwrap().symbol, "AAPL.US");
}

// --- end to end through RabbitMQ -------------------------------------------------------

/// Starts an AMQP app against `fake` and waits until it consumes; `None` = skipped.
async fn amqp_app(fake: &FakeStooq) -> Option<TestApp> {
    if !common::rabbitmq_available().await {
        return None;
    }
    let app = TestApp::spawn(common::amqp_settings(fake, |_| {})).await;
    assert!(
        app.wait_ready(true, Duration::from_secs(10)).await,
        "worker never started consuming: {:?}",
        app.readiness.reason()
    );
    Some(app)
}

#[tokio::test]
async fn rpc_request_gets_a_reply_with_its_correlation_id() {
    let fake = FakeStooq::start().await;
    let Some(app) = amqp_app(&fake).await else {
        return;
    };
    let mut client = RpcClient::connect().await;

    client.send(&app.queue, &request("aapl.us"), "corr-1").await;
    let received = client.next_reply(REPLY_WAIT).await.expect("a reply");

    assert_eq!(received.correlation_id.as_deref(), Some("corr-1"));
    assert_eq!(received.content_type.as_deref(), Some("application/json"));
    assert_eq!(received.reply.into_result().unwrap().close, 183.05);
    let queue = app.queue.clone();
    app.stop().await;
    client.delete_queue(&queue).await;
}

#[tokio::test]
async fn rpc_reply_reaches_a_direct_reply_to_caller() {
    use futures::StreamExt;
    use lapin::options::{BasicConsumeOptions, BasicPublishOptions};
    use lapin::types::FieldTable;

    let fake = FakeStooq::start().await;
    let Some(app) = amqp_app(&fake).await else {
        return;
    };
    let client = RpcClient::connect().await;
    let mut replies = client
        .channel
        .basic_consume(
            "amq.rabbitmq.reply-to".into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();

    client
        .channel
        .basic_publish(
            "".into(),
            app.queue.as_str().into(),
            BasicPublishOptions::default(),
            &serde_json::to_vec(&request("msft.us")).unwrap(),
            BasicProperties::default()
                .with_reply_to("amq.rabbitmq.reply-to".into())
                .with_correlation_id("direct-1".into()),
        )
        .await
        .unwrap();
    let delivery = tokio::time::timeout(REPLY_WAIT, replies.next())
        .await
        .expect("a reply in time")
        .unwrap()
        .unwrap();

    let reply: QuoteReply = serde_json::from_slice(&delivery.data).unwrap();
    assert_eq!(reply.into_result().unwrap().symbol, "MSFT.US");
    assert_eq!(
        delivery
            .properties
            .correlation_id()
            .as_ref()
            .unwrap()
            .as_str(),
        "direct-1"
    );
    let queue = app.queue.clone();
    app.stop().await;
    client.delete_queue(&queue).await;
}

#[tokio::test]
async fn rpc_malformed_message_gets_an_error_reply() {
    let fake = FakeStooq::start().await;
    let Some(app) = amqp_app(&fake).await else {
        return;
    };
    let mut client = RpcClient::connect().await;

    client
        .publish_raw(&app.queue, b"this is not json", client.props("bad-1"))
        .await;
    let received = client.next_reply(REPLY_WAIT).await.expect("a reply");

    assert_eq!(received.correlation_id.as_deref(), Some("bad-1"));
    assert_eq!(code(&received.reply), Some(ErrorCode::BadRequest));
    let queue = app.queue.clone();
    app.stop().await;
    client.delete_queue(&queue).await;
}

#[tokio::test]
async fn rpc_invalid_symbol_gets_an_invalid_symbol_reply() {
    let fake = FakeStooq::start().await;
    let Some(app) = amqp_app(&fake).await else {
        return;
    };
    let mut client = RpcClient::connect().await;

    client
        .send(&app.queue, &request("drop;table"), "inv-1")
        .await;
    let received = client.next_reply(REPLY_WAIT).await.expect("a reply");

    assert_eq!(code(&received.reply), Some(ErrorCode::InvalidSymbol));
    assert_eq!(fake.hits(), 0);
    let queue = app.queue.clone();
    app.stop().await;
    client.delete_queue(&queue).await;
}

#[tokio::test]
async fn rpc_message_without_reply_to_is_rejected_and_the_worker_keeps_serving() {
    let fake = FakeStooq::start().await;
    let Some(app) = amqp_app(&fake).await else {
        return;
    };
    let mut client = RpcClient::connect().await;
    let body = serde_json::to_vec(&request("aapl.us")).unwrap();

    client
        .publish_raw(&app.queue, &body, BasicProperties::default())
        .await;
    client
        .send(&app.queue, &request("msft.us"), "after-1")
        .await;
    let received = client.next_reply(REPLY_WAIT).await.expect("a reply");

    assert_eq!(received.correlation_id.as_deref(), Some("after-1"));
    assert_eq!(received.reply.into_result().unwrap().symbol, "MSFT.US");
    assert_eq!(
        client.ready_count(&app.queue).await,
        0,
        "rejected, not requeued"
    );
    assert_eq!(fake.symbol_hits("aapl.us"), 0);
    let queue = app.queue.clone();
    app.stop().await;
    client.delete_queue(&queue).await;
}

#[tokio::test]
async fn rpc_expired_request_is_dropped_without_an_upstream_hit() {
    let fake = FakeStooq::start().await;
    let Some(app) = amqp_app(&fake).await else {
        return;
    };
    let mut client = RpcClient::connect().await;
    let mut expired = request("aapl.us");
    expired.deadline_ms = now_ms() - 1;

    client.send(&app.queue, &expired, "late-1").await;
    client
        .send(&app.queue, &request("msft.us"), "fresh-1")
        .await;
    let received = client.next_reply(REPLY_WAIT).await.expect("a reply");
    let another = client.next_reply(Duration::from_millis(300)).await;

    assert_eq!(received.correlation_id.as_deref(), Some("fresh-1"));
    assert!(
        another.is_none(),
        "the expired request got a reply: {another:?}"
    );
    assert_eq!(fake.symbol_hits("aapl.us"), 0);
    assert_eq!(
        client.ready_count(&app.queue).await,
        0,
        "acked, not requeued"
    );
    let queue = app.queue.clone();
    app.stop().await;
    client.delete_queue(&queue).await;
}

#[tokio::test]
async fn rpc_request_id_header_is_accepted() {
    let fake = FakeStooq::start().await;
    let Some(app) = amqp_app(&fake).await else {
        return;
    };
    let mut client = RpcClient::connect().await;
    let body =
        serde_json::to_vec(&QuoteRequest::new("aapl.us", None, Duration::from_secs(5))).unwrap();

    client
        .publish_raw(
            &app.queue,
            &body,
            client.props_with_request_id("rid-1", "req-77"),
        )
        .await;
    let received = client.next_reply(REPLY_WAIT).await.expect("a reply");

    assert_eq!(received.correlation_id.as_deref(), Some("rid-1"));
    assert!(received.reply.into_result().is_ok());
    let queue = app.queue.clone();
    app.stop().await;
    client.delete_queue(&queue).await;
}

#[tokio::test]
async fn rpc_requests_are_handled_concurrently() {
    let fake = FakeStooq::start().await;
    fake.set_latency(Duration::from_millis(300));
    let Some(app) = amqp_app(&fake).await else {
        return;
    };
    let mut client = RpcClient::connect().await;
    let started = tokio::time::Instant::now();

    for i in 0..20 {
        client
            .send(&app.queue, &request(&format!("c{i}.us")), &format!("c-{i}"))
            .await;
    }
    let mut got = 0;
    while client.next_reply(REPLY_WAIT).await.is_some() {
        got += 1;
        if got == 20 {
            break;
        }
    }

    assert_eq!(got, 20);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let queue = app.queue.clone();
    app.stop().await;
    client.delete_queue(&queue).await;
}

#[tokio::test]
async fn rpc_metrics_count_messages_by_outcome() {
    let fake = FakeStooq::start().await;
    let Some(app) = amqp_app(&fake).await else {
        return;
    };
    let mut client = RpcClient::connect().await;

    client.send(&app.queue, &request("aapl.us"), "m-1").await;
    client.next_reply(REPLY_WAIT).await.expect("a reply");
    // Counted once the message is acked, just after the reply went out.
    wait_until("the message to be counted", REPLY_WAIT, async || {
        app.rpc_messages("ok") == 1
    })
    .await;

    let text = app.get("/metrics").await.text().await.unwrap();
    assert!(
        text.contains(r#"quote_rpc_messages_total{outcome="ok"} 1"#),
        "{text}"
    );
    let queue = app.queue.clone();
    app.stop().await;
    client.delete_queue(&queue).await;
}

#[tokio::test]
async fn readyz_is_200_while_consuming() {
    let fake = FakeStooq::start().await;
    let Some(app) = amqp_app(&fake).await else {
        return;
    };

    let response = app.get("/readyz").await;

    assert_eq!(response.status().as_u16(), 200);
    let client = RpcClient::connect().await;
    let queue = app.queue.clone();
    app.stop().await;
    client.delete_queue(&queue).await;
}

#[tokio::test]
async fn stopped_worker_leaves_new_requests_in_the_queue() {
    let fake = FakeStooq::start().await;
    let Some(app) = amqp_app(&fake).await else {
        return;
    };
    let queue = app.queue.clone();
    let readiness = app.readiness.clone();
    let client = RpcClient::connect().await;

    app.stop().await;
    // The broker's word that nothing consumes the queue: the message cannot be taken.
    assert_eq!(client.consumer_count(&queue).await, 0);
    client.send(&queue, &request("aapl.us"), "orphan-1").await;

    wait_until("the request to wait in the queue", REPLY_WAIT, async || {
        client.ready_count(&queue).await == 1
    })
    .await;
    assert!(!readiness.is_ready());
    assert_eq!(fake.hits(), 0);
    client.delete_queue(&queue).await;
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    let fake = FakeStooq::start().await;
    fake.set_latency(Duration::from_millis(500));
    let Some(app) = amqp_app(&fake).await else {
        return;
    };
    let queue = app.queue.clone();
    let mut client = RpcClient::connect().await;

    client.send(&queue, &request("aapl.us"), "inflight-1").await;
    wait_until("the fetch to be under way", REPLY_WAIT, async || {
        fake.hits() == 1
    })
    .await;
    app.stop().await;
    let received = client.next_reply(REPLY_WAIT).await;

    let received = received.expect("the in-flight request was answered before exit");
    assert_eq!(received.correlation_id.as_deref(), Some("inflight-1"));
    assert_eq!(client.ready_count(&queue).await, 0);
    client.delete_queue(&queue).await;
}

#[tokio::test]
async fn reply_to_a_vanished_direct_reply_to_caller_does_not_break_the_worker() {
    use lapin::options::{BasicConsumeOptions, BasicPublishOptions};
    use lapin::types::FieldTable;

    let fake = FakeStooq::start().await;
    fake.set_latency(Duration::from_millis(300));
    let Some(app) = amqp_app(&fake).await else {
        return;
    };
    let gone = RpcClient::connect().await;
    let _replies = gone
        .channel
        .basic_consume(
            "amq.rabbitmq.reply-to".into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    gone.channel
        .basic_publish(
            "".into(),
            app.queue.as_str().into(),
            BasicPublishOptions::default(),
            &serde_json::to_vec(&request("aapl.us")).unwrap(),
            BasicProperties::default()
                .with_reply_to("amq.rabbitmq.reply-to".into())
                .with_correlation_id("gone-1".into()),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    gone.connection.close(200, "bye".into()).await.unwrap();
    // The worker replies into the void (or fails to): either way it has handled the message.
    wait_until(
        "the worker to handle the orphaned request",
        REPLY_WAIT,
        async || app.rpc_messages("ok") + app.rpc_messages("publish_failed") >= 1,
    )
    .await;
    let mut client = RpcClient::connect().await;

    client
        .send(&app.queue, &request("msft.us"), "still-1")
        .await;
    let received = client.next_reply(REPLY_WAIT).await;

    assert_eq!(
        received
            .expect("worker still serving")
            .correlation_id
            .as_deref(),
        Some("still-1")
    );
    assert!(app.readiness.is_ready());
    let queue = app.queue.clone();
    app.stop().await;
    client.delete_queue(&queue).await;
}
