//! An integration's configuration as a plugin sees it, and builders for the settings form
//! a plugin describes.

use serde_json::{Map, Value};

use crate::bindings::canopy::destination::types as wit;
use crate::{ConfigError, SettingKind, SettingSpec};

/// Non-secret settings (a JSON object) and the names of the secrets that are set.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub settings: Map<String, Value>,
    pub secrets_present: Vec<String>,
}

impl Config {
    pub(crate) fn from_wit(config: wit::Config) -> Result<Config, String> {
        let settings = if config.settings.trim().is_empty() {
            Map::new()
        } else {
            match serde_json::from_str(&config.settings) {
                Ok(Value::Object(map)) => map,
                Ok(_) => return Err("settings must be a JSON object".to_owned()),
                Err(e) => return Err(format!("settings are not valid JSON: {e}")),
            }
        };
        Ok(Config {
            settings,
            secrets_present: config.secrets_present,
        })
    }

    /// A setting's raw value.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.settings.get(name).filter(|v| !v.is_null())
    }

    /// A text setting, trimmed; `None` when absent or blank.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.get(name)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }

    /// A text setting, or `default` when absent or blank.
    pub fn text_or<'a>(&'a self, name: &str, default: &'a str) -> &'a str {
        self.text(name).unwrap_or(default)
    }

    /// Whether the admin has set the named secret.
    pub fn has_secret(&self, name: &str) -> bool {
        self.secrets_present.iter().any(|s| s == name)
    }

    /// A config error for `field`, in the shape `validate-config` returns.
    pub fn error(field: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            field: field.to_owned(),
            message: message.into(),
        }
    }

    /// Errors for every required setting (or secret) of `spec` that is missing.
    pub fn missing_required(&self, spec: &[SettingSpec]) -> Vec<ConfigError> {
        spec.iter()
            .filter(|s| s.required)
            .filter(|s| {
                if s.secret {
                    !self.has_secret(&s.name)
                } else {
                    self.get(&s.name)
                        .is_none_or(|v| v.as_str().is_some_and(|t| t.trim().is_empty()))
                }
            })
            .map(|s| Config::error(&s.name, format!("{} is required", s.label)))
            .collect()
    }
}

/// Builds one [`SettingSpec`] of a plugin's settings form.
#[derive(Debug, Clone)]
pub struct Setting(SettingSpec);

impl Setting {
    fn new(name: &str, label: &str, kind: SettingKind, secret: bool) -> Setting {
        Setting(SettingSpec {
            name: name.to_owned(),
            label: label.to_owned(),
            description: String::new(),
            kind,
            required: false,
            secret,
            default_value: None,
            options: Vec::new(),
        })
    }

    pub fn text(name: &str, label: &str) -> Setting {
        Setting::new(name, label, SettingKind::Text, false)
    }

    pub fn url(name: &str, label: &str) -> Setting {
        Setting::new(name, label, SettingKind::Url, false)
    }

    pub fn boolean(name: &str, label: &str) -> Setting {
        Setting::new(name, label, SettingKind::Boolean, false)
    }

    pub fn choice(name: &str, label: &str, options: &[&str]) -> Setting {
        let mut s = Setting::new(name, label, SettingKind::Choice, false);
        s.0.options = options.iter().map(|o| (*o).to_owned()).collect();
        s
    }

    pub fn string_map(name: &str, label: &str) -> Setting {
        Setting::new(name, label, SettingKind::StringMap, false)
    }

    pub fn template_map(name: &str, label: &str) -> Setting {
        Setting::new(name, label, SettingKind::TemplateMap, false)
    }

    /// A secret: stored encrypted by the host, referenced by name, never seen by the plugin.
    pub fn secret(name: &str, label: &str) -> Setting {
        Setting::new(name, label, SettingKind::Text, true)
    }

    pub fn required(mut self) -> Setting {
        self.0.required = true;
        self
    }

    pub fn describe(mut self, description: &str) -> Setting {
        self.0.description = description.to_owned();
        self
    }

    /// Default value, given as JSON.
    pub fn default_value(mut self, value: Value) -> Setting {
        self.0.default_value = Some(value.to_string());
        self
    }

    pub fn build(self) -> SettingSpec {
        self.0
    }
}

impl From<Setting> for SettingSpec {
    fn from(setting: Setting) -> SettingSpec {
        setting.0
    }
}
