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
//! order, then its deliveries in id order, so that two nodes' batches (and a claim, which
//! locks integrations in id order too) take the rows they share in the same order. The
//! outcomes are then folded in memory, in delivery-id order, and each table is written with
//! one statement: about a dozen statements per batch whatever its size, where one outcome
//! after another took eight or nine each (docs/PERFORMANCE.md, cluster mode). When a batch fails for a reason one outcome can cause (a record that does not
//! decode, a statement refused), its outcomes are written again one by one, so that the bad
//! one fails alone; when the database is out of reach, or a commit was not confirmed, every
//! outcome of the batch gets the error at once (the worker waits for the store and tries
//! again; an outcome whose commit did land is then found recorded: its lease is gone).
//!
//! [`Store::record_attempt`]: crate::store::Store::record_attempt

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use sqlx::Row;
use sqlx::postgres::PgPool;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::{PgStore, decode, encode, ms};
use crate::model::*;
use crate::store::{Signals, StoreError};

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

/// Starts the writer on `pool`; it ends when the queue's last sender is dropped. `signals`
/// hears of the integration records it writes.
pub(super) fn start(pool: PgPool, signals: Arc<Signals>) -> (Queue, tokio::task::AbortHandle) {
    let (queue, mut waiting) = mpsc::channel::<Pending>(QUEUE);
    let task = tokio::spawn(async move {
        let mut batch = Vec::with_capacity(BATCH);
        while waiting.recv_many(&mut batch, BATCH).await > 0 {
            batch.sort_by_key(|p| p.lease.delivery);
            let results = match write(&pool, &signals, &batch).await {
                Ok(results) => results,
                Err(Failed::Before(
                    error @ (StoreError::Backend(_) | StoreError::Corrupt { .. }),
                )) if batch.len() > 1 => {
                    tracing::debug!(%error, outcomes = batch.len(), "a batch of outcomes failed; writing them one by one");
                    let mut results = Vec::with_capacity(batch.len());
                    for pending in &batch {
                        results.push(
                            match write(&pool, &signals, std::slice::from_ref(pending)).await {
                                Ok(mut one) => one.pop().unwrap_or_else(|| {
                                    Err(StoreError::Backend("an outcome was not written".into()))
                                }),
                                Err(failed) => Err(failed.into_error()),
                            },
                        );
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
///
/// A fixed number of statements whatever the batch's size, as the embedded store does it
/// (`store/sled/outcomes.rs`): the rows it touches are read and locked once (integrations,
/// then deliveries, in id order), the outcomes are folded in memory in the batch's order with
/// the model's functions, and each table is written with one statement.
async fn write(
    pool: &PgPool,
    signals: &Signals,
    batch: &[Pending],
) -> Result<Vec<Result<Recorded, StoreError>>, Failed> {
    let before = |e: sqlx::Error| Failed::Before(e.into());
    let mut tx = pool.begin().await.map_err(before)?;
    let ids: Vec<Uuid> = batch.iter().map(|p| p.lease.delivery).collect();
    let mut integrations: HashMap<Uuid, (Integration, bool)> = HashMap::new();
    for row in sqlx::query(
        "SELECT id, record FROM integrations WHERE id IN \
           (SELECT integration_id FROM deliveries WHERE id = ANY($1)) \
         ORDER BY id FOR UPDATE",
    )
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await
    .map_err(before)?
    {
        let integration = decode(row.get::<&str, _>(1), "integration").map_err(Failed::Before)?;
        integrations.insert(row.get::<Uuid, _>(0), (integration, false));
    }
    let mut deliveries: HashMap<Uuid, (Delivery, i32)> = HashMap::new();
    for row in
        sqlx::query("SELECT record, day FROM deliveries WHERE id = ANY($1) ORDER BY id FOR UPDATE")
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await
            .map_err(before)?
    {
        let delivery: Delivery =
            decode(row.get::<&str, _>(0), "delivery").map_err(Failed::Before)?;
        deliveries.insert(delivery.id, (delivery, row.get::<i32, _>(1)));
    }
    // The statistics buckets the outcomes fall in, and the last outcomes of their
    // integrations.
    let mut pairs: Vec<(Uuid, i64)> = batch
        .iter()
        .filter_map(|p| {
            let (d, _) = deliveries.get(&p.lease.delivery)?;
            Some((d.integration_id, ms(stats_bucket(p.now))))
        })
        .collect();
    pairs.sort_unstable();
    pairs.dedup();
    let mut owners: Vec<Uuid> = pairs.iter().map(|(i, _)| *i).collect();
    owners.dedup();
    let mut stats: HashMap<(Uuid, i64), AttemptStats> = HashMap::new();
    for row in sqlx::query(
        "SELECT s.integration_id, s.bucket, s.record FROM stats s \
         JOIN unnest($1::uuid[], $2::bigint[]) AS u(integration_id, bucket) \
           ON s.integration_id = u.integration_id AND s.bucket = u.bucket \
         FOR UPDATE OF s",
    )
    .bind(pairs.iter().map(|(i, _)| *i).collect::<Vec<_>>())
    .bind(pairs.iter().map(|(_, b)| *b).collect::<Vec<_>>())
    .fetch_all(&mut *tx)
    .await
    .map_err(before)?
    {
        let bucket = decode(row.get::<&str, _>(2), "statistics").map_err(Failed::Before)?;
        stats.insert((row.get::<Uuid, _>(0), row.get::<i64, _>(1)), bucket);
    }
    let mut lasts: HashMap<Uuid, LastOutcomes> = HashMap::new();
    for row in sqlx::query(
        "SELECT integration_id, record FROM last_outcomes WHERE integration_id = ANY($1) FOR UPDATE",
    )
    .bind(&owners)
    .fetch_all(&mut *tx)
    .await
    .map_err(before)?
    {
        let last = decode(row.get::<&str, _>(1), "last outcomes").map_err(Failed::Before)?;
        lasts.insert(row.get::<Uuid, _>(0), last);
    }

    // Folded in the batch's order, as one outcome after another would be.
    let mut recorded: Vec<(Delivery, i32, Attempt)> = Vec::with_capacity(batch.len());
    let mut recorded_ids: HashSet<Uuid> = HashSet::new();
    let mut stats_touched: Vec<(Uuid, i64)> = Vec::new();
    let mut lasts_touched: Vec<Uuid> = Vec::new();
    let mut results = Vec::with_capacity(batch.len());
    for p in batch {
        let id = p.lease.delivery;
        // Each delivery recorded at most once per batch: once an outcome of it is recorded,
        // a later one is no longer under its lease (one whose lease was lost records
        // nothing, and the next may still hold it).
        let held = match recorded_ids.contains(&id) {
            true => None,
            false => deliveries.get(&id).filter(|(d, _)| d.holds(&p.lease)),
        };
        let Some((old, day)) = held else {
            results.push(Err(StoreError::LeaseLost(id)));
            continue;
        };
        let (mut d, day) = (old.clone(), *day);
        let mut outcome = p.outcome.clone();
        let mut integration_disabled = false;
        if let Some((integration, changed)) = integrations.get_mut(&d.integration_id) {
            let applied = outcome.apply_to(integration, p.auto_disable_after, p.now);
            (outcome, integration_disabled) = (applied.outcome, applied.disabled);
            *changed |= applied.changed;
        }
        let bucket = (d.integration_id, ms(stats_bucket(p.now)));
        if !stats_touched.contains(&bucket) {
            stats_touched.push(bucket);
        }
        stats
            .entry(bucket)
            .or_default()
            .add(outcome.signal, p.attempt.duration_ms);
        if outcome.signal != Signal::Neutral {
            if !lasts_touched.contains(&d.integration_id) {
                lasts_touched.push(d.integration_id);
            }
            lasts
                .entry(d.integration_id)
                .or_default()
                .observe(outcome.signal, p.now);
        }
        let mut attempt = p.attempt.clone();
        attempt.outcome = outcome.status;
        d.record(&attempt, outcome, p.now);
        results.push(Ok(Recorded {
            status: d.status,
            integration_disabled,
        }));
        recorded_ids.insert(id);
        recorded.push((d, day, attempt));
    }

    let changed: Vec<&Integration> = integrations
        .values()
        .filter(|(_, changed)| *changed)
        .map(|(integration, _)| integration)
        .collect();
    if !changed.is_empty() {
        sqlx::query(
            "UPDATE integrations i SET record = u.record \
             FROM unnest($1::uuid[], $2::text[]) AS u(id, record) WHERE i.id = u.id",
        )
        .bind(changed.iter().map(|i| i.id).collect::<Vec<_>>())
        .bind(changed.iter().copied().map(encode).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await
        .map_err(before)?;
        PgStore::notify_integrations(&mut tx)
            .await
            .map_err(Failed::Before)?;
    }
    let integrations_changed = !changed.is_empty();
    if !stats_touched.is_empty() {
        sqlx::query(
            "INSERT INTO stats (integration_id, bucket, record) \
             SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::text[]) \
             ON CONFLICT (integration_id, bucket) DO UPDATE SET record = EXCLUDED.record",
        )
        .bind(stats_touched.iter().map(|(i, _)| *i).collect::<Vec<_>>())
        .bind(stats_touched.iter().map(|(_, b)| *b).collect::<Vec<_>>())
        .bind(
            stats_touched
                .iter()
                .map(|k| encode(&stats[k]))
                .collect::<Vec<_>>(),
        )
        .execute(&mut *tx)
        .await
        .map_err(before)?;
    }
    if !lasts_touched.is_empty() {
        sqlx::query(
            "INSERT INTO last_outcomes (integration_id, record) \
             SELECT * FROM unnest($1::uuid[], $2::text[]) \
             ON CONFLICT (integration_id) DO UPDATE SET record = EXCLUDED.record",
        )
        .bind(&lasts_touched)
        .bind(
            lasts_touched
                .iter()
                .map(|i| encode(&lasts[i]))
                .collect::<Vec<_>>(),
        )
        .execute(&mut *tx)
        .await
        .map_err(before)?;
    }
    if !recorded.is_empty() {
        let ids: Vec<Uuid> = recorded.iter().map(|(d, _, _)| d.id).collect();
        let days: Vec<i32> = recorded.iter().map(|(_, day, _)| *day).collect();
        sqlx::query(
            "INSERT INTO attempts (delivery_id, number, day, record) \
             SELECT * FROM unnest($1::uuid[], $2::integer[], $3::integer[], $4::text[])",
        )
        .bind(&ids)
        .bind(
            recorded
                .iter()
                .map(|(_, _, a)| a.number as i32)
                .collect::<Vec<_>>(),
        )
        .bind(&days)
        .bind(
            recorded
                .iter()
                .map(|(_, _, a)| encode(a))
                .collect::<Vec<_>>(),
        )
        .execute(&mut *tx)
        .await
        .map_err(before)?;
        sqlx::query(
            "UPDATE deliveries d SET status = u.status, record = u.record \
             FROM unnest($1::uuid[], $2::integer[], $3::text[], $4::text[]) \
               AS u(id, day, status, record) \
             WHERE d.id = u.id AND d.day = u.day",
        )
        .bind(&ids)
        .bind(&days)
        .bind(
            recorded
                .iter()
                .map(|(d, _, _)| d.status.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            recorded
                .iter()
                .map(|(d, _, _)| encode(d))
                .collect::<Vec<_>>(),
        )
        .execute(&mut *tx)
        .await
        .map_err(before)?;
        // The queue, as `PgStore::put_queue` keeps it: open deliveries at their due time,
        // the others out of it.
        let (open, closed): (Vec<_>, Vec<_>) = recorded.iter().partition(|(d, _, _)| d.is_open());
        if !closed.is_empty() {
            sqlx::query("DELETE FROM queue WHERE delivery_id = ANY($1)")
                .bind(closed.iter().map(|(d, _, _)| d.id).collect::<Vec<_>>())
                .execute(&mut *tx)
                .await
                .map_err(before)?;
        }
        let open: Vec<(&Delivery, i32)> = open.iter().map(|(d, day, _)| (d, *day)).collect();
        PgStore::queue_rows(&mut tx, &open)
            .await
            .map_err(Failed::Before)?;
    }
    let committed = tx.commit().await;
    // Raised also when the commit is not confirmed: it may have been written.
    if integrations_changed {
        signals.integrations_changed();
    }
    committed.map_err(|e| Failed::Commit(e.into()))?;
    Ok(results)
}
