//! Live quotes as Server-Sent Events: `GET /api/v1/stream?q=aapl.us,msft.us`.
//!
//! A stream first sends the current quote of each of its symbols, then an event whenever one
//! changes, with heartbeats in between. Changes come from the instance's [`StreamHub`], fed by
//! the quote workers over RabbitMQ ([`amqp_feed`]: one refresh per interval for the whole
//! deployment, fanned out here to every stream) or, over the HTTP transport, by polling the
//! quote service ([`poll_feed`]). Event ids are resumable state (see [`event_id`]).
//! Streaming writes no history.

mod amqp_feed;
mod caps;
pub mod event_id;
mod hub;
mod poll_feed;
pub mod route;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

pub use caps::{StreamCaps, StreamPermit};
pub use hub::{Latest, StreamHub, Subscription};

use crate::settings::{Settings, TransportKind};
use crate::transport::QuoteTransport;

/// The stream limits and timings, from [`Settings`].
#[derive(Debug, Clone)]
pub struct StreamConfig {
    pub max_symbols: usize,
    pub heartbeat: Duration,
    pub max_lifetime: Duration,
}

/// Everything the stream endpoint needs; one per instance.
pub struct Streams {
    pub hub: Arc<StreamHub>,
    pub caps: Arc<StreamCaps>,
    pub config: StreamConfig,
    /// Ends every stream (graceful shutdown must not wait for clients that never leave).
    pub shutdown: CancellationToken,
    /// AMQP feed bound and consuming (always true for the HTTP poller).
    feed_connected: Arc<AtomicBool>,
}

impl Streams {
    /// Starts the feed the transport calls for; it runs until `shutdown`.
    pub fn start(
        settings: &Settings,
        transport: Arc<dyn QuoteTransport>,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let hub = StreamHub::new();
        let feed_connected = Arc::new(AtomicBool::new(false));
        match settings.quote_transport {
            TransportKind::Amqp => {
                let config = amqp_feed::AmqpFeedConfig {
                    url: settings.amqp_url.expose_secret().to_owned(),
                    names: shared::live::LiveNames::for_queue(&settings.quote_queue),
                    interest_ttl: settings.interest_ttl,
                    instance: uuid::Uuid::new_v4().simple().to_string(),
                };
                tokio::spawn(amqp_feed::run(
                    config,
                    Arc::clone(&hub),
                    Arc::clone(&feed_connected),
                    shutdown.clone(),
                ));
            }
            TransportKind::Http => {
                feed_connected.store(true, Ordering::Relaxed);
                tokio::spawn(poll_feed::run(
                    transport,
                    Arc::clone(&hub),
                    settings.watch_refresh,
                    shutdown.clone(),
                ));
            }
        }
        Arc::new(Self {
            hub,
            caps: StreamCaps::new(settings.stream_max_per_user as usize),
            config: StreamConfig {
                max_symbols: settings.stream_max_symbols as usize,
                heartbeat: settings.stream_heartbeat,
                max_lifetime: settings.stream_max_lifetime,
            },
            shutdown,
            feed_connected,
        })
    }

    /// Whether the live feed is up (for tests and diagnostics; streams keep running without
    /// it and catch up once it is back).
    pub fn feed_connected(&self) -> bool {
        self.feed_connected.load(Ordering::Relaxed)
    }
}
