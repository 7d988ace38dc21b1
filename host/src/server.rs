//! The server: [`AppState::open`] sets everything up (plugin runtime and bundled plugins, the
//! store in the data directory, the master key check, tokens, the delivery worker); [`run`]
//! serves the API on a listener and runs the scheduler and the purge until `shutdown`
//! resolves; [`app`] builds the router so tests can call it without a socket.
//!
//! Shutdown order: stop taking requests (in-flight ones finish), then stop claiming
//! deliveries and let attempts in flight finish within the grace period (the rest are queued
//! again), then flush the store.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::middleware::from_fn_with_state;
use axum::response::IntoResponse;
use axum::{Extension, Json, Router};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::{self, Role};
use crate::config::Config;
use crate::crypto::seal::{MasterKey, random_bytes};
use crate::crypto::secret::SecretValue;
use crate::delivery::rate::RateLimits;
use crate::delivery::scheduler::{Scheduler, SchedulerSettings};
use crate::delivery::sender::Sender;
use crate::delivery::worker::{Policy, Worker};
use crate::metrics::{self, Metrics};
use crate::runtime::{PluginRegistry, Runtime};
use crate::store::{SledStore, Store, Timestamp};

/// The store's subdirectory of the data directory.
const STORE_DIR: &str = "store";
/// Metadata name of the master key's fingerprint.
const KEY_FINGERPRINT: &str = "master-key-fingerprint";
/// A claim holds a delivery for this long: far longer than an attempt can take (plugin
/// calls of at most a few seconds, and up to 16 requests of at most the request timeout).
const LEASE_MARGIN: std::time::Duration = std::time::Duration::from_secs(60);

/// The API tokens.
#[derive(Clone)]
pub struct Tokens {
    pub admin: SecretValue,
    pub ingest: SecretValue,
}

/// What every request handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub runtime: Runtime,
    pub plugins: Arc<PluginRegistry>,
    pub store: Arc<dyn Store>,
    pub key: MasterKey,
    pub tokens: Tokens,
    pub metrics: Arc<Metrics>,
    /// Tells the scheduler new work is queued.
    pub wake: Arc<Notify>,
    /// Serialises plugin uploads, rollbacks and deletions.
    pub plugin_changes: Arc<tokio::sync::Mutex<()>>,
    pub worker: Arc<Worker>,
}

/// Why the server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    #[error("a bundled plugin does not load: {0}")]
    Bundled(#[from] crate::runtime::LoadError),
    #[error("the data directory {0}: {1}")]
    DataDir(PathBuf, std::io::Error),
    #[error("the store cannot be used: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error(
        "the master key does not match the one this data directory was written with \
         (its secrets cannot be opened); start with the original key, or re-encrypt with `canopy rotate-key`"
    )]
    WrongMasterKey,
    #[error(transparent)]
    Client(#[from] crate::delivery::sender::ClientError),
    #[error("serving HTTP failed: {0}")]
    Io(#[from] std::io::Error),
}

impl AppState {
    /// Opens everything the server needs; see the module docs.
    pub async fn open(config: Arc<Config>) -> Result<AppState, ServeError> {
        let limits = config.plugin_limits.limits().map_err(ServeError::Config)?;
        let schedule = config.delivery.schedule().map_err(ServeError::Config)?;
        let key = master_key(
            &config.master_key,
            &config.master_key_file,
            "CANOPY_MASTER_KEY",
        )?;

        let data = &config.data_dir;
        create_private_dir(data).map_err(|e| ServeError::DataDir(data.clone(), e))?;
        let store: Arc<dyn Store> = Arc::new(SledStore::open(&data.join(STORE_DIR))?);
        match store.meta(KEY_FINGERPRINT).await? {
            Some(stored) if stored != key.fingerprint() => return Err(ServeError::WrongMasterKey),
            Some(_) => {}
            None => store.set_meta(KEY_FINGERPRINT, &key.fingerprint()).await?,
        }

        let runtime = Runtime::new(limits)?;
        let plugins = Arc::new(PluginRegistry::new());
        install_plugins(&runtime, &plugins, store.as_ref()).await?;
        let tokens = Tokens {
            admin: token(&config.admin_token, data, "admin")?,
            ingest: token(&config.ingest_token, data, "ingest")?,
        };

        let metrics = Arc::new(Metrics::new());
        let sender = Sender::new(
            config.delivery.request_timeout,
            config.delivery.allow_private_networks,
            config.delivery.egress_override.clone(),
            config.delivery.egress_proxy.clone(),
        )?;
        let worker = Arc::new(Worker {
            store: store.clone(),
            plugins: plugins.clone(),
            sender,
            key: key.clone(),
            policy: Policy {
                schedule,
                auto_disable_after: config.delivery.auto_disable_after,
            },
            rates: RateLimits::default(),
            metrics: metrics.clone(),
        });
        Ok(AppState {
            config,
            runtime,
            plugins,
            store,
            key,
            tokens,
            metrics,
            wake: Arc::new(Notify::new()),
            plugin_changes: Arc::default(),
            worker,
        })
    }
}

/// Activates the plugins: the bundled ones on first start (and a newer bundled build when the
/// active version is the bundled one), then the active stored version of every plugin —
/// uploaded versions survive restarts. A stored plugin that no longer loads is logged and left
/// out (its deliveries wait for it); a bundled one that does not load is a startup error.
async fn install_plugins(
    runtime: &Runtime,
    registry: &PluginRegistry,
    store: &dyn Store,
) -> Result<(), ServeError> {
    let active: std::collections::HashMap<String, crate::store::PluginVersion> = store
        .active_plugin_versions()
        .await?
        .into_iter()
        .map(|v| (v.plugin.clone(), v))
        .collect();
    let mut loaded = std::collections::HashSet::new();
    for (id, bytes) in crate::runtime::bundled::components() {
        if store.plugin_removed(id).await? {
            continue;
        }
        let digest = crate::runtime::component_digest(bytes);
        let install = match active.get(id) {
            None => true,
            Some(current) => current.bundled && current.digest != digest,
        };
        if install {
            let plugin = Arc::new(runtime.load(bytes)?);
            store
                .add_plugin_version(id, &plugin.info().version, true, bytes, Timestamp::now())
                .await?;
            tracing::info!(plugin = id, version = %plugin.info().version, "bundled plugin installed");
            registry.activate(plugin);
            loaded.insert(id.to_owned());
        }
    }
    for version in active.values().filter(|v| !loaded.contains(&v.plugin)) {
        let Some(bytes) = store.plugin_component(&version.digest).await? else {
            tracing::error!(plugin = %version.plugin, "the active version's component is missing from the store");
            continue;
        };
        match runtime.load(&bytes) {
            Ok(plugin) => {
                tracing::info!(plugin = %version.plugin, version = %version.version, number = version.number, "plugin active");
                registry.activate(Arc::new(plugin));
            }
            Err(error) => tracing::error!(
                plugin = %version.plugin, number = version.number, %error,
                "a stored plugin does not load; its deliveries wait until a version that loads is activated"
            ),
        }
    }
    Ok(())
}

/// A master key given as a value or as a file; `variable` names it in the error.
pub fn master_key(
    value: &Option<SecretValue>,
    file: &Option<PathBuf>,
    variable: &str,
) -> Result<MasterKey, ServeError> {
    let text = match (value, file) {
        (Some(key), _) => key.expose().to_owned(),
        (None, Some(file)) => std::fs::read_to_string(file).map_err(|e| {
            ServeError::Config(format!(
                "cannot read the master key file {}: {e}",
                file.display()
            ))
        })?,
        (None, None) => {
            return Err(ServeError::Config(format!(
                "no master key: set {variable} or {variable}_FILE \\
                 (`canopy keygen` prints a new key; keep it outside the data directory)"
            )));
        }
    };
    MasterKey::from_base64(&text).map_err(|e| ServeError::Config(format!("{variable}: {e}")))
}

/// What `canopy rotate-key` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotated {
    pub integrations: usize,
    pub secrets: usize,
}

/// Re-encrypts every stored secret under `new`, in one atomic write with the new key's
/// fingerprint: a crash leaves either the old key or the new one valid, never a mix. The
/// server must be stopped (sled's lock refuses a second process).
pub async fn rotate_key(
    data_dir: &Path,
    current: &MasterKey,
    new: &MasterKey,
) -> Result<Rotated, ServeError> {
    let store = SledStore::open(&data_dir.join(STORE_DIR))?;
    match store.meta(KEY_FINGERPRINT).await? {
        Some(stored) if stored != current.fingerprint() => return Err(ServeError::WrongMasterKey),
        _ => {}
    }
    let mut integrations = store.integrations().await?;
    let mut secrets = 0;
    for integration in &mut integrations {
        for (name, secret) in integration.secrets.iter_mut() {
            let plain = current.open(&secret.sealed).map_err(|e| {
                ServeError::Config(format!(
                    "the secret `{name}` of integration {} cannot be opened: {e}",
                    integration.id
                ))
            })?;
            secret.sealed = new.seal(&plain);
            secrets += 1;
        }
    }
    let count = integrations.len();
    store
        .rekey(integrations, KEY_FINGERPRINT, &new.fingerprint())
        .await?;
    Ok(Rotated {
        integrations: count,
        secrets,
    })
}

/// The configured token, else the one kept in `<data>/<role>.token`, else a new one written
/// there (owner-only) and printed once.
fn token(
    configured: &Option<SecretValue>,
    data: &Path,
    role: &str,
) -> Result<SecretValue, ServeError> {
    if let Some(token) = configured {
        if token.expose().trim().is_empty() {
            return Err(ServeError::Config(format!("the {role} token is empty")));
        }
        return Ok(token.clone());
    }
    let path = data.join(format!("{role}.token"));
    let io = |e| ServeError::DataDir(path.clone(), e);
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok(SecretValue::new(text.trim())),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let token = crate::crypto::signing::hex(&random_bytes::<24>());
    write_private(&path, &token).map_err(io)?;
    // Printed once, on purpose: it is how the operator learns it.
    eprintln!(
        "canopy: generated the {role} token (kept in {}): {token}",
        path.display()
    );
    Ok(SecretValue::new(token))
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(text.as_bytes())
}

/// Every route with its OpenAPI description: routes are registered through `routes!`, so a
/// route cannot exist without being in the document. Token checks are layered per group.
pub fn api(state: &AppState) -> OpenApiRouter<AppState> {
    let ingest = api::ingest::router().route_layer(from_fn_with_state(state.clone(), |s, r, n| {
        api::require(Role::Ingest, s, r, n)
    }));
    let admin = api::plugins::router()
        .merge(api::integrations::router())
        .merge(api::deliveries::router())
        .route_layer(from_fn_with_state(state.clone(), |s, r, n| {
            api::require(Role::Admin, s, r, n)
        }));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(metrics))
        .routes(routes!(openapi_json))
        .merge(ingest)
        .merge(admin)
}

/// The OpenAPI document of the whole HTTP API.
pub fn openapi(state: &AppState) -> utoipa::openapi::OpenApi {
    api(state).into_openapi()
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Canopy",
        description = "Carries loyalty events to marketing platforms through sandboxed WebAssembly destination plugins.",
    ),
    modifiers(&BearerTokens),
    tags(
        (name = "ingest", description = "Events from the loyalty backend (ingest token)"),
        (name = "plugins", description = "Destination plugins (admin token)"),
        (name = "integrations", description = "Configured destinations (admin token)"),
        (name = "deliveries", description = "The delivery log (admin token)"),
        (name = "operations", description = "Health, metrics, this document (no token)"),
    )
)]
struct ApiDoc;

/// The two bearer tokens, as security schemes.
struct BearerTokens;

impl utoipa::Modify for BearerTokens {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        for name in ["admin_token", "ingest_token"] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
    }
}

/// The API router.
pub fn app(state: AppState) -> Router {
    let (router, document) = api(&state).split_for_parts();
    let document = document.to_json().expect("the OpenAPI document serialises");
    router
        .layer(Extension(OpenApiJson(Arc::from(document))))
        .fallback(|| async { api::ApiError::not_found("route") })
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(axum::middleware::from_fn(api::limit_uri))
        .with_state(state)
}

#[derive(Serialize, utoipa::ToSchema)]
struct Health {
    /// `ok`, or `unavailable` when the store cannot take writes.
    status: &'static str,
    version: &'static str,
    /// Active plugins.
    plugins: usize,
    /// Why the store cannot take writes (with status `unavailable`).
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// Whether the server can take events: 200, or 503 (with `Retry-After`) and the reason when
/// the store cannot take writes (a full disk, say).
#[utoipa::path(
    get, path = "/healthz", tag = "operations",
    responses(
        (status = 200, body = Health),
        (status = 503, description = "The store cannot take writes; the reason says why", body = Health),
    )
)]
async fn healthz(State(state): State<AppState>) -> axum::response::Response {
    let store = state.store.health().await;
    let health = Health {
        status: if store.is_ok() { "ok" } else { "unavailable" },
        version: env!("CARGO_PKG_VERSION"),
        plugins: state.plugins.list().len(),
        reason: store.err(),
    };
    if health.reason.is_none() {
        return Json(health).into_response();
    }
    let retry_after = [(header::RETRY_AFTER, api::RETRY_AFTER_SECONDS.to_string())];
    (
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        retry_after,
        Json(health),
    )
        .into_response()
}

/// Prometheus metrics (OpenMetrics text).
#[utoipa::path(
    get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text", body = String))
)]
async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, api::ApiError> {
    let depth = state.store.queue_depth(Timestamp::now()).await?;
    Ok((
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        state.metrics.render(depth),
    ))
}

/// This document.
#[utoipa::path(
    get, path = "/v1/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document of the HTTP API", body = Object))
)]
async fn openapi_json(Extension(document): Extension<OpenApiJson>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document.0.to_string(),
    )
}

/// The document, serialised once at start.
#[derive(Clone)]
struct OpenApiJson(Arc<str>);

/// Serves until `shutdown` resolves; see the module docs for the order of shutdown.
pub async fn run(
    config: Arc<Config>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let state = AppState::open(config.clone()).await?;
    let (stop, stopped) = watch::channel(false);

    let requests = state.runtime.limits().requests_per_event as u32;
    let lease = config.delivery.request_timeout * requests + LEASE_MARGIN;
    let scheduler = Scheduler::new(
        state.worker.clone(),
        state.wake.clone(),
        SchedulerSettings {
            workers: config.delivery.workers,
            lease,
            grace: config.delivery.shutdown_grace,
        },
    );
    let scheduling = tokio::spawn(scheduler.run(stopped.clone()));
    let purging = tokio::spawn(purge_periodically(
        state.store.clone(),
        config.clone(),
        stopped.clone(),
    ));

    let (broken, store_broken) = tokio::sync::oneshot::channel();
    let watching = tokio::spawn(watch_store(state.store.clone(), broken, stopped));

    tracing::info!(addr = %listener.local_addr()?, data = %config.data_dir.display(), "canopy listening");
    let limits = crate::listen::ConnectionLimits {
        max_connections: config.max_connections,
        header_timeout: config.header_timeout,
    };
    // Stop serving on the caller's signal, or when the store breaks beyond repair.
    let fatal: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let stopping = {
        let fatal = fatal.clone();
        async move {
            tokio::select! {
                () = shutdown => {}
                Ok(reason) = store_broken => {
                    *fatal.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
                }
            }
        }
    };
    let served = crate::listen::serve(listener, app(state.clone()), limits, stopping).await;
    let _ = stop.send(true);
    let _ = scheduling.await;
    let _ = purging.await;
    let _ = watching.await;
    if let Some(reason) = fatal.lock().unwrap_or_else(|p| p.into_inner()).take() {
        tracing::error!(%reason, "canopy stopped: the store cannot be used; restart it once the cause is fixed");
        return Err(ServeError::Store(crate::store::StoreError::Backend(reason)));
    }
    state.store.flush().await?;
    tracing::info!("canopy stopped");
    served.map_err(ServeError::from)
}

/// How often the watchdog looks at the store.
const STORE_WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Watches whether the store can take writes, and when it cannot (a full disk), tries to make
/// it usable again as soon as it can be: meanwhile `/healthz` and ingest answer 503. When the
/// disk has room but the store still cannot be used, the server stops (`broken` says why) so
/// that its supervisor restarts it — everything acknowledged is on disk.
async fn watch_store(
    store: Arc<dyn Store>,
    broken: tokio::sync::oneshot::Sender<String>,
    mut stop: watch::Receiver<bool>,
) {
    let mut failing: Option<String> = None;
    loop {
        tokio::select! {
            () = tokio::time::sleep(STORE_WATCH_INTERVAL) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        match store.health().await {
            Ok(()) => {
                if failing.take().is_some() {
                    tracing::info!("the store takes writes again");
                }
                continue;
            }
            Err(reason) => {
                if failing.as_deref() != Some(reason.as_str()) {
                    tracing::error!(%reason, "the store cannot take writes; events are refused with 503 until it can");
                }
                failing = Some(reason);
            }
        }
        match store.recover().await {
            Ok(()) => {}
            // Still no room: wait for it.
            Err(crate::store::StoreError::Unavailable(_)) => {}
            Err(error) => {
                let _ = broken.send(error.to_string());
                return;
            }
        }
    }
}

/// Purges finished work older than the retention, at start and then every interval.
async fn purge_periodically(
    store: Arc<dyn Store>,
    config: Arc<Config>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let cutoff = Timestamp::now().saturating_sub(config.delivery.retention);
        match store.purge(cutoff).await {
            Ok(purged) if purged.deliveries + purged.events > 0 => tracing::info!(
                deliveries = purged.deliveries,
                events = purged.events,
                "purged finished work older than the retention"
            ),
            Ok(_) => {}
            Err(error) => tracing::error!(%error, "purge failed; it runs again next interval"),
        }
        tokio::select! {
            _ = tokio::time::sleep(config.delivery.purge_interval) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
