//! A shop's delivery log (SPEC.md §4, §7): `GET /v1/shops/{shop}/deliveries` with the log's
//! filters and cursor pagination, newest first; `GET …/deliveries/{id}` with every attempt
//! (`attempts` is then the list, not the count); `POST …/deliveries/{id}/retry`;
//! `POST …/deliveries/retry?<filters>` (bulk). What each does is in
//! [`crate::app::deliveries`].

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiPath, ApiQuery, ErrorBody, ShopScope};
use crate::app::deliveries::{
    self as service, BulkRequeued, DeliveryDetailOut, DeliveryPage, ListQuery, Requeued, parse_id,
};
use crate::app::{App, AppError};

pub fn router() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(retry_matching))
        .routes(routes!(show))
        .routes(routes!(retry))
}

/// The shop's delivery log, newest first.
#[utoipa::path(
    get, path = "/v1/shops/{shop}/deliveries", tag = "deliveries",
    security(("admin_token" = [])),
    params(("shop" = String, Path, description = "Shop id (`-`: the caller's own)"), ListQuery),
    responses(
        (status = 200, body = DeliveryPage),
        (status = 400, description = "A filter that cannot be read", body = ErrorBody),
        (status = 401, description = "No or wrong admin token", body = ErrorBody),
        (status = 404, description = "No such shop", body = ErrorBody),
    )
)]
async fn list(
    State(app): State<App>,
    ShopScope(shop): ShopScope,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<DeliveryPage>, AppError> {
    Ok(Json(service::list(&app, &shop, &query).await?))
}

/// One delivery with every attempt.
#[utoipa::path(
    get, path = "/v1/shops/{shop}/deliveries/{id}", tag = "deliveries",
    security(("admin_token" = [])),
    params(
        ("shop" = String, Path, description = "Shop id (`-`: the caller's own)"),
        ("id" = Uuid, Path, description = "Delivery id"),
    ),
    responses(
        (status = 200, body = DeliveryDetailOut),
        (status = 400, description = "Not an id", body = ErrorBody),
        (status = 401, description = "No or wrong admin token", body = ErrorBody),
        (status = 404, description = "No such shop or delivery", body = ErrorBody),
    )
)]
async fn show(
    State(app): State<App>,
    ShopScope(shop): ShopScope,
    ApiPath((_, id)): ApiPath<(String, String)>,
) -> Result<Json<DeliveryDetailOut>, AppError> {
    let detail = service::get(&app, &shop, parse_id(&id)?).await?;
    Ok(Json(detail.into()))
}

/// Queue a failed or exhausted delivery again.
#[utoipa::path(
    post, path = "/v1/shops/{shop}/deliveries/{id}/retry", tag = "deliveries",
    security(("admin_token" = [])),
    params(
        ("shop" = String, Path, description = "Shop id (`-`: the caller's own)"),
        ("id" = Uuid, Path, description = "Delivery id"),
    ),
    responses(
        (status = 202, description = "Queued; it goes out at once", body = Requeued),
        (status = 400, description = "Not an id", body = ErrorBody),
        (status = 401, description = "No or wrong admin token", body = ErrorBody),
        (status = 404, description = "No such shop or delivery", body = ErrorBody),
        (status = 409, description = "Not failed or exhausted (already queued, or delivered)", body = ErrorBody),
    )
)]
async fn retry(
    State(app): State<App>,
    ShopScope(shop): ShopScope,
    ApiPath((_, id)): ApiPath<(String, String)>,
) -> Result<(StatusCode, Json<Requeued>), AppError> {
    let requeued = service::retry(&app, &shop, parse_id(&id)?).await?;
    Ok((StatusCode::ACCEPTED, Json(requeued)))
}

/// Queue again every failed or exhausted delivery of the shop the filters match.
#[utoipa::path(
    post, path = "/v1/shops/{shop}/deliveries/retry", tag = "deliveries",
    security(("admin_token" = [])),
    params(("shop" = String, Path, description = "Shop id (`-`: the caller's own)"), ListQuery),
    responses(
        (status = 200, body = BulkRequeued),
        (status = 400, description = "A filter that cannot be read, or a status that cannot be retried", body = ErrorBody),
        (status = 401, description = "No or wrong admin token", body = ErrorBody),
        (status = 404, description = "No such shop", body = ErrorBody),
    )
)]
async fn retry_matching(
    State(app): State<App>,
    ShopScope(shop): ShopScope,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<BulkRequeued>, AppError> {
    Ok(Json(service::retry_matching(&app, &shop, &query).await?))
}
