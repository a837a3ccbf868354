//! What both backends do the same way whatever their SQL dialect: pool occupancy for
//! `/metrics` (PostgreSQL adds the connections `kept_connections.rs` holds idle), the
//! readiness round trip (SQLite; PostgreSQL's goes through its kept connections), and
//! reading a stats row.

use sqlx::{ColumnIndex, Connection, Database, Decode, Pool, Row, Type};

use super::{PoolStats, StockCount, StoreError};

pub(super) fn occupancy<DB: Database>(pool: &Pool<DB>) -> PoolStats {
    PoolStats {
        size: pool.size(),
        idle: pool.num_idle(),
        max: pool.options().get_max_connections(),
    }
}

/// One round trip on a pooled connection: proves the database answers, not just that the
/// pool holds sockets.
pub(super) async fn ping<DB: Database>(pool: &Pool<DB>) -> Result<(), StoreError> {
    let mut conn = pool.acquire().await?;
    conn.ping().await?;
    Ok(())
}

/// A `stock_counters` row (`symbol`, `times_requested`).
pub(super) fn stock_count<R>(row: &R) -> Result<StockCount, sqlx::Error>
where
    R: Row,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'a> &'a str: ColumnIndex<R>,
{
    Ok(StockCount {
        stock: row.try_get("symbol")?,
        times_requested: row.try_get("times_requested")?,
    })
}
