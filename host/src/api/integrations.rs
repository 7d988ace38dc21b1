//! Integrations (SPEC.md §7): `POST /v1/integrations`, `GET /v1/integrations`,
//! `GET|PATCH|DELETE /v1/integrations/{id}`.
//!
//! Checks before anything is stored: the plugin is installed; events are canonical keys the
//! plugin takes (or `["*"]`); secrets are ones the plugin declares, and secrets are not passed
//! as settings; the plugin's own `validate-config` accepts the settings (its messages go back
//! to the admin, 422). Secrets are sealed (`crypto::seal`) before they reach the store and are
//! never returned: only a hint (a secret the host generates — the webhook's HMAC secret when
//! none is given — is shown once, in the answer that created it). Enabling an integration
//! sends its paused deliveries. `…/test` sends a sample event and answers with the outcome.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use canopy_events::EventKind;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use uuid::Uuid;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use crate::crypto::secret::SecretValue;
use crate::delivery::worker::TestOutcome;
use crate::runtime::{Plugin, PluginConfig, RateLimit, Scope, SettingKind};
use crate::server::AppState;
use crate::store::{Integration, StoredSecret, Timestamp, new_id};

/// Longest integration name.
const MAX_NAME_CHARS: usize = 200;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, update, remove))
        .routes(routes!(test))
}

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
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
}

fn enabled_by_default() -> bool {
    true
}

/// A partial change: absent fields stay as they are. `settings` replaces the settings
/// whole; in `secrets` a value sets a secret and `null` removes it; `rate_limit: null`
/// returns to the plugin's limit.
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
}

/// Tells `"rate_limit": null` (present, cleared) from an absent field.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<RateLimit>>, D::Error> {
    Option::<RateLimit>::deserialize(d).map(Some)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IntegrationOut {
    pub id: Uuid,
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
            id: i.id,
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

/// Create an integration.
#[utoipa::path(
    post, path = "/v1/integrations", tag = "integrations",
    security(("admin_token" = [])),
    request_body = IntegrationIn,
    responses(
        (status = 201, description = "Created; secrets shown as hints only", body = IntegrationOut),
        (status = 400, description = "Bad JSON", body = ErrorBody),
        (status = 401, description = "No or wrong admin token", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Unknown plugin, event type or secret, or settings the plugin refuses (its message)", body = ErrorBody),
    )
)]
async fn create(
    State(state): State<AppState>,
    ApiJson(input): ApiJson<IntegrationIn>,
) -> Result<impl IntoResponse, ApiError> {
    let now = Timestamp::now();
    let mut integration = Integration {
        id: new_id(),
        name: input.name,
        plugin: input.plugin,
        events: input.events,
        settings: Value::Object(input.settings),
        secrets: BTreeMap::new(),
        enabled: input.enabled,
        disabled_reason: None,
        consecutive_failures: 0,
        rate_limit: input.rate_limit,
        created_at: now,
        updated_at: now,
    };
    let secrets = input
        .secrets
        .into_iter()
        .map(|(n, v)| (n, Some(v)))
        .collect();
    seal_secrets(&state, &mut integration, secrets);
    let generated = generate_missing_secrets(&state, &mut integration);
    check(&state, &integration).await?;
    state.store.create_integration(&integration).await?;
    tracing::info!(integration = %integration.id, plugin = %integration.plugin, "integration created");
    let mut out = IntegrationOut::from(integration);
    out.generated_secrets = generated;
    Ok((StatusCode::CREATED, Json(out)))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IntegrationList {
    pub integrations: Vec<IntegrationOut>,
}

/// List integrations.
#[utoipa::path(
    get, path = "/v1/integrations", tag = "integrations",
    security(("admin_token" = [])),
    responses(
        (status = 200, body = IntegrationList),
        (status = 401, description = "No or wrong admin token", body = ErrorBody),
    )
)]
async fn list(State(state): State<AppState>) -> Result<Json<IntegrationList>, ApiError> {
    let integrations: Vec<IntegrationOut> = state
        .store
        .integrations()
        .await?
        .into_iter()
        .map(IntegrationOut::from)
        .collect();
    Ok(Json(IntegrationList { integrations }))
}

/// One integration.
#[utoipa::path(
    get, path = "/v1/integrations/{id}", tag = "integrations",
    security(("admin_token" = [])),
    params(("id" = Uuid, Path, description = "Integration id")),
    responses(
        (status = 200, body = IntegrationOut),
        (status = 400, description = "Not an id", body = ErrorBody),
        (status = 401, description = "No or wrong admin token", body = ErrorBody),
        (status = 404, description = "No such integration", body = ErrorBody),
    )
)]
async fn show(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<IntegrationOut>, ApiError> {
    let (integration, _) = find(&state, &id).await?;
    Ok(Json(integration.into()))
}

/// Change an integration: only the fields given. `enabled: true` sends its paused deliveries.
#[utoipa::path(
    patch, path = "/v1/integrations/{id}", tag = "integrations",
    security(("admin_token" = [])),
    params(("id" = Uuid, Path, description = "Integration id")),
    request_body = IntegrationPatch,
    responses(
        (status = 200, body = IntegrationOut),
        (status = 400, description = "Bad JSON or id", body = ErrorBody),
        (status = 401, description = "No or wrong admin token", body = ErrorBody),
        (status = 404, description = "No such integration", body = ErrorBody),
        (status = 422, description = "The result would not be valid (the plugin's message)", body = ErrorBody),
    )
)]
async fn update(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(patch): ApiJson<IntegrationPatch>,
) -> Result<Json<IntegrationOut>, ApiError> {
    let (current, id) = find(&state, &id).await?;
    // The patch is checked on a copy, then the fields it names are written under the
    // store's lock (so a concurrent auto-disable of an untouched `enabled` is kept).
    let mut candidate = current.clone();
    if let Some(secrets) = patch.secrets.clone() {
        seal_secrets(&state, &mut candidate, secrets);
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
    let generated = generate_missing_secrets(&state, &mut candidate);
    let secrets_changed = patch.secrets.is_some() || !generated.is_empty();
    check(&state, &candidate).await?;
    let wanted = candidate;
    let updated = state
        .store
        .update_integration(
            id,
            Timestamp::now(),
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
                Ok(())
            }),
        )
        .await?
        .ok_or_else(|| ApiError::not_found("integration"))?;
    if !current.enabled && updated.enabled {
        state.wake.notify_one();
    }
    state.worker.rates.forget(id);
    tracing::info!(integration = %id, enabled = updated.enabled, "integration updated");
    let mut out = IntegrationOut::from(updated);
    out.generated_secrets = generated;
    Ok(Json(out))
}

/// `POST /v1/integrations/{id}/test[?event=<type>]`: sends a sample event — of the given
/// type, else the integration's first subscribed type — through the real plugin and network
/// path, and answers with the outcome, the request as sent (secrets redacted) and the
/// response excerpt. Nothing is stored.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TestOut {
    /// The event type of the sample sent.
    pub event: String,
    pub result: TestOutcome,
}

/// Send a sample event now, through the real plugin and network path.
#[utoipa::path(
    post, path = "/v1/integrations/{id}/test", tag = "integrations",
    security(("admin_token" = [])),
    params(("id" = Uuid, Path, description = "Integration id"), TestQuery),
    responses(
        (status = 200, description = "The outcome, the request as sent (secrets redacted) and the response excerpt", body = TestOut),
        (status = 400, description = "Bad id or event type", body = ErrorBody),
        (status = 401, description = "No or wrong admin token", body = ErrorBody),
        (status = 404, description = "No such integration", body = ErrorBody),
        (status = 422, description = "The integration does not take that event type", body = ErrorBody),
    )
)]
async fn test(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<TestQuery>,
) -> Result<Json<TestOut>, ApiError> {
    let (integration, id) = find(&state, &id).await?;
    let kind = match &query.event {
        Some(key) => {
            let kind: EventKind = key.parse().map_err(|e: canopy_events::UnknownEventKind| {
                ApiError::bad_request("unknown_event", e.to_string())
            })?;
            if !integration.subscribes_to(key) {
                return Err(ApiError::unprocessable(
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
    let outcome = state
        .worker
        .test(&integration, kind.sample_json().to_owned())
        .await;
    tracing::info!(integration = %id, event = kind.key(), outcome = outcome.outcome, "integration tested");
    Ok(Json(TestOut {
        event: kind.key().to_owned(),
        result: outcome,
    }))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TestQuery {
    /// The event type to send (default: the first subscribed type).
    pub event: Option<String>,
}

/// The webhook's HMAC secret, when `auth` is `hmac` and none is set: `whsec_` + base64 of 24
/// random bytes (SPEC.md §3), sealed like any secret and returned to the admin once.
fn generate_missing_secrets(
    state: &AppState,
    integration: &mut Integration,
) -> BTreeMap<String, String> {
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
            state,
            integration,
            BTreeMap::from([("webhook_secret".to_owned(), Some(secret.clone()))]),
        );
        generated.insert("webhook_secret".to_owned(), secret);
    }
    generated
}

/// Delete an integration; its delivery log is kept.
#[utoipa::path(
    delete, path = "/v1/integrations/{id}", tag = "integrations",
    security(("admin_token" = [])),
    params(("id" = Uuid, Path, description = "Integration id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Not an id", body = ErrorBody),
        (status = 401, description = "No or wrong admin token", body = ErrorBody),
        (status = 404, description = "No such integration", body = ErrorBody),
    )
)]
async fn remove(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id)?;
    if !state.store.delete_integration(id).await? {
        return Err(ApiError::not_found("integration"));
    }
    state.worker.rates.forget(id);
    tracing::info!(integration = %id, "integration deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// The integration named by a path's `{id}`: 400 for a malformed id, 404 for an unknown one.
async fn find(state: &AppState, id: &str) -> Result<(Integration, Uuid), ApiError> {
    let id = parse_id(id)?;
    let integration = state
        .store
        .integration(id)
        .await?
        .ok_or_else(|| ApiError::not_found("integration"))?;
    Ok((integration, id))
}

pub fn parse_id(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text)
        .map_err(|_| ApiError::bad_request("invalid_id", format!("`{text}` is not a valid id")))
}

/// Seals new secret values into `integration` (a `None` or empty value removes the secret).
fn seal_secrets(
    state: &AppState,
    integration: &mut Integration,
    secrets: BTreeMap<String, Option<String>>,
) {
    for (name, value) in secrets {
        match value.filter(|v| !v.is_empty()) {
            Some(value) => {
                let hint = SecretValue::new(value.as_str()).hint();
                let sealed = state.key.seal(value.as_bytes());
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
fn without_url_credentials(mut settings: Value) -> Value {
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
async fn check(state: &AppState, integration: &Integration) -> Result<(), ApiError> {
    let name = integration.name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::unprocessable(
            "invalid_name",
            format!("`name` must be 1 to {MAX_NAME_CHARS} characters"),
        ));
    }
    let Some(plugin) = state.plugins.get(&integration.plugin) else {
        let installed: Vec<String> = state
            .plugins
            .list()
            .iter()
            .map(|p| p.id().to_owned())
            .collect();
        return Err(ApiError::unprocessable(
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
        return Err(ApiError::unprocessable(
            "invalid_rate_limit",
            "`rate_limit` needs positive `requests` and `per_seconds`",
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
            return Err(ApiError::unprocessable(
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
                return Err(ApiError::unprocessable(
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
            return Err(ApiError::unprocessable(
                "credentials_in_url",
                format!(
                    "`{}` carries credentials (user:password@); put them in a secret instead \
                     (an authentication setting of the plugin), never in the URL",
                    spec.name
                ),
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
                ApiError::unprocessable("plugin_error", format!("the plugin's check was lost: {e}"))
            })?
            .map_err(|e| {
                ApiError::unprocessable(
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
        return Err(ApiError::unprocessable("invalid_settings", message)
            .with_details(json!({ "problems": problems })));
    }
    // What the plugin accepts must also be sendable: the rehearsal refuses now what the host
    // would refuse at every delivery (a header value with control characters, a token with a
    // line break, a URL whose host does not survive a template).
    state
        .worker
        .rehearse(integration, plugin)
        .await
        .map_err(|message| ApiError::unprocessable("invalid_settings", message))?;
    Ok(())
}

fn check_events(plugin: &Plugin, events: &[String]) -> Result<(), ApiError> {
    if events.is_empty() {
        return Err(ApiError::unprocessable(
            "invalid_events",
            "`events` needs at least one event type, or [\"*\"] for all",
        ));
    }
    if events.iter().any(|e| e == "*") {
        return if events.len() == 1 {
            Ok(())
        } else {
            Err(ApiError::unprocessable(
                "invalid_events",
                "`*` stands for every event type; list it alone",
            ))
        };
    }
    for event in events {
        if let Err(unknown) = event.parse::<EventKind>() {
            return Err(ApiError::unprocessable(
                "unknown_event",
                unknown.to_string(),
            ));
        }
        if !plugin.info().supports(event) {
            return Err(ApiError::unprocessable(
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
