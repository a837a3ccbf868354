//! A short-lived in-memory view of "does user N exist, and with which role".
//!
//! Every authenticated request needs that answer (deleted users' tokens must stop working,
//! admin rights come from the database, not the token), but asking the database each time
//! would put a round trip on the hot path of `/stock`. Entries live for `USER_CACHE_TTL`
//! (at most 2 s): a user deleted through another process (the CLI, another API instance)
//! keeps working for at most that long; deletions through this instance call
//! [`UserCache::invalidate`] and take effect at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

// tokio's clock (the real one in production) lets the tests pause and advance time.
use tokio::time::Instant;

use crate::store::{Role, Store, StoreError, User};

/// Above this many entries, stale ones are swept on insert. Entries are only created for
/// ids from validly signed tokens, so the map is bounded by the number of real users.
const SWEEP_ABOVE: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// What `GET /session` tells the page the user is called.
    pub username: Arc<str>,
    pub role: Role,
    /// Unix seconds; tokens issued before this belong to an earlier holder of the id.
    pub created_at: i64,
    /// Tokens issued under another version were revoked by a password or role change.
    pub token_version: i64,
    /// `jti`s of the user's logged-out tokens that have not expired yet (a handful at most:
    /// the store caps them per user).
    pub revoked: Arc<[String]>,
}

impl UserRecord {
    pub fn new(user: &User, revoked: Vec<String>) -> Self {
        Self {
            username: user.username.as_str().into(),
            role: user.role,
            created_at: user.created_at.timestamp(),
            token_version: user.token_version,
            revoked: revoked.into(),
        }
    }

    /// Whether a token with this `jti` and version is still good for this user.
    pub fn accepts(&self, jti: &str, token_version: i64) -> bool {
        token_version == self.token_version && !self.revoked.iter().any(|r| r == jti)
    }

    /// Reads what the cache keeps about `user` from the store.
    async fn load(store: &dyn Store, user: &User) -> Result<Self, StoreError> {
        let now = chrono::Utc::now().timestamp();
        Ok(Self::new(user, store.revoked_tokens(user.id, now).await?))
    }
}

struct Entry {
    record: Option<UserRecord>,
    fetched: Instant,
}

pub struct UserCache {
    ttl: Duration,
    entries: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    by_id: HashMap<i64, Entry>,
    /// Bumped by every invalidation: a record read from the store before one must not be
    /// cached after it (it may predate a logout or a password change).
    epoch: u64,
}

impl UserCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(Entries::default()),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn epoch(&self) -> u64 {
        self.entries().epoch
    }

    /// Caches a record read from the store since `epoch`, unless an invalidation came in
    /// between.
    fn insert_if_current(&self, id: i64, record: Option<UserRecord>, epoch: u64) {
        let mut entries = self.entries();
        if entries.epoch == epoch {
            self.put(&mut entries.by_id, id, record);
        }
    }

    /// A fresh cached answer: `Some(None)` means "known not to exist".
    pub fn get(&self, id: i64) -> Option<Option<UserRecord>> {
        if self.ttl.is_zero() {
            return None;
        }
        let entries = self.entries();
        let entry = entries.by_id.get(&id)?;
        (entry.fetched.elapsed() < self.ttl).then(|| entry.record.clone())
    }

    pub fn insert(&self, id: i64, record: Option<UserRecord>) {
        self.put(&mut self.entries().by_id, id, record);
    }

    fn put(&self, entries: &mut HashMap<i64, Entry>, id: i64, record: Option<UserRecord>) {
        if self.ttl.is_zero() {
            return;
        }
        if entries.len() >= SWEEP_ABOVE {
            let ttl = self.ttl;
            entries.retain(|_, e| e.fetched.elapsed() < ttl);
        }
        entries.insert(
            id,
            Entry {
                record,
                fetched: Instant::now(),
            },
        );
    }

    pub fn invalidate(&self, id: i64) {
        let mut entries = self.entries();
        entries.by_id.remove(&id);
        entries.epoch += 1;
    }

    /// The user's record from the cache, or from the store (and then cached).
    pub async fn resolve(
        &self,
        store: &dyn Store,
        id: i64,
    ) -> Result<Option<UserRecord>, StoreError> {
        if let Some(cached) = self.get(id) {
            return Ok(cached);
        }
        self.read_through(store, id).await
    }

    async fn read_through(
        &self,
        store: &dyn Store,
        id: i64,
    ) -> Result<Option<UserRecord>, StoreError> {
        let epoch = self.epoch();
        let record = match store.user_by_id(id).await? {
            Some(user) => Some(UserRecord::load(store, &user).await?),
            None => None,
        };
        self.insert_if_current(id, record.clone(), epoch);
        Ok(record)
    }

    /// Caches `user` as just read (after a login, whose token comes straight back).
    /// Read again rather than taken from the login's own read, which is older than the
    /// password check: a change made meanwhile must not be cached over.
    pub async fn warm(&self, store: &dyn Store, user: &User) -> Result<(), StoreError> {
        self.read_through(store, user.id).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin() -> UserRecord {
        UserRecord {
            username: "someone".into(),
            role: Role::Admin,
            created_at: 0,
            token_version: 0,
            revoked: Arc::new([]),
        }
    }

    const TTL: Duration = Duration::from_secs(2);

    #[tokio::test(start_paused = true)]
    async fn entries_are_answered_until_the_ttl_is_up() {
        let cache = UserCache::new(TTL);
        cache.insert(1, Some(admin()));
        cache.insert(2, None);

        tokio::time::advance(TTL - Duration::from_millis(1)).await;

        assert_eq!(cache.get(1), Some(Some(admin())));
        assert_eq!(cache.get(2), Some(None), "known not to exist");
        assert_eq!(cache.get(3), None, "never asked");
    }

    #[tokio::test(start_paused = true)]
    async fn entries_expire_after_the_ttl() {
        let cache = UserCache::new(TTL);
        cache.insert(1, Some(admin()));
        cache.insert(2, None);

        tokio::time::advance(TTL).await;

        assert_eq!(cache.get(1), None);
        assert_eq!(cache.get(2), None);
    }

    #[test]
    fn invalidate_takes_effect_at_once() {
        let cache = UserCache::new(Duration::from_secs(2));
        cache.insert(1, Some(admin()));
        cache.invalidate(1);
        assert_eq!(cache.get(1), None);
    }

    #[test]
    fn zero_ttl_disables_caching() {
        let cache = UserCache::new(Duration::ZERO);
        cache.insert(1, Some(admin()));
        assert_eq!(cache.get(1), None);
    }
}

#[cfg(test)]
mod record_tests {
    use super::*;

    fn record(token_version: i64, revoked: &[&str]) -> UserRecord {
        UserRecord {
            username: "someone".into(),
            role: Role::User,
            created_at: 0,
            token_version,
            revoked: revoked.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn a_token_of_the_current_version_not_logged_out_is_accepted() {
        assert!(record(3, &["other"]).accepts("mine", 3));
    }

    #[test]
    fn a_logged_out_token_is_refused() {
        assert!(!record(0, &["a", "mine"]).accepts("mine", 0));
    }

    #[test]
    fn a_token_from_before_a_password_or_role_change_is_refused() {
        assert!(!record(1, &[]).accepts("mine", 0));
    }
}

#[cfg(test)]
mod invalidation_tests {
    use super::*;

    #[test]
    fn a_record_read_before_an_invalidation_is_not_cached_after_it() {
        let cache = UserCache::new(Duration::from_secs(2));
        let epoch = cache.epoch();
        let stale = UserRecord {
            username: "someone".into(),
            role: Role::User,
            created_at: 0,
            token_version: 0,
            revoked: Arc::new([]),
        };

        cache.invalidate(7);
        cache.insert_if_current(7, Some(stale), epoch);

        assert_eq!(cache.get(7), None);
    }
}
