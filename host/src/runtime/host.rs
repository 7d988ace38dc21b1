//! Per-call state of a plugin instance and the host side of the `host` interface (logging).
//! The WASI context grants nothing: no files, no environment, no arguments, no sockets, no
//! name lookups; stdin is empty and stdout is discarded. Stderr is kept (bounded, per call)
//! because a Rust guest's panic message lands there, and it makes trap errors readable.

use std::sync::{Arc, Mutex};

use wasmtime::ResourceLimiter;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{ResourceTable, WasiCtx, WasiCtxView, WasiView};

use super::bindings::v0_1::canopy::destination::host as host_v0_1;
use super::bindings::v0_2::canopy::destination::host::{Host, LogLevel};
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
    stderr: GuestStderr,
    pub(crate) memory: MemoryLimiter,
    pub(crate) logs: Vec<PluginLog>,
    plugin_id: std::sync::Arc<str>,
}

impl InstanceState {
    pub(crate) fn new(plugin_id: std::sync::Arc<str>, memory_limit: usize) -> InstanceState {
        let stderr = GuestStderr::default();
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

    /// What the guest wrote to stderr during the current call, lossily decoded.
    pub(crate) fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock())
            .trim()
            .to_owned()
    }

    /// Forgets the previous call's stderr and logs (a warm instance serves many calls).
    pub(crate) fn start_call(&mut self) {
        self.stderr.lock().clear();
        self.logs.clear();
        self.memory.hit = false;
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

impl super::bindings::v0_2::canopy::destination::types::Host for InstanceState {}

impl super::bindings::v0_1::canopy::destination::types::Host for InstanceState {}

impl host_v0_1::Host for InstanceState {
    fn log(&mut self, level: host_v0_1::LogLevel, message: String) {
        let level = match level {
            host_v0_1::LogLevel::Debug => LogLevel::Debug,
            host_v0_1::LogLevel::Info => LogLevel::Info,
            host_v0_1::LogLevel::Warn => LogLevel::Warn,
            host_v0_1::LogLevel::Error => LogLevel::Error,
        };
        Host::log(self, level, message);
    }
}

/// The guest's stderr: keeps the first [`STDERR_BYTES`] of a call and drops the rest
/// without telling the guest, so a chatty plugin never sees a write fail (Rust's `eprintln!`
/// panics when it does).
#[derive(Clone, Default)]
struct GuestStderr(Arc<Mutex<Vec<u8>>>);

impl GuestStderr {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl IsTerminal for GuestStderr {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestStderr {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        // Only WASI preview 3 writes through this; the sandbox links preview 2.
        Box::new(tokio::io::sink())
    }
}

/// What `check-write` grants each time; writes beyond the kept bytes are dropped anyway.
const STDERR_PERMIT: usize = 64 << 10;

impl OutputStream for GuestStderr {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        let mut kept = self.lock();
        let room = STDERR_BYTES.saturating_sub(kept.len());
        kept.extend_from_slice(&bytes[..bytes.len().min(room)]);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(STDERR_PERMIT)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestStderr {
    async fn ready(&mut self) {}
}

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
