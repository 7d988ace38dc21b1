//! Server configuration: defaults < `CANOPY_*` environment < command-line flags (clap reads
//! both), validated once and shared as `Arc<Config>`.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

use crate::runtime::{self, Limits};

/// Settings of `canopy serve`.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "CANOPY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub plugin_limits: PluginLimits,
}

/// The sandbox limits (see `runtime::limits` for why each default is what it is).
#[derive(Debug, Clone, Args)]
pub struct PluginLimits {
    /// Meter fuel and stop a plugin call past this many units (about one per wasm
    /// instruction). Off by default in the server (it costs ~25% per call; the time limit
    /// bounds CPU); `plugin run` meters 400000000 by default to report usage.
    #[arg(long, env = "CANOPY_PLUGIN_FUEL")]
    pub plugin_fuel: Option<u64>,

    /// Time limit of one plugin call, in milliseconds (its CPU budget: plugins cannot block).
    #[arg(long, env = "CANOPY_PLUGIN_TIME_LIMIT_MS",
          default_value_t = runtime::DEFAULT_CALL_TIME_LIMIT.as_millis() as u64)]
    pub plugin_time_limit_ms: u64,

    /// Linear memory of one plugin instance, in MiB.
    #[arg(long, env = "CANOPY_PLUGIN_MEMORY_MIB",
          default_value_t = runtime::DEFAULT_MEMORY_BYTES >> 20)]
    pub plugin_memory_mib: usize,

    /// Size of what one transform may return, in KiB.
    #[arg(long, env = "CANOPY_PLUGIN_OUTPUT_KIB",
          default_value_t = runtime::DEFAULT_OUTPUT_BYTES >> 10)]
    pub plugin_output_kib: usize,

    /// Plugin instances alive at once.
    #[arg(long, env = "CANOPY_PLUGIN_INSTANCES", default_value_t = runtime::DEFAULT_MAX_INSTANCES)]
    pub plugin_instances: u32,
}

impl Default for PluginLimits {
    fn default() -> Self {
        PluginLimits::from(&Limits::default())
    }
}

impl From<&Limits> for PluginLimits {
    fn from(l: &Limits) -> PluginLimits {
        PluginLimits {
            plugin_fuel: l.fuel_per_call,
            plugin_time_limit_ms: l.call_time_limit.as_millis() as u64,
            plugin_memory_mib: l.memory_bytes >> 20,
            plugin_output_kib: l.output_bytes >> 10,
            plugin_instances: l.max_instances,
        }
    }
}

impl PluginLimits {
    /// The runtime limits these settings describe, or why they cannot work.
    pub fn limits(&self) -> Result<Limits, String> {
        if self.plugin_fuel == Some(0) || self.plugin_time_limit_ms == 0 {
            return Err("plugin fuel and time limit must be positive".into());
        }
        if self.plugin_memory_mib == 0 || self.plugin_memory_mib > 4096 {
            return Err("plugin memory must be between 1 and 4096 MiB".into());
        }
        if self.plugin_instances == 0 {
            return Err("at least one plugin instance is needed".into());
        }
        Ok(Limits {
            fuel_per_call: self.plugin_fuel,
            call_time_limit: Duration::from_millis(self.plugin_time_limit_ms),
            memory_bytes: self.plugin_memory_mib << 20,
            output_bytes: self.plugin_output_kib << 10,
            max_instances: self.plugin_instances,
            ..Limits::default()
        })
    }
}

impl Config {
    /// A configuration for tests and embedding: port 0 on loopback, default limits.
    pub fn loopback() -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            plugin_limits: PluginLimits::default(),
        }
    }
}
