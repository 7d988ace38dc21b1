//! Server configuration: defaults < `CANOPY_*` environment < command-line flags (clap reads
//! both), validated once and shared as `Arc<Config>`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use crate::crypto::secret::SecretValue;
use crate::delivery::retry::{DEFAULT_JITTER, DEFAULT_SCHEDULE, RetrySchedule};
use crate::delivery::sender::EgressOverride;
use crate::runtime::{self, Limits};

/// Delivery attempts in flight at once, across every integration, by default. A worker holds
/// its attempt until the outcome is on disk (the group commit), so part of each attempt is
/// spent waiting on the disk: with 32, a 2-core machine delivering as fast as it could stayed
/// about a fifth idle; 64 delivered 6–10% more for 3–7% less CPU per delivery
/// (docs/PERFORMANCE.md, issue 16 part six). Each integration stays within its own cap
/// ([`DEFAULT_MAX_IN_FLIGHT`](crate::model::DEFAULT_MAX_IN_FLIGHT)).
pub const DEFAULT_WORKERS: usize = 64;

/// Settings of `canopy serve`.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "CANOPY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Where the store lives (created with owner-only permissions when missing).
    #[arg(long, env = "CANOPY_DATA_DIR", default_value = "canopy-data")]
    pub data_dir: PathBuf,

    /// The store: unset for the embedded store in the data directory (on the engine the
    /// directory holds; redb when it is new), `redb` or `sled` to ask for that engine, or a
    /// PostgreSQL URL (`postgres://user:password@host/db`) for several nodes on one database
    /// (README, "Cluster mode"). With PostgreSQL, the admin and ingest tokens must be set (every node
    /// needs the same ones).
    #[arg(long, env = "CANOPY_STORE", hide_env_values = true, value_parser = secret)]
    pub store: Option<SecretValue>,

    /// Token of the admin API. When unset, one is generated on first start, kept in the data
    /// directory (owner-only) and printed once.
    #[arg(long, env = "CANOPY_ADMIN_TOKEN", hide_env_values = true, value_parser = secret)]
    pub admin_token: Option<SecretValue>,

    /// Token of `POST /v1/events`. Generated like the admin token when unset.
    #[arg(long, env = "CANOPY_INGEST_TOKEN", hide_env_values = true, value_parser = secret)]
    pub ingest_token: Option<SecretValue>,

    /// The key that encrypts integration secrets: 32 bytes in base64 (`canopy keygen`).
    /// Kept outside the data directory it protects.
    #[arg(long, env = "CANOPY_MASTER_KEY", hide_env_values = true, value_parser = secret)]
    pub master_key: Option<SecretValue>,

    /// A file holding the master key (instead of `--master-key`).
    #[arg(long, env = "CANOPY_MASTER_KEY_FILE", conflicts_with = "master_key")]
    pub master_key_file: Option<PathBuf>,

    /// Client connections open at once; past it, new ones wait until one closes.
    #[arg(long, env = "CANOPY_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,

    /// A connection must send a whole request head (line and headers) within this, and an
    /// idle keep-alive connection its next one, or it is closed.
    #[arg(long, env = "CANOPY_HEADER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_timeout: Duration,

    /// The address users reach this server at (`https://canopy.example.com`): sign-in links
    /// are answered whole with it, and the UI's session cookie is marked `Secure` when it is
    /// `https`. Without it, links are answered as paths.
    #[arg(long, env = "CANOPY_PUBLIC_URL")]
    pub public_url: Option<url::Url>,

    #[command(flatten)]
    pub delivery: DeliverySettings,

    #[command(flatten)]
    pub plugin_limits: PluginLimits,
}

/// How deliveries are made.
#[derive(Debug, Clone, Args)]
pub struct DeliverySettings {
    /// Delays between attempts after the first fails, comma-separated (`30s`, `5m`, `2h`).
    #[arg(long, env = "CANOPY_RETRY_SCHEDULE", default_value = DEFAULT_SCHEDULE)]
    pub retry_schedule: String,

    /// Each retry delay varies by up to this fraction, either way.
    #[arg(long, env = "CANOPY_RETRY_JITTER", default_value_t = DEFAULT_JITTER)]
    pub retry_jitter: f64,

    /// Consecutive failed deliveries after which an integration is disabled (0: never).
    #[arg(long, env = "CANOPY_AUTO_DISABLE_AFTER", default_value_t = 5)]
    pub auto_disable_after: u32,

    /// Finished deliveries and their events are purged after this long.
    #[arg(long, env = "CANOPY_RETENTION", default_value = "30d", value_parser = humantime::parse_duration)]
    pub retention: Duration,

    /// How often the purge runs.
    #[arg(long, env = "CANOPY_PURGE_INTERVAL", default_value = "1h", value_parser = humantime::parse_duration)]
    pub purge_interval: Duration,

    /// Time limit of one outgoing request, response included.
    #[arg(long, env = "CANOPY_REQUEST_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,

    /// Allow requests to private, loopback and link-local addresses (local development and
    /// tests only).
    #[arg(long, env = "CANOPY_ALLOW_PRIVATE_NETWORKS")]
    pub allow_private_networks: bool,

    /// Route a platform host to another base URL, `host=base-url` (tests and staging; off by
    /// default). `*.myshopify.com=…` covers every shop. Repeat or separate with commas.
    #[arg(long, env = "CANOPY_EGRESS_OVERRIDE", value_delimiter = ',')]
    pub egress_override: Vec<EgressOverride>,

    /// Send deliveries through this HTTP proxy (`http://host:port`). Proxy variables of the
    /// environment (`HTTP_PROXY`, …) are ignored: only this setting routes through a proxy,
    /// and the internal-address guard still checks every destination.
    #[arg(long, env = "CANOPY_EGRESS_PROXY")]
    pub egress_proxy: Option<url::Url>,

    /// Delivery attempts in flight at once (see [`DEFAULT_WORKERS`]).
    #[arg(long, env = "CANOPY_WORKERS", default_value_t = DEFAULT_WORKERS)]
    pub workers: usize,

    /// Largest `POST /v1/events` body, in KiB (a batch of 1,000 events fits in the default).
    #[arg(long, env = "CANOPY_MAX_INGEST_BODY_KIB", default_value_t = 4096)]
    pub max_ingest_body_kib: usize,

    /// How long shutdown waits for attempts in flight before queueing them again.
    #[arg(long, env = "CANOPY_SHUTDOWN_GRACE", default_value = "15s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,

    /// How long a claim holds a delivery before another worker — on any node — may take it
    /// (default: the request timeout × the requests an event may make, plus a minute: longer
    /// than any attempt). A shorter lease brings work a dead node held back sooner; an attempt
    /// that outlives its lease records nothing, and its delivery is sent again.
    #[arg(long, env = "CANOPY_LEASE", value_parser = humantime::parse_duration)]
    pub lease: Option<Duration>,
}

pub(crate) fn secret(text: &str) -> Result<SecretValue, Infallible> {
    Ok(SecretValue::new(text))
}

impl DeliverySettings {
    pub fn schedule(&self) -> Result<RetrySchedule, String> {
        RetrySchedule::parse(&self.retry_schedule, self.retry_jitter).map_err(|e| e.to_string())
    }
}

impl Default for DeliverySettings {
    fn default() -> DeliverySettings {
        DeliverySettings {
            retry_schedule: DEFAULT_SCHEDULE.to_owned(),
            retry_jitter: DEFAULT_JITTER,
            auto_disable_after: 5,
            retention: Duration::from_secs(30 * 86_400),
            purge_interval: Duration::from_secs(3_600),
            request_timeout: Duration::from_secs(10),
            allow_private_networks: false,
            egress_override: Vec::new(),
            egress_proxy: None,
            workers: DEFAULT_WORKERS,
            max_ingest_body_kib: 4096,
            shutdown_grace: Duration::from_secs(15),
            lease: None,
        }
    }
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

    /// Linear memory of one plugin instance, in MiB, unless the plugin declares it needs
    /// more.
    #[arg(long, env = "CANOPY_PLUGIN_MEMORY_MIB",
          default_value_t = runtime::DEFAULT_MEMORY_BYTES >> 20)]
    pub plugin_memory_mib: usize,

    /// The most memory a plugin may declare it needs (contract 0.2 `needs.memory-mib`), in
    /// MiB; a plugin asking for more is refused. Never below `--plugin-memory-mib`.
    #[arg(long, env = "CANOPY_PLUGIN_MEMORY_CAP_MIB",
          default_value_t = runtime::DEFAULT_MEMORY_CAP_BYTES >> 20)]
    pub plugin_memory_cap_mib: usize,

    /// Size of a plugin's component, in MiB, unless the plugin declares it needs more.
    #[arg(long, env = "CANOPY_PLUGIN_COMPONENT_MIB",
          default_value_t = runtime::DEFAULT_COMPONENT_BYTES >> 20)]
    pub plugin_component_mib: usize,

    /// The largest component a plugin may declare (`needs.component-mib`), in MiB: also the
    /// largest upload the server reads. Never below `--plugin-component-mib`.
    #[arg(long, env = "CANOPY_PLUGIN_COMPONENT_CAP_MIB",
          default_value_t = runtime::DEFAULT_COMPONENT_CAP_BYTES >> 20)]
    pub plugin_component_cap_mib: usize,

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
            plugin_memory_cap_mib: l.memory_cap_bytes >> 20,
            plugin_component_mib: l.component_bytes >> 20,
            plugin_component_cap_mib: l.component_cap_bytes >> 20,
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
        // A cap below the default is raised to it (`Limits::memory_ceiling`), so that a
        // deployment that set only the default, above the cap's own default, keeps working.
        if self.plugin_memory_cap_mib > 4096 {
            return Err("the plugin memory cap must be at most 4096 MiB".into());
        }
        if self.plugin_component_mib == 0
            || self.plugin_component_mib > 1024
            || self.plugin_component_cap_mib > 1024
        {
            return Err("plugin component sizes must be between 1 and 1024 MiB".into());
        }
        if self.plugin_instances == 0 {
            return Err("at least one plugin instance is needed".into());
        }
        Ok(Limits {
            fuel_per_call: self.plugin_fuel,
            call_time_limit: Duration::from_millis(self.plugin_time_limit_ms),
            memory_bytes: self.plugin_memory_mib << 20,
            memory_cap_bytes: self.plugin_memory_cap_mib << 20,
            component_bytes: self.plugin_component_mib << 20,
            component_cap_bytes: self.plugin_component_cap_mib << 20,
            output_bytes: self.plugin_output_kib << 10,
            max_instances: self.plugin_instances,
            ..Limits::default()
        })
    }
}

impl Config {
    /// A configuration for tests and embedding: port 0 on loopback, data in `data_dir`, the
    /// given tokens and master key, default delivery settings and limits.
    pub fn loopback(
        data_dir: &Path,
        admin_token: &str,
        ingest_token: &str,
        master_key: &str,
    ) -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: data_dir.to_owned(),
            store: None,
            admin_token: Some(SecretValue::new(admin_token)),
            ingest_token: Some(SecretValue::new(ingest_token)),
            master_key: Some(SecretValue::new(master_key)),
            master_key_file: None,
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            public_url: None,
            delivery: DeliverySettings::default(),
            plugin_limits: PluginLimits::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deployment that raised only the default memory or component size past the caps'
    /// defaults keeps working: the caps rise with it.
    #[test]
    fn caps_below_the_defaults_rise_to_them() {
        let limits = PluginLimits {
            plugin_memory_mib: 512,
            plugin_component_mib: 100,
            ..PluginLimits::default()
        }
        .limits()
        .unwrap();
        assert_eq!(limits.memory_ceiling(), 512 << 20);
        assert_eq!(limits.component_ceiling(), 100 << 20);
        for bad in [
            PluginLimits {
                plugin_memory_cap_mib: 4097,
                ..PluginLimits::default()
            },
            PluginLimits {
                plugin_component_mib: 0,
                ..PluginLimits::default()
            },
            PluginLimits {
                plugin_component_cap_mib: 1025,
                ..PluginLimits::default()
            },
        ] {
            assert!(bad.limits().is_err(), "{bad:?}");
        }
    }
}
