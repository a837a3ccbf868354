//! Persistence for users, quote history and per-symbol request counters.
//!
//! One trait, two implementations chosen by the `DATABASE_URL` scheme: SQLite (embedded
//! default, one API instance) and PostgreSQL (several API instances). Both run the same
//! contract test suite, so handlers never care which one they talk to.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

/// A user's role; admins may read stats and create users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "user" => Ok(Role::User),
            "admin" => Ok(Role::Admin),
            other => Err(format!("unknown role {other:?} (expected user or admin)")),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub id: i64,
    pub username: String,
    /// argon2id PHC string; never logged, never serialised.
    pub password_hash: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct NewUser {
    pub username: String,
    pub password_hash: String,
    pub role: Role,
}

/// What is saved when a quote is served: the request time (UTC) and the quote's prices.
#[derive(Debug, Clone, PartialEq)]
pub struct NewHistoryEntry {
    pub requested_at: DateTime<Utc>,
    /// Upper-case, as stooq returns it (`AAPL.US`).
    pub symbol: String,
    pub name: String,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    /// Monotonic row id; also the keyset-pagination cursor (`id < cursor`, newest first).
    pub id: i64,
    pub requested_at: DateTime<Utc>,
    pub symbol: String,
    pub name: String,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
}

/// One line of the admin stats: how often a symbol was requested (lower-case symbol).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockCount {
    pub stock: String,
    pub times_requested: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Unique constraint hit, e.g. a username that already exists.
    #[error("already exists")]
    Conflict,
    /// The database cannot be reached (pool timeout, connection refused, shut down).
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error(transparent)]
    Other(#[from] sqlx::Error),
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Fails with [`StoreError::Conflict`] when the username is taken.
    async fn create_user(&self, user: NewUser) -> Result<User, StoreError>;
    async fn user_by_username(&self, username: &str) -> Result<Option<User>, StoreError>;
    async fn user_by_id(&self, id: i64) -> Result<Option<User>, StoreError>;
    /// Deletes the user and their history; returns whether the user existed.
    async fn delete_user(&self, username: &str) -> Result<bool, StoreError>;
    /// Inserts the history row and bumps the symbol's counter in ONE transaction; when this
    /// returns Ok the row is committed (a 200 from /stock relies on it).
    async fn record_quote(&self, user_id: i64, entry: NewHistoryEntry) -> Result<(), StoreError>;
    /// The user's entries newest first, with `id < before` when a cursor is given.
    async fn history_page(
        &self,
        user_id: i64,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<HistoryEntry>, StoreError>;
    /// The `n` most requested symbols, highest count first, ties by symbol ascending.
    async fn top_stocks(&self, n: u32) -> Result<Vec<StockCount>, StoreError>;
    /// A cheap round trip for `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;
}
