//! What every handler can reach. Cheap to clone: everything inside is shared.

use std::sync::Arc;

use crate::auth::{Hasher, JwtKeys, LoginThrottle, SessionCookie, UserCache};
use crate::fresh_read::FreshRead;
use crate::metrics::Metrics;
use crate::store::{StockCount, Store, StoreError};
use crate::transport::QuoteTransport;

#[derive(Clone)]
pub struct AppState {
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
