//! An interrupted run drops the PostgreSQL databases it created (against the real local
//! PostgreSQL).

use bench::db::{Backend, BenchDb};
use sqlx::{Connection, PgConnection};

const PG_BASE: &str = "postgres://postgres@127.0.0.1:5432";

fn pg_base() -> String {
    std::env::var("BENCH_PG_BASE").unwrap_or_else(|_| PG_BASE.to_owned())
}

async fn admin_or_skip() -> Option<PgConnection> {
    match PgConnection::connect(&format!("{}/postgres", pg_base())).await {
        Ok(conn) => Some(conn),
        Err(err) if !shared::config::running_in_ci() => {
            eprintln!("SKIPPED (PostgreSQL needed): {err}");
            None
        }
        Err(err) => panic!("PostgreSQL unreachable in CI: {err}"),
    }
}

async fn database_exists(admin: &mut PgConnection, name: &str) -> bool {
    sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(admin)
        .await
        .unwrap()
}

#[tokio::test]
async fn databases_of_a_run_that_never_closed_them_are_dropped_on_interruption() {
    let Some(mut admin) = admin_or_skip().await else {
        return;
    };
    let db = BenchDb::create(Backend::Postgres, &pg_base(), &std::env::temp_dir())
        .await
        .unwrap();
    let name = db.url.rsplit('/').next().unwrap().to_owned();
    assert!(database_exists(&mut admin, &name).await);

    // Interrupted: the scenario holding it is dropped without closing it.
    drop(db);
    bench::db::drop_created().await;

    assert!(
        !database_exists(&mut admin, &name).await,
        "{name} is still there"
    );
}

#[tokio::test]
async fn reports_name_the_settings_the_server_runs_with() {
    let Some(mut admin) = admin_or_skip().await else {
        return;
    };
    let autovacuum: String = sqlx::query_scalar("SHOW autovacuum")
        .fetch_one(&mut admin)
        .await
        .unwrap();

    let line = bench::db::server_settings(&pg_base()).await.unwrap();

    assert!(line.starts_with("PostgreSQL "), "{line}");
    assert!(
        line.contains(&format!(": autovacuum={autovacuum}, fsync=")),
        "{line}"
    );
    for name in bench::db::REPORTED_SETTINGS {
        assert!(line.contains(&format!("{name}=")), "{name} missing: {line}");
    }
}
