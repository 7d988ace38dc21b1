//! Per-call state of a plugin instance and the host side of the `host` interface (logging).
//! The WASI context grants nothing: no files, no environment, no arguments, no sockets, no
//! name lookups; stdin is empty and stdout is discarded. Stderr is kept (bounded) because a
//! Rust guest's panic message lands there, and it makes trap errors readable.

use wasmtime::ResourceLimiter;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{ResourceTable, WasiCtx, WasiCtxView, WasiView};

use super::bindings::canopy::destination::host::{Host, LogLevel};
use super::limits::{LOG_LINE_BYTES, LOG_LINES_PER_CALL, STDERR_BYTES};

/// A line a plugin logged during a call.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PluginLog {
    pub level: &'static str,
    pub message: String,
}

/// Store data of one plugin instance.
pub struct InstanceState {
    wasi: WasiCtx,
    table: ResourceTable,
    stderr: MemoryOutputPipe,
    pub(crate) memory: MemoryLimiter,
    pub(crate) logs: Vec<PluginLog>,
    plugin_id: std::sync::Arc<str>,
}

impl InstanceState {
    pub(crate) fn new(plugin_id: std::sync::Arc<str>, memory_limit: usize) -> InstanceState {
        let stderr = MemoryOutputPipe::new(STDERR_BYTES);
        let wasi = WasiCtx::builder().stderr(stderr.clone()).build();
        InstanceState {
            wasi,
            table: ResourceTable::new(),
            stderr,
            memory: MemoryLimiter::new(memory_limit),
            logs: Vec::new(),
            plugin_id,
        }
    }

    /// What the guest wrote to stderr so far, lossily decoded.
    pub(crate) fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.contents())
            .trim()
            .to_owned()
    }
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl Host for InstanceState {
    fn log(&mut self, level: LogLevel, mut message: String) {
        if self.logs.len() >= LOG_LINES_PER_CALL {
            return;
        }
        if message.len() > LOG_LINE_BYTES {
            let mut cut = LOG_LINE_BYTES;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        let plugin = &*self.plugin_id;
        let level = match level {
            LogLevel::Debug => {
                tracing::debug!(target: "canopy::plugin", plugin, "{message}");
                "debug"
            }
            LogLevel::Info => {
                tracing::info!(target: "canopy::plugin", plugin, "{message}");
                "info"
            }
            LogLevel::Warn => {
                tracing::warn!(target: "canopy::plugin", plugin, "{message}");
                "warn"
            }
            LogLevel::Error => {
                tracing::error!(target: "canopy::plugin", plugin, "{message}");
                "error"
            }
        };
        self.logs.push(PluginLog { level, message });
    }
}

impl super::bindings::canopy::destination::types::Host for InstanceState {}

/// Caps an instance's linear memory (all memories together) and records the peak, and
/// whether a growth was refused, so that an allocation failure reads as "memory limit"
/// rather than an anonymous trap.
pub(crate) struct MemoryLimiter {
    limit: usize,
    pub(crate) total: usize,
    pub(crate) hit: bool,
}

/// Table elements an instance may hold; Rust guests use a few hundred.
const TABLE_ELEMENTS: usize = 100_000;

impl MemoryLimiter {
    fn new(limit: usize) -> MemoryLimiter {
        MemoryLimiter {
            limit,
            total: 0,
            hit: false,
        }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.total - current.min(self.total) + desired;
        if total > self.limit {
            self.hit = true;
            return Ok(false);
        }
        self.total = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= TABLE_ELEMENTS)
    }
}
