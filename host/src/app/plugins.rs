//! Plugins (SPEC.md §6, §7): the installed plugins and their stored versions; uploading a
//! version, rolling back, deleting. Reading is open to every admin (a shop admin fills its
//! forms from a plugin's settings schema); changing is the platform's.
//!
//! An upload is compiled and checked (size, wasm, component, contract, world, `describe`)
//! before anything changes; a refused upload leaves the active version as it was. An accepted
//! one is stored as a new numbered version (with its digest) and activated atomically:
//! deliveries in flight finish on the version they started with. Plugin changes are
//! serialised, so the stored active version and the running one agree.

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::StatusCode;
use serde::Serialize;

use super::access::Caller;
use super::{App, AppError};
use crate::model::PluginVersion;
use crate::runtime::{Plugin, PluginInfo};

/// A plugin as the API shows it: what it describes (with its settings schema, for a form),
/// and which stored version is active.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PluginOut {
    #[serde(flatten)]
    pub info: PluginInfo,
    pub digest: String,
    pub size: usize,
    /// The contract version the component was built against (`0.1.0`, `0.2.0`).
    pub contract: &'static str,
    /// Linear memory one instance may hold, in bytes: the default or what it declared.
    pub memory_limit: usize,
    /// The active stored version's number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub number: Option<u32>,
    pub bundled: bool,
}

/// A stored version, and whether it is the active one.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VersionOut {
    #[serde(flatten)]
    pub version: PluginVersion,
    pub active: bool,
}

/// The stored version a running plugin came from (the latest with its digest).
fn stored_version<'a>(versions: &'a [PluginVersion], digest: &str) -> Option<&'a PluginVersion> {
    versions.iter().rev().find(|v| v.digest == digest)
}

/// Compiles and checks a component off the async threads; the reason goes back as a 422.
async fn compile(app: &App, bytes: Bytes) -> Result<Plugin, AppError> {
    let runtime = app.runtime.clone();
    tokio::task::spawn_blocking(move || runtime.load(&bytes))
        .await
        .map_err(|e| AppError::unprocessable("invalid_plugin", format!("the check was lost: {e}")))?
        .map_err(|e| AppError::unprocessable("invalid_plugin", e.to_string()))
}

async fn describe(app: &App, plugin: &Plugin) -> Result<PluginOut, AppError> {
    let versions = app.store.plugin_versions(plugin.id()).await?;
    let stored = stored_version(&versions, plugin.digest());
    Ok(PluginOut {
        info: plugin.info().clone(),
        digest: plugin.digest().to_owned(),
        size: plugin.size(),
        contract: plugin.contract(),
        memory_limit: plugin.memory_limit(),
        number: stored.map(|v| v.number),
        bundled: stored.is_some_and(|v| v.bundled),
    })
}

fn active(app: &App, id: &str) -> Result<Arc<Plugin>, AppError> {
    app.plugins
        .get(id)
        .ok_or_else(|| AppError::not_found("plugin"))
}

/// The active plugins.
pub async fn list(app: &App) -> Result<Vec<PluginOut>, AppError> {
    let mut plugins = Vec::new();
    for plugin in app.plugins.list() {
        plugins.push(describe(app, &plugin).await?);
    }
    Ok(plugins)
}

/// One active plugin.
pub async fn get(app: &App, id: &str) -> Result<PluginOut, AppError> {
    let plugin = active(app, id)?;
    describe(app, &plugin).await
}

/// Every stored version of a plugin, oldest first.
pub async fn versions(app: &App, id: &str) -> Result<Vec<VersionOut>, AppError> {
    let versions = app.store.plugin_versions(id).await?;
    if versions.is_empty() {
        return Err(AppError::not_found("plugin"));
    }
    let active_number = app
        .plugins
        .get(id)
        .and_then(|p| stored_version(&versions, p.digest()).map(|v| v.number));
    Ok(versions
        .into_iter()
        .map(|version| VersionOut {
            active: Some(version.number) == active_number,
            version,
        })
        .collect())
}

/// Loads or upgrades a plugin from component bytes: 201 for a new plugin, 200 for a new
/// version (or the same bytes again, which change nothing). With `expected`, the component
/// must describe itself as that plugin; without, it is whichever plugin it describes.
pub async fn upload(
    app: &App,
    caller: &Caller,
    expected: Option<&str>,
    bytes: Bytes,
) -> Result<(StatusCode, PluginOut), AppError> {
    caller.platform_only("upload plugins")?;
    let plugin = compile(app, bytes.clone()).await?;
    let id = expected.unwrap_or(plugin.id()).to_owned();
    let id = id.as_str();
    if plugin.id() != id {
        return Err(AppError::unprocessable(
            "plugin_id_mismatch",
            format!(
                "the component describes itself as `{}`, not `{id}`; upload it to /v1/plugins/{}",
                plugin.id(),
                plugin.id()
            ),
        ));
    }

    let _serialised = app.plugin_changes.lock().await;
    let previous = app.plugins.get(id);
    if let Some(previous) = &previous
        && previous.digest() == plugin.digest()
    {
        // The same component again: nothing to change.
        return Ok((StatusCode::OK, describe(app, previous).await?));
    }
    let stored = app
        .store
        .add_plugin_version(id, &plugin.info().version, false, &bytes, app.clock.now())
        .await?;
    let plugin = Arc::new(plugin);
    app.plugins.activate(plugin.clone());
    tracing::info!(plugin = %id, version = %stored.version, number = stored.number, digest = %stored.digest, "plugin activated");
    let status = if previous.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, describe(app, &plugin).await?))
}

/// Activates an earlier version: `number`, or the one before the active one.
pub async fn rollback(
    app: &App,
    caller: &Caller,
    id: &str,
    number: Option<u32>,
) -> Result<PluginOut, AppError> {
    caller.platform_only("roll plugins back")?;
    let _serialised = app.plugin_changes.lock().await;
    let versions = app.store.plugin_versions(id).await?;
    let current = active(app, id)?;
    let active_number = stored_version(&versions, current.digest()).map_or(u32::MAX, |v| v.number);
    let target = match number {
        Some(number) => versions
            .iter()
            .find(|v| v.number == number)
            .ok_or_else(|| AppError::not_found("plugin version"))?,
        None => versions
            .iter()
            .rev()
            .find(|v| v.number < active_number)
            .ok_or_else(|| {
                AppError::conflict(
                    "no_earlier_version",
                    format!("the plugin `{id}` has no version before the active one"),
                )
            })?,
    };
    let bytes = app
        .store
        .plugin_component(&target.digest)
        .await?
        .ok_or_else(|| AppError::not_found("plugin component"))?;
    let plugin = compile(app, Bytes::from(bytes)).await?;
    app.store.activate_plugin_version(id, target.number).await?;
    let plugin = Arc::new(plugin);
    app.plugins.activate(plugin.clone());
    tracing::info!(plugin = %id, number = target.number, version = %target.version, "plugin rolled back");
    describe(app, &plugin).await
}

/// Removes a plugin and its versions; refused (409) while integrations of any shop use it.
pub async fn delete(app: &App, caller: &Caller, id: &str) -> Result<(), AppError> {
    caller.platform_only("delete plugins")?;
    let _serialised = app.plugin_changes.lock().await;
    let users: Vec<String> = app
        .store
        .integrations(None)
        .await?
        .into_iter()
        .filter(|i| i.plugin == id)
        .map(|i| format!("{} ({}, shop {})", i.name, i.id, i.shop))
        .collect();
    if !users.is_empty() {
        return Err(AppError::conflict(
            "plugin_in_use",
            format!(
                "the plugin `{id}` is used by {} integration(s): {}; delete or move them first",
                users.len(),
                users.join(", ")
            ),
        ));
    }
    let was_active = app.plugins.remove(id).is_some();
    let was_stored = app.store.delete_plugin(id).await?;
    if !was_active && !was_stored {
        return Err(AppError::not_found("plugin"));
    }
    tracing::info!(plugin = %id, "plugin deleted");
    Ok(())
}
