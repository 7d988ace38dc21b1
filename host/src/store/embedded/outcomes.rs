//! Attempt outcomes written together and made durable before anyone hears they are recorded.
//!
//! Each [`Store::record_attempt`] call queues its outcome and waits. The first caller that
//! finds no write under way becomes the writer: it takes every outcome queued (up to
//! [`BATCH`]), records them in one atomic batch — each outcome fenced on its own, each
//! integration's record, statistics bucket and last outcomes read once and written once —
//! flushes it to disk (sharing the flush with ingest's [`GroupCommit`]), and only then
//! answers every caller of the batch. Outcomes queued while it writes wait for the next turn,
//! so the busier the workers, the more outcomes one flush carries.
//!
//! A crash before the batch is applied loses only outcomes whose deliveries are still durably
//! queued: they are sent again (the attempt in flight, as at-least-once allows). A batch is
//! applied whole or not at all, and nobody was told it was recorded before its flush ended.
//! An outcome whose lease was lost gets [`StoreError::LeaseLost`] alone; when a batch fails
//! for a reason one outcome can cause (a record that does not decode), its outcomes are
//! written again one by one, so the bad one fails alone. This mirrors PostgreSQL's outcome
//! writer (`store/postgres/outcomes.rs`), without a task of its own: embedded stores are opened
//! outside any runtime too (the CLI), so the writer is whichever caller's turn it is.
//!
//! The batch is applied, and its leases ended, before the writer's first `.await`. So a writer
//! whose future is dropped during the flush (its worker cancelled at shutdown), or whose flush
//! fails, leaves outcomes that are applied but not known to be on disk: its callers get
//! [`StoreError::Unavailable`], and when they try again their lease is gone
//! ([`StoreError::LeaseLost`], which the worker logs as an outcome it could not record). If
//! the process then dies before the engine's next flush, those deliveries are still queued on disk
//! and are sent again (at-least-once).
//!
//! [`Store::record_attempt`]: crate::store::Store::record_attempt
//! [`GroupCommit`]: super::GroupCommit

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use tokio::sync::oneshot;
use uuid::Uuid;

use super::keys::*;
use super::{EmbeddedStore, Writes, encode};
use crate::model::*;
use crate::store::StoreError;

/// Outcomes written in one batch at most.
const BATCH: usize = 256;

/// One outcome waiting to be written, and where its result goes.
struct Pending {
    lease: Lease,
    attempt: Attempt,
    outcome: Outcome,
    now: Timestamp,
    auto_disable_after: u32,
    done: oneshot::Sender<Result<Recorded, StoreError>>,
}

/// The queue of outcomes and whose turn it is to write them.
#[derive(Default)]
pub(super) struct Outcomes {
    waiting: Mutex<Vec<Pending>>,
    turn: tokio::sync::Mutex<()>,
}

impl Outcomes {
    fn take(&self) -> Vec<Pending> {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        let n = waiting.len().min(BATCH);
        waiting.drain(..n).collect()
    }
}

impl EmbeddedStore {
    /// Queues an outcome and waits until it is recorded and on disk, writing the queue's
    /// outcomes itself when it is this caller's turn.
    pub(super) async fn record_queued(
        &self,
        lease: Lease,
        attempt: Attempt,
        outcome: Outcome,
        now: Timestamp,
        auto_disable_after: u32,
    ) -> Result<Recorded, StoreError> {
        let _pending = self.signals.outcome_pending();
        let (done, mut answer) = oneshot::channel();
        self.outcomes
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Pending {
                lease,
                attempt,
                outcome,
                now,
                auto_disable_after,
                done,
            });
        loop {
            tokio::select! {
                biased;
                result = &mut answer => {
                    return result.unwrap_or_else(|_| {
                        Err(StoreError::Unavailable(
                            "the write of the outcome was interrupted; it may have been recorded"
                                .into(),
                        ))
                    });
                }
                _turn = self.outcomes.turn.lock() => {
                    // Nothing queued: this caller's outcome went with the previous turn, whose
                    // answer is already here.
                    let batch = self.outcomes.take();
                    if batch.is_empty() {
                        continue;
                    }
                    let results = self.write_batch(&batch).await;
                    for (pending, result) in batch.into_iter().zip(results) {
                        let _ = pending.done.send(result);
                    }
                }
            }
        }
    }

    /// Records `batch` and flushes it: each outcome's result.
    async fn write_batch(&self, batch: &[Pending]) -> Vec<Result<Recorded, StoreError>> {
        let checkpoint = self.past_checkpoint().await;
        let results = match self.record(batch) {
            Ok(results) => results,
            Err(error @ (StoreError::Backend(_) | StoreError::Corrupt { .. }))
                if batch.len() > 1 =>
            {
                tracing::debug!(%error, outcomes = batch.len(), "a batch of outcomes failed; writing them one by one");
                let mut results = Vec::with_capacity(batch.len());
                for pending in batch {
                    results.push(
                        self.record(std::slice::from_ref(pending))
                            .and_then(|mut one| one.pop().expect("one result per outcome")),
                    );
                }
                results
            }
            Err(error) => return batch.iter().map(|_| Err(error.clone())).collect(),
        };
        drop(checkpoint);
        if results.iter().any(Result::is_ok) {
            if let Err(error) = self.durable().await {
                return batch.iter().map(|_| Err(error.clone())).collect();
            }
            self.signals.work_queued();
        }
        results
    }

    /// Applies `batch` in one atomic batch (nothing of it when it fails): each outcome's
    /// result, [`StoreError::LeaseLost`] for those whose lease is no longer theirs.
    fn record(&self, batch: &[Pending]) -> Result<Vec<Result<Recorded, StoreError>>, StoreError> {
        let _write = self.writing()?;
        let db = self.db()?;
        let mut w = Writes::default();
        // Read once per batch, folded in memory, written once.
        let mut integrations: HashMap<Vec<u8>, (Option<Integration>, bool)> = HashMap::new();
        let mut stats: HashMap<Vec<u8>, AttemptStats> = HashMap::new();
        let mut lasts: HashMap<Vec<u8>, LastOutcomes> = HashMap::new();
        // Deliveries this batch records, whose leases end once it is written.
        let mut changed: HashSet<Uuid> = HashSet::new();
        let mut results = Vec::with_capacity(batch.len());
        for p in batch {
            let id = p.lease.delivery;
            // Each delivery at most once per batch: a second outcome for it (an expired lease
            // claimed again, both attempts ending together) is no longer under its lease.
            let old = match changed.contains(&id) {
                true => None,
                false => self.leased_record(&p.lease)?,
            };
            let Some(old) = old else {
                results.push(Err(StoreError::LeaseLost(id)));
                continue;
            };
            let mut outcome = p.outcome.clone();
            let mut integration_disabled = false;
            let integration_key = integration_key(&old.shop, old.integration_id);
            let integration = match integrations.entry(integration_key.clone()) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => e.insert((
                    self.get::<Integration>(&integration_key, "integration")?,
                    false,
                )),
            };
            if let (Some(record), changed) = integration {
                let applied = outcome.apply_to(record, p.auto_disable_after, p.now);
                (outcome, integration_disabled) = (applied.outcome, applied.disabled);
                *changed |= applied.changed;
            }
            let bucket_key = stats_key(old.integration_id, stats_bucket(p.now));
            let bucket = match stats.entry(bucket_key.clone()) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(self.get(&bucket_key, "statistics")?.unwrap_or_default())
                }
            };
            bucket.add(outcome.signal, p.attempt.duration_ms);
            if outcome.signal != Signal::Neutral {
                let last_key = key(LAST, old.integration_id.as_bytes());
                let last = match lasts.entry(last_key.clone()) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert(self.get(&last_key, "last outcomes")?.unwrap_or_default())
                    }
                };
                last.observe(outcome.signal, p.now);
            }

            let mut attempt = p.attempt.clone();
            attempt.outcome = outcome.status;
            let mut new = old.clone();
            new.record(&attempt, outcome, p.now);
            w.insert(
                concat(&[&[ATTEMPT], id.as_bytes(), &attempt.number.to_be_bytes()]),
                encode(&attempt),
            );
            self.put_delivery(&mut w, Some(&old), &new);
            results.push(Ok(Recorded {
                status: new.status,
                integration_disabled,
            }));
            changed.insert(id);
        }
        for (k, (integration, changed)) in integrations {
            if let (Some(integration), true) = (integration, changed) {
                w.insert(&k, encode(&integration));
            }
        }
        for (k, bucket) in stats {
            w.insert(&k, encode(&bucket));
        }
        for (k, last) in lasts {
            w.insert(&k, encode(&last));
        }
        self.commit(&db, w)?;
        self.leases.end(changed);
        Ok(results)
    }
}
