//! A shop's integrations (SPEC.md §7): create, list, read, change, delete, Test, health.
//!
//! Checks before anything is stored: the plugin is installed; events are canonical keys the
//! plugin takes (or `["*"]`); secrets are ones the plugin declares, and secrets are not passed
//! as settings; a URL setting carries no credentials; the in-flight cap is within bounds; the
//! plugin's own `validate-config` accepts the settings (its messages go back to the admin,
//! with the field they name); then a rehearsal (`Worker::rehearse`) refuses what the host
//! would refuse at send time. Secrets are sealed (`crypto::seal`) before they reach the store
//! and are never returned: only a hint (a secret the host generates — the webhook's HMAC
//! secret when none is given — is shown once, in the answer that created it). Enabling an
//! integration sends its paused deliveries. Test sends a sample event and reports the outcome.

use std::collections::BTreeMap;

use canopy_events::EventKind;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::{App, AppError};
use crate::crypto::secret::SecretValue;
use crate::delivery::worker::TestOutcome;
use crate::model::{
    Integration, IntegrationHealth, MAX_IN_FLIGHT_LIMIT, Shop, StoredSecret, Timestamp, new_id,
};
use crate::runtime::{Plugin, PluginConfig, RateLimit, Scope, SettingKind};

/// Longest integration name.
pub const MAX_NAME_CHARS: usize = 200;

/// A new integration.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IntegrationIn {
    pub name: String,
    /// The id of an installed plugin.
    pub plugin: String,
    /// Event types, or `["*"]` for all.
    pub events: Vec<String>,
    /// The plugin's non-secret settings (`GET /v1/plugins/{id}` lists them).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub settings: Map<String, Value>,
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    /// A lower request rate than the plugin's declared one.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// Attempts in flight at once, 1 to 256 (default 10).
    #[serde(default)]
    pub max_in_flight: Option<u32>,
}

fn enabled_by_default() -> bool {
    true
}

/// A partial change: absent fields stay as they are. `settings` replaces the settings
/// whole; in `secrets` a value sets a secret and `null` removes it; `rate_limit: null`
/// returns to the plugin's limit, `max_in_flight: null` to the default cap.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IntegrationPatch {
    pub name: Option<String>,
    pub events: Option<Vec<String>>,
    #[schema(value_type = Option<Object>)]
    pub settings: Option<Map<String, Value>>,
    pub secrets: Option<BTreeMap<String, Option<String>>>,
    pub enabled: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<RateLimit>)]
    pub rate_limit: Option<Option<RateLimit>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u32>)]
    pub max_in_flight: Option<Option<u32>>,
}

/// Tells `"field": null` (present, cleared) from an absent field.
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// An integration as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IntegrationOut {
    pub id: Uuid,
    pub shop: String,
    pub name: String,
    pub plugin: String,
    pub events: Vec<String>,
    pub settings: Value,
    /// Hints only (`••••a1b2`), by name.
    pub secrets: BTreeMap<String, String>,
    pub enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    pub consecutive_failures: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Attempts in flight at once (the default cap when it sets none).
    pub max_in_flight: u32,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Secrets the host generated for this request, shown this once (the webhook's HMAC
    /// secret when `auth` is `hmac` and none was given).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub generated_secrets: BTreeMap<String, String>,
}

impl From<Integration> for IntegrationOut {
    fn from(i: Integration) -> IntegrationOut {
        IntegrationOut {
            max_in_flight: i.in_flight_cap(),
            id: i.id,
            shop: i.shop,
            name: i.name,
            plugin: i.plugin,
            events: i.events,
            settings: without_url_credentials(i.settings),
            secrets: i.secrets.into_iter().map(|(n, s)| (n, s.hint)).collect(),
            enabled: i.enabled,
            disabled_reason: i.disabled_reason,
            consecutive_failures: i.consecutive_failures,
            rate_limit: i.rate_limit,
            created_at: i.created_at,
            updated_at: i.updated_at,
            generated_secrets: BTreeMap::new(),
        }
    }
}

/// An integration with the secrets the host generated for it (shown once).
pub struct Saved {
    pub integration: Integration,
    pub generated: BTreeMap<String, String>,
}

impl From<Saved> for IntegrationOut {
    fn from(saved: Saved) -> IntegrationOut {
        let mut out = IntegrationOut::from(saved.integration);
        out.generated_secrets = saved.generated;
        out
    }
}

pub async fn create(app: &App, shop: &Shop, input: IntegrationIn) -> Result<Saved, AppError> {
    let now = app.clock.now();
    let mut integration = Integration {
        id: new_id(),
        shop: shop.id.clone(),
        name: input.name,
        plugin: input.plugin,
        events: input.events,
        settings: Value::Object(input.settings),
        secrets: BTreeMap::new(),
        enabled: input.enabled,
        disabled_reason: None,
        consecutive_failures: 0,
        rate_limit: input.rate_limit,
        max_in_flight: input.max_in_flight,
        created_at: now,
        updated_at: now,
    };
    let secrets = input
        .secrets
        .into_iter()
        .map(|(n, v)| (n, Some(v)))
        .collect();
    seal_secrets(app, &mut integration, secrets);
    let generated = generate_missing_secrets(app, &mut integration);
    check(app, &integration).await?;
    app.store.create_integration(&integration).await?;
    tracing::info!(shop = %shop.id, integration = %integration.id, plugin = %integration.plugin, "integration created");
    Ok(Saved {
        integration,
        generated,
    })
}

pub async fn list(app: &App, shop: &Shop) -> Result<Vec<Integration>, AppError> {
    let mut integrations = app.store.integrations(Some(&shop.id)).await?;
    integrations.sort_by_key(|i| i.created_at);
    Ok(integrations)
}

/// The shop's integration `id` (404 for another shop's, exactly as for an unknown one).
pub async fn get(app: &App, shop: &Shop, id: Uuid) -> Result<Integration, AppError> {
    app.store
        .integration(&shop.id, id)
        .await?
        .ok_or_else(|| AppError::not_found("integration"))
}

pub async fn update(
    app: &App,
    shop: &Shop,
    id: Uuid,
    patch: IntegrationPatch,
) -> Result<Saved, AppError> {
    let current = get(app, shop, id).await?;
    // The patch is checked on a copy, then the fields it names are written under the
    // store's lock (so a concurrent auto-disable of an untouched `enabled` is kept).
    let mut candidate = current.clone();
    if let Some(secrets) = patch.secrets.clone() {
        seal_secrets(app, &mut candidate, secrets);
    }
    if let Some(name) = &patch.name {
        candidate.name = name.clone();
    }
    if let Some(events) = &patch.events {
        candidate.events = events.clone();
    }
    if let Some(settings) = &patch.settings {
        candidate.settings = Value::Object(settings.clone());
    }
    if let Some(enabled) = patch.enabled {
        candidate.enabled = enabled;
    }
    if let Some(rate_limit) = patch.rate_limit {
        candidate.rate_limit = rate_limit;
    }
    if let Some(cap) = patch.max_in_flight {
        candidate.max_in_flight = cap;
    }
    let generated = generate_missing_secrets(app, &mut candidate);
    let secrets_changed = patch.secrets.is_some() || !generated.is_empty();
    check(app, &candidate).await?;
    let wanted = candidate;
    let updated = app
        .store
        .update_integration(
            &shop.id,
            id,
            app.clock.now(),
            Box::new(move |i: &mut Integration| {
                if patch.name.is_some() {
                    i.name = wanted.name;
                }
                if patch.events.is_some() {
                    i.events = wanted.events;
                }
                if patch.settings.is_some() {
                    i.settings = wanted.settings;
                }
                if secrets_changed {
                    i.secrets = wanted.secrets;
                }
                if patch.enabled.is_some() {
                    i.enabled = wanted.enabled;
                }
                if patch.rate_limit.is_some() {
                    i.rate_limit = wanted.rate_limit;
                }
                if patch.max_in_flight.is_some() {
                    i.max_in_flight = wanted.max_in_flight;
                }
                Ok(())
            }),
        )
        .await?
        .ok_or_else(|| AppError::not_found("integration"))?;
    tracing::info!(shop = %shop.id, integration = %id, enabled = updated.enabled, "integration updated");
    Ok(Saved {
        integration: updated,
        generated,
    })
}

pub async fn delete(app: &App, shop: &Shop, id: Uuid) -> Result<(), AppError> {
    if !app
        .store
        .delete_integration(&shop.id, id, app.clock.now())
        .await?
    {
        return Err(AppError::not_found("integration"));
    }
    tracing::info!(shop = %shop.id, integration = %id, "integration deleted");
    Ok(())
}

/// What a Test send came to, and for which event type.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Tested {
    /// The event type of the sample sent.
    pub event: String,
    pub result: TestOutcome,
}

/// The Test button: a sample event — of the type given, else the integration's first
/// subscribed type — through the real plugin, secrets, signing and network path. Nothing is
/// stored.
pub async fn test(
    app: &App,
    shop: &Shop,
    id: Uuid,
    event: Option<&str>,
) -> Result<Tested, AppError> {
    let integration = get(app, shop, id).await?;
    let kind = match event {
        Some(key) => {
            let kind: EventKind = key.parse().map_err(|e: canopy_events::UnknownEventKind| {
                AppError::bad_request("unknown_event", e.to_string())
            })?;
            if !integration.subscribes_to(key) {
                return Err(AppError::unprocessable(
                    "not_subscribed",
                    format!("the integration does not take `{key}` events"),
                ));
            }
            kind
        }
        None => integration
            .events
            .iter()
            .find_map(|e| e.parse::<EventKind>().ok())
            .unwrap_or(EventKind::ALL[0]),
    };
    let result = app
        .worker
        .test(&integration, kind.sample_json().to_owned())
        .await;
    tracing::info!(shop = %shop.id, integration = %id, event = kind.key(), outcome = result.outcome, "integration tested");
    Ok(Tested {
        event: kind.key().to_owned(),
        result,
    })
}

/// How an integration is doing (SPEC.md §8: the per-shop view of health).
pub async fn health(app: &App, shop: &Shop, id: Uuid) -> Result<IntegrationHealth, AppError> {
    app.store
        .integration_health(&shop.id, id, app.clock.now())
        .await?
        .ok_or_else(|| AppError::not_found("integration"))
}

/// Every integration's health, in the order they were created.
pub async fn shop_health(app: &App, shop: &Shop) -> Result<Vec<IntegrationHealth>, AppError> {
    let now = app.clock.now();
    let mut healths = Vec::new();
    for integration in list(app, shop).await? {
        if let Some(health) = app
            .store
            .integration_health(&shop.id, integration.id, now)
            .await?
        {
            healths.push(health);
        }
    }
    Ok(healths)
}

/// The webhook's HMAC secret, when `auth` is `hmac` and none is set: `whsec_` + base64 of 24
/// random bytes (SPEC.md §3), sealed like any secret and returned to the admin once.
fn generate_missing_secrets(app: &App, integration: &mut Integration) -> BTreeMap<String, String> {
    use base64::Engine as _;
    let mut generated = BTreeMap::new();
    let wants_hmac = integration.plugin == "webhook"
        && integration.settings.get("auth").and_then(Value::as_str) == Some("hmac");
    if wants_hmac && !integration.secrets.contains_key("webhook_secret") {
        let bytes: [u8; 24] = crate::crypto::seal::random_bytes();
        let secret = format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        );
        seal_secrets(
            app,
            integration,
            BTreeMap::from([("webhook_secret".to_owned(), Some(secret.clone()))]),
        );
        generated.insert("webhook_secret".to_owned(), secret);
    }
    generated
}

/// Seals new secret values into `integration` (a `None` or empty value removes the secret).
fn seal_secrets(
    app: &App,
    integration: &mut Integration,
    secrets: BTreeMap<String, Option<String>>,
) {
    for (name, value) in secrets {
        match value.filter(|v| !v.is_empty()) {
            Some(value) => {
                let hint = SecretValue::new(value.as_str()).hint();
                let sealed = app.key.seal(value.as_bytes());
                integration
                    .secrets
                    .insert(name, StoredSecret { sealed, hint });
            }
            None => {
                integration.secrets.remove(&name);
            }
        }
    }
}

/// Settings as the API shows them: a URL that carries credentials (`user:pass@`, refused
/// since, but possibly stored by an earlier version) shows `redacted` in their place.
pub fn without_url_credentials(mut settings: Value) -> Value {
    if let Some(map) = settings.as_object_mut() {
        for value in map.values_mut() {
            if let Some(url) = value.as_str().and_then(url_with_credentials) {
                *value = Value::String(crate::delivery::request::redact_url(&url));
            }
        }
    }
    settings
}

/// The text as a URL, if it is one that carries credentials.
fn url_with_credentials(text: &str) -> Option<url::Url> {
    url::Url::parse(text.trim())
        .ok()
        .filter(|u| !u.username().is_empty() || u.password().is_some())
}

/// Everything an integration must satisfy before it is stored.
async fn check(app: &App, integration: &Integration) -> Result<(), AppError> {
    let name = integration.name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(AppError::unprocessable(
            "invalid_name",
            format!("`name` must be 1 to {MAX_NAME_CHARS} characters"),
        ));
    }
    let Some(plugin) = app.plugins.get(&integration.plugin) else {
        let installed: Vec<String> = app
            .plugins
            .list()
            .iter()
            .map(|p| p.id().to_owned())
            .collect();
        return Err(AppError::unprocessable(
            "unknown_plugin",
            format!(
                "no plugin `{}` is installed; installed plugins: {}",
                integration.plugin,
                installed.join(", ")
            ),
        ));
    };
    check_events(&plugin, &integration.events)?;
    if let Some(limit) = integration.rate_limit
        && (limit.requests == 0 || limit.per_seconds == 0)
    {
        return Err(AppError::unprocessable(
            "invalid_rate_limit",
            "`rate_limit` needs positive `requests` and `per_seconds`",
        ));
    }
    if let Some(cap) = integration.max_in_flight
        && !(1..=MAX_IN_FLIGHT_LIMIT).contains(&cap)
    {
        return Err(AppError::unprocessable(
            "invalid_max_in_flight",
            format!("`max_in_flight` must be between 1 and {MAX_IN_FLIGHT_LIMIT}"),
        ));
    }

    let declared_secrets: Vec<&str> = plugin
        .info()
        .settings
        .iter()
        .filter(|s| s.secret)
        .map(|s| s.name.as_str())
        .collect();
    for name in integration.secrets.keys() {
        if !declared_secrets.contains(&name.as_str()) {
            return Err(AppError::unprocessable(
                "unknown_secret",
                format!(
                    "the plugin `{}` has no secret `{name}`; its secrets are: {}",
                    plugin.id(),
                    declared_secrets.join(", ")
                ),
            ));
        }
    }
    if let Some(settings) = integration.settings.as_object() {
        for name in settings.keys() {
            if declared_secrets.contains(&name.as_str()) {
                return Err(AppError::unprocessable(
                    "secret_in_settings",
                    format!("`{name}` is a secret: pass it in `secrets`, not `settings`"),
                ));
            }
        }
    }
    // Credentials in a URL would be shown by every read of the integration and every log
    // line of a request; secrets have their own place.
    for spec in plugin
        .info()
        .settings
        .iter()
        .filter(|s| s.kind == SettingKind::Url)
    {
        if let Some(text) = integration.settings.get(&spec.name).and_then(Value::as_str)
            && url_with_credentials(text).is_some()
        {
            return Err(AppError::unprocessable(
                "credentials_in_url",
                format!(
                    "`{}` carries credentials (user:password@); put them in a secret instead \
                     (an authentication setting of the plugin), never in the URL",
                    spec.name
                ),
            )
            .with_details(
                json!({"problems": [{"field": spec.name, "message": "carries credentials"}]}),
            ));
        }
    }

    let config = PluginConfig {
        settings: integration.settings.clone(),
        secrets_present: integration.secrets.keys().cloned().collect(),
    };
    let validating = plugin.clone();
    let problems =
        tokio::task::spawn_blocking(move || validating.validate_config(Scope::Fresh, &config))
            .await
            .map_err(|e| {
                AppError::unprocessable("plugin_error", format!("the plugin's check was lost: {e}"))
            })?
            .map_err(|e| {
                AppError::unprocessable(
                    "plugin_error",
                    format!("the plugin could not check the settings: {e}"),
                )
            })?
            .value;
    if !problems.is_empty() {
        let message = problems
            .iter()
            .map(|p| {
                if p.field.is_empty() {
                    p.message.clone()
                } else {
                    format!("{}: {}", p.field, p.message)
                }
            })
            .collect::<Vec<_>>()
            .join("; ");
        return Err(AppError::unprocessable("invalid_settings", message)
            .with_details(json!({ "problems": problems })));
    }
    // What the plugin accepts must also be sendable: the rehearsal refuses now what the host
    // would refuse at every delivery (a header value with control characters, a token with a
    // line break, a URL whose host does not survive a template).
    app.worker
        .rehearse(integration, plugin)
        .await
        .map_err(|message| AppError::unprocessable("invalid_settings", message))?;
    Ok(())
}

fn check_events(plugin: &Plugin, events: &[String]) -> Result<(), AppError> {
    if events.is_empty() {
        return Err(AppError::unprocessable(
            "invalid_events",
            "`events` needs at least one event type, or [\"*\"] for all",
        ));
    }
    if events.iter().any(|e| e == "*") {
        return if events.len() == 1 {
            Ok(())
        } else {
            Err(AppError::unprocessable(
                "invalid_events",
                "`*` stands for every event type; list it alone",
            ))
        };
    }
    for event in events {
        if let Err(unknown) = event.parse::<EventKind>() {
            return Err(AppError::unprocessable(
                "unknown_event",
                unknown.to_string(),
            ));
        }
        if !plugin.info().supports(event) {
            return Err(AppError::unprocessable(
                "unsupported_event",
                format!(
                    "the plugin `{}` does not take `{event}` events",
                    plugin.id()
                ),
            ));
        }
    }
    Ok(())
}
