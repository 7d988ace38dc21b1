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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(settings: Value, secrets: &[&str]) -> Config {
        Config::from_wit(wit::Config {
            settings: settings.to_string(),
            secrets_present: secrets.iter().map(|s| (*s).to_owned()).collect(),
        })
        .unwrap()
    }

    #[test]
    fn reads_settings_and_secret_presence() {
        let c = config(
            json!({"url": "  https://x.test  ", "blank": " ", "n": null}),
            &["key"],
        );
        assert_eq!(c.text("url"), Some("https://x.test"));
        assert_eq!(c.text("blank"), None);
        assert_eq!(c.get("n"), None);
        assert_eq!(c.text_or("missing", "dflt"), "dflt");
        assert!(c.has_secret("key") && !c.has_secret("other"));
    }

    #[test]
    fn rejects_settings_that_are_not_an_object() {
        let parse = |settings: &str| {
            Config::from_wit(wit::Config {
                settings: settings.to_owned(),
                secrets_present: vec![],
            })
        };
        assert!(parse("").unwrap().settings.is_empty());
        assert_eq!(parse("[1]").unwrap_err(), "settings must be a JSON object");
        assert!(
            parse("{")
                .unwrap_err()
                .starts_with("settings are not valid JSON")
        );
    }

    #[test]
    fn missing_required_names_each_missing_field() {
        let spec = vec![
            Setting::url("url", "Endpoint URL").required().build(),
            Setting::text("note", "Note").build(),
            Setting::secret("key", "API key").required().build(),
        ];
        let errors = config(json!({"url": " "}), &[]).missing_required(&spec);
        let messages: Vec<_> = errors
            .iter()
            .map(|e| (e.field.as_str(), e.message.as_str()))
            .collect();
        assert_eq!(
            messages,
            [
                ("url", "Endpoint URL is required"),
                ("key", "API key is required")
            ]
        );
        assert!(
            config(json!({"url": "https://x.test"}), &["key"])
                .missing_required(&spec)
                .is_empty()
        );
    }
}
