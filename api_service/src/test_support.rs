//! Test doubles for unit tests: an in-memory [`Store`] and a scriptable [`QuoteTransport`].
//! Only compiled for tests; production code always talks to the real backends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use secrecy::SecretString;
use shared::{Quote, Symbol};

use crate::auth::{Hasher, JwtKeys, UserCache};
use crate::metrics::Metrics;
use crate::state::{AppState, Services};
use crate::store::{
    ChangeOutcome, HistoryEntry, MAX_REVOKED_PER_USER, NewHistoryEntry, NewUser, PoolStats,
    RevokedToken, Role, StockCount, Store, StoreError, User, UserChange, WriteStats,
};
use crate::transport::{QuoteTransport, TransportError};

#[derive(Default)]
struct Inner {
    users: Vec<User>,
    history: Vec<(i64, HistoryEntry)>,
    counters: HashMap<String, i64>,
    revoked: Vec<RevokedToken>,
    next_user: i64,
    next_row: i64,
}

#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    /// When set, every call fails as if the database were down.
    pub down: AtomicBool,
    pub user_lookups: AtomicUsize,
    /// The `limit` of every `history_page` call, in order: how the handlers page.
    pub history_page_limits: Mutex<Vec<u32>>,
}

impl MemoryStore {
    fn check(&self) -> Result<std::sync::MutexGuard<'_, Inner>, StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable(sqlx::Error::PoolTimedOut));
        }
        Ok(self.inner.lock().unwrap())
    }

    pub fn history_len(&self, user_id: i64) -> usize {
        let inner = self.inner.lock().unwrap();
        inner.history.iter().filter(|(u, _)| *u == user_id).count()
    }
}

impl Inner {
    fn record(&mut self, user_id: i64, entry: NewHistoryEntry) {
        self.next_row += 1;
        let id = self.next_row;
        *self
            .counters
            .entry(entry.symbol.to_lowercase())
            .or_default() += 1;
        self.history.push((
            user_id,
            HistoryEntry {
                id,
                requested_at: entry.requested_at,
                symbol: entry.symbol,
                name: entry.name,
                open: entry.open,
                high: entry.high,
                low: entry.low,
                close: entry.close,
            },
        ));
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn create_user(&self, user: NewUser) -> Result<User, StoreError> {
        let mut inner = self.check()?;
        if inner.users.iter().any(|u| u.username == user.username) {
            return Err(StoreError::Conflict);
        }
        inner.next_user += 1;
        let user = User {
            id: inner.next_user,
            username: user.username,
            password_hash: user.password_hash,
            role: user.role,
            created_at: Utc::now(),
            token_version: 0,
        };
        inner.users.push(user.clone());
        Ok(user)
    }
    async fn user_by_username(&self, username: &str) -> Result<Option<User>, StoreError> {
        let inner = self.check()?;
        Ok(inner.users.iter().find(|u| u.username == username).cloned())
    }
    async fn user_by_id(&self, id: i64) -> Result<Option<User>, StoreError> {
        self.user_lookups.fetch_add(1, Ordering::SeqCst);
        let inner = self.check()?;
        Ok(inner.users.iter().find(|u| u.id == id).cloned())
    }
    async fn list_users(&self, after: Option<&str>, limit: u32) -> Result<Vec<User>, StoreError> {
        let inner = self.check()?;
        let mut users: Vec<User> = inner
            .users
            .iter()
            .filter(|u| after.is_none_or(|after| u.username.as_str() > after))
            .cloned()
            .collect();
        users.sort_by(|a, b| a.username.cmp(&b.username));
        users.truncate(limit as usize);
        Ok(users)
    }
    async fn delete_user(&self, username: &str) -> Result<bool, StoreError> {
        let mut inner = self.check()?;
        let Some(pos) = inner.users.iter().position(|u| u.username == username) else {
            return Ok(false);
        };
        let user = inner.users.remove(pos);
        inner.history.retain(|(u, _)| *u != user.id);
        Ok(true)
    }
    async fn change_user(
        &self,
        username: &str,
        change: UserChange,
    ) -> Result<ChangeOutcome, StoreError> {
        let mut inner = self.check()?;
        let admins = inner.users.iter().filter(|u| u.role == Role::Admin).count();
        let Some(pos) = inner.users.iter().position(|u| u.username == username) else {
            return Ok(ChangeOutcome::NotFound);
        };
        if change.removes_admin(&inner.users[pos]) && admins <= 1 {
            return Ok(ChangeOutcome::LastAdmin);
        }
        Ok(match change {
            UserChange::Delete => {
                let user = inner.users.remove(pos);
                inner.history.retain(|(u, _)| *u != user.id);
                inner.revoked.retain(|t| t.user_id != user.id);
                ChangeOutcome::Deleted { id: user.id }
            }
            UserChange::Update {
                role,
                password_hash,
            } => {
                let user = &mut inner.users[pos];
                user.role = role.unwrap_or(user.role);
                user.password_hash = password_hash.unwrap_or(user.password_hash.clone());
                user.token_version += 1;
                ChangeOutcome::Updated(user.clone())
            }
        })
    }
    async fn revoke_token(&self, token: RevokedToken, now: i64) -> Result<(), StoreError> {
        let mut inner = self.check()?;
        inner.revoked.retain(|t| t.expires_at > now);
        let Some(pos) = inner.users.iter().position(|u| u.id == token.user_id) else {
            return Ok(());
        };
        let live = inner
            .revoked
            .iter()
            .filter(|t| t.user_id == token.user_id)
            .count();
        if live as i64 >= MAX_REVOKED_PER_USER {
            inner.users[pos].token_version += 1;
            inner.revoked.retain(|t| t.user_id != token.user_id);
        } else if !inner.revoked.iter().any(|t| t.jti == token.jti) {
            inner.revoked.push(token);
        }
        Ok(())
    }
    async fn revoked_tokens(&self, user_id: i64, now: i64) -> Result<Vec<String>, StoreError> {
        let inner = self.check()?;
        Ok(inner
            .revoked
            .iter()
            .filter(|t| t.user_id == user_id && t.expires_at > now)
            .map(|t| t.jti.clone())
            .collect())
    }
    async fn replace_password_hash(
        &self,
        user_id: i64,
        old: &str,
        new: &str,
    ) -> Result<bool, StoreError> {
        let mut inner = self.check()?;
        let user = inner
            .users
            .iter_mut()
            .find(|u| u.id == user_id && u.password_hash == old);
        Ok(user.map(|u| u.password_hash = new.to_owned()).is_some())
    }
    async fn record_quote(&self, user_id: i64, entry: NewHistoryEntry) -> Result<(), StoreError> {
        self.record_quotes(user_id, vec![entry]).await
    }
    /// All rows under one lock: as atomic as the real stores' one transaction.
    async fn record_quotes(
        &self,
        user_id: i64,
        entries: Vec<NewHistoryEntry>,
    ) -> Result<(), StoreError> {
        let mut inner = self.check()?;
        for entry in entries {
            inner.record(user_id, entry);
        }
        Ok(())
    }
    async fn history_page(
        &self,
        user_id: i64,
        symbol: Option<&str>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        self.history_page_limits.lock().unwrap().push(limit);
        let inner = self.check()?;
        let mut rows: Vec<HistoryEntry> = inner
            .history
            .iter()
            .filter(|(u, e)| *u == user_id && before.is_none_or(|b| e.id < b))
            .filter(|(_, e)| symbol.is_none_or(|s| e.symbol.eq_ignore_ascii_case(s)))
            .map(|(_, e)| e.clone())
            .collect();
        rows.sort_by_key(|e| std::cmp::Reverse(e.id));
        rows.truncate(limit as usize);
        Ok(rows)
    }
    async fn top_stocks(&self, n: u32) -> Result<Vec<StockCount>, StoreError> {
        let inner = self.check()?;
        let mut top: Vec<StockCount> = inner
            .counters
            .iter()
            .map(|(s, c)| StockCount {
                stock: s.clone(),
                times_requested: *c,
            })
            .collect();
        top.sort_by(|a, b| {
            b.times_requested
                .cmp(&a.times_requested)
                .then(a.stock.cmp(&b.stock))
        });
        top.truncate(n as usize);
        Ok(top)
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.check().map(|_| ())
    }
    /// One pretend connection, idle between calls.
    fn pool_stats(&self) -> PoolStats {
        PoolStats {
            size: 1,
            idle: 1,
            max: 1,
        }
    }
    /// No group commit: nothing batched.
    fn write_stats(&self) -> WriteStats {
        WriteStats::default()
    }
    async fn migrate(&self) -> Result<(), StoreError> {
        Ok(())
    }
    async fn seed_history(
        &self,
        user_id: i64,
        entries: &[NewHistoryEntry],
    ) -> Result<(), StoreError> {
        for e in entries {
            self.record_quote(user_id, e.clone()).await?;
        }
        Ok(())
    }
    async fn close(&self) {}
}

/// A transport whose answers the test scripts per symbol.
pub struct FakeTransport {
    pub answers: Mutex<HashMap<String, Result<Quote, TransportError>>>,
    pub ready: AtomicBool,
    pub calls: AtomicUsize,
    pub last_request_id: Mutex<Option<String>>,
}

impl Default for FakeTransport {
    fn default() -> Self {
        Self {
            answers: Mutex::default(),
            ready: AtomicBool::new(true),
            calls: AtomicUsize::new(0),
            last_request_id: Mutex::default(),
        }
    }
}

impl FakeTransport {
    pub fn answer(&self, symbol: &str, answer: Result<Quote, TransportError>) {
        self.answers
            .lock()
            .unwrap()
            .insert(symbol.to_owned(), answer);
    }
}

#[async_trait]
impl QuoteTransport for FakeTransport {
    async fn get_quote(&self, symbol: &Symbol, request_id: &str) -> Result<Quote, TransportError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        *self.last_request_id.lock().unwrap() = Some(request_id.to_owned());
        self.answers
            .lock()
            .unwrap()
            .get(symbol.as_str())
            .cloned()
            .unwrap_or_else(|| {
                Err(TransportError::Quote(shared::QuoteError::new(
                    shared::ErrorCode::NotFound,
                    format!("unknown symbol {symbol}"),
                )))
            })
    }
    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

pub fn quote(symbol: &str, name: &str, close: f64) -> Quote {
    use chrono::TimeZone;
    Quote {
        symbol: symbol.to_owned(),
        name: name.to_owned(),
        open: close + 1.0,
        high: close + 2.0,
        low: close - 1.0,
        close,
        volume: Some(1000),
        time: Utc.with_ymd_and_hms(2024, 5, 10, 20, 0, 9).unwrap(),
        local_date: chrono::NaiveDate::from_ymd_opt(2024, 5, 10).unwrap(),
        local_time: chrono::NaiveTime::from_hms_opt(22, 0, 9).unwrap(),
    }
}

pub const TEST_SECRET: &str = "unit-test-secret-0123456789abcdef-xyz";

pub fn jwt_keys() -> JwtKeys {
    JwtKeys::new(
        &SecretString::from(TEST_SECRET),
        "stock-quotes",
        "stock-quotes-api",
        Duration::from_secs(3600),
    )
    .unwrap()
}

pub async fn state(
    store: Arc<MemoryStore>,
    transport: Arc<dyn QuoteTransport>,
    cache_ttl: Duration,
) -> AppState {
    let stream_settings = crate::settings::Settings::for_tests(
        "sqlite::memory:",
        crate::settings::TestTransport::Http {
            base_url: "http://127.0.0.1:9".into(),
        },
    );
    let streams = crate::stream::Streams::start(
        &stream_settings,
        Arc::clone(&transport),
        tokio_util::sync::CancellationToken::new(),
    );
    AppState::new(Services {
        store,
        transport,
        streams,
        jwt: Arc::new(jwt_keys()),
        hasher: Hasher::new(2).await.unwrap(),
        users: Arc::new(UserCache::new(cache_ttl)),
        login_throttle: Arc::new(crate::auth::LoginThrottle::new(
            5,
            20,
            std::time::Duration::from_secs(300),
        )),
        session_cookie: crate::auth::SessionCookie {
            secure: false,
            max_age: Duration::from_secs(3600),
        },
        metrics: Arc::new(Metrics::new()),
        top_stocks: Arc::new(crate::fresh_read::FreshRead::new()),
    })
}

/// Stores a user with a real argon2 hash (fast enough: argon2 is optimised in dev builds).
pub async fn add_user(store: &MemoryStore, username: &str, password: &str, role: Role) -> User {
    crate::users::create_user(store, username, &SecretString::from(password), role)
        .await
        .unwrap()
}
