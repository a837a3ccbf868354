//! What every handler can reach.

use std::ops::Deref;
use std::sync::Arc;

use crate::auth::{Hasher, JwtKeys, LoginThrottle, SessionCookie, UserCache};
use crate::fresh_read::FreshRead;
use crate::metrics::Metrics;
use crate::store::{StockCount, Store, StoreError};
use crate::transport::QuoteTransport;

/// Cloned by every extractor and middleware of every request, so it is one `Arc`: a clone
/// or drop is one reference count, not one per service (that was 2 % of the API's CPU on
/// the stock-hot benchmark). Fields are read through `Deref`.
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    pub fn new(services: Services) -> Self {
        Self(Arc::new(services))
    }
}

impl Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

#[derive(Clone)]
pub struct Services {
    pub store: Arc<dyn Store>,
    pub transport: Arc<dyn QuoteTransport>,
    pub jwt: Arc<JwtKeys>,
    pub hasher: Hasher,
    pub users: Arc<UserCache>,
    pub login_throttle: Arc<LoginThrottle>,
    /// How `/session` writes the browser's cookie.
    pub session_cookie: SessionCookie,
    pub metrics: Arc<Metrics>,
    /// Live-quote streams: the hub, the caps and the feed (see `stream`).
    pub streams: Arc<crate::stream::Streams>,
    /// `/stats` reads shared among concurrent admins (see `fresh_read`).
    pub top_stocks: Arc<FreshRead<Vec<StockCount>, StoreError>>,
}
