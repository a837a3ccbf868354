//! PostgreSQL backend: for several API instances sharing one database.
//!
//! The pool's acquire timeout is short (2 s) so an outage turns into a fast 503 rather than a
//! hung request. Writes go through group commit with array (`UNNEST`) inserts: one statement
//! per batch whatever its size, one plan, and hot counter rows locked once per batch in symbol
//! order (so batches from different instances cannot deadlock).

use std::collections::BTreeMap;
use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, Row};
use tracing::instrument;

use super::errors::{at_endpoint, postgres_endpoint};
use super::group_commit::{BatchWriter, GroupCommit};
use super::kept_connections::{Connections, KeptConnection};
use super::pool;
use super::{
    ChangeOutcome, HistoryEntry, MAX_REVOKED_PER_USER, NewHistoryEntry, NewUser, PoolStats,
    RevokedToken, Role, StockCount, Store, StoreError, USER_COLUMNS, User, UserChange, WriteStats,
    counter_key, migrations, truncate_to_micros,
};

/// How long a request waits for a pooled connection before answering 503.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);
/// A pooled connection idle this long is pinged before it is handed out.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);
/// Rows per history insert statement (a batch is at most 512; seeding sends more); bounds
/// the size of one bind message.
const ROWS_PER_STATEMENT: usize = 10_000;

pub struct PostgresStore {
    pool: PgPool,
    /// Every operation's way to the pool.
    connections: Connections,
    commits: GroupCommit,
    /// `host:port` of the server, named in start-up and readiness errors.
    endpoint: String,
}

impl PostgresStore {
    /// Connects eagerly (one connection) so a wrong URL or a down server is reported at
    /// start-up, naming the server tried; later outages surface per call as
    /// [`StoreError::Unavailable`].
    #[instrument(skip_all, fields(backend = "postgres"))]
    pub async fn connect(database_url: &str, max_connections: u32) -> Result<Self, StoreError> {
        // Generic plans: every query here is a short index lookup or an array statement whose
        // best plan does not depend on its parameter values, yet PostgreSQL's default
        // (`auto`) kept planning each execution of the history page afresh (0.47 -> 0.29 ms
        // per page for one client, pgbench).
        let options = PgConnectOptions::from_str(database_url)?
            .application_name("api_service")
            .options([("plan_cache_mode", "force_generic_plan")]);
        let endpoint = postgres_endpoint(&options);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .idle_timeout(Some(Duration::from_secs(300)))
            // sqlx pings every connection it hands out by default: one more round trip per
            // history page and per commit. A connection in steady use has just proved itself;
            // one that sat idle (through an outage, say) is still checked and replaced. A
            // query on a connection that died since its last use fails as an outage (503),
            // named like every other (see `named`).
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_IF_IDLE_FOR {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(options)
            .await
            .map_err(|err| at_endpoint(err.into(), &endpoint))?;
        let connections = Connections::new(pool.clone());
        let commits = GroupCommit::spawn(PostgresWriter {
            connections: connections.clone(),
            endpoint: endpoint.clone(),
        });
        Ok(PostgresStore {
            pool,
            connections,
            commits,
            endpoint,
        })
    }

    /// Runs one store operation and names the server in its outage: whether acquiring a
    /// connection, BEGIN or the query itself failed (a pooled connection is not pinged before
    /// every use, so a query is often what meets a server that went away), the error says
    /// which server. "pool timed out" or "Connection refused" alone does not, and the URL
    /// cannot be logged instead: it holds the password.
    async fn named<T>(
        &self,
        op: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        op.await.map_err(|err| at_endpoint(err, &self.endpoint))
    }

    /// A connection for one operation; hand it back with `done()` once the operation has
    /// run to the end (see `kept_connections.rs`).
    async fn conn(&self) -> Result<KeptConnection, StoreError> {
        Ok(self.connections.acquire().await?)
    }

    /// The underlying pool, for tests and benchmarks that need raw SQL.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

fn user_from_row(row: &PgRow) -> Result<User, sqlx::Error> {
    let role: String = row.try_get("role")?;
    Ok(User {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        password_hash: row.try_get("password_hash")?,
        role: role
            .parse()
            .map_err(|e: String| sqlx::Error::Decode(e.into()))?,
        created_at: row.try_get("created_at")?,
        token_version: row.try_get("token_version")?,
    })
}

/// By position, in the order of the history SELECTs below (`id, requested_at, symbol, name,
/// open, high, low, close`), and without sqlx's per-value type check: a lookup by name per
/// column per row was the largest single item of the API's CPU when serving history pages,
/// and the check the next. The columns' types are fixed by the migrations and the SELECTs
/// name them; the store contract suite reads every one of them back.
fn history_from_row(row: &PgRow) -> Result<HistoryEntry, sqlx::Error> {
    Ok(HistoryEntry {
        id: row.try_get_unchecked(0)?,
        requested_at: row.try_get_unchecked(1)?,
        symbol: row.try_get_unchecked(2)?,
        name: row.try_get_unchecked(3)?,
        open: row.try_get_unchecked(4)?,
        high: row.try_get_unchecked(5)?,
        low: row.try_get_unchecked(6)?,
        close: row.try_get_unchecked(7)?,
    })
}

/// Inserts the rows (in slice order) with their positions and adds their counts to the
/// counters: ONE statement, so a batch costs one round trip and, outside a transaction, its
/// own commit (six round trips as BEGIN, lock, bump, insert, count, COMMIT: ~0.4 ms more per
/// batch on the benchmark machine, most of a lone request's database time).
///
/// Positions (`history.seq`) come from `users.history_seq`, bumped under the user's row lock,
/// which is held until commit: a later batch for the same user (from any instance) waits, so
/// a user's positions commit in order and a cursor can never pass a row that commits later.
/// The statement's parts run in a fixed order: `locked` takes the users' locks in id order
/// (the same in every batch, so two batches cannot deadlock on them) before `bumped` updates
/// them; `inserted` reads `bumped`; `counted` is not read by the final SELECT, so PostgreSQL
/// runs it last, locking the counter rows in symbol order. A row whose user was deleted
/// meanwhile gets no position and breaks `seq NOT NULL`, failing the whole statement (the
/// group commit then redoes the batch caller by caller).
async fn insert_rows(
    conn: &mut sqlx::PgConnection,
    rows: &[(i64, &NewHistoryEntry)],
) -> Result<(), sqlx::Error> {
    let len = rows.len();
    let mut counts: BTreeMap<String, i64> = BTreeMap::new();
    let mut user_ids = Vec::with_capacity(len);
    let mut requested_at: Vec<DateTime<Utc>> = Vec::with_capacity(len);
    let mut symbols = Vec::with_capacity(len);
    let mut names = Vec::with_capacity(len);
    let (mut open, mut high, mut low, mut close) = (
        Vec::with_capacity(len),
        Vec::with_capacity(len),
        Vec::with_capacity(len),
        Vec::with_capacity(len),
    );
    for (user_id, entry) in rows {
        *counts.entry(counter_key(&entry.symbol)).or_default() += 1;
        user_ids.push(*user_id);
        requested_at.push(entry.requested_at);
        symbols.push(entry.symbol.as_str());
        names.push(entry.name.as_str());
        open.push(entry.open);
        high.push(entry.high);
        low.push(entry.low);
        close.push(entry.close);
    }
    let (counter_symbols, counter_counts): (Vec<String>, Vec<i64>) = counts.into_iter().unzip();
    let inserted: i64 = sqlx::query_scalar(
        "WITH input AS ( \
             SELECT * FROM UNNEST($1::int8[], $2::timestamptz[], $3::text[], $4::text[], \
                                  $5::float8[], $6::float8[], $7::float8[], $8::float8[]) \
                  WITH ORDINALITY AS r(user_id, requested_at, symbol, name, open, high, low, close, ord) \
         ), per_user AS ( \
             SELECT user_id, count(*) AS n FROM input GROUP BY user_id \
         ), locked AS ( \
             SELECT id FROM users WHERE id IN (SELECT user_id FROM per_user) ORDER BY id FOR UPDATE \
         ), bumped AS ( \
             UPDATE users u SET history_seq = u.history_seq + p.n \
             FROM per_user p JOIN locked l ON l.id = p.user_id \
             WHERE u.id = p.user_id \
             RETURNING u.id, u.history_seq - p.n AS before \
         ), inserted AS ( \
             INSERT INTO history (user_id, seq, requested_at, symbol, name, open, high, low, close) \
             SELECT i.user_id, b.before + row_number() OVER (PARTITION BY i.user_id ORDER BY i.ord), \
                    i.requested_at, i.symbol, i.name, i.open, i.high, i.low, i.close \
             FROM input i LEFT JOIN bumped b ON b.id = i.user_id \
             ORDER BY i.ord \
             RETURNING 1 \
         ), counted AS ( \
             INSERT INTO stock_counters (symbol, times_requested) \
             SELECT symbol, n FROM UNNEST($9::text[], $10::int8[]) WITH ORDINALITY AS c(symbol, n, k) \
             ORDER BY k \
             ON CONFLICT (symbol) DO UPDATE \
             SET times_requested = stock_counters.times_requested + EXCLUDED.times_requested \
         ) \
         SELECT count(*) FROM inserted",
    )
    .bind(&user_ids)
    .bind(&requested_at)
    .bind(&symbols)
    .bind(&names)
    .bind(&open)
    .bind(&high)
    .bind(&low)
    .bind(&close)
    .bind(&counter_symbols)
    .bind(&counter_counts)
    .fetch_one(&mut *conn)
    .await?;
    if inserted != len as i64 {
        // Cannot happen (every input row is inserted or the statement fails); never report
        // rows as committed that are not.
        return Err(sqlx::Error::Protocol(format!(
            "history insert wrote {inserted} of {len} rows"
        )));
    }
    Ok(())
}

/// The group-commit writer's side of the store: one batch at a time. Its connection comes
/// back to it from batch to batch without sqlx's ping (see `kept_connections.rs`): at one
/// request per batch (low load) that ping was more than a third of PostgreSQL's CPU per
/// request (see BENCHMARKS.md, round five).
struct PostgresWriter {
    connections: Connections,
    /// Named in outages (see [`at_endpoint`]).
    endpoint: String,
}

#[async_trait]
impl BatchWriter for PostgresWriter {
    async fn write_batch(&self, rows: &[(i64, &NewHistoryEntry)]) -> Result<(), StoreError> {
        // Named here, not by the store's callers: the writer logs and hands its errors to
        // every caller in the batch.
        write_rows(&self.connections, rows)
            .await
            .map_err(|err| at_endpoint(err, &self.endpoint))
    }
}

/// Rows and their counter increments, committed together on a connection of their own. A
/// failed write's connection is dropped instead of handed back: the pool pings it and closes
/// it if the failure was the connection's.
async fn write_rows(
    connections: &Connections,
    rows: &[(i64, &NewHistoryEntry)],
) -> Result<(), StoreError> {
    let mut conn = connections.acquire().await?;
    if rows.len() <= ROWS_PER_STATEMENT {
        // One statement commits on its own: no BEGIN/COMMIT round trips.
        insert_rows(&mut conn, rows).await?;
    } else {
        let mut tx = conn.begin().await?;
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            insert_rows(&mut tx, chunk).await?;
        }
        tx.commit().await?;
    }
    conn.done();
    Ok(())
}

#[async_trait]
impl Store for PostgresStore {
    #[instrument(skip_all, fields(backend = "postgres"))]
    async fn create_user(&self, user: NewUser) -> Result<User, StoreError> {
        self.named(async {
            let mut conn = self.conn().await?;
            let created_at = truncate_to_micros(Utc::now());
            let row = sqlx::query(
                "INSERT INTO users (username, password_hash, role, created_at) \
                 VALUES ($1, $2, $3, $4) RETURNING id",
            )
            .bind(&user.username)
            .bind(&user.password_hash)
            .bind(user.role.as_str())
            .bind(created_at)
            .fetch_one(&mut *conn)
            .await?;
            conn.done();
            Ok(User {
                id: row.try_get("id")?,
                username: user.username,
                password_hash: user.password_hash,
                role: user.role,
                created_at,
                token_version: 0,
            })
        })
        .await
    }

    #[instrument(skip_all, fields(backend = "postgres"))]
    async fn user_by_username(&self, username: &str) -> Result<Option<User>, StoreError> {
        self.named(async {
            let mut conn = self.conn().await?;
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {USER_COLUMNS} FROM users WHERE username = $1"
            )))
            .bind(username)
            .fetch_optional(&mut *conn)
            .await?;
            conn.done();
            Ok(row.as_ref().map(user_from_row).transpose()?)
        })
        .await
    }

    #[instrument(skip_all, fields(backend = "postgres", user_id = id))]
    async fn user_by_id(&self, id: i64) -> Result<Option<User>, StoreError> {
        self.named(async {
            let mut conn = self.conn().await?;
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {USER_COLUMNS} FROM users WHERE id = $1"
            )))
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
            conn.done();
            Ok(row.as_ref().map(user_from_row).transpose()?)
        })
        .await
    }

    #[instrument(skip_all, fields(backend = "postgres", limit = limit))]
    async fn list_users(&self, after: Option<&str>, limit: u32) -> Result<Vec<User>, StoreError> {
        self.named(async {
            let mut conn = self.conn().await?;
            // Byte order (COLLATE "C"), as on SQLite, whatever the database's collation; served
            // by the `users_username_bytes` index (migration 6) as one range scan.
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {USER_COLUMNS} FROM users WHERE username COLLATE \"C\" > $1 \
                 ORDER BY username COLLATE \"C\" LIMIT $2"
            )))
            .bind(after.unwrap_or(""))
            .bind(i64::from(limit))
            .fetch_all(&mut *conn)
            .await?;
            conn.done();
            Ok(rows.iter().map(user_from_row).collect::<Result<_, _>>()?)
        })
        .await
    }

    #[instrument(skip_all, fields(backend = "postgres"))]
    async fn delete_user(&self, username: &str) -> Result<bool, StoreError> {
        self.named(async {
            let mut conn = self.conn().await?;
            let done = sqlx::query("DELETE FROM users WHERE username = $1")
                .bind(username)
                .execute(&mut *conn)
                .await?;
            conn.done();
            Ok(done.rows_affected() > 0)
        })
        .await
    }

    #[instrument(skip_all, fields(backend = "postgres"))]
    async fn change_user(
        &self,
        username: &str,
        change: UserChange,
    ) -> Result<ChangeOutcome, StoreError> {
        self.named(async {
            let mut conn = self.conn().await?;
            let mut tx = conn.begin().await?;
            // Every admin row and the target, locked together in id order (the order history
            // writes lock users in, so the two cannot deadlock): concurrent demotions or
            // deletions of the last admins queue here, and each sees what the one before it
            // committed.
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {USER_COLUMNS} FROM users WHERE role = 'admin' OR username = $1 \
                 ORDER BY id FOR UPDATE"
            )))
            .bind(username)
            .fetch_all(&mut *tx)
            .await?;
            let users = rows
                .iter()
                .map(user_from_row)
                .collect::<Result<Vec<User>, _>>()?;
            let admins = users.iter().filter(|u| u.role == Role::Admin).count();
            let Some(user) = users.into_iter().find(|u| u.username == username) else {
                return Ok(ChangeOutcome::NotFound);
            };
            if change.removes_admin(&user) && admins <= 1 {
                return Ok(ChangeOutcome::LastAdmin);
            }
            let outcome = match change {
                UserChange::Delete => {
                    sqlx::query("DELETE FROM users WHERE id = $1")
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
                        "UPDATE users SET role = COALESCE($2, role), \
                         password_hash = COALESCE($3, password_hash), \
                         token_version = token_version + 1 WHERE id = $1 RETURNING {USER_COLUMNS}"
                    )))
                    .bind(user.id)
                    .bind(role.map(Role::as_str))
                    .bind(password_hash)
                    .fetch_one(&mut *tx)
                    .await?;
                    ChangeOutcome::Updated(user_from_row(&row)?)
                }
            };
            tx.commit().await?;
            conn.done();
            Ok(outcome)
        })
        .await
    }

    #[instrument(skip_all, fields(backend = "postgres", user_id = token.user_id))]
    async fn revoke_token(&self, token: RevokedToken, now: i64) -> Result<(), StoreError> {
        self.named(async {
            let mut conn = self.conn().await?;
            let mut tx = conn.begin().await?;
            // The user's row lock orders this user's logouts (the count below stays exact); a
            // deleted user has no tokens left to revoke.
            let exists = sqlx::query("SELECT 1 FROM users WHERE id = $1 FOR UPDATE")
                .bind(token.user_id)
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
            if !exists {
                return Ok(());
            }
            sqlx::query("DELETE FROM revoked_tokens WHERE expires_at <= $1")
                .bind(now)
                .execute(&mut *tx)
                .await?;
            let live: i64 =
                sqlx::query_scalar("SELECT count(*) FROM revoked_tokens WHERE user_id = $1")
                    .bind(token.user_id)
                    .fetch_one(&mut *tx)
                    .await?;
            if live >= MAX_REVOKED_PER_USER {
                sqlx::query("UPDATE users SET token_version = token_version + 1 WHERE id = $1")
                    .bind(token.user_id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM revoked_tokens WHERE user_id = $1")
                    .bind(token.user_id)
                    .execute(&mut *tx)
                    .await?;
            } else {
                sqlx::query(
                    "INSERT INTO revoked_tokens (jti, user_id, expires_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (jti) DO NOTHING",
                )
                .bind(&token.jti)
                .bind(token.user_id)
                .bind(token.expires_at)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            conn.done();
            Ok(())
        })
        .await
    }

    #[instrument(skip_all, fields(backend = "postgres", user_id = user_id))]
    async fn revoked_tokens(&self, user_id: i64, now: i64) -> Result<Vec<String>, StoreError> {
        self.named(async {
            let mut conn = self.conn().await?;
            let jtis = sqlx::query_scalar(
                "SELECT jti FROM revoked_tokens WHERE user_id = $1 AND expires_at > $2",
            )
            .bind(user_id)
            .bind(now)
            .fetch_all(&mut *conn)
            .await?;
            conn.done();
            Ok(jtis)
        })
        .await
    }

    #[instrument(skip_all, fields(backend = "postgres", user_id = user_id))]
    async fn replace_password_hash(
        &self,
        user_id: i64,
        old: &str,
        new: &str,
    ) -> Result<bool, StoreError> {
        self.named(async {
            let mut conn = self.conn().await?;
            let done = sqlx::query(
                "UPDATE users SET password_hash = $1 WHERE id = $2 AND password_hash = $3",
            )
            .bind(new)
            .bind(user_id)
            .bind(old)
            .execute(&mut *conn)
            .await?;
            conn.done();
            Ok(done.rows_affected() > 0)
        })
        .await
    }

    #[instrument(skip_all, fields(backend = "postgres", user_id = user_id))]
    async fn record_quote(&self, user_id: i64, entry: NewHistoryEntry) -> Result<(), StoreError> {
        self.commits.submit(user_id, vec![entry]).await
    }

    #[instrument(skip_all, fields(backend = "postgres", user_id = user_id, rows = entries.len()))]
    async fn record_quotes(
        &self,
        user_id: i64,
        entries: Vec<NewHistoryEntry>,
    ) -> Result<(), StoreError> {
        self.commits.submit(user_id, entries).await
    }

    #[instrument(skip_all, fields(backend = "postgres", user_id = user_id, symbol = ?symbol, before = ?before, limit = limit))]
    async fn history_page(
        &self,
        user_id: i64,
        symbol: Option<&str>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        self.named(async {
            let mut conn = self.conn().await?;
            // A missing cursor is "before the end of time": one query shape per filter, one index
            // range scan (an `$2 IS NULL OR` form would defeat the index in a generic plan). The
            // symbol form uses `history_user_symbol_seq` (migration 7), whose expression
            // `upper(symbol)` it repeats exactly. Positions, not identity ids: see
            // `insert_rows`.
            let query = match symbol {
                None => sqlx::query(
                    "SELECT seq AS id, requested_at, symbol, name, open, high, low, close \
                     FROM history WHERE user_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3",
                ),
                Some(_) => sqlx::query(
                    "SELECT seq AS id, requested_at, symbol, name, open, high, low, close \
                     FROM history WHERE user_id = $1 AND seq < $2 AND upper(symbol) = $4 \
                     ORDER BY seq DESC LIMIT $3",
                ),
            };
            let query = query
                .bind(user_id)
                .bind(before.unwrap_or(i64::MAX))
                .bind(i64::from(limit));
            let query = match symbol {
                Some(symbol) => query.bind(symbol.to_ascii_uppercase()),
                None => query,
            };
            let rows = query.fetch_all(&mut *conn).await?;
            conn.done();
            Ok(rows
                .iter()
                .map(history_from_row)
                .collect::<Result<_, _>>()?)
        })
        .await
    }

    #[instrument(skip_all, fields(backend = "postgres", n = n))]
    async fn top_stocks(&self, n: u32) -> Result<Vec<StockCount>, StoreError> {
        self.named(async {
            let mut conn = self.conn().await?;
            let rows = sqlx::query(
                "SELECT symbol, times_requested FROM stock_counters \
                 ORDER BY times_requested DESC, symbol ASC LIMIT $1",
            )
            .bind(i64::from(n))
            .fetch_all(&mut *conn)
            .await?;
            conn.done();
            Ok(rows
                .iter()
                .map(pool::stock_count)
                .collect::<Result<_, _>>()?)
        })
        .await
    }

    #[instrument(skip_all, fields(backend = "postgres"))]
    async fn ping(&self) -> Result<(), StoreError> {
        self.named(async {
            let mut conn = self.conn().await?;
            conn.ping().await?;
            conn.done();
            Ok(())
        })
        .await
    }

    #[instrument(skip_all, fields(backend = "postgres"))]
    async fn migrate(&self) -> Result<(), StoreError> {
        self.named(async {
            migrations::postgres()
                .run(&self.pool)
                .await
                .map_err(|err| sqlx::Error::Migrate(Box::new(err)))?;
            Ok(())
        })
        .await
    }

    #[instrument(skip_all, fields(backend = "postgres", user_id = user_id, rows = entries.len()))]
    async fn seed_history(
        &self,
        user_id: i64,
        entries: &[NewHistoryEntry],
    ) -> Result<(), StoreError> {
        let rows: Vec<(i64, &NewHistoryEntry)> =
            entries.iter().map(|entry| (user_id, entry)).collect();
        self.named(write_rows(&self.connections, &rows)).await
    }

    fn pool_stats(&self) -> PoolStats {
        let mut stats = pool::occupancy(&self.pool);
        // Kept out of the pool, but just as free for the next operation.
        stats.idle += self.connections.idle();
        stats
    }

    fn postgres_pool(&self) -> Option<sqlx::PgPool> {
        Some(self.pool.clone())
    }

    fn write_stats(&self) -> WriteStats {
        self.commits.stats()
    }

    #[instrument(skip_all, fields(backend = "postgres"))]
    async fn close(&self) {
        self.commits.close().await;
        self.pool.close().await;
    }
}
