//! What every handler can reach. Cheap to clone: everything inside is shared.

use std::sync::Arc;

use crate::auth::{Hasher, JwtKeys, LoginThrottle, UserCache};
use crate::metrics::Metrics;
use crate::store::Store;
use crate::transport::QuoteTransport;

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub transport: Arc<dyn QuoteTransport>,
    pub jwt: Arc<JwtKeys>,
    pub hasher: Hasher,
    pub users: Arc<UserCache>,
    pub login_throttle: Arc<LoginThrottle>,
    pub metrics: Arc<Metrics>,
}
