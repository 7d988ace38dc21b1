//! One loaded plugin version: the checked component, its description, and the four calls of
//! the contract, each run under the runtime's limits.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, types::ComponentItem};
use wasmtime::{Store, Trap, WasmBacktrace};

use super::bindings::{self, Contract, Destination, DestinationPre};
use super::compiled::Compilation;
use super::error::{LoadError, PluginError};
use super::host::{InstanceState, PluginLog};
use super::limits::Limits;
use super::types::{
    ConfigError, Header, Needs, PluginConfig, PluginInfo, PluginRequest, PluginResponse, Refusal,
    Segment, SignatureRequest, Verdict,
};
use super::{Forbidden, RuntimeInner, Scope};

/// A compiled, checked plugin version. Calls on it are thread-safe; callers hold it in an
/// `Arc` so that a version being replaced finishes the calls it started.
pub struct Plugin {
    runtime: Arc<RuntimeInner>,
    pre: DestinationPre,
    /// The contract version the component was built against.
    contract: Contract,
    /// Linear memory one instance may hold: the default or what the plugin declared.
    memory_limit: usize,
    info: PluginInfo,
    digest: String,
    size: usize,
    compilation: Compilation,
    compile_time: Duration,
    /// Distinguishes this load from every other (warm instances are keyed by it).
    generation: u64,
    id: Arc<str>,
    /// Set while this version is not the active one: its warm instances are not kept.
    retired: AtomicBool,
    /// Calls [`Plugin::run`] still sends straight to the blocking pool, since one of this
    /// version's calls outgrew the slice.
    pooled: AtomicU32,
}

/// Epoch ticks a call may run on a plugin thread before it is stopped and run again on the
/// blocking pool (10–20 ms, at a 10 ms tick; a warm call takes microseconds for a Rust
/// plugin, about a millisecond for TypeScript).
const SLICE_TICKS: u64 = 2;
/// Calls of a version sent straight to the blocking pool after one outgrew the slice.
const POOLED_AFTER_SLOW: u32 = 256;

/// The result of a call with what it cost.
#[derive(Debug, Clone)]
pub struct Call<T> {
    pub value: T,
    pub usage: Usage,
}

/// What one call used.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Usage {
    /// Fuel consumed (about one unit per wasm instruction); 0 when fuel is not metered.
    pub fuel: u64,
    /// Wall time, instantiation included.
    #[serde(serialize_with = "micros")]
    pub duration: Duration,
    /// Linear memory the instance held at the end of the call, in bytes.
    pub memory_bytes: usize,
    /// Whether the call ran in a reused warm instance.
    pub warm: bool,
    pub logs: Vec<PluginLog>,
}

fn micros<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u128(d.as_micros())
}

/// `sha256:<hex>` of component bytes: how a plugin version is identified.
pub fn component_digest(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// A live instance: its store and typed exports.
pub(crate) struct Instance {
    store: Store<InstanceState>,
    bindings: Destination,
    calls: u32,
}

impl Plugin {
    pub(crate) fn load(
        runtime: Arc<RuntimeInner>,
        generation: u64,
        bytes: &[u8],
    ) -> Result<Plugin, LoadError> {
        let limit = runtime.limits.component_ceiling();
        if bytes.len() > limit {
            return Err(LoadError::TooLarge {
                size: bytes.len(),
                limit,
            });
        }
        check_header(bytes)?;
        let digest = component_digest(bytes);
        let compiling = Instant::now();
        let (component, compilation) = match &runtime.compiled {
            Some(cache) => cache.component(&runtime.engine, &digest, bytes),
            None => Component::new(&runtime.engine, bytes).map(|c| (c, Compilation::Compiled)),
        }
        .map_err(|e| LoadError::Compile(format!("{e:#}")))?;
        let compile_time = compiling.elapsed();
        let contract = check_exports(&runtime, &component)?;
        let compiled = component.clone();
        let instance_pre = runtime
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::UnsupportedImport(format!("{e:#}")))?;
        let pre = DestinationPre::new(contract, instance_pre)
            .map_err(|e| LoadError::WrongWorld(format!("{e:#}")))?;

        // `describe` runs before the plugin's needs are known, so under the memory cap.
        let memory_ceiling = runtime.limits.memory_ceiling();
        let mut plugin = Plugin {
            runtime,
            pre,
            contract,
            memory_limit: memory_ceiling,
            info: placeholder_info(),
            digest,
            size: bytes.len(),
            compilation,
            compile_time,
            generation,
            id: Arc::from("(loading)"),
            retired: AtomicBool::new(false),
            pooled: AtomicU32::new(0),
        };
        let described = plugin
            .call(Scope::Fresh, plugin.full_ticks(), |exports, store| {
                exports.describe(store)
            })
            .map_err(LoadError::Describe)?;
        let info = PluginInfo::from(described.value);
        check_info(&info)?;
        plugin.memory_limit = grant_needs(&plugin.runtime.limits, &info.needs, bytes.len())?;
        plugin.id = Arc::from(info.id.as_str());
        plugin.info = info;
        // Only a component that loaded is kept for the next start.
        if compilation == Compilation::Compiled
            && let Some(cache) = &plugin.runtime.compiled
        {
            cache.keep(&plugin.digest, &compiled);
        }
        Ok(plugin)
    }

    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    pub fn id(&self) -> &str {
        &self.info.id
    }

    /// The contract version the component was built against (`0.1.0`, `0.2.0`).
    pub fn contract(&self) -> &'static str {
        self.contract.version()
    }

    /// Linear memory one instance may hold: the default, or what the plugin declared.
    pub fn memory_limit(&self) -> usize {
        self.memory_limit
    }

    /// `sha256:<hex>` of the component bytes.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Size of the component in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Whether loading compiled the component or took it from the precompiled cache.
    pub fn compilation(&self) -> Compilation {
        self.compilation
    }

    /// How long compiling the component (or loading its precompiled code) took.
    pub fn compile_time(&self) -> Duration {
        self.compile_time
    }

    /// Checks an integration's configuration; empty means it can work.
    pub fn validate_config(
        &self,
        scope: Scope<'_>,
        config: &PluginConfig,
    ) -> Result<Call<Vec<ConfigError>>, PluginError> {
        let config = config.to_wit();
        let call = self.call(scope, self.full_ticks(), |exports, store| {
            exports.validate_config(store, &config)
        })?;
        Ok(Call {
            value: call.value.into_iter().map(ConfigError::from).collect(),
            usage: call.usage,
        })
    }

    /// Turns an event (canonical JSON) into checked requests, or the plugin's refusal.
    pub fn transform(
        &self,
        scope: Scope<'_>,
        event_json: &str,
        config: &PluginConfig,
    ) -> Result<Call<Result<Vec<PluginRequest>, Refusal>>, PluginError> {
        self.transform_within(scope, event_json, config, self.full_ticks())
    }

    /// [`Plugin::transform`] from async code, without holding the runtime's thread for long
    /// (see [`Plugin::run`]).
    pub async fn transform_async(
        self: Arc<Self>,
        scope: String,
        event_json: String,
        config: Arc<PluginConfig>,
    ) -> Result<Call<Result<Vec<PluginRequest>, Refusal>>, PluginError> {
        self.run(move |plugin, ticks| {
            plugin.transform_within(Scope::Integration(&scope), &event_json, &config, ticks)
        })
        .await
    }

    /// [`Plugin::interpret`] from async code (see [`Plugin::run`]).
    pub async fn interpret_async(
        self: Arc<Self>,
        scope: String,
        response: PluginResponse,
    ) -> Result<Call<Verdict>, PluginError> {
        self.run(move |plugin, ticks| {
            plugin.interpret_within(Scope::Integration(&scope), &response, ticks)
        })
        .await
    }

    /// Runs a call from async code. First on the runtime's plugin threads (one per core,
    /// outside tokio: see `threads.rs`), within [`SLICE_TICKS`] of the epoch: nearly every call
    /// ends well inside it. A call that outgrows the slice is stopped (its instance dropped,
    /// as after any error) and run again from the start on tokio's blocking pool, to the full
    /// time limit; the version's next [`POOLED_AFTER_SLOW`] calls go straight there. Running a
    /// call again is safe because calls are pure functions of their input, with no I/O. So a
    /// plugin that runs long holds a plugin thread for one slice at most, and then not again
    /// for a while, and never holds an async runtime thread.
    pub async fn run<R, F>(self: Arc<Self>, call: F) -> Result<R, PluginError>
    where
        R: Send + 'static,
        F: Fn(&Plugin, u64) -> Result<R, PluginError> + Send + 'static,
    {
        let lost = |e: &dyn std::fmt::Display| {
            PluginError::Instantiate(format!("the plugin call was lost: {e}"))
        };
        let full = self.full_ticks();
        let slice = SLICE_TICKS.min(full);
        let pooled = self
            .pooled
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        let (plugin, call) = if pooled {
            (self, call)
        } else {
            let (done, answer) = tokio::sync::oneshot::channel();
            let runtime = self.runtime.clone();
            let job: Box<dyn FnOnce() + Send> = Box::new(move || {
                let result = call(&self, slice);
                let _ = done.send((result, self, call));
            });
            if runtime.threads.submit(job).is_err() {
                return Err(lost(&"the plugin threads have stopped"));
            }
            let (result, plugin, call) = answer.await.map_err(|e| lost(&e))?;
            match result {
                Err(PluginError::TimeLimit { .. }) if slice < full => {
                    plugin.pooled.store(POOLED_AFTER_SLOW, Ordering::Relaxed);
                    (plugin, call)
                }
                done => return done,
            }
        };
        tokio::task::spawn_blocking(move || call(&plugin, full))
            .await
            .map_err(|e| lost(&e))?
    }

    /// Epoch ticks of the whole call time limit.
    fn full_ticks(&self) -> u64 {
        self.runtime.limits.epoch_ticks()
    }

    fn transform_within(
        &self,
        scope: Scope<'_>,
        event_json: &str,
        config: &PluginConfig,
        ticks: u64,
    ) -> Result<Call<Result<Vec<PluginRequest>, Refusal>>, PluginError> {
        let config = config.to_wit();
        let call = self.call(scope, ticks, |exports, store| {
            exports.transform(store, event_json, &config)
        })?;
        let value = match call.value {
            Ok(requests) => Ok(self.check_requests(requests)?),
            Err(refusal) => Err(Refusal::from(refusal)),
        };
        Ok(Call {
            value,
            usage: call.usage,
        })
    }

    /// Reads a destination's answer into a verdict.
    pub fn interpret(
        &self,
        scope: Scope<'_>,
        response: &PluginResponse,
    ) -> Result<Call<Verdict>, PluginError> {
        self.interpret_within(scope, response, self.full_ticks())
    }

    fn interpret_within(
        &self,
        scope: Scope<'_>,
        response: &PluginResponse,
        ticks: u64,
    ) -> Result<Call<Verdict>, PluginError> {
        let response = response.to_wit();
        let call = self.call(scope, ticks, |exports, store| {
            exports.interpret(store, &response)
        })?;
        Ok(Call {
            value: Verdict::from(call.value),
            usage: call.usage,
        })
    }

    pub(crate) fn set_retired(&self, retired: bool) {
        self.retired.store(retired, Ordering::SeqCst);
        if retired {
            self.runtime.pool.evict(self.generation);
        }
    }

    fn instantiate(&self, ticks: u64) -> Result<Instance, PluginError> {
        let mut store = Store::new(
            &self.runtime.engine,
            InstanceState::new(self.id.clone(), self.memory_limit),
        );
        store.limiter(|state| &mut state.memory);
        // Instantiation runs guest start-up code: give it the same budget as a call.
        self.set_budget(&mut store, ticks)?;
        let bindings = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| self.classify(e, &store))?;
        Ok(Instance {
            store,
            bindings,
            calls: 0,
        })
    }

    /// Runs `f` in an instance chosen by `scope`, under the limits (time: `ticks` of the
    /// epoch), and accounts for it.
    fn call<R>(
        &self,
        scope: Scope<'_>,
        ticks: u64,
        f: impl FnOnce(&Destination, &mut Store<InstanceState>) -> wasmtime::Result<R>,
    ) -> Result<Call<R>, PluginError> {
        let started = Instant::now();
        let limits = &self.runtime.limits;
        let key = match scope {
            Scope::Fresh => None,
            Scope::Integration(id) => Some(id),
        };
        let (mut instance, warm) =
            match key.and_then(|k| self.runtime.pool.take(self.generation, k)) {
                Some(instance) => (instance, true),
                None => (self.instantiate(ticks)?, false),
            };
        let store = &mut instance.store;
        self.set_budget(store, ticks)?;
        store.data_mut().start_call();

        let result = f(&instance.bindings, store);

        let fuel = match limits.fuel_per_call {
            Some(budget) => budget - store.get_fuel().unwrap_or(0),
            None => 0,
        };
        let state = store.data_mut();
        let usage = Usage {
            fuel,
            duration: started.elapsed(),
            memory_bytes: state.memory.total,
            warm,
            logs: std::mem::take(&mut state.logs),
        };
        match result {
            Ok(value) => {
                instance.calls += 1;
                if let Some(key) = key
                    && instance.calls < limits.calls_per_instance
                {
                    self.runtime
                        .pool
                        .put(self.generation, key, instance, &self.retired);
                }
                Ok(Call { value, usage })
            }
            Err(error) => Err(self.classify(error, store)),
        }
    }

    fn set_budget(&self, store: &mut Store<InstanceState>, ticks: u64) -> Result<(), PluginError> {
        let limits = &self.runtime.limits;
        if let Some(fuel) = limits.fuel_per_call {
            store
                .set_fuel(fuel)
                .map_err(|e| PluginError::Instantiate(format!("{e:#}")))?;
        }
        store.set_epoch_deadline(ticks);
        Ok(())
    }

    /// Names the limit or trap behind a failed call.
    fn classify(&self, error: wasmtime::Error, store: &Store<InstanceState>) -> PluginError {
        let limits = &self.runtime.limits;
        let state = store.data();
        if let Some(forbidden) = error.downcast_ref::<Forbidden>() {
            return PluginError::Forbidden(forbidden.0.to_owned());
        }
        match error.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => {
                return PluginError::CpuBudget {
                    fuel: limits.fuel_per_call.unwrap_or(0),
                };
            }
            Some(Trap::Interrupt) => {
                return PluginError::TimeLimit {
                    limit: limits.call_time_limit,
                };
            }
            _ => {}
        }
        if state.memory.hit {
            return PluginError::MemoryLimit {
                limit: self.memory_limit,
            };
        }
        let backtrace = error
            .downcast_ref::<WasmBacktrace>()
            .map(|bt| bt.to_string())
            .unwrap_or_default();
        let message = match error.downcast_ref::<Trap>() {
            Some(trap) => trap.to_string(),
            None => error.root_cause().to_string(),
        };
        PluginError::Trap {
            message,
            stderr: state.stderr(),
            backtrace: backtrace.trim_end().to_owned(),
        }
    }

    fn check_requests(
        &self,
        requests: Vec<bindings::types::OutgoingRequest>,
    ) -> Result<Vec<PluginRequest>, PluginError> {
        let limits = &self.runtime.limits;
        if requests.len() > limits.requests_per_event {
            return Err(PluginError::TooManyRequests {
                count: requests.len(),
                limit: limits.requests_per_event,
            });
        }
        let size: usize = requests.iter().map(output_size).sum();
        if size > limits.output_bytes {
            return Err(PluginError::OutputTooLarge {
                size,
                limit: limits.output_bytes,
            });
        }
        requests.into_iter().map(check_request).collect()
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        self.runtime.pool.evict(self.generation);
    }
}

fn output_size(r: &bindings::types::OutgoingRequest) -> usize {
    use bindings::types::Segment as S;
    let headers: usize = r
        .headers
        .iter()
        .map(|h| {
            h.name.len()
                + h.value
                    .iter()
                    .map(|s| match s {
                        S::Text(t) | S::Secret(t) => t.len(),
                        S::BasicAuth(c) => c.user.len() + c.secret.len(),
                    })
                    .sum::<usize>()
        })
        .sum();
    r.url.len() + headers + r.body.len()
}

fn check_request(r: bindings::types::OutgoingRequest) -> Result<PluginRequest, PluginError> {
    let invalid = PluginError::InvalidOutput;
    let url = url::Url::parse(&r.url).map_err(|e| invalid(format!("URL `{}`: {e}", r.url)))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(invalid(format!(
            "URL `{}` is not an absolute http(s) URL",
            r.url
        )));
    }
    let mut headers = Vec::with_capacity(r.headers.len());
    for header in r.headers {
        check_header_name(&header.name)?;
        let value: Vec<Segment> = header.value.into_iter().map(Segment::from).collect();
        for segment in &value {
            if let Segment::Text(text) = segment
                && http::HeaderValue::from_str(text).is_err()
            {
                return Err(invalid(format!(
                    "header {} has a value with control characters",
                    header.name
                )));
            }
            if let Segment::BasicAuth { user, .. } = segment
                && (user.contains(':') || user.chars().any(char::is_control))
            {
                return Err(invalid(format!(
                    "header {} has a Basic auth user with a `:` or a control character \
                     (RFC 7617 allows neither)",
                    header.name
                )));
            }
        }
        headers.push(Header {
            name: header.name,
            value,
        });
    }
    if let Some(segment) = canopy_events::dot_segment(&r.url) {
        return Err(invalid(format!(
            "URL `{}` has the path segment `{segment}`, which would remove part of its path \
             when sent (a value that fills a path segment must not be `.` or `..`)",
            r.url
        )));
    }
    let signatures: Vec<SignatureRequest> = r.signatures.into_iter().map(Into::into).collect();
    for signature in &signatures {
        if let SignatureRequest::HmacSha256Hex { header, .. } = signature {
            check_header_name(header)?;
        }
    }
    Ok(PluginRequest {
        method: r.method.into(),
        url: r.url,
        headers,
        body: r.body,
        signatures,
    })
}

/// A header name a plugin may set: valid, and not one of the headers the HTTP layer owns.
fn check_header_name(name: &str) -> Result<(), PluginError> {
    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err(PluginError::InvalidOutput(format!(
            "header name {name:?} is not valid"
        )));
    }
    if canopy_events::is_reserved_header(name) {
        return Err(PluginError::InvalidOutput(format!(
            "header `{name}` frames or routes the request; the host sets it, a plugin cannot"
        )));
    }
    Ok(())
}

fn check_header(bytes: &[u8]) -> Result<(), LoadError> {
    const MAGIC: &[u8] = b"\0asm";
    // The 4 bytes after the magic: version 1 of a core module, or the component layer.
    const CORE_MODULE: [u8; 4] = [1, 0, 0, 0];
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        return Err(LoadError::NotWasm);
    }
    if bytes[4..8] == CORE_MODULE {
        return Err(LoadError::NotAComponent);
    }
    Ok(())
}

/// Tells a component built against another contract version apart from one that is not a
/// destination at all, before the generic type check speaks, and picks the contract version
/// it is called under. Versions follow semver ([`Contract::for_version`]): a component
/// exporting `plugin` at a compatible version loads — wasmtime finds such an export under
/// the host's name — and is then type-checked against that version's bindings.
fn check_exports(runtime: &RuntimeInner, component: &Component) -> Result<Contract, LoadError> {
    let ty = component.component_type();
    let exports: Vec<String> = ty
        .exports(&runtime.engine)
        .filter(|(_, item)| matches!(item.ty, ComponentItem::ComponentInstance(_)))
        .map(|(name, _)| name.to_owned())
        .collect();
    let prefix = "canopy:destination/plugin@";
    let versions: Vec<&str> = exports
        .iter()
        .filter_map(|e| e.strip_prefix(prefix))
        .collect();
    // The newest version the component speaks, whatever order it exports them in.
    let spoken: Vec<Contract> = versions
        .iter()
        .filter_map(|v| Contract::for_version(v))
        .collect();
    if let Some(contract) = Contract::ALL.into_iter().find(|c| spoken.contains(c)) {
        return Ok(contract);
    }
    if let Some(other) = versions.first() {
        return Err(LoadError::ContractVersion {
            found: format!("canopy:destination@{other}"),
        });
    }
    Err(LoadError::WrongWorld(format!(
        "it does not export {prefix}{} (it exports: {})",
        Contract::ALL.map(Contract::version).join(" or @"),
        if exports.is_empty() {
            "nothing".to_owned()
        } else {
            exports.join(", ")
        }
    )))
}

/// Grants what a plugin declared it needs, within the operator's caps, and checks the
/// component's size against what it may be; answers the memory an instance may hold.
fn grant_needs(limits: &Limits, needs: &Needs, size: usize) -> Result<usize, LoadError> {
    const MIB: usize = 1 << 20;
    let grant = |asked: Option<u32>, default: usize, cap: usize, what, flag| match asked {
        None => Ok(default),
        Some(0) => Err(LoadError::InvalidDescription(format!(
            "it asks for 0 MiB of {what}"
        ))),
        Some(mib) if mib as usize * MIB > cap.max(default) => Err(LoadError::NeedsOverCap {
            what,
            asked: mib,
            cap: cap.max(default) / MIB,
            flag,
        }),
        Some(mib) => Ok(mib as usize * MIB),
    };
    let memory = grant(
        needs.memory_mib,
        limits.memory_bytes,
        limits.memory_cap_bytes,
        "memory",
        "--plugin-memory-cap-mib",
    )?;
    let component = grant(
        needs.component_mib,
        limits.component_bytes,
        limits.component_cap_bytes,
        "component size",
        "--plugin-component-cap-mib",
    )?;
    if size > component {
        return Err(LoadError::LargerThanDeclared {
            size,
            limit: component,
            cap: limits.component_ceiling() / MIB,
        });
    }
    Ok(memory)
}

fn placeholder_info() -> PluginInfo {
    PluginInfo {
        id: String::new(),
        name: String::new(),
        version: String::new(),
        description: String::new(),
        events: Vec::new(),
        allowed_hosts: Vec::new(),
        settings: Vec::new(),
        rate_limit: None,
        needs: Needs::default(),
    }
}

/// Checks what `describe` returned: a usable id, known event keys, sane host patterns and
/// settings, a positive rate limit.
fn check_info(info: &PluginInfo) -> Result<(), LoadError> {
    let bad = |m: String| Err(LoadError::InvalidDescription(m));
    let id_ok = !info.id.is_empty()
        && info.id.len() <= 64
        && info
            .id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !id_ok {
        return bad(format!(
            "id {:?} must be 1-64 characters of a-z, 0-9 and -",
            info.id
        ));
    }
    if info.name.trim().is_empty() || info.version.trim().is_empty() {
        return bad("name and version must not be empty".into());
    }
    if info.events.is_empty() {
        return bad("it supports no events".into());
    }
    for event in &info.events {
        if event != "*" && event.parse::<canopy_events::EventKind>().is_err() {
            return bad(format!("it lists an unknown event type `{event}`"));
        }
    }
    if info.allowed_hosts.is_empty() {
        return bad("it declares no allowed hosts".into());
    }
    for host in &info.allowed_hosts {
        if let Some(setting) = host.strip_prefix("settings:") {
            if !info.settings.iter().any(|s| s.name == setting && !s.secret) {
                return bad(format!(
                    "allowed host `{host}` refers to a setting it does not declare"
                ));
            }
        } else if !valid_host_pattern(host) {
            return bad(format!(
                "allowed host `{host}` is not a host name or *.domain pattern"
            ));
        }
    }
    let mut names = std::collections::HashSet::new();
    for setting in &info.settings {
        if setting.name.is_empty() || !names.insert(setting.name.as_str()) {
            return bad(format!(
                "setting name {:?} is empty or repeated",
                setting.name
            ));
        }
    }
    if let Some(rate) = info.rate_limit
        && (rate.requests == 0 || rate.per_seconds == 0)
    {
        return bad("rate limit must allow at least one request per period".into());
    }
    Ok(())
}

fn valid_host_pattern(pattern: &str) -> bool {
    let host = pattern.strip_prefix("*.").unwrap_or(pattern);
    !host.is_empty()
        && host.contains('.')
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_check_tells_apart_junk_modules_and_components() {
        assert!(matches!(
            check_header(b"hello world"),
            Err(LoadError::NotWasm)
        ));
        assert!(matches!(check_header(b"\0asm"), Err(LoadError::NotWasm)));
        assert!(matches!(
            check_header(b"\0asm\x01\0\0\0"),
            Err(LoadError::NotAComponent)
        ));
        assert!(check_header(b"\0asm\x0d\0\x01\0").is_ok());
    }

    #[test]
    fn contract_versions_follow_semver() {
        assert_eq!(
            Contract::ALL.map(Contract::version),
            ["0.2.0", "0.1.0"],
            "update the cases below with the contract"
        );
        for (version, contract) in [
            ("0.1.0", Contract::V0_1),
            ("0.1.1", Contract::V0_1),
            ("0.1.17", Contract::V0_1),
            ("0.1.2+build.5", Contract::V0_1),
            ("0.2.0", Contract::V0_2),
            ("0.2.3", Contract::V0_2),
        ] {
            assert_eq!(Contract::for_version(version), Some(contract), "{version}");
        }
        for incompatible in [
            "0.3.0",
            "0.0.9",
            "1.0.0",
            "1.1.0",
            "9.0.0",
            "0.1.2-rc.1",
            "0.2.0-rc.1",
            "0.1",
            "x",
        ] {
            assert_eq!(Contract::for_version(incompatible), None, "{incompatible}");
        }
    }

    #[test]
    fn needs_are_granted_up_to_the_caps() {
        const MIB: usize = 1 << 20;
        let limits = Limits::default();
        let needs = |memory_mib, component_mib| Needs {
            memory_mib,
            component_mib,
        };
        assert_eq!(
            grant_needs(&limits, &needs(None, None), 3 * MIB).unwrap(),
            limits.memory_bytes
        );
        assert_eq!(
            grant_needs(&limits, &needs(Some(128), Some(32)), 20 * MIB).unwrap(),
            128 * MIB
        );
        // Larger than the default without declaring it, or than it declared.
        for declared in [None, Some(18)] {
            assert!(matches!(
                grant_needs(&limits, &needs(None, declared), 20 * MIB),
                Err(LoadError::LargerThanDeclared { size, .. }) if size == 20 * MIB
            ));
        }
        // Over the operator's caps.
        assert!(matches!(
            grant_needs(&limits, &needs(Some(4096), None), MIB),
            Err(LoadError::NeedsOverCap {
                what: "memory",
                asked: 4096,
                cap: 256,
                ..
            })
        ));
        assert!(matches!(
            grant_needs(&limits, &needs(None, Some(65)), MIB),
            Err(LoadError::NeedsOverCap {
                what: "component size",
                asked: 65,
                cap: 64,
                ..
            })
        ));
        assert!(matches!(
            grant_needs(&limits, &needs(Some(0), None), MIB),
            Err(LoadError::InvalidDescription(_))
        ));
    }

    #[test]
    fn host_patterns() {
        assert!(valid_host_pattern("a.klaviyo.com"));
        assert!(valid_host_pattern("*.myshopify.com"));
        assert!(!valid_host_pattern("*"));
        assert!(!valid_host_pattern("localhost"));
        assert!(!valid_host_pattern("a..b"));
        assert!(!valid_host_pattern("https://a.b"));
    }
}
