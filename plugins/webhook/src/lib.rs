//! Generic webhook destination: each loyalty event to any HTTP endpoint (SPEC.md §3, seed 000
//! §Webhook Genérico, seed 001 §Personalização).
//!
//! - **URL** may hold `{{ customer.email }}`-style variables; their values are URL-encoded.
//!   The scheme and host must be written out: the host checks every request against them.
//! - **Method** `POST` (default), `PUT` or `PATCH`.
//! - **Headers**: `Content-Type: application/json`, `User-Agent: LoyaltyTree/1.0`,
//!   `X-LoyaltyTree-Event: <event key>` and `X-LoyaltyTree-Timestamp: <the event's
//!   timestamp>`, then the admin's static headers (which may replace a default of the same
//!   name), then the auth header.
//! - **Body**: the canonical event, or the template for the event's key (`"*"` for every key
//!   without its own). Templates are minijinja; every `{{ … }}` prints a JSON value (text is
//!   quoted and escaped, numbers stay numbers, objects stay objects), so a template such as
//!   `{"email": {{ customer.email }}, "seeds": {{ amount }}}` is always valid JSON. A missing
//!   field prints `null`. Templates are checked against a sample event when saved.
//! - **Auth**: `hmac` (`X-LoyaltyTree-Signature`, needs the webhook secret), `bearer`
//!   (`Authorization: Bearer <token>`), `x-token` (`X-Token: <token>`), `custom-header`
//!   (`<auth_header>: <token>`), or `none`. Whenever a webhook secret is set, the host also
//!   adds the hex HMAC header and the Standard Webhooks headers.

use std::collections::BTreeMap;

use canopy_plugin_sdk::serde_json;
use canopy_plugin_sdk::{
    Config, ConfigError, Destination, Event, EventKind, IncomingResponse, Info, OutgoingRequest,
    Refusal, Request, Setting, SettingSpec, Value, Verdict, default_verdict, json,
};
use minijinja::{AutoEscape, Environment, UndefinedBehavior};

pub struct Webhook;

const URL: &str = "url";
const METHOD: &str = "method";
const HEADERS: &str = "headers";
const TEMPLATES: &str = "templates";
const AUTH: &str = "auth";
const AUTH_HEADER: &str = "auth_header";
const WEBHOOK_SECRET: &str = "webhook_secret";
const TOKEN: &str = "token";

const METHODS: &[&str] = &["POST", "PUT", "PATCH"];
const AUTH_METHODS: &[&str] = &["none", "hmac", "bearer", "x-token", "custom-header"];
const SIGNATURE_HEADER: &str = "X-LoyaltyTree-Signature";

/// The settings form, built once per instance: every `transform` checks the required ones.
static SETTINGS: std::sync::LazyLock<Vec<SettingSpec>> = std::sync::LazyLock::new(settings);

fn settings() -> Vec<SettingSpec> {
    vec![
        Setting::url(URL, "Webhook URL")
            .required()
            .describe("Where events are sent; may use variables such as https://hooks.example.com/{{ customer.email }}")
            .build(),
        Setting::choice(METHOD, "HTTP method", METHODS)
            .default_value(json!("POST"))
            .build(),
        Setting::string_map(HEADERS, "Static headers")
            .describe("Headers sent with every request, e.g. {\"X-Source\": \"loyalty\"}")
            .build(),
        Setting::template_map(TEMPLATES, "Body templates")
            .describe("Per event type (or \"*\"), a JSON body with {{ variables }}; the default body is the event itself")
            .build(),
        Setting::choice(AUTH, "Authentication", AUTH_METHODS)
            .default_value(json!("none"))
            .build(),
        Setting::text(AUTH_HEADER, "Custom auth header name")
            .describe("With custom-header authentication: the header that carries the token")
            .build(),
        Setting::secret(WEBHOOK_SECRET, "Webhook secret")
            .describe("Signs every request: X-LoyaltyTree-Signature (hex HMAC-SHA256 of the body) and Standard Webhooks headers")
            .build(),
        Setting::secret(TOKEN, "Token")
            .describe("The token for bearer, x-token or custom-header authentication")
            .build(),
    ]
}

/// The parsed settings, checked.
struct WebhookSettings {
    url: String,
    method: &'static str,
    headers: Vec<(String, String)>,
    /// Event key (or `*`) → (its kind, the template text). Checked against samples only by
    /// `validate_config`; `transform` compiles just the one it needs.
    templates: BTreeMap<String, (Option<EventKind>, String)>,
    auth: &'static str,
    auth_header: Option<String>,
}

fn valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The part of a URL before its path, which must not hold template syntax (variables,
/// blocks or comments: any of them could change the host the request goes to).
fn authority_is_static(url: &str) -> bool {
    // Not split at `#`: template comments and blocks contain it.
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    !authority.is_empty() && !has_template_syntax(authority)
}

/// Whether text holds a template variable, block or comment. A URL without any is sent as
/// written, without building the template context (the most expensive part of a
/// `transform`): rendering gives such text back unchanged (the setting is read trimmed, so
/// no trailing line break, which rendering would drop, reaches it).
fn has_template_syntax(text: &str) -> bool {
    ["{{", "{%", "{#"].iter().any(|t| text.contains(t))
}

/// Whether a header value can be sent as written: visible ASCII, spaces and tabs, or UTF-8
/// text, but no control characters (a line break would end the header).
fn valid_header_value(value: &str) -> bool {
    value.chars().all(|c| c == '\t' || !c.is_control())
}

impl WebhookSettings {
    /// Reads and checks the settings: what could be read, and every problem found.
    fn read(config: &Config) -> (WebhookSettings, Vec<ConfigError>) {
        let mut errors = config.missing_required(&SETTINGS);
        let url = config.text(URL).unwrap_or_default().to_owned();
        if !url.is_empty() {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                errors.push(Config::error(
                    URL,
                    "Webhook URL must start with https:// or http://",
                ));
            } else if !authority_is_static(&url) {
                errors.push(Config::error(
                    URL,
                    "Webhook URL must name its host without variables (variables may follow in the path or query)",
                ));
            } else if has_template_syntax(&url)
                && let Err(e) = url_environment().template_from_str(&url)
            {
                errors.push(Config::error(
                    URL,
                    format!("Webhook URL {}", describe_template_error(&url, &e)),
                ));
            } else if let Some(segment) = canopy_plugin_sdk::dot_segment(&url) {
                errors.push(Config::error(
                    URL,
                    format!("Webhook URL must not have a `{segment}` path segment (it would be removed when sent)"),
                ));
            }
        }
        let method = match config.text(METHOD).map(str::to_ascii_uppercase) {
            None => "POST",
            Some(m) => match METHODS.iter().find(|known| **known == m) {
                Some(known) => known,
                None => {
                    errors.push(Config::error(
                        METHOD,
                        format!(
                            "HTTP method must be one of {}, not `{m}`",
                            METHODS.join(", ")
                        ),
                    ));
                    "POST"
                }
            },
        };
        let mut headers = Vec::new();
        match config.get(HEADERS) {
            None => {}
            Some(Value::Object(map)) => {
                for (name, value) in map {
                    match value.as_str() {
                        _ if !valid_header_name(name) => errors.push(Config::error(
                            HEADERS,
                            format!("`{name}` is not a valid header name"),
                        )),
                        _ if canopy_plugin_sdk::is_reserved_header(name) => {
                            errors.push(Config::error(
                                HEADERS,
                                format!(
                                    "`{name}` cannot be set: it frames or routes the request, and the host sets it"
                                ),
                            ))
                        }
                        Some(text) if !valid_header_value(text) => errors.push(Config::error(
                            HEADERS,
                            format!(
                                "the value of header `{name}` cannot contain control characters (such as line breaks)"
                            ),
                        )),
                        Some(text) => headers.push((name.clone(), text.to_owned())),
                        None => errors.push(Config::error(
                            HEADERS,
                            format!("the value of header `{name}` must be text"),
                        )),
                    }
                }
            }
            Some(_) => errors.push(Config::error(
                HEADERS,
                "Static headers must be an object of header name → value",
            )),
        }
        let mut templates = BTreeMap::new();
        match config.get(TEMPLATES) {
            None => {}
            Some(Value::Object(map)) => {
                for (key, source) in map {
                    let kind = if key == "*" {
                        None
                    } else {
                        match key.parse::<EventKind>() {
                            Ok(kind) => Some(kind),
                            Err(unknown) => {
                                errors.push(Config::error(
                                    TEMPLATES,
                                    format!("body templates: {unknown}"),
                                ));
                                continue;
                            }
                        }
                    };
                    let Some(source) = source.as_str() else {
                        errors.push(Config::error(
                            TEMPLATES,
                            format!("the template for `{key}` must be text"),
                        ));
                        continue;
                    };
                    templates.insert(key.clone(), (kind, source.to_owned()));
                }
            }
            Some(_) => errors.push(Config::error(
                TEMPLATES,
                "Body templates must be an object of event type → template",
            )),
        }
        let auth = match config.text(AUTH) {
            None => "none",
            Some(a) => match AUTH_METHODS.iter().find(|known| **known == a) {
                Some(known) => known,
                None => {
                    errors.push(Config::error(
                        AUTH,
                        format!(
                            "Authentication must be one of {}, not `{a}`",
                            AUTH_METHODS.join(", ")
                        ),
                    ));
                    "none"
                }
            },
        };
        let auth_header = config.text(AUTH_HEADER).map(str::to_owned);
        match auth {
            "hmac" if !config.has_secret(WEBHOOK_SECRET) => errors.push(Config::error(
                WEBHOOK_SECRET,
                "HMAC signature authentication needs a webhook secret",
            )),
            "bearer" | "x-token" | "custom-header" if !config.has_secret(TOKEN) => {
                errors.push(Config::error(
                    TOKEN,
                    format!("Token is required for {auth} authentication"),
                ))
            }
            _ => {}
        }
        if auth == "custom-header" {
            match &auth_header {
                None => errors.push(Config::error(
                    AUTH_HEADER,
                    "Custom auth header name is required for custom-header authentication",
                )),
                Some(name) if !valid_header_name(name) => errors.push(Config::error(
                    AUTH_HEADER,
                    format!("`{name}` is not a valid header name"),
                )),
                Some(name) if canopy_plugin_sdk::is_reserved_header(name) => {
                    errors.push(Config::error(
                        AUTH_HEADER,
                        format!(
                            "`{name}` cannot carry the token: it frames or routes the request, and the host sets it"
                        ),
                    ))
                }
                Some(_) => {}
            }
        }
        let settings = WebhookSettings {
            url,
            method,
            headers,
            templates,
            auth,
            auth_header,
        };
        (settings, errors)
    }

    /// The settings, when they can work.
    fn parse(config: &Config) -> Result<WebhookSettings, Vec<ConfigError>> {
        match WebhookSettings::read(config) {
            (settings, errors) if errors.is_empty() => Ok(settings),
            (_, errors) => Err(errors),
        }
    }
}

/// Templates print JSON values; missing fields print `null` (lenient undefined).
fn body_environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_auto_escape_callback(|_| AutoEscape::Json);
    env.set_undefined_behavior(UndefinedBehavior::Lenient);
    env.set_formatter(|out, _state, value| {
        let mut text = String::new();
        write_json(&mut text, value)?;
        out.write_str(&text).map_err(minijinja::Error::from)
    });
    env
}

/// A JSON number the template engine cannot hold exactly (beyond 128-bit integers, or a
/// decimal whose digits a 64-bit float would change, such as `1.50` or `0.1000000000000000001`):
/// kept as its text, printed as sent.
#[derive(Debug)]
struct ExactNumber(String);

impl minijinja::value::Object for ExactNumber {
    fn repr(self: &std::sync::Arc<Self>) -> minijinja::value::ObjectRepr {
        minijinja::value::ObjectRepr::Plain
    }

    fn render(self: &std::sync::Arc<Self>, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A template value from a JSON value. Numbers stay exactly as sent: as native numbers when
/// one prints back the same text, else as an [`ExactNumber`].
fn template_value(value: &Value) -> minijinja::Value {
    use minijinja::Value as V;
    match value {
        Value::Null => V::from(()),
        Value::Bool(b) => V::from(*b),
        Value::String(text) => V::from(text.as_str()),
        Value::Number(n) => {
            let text = n.to_string();
            if let Ok(int) = text.parse::<i128>() {
                V::from(int)
            } else if let Ok(int) = text.parse::<u128>() {
                V::from(int)
            } else if let Some(float) = n
                .as_f64()
                .filter(|f| serde_json::to_string(f).ok() == Some(text.clone()))
            {
                V::from(float)
            } else {
                V::from_object(ExactNumber(text))
            }
        }
        Value::Array(items) => items.iter().map(template_value).collect(),
        Value::Object(map) => V::from(
            map.iter()
                .map(|(k, v)| (k.clone(), template_value(v)))
                .collect::<BTreeMap<String, V>>(),
        ),
    }
}

/// Writes a template value as JSON: `null` for a missing value, an [`ExactNumber`]'s text as
/// is, everything else as serde serialises it.
fn write_json(out: &mut String, value: &minijinja::Value) -> Result<(), minijinja::Error> {
    use minijinja::value::ValueKind;
    let json_error = |e: serde_json::Error| {
        minijinja::Error::new(minijinja::ErrorKind::BadSerialization, e.to_string())
    };
    if value.is_undefined() || value.is_none() {
        out.push_str("null");
    } else if let Some(exact) = value.downcast_object_ref::<ExactNumber>() {
        out.push_str(&exact.0);
    } else if value.kind() == ValueKind::Seq {
        out.push('[');
        for (i, item) in value.try_iter()?.enumerate() {
            if i > 0 {
                out.push(',');
            }
            write_json(out, &item)?;
        }
        out.push(']');
    } else if value.kind() == ValueKind::Map {
        out.push('{');
        for (i, key) in value.try_iter()?.enumerate() {
            if i > 0 {
                out.push(',');
            }
            let name = key.as_str().map_or_else(|| key.to_string(), str::to_owned);
            out.push_str(&serde_json::to_string(&name).map_err(json_error)?);
            out.push(':');
            write_json(out, &value.get_item(&key)?)?;
        }
        out.push('}');
    } else {
        out.push_str(&serde_json::to_string(value).map_err(json_error)?);
    }
    Ok(())
}

/// URL variables print as percent-encoded text (RFC 3986 unreserved characters kept).
fn url_environment() -> Environment<'static> {
    const COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    let mut env = Environment::new();
    env.set_formatter(|out, _state, value| {
        if value.is_undefined() || value.is_none() {
            return Ok(());
        }
        let text = match value.as_str() {
            Some(s) => s.to_owned(),
            None => value.to_string(),
        };
        write!(
            out,
            "{}",
            percent_encoding::utf8_percent_encode(&text, COMPONENT)
        )
        .map_err(minijinja::Error::from)
    });
    env
}

/// "has a syntax error at line L, column C: detail".
fn describe_template_error(source: &str, error: &minijinja::Error) -> String {
    let detail = error
        .detail()
        .map(str::to_owned)
        .unwrap_or_else(|| error.kind().to_string());
    match (error.line(), error.range()) {
        (Some(line), Some(range)) => {
            let line_start = source[..range.start.min(source.len())]
                .rfind('\n')
                .map_or(0, |i| i + 1);
            let column = source[line_start..range.start.min(source.len())]
                .chars()
                .count()
                + 1;
            format!("has an error at line {line}, column {column}: {detail}")
        }
        (Some(line), None) => format!("has an error at line {line}: {detail}"),
        _ => format!("has an error: {detail}"),
    }
}

/// The template context: the canonical event plus `event_name` (its display name).
fn context(event: &Event) -> minijinja::Value {
    let mut value = serde_json::to_value(event).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        map.insert("event_name".into(), json!(event.event.display_name()));
    }
    template_value(&value)
}

fn render_body(source: &str, event: &Event) -> Result<Vec<u8>, String> {
    let env = body_environment();
    let template = env
        .template_from_str(source)
        .map_err(|e| describe_template_error(source, &e))?;
    let text = template
        .render(context(event))
        .map_err(|e| describe_template_error(source, &e))?;
    serde_json::from_str::<Value>(&text)
        .map_err(|e| format!("does not produce valid JSON ({e}): {text}"))?;
    Ok(text.into_bytes())
}

/// Compiles a template and renders it against a sample event of its kind (any kind for "*").
fn check_template(kind: Option<EventKind>, source: &str) -> Result<(), String> {
    let kinds = match kind {
        Some(kind) => vec![kind],
        None => EventKind::ALL.to_vec(),
    };
    for kind in kinds {
        let sample = Event::from_json(kind.sample_json()).map_err(|e| e.to_string())?;
        render_body(source, &sample)?;
    }
    Ok(())
}

impl Destination for Webhook {
    fn describe() -> Info {
        Info::new("webhook", "Generic webhook", env!("CARGO_PKG_VERSION"))
            .description(
                "Sends loyalty events to any HTTP endpoint, with optional templates, auth and signatures",
            )
            .allowed_hosts([format!("settings:{URL}")])
            .settings(settings())
    }

    fn validate_config(config: &Config) -> Vec<ConfigError> {
        let (settings, mut errors) = WebhookSettings::read(config);
        // Rendering every template against sample events is the expensive check: it runs
        // when the admin saves the integration, not on every delivery.
        for (key, (kind, source)) in &settings.templates {
            if let Err(message) = check_template(*kind, source) {
                errors.push(Config::error(
                    TEMPLATES,
                    format!("the template for `{key}` {message}"),
                ));
            }
        }
        errors
    }

    fn transform(event: &Event, config: &Config) -> Result<Vec<OutgoingRequest>, Refusal> {
        let hook = WebhookSettings::parse(config).map_err(|errors| {
            let messages: Vec<String> = errors.into_iter().map(|e| e.message).collect();
            Refusal::InvalidConfig(messages.join("; "))
        })?;
        let url = if has_template_syntax(&hook.url) {
            url_environment()
                .render_str(&hook.url, context(event))
                .map_err(|e| {
                    Refusal::InvalidConfig(format!(
                        "Webhook URL {}",
                        describe_template_error(&hook.url, &e)
                    ))
                })?
        } else {
            hook.url
        };
        // A variable that fills a whole path segment with `.` or `..` cannot be sent as such:
        // every URL parser removes dot segments, even percent-encoded ones, and the request
        // would go to another path. This event cannot be delivered to this URL.
        if let Some(segment) = canopy_plugin_sdk::dot_segment(&url) {
            return Err(Refusal::InvalidEvent(format!(
                "the URL variables make the path segment `{segment}`, which would remove part of the URL's path"
            )));
        }
        let template = hook
            .templates
            .get(event.event.key())
            .or_else(|| hook.templates.get("*"));
        let body = match template {
            Some((_, source)) => render_body(source, event).map_err(|message| {
                Refusal::InvalidConfig(format!(
                    "the template for `{}` {message}",
                    event.event.key()
                ))
            })?,
            None => serde_json::to_vec(event).unwrap_or_default(),
        };

        let mut headers: Vec<(String, String)> = vec![
            ("Content-Type".into(), "application/json".into()),
            ("User-Agent".into(), "LoyaltyTree/1.0".into()),
            ("X-LoyaltyTree-Event".into(), event.event.key().into()),
            ("X-LoyaltyTree-Timestamp".into(), event.timestamp.clone()),
        ];
        for (name, value) in hook.headers {
            headers.retain(|(existing, _)| !existing.eq_ignore_ascii_case(&name));
            headers.push((name, value));
        }
        let mut request = headers
            .into_iter()
            .fold(Request::new(method(hook.method), url), |r, (n, v)| {
                r.header(&n, v)
            });
        request = match hook.auth {
            "bearer" => request.secret_header("Authorization", "Bearer ", TOKEN),
            "x-token" => request.secret_header("X-Token", "", TOKEN),
            "custom-header" => {
                let name = hook.auth_header.as_deref().unwrap_or("X-Token");
                request.secret_header(name, "", TOKEN)
            }
            _ => request,
        };
        if config.has_secret(WEBHOOK_SECRET) {
            request = request
                .sign_hmac_hex(SIGNATURE_HEADER, WEBHOOK_SECRET)
                .sign_standard_webhooks(WEBHOOK_SECRET);
        }
        Ok(vec![request.body(body).build()])
    }

    fn interpret(response: &IncomingResponse) -> Verdict {
        match response.status {
            401 | 403 => Verdict::Failed(format!(
                "the endpoint refused the request (HTTP {}): invalid token or signature",
                response.status
            )),
            _ => default_verdict(response),
        }
    }
}

fn method(name: &str) -> canopy_plugin_sdk::Method {
    match name {
        "PUT" => canopy_plugin_sdk::Method::Put,
        "PATCH" => canopy_plugin_sdk::Method::Patch,
        _ => canopy_plugin_sdk::Method::Post,
    }
}

canopy_plugin_sdk::export_destination!(Webhook);
