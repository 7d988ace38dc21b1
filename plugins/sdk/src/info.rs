//! What a plugin says about itself (`describe`), built field by field: a field a later
//! contract version adds gets its default here instead of breaking every plugin's source.

use crate::SettingSpec;
use crate::bindings::canopy::destination::types::{Needs, PluginInfo, RateLimit};

/// A plugin's identity, the events it takes, the hosts it may reach, its settings form and
/// the platform's rate limit.
///
/// ```ignore
/// Info::new("acme", "Acme", env!("CARGO_PKG_VERSION"))
///     .description("Sends loyalty events to Acme")
///     .allowed_hosts(["api.acme.example"])
///     .settings(settings())
///     .rate_limit(100, 60)
/// ```
#[derive(Debug, Clone)]
pub struct Info(PluginInfo);

impl Info {
    /// `id` is lowercase `[a-z0-9-]`; the plugin takes every event type (`*`) until
    /// [`Info::events`] says otherwise.
    pub fn new(id: &str, name: &str, version: &str) -> Info {
        Info(PluginInfo {
            id: id.to_owned(),
            name: name.to_owned(),
            version: version.to_owned(),
            description: String::new(),
            events: vec!["*".to_owned()],
            allowed_hosts: Vec::new(),
            settings: Vec::new(),
            rate_limit: None,
            needs: Needs {
                memory_mib: None,
                component_mib: None,
            },
        })
    }

    pub fn description(mut self, description: impl Into<String>) -> Info {
        self.0.description = description.into();
        self
    }

    /// The canonical event types this plugin delivers (keys such as `tier.changed`).
    pub fn events<S: Into<String>>(mut self, events: impl IntoIterator<Item = S>) -> Info {
        self.0.events = events.into_iter().map(Into::into).collect();
        self
    }

    /// Hosts requests may go to: exact names, `*.domain`, or `settings:<name>`.
    pub fn allowed_hosts<S: Into<String>>(mut self, hosts: impl IntoIterator<Item = S>) -> Info {
        self.0.allowed_hosts = hosts.into_iter().map(Into::into).collect();
        self
    }

    /// The settings form, in order (see [`crate::Setting`]).
    pub fn settings(mut self, settings: Vec<SettingSpec>) -> Info {
        self.0.settings = settings;
        self
    }

    /// The platform's documented pace: `requests` every `per_seconds`.
    pub fn rate_limit(mut self, requests: u32, per_seconds: u32) -> Info {
        self.0.rate_limit = Some(RateLimit {
            requests,
            per_seconds,
        });
        self
    }

    /// Linear memory one instance needs, in MiB, when it is more than the host's default
    /// (64 MiB). The host grants it up to its operator's cap (256 MiB by default) and
    /// refuses to load the plugin past it.
    pub fn needs_memory_mib(mut self, mib: u32) -> Info {
        self.0.needs.memory_mib = Some(mib);
        self
    }

    /// Size of the component, in MiB, when it is more than the host's default (16 MiB); the
    /// host's operator caps it (64 MiB by default).
    pub fn needs_component_mib(mut self, mib: u32) -> Info {
        self.0.needs.component_mib = Some(mib);
        self
    }
}

impl From<Info> for PluginInfo {
    fn from(info: Info) -> PluginInfo {
        info.0
    }
}
