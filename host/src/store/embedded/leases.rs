//! Leases in memory. A lease only says which worker of this process may record an attempt
//! of a delivery, and until when no other claim takes it; the engine's lock on the data directory means no
//! other process can hold one. So a claim writes nothing: it takes due queue entries that are
//! not held and notes each lease here. Only what must survive a crash is written — events and
//! their deliveries at ingest, attempt outcomes — and a delivery's durable record and queue
//! entry stay at its due time while a worker holds it. After a crash or restart the map is
//! empty, so held work is due at once, as it was when leases were written and then expired
//! at open.
//!
//! The fence is unchanged: an attempt is recorded (or its delivery released or paused) only
//! under the lease it was claimed with, and a lease that expired still records until another
//! claim takes the delivery. The API sees a held delivery's lease as before (it is laid over
//! the durable record when read), and queue counts read the map for attempts in flight.
//!
//! Directories written by older versions hold leases on disk (`L` keys, leased records):
//! they are cleared at open ([`EmbeddedStore::clear_durable_leases`]).
//!
//! [`EmbeddedStore::clear_durable_leases`]: super::EmbeddedStore

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use uuid::Uuid;

use crate::model::*;

/// How long after its end an abandoned lease (its worker gone without recording, and its
/// delivery no longer queued) is forgotten. Far longer than any attempt can run.
const FORGET_AFTER_MS: u64 = 3_600_000;

#[derive(Default)]
pub(super) struct Leases {
    held: Mutex<HashMap<Uuid, Held>>,
}

/// Attempts in flight at one moment.
#[derive(Default)]
pub(super) struct InFlight {
    pub by_integration: HashMap<Uuid, u32>,
    pub deliveries: HashSet<Uuid>,
    /// The earliest end among these leases: when their work is due again.
    pub next_end: Option<Timestamp>,
}

impl InFlight {
    pub(super) fn of(&self, integration: Uuid) -> u32 {
        self.by_integration.get(&integration).copied().unwrap_or(0)
    }
}

#[derive(Clone, Copy)]
struct Held {
    integration: Uuid,
    token: Uuid,
    until: Timestamp,
}

impl Leases {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Held>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Leases `delivery` (a copy of its durable record) until `until` under a new token.
    pub(super) fn take(&self, delivery: &mut Delivery, until: Timestamp) {
        let lease = delivery.claim(until);
        self.map().insert(
            lease.delivery,
            Held {
                integration: delivery.integration_id,
                token: lease.token,
                until,
            },
        );
    }

    /// Whether `lease` is its delivery's current one (expired or not).
    pub(super) fn holds(&self, lease: &Lease) -> bool {
        self.map()
            .get(&lease.delivery)
            .is_some_and(|held| held.token == lease.token)
    }

    /// Ends the leases of `deliveries` (their attempts were recorded, or they were released).
    pub(super) fn end(&self, deliveries: impl IntoIterator<Item = Uuid>) {
        let mut map = self.map();
        for id in deliveries {
            map.remove(&id);
        }
    }

    /// The attempts in flight at `now` (unexpired leases), forgetting leases abandoned long
    /// ago.
    pub(super) fn in_flight(&self, now: Timestamp) -> InFlight {
        let mut map = self.map();
        map.retain(|_, held| held.until.0.saturating_add(FORGET_AFTER_MS) > now.0);
        let mut in_flight = InFlight::default();
        for (id, held) in map.iter().filter(|(_, held)| held.until > now) {
            *in_flight
                .by_integration
                .entry(held.integration)
                .or_default() += 1;
            in_flight.deliveries.insert(*id);
            in_flight.next_end = Some(in_flight.next_end.map_or(held.until, |n| n.min(held.until)));
        }
        in_flight
    }

    /// `delivery` as a reader sees it: with its lease, if a worker holds it.
    pub(super) fn show(&self, mut delivery: Delivery) -> Delivery {
        if let Some(held) = self.map().get(&delivery.id)
            && matches!(
                delivery.status,
                DeliveryStatus::Pending | DeliveryStatus::Retrying
            )
        {
            delivery.lease_until = Some(held.until);
            delivery.lease_token = Some(held.token);
        }
        delivery
    }

    /// Ends every lease at `now`, keeping its token: held work is due again, and an attempt
    /// still running records its outcome unless its delivery is claimed first.
    pub(super) fn expire_all(&self, now: Timestamp) -> usize {
        let mut map = self.map();
        for held in map.values_mut() {
            held.until = held.until.min(now);
        }
        map.len()
    }
}
