//! The claim on PostgreSQL, in one transaction:
//!
//! 1. The integrations with due work, each taken under a transaction-scoped advisory lock
//!    (`pg_try_advisory_xact_lock`): an integration another node is claiming for is skipped,
//!    not waited for — `SKIP LOCKED` without locking the integration's row, which attempts
//!    being recorded update.
//! 2. Each one's unexpired leases, counted across every node: its in-flight cap holds for the
//!    cluster.
//! 3. Up to the room its cap leaves, its oldest due work (an index range per integration).
//! 4. Round-robin across shops, then across a shop's integrations, starting after where this
//!    node's last claim stopped, with the rate limits ([`crate::store::fair::take_turns`]). The
//!    pace is read from and written back to the integration's row, so the limit holds across
//!    nodes.
//! 5. The chosen deliveries are locked, checked to still be due, and leased under new tokens.

use std::collections::{BTreeMap, HashMap, VecDeque};

use sqlx::Row;
use uuid::Uuid;

use super::{PgStore, decode, encode, ms};
use crate::model::*;
use crate::store::fair::{Lane, take_turns};
use crate::store::{Admission, ClaimRound, StoreError};

pub(super) async fn claim_due(
    store: &PgStore,
    now: Timestamp,
    limit: usize,
    lease_until: Timestamp,
    admission: &dyn Admission,
) -> Result<ClaimRound, StoreError> {
    let mut tx = store.begin().await?;
    let rows = sqlx::query(
        "SELECT i.id, i.shop, i.record, i.pace FROM integrations i \
         WHERE EXISTS (SELECT 1 FROM queue q WHERE q.integration_id = i.id AND q.due_at <= $1) \
           AND pg_try_advisory_xact_lock(hashtextextended(i.id::text, 1))",
    )
    .bind(ms(now))
    .fetch_all(&mut *tx)
    .await?;
    let mut next_at: Option<Timestamp> =
        sqlx::query_scalar::<_, Option<i64>>("SELECT min(due_at) FROM queue WHERE due_at > $1")
            .bind(ms(now))
            .fetch_one(&mut *tx)
            .await?
            .map(|at| Timestamp(at as u64));
    let later = |next_at: &mut Option<Timestamp>, at: Timestamp| {
        *next_at = Some(next_at.map_or(at, |n| n.min(at)));
    };
    if rows.is_empty() {
        tx.commit().await?;
        return Ok(ClaimRound {
            claimed: Vec::new(),
            next_at,
        });
    }

    let mut integrations: HashMap<Uuid, (Integration, Option<u64>)> = HashMap::new();
    for row in &rows {
        let integration: Integration = decode(row.get::<&str, _>(2), "integration")?;
        let pace = row.get::<Option<i64>, _>(3).map(|p| p as u64);
        integrations.insert(row.get::<Uuid, _>(0), (integration, pace));
    }
    let ids: Vec<Uuid> = integrations.keys().copied().collect();
    let held: HashMap<Uuid, i64> = sqlx::query(
        "SELECT integration_id, count(*) FROM queue \
         WHERE integration_id = ANY($1) AND lease_until > $2 GROUP BY integration_id",
    )
    .bind(&ids)
    .bind(ms(now))
    .fetch_all(&mut *tx)
    .await?
    .iter()
    .map(|r| (r.get::<Uuid, _>(0), r.get::<i64, _>(1)))
    .collect();
    let mut with_room = Vec::new();
    let mut rooms = Vec::new();
    for (id, (integration, _)) in &integrations {
        let room = i64::from(integration.in_flight_cap()) - held.get(id).copied().unwrap_or(0);
        if room > 0 {
            with_room.push(*id);
            rooms.push(room.min(limit as i64));
        }
    }
    let due_rows = sqlx::query(
        "SELECT r.id, q.delivery_id, q.day FROM unnest($1::uuid[], $2::bigint[]) AS r(id, room) \
         CROSS JOIN LATERAL (SELECT delivery_id, day, due_at FROM queue \
           WHERE integration_id = r.id AND due_at <= $3 \
           ORDER BY due_at, delivery_id LIMIT r.room) q \
         ORDER BY r.id, q.due_at, q.delivery_id",
    )
    .bind(&with_room)
    .bind(&rooms)
    .bind(ms(now))
    .fetch_all(&mut *tx)
    .await?;

    let mut shops: BTreeMap<String, Vec<Lane<(Uuid, i32)>>> = BTreeMap::new();
    let mut lanes_by_id: HashMap<Uuid, VecDeque<(Uuid, i32)>> = HashMap::new();
    for row in &due_rows {
        lanes_by_id
            .entry(row.get::<Uuid, _>(0))
            .or_default()
            .push_back((row.get::<Uuid, _>(1), row.get::<i32, _>(2)));
    }
    for (id, due) in lanes_by_id {
        let (integration, pace) = integrations.remove(&id).expect("selected above");
        shops
            .entry(integration.shop.clone())
            .or_default()
            .push(Lane::new(integration, due, pace));
    }
    let turns = {
        let mut rotation = store.rotation.lock().unwrap_or_else(|p| p.into_inner());
        take_turns(&mut shops, &mut rotation, limit, admission, now)
    };
    if let Some(at) = turns.next_at {
        later(&mut next_at, at);
    }
    let chosen = turns.chosen;

    // The paces taken, written back for every node.
    let paced: Vec<(Uuid, i64)> = shops
        .values()
        .flatten()
        .filter(|l| l.paced)
        .filter_map(|l| Some((l.integration.id, l.pace? as i64)))
        .collect();
    if !paced.is_empty() {
        let (ids, paces): (Vec<Uuid>, Vec<i64>) = paced.into_iter().unzip();
        // In id order, as the outcome writer locks them (see `outcomes`).
        sqlx::query("SELECT id FROM integrations WHERE id = ANY($1) ORDER BY id FOR UPDATE")
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE integrations i SET pace = u.pace \
             FROM unnest($1::uuid[], $2::bigint[]) AS u(id, pace) WHERE i.id = u.id",
        )
        .bind(&ids)
        .bind(&paces)
        .execute(&mut *tx)
        .await?;
    }

    let mut claimed = Vec::new();
    if !chosen.is_empty() {
        let (ids, days): (Vec<Uuid>, Vec<i32>) = chosen.iter().copied().unzip();
        let rows = sqlx::query(
            "SELECT record, day FROM deliveries WHERE id = ANY($1) AND day = ANY($2) \
             ORDER BY id FOR UPDATE",
        )
        .bind(&ids)
        .bind(&days)
        .fetch_all(&mut *tx)
        .await?;
        let mut found: HashMap<Uuid, (Delivery, i32)> = HashMap::new();
        for row in &rows {
            let delivery: Delivery = decode(row.get::<&str, _>(0), "delivery")?;
            found.insert(delivery.id, (delivery, row.get::<i32, _>(1)));
        }
        let (mut leased_ids, mut leased_days, mut records) = (Vec::new(), Vec::new(), Vec::new());
        for (id, _) in &chosen {
            let Some((mut delivery, day)) = found.remove(id) else {
                continue;
            };
            // Read again under the lock: a worker whose lease had expired may have recorded
            // its attempt meanwhile.
            if delivery.queue_time().is_none_or(|at| at > now) {
                continue;
            }
            delivery.claim(lease_until);
            leased_ids.push(delivery.id);
            leased_days.push(day);
            records.push(encode(&delivery));
            claimed.push(delivery);
        }
        sqlx::query(
            "UPDATE deliveries d SET record = u.record \
             FROM unnest($1::uuid[], $2::integer[], $3::text[]) AS u(id, day, record) \
             WHERE d.id = u.id AND d.day = u.day",
        )
        .bind(&leased_ids)
        .bind(&leased_days)
        .bind(&records)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE queue SET due_at = $2, lease_until = $2 WHERE delivery_id = ANY($1)")
            .bind(&leased_ids)
            .bind(ms(lease_until))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(ClaimRound { claimed, next_at })
}
