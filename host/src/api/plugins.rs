//! Plugins (SPEC.md §6, §7): `GET /v1/plugins`, `GET /v1/plugins/{id}`,
//! `PUT /v1/plugins/{id}` (the component bytes, `application/wasm`),
//! `GET /v1/plugins/{id}/versions`, `POST /v1/plugins/{id}/rollback`, `DELETE /v1/plugins/{id}`.
//!
//! An upload is compiled and checked (size, wasm, component, contract, world, `describe`)
//! before anything changes; a refused upload answers 413 or 422 with the reason and leaves the
//! active version as it was. An accepted one is stored as a new numbered version (with its
//! digest) and activated atomically: deliveries in flight finish on the version they started
//! with. Plugin changes are serialised, so the stored active version and the running one agree.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use axum::body::Bytes;

use super::{ApiError, ApiPath, ErrorBody, read_body};
use crate::runtime::{Plugin, PluginInfo};
use crate::server::AppState;
use crate::store::{PluginVersion, Timestamp};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show, upload, remove))
        .routes(routes!(versions))
        .routes(routes!(rollback))
}

/// A plugin as the API shows it: what it describes (with its settings schema, for a form),
/// and which stored version is active.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PluginOut {
    #[serde(flatten)]
    pub info: PluginInfo,
    pub digest: String,
    pub size: usize,
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

/// `POST …/rollback`: which version to return to (default: the one before the active one).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackIn {
    pub number: Option<u32>,
}

/// The stored version a running plugin came from (the latest with its digest).
fn stored_version<'a>(versions: &'a [PluginVersion], digest: &str) -> Option<&'a PluginVersion> {
    versions.iter().rev().find(|v| v.digest == digest)
}

/// Compiles and checks a component off the async threads; the reason goes back as a 422.
async fn compile(state: &AppState, bytes: Bytes) -> Result<Plugin, ApiError> {
    let runtime = state.runtime.clone();
    tokio::task::spawn_blocking(move || runtime.load(&bytes))
        .await
        .map_err(|e| ApiError::unprocessable("invalid_plugin", format!("the check was lost: {e}")))?
        .map_err(|e| ApiError::unprocessable("invalid_plugin", e.to_string()))
}

async fn describe(state: &AppState, plugin: &Plugin) -> Result<PluginOut, ApiError> {
    let versions = state.store.plugin_versions(plugin.id()).await?;
    let stored = stored_version(&versions, plugin.digest());
    Ok(PluginOut {
        info: plugin.info().clone(),
        digest: plugin.digest().to_owned(),
        size: plugin.size(),
        number: stored.map(|v| v.number),
        bundled: stored.is_some_and(|v| v.bundled),
    })
}

fn active(state: &AppState, id: &str) -> Result<Arc<Plugin>, ApiError> {
    state
        .plugins
        .get(id)
        .ok_or_else(|| ApiError::not_found("plugin"))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PluginList {
    pub plugins: Vec<PluginOut>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VersionList {
    /// Oldest first.
    pub versions: Vec<VersionOut>,
}

/// The active plugins.
#[utoipa::path(
    get, path = "/v1/plugins", tag = "plugins",
    security(("admin_token" = [])),
    responses(
        (status = 200, body = PluginList),
        (status = 401, description = "No or wrong admin token", body = ErrorBody),
    )
)]
async fn list(State(state): State<AppState>) -> Result<Json<PluginList>, ApiError> {
    let mut plugins = Vec::new();
    for plugin in state.plugins.list() {
        plugins.push(describe(&state, &plugin).await?);
    }
    Ok(Json(PluginList { plugins }))
}

/// One active plugin, with the schema of its settings and secrets.
#[utoipa::path(
    get, path = "/v1/plugins/{id}", tag = "plugins",
    security(("admin_token" = [])),
    params(("id" = String, Path, description = "Plugin id")),
    responses(
        (status = 200, body = PluginOut),
        (status = 401, description = "No or wrong admin token", body = ErrorBody),
        (status = 404, description = "No such plugin", body = ErrorBody),
    )
)]
async fn show(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<PluginOut>, ApiError> {
    let plugin = active(&state, &id)?;
    Ok(Json(describe(&state, &plugin).await?))
}

/// Every stored version of a plugin.
#[utoipa::path(
    get, path = "/v1/plugins/{id}/versions", tag = "plugins",
    security(("admin_token" = [])),
    params(("id" = String, Path, description = "Plugin id")),
    responses(
        (status = 200, body = VersionList),
        (status = 401, description = "No or wrong admin token", body = ErrorBody),
        (status = 404, description = "No such plugin", body = ErrorBody),
    )
)]
async fn versions(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<VersionList>, ApiError> {
    let versions = state.store.plugin_versions(&id).await?;
    if versions.is_empty() {
        return Err(ApiError::not_found("plugin"));
    }
    let active_number = state
        .plugins
        .get(&id)
        .and_then(|p| stored_version(&versions, p.digest()).map(|v| v.number));
    let versions: Vec<VersionOut> = versions
        .into_iter()
        .map(|version| VersionOut {
            active: Some(version.number) == active_number,
            version,
        })
        .collect();
    Ok(Json(VersionList { versions }))
}

/// Load or upgrade a plugin: checked, stored as a new version, activated atomically.
#[utoipa::path(
    put, path = "/v1/plugins/{id}", tag = "plugins",
    security(("admin_token" = [])),
    params(("id" = String, Path, description = "Plugin id; must be the id the component describes")),
    request_body(content = Vec<u8>, content_type = "application/wasm", description = "The component"),
    responses(
        (status = 201, description = "A new plugin, active", body = PluginOut),
        (status = 200, description = "A new version, active (or the same bytes again: unchanged)", body = PluginOut),
        (status = 401, description = "No or wrong admin token", body = ErrorBody),
        (status = 413, description = "Over the component size limit", body = ErrorBody),
        (status = 415, description = "Not application/wasm", body = ErrorBody),
        (status = 422, description = "Not a valid destination component (the reason), or another id", body = ErrorBody),
    )
)]
async fn upload(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<PluginOut>), ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !matches!(
        content_type,
        "application/wasm" | "application/octet-stream"
    ) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the component bytes with `Content-Type: application/wasm`",
        ));
    }
    let limit = state.runtime.limits().component_bytes;
    let too_large = (
        "plugin_too_large",
        format!("the component is over the limit of {limit} bytes"),
    );
    let bytes = read_body(body, limit, too_large).await?;
    let plugin = compile(&state, bytes.clone()).await?;
    if plugin.id() != id {
        return Err(ApiError::unprocessable(
            "plugin_id_mismatch",
            format!(
                "the component describes itself as `{}`, not `{id}`; upload it to /v1/plugins/{}",
                plugin.id(),
                plugin.id()
            ),
        ));
    }

    let _serialised = state.plugin_changes.lock().await;
    let previous = state.plugins.get(&id);
    if let Some(previous) = &previous
        && previous.digest() == plugin.digest()
    {
        // The same component again: nothing to change.
        return Ok((StatusCode::OK, Json(describe(&state, previous).await?)));
    }
    let stored = state
        .store
        .add_plugin_version(&id, &plugin.info().version, false, &bytes, Timestamp::now())
        .await?;
    let plugin = Arc::new(plugin);
    state.plugins.activate(plugin.clone());
    tracing::info!(plugin = %id, version = %stored.version, number = stored.number, digest = %stored.digest, "plugin activated");
    let status = if previous.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(describe(&state, &plugin).await?)))
}

/// Largest rollback body (`{"number": n}`).
const ROLLBACK_BODY_BYTES: usize = 4 << 10;

/// Activate an earlier version (by default the one before the active one).
#[utoipa::path(
    post, path = "/v1/plugins/{id}/rollback", tag = "plugins",
    security(("admin_token" = [])),
    params(("id" = String, Path, description = "Plugin id")),
    request_body(content = Option<RollbackIn>, description = "Optional: the version number to activate"),
    responses(
        (status = 200, body = PluginOut),
        (status = 400, description = "Bad JSON", body = ErrorBody),
        (status = 401, description = "No or wrong admin token", body = ErrorBody),
        (status = 404, description = "No such plugin or version", body = ErrorBody),
        (status = 409, description = "No version before the active one", body = ErrorBody),
    )
)]
async fn rollback(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    body: Body,
) -> Result<Json<PluginOut>, ApiError> {
    let too_large = (
        "body_too_large",
        "a rollback body is a few bytes".to_owned(),
    );
    let body = read_body(body, ROLLBACK_BODY_BYTES, too_large).await?;
    let wanted = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        serde_json::from_slice::<RollbackIn>(&body)
            .map_err(|e| {
                ApiError::bad_request("invalid_json", format!("the body does not fit: {e}"))
            })?
            .number
    };
    let _serialised = state.plugin_changes.lock().await;
    let versions = state.store.plugin_versions(&id).await?;
    let current = active(&state, &id)?;
    let active_number = stored_version(&versions, current.digest()).map_or(u32::MAX, |v| v.number);
    let target = match wanted {
        Some(number) => versions
            .iter()
            .find(|v| v.number == number)
            .ok_or_else(|| ApiError::not_found("plugin version"))?,
        None => versions
            .iter()
            .rev()
            .find(|v| v.number < active_number)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::CONFLICT,
                    "no_earlier_version",
                    format!("the plugin `{id}` has no version before the active one"),
                )
            })?,
    };
    let bytes = state
        .store
        .plugin_component(&target.digest)
        .await?
        .ok_or_else(|| ApiError::not_found("plugin component"))?;
    let plugin = compile(&state, Bytes::from(bytes)).await?;
    state
        .store
        .activate_plugin_version(&id, target.number)
        .await?;
    let plugin = Arc::new(plugin);
    state.plugins.activate(plugin.clone());
    tracing::info!(plugin = %id, number = target.number, version = %target.version, "plugin rolled back");
    Ok(Json(describe(&state, &plugin).await?))
}

/// Remove a plugin and its versions.
#[utoipa::path(
    delete, path = "/v1/plugins/{id}", tag = "plugins",
    security(("admin_token" = [])),
    params(("id" = String, Path, description = "Plugin id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "No or wrong admin token", body = ErrorBody),
        (status = 404, description = "No such plugin", body = ErrorBody),
        (status = 409, description = "Integrations use it", body = ErrorBody),
    )
)]
async fn remove(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let _serialised = state.plugin_changes.lock().await;
    let users: Vec<String> = state
        .store
        .integrations()
        .await?
        .into_iter()
        .filter(|i| i.plugin == id)
        .map(|i| format!("{} ({})", i.name, i.id))
        .collect();
    if !users.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "plugin_in_use",
            format!(
                "the plugin `{id}` is used by {} integration(s): {}; delete or move them first",
                users.len(),
                users.join(", ")
            ),
        ));
    }
    let was_active = state.plugins.remove(&id).is_some();
    let was_stored = state.store.delete_plugin(&id).await?;
    if !was_active && !was_stored {
        return Err(ApiError::not_found("plugin"));
    }
    tracing::info!(plugin = %id, "plugin deleted");
    Ok(StatusCode::NO_CONTENT)
}
