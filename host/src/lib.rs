//! Canopy carries a loyalty platform's customer events to marketing and automation
//! platforms through sandboxed WebAssembly destination plugins.
//!
//! # Layout
//!
//! - [`api`] — the HTTP API, one module per resource (`ingest`, `integrations`,
//!   `deliveries`), the JSON error shape and the token middleware.
//! - [`store`] — the [`store::Store`] trait the pipeline goes through, and its sled
//!   implementation: events, integrations, deliveries, attempts, the due-time queue with
//!   leases, and the delivery-log indexes.
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
pub mod cli;
pub mod config;
pub mod crypto;
pub mod delivery;
pub mod listen;
pub mod metrics;
pub mod runtime;
pub mod server;
pub mod store;

pub use config::Config;
pub use server::run;
