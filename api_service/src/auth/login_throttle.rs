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
//! For a username, an undecided attempt takes one of the `limit` slots its failures use, so
//! a burst of concurrent guesses cannot slip past the limit before the first verdict. It
//! holds the slot only while undecided, not as a failure: a user logging in from several
//! devices at once must not be throttled for succeeding, and an attempt that never reaches a
//! verdict (the client went away, a panic, a database error) must not count against the
//! account. So an attempt that finds every free slot taken by attempts in flight waits for
//! one (briefly: `MAX_WAIT`, then 429) rather than being refused, and the slot is held by an
//! [`Attempt`] guard that frees it on drop.
//!
//! For an address, only actual failures count: many users behind one NAT or proxy may log
//! in at once, and counting their attempts up front would lock them out for succeeding. A
//! concurrent spray from one address can therefore overshoot the per-address limit by what
//! is in flight; each username it tries is still held to its own limit. Counts are per
//! process (each API instance keeps its own), are forgotten `LOGIN_LOCKOUT` after the first
//! failure, and the tables are bounded: when full, stale entries (never ones with attempts
//! in flight) are swept and new keys go untracked rather than evicting live lockouts.

use std::collections::HashMap;
use std::convert::Infallible;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use tokio::sync::Notify;

/// Most usernames or addresses tracked at once (a few hundred bytes each).
const MAX_TRACKED: usize = 100_000;

/// How long an attempt waits for a username's attempts in flight to free a slot. A login is
/// one argon2 hash, well under a second, so this runs out only if the account is flooded.
const MAX_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy)]
struct Strikes {
    failures: u32,
    /// Meaningless while `failures` is 0.
    first_failure: Instant,
    locked_until: Option<Instant>,
    /// Admitted attempts still without a verdict (always 0 for addresses).
    in_flight: u32,
}

impl Strikes {
    /// No failures worth remembering: none, a lockout that is over, or a counting window
    /// that passed without one.
    fn expired(&self, now: Instant, window: Duration) -> bool {
        match self.locked_until {
            Some(until) => until <= now,
            None => self.failures == 0 || now.duration_since(self.first_failure) >= window,
        }
    }

    fn forget_failures(&mut self) {
        self.failures = 0;
        self.locked_until = None;
    }
}

/// The answer to asking for one of a key's slots.
enum Slot {
    /// Admitted; `tracked` is false when nothing was counted (limit 0, or the table is full).
    Held {
        tracked: bool,
    },
    Locked(Duration),
    /// Every free slot is taken by attempts in flight.
    Busy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Succeeded,
    Failed,
}

/// Failure (and, for usernames, in-flight) counts for one kind of key.
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

    /// Takes one of `key`'s slots for an attempt in flight, if its failures and attempts in
    /// flight leave one free.
    fn reserve(&self, key: &K, now: Instant, window: Duration) -> Slot {
        if self.limit == 0 {
            return Slot::Held { tracked: false };
        }
        let mut entries = self.lock();
        let Some(strikes) = entry(&mut entries, key, now, window) else {
            return Slot::Held { tracked: false };
        };
        if let Some(until) = strikes.locked_until {
            return Slot::Locked(until - now);
        }
        if strikes.failures + strikes.in_flight >= self.limit {
            return Slot::Busy;
        }
        strikes.in_flight += 1;
        Slot::Held { tracked: true }
    }

    /// Records how an attempt on `key` ended and frees its slot if it `held` one. A failure
    /// locks the key once it reaches the limit; a success forgets the key's failures.
    fn finish(
        &self,
        key: &K,
        held: bool,
        verdict: Option<Verdict>,
        now: Instant,
        window: Duration,
    ) {
        if self.limit == 0 {
            return;
        }
        let mut entries = self.lock();
        if verdict == Some(Verdict::Failed)
            && let Some(strikes) = entry(&mut entries, key, now, window)
        {
            if strikes.failures == 0 {
                strikes.first_failure = now;
            }
            strikes.failures += 1;
            if strikes.failures >= self.limit {
                strikes.locked_until = Some(now + window);
            }
        }
        let Some(strikes) = entries.get_mut(key) else {
            return;
        };
        if held {
            strikes.in_flight -= 1;
        }
        if verdict == Some(Verdict::Succeeded) {
            strikes.forget_failures();
        }
        if strikes.in_flight == 0 && strikes.failures == 0 {
            entries.remove(key);
        }
    }
}

/// `key`'s entry with expired failures forgotten, created if there is room. A full table is
/// swept of entries with nothing to remember; ones with attempts in flight always stay.
fn entry<'a, K: Eq + Hash + Clone>(
    entries: &'a mut HashMap<K, Strikes>,
    key: &K,
    now: Instant,
    window: Duration,
) -> Option<&'a mut Strikes> {
    if !entries.contains_key(key) && entries.len() >= MAX_TRACKED {
        entries.retain(|_, s| s.in_flight > 0 || !s.expired(now, window));
        if entries.len() >= MAX_TRACKED {
            tracing::warn!("login throttle table full; not tracking a new key");
            return None;
        }
    }
    let strikes = entries.entry(key.clone()).or_insert(Strikes {
        failures: 0,
        first_failure: now,
        locked_until: None,
        in_flight: 0,
    });
    if strikes.expired(now, window) {
        strikes.forget_failures();
    }
    Some(strikes)
}

/// Why a login attempt was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Too many failures: the username or address is locked out for this long.
    LockedOut(Duration),
    /// The username's other attempts stayed in flight for the whole wait.
    Busy,
}

pub struct LoginThrottle {
    window: Duration,
    max_wait: Duration,
    users: Table<String>,
    addresses: Table<IpAddr>,
    /// Wakes attempts waiting for a slot whenever any attempt ends.
    finished: Notify,
}

impl LoginThrottle {
    /// `0` for a limit disables that half; `lockout` is both the counting window and the
    /// length of a lockout.
    pub fn new(max_failures_per_user: u32, max_failures_per_ip: u32, lockout: Duration) -> Self {
        Self {
            window: lockout,
            max_wait: MAX_WAIT,
            users: Table::new(max_failures_per_user),
            addresses: Table::new(max_failures_per_ip),
            finished: Notify::new(),
        }
    }

    /// Admits a login attempt, waiting (a few seconds at most) while the username's slots
    /// are all taken by attempts in flight. Report the verdict through the returned
    /// [`Attempt`].
    pub async fn admit(
        &self,
        username: &str,
        address: Option<IpAddr>,
    ) -> Result<Attempt<'_>, Refusal> {
        // Names that cannot be accounts are not tracked (bounded keys); their address is.
        let user = crate::users::validate_username(username)
            .is_ok()
            .then(|| username.to_owned());
        let deadline = tokio::time::Instant::now() + self.max_wait;
        loop {
            // Listen before looking, so an attempt that ends in between still wakes us.
            let finished = self.finished.notified();
            let mut finished = std::pin::pin!(finished);
            finished.as_mut().enable();

            let now = Instant::now();
            let lockout = [
                user.as_ref().and_then(|u| self.users.locked(u, now)),
                address.and_then(|a| self.addresses.locked(&a, now)),
            ]
            .into_iter()
            .flatten()
            .max();
            if let Some(wait) = lockout {
                return Err(Refusal::LockedOut(wait));
            }
            let slot = match &user {
                Some(user) => self.users.reserve(user, now, self.window),
                None => Slot::Held { tracked: false },
            };
            match slot {
                Slot::Held { tracked } => {
                    return Ok(Attempt {
                        throttle: self,
                        user,
                        address,
                        held: tracked,
                        verdict: None,
                    });
                }
                Slot::Locked(wait) => return Err(Refusal::LockedOut(wait)),
                Slot::Busy => {}
            }
            if tokio::time::timeout_at(deadline, finished).await.is_err() {
                return Err(Refusal::Busy);
            }
        }
    }
}

/// An admitted login attempt, holding one of its username's slots until dropped. Say how it
/// ended with [`succeeded`](Self::succeeded) or [`failed`](Self::failed); dropped without a
/// verdict it counts as nothing.
#[must_use = "dropping the attempt at once records no verdict"]
pub struct Attempt<'a> {
    throttle: &'a LoginThrottle,
    user: Option<String>,
    address: Option<IpAddr>,
    held: bool,
    verdict: Option<Verdict>,
}

impl Attempt<'_> {
    /// A correct login: the username's failures are forgotten.
    pub fn succeeded(mut self) {
        self.verdict = Some(Verdict::Succeeded);
    }

    /// A wrong password or unknown username: one failure for the username and the address.
    pub fn failed(mut self) {
        self.verdict = Some(Verdict::Failed);
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        let throttle = self.throttle;
        let now = Instant::now();
        if let Some(user) = &self.user {
            let users = &throttle.users;
            users.finish(user, self.held, self.verdict, now, throttle.window);
        }
        if let (Some(address), Some(Verdict::Failed)) = (self.address, self.verdict) {
            let addresses = &throttle.addresses;
            addresses.finish(&address, false, self.verdict, now, throttle.window);
        }
        throttle.finished.notify_waiters();
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
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    const A: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)));
    const B: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2)));

    impl LoginThrottle {
        async fn fail(&self, username: &str, address: Option<IpAddr>) {
            self.admit(username, address).await.unwrap().failed();
        }
    }

    fn locked_out(refusal: Result<Attempt<'_>, Refusal>) -> Duration {
        match refusal {
            Err(Refusal::LockedOut(wait)) => wait,
            Err(Refusal::Busy) => panic!("busy, not locked out"),
            Ok(_) => panic!("admitted"),
        }
    }

    #[tokio::test]
    async fn a_username_is_locked_after_its_limit_whoever_tries() {
        let throttle = LoginThrottle::new(3, 0, Duration::from_secs(60));
        for address in [A, B, None] {
            throttle.fail("alice", address).await;
        }
        let wait = locked_out(throttle.admit("alice", A).await);
        assert!(wait > Duration::from_secs(59) && wait <= Duration::from_secs(60));
        assert!(
            throttle.admit("bob", A).await.is_ok(),
            "other users are unaffected"
        );
    }

    #[tokio::test]
    async fn an_address_is_locked_after_its_limit_of_failures_whatever_the_usernames() {
        let throttle = LoginThrottle::new(0, 3, Duration::from_secs(60));
        for name in ["a", "b", "c"] {
            throttle.fail(name, A).await;
        }
        locked_out(throttle.admit("d", A).await);
        assert!(
            throttle.admit("d", B).await.is_ok(),
            "other addresses are unaffected"
        );
    }

    #[tokio::test]
    async fn many_concurrent_good_logins_from_one_address_are_not_throttled() {
        let throttle = LoginThrottle::new(5, 3, Duration::from_secs(60));
        let users: Vec<String> = (0..200).map(|i| format!("user{i}")).collect();
        // All admitted before any verdict (a NAT, a proxy, a load generator).
        let mut attempts = Vec::new();
        for user in &users {
            attempts.push(throttle.admit(user, A).await.expect(user));
        }
        attempts.into_iter().for_each(Attempt::succeeded);
        assert!(throttle.admit("user0", A).await.is_ok());
        assert!(throttle.users.lock().is_empty(), "nothing left to remember");
    }

    #[tokio::test]
    async fn success_clears_the_usernames_count() {
        let throttle = LoginThrottle::new(3, 0, Duration::from_secs(60));
        throttle.fail("alice", A).await;
        throttle.fail("alice", A).await;
        throttle.admit("alice", A).await.unwrap().succeeded();
        for _ in 0..3 {
            throttle.fail("alice", A).await;
        }
        locked_out(throttle.admit("alice", A).await);
    }

    #[tokio::test]
    async fn lockouts_end_and_old_failures_are_forgotten() {
        let window = Duration::from_millis(50);
        let throttle = LoginThrottle::new(2, 0, window);
        throttle.fail("alice", None).await;
        tokio::time::sleep(window).await;
        throttle.fail("alice", None).await;
        assert!(
            throttle.admit("alice", None).await.is_ok(),
            "first failure forgotten"
        );
        throttle.fail("alice", None).await;
        locked_out(throttle.admit("alice", None).await);
        tokio::time::sleep(window).await;
        assert!(throttle.admit("alice", None).await.is_ok(), "lockout over");
    }

    /// Runs `logins` concurrent attempts for alice, each taking 20 ms to reach `verdict`;
    /// returns the refusals and the most attempts ever admitted at once.
    async fn burst(
        throttle: &Arc<LoginThrottle>,
        logins: usize,
        verdict: Verdict,
    ) -> (Vec<Refusal>, u32) {
        let (now, peak) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..logins {
            let (throttle, now, peak) = (throttle.clone(), now.clone(), peak.clone());
            tasks.spawn(async move {
                let attempt = throttle.admit("alice", A).await?;
                peak.fetch_max(now.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                match verdict {
                    Verdict::Succeeded => attempt.succeeded(),
                    Verdict::Failed => attempt.failed(),
                }
                Ok(())
            });
        }
        let refusals = tasks.join_all().await.into_iter().filter_map(Result::err);
        (refusals.collect(), peak.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn concurrent_good_logins_for_one_username_wait_for_a_slot() {
        let throttle = Arc::new(LoginThrottle::new(5, 3, Duration::from_secs(60)));
        let (refused, peak) = burst(&throttle, 12, Verdict::Succeeded).await;
        assert_eq!(refused, [], "every login got in");
        assert_eq!(peak, 5, "at most the limit at once; the rest waited");
        assert!(throttle.users.lock().is_empty(), "nothing left to remember");
    }

    #[tokio::test]
    async fn concurrent_guesses_cannot_overshoot_the_limit() {
        let throttle = Arc::new(LoginThrottle::new(3, 0, Duration::from_secs(60)));
        let (refused, peak) = burst(&throttle, 20, Verdict::Failed).await;
        assert_eq!(peak, 3);
        // Those that waited saw the lockout the admitted ones caused.
        assert_eq!(refused.len(), 17, "exactly the allowance was checked");
        assert!(refused.iter().all(|r| matches!(r, Refusal::LockedOut(_))));
    }

    #[tokio::test]
    async fn an_attempt_dropped_without_a_verdict_frees_its_slot_and_is_not_a_failure() {
        let throttle = Arc::new(LoginThrottle::new(2, 0, Duration::from_secs(60)));
        let first = throttle.admit("alice", A).await.unwrap();
        let second = throttle.admit("alice", A).await.unwrap();
        let waiting = {
            let throttle = throttle.clone();
            tokio::spawn(async move { throttle.admit("alice", A).await.map(drop) })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "both slots are taken");
        drop(first); // the client went away mid-hash
        assert_eq!(waiting.await.unwrap(), Ok(()), "woken by the freed slot");
        drop(second);
        assert!(throttle.users.lock().is_empty(), "no failure was counted");
        throttle.fail("alice", A).await;
        assert!(
            throttle.admit("alice", A).await.is_ok(),
            "one failure of two"
        );
    }

    #[tokio::test]
    async fn a_username_busy_for_the_whole_wait_is_refused() {
        let mut throttle = LoginThrottle::new(1, 0, Duration::from_secs(60));
        throttle.max_wait = Duration::from_millis(50);
        let _in_flight = throttle.admit("alice", A).await.unwrap();
        assert_eq!(throttle.admit("alice", A).await.err(), Some(Refusal::Busy));
    }

    #[tokio::test]
    async fn a_full_table_sweeps_stale_entries_but_never_attempts_in_flight() {
        let throttle = LoginThrottle::new(1, 0, Duration::from_secs(60));
        let alice = throttle.admit("alice", A).await.unwrap();
        {
            let mut entries = throttle.users.lock();
            let stale = Strikes {
                in_flight: 0,
                ..entries["alice"]
            };
            for i in entries.len()..MAX_TRACKED {
                entries.insert(format!("stale{i}"), stale);
            }
        }
        let _bob = throttle.admit("bob", A).await.unwrap();
        assert_eq!(
            throttle.users.lock().len(),
            2,
            "room made for bob, alice kept"
        );
        alice.failed();
        locked_out(throttle.admit("alice", A).await);
    }

    #[tokio::test]
    async fn names_that_cannot_be_accounts_are_not_tracked_but_their_address_is() {
        let throttle = LoginThrottle::new(1, 2, Duration::from_secs(60));
        let huge = "x".repeat(10_000);
        for _ in 0..2 {
            throttle.fail(&huge, A).await;
        }
        locked_out(throttle.admit(&huge, A).await);
        assert!(throttle.users.lock().is_empty());
    }

    #[tokio::test]
    async fn zero_limits_disable_it() {
        let throttle = LoginThrottle::new(0, 0, Duration::from_secs(60));
        let mut attempts = Vec::new();
        for _ in 0..100 {
            attempts.push(throttle.admit("alice", A).await.unwrap());
        }
        attempts.into_iter().for_each(Attempt::failed);
        assert!(throttle.admit("alice", A).await.is_ok());
    }
}
