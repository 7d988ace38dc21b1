//! What plugins produce and consume, as the rest of the host sees it: checked, owned types
//! converted from the WIT bindings at the runtime's edge, so no other module depends on them.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use super::bindings::types as wit;

/// What `describe` says about a plugin, checked at load time.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct PluginInfo {
    pub id: String,
    pub name: String,
    pub version: String,
    pub description: String,
    /// Event keys, or `*`.
    pub events: Vec<String>,
    /// Host patterns (`a.example.com`, `*.myshopify.com`) or `settings:<name>`.
    pub allowed_hosts: Vec<String>,
    pub settings: Vec<SettingSpec>,
    pub rate_limit: Option<RateLimit>,
    /// Resources it asked for beyond the host's defaults (contract 0.2).
    pub needs: Needs,
}

/// Resources a plugin asks for beyond the host's defaults; `None` takes the default. The
/// runtime grants them up to the operator's caps (`Limits::memory_cap_bytes`,
/// `Limits::component_cap_bytes`) and refuses a plugin that asks for more.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Needs {
    pub memory_mib: Option<u32>,
    pub component_mib: Option<u32>,
}

impl PluginInfo {
    /// Whether the plugin accepts events of this key.
    pub fn supports(&self, event_key: &str) -> bool {
        self.events.iter().any(|e| e == "*" || e == event_key)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SettingSpec {
    pub name: String,
    pub label: String,
    pub description: String,
    pub kind: SettingKind,
    pub required: bool,
    pub secret: bool,
    /// JSON text.
    pub default_value: Option<String>,
    pub options: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SettingKind {
    Text,
    Url,
    Integer,
    Boolean,
    Choice,
    StringMap,
    TemplateMap,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct RateLimit {
    pub requests: u32,
    pub per_seconds: u32,
}

/// An integration's configuration as handed to a plugin: settings and the names (only) of
/// the secrets that are set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PluginConfig {
    /// A JSON object.
    pub settings: serde_json::Value,
    pub secrets_present: Vec<String>,
}

/// A problem with one setting (`field` empty: the configuration as a whole).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

/// A piece of a header value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Segment {
    Text(String),
    /// The value of the named secret, filled in by the host at send time.
    Secret(String),
    /// `Basic base64(user:secret)` with the named secret's value, made at send time.
    BasicAuth {
        user: String,
        secret: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Header {
    pub name: String,
    pub value: Vec<Segment>,
}

impl Header {
    /// The value with secrets shown as `{{secret:name}}` references, for logs and dry runs.
    pub fn redacted_value(&self) -> String {
        let mut out = String::new();
        for segment in &self.value {
            match segment {
                Segment::Text(text) => out.push_str(text),
                Segment::Secret(name) => {
                    out.push_str("{{secret:");
                    out.push_str(name);
                    out.push_str("}}");
                }
                Segment::BasicAuth { user, secret } => {
                    out.push_str("Basic base64(");
                    out.push_str(user);
                    out.push_str(":{{secret:");
                    out.push_str(secret);
                    out.push_str("}})");
                }
            }
        }
        out
    }
}

/// A signature the host adds at send time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SignatureRequest {
    HmacSha256Hex { header: String, secret: String },
    StandardWebhooks { secret: String },
}

/// A request a plugin asked the host to send, checked: valid method, absolute http(s) URL,
/// valid header names and values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PluginRequest {
    pub method: Method,
    pub url: String,
    pub headers: Vec<Header>,
    #[serde(serialize_with = "body_as_text")]
    pub body: Vec<u8>,
    pub signatures: Vec<SignatureRequest>,
}

fn body_as_text<S: serde::Serializer>(body: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(body))
}

impl fmt::Display for PluginRequest {
    /// An HTTP/1.1-like rendering with secrets as references.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} {}", self.method.as_str(), self.url)?;
        for header in &self.headers {
            writeln!(f, "{}: {}", header.name, header.redacted_value())?;
        }
        for signature in &self.signatures {
            match signature {
                SignatureRequest::HmacSha256Hex { header, secret } => writeln!(
                    f,
                    "{header}: {{{{hmac-sha256-hex of body with secret:{secret}}}}}"
                )?,
                SignatureRequest::StandardWebhooks { secret } => writeln!(
                    f,
                    "webhook-id, webhook-timestamp, webhook-signature: \
                     {{{{standard-webhooks with secret:{secret}}}}}"
                )?,
            }
        }
        if !self.body.is_empty() {
            writeln!(f)?;
            f.write_str(&String::from_utf8_lossy(&self.body))?;
            writeln!(f)?;
        }
        Ok(())
    }
}

/// Why a plugin declined an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "reason", rename_all = "snake_case")]
pub enum Refusal {
    /// Not an error: the platform cannot take this event.
    Skip(String),
    InvalidConfig(String),
    InvalidEvent(String),
}

/// A destination's answer, handed to `interpret`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PluginResponse {
    pub status: u16,
    /// Lowercase names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// What a response means for the delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    Delivered,
    Retry {
        #[serde(skip_serializing_if = "Option::is_none", with = "opt_secs")]
        after: Option<Duration>,
        reason: String,
    },
    Failed {
        reason: String,
    },
}

mod opt_secs {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_u64(d.as_secs()),
            None => s.serialize_none(),
        }
    }
}

// ---- conversions at the edge -------------------------------------------------------------

impl From<wit::SettingKind> for SettingKind {
    fn from(kind: wit::SettingKind) -> SettingKind {
        match kind {
            wit::SettingKind::Text => SettingKind::Text,
            wit::SettingKind::Url => SettingKind::Url,
            wit::SettingKind::Integer => SettingKind::Integer,
            wit::SettingKind::Boolean => SettingKind::Boolean,
            wit::SettingKind::Choice => SettingKind::Choice,
            wit::SettingKind::StringMap => SettingKind::StringMap,
            wit::SettingKind::TemplateMap => SettingKind::TemplateMap,
        }
    }
}

impl From<wit::PluginInfo> for PluginInfo {
    fn from(info: wit::PluginInfo) -> PluginInfo {
        PluginInfo {
            id: info.id,
            name: info.name,
            version: info.version,
            description: info.description,
            events: info.events,
            allowed_hosts: info.allowed_hosts,
            settings: info
                .settings
                .into_iter()
                .map(|s| SettingSpec {
                    name: s.name,
                    label: s.label,
                    description: s.description,
                    kind: s.kind.into(),
                    required: s.required,
                    secret: s.secret,
                    default_value: s.default_value,
                    options: s.options,
                })
                .collect(),
            rate_limit: info.rate_limit.map(|r| RateLimit {
                requests: r.requests,
                per_seconds: r.per_seconds,
            }),
            needs: Needs {
                memory_mib: info.needs.memory_mib,
                component_mib: info.needs.component_mib,
            },
        }
    }
}

impl From<wit::ConfigError> for ConfigError {
    fn from(e: wit::ConfigError) -> ConfigError {
        ConfigError {
            field: e.field,
            message: e.message,
        }
    }
}

impl From<wit::Refusal> for Refusal {
    fn from(r: wit::Refusal) -> Refusal {
        match r {
            wit::Refusal::Skip(s) => Refusal::Skip(s),
            wit::Refusal::InvalidConfig(s) => Refusal::InvalidConfig(s),
            wit::Refusal::InvalidEvent(s) => Refusal::InvalidEvent(s),
        }
    }
}

impl From<wit::Verdict> for Verdict {
    fn from(v: wit::Verdict) -> Verdict {
        match v {
            wit::Verdict::Delivered => Verdict::Delivered,
            wit::Verdict::Retry(advice) => Verdict::Retry {
                after: advice.after_seconds.map(|s| Duration::from_secs(s.into())),
                reason: advice.reason,
            },
            wit::Verdict::Failed(reason) => Verdict::Failed { reason },
        }
    }
}

impl From<wit::Method> for Method {
    fn from(m: wit::Method) -> Method {
        match m {
            wit::Method::Get => Method::Get,
            wit::Method::Post => Method::Post,
            wit::Method::Put => Method::Put,
            wit::Method::Patch => Method::Patch,
            wit::Method::Delete => Method::Delete,
        }
    }
}

impl From<wit::Segment> for Segment {
    fn from(s: wit::Segment) -> Segment {
        match s {
            wit::Segment::Text(t) => Segment::Text(t),
            wit::Segment::Secret(n) => Segment::Secret(n),
            wit::Segment::BasicAuth(c) => Segment::BasicAuth {
                user: c.user,
                secret: c.secret,
            },
        }
    }
}

impl From<wit::Signature> for SignatureRequest {
    fn from(s: wit::Signature) -> SignatureRequest {
        match s {
            wit::Signature::HmacSha256Hex(h) => SignatureRequest::HmacSha256Hex {
                header: h.header,
                secret: h.secret,
            },
            wit::Signature::StandardWebhooks(secret) => {
                SignatureRequest::StandardWebhooks { secret }
            }
        }
    }
}

impl PluginConfig {
    pub(crate) fn to_wit(&self) -> wit::Config {
        wit::Config {
            settings: if self.settings.is_null() {
                "{}".to_owned()
            } else {
                self.settings.to_string()
            },
            secrets_present: self.secrets_present.clone(),
        }
    }
}

impl PluginResponse {
    pub(crate) fn to_wit(&self) -> wit::IncomingResponse {
        wit::IncomingResponse {
            status: self.status,
            headers: self
                .headers
                .iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
                .collect(),
            body: self.body.clone(),
        }
    }
}
