//! Canopy's integration suite: one test binary. Plugins are real wasm components built from
//! `plugins/` and `tests/components/` (see `canopy-test-support`); the CLI is the real
//! `canopy` binary; the server runs on a loopback port.

mod admin;
mod cli;
mod cluster;
mod crash;
mod destinations;
mod faults;
mod fuzz;
mod hardening;
mod harness;
mod languages;
mod migrate_store;
mod pipeline;
mod runtime;
mod server;
mod shops;
mod store;
mod swap;
mod time;
mod ui;

use std::sync::Arc;

use canopy::runtime::{Limits, Plugin, PluginConfig, PluginResponse, Runtime, Scope, Verdict};
use serde_json::json;

/// Limits small enough that hostile plugins fail fast, large enough for real work; fuel is
/// metered (the server's default is time only; `server_limits` covers that mode).
pub fn test_limits() -> Limits {
    Limits {
        fuel_per_call: Some(50_000_000),
        max_instances: 32,
        warm_instances: 8,
        ..Limits::default()
    }
}

/// The server's defaults (no fuel metering), with small pools.
pub fn server_limits() -> Limits {
    Limits {
        max_instances: 32,
        warm_instances: 8,
        ..Limits::default()
    }
}

pub fn runtime() -> Runtime {
    Runtime::new(test_limits()).expect("runtime starts")
}

pub fn load(runtime: &Runtime, path: &str) -> Arc<Plugin> {
    let bytes = canopy_test_support::component(path);
    Arc::new(
        runtime
            .load(&bytes)
            .unwrap_or_else(|e| panic!("{path} loads: {e}")),
    )
}

/// Settings `{"mode": mode}` for the hostile component.
pub fn mode(mode: &str) -> PluginConfig {
    PluginConfig {
        settings: json!({ "mode": mode }),
        secrets_present: vec![],
    }
}

/// The sample event with another id.
pub fn event_with_id(id: &str) -> String {
    let mut event: serde_json::Value =
        serde_json::from_str(canopy_test_support::SAMPLE_EVENT).unwrap();
    event["id"] = json!(id);
    event.to_string()
}

/// Every file under `dir`, at any depth.
pub fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// What `plugin` makes of an answer with this status, these headers and this body.
pub fn verdict(plugin: &Plugin, status: u16, headers: &[(&str, &str)], body: &str) -> Verdict {
    plugin
        .interpret(
            Scope::Fresh,
            &PluginResponse {
                status,
                headers: headers
                    .iter()
                    .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                    .collect(),
                body: body.as_bytes().to_vec(),
            },
        )
        .expect("the call succeeds")
        .value
}
