//! The destination plugins shipped inside the binary — Klaviyo, Omnisend, Shopify Flow and
//! the generic webhook — built from `plugins/` by `host/build.rs`.

use std::sync::Arc;

use super::{LoadError, Plugin, PluginRegistry, Runtime};

include!(concat!(env!("OUT_DIR"), "/bundled.rs"));

/// The component bytes of a bundled plugin, by plugin id (`klaviyo`, `omnisend`,
/// `shopify-flow`, `webhook`).
pub fn component(id: &str) -> Option<&'static [u8]> {
    let package = format!("canopy-plugin-{id}");
    BUNDLED
        .iter()
        .find(|(name, _)| *name == package)
        .map(|(_, bytes)| *bytes)
}

/// Every bundled plugin: its id and component bytes.
pub fn components() -> impl Iterator<Item = (&'static str, &'static [u8])> {
    BUNDLED.iter().map(|(package, bytes)| {
        let id = package.strip_prefix("canopy-plugin-").unwrap_or(package);
        (id, *bytes)
    })
}

/// Compiles every bundled plugin and activates it; returns them in bundle order.
pub fn install(
    runtime: &Runtime,
    registry: &PluginRegistry,
) -> Result<Vec<Arc<Plugin>>, LoadError> {
    BUNDLED
        .iter()
        .map(|(_, bytes)| {
            let plugin = Arc::new(runtime.load(bytes)?);
            registry.activate(plugin.clone());
            Ok(plugin)
        })
        .collect()
}
