//! End-to-end specification of the API: both services in-process on free ports, the real
//! local RabbitMQ, a fresh SQLite or PostgreSQL database, and the project's fake stooq.
//! One binary (faster to build than one per file); one behaviour per test.

mod auth;
mod history;
mod stats;
mod stock;
mod tokens;
mod transport;

/// Generates `name::sqlite` and `name::postgres` tests from `async fn name(Backend)`, so
/// every storage-dependent behaviour is proven on both backends.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(tests::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(tests::Backend::Postgres).await
            }
        }
    )*};
}
