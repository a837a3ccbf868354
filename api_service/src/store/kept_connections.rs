//! PostgreSQL connections reused without sqlx's ping on return.
//!
//! sqlx 0.9 pings every connection that goes back to its pool (`return_to_pool`, not
//! configurable): a round trip on a task of its own after every store operation. It is there
//! for connections dropped mid-query, whose protocol state is unknown. A connection whose
//! operation ran to the end is in a known state, so the store hands it back here instead
//! ([`KeptConnection::done`]) and the next operation takes it without that round trip. One
//! that is only dropped (an error, a cancelled request) still goes back to the pool and gets
//! its ping. The group-commit writer kept its connection this way first (round five in
//! BENCHMARKS.md); this does it for every operation of the store.
//!
//! Every acquisition of the store goes through here, and a connection handed back goes to
//! the first caller waiting before it is kept idle, so connections kept here are never out
//! of reach of the store's own callers. Anything asking the pool directly (the login throttle,
//! migrations, tests) is not starved either: a connection goes back to the pool once it has
//! been out of it for [`KEEP_AT_MOST`], which also keeps the pool's own upkeep (idle pings,
//! lifetimes, `close`) in charge of it.

use std::collections::VecDeque;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use sqlx::Postgres;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnection, PgPool};
use tokio::sync::oneshot;

/// How long a connection may stay out of the pool, used operation after operation, before
/// it goes back (and gets its ping): one ping per connection per second at most under load,
/// instead of one per operation.
const KEEP_AT_MOST: Duration = Duration::from_secs(1);

/// The store's way to its pool's connections.
#[derive(Clone)]
pub(super) struct Connections {
    shared: Arc<Shared>,
}

struct Shared {
    pool: PgPool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Idle, most recently used last: an operation takes the connection that ran the last one.
    kept: Vec<Kept>,
    /// Callers waiting for a connection, first come first served. Never waiting while one is
    /// kept idle: a connection handed back goes to the first of them.
    waiting: VecDeque<oneshot::Sender<Result<Kept, sqlx::Error>>>,
    /// Whether a task is asking the pool for connections for the waiting callers
    /// ([`fetch_for_waiters`]).
    fetching: bool,
}

struct Kept {
    conn: PoolConnection<Postgres>,
    /// When it left the pool.
    taken: Instant,
}

impl Kept {
    fn fresh(&self, now: Instant) -> bool {
        now.duration_since(self.taken) < KEEP_AT_MOST
    }
}

/// A connection for one store operation. Call [`done`](Self::done) once the operation has
/// run to the end; dropped without that, it goes back to the pool, which pings it.
pub(super) struct KeptConnection {
    kept: Option<Kept>,
    shared: Weak<Shared>,
}

impl Connections {
    pub(super) fn new(pool: PgPool) -> Self {
        let shared = Arc::new(Shared {
            pool,
            state: Mutex::new(State::default()),
        });
        tokio::spawn(give_back_stale(Arc::downgrade(&shared)));
        Connections { shared }
    }

    /// A kept connection if one is idle, else the next one handed back or taken from the
    /// pool, whichever comes first. Fails like the pool's own acquire: `PoolTimedOut` after
    /// the pool's acquire timeout.
    pub(super) async fn acquire(&self) -> Result<KeptConnection, sqlx::Error> {
        let shared = &self.shared;
        let mut stale = Vec::new();
        let (waiting, fetch) = {
            let mut state = shared.lock();
            if let Some(kept) = state.take_fresh(&mut stale) {
                drop(state);
                drop(stale);
                return Ok(self.wrap(kept));
            }
            let (tx, rx) = oneshot::channel();
            state.waiting.push_back(tx);
            (rx, !std::mem::replace(&mut state.fetching, true))
        };
        // Dropped outside the lock: a drop spawns the pool's return.
        drop(stale);
        if fetch {
            tokio::spawn(fetch_for_waiters(shared.clone()));
        }
        let timeout = shared.pool.options().get_acquire_timeout();
        match tokio::time::timeout(timeout, waiting).await {
            Ok(Ok(got)) => got.map(|kept| self.wrap(kept)),
            // The fetching task ended without an answer: only when the runtime shuts down.
            Ok(Err(_)) => Err(sqlx::Error::PoolClosed),
            Err(_) => Err(sqlx::Error::PoolTimedOut),
        }
    }

    fn wrap(&self, kept: Kept) -> KeptConnection {
        KeptConnection {
            kept: Some(kept),
            shared: Arc::downgrade(&self.shared),
        }
    }

    /// Connections kept here, idle: for the pool's figures in `/metrics`.
    pub(super) fn idle(&self) -> usize {
        self.shared.lock().kept.len()
    }
}

impl State {
    /// The most recently used fresh connection; stale ones found on the way go to `stale`,
    /// to be dropped (back to the pool) outside the lock.
    fn take_fresh(&mut self, stale: &mut Vec<Kept>) -> Option<Kept> {
        let now = Instant::now();
        while let Some(one) = self.kept.pop() {
            if one.fresh(now) {
                return Some(one);
            }
            stale.push(one);
        }
        None
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding it; a poisoned state is still a list of connections.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// To the first caller still waiting, else kept idle. A stale one goes back to the pool
    /// instead (dropped), as does any once the pool is closing.
    fn hand_back(&self, mut kept: Kept) {
        if self.pool.is_closed() || !kept.fresh(Instant::now()) {
            return;
        }
        let mut state = self.lock();
        while let Some(waiter) = state.waiting.pop_front() {
            match waiter.send(Ok(kept)) {
                // That caller gave up (timed out, or its request was cancelled).
                Err(Ok(back)) => kept = back,
                _ => return,
            }
        }
        state.kept.push(kept);
    }

    /// Back to the pool: every connection out of it for [`KEEP_AT_MOST`], or all of them.
    fn give_back(&self, all: bool) {
        let now = Instant::now();
        let stale: Vec<Kept> = {
            let mut state = self.lock();
            let (keep, stale) = state.kept.drain(..).partition(|one| !all && one.fresh(now));
            state.kept = keep;
            stale
        };
        drop(stale);
    }
}

/// Asks the pool for connections, one at a time, while callers wait. One task, not one per
/// caller: a caller is often served by a connection handed back first, and an acquire given
/// up halfway may be opening a connection, which would then be thrown away (a new server
/// process each time). Whatever it gets goes through [`Shared::hand_back`]: to the first
/// caller still waiting, or kept for the next one.
async fn fetch_for_waiters(shared: Arc<Shared>) {
    loop {
        {
            let mut state = shared.lock();
            state.waiting.retain(|waiter| !waiter.is_closed());
            if state.waiting.is_empty() {
                state.fetching = false;
                return;
            }
        }
        match shared.pool.acquire().await {
            Ok(conn) => shared.hand_back(Kept {
                conn,
                taken: Instant::now(),
            }),
            // The callers' own timeouts answer for a pool that had nothing to give.
            Err(sqlx::Error::PoolTimedOut) => {}
            // A real failure (the server refused us, the pool closed) is the first caller's
            // answer; the next one gets its own attempt.
            Err(err) => {
                if let Some(waiter) = shared.lock().waiting.pop_front() {
                    let _ = waiter.send(Err(err));
                }
            }
        }
    }
}

impl KeptConnection {
    /// The operation ran to the end: the connection is ready for the next one as it is.
    pub(super) fn done(mut self) {
        if let (Some(kept), Some(shared)) = (self.kept.take(), self.shared.upgrade()) {
            shared.hand_back(kept);
        }
    }
}

impl std::ops::Deref for KeptConnection {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        &self.kept.as_ref().expect("taken only by done()").conn
    }
}

impl std::ops::DerefMut for KeptConnection {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.kept.as_mut().expect("taken only by done()").conn
    }
}

/// Hands connections nobody took back to the pool, so a quiet store holds none and the
/// pool's idle figures and upkeep see them; all of them once the pool is closing (its `close`
/// waits for every connection to come back). Ends with the store.
async fn give_back_stale(shared: Weak<Shared>) {
    let closed = match shared.upgrade() {
        Some(shared) => shared.pool.close_event(),
        None => return,
    };
    let mut closed = pin!(closed);
    let mut closing = false;
    loop {
        if closing {
            tokio::time::sleep(KEEP_AT_MOST).await;
        } else {
            tokio::select! {
                _ = tokio::time::sleep(KEEP_AT_MOST) => {}
                _ = closed.as_mut() => closing = true,
            }
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        shared.give_back(closing);
    }
}
