//! Scale-out with real processes: several `api_service` and `quote_service` binaries on one
//! PostgreSQL database and one RabbitMQ queue (the fake stooq runs in this process), killed
//! and restarted under load, and the state every instance must share checked across
//! processes.
//!
//! Each test provisions its own database and a uniquely named queue (`quotes.rpc.test.*`,
//! which the broker policy of `scripts/ensure-services.sh` expires once unused), so these
//! tests run beside the rest of the workspace. The binaries are found (or built) by
//! [`tests::processes::binary`].

mod kills;
mod shared_state;
mod sigterm;
mod stream;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use api_service::store::provision::{self, TestDatabase};
use api_service::store::{Role, Store};
use fake_stooq::FakeStooq;
use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::{Value, json};
use tests::ledger::{Call, Client, Outcome, history_symbols};
use tests::processes::{self, Process};

/// The API instances' RPC timeout. Clients give up [`HANG_MARGIN`] later: a call that reaches
/// that is a hang, recorded as lost, and fails the test.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(3);
pub const HANG_MARGIN: Duration = Duration::from_secs(2);
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the steady load asks for, and how each client paces itself.
pub const SYMBOLS: [&str; 4] = ["aapl.us", "msft.us", "^spx", "cdr"];
pub const PAUSE: Duration = Duration::from_millis(25);

/// One PostgreSQL database, one queue and one fake feed shared by every process a test
/// starts; all API processes get the same signing key, as a real deployment's would.
pub struct Cluster {
    pub store: Arc<dyn Store>,
    pub stooq: FakeStooq,
    pub queue: String,
    pub http: reqwest::Client,
    api_env: Vec<(String, String)>,
    _db: TestDatabase,
}

impl Cluster {
    /// `None` (after saying why) when RabbitMQ or PostgreSQL is absent outside CI.
    /// `api_env` is added to every API process's environment.
    pub async fn start(api_env: &[(&str, &str)]) -> Option<Cluster> {
        if !tests::rabbitmq_or_skip().await {
            return None;
        }
        let db = provision::fresh_postgres_or_skip().await?;
        let store = api_service::store::connect(db.url(), 2)
            .await
            .expect("connect to the test database");
        store.migrate().await.expect("migrate the test database");
        let queue = format!("quotes.rpc.test.{}", uuid::Uuid::new_v4().simple());
        let mut env = vec![
            ("API_ADDR", "127.0.0.1:0".to_owned()),
            ("DATABASE_URL", db.url().to_owned()),
            ("JWT_SECRET", tests::JWT_SECRET.to_owned()),
            ("QUOTE_TRANSPORT", "amqp".to_owned()),
            ("AMQP_URL", tests::AMQP_URL.to_owned()),
            ("QUOTE_QUEUE", queue.clone()),
            ("RPC_TIMEOUT", format!("{}ms", RPC_TIMEOUT.as_millis())),
            ("SHUTDOWN_GRACE", "5s".to_owned()),
            ("INTERNAL_ADDR", String::new()),
        ];
        env.extend(api_env.iter().map(|(k, v)| (*k, (*v).to_owned())));
        Some(Cluster {
            store,
            stooq: FakeStooq::start().await,
            queue,
            http: reqwest::Client::new(),
            api_env: env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            _db: db,
        })
    }

    /// An api_service process (`serve`), started and announced (not necessarily ready: that
    /// needs a worker consuming).
    pub async fn api(&self, name: &str) -> Process {
        Process::start(
            name,
            &processes::binary("api_service"),
            &["serve"],
            &self.api_env,
            "api_service::startup",
        )
        .await
    }

    /// A quote_service process on the cluster's queue, fetching every request from the fake
    /// (no cache, so upstream hits count requests), started and consuming.
    pub async fn worker(&self, name: &str) -> Process {
        let env: Vec<(String, String)> = [
            ("QUOTE_TRANSPORT", "amqp".to_owned()),
            ("AMQP_URL", tests::AMQP_URL.to_owned()),
            ("QUOTE_QUEUE", self.queue.clone()),
            ("QUOTE_HTTP_ADDR", "127.0.0.1:0".to_owned()),
            ("STOOQ_URL", self.stooq.url()),
            ("STOOQ_API_KEY", String::new()),
            ("CACHE_TTL", "0".to_owned()),
            ("NOT_FOUND_CACHE_TTL", "0".to_owned()),
            ("SHUTDOWN_GRACE", "5s".to_owned()),
            // Live quotes refresh quickly here, so a test sees many refreshes.
            ("WATCH_REFRESH", "300ms".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let mut worker = Process::start(
            name,
            &processes::binary("quote_service"),
            &[],
            &env,
            "quote_service::startup",
        )
        .await;
        worker.wait_ready(&self.http).await;
        worker
    }

    /// Creates a user (password [`tests::PASSWORD`]) directly in the database.
    pub async fn create_user(&self, username: &str) -> i64 {
        api_service::users::create_user(
            self.store.as_ref(),
            username,
            &SecretString::from(tests::PASSWORD.to_owned()),
            Role::User,
        )
        .await
        .expect("create user")
        .id
    }

    /// A user logged in through `api`.
    pub async fn client(&self, api: &Process, username: &str) -> Client {
        let user_id = self.create_user(username).await;
        let response = self.login(api, username, tests::PASSWORD).await;
        assert_eq!(response.status(), StatusCode::OK, "login of {username}");
        let body: Value = response.json().await.unwrap();
        Client {
            username: username.to_owned(),
            user_id,
            token: body["token"].as_str().expect("token").to_owned(),
        }
    }

    pub async fn login(&self, api: &Process, username: &str, password: &str) -> reqwest::Response {
        self.http
            .post(api.url("/api/v1/login"))
            .json(&json!({ "username": username, "password": password }))
            .send()
            .await
            .unwrap()
    }
}

/// Checks the database against what the clients saw. Per user and symbol, the history rows
/// are the 200s plus at most the `uncertain` calls (sent to a process killed before it could
/// answer: it may have committed the row). Per symbol, the counter equals the rows.
pub async fn assert_rows_match(store: &dyn Store, calls: &[Call], uncertain: &[&Call]) {
    type PerUser = BTreeMap<i64, BTreeMap<String, usize>>;
    let tally = |calls: &mut dyn Iterator<Item = &Call>| {
        let mut per_user = PerUser::new();
        for call in calls {
            *per_user
                .entry(call.user_id)
                .or_default()
                .entry(call.symbol.to_lowercase())
                .or_default() += 1;
        }
        per_user
    };
    let ok = tally(&mut calls.iter().filter(|c| c.status() == Some(200)));
    let maybe = tally(&mut uncertain.iter().copied());

    let mut rows_per_symbol = BTreeMap::<String, i64>::new();
    let users: std::collections::BTreeSet<i64> = calls.iter().map(|c| c.user_id).collect();
    for user_id in users {
        let rows = history_symbols(store, user_id).await;
        let served = ok.get(&user_id).cloned().unwrap_or_default();
        let unknown = maybe.get(&user_id).cloned().unwrap_or_default();
        let symbols: std::collections::BTreeSet<&String> =
            rows.keys().chain(served.keys()).collect();
        for symbol in symbols {
            let (rows, served) = (
                rows.get(symbol).copied().unwrap_or(0),
                served.get(symbol).copied().unwrap_or(0),
            );
            let unknown = unknown.get(symbol).copied().unwrap_or(0);
            assert!(
                (served..=served + unknown).contains(&rows),
                "user {user_id}, {symbol}: {rows} history rows for {served} 200s \
                 (+ {unknown} calls cut off by a kill)"
            );
        }
        for (symbol, n) in rows {
            *rows_per_symbol.entry(symbol).or_default() += n as i64;
        }
    }
    let counters: BTreeMap<String, i64> = store
        .top_stocks(100_000)
        .await
        .expect("read the counters")
        .into_iter()
        .map(|c| (c.stock.to_lowercase(), c.times_requested))
        .collect();
    assert_eq!(
        counters, rows_per_symbol,
        "stock_counters (left) differ from the history rows (right)"
    );
}

/// Calls that never got a complete answer because the client gave up: hangs.
pub fn hangs(calls: &[Call]) -> Vec<&Call> {
    calls
        .iter()
        .filter(|c| matches!(&c.outcome, Outcome::Lost(why) if why.contains("TimedOut") || c.took >= CLIENT_TIMEOUT))
        .collect()
}
