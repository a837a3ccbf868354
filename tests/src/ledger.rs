//! The client's own record of every `/stock` call, and the invariant the reliability suite
//! checks after each scenario: every 200 has exactly its history row and counter increment,
//! and nothing is stored for a call that did not get a 200.
//!
//! The ledger is the source of truth on the client side; the database is read back through
//! the [`Store`] trait (history pages and `top_stocks`), so the check works on both backends.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api_service::store::Store;
use reqwest::StatusCode;

use crate::TestApp;

/// A logged-in user the load drives.
#[derive(Debug, Clone)]
pub struct Client {
    pub username: String,
    pub user_id: i64,
    pub token: String,
}

impl Client {
    /// Creates the user in the store and logs in over HTTP.
    pub async fn new(app: &TestApp, username: &str) -> Client {
        let user_id = app
            .create_user(username, api_service::store::Role::User)
            .await;
        let response = app.login(username, crate::PASSWORD).await;
        assert_eq!(response.status(), StatusCode::OK, "login of {username}");
        let body: serde_json::Value = response.json().await.unwrap();
        Client {
            username: username.to_owned(),
            user_id,
            token: body["token"].as_str().expect("token").to_owned(),
        }
    }

    /// `n` users named `{prefix}0`, `{prefix}1`, … each logged in.
    pub async fn many(app: &TestApp, prefix: &str, n: usize) -> Vec<Client> {
        let mut clients = Vec::with_capacity(n);
        for i in 0..n {
            clients.push(Client::new(app, &format!("{prefix}{i}")).await);
        }
        clients
    }
}

/// What one call got back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// An HTTP answer: status and the envelope's `error.code` (None for a 200).
    Answer { status: u16, code: Option<String> },
    /// The connection could not be made: the server never saw the request.
    Refused(String),
    /// Sent, but no complete answer came back (timeout, connection cut): the client cannot
    /// know whether it was served. The invariant check refuses these.
    Lost(String),
}

impl Outcome {
    pub fn status(&self) -> Option<u16> {
        match self {
            Outcome::Answer { status, .. } => Some(*status),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Call {
    pub user_id: i64,
    /// As requested (the load uses lower-case symbols).
    pub symbol: String,
    pub started: Instant,
    pub took: Duration,
    pub outcome: Outcome,
}

impl Call {
    pub fn status(&self) -> Option<u16> {
        self.outcome.status()
    }
    pub fn ended(&self) -> Instant {
        self.started + self.took
    }
}

/// Longest any single call may take before the client gives up (and the call counts as lost):
/// far above every server-side timeout, so only a real hang reaches it.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);

/// Shared, cheap to clone: load tasks append to it concurrently.
#[derive(Debug, Clone)]
pub struct Ledger {
    calls: Arc<Mutex<Vec<Call>>>,
    client_timeout: Duration,
}

impl Default for Ledger {
    fn default() -> Self {
        Self::with_client_timeout(CLIENT_TIMEOUT)
    }
}

impl Ledger {
    pub fn new() -> Self {
        Self::default()
    }

    /// A ledger whose calls give up (and count as lost) after `timeout`: a bound just above
    /// the API's RPC timeout turns any hang into a recorded failure.
    pub fn with_client_timeout(timeout: Duration) -> Self {
        Self {
            calls: Arc::default(),
            client_timeout: timeout,
        }
    }

    /// One `GET /api/v1/stock?q=symbol` as `client`, recorded.
    pub async fn stock(
        &self,
        http: &reqwest::Client,
        base: &str,
        client: &Client,
        symbol: &str,
    ) -> Call {
        let started = Instant::now();
        let result = http
            .get(format!("{base}/api/v1/stock"))
            .query(&[("q", symbol)])
            .bearer_auth(&client.token)
            .timeout(self.client_timeout)
            .send()
            .await;
        let outcome = match result {
            Ok(response) => {
                let status = response.status().as_u16();
                match response.bytes().await {
                    Ok(body) => {
                        let code = serde_json::from_slice::<serde_json::Value>(&body)
                            .ok()
                            .and_then(|v| v["error"]["code"].as_str().map(str::to_owned));
                        Outcome::Answer { status, code }
                    }
                    Err(e) => Outcome::Lost(format!("body of a {status} cut off: {e}")),
                }
            }
            Err(e) if e.is_connect() => Outcome::Refused(e.to_string()),
            Err(e) => Outcome::Lost(format!("{e:?}")),
        };
        let call = Call {
            user_id: client.user_id,
            symbol: symbol.to_owned(),
            started,
            took: started.elapsed(),
            outcome,
        };
        self.calls.lock().unwrap().push(call.clone());
        call
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// How many calls got each status (`0` stands for "no HTTP answer").
    pub fn status_counts(&self) -> BTreeMap<u16, usize> {
        let mut counts = BTreeMap::new();
        for call in self.calls.lock().unwrap().iter() {
            *counts.entry(call.status().unwrap_or(0)).or_default() += 1;
        }
        counts
    }

    /// Checks the invariant against the database: per user, the history rows are exactly the
    /// 200s (same symbols, same multiplicity); per symbol, the counter equals the number of
    /// 200s. Panics with a precise account otherwise, or if any call was lost (an unknown
    /// outcome makes the check meaningless).
    pub async fn assert_consistent(&self, store: &dyn Store) {
        let calls = self.calls();
        let lost: Vec<_> = calls
            .iter()
            .filter(|c| matches!(c.outcome, Outcome::Lost(_)))
            .collect();
        assert!(
            lost.is_empty(),
            "{} call(s) got no complete answer, e.g. {:?}",
            lost.len(),
            lost[..lost.len().min(3)].to_vec()
        );

        let mut ok_by_user: HashMap<i64, BTreeMap<String, usize>> = HashMap::new();
        let mut ok_by_symbol: BTreeMap<String, i64> = BTreeMap::new();
        for call in &calls {
            let entry = ok_by_user.entry(call.user_id).or_default();
            if call.status() == Some(200) {
                let key = call.symbol.trim().to_lowercase();
                *entry.entry(key.clone()).or_default() += 1;
                *ok_by_symbol.entry(key).or_default() += 1;
            }
        }

        for (user_id, expected) in &ok_by_user {
            let stored = history_symbols(store, *user_id).await;
            assert_eq!(
                &stored, expected,
                "user {user_id}: history rows (left) differ from the 200s they got (right)"
            );
        }

        let counters: BTreeMap<String, i64> = store
            .top_stocks(100_000)
            .await
            .expect("reading the counters")
            .into_iter()
            .map(|c| (c.stock.to_lowercase(), c.times_requested))
            .collect();
        assert_eq!(
            counters, ok_by_symbol,
            "request counters (left) differ from the 200s served (right)"
        );
    }
}

/// Every history row of a user, as lower-case symbol → count, read page by page.
pub async fn history_symbols(store: &dyn Store, user_id: i64) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    let mut before = None;
    loop {
        let page = store
            .history_page(user_id, None, before, 1000)
            .await
            .expect("reading history");
        for row in &page {
            *counts.entry(row.symbol.to_lowercase()).or_default() += 1;
        }
        match page.last() {
            Some(last) if page.len() == 1000 => before = Some(last.id),
            _ => return counts,
        }
    }
}

/// Waits until `store` answers again (after a database outage), at most `limit`.
pub async fn wait_for_store(store: &dyn Store, limit: Duration) {
    let deadline = Instant::now() + limit;
    while store.ping().await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the store did not answer within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
