//! Schema migrations embedded in the binary (`include_str!`), so `api_service migrate` and
//! start-up work from any working directory without the `sqlx` macros feature. sqlx's own
//! migrator runs them: it records applied versions and checksums in `_sqlx_migrations` and,
//! on PostgreSQL, holds an advisory lock so instances starting together do not race.

use std::borrow::Cow;

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

/// (version, description, SQL). Append new files; never edit an applied one (its checksum is
/// verified on every start-up).
type Script = (i64, &'static str, &'static str);

const SQLITE: &[Script] = &[
    (
        1,
        "initial",
        include_str!("../../migrations/sqlite/0001_initial.sql"),
    ),
    (
        2,
        "revocation",
        include_str!("../../migrations/sqlite/0002_revocation.sql"),
    ),
    (
        3,
        "history by symbol",
        include_str!("../../migrations/sqlite/0003_history_by_symbol.sql"),
    ),
];

const POSTGRES: &[Script] = &[
    (
        1,
        "initial",
        include_str!("../../migrations/postgres/0001_initial.sql"),
    ),
    (
        2,
        "revocation",
        include_str!("../../migrations/postgres/0002_revocation.sql"),
    ),
    (
        3,
        "history positions",
        include_str!("../../migrations/postgres/0003_history_positions.sql"),
    ),
    (
        4,
        "login throttle",
        include_str!("../../migrations/postgres/0004_login_throttle.sql"),
    ),
    (
        5,
        "history positions for older writers",
        include_str!("../../migrations/postgres/0005_history_seq_for_older_writers.sql"),
    ),
    (
        6,
        "users in byte order",
        include_str!("../../migrations/postgres/0006_users_in_byte_order.sql"),
    ),
    (
        7,
        "history by symbol",
        include_str!("../../migrations/postgres/0007_history_by_symbol.sql"),
    ),
    (
        8,
        "lighter history writes",
        include_str!("../../migrations/postgres/0008_lighter_history_writes.sql"),
    ),
    (
        9,
        "history without id",
        include_str!("../../migrations/postgres/0009_history_without_id.sql"),
    ),
];

fn migrator(scripts: &[Script]) -> Migrator {
    Migrator::with_migrations(
        scripts
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    Cow::Borrowed(description),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

pub(super) fn sqlite() -> Migrator {
    migrator(SQLITE)
}

pub(super) fn postgres() -> Migrator {
    migrator(POSTGRES)
}
