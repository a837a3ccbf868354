//! Group commit for `record_quote` and `record_quotes`: callers enqueue their rows and wait;
//! one background writer takes everything queued (up to a cap), writes it in ONE transaction
//! with the counter increments aggregated per symbol, commits, and only then acknowledges
//! each caller. So "Ok means committed" still holds, but a hot symbol's counter row is locked
//! once per batch instead of once per request, and one commit (one WAL flush) serves many
//! requests.
//!
//! A caller's rows (one `/api/v1/quotes` answer: up to 50) are one job and are never split:
//! they commit in the same transaction or fail together, also when a failed batch is redone
//! job by job.
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
    /// Committed together or not at all.
    entries: Vec<NewHistoryEntry>,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// Most rows one transaction takes (a larger single job is written alone); bounds
/// transaction size and statement parameters.
pub(super) const MAX_BATCH: usize = 512;
/// Queue depth, in jobs, before `submit` waits (backpressure instead of unbounded memory).
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

    /// Resolves once the rows are committed, all in one transaction (or failed, all of them).
    /// If the caller stops waiting, the rows are still written: the request was already
    /// served. No rows: nothing to wait for.
    pub(super) async fn submit(
        &self,
        user_id: i64,
        entries: Vec<NewHistoryEntry>,
    ) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
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
                entries,
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
    // A job that did not fit the previous batch: it opens the next one.
    let mut carried: Option<Job> = None;
    loop {
        let first = match carried.take() {
            Some(job) => job,
            None => match receiver.recv().await {
                Some(job) => job,
                None => break,
            },
        };
        let mut rows = first.entries.len();
        batch.push(first);
        while rows < MAX_BATCH {
            let Ok(job) = receiver.try_recv() else { break };
            if rows + job.entries.len() > MAX_BATCH {
                carried = Some(job);
                break;
            }
            rows += job.entries.len();
            batch.push(job);
        }
        tally.batches.fetch_add(1, Ordering::Relaxed);
        tally.rows.fetch_add(rows as u64, Ordering::Relaxed);
        if let Some(outage) = commit(&writer, &mut batch).await {
            // Rows that queued while this batch waited out the pool's acquire timeout would
            // each wait it out once more behind it (a request stuck for twice the timeout or
            // longer). The database is down: fail them now with the same error.
            for job in carried
                .take()
                .into_iter()
                .chain(std::iter::from_fn(|| receiver.try_recv().ok()))
            {
                let _ = job.done.send(Err(errors::replicate(&outage)));
            }
        }
    }
}

/// Writes one batch and answers its callers; returns the error when the database was
/// unavailable.
async fn commit<W: BatchWriter>(writer: &W, batch: &mut Vec<Job>) -> Option<StoreError> {
    let rows: Vec<(i64, &NewHistoryEntry)> = batch
        .iter()
        .flat_map(|job| job.entries.iter().map(move |entry| (job.user_id, entry)))
        .collect();
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
            tracing::warn!(error = %err, jobs = batch.len(), "group commit failed");
            for job in batch.drain(..) {
                let _ = job.done.send(Err(errors::replicate(&err)));
            }
            err.is_unavailable().then_some(err)
        }
        // One bad row (e.g. its user was deleted meanwhile) must not fail its neighbours:
        // redo each caller's rows alone so every caller gets its own answer.
        Err(err) => {
            tracing::warn!(error = %err, jobs = batch.len(), "group commit failed; retrying caller by caller");
            for job in batch.drain(..) {
                let rows: Vec<(i64, &NewHistoryEntry)> = job
                    .entries
                    .iter()
                    .map(|entry| (job.user_id, entry))
                    .collect();
                let result = writer.write_batch(&rows).await;
                drop(rows);
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
            async move { commits.submit(1, vec![entry()]).await }
        });
        // Let the writer take the first row, then queue more behind it.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = std::time::Instant::now();
        let queued: Vec<_> = (0..3)
            .map(|i| {
                let commits = commits.clone();
                tokio::spawn(async move { commits.submit(i, vec![entry()]).await })
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
                tokio::spawn(async move { commits.submit(i, vec![entry()]).await })
            })
            .collect();
        for row in rows {
            row.await.unwrap().unwrap();
        }

        let stats = commits.stats();
        assert_eq!(stats.rows, 5);
        assert!((1..=5).contains(&stats.batches), "{stats:?}");
    }

    /// Remembers each transaction's rows as (user id, symbol).
    #[derive(Default)]
    struct Recording {
        batches: std::sync::Mutex<Vec<Vec<(i64, String)>>>,
    }

    #[async_trait]
    impl BatchWriter for Arc<Recording> {
        async fn write_batch(&self, rows: &[(i64, &NewHistoryEntry)]) -> Result<(), StoreError> {
            let rows = rows.iter().map(|(u, e)| (*u, e.symbol.clone())).collect();
            self.batches.lock().unwrap().push(rows);
            Ok(())
        }
    }

    #[tokio::test]
    async fn one_callers_rows_are_never_split_and_transactions_stay_bounded() {
        let recording = Arc::new(Recording::default());
        let commits = Arc::new(GroupCommit::spawn(recording.clone()));

        // 40 callers of 50 rows: 2,000 rows, more than three transactions' worth.
        let callers: Vec<_> = (0..40)
            .map(|caller| {
                let commits = commits.clone();
                tokio::spawn(async move { commits.submit(caller, vec![entry(); 50]).await })
            })
            .collect();
        for caller in callers {
            caller.await.unwrap().unwrap();
        }

        let batches = recording.batches.lock().unwrap();
        assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), 2_000);
        for caller in 0..40 {
            let holding: Vec<usize> = batches
                .iter()
                .map(|b| b.iter().filter(|(u, _)| *u == caller).count())
                .filter(|n| *n > 0)
                .collect();
            assert_eq!(
                holding,
                vec![50],
                "caller {caller}'s rows in one transaction"
            );
        }
        assert!(
            batches.iter().all(|b| b.len() <= MAX_BATCH),
            "{:?}",
            batches.iter().map(Vec::len).collect::<Vec<_>>()
        );
    }

    #[tokio::test]
    async fn submitting_no_rows_commits_nothing() {
        let recording = Arc::new(Recording::default());
        let commits = GroupCommit::spawn(recording.clone());

        commits.submit(1, Vec::new()).await.unwrap();

        assert!(recording.batches.lock().unwrap().is_empty());
        assert_eq!(commits.stats(), WriteStats::default());
    }
}
