//! Guest SDK for Canopy destination plugins.
//!
//! A destination implements [`Destination`] with typed inputs — a parsed [`Event`], the
//! integration's [`Config`] — and exports it with [`export_destination!`]. The SDK owns the
//! WIT bindings (one `generate!` for every plugin), the canonical event catalogue, request
//! building with secret references ([`Request`]), and the response classification every HTTP
//! platform shares ([`default_verdict`]). See `plugins/README.md` for a walkthrough.

pub mod config;
pub mod info;
pub mod json;
pub mod log;
pub mod request;
pub mod response;

/// Every plugin built on the SDK allocates with talc: single-threaded wasm, no atomics.
#[cfg(all(not(target_feature = "atomics"), target_family = "wasm"))]
#[global_allocator]
static ALLOCATOR: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "destination",
        path: "../../wit/0.2",
        pub_export_macro: true,
        export_macro_name: "__export_world_destination",
        default_bindings_module: "canopy_plugin_sdk::bindings",
    });
}

// The contract's types a plugin receives, returns or matches on. Those a plugin would build
// field by field (the plugin description, its rate limit, retry advice, signatures) are built
// through the SDK instead ([`Info`], [`retry`], [`Request`]), so that a field a later
// contract version adds does not break every plugin's source.
pub use bindings::canopy::destination::types::{
    ConfigError, IncomingResponse, Method, OutgoingRequest, Refusal, SettingKind, SettingSpec,
    Verdict,
};
pub use canopy_events::{
    Customer, Event, EventKind, RESERVED_HEADERS, UnknownEventKind, dot_segment, is_reserved_header,
};
pub use config::{Config, Setting};
pub use info::Info;
pub use request::Request;
pub use response::{default_verdict, header, platform_verdict, retry, retry_after_seconds};
pub use serde_json::{self, Map, Value, json};

/// What a destination plugin implements. Every function is pure: same input, same output.
pub trait Destination {
    /// Identity, supported events, allowed hosts and the settings form.
    fn describe() -> Info;

    /// Problems with an integration's configuration; empty when it can work.
    fn validate_config(config: &Config) -> Vec<ConfigError>;

    /// The request(s) that deliver `event`, or why not.
    fn transform(event: &Event, config: &Config) -> Result<Vec<OutgoingRequest>, Refusal>;

    /// What the platform's answer means. Defaults to [`default_verdict`].
    fn interpret(response: &IncomingResponse) -> Verdict {
        default_verdict(response)
    }
}

/// Adapts a [`Destination`] to the raw WIT exports: parses the event and settings once, so
/// that plugins only ever see typed data. Not meant to be used directly.
#[doc(hidden)]
pub mod adapter {
    use super::*;
    use crate::bindings::canopy::destination::types as wit;

    pub fn validate_config<D: Destination>(config: wit::Config) -> Vec<ConfigError> {
        match Config::from_wit(config) {
            Ok(config) => D::validate_config(&config),
            Err(message) => vec![ConfigError {
                field: String::new(),
                message,
            }],
        }
    }

    pub fn transform<D: Destination>(
        event: String,
        config: wit::Config,
    ) -> Result<Vec<OutgoingRequest>, Refusal> {
        let event = Event::from_json(&event).map_err(|e| {
            Refusal::InvalidEvent(format!("the event is not a canonical event: {e}"))
        })?;
        let config = Config::from_wit(config).map_err(Refusal::InvalidConfig)?;
        D::transform(&event, &config)
    }
}

/// Exports a [`Destination`] implementation as the component's `plugin` interface.
///
/// ```ignore
/// struct MyPlatform;
/// impl canopy_plugin_sdk::Destination for MyPlatform { /* … */ }
/// canopy_plugin_sdk::export_destination!(MyPlatform);
/// ```
#[macro_export]
macro_rules! export_destination {
    ($destination:ty) => {
        #[doc(hidden)]
        pub struct __CanopyExport;

        impl $crate::bindings::exports::canopy::destination::plugin::Guest for __CanopyExport {
            fn describe() -> $crate::bindings::canopy::destination::types::PluginInfo {
                <$destination as $crate::Destination>::describe().into()
            }
            fn validate_config(
                config: $crate::bindings::canopy::destination::types::Config,
            ) -> ::std::vec::Vec<$crate::ConfigError> {
                $crate::adapter::validate_config::<$destination>(config)
            }
            fn transform(
                event: ::std::string::String,
                config: $crate::bindings::canopy::destination::types::Config,
            ) -> ::std::result::Result<::std::vec::Vec<$crate::OutgoingRequest>, $crate::Refusal> {
                $crate::adapter::transform::<$destination>(event, config)
            }
            fn interpret(response: $crate::IncomingResponse) -> $crate::Verdict {
                <$destination as $crate::Destination>::interpret(&response)
            }
        }

        // Component exports exist only in the wasm build; a native build of the same crate
        // (benchmarks, unit tests) keeps the mapping without them.
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::__export_world_destination!(__CanopyExport with_types_in $crate::bindings);
    };
}
