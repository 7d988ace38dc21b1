//! The scheduler: claims due deliveries from the store under a lease and runs each in a worker
//! task, at most `workers` at once. The store's claim is fair (round-robin across shops and
//! integrations, within each integration's in-flight cap and rate limit, see
//! `store::Store::claim_due`), so one destination's backlog or hang cannot take every
//! worker. It wakes when ingest queues new work, when an attempt ends (making room under a
//! cap), when the store says more work becomes claimable (a retry falls due, a rate limit
//! admits again), or at least every [`IDLE_POLL`].
//!
//! At start it releases the leases a previous process held (crash recovery). At shutdown it
//! claims nothing more, lets in-flight attempts finish within the grace period, then stops the
//! rest and puts them back in the queue: at-least-once, nothing lost.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;
use uuid::Uuid;

use super::rate::Pacing;
use super::worker::Worker;
use crate::store::Timestamp;

/// The longest the scheduler sleeps without looking at the queue.
pub const IDLE_POLL: Duration = Duration::from_secs(1);
/// Deliveries claimed per store round trip.
const CLAIM_BATCH: usize = 64;
/// The shortest pause between claims that found nothing to start.
const MIN_WAIT: Duration = Duration::from_millis(2);
/// Pause after a storage error before trying again.
const STORE_ERROR_BACKOFF: Duration = Duration::from_secs(1);

/// How the scheduler runs.
#[derive(Debug, Clone, Copy)]
pub struct SchedulerSettings {
    /// Attempts in flight at once.
    pub workers: usize,
    /// How long a claim holds a delivery. Longer than any attempt can take (its plugin calls
    /// plus each request's timeout), so a live worker never loses its delivery to another.
    pub lease: Duration,
    /// How long shutdown waits for in-flight attempts.
    pub grace: Duration,
}

pub struct Scheduler {
    worker: Arc<Worker>,
    wake: Arc<Notify>,
    /// An attempt ended.
    ended: Arc<Notify>,
    settings: SchedulerSettings,
}

impl Scheduler {
    pub fn new(worker: Arc<Worker>, wake: Arc<Notify>, settings: SchedulerSettings) -> Scheduler {
        Scheduler {
            worker,
            wake,
            ended: Arc::new(Notify::new()),
            settings,
        }
    }

    /// Runs until `shutdown` turns true (or its sender is dropped).
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let store = self.worker.store.clone();
        match store.recover_leases(Timestamp::now()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!("{n} deliveries held by a previous run are due again"),
            Err(error) => tracing::error!(%error, "cannot release earlier leases"),
        }
        let permits = Arc::new(Semaphore::new(self.settings.workers.max(1)));
        let in_flight: Arc<Mutex<HashSet<Uuid>>> = Arc::default();
        let mut tasks = JoinSet::new();
        let stopping = || {
            let mut shutdown = shutdown.clone();
            async move {
                let _ = shutdown.wait_for(|stop| *stop).await;
            }
        };

        while !*shutdown.borrow() {
            while tasks.try_join_next().is_some() {}
            let free = permits.available_permits();
            if free == 0 {
                tokio::select! {
                    permit = permits.clone().acquire_owned() => drop(permit),
                    _ = stopping() => {}
                }
                continue;
            }
            let now = Timestamp::now();
            let lease_until = now.saturating_add(self.settings.lease);
            let pacing = Pacing {
                rates: &self.worker.rates,
                plugins: &self.worker.plugins,
            };
            let round = match store
                .claim_due(now, free.min(CLAIM_BATCH), lease_until, &pacing)
                .await
            {
                Ok(round) => round,
                Err(error) => {
                    tracing::error!(%error, "cannot claim due deliveries");
                    tokio::select! {
                        _ = tokio::time::sleep(STORE_ERROR_BACKOFF) => {}
                        _ = stopping() => {}
                    }
                    continue;
                }
            };
            let claimed_any = !round.claimed.is_empty();
            for delivery in round.claimed {
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    // Cannot happen (claimed ≤ free); the lease brings it back if it does.
                    break;
                };
                let id = delivery.id;
                lock(&in_flight).insert(id);
                let worker = self.worker.clone();
                let in_flight = in_flight.clone();
                let ended = self.ended.clone();
                tasks.spawn(async move {
                    worker.deliver(delivery).await;
                    lock(&in_flight).remove(&id);
                    drop(permit);
                    // Room under its integration's cap: there may be work to claim now.
                    ended.notify_one();
                });
            }
            let wait = match round.next_at {
                Some(next) => now.until(next).min(IDLE_POLL),
                None => IDLE_POLL,
            };
            if claimed_any && wait.is_zero() {
                continue;
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = self.ended.notified() => {}
                _ = tokio::time::sleep(wait.max(MIN_WAIT)) => {}
                _ = stopping() => {}
            }
        }

        let running = tasks.len();
        if running > 0 {
            tracing::info!(
                "delivery stopping: waiting up to {:?} for {running} attempts",
                self.settings.grace
            );
        }
        let drain = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(self.settings.grace, drain)
            .await
            .is_err()
        {
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
            let unfinished: Vec<Uuid> = lock(&in_flight).drain().collect();
            let now = Timestamp::now();
            for id in &unfinished {
                if let Err(error) = store.release(*id, now).await {
                    tracing::error!(delivery = %id, %error, "cannot release; its lease will expire");
                }
            }
            tracing::warn!(
                "{} attempts did not finish in time; they are queued again",
                unfinished.len()
            );
        }
        if let Err(error) = store.flush().await {
            tracing::error!(%error, "cannot flush the store at shutdown");
        }
        tracing::info!("delivery stopped");
    }
}

fn lock(set: &Mutex<HashSet<Uuid>>) -> std::sync::MutexGuard<'_, HashSet<Uuid>> {
    set.lock().unwrap_or_else(|p| p.into_inner())
}
