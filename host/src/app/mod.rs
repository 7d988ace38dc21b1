//! The application: everything a request or the pipeline reaches, opened once at start-up
//! ([`App::open`]: the plugin runtime and bundled plugins, the store in the data directory,
//! the master key check, the tokens, the delivery worker), and the services the HTTP API and
//! the web UI both call — what a request *does* lives here, the HTTP layers only parse,
//! authorise and answer.
//!
//! - [`access`] — who is calling: the platform's tokens and the shops' own, and what each
//!   may reach.
//! - [`shops`] — shops and their tokens.
//! - [`ingest`] — checking events and fanning them out to their shop's integrations.
//! - [`integrations`] — creating, changing, testing and deleting integrations; health.
//! - [`deliveries`] — the delivery log and retries.
//! - [`plugins`] — uploading, rolling back and deleting plugin versions.
//! - [`migrate_store`] — moving an install from a data directory into PostgreSQL.

pub mod access;
pub mod deliveries;
mod error;
pub mod ingest;
pub mod integrations;
pub mod migrate_store;
pub mod plugins;
pub mod shops;
pub mod sign_in;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use self::error::AppError;
use crate::clock::Clock;
use crate::config::Config;
use crate::crypto::seal::{MasterKey, random_bytes};
use crate::crypto::secret::SecretValue;
use crate::delivery::sender::Sender;
use crate::delivery::worker::{Policy, Worker};
use crate::metrics::Metrics;
use crate::runtime::{PluginRegistry, Runtime};
use crate::store::{EmbeddedStore, EngineKind, PgStore, Store};

/// The store's subdirectory of the data directory.
const STORE_DIR: &str = "store";
/// Metadata name of the master key's fingerprint.
const KEY_FINGERPRINT: &str = "master-key-fingerprint";

/// The API tokens.
#[derive(Clone)]
pub struct Tokens {
    pub admin: SecretValue,
    pub ingest: SecretValue,
}

/// What every request handler and the pipeline can reach. Cheap to clone.
#[derive(Clone)]
pub struct App {
    pub config: Arc<Config>,
    pub runtime: Runtime,
    pub plugins: Arc<PluginRegistry>,
    pub store: Arc<dyn Store>,
    pub key: MasterKey,
    pub tokens: Tokens,
    pub metrics: Arc<Metrics>,
    /// Where the application takes its time (the system's; a manual clock in tests).
    pub clock: Clock,
    /// Serialises plugin uploads, rollbacks and deletions.
    pub plugin_changes: Arc<tokio::sync::Mutex<()>>,
    pub worker: Arc<Worker>,
    /// Sign-in links already used (see [`sign_in`]).
    pub used_links: Arc<sign_in::UsedLinks>,
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

impl App {
    /// Opens everything the server needs; see the module docs.
    pub async fn open(config: Arc<Config>) -> Result<App, ServeError> {
        App::open_with(config, Clock::system()).await
    }

    /// [`App::open`] on a given clock (tests move a manual one).
    pub async fn open_with(config: Arc<Config>, clock: Clock) -> Result<App, ServeError> {
        let limits = config.plugin_limits.limits().map_err(ServeError::Config)?;
        let schedule = config.delivery.schedule().map_err(ServeError::Config)?;
        let key = master_key(
            &config.master_key,
            &config.master_key_file,
            "CANOPY_MASTER_KEY",
        )?;

        let data = &config.data_dir;
        create_private_dir(data).map_err(|e| ServeError::DataDir(data.clone(), e))?;
        let store = open_store(&config).await?;
        match store.meta(KEY_FINGERPRINT).await? {
            Some(stored) if stored != key.fingerprint() => return Err(ServeError::WrongMasterKey),
            Some(_) => {}
            None => store.set_meta(KEY_FINGERPRINT, &key.fingerprint()).await?,
        }

        let cache_key = key.derive_key(b"canopy compiled-component cache v1");
        let runtime =
            Runtime::with_compiled_cache(limits, Some((&data.join("compiled"), cache_key)))?;
        let plugins = Arc::new(PluginRegistry::new());
        install_plugins(&runtime, &plugins, store.as_ref(), &clock).await?;
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
            metrics: metrics.clone(),
            clock: clock.clone(),
            integrations: Default::default(),
        });
        Ok(App {
            config,
            runtime,
            plugins,
            store,
            key,
            tokens,
            metrics,
            clock,
            plugin_changes: Arc::default(),
            worker,
            used_links: Arc::default(),
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
    clock: &Clock,
) -> Result<(), ServeError> {
    let active: std::collections::HashMap<String, crate::store::PluginVersion> = store
        .active_plugin_versions()
        .await?
        .into_iter()
        .map(|v| (v.plugin.clone(), v))
        .collect();
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
                .add_plugin_version(id, &plugin.info().version, true, bytes, clock.now())
                .await?;
            tracing::info!(plugin = id, version = %plugin.info().version, "bundled plugin installed");
            registry.activate(plugin);
        }
    }
    sync_plugins(runtime, registry, store).await?;
    // The precompiled code of components no longer stored (deleted plugins' versions).
    let mut stored = std::collections::HashSet::new();
    for active in store.active_plugin_versions().await? {
        for version in store.plugin_versions(&active.plugin).await? {
            stored.insert(version.digest);
        }
    }
    runtime.retain_compiled(&stored);
    Ok(())
}

/// Makes the registry run the store's active version of every plugin: a version activated
/// elsewhere (another node of a cluster) is compiled and swapped in, a deleted plugin is
/// removed, an unchanged one is left as it is. Attempts in flight keep the version they
/// started with. A version that does not load is logged and left out (its deliveries wait
/// for one that loads). Returns how many plugins changed.
pub async fn sync_plugins(
    runtime: &Runtime,
    registry: &PluginRegistry,
    store: &dyn Store,
) -> Result<usize, crate::store::StoreError> {
    let active = store.active_plugin_versions().await?;
    let mut changed = 0;
    for running in registry.list() {
        if !active.iter().any(|v| v.plugin == running.id()) {
            registry.remove(running.id());
            tracing::info!(plugin = %running.id(), "plugin removed");
            changed += 1;
        }
    }
    for version in &active {
        if registry
            .get(&version.plugin)
            .is_some_and(|p| p.digest() == version.digest)
        {
            continue;
        }
        let Some(bytes) = store.plugin_component(&version.digest).await? else {
            tracing::error!(plugin = %version.plugin, "the active version's component is missing from the store");
            continue;
        };
        let loading = runtime.clone();
        let loaded = tokio::task::spawn_blocking(move || loading.load(&bytes))
            .await
            .map_err(|e| {
                crate::store::StoreError::Backend(format!("a plugin load was lost: {e}"))
            })?;
        match loaded {
            Ok(plugin) => {
                tracing::info!(plugin = %version.plugin, version = %version.version, number = version.number, "plugin active");
                registry.activate(Arc::new(plugin));
                changed += 1;
            }
            Err(error) => tracing::error!(
                plugin = %version.plugin, number = version.number, %error,
                "a stored plugin does not load; its deliveries wait until a version that loads is activated"
            ),
        }
    }
    Ok(changed)
}

/// The configured store: PostgreSQL when `--store` is a PostgreSQL URL, else the embedded
/// store in the data directory (on the engine `--store` names, if it does). A cluster's nodes
/// must share their tokens, so with PostgreSQL they must be configured rather than generated
/// per node.
pub async fn open_store(config: &Config) -> Result<Arc<dyn Store>, ServeError> {
    match &config.store {
        None => Ok(Arc::new(EmbeddedStore::open(
            &config.data_dir.join(STORE_DIR),
        )?)),
        Some(engine) if EngineKind::parse(engine.expose()).is_some() => {
            let store = EmbeddedStore::open_on(
                &config.data_dir.join(STORE_DIR),
                EngineKind::parse(engine.expose()),
            )?;
            Ok(Arc::new(store))
        }
        Some(url) if is_postgres(url.expose()) => {
            if config.admin_token.is_none() || config.ingest_token.is_none() {
                return Err(ServeError::Config(
                    "with a PostgreSQL store every node needs the same tokens: set \
                     CANOPY_ADMIN_TOKEN and CANOPY_INGEST_TOKEN"
                        .into(),
                ));
            }
            Ok(Arc::new(PgStore::connect(url.expose()).await?))
        }
        Some(_) => Err(ServeError::Config(
            "--store / CANOPY_STORE must be `redb`, `sled` or a PostgreSQL URL (postgres://…); \
             leave it unset for the embedded store in the data directory"
                .into(),
        )),
    }
}

/// Whether a store URL names PostgreSQL.
pub fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
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
/// store is the data directory's, or the PostgreSQL database at `store` when given. The
/// server (every node) must be stopped: the embedded engine's lock refuses a second process;
/// nodes of a cluster still running would hold secrets they can no longer open.
pub async fn rotate_key(
    data_dir: &Path,
    store: Option<&str>,
    current: &MasterKey,
    new: &MasterKey,
) -> Result<Rotated, ServeError> {
    let store: Box<dyn Store> = match store.filter(|url| !url.trim().is_empty()) {
        Some(url) if is_postgres(url) => Box::new(PgStore::connect(url).await?),
        Some(engine) if EngineKind::parse(engine).is_some() => Box::new(EmbeddedStore::open_on(
            &data_dir.join(STORE_DIR),
            EngineKind::parse(engine),
        )?),
        Some(_) => {
            return Err(ServeError::Config(
                "--store / CANOPY_STORE must be `redb`, `sled` or a PostgreSQL URL (postgres://…); \
                 leave it unset for the data directory's store"
                    .into(),
            ));
        }
        None => Box::new(EmbeddedStore::open(&data_dir.join(STORE_DIR))?),
    };
    match store.meta(KEY_FINGERPRINT).await? {
        Some(stored) if stored != current.fingerprint() => return Err(ServeError::WrongMasterKey),
        _ => {}
    }
    let mut integrations = store.integrations(None).await?;
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
