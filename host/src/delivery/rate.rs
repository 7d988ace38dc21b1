//! Per-integration pacing: the plugin declares the platform's documented limit (Omnisend:
//! 400 requests a minute) and an admin may set a lower one; the host spaces its requests to
//! stay within it instead of collecting 429s. The limit is applied when work is claimed
//! ([`Pacing`] is the store's [`Admission`]): a delivery is only claimed when a request is
//! allowed, so one over the limit waits in its queue — holding no worker, and not taken out
//! and put back again and again — and the scheduler is woken when the limiter next allows.
//! The limiter is `governor`'s GCRA: the burst is the whole window's allowance.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use uuid::Uuid;

use crate::runtime::{PluginRegistry, RateLimit};
use crate::store::{Admission, Admitted, Integration, Timestamp};

/// One limiter per integration, rebuilt when its limit changes.
#[derive(Default)]
pub struct RateLimits {
    limiters: Mutex<HashMap<Uuid, (RateLimit, DefaultDirectRateLimiter)>>,
}

/// The limit that applies: the admin's when it is lower than the plugin's, else the plugin's.
pub fn effective(plugin: Option<RateLimit>, admin: Option<RateLimit>) -> Option<RateLimit> {
    let per_second = |l: &RateLimit| f64::from(l.requests) / f64::from(l.per_seconds.max(1));
    match (plugin, admin) {
        (Some(p), Some(a)) => Some(if per_second(&a) < per_second(&p) {
            a
        } else {
            p
        }),
        (p, a) => p.or(a),
    }
}

impl RateLimits {
    /// Takes one request's allowance for `integration`, or says how long until there is one.
    pub fn acquire(&self, integration: Uuid, limit: Option<RateLimit>) -> Result<(), Duration> {
        let Some(limit) = limit else {
            return Ok(());
        };
        let Some(quota) = quota(limit) else {
            return Ok(());
        };
        let mut limiters = self.limiters.lock().unwrap_or_else(|p| p.into_inner());
        let entry = limiters
            .entry(integration)
            .or_insert_with(|| (limit, RateLimiter::direct(quota)));
        if entry.0 != limit {
            *entry = (limit, RateLimiter::direct(quota));
        }
        entry
            .1
            .check()
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Forgets an integration (deleted).
    pub fn forget(&self, integration: Uuid) {
        self.limiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&integration);
    }
}

/// The store's [`Admission`]: an integration may start an attempt when its rate limit (the
/// plugin's declared one, or an admin's lower one) allows a request now.
pub struct Pacing<'a> {
    pub rates: &'a RateLimits,
    pub plugins: &'a PluginRegistry,
}

impl Admission for Pacing<'_> {
    fn admit(&self, integration: &Integration, wanted: u32) -> Admitted {
        let declared = self
            .plugins
            .get(&integration.plugin)
            .and_then(|p| p.info().rate_limit);
        let limit = effective(declared, integration.rate_limit);
        let mut admitted = 0;
        while admitted < wanted {
            match self.rates.acquire(integration.id, limit) {
                Ok(()) => admitted += 1,
                Err(wait) if admitted == 0 => {
                    return Admitted::At(Timestamp::now().saturating_add(wait));
                }
                Err(_) => break,
            }
        }
        Admitted::Now(admitted)
    }
}

fn quota(limit: RateLimit) -> Option<Quota> {
    let requests = NonZeroU32::new(limit.requests)?;
    let period = Duration::from_secs(u64::from(limit.per_seconds.max(1))) / limit.requests;
    Some(Quota::with_period(period)?.allow_burst(requests))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(requests: u32, per_seconds: u32) -> Option<RateLimit> {
        Some(RateLimit {
            requests,
            per_seconds,
        })
    }

    #[test]
    fn a_window_allows_its_burst_then_paces() {
        let limits = RateLimits::default();
        let id = Uuid::now_v7();
        for _ in 0..3 {
            assert_eq!(limits.acquire(id, limit(3, 60)), Ok(()));
        }
        let wait = limits.acquire(id, limit(3, 60)).unwrap_err();
        assert!(
            wait > Duration::from_secs(15) && wait <= Duration::from_secs(20),
            "one request every 20 s: {wait:?}"
        );
        // Another integration has its own allowance.
        assert_eq!(limits.acquire(Uuid::now_v7(), limit(3, 60)), Ok(()));
        // No limit: never paced.
        for _ in 0..100 {
            assert_eq!(limits.acquire(id, None), Ok(()));
        }
    }

    #[test]
    fn an_admin_may_only_lower_the_limit() {
        let omnisend = limit(400, 60);
        assert_eq!(effective(omnisend, limit(100, 60)), limit(100, 60));
        assert_eq!(effective(omnisend, limit(1000, 60)), omnisend);
        assert_eq!(effective(None, limit(5, 1)), limit(5, 1));
        assert_eq!(effective(omnisend, None), omnisend);
    }
}
