//! The runtime's typed errors: what went wrong loading a component, and what went wrong in
//! one call, naming the limit or trap so an admin can act on it.

use std::time::Duration;

use thiserror::Error;

use super::bindings::{CONTRACT_VERSION, Contract};

/// The contract versions this host speaks, as error messages name them.
fn spoken() -> String {
    let versions = Contract::ALL.map(Contract::version);
    format!("canopy:destination@{}", versions.join(" and @"))
}

/// A component that cannot be used as a destination plugin.
#[derive(Debug, Error)]
pub enum LoadError {
    #[error("the component is {size} bytes, over the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error(
        "the component is {size} bytes, over the {limit} bytes a plugin may be unless it \
         declares a larger size; a plugin built against contract 0.2 declares it in \
         `needs.component-mib` (up to this server's cap of {cap} MiB)"
    )]
    LargerThanDeclared {
        size: usize,
        limit: usize,
        cap: usize,
    },
    #[error(
        "the plugin asks for {asked} MiB of {what}, over this server's cap of {cap} MiB \
         (its operator sets the cap with {flag})"
    )]
    NeedsOverCap {
        what: &'static str,
        asked: u32,
        cap: usize,
        flag: &'static str,
    },
    #[error("the file is not WebAssembly (it does not start with the `\\0asm` magic bytes)")]
    NotWasm,
    #[error(
        "the file is a core WebAssembly module, not a component; build the plugin for the \
         wasm32-wasip2 target (or wrap it with `wasm-tools component new`)"
    )]
    NotAComponent,
    #[error("the component does not compile: {0}")]
    Compile(String),
    #[error(
        "the component was built against contract {found}; this host speaks {spoken} and \
         loads plugins built against one of them or a newer compatible release of one; \
         rebuild it against the newest, `wit/0.2` (contract {current})",
        spoken = spoken(),
        current = CONTRACT_VERSION
    )]
    ContractVersion { found: String },
    #[error(
        "the component does not implement the canopy:destination/destination world \
         ({spoken}): {0}",
        spoken = spoken()
    )]
    WrongWorld(String),
    #[error("the component imports something the sandbox does not provide: {0}")]
    UnsupportedImport(String),
    #[error("the plugin's `describe` failed: {0}")]
    Describe(#[source] PluginError),
    #[error("the plugin describes itself incorrectly: {0}")]
    InvalidDescription(String),
}

/// One call into a plugin that did not complete normally. The host goes on serving.
#[derive(Debug, Error)]
pub enum PluginError {
    #[error("the plugin used up its CPU budget of {fuel} fuel units (it may loop forever)")]
    CpuBudget { fuel: u64 },
    #[error("the plugin ran past its time limit of {limit:?}")]
    TimeLimit { limit: Duration },
    #[error("the plugin tried to use more than its memory limit of {limit} bytes")]
    MemoryLimit { limit: usize },
    #[error("the plugin's output is {size} bytes, over the limit of {limit} bytes")]
    OutputTooLarge { size: usize, limit: usize },
    #[error("the plugin returned {count} requests for one event, over the limit of {limit}")]
    TooManyRequests { count: usize, limit: usize },
    #[error("the plugin tried to {0}, which the sandbox does not allow")]
    Forbidden(String),
    #[error(
        "the plugin trapped: {message}{}{}",
        optional("\nplugin stderr: ", stderr),
        optional("\nguest backtrace:\n", backtrace)
    )]
    Trap {
        message: String,
        stderr: String,
        backtrace: String,
    },
    #[error("the plugin returned an invalid request: {0}")]
    InvalidOutput(String),
    #[error("the plugin could not be started: {0}")]
    Instantiate(String),
}

impl PluginError {
    /// Whether the host refused what the plugin returned (an invalid or oversized request),
    /// as opposed to the plugin failing to return at all (a trap, a limit).
    pub fn is_refused_output(&self) -> bool {
        matches!(
            self,
            PluginError::InvalidOutput(_)
                | PluginError::OutputTooLarge { .. }
                | PluginError::TooManyRequests { .. }
        )
    }
}

fn optional(prefix: &str, text: &str) -> String {
    if text.is_empty() {
        String::new()
    } else {
        format!("{prefix}{text}")
    }
}

impl PluginError {
    /// A short, stable name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            PluginError::CpuBudget { .. } => "cpu_budget",
            PluginError::TimeLimit { .. } => "time_limit",
            PluginError::MemoryLimit { .. } => "memory_limit",
            PluginError::OutputTooLarge { .. } => "output_too_large",
            PluginError::TooManyRequests { .. } => "too_many_requests",
            PluginError::Forbidden(_) => "forbidden",
            PluginError::Trap { .. } => "trap",
            PluginError::InvalidOutput(_) => "invalid_output",
            PluginError::Instantiate(_) => "instantiate",
        }
    }
}
