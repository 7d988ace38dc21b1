//! The server: [`run`] opens the application ([`App::open`]), serves the API on a listener
//! and runs the scheduler, the purge and the store watchdog until `shutdown` resolves; [`app`]
//! builds the router so tests can call it without a socket.
//!
//! Routes for one store keep working unchanged: `/v1/integrations…` and `/v1/deliveries…` are
//! `/v1/shops/-/integrations…` and `/v1/shops/-/deliveries…`, where `-` is the caller's own
//! shop (`default` for the platform's token). The alias is a rewrite in front of the router,
//! and the OpenAPI document lists those paths too.
//!
//! Shutdown order: stop taking requests (in-flight ones finish), then stop claiming
//! deliveries and let attempts in flight finish within the grace period (the rest are queued
//! again), then flush the store.

use std::future::Future;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Uri, header};
use axum::middleware::from_fn_with_state;
use axum::response::IntoResponse;
use axum::{Extension, Json, Router};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt as _;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::{self, Role};
pub use crate::app::ServeError;
use crate::app::access::OWN_SHOP;
use crate::app::{App, AppError};
use crate::config::Config;
use crate::delivery::scheduler::{Scheduler, SchedulerSettings};
use crate::metrics;
use crate::store::Store;

/// A claim holds a delivery for this long: far longer than an attempt can take (plugin
/// calls of at most a few seconds, and up to 16 requests of at most the request timeout).
const LEASE_MARGIN: std::time::Duration = std::time::Duration::from_secs(60);

/// Route families a one-store client may use without the `/v1/shops/{shop}` prefix.
const UNPREFIXED: [&str; 2] = ["/v1/integrations", "/v1/deliveries"];

/// Every route with its OpenAPI description: routes are registered through `routes!`, so a
/// route cannot exist without being in the document. Token checks are layered per group.
pub fn api(app: &App) -> OpenApiRouter<App> {
    let ingest = api::ingest::router().route_layer(from_fn_with_state(app.clone(), |s, r, n| {
        api::require(Role::Ingest, s, r, n)
    }));
    let admin = api::plugins::router()
        .merge(api::shops::router())
        .merge(api::integrations::router())
        .merge(api::deliveries::router())
        .route_layer(from_fn_with_state(app.clone(), |s, r, n| {
            api::require(Role::Admin, s, r, n)
        }));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(metrics))
        .routes(routes!(openapi_json))
        .merge(ingest)
        .merge(admin)
}

/// The OpenAPI document of the whole HTTP API, the one-store paths included.
pub fn openapi(app: &App) -> utoipa::openapi::OpenApi {
    let mut document = api(app).into_openapi();
    add_unprefixed_paths(&mut document);
    document
}

/// Lists `/v1/integrations…` and `/v1/deliveries…` beside their `/v1/shops/{shop}/…` forms,
/// without the `shop` parameter.
fn add_unprefixed_paths(document: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::path::{Operation, ParameterIn};
    let strip = |operation: &mut Option<Operation>| {
        if let Some(operation) = operation {
            if let Some(parameters) = &mut operation.parameters {
                parameters.retain(|p| match p {
                    utoipa::openapi::RefOr::T(p) => {
                        !(p.name == "shop" && p.parameter_in == ParameterIn::Path)
                    }
                    utoipa::openapi::RefOr::Ref(_) => true,
                });
            }
            if let Some(id) = &mut operation.operation_id {
                id.push_str("_in_own_shop");
            }
        }
    };
    let aliases: Vec<(String, utoipa::openapi::PathItem)> = document
        .paths
        .paths
        .iter()
        .filter_map(|(path, item)| {
            let rest = path.strip_prefix("/v1/shops/{shop}")?;
            let alias = format!("/v1{rest}");
            UNPREFIXED
                .iter()
                .any(|family| alias.starts_with(family))
                .then(|| {
                    let mut item = item.clone();
                    for operation in [
                        &mut item.get,
                        &mut item.post,
                        &mut item.put,
                        &mut item.patch,
                        &mut item.delete,
                    ] {
                        strip(operation);
                    }
                    (alias, item)
                })
        })
        .collect();
    document.paths.paths.extend(aliases);
}

/// `/v1/integrations…` → `/v1/shops/-/integrations…` (and the same for deliveries).
fn own_shop_path(uri: &Uri) -> Option<Uri> {
    let path = uri.path();
    let family = UNPREFIXED.iter().find(|family| {
        path.strip_prefix(**family)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })?;
    let rest = &path["/v1".len()..];
    debug_assert!(family.starts_with("/v1"));
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    format!("/v1/shops/{OWN_SHOP}{rest}{query}").parse().ok()
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Canopy",
        description = "Carries loyalty events to marketing platforms through sandboxed WebAssembly destination plugins. \
            Every shop's integrations and deliveries are under `/v1/shops/{shop}/…`; `-` stands for the caller's own shop \
            (a shop token's, or `default` for the platform's), and `/v1/integrations…`, `/v1/deliveries…` are the same \
            routes for it.",
    ),
    modifiers(&BearerTokens),
    tags(
        (name = "ingest", description = "Events from the loyalty backend (the ingest token, or a shop's ingest token)"),
        (name = "shops", description = "Shops and their tokens (platform admin token)"),
        (name = "plugins", description = "Destination plugins (admin tokens read; the platform admin token changes)"),
        (name = "integrations", description = "A shop's configured destinations and their health (admin token)"),
        (name = "deliveries", description = "A shop's delivery log (admin token)"),
        (name = "operations", description = "Health, metrics, this document (no token)"),
    )
)]
struct ApiDoc;

/// The two kinds of bearer token, as security schemes.
struct BearerTokens;

impl utoipa::Modify for BearerTokens {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        for (name, what) in [
            (
                "admin_token",
                "The platform admin token, or a shop's admin token (its own shop only)",
            ),
            (
                "ingest_token",
                "The ingest token, or a shop's ingest token (its own shop's events only)",
            ),
        ] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some(what))
                        .build(),
                ),
            );
        }
    }
}

/// The API router: the routes, then in front of them the one-store rewrite and the URI bound.
pub fn app(app: App) -> Router {
    let document = openapi(&app)
        .to_json()
        .expect("the OpenAPI document serialises");
    let (routes, _) = api(&app).split_for_parts();
    let app_state = app.clone();
    let routes = routes
        .layer(Extension(OpenApiJson(Arc::from(document))))
        .fallback(|| async { AppError::not_found("route") })
        .method_not_allowed_fallback(api::method_not_allowed)
        .with_state(app);
    let rewritten = routes.map_request(|mut request: Request| {
        if let Some(uri) = own_shop_path(request.uri()) {
            *request.uri_mut() = uri;
        }
        request
    });
    Router::new()
        .merge(crate::ui::router(app_state))
        .fallback_service(rewritten)
        .layer(axum::middleware::from_fn(api::limit_uri))
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
async fn healthz(State(state): State<App>) -> axum::response::Response {
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
async fn metrics(State(state): State<App>) -> Result<impl IntoResponse, AppError> {
    let depth = state.store.queue_depth(state.clock.now()).await?;
    Ok((
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        state
            .metrics
            .render(depth, state.store.signals().outcomes_pending()),
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
    run_on(crate::clock::Clock::system(), config, listener, shutdown).await
}

/// [`run`] on a given clock (tests move a manual one: retries, leases and the purge without
/// waiting for them).
pub async fn run_on(
    clock: crate::clock::Clock,
    config: Arc<Config>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let state = App::open_with(config.clone(), clock).await?;
    let (stop, stopped) = watch::channel(false);

    let requests = state.runtime.limits().requests_per_event as u32;
    let lease = config
        .delivery
        .lease
        .unwrap_or(config.delivery.request_timeout * requests + LEASE_MARGIN);
    let scheduler = Scheduler::new(
        state.worker.clone(),
        SchedulerSettings {
            workers: config.delivery.workers,
            lease,
            grace: config.delivery.shutdown_grace,
        },
    );
    let scheduling = tokio::spawn(scheduler.run(stopped.clone()));
    let purging = tokio::spawn(purge_periodically(state.clone(), stopped.clone()));
    let following = tokio::spawn(follow_plugins(state.clone(), stopped.clone()));

    let (broken, store_broken) = tokio::sync::oneshot::channel();
    let watching = tokio::spawn(watch_store(state.store.clone(), broken, stopped));

    let store = match &config.store {
        Some(url) => crate::store::redacted(url.expose()),
        None => config.data_dir.display().to_string(),
    };
    tracing::info!(addr = %listener.local_addr()?, %store, "canopy listening");
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
    let _ = following.await;
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

/// Keeps this node's plugins in step with the store's active versions: when a version is
/// uploaded, rolled back or deleted — here or on another node of a cluster — the registry
/// loads it (see [`crate::app::sync_plugins`]).
async fn follow_plugins(app: App, mut stop: watch::Receiver<bool>) {
    let mut changes = app.store.signals().watch_plugins();
    changes.mark_unchanged();
    loop {
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
        let _serialised = app.plugin_changes.lock().await;
        match crate::app::sync_plugins(&app.runtime, &app.plugins, app.store.as_ref()).await {
            Ok(0) => {}
            Ok(changed) => tracing::info!(changed, "plugins changed elsewhere are now in use here"),
            Err(error) => {
                tracing::error!(%error, "cannot follow plugin changes; the next change tries again")
            }
        }
    }
}

/// Purges finished work older than the retention, at start and then every interval.
async fn purge_periodically(app: App, mut stop: watch::Receiver<bool>) {
    let (store, config, clock) = (app.store.clone(), app.config.clone(), app.clock.clone());
    loop {
        let now = clock.now();
        let cutoff = now.saturating_sub(config.delivery.retention);
        match store.purge(cutoff, now).await {
            Ok(purged) if purged.deliveries + purged.events + purged.tokens + purged.shops > 0 => {
                tracing::info!(
                    deliveries = purged.deliveries,
                    events = purged.events,
                    tokens = purged.tokens,
                    shops = purged.shops,
                    "purged finished work older than the retention, expired tokens, and deleted shops' last traces"
                )
            }
            Ok(_) => {}
            Err(error) => tracing::error!(%error, "purge failed; it runs again next interval"),
        }
        tokio::select! {
            _ = clock.sleep_until(now.saturating_add(config.delivery.purge_interval)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
