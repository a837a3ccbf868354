//! Throw-away databases for tests: the store contract suite and the end-to-end crate both
//! use these, so every test gets its own database and parallel runs never share state.
//!
//! - [`fresh_sqlite`]: a unique file under the system temp dir, removed (with its WAL files)
//!   when the guard drops.
//! - [`fresh_postgres`]: `CREATE DATABASE test_<uuid>` on the server named by
//!   `TEST_DATABASE_URL_BASE` (default `postgres://postgres@127.0.0.1:5432`), dropped
//!   (`WITH (FORCE)`) when the guard drops. [`fresh_postgres_or_skip`] applies the project's
//!   rule: unreachable server → print why and skip, except in CI where it is a failure.
//!
//! The databases are empty: connect with [`super::connect`] and call [`super::Store::migrate`].

use std::path::PathBuf;
use std::time::Duration;

use sqlx::{Connection, Executor, PgConnection};

/// Env var naming the PostgreSQL server for test databases (no database path).
pub const TEST_DATABASE_URL_BASE: &str = "TEST_DATABASE_URL_BASE";
const DEFAULT_BASE: &str = "postgres://postgres@127.0.0.1:5432";
const ADMIN_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A database that exists for as long as this guard lives.
#[derive(Debug)]
pub struct TestDatabase {
    url: String,
    cleanup: Cleanup,
}

#[derive(Debug)]
enum Cleanup {
    SqliteFile(PathBuf),
    PostgresDatabase { admin_url: String, name: String },
}

impl TestDatabase {
    /// The `DATABASE_URL` to give the service or [`super::connect`].
    pub fn url(&self) -> &str {
        &self.url
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// No PostgreSQL server answers at the base URL (a reason to skip outside CI).
    #[error("PostgreSQL at {base} is unreachable: {reason}")]
    Unreachable { base: String, reason: String },
    /// The server answered but creating the database failed (always a failure).
    #[error("creating test database failed: {0}")]
    Create(#[source] sqlx::Error),
}

/// A fresh SQLite file URL (the file is created by the first connection).
pub fn fresh_sqlite() -> TestDatabase {
    let path = std::env::temp_dir().join(format!(
        "api_service_test_{}.db",
        uuid::Uuid::new_v4().simple()
    ));
    TestDatabase {
        url: format!("sqlite://{}", path.display()),
        cleanup: Cleanup::SqliteFile(path),
    }
}

/// The server to create test databases on, from `TEST_DATABASE_URL_BASE`.
pub fn postgres_base_url() -> String {
    std::env::var(TEST_DATABASE_URL_BASE)
        .ok()
        .filter(|base| !base.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_BASE.to_owned())
        .trim_end_matches('/')
        .to_owned()
}

async fn admin_connection(admin_url: &str) -> Result<PgConnection, String> {
    match tokio::time::timeout(ADMIN_CONNECT_TIMEOUT, PgConnection::connect(admin_url)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!("no answer within {ADMIN_CONNECT_TIMEOUT:?}")),
    }
}

/// Creates an empty, uniquely named database.
pub async fn fresh_postgres() -> Result<TestDatabase, ProvisionError> {
    let base = postgres_base_url();
    let admin_url = format!("{base}/postgres");
    let mut admin =
        admin_connection(&admin_url)
            .await
            .map_err(|reason| ProvisionError::Unreachable {
                base: base.clone(),
                reason,
            })?;
    let name = format!("test_{}", uuid::Uuid::new_v4().simple());
    // The name is ours (hex only), so formatting it into the statement is safe.
    admin
        .execute(sqlx::AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
        .await
        .map_err(ProvisionError::Create)?;
    let _ = admin.close().await;
    Ok(TestDatabase {
        url: format!("{base}/{name}"),
        cleanup: Cleanup::PostgresDatabase { admin_url, name },
    })
}

/// [`fresh_postgres`] with the project's skip rule: when the server is unreachable, prints
/// why and returns `None` (the test should return early) — but panics under CI
/// (`shared::config::running_in_ci()`), where a missing service is a failure.
pub async fn fresh_postgres_or_skip() -> Option<TestDatabase> {
    match fresh_postgres().await {
        Ok(db) => Some(db),
        Err(err @ ProvisionError::Unreachable { .. }) if !shared::config::running_in_ci() => {
            eprintln!("SKIPPED (PostgreSQL needed): {err}");
            None
        }
        Err(err) => panic!("{err}"),
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::SqliteFile(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let mut file = path.clone().into_os_string();
                    file.push(suffix);
                    let _ = std::fs::remove_file(file);
                }
            }
            Cleanup::PostgresDatabase { admin_url, name } => {
                // Drop runs in sync context, maybe inside a runtime: use a private thread and
                // runtime, and wait for it so the process does not exit first. Best effort.
                let (admin_url, name) = (admin_url.clone(), name.clone());
                let dropper = std::thread::spawn(move || {
                    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    else {
                        return;
                    };
                    runtime.block_on(async {
                        if let Ok(mut admin) = admin_connection(&admin_url).await {
                            let statement =
                                format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#);
                            if let Err(err) = admin.execute(sqlx::AssertSqlSafe(statement)).await {
                                eprintln!("could not drop test database {name}: {err}");
                            }
                            let _ = admin.close().await;
                        }
                    });
                });
                let _ = dropper.join();
            }
        }
    }
}
