//! Canopy carries a loyalty platform's customer events to marketing and automation
//! platforms through sandboxed WebAssembly destination plugins.
//!
//! # Layout
//!
//! - [`runtime`] — the plugin sandbox: wasmtime engine, the `destination` world bindings,
//!   limits, warm instances, and the registry of active plugin versions.
//! - [`server`] — the HTTP server: `run(config, listener, shutdown)` and its routes.
//! - [`config`] — configuration shared by the server as `Arc<Config>`.
//! - [`crypto`] — secret values that never print; request signing (hex HMAC-SHA256,
//!   Standard Webhooks).
//! - [`delivery`] — where requests may go, how a plugin's request becomes the one on the wire
//!   (secrets, signatures, redaction), and when a failed attempt is retried.
//! - [`cli`] — the `canopy` command line: `serve`, `plugin inspect`, `plugin run`.
//!
//! Data flows one way (SPEC.md): ingest → store → scheduler → worker (plugin transform →
//! secrets & signing → send) → outcome (plugin verdict → record → reschedule or finish).

pub mod api;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod delivery;
pub mod metrics;
pub mod runtime;
pub mod server;
pub mod store;

pub use config::Config;
pub use server::run;
