//! Group commit for `record_quote`: callers enqueue their row and wait; one background writer
//! takes everything queued (up to a cap), writes it in ONE transaction with the counter
//! increments aggregated per symbol, commits, and only then acknowledges each caller. So "Ok
//! means committed" still holds, but a hot symbol's counter row is locked once per batch
//! instead of once per request, and one commit (one WAL flush) serves many requests.
//!
//! With no load a batch is a single row: there is no linger timer, so latency never waits
//! for company.

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{NewHistoryEntry, StoreError, errors};

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
}

impl GroupCommit {
    /// Spawns the writer task on the current tokio runtime.
    pub(super) fn spawn<W: BatchWriter>(writer: W) -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE_DEPTH);
        let worker = tokio::spawn(run(writer, receiver));
        GroupCommit {
            sender: std::sync::RwLock::new(Some(sender)),
            worker: tokio::sync::Mutex::new(Some(worker)),
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

async fn run<W: BatchWriter>(writer: W, mut receiver: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        commit(&writer, &mut batch).await;
    }
}

async fn commit<W: BatchWriter>(writer: &W, batch: &mut Vec<Job>) {
    let rows: Vec<(i64, &NewHistoryEntry)> =
        batch.iter().map(|job| (job.user_id, &job.entry)).collect();
    metrics::histogram!("store_group_commit_batch_rows").record(rows.len() as f64);
    let result = writer.write_batch(&rows).await;
    drop(rows);
    match result {
        Ok(()) => {
            for job in batch.drain(..) {
                let _ = job.done.send(Ok(()));
            }
        }
        // An outage fails everyone alike; retrying row by row would only wait out the pool
        // timeout once per row.
        Err(err) if batch.len() == 1 || err.is_unavailable() => {
            tracing::warn!(error = %err, rows = batch.len(), "group commit failed");
            for job in batch.drain(..) {
                let _ = job.done.send(Err(errors::replicate(&err)));
            }
        }
        // One bad row (e.g. its user was deleted meanwhile) must not fail its neighbours:
        // redo each row alone so every caller gets its own answer.
        Err(err) => {
            tracing::warn!(error = %err, rows = batch.len(), "group commit failed; retrying rows one by one");
            for job in batch.drain(..) {
                let result = writer.write_batch(&[(job.user_id, &job.entry)]).await;
                let _ = job.done.send(result);
            }
        }
    }
}
