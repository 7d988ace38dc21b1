//! Where the pipeline's time comes from. The server runs on the system clock; tests run the
//! same scheduler, leases, retries and purge on a [`Clock::manual`] one they move forward
//! themselves, so a retry due in an hour or a lease that expires after a minute is tested
//! without waiting for it. Everything that waits on time (the scheduler's next claim, the
//! purge's interval) waits through [`Clock::sleep_until`], which a manual clock ends when
//! it is advanced far enough.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use crate::model::Timestamp;

/// A clock; cheap to clone (clones share the time).
#[derive(Clone)]
pub struct Clock(Arc<Source>);

enum Source {
    System,
    Manual { now: AtomicU64, moved: Notify },
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::system()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &*self.0 {
            Source::System => f.write_str("Clock::System"),
            Source::Manual { .. } => write!(f, "Clock::Manual({})", self.now()),
        }
    }
}

impl Clock {
    /// The system's wall clock.
    pub fn system() -> Clock {
        Clock(Arc::new(Source::System))
    }

    /// A clock that stands at `start` until [`Clock::advance`] or [`Clock::set`] moves it.
    pub fn manual(start: Timestamp) -> Clock {
        Clock(Arc::new(Source::Manual {
            now: AtomicU64::new(start.0),
            moved: Notify::new(),
        }))
    }

    pub fn now(&self) -> Timestamp {
        match &*self.0 {
            Source::System => Timestamp::now(),
            Source::Manual { now, .. } => Timestamp(now.load(Ordering::SeqCst)),
        }
    }

    /// Moves a manual clock forward (and wakes what sleeps on it); a system clock cannot be
    /// moved and ignores it.
    pub fn advance(&self, by: Duration) {
        if let Source::Manual { now, moved } = &*self.0 {
            now.fetch_add(by.as_millis() as u64, Ordering::SeqCst);
            moved.notify_waiters();
        }
    }

    /// Sets a manual clock to `at` if that is later than it stands.
    pub fn set(&self, at: Timestamp) {
        if let Source::Manual { now, moved } = &*self.0 {
            now.fetch_max(at.0, Ordering::SeqCst);
            moved.notify_waiters();
        }
    }

    /// Waits `duration` of this clock's time, from when it is called.
    pub async fn sleep(&self, duration: Duration) {
        self.sleep_until(self.now().saturating_add(duration)).await
    }

    /// Waits until this clock reads `until` (at once if it already does). A loop that read
    /// the time, worked, and now waits for a moment after that reading waits *until* it, so
    /// that time that passed (or a manual clock moved) while it worked is not waited again.
    pub async fn sleep_until(&self, until: Timestamp) {
        match &*self.0 {
            Source::System => tokio::time::sleep(Timestamp::now().until(until)).await,
            Source::Manual { moved, .. } => loop {
                let woken = moved.notified();
                tokio::pin!(woken);
                woken.as_mut().enable();
                if self.now() >= until {
                    return;
                }
                woken.await;
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_clock_ends_sleeps_when_moved_past_them() {
        let clock = Clock::manual(Timestamp(1_000));
        let sleeper = tokio::spawn({
            let clock = clock.clone();
            async move { clock.sleep(Duration::from_secs(60)).await }
        });
        tokio::task::yield_now().await;
        clock.advance(Duration::from_secs(59));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished(), "59 s of a 60 s sleep");
        clock.advance(Duration::from_secs(1));
        tokio::time::timeout(Duration::from_secs(5), sleeper)
            .await
            .expect("the sleep ends once the clock passes it")
            .unwrap();
        assert_eq!(clock.now(), Timestamp(61_000));
        clock.set(Timestamp(10));
        assert_eq!(clock.now(), Timestamp(61_000), "a clock never goes back");
    }
}
