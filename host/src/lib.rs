//! Canopy carries a loyalty platform's customer events to marketing and automation
//! platforms through sandboxed WebAssembly destination plugins.
//!
//! # Layout
//!
//! - [`model`] — shops, events, integrations, deliveries, attempts, plugin versions, and the
//!   business rules that belong to them (auto-disable, pausing and resuming, ending work).
//! - [`app`] — the application ([`app::App`]) and its services, which the HTTP API (and the
//!   web UI) call: access (who may do what), shops and tokens, ingest, integrations,
//!   deliveries, plugins.
//! - [`api`] — the HTTP API, one module per resource (`ingest`, `shops`, `plugins`,
//!   `integrations`, `deliveries`), the JSON error shape and the token middleware.
//! - [`store`] — the [`store::Store`] trait the pipeline goes through, and its embedded
//!   implementation (redb behind a write-ahead journal, or sled): shops and tokens, events, integrations, deliveries, attempts, a queue
//!   per integration with leases and a fair claim, per-shop delivery-log indexes, health
//!   statistics; older data directories are migrated at open.
//! - [`delivery`] — the scheduler and workers, the HTTP sender with the internal-address
//!   guard and the egress override, request preparation (secrets, signatures, redaction),
//!   outcomes, the retry schedule and rate limits.
//! - [`runtime`] — the plugin sandbox: wasmtime engine, the `destination` world bindings,
//!   limits, warm instances, and the registry of active plugin versions.
//! - [`crypto`] — secrets sealed at rest (AES-256-CBC + HMAC-SHA256), secret values that
//!   never print, request signing (hex HMAC-SHA256, Standard Webhooks).
//! - [`metrics`] — the Prometheus registry behind `/metrics`.
//! - [`server`] — start-up, `run(config, listener, shutdown)`, the router, the store
//!   watchdog.
//! - [`listen`] — the HTTP connections: a cap on open connections, a header timeout, JSON
//!   answers even for requests hyper refuses itself, graceful shutdown.
//! - [`config`] — configuration shared by the server as `Arc<Config>`.
//! - [`cli`] — the `canopy` command line: `serve`, `keygen`, `plugin inspect`, `plugin run`.
//!
//! Data flows one way (SPEC.md): ingest → store → scheduler → worker (plugin transform →
//! secrets & signing → send) → outcome (plugin verdict → record → reschedule or finish).

pub mod api;
pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod delivery;
pub mod listen;
pub mod metrics;
pub mod model;
pub mod plugin_test;
pub mod runtime;
pub mod scaffold;
pub mod server;
pub mod store;
pub mod ui;

pub use config::Config;
pub use server::run;
