//! Moving an install from the embedded store to PostgreSQL (`canopy migrate-store`): the
//! sled store lists everything it keeps as [`Item`]s ([`EmbeddedStore::export`](super::EmbeddedStore::export)),
//! and the PostgreSQL store writes them as they are ([`PgStore::import`](super::PgStore::import)),
//! in batches, each one transaction. Records move unchanged — ids, times, statuses, attempts,
//! statistics, sealed secrets (still sealed: the same master key opens them), plugin versions
//! with their components and which one is active. Open work stays open: what was queued is due
//! again on the new store, a delivery held by a worker of the stopped server is due at once.
//! Both stores count what they hold ([`Counts`]); the command compares the two at the end.

use std::fmt;

use uuid::Uuid;

use crate::model::*;

/// One thing a store keeps.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// A named value about the store (the master key's fingerprint, …).
    Meta {
        name: String,
        value: String,
    },
    Shop(Shop),
    Token(ShopToken),
    Integration(Integration),
    /// A plugin component, by digest.
    Component {
        digest: String,
        bytes: Vec<u8>,
    },
    PluginVersion(PluginVersion),
    /// A plugin's state: its active version, or removed (a bundled plugin is not installed
    /// again).
    Plugin {
        plugin: String,
        active: Option<u32>,
        removed: bool,
    },
    /// An event with its JSON text, its deliveries and their attempts.
    Event {
        record: EventRecord,
        json: String,
        deliveries: Vec<(Delivery, Vec<Attempt>)>,
    },
    /// An integration's statistics over one bucket.
    Stats {
        integration: Uuid,
        bucket: Timestamp,
        stats: AttemptStats,
    },
    /// An integration's last success and failure.
    Last {
        integration: Uuid,
        last: LastOutcomes,
    },
}

/// How many of each record a store holds (shops and plugin states include removed ones).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub shops: u64,
    pub tokens: u64,
    pub integrations: u64,
    pub events: u64,
    pub deliveries: u64,
    pub attempts: u64,
    pub plugin_versions: u64,
    pub components: u64,
}

impl Counts {
    /// Counts an item in.
    pub fn add(&mut self, item: &Item) {
        match item {
            Item::Shop(_) => self.shops += 1,
            Item::Token(_) => self.tokens += 1,
            Item::Integration(_) => self.integrations += 1,
            Item::Component { .. } => self.components += 1,
            Item::PluginVersion(_) => self.plugin_versions += 1,
            Item::Event { deliveries, .. } => {
                self.events += 1;
                self.deliveries += deliveries.len() as u64;
                self.attempts += deliveries.iter().map(|(_, a)| a.len() as u64).sum::<u64>();
            }
            Item::Meta { .. } | Item::Plugin { .. } | Item::Stats { .. } | Item::Last { .. } => {}
        }
    }

    /// The kinds whose counts differ, with both counts (`self`'s first).
    pub fn differences(&self, other: &Counts) -> Vec<String> {
        self.named()
            .iter()
            .zip(other.named())
            .filter(|((_, a), (_, b))| a != b)
            .map(|((name, a), (_, b))| format!("{name}: {a} and {b}"))
            .collect()
    }

    fn named(&self) -> [(&'static str, u64); 8] {
        [
            ("shops", self.shops),
            ("tokens", self.tokens),
            ("integrations", self.integrations),
            ("events", self.events),
            ("deliveries", self.deliveries),
            ("attempts", self.attempts),
            ("plugin versions", self.plugin_versions),
            ("components", self.components),
        ]
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .named()
            .iter()
            .map(|(name, n)| format!("{n} {name}"))
            .collect();
        f.write_str(&parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_name_what_differs() {
        let a = Counts {
            events: 3,
            attempts: 5,
            ..Counts::default()
        };
        let b = Counts {
            events: 3,
            attempts: 4,
            ..Counts::default()
        };
        assert_eq!(a.differences(&b), ["attempts: 5 and 4"]);
        assert!(a.differences(&a).is_empty());
        assert!(a.to_string().contains("3 events"));
    }
}
