//! Shares one read among concurrent requests that want the same answer, without ever answering
//! a request with data read before it arrived.
//!
//! `/stats` is the same query for every admin, and a dashboard or a monitoring probe per
//! instance polls it. Plain single-flight (join the read in flight) would save the most
//! queries but could answer with a snapshot taken before the request came in, missing quotes
//! that had already returned 200. So requests join only a read that has *not started yet*:
//! while one read runs, new arrivals gather into the next round, which starts when the
//! running one ends. Every answer therefore reflects everything committed before its request
//! arrived, and however many requests wait there are at most one read running and one
//! gathering, i.e. about one query per database round trip instead of one per request.
//!
//! A round is a `Shared` future, driven by whichever of its requests is polled; if all of them
//! go away it is simply dropped (or driven by the next request that joins it).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

type RoundResult<T, E> = Result<T, Arc<E>>;

struct Gathering<T, E> {
    id: u64,
    round: Shared<BoxFuture<'static, RoundResult<T, E>>>,
}

struct Inner<T, E> {
    /// The round that has not started its read; new requests join it.
    gathering: Mutex<Option<Gathering<T, E>>>,
    /// Held by the round that is reading, so the next one starts only after it.
    reading: tokio::sync::Mutex<()>,
    next_id: AtomicU64,
    reads: AtomicU64,
}

pub struct FreshRead<T, E> {
    inner: Arc<Inner<T, E>>,
}

impl<T, E> Default for FreshRead<T, E> {
    fn default() -> Self {
        Self {
            inner: Arc::new(Inner {
                gathering: Mutex::new(None),
                reading: tokio::sync::Mutex::new(()),
                next_id: AtomicU64::new(0),
                reads: AtomicU64::new(0),
            }),
        }
    }
}

impl<T, E> FreshRead<T, E>
where
    T: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads performed so far (fewer than calls when requests shared them).
    pub fn reads(&self) -> u64 {
        self.inner.reads.load(Ordering::Relaxed)
    }

    /// The result of a read that starts after this call: `read` runs if this call opens a
    /// new round; a call joining a gathering round drops its own `read` unused.
    pub async fn get<F, Fut>(&self, read: F) -> RoundResult<T, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        let round = {
            let mut gathering = lock(&self.inner.gathering);
            match gathering.as_ref() {
                Some(open) => open.round.clone(),
                None => {
                    let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
                    let round = Self::round(Arc::clone(&self.inner), id, read());
                    *gathering = Some(Gathering {
                        id,
                        round: round.clone(),
                    });
                    round
                }
            }
        };
        round.await
    }

    fn round(
        inner: Arc<Inner<T, E>>,
        id: u64,
        read: impl Future<Output = Result<T, E>> + Send + 'static,
    ) -> Shared<BoxFuture<'static, RoundResult<T, E>>> {
        async move {
            let _reading = inner.reading.lock().await;
            // From here on the read may see a snapshot taken before a newcomer arrived, so
            // newcomers must open the next round.
            {
                let mut gathering = lock(&inner.gathering);
                if gathering.as_ref().is_some_and(|open| open.id == id) {
                    *gathering = None;
                }
            }
            inner.reads.fetch_add(1, Ordering::Relaxed);
            read.await.map_err(Arc::new)
        }
        .boxed()
        .shared()
    }
}

fn lock<G>(mutex: &Mutex<G>) -> MutexGuard<'_, G> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;
    use std::time::Duration;
    use tokio::sync::Semaphore;

    /// A "database" whose value can change and whose reads wait for a permit.
    #[derive(Clone)]
    struct Db {
        value: Arc<AtomicU32>,
        gate: Arc<Semaphore>,
    }

    impl Db {
        fn new() -> Self {
            Self {
                value: Arc::new(AtomicU32::new(0)),
                gate: Arc::new(Semaphore::new(0)),
            }
        }

        fn read(&self) -> impl Future<Output = Result<u32, String>> + Send + 'static {
            let db = self.clone();
            async move {
                // The snapshot is taken when the query starts, before the round trip.
                let snapshot = db.value.load(Ordering::SeqCst);
                db.gate.acquire().await.unwrap().forget();
                Ok(snapshot)
            }
        }
    }

    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    fn spawn_get(
        shared: &Arc<FreshRead<u32, String>>,
        db: &Db,
    ) -> tokio::task::JoinHandle<RoundResult<u32, String>> {
        let (shared, db) = (Arc::clone(shared), db.clone());
        tokio::spawn(async move { shared.get(|| db.read()).await })
    }

    #[tokio::test]
    async fn requests_arriving_during_a_read_share_the_next_one() {
        let db = Db::new();
        let shared = Arc::new(FreshRead::<u32, String>::new());
        let first = spawn_get(&shared, &db);
        settle().await; // the first read has started and waits on the database

        db.value.store(7, Ordering::SeqCst); // a write commits, then 50 requests arrive
        let later: Vec<_> = (0..50).map(|_| spawn_get(&shared, &db)).collect();
        settle().await;
        db.gate.add_permits(2);

        assert_eq!(first.await.unwrap().unwrap(), 0);
        for call in later {
            assert_eq!(
                call.await.unwrap().unwrap(),
                7,
                "a request must see writes committed before it arrived"
            );
        }
        assert_eq!(shared.reads(), 2, "the 50 latecomers share one read");
    }

    #[tokio::test]
    async fn errors_reach_every_joiner_and_are_not_kept() {
        let shared = FreshRead::<u32, String>::new();
        let failing = || async { Err::<u32, _>("database down".to_owned()) };

        let (a, b) = tokio::join!(shared.get(failing), shared.get(failing));
        assert_eq!(*a.unwrap_err(), "database down");
        assert_eq!(*b.unwrap_err(), "database down");

        let next = shared.get(|| async { Ok::<_, String>(3) }).await;
        assert_eq!(
            next.unwrap(),
            3,
            "a failed round must not answer later calls"
        );
    }

    #[tokio::test]
    async fn a_round_completes_when_the_request_that_opened_it_goes_away() {
        let db = Db::new();
        let shared = Arc::new(FreshRead::<u32, String>::new());
        let running = spawn_get(&shared, &db);
        settle().await;
        db.value.store(5, Ordering::SeqCst);
        let opener = spawn_get(&shared, &db); // opens the gathering round
        let joiner = spawn_get(&shared, &db); // joins it
        settle().await;

        opener.abort();
        db.gate.add_permits(2);

        assert_eq!(running.await.unwrap().unwrap(), 0);
        let answer = tokio::time::timeout(Duration::from_secs(5), joiner)
            .await
            .expect("the joiner must not hang")
            .unwrap();
        assert_eq!(answer.unwrap(), 5);
        assert_eq!(shared.reads(), 2);
    }
}
