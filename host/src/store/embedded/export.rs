//! Everything the embedded store keeps, as [`Item`]s for another store (`canopy
//! migrate-store`), and what it holds, counted from its keys.

use std::collections::BTreeMap;

use super::engine::Engine;
use super::keys::*;
use super::{EmbeddedStore, StoreError, corrupt, decode};
use crate::model::*;
use crate::store::transfer::{Counts, Item};

/// Metadata that belongs to this engine (its format, its health probe) or is listed as
/// [`Item::Plugin`]s instead.
fn engine_meta(name: &str) -> bool {
    name == FORMAT_META
        || name == super::HEALTH_PROBE
        || name.starts_with(ACTIVE_PREFIX)
        || name.starts_with(REMOVED_PREFIX)
}

impl EmbeddedStore {
    /// Every record, oldest kinds first: metadata, shops, tokens, integrations, components,
    /// plugin versions and states, statistics, then events one by one (each with its
    /// deliveries and their attempts), read as the iterator goes.
    pub fn export(
        &self,
    ) -> Result<impl Iterator<Item = Result<Item, StoreError>> + '_, StoreError> {
        let db = self.db()?;
        let mut head = Vec::new();
        for entry in db.scan_prefix([META]) {
            let (k, v) = entry?;
            let name = String::from_utf8_lossy(&k[1..]).into_owned();
            if !engine_meta(&name) {
                let value = String::from_utf8(v.to_vec()).map_err(|e| corrupt("metadata", e))?;
                head.push(Item::Meta { name, value });
            }
        }
        for v in db.scan_prefix([SHOP]).values() {
            head.push(Item::Shop(decode(&v?, "shop")?));
        }
        for v in db.scan_prefix([TOKEN]).values() {
            head.push(Item::Token(decode(&v?, "token")?));
        }
        for v in db.scan_prefix([INTEGRATION]).values() {
            head.push(Item::Integration(decode(&v?, "integration")?));
        }
        for entry in db.scan_prefix([COMPONENT]) {
            let (k, v) = entry?;
            head.push(Item::Component {
                digest: String::from_utf8_lossy(&k[1..]).into_owned(),
                bytes: v.to_vec(),
            });
        }
        let mut plugins: BTreeMap<String, (Option<u32>, bool)> = BTreeMap::new();
        for v in db.scan_prefix([PLUGIN_VERSION]).values() {
            let version: PluginVersion = decode(&v?, "plugin version")?;
            plugins.entry(version.plugin.clone()).or_default();
            head.push(Item::PluginVersion(version));
        }
        for entry in db.scan_prefix(key(META, ACTIVE_PREFIX.as_bytes())) {
            let (k, v) = entry?;
            let plugin = String::from_utf8_lossy(&k[1 + ACTIVE_PREFIX.len()..]).into_owned();
            let number: [u8; 4] = v[..].try_into().map_err(|e| corrupt("active plugin", e))?;
            plugins.entry(plugin).or_default().0 = Some(u32::from_be_bytes(number));
        }
        for k in db.scan_prefix(key(META, REMOVED_PREFIX.as_bytes())).keys() {
            let k = k?;
            let plugin = String::from_utf8_lossy(&k[1 + REMOVED_PREFIX.len()..]).into_owned();
            plugins.entry(plugin).or_default().1 = true;
        }
        head.extend(
            plugins
                .into_iter()
                .map(|(plugin, (active, removed))| Item::Plugin {
                    plugin,
                    active,
                    removed,
                }),
        );
        for entry in db.scan_prefix([STATS]) {
            let (k, v) = entry?;
            head.push(Item::Stats {
                integration: id_at(&k, 1),
                bucket: time_at(&k, 17),
                stats: decode(&v, "statistics")?,
            });
        }
        for entry in db.scan_prefix([LAST]) {
            let (k, v) = entry?;
            head.push(Item::Last {
                integration: id_at(&k, 1),
                last: decode(&v, "last outcomes")?,
            });
        }
        let events = db
            .scan_prefix([EVENT])
            .values()
            .map(move |v| self.event_item(decode(&v?, "event")?));
        Ok(head.into_iter().map(Ok).chain(events))
    }

    /// An event with its JSON text, its deliveries and their attempts.
    fn event_item(&self, record: EventRecord) -> Result<Item, StoreError> {
        let db = self.db()?;
        let json = db
            .get(key(EVENT_JSON, record.id.as_bytes()))?
            .ok_or_else(|| corrupt("event", format!("no JSON text for {}", record.id)))?;
        let json = String::from_utf8(json.to_vec()).map_err(|e| corrupt("event", e))?;
        let mut deliveries = Vec::with_capacity(record.deliveries.len());
        for made in &record.deliveries {
            // A delivery the purge removed is no longer kept; the rest move.
            let Some(delivery) = self.delivery_record(made.id)? else {
                continue;
            };
            let attempts = db
                .scan_prefix(key(ATTEMPT, made.id.as_bytes()))
                .values()
                .map(|v| decode(&v?, "attempt"))
                .collect::<Result<Vec<Attempt>, _>>()?;
            deliveries.push((delivery, attempts));
        }
        Ok(Item::Event {
            record,
            json,
            deliveries,
        })
    }

    /// What the store holds, counted from its keys.
    pub fn counts(&self) -> Result<Counts, StoreError> {
        counts_in(&self.db()?)
    }
}

/// What `db` holds, counted from its keys.
pub(super) fn counts_in(db: &Engine) -> Result<Counts, StoreError> {
    let count = |prefix: u8| db.scan_prefix([prefix]).keys().count() as u64;
    Ok(Counts {
        shops: count(SHOP),
        tokens: count(TOKEN),
        integrations: count(INTEGRATION),
        events: count(EVENT),
        deliveries: count(DELIVERY),
        attempts: count(ATTEMPT),
        plugin_versions: count(PLUGIN_VERSION),
        components: count(COMPONENT),
    })
}
