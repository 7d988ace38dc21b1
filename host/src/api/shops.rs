//! Shops and their tokens (SPEC.md §8): `GET|POST /v1/shops`,
//! `GET|PATCH|DELETE /v1/shops/{shop}` (`?cascade=true` deletes its integrations too),
//! `GET|POST /v1/shops/{shop}/tokens`, `DELETE /v1/shops/{shop}/tokens/{token}`,
//! `POST /v1/shops/{shop}/tokens/{token}/rotate`. The platform admin token manages them all;
//! a shop admin token may read its own shop. What each does is in [`crate::app::shops`].

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiJson, ApiPath, ApiQuery, ErrorBody, ShopScope};
use crate::app::access::Caller;
use crate::app::deliveries::parse_id;
use crate::app::shops::{self as service, Deleted, NewToken, ShopIn, TokenOut};
use crate::app::{App, AppError};
use crate::model::{Shop, TokenKind};

pub fn router() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, rename, remove))
        .routes(routes!(tokens, create_token))
        .routes(routes!(revoke_token))
        .routes(routes!(rotate_token))
        .routes(routes!(create_sign_in_link))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ShopList {
    /// By id.
    pub shops: Vec<Shop>,
    /// Pass as `after` for the next page; absent on the last one.
    pub next_after: Option<String>,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ShopListQuery {
    /// The `next_after` of the previous page.
    pub after: Option<String>,
    /// Page size, 1 to 500 (default 100).
    pub limit: Option<usize>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShopPatch {
    pub name: String,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// Delete its integrations too, ending their queued and paused work as failed.
    #[serde(default)]
    pub cascade: bool,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenIn {
    /// `admin` (the shop's integrations and log) or `ingest` (its events).
    pub kind: TokenKind,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateIn {
    /// How long the old token keeps working, in seconds (0, the default: it stops now; at
    /// most a week).
    #[serde(default)]
    pub grace_seconds: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenList {
    /// Oldest first; never the tokens themselves.
    pub tokens: Vec<TokenOut>,
}

/// Every shop (platform admin).
#[utoipa::path(
    get, path = "/v1/shops", tag = "shops",
    security(("admin_token" = [])),
    params(ShopListQuery),
    responses(
        (status = 200, body = ShopList),
        (status = 401, description = "No or wrong admin token", body = ErrorBody),
        (status = 403, description = "A shop's token", body = ErrorBody),
    )
)]
async fn list(
    State(app): State<App>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ShopListQuery>,
) -> Result<Json<ShopList>, AppError> {
    let limit = query.limit.unwrap_or(100);
    let shops = service::list(&app, &caller, query.after.as_deref(), limit).await?;
    let next_after = (shops.len() == limit.clamp(1, service::MAX_PAGE))
        .then(|| shops.last().map(|s| s.id.clone()))
        .flatten();
    Ok(Json(ShopList { shops, next_after }))
}

/// Create a shop (platform admin).
#[utoipa::path(
    post, path = "/v1/shops", tag = "shops",
    security(("admin_token" = [])),
    request_body = ShopIn,
    responses(
        (status = 201, body = Shop),
        (status = 400, description = "Bad JSON", body = ErrorBody),
        (status = 401, description = "No or wrong admin token", body = ErrorBody),
        (status = 403, description = "A shop's token", body = ErrorBody),
        (status = 409, description = "The id is taken", body = ErrorBody),
        (status = 422, description = "Not a shop id, or no name", body = ErrorBody),
    )
)]
async fn create(
    State(app): State<App>,
    caller: Caller,
    ApiJson(input): ApiJson<ShopIn>,
) -> Result<(StatusCode, Json<Shop>), AppError> {
    let shop = service::create(&app, &caller, input).await?;
    Ok((StatusCode::CREATED, Json(shop)))
}

/// One shop (a shop admin token reads its own).
#[utoipa::path(
    get, path = "/v1/shops/{shop}", tag = "shops",
    security(("admin_token" = [])),
    params(("shop" = String, Path, description = "Shop id (`-`: the caller's own)")),
    responses(
        (status = 200, body = Shop),
        (status = 401, description = "No or wrong admin token", body = ErrorBody),
        (status = 404, description = "No such shop", body = ErrorBody),
    )
)]
async fn show(ShopScope(shop): ShopScope) -> Json<Shop> {
    Json(shop)
}

/// Rename a shop (platform admin).
#[utoipa::path(
    patch, path = "/v1/shops/{shop}", tag = "shops",
    security(("admin_token" = [])),
    params(("shop" = String, Path, description = "Shop id")),
    request_body = ShopPatch,
    responses(
        (status = 200, body = Shop),
        (status = 401, description = "No or wrong admin token", body = ErrorBody),
        (status = 403, description = "A shop's token", body = ErrorBody),
        (status = 404, description = "No such shop", body = ErrorBody),
        (status = 422, description = "No name, or too long", body = ErrorBody),
    )
)]
async fn rename(
    State(app): State<App>,
    caller: Caller,
    ShopScope(shop): ShopScope,
    ApiJson(patch): ApiJson<ShopPatch>,
) -> Result<Json<Shop>, AppError> {
    Ok(Json(
        service::rename(&app, &caller, &shop, &patch.name).await?,
    ))
}

/// Delete a shop (platform admin); with integrations only when `cascade=true`.
#[utoipa::path(
    delete, path = "/v1/shops/{shop}", tag = "shops",
    security(("admin_token" = [])),
    params(("shop" = String, Path, description = "Shop id"), DeleteQuery),
    responses(
        (status = 200, description = "Deleted; what went with it", body = Deleted),
        (status = 401, description = "No or wrong admin token", body = ErrorBody),
        (status = 403, description = "A shop's token", body = ErrorBody),
        (status = 404, description = "No such shop", body = ErrorBody),
        (status = 409, description = "It has integrations and no cascade was asked, or it is the default shop", body = ErrorBody),
    )
)]
async fn remove(
    State(app): State<App>,
    caller: Caller,
    ShopScope(shop): ShopScope,
    ApiQuery(query): ApiQuery<DeleteQuery>,
) -> Result<Json<Deleted>, AppError> {
    Ok(Json(
        service::delete(&app, &caller, &shop, query.cascade).await?,
    ))
}

/// A shop's tokens, by hint (platform admin).
#[utoipa::path(
    get, path = "/v1/shops/{shop}/tokens", tag = "shops",
    security(("admin_token" = [])),
    params(("shop" = String, Path, description = "Shop id")),
    responses(
        (status = 200, body = TokenList),
        (status = 401, description = "No or wrong admin token", body = ErrorBody),
        (status = 403, description = "A shop's token", body = ErrorBody),
        (status = 404, description = "No such shop", body = ErrorBody),
    )
)]
async fn tokens(
    State(app): State<App>,
    caller: Caller,
    ShopScope(shop): ShopScope,
) -> Result<Json<TokenList>, AppError> {
    let tokens = service::tokens(&app, &caller, &shop)
        .await?
        .into_iter()
        .map(TokenOut::from)
        .collect();
    Ok(Json(TokenList { tokens }))
}

/// Create a shop token, shown this once (platform admin).
#[utoipa::path(
    post, path = "/v1/shops/{shop}/tokens", tag = "shops",
    security(("admin_token" = [])),
    params(("shop" = String, Path, description = "Shop id")),
    request_body = TokenIn,
    responses(
        (status = 201, body = NewToken),
        (status = 400, description = "Bad JSON", body = ErrorBody),
        (status = 401, description = "No or wrong admin token", body = ErrorBody),
        (status = 403, description = "A shop's token", body = ErrorBody),
        (status = 404, description = "No such shop", body = ErrorBody),
    )
)]
async fn create_token(
    State(app): State<App>,
    caller: Caller,
    ShopScope(shop): ShopScope,
    ApiJson(input): ApiJson<TokenIn>,
) -> Result<(StatusCode, Json<NewToken>), AppError> {
    let token = service::create_token(&app, &caller, &shop, input.kind).await?;
    Ok((StatusCode::CREATED, Json(token)))
}

/// Revoke a shop token at once (platform admin).
#[utoipa::path(
    delete, path = "/v1/shops/{shop}/tokens/{token}", tag = "shops",
    security(("admin_token" = [])),
    params(
        ("shop" = String, Path, description = "Shop id"),
        ("token" = Uuid, Path, description = "Token id"),
    ),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "No or wrong admin token", body = ErrorBody),
        (status = 403, description = "A shop's token", body = ErrorBody),
        (status = 404, description = "No such shop or token", body = ErrorBody),
    )
)]
async fn revoke_token(
    State(app): State<App>,
    caller: Caller,
    ShopScope(shop): ShopScope,
    ApiPath((_, token)): ApiPath<(String, String)>,
) -> Result<StatusCode, AppError> {
    service::revoke_token(&app, &caller, &shop, parse_id(&token)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Replace a shop token with a new one, shown this once; the old one works for the grace
/// period (platform admin).
#[utoipa::path(
    post, path = "/v1/shops/{shop}/tokens/{token}/rotate", tag = "shops",
    security(("admin_token" = [])),
    params(
        ("shop" = String, Path, description = "Shop id"),
        ("token" = Uuid, Path, description = "Token id"),
    ),
    request_body(content = Option<RotateIn>, description = "Optional: the grace period"),
    responses(
        (status = 201, body = NewToken),
        (status = 401, description = "No or wrong admin token", body = ErrorBody),
        (status = 403, description = "A shop's token", body = ErrorBody),
        (status = 404, description = "No such shop or token", body = ErrorBody),
        (status = 422, description = "A grace period over a week", body = ErrorBody),
    )
)]
async fn rotate_token(
    State(app): State<App>,
    caller: Caller,
    ShopScope(shop): ShopScope,
    ApiPath((_, token)): ApiPath<(String, String)>,
    body: axum::body::Body,
) -> Result<(StatusCode, Json<NewToken>), AppError> {
    let rotate: RotateIn = optional_json(body).await?;
    let grace = Duration::from_secs(rotate.grace_seconds);
    let token = service::rotate_token(&app, &caller, &shop, parse_id(&token)?, grace).await?;
    Ok((StatusCode::CREATED, Json(token)))
}

/// A small JSON body that may be left out (or empty): its default then.
async fn optional_json<T: Default + serde::de::DeserializeOwned>(
    body: axum::body::Body,
) -> Result<T, AppError> {
    let body = super::read_body(
        body,
        4 << 10,
        ("body_too_large", "this body is a few bytes".into()),
    )
    .await?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&body)
        .map_err(|e| AppError::bad_request("invalid_json", format!("the body does not fit: {e}")))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignInLinkIn {
    /// How long the link can be used, 1 to 3600 seconds (default 300).
    pub expires_in_seconds: Option<u64>,
}

/// A sign-in link to the shop's pages of the admin UI, for one sign-in within its lifetime
/// (the platform admin token for any shop, a shop admin token for its own).
#[utoipa::path(
    post, path = "/v1/shops/{shop}/sign-in-links", tag = "shops",
    security(("admin_token" = [])),
    params(("shop" = String, Path, description = "Shop id")),
    request_body(content = Option<SignInLinkIn>, description = "Optional: the link's lifetime"),
    responses(
        (status = 201, body = crate::app::sign_in::SignInLink),
        (status = 401, description = "No or wrong admin token", body = ErrorBody),
        (status = 404, description = "No such shop", body = ErrorBody),
        (status = 422, description = "A lifetime out of bounds", body = ErrorBody),
    )
)]
async fn create_sign_in_link(
    State(app): State<App>,
    caller: Caller,
    ShopScope(shop): ShopScope,
    body: axum::body::Body,
) -> Result<(StatusCode, Json<crate::app::sign_in::SignInLink>), AppError> {
    let input: SignInLinkIn = optional_json(body).await?;
    let lifetime = input.expires_in_seconds.map(Duration::from_secs);
    let link = crate::app::sign_in::create_link(&app, &caller, &shop, lifetime)?;
    Ok((StatusCode::CREATED, Json(link)))
}
