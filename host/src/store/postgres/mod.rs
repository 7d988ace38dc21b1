//! The PostgreSQL store: several `canopy` processes on one database behave as one system.
//! The schema is in `host/migrations/` (versioned, embedded, run at start; a database whose
//! schema is newer than the binary is refused with a clear error).
//!
//! - Every trait call is one transaction, but attempt outcomes, which many workers record at
//!   once: those are written together, many to a transaction ([`outcomes`]). The rules are the
//!   model's (the same functions the embedded store calls), applied to rows read `FOR UPDATE`
//!   inside the transaction.
//! - Open work (queued, held, paused) is in the small `queue` table, beside its record in the
//!   `deliveries` log. A claim takes the integrations that have due work each under a
//!   transaction-scoped advisory lock it only *tries* (`SKIP LOCKED` without locking the
//!   integration's row: see [`claim`]) — two nodes never claim for the same integration at
//!   once, and neither waits for the other — counts each one's unexpired leases (its
//!   in-flight cap holds across nodes), applies the rate limit with the pace kept in the
//!   integration's row (so a limit holds across nodes too), and takes due work round-robin
//!   across shops and their integrations, as the embedded store does. A claim writes a new lease token; recording,
//!   releasing or pausing checks it (fenced). Expired leases are simply due again.
//! - Writes that make work claimable, plugin changes and writes of integration records
//!   `NOTIFY` the other nodes (one notification per transaction); a listener turns them into
//!   this node's [`Signals`]. The scheduler's own polling and a plugin generation number read
//!   every few seconds are the backstop for a notification lost while the listener
//!   reconnects; the workers read an integration they keep in memory again after 5 s in any
//!   case (`delivery/integrations.rs`), so what a lost notification leaves stale lasts that
//!   long at most.
//! - The log (events, deliveries, attempts) is partitioned by day; the purge drops whole days
//!   older than the retention — after moving the day's open work (and its event and attempts)
//!   into today's partition — instead of deleting rows one by one. So retention is kept to the
//!   day: a finished delivery goes with the first whole day after its cutoff.
//! - Secrets are sealed by the host before they reach the store; the database only ever sees
//!   sealed bytes.

mod claim;
mod import;
mod outcomes;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use sqlx::{Postgres, Row, Transaction};
use uuid::Uuid;

use super::{Admission, ClaimRound, Signals, Store, StoreError};
use crate::model::*;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Channels of the notifications nodes send each other.
const WORK_CHANNEL: &str = "canopy_work";
const PLUGINS_CHANNEL: &str = "canopy_plugins";
const INTEGRATIONS_CHANNEL: &str = "canopy_integrations";
/// Metadata name of the number every plugin change raises (the listener's backstop).
const PLUGINS_GENERATION: &str = "plugins-generation";
/// How often the listener reads the plugin generation in case a notification was lost.
const PLUGINS_BACKSTOP: Duration = Duration::from_secs(5);
/// Connections in the pool.
const POOL_SIZE: u32 = 16;
/// How long a call waits for a connection before the store counts as unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// Milliseconds in a day: the log's partitions.
const DAY_MS: u64 = 86_400_000;
/// Advisory lock key under which partitions are created and dropped.
const PARTITION_LOCK: i64 = 0x63616e6f_70790001;
/// The log's partitioned tables.
const LOG_TABLES: [&str; 3] = ["events", "deliveries", "attempts"];
/// Rows per statement when work is changed in bulk (cascades, resumes, retries).
const CHUNK: i64 = 1_000;

pub struct PgStore {
    pool: PgPool,
    signals: Arc<Signals>,
    /// Days whose partitions this process has made sure of.
    partitions: Mutex<HashSet<i32>>,
    /// Where the last claim's round-robin stopped (per node; see `claim`).
    rotation: Mutex<super::fair::Rotation>,
    listener: tokio::task::AbortHandle,
    /// Attempt outcomes waiting for the writer, and the writer (see `outcomes`).
    outcomes: outcomes::Queue,
    writer: tokio::task::AbortHandle,
    /// The database, for messages (no password).
    location: String,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.listener.abort();
        self.writer.abort();
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> StoreError {
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                StoreError::Unavailable(format!("PostgreSQL cannot be reached: {e}"))
            }
            sqlx::Error::Database(db) if db.code().is_some_and(|c| c.starts_with("08")) => {
                StoreError::Unavailable(format!("PostgreSQL connection failure: {db}"))
            }
            other => StoreError::Backend(format!("PostgreSQL: {other}")),
        }
    }
}

/// A database URL without its password (in the user part or a `password` / `sslpassword`
/// parameter), for messages.
pub fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("…"));
            }
            let pairs: Vec<(String, String)> = parsed
                .query_pairs()
                .map(|(k, v)| {
                    let hidden = k.to_ascii_lowercase().contains("password");
                    (
                        k.into_owned(),
                        if hidden { "…".into() } else { v.into_owned() },
                    )
                })
                .collect();
            if !pairs.is_empty() {
                parsed.query_pairs_mut().clear().extend_pairs(pairs);
            }
            parsed.to_string()
        }
        Err(_) => "the configured PostgreSQL URL".to_owned(),
    }
}

fn day_of(at: Timestamp) -> i32 {
    (at.0 / DAY_MS) as i32
}

fn encode<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("records serialise")
}

fn decode<T: DeserializeOwned>(text: &str, what: &'static str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
        what,
        detail: e.to_string(),
    })
}

fn ms(at: Timestamp) -> i64 {
    at.0 as i64
}

type Tx = Transaction<'static, Postgres>;

impl PgStore {
    /// Connects to the database at `url`, runs the migrations it lacks, makes sure the
    /// `default` shop exists and starts listening for the other nodes' notifications.
    pub async fn connect(url: &str) -> Result<PgStore, StoreError> {
        let location = redacted(url);
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect(url)
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot connect to PostgreSQL at {location}: {e}"))
            })?;
        MIGRATOR.run(&pool).await.map_err(|e| match e {
            sqlx::migrate::MigrateError::VersionMissing(version) => StoreError::Backend(format!(
                "the database at {location} has schema version {version}, newer than this \
                 canopy knows (its newest is {}); run the newer canopy, or another database",
                MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
            )),
            other => StoreError::Backend(format!(
                "cannot migrate the database at {location}: {other}"
            )),
        })?;
        let signals = Arc::new(Signals::default());
        let listener = listen(&pool, signals.clone()).await?;
        let (outcomes, writer) = outcomes::start(pool.clone(), signals.clone());
        let store = PgStore {
            pool,
            signals,
            partitions: Mutex::default(),
            rotation: Mutex::default(),
            listener,
            outcomes,
            writer,
            location,
        };
        let default = Shop::new(DEFAULT_SHOP, "Default shop", Timestamp::now());
        sqlx::query("INSERT INTO shops (id, record) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(DEFAULT_SHOP)
            .bind(encode(&default))
            .execute(&store.pool)
            .await?;
        Ok(store)
    }

    async fn begin(&self) -> Result<Tx, StoreError> {
        Ok(self.pool.begin().await?)
    }

    /// Makes sure the log has partitions for `days` (created under an advisory lock, so nodes
    /// starting together do not race).
    async fn ensure_days(&self, days: impl IntoIterator<Item = i32>) -> Result<(), StoreError> {
        let missing: Vec<i32> = {
            let known = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
            let mut missing: Vec<i32> = days.into_iter().filter(|d| !known.contains(d)).collect();
            missing.sort_unstable();
            missing.dedup();
            missing
        };
        if missing.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(PARTITION_LOCK)
            .execute(&mut *tx)
            .await?;
        for day in &missing {
            for table in LOG_TABLES {
                sqlx::query(&format!(
                    "CREATE TABLE IF NOT EXISTS {table}_d{day} PARTITION OF {table} \
                     FOR VALUES FROM ({day}) TO ({})",
                    day + 1
                ))
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        self.partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(missing);
        Ok(())
    }

    /// Notifies `channel` when `tx` commits: every node hears it, this one included (through
    /// its listener).
    async fn notify(tx: &mut Tx, channel: &str) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(channel)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Tells every node that work is claimable.
    async fn notify_work(tx: &mut Tx) -> Result<(), StoreError> {
        Self::notify(tx, WORK_CHANNEL).await
    }

    /// An integration record was written or removed in `tx`: tells every node (the caller
    /// raises this node's signal at once after the commit).
    async fn notify_integrations(tx: &mut Tx) -> Result<(), StoreError> {
        Self::notify(tx, INTEGRATIONS_CHANNEL).await
    }

    /// Plugin versions changed: raises the generation and tells every node.
    async fn notify_plugins(tx: &mut Tx) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO meta (name, value) VALUES ($1, '1') ON CONFLICT (name) \
             DO UPDATE SET value = (meta.value::bigint + 1)::text",
        )
        .bind(PLUGINS_GENERATION)
        .execute(&mut **tx)
        .await?;
        Self::notify(tx, PLUGINS_CHANNEL).await
    }

    async fn integration_for_update(
        tx: &mut Tx,
        id: Uuid,
    ) -> Result<Option<Integration>, StoreError> {
        let row = sqlx::query("SELECT record FROM integrations WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?;
        row.map(|r| decode(r.get::<&str, _>(0), "integration"))
            .transpose()
    }

    async fn put_integration(tx: &mut Tx, integration: &Integration) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO integrations (id, shop, record) VALUES ($1, $2, $3) \
             ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record",
        )
        .bind(integration.id)
        .bind(&integration.shop)
        .bind(encode(integration))
        .execute(&mut **tx)
        .await?;
        Self::notify_integrations(tx).await
    }

    /// A delivery and the day it is stored under, locked for the transaction.
    async fn delivery_for_update(
        tx: &mut Tx,
        id: Uuid,
    ) -> Result<Option<(Delivery, i32)>, StoreError> {
        let row = sqlx::query("SELECT record, day FROM deliveries WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?;
        row.map(|r| Ok((decode(r.get::<&str, _>(0), "delivery")?, r.get::<i32, _>(1))))
            .transpose()
    }

    /// Writes a delivery's record and keeps its queue row in step: open work has one (due at
    /// its queue time, or paused), finished work none.
    async fn put_delivery(tx: &mut Tx, d: &Delivery, day: i32) -> Result<(), StoreError> {
        sqlx::query("UPDATE deliveries SET status = $3, record = $4 WHERE id = $1 AND day = $2")
            .bind(d.id)
            .bind(day)
            .bind(d.status.as_str())
            .bind(encode(d))
            .execute(&mut **tx)
            .await?;
        Self::put_queue(tx, d, day).await
    }

    async fn put_queue(tx: &mut Tx, d: &Delivery, day: i32) -> Result<(), StoreError> {
        if d.is_open() {
            sqlx::query(
                "INSERT INTO queue (delivery_id, day, shop, integration_id, due_at, lease_until) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (delivery_id) DO UPDATE \
                 SET day = EXCLUDED.day, due_at = EXCLUDED.due_at, lease_until = EXCLUDED.lease_until",
            )
            .bind(d.id)
            .bind(day)
            .bind(&d.shop)
            .bind(d.integration_id)
            .bind(d.queue_time().map(ms))
            .bind(d.lease_until.map(ms))
            .execute(&mut **tx)
            .await?;
        } else {
            sqlx::query("DELETE FROM queue WHERE delivery_id = $1")
                .bind(d.id)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// Open deliveries of an integration (queued, held or paused; `paused_only`: paused),
    /// locked, with their days.
    async fn open_of(
        tx: &mut Tx,
        integration: Uuid,
        paused_only: bool,
    ) -> Result<Vec<(Delivery, i32)>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.record, d.day FROM queue q JOIN deliveries d \
               ON d.id = q.delivery_id AND d.day = q.day \
             WHERE q.integration_id = $1 AND ($2 = false OR q.due_at IS NULL) \
             FOR UPDATE OF d",
        )
        .bind(integration)
        .bind(paused_only)
        .fetch_all(&mut **tx)
        .await?;
        rows.iter()
            .map(|r| Ok((decode(r.get::<&str, _>(0), "delivery")?, r.get::<i32, _>(1))))
            .collect()
    }

    /// Ends an integration's open work (the model's [`Delivery::end`]) and removes it with its
    /// statistics.
    async fn remove_integration(
        tx: &mut Tx,
        integration: Uuid,
        reason: &str,
        now: Timestamp,
    ) -> Result<usize, StoreError> {
        let open = Self::open_of(tx, integration, false).await?;
        for (mut d, day) in open.iter().cloned() {
            d.end(reason, now);
            Self::put_delivery(tx, &d, day).await?;
        }
        for table in ["stats", "last_outcomes"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE integration_id = $1"))
                .bind(integration)
                .execute(&mut **tx)
                .await?;
        }
        sqlx::query("DELETE FROM integrations WHERE id = $1")
            .bind(integration)
            .execute(&mut **tx)
            .await?;
        Self::notify_integrations(tx).await?;
        Ok(open.len())
    }

    /// An integration's queue, counted: due now, later, held by a worker, paused.
    async fn queue_counts(
        &self,
        integration: Option<Uuid>,
        now: Timestamp,
    ) -> Result<QueueDepth, StoreError> {
        let row = sqlx::query(
            "SELECT \
               count(*) FILTER (WHERE due_at <= $2 AND (lease_until IS NULL OR lease_until <= $2)), \
               count(*) FILTER (WHERE due_at > $2 AND (lease_until IS NULL OR lease_until <= $2)), \
               count(*) FILTER (WHERE lease_until > $2), \
               count(*) FILTER (WHERE due_at IS NULL) \
             FROM queue WHERE ($1::uuid IS NULL OR integration_id = $1)",
        )
        .bind(integration)
        .bind(ms(now))
        .fetch_one(&self.pool)
        .await?;
        Ok(QueueDepth {
            due: row.get::<i64, _>(0) as u64,
            scheduled: row.get::<i64, _>(1) as u64,
            in_flight: row.get::<i64, _>(2) as u64,
            paused: row.get::<i64, _>(3) as u64,
        })
    }

    /// Queues finished deliveries again (the bulk and the single retry), in one transaction.
    async fn requeue_ids(
        &self,
        shop: &str,
        ids: &[Uuid],
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        let mut tx = self.begin().await?;
        let rows = sqlx::query(
            "SELECT record, day FROM deliveries WHERE id = ANY($1) AND shop = $2 \
               AND status IN ('failed', 'exhausted') FOR UPDATE",
        )
        .bind(ids)
        .bind(shop)
        .fetch_all(&mut *tx)
        .await?;
        for row in &rows {
            let mut d: Delivery = decode(row.get::<&str, _>(0), "delivery")?;
            d.requeue(now);
            Self::put_delivery(&mut tx, &d, row.get::<i32, _>(1)).await?;
        }
        if !rows.is_empty() {
            Self::notify_work(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(rows.len() as u64)
    }

    /// A fenced change of a leased delivery: [`StoreError::LeaseLost`] when `lease` is not
    /// its current one.
    async fn leased(tx: &mut Tx, lease: &Lease) -> Result<(Delivery, i32), StoreError> {
        Self::delivery_for_update(tx, lease.delivery)
            .await?
            .filter(|(d, _)| d.holds(lease))
            .ok_or(StoreError::LeaseLost(lease.delivery))
    }

    /// The days the log has partitions for, oldest first.
    pub async fn log_days(&self) -> Result<Vec<i32>, StoreError> {
        let rows = sqlx::query(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'deliveries'",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut days: Vec<i32> = rows
            .iter()
            .filter_map(|r| {
                r.get::<&str, _>(0)
                    .strip_prefix("deliveries_d")?
                    .parse()
                    .ok()
            })
            .collect();
        days.sort_unstable();
        Ok(days)
    }

    /// Stores events known to be new (each under its day), with their deliveries and queue
    /// rows: one statement per table, whatever the batch's size.
    async fn insert_new_events(tx: &mut Tx, events: &[(NewEvent, i32)]) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO events (id, day, shop, received_at, record, json) \
             SELECT * FROM unnest($1::uuid[], $2::integer[], $3::text[], $4::bigint[], \
               $5::text[], $6::text[])",
        )
        .bind(events.iter().map(|(e, _)| e.record.id).collect::<Vec<_>>())
        .bind(events.iter().map(|(_, day)| *day).collect::<Vec<_>>())
        .bind(
            events
                .iter()
                .map(|(e, _)| e.record.shop.clone())
                .collect::<Vec<_>>(),
        )
        .bind(
            events
                .iter()
                .map(|(e, _)| ms(e.record.received_at))
                .collect::<Vec<_>>(),
        )
        .bind(
            events
                .iter()
                .map(|(e, _)| encode(&e.record))
                .collect::<Vec<_>>(),
        )
        .bind(
            events
                .iter()
                .map(|(e, _)| e.json.clone())
                .collect::<Vec<_>>(),
        )
        .execute(&mut **tx)
        .await?;
        let deliveries: Vec<(&Delivery, i32)> = events
            .iter()
            .flat_map(|(e, day)| e.deliveries.iter().map(move |d| (d, *day)))
            .collect();
        if deliveries.is_empty() {
            return Ok(());
        }
        let column = |f: fn(&Delivery) -> Option<String>| -> Vec<Option<String>> {
            deliveries.iter().map(|(d, _)| f(d)).collect()
        };
        sqlx::query(
            "INSERT INTO deliveries (id, day, shop, event_id, integration_id, event, status, \
               customer_email, customer_name, record) \
             SELECT * FROM unnest($1::uuid[], $2::integer[], $3::text[], $4::uuid[], $5::uuid[], \
               $6::text[], $7::text[], $8::text[], $9::text[], $10::text[])",
        )
        .bind(deliveries.iter().map(|(d, _)| d.id).collect::<Vec<_>>())
        .bind(deliveries.iter().map(|(_, day)| *day).collect::<Vec<_>>())
        .bind(column(|d| Some(d.shop.clone())))
        .bind(
            deliveries
                .iter()
                .map(|(d, _)| d.event_id)
                .collect::<Vec<_>>(),
        )
        .bind(
            deliveries
                .iter()
                .map(|(d, _)| d.integration_id)
                .collect::<Vec<_>>(),
        )
        .bind(column(|d| Some(d.event.clone())))
        .bind(column(|d| Some(d.status.as_str().to_owned())))
        .bind(column(|d| d.customer_email.clone()))
        .bind(column(|d| d.customer_name.clone()))
        .bind(column(|d| Some(encode(d))))
        .execute(&mut **tx)
        .await?;
        let open: Vec<(&Delivery, i32)> = deliveries
            .into_iter()
            .filter(|(d, _)| d.is_open())
            .collect();
        Self::queue_rows(tx, &open).await
    }

    /// Puts open deliveries in the queue at their due time (or moves them there), one
    /// statement for all: what [`PgStore::put_queue`] does for one.
    async fn queue_rows(tx: &mut Tx, open: &[(&Delivery, i32)]) -> Result<(), StoreError> {
        if open.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO queue (delivery_id, day, shop, integration_id, due_at, lease_until) \
             SELECT * FROM unnest($1::uuid[], $2::integer[], $3::text[], $4::uuid[], \
               $5::bigint[], $6::bigint[]) \
             ON CONFLICT (delivery_id) DO UPDATE SET day = EXCLUDED.day, \
               due_at = EXCLUDED.due_at, lease_until = EXCLUDED.lease_until",
        )
        .bind(open.iter().map(|(d, _)| d.id).collect::<Vec<_>>())
        .bind(open.iter().map(|(_, day)| *day).collect::<Vec<_>>())
        .bind(open.iter().map(|(d, _)| d.shop.clone()).collect::<Vec<_>>())
        .bind(
            open.iter()
                .map(|(d, _)| d.integration_id)
                .collect::<Vec<_>>(),
        )
        .bind(
            open.iter()
                .map(|(d, _)| d.queue_time().map(ms))
                .collect::<Vec<_>>(),
        )
        .bind(
            open.iter()
                .map(|(d, _)| d.lease_until.map(ms))
                .collect::<Vec<_>>(),
        )
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Stores an attempt of a delivery, under the delivery's day.
    async fn insert_attempt(
        tx: &mut Tx,
        delivery: Uuid,
        attempt: &Attempt,
        day: i32,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO attempts (delivery_id, number, day, record) VALUES ($1, $2, $3, $4)",
        )
        .bind(delivery)
        .bind(attempt.number as i32)
        .bind(day)
        .bind(encode(attempt))
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    async fn put_stats(
        tx: &mut Tx,
        integration: Uuid,
        bucket: Timestamp,
        stats: &AttemptStats,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO stats (integration_id, bucket, record) VALUES ($1, $2, $3) \
             ON CONFLICT (integration_id, bucket) DO UPDATE SET record = EXCLUDED.record",
        )
        .bind(integration)
        .bind(ms(bucket))
        .bind(encode(stats))
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    async fn put_last(
        tx: &mut Tx,
        integration: Uuid,
        last: &LastOutcomes,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO last_outcomes (integration_id, record) VALUES ($1, $2) \
             ON CONFLICT (integration_id) DO UPDATE SET record = EXCLUDED.record",
        )
        .bind(integration)
        .bind(encode(last))
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Stores a new delivery under `day` (its event's), with its queue row if it is open.
    async fn insert_delivery(tx: &mut Tx, d: &Delivery, day: i32) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO deliveries (id, day, shop, event_id, integration_id, event, status, \
               customer_email, customer_name, record) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(d.id)
        .bind(day)
        .bind(&d.shop)
        .bind(d.event_id)
        .bind(d.integration_id)
        .bind(&d.event)
        .bind(d.status.as_str())
        .bind(&d.customer_email)
        .bind(&d.customer_name)
        .bind(encode(d))
        .execute(&mut **tx)
        .await?;
        Self::put_queue(tx, d, day).await
    }
}

/// Listens for the other nodes' notifications and raises this node's signals; when the
/// connection drops, every signal is raised (something may have been missed) and the
/// listener reconnects. Every [`PLUGINS_BACKSTOP`] the plugin generation is read as well.
async fn listen(
    pool: &PgPool,
    signals: Arc<Signals>,
) -> Result<tokio::task::AbortHandle, StoreError> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener
        .listen_all([WORK_CHANNEL, PLUGINS_CHANNEL, INTEGRATIONS_CHANNEL])
        .await?;
    let pool = pool.clone();
    let generation = move |pool: PgPool| async move {
        sqlx::query("SELECT value FROM meta WHERE name = $1")
            .bind(PLUGINS_GENERATION)
            .fetch_optional(&pool)
            .await
            .ok()
            .map(|row| row.and_then(|r| r.get::<&str, _>(0).parse::<u64>().ok()))
    };
    let mut seen = generation(pool.clone()).await.flatten();
    let task = tokio::spawn(async move {
        let mut backstop = tokio::time::interval(PLUGINS_BACKSTOP);
        backstop.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // `try_recv`, not `recv`: `recv` reconnects without a word, and what was
                // notified while the connection was down would go unheard.
                received = listener.try_recv() => match received {
                    Ok(Some(notification)) if notification.channel() == PLUGINS_CHANNEL => {
                        signals.plugins_changed();
                    }
                    Ok(Some(notification)) if notification.channel() == INTEGRATIONS_CHANNEL => {
                        signals.integrations_changed();
                    }
                    Ok(Some(_)) => signals.work_queued(),
                    // The connection dropped and was opened again (listening anew): anything
                    // may have changed meanwhile.
                    Ok(None) => {
                        tracing::warn!("the PostgreSQL listener lost its connection and opened it again");
                        signals.work_queued();
                        signals.plugins_changed();
                        signals.integrations_changed();
                    }
                    Err(error) => {
                        tracing::warn!(%error, "the PostgreSQL listener lost its connection; reconnecting");
                        signals.work_queued();
                        signals.plugins_changed();
                        signals.integrations_changed();
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                },
                _ = backstop.tick() => {
                    if let Some(now) = generation(pool.clone()).await
                        && now != seen
                    {
                        seen = now;
                        signals.plugins_changed();
                    }
                }
            }
        }
    });
    Ok(task.abort_handle())
}

#[async_trait::async_trait]
impl Store for PgStore {
    async fn create_shop(&self, shop: &Shop) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO shops (id, deleted_at, record) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(&shop.id)
        .bind(shop.deleted_at.map(ms))
        .bind(encode(shop))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn shop(&self, id: &str) -> Result<Option<Shop>, StoreError> {
        let row = sqlx::query("SELECT record FROM shops WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| decode(r.get::<&str, _>(0), "shop")).transpose()
    }

    async fn shops(&self, after: Option<&str>, limit: usize) -> Result<Vec<Shop>, StoreError> {
        let rows = sqlx::query(
            "SELECT record FROM shops WHERE deleted_at IS NULL AND ($1::text IS NULL OR id > $1) \
             ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| decode(r.get::<&str, _>(0), "shop"))
            .collect()
    }

    async fn rename_shop(
        &self,
        id: &str,
        name: &str,
        now: Timestamp,
    ) -> Result<Option<Shop>, StoreError> {
        let mut tx = self.begin().await?;
        let row =
            sqlx::query("SELECT record FROM shops WHERE id = $1 AND deleted_at IS NULL FOR UPDATE")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut shop: Shop = decode(row.get::<&str, _>(0), "shop")?;
        shop.name = name.to_owned();
        shop.updated_at = now;
        sqlx::query("UPDATE shops SET record = $2 WHERE id = $1")
            .bind(id)
            .bind(encode(&shop))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(shop))
    }

    async fn delete_shop(
        &self,
        id: &str,
        cascade: bool,
        now: Timestamp,
    ) -> Result<ShopDeletion, StoreError> {
        let mut tx = self.begin().await?;
        let row =
            sqlx::query("SELECT record FROM shops WHERE id = $1 AND deleted_at IS NULL FOR UPDATE")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(row) = row else {
            return Ok(ShopDeletion::NotFound);
        };
        let mut shop: Shop = decode(row.get::<&str, _>(0), "shop")?;
        let integrations: Vec<Uuid> =
            sqlx::query_scalar("SELECT id FROM integrations WHERE shop = $1 FOR UPDATE")
                .bind(id)
                .fetch_all(&mut *tx)
                .await?;
        if !integrations.is_empty() && !cascade {
            return Ok(ShopDeletion::HasIntegrations(integrations.len()));
        }
        let mut ended = 0;
        for integration in &integrations {
            ended += Self::remove_integration(&mut tx, *integration, "the shop was deleted", now)
                .await?;
        }
        sqlx::query("DELETE FROM tokens WHERE shop = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        shop.deleted_at = Some(now);
        shop.updated_at = now;
        sqlx::query("UPDATE shops SET deleted_at = $2, record = $3 WHERE id = $1")
            .bind(id)
            .bind(ms(now))
            .bind(encode(&shop))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        if !integrations.is_empty() {
            self.signals.integrations_changed();
        }
        Ok(ShopDeletion::Deleted {
            integrations: integrations.len(),
            ended,
        })
    }

    async fn create_token(&self, token: &ShopToken) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO tokens (hash, shop, id, record) VALUES ($1, $2, $3, $4)")
            .bind(&token.hash)
            .bind(&token.shop)
            .bind(token.id)
            .bind(encode(token))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<ShopToken>, StoreError> {
        let row = sqlx::query("SELECT record FROM tokens WHERE hash = $1")
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| decode(r.get::<&str, _>(0), "token"))
            .transpose()
    }

    async fn tokens(&self, shop: &str) -> Result<Vec<ShopToken>, StoreError> {
        let rows = sqlx::query("SELECT record FROM tokens WHERE shop = $1 ORDER BY id")
            .bind(shop)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| decode(r.get::<&str, _>(0), "token"))
            .collect()
    }

    async fn update_token(
        &self,
        shop: &str,
        id: Uuid,
        change: TokenChange,
    ) -> Result<Option<ShopToken>, StoreError> {
        let mut tx = self.begin().await?;
        let row = sqlx::query("SELECT record FROM tokens WHERE shop = $1 AND id = $2 FOR UPDATE")
            .bind(shop)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut token: ShopToken = decode(row.get::<&str, _>(0), "token")?;
        change(&mut token);
        sqlx::query("UPDATE tokens SET record = $3 WHERE shop = $1 AND id = $2")
            .bind(shop)
            .bind(id)
            .bind(encode(&token))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(token))
    }

    async fn delete_token(&self, shop: &str, id: Uuid) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM tokens WHERE shop = $1 AND id = $2")
            .bind(shop)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn insert_events(&self, events: Vec<NewEvent>) -> Result<Vec<Ingested>, StoreError> {
        self.ensure_days(events.iter().map(|e| day_of(e.record.received_at)))
            .await?;
        let mut tx = self.begin().await?;
        // Writers of the same ids serialised across nodes (an id is unique per day's
        // partition only, so the check below is the locks'), taken in id order.
        let mut ids: Vec<Uuid> = events.iter().map(|e| e.record.id).collect();
        ids.sort_unstable();
        ids.dedup();
        sqlx::query(
            "SELECT pg_advisory_xact_lock(hashtextextended(id::text, 0)) \
             FROM unnest($1::uuid[]) AS id ORDER BY id",
        )
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
        let mut stored: HashMap<Uuid, EventRecord> = HashMap::new();
        for row in sqlx::query("SELECT id, record FROM events WHERE id = ANY($1)")
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await?
        {
            stored.insert(row.get(0), decode(row.get::<&str, _>(1), "event")?);
        }
        let mut results = Vec::with_capacity(events.len());
        let mut new_events: Vec<(NewEvent, i32)> = Vec::new();
        for new in events {
            let id = new.record.id;
            if let Some(record) = stored.get(&id) {
                results.push(Ingested {
                    record: record.clone(),
                    duplicate: true,
                });
                continue;
            }
            stored.insert(id, new.record.clone());
            results.push(Ingested {
                record: new.record.clone(),
                duplicate: false,
            });
            let day = day_of(new.record.received_at);
            new_events.push((new, day));
        }
        let any = !new_events.is_empty();
        if any {
            Self::insert_new_events(&mut tx, &new_events).await?;
        }
        if any {
            Self::notify_work(&mut tx).await?;
        }
        tx.commit().await?;
        if any {
            self.signals.work_queued();
        }
        Ok(results)
    }

    async fn event(&self, id: Uuid) -> Result<Option<EventRecord>, StoreError> {
        let row = sqlx::query("SELECT record FROM events WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| decode(r.get::<&str, _>(0), "event"))
            .transpose()
    }

    async fn event_json(&self, id: Uuid) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT json FROM events WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn create_integration(&self, integration: &Integration) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        Self::put_integration(&mut tx, integration).await?;
        tx.commit().await?;
        self.signals.integrations_changed();
        Ok(())
    }

    async fn integration(&self, shop: &str, id: Uuid) -> Result<Option<Integration>, StoreError> {
        let row = sqlx::query("SELECT record FROM integrations WHERE id = $1 AND shop = $2")
            .bind(id)
            .bind(shop)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| decode(r.get::<&str, _>(0), "integration"))
            .transpose()
    }

    async fn integrations(&self, shop: Option<&str>) -> Result<Vec<Integration>, StoreError> {
        let rows = sqlx::query(
            "SELECT record FROM integrations WHERE ($1::text IS NULL OR shop = $1) ORDER BY shop, id",
        )
        .bind(shop)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| decode(r.get::<&str, _>(0), "integration"))
            .collect()
    }

    async fn update_integration(
        &self,
        shop: &str,
        id: Uuid,
        now: Timestamp,
        change: IntegrationChange,
    ) -> Result<Option<Integration>, StoreError> {
        let mut tx = self.begin().await?;
        let Some(mut integration) = Self::integration_for_update(&mut tx, id)
            .await?
            .filter(|i| i.shop == shop)
        else {
            return Ok(None);
        };
        let resumes = integration
            .apply(change, now)
            .map_err(StoreError::Rejected)?;
        if resumes {
            for (mut d, day) in Self::open_of(&mut tx, id, true).await? {
                Integration::resume(&mut d, now);
                Self::put_delivery(&mut tx, &d, day).await?;
            }
            Self::notify_work(&mut tx).await?;
        }
        Self::put_integration(&mut tx, &integration).await?;
        tx.commit().await?;
        self.signals.integrations_changed();
        if resumes {
            self.signals.work_queued();
        }
        Ok(Some(integration))
    }

    async fn delete_integration(
        &self,
        shop: &str,
        id: Uuid,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        if Self::integration_for_update(&mut tx, id)
            .await?
            .filter(|i| i.shop == shop)
            .is_none()
        {
            return Ok(false);
        }
        Self::remove_integration(&mut tx, id, "the integration was deleted", now).await?;
        tx.commit().await?;
        self.signals.integrations_changed();
        Ok(true)
    }

    async fn claim_due(
        &self,
        now: Timestamp,
        limit: usize,
        lease_until: Timestamp,
        admission: &dyn Admission,
    ) -> Result<ClaimRound, StoreError> {
        claim::claim_due(self, now, limit, lease_until, admission).await
    }

    async fn release(&self, lease: Lease, due: Timestamp) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let (mut d, day) = Self::leased(&mut tx, &lease).await?;
        d.release(due);
        Self::put_delivery(&mut tx, &d, day).await?;
        Self::notify_work(&mut tx).await?;
        tx.commit().await?;
        self.signals.work_queued();
        Ok(())
    }

    async fn pause(&self, lease: Lease, now: Timestamp, reason: &str) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let (mut d, day) = Self::leased(&mut tx, &lease).await?;
        d.pause(reason, now);
        Self::put_delivery(&mut tx, &d, day).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn record_attempt(
        &self,
        lease: Lease,
        attempt: Attempt,
        outcome: Outcome,
        now: Timestamp,
        auto_disable_after: u32,
    ) -> Result<Recorded, StoreError> {
        // Written with the other outcomes queued meanwhile (see `outcomes`).
        let _pending = self.signals.outcome_pending();
        let (done, result) = tokio::sync::oneshot::channel();
        let pending = outcomes::Pending {
            lease,
            attempt,
            outcome,
            now,
            auto_disable_after,
            done,
        };
        let gone = || StoreError::Unavailable("the outcome writer has stopped".into());
        self.outcomes.send(pending).await.map_err(|_| gone())?;
        result.await.map_err(|_| gone())?
    }

    async fn requeue(&self, shop: &str, id: Uuid, now: Timestamp) -> Result<bool, StoreError> {
        let requeued = self.requeue_ids(shop, &[id], now).await? > 0;
        if requeued {
            self.signals.work_queued();
        }
        Ok(requeued)
    }

    async fn requeue_matching(
        &self,
        shop: &str,
        filter: &DeliveryFilter,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        // One statement selects what matches, in chunks of ids, each requeued in one
        // transaction; a delivery requeued by a chunk is no longer failed, so the next
        // chunk's selection moves on by itself.
        let mut requeued = 0;
        let mut before: Option<Uuid> = None;
        loop {
            let (sql, binds) = log_query(shop, filter, before, CHUNK as usize, true);
            let mut query = sqlx::query_scalar::<_, Uuid>(&sql);
            for bind in binds {
                query = bind.apply_scalar(query);
            }
            let ids: Vec<Uuid> = query.fetch_all(&self.pool).await?;
            if ids.is_empty() {
                break;
            }
            requeued += self.requeue_ids(shop, &ids, now).await?;
            if ids.len() < CHUNK as usize {
                break;
            }
            before = ids.last().copied();
        }
        if requeued > 0 {
            self.signals.work_queued();
        }
        Ok(requeued)
    }

    async fn delivery(&self, shop: &str, id: Uuid) -> Result<Option<DeliveryDetail>, StoreError> {
        // One statement, so the delivery and its attempts come from one snapshot.
        let row = sqlx::query(
            "SELECT d.record, ARRAY(SELECT a.record FROM attempts a \
               WHERE a.delivery_id = d.id ORDER BY a.number) \
             FROM deliveries d WHERE d.id = $1 AND d.shop = $2",
        )
        .bind(id)
        .bind(shop)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let delivery: Delivery = decode(row.get::<&str, _>(0), "delivery")?;
        let attempts = row
            .get::<Vec<String>, _>(1)
            .iter()
            .map(|a| decode(a, "attempt"))
            .collect::<Result<_, _>>()?;
        Ok(Some(DeliveryDetail { delivery, attempts }))
    }

    async fn deliveries(
        &self,
        shop: &str,
        filter: &DeliveryFilter,
        before: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let (sql, binds) = log_query(shop, filter, before, limit, false);
        let mut query = sqlx::query_scalar::<_, String>(&sql);
        for bind in binds {
            query = bind.apply_scalar(query);
        }
        let rows: Vec<String> = query.fetch_all(&self.pool).await?;
        rows.iter().map(|r| decode(r, "delivery")).collect()
    }

    async fn queue_depth(&self, now: Timestamp) -> Result<QueueDepth, StoreError> {
        self.queue_counts(None, now).await
    }

    async fn integration_health(
        &self,
        shop: &str,
        id: Uuid,
        now: Timestamp,
    ) -> Result<Option<IntegrationHealth>, StoreError> {
        if self.integration(shop, id).await?.is_none() {
            return Ok(None);
        }
        let since = stats_bucket(now.saturating_sub(Duration::from_secs(86_400)));
        let rows = sqlx::query(
            "SELECT bucket, record FROM stats WHERE integration_id = $1 AND bucket >= $2 ORDER BY bucket",
        )
        .bind(id)
        .bind(ms(since))
        .fetch_all(&self.pool)
        .await?;
        let buckets = rows
            .iter()
            .map(|r| {
                Ok((
                    Timestamp(r.get::<i64, _>(0) as u64),
                    decode::<AttemptStats>(r.get::<&str, _>(1), "statistics")?,
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let last: LastOutcomes = sqlx::query_scalar::<_, String>(
            "SELECT record FROM last_outcomes WHERE integration_id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .map(|r| decode(&r, "last outcomes"))
        .transpose()?
        .unwrap_or_default();
        let queue = self.queue_counts(Some(id), now).await?;
        Ok(Some(IntegrationHealth::from_buckets(
            id, &buckets, last, queue, now,
        )))
    }

    async fn purge(&self, cutoff: Timestamp, now: Timestamp) -> Result<Purged, StoreError> {
        let today = day_of(now);
        self.ensure_days([today, today + 1]).await?;
        let mut purged = Purged::default();
        let cutoff_day = day_of(cutoff);
        for day in self.log_days().await? {
            if day >= cutoff_day || day >= today {
                continue;
            }
            let mut tx = self.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(PARTITION_LOCK)
                .execute(&mut *tx)
                .await?;
            // Open work stays: moved, with its event and attempts, into today's partition.
            let open: Vec<Uuid> = sqlx::query_scalar(
                "UPDATE queue SET day = $2 WHERE day = $1 RETURNING delivery_id",
            )
            .bind(day)
            .bind(today)
            .fetch_all(&mut *tx)
            .await?;
            if !open.is_empty() {
                let events: Vec<Uuid> = sqlx::query_scalar(
                    "UPDATE deliveries SET day = $2 WHERE day = $1 AND id = ANY($3) RETURNING event_id",
                )
                .bind(day)
                .bind(today)
                .bind(&open)
                .fetch_all(&mut *tx)
                .await?;
                sqlx::query(
                    "UPDATE attempts SET day = $2 WHERE day = $1 AND delivery_id = ANY($3)",
                )
                .bind(day)
                .bind(today)
                .bind(&open)
                .execute(&mut *tx)
                .await?;
                // The event's other deliveries (finished) stay with the day and go with it.
                sqlx::query("UPDATE events SET day = $2 WHERE day = $1 AND id = ANY($3)")
                    .bind(day)
                    .bind(today)
                    .bind(&events)
                    .execute(&mut *tx)
                    .await?;
            }
            let deliveries: i64 =
                sqlx::query_scalar(&format!("SELECT count(*) FROM deliveries_d{day}"))
                    .fetch_one(&mut *tx)
                    .await?;
            let events: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM events_d{day}"))
                .fetch_one(&mut *tx)
                .await?;
            for table in LOG_TABLES {
                sqlx::query(&format!("DROP TABLE IF EXISTS {table}_d{day}"))
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            self.partitions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&day);
            purged.deliveries += deliveries as u64;
            purged.events += events as u64;
        }

        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM stats WHERE bucket < $1")
            .bind(ms(stats_bucket(now.saturating_sub(STATS_KEPT))))
            .execute(&mut *tx)
            .await?;
        let tokens: Vec<(String, String)> = sqlx::query_as("SELECT hash, record FROM tokens")
            .fetch_all(&mut *tx)
            .await?;
        for (hash, record) in tokens {
            let token: ShopToken = decode(&record, "token")?;
            if !token.is_valid_at(now) {
                sqlx::query("DELETE FROM tokens WHERE hash = $1")
                    .bind(hash)
                    .execute(&mut *tx)
                    .await?;
                purged.tokens += 1;
            }
        }
        let shops = sqlx::query(
            "DELETE FROM shops s WHERE s.deleted_at < $1 \
               AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.shop = s.id)",
        )
        .bind(ms(cutoff))
        .execute(&mut *tx)
        .await?;
        purged.shops += shops.rows_affected();
        tx.commit().await?;
        Ok(purged)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        // Every transaction is durable when it commits.
        Ok(())
    }

    async fn add_plugin_version(
        &self,
        plugin: &str,
        version: &str,
        bundled: bool,
        component: &[u8],
        now: Timestamp,
    ) -> Result<PluginVersion, StoreError> {
        let digest = crate::runtime::component_digest(component);
        let mut tx = self.begin().await?;
        sqlx::query("INSERT INTO plugins (plugin) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(plugin)
            .execute(&mut *tx)
            .await?;
        let active: Option<i32> =
            sqlx::query_scalar("SELECT active FROM plugins WHERE plugin = $1 FOR UPDATE")
                .bind(plugin)
                .fetch_one(&mut *tx)
                .await?;
        if let Some(number) = active {
            let row = sqlx::query(
                "SELECT record FROM plugin_versions WHERE plugin = $1 AND number = $2 AND digest = $3",
            )
            .bind(plugin)
            .bind(number)
            .bind(&digest)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(row) = row {
                return decode(row.get::<&str, _>(0), "plugin version");
            }
        }
        let last: Option<i32> =
            sqlx::query_scalar("SELECT max(number) FROM plugin_versions WHERE plugin = $1")
                .bind(plugin)
                .fetch_one(&mut *tx)
                .await?;
        let added = PluginVersion {
            plugin: plugin.to_owned(),
            number: last.unwrap_or(0) as u32 + 1,
            version: version.to_owned(),
            digest,
            size: component.len(),
            added_at: now,
            bundled,
        };
        sqlx::query(
            "INSERT INTO components (digest, bytes) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(&added.digest)
        .bind(component)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO plugin_versions (plugin, number, digest, record) VALUES ($1, $2, $3, $4)",
        )
        .bind(plugin)
        .bind(added.number as i32)
        .bind(&added.digest)
        .bind(encode(&added))
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE plugins SET active = $2, removed = false WHERE plugin = $1")
            .bind(plugin)
            .bind(added.number as i32)
            .execute(&mut *tx)
            .await?;
        Self::notify_plugins(&mut tx).await?;
        tx.commit().await?;
        self.signals.plugins_changed();
        Ok(added)
    }

    async fn plugin_versions(&self, plugin: &str) -> Result<Vec<PluginVersion>, StoreError> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT record FROM plugin_versions WHERE plugin = $1 ORDER BY number",
        )
        .bind(plugin)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| decode(r, "plugin version")).collect()
    }

    async fn active_plugin_versions(&self) -> Result<Vec<PluginVersion>, StoreError> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT v.record FROM plugins p JOIN plugin_versions v \
               ON v.plugin = p.plugin AND v.number = p.active ORDER BY p.plugin",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| decode(r, "plugin version")).collect()
    }

    async fn activate_plugin_version(&self, plugin: &str, number: u32) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let exists = sqlx::query("SELECT 1 FROM plugin_versions WHERE plugin = $1 AND number = $2")
            .bind(plugin)
            .bind(number as i32)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(StoreError::Rejected(format!(
                "the plugin `{plugin}` has no version {number}"
            )));
        }
        sqlx::query("UPDATE plugins SET active = $2 WHERE plugin = $1")
            .bind(plugin)
            .bind(number as i32)
            .execute(&mut *tx)
            .await?;
        Self::notify_plugins(&mut tx).await?;
        tx.commit().await?;
        self.signals.plugins_changed();
        Ok(())
    }

    async fn plugin_component(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT bytes FROM components WHERE digest = $1")
                .bind(digest)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn delete_plugin(&self, plugin: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let digests: Vec<String> =
            sqlx::query_scalar("DELETE FROM plugin_versions WHERE plugin = $1 RETURNING digest")
                .bind(plugin)
                .fetch_all(&mut *tx)
                .await?;
        if digests.is_empty() {
            return Ok(false);
        }
        // Components are shared by digest; keep those another plugin still refers to.
        sqlx::query(
            "DELETE FROM components c WHERE c.digest = ANY($1) \
               AND NOT EXISTS (SELECT 1 FROM plugin_versions v WHERE v.digest = c.digest)",
        )
        .bind(&digests)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO plugins (plugin, active, removed) VALUES ($1, NULL, true) \
             ON CONFLICT (plugin) DO UPDATE SET active = NULL, removed = true",
        )
        .bind(plugin)
        .execute(&mut *tx)
        .await?;
        Self::notify_plugins(&mut tx).await?;
        tx.commit().await?;
        self.signals.plugins_changed();
        Ok(true)
    }

    async fn plugin_removed(&self, plugin: &str) -> Result<bool, StoreError> {
        let removed: Option<bool> =
            sqlx::query_scalar("SELECT removed FROM plugins WHERE plugin = $1")
                .bind(plugin)
                .fetch_optional(&self.pool)
                .await?;
        Ok(removed.unwrap_or(false))
    }

    async fn rekey(
        &self,
        integrations: Vec<Integration>,
        fingerprint_name: &str,
        fingerprint: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        for integration in &integrations {
            let Some(mut current) = Self::integration_for_update(&mut tx, integration.id).await?
            else {
                continue;
            };
            current.secrets = integration.secrets.clone();
            Self::put_integration(&mut tx, &current).await?;
        }
        sqlx::query(
            "INSERT INTO meta (name, value) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
        )
        .bind(fingerprint_name)
        .bind(fingerprint)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.signals.integrations_changed();
        Ok(())
    }

    fn signals(&self) -> &Signals {
        &self.signals
    }

    async fn health(&self) -> Result<(), String> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(|e| format!("PostgreSQL at {} cannot be used: {e}", self.location))
    }

    async fn recover(&self) -> Result<(), StoreError> {
        // The pool reconnects by itself; the store is usable once the database answers.
        self.health().await.map_err(StoreError::Unavailable)
    }

    async fn meta(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn set_meta(&self, name: &str, value: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO meta (name, value) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
        )
        .bind(name)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// A value bound to a log query.
enum Bind {
    Text(String),
    Uuid(Uuid),
    Int(i64),
}

impl Bind {
    fn apply_scalar<'q, O>(
        self,
        query: sqlx::query::QueryScalar<'q, Postgres, O, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::QueryScalar<'q, Postgres, O, sqlx::postgres::PgArguments> {
        match self {
            Bind::Text(v) => query.bind(v),
            Bind::Uuid(v) => query.bind(v),
            Bind::Int(v) => query.bind(v),
        }
    }
}

/// The delivery log's query for a shop's filter, newest first: `record`s, or (`ids`) the ids
/// of the failed and exhausted ones (a bulk retry).
fn log_query(
    shop: &str,
    filter: &DeliveryFilter,
    before: Option<Uuid>,
    limit: usize,
    ids: bool,
) -> (String, Vec<Bind>) {
    let mut binds = vec![Bind::Text(shop.to_owned())];
    let mut sql = format!(
        "SELECT {} FROM deliveries WHERE shop = $1",
        if ids { "id" } else { "record" }
    );
    fn add(sql: &mut String, binds: &mut Vec<Bind>, clause: &str, bind: Bind) {
        binds.push(bind);
        sql.push_str(&clause.replace("$?", &format!("${}", binds.len())));
    }
    if let Some(integration) = filter.integration {
        add(
            &mut sql,
            &mut binds,
            " AND integration_id = $?",
            Bind::Uuid(integration),
        );
    }
    if let Some(event) = &filter.event {
        add(
            &mut sql,
            &mut binds,
            " AND event = $?",
            Bind::Text(event.clone()),
        );
    }
    if let Some(status) = filter.status {
        add(
            &mut sql,
            &mut binds,
            " AND status = $?",
            Bind::Text(status.as_str().to_owned()),
        );
    }
    if ids {
        sql.push_str(" AND status IN ('failed', 'exhausted')");
    }
    if let Some(customer) = &filter.customer {
        let clause = " AND (lower(btrim(customer_email)) = $? OR lower(btrim(customer_name)) = $?)";
        add(
            &mut sql,
            &mut binds,
            clause,
            Bind::Text(customer.trim().to_lowercase()),
        );
    }
    if let Some(from) = filter.from {
        add(
            &mut sql,
            &mut binds,
            " AND id >= $?",
            Bind::Uuid(id_bounds(from).0),
        );
    }
    if let Some(to) = filter.to {
        add(
            &mut sql,
            &mut binds,
            " AND id <= $?",
            Bind::Uuid(id_bounds(to).1),
        );
    }
    if let Some(before) = before {
        add(&mut sql, &mut binds, " AND id < $?", Bind::Uuid(before));
    }
    binds.push(Bind::Int(limit as i64));
    sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", binds.len()));
    (sql, binds)
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls_in_messages_keep_no_password() {
        let shown = super::redacted(
            "postgres://canopy:s3cret@db:5432/canopy?sslpassword=k3y&sslmode=require",
        );
        assert!(
            !shown.contains("s3cret") && !shown.contains("k3y"),
            "{shown}"
        );
        assert!(shown.starts_with("postgres://canopy:"), "{shown}");
        assert!(shown.contains("@db:5432/canopy?"), "{shown}");
        assert!(shown.contains("sslmode=require"), "{shown}");
        assert_eq!(
            super::redacted("not a url"),
            "the configured PostgreSQL URL"
        );
    }
}
