//! Shops and their tokens (SPEC.md §8). Platform admins create, rename, list and delete
//! shops and manage their tokens; a shop admin may read its own shop.
//!
//! Deleting a shop with integrations is refused unless a cascade is asked for; a cascade
//! deletes them and ends their queued and paused work as failed ("the shop was deleted"),
//! kept in the log until the retention purge. The shop's id stays taken until then, so a new
//! shop can never inherit an old one's log. The `default` shop — where events without a
//! `shop` go — cannot be deleted.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::access::{Caller, new_token};
use super::{App, AppError};
use crate::model::{
    DEFAULT_SHOP, Shop, ShopDeletion, ShopToken, Timestamp, TokenKind, check_shop_id,
};

/// Longest shop name.
pub const MAX_NAME_CHARS: usize = 200;
/// Shops per page of the list, at most.
pub const MAX_PAGE: usize = 500;
/// The longest grace period of a rotation: a week is time enough to roll a token out.
pub const MAX_GRACE: Duration = Duration::from_secs(7 * 86_400);

/// A new shop.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShopIn {
    /// Lowercase letters, digits, `.` and `-` (such as its `*.myshopify.com` domain).
    pub id: String,
    pub name: String,
}

/// A new token, its text shown this once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NewToken {
    #[serde(flatten)]
    pub token: TokenOut,
    /// The token. It is not kept: store it now.
    pub secret: String,
}

/// A token as listed: never its text.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenOut {
    pub id: Uuid,
    pub shop: String,
    pub kind: TokenKind,
    /// Its last characters (`••••a1b2`).
    pub hint: String,
    pub created_at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<Timestamp>,
    /// After a rotation: the old token works until then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
}

impl From<ShopToken> for TokenOut {
    fn from(t: ShopToken) -> TokenOut {
        TokenOut {
            id: t.id,
            shop: t.shop,
            kind: t.kind,
            hint: t.hint,
            created_at: t.created_at,
            last_used_at: t.last_used_at,
            expires_at: t.expires_at,
        }
    }
}

fn check_name(name: &str) -> Result<String, AppError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(AppError::unprocessable(
            "invalid_name",
            format!("a shop name must be 1 to {MAX_NAME_CHARS} characters"),
        ));
    }
    Ok(name.to_owned())
}

pub async fn create(app: &App, caller: &Caller, input: ShopIn) -> Result<Shop, AppError> {
    caller.platform_only("create shops")?;
    check_shop_id(&input.id).map_err(|m| AppError::unprocessable("invalid_shop_id", m))?;
    let shop = Shop::new(&input.id, &check_name(&input.name)?, app.clock.now());
    if !app.store.create_shop(&shop).await? {
        let existing = app.store.shop(&input.id).await?;
        let message = match existing.and_then(|s| s.deleted_at) {
            Some(at) => format!(
                "the shop `{}` was deleted on {at}; its id is free again once the retention \
                 purge has removed its deliveries",
                input.id
            ),
            None => format!("there is already a shop `{}`", input.id),
        };
        return Err(AppError::conflict("shop_exists", message));
    }
    tracing::info!(shop = %shop.id, "shop created");
    Ok(shop)
}

pub async fn list(
    app: &App,
    caller: &Caller,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<Shop>, AppError> {
    caller.platform_only("list shops")?;
    Ok(app.store.shops(after, limit.clamp(1, MAX_PAGE)).await?)
}

pub async fn rename(app: &App, caller: &Caller, shop: &Shop, name: &str) -> Result<Shop, AppError> {
    caller.platform_only("rename shops")?;
    app.store
        .rename_shop(&shop.id, &check_name(name)?, app.clock.now())
        .await?
        .ok_or_else(|| AppError::not_found("shop"))
}

/// What a deletion did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Deleted {
    /// Integrations deleted with the shop.
    pub integrations: usize,
    /// Queued or paused deliveries ended as failed.
    pub ended_deliveries: usize,
}

pub async fn delete(
    app: &App,
    caller: &Caller,
    shop: &Shop,
    cascade: bool,
) -> Result<Deleted, AppError> {
    caller.platform_only("delete shops")?;
    if shop.id == DEFAULT_SHOP {
        return Err(AppError::conflict(
            "default_shop",
            "the default shop receives every event that names no shop; it cannot be deleted",
        ));
    }
    match app
        .store
        .delete_shop(&shop.id, cascade, app.clock.now())
        .await?
    {
        ShopDeletion::NotFound => Err(AppError::not_found("shop")),
        ShopDeletion::HasIntegrations(n) => Err(AppError::conflict(
            "shop_has_integrations",
            format!(
                "the shop `{}` has {n} integration(s); delete them first, or delete with \
                 `cascade=true`, which deletes them and ends their queued work as failed",
                shop.id
            ),
        )),
        ShopDeletion::Deleted {
            integrations,
            ended,
        } => {
            tracing::info!(shop = %shop.id, integrations, ended, "shop deleted");
            Ok(Deleted {
                integrations,
                ended_deliveries: ended,
            })
        }
    }
}

pub async fn tokens(app: &App, caller: &Caller, shop: &Shop) -> Result<Vec<ShopToken>, AppError> {
    caller.platform_only("manage shop tokens")?;
    let mut tokens = app.store.tokens(&shop.id).await?;
    tokens.sort_by_key(|t| t.created_at);
    Ok(tokens)
}

pub async fn create_token(
    app: &App,
    caller: &Caller,
    shop: &Shop,
    kind: TokenKind,
) -> Result<NewToken, AppError> {
    caller.platform_only("manage shop tokens")?;
    let (secret, token) = new_token(&shop.id, kind, app.clock.now());
    app.store.create_token(&token).await?;
    tracing::info!(shop = %shop.id, token = %token.id, ?kind, "shop token created");
    Ok(NewToken {
        token: token.into(),
        secret,
    })
}

pub async fn revoke_token(
    app: &App,
    caller: &Caller,
    shop: &Shop,
    id: Uuid,
) -> Result<(), AppError> {
    caller.platform_only("manage shop tokens")?;
    if !app.store.delete_token(&shop.id, id).await? {
        return Err(AppError::not_found("token"));
    }
    tracing::info!(shop = %shop.id, token = %id, "shop token revoked");
    Ok(())
}

/// Replaces a token with a new one of the same kind; the old one works for `grace` more
/// (zero: it stops at once).
pub async fn rotate_token(
    app: &App,
    caller: &Caller,
    shop: &Shop,
    id: Uuid,
    grace: Duration,
) -> Result<NewToken, AppError> {
    caller.platform_only("manage shop tokens")?;
    if grace > MAX_GRACE {
        return Err(AppError::unprocessable(
            "invalid_grace",
            format!(
                "the grace period is at most {} seconds",
                MAX_GRACE.as_secs()
            ),
        ));
    }
    let now = app.clock.now();
    let old = app
        .store
        .tokens(&shop.id)
        .await?
        .into_iter()
        .find(|t| t.id == id && t.is_valid_at(now))
        .ok_or_else(|| AppError::not_found("token"))?;
    let (secret, token) = new_token(&shop.id, old.kind, now);
    app.store.create_token(&token).await?;
    if grace.is_zero() {
        app.store.delete_token(&shop.id, id).await?;
    } else {
        let until = now.saturating_add(grace);
        app.store
            .update_token(
                &shop.id,
                id,
                Box::new(move |t: &mut ShopToken| t.expires_at = Some(until)),
            )
            .await?;
    }
    tracing::info!(shop = %shop.id, old = %id, new = %token.id, grace_seconds = grace.as_secs(), "shop token rotated");
    Ok(NewToken {
        token: token.into(),
        secret,
    })
}
