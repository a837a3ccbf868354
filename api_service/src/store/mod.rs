//! Persistence for users, quote history and per-symbol request counters.
//!
//! One trait, two implementations chosen by the `DATABASE_URL` scheme: SQLite (embedded
//! default, one API instance) and PostgreSQL (several API instances). Both run the same
//! contract test suite (`tests/store_contract.rs`), so handlers never care which one they
//! talk to.
//!
//! Public entry points: [`connect`] (picks the backend from the URL), [`run_migrations`] (the
//! `migrate` subcommand) and [`Store::migrate`] (start-up, on the pool already open). Test
//! databases for the contract suite and the end-to-end crate come from [`provision`].
//!
//! `record_quote` goes through a group-commit writer (see `group_commit.rs`): concurrent
//! calls share one transaction, counters are bumped once per symbol per batch, and each call
//! returns only after that transaction committed.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

mod errors;
mod group_commit;
mod kept_connections;
mod migrations;
mod pool;
pub mod postgres;
pub mod provision;
pub mod sqlite;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// A user's role; admins may read stats and create users.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
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
    /// Bumped by every password or role change; tokens issued under an older one are refused.
    pub token_version: i64,
}

#[derive(Debug, Clone)]
pub struct NewUser {
    pub username: String,
    pub password_hash: String,
    pub role: Role,
}

/// What an admin does to an account through the API (see [`Store::change_user`]).
#[derive(Debug, Clone, PartialEq)]
pub enum UserChange {
    Delete,
    /// Either or both; the token version is bumped, so the user's tokens stop working.
    Update {
        role: Option<Role>,
        password_hash: Option<String>,
    },
}

/// How [`Store::change_user`] ended.
#[derive(Debug, Clone, PartialEq)]
pub enum ChangeOutcome {
    Deleted {
        id: i64,
    },
    Updated(User),
    NotFound,
    /// Refused: it would have left no admin.
    LastAdmin,
}

/// A logged-out token, refused until it would have expired anyway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedToken {
    pub user_id: i64,
    pub jti: String,
    /// Unix seconds: the token's own `exp`.
    pub expires_at: i64,
}

/// Live revoked tokens one user may have before a further logout revokes all of their
/// tokens at once (token version bump) instead of adding a row: bounds what a user who logs
/// in and out in a loop can make the database hold.
pub const MAX_REVOKED_PER_USER: i64 = 100;

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
    /// The entry's position in its user's history, increasing in commit order: the
    /// keyset-pagination cursor (`id < cursor`, newest first). SQLite's row id (one writer at
    /// a time, so ids are assigned in commit order); PostgreSQL's per-user `seq` (see
    /// `postgres::insert_rows`), since identity ids are not.
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

/// The connection pool at one instant, published by `/metrics` so an operator can see a pool
/// that is exhausted (`size == max`, `idle == 0`) before requests start timing out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolStats {
    /// Connections open now, idle or in use.
    pub size: u32,
    /// Open connections not in use.
    pub idle: usize,
    /// The configured ceiling (`DATABASE_MAX_CONNECTIONS`).
    pub max: u32,
}

/// What the group-commit writer has done since start-up, published by `/metrics`:
/// `rows / batches` is the average batch, the measure of how much grouping saves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriteStats {
    /// Transactions `record_quote` rows were grouped into (attempted, committed or not).
    pub batches: u64,
    /// Rows those batches carried.
    pub rows: u64,
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
    Other(sqlx::Error),
}

impl StoreError {
    /// True when the caller should answer 503 (retry later) rather than 500.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// `?` on any sqlx error sorts it into Conflict / Unavailable / Other (see `errors.rs`), so no
/// call site can forget the classification.
impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        errors::classify(err)
    }
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Fails with [`StoreError::Conflict`] when the username is taken.
    async fn create_user(&self, user: NewUser) -> Result<User, StoreError>;
    async fn user_by_username(&self, username: &str) -> Result<Option<User>, StoreError>;
    async fn user_by_id(&self, id: i64) -> Result<Option<User>, StoreError>;
    /// Up to `limit` users whose username comes after `after` (all when `None`), in byte
    /// order of the username on both backends: the admin list's keyset pages.
    async fn list_users(&self, after: Option<&str>, limit: u32) -> Result<Vec<User>, StoreError>;
    /// Deletes the user and their history; returns whether the user existed.
    async fn delete_user(&self, username: &str) -> Result<bool, StoreError>;
    /// Stores `new` as the user's password hash only if it is still `old` (so a rehash never
    /// undoes a password change that happened meanwhile); returns whether it did.
    async fn replace_password_hash(
        &self,
        user_id: i64,
        old: &str,
        new: &str,
    ) -> Result<bool, StoreError>;
    /// Deletes or updates an account in one transaction, refusing to leave no admin
    /// (concurrent changes included). An update bumps the token version.
    async fn change_user(
        &self,
        username: &str,
        change: UserChange,
    ) -> Result<ChangeOutcome, StoreError>;
    /// Records a logged-out token and purges every expired one (`expires_at <= now`, Unix
    /// seconds). Past [`MAX_REVOKED_PER_USER`] live rows for the user it bumps the user's
    /// token version and drops their rows instead: every token of theirs is refused then.
    async fn revoke_token(&self, token: RevokedToken, now: i64) -> Result<(), StoreError>;
    /// The `jti`s of the user's revoked tokens not yet expired at `now` (Unix seconds).
    async fn revoked_tokens(&self, user_id: i64, now: i64) -> Result<Vec<String>, StoreError>;
    /// Inserts the history row and bumps the symbol's counter in ONE transaction; when this
    /// returns Ok the row is committed (a 200 from /stock relies on it).
    async fn record_quote(&self, user_id: i64, entry: NewHistoryEntry) -> Result<(), StoreError>;
    /// Inserts every row and bumps each symbol's counter in ONE transaction: all committed
    /// when this returns Ok, none when it fails (a 200 from /quotes relies on it). Rows are
    /// given positions in order, so the last is the newest in the history. No rows: a no-op.
    async fn record_quotes(
        &self,
        user_id: i64,
        entries: Vec<NewHistoryEntry>,
    ) -> Result<(), StoreError>;
    /// The user's entries newest first, with `id < before` when a cursor is given, and only
    /// those of `symbol` (compared case-insensitively) when one is given.
    async fn history_page(
        &self,
        user_id: i64,
        symbol: Option<&str>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<HistoryEntry>, StoreError>;
    /// The `n` most requested symbols, highest count first, ties by symbol ascending.
    async fn top_stocks(&self, n: u32) -> Result<Vec<StockCount>, StoreError>;
    /// A cheap round trip for `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Pool occupancy now (no I/O), for `/metrics`.
    fn pool_stats(&self) -> PoolStats;
    /// The PostgreSQL pool, for state every instance must share beyond this trait (the login
    /// throttle's counts); `None` on SQLite, which serves one instance.
    fn postgres_pool(&self) -> Option<sqlx::PgPool> {
        None
    }
    /// Group-commit batches so far (no I/O), for `/metrics`.
    fn write_stats(&self) -> WriteStats;

    /// Applies the embedded schema migrations for this backend (idempotent; on PostgreSQL an
    /// advisory lock makes concurrent start-ups of several instances safe).
    async fn migrate(&self) -> Result<(), StoreError>;
    /// Bulk-inserts history rows for one user in ONE transaction (multi-row statements) and
    /// bumps the counters by the same amounts, exactly as if `record_quote` had been called
    /// for each entry in order. For benchmarks and tests that need millions of rows fast.
    async fn seed_history(
        &self,
        user_id: i64,
        entries: &[NewHistoryEntry],
    ) -> Result<(), StoreError>;
    /// Waits for queued `record_quote` writes to commit, then closes the pool. Later calls
    /// fail with [`StoreError::Unavailable`]. Call once on graceful shutdown.
    async fn close(&self);
}

/// Which database a URL points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// `sqlite:` → SQLite, `postgres:` / `postgresql:` → PostgreSQL, anything else is a
    /// configuration error (reported without echoing the URL, which may hold a password).
    pub fn from_url(database_url: &str) -> Result<Backend, StoreError> {
        let scheme = database_url
            .split_once(':')
            .map(|(scheme, _)| scheme.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("sqlite") => Ok(Backend::Sqlite),
            Some("postgres" | "postgresql") => Ok(Backend::Postgres),
            _ => Err(StoreError::Other(sqlx::Error::Configuration(
                "DATABASE_URL must start with sqlite:, postgres: or postgresql:".into(),
            ))),
        }
    }
}

/// Opens a pool of at most `max_connections` for the backend named by the URL scheme. Does not
/// migrate: call [`Store::migrate`] (start-up) or [`run_migrations`] (`migrate` subcommand).
///
/// SQLite creates the file when missing. PostgreSQL fails fast with
/// [`StoreError::Unavailable`] when the server cannot be reached.
pub async fn connect(
    database_url: &str,
    max_connections: u32,
) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match Backend::from_url(database_url)? {
        Backend::Sqlite => Arc::new(SqliteStore::connect(database_url, max_connections).await?),
        Backend::Postgres => Arc::new(PostgresStore::connect(database_url, max_connections).await?),
    })
}

/// Connects with a single connection, applies pending migrations and closes again: what the
/// `migrate` subcommand runs.
pub async fn run_migrations(database_url: &str) -> Result<(), StoreError> {
    let store = connect(database_url, 1).await?;
    let result = store.migrate().await;
    store.close().await;
    result
}

/// The `users` columns every query that builds a [`User`] selects.
pub(crate) const USER_COLUMNS: &str =
    "id, username, password_hash, role, created_at, token_version";

impl UserChange {
    /// Whether applying this to `user` would take an admin away.
    pub(crate) fn removes_admin(&self, user: &User) -> bool {
        user.role == Role::Admin
            && match self {
                UserChange::Delete => true,
                UserChange::Update { role, .. } => role.is_some_and(|r| r != Role::Admin),
            }
    }
}

/// Microsecond precision is what both backends store; truncating up front makes the value a
/// caller gets back from the store equal to the one it would read later.
pub(crate) fn truncate_to_micros(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap_or(at)
}

/// Counter key for a symbol: stats are case-insensitive (`AAPL.US` and `aapl.us` are one).
pub(crate) fn counter_key(symbol: &str) -> String {
    symbol.to_lowercase()
}
