//! The plugin sandbox: one wasmtime [`Engine`] with the pooling allocator, the one linker
//! every plugin is instantiated against, and the limits every call runs under.
//!
//! - [`Runtime::load`] checks a component (size, wasm, component, contract version, world,
//!   imports, `describe`, declared needs) and compiles it into a [`Plugin`]: an
//!   `InstancePre` reused by every call. Plugins built against any contract version the host
//!   speaks (0.1, 0.2) load side by side; `bindings` converts the older ones in one place.
//! - Each call runs in an instance with its own `Store`: an epoch deadline for time (and
//!   optionally fuel for a deterministic CPU budget), a memory limiter, and an output cap. A call that breaks a limit or traps
//!   fails with a [`PluginError`] naming it; the instance is thrown away and nothing else
//!   is affected.
//! - Isolation: [`Scope::Fresh`] uses a new instance per call. [`Scope::Integration`]
//!   may reuse a warm instance, but only one that served the same integration on the same
//!   plugin version, never after an error, and at most [`Limits::calls_per_instance`]
//!   times (see `pool.rs` for the trade-off).
//! - [`PluginRegistry`] holds the active version of each plugin and swaps it atomically.
//! - [`bundled`] holds the four destination plugins shipped inside the binary.

mod bindings;
pub mod bundled;
mod compiled;
mod error;
mod host;
mod limits;
mod plugin;
mod pool;
mod registry;
mod threads;
mod types;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use wasmtime::component::Linker;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

pub use bindings::CONTRACT_VERSION;
pub use compiled::Compilation;
pub use error::{LoadError, PluginError};
pub use host::PluginLog;
pub use limits::*;
pub use plugin::{Call, Plugin, Usage, component_digest};
pub use registry::PluginRegistry;
pub use types::*;

use compiled::CompiledCache;
use host::InstanceState;
use pool::WarmPool;

/// Which instance a call may run in.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// A new instance, discarded after the call.
    Fresh,
    /// An instance that may be reused for later calls of the same integration (by id).
    Integration(&'a str),
}

/// Upper bound on core instances and memories per component: a Rust `wasm32-wasip2`
/// component has a handful (main module, WASI adapter shims); this leaves room for others.
const CORE_INSTANCES_PER_COMPONENT: u32 = 32;
const MEMORIES_PER_COMPONENT: u32 = 4;
const TABLES_PER_COMPONENT: u32 = 8;

/// The wasmtime engine and everything shared by all plugins. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<RuntimeInner>,
}

pub(crate) struct RuntimeInner {
    engine: Engine,
    linker: Linker<InstanceState>,
    limits: Limits,
    pool: WarmPool,
    generations: AtomicU64,
    compiled: Option<CompiledCache>,
    /// Where calls from async code run first ([`threads`]).
    threads: threads::CallThreads,
}

/// Errors setting up the engine itself (bad limits, no virtual memory for the pool).
#[derive(Debug, thiserror::Error)]
#[error("cannot start the plugin runtime: {0}")]
pub struct RuntimeError(String);

impl Runtime {
    /// A runtime that compiles every component it loads.
    pub fn new(limits: Limits) -> Result<Runtime, RuntimeError> {
        Runtime::with_compiled_cache(limits, None)
    }

    /// A runtime that keeps the native code of the components it loads under `cache`'s
    /// directory, authenticated under `cache`'s key (derived from the master key), and loads
    /// it back instead of compiling again (see `compiled.rs`). `None` compiles every time; a
    /// cache that cannot be opened is logged and the runtime compiles every time.
    pub fn with_compiled_cache(
        limits: Limits,
        cache: Option<(&std::path::Path, [u8; 32])>,
    ) -> Result<Runtime, RuntimeError> {
        let err = |e: wasmtime::Error| RuntimeError(format!("{e:#}"));
        let n = limits.max_instances;
        let mut pooling = PoolingAllocationConfig::new();
        pooling
            .total_component_instances(n)
            .total_core_instances(n.saturating_mul(CORE_INSTANCES_PER_COMPONENT / 4))
            .total_memories(n.saturating_mul(2))
            .total_tables(n.saturating_mul(TABLES_PER_COMPONENT / 2))
            .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
            .max_memories_per_component(MEMORIES_PER_COMPONENT)
            .max_tables_per_component(TABLES_PER_COMPONENT)
            .max_memory_size(limits.memory_ceiling());

        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .consume_fuel(limits.fuel_per_call.is_some())
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
        let engine = Engine::new(&config).map_err(err)?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(err)?;
        forbid_waiting(&mut linker).map_err(err)?;
        // Every contract version's host interface: plugins of each load side by side.
        bindings::v0_1::Destination::add_to_linker::<_, wasmtime::component::HasSelf<_>>(
            &mut linker,
            |state| state,
        )
        .map_err(err)?;
        bindings::v0_2::Destination::add_to_linker::<_, wasmtime::component::HasSelf<_>>(
            &mut linker,
            |state| state,
        )
        .map_err(err)?;

        let compiled = cache.and_then(|(root, key)| {
            CompiledCache::open(root, &engine, key)
                .inspect_err(|error| {
                    tracing::warn!(path = %root.display(), %error, "cannot open the compiled-component cache; every start compiles the plugins");
                })
                .ok()
        });
        spawn_epoch_ticker(&engine)
            .map_err(|e| RuntimeError(format!("cannot start the epoch thread: {e}")))?;
        Ok(Runtime {
            inner: Arc::new(RuntimeInner {
                engine,
                linker,
                // Idle warm instances hold pool slots: never more than half of them, so calls
                // always find a slot for a fresh instance.
                pool: WarmPool::new(limits.warm_instances.min(n as usize / 2)),
                limits,
                generations: AtomicU64::new(1),
                compiled,
                threads: threads::CallThreads::start(
                    std::thread::available_parallelism().map_or(2, |n| n.get()),
                )
                .map_err(|e| RuntimeError(format!("cannot start the plugin threads: {e}")))?,
            }),
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Checks and compiles a component. See [`LoadError`] for what is refused.
    pub fn load(&self, bytes: &[u8]) -> Result<Plugin, LoadError> {
        let generation = self.inner.generations.fetch_add(1, Ordering::Relaxed);
        Plugin::load(self.inner.clone(), generation, bytes)
    }

    /// Removes the precompiled code of every component whose digest is not in `stored`.
    pub fn retain_compiled(&self, stored: &std::collections::HashSet<String>) {
        if let Some(cache) = &self.inner.compiled {
            cache.retain(stored);
        }
    }

    /// Idle warm instances held right now (for metrics and tests).
    pub fn warm_instances(&self) -> usize {
        self.inner.pool.len()
    }
}

/// A sync WASI sleep would block a host thread without using fuel, out of reach of the
/// epoch deadline. Plugins have nothing to wait for, so subscribing to a clock traps.
fn forbid_waiting(linker: &mut Linker<InstanceState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut clock = linker.instance("wasi:clocks/monotonic-clock@0.2.12")?;
    for name in ["subscribe-duration", "subscribe-instant"] {
        clock.func_new(name, |_, _, _, _| {
            Err(wasmtime::Error::new(Forbidden("wait on a clock (sleep)")))
        })?;
    }
    linker.allow_shadowing(false);
    Ok(())
}

/// The marker error of an import the sandbox refuses at call time.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Forbidden(&'static str);

/// Advances the engine's epoch every [`EPOCH_TICK`] for the call time limit. Holds only a
/// weak handle, so the thread ends once the engine is dropped.
fn spawn_epoch_ticker(engine: &Engine) -> std::io::Result<()> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("canopy-epoch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(EPOCH_TICK);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        })
        .map(drop)
}
