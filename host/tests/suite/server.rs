//! The HTTP server: the router answers without a socket, and `run` serves on a loopback port
//! until its shutdown future resolves.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use canopy::Config;
use canopy::server::{AppState, app};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

#[tokio::test]
async fn healthz_answers_ok() {
    let state = AppState::new(Arc::new(Config::loopback())).unwrap();
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
    let config = Arc::new(Config::loopback());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(canopy::run(config, listener, async {
        let _ = stopped.await;
    }));

    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: canopy\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(response.contains(r#""status":"ok""#), "{response}");

    stop.send(()).unwrap();
    server.await.unwrap().expect("clean shutdown");
}

#[tokio::test]
async fn invalid_limits_are_a_startup_error() {
    let mut config = Config::loopback();
    config.plugin_limits.plugin_memory_mib = 0;
    let error = AppState::new(Arc::new(config)).err().expect("refused");
    assert!(
        error.to_string().contains("plugin memory must be between"),
        "{error}"
    );
}
