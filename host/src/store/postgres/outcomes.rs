//! Attempt outcomes written together: each worker's [`Store::record_attempt`] call queues its
//! outcome and waits; one writer takes every outcome queued meanwhile and records them in one
//! transaction — one commit (one WAL flush) for many attempts, instead of one each. Safe
//! because nobody is answered before the commit: a worker learns its outcome is recorded only
//! once it is durable, and a crash before the commit loses only outcomes whose deliveries are
//! still leased, which are sent again when their leases expire (at-least-once, as for one
//! attempt in flight).
//!
//! Each outcome is fenced on its own ([`StoreError::LeaseLost`] for that one, nothing written
//! for it, the others recorded). A batch first locks the integrations of its deliveries in id
//! order, then records its outcomes in delivery-id order, so that two nodes' batches (and a
//! claim, which locks integrations in id order too) take the rows they share in the same
//! order. When a batch fails for a reason one outcome can cause (a record that does not
//! decode, a statement refused), its outcomes are written again one by one, so that the bad
//! one fails alone; when the database is out of reach, or a commit was not confirmed, every
//! outcome of the batch gets the error at once (the worker waits for the store and tries
//! again; an outcome whose commit did land is then found recorded: its lease is gone).
//!
//! [`Store::record_attempt`]: crate::store::Store::record_attempt

use sqlx::postgres::PgPool;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::PgStore;
use crate::model::*;
use crate::store::StoreError;

/// Outcomes written in one transaction at most.
const BATCH: usize = 256;
/// Outcomes that may wait for the writer before `record_attempt` waits to queue its own.
const QUEUE: usize = 4_096;

/// One outcome waiting to be written, and where its result goes.
pub(super) struct Pending {
    pub lease: Lease,
    pub attempt: Attempt,
    pub outcome: Outcome,
    pub now: Timestamp,
    pub auto_disable_after: u32,
    pub done: oneshot::Sender<Result<Recorded, StoreError>>,
}

pub(super) type Queue = mpsc::Sender<Pending>;

/// Starts the writer on `pool`; it ends when the queue's last sender is dropped.
pub(super) fn start(pool: PgPool) -> (Queue, tokio::task::AbortHandle) {
    let (queue, mut waiting) = mpsc::channel::<Pending>(QUEUE);
    let task = tokio::spawn(async move {
        let mut batch = Vec::with_capacity(BATCH);
        while waiting.recv_many(&mut batch, BATCH).await > 0 {
            batch.sort_by_key(|p| p.lease.delivery);
            let results = match write(&pool, &batch).await {
                Ok(results) => results,
                Err(Failed::Before(
                    error @ (StoreError::Backend(_) | StoreError::Corrupt { .. }),
                )) if batch.len() > 1 => {
                    tracing::debug!(%error, outcomes = batch.len(), "a batch of outcomes failed; writing them one by one");
                    let mut results = Vec::with_capacity(batch.len());
                    for pending in &batch {
                        results.push(match write(&pool, std::slice::from_ref(pending)).await {
                            Ok(mut one) => one.pop().unwrap_or_else(|| {
                                Err(StoreError::Backend("an outcome was not written".into()))
                            }),
                            Err(failed) => Err(failed.into_error()),
                        });
                    }
                    results
                }
                Err(failed) => {
                    let error = failed.into_error();
                    batch.iter().map(|_| Err(error.clone())).collect()
                }
            };
            for (pending, result) in batch.drain(..).zip(results) {
                let _ = pending.done.send(result);
            }
        }
    });
    (queue, task.abort_handle())
}

/// Why a batch was not written.
enum Failed {
    /// Before its commit: nothing of it was written.
    Before(StoreError),
    /// At its commit: it may or may not have been written.
    Commit(StoreError),
}

impl Failed {
    fn into_error(self) -> StoreError {
        match self {
            Failed::Before(error) => error,
            Failed::Commit(error) => StoreError::Unavailable(format!(
                "the commit of the outcome was not confirmed: {error}"
            )),
        }
    }
}

/// Writes `batch` (sorted by delivery id) in one transaction: each outcome's result.
async fn write(
    pool: &PgPool,
    batch: &[Pending],
) -> Result<Vec<Result<Recorded, StoreError>>, Failed> {
    let mut tx = pool.begin().await.map_err(|e| Failed::Before(e.into()))?;
    let deliveries: Vec<Uuid> = batch.iter().map(|p| p.lease.delivery).collect();
    sqlx::query(
        "SELECT id FROM integrations WHERE id IN \
           (SELECT integration_id FROM deliveries WHERE id = ANY($1)) \
         ORDER BY id FOR UPDATE",
    )
    .bind(&deliveries)
    .fetch_all(&mut *tx)
    .await
    .map_err(|e| Failed::Before(e.into()))?;
    let mut results = Vec::with_capacity(batch.len());
    for p in batch {
        let recorded = PgStore::record_in(
            &mut tx,
            &p.lease,
            &p.attempt,
            &p.outcome,
            p.now,
            p.auto_disable_after,
        )
        .await;
        match recorded {
            // Found before anything of it was written: the others go on.
            Err(StoreError::LeaseLost(id)) => results.push(Err(StoreError::LeaseLost(id))),
            Err(other) => return Err(Failed::Before(other)),
            Ok(recorded) => results.push(Ok(recorded)),
        }
    }
    tx.commit().await.map_err(|e| Failed::Commit(e.into()))?;
    Ok(results)
}
