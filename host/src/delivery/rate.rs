//! Per-integration pacing: the plugin declares the platform's documented limit (Omnisend:
//! 400 requests a minute) and an admin may set a lower one; the host spaces its requests to
//! stay within it instead of collecting 429s. The limit is applied when work is claimed
//! ([`Pacing`] is the store's [`Admission`], and the store applies the GCRA rule
//! [`crate::model::pace`] with the state it keeps): a delivery is only claimed when a request
//! is allowed, so one over the limit waits in its queue — holding no worker, and not taken out
//! and put back again and again — and the scheduler is woken when the limit next allows.
//! With the state in the store, a limit holds across every node of a cluster.

use crate::runtime::{PluginRegistry, RateLimit};
use crate::store::{Admission, Integration};

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

/// The store's [`Admission`]: the plugin's declared limit, or an admin's lower one.
pub struct Pacing<'a> {
    pub plugins: &'a PluginRegistry,
}

impl Admission for Pacing<'_> {
    fn rate_limit(&self, integration: &Integration) -> Option<RateLimit> {
        let declared = self
            .plugins
            .get(&integration.plugin)
            .and_then(|p| p.info().rate_limit);
        effective(declared, integration.rate_limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Timestamp, pace};

    fn limit(requests: u32, per_seconds: u32) -> RateLimit {
        RateLimit {
            requests,
            per_seconds,
        }
    }

    #[test]
    fn a_window_allows_its_burst_then_paces() {
        let now = Timestamp(1_800_000_000_000);
        let mut tat = None;
        for _ in 0..3 {
            tat = Some(pace(tat, limit(3, 60), now).expect("within the burst"));
        }
        let next = pace(tat, limit(3, 60), now).unwrap_err();
        assert_eq!(next, Timestamp(now.0 + 20_000), "one request every 20 s");
        // At that time one more is allowed, and only one.
        let tat = Some(pace(tat, limit(3, 60), next).expect("allowed again"));
        assert!(pace(tat, limit(3, 60), next).is_err());
        // Fast limits keep their spacing below a millisecond.
        let mut tat = None;
        let fast = limit(5_000, 1);
        for _ in 0..5_000 {
            tat = Some(pace(tat, fast, now).expect("a second's burst"));
        }
        assert_eq!(pace(tat, fast, now).unwrap_err(), Timestamp(now.0 + 1));
    }

    #[test]
    fn an_admin_may_only_lower_the_limit() {
        let omnisend = Some(limit(400, 60));
        assert_eq!(
            effective(omnisend, Some(limit(100, 60))),
            Some(limit(100, 60))
        );
        assert_eq!(effective(omnisend, Some(limit(1000, 60))), omnisend);
        assert_eq!(effective(None, Some(limit(5, 1))), Some(limit(5, 1)));
        assert_eq!(effective(omnisend, None), omnisend);
    }
}
