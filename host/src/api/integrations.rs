//! A shop's integrations (SPEC.md §7, §8): `GET|POST /v1/shops/{shop}/integrations`,
//! `GET|PATCH|DELETE /v1/shops/{shop}/integrations/{id}`, `POST …/{id}/test`, and health:
//! `GET …/{id}/health`, `GET /v1/shops/{shop}/health`. What each does is in
//! [`crate::app::integrations`].

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiJson, ApiPath, ApiQuery, ErrorBody, ShopScope};
use crate::app::deliveries::parse_id;
use crate::app::integrations::{
    self as service, IntegrationIn, IntegrationOut, IntegrationPatch, Tested,
};
use crate::app::{App, AppError};
use crate::model::IntegrationHealth;

pub fn router() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, update, remove))
        .routes(routes!(test))
        .routes(routes!(health))
        .routes(routes!(shop_health))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IntegrationList {
    pub integrations: Vec<IntegrationOut>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HealthList {
    /// One per integration, in the order they were created.
    pub integrations: Vec<IntegrationHealth>,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TestQuery {
    /// The event type to send (default: the first subscribed type).
    pub event: Option<String>,
}

/// Create an integration.
#[utoipa::path(
    post, path = "/v1/shops/{shop}/integrations", tag = "integrations",
    security(("admin_token" = [])),
    params(("shop" = String, Path, description = "Shop id (`-`: the caller's own)")),
    request_body = IntegrationIn,
    responses(
        (status = 201, description = "Created; secrets shown as hints only", body = IntegrationOut),
        (status = 400, description = "Bad JSON", body = ErrorBody),
        (status = 401, description = "No or wrong admin token", body = ErrorBody),
        (status = 404, description = "No such shop", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Unknown plugin, event type or secret, or settings the plugin refuses (its message)", body = ErrorBody),
    )
)]
async fn create(
    State(app): State<App>,
    ShopScope(shop): ShopScope,
    ApiJson(input): ApiJson<IntegrationIn>,
) -> Result<(StatusCode, Json<IntegrationOut>), AppError> {
    let saved = service::create(&app, &shop, input).await?;
    Ok((StatusCode::CREATED, Json(saved.into())))
}

/// A shop's integrations.
#[utoipa::path(
    get, path = "/v1/shops/{shop}/integrations", tag = "integrations",
    security(("admin_token" = [])),
    params(("shop" = String, Path, description = "Shop id (`-`: the caller's own)")),
    responses(
        (status = 200, body = IntegrationList),
        (status = 401, description = "No or wrong admin token", body = ErrorBody),
        (status = 404, description = "No such shop", body = ErrorBody),
    )
)]
async fn list(
    State(app): State<App>,
    ShopScope(shop): ShopScope,
) -> Result<Json<IntegrationList>, AppError> {
    let integrations = service::list(&app, &shop)
        .await?
        .into_iter()
        .map(IntegrationOut::from)
        .collect();
    Ok(Json(IntegrationList { integrations }))
}

/// One integration.
#[utoipa::path(
    get, path = "/v1/shops/{shop}/integrations/{id}", tag = "integrations",
    security(("admin_token" = [])),
    params(
        ("shop" = String, Path, description = "Shop id (`-`: the caller's own)"),
        ("id" = Uuid, Path, description = "Integration id"),
    ),
    responses(
        (status = 200, body = IntegrationOut),
        (status = 400, description = "Not an id", body = ErrorBody),
        (status = 401, description = "No or wrong admin token", body = ErrorBody),
        (status = 404, description = "No such shop or integration", body = ErrorBody),
    )
)]
async fn show(
    State(app): State<App>,
    ShopScope(shop): ShopScope,
    ApiPath((_, id)): ApiPath<(String, String)>,
) -> Result<Json<IntegrationOut>, AppError> {
    let integration = service::get(&app, &shop, parse_id(&id)?).await?;
    Ok(Json(integration.into()))
}

/// Change an integration: only the fields given. `enabled: true` sends its paused deliveries.
#[utoipa::path(
    patch, path = "/v1/shops/{shop}/integrations/{id}", tag = "integrations",
    security(("admin_token" = [])),
    params(
        ("shop" = String, Path, description = "Shop id (`-`: the caller's own)"),
        ("id" = Uuid, Path, description = "Integration id"),
    ),
    request_body = IntegrationPatch,
    responses(
        (status = 200, body = IntegrationOut),
        (status = 400, description = "Bad JSON or id", body = ErrorBody),
        (status = 401, description = "No or wrong admin token", body = ErrorBody),
        (status = 404, description = "No such shop or integration", body = ErrorBody),
        (status = 422, description = "The result would not be valid (the plugin's message)", body = ErrorBody),
    )
)]
async fn update(
    State(app): State<App>,
    ShopScope(shop): ShopScope,
    ApiPath((_, id)): ApiPath<(String, String)>,
    ApiJson(patch): ApiJson<IntegrationPatch>,
) -> Result<Json<IntegrationOut>, AppError> {
    let saved = service::update(&app, &shop, parse_id(&id)?, patch).await?;
    Ok(Json(saved.into()))
}

/// Delete an integration; its delivery log is kept, its queued and paused work ends failed.
#[utoipa::path(
    delete, path = "/v1/shops/{shop}/integrations/{id}", tag = "integrations",
    security(("admin_token" = [])),
    params(
        ("shop" = String, Path, description = "Shop id (`-`: the caller's own)"),
        ("id" = Uuid, Path, description = "Integration id"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Not an id", body = ErrorBody),
        (status = 401, description = "No or wrong admin token", body = ErrorBody),
        (status = 404, description = "No such shop or integration", body = ErrorBody),
    )
)]
async fn remove(
    State(app): State<App>,
    ShopScope(shop): ShopScope,
    ApiPath((_, id)): ApiPath<(String, String)>,
) -> Result<StatusCode, AppError> {
    service::delete(&app, &shop, parse_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Send a sample event now, through the real plugin and network path; nothing is stored.
#[utoipa::path(
    post, path = "/v1/shops/{shop}/integrations/{id}/test", tag = "integrations",
    security(("admin_token" = [])),
    params(
        ("shop" = String, Path, description = "Shop id (`-`: the caller's own)"),
        ("id" = Uuid, Path, description = "Integration id"),
        TestQuery,
    ),
    responses(
        (status = 200, description = "The outcome, the request as sent (secrets redacted) and the response excerpt", body = Tested),
        (status = 400, description = "Bad id or event type", body = ErrorBody),
        (status = 401, description = "No or wrong admin token", body = ErrorBody),
        (status = 404, description = "No such shop or integration", body = ErrorBody),
        (status = 422, description = "The integration does not take that event type", body = ErrorBody),
    )
)]
async fn test(
    State(app): State<App>,
    ShopScope(shop): ShopScope,
    ApiPath((_, id)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<TestQuery>,
) -> Result<Json<Tested>, AppError> {
    let tested = service::test(&app, &shop, parse_id(&id)?, query.event.as_deref()).await?;
    Ok(Json(tested))
}

/// How an integration is doing: its last hour and day (attempts, failures, success rate,
/// p50/p95 duration), last success and failure, its queue, the day hour by hour.
#[utoipa::path(
    get, path = "/v1/shops/{shop}/integrations/{id}/health", tag = "integrations",
    security(("admin_token" = [])),
    params(
        ("shop" = String, Path, description = "Shop id (`-`: the caller's own)"),
        ("id" = Uuid, Path, description = "Integration id"),
    ),
    responses(
        (status = 200, body = IntegrationHealth),
        (status = 400, description = "Not an id", body = ErrorBody),
        (status = 401, description = "No or wrong admin token", body = ErrorBody),
        (status = 404, description = "No such shop or integration", body = ErrorBody),
    )
)]
async fn health(
    State(app): State<App>,
    ShopScope(shop): ShopScope,
    ApiPath((_, id)): ApiPath<(String, String)>,
) -> Result<Json<IntegrationHealth>, AppError> {
    Ok(Json(service::health(&app, &shop, parse_id(&id)?).await?))
}

/// The health of every integration of a shop.
#[utoipa::path(
    get, path = "/v1/shops/{shop}/health", tag = "integrations",
    security(("admin_token" = [])),
    params(("shop" = String, Path, description = "Shop id (`-`: the caller's own)")),
    responses(
        (status = 200, body = HealthList),
        (status = 401, description = "No or wrong admin token", body = ErrorBody),
        (status = 404, description = "No such shop", body = ErrorBody),
    )
)]
async fn shop_health(
    State(app): State<App>,
    ShopScope(shop): ShopScope,
) -> Result<Json<HealthList>, AppError> {
    Ok(Json(HealthList {
        integrations: service::shop_health(&app, &shop).await?,
    }))
}
