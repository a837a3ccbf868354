//! Brute-force protection for `POST /api/v1/login`, built so that an attacker can neither
//! guess fast nor turn the protection against the people it protects.
//!
//! Three counts, each checked when an attempt is *admitted* (before any password work), with
//! attempts still in flight taking slots, so a burst of concurrent requests cannot slip past
//! a limit before the first verdict:
//!
//! - **Per (username, client network)**, `LOGIN_MAX_FAILURES`: the hard limit. Reaching it
//!   locks that pair for `LOGIN_LOCKOUT`. An attacker's failures from elsewhere never lock
//!   the owner's own address out.
//! - **Per username**, from anywhere: past `LOGIN_MAX_FAILURES` failures the account is
//!   *paced*, not locked: one attempt is admitted per delay, the delay doubling with each
//!   further failure (1 s, 2 s, 4 s…) up to `LOGIN_LOCKOUT / LOGIN_MAX_FAILURES` (one
//!   minute by default), so the long-run guessing rate against one account from any number
//!   of addresses is the same as the old five-per-five-minutes lock. An attempt from a
//!   network the username has logged in from successfully before (within
//!   [`KNOWN_FOR`]) skips the pace: the owner at their usual address gets straight in while
//!   an attacker hammers the account. An attacker cannot earn that without the password.
//! - **Per client network**, `LOGIN_MAX_FAILURES_PER_IP`, any usernames: attempts in flight
//!   and failures together, so 1,000 parallel logins with 1,000 names check exactly the
//!   limit's worth of passwords. A success gives its slot back but forgives nothing (a
//!   sprayer could mix in logins to an account of its own).
//!
//! Unknown usernames are counted exactly like real ones, so no answer says which accounts
//! exist; names that cannot be accounts are not tracked per name (bounded keys), only per
//! network. The network is the TCP peer's (`X-Forwarded-For` is deliberately not trusted:
//! any client can write it), an IPv4 address or an IPv6 /64 (see [`ClientNet`]). Behind a
//! reverse proxy every client shares the proxy's address: raise the per-address limit there
//! or set it to 0, and rate-limit at the proxy.
//!
//! An attempt that finds every free slot taken by attempts in flight waits briefly
//! (`MAX_WAIT`, then 429) rather than being refused at once: a user logging in from several
//! devices, or many users behind one NAT, must not be refused for succeeding. Failures are
//! forgotten `LOGIN_LOCKOUT` after the latest one. Every table is bounded: when one is full
//! of live entries a login that needs a new entry is refused (429), never left uncounted.
//! On SQLite (one instance) the counts live in this process; on PostgreSQL they live in the
//! database ([`SharedCounts`]), so every instance applies the limits together.

mod client_addr;
mod shared;
mod table;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::Notify;

pub use client_addr::{ClientAddr, ClientNet};
pub use shared::SharedCounts;
use table::{OnSuccess, OverLimit, Slot, Table, Verdict};

/// Most keys one table tracks at once (a few hundred bytes each).
pub const CAPACITY: usize = 100_000;

/// How long an attempt waits for attempts in flight to free a slot. A login is one argon2
/// hash, well under a second, so this runs out only when the key is flooded.
const MAX_WAIT: Duration = Duration::from_secs(5);

/// How long a successful login from a network exempts that username's later attempts from
/// there from the account's pace.
pub const KNOWN_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

/// How soon an attempt waiting for a slot looks at the shared counts again: the first time,
/// and at most (the wait doubles in between, so a crowd of waiters costs the database a few
/// looks each, not ten a second).
const SHARED_POLL_FIRST: Duration = Duration::from_millis(50);
const SHARED_POLL_MAX: Duration = Duration::from_secs(1);

/// When a full table refuses a login, how soon to try again.
const FULL_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Why a login attempt was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Too many failures for this username from this network, or from this network: locked
    /// out for this long.
    LockedOut(Duration),
    /// Too many failures for this username from elsewhere: its next attempt is due in this
    /// long.
    Paced(Duration),
    /// Other attempts for the same username or network stayed in flight for the whole wait.
    Busy,
    /// Too many usernames or networks are being tracked to count this one; try again later.
    Full(Duration),
    /// The shared counts (in the database) cannot be read: nothing can be checked now.
    Unavailable,
}

type PairKey = (String, Option<ClientNet>);

pub struct LoginThrottle {
    max_wait: Duration,
    pairs: Table<PairKey>,
    users: Table<String>,
    addresses: Table<ClientNet>,
    known: KnownNetworks,
    /// Wakes attempts waiting for a slot whenever an admitted attempt ends.
    finished: Notify,
    /// Counts kept in the database for every instance, instead of the tables above.
    shared: Option<SharedCounts>,
}

impl LoginThrottle {
    /// `0` for a limit disables that part (`max_failures_per_user` both the per-pair lock
    /// and the per-username pace); `lockout` is the counting window and a lock's length.
    pub fn new(max_failures_per_user: u32, max_failures_per_ip: u32, lockout: Duration) -> Self {
        Self::with_capacity(
            max_failures_per_user,
            max_failures_per_ip,
            lockout,
            CAPACITY,
        )
    }

    fn with_capacity(
        max_failures_per_user: u32,
        max_failures_per_ip: u32,
        lockout: Duration,
        capacity: usize,
    ) -> Self {
        let max_pace = lockout / max_failures_per_user.max(1);
        Self {
            max_wait: MAX_WAIT,
            pairs: Table::new(
                max_failures_per_user,
                lockout,
                OverLimit::Lock,
                OnSuccess::Forgive,
                capacity,
            ),
            users: Table::new(
                max_failures_per_user,
                lockout,
                OverLimit::Pace { max_pace },
                OnSuccess::Keep,
                capacity,
            ),
            addresses: Table::new(
                max_failures_per_ip,
                lockout,
                OverLimit::Lock,
                OnSuccess::Keep,
                capacity,
            ),
            known: KnownNetworks {
                remember_for: KNOWN_FOR,
                capacity,
                entries: Mutex::default(),
            },
            finished: Notify::new(),
            shared: None,
        }
    }

    /// Keeps the counts in the database (PostgreSQL) instead of this process, so that every
    /// instance sharing it applies the limits together; the rules stay the same.
    pub fn sharing_through(mut self, counts: SharedCounts) -> Self {
        self.shared = Some(counts);
        self
    }

    /// Admits a login attempt, waiting (a few seconds at most) while the slots it needs are
    /// all taken by attempts in flight. Report the verdict through the returned [`Attempt`].
    pub async fn admit(
        self: &Arc<Self>,
        username: &str,
        address: Option<IpAddr>,
    ) -> Result<Attempt, Refusal> {
        let net = address.map(ClientNet::from);
        let user = crate::users::validate_username(username)
            .is_ok()
            .then(|| username.to_owned());
        let deadline = tokio::time::Instant::now() + self.max_wait;
        let mut poll = SHARED_POLL_FIRST;
        loop {
            // Listen before looking, so an attempt that ends in between still wakes us.
            let finished = self.finished.notified();
            let mut finished = std::pin::pin!(finished);
            finished.as_mut().enable();

            let look = match &self.shared {
                None => self.try_admit(user.clone(), net, Instant::now()),
                Some(shared) => match shared.try_admit(self, user.as_deref(), net).await {
                    Ok(look) => look.map(|held| Attempt {
                        throttle: Arc::clone(self),
                        user: user.clone(),
                        net,
                        held,
                        verdict: None,
                        admitted: true,
                    }),
                    Err(err) => {
                        tracing::warn!(error = %err, "login throttle: shared counts unavailable");
                        Err(Some(Refusal::Unavailable))
                    }
                },
            };
            match look {
                Ok(attempt) => return Ok(attempt),
                Err(Some(refusal)) => return Err(refusal),
                Err(None) => {}
            }
            // Attempts ending on other instances wake no one here: look again soon.
            let wake = match self.shared {
                None => deadline,
                Some(_) => {
                    let wake = deadline.min(Instant::now() + poll);
                    poll = (poll * 2).min(SHARED_POLL_MAX);
                    wake
                }
            };
            if tokio::time::timeout_at(wake, finished).await.is_err() && wake >= deadline {
                return Err(Refusal::Busy);
            }
        }
    }

    /// One look at every count the attempt needs. `Err(None)`: busy, worth waiting for.
    fn try_admit(
        self: &Arc<Self>,
        user: Option<String>,
        net: Option<ClientNet>,
        now: Instant,
    ) -> Result<Attempt, Option<Refusal>> {
        // Dropped on an early return: gives back what it took, waking no one (nothing was
        // freed that was not free before this look).
        let mut attempt = Attempt {
            throttle: Arc::clone(self),
            user,
            net,
            held: Held::default(),
            verdict: None,
            admitted: false,
        };
        if let Some(net) = &net {
            attempt.held.address = take(&self.addresses, net, now, Refusal::LockedOut)?;
        }
        if let Some(user) = &attempt.user {
            let pair = (user.clone(), net);
            attempt.held.pair = take(&self.pairs, &pair, now, Refusal::LockedOut)?;
            if !self.known.contains(&pair, now) {
                attempt.held.user = take(&self.users, user, now, Refusal::Paced)?;
            }
        }
        attempt.admitted = true;
        Ok(attempt)
    }
}

/// One table's slot for an attempt: whether it holds one, or why it cannot have it.
fn take<K: Eq + std::hash::Hash + Clone>(
    table: &Table<K>,
    key: &K,
    now: Instant,
    refused: fn(Duration) -> Refusal,
) -> Result<bool, Option<Refusal>> {
    match table.reserve(key, now) {
        Slot::Held { tracked } => Ok(tracked),
        Slot::Refused(wait) => Err(Some(refused(wait))),
        Slot::Busy => Err(None),
        Slot::Full => Err(Some(Refusal::Full(FULL_RETRY_AFTER))),
    }
}

/// Networks each username logged in from successfully: exempt from its pace.
struct KnownNetworks {
    remember_for: Duration,
    capacity: usize,
    entries: Mutex<HashMap<PairKey, Instant>>,
}

impl KnownNetworks {
    fn contains(&self, key: &PairKey, now: Instant) -> bool {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(key)
            .is_some_and(|&at| now.duration_since(at) < self.remember_for)
    }

    /// Remembers a success. When full, forgets expired entries, then the oldest: only real
    /// logins add entries, and losing one costs its user no more than the pace.
    fn insert(&self, key: PairKey, now: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if !entries.contains_key(&key) && entries.len() >= self.capacity {
            entries.retain(|_, &mut at| now.duration_since(at) < self.remember_for);
            if entries.len() >= self.capacity
                && let Some(oldest) = entries
                    .iter()
                    .min_by_key(|(_, at)| **at)
                    .map(|(k, _)| k.clone())
            {
                entries.remove(&oldest);
            }
        }
        entries.insert(key, now);
    }
}

/// Which tables hold a slot for an attempt.
#[derive(Debug, Default, Clone, Copy)]
struct Held {
    address: bool,
    pair: bool,
    user: bool,
}

/// An admitted login attempt, holding its slots until dropped. Say how it ended with
/// [`succeeded`](Self::succeeded) or [`failed`](Self::failed); dropped without a verdict (a
/// database error, a panic) it counts as nothing. Run the check to its verdict even when the
/// client goes away (the login handler does): an abandoned attempt still cost a hash.
#[must_use = "dropping the attempt at once records no verdict"]
pub struct Attempt {
    throttle: Arc<LoginThrottle>,
    user: Option<String>,
    net: Option<ClientNet>,
    held: Held,
    verdict: Option<Verdict>,
    /// False while `try_admit` is still looking: a refused look wakes no waiters.
    admitted: bool,
}

impl Attempt {
    /// A correct login: the pair's failures are forgotten and the network becomes one the
    /// username is known to log in from.
    pub fn succeeded(mut self) {
        self.verdict = Some(Verdict::Succeeded);
    }

    /// A wrong password or unknown username: one failure for the pair, the username and the
    /// network.
    pub fn failed(mut self) {
        self.verdict = Some(Verdict::Failed);
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if self.throttle.shared.is_some() {
            self.finish_shared();
            return;
        }
        let throttle = &self.throttle;
        let (held, verdict, now) = (self.held, self.verdict, Instant::now());
        if let Some(net) = &self.net {
            throttle.addresses.finish(net, held.address, verdict, now);
        }
        if let Some(user) = self.user.take() {
            throttle.users.finish(&user, held.user, verdict, now);
            let pair = (user, self.net);
            throttle.pairs.finish(&pair, held.pair, verdict, now);
            if verdict == Some(Verdict::Succeeded) {
                throttle.known.insert(pair, now);
            }
        }
        if self.admitted {
            throttle.finished.notify_waiters();
        }
    }
}

impl Attempt {
    /// Records the verdict in the shared counts, in a task of its own (a drop cannot wait).
    /// Until it commits, the attempt's lease still holds its slots, so no one is admitted on
    /// the strength of a failure not written yet; without a runtime the lease runs out.
    fn finish_shared(&mut self) {
        if !self.admitted {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let throttle = Arc::clone(&self.throttle);
        let (user, net, held, verdict) = (self.user.take(), self.net, self.held, self.verdict);
        runtime.spawn(async move {
            if let Some(shared) = &throttle.shared
                && let Err(err) = shared
                    .finish(&throttle, user.as_deref(), net, held, verdict)
                    .await
            {
                tracing::warn!(error = %err, "login throttle: could not record a verdict");
            }
            throttle.finished.notify_waiters();
        });
    }
}
