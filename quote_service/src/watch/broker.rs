//! The watch's life on the broker: one connection (re-made with backoff when lost) carrying
//! the interest consumer, the refresh ticks and the live publisher.

use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use secrecy::ExposeSecret;
use shared::live::Interest;
use shared::reconnect::Reconnect;
use std::sync::atomic::Ordering;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{MAX_INSTANCES, MAX_INTEREST_TTL, Refresher, WatchConfig, WatchList, WatchStats};
use crate::quotes::QuoteService;

const LIVENESS_CHECK: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
enum WatchError {
    #[error(transparent)]
    Amqp(#[from] lapin::Error),
    #[error("{0}")]
    Lost(&'static str),
}

/// Runs the watch until `shutdown`, reconnecting whenever the broker is lost. The watch list
/// survives reconnects (entries still expire on time); the refresher's memory of what it
/// published does too, so a broker restart republishes only what changed meanwhile.
pub async fn run(
    config: WatchConfig,
    service: QuoteService,
    stats: WatchStats,
    shutdown: CancellationToken,
) {
    let mut list = WatchList::new(MAX_INTEREST_TTL, config.max_symbols, MAX_INSTANCES);
    let mut refresher = Refresher::new(service, config.fetch_timeout);
    let mut reconnect = Reconnect::new(
        "watch",
        shared::endpoint::of_url(config.amqp_url.expose_secret()),
    );
    while !shutdown.is_cancelled() {
        let result = session(
            &config,
            &mut list,
            &mut refresher,
            &stats,
            &shutdown,
            &mut reconnect,
        )
        .await;
        stats.0.connected.store(false, Ordering::Relaxed);
        let Err(e) = result else { break };
        if !reconnect
            .after_loss(&shared::error_chain::report(&e), &shutdown)
            .await
        {
            break;
        }
    }
}

/// The exchanges live only while something is bound to them (auto-delete, not durable), so
/// nothing is left on the broker once no instance uses them (e.g. the per-test names of the
/// test suites); each side declares an exchange right before it binds to or publishes on it.
fn exchange_options() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        auto_delete: true,
        ..ExchangeDeclareOptions::default()
    }
}

async fn declare(
    channel: &Channel,
    config: &WatchConfig,
) -> Result<(String, String), lapin::Error> {
    let names = &config.names;
    channel
        .exchange_declare(
            names.interest_exchange.as_str().into(),
            ExchangeKind::Fanout,
            exchange_options(),
            FieldTable::default(),
        )
        .await?;
    let own = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..QueueDeclareOptions::default()
    };
    let interest = channel
        .queue_declare(ShortString::from(""), own, FieldTable::default())
        .await?;
    channel
        .queue_bind(
            interest.name().clone(),
            names.interest_exchange.as_str().into(),
            ShortString::from(""),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut sac = FieldTable::default();
    sac.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
    channel
        .queue_declare(
            names.refresh_queue.as_str().into(),
            QueueDeclareOptions {
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            sac,
        )
        .await?;
    Ok((interest.name().to_string(), names.refresh_queue.clone()))
}

async fn session(
    config: &WatchConfig,
    list: &mut WatchList,
    refresher: &mut Refresher,
    stats: &WatchStats,
    shutdown: &CancellationToken,
    reconnect: &mut Reconnect,
) -> Result<(), WatchError> {
    let props = ConnectionProperties::default()
        .with_connection_name(format!("quote_service watch:{}", config.names.refresh_queue).into());
    let connection = Connection::connect(config.amqp_url.expose_secret(), props).await?;
    let channel = connection.create_channel().await?;
    let (interest_queue, refresh_queue) = declare(&channel, config).await?;
    let no_ack = BasicConsumeOptions {
        no_ack: true,
        ..BasicConsumeOptions::default()
    };
    let mut interest = channel
        .basic_consume(
            interest_queue.as_str().into(),
            ShortString::from(""),
            no_ack,
            FieldTable::default(),
        )
        .await?;
    let mut ticks = channel
        .basic_consume(
            refresh_queue.as_str().into(),
            ShortString::from(""),
            no_ack,
            FieldTable::default(),
        )
        .await?;
    stats.0.connected.store(true, Ordering::Relaxed);
    reconnect.connected();
    tracing::info!(refresh = ?config.refresh, "watch list connected");

    let mut post_tick = tokio::time::interval(config.refresh);
    let mut liveness = tokio::time::interval(LIVENESS_CHECK);
    let min_gap = config.refresh.mul_f64(0.9);
    let mut last_refresh: Option<Instant> = None;
    // A tick is only a wake-up call: it expires when the next one is due.
    let expiration = ShortString::from(config.refresh.as_millis().max(1).to_string());
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            next = interest.next() => match next {
                Some(Ok(delivery)) => match serde_json::from_slice::<Interest>(&delivery.data) {
                    Ok(message) => {
                        if let Err(e) = list.apply(message, Instant::now()) {
                            tracing::warn!(error = %e, "interest message refused");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "unreadable interest message dropped"),
                },
                Some(Err(e)) => return Err(e.into()),
                None => return Err(WatchError::Lost("the broker cancelled the interest consumer")),
            },
            next = ticks.next() => match next {
                Some(Ok(_)) => {
                    if last_refresh.is_some_and(|at| at.elapsed() < min_gap) {
                        continue;
                    }
                    last_refresh = Some(Instant::now());
                    refresh(&channel, config, list, refresher, stats).await?;
                }
                Some(Err(e)) => return Err(e.into()),
                None => return Err(WatchError::Lost("the broker cancelled the tick consumer")),
            },
            _ = post_tick.tick() => {
                channel
                    .basic_publish(
                        ShortString::from(""),
                        refresh_queue.as_str().into(),
                        BasicPublishOptions::default(),
                        b"tick",
                        BasicProperties::default().with_expiration(expiration.clone()),
                    )
                    .await?;
            }
            _ = liveness.tick() => {
                stats.0.instances.store(list.instances(), Ordering::Relaxed);
                if !connection.status().connected() || !channel.status().connected() {
                    return Err(WatchError::Lost("the connection to RabbitMQ was lost"));
                }
            }
        }
    }
    let _ = channel.close(200, ShortString::from("shutting down")).await;
    let _ = connection
        .close(200, ShortString::from("shutting down"))
        .await;
    Ok(())
}

#[tracing::instrument(skip_all, fields(symbols, changed))]
async fn refresh(
    channel: &Channel,
    config: &WatchConfig,
    list: &mut WatchList,
    refresher: &mut Refresher,
    stats: &WatchStats,
) -> Result<(), lapin::Error> {
    let symbols = list.symbols(Instant::now());
    stats.0.watched.store(symbols.len(), Ordering::Relaxed);
    stats.0.instances.store(list.instances(), Ordering::Relaxed);
    if symbols.is_empty() {
        refresher.refresh(&[]).await;
        return Ok(());
    }
    let span = tracing::Span::current();
    span.record("symbols", symbols.len());
    let changed = refresher.refresh(&symbols).await;
    span.record("changed", changed.len());
    stats.0.refreshes.fetch_add(1, Ordering::Relaxed);
    config.metrics.watch_refreshed();
    config.metrics.watch_symbols_skipped(list.skipped());
    if !changed.is_empty() {
        channel
            .exchange_declare(
                config.names.live_exchange.as_str().into(),
                ExchangeKind::Topic,
                exchange_options(),
                FieldTable::default(),
            )
            .await?;
    }
    for mut live in changed {
        live.published_at_ms = Some(chrono::Utc::now().timestamp_millis());
        let body = match serde_json::to_vec(&live) {
            Ok(body) => body,
            Err(e) => {
                tracing::warn!(error = %e, "could not encode a live quote");
                continue;
            }
        };
        channel
            .basic_publish(
                config.names.live_exchange.as_str().into(),
                live.symbol.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default().with_content_type(ShortString::from("application/json")),
            )
            .await?;
        stats.0.published.fetch_add(1, Ordering::Relaxed);
        config.metrics.live_published();
    }
    tracing::debug!("watch list refreshed");
    Ok(())
}
