//! The throttle's counts kept in PostgreSQL, so every API instance on one database sees the
//! same failures, locks, paces and attempts in flight: N instances give an attacker the
//! limits once, not N times.
//!
//! Each admission and each verdict is one transaction that locks the attempt's rows (address,
//! username + address, username; in key order, so two transactions never deadlock) and runs
//! the very same rules as the in-memory tables on them ([`Table::reserve_in`] and friends),
//! then writes them back; a refused look rolls back and changes nothing. Times are stored as
//! Unix milliseconds. An attempt in flight is a *lease* that ends on its own after
//! [`SharedCounts::lease`]: an instance that dies mid-login cannot leave a slot taken for
//! good. Rows with nothing left to remember (no live failure, lock, pace or lease) are
//! deleted; the table is bounded like the in-memory ones (a login needing a new row while it
//! is full is refused, never uncounted).

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::{PgConnection, PgPool, Row};
use tokio::time::Instant;

use super::table::{Slot, Strikes, Table, Verdict};
use super::{ClientNet, Held, LoginThrottle, Refusal};

/// How long an admitted attempt's slot is held without a verdict: far above one login
/// (a bounded wait for a hashing slot plus one argon2 run).
pub const LEASE: Duration = Duration::from_secs(60);

/// Verdict writes retried after the first.
const FINISH_TRIES: u32 = 4;

/// Throttle transactions one instance runs at once: the rest wait in the process, holding
/// no pooled connection, so a login flood cannot starve the service's other queries.
const CONCURRENT_TRANSACTIONS: usize = 3;

fn is_lock_timeout(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "55P03")
}

pub struct SharedCounts {
    gate: tokio::sync::Semaphore,
    pool: PgPool,
    lease: Duration,
    capacity: i64,
    /// When this instance last swept stale rows (Unix ms).
    last_sweep_ms: AtomicI64,
}

/// One key's row, read under its lock, and how many live leases it had.
struct Loaded {
    key: String,
    strikes: Strikes,
    leases: Vec<i64>,
}

/// The clock both ways: `now` as the tables see it and as the database stores it.
#[derive(Clone, Copy)]
struct Clock {
    now: Instant,
    now_ms: i64,
}

impl Clock {
    fn read() -> Self {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Self {
            now: Instant::now(),
            now_ms,
        }
    }

    fn to_ms(self, at: Instant) -> i64 {
        let ahead = at.saturating_duration_since(self.now).as_millis();
        let behind = self.now.saturating_duration_since(at).as_millis();
        self.now_ms + i64::try_from(ahead).unwrap_or(i64::MAX / 2)
            - i64::try_from(behind).unwrap_or(i64::MAX / 2)
    }

    /// `None` for a moment further back than this process's clock reaches (then surely
    /// older than any window).
    fn instant_at(self, ms: i64) -> Option<Instant> {
        let delta = Duration::from_millis(ms.abs_diff(self.now_ms));
        if ms >= self.now_ms {
            Some(self.now + delta)
        } else {
            self.now.checked_sub(delta)
        }
    }
}

/// The keys of one attempt, in the order the rules look at them.
struct Keys {
    address: Option<String>,
    pair: Option<String>,
    user: Option<String>,
}

impl Keys {
    fn of(user: Option<&str>, net: Option<ClientNet>) -> Self {
        let net_text = net.map_or_else(|| "-".to_owned(), |n| n.to_string());
        Self {
            address: net.map(|n| format!("a {n}")),
            // Usernames that can be accounts have no spaces: the separator is unambiguous.
            pair: user.map(|u| format!("p {u} {net_text}")),
            user: user.map(|u| format!("u {u}")),
        }
    }

    fn all(&self) -> Vec<String> {
        let mut keys: Vec<String> = [&self.address, &self.pair, &self.user]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        keys.sort();
        keys
    }
}

impl SharedCounts {
    pub fn new(pool: PgPool, capacity: usize) -> Self {
        Self::with_lease(pool, capacity, LEASE)
    }

    pub fn with_lease(pool: PgPool, capacity: usize, lease: Duration) -> Self {
        Self {
            pool,
            lease,
            capacity: i64::try_from(capacity).unwrap_or(i64::MAX),
            last_sweep_ms: AtomicI64::new(0),
            gate: tokio::sync::Semaphore::new(CONCURRENT_TRANSACTIONS),
        }
    }

    /// One look at every count the attempt needs, as [`LoginThrottle`]'s in-memory look.
    /// `Ok(Err(None))`: busy, worth waiting for.
    pub(super) async fn try_admit(
        &self,
        throttle: &LoginThrottle,
        user: Option<&str>,
        net: Option<ClientNet>,
    ) -> Result<Result<Held, Option<Refusal>>, sqlx::Error> {
        let clock = Clock::read();
        let keys = Keys::of(user, net);
        self.sweep_now_and_then(clock).await?;
        let _turn = self
            .gate
            .acquire()
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        let mut tx = self.begin().await?;
        let (mut rows, created) = match self.lock_rows(&mut tx, &keys.all(), clock).await {
            Ok(locked) => locked,
            // Another attempt holds a row: busy, look again later without holding a
            // connection meanwhile.
            Err(err) if is_lock_timeout(&err) => return Ok(Err(None)),
            Err(err) => return Err(err),
        };
        if created && self.is_full(&mut tx, clock).await? {
            return Ok(Err(Some(Refusal::Full(super::FULL_RETRY_AFTER))));
        }
        let mut held = Held::default();
        if let Some(key) = &keys.address {
            match take(
                &throttle.addresses,
                find(&mut rows, key),
                clock.now,
                Refusal::LockedOut,
            ) {
                Ok(tracked) => held.address = tracked,
                Err(refusal) => return Ok(Err(refusal)),
            }
        }
        if let Some(key) = &keys.pair {
            match take(
                &throttle.pairs,
                find(&mut rows, key),
                clock.now,
                Refusal::LockedOut,
            ) {
                Ok(tracked) => held.pair = tracked,
                Err(refusal) => return Ok(Err(refusal)),
            }
        }
        if let (Some(key), Some(user)) = (&keys.user, user)
            && !self.is_known(&mut tx, user, net, clock).await?
        {
            match take(
                &throttle.users,
                find(&mut rows, key),
                clock.now,
                Refusal::Paced,
            ) {
                Ok(tracked) => held.user = tracked,
                Err(refusal) => return Ok(Err(refusal)),
            }
        }
        self.write_rows(&mut tx, &rows, clock, throttle.pairs.window())
            .await?;
        tx.commit().await?;
        Ok(Ok(held))
    }

    /// Records how an admitted attempt ended and gives back the slots it held, retrying a
    /// few times (a verdict lost would be a failure uncounted; until it is written, the
    /// attempt's lease keeps its slot taken).
    pub(super) async fn finish(
        &self,
        throttle: &LoginThrottle,
        user: Option<&str>,
        net: Option<ClientNet>,
        held: Held,
        verdict: Option<Verdict>,
    ) -> Result<(), sqlx::Error> {
        let mut pause = Duration::from_millis(50);
        let mut tries = 0;
        loop {
            match self.finish_once(throttle, user, net, held, verdict).await {
                Ok(()) => return Ok(()),
                Err(err) if tries < FINISH_TRIES => {
                    tracing::debug!(error = %err, "login throttle: retrying a verdict");
                    tries += 1;
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                Err(err) => return Err(err),
            }
        }
    }

    async fn finish_once(
        &self,
        throttle: &LoginThrottle,
        user: Option<&str>,
        net: Option<ClientNet>,
        held: Held,
        verdict: Option<Verdict>,
    ) -> Result<(), sqlx::Error> {
        let clock = Clock::read();
        let keys = Keys::of(user, net);
        let _turn = self
            .gate
            .acquire()
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        let mut tx = self.begin().await?;
        let (mut rows, _) = self.lock_rows(&mut tx, &keys.all(), clock).await?;
        if let Some(key) = &keys.address {
            settle(
                &throttle.addresses,
                find(&mut rows, key),
                held.address,
                verdict,
                clock.now,
            );
        }
        if let Some(key) = &keys.pair {
            settle(
                &throttle.pairs,
                find(&mut rows, key),
                held.pair,
                verdict,
                clock.now,
            );
        }
        if let Some(key) = &keys.user {
            settle(
                &throttle.users,
                find(&mut rows, key),
                held.user,
                verdict,
                clock.now,
            );
        }
        self.write_rows(&mut tx, &rows, clock, throttle.pairs.window())
            .await?;
        if verdict == Some(Verdict::Succeeded)
            && let Some(user) = user
        {
            sqlx::query(
                "INSERT INTO login_known_networks (username, network, last_success) \
                 VALUES ($1, $2, $3) \
                 ON CONFLICT (username, network) DO UPDATE SET last_success = EXCLUDED.last_success",
            )
            .bind(user)
            .bind(network_text(net))
            .bind(clock.now_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Creates the missing rows and locks all of them, in key order. Returns whether any row
    /// was new.
    async fn lock_rows(
        &self,
        tx: &mut PgConnection,
        keys: &[String],
        clock: Clock,
    ) -> Result<(Vec<Loaded>, bool), sqlx::Error> {
        let mut created = false;
        // A row that existed when inserting may be deleted (nothing left to remember) by
        // another transaction before it is locked here: then create it again.
        let mut rows = Vec::new();
        for _ in 0..3 {
            created |= sqlx::query(
                "INSERT INTO login_throttle (key, failures, last_failure, leases, expires_at) \
                 SELECT key, 0, 0, '{}', 0 FROM UNNEST($1::text[]) AS k(key) ORDER BY key \
                 ON CONFLICT (key) DO NOTHING",
            )
            .bind(keys)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                > 0;
            rows = sqlx::query(
                "SELECT key, failures, last_failure, locked_until, next_slot, leases \
                 FROM login_throttle WHERE key = ANY($1) ORDER BY key FOR UPDATE",
            )
            .bind(keys)
            .fetch_all(&mut *tx)
            .await?;
            if rows.len() == keys.len() {
                break;
            }
        }
        if rows.len() != keys.len() {
            return Err(sqlx::Error::RowNotFound);
        }
        let mut loaded = Vec::with_capacity(rows.len());
        for row in rows {
            let failures: i32 = row.try_get("failures")?;
            let leases: Vec<i64> = row.try_get("leases")?;
            let leases: Vec<i64> = leases.into_iter().filter(|&l| l > clock.now_ms).collect();
            let last_failure = clock.instant_at(row.try_get("last_failure")?);
            let mut strikes = Strikes::new(clock.now);
            if let Some(last_failure) = last_failure {
                strikes.failures = u32::try_from(failures).unwrap_or(0);
                strikes.last_failure = last_failure;
            }
            let at = |ms: Option<i64>| ms.and_then(|ms| clock.instant_at(ms));
            strikes.locked_until = at(row.try_get("locked_until")?);
            strikes.next_slot = at(row.try_get("next_slot")?);
            strikes.in_flight = u32::try_from(leases.len()).unwrap_or(u32::MAX);
            loaded.push(Loaded {
                key: row.try_get("key")?,
                strikes,
                leases,
            });
        }
        Ok((loaded, created))
    }

    /// Writes the rows back: leases follow the change in attempts in flight (a new one for a
    /// slot taken, the oldest dropped for a slot given back); a row with nothing left to
    /// remember is deleted.
    async fn write_rows(
        &self,
        tx: &mut PgConnection,
        rows: &[Loaded],
        clock: Clock,
        window: Duration,
    ) -> Result<(), sqlx::Error> {
        let lease_ms = i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX / 2);
        for row in rows {
            let mut leases = row.leases.clone();
            leases.sort_unstable();
            let wanted = row.strikes.in_flight as usize;
            while leases.len() > wanted {
                leases.remove(0);
            }
            while leases.len() < wanted {
                leases.push(clock.now_ms + lease_ms);
            }
            let s = &row.strikes;
            let last_failure = clock.to_ms(s.last_failure);
            let locked_until = s.locked_until.map(|t| clock.to_ms(t));
            let next_slot = s.next_slot.map(|t| clock.to_ms(t));
            // Failures are remembered for one window after the latest.
            let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX / 2);
            let expires_at = [
                (s.failures > 0).then_some(last_failure.saturating_add(window_ms)),
                locked_until,
                next_slot,
                leases.iter().max().copied(),
            ]
            .into_iter()
            .flatten()
            .max();
            match expires_at {
                Some(expires_at) if expires_at > clock.now_ms => {
                    sqlx::query(
                        "UPDATE login_throttle SET failures = $2, last_failure = $3, \
                         locked_until = $4, next_slot = $5, leases = $6, expires_at = $7 \
                         WHERE key = $1",
                    )
                    .bind(&row.key)
                    .bind(i32::try_from(s.failures).unwrap_or(i32::MAX))
                    .bind(last_failure)
                    .bind(locked_until)
                    .bind(next_slot)
                    .bind(&leases)
                    .bind(expires_at)
                    .execute(&mut *tx)
                    .await?;
                }
                _ => {
                    sqlx::query("DELETE FROM login_throttle WHERE key = $1")
                        .bind(&row.key)
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// Deletes rows with nothing left to remember, at most once a second per instance and
    /// before the attempt's own transaction (so it commits even when the attempt is refused,
    /// and never needs a second connection while one is held). Rows locked by others are
    /// skipped.
    async fn sweep_now_and_then(&self, clock: Clock) -> Result<(), sqlx::Error> {
        let last = self.last_sweep_ms.load(Ordering::Relaxed);
        if clock.now_ms - last < 1000
            || self
                .last_sweep_ms
                .compare_exchange(last, clock.now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return Ok(());
        }
        sqlx::query(
            "DELETE FROM login_throttle WHERE key IN (SELECT key FROM login_throttle \
             WHERE expires_at <= $1 AND expires_at > 0 LIMIT 1000 FOR UPDATE SKIP LOCKED)",
        )
        .bind(clock.now_ms)
        .execute(&self.pool)
        .await?;
        let known_since = clock.now_ms - i64::try_from(super::KNOWN_FOR.as_millis()).unwrap_or(0);
        sqlx::query(
            "DELETE FROM login_known_networks WHERE ctid IN (SELECT ctid FROM login_known_networks \
             WHERE last_success <= $1 LIMIT 1000)",
        )
        .bind(known_since)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A transaction whose row locks give up quickly: a waiting attempt must not hold a
    /// pooled connection the rest of the service needs.
    async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET LOCAL lock_timeout = '200ms'")
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    /// After creating a row: whether the table is over its bound (rows still remembering
    /// something; stale ones are swept apart).
    async fn is_full(&self, tx: &mut PgConnection, clock: Clock) -> Result<bool, sqlx::Error> {
        let rows: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM login_throttle WHERE expires_at > $1 OR expires_at = 0",
        )
        .bind(clock.now_ms)
        .fetch_one(&mut *tx)
        .await?;
        if rows > self.capacity.saturating_mul(3) {
            tracing::warn!(
                capacity = self.capacity,
                "login throttle table full; refusing logins for new keys"
            );
            return Ok(true);
        }
        Ok(false)
    }

    async fn is_known(
        &self,
        tx: &mut PgConnection,
        user: &str,
        net: Option<ClientNet>,
        clock: Clock,
    ) -> Result<bool, sqlx::Error> {
        let since = clock.now_ms - i64::try_from(super::KNOWN_FOR.as_millis()).unwrap_or(0);
        Ok(sqlx::query(
            "SELECT 1 FROM login_known_networks \
             WHERE username = $1 AND network = $2 AND last_success > $3",
        )
        .bind(user)
        .bind(network_text(net))
        .bind(since)
        .fetch_optional(&mut *tx)
        .await?
        .is_some())
    }
}

fn network_text(net: Option<ClientNet>) -> String {
    net.map_or_else(|| "-".to_owned(), |n| n.to_string())
}

fn find<'a>(rows: &'a mut [Loaded], key: &str) -> &'a mut Loaded {
    rows.iter_mut()
        .find(|row| row.key == key)
        .expect("every key's row was created and locked")
}

/// A verdict and the slot given back, on a locked row.
fn settle<K: Eq + std::hash::Hash + Clone>(
    table: &Table<K>,
    row: &mut Loaded,
    held: bool,
    verdict: Option<Verdict>,
    now: Instant,
) {
    if table.limit() == 0 {
        return;
    }
    table.refresh(&mut row.strikes, now);
    if verdict == Some(Verdict::Failed) {
        table.fail_in(&mut row.strikes, now);
    }
    table.release_in(&mut row.strikes, held, verdict);
}

/// The rules of one table on a locked row.
fn take<K: Eq + std::hash::Hash + Clone>(
    table: &Table<K>,
    row: &mut Loaded,
    now: Instant,
    refused: fn(Duration) -> Refusal,
) -> Result<bool, Option<Refusal>> {
    table.refresh(&mut row.strikes, now);
    match table.reserve_in(&mut row.strikes, now) {
        Slot::Held { tracked } => Ok(tracked),
        Slot::Refused(wait) => Err(Some(refused(wait))),
        Slot::Busy => Err(None),
        Slot::Full => Err(Some(Refusal::Full(super::FULL_RETRY_AFTER))),
    }
}
