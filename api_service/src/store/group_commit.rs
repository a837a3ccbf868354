//! Group commit for `record_quote`: callers enqueue their row and wait; one background writer
//! takes everything queued (up to a cap), writes it in ONE transaction with the counter
//! increments aggregated per symbol, commits, and only then acknowledges each caller. So "Ok
//! means committed" still holds, but a hot symbol's counter row is locked once per batch
//! instead of once per request, and one commit (one WAL flush) serves many requests.
//!
//! With no load a batch is a single row: there is no linger timer, so latency never waits
//! for company.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{NewHistoryEntry, StoreError, WriteStats, errors};

/// Writes rows (user id, entry) and their counter increments in one transaction.
#[async_trait]
pub(super) trait BatchWriter: Send + Sync + 'static {
    async fn write_batch(&self, rows: &[(i64, &NewHistoryEntry)]) -> Result<(), StoreError>;
}

struct Job {
    user_id: i64,
    entry: NewHistoryEntry,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// Largest batch one transaction takes; bounds transaction size and statement parameters.
pub(super) const MAX_BATCH: usize = 512;
/// Queue depth before `submit` waits (backpressure instead of unbounded memory).
const QUEUE_DEPTH: usize = 4 * MAX_BATCH;

pub(super) struct GroupCommit {
    sender: std::sync::RwLock<Option<mpsc::Sender<Job>>>,
    worker: tokio::sync::Mutex<Option<JoinHandle<()>>>,
    tally: Arc<Tally>,
}

/// Batches written and the rows in them, counted by the writer and read at scrape time: the
/// writer task has no handle on the application's metrics recorder (a `metrics::histogram!`
/// here went to the global recorder, which nobody installs, so it was never exported).
#[derive(Default)]
struct Tally {
    batches: AtomicU64,
    rows: AtomicU64,
}

impl GroupCommit {
    /// Spawns the writer task on the current tokio runtime.
    pub(super) fn spawn<W: BatchWriter>(writer: W) -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE_DEPTH);
        let tally = Arc::new(Tally::default());
        let worker = tokio::spawn(run(writer, receiver, tally.clone()));
        GroupCommit {
            sender: std::sync::RwLock::new(Some(sender)),
            worker: tokio::sync::Mutex::new(Some(worker)),
            tally,
        }
    }

    /// Batches committed or attempted so far, and the rows they carried.
    pub(super) fn stats(&self) -> WriteStats {
        WriteStats {
            batches: self.tally.batches.load(Ordering::Relaxed),
            rows: self.tally.rows.load(Ordering::Relaxed),
        }
    }

    /// Resolves once the row is committed (or failed). If the caller stops waiting, the row is
    /// still written: the request was already served.
    pub(super) async fn submit(
        &self,
        user_id: i64,
        entry: NewHistoryEntry,
    ) -> Result<(), StoreError> {
        let sender = self
            .sender
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
            .ok_or(StoreError::Unavailable(sqlx::Error::PoolClosed))?;
        let (done, result) = oneshot::channel();
        sender
            .send(Job {
                user_id,
                entry,
                done,
            })
            .await
            .map_err(|_| StoreError::Unavailable(sqlx::Error::WorkerCrashed))?;
        result
            .await
            .map_err(|_| StoreError::Unavailable(sqlx::Error::WorkerCrashed))?
    }

    /// Stops accepting rows and waits until everything already queued is committed.
    pub(super) async fn close(&self) {
        self.sender
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(worker) = self.worker.lock().await.take()
            && let Err(err) = worker.await
        {
            tracing::error!(error = %err, "group-commit writer ended abnormally");
        }
    }
}

async fn run<W: BatchWriter>(writer: W, mut receiver: mpsc::Receiver<Job>, tally: Arc<Tally>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        tally.batches.fetch_add(1, Ordering::Relaxed);
        tally.rows.fetch_add(batch.len() as u64, Ordering::Relaxed);
        if let Some(outage) = commit(&writer, &mut batch).await {
            // Rows that queued while this batch waited out the pool's acquire timeout would
            // each wait it out once more behind it (a request stuck for twice the timeout or
            // longer). The database is down: fail them now with the same error.
            while let Ok(job) = receiver.try_recv() {
                let _ = job.done.send(Err(errors::replicate(&outage)));
            }
        }
    }
}

/// Writes one batch and answers its callers; returns the error when the database was
/// unavailable.
async fn commit<W: BatchWriter>(writer: &W, batch: &mut Vec<Job>) -> Option<StoreError> {
    let rows: Vec<(i64, &NewHistoryEntry)> =
        batch.iter().map(|job| (job.user_id, &job.entry)).collect();
    let result = writer.write_batch(&rows).await;
    drop(rows);
    match result {
        Ok(()) => {
            for job in batch.drain(..) {
                let _ = job.done.send(Ok(()));
            }
            None
        }
        // An outage fails everyone alike; retrying row by row would only wait out the pool
        // timeout once per row.
        Err(err) if batch.len() == 1 || err.is_unavailable() => {
            tracing::warn!(error = %err, rows = batch.len(), "group commit failed");
            for job in batch.drain(..) {
                let _ = job.done.send(Err(errors::replicate(&err)));
            }
            err.is_unavailable().then_some(err)
        }
        // One bad row (e.g. its user was deleted meanwhile) must not fail its neighbours:
        // redo each row alone so every caller gets its own answer.
        Err(err) => {
            tracing::warn!(error = %err, rows = batch.len(), "group commit failed; retrying rows one by one");
            for job in batch.drain(..) {
                let result = writer.write_batch(&[(job.user_id, &job.entry)]).await;
                let _ = job.done.send(result);
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use chrono::Utc;

    use super::*;

    const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);

    /// A database that is down: every batch waits out an acquire timeout, then fails.
    struct DownDatabase {
        batches: Arc<AtomicUsize>,
    }

    #[async_trait]
    impl BatchWriter for DownDatabase {
        async fn write_batch(&self, _rows: &[(i64, &NewHistoryEntry)]) -> Result<(), StoreError> {
            self.batches.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(ACQUIRE_TIMEOUT).await;
            Err(StoreError::Unavailable(sqlx::Error::PoolTimedOut))
        }
    }

    fn entry() -> NewHistoryEntry {
        NewHistoryEntry {
            requested_at: Utc::now(),
            symbol: "AAPL.US".into(),
            name: "APPLE".into(),
            open: 1.0,
            high: 1.0,
            low: 1.0,
            close: 1.0,
        }
    }

    #[tokio::test]
    async fn rows_queued_behind_a_batch_that_found_the_database_down_fail_with_it() {
        let batches = Arc::new(AtomicUsize::new(0));
        let commits = Arc::new(GroupCommit::spawn(DownDatabase {
            batches: batches.clone(),
        }));
        let first = tokio::spawn({
            let commits = commits.clone();
            async move { commits.submit(1, entry()).await }
        });
        // Let the writer take the first row, then queue more behind it.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = std::time::Instant::now();
        let queued: Vec<_> = (0..3)
            .map(|i| {
                let commits = commits.clone();
                tokio::spawn(async move { commits.submit(i, entry()).await })
            })
            .collect();

        assert!(first.await.unwrap().unwrap_err().is_unavailable());
        for row in queued {
            assert!(row.await.unwrap().unwrap_err().is_unavailable());
        }
        // Behind the first batch they wait ~0.9 s; without the fast failure another 1 s.
        assert!(
            started.elapsed() < ACQUIRE_TIMEOUT * 3 / 2,
            "queued rows waited {:?}: an acquire timeout more",
            started.elapsed()
        );
        assert_eq!(
            batches.load(Ordering::SeqCst),
            1,
            "no second wait for the dead database"
        );
    }

    /// Takes every batch at once and remembers nothing.
    struct Accepting;

    #[async_trait]
    impl BatchWriter for Accepting {
        async fn write_batch(&self, _rows: &[(i64, &NewHistoryEntry)]) -> Result<(), StoreError> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn batches_and_their_rows_are_counted() {
        let commits = Arc::new(GroupCommit::spawn(Accepting));
        assert_eq!(commits.stats(), WriteStats::default());

        let rows: Vec<_> = (0..5)
            .map(|i| {
                let commits = commits.clone();
                tokio::spawn(async move { commits.submit(i, entry()).await })
            })
            .collect();
        for row in rows {
            row.await.unwrap().unwrap();
        }

        let stats = commits.stats();
        assert_eq!(stats.rows, 5);
        assert!((1..=5).contains(&stats.batches), "{stats:?}");
    }
}
