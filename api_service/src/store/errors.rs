//! Sorting driver errors into what the HTTP layer needs to know: a conflict (409), an outage
//! (503, retry later) or a bug / unexpected state (500).

use super::StoreError;

/// PostgreSQL SQLSTATEs that mean "the server cannot serve us right now", not "your query is
/// wrong": connection exceptions (class 08), shutdown in progress, too many connections,
/// and a read-only server (e.g. a standby after failover).
fn is_postgres_outage(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300" | "25006")
}

/// SQLite result codes (primary code = low byte of the extended code) that mean the database
/// cannot be used right now: BUSY/LOCKED after busy_timeout, I/O errors, disk full,
/// cannot open.
fn is_sqlite_outage(code: &str) -> bool {
    const SQLITE_BUSY: i64 = 5;
    const SQLITE_LOCKED: i64 = 6;
    const SQLITE_IOERR: i64 = 10;
    const SQLITE_FULL: i64 = 13;
    const SQLITE_CANTOPEN: i64 = 14;
    code.parse::<i64>().is_ok_and(|extended| {
        matches!(
            extended & 0xff,
            SQLITE_BUSY | SQLITE_LOCKED | SQLITE_IOERR | SQLITE_FULL | SQLITE_CANTOPEN
        )
    })
}

pub(super) fn classify(err: sqlx::Error) -> StoreError {
    let outage = match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => return StoreError::Conflict,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            if db
                .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .is_some()
            {
                is_postgres_outage(&code)
            } else if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                is_sqlite_outage(&code)
            } else {
                false
            }
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Migrate(migrate) => {
            return match classify_migrate(migrate) {
                true => StoreError::Unavailable(err),
                false => StoreError::Other(err),
            };
        }
        _ => false,
    };
    if outage {
        StoreError::Unavailable(err)
    } else {
        StoreError::Other(err)
    }
}

fn classify_migrate(err: &sqlx::migrate::MigrateError) -> bool {
    match err {
        sqlx::migrate::MigrateError::Execute(inner)
        | sqlx::migrate::MigrateError::ExecuteMigration(inner, _) => {
            matches!(
                inner,
                sqlx::Error::Io(_)
                    | sqlx::Error::Tls(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::WorkerCrashed
            )
        }
        _ => false,
    }
}

/// A driver error together with the server it came from. "pool timed out" or "Connection
/// refused" alone does not say which of the configured addresses was tried; the URL cannot be
/// logged instead, since it holds the password.
#[derive(Debug, thiserror::Error)]
#[error("PostgreSQL at {endpoint}: {source}")]
pub(super) struct AtEndpoint {
    endpoint: String,
    #[source]
    source: sqlx::Error,
}

/// Names the server in an outage ([`StoreError::Unavailable`]); other errors are left as
/// they are. The error stays an outage (an I/O error) for every caller that sorts errors.
pub(super) fn at_endpoint(err: StoreError, endpoint: &str) -> StoreError {
    match err {
        StoreError::Unavailable(source) => {
            StoreError::Unavailable(sqlx::Error::Io(std::io::Error::other(AtEndpoint {
                endpoint: endpoint.to_owned(),
                source,
            })))
        }
        other => other,
    }
}

/// `host:port` of a PostgreSQL connection (or its Unix socket), never the credentials.
pub(super) fn postgres_endpoint(options: &sqlx::postgres::PgConnectOptions) -> String {
    if let Some(socket) = options.get_socket() {
        return format!("socket {}", socket.display());
    }
    // sqlx keeps the brackets of a URL's IPv6 host; a host given otherwise may lack them.
    let host = options.get_host();
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{}", options.get_port())
    } else {
        format!("{host}:{}", options.get_port())
    }
}

/// A stand-in for an error that must be reported to several waiters (sqlx errors are not
/// `Clone`): keeps the classification and the message.
pub(super) fn replicate(err: &StoreError) -> StoreError {
    match err {
        StoreError::Conflict => StoreError::Conflict,
        StoreError::Unavailable(inner) => {
            StoreError::Unavailable(sqlx::Error::Io(std::io::Error::other(inner.to_string())))
        }
        StoreError::Other(inner) => StoreError::Other(sqlx::Error::Protocol(inner.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_codes() {
        assert!(is_sqlite_outage("5"));
        assert!(is_sqlite_outage("517")); // SQLITE_BUSY_SNAPSHOT
        assert!(is_sqlite_outage("3338")); // SQLITE_IOERR_FSYNC-ish extended code
        assert!(!is_sqlite_outage("2067")); // SQLITE_CONSTRAINT_UNIQUE
        assert!(!is_sqlite_outage("1"));
    }

    #[test]
    fn postgres_codes() {
        assert!(is_postgres_outage("08006"));
        assert!(is_postgres_outage("57P01"));
        assert!(!is_postgres_outage("23505"));
        assert!(!is_postgres_outage("42P01"));
    }

    #[test]
    fn an_outage_names_the_server_once_and_never_the_password() {
        use std::str::FromStr;
        let options =
            sqlx::postgres::PgConnectOptions::from_str("postgres://app:hunter2@db.internal:6543/q")
                .unwrap();
        let endpoint = postgres_endpoint(&options);

        let err = at_endpoint(
            StoreError::Unavailable(sqlx::Error::PoolTimedOut),
            &endpoint,
        );
        let line = shared::error_chain::report(&err);

        assert!(err.is_unavailable());
        assert_eq!(line.matches("db.internal:6543").count(), 1, "{line}");
        assert_eq!(line.matches("pool timed out").count(), 1, "{line}");
        assert!(!line.contains("hunter2"), "{line}");
    }

    #[test]
    fn only_outages_are_located() {
        assert!(matches!(
            at_endpoint(StoreError::Conflict, "db:5432"),
            StoreError::Conflict
        ));
    }

    #[test]
    fn ipv6_hosts_are_bracketed() {
        use std::str::FromStr;
        let options =
            sqlx::postgres::PgConnectOptions::from_str("postgres://u@[::1]:5433/q").unwrap();
        assert_eq!(postgres_endpoint(&options), "[::1]:5433");
    }

    #[test]
    fn pool_errors_are_outages() {
        assert!(classify(sqlx::Error::PoolTimedOut).is_unavailable());
        assert!(classify(sqlx::Error::PoolClosed).is_unavailable());
        assert!(!classify(sqlx::Error::RowNotFound).is_unavailable());
    }
}
