//! The UI's pages and forms. Each handler resolves the shop through the session's caller
//! (another shop answers 404, as in the API), calls the `app` service the API calls, and
//! renders a template; a form that is refused is shown again with the reason beside the
//! fields it names.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use canopy_events::EventKind;
use minijinja::{Value as Ctx, context};
use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{
    CSRF_FIELD, SIGN_IN_COOKIE, Signed, UiError, UiResult, cookie, csrf_refused, render,
    session_cookie,
};
use crate::app::deliveries::{self, ListQuery, parse_id};
use crate::app::integrations::{self, IntegrationIn, IntegrationPatch};
use crate::app::{App, AppError, plugins, shops, sign_in};
use crate::model::{DeliveryStatus, Integration, IntegrationHealth, Shop};
use crate::runtime::{PluginInfo, SettingKind, SettingSpec};

pub fn routes() -> Router<App> {
    let shop = "/ui/shops/{shop}";
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui") }))
        .route("/ui", get(home))
        .route("/ui/", get(home))
        .route("/ui/static/{name}", get(asset))
        .route("/ui/sign-in", get(sign_in_page).post(sign_in_with_token))
        .route("/ui/sign-in/{code}", get(link_page).post(sign_in_with_link))
        .route("/ui/sign-out", post(sign_out))
        .route("/ui/shops", get(shop_list))
        .route(&format!("{shop}/integrations"), get(integration_list))
        .route(
            &format!("{shop}/integrations/new"),
            get(new_integration).post(create_integration),
        )
        .route(
            &format!("{shop}/integrations/{{id}}/edit"),
            get(edit_integration).post(update_integration),
        )
        .route(&format!("{shop}/integrations/{{id}}/enable"), post(enable))
        .route(
            &format!("{shop}/integrations/{{id}}/disable"),
            post(disable),
        )
        .route(
            &format!("{shop}/integrations/{{id}}/delete"),
            get(confirm_delete).post(delete_integration),
        )
        .route(&format!("{shop}/integrations/{{id}}/test"), post(test))
        .route(&format!("{shop}/deliveries"), get(delivery_list))
        .route(
            &format!("{shop}/deliveries/retry"),
            get(confirm_retry_all).post(retry_all),
        )
        .route(&format!("{shop}/deliveries/{{id}}"), get(delivery_page))
        .route(&format!("{shop}/deliveries/{{id}}/retry"), post(retry))
        .route(
            "/ui/plugins",
            // A component may be up to the runtime's size limit; the handler checks it.
            get(plugin_list)
                .post(upload_plugin)
                .layer(DefaultBodyLimit::disable()),
        )
        .route("/ui/plugins/{id}/rollback", post(rollback_plugin))
        .route(
            "/ui/plugins/{id}/delete",
            get(confirm_plugin_delete).post(delete_plugin),
        )
        .route("/ui/{*rest}", get(not_found).post(not_found))
}

async fn not_found() -> UiError {
    UiError(AppError::not_found("page"))
}

// ---- forms ---------------------------------------------------------------------------------

/// An `application/x-www-form-urlencoded` body, fields in order (a name may repeat).
struct FormData(Vec<(String, String)>);

impl FormData {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn parse(bytes: &[u8]) -> FormData {
        FormData(url::form_urlencoded::parse(bytes).into_owned().collect())
    }
}

/// Largest form body (a webhook with 20 body templates fits many times over).
const FORM_BYTES: usize = 1 << 20;

impl<S: Send + Sync> FromRequest<S> for FormData {
    type Rejection = UiError;

    async fn from_request(request: Request, _state: &S) -> Result<FormData, UiError> {
        let bytes = crate::api::read_body(
            request.into_body(),
            FORM_BYTES,
            ("form_too_large", "the form is over 1 MiB".into()),
        )
        .await?;
        Ok(FormData::parse(&bytes))
    }
}

/// A state-changing form of a signed-in user, its CSRF token checked.
struct Posted {
    signed: Signed,
    form: FormData,
}

impl FromRequest<App> for Posted {
    type Rejection = Response;

    async fn from_request(request: Request, app: &App) -> Result<Posted, Response> {
        let (mut parts, body) = request.into_parts();
        let signed = Signed::from_request_parts(&mut parts, app).await?;
        let form = FormData::from_request(Request::from_parts(parts, body), app)
            .await
            .map_err(IntoResponse::into_response)?;
        signed
            .check_csrf(form.get(CSRF_FIELD))
            .map_err(IntoResponse::into_response)?;
        Ok(Posted { signed, form })
    }
}

use axum::extract::FromRequestParts as _;

/// A template value from anything serialisable.
fn ser<T: Serialize>(value: T) -> Ctx {
    Ctx::from(minijinja::value::Serde(value))
}

fn see_other(location: String) -> Response {
    Redirect::to(&location).into_response()
}

/// A query string from pairs, leaving out empty values.
fn query_string<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut serializer = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs {
        if !value.is_empty() {
            serializer.append_pair(name, value);
        }
    }
    serializer.finish()
}

// ---- static files, home, sign-in -----------------------------------------------------------

async fn asset(Path(name): Path<String>) -> Response {
    let (body, content_type): (&'static [u8], &str) = match name.as_str() {
        "htmx.min.js" => (
            include_bytes!("../../ui/static/htmx.min.js"),
            "text/javascript",
        ),
        "ui.js" => (include_bytes!("../../ui/static/ui.js"), "text/javascript"),
        "ui.css" => (include_bytes!("../../ui/static/ui.css"), "text/css"),
        _ => return not_found().await.into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

async fn home(signed: Result<Signed, Response>) -> Response {
    match signed.map(|s| s.caller) {
        Ok(crate::app::access::Caller::Platform) => see_other("/ui/shops".into()),
        Ok(crate::app::access::Caller::Shop { shop, .. }) => {
            see_other(format!("/ui/shops/{shop}/integrations"))
        }
        _ => see_other("/ui/sign-in".into()),
    }
}

/// A sign-in page: the form's CSRF token is tied to a pre-session cookie set with it.
fn sign_in_form(app: &App, template: &str, status: StatusCode, ctx: Ctx) -> Response {
    let token = sign_in::form_token(app);
    let mut response = render(status, template, context! { csrf => token.clone(), ..ctx });
    let cookie =
        format!("{SIGN_IN_COOKIE}={token}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=3600");
    response.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::try_from(cookie).expect("a cookie is ASCII"),
    );
    response
}

async fn sign_in_page(State(app): State<App>) -> Response {
    sign_in_form(&app, "sign_in.html", StatusCode::OK, context! {})
}

/// Refuses a sign-in form whose token is not the pre-session cookie's (and genuine).
fn check_sign_in_csrf(app: &App, headers: &HeaderMap, form: &FormData) -> Result<(), UiError> {
    match (cookie(headers, SIGN_IN_COOKIE), form.get(CSRF_FIELD)) {
        (Some(expected), Some(presented))
            if sign_in::form_token_matches(app, &expected, presented) =>
        {
            Ok(())
        }
        _ => Err(csrf_refused()),
    }
}

/// Signed in: the session cookie, the pre-session one cleared, and on to the home page.
fn signed_in(app: &App, session: &sign_in::Session) -> Response {
    let mut response = see_other("/ui".into());
    let headers = response.headers_mut();
    headers.append(header::SET_COOKIE, session_cookie(app, Some(session)));
    headers.append(
        header::SET_COOKIE,
        HeaderValue::from_static("canopy_sign_in=; Path=/ui; Max-Age=0"),
    );
    response
}

async fn sign_in_with_token(
    State(app): State<App>,
    headers: HeaderMap,
    form: FormData,
) -> UiResult {
    check_sign_in_csrf(&app, &headers, &form)?;
    let token = form.get("token").unwrap_or_default();
    match sign_in::with_token(&app, token).await? {
        Some(session) => Ok(signed_in(&app, &session)),
        None => Ok(sign_in_form(
            &app,
            "sign_in.html",
            StatusCode::UNAUTHORIZED,
            context! { error => "That token does not open the admin: use the platform admin token or a shop admin token (an ingest token, a revoked or a mistyped one does not)." },
        )),
    }
}

async fn link_page(State(app): State<App>, Path(code): Path<String>) -> UiResult {
    let shop = sign_in::link_shop(&app, &code)?;
    Ok(sign_in_form(
        &app,
        "sign_in_link.html",
        StatusCode::OK,
        context! { shop, code },
    ))
}

async fn sign_in_with_link(
    State(app): State<App>,
    Path(code): Path<String>,
    headers: HeaderMap,
    form: FormData,
) -> UiResult {
    check_sign_in_csrf(&app, &headers, &form)?;
    let session = sign_in::with_link(&app, &code).await?;
    Ok(signed_in(&app, &session))
}

async fn sign_out(State(app): State<App>, posted: Posted) -> Response {
    let _ = posted.signed;
    let mut response = see_other("/ui/sign-in".into());
    response
        .headers_mut()
        .append(header::SET_COOKIE, session_cookie(&app, None));
    response
}

// ---- shops ---------------------------------------------------------------------------------

async fn shop_list(State(app): State<App>, signed: Signed) -> UiResult {
    let shops = shops::list(&app, &signed.caller, None, 500).await?;
    let shops: Vec<_> = shops
        .into_iter()
        .filter(|s| !s.is_deleted())
        .map(|s| context! { id => s.id, name => s.name, created_at => s.created_at.to_string() })
        .collect();
    Ok(render(
        StatusCode::OK,
        "shops.html",
        context! { shops, nav => "shops", ..signed.base() },
    ))
}

/// The shop a path names, as the session may see it.
async fn shop_of(app: &App, signed: &Signed, named: &str) -> Result<Shop, UiError> {
    Ok(signed.caller.shop(app, named).await?)
}

/// A shop page's context: the shop, and the session's.
fn shop_ctx(shop: &Shop, signed: &Signed) -> Ctx {
    context! {
        shop => context! { id => shop.id.clone(), name => shop.name.clone() },
        ..signed.base()
    }
}

/// A one-line message after a change, from a fixed list (nothing from the URL is shown).
fn notice(query: &Option<String>) -> Option<String> {
    let pairs: HashMap<String, String> = query
        .as_deref()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let count = pairs
        .get("count")
        .and_then(|c| c.parse::<u64>().ok())
        .unwrap_or(0);
    Some(match pairs.get("notice")?.as_str() {
        "created" => "Integration added.".to_owned(),
        "saved" => "Integration saved.".to_owned(),
        "deleted" => "Integration deleted.".to_owned(),
        "enabled" => "Integration enabled; its paused deliveries are on their way.".to_owned(),
        "disabled" => {
            "Integration disabled; new deliveries wait until it is enabled again.".to_owned()
        }
        "retried" => "Delivery queued again.".to_owned(),
        "requeued" => format!("{count} deliveries queued again."),
        "uploaded" => "Plugin version uploaded and active.".to_owned(),
        "rolled-back" => "Plugin version activated.".to_owned(),
        "plugin-deleted" => "Plugin deleted.".to_owned(),
        _ => return None,
    })
}

// ---- integrations --------------------------------------------------------------------------

#[derive(Serialize)]
struct Bar {
    x: u32,
    /// Delivered part, from the bottom.
    ok_y: f64,
    ok_h: f64,
    /// Failed part, above it.
    bad_y: f64,
    bad_h: f64,
    title: String,
}

#[derive(Serialize)]
struct Card {
    id: String,
    name: String,
    plugin: String,
    plugin_name: String,
    events: Vec<String>,
    all_events: bool,
    /// `active`, `disabled` or `auto-disabled`.
    state: &'static str,
    reason: Option<String>,
    paused: u64,
    due: u64,
    scheduled: u64,
    in_flight: u64,
    attempts_day: u64,
    failed_day: u64,
    attempts_hour: u64,
    failed_hour: u64,
    success_rate: Option<String>,
    p95: Option<String>,
    last_success: Option<String>,
    last_failure: Option<String>,
    bars: Vec<Bar>,
    spark_label: String,
    test_events: Vec<(String, String)>,
}

const SPARK_HEIGHT: f64 = 28.0;

fn card(app: &App, integration: Integration, health: Option<IntegrationHealth>) -> Card {
    let info = app
        .plugins
        .get(&integration.plugin)
        .map(|p| p.info().clone());
    let all_events = integration.events.iter().any(|e| e == "*");
    let label = |key: &str| {
        key.parse::<EventKind>()
            .map(|k| k.display_name().to_owned())
            .unwrap_or_else(|_| key.to_owned())
    };
    let test_events: Vec<(String, String)> = EventKind::ALL
        .iter()
        .filter(|k| integration.subscribes_to(k.key()))
        .filter(|k| info.as_ref().is_none_or(|i| i.supports(k.key())))
        .map(|k| (k.key().to_owned(), k.display_name().to_owned()))
        .collect();
    let state = match (integration.enabled, &integration.disabled_reason) {
        (true, _) => "active",
        (false, Some(_)) => "auto-disabled",
        (false, None) => "disabled",
    };
    let health = health.unwrap_or_else(|| {
        IntegrationHealth::from_buckets(
            integration.id,
            &[],
            Default::default(),
            Default::default(),
            app.clock.now(),
        )
    });
    let peak = health
        .hourly
        .iter()
        .map(|p| p.attempts)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let bars = health
        .hourly
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let ok = p.attempts.saturating_sub(p.failed) as f64 / peak * SPARK_HEIGHT;
            let bad = p.failed as f64 / peak * SPARK_HEIGHT;
            Bar {
                x: i as u32 * 6,
                ok_y: SPARK_HEIGHT - ok,
                ok_h: ok,
                bad_y: SPARK_HEIGHT - ok - bad,
                bad_h: bad,
                title: format!(
                    "{}: {} attempts, {} failed",
                    super::when(p.hour.to_string()),
                    p.attempts,
                    p.failed
                ),
            }
        })
        .collect();
    let day = &health.last_day;
    Card {
        id: integration.id.to_string(),
        name: integration.name,
        plugin_name: info
            .as_ref()
            .map_or_else(|| integration.plugin.clone(), |i| i.name.clone()),
        plugin: integration.plugin,
        events: if all_events {
            Vec::new()
        } else {
            integration.events.iter().map(|e| label(e)).collect()
        },
        all_events,
        state,
        reason: integration.disabled_reason,
        paused: health.queue.paused,
        due: health.queue.due,
        scheduled: health.queue.scheduled,
        in_flight: health.queue.in_flight,
        attempts_day: day.attempts,
        failed_day: day.failed,
        attempts_hour: health.last_hour.attempts,
        failed_hour: health.last_hour.failed,
        success_rate: day.success_rate.map(|r| format!("{:.1}%", r * 100.0)),
        p95: day.p95_ms.map(duration_text),
        last_success: health.last_success_at.map(|t| super::when(t.to_string())),
        last_failure: health.last_failure_at.map(|t| super::when(t.to_string())),
        spark_label: format!(
            "Attempts per hour over the last day: {} in all, {} failed",
            day.attempts, day.failed
        ),
        bars,
        test_events,
    }
}

fn duration_text(ms: u64) -> String {
    if ms < 1_000 {
        format!("≤ {ms} ms")
    } else {
        format!("≤ {:.1} s", ms as f64 / 1_000.0)
    }
}

async fn integration_list(
    State(app): State<App>,
    signed: Signed,
    Path(shop): Path<String>,
    RawQuery(query): RawQuery,
) -> UiResult {
    let shop = shop_of(&app, &signed, &shop).await?;
    let mut cards = Vec::new();
    for integration in integrations::list(&app, &shop).await? {
        let health = integrations::health(&app, &shop, integration.id).await.ok();
        cards.push(card(&app, integration, health));
    }
    Ok(render(
        StatusCode::OK,
        "integrations.html",
        context! { cards => ser(&cards), notice => notice(&query), nav => "integrations", ..shop_ctx(&shop, &signed) },
    ))
}

/// What a form shows and what was typed into it.
#[derive(Debug, Default, Clone)]
struct Draft {
    name: String,
    events: BTreeSet<String>,
    settings: Map<String, Value>,
    /// Hints of the secrets that are set (edit).
    hints: BTreeMap<String, String>,
    max_in_flight: String,
}

#[derive(Serialize)]
struct TemplateField {
    key: String,
    label: String,
    input: String,
    value: String,
    sample: &'static str,
}

#[derive(Serialize)]
struct Field {
    name: String,
    input: String,
    label: String,
    description: String,
    /// text, url, integer, boolean, choice, string-map, template-map, secret
    kind: &'static str,
    required: bool,
    value: String,
    checked: bool,
    options: Vec<String>,
    hint: Option<String>,
    error: Option<String>,
    templates: Vec<TemplateField>,
}

#[derive(Serialize)]
struct EventOption {
    key: &'static str,
    label: &'static str,
    checked: bool,
}

#[derive(Serialize)]
struct EventGroup {
    id: &'static str,
    label: &'static str,
    events: Vec<EventOption>,
}

/// Seed 000's four groups of event types, in `EventKind::ALL` order.
const GROUPS: [(&str, &str, std::ops::Range<usize>); 4] = [
    ("seeds", "Seeds earned", 0..6),
    ("tier-review", "Tier & review", 6..10),
    ("rewards", "Rewards", 10..14),
    ("eco-referral", "Eco & referral", 14..19),
];

fn event_groups(info: &PluginInfo, draft: &Draft) -> Vec<EventGroup> {
    GROUPS
        .iter()
        .map(|(id, label, range)| EventGroup {
            id,
            label,
            events: EventKind::ALL[range.clone()]
                .iter()
                .filter(|k| info.supports(k.key()))
                .map(|k| EventOption {
                    key: k.key(),
                    label: k.display_name(),
                    checked: draft.events.contains(k.key()),
                })
                .collect(),
        })
        .filter(|g| !g.events.is_empty())
        .collect()
}

fn setting_kind(spec: &SettingSpec) -> &'static str {
    if spec.secret {
        return "secret";
    }
    match spec.kind {
        SettingKind::Text => "text",
        SettingKind::Url => "url",
        SettingKind::Integer => "integer",
        SettingKind::Boolean => "boolean",
        SettingKind::Choice => "choice",
        SettingKind::StringMap => "string-map",
        SettingKind::TemplateMap => "template-map",
    }
}

fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn fields(info: &PluginInfo, draft: &Draft, errors: &BTreeMap<String, String>) -> Vec<Field> {
    info.settings
        .iter()
        .map(|spec| {
            let kind = setting_kind(spec);
            let current = draft.settings.get(&spec.name);
            let value = match (kind, current) {
                ("string-map", Some(Value::Object(map))) => map
                    .iter()
                    .map(|(k, v)| format!("{k}: {}", value_text(v)))
                    .collect::<Vec<_>>()
                    .join("\n"),
                (_, Some(v)) => value_text(v),
                _ => String::new(),
            };
            let templates = if kind == "template-map" {
                let map = current.and_then(Value::as_object);
                std::iter::once((
                    "*",
                    "Every other event type",
                    EventKind::ALL[0].sample_json(),
                ))
                .chain(
                    EventKind::ALL
                        .iter()
                        .filter(|k| info.supports(k.key()))
                        .map(|k| (k.key(), k.display_name(), k.sample_json())),
                )
                .map(|(key, label, sample)| TemplateField {
                    key: key.to_owned(),
                    label: label.to_owned(),
                    input: format!("t.{}.{key}", spec.name),
                    value: map
                        .and_then(|m| m.get(key))
                        .map(value_text)
                        .unwrap_or_default(),
                    sample,
                })
                .collect()
            } else {
                Vec::new()
            };
            Field {
                input: if spec.secret {
                    format!("x.{}", spec.name)
                } else {
                    format!("s.{}", spec.name)
                },
                name: spec.name.clone(),
                label: spec.label.clone(),
                description: spec.description.clone(),
                kind,
                required: spec.required,
                checked: matches!(current, Some(Value::Bool(true))),
                value,
                options: spec.options.clone(),
                hint: draft.hints.get(&spec.name).cloned(),
                error: errors.get(&spec.name).cloned(),
                templates,
            }
        })
        .collect()
}

/// A new integration's draft: the plugin's defaults.
fn default_draft(info: &PluginInfo) -> Draft {
    let mut settings = Map::new();
    for spec in &info.settings {
        if let Some(default) = spec
            .default_value
            .as_deref()
            .and_then(|t| serde_json::from_str::<Value>(t).ok())
        {
            settings.insert(spec.name.clone(), default);
        }
    }
    Draft {
        name: info.name.clone(),
        events: BTreeSet::new(),
        settings,
        hints: BTreeMap::new(),
        max_in_flight: String::new(),
    }
}

fn draft_of(integration: &Integration) -> Draft {
    Draft {
        name: integration.name.clone(),
        events: integration.events.iter().cloned().collect(),
        settings: match integrations::without_url_credentials(integration.settings.clone()) {
            Value::Object(map) => map,
            _ => Map::new(),
        },
        hints: integration
            .secrets
            .iter()
            .map(|(n, s)| (n.clone(), s.hint.clone()))
            .collect(),
        max_in_flight: integration
            .max_in_flight
            .map(|c| c.to_string())
            .unwrap_or_default(),
    }
}

/// What a submitted form says: the draft, secrets to set (`Some`) or remove (`None`), and
/// the fields that could not be read.
struct Submitted {
    draft: Draft,
    secrets: BTreeMap<String, Option<String>>,
    max_in_flight: Option<u32>,
    errors: BTreeMap<String, String>,
}

fn read_form(info: &PluginInfo, form: &FormData, hints: BTreeMap<String, String>) -> Submitted {
    let mut errors = BTreeMap::new();
    let mut settings = Map::new();
    let mut secrets = BTreeMap::new();
    for spec in &info.settings {
        let field = |prefix: &str| form.get(&format!("{prefix}.{}", spec.name));
        if spec.secret {
            if let Some(value) = field("x").filter(|v| !v.is_empty()) {
                secrets.insert(spec.name.clone(), Some(value.to_owned()));
            } else if field("r").is_some() {
                secrets.insert(spec.name.clone(), None);
            }
            continue;
        }
        let text = field("s").unwrap_or_default();
        let value = match spec.kind {
            SettingKind::Boolean => Some(Value::Bool(field("s").is_some())),
            _ if spec.kind != SettingKind::TemplateMap && text.trim().is_empty() => None,
            SettingKind::Integer => match text.trim().parse::<i64>() {
                Ok(n) => Some(Value::from(n)),
                Err(_) => {
                    errors.insert(spec.name.clone(), "must be a whole number".to_owned());
                    None
                }
            },
            SettingKind::StringMap => {
                let mut map = Map::new();
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    match line.split_once(':') {
                        Some((k, v)) if !k.trim().is_empty() => {
                            map.insert(k.trim().to_owned(), Value::String(v.trim().to_owned()));
                        }
                        _ => {
                            errors.insert(
                                spec.name.clone(),
                                format!("each line is `Name: value`; {line:?} is not"),
                            );
                        }
                    }
                }
                Some(Value::Object(map))
            }
            SettingKind::TemplateMap => {
                let prefix = format!("t.{}.", spec.name);
                let map: Map<String, Value> = form
                    .0
                    .iter()
                    .filter_map(|(n, v)| Some((n.strip_prefix(&prefix)?, v)))
                    .filter(|(_, v)| !v.trim().is_empty())
                    .map(|(k, v)| (k.to_owned(), Value::String(v.clone())))
                    .collect();
                (!map.is_empty()).then_some(Value::Object(map))
            }
            _ => Some(Value::String(text.trim().to_owned())),
        };
        if let Some(value) = value {
            settings.insert(spec.name.clone(), value);
        }
    }
    let events: BTreeSet<String> = if form.all("events").any(|e| e == "*") {
        BTreeSet::from(["*".to_owned()])
    } else {
        form.all("events").map(str::to_owned).collect()
    };
    let cap_text = form
        .get("max_in_flight")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let max_in_flight = if cap_text.is_empty() {
        None
    } else {
        match cap_text.parse::<u32>() {
            Ok(n) => Some(n),
            Err(_) => {
                errors.insert(
                    "max_in_flight".into(),
                    "must be a whole number from 1 to 256".into(),
                );
                None
            }
        }
    };
    Submitted {
        draft: Draft {
            name: form.get("name").unwrap_or_default().trim().to_owned(),
            events,
            settings,
            hints,
            max_in_flight: cap_text,
        },
        secrets,
        max_in_flight,
        errors,
    }
}

/// Where a refusal goes in the form: beside the setting it names, or at the top.
fn place_error(
    info: &PluginInfo,
    error: &AppError,
    errors: &mut BTreeMap<String, String>,
) -> Option<String> {
    let problems = error
        .details
        .as_ref()
        .and_then(|d| d.get("problems"))
        .and_then(Value::as_array);
    let mut rest = Vec::new();
    for problem in problems.into_iter().flatten() {
        let field = problem.get("field").and_then(Value::as_str).unwrap_or("");
        let message = problem
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let named = info.settings.iter().find(|s| {
            field == s.name
                || field
                    .strip_prefix(s.name.as_str())
                    .is_some_and(|r| r.starts_with(['.', '[']))
        });
        match named {
            // The whole message says what to do instead (use an authentication secret).
            Some(spec) if error.code == "credentials_in_url" => {
                errors.insert(spec.name.clone(), error.message.clone());
            }
            Some(spec) => {
                errors.insert(spec.name.clone(), message);
            }
            None => rest.push(message),
        }
    }
    if problems.is_some() && rest.is_empty() {
        return None;
    }
    match error.code {
        "invalid_events" | "unknown_event" | "unsupported_event" => {
            errors.insert("events".into(), error.message.clone());
            None
        }
        "invalid_name" => {
            errors.insert("name".into(), error.message.clone());
            None
        }
        _ if problems.is_some() => Some(rest.join("; ")),
        _ => Some(error.message.clone()),
    }
}

struct FormPage<'a> {
    shop: &'a Shop,
    info: &'a PluginInfo,
    draft: &'a Draft,
    errors: &'a BTreeMap<String, String>,
    /// The integration being edited.
    editing: Option<&'a str>,
    error: Option<String>,
}

fn form_page(signed: &Signed, status: StatusCode, page: FormPage<'_>) -> Response {
    let action = match page.editing {
        Some(id) => format!("/ui/shops/{}/integrations/{id}/edit", page.shop.id),
        None => format!(
            "/ui/shops/{}/integrations/new?{}",
            page.shop.id,
            query_string([("plugin", page.info.id.as_str())])
        ),
    };
    render(
        status,
        "integration_form.html",
        context! {
            plugin => context! { id => page.info.id.clone(), name => page.info.name.clone(), description => page.info.description.clone() },
            name => page.draft.name.clone(),
            all_events => page.draft.events.contains("*"),
            groups => ser(event_groups(page.info, page.draft)),
            fields => ser(fields(page.info, page.draft, page.errors)),
            max_in_flight => page.draft.max_in_flight.clone(),
            errors => page.errors.clone(),
            error => page.error,
            editing => page.editing,
            action,
            nav => "integrations",
            ..shop_ctx(page.shop, signed)
        },
    )
}

fn plugin_info(app: &App, id: &str) -> Result<PluginInfo, UiError> {
    app.plugins
        .get(id)
        .map(|p| p.info().clone())
        .ok_or_else(|| UiError(AppError::not_found("plugin")))
}

async fn new_integration(
    State(app): State<App>,
    signed: Signed,
    Path(shop): Path<String>,
    RawQuery(query): RawQuery,
) -> UiResult {
    let shop = shop_of(&app, &signed, &shop).await?;
    let plugin: Option<String> = query.as_deref().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(n, _)| n == "plugin")
            .map(|(_, v)| v.into_owned())
    });
    let Some(plugin) = plugin.filter(|p| !p.is_empty()) else {
        let plugins: Vec<_> = plugins::list(&app)
            .await?
            .into_iter()
            .map(|p| context! { id => p.info.id, name => p.info.name, description => p.info.description })
            .collect();
        return Ok(render(
            StatusCode::OK,
            "choose_plugin.html",
            context! { plugins, nav => "integrations", ..shop_ctx(&shop, &signed) },
        ));
    };
    let info = plugin_info(&app, &plugin)?;
    let draft = default_draft(&info);
    Ok(form_page(
        &signed,
        StatusCode::OK,
        FormPage {
            shop: &shop,
            info: &info,
            draft: &draft,
            errors: &BTreeMap::new(),
            editing: None,
            error: None,
        },
    ))
}

async fn create_integration(
    State(app): State<App>,
    Path(shop): Path<String>,
    Posted { signed, form }: Posted,
) -> UiResult {
    let shop = shop_of(&app, &signed, &shop).await?;
    let info = plugin_info(&app, form.get("plugin").unwrap_or_default())?;
    let submitted = read_form(&info, &form, BTreeMap::new());
    let mut refusal = None;
    if submitted.errors.is_empty() {
        let input = IntegrationIn {
            name: submitted.draft.name.clone(),
            plugin: info.id.clone(),
            events: submitted.draft.events.iter().cloned().collect(),
            settings: submitted.draft.settings.clone(),
            secrets: submitted
                .secrets
                .iter()
                .filter_map(|(n, v)| Some((n.clone(), v.clone()?)))
                .collect(),
            enabled: true,
            rate_limit: None,
            max_in_flight: submitted.max_in_flight,
        };
        match integrations::create(&app, &shop, input).await {
            Ok(saved) if saved.generated.is_empty() => {
                return Ok(see_other(format!(
                    "/ui/shops/{}/integrations?notice=created",
                    shop.id
                )));
            }
            Ok(saved) => {
                return Ok(render(
                    StatusCode::CREATED,
                    "created.html",
                    context! {
                        name => saved.integration.name,
                        generated => saved.generated,
                        nav => "integrations",
                        ..shop_ctx(&shop, &signed)
                    },
                ));
            }
            Err(e) => refusal = Some(e),
        }
    }
    refused_form(&signed, &shop, &info, submitted, None, refusal)
}

/// A form the service refused (or that could not be read): shown again as typed, each
/// message beside its field. A server-side failure is an error page instead.
fn refused_form(
    signed: &Signed,
    shop: &Shop,
    info: &PluginInfo,
    mut submitted: Submitted,
    editing: Option<&str>,
    refusal: Option<AppError>,
) -> UiResult {
    let error = match refusal {
        Some(e) if e.status.is_client_error() => place_error(info, &e, &mut submitted.errors),
        Some(e) => return Err(e.into()),
        None => None,
    };
    Ok(form_page(
        signed,
        StatusCode::UNPROCESSABLE_ENTITY,
        FormPage {
            shop,
            info,
            draft: &submitted.draft,
            errors: &submitted.errors,
            editing,
            error,
        },
    ))
}

async fn integration_of(
    app: &App,
    signed: &Signed,
    shop: &str,
    id: &str,
) -> Result<(Shop, Integration), UiError> {
    let shop = shop_of(app, signed, shop).await?;
    let integration = integrations::get(app, &shop, parse_id(id)?).await?;
    Ok((shop, integration))
}

async fn edit_integration(
    State(app): State<App>,
    signed: Signed,
    Path((shop, id)): Path<(String, String)>,
) -> UiResult {
    let (shop, integration) = integration_of(&app, &signed, &shop, &id).await?;
    let info = plugin_info(&app, &integration.plugin)?;
    let draft = draft_of(&integration);
    Ok(form_page(
        &signed,
        StatusCode::OK,
        FormPage {
            shop: &shop,
            info: &info,
            draft: &draft,
            errors: &BTreeMap::new(),
            editing: Some(&id),
            error: None,
        },
    ))
}

async fn update_integration(
    State(app): State<App>,
    Path((shop, id)): Path<(String, String)>,
    Posted { signed, form }: Posted,
) -> UiResult {
    let (shop, integration) = integration_of(&app, &signed, &shop, &id).await?;
    let info = plugin_info(&app, &integration.plugin)?;
    let submitted = read_form(&info, &form, draft_of(&integration).hints);
    let mut refusal = None;
    if submitted.errors.is_empty() {
        let patch = IntegrationPatch {
            name: Some(submitted.draft.name.clone()),
            events: Some(submitted.draft.events.iter().cloned().collect()),
            settings: Some(submitted.draft.settings.clone()),
            secrets: (!submitted.secrets.is_empty()).then(|| submitted.secrets.clone()),
            enabled: None,
            rate_limit: None,
            max_in_flight: Some(submitted.max_in_flight),
        };
        match integrations::update(&app, &shop, integration.id, patch).await {
            Ok(_) => {
                return Ok(see_other(format!(
                    "/ui/shops/{}/integrations?notice=saved",
                    shop.id
                )));
            }
            Err(e) => refusal = Some(e),
        }
    }
    refused_form(&signed, &shop, &info, submitted, Some(&id), refusal)
}

async fn set_enabled(app: &App, signed: &Signed, shop: &str, id: &str, enabled: bool) -> UiResult {
    let (shop, integration) = integration_of(app, signed, shop, id).await?;
    let patch = IntegrationPatch {
        enabled: Some(enabled),
        ..IntegrationPatch::default()
    };
    integrations::update(app, &shop, integration.id, patch).await?;
    let notice = if enabled { "enabled" } else { "disabled" };
    Ok(see_other(format!(
        "/ui/shops/{}/integrations?notice={notice}",
        shop.id
    )))
}

async fn enable(
    State(app): State<App>,
    Path((shop, id)): Path<(String, String)>,
    posted: Posted,
) -> UiResult {
    set_enabled(&app, &posted.signed, &shop, &id, true).await
}

async fn disable(
    State(app): State<App>,
    Path((shop, id)): Path<(String, String)>,
    posted: Posted,
) -> UiResult {
    set_enabled(&app, &posted.signed, &shop, &id, false).await
}

async fn confirm_delete(
    State(app): State<App>,
    signed: Signed,
    Path((shop, id)): Path<(String, String)>,
) -> UiResult {
    let (shop, integration) = integration_of(&app, &signed, &shop, &id).await?;
    let health = integrations::health(&app, &shop, integration.id).await?;
    let waiting = health.queue.due + health.queue.scheduled + health.queue.paused;
    Ok(render(
        StatusCode::OK,
        "confirm.html",
        context! {
            title => format!("Delete “{}”?", integration.name),
            message => format!(
                "The integration stops at once. Its {waiting} queued or paused deliveries end as failed, with the reason “the integration was deleted”; its event log stays."
            ),
            action => format!("/ui/shops/{}/integrations/{id}/delete", shop.id),
            button => "Delete integration",
            danger => true,
            back => format!("/ui/shops/{}/integrations", shop.id),
            fields => Vec::<(String, String)>::new(),
            nav => "integrations",
            ..shop_ctx(&shop, &signed)
        },
    ))
}

async fn delete_integration(
    State(app): State<App>,
    Path((shop, id)): Path<(String, String)>,
    posted: Posted,
) -> UiResult {
    let (shop, integration) = integration_of(&app, &posted.signed, &shop, &id).await?;
    integrations::delete(&app, &shop, integration.id).await?;
    Ok(see_other(format!(
        "/ui/shops/{}/integrations?notice=deleted",
        shop.id
    )))
}

async fn test(
    State(app): State<App>,
    Path((shop, id)): Path<(String, String)>,
    headers: HeaderMap,
    Posted { signed, form }: Posted,
) -> UiResult {
    let (shop, integration) = integration_of(&app, &signed, &shop, &id).await?;
    let event = form.get("event").filter(|e| !e.is_empty());
    let tested = integrations::test(&app, &shop, integration.id, event).await?;
    let layout = if headers.contains_key("hx-request") {
        "fragment.html"
    } else {
        "base.html"
    };
    let label = tested
        .event
        .parse::<EventKind>()
        .map_or(tested.event.clone(), |k| k.display_name().to_owned());
    Ok(render(
        StatusCode::OK,
        "test_result.html",
        context! {
            layout,
            name => integration.name,
            event => label,
            result => ser(&tested.result),
            nav => "integrations",
            ..shop_ctx(&shop, &signed)
        },
    ))
}

// ---- deliveries ----------------------------------------------------------------------------

const FILTERS: [&str; 6] = ["integration", "event", "customer", "status", "from", "to"];

/// The log's filters from a query string; a `from`/`to` typed in a date-time field
/// (`2026-02-06T14:30`, no zone) is read as UTC.
fn list_query(query: &Option<String>) -> (ListQuery, BTreeMap<String, String>) {
    let pairs: BTreeMap<String, String> = query
        .as_deref()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let get = |name: &str| pairs.get(name).filter(|v| !v.is_empty()).cloned();
    let time = |name: &str| {
        get(name).map(|t| {
            if t.len() == 16 && t.as_bytes()[10] == b'T' {
                format!("{t}:00Z")
            } else {
                t
            }
        })
    };
    let query = ListQuery {
        integration: get("integration"),
        event: get("event"),
        customer: get("customer"),
        status: get("status"),
        from: time("from"),
        to: time("to"),
        limit: None,
        cursor: get("cursor"),
    };
    (query, pairs)
}

fn filters_only(pairs: &BTreeMap<String, String>) -> Vec<(&str, &str)> {
    FILTERS
        .iter()
        .filter_map(|name| Some((*name, pairs.get(*name)?.as_str())))
        .collect()
}

const STATUSES: [&str; 7] = [
    "pending",
    "retrying",
    "succeeded",
    "failed",
    "exhausted",
    "skipped",
    "paused",
];

async fn integration_names(app: &App, shop: &Shop) -> Result<HashMap<Uuid, String>, UiError> {
    Ok(integrations::list(app, shop)
        .await?
        .into_iter()
        .map(|i| (i.id, i.name))
        .collect())
}

fn event_label(key: &str) -> String {
    key.parse::<EventKind>()
        .map_or_else(|_| key.to_owned(), |k| k.display_name().to_owned())
}

async fn delivery_list(
    State(app): State<App>,
    signed: Signed,
    Path(shop): Path<String>,
    RawQuery(raw): RawQuery,
) -> UiResult {
    let shop = shop_of(&app, &signed, &shop).await?;
    let (query, pairs) = list_query(&raw);
    let names = integration_names(&app, &shop).await?;
    let filters = filters_only(&pairs);
    let (page, error) = match deliveries::list(&app, &shop, &query).await {
        Ok(page) => (Some(page), None),
        Err(e) if e.status.is_client_error() => (None, Some(e.message)),
        Err(e) => return Err(e.into()),
    };
    let rows: Vec<_> = page
        .as_ref()
        .map(|p| p.deliveries.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|d| {
            context! {
                id => d.id.to_string(),
                created_at => d.created_at.to_string(),
                plugin => d.plugin.clone(),
                integration => names.get(&d.integration_id).cloned().unwrap_or_else(|| "(deleted)".into()),
                event => event_label(&d.event),
                customer_name => d.customer_name.clone(),
                customer_email => d.customer_email.clone(),
                status => ser(d.status),
                attempts => d.attempts,
                last_error => d.last_error.clone(),
            }
        })
        .collect();
    let next = page.as_ref().and_then(|p| p.next_cursor).map(|cursor| {
        let cursor = cursor.to_string();
        let mut pairs = filters.clone();
        pairs.push(("cursor", &cursor));
        format!("?{}", query_string(pairs))
    });
    let mut integration_options: Vec<_> = names
        .iter()
        .map(|(id, name)| (id.to_string(), name.clone()))
        .collect();
    integration_options.sort_by(|a, b| a.1.cmp(&b.1));
    let events: Vec<_> = EventKind::ALL
        .iter()
        .map(|k| (k.key(), k.display_name()))
        .collect();
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    Ok(render(
        status,
        "deliveries.html",
        context! {
            rows,
            error,
            next,
            paged => pairs.contains_key("cursor"),
            filtered => !filters.is_empty(),
            filter_query => query_string(filters.clone()),
            values => pairs.clone(),
            integrations => integration_options,
            events,
            statuses => STATUSES,
            notice => notice(&raw),
            nav => "deliveries",
            ..shop_ctx(&shop, &signed)
        },
    ))
}

async fn delivery_page(
    State(app): State<App>,
    signed: Signed,
    Path((shop, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> UiResult {
    let shop = shop_of(&app, &signed, &shop).await?;
    let detail = deliveries::get(&app, &shop, parse_id(&id)?).await?;
    let names = integration_names(&app, &shop).await?;
    let d = &detail.delivery;
    let retryable = matches!(d.status, DeliveryStatus::Failed | DeliveryStatus::Exhausted);
    Ok(render(
        StatusCode::OK,
        "delivery.html",
        context! {
            delivery => ser(d),
            integration => names.get(&d.integration_id).cloned(),
            event => event_label(&d.event),
            attempts => ser(detail.attempts.iter().rev().collect::<Vec<_>>()),
            retryable,
            notice => notice(&raw),
            nav => "deliveries",
            ..shop_ctx(&shop, &signed)
        },
    ))
}

async fn retry(
    State(app): State<App>,
    Path((shop, id)): Path<(String, String)>,
    posted: Posted,
) -> UiResult {
    let shop = shop_of(&app, &posted.signed, &shop).await?;
    deliveries::retry(&app, &shop, parse_id(&id)?).await?;
    Ok(see_other(format!(
        "/ui/shops/{}/deliveries/{id}?notice=retried",
        shop.id
    )))
}

/// Counting the matching deliveries for the confirmation stops here.
const COUNT_LIMIT: usize = 10_000;

async fn confirm_retry_all(
    State(app): State<App>,
    signed: Signed,
    Path(shop): Path<String>,
    RawQuery(raw): RawQuery,
) -> UiResult {
    let shop = shop_of(&app, &signed, &shop).await?;
    let (query, pairs) = list_query(&raw);
    let statuses: Vec<&str> = match query.status.as_deref() {
        None => vec!["failed", "exhausted"],
        Some(s @ ("failed" | "exhausted")) => vec![s],
        Some(other) => {
            return Err(UiError(AppError::bad_request(
                "invalid_query",
                format!("only failed or exhausted deliveries can be retried, not {other}"),
            )));
        }
    };
    let mut count = 0;
    'count: for status in statuses {
        let mut page = ListQuery {
            status: Some(status.to_owned()),
            limit: Some(deliveries::MAX_PAGE),
            cursor: None,
            ..query.clone()
        };
        loop {
            let listed = deliveries::list(&app, &shop, &page).await?;
            count += listed.deliveries.len();
            match listed.next_cursor {
                Some(cursor) if count < COUNT_LIMIT => page.cursor = Some(cursor.to_string()),
                _ => {
                    if count >= COUNT_LIMIT {
                        break 'count;
                    }
                    break;
                }
            }
        }
    }
    let filters = filters_only(&pairs);
    let counted = if count >= COUNT_LIMIT {
        format!("{COUNT_LIMIT} or more")
    } else {
        count.to_string()
    };
    let fields: Vec<(String, String)> = filters
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect();
    Ok(render(
        StatusCode::OK,
        "confirm.html",
        context! {
            title => format!("Retry {counted} deliveries?"),
            message => format!(
                "Every failed or exhausted delivery that matches the filters ({}) is queued again and tried at once.",
                if filters.is_empty() { "none: the whole log".to_owned() } else {
                    filters.iter().map(|(n, v)| format!("{n} = {v}")).collect::<Vec<_>>().join(", ")
                }
            ),
            action => format!("/ui/shops/{}/deliveries/retry", shop.id),
            button => format!("Retry {counted} deliveries"),
            danger => false,
            back => format!("/ui/shops/{}/deliveries?{}", shop.id, query_string(filters.clone())),
            fields,
            nav => "deliveries",
            ..shop_ctx(&shop, &signed)
        },
    ))
}

async fn retry_all(
    State(app): State<App>,
    Path(shop): Path<String>,
    Posted { signed, form }: Posted,
) -> UiResult {
    let shop = shop_of(&app, &signed, &shop).await?;
    let raw = Some(query_string(
        FILTERS
            .iter()
            .filter_map(|name| Some((*name, form.get(name)?))),
    ));
    let (mut query, pairs) = list_query(&raw);
    query.cursor = None;
    let done = deliveries::retry_matching(&app, &shop, &query).await?;
    let count = done.requeued.to_string();
    let mut back = filters_only(&pairs);
    back.extend([("notice", "requeued"), ("count", count.as_str())]);
    Ok(see_other(format!(
        "/ui/shops/{}/deliveries?{}",
        shop.id,
        query_string(back)
    )))
}

// ---- plugins -------------------------------------------------------------------------------

async fn plugin_page(
    app: &App,
    signed: &Signed,
    status: StatusCode,
    error: Option<String>,
    notice: Option<String>,
) -> UiResult {
    signed.caller.platform_only("manage plugins")?;
    let users = app.store.integrations(None).await?;
    let mut rows = Vec::new();
    for plugin in plugins::list(app).await? {
        let versions = plugins::versions(app, &plugin.info.id)
            .await
            .unwrap_or_default();
        let used_by = users.iter().filter(|i| i.plugin == plugin.info.id).count();
        rows.push(context! {
            id => plugin.info.id.clone(),
            name => plugin.info.name.clone(),
            version => plugin.info.version.clone(),
            description => plugin.info.description.clone(),
            digest => plugin.digest.clone(),
            size_kib => plugin.size / 1024,
            number => plugin.number,
            bundled => plugin.bundled,
            used_by,
            versions => versions.iter().rev().map(|v| context! {
                number => v.version.number,
                version => v.version.version.clone(),
                digest => v.version.digest.clone(),
                added_at => v.version.added_at.to_string(),
                bundled => v.version.bundled,
                active => v.active,
            }).collect::<Vec<_>>(),
        });
    }
    Ok(render(
        status,
        "plugins.html",
        context! { plugins => rows, error, notice, nav => "plugins", ..signed.base() },
    ))
}

async fn plugin_list(State(app): State<App>, signed: Signed, RawQuery(raw): RawQuery) -> UiResult {
    plugin_page(&app, &signed, StatusCode::OK, None, notice(&raw)).await
}

async fn upload_plugin(
    State(app): State<App>,
    signed: Signed,
    mut multipart: Multipart,
) -> UiResult {
    signed.caller.platform_only("upload plugins")?;
    let limit = app.runtime.limits().component_ceiling();
    // The form's token comes first (the page puts it there), and nothing is read before it
    // is checked; unknown fields are skipped unread.
    let (mut checked, mut expected, mut component) = (false, None, None);
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => {
                return Err(UiError(AppError::bad_request(
                    "invalid_form",
                    format!("the upload could not be read: {e}"),
                )));
            }
        };
        let name = field.name().unwrap_or_default().to_owned();
        match (checked, name.as_str()) {
            (false, CSRF_FIELD) => {
                let token = read_field(field, 256).await?;
                signed.check_csrf(Some(&String::from_utf8_lossy(&token)))?;
                checked = true;
            }
            (false, _) => return Err(csrf_refused()),
            (true, "plugin") => {
                let id = read_field(field, 256).await?;
                expected = Some(String::from_utf8_lossy(&id).trim().to_owned());
            }
            (true, "component") => component = Some(read_field(field, limit).await?),
            (true, _) => {}
        }
    }
    if !checked {
        return Err(csrf_refused());
    }
    let component = component.filter(|c| !c.is_empty());
    let Some(component) = component else {
        return plugin_page(
            &app,
            &signed,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("Choose a component file (.wasm) to upload.".into()),
            None,
        )
        .await;
    };
    let expected = expected.filter(|e| !e.is_empty());
    match plugins::upload(&app, &signed.caller, expected.as_deref(), component).await {
        Ok(_) => Ok(see_other("/ui/plugins?notice=uploaded".into())),
        Err(e) if e.status.is_client_error() => {
            plugin_page(
                &app,
                &signed,
                e.status,
                Some(format!("The upload was refused: {}", e.message)),
                None,
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}

/// A multipart field's bytes, at most `limit`.
async fn read_field(
    mut field: axum::extract::multipart::Field<'_>,
    limit: usize,
) -> Result<Bytes, UiError> {
    let name = field.name().unwrap_or("field").to_owned();
    let mut bytes = Vec::new();
    loop {
        match field.chunk().await {
            Ok(Some(chunk)) => {
                if bytes.len() + chunk.len() > limit {
                    return Err(UiError(AppError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "too_large",
                        format!("the upload's `{name}` is over the limit of {limit} bytes"),
                    )));
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(Bytes::from(bytes)),
            Err(e) => {
                return Err(UiError(AppError::bad_request(
                    "invalid_form",
                    format!("the upload could not be read: {e}"),
                )));
            }
        }
    }
}

async fn rollback_plugin(
    State(app): State<App>,
    Path(id): Path<String>,
    Posted { signed, form }: Posted,
) -> UiResult {
    let number = form.get("number").and_then(|n| n.parse::<u32>().ok());
    match plugins::rollback(&app, &signed.caller, &id, number).await {
        Ok(_) => Ok(see_other("/ui/plugins?notice=rolled-back".into())),
        Err(e) if e.status.is_client_error() && e.status != StatusCode::FORBIDDEN => {
            plugin_page(&app, &signed, e.status, Some(e.message), None).await
        }
        Err(e) => Err(e.into()),
    }
}

async fn confirm_plugin_delete(
    State(app): State<App>,
    signed: Signed,
    Path(id): Path<String>,
) -> UiResult {
    signed.caller.platform_only("delete plugins")?;
    let plugin = plugins::get(&app, &id).await?;
    Ok(render(
        StatusCode::OK,
        "confirm.html",
        context! {
            title => format!("Delete the plugin “{}”?", plugin.info.name),
            message => "Every stored version is deleted. A plugin that integrations use cannot be deleted; delete or move them first.",
            action => format!("/ui/plugins/{id}/delete"),
            button => "Delete plugin",
            danger => true,
            back => "/ui/plugins",
            fields => Vec::<(String, String)>::new(),
            nav => "plugins",
            ..signed.base()
        },
    ))
}

async fn delete_plugin(
    State(app): State<App>,
    Path(id): Path<String>,
    Posted { signed, .. }: Posted,
) -> UiResult {
    match plugins::delete(&app, &signed.caller, &id).await {
        Ok(()) => Ok(see_other("/ui/plugins?notice=plugin-deleted".into())),
        Err(e) if e.status.is_client_error() && e.status != StatusCode::FORBIDDEN => {
            plugin_page(&app, &signed, e.status, Some(e.message), None).await
        }
        Err(e) => Err(e.into()),
    }
}
