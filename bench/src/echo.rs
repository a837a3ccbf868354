//! The baseline: a bare RPC echo over the same RabbitMQ, one message each way per call.
//!
//! It measures what a request/reply round trip through the broker costs on this machine, with
//! nothing else in the way (no HTTP, no database, no upstream). `stock-hot` is reported as a
//! ratio to it: beating 1.0x means the real stack does better than one message per call
//! (coalescing, batching, caching) rather than just adding overhead on top of it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde::Serialize;
use tokio::sync::oneshot;

use crate::stats::LatencySummary;

/// RabbitMQ's pseudo-queue for direct reply-to: replies come back on the publishing channel
/// without a reply queue per client.
pub const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

async fn connect(amqp_url: &str) -> Result<Connection> {
    Connection::connect(amqp_url, ConnectionProperties::default())
        .await
        .with_context(|| format!("connecting to RabbitMQ at {amqp_url}"))
}

async fn declare(channel: &Channel, queue: &str) -> Result<()> {
    // Same shape as the real request queue: durable, so the comparison includes the same
    // queue type; the harness deletes it afterwards.
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("declaring queue {queue}"))?;
    Ok(())
}

/// Answers every request on `queue` at once: publishes the request body back to `reply_to`
/// with the same `correlation_id`, then acks, with a prefetch window like the real worker's.
/// Runs until the connection fails or the process is stopped.
pub async fn serve(amqp_url: &str, queue: &str, prefetch: u16) -> Result<()> {
    let conn = connect(amqp_url).await?;
    let channel = conn.create_channel().await?;
    declare(&channel, queue).await?;
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "rpc-echo".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    eprintln!("rpc_echo: serving {queue}");
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery?;
        if let Some(reply_to) = delivery.properties.reply_to().clone() {
            let mut props = BasicProperties::default();
            if let Some(id) = delivery.properties.correlation_id().clone() {
                props = props.with_correlation_id(id);
            }
            channel
                .basic_publish(
                    "".into(),
                    reply_to,
                    BasicPublishOptions::default(),
                    &delivery.data,
                    props,
                )
                .await?;
        }
        delivery.ack(BasicAckOptions::default()).await?;
    }
    Ok(())
}

/// What one `load` run measured; the same fields the wrk scenarios report.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct EchoResult {
    pub requests: u64,
    pub duration_s: f64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub errors: u64,
}

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<()>>>>;

/// Keeps exactly `inflight` calls outstanding for `duration` over direct reply-to and returns
/// throughput and latency. A call that gets no answer within `timeout` counts as an error.
///
/// With `confirm`, publishes are `mandatory` on a confirm-mode channel and each call also
/// waits for the broker's confirm, as api_service's AMQP transport does (it learns that way
/// when the request queue is gone). Without, it is the bare one-message-per-call baseline.
pub async fn load(
    amqp_url: &str,
    queue: &str,
    inflight: usize,
    duration: Duration,
    timeout: Duration,
    confirm: bool,
) -> Result<EchoResult> {
    let conn = connect(amqp_url).await?;
    let channel = conn.create_channel().await?;
    declare(&channel, queue).await?;
    if confirm {
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
    }
    // Direct reply-to: consume no-ack from the pseudo-queue on the channel we publish on.
    let mut replies = channel
        .basic_consume(
            DIRECT_REPLY_TO.into(),
            "rpc-echo-client".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .context("consuming amq.rabbitmq.reply-to")?;
    let pending: Pending = Arc::default();
    let dispatcher = {
        let pending = pending.clone();
        tokio::spawn(async move {
            while let Some(Ok(delivery)) = replies.next().await {
                let Some(id) = delivery.properties.correlation_id() else {
                    continue;
                };
                if let Some(tx) = pending.lock().unwrap().remove(id.as_str()) {
                    let _ = tx.send(());
                }
            }
        })
    };

    let started = Instant::now();
    let stop_at = started + duration;
    let mut workers = Vec::with_capacity(inflight);
    for worker in 0..inflight {
        let channel = channel.clone();
        let pending = pending.clone();
        let queue = queue.to_owned();
        workers.push(tokio::spawn(async move {
            let mut latencies_us = Vec::new();
            let mut errors = 0u64;
            let mut seq = 0u64;
            while Instant::now() < stop_at {
                seq += 1;
                let id = format!("{worker}-{seq}");
                // A body the size of a real QuoteRequest.
                let body = serde_json::to_vec(&shared::QuoteRequest::new(
                    "aapl.us",
                    Some(id.clone()),
                    timeout,
                ))
                .expect("serialising a request cannot fail");
                let (tx, rx) = oneshot::channel();
                pending.lock().unwrap().insert(id.clone(), tx);
                let t0 = Instant::now();
                let published = channel
                    .basic_publish(
                        "".into(),
                        queue.as_str().into(),
                        BasicPublishOptions {
                            mandatory: confirm,
                            ..BasicPublishOptions::default()
                        },
                        &body,
                        BasicProperties::default()
                            .with_reply_to(DIRECT_REPLY_TO.into())
                            .with_correlation_id(id.as_str().into()),
                    )
                    .await;
                let published = match published {
                    // Outside confirm mode this resolves at once.
                    Ok(confirmation) if confirm => confirmation.await.map(|_| ()),
                    other => other.map(|_| ()),
                };
                if published.is_err() {
                    pending.lock().unwrap().remove(&id);
                    errors += 1;
                    continue;
                }
                match tokio::time::timeout(timeout, rx).await {
                    Ok(Ok(())) => latencies_us.push(t0.elapsed().as_micros() as u64),
                    _ => {
                        pending.lock().unwrap().remove(&id);
                        errors += 1;
                    }
                }
            }
            (latencies_us, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for w in workers {
        let (lat, err) = w.await?;
        all.extend(lat);
        errors += err;
    }
    let elapsed = started.elapsed().as_secs_f64();
    dispatcher.abort();
    let _ = conn.close(200, "done".into()).await;
    let summary = LatencySummary::from_micros(&mut all);
    Ok(EchoResult {
        requests: all.len() as u64,
        duration_s: elapsed,
        rps: all.len() as f64 / elapsed,
        p50_ms: summary.p50_ms,
        p99_ms: summary.p99_ms,
        max_ms: summary.max_ms,
        errors,
    })
}

/// Removes a queue left by a run; the echo and the services use unique, throwaway names.
pub async fn delete_queue(amqp_url: &str, queue: &str) -> Result<()> {
    let conn = connect(amqp_url).await?;
    let channel = conn.create_channel().await?;
    channel
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await?;
    let _ = conn.close(200, "done".into()).await;
    Ok(())
}
