//! Wiring: builds every part from [`Settings`] and runs the HTTP server and the RPC consumer
//! until a signal or the shutdown token says stop.

use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::health::Readiness;
use crate::http_server::{AppState, router};
use crate::metrics::Metrics;
use crate::quotes::QuoteService;
use crate::rpc_server::{self, RpcConfig, RpcContext};
use crate::settings::{Settings, Transport};
use crate::upstream::StooqClient;
use crate::watch::{WatchConfig, WatchStats};

/// How often histogram samples are folded into buckets when nobody scrapes `/metrics`.
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

pub struct Application {
    settings: Settings,
    listener: TcpListener,
    port: u16,
    state: AppState,
    shutdown: CancellationToken,
    watch: WatchStats,
}

impl Application {
    /// Binds the HTTP listener (port 0 picks a free one) and starts the quote fetcher.
    /// RabbitMQ is contacted only by [`run_until_stopped`](Self::run_until_stopped), which
    /// keeps retrying, so a broker that is down at start-up does not stop the worker.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let listener = TcpListener::bind(settings.http_addr)
            .await
            .with_context(|| format!("cannot bind the HTTP address {}", settings.http_addr))?;
        let port = listener.local_addr()?.port();
        let metrics = Metrics::new();
        let client = StooqClient::new(&settings, metrics.clone())?;
        let service = QuoteService::new(&settings, client, metrics.clone());
        let readiness = match settings.transport {
            Transport::Amqp => Readiness::not_ready("not consuming from RabbitMQ yet"),
            Transport::Http => Readiness::not_ready("starting"),
        };
        let state = AppState {
            service,
            metrics,
            readiness,
            request_timeout: settings.request_timeout,
            max_wait: crate::http_server::max_wait(settings.http_server.request_timeout),
        };
        Ok(Application {
            settings,
            listener,
            port,
            state,
            shutdown: CancellationToken::new(),
            watch: WatchStats::default(),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Cancelling it shuts the application down gracefully, as SIGTERM does.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// What `/readyz` reports: HTTP up and, with the AMQP transport, consuming.
    pub fn readiness(&self) -> Readiness {
        self.state.readiness.clone()
    }

    pub fn ready(&self) -> bool {
        self.state.readiness.is_ready()
    }

    /// The quote service behind both transports (for tests and embedding).
    pub fn quote_service(&self) -> crate::quotes::QuoteService {
        self.state.service.clone()
    }

    pub fn metrics(&self) -> Metrics {
        self.state.metrics.clone()
    }

    /// What the live-quote watch is doing (AMQP transport only; all zero over HTTP).
    pub fn watch_stats(&self) -> WatchStats {
        self.watch.clone()
    }

    /// Serves until SIGTERM, Ctrl-C or the shutdown token. Then: stop consuming (unstarted
    /// messages return to the queue), let in-flight requests finish within SHUTDOWN_GRACE,
    /// and return.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Application {
            settings,
            listener,
            state,
            shutdown,
            watch,
            ..
        } = self;
        let signals = tokio::spawn(cancel_on_signal(shutdown.clone()));
        let upkeep = tokio::spawn(metrics_upkeep(state.metrics.clone(), shutdown.clone()));

        let rpc = match settings.transport {
            Transport::Amqp => {
                let config = RpcConfig {
                    amqp_url: settings.amqp_url.clone(),
                    queue: settings.quote_queue.clone(),
                    prefetch: settings.worker_concurrency,
                    shutdown_grace: settings.shutdown_grace,
                };
                let ctx = RpcContext {
                    service: state.service.clone(),
                    metrics: state.metrics.clone(),
                };
                tokio::spawn(crate::watch::run(
                    WatchConfig {
                        amqp_url: settings.amqp_url.clone(),
                        names: shared::live::LiveNames::for_queue(&settings.quote_queue),
                        refresh: settings.watch_refresh,
                        max_symbols: settings.watch_max_symbols as usize,
                        fetch_timeout: settings.request_timeout,
                        metrics: state.metrics.clone(),
                    },
                    state.service.clone(),
                    watch,
                    shutdown.clone(),
                ));
                Some(tokio::spawn(rpc_server::run(
                    config,
                    ctx,
                    state.readiness.clone(),
                    shutdown.clone(),
                )))
            }
            Transport::Http => {
                state.readiness.set_ready();
                None
            }
        };

        let readiness = state.readiness.clone();
        let app = router(state);
        tracing::info!(
            addr = %listener.local_addr()?,
            transport = ?settings.transport,
            queue = %settings.quote_queue,
            "quote_service started"
        );
        let http_shutdown = shutdown.clone();
        let served =
            shared::http_server::serve(listener, app, settings.http_server.clone(), async move {
                http_shutdown.cancelled().await;
                readiness.set_not_ready("shutting down");
            });
        let grace = settings.shutdown_grace;
        let http = tokio::spawn(served);

        shutdown.cancelled().await;
        // Both halves drain in parallel, within the grace period (plus a little for closing).
        let limit = grace + Duration::from_millis(500);
        if let Some(rpc) = rpc
            && tokio::time::timeout(limit, rpc).await.is_err()
        {
            tracing::warn!("RPC consumer did not stop within the grace period");
        }
        match tokio::time::timeout(limit, http).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "HTTP server task failed"),
            Err(_) => tracing::warn!("HTTP connections still open after the grace period"),
        }
        signals.abort();
        upkeep.abort();
        tracing::info!("quote_service stopped");
        Ok(())
    }
}

async fn cancel_on_signal(token: CancellationToken) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("Ctrl-C received"),
        _ = term => tracing::info!("SIGTERM received"),
        _ = token.cancelled() => return,
    }
    token.cancel();
}

async fn metrics_upkeep(metrics: Metrics, token: CancellationToken) {
    let mut tick = tokio::time::interval(METRICS_UPKEEP);
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tick.tick() => metrics.run_upkeep(),
        }
    }
}
