//! SQLite backend: the embedded default for a single API instance.
//!
//! WAL journal (readers never block the writer), `synchronous=NORMAL` (durable across process
//! crashes; a power cut may lose the last commits but never corrupts), a busy timeout so
//! concurrent writers wait instead of failing, and foreign keys on (SQLite's default is off,
//! and history's ON DELETE CASCADE depends on it). Timestamps are INTEGER microseconds.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite};
use tracing::instrument;

use super::group_commit::{BatchWriter, GroupCommit};
use super::pool;
use super::{
    ChangeOutcome, HistoryEntry, MAX_REVOKED_PER_USER, NewHistoryEntry, NewUser, PoolStats,
    RevokedToken, Role, StockCount, Store, StoreError, USER_COLUMNS, User, UserChange, WriteStats,
    counter_key, migrations, truncate_to_micros,
};

/// How long a connection waits for another writer's lock before giving up (→ 503).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Rows per multi-row INSERT: 8 parameters each stays far below SQLite's 32766 limit.
const ROWS_PER_STATEMENT: usize = 1000;

pub struct SqliteStore {
    pool: SqlitePool,
    commits: GroupCommit,
}

impl SqliteStore {
    /// Opens (creating if missing) the database file named by a `sqlite:` URL.
    /// `sqlite::memory:` works too (one shared in-memory database kept alive by the pool).
    #[instrument(skip_all, fields(backend = "sqlite"))]
    pub async fn connect(database_url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(database_url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let in_memory = database_url.contains(":memory:") || database_url.contains("mode=memory");
        if !in_memory {
            // `sqlite:data/api.db` on a fresh volume should just work.
            if let Some(dir) = options.get_filename().parent()
                && !dir.as_os_str().is_empty()
            {
                std::fs::create_dir_all(dir).map_err(sqlx::Error::Io)?;
            }
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections.max(1))
            // An in-memory database lives only while a connection is open.
            .min_connections(u32::from(in_memory))
            .idle_timeout(if in_memory {
                None
            } else {
                Some(Duration::from_secs(600))
            })
            .max_lifetime(None)
            // A local file: nothing to probe, and a ping would cost a worker-thread hop.
            .test_before_acquire(false)
            .acquire_timeout(BUSY_TIMEOUT)
            .connect_with(options)
            .await?;
        let commits = GroupCommit::spawn(SqliteWriter { pool: pool.clone() });
        Ok(SqliteStore { pool, commits })
    }

    /// The underlying pool, for tests and benchmarks that need raw SQL.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

fn from_micros(micros: i64) -> Result<DateTime<Utc>, sqlx::Error> {
    DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| sqlx::Error::Decode(format!("timestamp {micros} µs out of range").into()))
}

fn user_from_row(row: &SqliteRow) -> Result<User, sqlx::Error> {
    let role: String = row.try_get("role")?;
    Ok(User {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        password_hash: row.try_get("password_hash")?,
        role: role
            .parse()
            .map_err(|e: String| sqlx::Error::Decode(e.into()))?,
        created_at: from_micros(row.try_get("created_at")?)?,
        token_version: row.try_get("token_version")?,
    })
}

/// By position, in the order of the history SELECTs below (`id, requested_at, symbol, name,
/// open, high, low, close`): a lookup by name per column per row was the largest single item
/// of the API's CPU when serving history pages.
fn history_from_row(row: &SqliteRow) -> Result<HistoryEntry, sqlx::Error> {
    Ok(HistoryEntry {
        id: row.try_get(0)?,
        requested_at: from_micros(row.try_get(1)?)?,
        symbol: row.try_get(2)?,
        name: row.try_get(3)?,
        open: row.try_get(4)?,
        high: row.try_get(5)?,
        low: row.try_get(6)?,
        close: row.try_get(7)?,
    })
}

/// Inserts the rows and adds their counts to the counters inside `tx`.
async fn insert_rows(
    tx: &mut sqlx::SqliteConnection,
    rows: &[(i64, &NewHistoryEntry)],
) -> Result<(), sqlx::Error> {
    let mut counts: BTreeMap<String, i64> = BTreeMap::new();
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut insert = QueryBuilder::<Sqlite>::new(
            "INSERT INTO history (user_id, requested_at, symbol, name, open, high, low, close) ",
        );
        insert.push_values(chunk, |mut values, (user_id, entry)| {
            *counts.entry(counter_key(&entry.symbol)).or_default() += 1;
            values
                .push_bind(*user_id)
                .push_bind(entry.requested_at.timestamp_micros())
                .push_bind(entry.symbol.clone())
                .push_bind(entry.name.clone())
                .push_bind(entry.open)
                .push_bind(entry.high)
                .push_bind(entry.low)
                .push_bind(entry.close);
        });
        insert.build().execute(&mut *tx).await?;
    }
    let counts: Vec<(String, i64)> = counts.into_iter().collect();
    for chunk in counts.chunks(ROWS_PER_STATEMENT) {
        let mut upsert =
            QueryBuilder::<Sqlite>::new("INSERT INTO stock_counters (symbol, times_requested) ");
        upsert.push_values(chunk, |mut values, (symbol, count)| {
            values.push_bind(symbol.clone()).push_bind(*count);
        });
        upsert.push(
            " ON CONFLICT (symbol) DO UPDATE \
             SET times_requested = times_requested + excluded.times_requested",
        );
        upsert.build().execute(&mut *tx).await?;
    }
    Ok(())
}

struct SqliteWriter {
    pool: SqlitePool,
}

#[async_trait]
impl BatchWriter for SqliteWriter {
    async fn write_batch(&self, rows: &[(i64, &NewHistoryEntry)]) -> Result<(), StoreError> {
        // IMMEDIATE takes the write lock up front (waiting up to busy_timeout) instead of
        // failing on a read-to-write upgrade.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        insert_rows(&mut tx, rows).await?;
        tx.commit().await?;
        Ok(())
    }
}

#[async_trait]
impl Store for SqliteStore {
    #[instrument(skip_all, fields(backend = "sqlite"))]
    async fn create_user(&self, user: NewUser) -> Result<User, StoreError> {
        let created_at = truncate_to_micros(Utc::now());
        let row = sqlx::query(
            "INSERT INTO users (username, password_hash, role, created_at) \
             VALUES (?, ?, ?, ?) RETURNING id",
        )
        .bind(&user.username)
        .bind(&user.password_hash)
        .bind(user.role.as_str())
        .bind(created_at.timestamp_micros())
        .fetch_one(&self.pool)
        .await?;
        Ok(User {
            id: row.try_get("id")?,
            username: user.username,
            password_hash: user.password_hash,
            role: user.role,
            created_at,
            token_version: 0,
        })
    }

    #[instrument(skip_all, fields(backend = "sqlite"))]
    async fn user_by_username(&self, username: &str) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE username = ?"
        )))
        .bind(username)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(user_from_row).transpose()?)
    }

    #[instrument(skip_all, fields(backend = "sqlite", user_id = id))]
    async fn user_by_id(&self, id: i64) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE id = ?"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(user_from_row).transpose()?)
    }

    #[instrument(skip_all, fields(backend = "sqlite", limit = limit))]
    async fn list_users(&self, after: Option<&str>, limit: u32) -> Result<Vec<User>, StoreError> {
        // Usernames are never empty, so "" is before every one: one query shape. The UNIQUE
        // index on username (BINARY collation: byte order) serves it as one range scan.
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE username > ? ORDER BY username LIMIT ?"
        )))
        .bind(after.unwrap_or(""))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(user_from_row).collect::<Result<_, _>>()?)
    }

    #[instrument(skip_all, fields(backend = "sqlite"))]
    async fn delete_user(&self, username: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM users WHERE username = ?")
            .bind(username)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    #[instrument(skip_all, fields(backend = "sqlite"))]
    async fn change_user(
        &self,
        username: &str,
        change: UserChange,
    ) -> Result<ChangeOutcome, StoreError> {
        // IMMEDIATE: the write lock up front, so the admin count cannot change before we act.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE username = ?"
        )))
        .bind(username)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(user) = row.as_ref().map(user_from_row).transpose()? else {
            return Ok(ChangeOutcome::NotFound);
        };
        if change.removes_admin(&user) {
            let admins: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE role = 'admin'")
                .fetch_one(&mut *tx)
                .await?;
            if admins <= 1 {
                return Ok(ChangeOutcome::LastAdmin);
            }
        }
        let outcome = match change {
            UserChange::Delete => {
                sqlx::query("DELETE FROM users WHERE id = ?")
                    .bind(user.id)
                    .execute(&mut *tx)
                    .await?;
                ChangeOutcome::Deleted { id: user.id }
            }
            UserChange::Update {
                role,
                password_hash,
            } => {
                let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "UPDATE users SET role = COALESCE(?, role), \
                     password_hash = COALESCE(?, password_hash), \
                     token_version = token_version + 1 WHERE id = ? RETURNING {USER_COLUMNS}"
                )))
                .bind(role.map(Role::as_str))
                .bind(password_hash)
                .bind(user.id)
                .fetch_one(&mut *tx)
                .await?;
                ChangeOutcome::Updated(user_from_row(&row)?)
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    #[instrument(skip_all, fields(backend = "sqlite", user_id = token.user_id))]
    async fn revoke_token(&self, token: RevokedToken, now: i64) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("DELETE FROM revoked_tokens WHERE expires_at <= ?")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let live: i64 = sqlx::query_scalar("SELECT count(*) FROM revoked_tokens WHERE user_id = ?")
            .bind(token.user_id)
            .fetch_one(&mut *tx)
            .await?;
        if live >= MAX_REVOKED_PER_USER {
            sqlx::query("UPDATE users SET token_version = token_version + 1 WHERE id = ?")
                .bind(token.user_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM revoked_tokens WHERE user_id = ?")
                .bind(token.user_id)
                .execute(&mut *tx)
                .await?;
        } else {
            // A deleted user has no tokens left to revoke (and no row to reference).
            sqlx::query(
                "INSERT INTO revoked_tokens (jti, user_id, expires_at) \
                 SELECT ?, id, ? FROM users WHERE id = ? ON CONFLICT (jti) DO NOTHING",
            )
            .bind(&token.jti)
            .bind(token.expires_at)
            .bind(token.user_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    #[instrument(skip_all, fields(backend = "sqlite", user_id = user_id))]
    async fn revoked_tokens(&self, user_id: i64, now: i64) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT jti FROM revoked_tokens WHERE user_id = ? AND expires_at > ?",
        )
        .bind(user_id)
        .bind(now)
        .fetch_all(&self.pool)
        .await?)
    }

    #[instrument(skip_all, fields(backend = "sqlite", user_id = user_id))]
    async fn replace_password_hash(
        &self,
        user_id: i64,
        old: &str,
        new: &str,
    ) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE users SET password_hash = ? WHERE id = ? AND password_hash = ?")
                .bind(new)
                .bind(user_id)
                .bind(old)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    #[instrument(skip_all, fields(backend = "sqlite", user_id = user_id))]
    async fn record_quote(&self, user_id: i64, entry: NewHistoryEntry) -> Result<(), StoreError> {
        self.commits.submit(user_id, vec![entry]).await
    }

    #[instrument(skip_all, fields(backend = "sqlite", user_id = user_id, rows = entries.len()))]
    async fn record_quotes(
        &self,
        user_id: i64,
        entries: Vec<NewHistoryEntry>,
    ) -> Result<(), StoreError> {
        self.commits.submit(user_id, entries).await
    }

    #[instrument(skip_all, fields(backend = "sqlite", user_id = user_id, symbol = ?symbol, before = ?before, limit = limit))]
    async fn history_page(
        &self,
        user_id: i64,
        symbol: Option<&str>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        // A missing cursor is "before the end of time": keeps one query shape, one plan, per
        // filter. The symbol form is one range scan of `history_user_symbol` (migration 3),
        // whose expression `upper(symbol)` it repeats exactly.
        let query = match symbol {
            None => sqlx::query(
                "SELECT id, requested_at, symbol, name, open, high, low, close FROM history \
                 WHERE user_id = ? AND id < ? ORDER BY id DESC LIMIT ?",
            )
            .bind(user_id),
            Some(symbol) => sqlx::query(
                "SELECT id, requested_at, symbol, name, open, high, low, close FROM history \
                 WHERE user_id = ? AND upper(symbol) = ? AND id < ? ORDER BY id DESC LIMIT ?",
            )
            .bind(user_id)
            .bind(symbol.to_ascii_uppercase()),
        };
        let rows = query
            .bind(before.unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(history_from_row)
            .collect::<Result<_, _>>()?)
    }

    #[instrument(skip_all, fields(backend = "sqlite", n = n))]
    async fn top_stocks(&self, n: u32) -> Result<Vec<StockCount>, StoreError> {
        let rows = sqlx::query(
            "SELECT symbol, times_requested FROM stock_counters \
             ORDER BY times_requested DESC, symbol ASC LIMIT ?",
        )
        .bind(i64::from(n))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(pool::stock_count)
            .collect::<Result<_, _>>()?)
    }

    #[instrument(skip_all, fields(backend = "sqlite"))]
    async fn ping(&self) -> Result<(), StoreError> {
        pool::ping(&self.pool).await
    }

    #[instrument(skip_all, fields(backend = "sqlite"))]
    async fn migrate(&self) -> Result<(), StoreError> {
        migrations::sqlite()
            .run(&self.pool)
            .await
            .map_err(|err| sqlx::Error::Migrate(Box::new(err)))?;
        Ok(())
    }

    #[instrument(skip_all, fields(backend = "sqlite", user_id = user_id, rows = entries.len()))]
    async fn seed_history(
        &self,
        user_id: i64,
        entries: &[NewHistoryEntry],
    ) -> Result<(), StoreError> {
        let rows: Vec<(i64, &NewHistoryEntry)> =
            entries.iter().map(|entry| (user_id, entry)).collect();
        SqliteWriter {
            pool: self.pool.clone(),
        }
        .write_batch(&rows)
        .await
    }

    fn pool_stats(&self) -> PoolStats {
        pool::occupancy(&self.pool)
    }

    fn write_stats(&self) -> WriteStats {
        self.commits.stats()
    }

    #[instrument(skip_all, fields(backend = "sqlite"))]
    async fn close(&self) {
        self.commits.close().await;
        self.pool.close().await;
    }
}
