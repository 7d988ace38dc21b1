//! The HTTP server: [`run`] serves the API on a listener until `shutdown` resolves, and
//! [`app`] builds the router so tests can call it without a socket.

use std::future::Future;
use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::runtime::{PluginRegistry, Runtime};

/// What every request handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub runtime: Runtime,
    pub plugins: Arc<PluginRegistry>,
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
    #[error("serving HTTP failed: {0}")]
    Io(#[from] std::io::Error),
}

impl AppState {
    pub fn new(config: Arc<Config>) -> Result<AppState, ServeError> {
        let limits = config.plugin_limits.limits().map_err(ServeError::Config)?;
        let runtime = Runtime::new(limits)?;
        let plugins = Arc::new(PluginRegistry::new());
        for plugin in crate::runtime::bundled::install(&runtime, &plugins)? {
            tracing::info!(plugin = plugin.id(), version = %plugin.info().version, "plugin active");
        }
        Ok(AppState {
            runtime,
            plugins,
            config,
        })
    }
}

/// The API router.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .with_state(state)
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    version: &'static str,
    plugins: usize,
}

async fn healthz(State(state): State<AppState>) -> Json<Health> {
    Json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
        plugins: state.plugins.list().len(),
    })
}

/// Serves until `shutdown` resolves, then lets in-flight requests finish.
pub async fn run(
    config: Arc<Config>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let state = AppState::new(config)?;
    tracing::info!(addr = %listener.local_addr()?, "canopy listening");
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await?;
    tracing::info!("canopy stopped");
    Ok(())
}
