//! Signing in to the admin UI: sessions and sign-in links.
//!
//! A **session** is a cookie the server signs (HMAC-SHA256 with a key derived from the master
//! key): who signed in (the platform, or a shop), the shop token it came from (if any), a CSRF
//! token and an expiry (12 hours). Nothing is stored server-side, so it survives restarts; it
//! ends when it expires, when the user signs out (the cookie is cleared), when the shop token
//! it came from is revoked or expires (for a link: the shop token that asked for it), when the
//! shop is deleted (a shop created again with the same id is another shop), when the platform
//! admin token changes (a platform session carries a keyed fingerprint of it, which cannot be
//! used to test guesses of the token), or when the master key is rotated (every session and
//! link then fails its signature).
//!
//! A **sign-in link** opens one shop's pages without a token, the way a platform embeds a
//! vendor's portal: the platform admin (or the loyalty backend, with the platform admin token),
//! or a shop admin token for its own shop, asks for one (`POST /v1/shops/{shop}/sign-in-links`)
//! and hands the URL to the store admin. It is signed the same way, names its shop and its
//! expiry (5 minutes by default, at most an hour), and is good for one sign-in: the server
//! remembers the links used until they expire (in memory — after a restart a link still in
//! its lifetime could be used once more; its lifetime is what bounds it). Opening the link
//! shows a page whose button signs in, so a link previewer that fetches URLs cannot use it up.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::access::Caller;
use super::{App, AppError};
use crate::crypto::seal::random_bytes;
use crate::crypto::signing::hex;
use crate::model::{Shop, Timestamp, TokenKind};

/// How long a session lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3_600);
/// A sign-in link's default and longest lifetime.
pub const LINK_LIFETIME: Duration = Duration::from_secs(300);
pub const MAX_LINK_LIFETIME: Duration = Duration::from_secs(3_600);

const SESSION_KEY: &[u8] = b"canopy ui session v1";
const LINK_KEY: &[u8] = b"canopy ui sign-in link v1";
const FORM_KEY: &[u8] = b"canopy ui sign-in form v1";

/// Who a session stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "as", rename_all = "snake_case")]
pub enum Who {
    /// The platform admin; `admin` is a fingerprint of the admin token it signed in with.
    Platform { admin: String },
    /// A shop's admin. `token` is the shop admin token it came from: the one signed in
    /// with, or the one that asked for the sign-in link (none for a link the platform asked
    /// for); revoking it ends the session. `since` is the shop's creation time, so a session
    /// never reaches a shop deleted and created again under the same id.
    Shop {
        shop: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<Uuid>,
        since: u64,
    },
}

/// A signed-in user, as the session cookie carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    #[serde(flatten)]
    pub who: Who,
    /// The CSRF token every state-changing form of this session carries.
    pub csrf: String,
    /// Milliseconds since the epoch.
    pub expires: u64,
}

fn sign(key: &[u8; 32], payload: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(payload);
    mac.finalize().into_bytes().to_vec()
}

/// `base64(payload).base64(hmac)`.
fn seal<T: Serialize>(key: &[u8; 32], value: &T) -> String {
    let payload = serde_json::to_vec(value).expect("a session serialises");
    format!(
        "{}.{}",
        B64.encode(&payload),
        B64.encode(sign(key, &payload))
    )
}

fn unseal<T: for<'de> Deserialize<'de>>(key: &[u8; 32], text: &str) -> Option<T> {
    let (payload, tag) = text.split_once('.')?;
    let payload = B64.decode(payload).ok()?;
    let tag = B64.decode(tag).ok()?;
    if !bool::from(sign(key, &payload).ct_eq(&tag)) {
        return None;
    }
    serde_json::from_slice(&payload).ok()
}

/// A fingerprint of the platform admin token (a platform session ends when it changes): a
/// keyed HMAC, so a cookie's holder cannot test guesses of the token against it offline.
fn admin_fingerprint(app: &App) -> String {
    hex(&sign(
        &app.key.derive_key(b"canopy ui admin fingerprint v1"),
        app.tokens.admin.expose().as_bytes(),
    ))
}

impl Session {
    fn new(who: Who, now: Timestamp) -> Session {
        Session {
            who,
            csrf: hex(&random_bytes::<16>()),
            expires: now.saturating_add(SESSION_LIFETIME).0,
        }
    }

    /// The cookie value.
    pub fn seal(&self, app: &App) -> String {
        seal(&app.key.derive_key(SESSION_KEY), self)
    }

    /// The session a cookie value holds, if it is genuine and not expired.
    pub fn open(app: &App, text: &str, now: Timestamp) -> Option<Session> {
        let session: Session = unseal(&app.key.derive_key(SESSION_KEY), text)?;
        (now.0 < session.expires).then_some(session)
    }

    /// Whether a form's CSRF token is this session's.
    pub fn csrf_matches(&self, presented: &str) -> bool {
        bool::from(self.csrf.as_bytes().ct_eq(presented.as_bytes()))
    }

    /// Who this session acts as now, or `None` when what it came from no longer holds (a
    /// revoked or expired shop token, a changed admin token).
    pub async fn caller(&self, app: &App) -> Result<Option<Caller>, AppError> {
        match &self.who {
            Who::Platform { admin } => {
                let same = bool::from(admin.as_bytes().ct_eq(admin_fingerprint(app).as_bytes()));
                Ok(same.then_some(Caller::Platform))
            }
            Who::Shop { shop, token, since } => {
                let current = app.store.shop(shop).await?;
                if current.is_none_or(|s| s.is_deleted() || s.created_at.0 != *since) {
                    return Ok(None);
                }
                if let Some(id) = token {
                    let now = app.clock.now();
                    let valid =
                        app.store.tokens(shop).await?.iter().any(|t| {
                            t.id == *id && t.kind == TokenKind::Admin && t.is_valid_at(now)
                        });
                    if !valid {
                        return Ok(None);
                    }
                }
                Ok(Some(Caller::Shop {
                    shop: shop.clone(),
                    kind: TokenKind::Admin,
                    token: token.unwrap_or(Uuid::nil()),
                }))
            }
        }
    }
}

/// Signs in with a token: the platform admin token or a shop admin token. Any other token
/// (an ingest token, a revoked one, a wrong one) signs in nobody.
pub async fn with_token(app: &App, token: &str) -> Result<Option<Session>, AppError> {
    let now = app.clock.now();
    let who = match super::access::authenticate(app, token.trim()).await? {
        Some(Caller::Platform) => Who::Platform {
            admin: admin_fingerprint(app),
        },
        Some(Caller::Shop {
            shop,
            kind: TokenKind::Admin,
            token,
        }) => {
            let since = Caller::Platform.shop(app, &shop).await?.created_at.0;
            Who::Shop {
                shop,
                token: Some(token),
                since,
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(Session::new(who, now)))
}

/// What a sign-in link carries.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LinkClaim {
    shop: String,
    /// The shop admin token that asked for it (none: the platform).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    by: Option<Uuid>,
    expires: u64,
    nonce: String,
}

/// A token for a sign-in form, tied to the pre-session cookie that carries the same value:
/// a random nonce signed by the server, so a cookie planted from elsewhere (a sibling
/// domain) is not accepted.
pub fn form_token(app: &App) -> String {
    let nonce = hex(&random_bytes::<16>());
    let tag = hex(&sign(&app.key.derive_key(FORM_KEY), nonce.as_bytes()));
    format!("{nonce}.{tag}")
}

/// Whether a sign-in form's token is genuine and the pre-session cookie's.
pub fn form_token_matches(app: &App, cookie: &str, presented: &str) -> bool {
    let Some((nonce, tag)) = cookie.split_once('.') else {
        return false;
    };
    let expected = hex(&sign(&app.key.derive_key(FORM_KEY), nonce.as_bytes()));
    bool::from(expected.as_bytes().ct_eq(tag.as_bytes()))
        && bool::from(cookie.as_bytes().ct_eq(presented.as_bytes()))
}

/// A new sign-in link.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SignInLink {
    /// The link's path on this server (`/ui/sign-in/…`).
    pub path: String,
    /// The whole link, when the server knows its public address (`--public-url`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub expires_at: Timestamp,
}

/// A sign-in link for `shop`, valid for `lifetime` (default [`LINK_LIFETIME`], at most
/// [`MAX_LINK_LIFETIME`]).
pub fn create_link(
    app: &App,
    caller: &Caller,
    shop: &Shop,
    lifetime: Option<Duration>,
) -> Result<SignInLink, AppError> {
    let lifetime = lifetime.unwrap_or(LINK_LIFETIME);
    if lifetime.is_zero() || lifetime > MAX_LINK_LIFETIME {
        return Err(AppError::unprocessable(
            "invalid_lifetime",
            format!(
                "a sign-in link lasts from 1 to {} seconds",
                MAX_LINK_LIFETIME.as_secs()
            ),
        ));
    }
    let expires_at = app.clock.now().saturating_add(lifetime);
    let by = match caller {
        Caller::Shop { token, .. } => Some(*token),
        _ => None,
    };
    let claim = LinkClaim {
        shop: shop.id.clone(),
        by,
        expires: expires_at.0,
        nonce: hex(&random_bytes::<16>()),
    };
    let path = format!(
        "/ui/sign-in/{}",
        seal(&app.key.derive_key(LINK_KEY), &claim)
    );
    let url = app
        .config
        .public_url
        .as_ref()
        .map(|base| format!("{}{path}", base.as_str().trim_end_matches('/')));
    tracing::info!(shop = %shop.id, expires = %expires_at, "sign-in link created");
    Ok(SignInLink {
        path,
        url,
        expires_at,
    })
}

/// The links used, until they expire.
#[derive(Debug, Default)]
pub struct UsedLinks(Mutex<HashMap<String, u64>>);

fn link_refused() -> AppError {
    AppError::new(
        axum::http::StatusCode::GONE,
        "link_expired",
        "this sign-in link has expired, was already used, or is not genuine; ask for a new one",
    )
}

/// The shop a sign-in link opens, if it is genuine and unexpired (without using it up).
pub fn link_shop(app: &App, code: &str) -> Result<String, AppError> {
    let claim: LinkClaim = unseal(&app.key.derive_key(LINK_KEY), code).ok_or_else(link_refused)?;
    if app.clock.now().0 >= claim.expires {
        return Err(link_refused());
    }
    Ok(claim.shop)
}

/// Uses a sign-in link: a session for its shop, once.
pub async fn with_link(app: &App, code: &str) -> Result<Session, AppError> {
    let now = app.clock.now();
    let claim: LinkClaim = unseal(&app.key.derive_key(LINK_KEY), code).ok_or_else(link_refused)?;
    if now.0 >= claim.expires {
        return Err(link_refused());
    }
    // The shop must still exist.
    let since = Caller::Platform.shop(app, &claim.shop).await?.created_at.0;
    {
        let mut used = app.used_links.0.lock().expect("the used-link set");
        used.retain(|_, expires| now.0 < *expires);
        if used.insert(claim.nonce, claim.expires).is_some() {
            return Err(link_refused());
        }
    }
    tracing::info!(shop = %claim.shop, "signed in with a sign-in link");
    Ok(Session::new(
        Who::Shop {
            shop: claim.shop,
            token: claim.by,
            since,
        },
        now,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_with_its_key_and_unaltered() {
        let key = [7u8; 32];
        let session = Session::new(
            Who::Shop {
                shop: "green".into(),
                token: None,
                since: 1,
            },
            Timestamp(1_000),
        );
        let text = seal(&key, &session);
        assert_eq!(unseal::<Session>(&key, &text), Some(session.clone()));
        assert_eq!(unseal::<Session>(&[8u8; 32], &text), None);
        // Another payload under the same tag.
        let (_, tag) = text.split_once('.').unwrap();
        let mut other = session;
        other.who = Who::Shop {
            shop: "blue".into(),
            token: None,
            since: 1,
        };
        let forged = format!("{}.{tag}", B64.encode(serde_json::to_vec(&other).unwrap()));
        assert_eq!(unseal::<Session>(&key, &forged), None);
        assert_eq!(unseal::<Session>(&key, "garbage"), None);
    }
}
