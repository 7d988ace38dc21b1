//! Faults: receivers that hang past the timeout, reset connections, answer 429 without
//! `Retry-After`, or are down and come back; hostile plugins uploaded while traffic flows.
//! Each fault must end in the right outcome for its delivery and harm nothing else.

use std::time::Duration;

use canopy_test_support::{HOSTILE, component};
use reqwest::Method;
use serde_json::{Value, json};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::{Canopy, fresh, received};

fn webhook(url: String) -> Value {
    json!({"name": "Hook", "plugin": "webhook", "events": ["*"], "settings": {"url": url}})
}

fn first_error(delivery: &Value) -> String {
    delivery["attempts"][0]["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_receiver_that_hangs_is_timed_out_and_retried() {
    let hanging = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(30)))
        .mount(&hanging)
        .await;
    let canopy = Canopy::start(|c| {
        c.delivery.request_timeout = Duration::from_millis(300);
        c.delivery.retry_schedule = "50ms".into();
    })
    .await;
    canopy
        .integration(webhook(format!("{}/slow", hanging.uri())))
        .await;
    let delivery = canopy.ingest_one(fresh("tier.changed")).await;
    let exhausted = canopy.delivery_with_status(&delivery, "exhausted").await;
    assert_eq!(exhausted["attempts"].as_array().unwrap().len(), 2);
    assert!(
        first_error(&exhausted).contains("no response within 300ms"),
        "{exhausted}"
    );
    assert_eq!(exhausted["attempts"][0]["outcome"], "retrying");
    canopy.stop().await;
}

/// A receiver that accepts connections and closes them at once, without answering.
async fn resetting() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_zero_linger();
            drop(stream);
        }
    });
    (url, task)
}

#[tokio::test]
async fn reset_connections_and_429s_are_retried_on_schedule() {
    let (reset_url, resetter) = resetting().await;
    let busy = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429))
        .mount(&busy)
        .await;
    let canopy = Canopy::start(|c| c.delivery.retry_schedule = "50ms,100ms".into()).await;
    canopy
        .integration(webhook(format!("{reset_url}/reset")))
        .await;
    canopy
        .integration(webhook(format!("{}/busy", busy.uri())))
        .await;
    let (_, answer) = canopy.ingest(fresh("tier.changed")).await;
    let mut errors = Vec::new();
    for d in answer["deliveries"].as_array().unwrap() {
        let done = canopy
            .delivery_with_status(d["id"].as_str().unwrap(), "exhausted")
            .await;
        assert_eq!(done["attempts"].as_array().unwrap().len(), 3, "{done}");
        errors.push(first_error(&done));
    }
    errors.sort();
    assert!(
        errors.iter().any(|e| e.contains("network error")),
        "{errors:?}"
    );
    let (_, log) = canopy
        .admin(Method::GET, "/v1/deliveries?status=exhausted", None)
        .await;
    let reasons: Vec<&str> = log["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["last_error"].as_str().unwrap())
        .collect();
    assert!(reasons.iter().any(|r| r.contains("429")), "{reasons:?}");
    assert_eq!(
        received(&busy, 3).await.len(),
        3,
        "429 without Retry-After: the schedule"
    );
    resetter.abort();
    canopy.stop().await;
}

#[tokio::test]
async fn deliveries_wait_out_a_receiver_outage_and_arrive_when_it_returns() {
    // Reserve a port, then leave it closed: the receiver is down.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let canopy = Canopy::start(|c| {
        c.delivery.retry_schedule = "50ms,100ms,200ms,400ms,800ms,1s,1s,1s,1s,1s".into();
        c.delivery.auto_disable_after = 0;
    })
    .await;
    canopy
        .integration(webhook(format!("http://127.0.0.1:{port}/back")))
        .await;
    let mut deliveries = Vec::new();
    for _ in 0..5 {
        deliveries.push(canopy.ingest_one(fresh("tier.changed")).await);
    }
    for id in &deliveries {
        let waiting = canopy.delivery_with_status(id, "retrying").await;
        assert!(first_error(&waiting).contains("network error"), "{waiting}");
    }
    // The receiver comes back on the same port.
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let back = MockServer::builder().listener(listener).start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&back)
        .await;
    for id in &deliveries {
        canopy.delivery_with_status(id, "succeeded").await;
    }
    assert_eq!(received(&back, 5).await.len(), 5);
    canopy.stop().await;
}

#[tokio::test]
async fn hostile_plugins_uploaded_during_traffic_harm_no_healthy_integration() {
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let canopy = Canopy::start(|c| {
        c.plugin_limits.plugin_time_limit_ms = 200;
        c.plugin_limits.plugin_memory_mib = 32;
    })
    .await;
    canopy
        .integration(webhook(format!("{}/healthy", receiver.uri())))
        .await;
    let mut healthy = Vec::new();
    for _ in 0..5 {
        healthy.push(canopy.ingest_one(fresh("tier.changed")).await);
    }
    let (status, uploaded) = canopy
        .upload("hostile", component(HOSTILE), "application/wasm")
        .await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{uploaded}");
    for mode in ["loop", "memory-bomb", "panic"] {
        canopy
            .integration(json!({
                "name": mode, "plugin": "hostile", "events": ["*"],
                "settings": {"mode": mode}
            }))
            .await;
    }
    let mut hostile = Vec::new();
    for _ in 0..3 {
        let (_, answer) = canopy.ingest(fresh("tier.changed")).await;
        for d in answer["deliveries"].as_array().unwrap() {
            let id = d["id"].as_str().unwrap().to_owned();
            let detail = canopy.delivery(&id).await;
            if detail["plugin"] == "webhook" {
                healthy.push(id);
            } else {
                hostile.push(id);
            }
        }
    }
    assert_eq!(hostile.len(), 9);
    for id in &healthy {
        canopy.delivery_with_status(id, "succeeded").await;
    }
    let mut reasons = Vec::new();
    for id in &hostile {
        let failed = canopy.delivery_with_status(id, "failed").await;
        reasons.push(failed["last_error"].as_str().unwrap().to_owned());
    }
    for expected in ["time limit", "memory limit", "panicked on purpose"] {
        assert!(
            reasons.iter().any(|r| r.contains(expected)),
            "{expected} missing from {reasons:?}"
        );
    }
    assert_eq!(
        received(&receiver, healthy.len()).await.len(),
        healthy.len()
    );
    let (_, health) = canopy.admin(Method::GET, "/healthz", None).await;
    assert_eq!(health["status"], "ok");
    canopy.stop().await;
}
