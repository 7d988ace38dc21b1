//! The active version of each plugin, by id. Activation swaps an `Arc` under a short write
//! lock: calls that already hold the old version finish on it, calls that look the plugin
//! up afterwards get the new one. Version history and persistence live in the store.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use super::plugin::Plugin;

#[derive(Default)]
pub struct PluginRegistry {
    active: RwLock<BTreeMap<String, Arc<Plugin>>>,
}

impl PluginRegistry {
    pub fn new() -> PluginRegistry {
        PluginRegistry::default()
    }

    /// Makes `plugin` the active version of its id; returns the version it replaced.
    pub fn activate(&self, plugin: Arc<Plugin>) -> Option<Arc<Plugin>> {
        plugin.set_retired(false);
        let previous = self
            .active
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(plugin.id().to_owned(), plugin);
        if let Some(previous) = &previous {
            previous.set_retired(true);
        }
        previous
    }

    /// The active version of a plugin.
    pub fn get(&self, id: &str) -> Option<Arc<Plugin>> {
        self.active
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// Every active plugin, by id.
    pub fn list(&self) -> Vec<Arc<Plugin>> {
        self.active
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Deactivates a plugin; calls in flight finish.
    pub fn remove(&self, id: &str) -> Option<Arc<Plugin>> {
        let removed = self
            .active
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        if let Some(plugin) = &removed {
            plugin.set_retired(true);
        }
        removed
    }
}
