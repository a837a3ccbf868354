//! Building and running one API server: wiring settings into the store, the quote
//! transport, auth and the router, then serving until asked to stop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use shared::http_server::{self, HttpServerSettings};

use crate::auth::login_throttle::{self, SharedCounts};
use crate::auth::{Hasher, JwtKeys, LoginThrottle, SessionCookie, UserCache};
use crate::metrics::Metrics;
use crate::settings::Settings;
use crate::state::{AppState, Services};
use crate::store::{self, Store};
use crate::{routes, transport};

pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    router: Router,
    /// The operators' listener and its routes, when INTERNAL_ADDR is set.
    internal: Option<Internal>,
    limits: HttpServerSettings,
    state: AppState,
    shutdown: CancellationToken,
    grace: Duration,
    handle_signals: bool,
}

struct Internal {
    listener: TcpListener,
    addr: SocketAddr,
    router: Router,
}

impl Application {
    /// Validates the settings, connects and migrates the database, starts the quote
    /// transport (which may still be connecting: the server starts not-ready rather than
    /// failing) and binds the listener (port 0 picks a free port).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let jwt = JwtKeys::from_settings(&settings)?;
        let store = store::connect(
            settings.database_url.expose_secret(),
            settings.database_max_connections,
        )
        .await
        .context("connecting to the database")?;
        store
            .migrate()
            .await
            .context("applying database migrations")?;
        warn_about_open_demo_accounts(store.as_ref()).await;
        let transport = transport::build(&settings)
            .await
            .context("starting the quote transport")?;
        let hasher = Hasher::new(settings.effective_hash_concurrency())
            .await
            .context("initialising password hashing")?;
        let login_throttle = Arc::new(login_throttle(&settings, store.as_ref()));
        let shutdown = CancellationToken::new();
        let streams =
            crate::stream::Streams::start(&settings, Arc::clone(&transport), shutdown.clone());
        let state = AppState::new(Services {
            store,
            transport,
            jwt: Arc::new(jwt),
            hasher,
            users: Arc::new(UserCache::new(settings.user_cache_ttl)),
            login_throttle,
            session_cookie: SessionCookie {
                secure: settings.cookie_secure,
                max_age: settings.jwt_ttl,
            },
            metrics: Arc::new(Metrics::new()),
            streams,
            top_stocks: Arc::new(crate::fresh_read::FreshRead::new()),
        });
        let listener = TcpListener::bind(settings.api_addr)
            .await
            .with_context(|| format!("binding {}", settings.api_addr))?;
        let addr = listener.local_addr()?;
        let (router, internal) = match settings.internal_addr() {
            None => (routes::router(state.clone()), None),
            Some(internal_addr) => {
                let listener = TcpListener::bind(internal_addr)
                    .await
                    .with_context(|| format!("binding INTERNAL_ADDR {internal_addr}"))?;
                let internal = Internal {
                    addr: listener.local_addr()?,
                    listener,
                    router: routes::internal_router(state.clone()),
                };
                (routes::public_router(state.clone()), Some(internal))
            }
        };
        tracing::info!(
            %addr,
            internal_addr = internal.as_ref().map(|i| i.addr.to_string()),
            transport = ?settings.quote_transport,
            "API service ready to serve"
        );
        Ok(Self {
            listener,
            addr,
            router,
            internal,
            limits: settings.http_server.clone(),
            state,
            shutdown,
            grace: settings.shutdown_grace,
            handle_signals: settings.handle_signals,
        })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where /metrics, /readyz and /docs are served, when apart from the API (INTERNAL_ADDR).
    pub fn internal_addr(&self) -> Option<SocketAddr> {
        self.internal.as_ref().map(|internal| internal.addr)
    }

    /// Cancel to stop the server gracefully (same as SIGTERM).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// The shared state, e.g. for tests that create users, delete them with immediate effect
    /// (`users::delete_user(state.store.as_ref(), Some(&state.users), name)`) or read
    /// metrics. Clone it before `run_until_stopped`, which consumes the application.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub fn store(&self) -> Arc<dyn Store> {
        Arc::clone(&self.state.store)
    }

    /// Serves until the shutdown token is cancelled (or SIGTERM/Ctrl-C when signals are
    /// handled): stops accepting, lets in-flight requests finish within `SHUTDOWN_GRACE`,
    /// then closes the quote transport and the database (flushing pending writes).
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let token = self.shutdown.clone();
        if self.handle_signals {
            tokio::spawn(cancel_on_signal(token.clone()));
        }
        tokio::spawn(
            Arc::clone(&self.state.metrics)
                .run_upkeep_until(crate::metrics::UPKEEP_EVERY, token.clone()),
        );
        // The server gives handlers each client's address (the login throttle keys on it).
        let public = http_server::serve(
            self.listener,
            self.router,
            self.limits.clone(),
            token.clone().cancelled_owned(),
        );
        let internal = async {
            if let Some(internal) = self.internal {
                http_server::serve(
                    internal.listener,
                    internal.router,
                    self.limits,
                    token.clone().cancelled_owned(),
                )
                .await;
            }
        };
        let grace = self.grace;
        tokio::select! {
            _ = futures::future::join(public, internal) => {}
            _ = async {
                token.cancelled().await;
                tokio::time::sleep(grace).await;
            } => {
                tracing::warn!(?grace, "shutdown grace period over; dropping remaining connections");
            }
        }
        tracing::info!("HTTP server stopped; closing the quote transport and the database");
        self.state.transport.shutdown().await;
        self.state.store.close().await;
        Ok(())
    }
}

/// On PostgreSQL the counts are shared by every instance through the database.
fn login_throttle(settings: &Settings, store: &dyn Store) -> LoginThrottle {
    let throttle = LoginThrottle::new(
        settings.login_max_failures,
        settings.login_max_failures_per_ip,
        settings.login_lockout,
    );
    match store.postgres_pool() {
        Some(pool) => throttle.sharing_through(SharedCounts::new(pool, login_throttle::CAPACITY)),
        None => throttle,
    }
}

async fn warn_about_open_demo_accounts(store: &dyn Store) {
    match crate::users::open_demo_accounts(store).await {
        Ok(open) if !open.is_empty() => tracing::warn!(
            accounts = ?open,
            "demo accounts exist with their public demo passwords: anyone can sign in as \
             them. Delete them (`api_service users delete NAME`) before exposing this service"
        ),
        Ok(_) => {}
        Err(err) => tracing::warn!(error = %err, "could not check for demo accounts"),
    }
}

async fn cancel_on_signal(token: CancellationToken) {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("Ctrl-C received, shutting down"),
        _ = terminate => tracing::info!("SIGTERM received, shutting down"),
        _ = token.cancelled() => return,
    }
    token.cancel();
}
