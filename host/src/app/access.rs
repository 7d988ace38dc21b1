//! Who is calling, and what they may reach (SPEC.md §8).
//!
//! | credential | opens |
//! | --- | --- |
//! | the platform admin token (configured) | everything: shops and their tokens, plugins, every shop's integrations and log |
//! | the ingest token (configured) | `POST /v1/events`, for any shop |
//! | a shop admin token | that shop's integrations, Test, deliveries, retries, health; the plugin list, read-only |
//! | a shop ingest token | `POST /v1/events`, for that shop's events only |
//!
//! Another shop's resources do not exist for a shop token: naming another shop answers 404
//! exactly as an unknown shop does. What a shop token may never do at all (uploading a
//! plugin, managing shops or tokens) answers 403. Shop tokens are random, shown once, and
//! kept only as their SHA-256 (a token is 32 random bytes, so a plain hash cannot be
//! reversed); they can be listed by hint, revoked, and rotated with a grace period during
//! which the old one still works.

use std::time::Duration;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::{App, AppError};
use crate::crypto::seal::random_bytes;
use crate::model::{DEFAULT_SHOP, Shop, ShopToken, Timestamp, TokenKind};

/// In a path, the caller's own shop: a shop token's, or `default` for the platform's.
pub const OWN_SHOP: &str = "-";

/// A token's last use is written at most this often (a busy ingest token would otherwise
/// write on every request).
const LAST_USED_EVERY: Duration = Duration::from_secs(60);

/// Who is calling, from the bearer token they presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The platform admin token.
    Platform,
    /// The platform's ingest token.
    Ingest,
    /// A shop's own token.
    Shop {
        shop: String,
        kind: TokenKind,
        token: Uuid,
    },
}

impl Caller {
    /// Whether it may use the admin routes at all (the platform, or a shop's admin token).
    pub fn administers(&self) -> bool {
        matches!(
            self,
            Caller::Platform
                | Caller::Shop {
                    kind: TokenKind::Admin,
                    ..
                }
        )
    }

    /// Whether it may post events.
    pub fn ingests(&self) -> bool {
        matches!(
            self,
            Caller::Ingest
                | Caller::Shop {
                    kind: TokenKind::Ingest,
                    ..
                }
        )
    }

    /// Refuses anyone but the platform (403): `doing` says what was refused.
    pub fn platform_only(&self, doing: &str) -> Result<(), AppError> {
        match self {
            Caller::Platform => Ok(()),
            _ => Err(AppError::forbidden(format!(
                "only the platform admin token can {doing}"
            ))),
        }
    }

    /// The shop a path names, as this caller may see it ([`OWN_SHOP`] is the caller's own):
    /// 404 for a shop that does not exist, is deleted, or is another shop than a shop
    /// token's own — the same answer, so a shop token learns nothing of other shops.
    pub async fn shop(&self, app: &App, named: &str) -> Result<Shop, AppError> {
        let id = match (self, named) {
            (Caller::Shop { shop, .. }, OWN_SHOP) => shop.as_str(),
            (_, OWN_SHOP) => DEFAULT_SHOP,
            (Caller::Shop { shop, .. }, named) if shop != named => {
                return Err(AppError::not_found("shop"));
            }
            (_, named) => named,
        };
        app.store
            .shop(id)
            .await?
            .filter(|s| !s.is_deleted())
            .ok_or_else(|| AppError::not_found("shop"))
    }

    /// The shop an event goes to: the one it names, else the token's own shop (`default` for
    /// the platform's ingest token). A shop's ingest token posts only its own shop's events
    /// (403 otherwise, whether or not the other shop exists).
    pub fn event_shop(&self, named: Option<&str>) -> Result<String, AppError> {
        match (self, named) {
            (Caller::Shop { shop, .. }, Some(named)) if shop != named => Err(AppError::forbidden(
                format!("this ingest token posts only events of the shop `{shop}`"),
            )),
            (Caller::Shop { shop, .. }, _) => Ok(shop.clone()),
            (_, Some(named)) => Ok(named.to_owned()),
            (_, None) => Ok(DEFAULT_SHOP.to_owned()),
        }
    }
}

/// The caller a bearer token stands for, if any. The platform's tokens are compared in
/// constant time; a shop token is found by its hash.
pub async fn authenticate(app: &App, presented: &str) -> Result<Option<Caller>, AppError> {
    let same = |expected: &str| bool::from(presented.as_bytes().ct_eq(expected.as_bytes()));
    if same(app.tokens.admin.expose()) {
        return Ok(Some(Caller::Platform));
    }
    if same(app.tokens.ingest.expose()) {
        return Ok(Some(Caller::Ingest));
    }
    let now = app.clock.now();
    let Some(token) = app.store.token_by_hash(&token_hash(presented)).await? else {
        return Ok(None);
    };
    if !token.is_valid_at(now) {
        return Ok(None);
    }
    let stale = token
        .last_used_at
        .is_none_or(|at| at.saturating_add(LAST_USED_EVERY) <= now);
    if stale {
        // Knowing when a token was last used must never stop it from working.
        let touched = app
            .store
            .update_token(
                &token.shop,
                token.id,
                Box::new(move |t: &mut ShopToken| t.last_used_at = Some(now)),
            )
            .await;
        if let Err(error) = touched {
            tracing::debug!(%error, token = %token.id, "the token's last use was not recorded");
        }
    }
    Ok(Some(Caller::Shop {
        shop: token.shop,
        kind: token.kind,
        token: token.id,
    }))
}

/// Hex SHA-256 of a token: how the store knows it.
pub fn token_hash(token: &str) -> String {
    crate::crypto::signing::hex(&Sha256::digest(token.as_bytes()))
}

/// A new shop token: its text (shown once) and its record. The prefix says what it is
/// (`cnpa_` admin, `cnpi_` ingest), so a leaked one is recognised, and by whom.
pub fn new_token(shop: &str, kind: TokenKind, now: Timestamp) -> (String, ShopToken) {
    let prefix = match kind {
        TokenKind::Admin => "cnpa_",
        TokenKind::Ingest => "cnpi_",
    };
    let text = format!(
        "{prefix}{}",
        crate::crypto::signing::hex(&random_bytes::<32>())
    );
    let record = ShopToken {
        id: crate::store::new_id(),
        shop: shop.to_owned(),
        kind,
        hash: token_hash(&text),
        hint: crate::crypto::secret::SecretValue::new(text.as_str()).hint(),
        created_at: now,
        last_used_at: None,
        expires_at: None,
    };
    (text, record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shop_ingest_token_posts_only_its_own_shops_events() {
        let token = Caller::Shop {
            shop: "green.myshopify.com".into(),
            kind: TokenKind::Ingest,
            token: Uuid::nil(),
        };
        assert_eq!(token.event_shop(None).unwrap(), "green.myshopify.com");
        assert_eq!(
            token.event_shop(Some("green.myshopify.com")).unwrap(),
            "green.myshopify.com"
        );
        assert_eq!(
            token
                .event_shop(Some("blue.myshopify.com"))
                .unwrap_err()
                .status,
            axum::http::StatusCode::FORBIDDEN
        );
        assert_eq!(Caller::Ingest.event_shop(None).unwrap(), DEFAULT_SHOP);
        assert_eq!(Caller::Ingest.event_shop(Some("blue")).unwrap(), "blue");
        assert!(token.ingests() && !token.administers());
        assert!(Caller::Platform.administers() && !Caller::Platform.ingests());
    }

    #[test]
    fn tokens_are_random_and_kept_as_hashes() {
        let now = Timestamp(1);
        let (a, record) = new_token("shop", TokenKind::Admin, now);
        let (b, _) = new_token("shop", TokenKind::Admin, now);
        assert_ne!(a, b);
        assert!(a.starts_with("cnpa_") && a.len() == 5 + 64);
        assert_eq!(record.hash, token_hash(&a));
        assert!(!record.hash.contains(&a[5..]));
        assert!(record.hint.ends_with(&a[a.len() - 4..]));
    }
}
