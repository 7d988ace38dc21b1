//! Writing another store's records as they are (`canopy migrate-store`), and counting what
//! the database holds.

use sqlx::Row;

use super::{PgStore, day_of, encode, ms};
use crate::model::*;
use crate::store::StoreError;
use crate::store::transfer::{Counts, Item};

impl PgStore {
    /// Whether the database at `url` holds tables that are not a Canopy store's (asked before
    /// [`PgStore::connect`], which would create the store's tables beside them).
    pub async fn holds_other_tables(url: &str) -> Result<bool, StoreError> {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(super::ACQUIRE_TIMEOUT)
            .connect(url)
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!(
                    "cannot connect to PostgreSQL at {}: {e}",
                    super::redacted(url)
                ))
            })?;
        let other: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = 'public') \
               AND NOT EXISTS (SELECT 1 FROM pg_tables \
                 WHERE schemaname = 'public' AND tablename = '_sqlx_migrations')",
        )
        .fetch_one(&pool)
        .await?;
        pool.close().await;
        Ok(other)
    }

    /// Whether the database holds nothing yet but the `default` shop a new database starts
    /// with (an import goes only into such a database, so nothing is merged or overwritten).
    pub async fn is_empty(&self) -> Result<bool, StoreError> {
        let occupied: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM shops WHERE id <> $1) \
                 OR EXISTS (SELECT 1 FROM tokens) OR EXISTS (SELECT 1 FROM integrations) \
                 OR EXISTS (SELECT 1 FROM events) OR EXISTS (SELECT 1 FROM plugin_versions)",
        )
        .bind(DEFAULT_SHOP)
        .fetch_one(&self.pool)
        .await?;
        Ok(!occupied)
    }

    /// Writes `items` as they are, in one transaction; then wakes the schedulers and plugin
    /// registries of nodes already running. Events go into the day they were received.
    pub async fn import(&self, items: &[Item]) -> Result<(), StoreError> {
        self.ensure_days(items.iter().filter_map(|item| match item {
            Item::Event { record, .. } => Some(day_of(record.received_at)),
            _ => None,
        }))
        .await?;
        let mut tx = self.begin().await?;
        let (mut work, mut plugins) = (false, false);
        for item in items {
            match item {
                Item::Meta { name, value } => {
                    sqlx::query(
                        "INSERT INTO meta (name, value) VALUES ($1, $2) \
                         ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
                    )
                    .bind(name)
                    .bind(value)
                    .execute(&mut *tx)
                    .await?;
                }
                Item::Shop(shop) => {
                    // The `default` shop a new database made is replaced by the one moved in.
                    sqlx::query(
                        "INSERT INTO shops (id, deleted_at, record) VALUES ($1, $2, $3) \
                         ON CONFLICT (id) DO UPDATE SET deleted_at = EXCLUDED.deleted_at, \
                         record = EXCLUDED.record",
                    )
                    .bind(&shop.id)
                    .bind(shop.deleted_at.map(ms))
                    .bind(encode(shop))
                    .execute(&mut *tx)
                    .await?;
                }
                Item::Token(token) => {
                    sqlx::query(
                        "INSERT INTO tokens (hash, shop, id, record) VALUES ($1, $2, $3, $4)",
                    )
                    .bind(&token.hash)
                    .bind(&token.shop)
                    .bind(token.id)
                    .bind(encode(token))
                    .execute(&mut *tx)
                    .await?;
                }
                Item::Integration(integration) => {
                    Self::put_integration(&mut tx, integration).await?;
                }
                Item::Component { digest, bytes } => {
                    sqlx::query(
                        "INSERT INTO components (digest, bytes) VALUES ($1, $2) \
                         ON CONFLICT DO NOTHING",
                    )
                    .bind(digest)
                    .bind(bytes)
                    .execute(&mut *tx)
                    .await?;
                }
                Item::PluginVersion(version) => {
                    sqlx::query(
                        "INSERT INTO plugin_versions (plugin, number, digest, record) \
                         VALUES ($1, $2, $3, $4)",
                    )
                    .bind(&version.plugin)
                    .bind(version.number as i32)
                    .bind(&version.digest)
                    .bind(encode(version))
                    .execute(&mut *tx)
                    .await?;
                }
                Item::Plugin {
                    plugin,
                    active,
                    removed,
                } => {
                    sqlx::query(
                        "INSERT INTO plugins (plugin, active, removed) VALUES ($1, $2, $3) \
                         ON CONFLICT (plugin) DO UPDATE SET active = EXCLUDED.active, \
                         removed = EXCLUDED.removed",
                    )
                    .bind(plugin)
                    .bind(active.map(|n| n as i32))
                    .bind(removed)
                    .execute(&mut *tx)
                    .await?;
                    plugins = true;
                }
                Item::Event {
                    record,
                    json,
                    deliveries,
                } => {
                    let day = day_of(record.received_at);
                    sqlx::query(
                        "INSERT INTO events (id, day, shop, received_at, record, json) \
                         VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(record.id)
                    .bind(day)
                    .bind(&record.shop)
                    .bind(ms(record.received_at))
                    .bind(encode(record))
                    .bind(json)
                    .execute(&mut *tx)
                    .await?;
                    for (delivery, attempts) in deliveries {
                        Self::insert_delivery(&mut tx, delivery, day).await?;
                        for attempt in attempts {
                            Self::insert_attempt(&mut tx, delivery.id, attempt, day).await?;
                        }
                        work |= delivery.queue_time().is_some();
                    }
                }
                Item::Stats {
                    integration,
                    bucket,
                    stats,
                } => Self::put_stats(&mut tx, *integration, *bucket, stats).await?,
                Item::Last { integration, last } => {
                    Self::put_last(&mut tx, *integration, last).await?
                }
            }
        }
        if work {
            Self::notify_work(&mut tx).await?;
        }
        if plugins {
            Self::notify_plugins(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// What the database holds.
    pub async fn counts(&self) -> Result<Counts, StoreError> {
        let row = sqlx::query(
            "SELECT (SELECT count(*) FROM shops), (SELECT count(*) FROM tokens), \
               (SELECT count(*) FROM integrations), (SELECT count(*) FROM events), \
               (SELECT count(*) FROM deliveries), (SELECT count(*) FROM attempts), \
               (SELECT count(*) FROM plugin_versions), (SELECT count(*) FROM components)",
        )
        .fetch_one(&self.pool)
        .await?;
        let n = |i: usize| row.get::<i64, _>(i) as u64;
        Ok(Counts {
            shops: n(0),
            tokens: n(1),
            integrations: n(2),
            events: n(3),
            deliveries: n(4),
            attempts: n(5),
            plugin_versions: n(6),
            components: n(7),
        })
    }
}
