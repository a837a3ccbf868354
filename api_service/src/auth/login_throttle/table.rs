//! One kind of key's counts: failed logins, attempts still in flight, and what happens once
//! the failures reach the limit (a lock for a while, or a pace of one attempt per delay).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

/// What a key's failures reaching the limit leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OverLimit {
    /// Every attempt is refused until `window` after the failure that reached the limit.
    Lock,
    /// One attempt is admitted per delay, the delay doubling with each further failure from
    /// one second up to `max_pace`: guessing slows down, but never stops the account's owner
    /// for long.
    Pace { max_pace: Duration },
}

/// What a key's success does to its failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OnSuccess {
    /// Forgets them: only someone who knows the password can succeed on this key.
    Forgive,
    /// Keeps them: anyone can mix in successes of their own (an address's other users, a
    /// spraying attacker's own account), so a success proves nothing about the failures.
    Keep,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Strikes {
    pub(super) failures: u32,
    /// Meaningless while `failures` is 0.
    pub(super) last_failure: Instant,
    pub(super) locked_until: Option<Instant>,
    /// With [`OverLimit::Pace`]: the earliest admission of the next attempt.
    pub(super) next_slot: Option<Instant>,
    /// Admitted attempts still without a verdict.
    pub(super) in_flight: u32,
}

impl Strikes {
    pub(super) fn new(now: Instant) -> Self {
        Self {
            failures: 0,
            last_failure: now,
            locked_until: None,
            next_slot: None,
            in_flight: 0,
        }
    }

    /// Nothing worth remembering apart from attempts in flight: no failure within `window`
    /// and no lockout still running.
    fn stale(&self, now: Instant, window: Duration) -> bool {
        let locked = self.locked_until.is_some_and(|until| until > now);
        !locked && (self.failures == 0 || now.duration_since(self.last_failure) >= window)
    }

    fn forget_failures(&mut self) {
        self.failures = 0;
        self.locked_until = None;
        self.next_slot = None;
    }
}

/// The answer to asking for one of a key's slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Slot {
    /// Admitted; `tracked` is false when nothing was counted (the limit is 0).
    Held { tracked: bool },
    /// Locked out, or paced: try again after this long.
    Refused(Duration),
    /// Every free slot is taken by attempts in flight; one may free up soon.
    Busy,
    /// The table has no room for a new key; refused rather than left uncounted.
    Full,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    Succeeded,
    Failed,
}

pub(super) struct Table<K> {
    limit: u32,
    window: Duration,
    over_limit: OverLimit,
    on_success: OnSuccess,
    capacity: usize,
    entries: Mutex<HashMap<K, Strikes>>,
}

impl<K: Eq + Hash + Clone> Table<K> {
    /// `limit` 0 disables the table. Failures are forgotten `window` after the latest one,
    /// and a lock lasts `window`.
    pub(super) fn new(
        limit: u32,
        window: Duration,
        over_limit: OverLimit,
        on_success: OnSuccess,
        capacity: usize,
    ) -> Self {
        Self {
            limit,
            window,
            over_limit,
            on_success,
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, HashMap<K, Strikes>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes one of `key`'s slots for an attempt in flight, if its failures and attempts in
    /// flight leave one free (or, when paced, if its next slot has come).
    pub(super) fn reserve(&self, key: &K, now: Instant) -> Slot {
        if self.limit == 0 {
            return Slot::Held { tracked: false };
        }
        let mut entries = self.lock();
        let Some(strikes) = self.entry(&mut entries, key, now) else {
            return Slot::Full;
        };
        self.reserve_in(strikes, now)
    }

    /// [`Self::reserve`] on one key's counts, wherever they are kept (this table, or the
    /// database for counts shared by every instance). Stale failures must be forgotten first
    /// ([`Self::refresh`]).
    pub(super) fn reserve_in(&self, strikes: &mut Strikes, now: Instant) -> Slot {
        if self.limit == 0 {
            return Slot::Held { tracked: false };
        }
        match self.over_limit {
            OverLimit::Lock => {
                if let Some(until) = strikes.locked_until.filter(|&until| until > now) {
                    return Slot::Refused(until - now);
                }
            }
            OverLimit::Pace { max_pace } if strikes.failures >= self.limit => {
                if let Some(next) = strikes.next_slot.filter(|&next| next > now) {
                    return Slot::Refused(next - now);
                }
                let over = strikes.failures - self.limit;
                strikes.next_slot = Some(now + pace(over, max_pace));
                strikes.in_flight += 1;
                return Slot::Held { tracked: true };
            }
            OverLimit::Pace { .. } => {}
        }
        if strikes.failures + strikes.in_flight >= self.limit {
            return Slot::Busy;
        }
        strikes.in_flight += 1;
        Slot::Held { tracked: true }
    }

    /// Records how an attempt on `key` ended and frees its slot if it `held` one.
    pub(super) fn finish(&self, key: &K, held: bool, verdict: Option<Verdict>, now: Instant) {
        if self.limit == 0 {
            return;
        }
        let mut entries = self.lock();
        if verdict == Some(Verdict::Failed)
            && let Some(strikes) = self.entry(&mut entries, key, now)
        {
            self.fail_in(strikes, now);
        }
        let Some(strikes) = entries.get_mut(key) else {
            return;
        };
        if self.release_in(strikes, held, verdict) {
            entries.remove(key);
        }
    }

    /// One more failure on a key's counts.
    pub(super) fn fail_in(&self, strikes: &mut Strikes, now: Instant) {
        strikes.failures = strikes.failures.saturating_add(1);
        strikes.last_failure = now;
        if self.over_limit == OverLimit::Lock && strikes.failures >= self.limit {
            strikes.locked_until = Some(now + self.window);
        }
    }

    /// Frees the attempt's slot (if it `held` one) and applies a success; true when nothing
    /// is left worth keeping.
    pub(super) fn release_in(
        &self,
        strikes: &mut Strikes,
        held: bool,
        verdict: Option<Verdict>,
    ) -> bool {
        if held {
            strikes.in_flight = strikes.in_flight.saturating_sub(1);
        }
        if verdict == Some(Verdict::Succeeded) && self.on_success == OnSuccess::Forgive {
            strikes.forget_failures();
        }
        strikes.in_flight == 0 && strikes.failures == 0
    }

    /// Forgets a key's failures once they are stale.
    pub(super) fn refresh(&self, strikes: &mut Strikes, now: Instant) {
        if strikes.stale(now, self.window) {
            strikes.forget_failures();
        }
    }

    pub(super) fn limit(&self) -> u32 {
        self.limit
    }

    pub(super) fn window(&self) -> Duration {
        self.window
    }

    /// `key`'s entry with stale failures forgotten, created if there is room. A full table
    /// is first swept of entries with nothing to remember; ones with attempts in flight
    /// always stay. `None` when it is still full: the caller refuses rather than counting
    /// nothing, since an attacker who could fill it would otherwise go untracked.
    fn entry<'a>(
        &self,
        entries: &'a mut HashMap<K, Strikes>,
        key: &K,
        now: Instant,
    ) -> Option<&'a mut Strikes> {
        if !entries.contains_key(key) && entries.len() >= self.capacity {
            entries.retain(|_, s| s.in_flight > 0 || !s.stale(now, self.window));
            if entries.len() >= self.capacity {
                tracing::warn!(
                    capacity = self.capacity,
                    "login throttle table full; refusing logins for new keys"
                );
                return None;
            }
        }
        let strikes = entries
            .entry(key.clone())
            .or_insert_with(|| Strikes::new(now));
        self.refresh(strikes, now);
        Some(strikes)
    }
}

/// The delay after the `over`-th failure past the limit: 1 s, 2 s, 4 s… up to `max_pace`.
pub(super) fn pace(over: u32, max_pace: Duration) -> Duration {
    Duration::from_secs(1u64 << over.min(20)).min(max_pace)
}
