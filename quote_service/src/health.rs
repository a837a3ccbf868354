//! Readiness: whether this worker can take requests right now, and if not, why (shown by
//! `/readyz` so an operator sees "connecting to RabbitMQ: connection refused" rather than 503).

use std::sync::{Arc, RwLock};

#[derive(Debug, Clone)]
pub struct Readiness {
    /// `None` when ready, else the reason it is not.
    reason: Arc<RwLock<Option<String>>>,
}

impl Readiness {
    pub fn not_ready(reason: impl Into<String>) -> Self {
        Self {
            reason: Arc::new(RwLock::new(Some(reason.into()))),
        }
    }

    pub fn set_ready(&self) {
        *self.reason.write().unwrap_or_else(|p| p.into_inner()) = None;
    }

    pub fn set_not_ready(&self, reason: impl Into<String>) {
        *self.reason.write().unwrap_or_else(|p| p.into_inner()) = Some(reason.into());
    }

    pub fn is_ready(&self) -> bool {
        self.reason().is_none()
    }

    /// Why the worker is not ready, or `None` when it is.
    pub fn reason(&self) -> Option<String> {
        self.reason
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
