//! The HTTP server: the router answers without a socket, `run` serves on a loopback port
//! until its shutdown future resolves, and start-up refuses what cannot work.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use canopy::app::App as AppState;
use canopy::server::app;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

use crate::harness::{Canopy, MASTER_KEY, test_config};

#[tokio::test]
async fn healthz_answers_ok() {
    let dir = tempfile::tempdir().unwrap();
    let state = AppState::open(Arc::new(test_config(dir.path())))
        .await
        .unwrap();
    let response = app(state)
        .oneshot(Request::get("/healthz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["status"], "ok");
    assert_eq!(json["plugins"], 4, "the four bundled plugins are active");
}

#[tokio::test]
async fn run_serves_until_shutdown() {
    let canopy = Canopy::start(|_| {}).await;
    let addr = canopy.url.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: canopy\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(response.contains(r#""status":"ok""#), "{response}");
    canopy.stop().await;
}

#[tokio::test]
async fn invalid_settings_are_startup_errors() {
    let dir = tempfile::tempdir().unwrap();
    let refused = |tweak: fn(&mut canopy::Config)| {
        let mut config = test_config(dir.path());
        tweak(&mut config);
        async move {
            AppState::open(Arc::new(config))
                .await
                .err()
                .expect("refused")
                .to_string()
        }
    };
    let error = refused(|c| c.plugin_limits.plugin_memory_mib = 0).await;
    assert!(error.contains("plugin memory must be between"), "{error}");
    let error = refused(|c| c.delivery.retry_schedule = "1m,soon".into()).await;
    assert!(error.contains("`soon`"), "{error}");
    let error = refused(|c| c.master_key = None).await;
    assert!(error.contains("no master key"), "{error}");
    let error =
        refused(|c| c.master_key = Some(canopy::crypto::secret::SecretValue::new("c2hvcnQ=")))
            .await;
    assert!(error.contains("32 bytes"), "{error}");
}

#[tokio::test]
async fn a_different_master_key_for_existing_data_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = AppState::open(Arc::new(test_config(dir.path())))
        .await
        .unwrap();
    drop(first);
    let mut config = test_config(dir.path());
    let (_, other) = canopy::crypto::seal::MasterKey::generate();
    assert_ne!(other, MASTER_KEY);
    config.master_key = Some(canopy::crypto::secret::SecretValue::new(other));
    let error = AppState::open(Arc::new(config))
        .await
        .err()
        .expect("refused");
    assert!(
        error.to_string().contains("master key does not match"),
        "{error}"
    );
    // The original key still opens it.
    AppState::open(Arc::new(test_config(dir.path())))
        .await
        .unwrap();
}

/// The first start compiles the bundled plugins and keeps their native code in the data
/// directory; the next start maps it back instead of compiling again.
#[tokio::test]
async fn a_restart_maps_the_plugins_compiled_by_the_previous_start() {
    use canopy::runtime::Compilation;
    let dir = tempfile::tempdir().unwrap();
    let config = Arc::new(test_config(dir.path()));
    let compilations = |app: &AppState| {
        let mut plugins: Vec<(String, Compilation)> = app
            .plugins
            .list()
            .iter()
            .map(|p| (p.id().to_owned(), p.compilation()))
            .collect();
        plugins.sort_by(|a, b| a.0.cmp(&b.0));
        plugins
    };
    let first = AppState::open(config.clone()).await.unwrap();
    let compiled = compilations(&first);
    assert_eq!(compiled.len(), 4, "{compiled:?}");
    assert!(compiled.iter().all(|(_, c)| *c == Compilation::Compiled));
    assert_eq!(crate::files_under(&dir.path().join("compiled")).len(), 4);
    drop(first);
    let again = AppState::open(config).await.unwrap();
    let mapped = compilations(&again);
    assert_eq!(mapped.len(), 4);
    assert!(
        mapped.iter().all(|(_, c)| *c == Compilation::Precompiled),
        "{mapped:?}"
    );
}

#[tokio::test]
async fn unset_tokens_are_generated_once_and_kept_private() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.admin_token = None;
    config.ingest_token = None;
    let config = Arc::new(config);
    let first = AppState::open(config.clone()).await.unwrap();
    let admin = first.tokens.admin.expose().to_owned();
    let ingest = first.tokens.ingest.expose().to_owned();
    assert_ne!(admin, ingest);
    assert!(admin.len() >= 32);
    drop(first);
    let again = AppState::open(config).await.unwrap();
    assert_eq!(again.tokens.admin.expose(), admin, "kept across restarts");
    assert_eq!(again.tokens.ingest.expose(), ingest);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("admin.token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

/// SPEC.md §7 and §8, route by route.
const ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/events"),
    ("get", "/v1/plugins"),
    ("get", "/v1/plugins/{id}"),
    ("put", "/v1/plugins/{id}"),
    ("delete", "/v1/plugins/{id}"),
    ("get", "/v1/plugins/{id}/versions"),
    ("post", "/v1/plugins/{id}/rollback"),
    ("post", "/v1/integrations"),
    ("get", "/v1/integrations"),
    ("get", "/v1/integrations/{id}"),
    ("patch", "/v1/integrations/{id}"),
    ("delete", "/v1/integrations/{id}"),
    ("post", "/v1/integrations/{id}/test"),
    ("get", "/v1/deliveries"),
    ("get", "/v1/deliveries/{id}"),
    ("post", "/v1/deliveries/{id}/retry"),
    ("post", "/v1/deliveries/retry"),
    ("get", "/healthz"),
    ("get", "/metrics"),
    ("get", "/v1/openapi.json"),
    // §8: shops and their tokens; every shop's integrations and log under its id (the routes
    // above are the caller's own shop's), and the per-shop view of health.
    ("get", "/v1/shops"),
    ("post", "/v1/shops"),
    ("get", "/v1/shops/{shop}"),
    ("patch", "/v1/shops/{shop}"),
    ("delete", "/v1/shops/{shop}"),
    ("get", "/v1/shops/{shop}/tokens"),
    ("post", "/v1/shops/{shop}/tokens"),
    ("delete", "/v1/shops/{shop}/tokens/{token}"),
    ("post", "/v1/shops/{shop}/tokens/{token}/rotate"),
    ("post", "/v1/shops/{shop}/integrations"),
    ("get", "/v1/shops/{shop}/integrations"),
    ("get", "/v1/shops/{shop}/integrations/{id}"),
    ("patch", "/v1/shops/{shop}/integrations/{id}"),
    ("delete", "/v1/shops/{shop}/integrations/{id}"),
    ("post", "/v1/shops/{shop}/integrations/{id}/test"),
    ("get", "/v1/shops/{shop}/integrations/{id}/health"),
    ("get", "/v1/integrations/{id}/health"),
    ("get", "/v1/shops/{shop}/health"),
    ("get", "/v1/shops/{shop}/deliveries"),
    ("get", "/v1/shops/{shop}/deliveries/{id}"),
    ("post", "/v1/shops/{shop}/deliveries/{id}/retry"),
    ("post", "/v1/shops/{shop}/deliveries/retry"),
    // The admin UI: a one-time sign-in link to a shop's pages.
    ("post", "/v1/shops/{shop}/sign-in-links"),
];

#[tokio::test]
async fn every_route_is_in_the_openapi_document_and_every_documented_route_is_served() {
    let canopy = Canopy::start(|_| {}).await;
    let document: serde_json::Value = canopy
        .client
        .get(format!("{}/v1/openapi.json", canopy.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let paths = document["paths"].as_object().unwrap();
    for (method, path) in ROUTES {
        let operation = &paths[*path][*method];
        assert!(operation.is_object(), "{method} {path} is not documented");
        assert!(!operation["responses"].as_object().unwrap().is_empty());
    }
    let mut documented = 0;
    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            if !["get", "put", "post", "patch", "delete"].contains(&method.as_str()) {
                continue;
            }
            documented += 1;
            assert!(
                ROUTES.contains(&(method.as_str(), path.as_str())),
                "{method} {path} is documented but not in SPEC.md §7 or §8"
            );
            // Served: the route answers (an error of the handler is fine, "no such route"
            // and "method not allowed" are not).
            let token = match operation["security"][0].as_object() {
                Some(s) if s.contains_key("ingest_token") => crate::harness::INGEST_TOKEN,
                _ => crate::harness::ADMIN_TOKEN,
            };
            let url = format!(
                "{}{}",
                canopy.url,
                path.replace("{id}", &uuid::Uuid::now_v7().to_string())
                    .replace("{token}", &uuid::Uuid::now_v7().to_string())
                    .replace("{shop}", "default")
            );
            let response = canopy
                .client
                .request(method.to_uppercase().parse().unwrap(), url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            assert_ne!(
                response.status(),
                reqwest::StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}"
            );
            let status = response.status();
            let body = response.text().await.unwrap();
            assert!(
                !body.contains("no such route"),
                "{method} {path} is not served ({status})"
            );
        }
    }
    assert_eq!(documented, ROUTES.len());
    let schemes = document["components"]["securitySchemes"]
        .as_object()
        .unwrap();
    assert!(schemes.contains_key("admin_token") && schemes.contains_key("ingest_token"));
    assert_eq!(
        paths["/v1/integrations"]["post"]["security"][0]["admin_token"],
        serde_json::json!([])
    );
    canopy.stop().await;
}
