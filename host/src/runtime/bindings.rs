//! The one `bindgen!` of the host: Rust types and call stubs for the `destination` world
//! of `wit/`. Nothing outside `runtime` uses these types; it converts them at the edge.

wasmtime::component::bindgen!({
    world: "destination",
    path: "../wit",
});

pub use self::canopy::destination::types;

/// The contract version this host speaks: the WIT package version.
pub const CONTRACT_VERSION: &str = "0.1.0";

/// The fully qualified export a plugin must provide.
pub const PLUGIN_INTERFACE: &str = "canopy:destination/plugin@0.1.0";
