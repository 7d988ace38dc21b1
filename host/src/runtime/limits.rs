//! The sandbox's limits: every bound a plugin call runs under, as named defaults that
//! configuration can override.

use std::time::Duration;

/// Fuel budget per call when fuel metering is on (about one unit per wasm instruction). A
/// typical transform uses ~60,000; a 1 MB Shopify payload fits easily.
pub const DEFAULT_FUEL_PER_CALL: u64 = 400_000_000;

/// Time bound per call, enforced by epoch interruption; always on. A plugin cannot block
/// (clock waits trap, it has no I/O), so its wall time is CPU time: this is the server's CPU
/// budget. A typical call takes ~10 µs, so the bound is ~50,000 times that.
pub const DEFAULT_CALL_TIME_LIMIT: Duration = Duration::from_millis(500);

/// Linear memory one plugin instance may hold, in all its memories together, unless the
/// plugin declares it needs more (`plugin-info.needs`, contract 0.2).
pub const DEFAULT_MEMORY_BYTES: usize = 64 << 20;

/// The most linear memory a plugin may declare it needs. An interpreter-based plugin
/// (Python, JavaScript) holds 10–30 MiB before it does anything; this leaves it room
/// without raising the default for everyone.
pub const DEFAULT_MEMORY_CAP_BYTES: usize = 256 << 20;

/// Total size of what one `transform` may return (URLs, headers and bodies). Shopify caps
/// payloads at 1 MB; 4 MiB leaves room for multi-request plugins without letting one
/// event balloon the store. The guest's memory cap bounds the copy-out before this check.
pub const DEFAULT_OUTPUT_BYTES: usize = 4 << 20;

/// Requests one event may turn into.
pub const DEFAULT_REQUESTS_PER_EVENT: usize = 16;

/// Size of a component, unless the plugin declares it needs more.
pub const DEFAULT_COMPONENT_BYTES: usize = 16 << 20;

/// The largest component a plugin may declare (and so the largest upload read). A
/// componentize-py component carries CPython and is ~18.5 MB; a JavaScript one ~12 MB.
pub const DEFAULT_COMPONENT_CAP_BYTES: usize = 64 << 20;

/// Plugin instances alive at once (pooling allocator slots), warm ones included.
pub const DEFAULT_MAX_INSTANCES: u32 = 256;

/// Idle warm instances kept across all plugins and integrations.
pub const DEFAULT_WARM_INSTANCES: usize = 64;

/// Calls served by one warm instance before it is recycled, bounding how long guest-side
/// state (heap growth, caches) can build up.
pub const DEFAULT_CALLS_PER_INSTANCE: u32 = 1_000;

/// Log lines a plugin may write per call, and their length; the rest is dropped.
pub const LOG_LINES_PER_CALL: usize = 32;
pub const LOG_LINE_BYTES: usize = 1024;

/// Guest stderr kept per instance, quoted in trap errors (a Rust panic message lands there).
pub const STDERR_BYTES: usize = 4096;

/// How often the epoch ticker advances; the time limit's resolution.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The limits one runtime applies to every plugin call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// `Some`: meter fuel and stop a call past this budget, deterministically (the dry run
    /// uses it to report instruction counts). `None`: no metering — it costs ~25% of a
    /// call — and the time limit alone bounds CPU (the server's default).
    pub fuel_per_call: Option<u64>,
    pub call_time_limit: Duration,
    /// Memory of a plugin that declares no need.
    pub memory_bytes: usize,
    /// The most memory a plugin may declare it needs (at least `memory_bytes`).
    pub memory_cap_bytes: usize,
    pub output_bytes: usize,
    pub requests_per_event: usize,
    /// Size of a plugin's component when it declares no need.
    pub component_bytes: usize,
    /// The largest component a plugin may declare (at least `component_bytes`).
    pub component_cap_bytes: usize,
    pub max_instances: u32,
    pub warm_instances: usize,
    pub calls_per_instance: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            fuel_per_call: None,
            call_time_limit: DEFAULT_CALL_TIME_LIMIT,
            memory_bytes: DEFAULT_MEMORY_BYTES,
            memory_cap_bytes: DEFAULT_MEMORY_CAP_BYTES,
            output_bytes: DEFAULT_OUTPUT_BYTES,
            requests_per_event: DEFAULT_REQUESTS_PER_EVENT,
            component_bytes: DEFAULT_COMPONENT_BYTES,
            component_cap_bytes: DEFAULT_COMPONENT_CAP_BYTES,
            max_instances: DEFAULT_MAX_INSTANCES,
            warm_instances: DEFAULT_WARM_INSTANCES,
            calls_per_instance: DEFAULT_CALLS_PER_INSTANCE,
        }
    }
}

impl Limits {
    /// Epoch ticks that make up the call time limit (at least one).
    pub(crate) fn epoch_ticks(&self) -> u64 {
        (self.call_time_limit.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
    }

    /// The most memory any instance may hold: the pool's slot size.
    pub(crate) fn memory_ceiling(&self) -> usize {
        self.memory_cap_bytes.max(self.memory_bytes)
    }

    /// The largest component [`crate::runtime::Runtime::load`] reads: the upload limit.
    pub fn component_ceiling(&self) -> usize {
        self.component_cap_bytes.max(self.component_bytes)
    }
}
