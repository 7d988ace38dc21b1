//! The scheduler: claims due deliveries from the store under a lease and runs each in a worker
//! task, at most `workers` at once. The store's claim is fair (round-robin across shops and
//! integrations, within each integration's in-flight cap and rate limit, see
//! `store::Store::claim_due`), so one destination's backlog or hang cannot take every
//! worker. It wakes when ingest queues new work, when an attempt ends (making room under a
//! cap), when the store says more work becomes claimable (a retry falls due, a rate limit
//! admits again), or at least every [`IDLE_POLL`]. Wake-ups come from the store's
//! [`Signals`](crate::store::Signals), so on PostgreSQL another node's ingest wakes this one.
//! Time is the worker's [`Clock`](crate::clock::Clock).
//!
//! There is no start-up recovery step: a lease a dead process held expires, and its delivery
//! is due again (several nodes may share one store; releasing "the previous process's" leases
//! would take live work from them). At shutdown it claims nothing more, lets in-flight attempts
//! finish within the grace period, then stops the rest and puts them back in the queue:
//! at-least-once, nothing lost.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;

use super::rate::Pacing;
use super::worker::Worker;
use crate::clock::Clock;
use crate::model::Timestamp;
use crate::store::Lease;

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
    /// An attempt ended.
    ended: Arc<Notify>,
    settings: SchedulerSettings,
}

impl Scheduler {
    pub fn new(worker: Arc<Worker>, settings: SchedulerSettings) -> Scheduler {
        Scheduler {
            worker,
            ended: Arc::new(Notify::new()),
            settings,
        }
    }

    /// Runs until `shutdown` turns true (or its sender is dropped).
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let store = self.worker.store.clone();
        let clock = self.worker.clock.clone();
        let permits = Arc::new(Semaphore::new(self.settings.workers.max(1)));
        let in_flight: Arc<Mutex<HashSet<Lease>>> = Arc::default();
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
            let now = clock.now();
            let lease_until = now.saturating_add(self.settings.lease);
            let pacing = Pacing {
                plugins: &self.worker.plugins,
            };
            let round = match store
                .claim_due(now, free.min(CLAIM_BATCH), lease_until, &pacing)
                .await
            {
                Ok(round) => round,
                Err(error) => {
                    tracing::error!(%error, "cannot claim due deliveries");
                    // Real time, not the clock's: the store recovers in real time.
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
                let Some(lease) = delivery.lease() else {
                    continue; // every claimed delivery carries its lease
                };
                lock(&in_flight).insert(lease);
                let worker = self.worker.clone();
                let in_flight = in_flight.clone();
                let ended = self.ended.clone();
                tasks.spawn(async move {
                    worker.deliver(delivery).await;
                    lock(&in_flight).remove(&lease);
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
                _ = store.signals().work() => {}
                _ = self.ended.notified() => {}
                _ = pause(&clock, now, wait) => {}
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
            let unfinished: Vec<Lease> = lock(&in_flight).drain().collect();
            let now = clock.now();
            for lease in &unfinished {
                match store.release(*lease, now).await {
                    Ok(()) | Err(crate::store::StoreError::LeaseLost(_)) => {}
                    Err(error) => {
                        tracing::error!(delivery = %lease.delivery, %error, "cannot release; its lease will expire")
                    }
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

/// The scheduler's pause between claims: until `wait` after the claim's time `claimed_at` on
/// the clock, and never less than [`MIN_WAIT`] of real time, so that a claim that found
/// nothing (and may itself have taken longer than `wait`) does not spin. The minimum is real
/// time, not the clock's: a manual clock moved on during the claim must not push the deadline
/// past the time the next claim is due, where such a clock may never go.
async fn pause(clock: &Clock, claimed_at: Timestamp, wait: Duration) {
    tokio::time::sleep(MIN_WAIT).await;
    clock.sleep_until(claimed_at.saturating_add(wait)).await;
}

fn lock(set: &Mutex<HashSet<Lease>>) -> std::sync::MutexGuard<'_, HashSet<Lease>> {
    set.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timestamp = Timestamp(1_000_000);

    #[tokio::test]
    async fn the_pause_ends_when_the_clock_moved_past_it_during_the_claim() {
        // The claim read T; the clock was moved an hour on meanwhile. The next claim is due
        // at once: the pause must not wait for a time after the hour the clock now reads.
        let clock = Clock::manual(T);
        clock.advance(Duration::from_secs(3600));
        tokio::time::timeout(
            Duration::from_secs(5),
            pause(&clock, T, Duration::from_secs(1)),
        )
        .await
        .expect("a pause whose time has passed ends after MIN_WAIT");
    }

    #[tokio::test]
    async fn the_pause_waits_for_the_clock() {
        let clock = Clock::manual(T);
        let paused = tokio::spawn({
            let clock = clock.clone();
            async move { pause(&clock, T, Duration::from_secs(1)).await }
        });
        // Well past MIN_WAIT of real time, the clock has not moved: still waiting.
        tokio::time::sleep(MIN_WAIT * 10).await;
        assert!(!paused.is_finished());
        clock.advance(Duration::from_secs(1));
        tokio::time::timeout(Duration::from_secs(5), paused)
            .await
            .expect("the pause ends once the clock reaches its time")
            .unwrap();
    }
}
