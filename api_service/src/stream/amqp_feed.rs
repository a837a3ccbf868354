//! The instance's side of live quotes over RabbitMQ: it tells the quote workers what its
//! streams watch (an [`Interest`] on the fanout exchange, whenever the set changes and every
//! `INTEREST_TTL / 3`), binds its own exclusive queue on the live topic exchange to exactly
//! those symbols, and hands every quote that arrives to the [`StreamHub`].
//!
//! Its own connection, apart from the RPC transport's: RPC calls must fail the moment their
//! link dies, whereas this side just reconnects (with backoff), declares a fresh queue and
//! binds everything watched again; what changed meanwhile reaches the streams with the next
//! refresh, and the hub drops what they already have. Withdraws its interest on shutdown;
//! after a crash the workers drop it once its TTL runs out.
//!
//! The connection opens only once some stream watches a symbol: an instance nobody streams
//! from holds no second connection (its buffers were most of the idle API's memory over the
//! 30 MB target). Once open it stays open.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use shared::Symbol;
use shared::live::{Interest, LIVE_VERSION, LiveNames, LiveQuote};
use shared::reconnect::Reconnect;
use tokio_util::sync::CancellationToken;

use super::hub::StreamHub;

const LIVENESS_CHECK: Duration = Duration::from_millis(500);

#[derive(Clone)]
pub struct AmqpFeedConfig {
    /// Broker URL; holds credentials, never logged.
    pub url: String,
    pub names: LiveNames,
    pub interest_ttl: Duration,
    /// This instance's id in its interest messages.
    pub instance: String,
}

#[derive(Debug, thiserror::Error)]
enum FeedError {
    #[error(transparent)]
    Amqp(#[from] lapin::Error),
    #[error("{0}")]
    Lost(&'static str),
}

/// Runs until `shutdown`. `connected` says whether the feed is bound and consuming.
pub async fn run(
    config: AmqpFeedConfig,
    hub: Arc<StreamHub>,
    connected: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    let mut reconnect = Reconnect::new("live-quote feed", ::shared::endpoint::of_url(&config.url));
    while !shutdown.is_cancelled() {
        if !watchers_arrive(&hub, &shutdown).await {
            break;
        }
        let result = session(&config, &hub, &connected, &shutdown, &mut reconnect).await;
        connected.store(false, Ordering::Relaxed);
        let Err(e) = result else { break };
        if !reconnect
            .after_loss(&::shared::error_chain::report(&e), &shutdown)
            .await
        {
            break;
        }
    }
}

/// Waits until some stream watches a symbol; false on shutdown.
async fn watchers_arrive(hub: &StreamHub, shutdown: &CancellationToken) -> bool {
    let mut changes = hub.watched_changes();
    loop {
        if hub.watched_count() > 0 {
            return true;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            changed = changes.changed() => if changed.is_err() {
                return false;
            },
        }
    }
}

async fn session(
    config: &AmqpFeedConfig,
    hub: &StreamHub,
    connected: &AtomicBool,
    shutdown: &CancellationToken,
    reconnect: &mut Reconnect,
) -> Result<(), FeedError> {
    let props = ConnectionProperties::default().with_connection_name(
        format!(
            "api_service live {} {}",
            config.names.live_exchange, config.instance
        )
        .into(),
    );
    let connection = Connection::connect(&config.url, props).await?;
    let channel = connection.create_channel().await?;
    let queue = channel
        .queue_declare(
            ShortString::from(""),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?
        .name()
        .clone();
    let mut deliveries = channel
        .basic_consume(
            queue.clone(),
            ShortString::from(""),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    reconnect.connected();

    let mut links = Links {
        channel: &channel,
        queue,
        config,
        bound: BTreeSet::new(),
        announced: None,
    };
    let mut changes = hub.watched_changes();
    changes.mark_changed();
    let mut renew = tokio::time::interval((config.interest_ttl / 3).max(Duration::from_millis(10)));
    let mut liveness = tokio::time::interval(LIVENESS_CHECK);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            changed = changes.changed() => {
                if changed.is_err() {
                    break;
                }
                changes.mark_unchanged();
                links.follow(hub.watched(), false).await?;
                connected.store(true, Ordering::Relaxed);
            }
            next = deliveries.next() => match next {
                Some(Ok(delivery)) => match serde_json::from_slice::<LiveQuote>(&delivery.data) {
                    Ok(live) if live.v == LIVE_VERSION => match Symbol::parse(&live.symbol) {
                        Ok(symbol) => {
                            hub.publish_at(&symbol, live.quote, live.published_at_ms);
                        }
                        Err(e) => tracing::warn!(error = %e, "live quote for an invalid symbol dropped"),
                    },
                    Ok(live) => tracing::warn!(v = live.v, "live quote of another version dropped"),
                    Err(e) => tracing::warn!(error = %e, "unreadable live quote dropped"),
                },
                Some(Err(e)) => return Err(e.into()),
                None => return Err(FeedError::Lost("the broker cancelled the live-quote consumer")),
            },
            _ = renew.tick() => links.follow(hub.watched(), true).await?,
            _ = liveness.tick() => {
                if !connection.status().connected() || !channel.status().connected() {
                    return Err(FeedError::Lost("the connection to RabbitMQ was lost"));
                }
            }
        }
    }
    // Withdraw at once rather than leave the workers refreshing for a TTL.
    let _ = links.announce(Vec::new()).await;
    let _ = channel.close(200, ShortString::from("shutting down")).await;
    let _ = connection
        .close(200, ShortString::from("shutting down"))
        .await;
    Ok(())
}

/// What this connection has bound and announced.
struct Links<'a> {
    channel: &'a Channel,
    queue: ShortString,
    config: &'a AmqpFeedConfig,
    bound: BTreeSet<Symbol>,
    announced: Option<Vec<Symbol>>,
}

impl Links<'_> {
    /// Binds what is newly watched before announcing it (so the first quote a worker
    /// publishes for it is not lost), unbinds what is no longer watched, and announces the
    /// set when it changed or when `renewal` is due and something is watched.
    async fn follow(&mut self, wanted: Vec<Symbol>, renewal: bool) -> Result<(), lapin::Error> {
        let wanted_set: BTreeSet<Symbol> = wanted.iter().cloned().collect();
        if wanted_set.difference(&self.bound).next().is_some() {
            self.declare(&self.config.names.live_exchange, ExchangeKind::Topic)
                .await?;
        }
        for symbol in wanted_set.difference(&self.bound) {
            self.channel
                .queue_bind(
                    self.queue.clone(),
                    self.config.names.live_exchange.as_str().into(),
                    symbol.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        for symbol in self.bound.difference(&wanted_set) {
            self.channel
                .queue_unbind(
                    self.queue.clone(),
                    self.config.names.live_exchange.as_str().into(),
                    symbol.as_str().into(),
                    FieldTable::default(),
                )
                .await?;
        }
        self.bound = wanted_set;
        let changed = self.announced.as_ref() != Some(&wanted);
        if changed || (renewal && !wanted.is_empty()) {
            self.announce(wanted).await?;
        }
        Ok(())
    }

    /// The exchanges exist only while bound (auto-delete, not durable: see `shared::live`),
    /// so each is declared right before it is used.
    async fn declare(&self, exchange: &str, kind: ExchangeKind) -> Result<(), lapin::Error> {
        self.channel
            .exchange_declare(
                exchange.into(),
                kind,
                ExchangeDeclareOptions {
                    auto_delete: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
    }

    async fn announce(&mut self, symbols: Vec<Symbol>) -> Result<(), lapin::Error> {
        self.declare(&self.config.names.interest_exchange, ExchangeKind::Fanout)
            .await?;
        let interest = Interest {
            v: LIVE_VERSION,
            instance: self.config.instance.clone(),
            symbols: symbols.iter().map(|s| s.as_str().to_owned()).collect(),
            ttl_ms: self.config.interest_ttl.as_millis() as u64,
        };
        let body = serde_json::to_vec(&interest).unwrap_or_default();
        self.channel
            .basic_publish(
                self.config.names.interest_exchange.as_str().into(),
                ShortString::from(""),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default().with_content_type(ShortString::from("application/json")),
            )
            .await?;
        self.announced = Some(symbols);
        Ok(())
    }
}
