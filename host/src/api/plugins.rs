//! Plugins (SPEC.md §6, §7): `GET /v1/plugins`, `GET /v1/plugins/{id}`,
//! `PUT /v1/plugins/{id}` (the component bytes, `application/wasm`),
//! `GET /v1/plugins/{id}/versions`, `POST /v1/plugins/{id}/rollback`, `DELETE /v1/plugins/{id}`.
//! Reading is open to every admin token (a shop admin fills forms from a plugin's settings
//! schema); changing is the platform admin's (403 otherwise). What each does is in
//! [`crate::app::plugins`].

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiPath, ErrorBody, read_body};
use crate::app::access::Caller;
use crate::app::plugins::{self as service, PluginOut, VersionOut};
use crate::app::{App, AppError};

pub fn router() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show, upload, remove))
        .routes(routes!(versions))
        .routes(routes!(rollback))
}

/// `POST …/rollback`: which version to return to (default: the one before the active one).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackIn {
    pub number: Option<u32>,
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
async fn list(State(app): State<App>) -> Result<Json<PluginList>, AppError> {
    Ok(Json(PluginList {
        plugins: service::list(&app).await?,
    }))
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
    State(app): State<App>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<PluginOut>, AppError> {
    Ok(Json(service::get(&app, &id).await?))
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
    State(app): State<App>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<VersionList>, AppError> {
    Ok(Json(VersionList {
        versions: service::versions(&app, &id).await?,
    }))
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
        (status = 403, description = "A shop's token: only the platform uploads plugins", body = ErrorBody),
        (status = 413, description = "Over the component size limit", body = ErrorBody),
        (status = 415, description = "Not application/wasm", body = ErrorBody),
        (status = 422, description = "Not a valid destination component (the reason), or another id", body = ErrorBody),
    )
)]
async fn upload(
    State(app): State<App>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<PluginOut>), AppError> {
    caller.platform_only("upload plugins")?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !matches!(
        content_type,
        "application/wasm" | "application/octet-stream"
    ) {
        return Err(AppError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the component bytes with `Content-Type: application/wasm`",
        ));
    }
    let limit = app.runtime.limits().component_ceiling();
    let too_large = (
        "plugin_too_large",
        format!("the component is over the limit of {limit} bytes"),
    );
    let bytes = read_body(body, limit, too_large).await?;
    let (status, plugin) = service::upload(&app, &caller, Some(&id), bytes).await?;
    Ok((status, Json(plugin)))
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
        (status = 403, description = "A shop's token: only the platform rolls plugins back", body = ErrorBody),
        (status = 404, description = "No such plugin or version", body = ErrorBody),
        (status = 409, description = "No version before the active one", body = ErrorBody),
    )
)]
async fn rollback(
    State(app): State<App>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    body: Body,
) -> Result<Json<PluginOut>, AppError> {
    caller.platform_only("roll plugins back")?;
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
                AppError::bad_request("invalid_json", format!("the body does not fit: {e}"))
            })?
            .number
    };
    Ok(Json(service::rollback(&app, &caller, &id, wanted).await?))
}

/// Remove a plugin and its versions.
#[utoipa::path(
    delete, path = "/v1/plugins/{id}", tag = "plugins",
    security(("admin_token" = [])),
    params(("id" = String, Path, description = "Plugin id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "No or wrong admin token", body = ErrorBody),
        (status = 403, description = "A shop's token: only the platform deletes plugins", body = ErrorBody),
        (status = 404, description = "No such plugin", body = ErrorBody),
        (status = 409, description = "Integrations use it", body = ErrorBody),
    )
)]
async fn remove(
    State(app): State<App>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, AppError> {
    service::delete(&app, &caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
