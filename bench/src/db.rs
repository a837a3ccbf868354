//! The benchmark's own database: a fresh PostgreSQL database `bench_<uuid>` (dropped at the
//! end) or a SQLite file in the run's temp dir, plus the read-only queries the harness uses to
//! check that nothing was lost (row counts, counter sums, top symbols).

use std::path::Path;
use std::sync::Mutex;

use anyhow::{Context, Result};
use sqlx::{Connection, Executor, PgConnection, PgPool, Row, SqlitePool};

/// PostgreSQL databases this process created and has not dropped yet, as (admin URL, name):
/// what [`drop_created`] drops when a run is interrupted before its scenarios close their
/// databases (a history scenario's database holds a million rows).
static CREATED: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

fn created() -> std::sync::MutexGuard<'static, Vec<(String, String)>> {
    CREATED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Drops every database this process created and has not dropped yet (best effort, reported
/// on stderr), for an interrupted run.
pub async fn drop_created() {
    let leftovers = std::mem::take(&mut *created());
    for (admin_url, name) in leftovers {
        drop_database(&admin_url, &name).await;
    }
}

/// The server's `postgres` database, from which databases are created, dropped and the
/// settings read.
fn admin_url(pg_base: &str) -> String {
    format!("{}/postgres", pg_base.trim_end_matches('/'))
}

async fn drop_database(admin_url: &str, name: &str) {
    let result = async {
        let mut admin = PgConnection::connect(admin_url).await?;
        // The name is ours (hex only), so formatting it into the statement is safe.
        admin
            .execute(sqlx::AssertSqlSafe(format!(
                r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#
            )))
            .await?;
        admin.close().await
    }
    .await;
    if let Err(err) = result {
        eprintln!("bench: could not drop database {name}: {err}");
    }
}

/// The server settings every report names: each changes what a `/stock` write costs, and a
/// server tuned for CI (this project's machines run PostgreSQL with `autovacuum = off`) is
/// not the one an operator runs.
pub const REPORTED_SETTINGS: &[&str] = &[
    "autovacuum",
    "fsync",
    "synchronous_commit",
    "full_page_writes",
    "wal_level",
    "shared_buffers",
    "max_wal_size",
    "checkpoint_timeout",
];

/// `PostgreSQL <version>: name=value, ...` for [`REPORTED_SETTINGS`], in that order and in the
/// server's own units, read from the server at `pg_base`.
pub async fn server_settings(pg_base: &str) -> Result<String> {
    // Not naming the URL: this string goes into the report, and the URL may hold a password.
    let mut conn = PgConnection::connect(&admin_url(pg_base))
        .await
        .context("connecting to PostgreSQL")?;
    let version: String = sqlx::query_scalar("SELECT current_setting('server_version')")
        .fetch_one(&mut conn)
        .await?;
    let settings: Vec<(String, String)> = sqlx::query_as(
        "SELECT name, current_setting(name) FROM unnest($1::text[]) WITH ORDINALITY AS s(name, k) \
         ORDER BY k",
    )
    .bind(REPORTED_SETTINGS)
    .fetch_all(&mut conn)
    .await?;
    let _ = conn.close().await;
    let settings: Vec<String> = settings
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    Ok(format!("PostgreSQL {version}: {}", settings.join(", ")))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Postgres,
    Sqlite,
}

pub struct BenchDb {
    pub backend: Backend,
    /// The `DATABASE_URL` for api_service.
    pub url: String,
    pool: Pool,
    /// PostgreSQL: (admin URL, database name) to drop at the end.
    drop_on_close: Option<(String, String)>,
}

enum Pool {
    Pg(PgPool),
    Sqlite(SqlitePool),
}

impl BenchDb {
    /// Creates an empty database. The schema comes from api_service's own migrations when it
    /// starts, so the harness never duplicates it.
    pub async fn create(backend: Backend, pg_base: &str, work_dir: &Path) -> Result<Self> {
        match backend {
            Backend::Postgres => {
                let base = pg_base.trim_end_matches('/');
                let admin_url = admin_url(pg_base);
                let name = format!("bench_{}", uuid::Uuid::new_v4().simple());
                let mut admin = PgConnection::connect(&admin_url)
                    .await
                    .with_context(|| format!("connecting to PostgreSQL at {base}"))?;
                // The name is ours (hex only), so formatting it into the statement is safe.
                admin
                    .execute(sqlx::AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
                    .await?;
                created().push((admin_url.clone(), name.clone()));
                let _ = admin.close().await;
                let url = format!("{base}/{name}");
                // Lazy: the tables appear only once api_service has migrated.
                let pool = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(2)
                    .connect_lazy(&url)?;
                Ok(Self {
                    backend,
                    url,
                    pool: Pool::Pg(pool),
                    drop_on_close: Some((admin_url, name)),
                })
            }
            Backend::Sqlite => {
                let path = work_dir.join("bench.db");
                let url = format!("sqlite://{}", path.display());
                let options = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(&path)
                    .create_if_missing(true)
                    .busy_timeout(std::time::Duration::from_secs(10));
                let pool = sqlx::sqlite::SqlitePoolOptions::new()
                    .max_connections(1)
                    .connect_lazy_with(options);
                Ok(Self {
                    backend,
                    url,
                    pool: Pool::Sqlite(pool),
                    drop_on_close: None,
                })
            }
        }
    }

    async fn scalar(&self, sql: &'static str) -> Result<i64> {
        Ok(match &self.pool {
            Pool::Pg(p) => sqlx::query_scalar::<_, i64>(sql).fetch_one(p).await?,
            Pool::Sqlite(p) => sqlx::query_scalar::<_, i64>(sql).fetch_one(p).await?,
        })
    }

    pub async fn history_rows(&self) -> Result<i64> {
        self.scalar("SELECT COUNT(*) FROM history").await
    }

    /// Sum of all per-symbol counters; equals the history row count when nothing was deleted.
    pub async fn counter_total(&self) -> Result<i64> {
        match self.backend {
            Backend::Postgres => {
                self.scalar("SELECT COALESCE(SUM(times_requested), 0)::BIGINT FROM stock_counters")
                    .await
            }
            Backend::Sqlite => {
                self.scalar("SELECT COALESCE(SUM(times_requested), 0) FROM stock_counters")
                    .await
            }
        }
    }

    /// Oldest and newest history cursor value of one user: the row's position (`seq`) on
    /// PostgreSQL, its `id` on SQLite (what each store's pages and cursors go by).
    pub async fn id_range(&self, user_id: i64) -> Result<(i64, i64)> {
        let sql =
            "SELECT COALESCE(MIN(seq), 0), COALESCE(MAX(seq), 0) FROM history WHERE user_id = $1";
        let sqlite_sql =
            "SELECT COALESCE(MIN(id), 0), COALESCE(MAX(id), 0) FROM history WHERE user_id = ?";
        Ok(match &self.pool {
            Pool::Pg(p) => {
                let row = sqlx::query(sql).bind(user_id).fetch_one(p).await?;
                (row.try_get(0)?, row.try_get(1)?)
            }
            Pool::Sqlite(p) => {
                let row = sqlx::query(sqlite_sql).bind(user_id).fetch_one(p).await?;
                (row.try_get(0)?, row.try_get(1)?)
            }
        })
    }

    /// The `n` most requested symbols counted from the history rows themselves (not the
    /// counters), highest first, ties by symbol: what `/stats` must agree with.
    pub async fn top_from_history(&self, n: i64) -> Result<Vec<(String, i64)>> {
        let pg = "SELECT LOWER(symbol) AS s, COUNT(*) AS c FROM history GROUP BY 1 \
                  ORDER BY c DESC, s ASC LIMIT $1";
        let lite = "SELECT LOWER(symbol) AS s, COUNT(*) AS c FROM history GROUP BY 1 \
                    ORDER BY c DESC, s ASC LIMIT ?";
        let rows = match &self.pool {
            Pool::Pg(p) => sqlx::query(pg)
                .bind(n)
                .fetch_all(p)
                .await?
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect::<Result<Vec<_>, sqlx::Error>>()?,
            Pool::Sqlite(p) => sqlx::query(lite)
                .bind(n)
                .fetch_all(p)
                .await?
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect::<Result<Vec<_>, sqlx::Error>>()?,
        };
        Ok(rows)
    }

    /// Waits until the history row count stops moving (queued group commits have landed)
    /// and returns it.
    pub async fn settled_history_rows(&self) -> Result<i64> {
        let mut last = self.history_rows().await?;
        for _ in 0..40 {
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            let now = self.history_rows().await?;
            if now == last {
                return Ok(now);
            }
            last = now;
        }
        Ok(last)
    }

    /// Closes the pool and drops the PostgreSQL database (best effort, reported on stderr).
    pub async fn close(self) {
        match self.pool {
            Pool::Pg(p) => p.close().await,
            Pool::Sqlite(p) => p.close().await,
        }
        if let Some((admin_url, name)) = self.drop_on_close {
            created().retain(|(_, created)| *created != name);
            drop_database(&admin_url, &name).await;
        }
    }
}
