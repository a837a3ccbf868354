//! Brute-force protection for `POST /api/v1/login`: too many failed logins for one username,
//! or from one client address, lock that username or address out for `LOGIN_LOCKOUT`
//! (429 with `Retry-After`), before any password is checked.
//!
//! - Per username (`LOGIN_MAX_FAILURES`): stops guessing one account's password from many
//!   addresses. Unknown usernames are counted exactly like real ones, so a lockout says
//!   nothing about which accounts exist. Other users are unaffected.
//! - Per address (`LOGIN_MAX_FAILURES_PER_IP`): stops one client spraying many usernames.
//!   The address is the TCP peer's. `X-Forwarded-For` is deliberately not trusted (any client
//!   can write it), so behind a reverse proxy every client shares the proxy's address: raise
//!   the limit there or set it to 0, and rate-limit at the proxy.
//!
//! For a username, an attempt is counted as a failure when it is admitted and the count is
//! cleared when it succeeds, so a burst of concurrent guesses cannot slip past the limit
//! before the first verdict (one account rarely logs in many times at once). For an address,
//! only actual failures count: many users behind one NAT or proxy may log in at once, and
//! counting their attempts up front would lock them out for succeeding. A concurrent spray
//! from one address can therefore overshoot the per-address limit by what is in flight; each
//! username it tries is still held to its own limit. Counts are per process (each API
//! instance keeps its own), are forgotten `LOGIN_LOCKOUT` after the first failure, and the
//! tables are bounded: when full, stale entries are swept and new keys go untracked rather
//! than evicting live lockouts.

use std::collections::HashMap;
use std::convert::Infallible;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;

/// Most usernames or addresses tracked at once (a few hundred bytes each).
const MAX_TRACKED: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Strikes {
    failures: u32,
    first_failure: Instant,
    locked_until: Option<Instant>,
}

/// Failure counts for one kind of key.
struct Table<K> {
    limit: u32,
    entries: Mutex<HashMap<K, Strikes>>,
}

impl<K: Eq + Hash + Clone> Table<K> {
    fn new(limit: u32) -> Self {
        Self {
            limit,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, Strikes>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Time left on `key`'s lockout, if any.
    fn locked(&self, key: &K, now: Instant) -> Option<Duration> {
        let entries = self.lock();
        let until = entries.get(key)?.locked_until?;
        (until > now).then(|| until - now)
    }

    /// Counts one attempt as a failure; locks the key once it reaches the limit.
    fn strike(&self, key: &K, now: Instant, window: Duration) {
        if self.limit == 0 {
            return;
        }
        let mut entries = self.lock();
        if !entries.contains_key(key) && entries.len() >= MAX_TRACKED {
            entries.retain(|_, s| !expired(s, now, window));
            if entries.len() >= MAX_TRACKED {
                tracing::warn!("login throttle table full; not tracking a new key");
                return;
            }
        }
        let strikes = entries.entry(key.clone()).or_insert(Strikes {
            failures: 0,
            first_failure: now,
            locked_until: None,
        });
        if expired(strikes, now, window) {
            *strikes = Strikes {
                failures: 0,
                first_failure: now,
                locked_until: None,
            };
        }
        strikes.failures += 1;
        if strikes.failures >= self.limit {
            strikes.locked_until = Some(now + window);
        }
    }

    fn clear(&self, key: &K) {
        self.lock().remove(key);
    }
}

/// An entry whose lockout is over, or whose counting window passed without one.
fn expired(strikes: &Strikes, now: Instant, window: Duration) -> bool {
    match strikes.locked_until {
        Some(until) => until <= now,
        None => now.duration_since(strikes.first_failure) >= window,
    }
}

pub struct LoginThrottle {
    window: Duration,
    users: Table<String>,
    addresses: Table<IpAddr>,
}

impl LoginThrottle {
    /// `0` for a limit disables that half; `lockout` is both the counting window and the
    /// length of a lockout.
    pub fn new(max_failures_per_user: u32, max_failures_per_ip: u32, lockout: Duration) -> Self {
        Self {
            window: lockout,
            users: Table::new(max_failures_per_user),
            addresses: Table::new(max_failures_per_ip),
        }
    }

    /// Admits a login attempt (counting it against the username until
    /// [`succeeded`](Self::succeeded) says otherwise), or returns how long the caller must wait.
    pub fn admit(&self, username: &str, address: Option<IpAddr>) -> Result<(), Duration> {
        let now = Instant::now();
        // Names that cannot be accounts are not tracked (bounded keys); their address is.
        let user = crate::users::validate_username(username)
            .is_ok()
            .then(|| username.to_owned());
        let wait = [
            user.as_ref().and_then(|u| self.users.locked(u, now)),
            address.and_then(|a| self.addresses.locked(&a, now)),
        ]
        .into_iter()
        .flatten()
        .max();
        if let Some(wait) = wait {
            return Err(wait);
        }
        if let Some(user) = &user {
            self.users.strike(user, now, self.window);
        }
        Ok(())
    }

    /// The admitted attempt failed: it counts against the client's address.
    pub fn failed(&self, address: Option<IpAddr>) {
        if let Some(address) = address {
            self.addresses.strike(&address, Instant::now(), self.window);
        }
    }

    /// The admitted attempt was a correct login: the username's failures are forgotten.
    pub fn succeeded(&self, username: &str) {
        self.users.clear(&username.to_owned());
    }
}

/// The client's address as the TCP peer (see the module docs on proxies); `None` when the
/// server was not started with connection info (in-process router tests).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| addr.ip()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)));
    const B: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2)));

    #[test]
    fn a_username_is_locked_after_its_limit_whoever_tries() {
        let throttle = LoginThrottle::new(3, 0, Duration::from_secs(60));
        for address in [A, B, None] {
            assert!(throttle.admit("alice", address).is_ok());
        }
        let wait = throttle.admit("alice", A).unwrap_err();
        assert!(wait > Duration::from_secs(59) && wait <= Duration::from_secs(60));
        assert!(
            throttle.admit("bob", A).is_ok(),
            "other users are unaffected"
        );
    }

    #[test]
    fn an_address_is_locked_after_its_limit_of_failures_whatever_the_usernames() {
        let throttle = LoginThrottle::new(0, 3, Duration::from_secs(60));
        for name in ["a", "b", "c"] {
            assert!(throttle.admit(name, A).is_ok());
            throttle.failed(A);
        }
        assert!(throttle.admit("d", A).is_err());
        assert!(
            throttle.admit("d", B).is_ok(),
            "other addresses are unaffected"
        );
    }

    #[test]
    fn many_concurrent_good_logins_from_one_address_are_not_throttled() {
        let throttle = LoginThrottle::new(5, 3, Duration::from_secs(60));
        let users: Vec<String> = (0..200).map(|i| format!("user{i}")).collect();
        // All admitted before any verdict (a NAT, a proxy, a load generator).
        for user in &users {
            assert!(throttle.admit(user, A).is_ok(), "{user}");
        }
        for user in &users {
            throttle.succeeded(user);
        }
        assert!(throttle.admit("user0", A).is_ok());
    }

    #[test]
    fn success_clears_the_usernames_count() {
        let throttle = LoginThrottle::new(3, 0, Duration::from_secs(60));
        assert!(throttle.admit("alice", A).is_ok());
        assert!(throttle.admit("alice", A).is_ok());
        throttle.succeeded("alice");
        for _ in 0..3 {
            assert!(throttle.admit("alice", A).is_ok());
        }
        assert!(throttle.admit("alice", A).is_err());
    }

    #[test]
    fn lockouts_end_and_old_failures_are_forgotten() {
        let window = Duration::from_millis(50);
        let throttle = LoginThrottle::new(2, 0, window);
        assert!(throttle.admit("alice", None).is_ok());
        std::thread::sleep(window);
        assert!(
            throttle.admit("alice", None).is_ok(),
            "first failure forgotten"
        );
        assert!(throttle.admit("alice", None).is_ok());
        assert!(throttle.admit("alice", None).is_err());
        std::thread::sleep(window);
        assert!(throttle.admit("alice", None).is_ok(), "lockout over");
    }

    #[test]
    fn names_that_cannot_be_accounts_are_not_tracked_but_their_address_is() {
        let throttle = LoginThrottle::new(1, 2, Duration::from_secs(60));
        let huge = "x".repeat(10_000);
        for _ in 0..2 {
            assert!(throttle.admit(&huge, A).is_ok());
            throttle.failed(A);
        }
        assert!(throttle.admit(&huge, A).is_err());
        assert!(throttle.users.lock().is_empty());
    }

    #[test]
    fn zero_limits_disable_it() {
        let throttle = LoginThrottle::new(0, 0, Duration::from_secs(60));
        for _ in 0..100 {
            assert!(throttle.admit("alice", A).is_ok());
        }
    }
}
