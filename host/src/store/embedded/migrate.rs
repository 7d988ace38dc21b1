//! Data directories written before shops (store format 1) move into the `default` shop the
//! first time today's server opens them: integrations are keyed by shop, deliveries gain their
//! shop and per-shop log indexes, the single due-time queue becomes one queue per
//! integration. Events keep their keys (their records read as the `default` shop's).
//!
//! The migration is restartable: it works in batches, each delivery's old keys are removed in
//! the batch that writes its new ones, and the format is set to 2 only at the end, so a crash
//! midway reruns it on the next start without losing or doubling anything.

use uuid::Uuid;

use super::engine::{Batch, Bytes};
use super::keys::{self, *};
use super::{EmbeddedStore, decode, encode};
use crate::model::{DEFAULT_SHOP, Delivery, DeliveryStatus, Integration};
use crate::store::StoreError;

/// Deliveries rewritten per batch.
const CHUNK: usize = 1_000;

/// Format 1's keys of a delivery (the log indexes were not per shop, the queue was one).
fn format_1_keys(d: &Delivery) -> Vec<Vec<u8>> {
    let id = d.id.as_bytes();
    let mut keys = vec![
        concat(&[&[BY_EVENT], d.event.as_bytes(), &[0], id]),
        concat(&[&[BY_STATUS], &[d.status.code()], id]),
    ];
    for term in customer_terms(d) {
        keys.push(concat(&[&[BY_CUSTOMER], term.as_bytes(), &[0], id]));
    }
    let queued = matches!(d.status, DeliveryStatus::Pending | DeliveryStatus::Retrying);
    if let Some(at) = d.lease_until.or(d.next_attempt_at).filter(|_| queued) {
        keys.push(concat(&[&[QUEUE], &at.0.to_be_bytes(), id]));
    }
    if d.lease_until.is_some() {
        keys.push(key(LEASE, id));
    }
    keys
}

impl EmbeddedStore {
    /// Brings the store to [`keys::FORMAT`]; what it found, for the log.
    pub(super) fn migrate(&self) -> Result<Option<String>, StoreError> {
        let db = self.db()?;
        let format = db
            .get(key(META, FORMAT_META.as_bytes()))?
            .map(|v| String::from_utf8_lossy(&v).into_owned());
        let empty = db.is_empty()?;
        match format.as_deref() {
            Some(keys::FORMAT) => return Ok(None),
            Some(other) => {
                return Err(StoreError::Backend(format!(
                    "the data directory is in store format {other}, which this version of \
                     Canopy does not know (it writes format {}); use a newer release",
                    keys::FORMAT
                )));
            }
            None if empty => {
                db.insert(key(META, FORMAT_META.as_bytes()), keys::FORMAT.as_bytes())?;
                return Ok(None);
            }
            None => {}
        }

        // Format 1. Integrations: keyed by id alone, now by shop.
        let mut integrations = 0;
        let mut batch = Batch::default();
        for item in db.scan_prefix([INTEGRATION]) {
            let (k, v) = item?;
            if k.len() != 17 {
                continue; // already moved
            }
            let mut integration: Integration = decode(&v, "integration")?;
            integration.shop = DEFAULT_SHOP.to_owned();
            batch.insert(
                integration_key(DEFAULT_SHOP, integration.id),
                encode(&integration),
            );
            batch.remove(k);
            integrations += 1;
        }
        db.apply_batch(batch)?;

        // Deliveries: their shop, and every index in its new form.
        let mut deliveries = 0;
        let mut after: Option<Uuid> = None;
        loop {
            let start = after.map_or_else(
                || vec![DELIVERY],
                |id| {
                    let mut k = key(DELIVERY, id.as_bytes());
                    k.push(0);
                    k
                },
            );
            let chunk: Vec<(Bytes, Bytes)> = db
                .range(start..vec![DELIVERY + 1])
                .take(CHUNK)
                .collect::<Result<_, _>>()?;
            if chunk.is_empty() {
                break;
            }
            let mut batch = Batch::default();
            for (k, v) in &chunk {
                let delivery: Delivery = decode(v, "delivery")?;
                for old in format_1_keys(&delivery) {
                    batch.remove(old);
                }
                for (new, value) in derived_keys(&delivery) {
                    batch.insert(new, value);
                }
                batch.insert(k.clone(), encode(&delivery));
                after = Some(delivery.id);
                deliveries += 1;
            }
            db.apply_batch(batch)?;
        }
        db.insert(key(META, FORMAT_META.as_bytes()), keys::FORMAT.as_bytes())?;
        db.flush()?;
        Ok(Some(format!(
            "store format 1 moved into the `{DEFAULT_SHOP}` shop: {integrations} integrations, \
             {deliveries} deliveries"
        )))
    }
}
