//! Crash safety with the real `canopy` binary: events are ingested while the receiver is
//! slow, the process is killed with SIGKILL mid-flight, restarted on the same data directory,
//! and every delivery acknowledged with a 202 reaches the receiver at least once (counted by
//! distinct `webhook-id`, which is the delivery id).

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::{ADMIN_TOKEN, INGEST_TOKEN, MASTER_KEY, PATIENCE, fresh};

struct Server {
    child: Child,
    url: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start(data: &std::path::Path) -> Server {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_canopy"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("CANOPY_DATA_DIR", data)
        .env("CANOPY_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("CANOPY_INGEST_TOKEN", INGEST_TOKEN)
        .env("CANOPY_MASTER_KEY", MASTER_KEY)
        .env("CANOPY_ALLOW_PRIVATE_NETWORKS", "true")
        .env("CANOPY_RETRY_SCHEDULE", "100ms,200ms,500ms,1s,2s")
        .env("CANOPY_WORKERS", "8")
        .env("CANOPY_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the canopy binary starts");
    let server = Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while client
        .get(format!("{}/healthz", server.url))
        .send()
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "canopy did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server
}

async fn seen_ids(receiver: &MockServer) -> HashSet<String> {
    receiver
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter_map(|r| {
            r.headers
                .get("webhook-id")?
                .to_str()
                .ok()
                .map(str::to_owned)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_mid_flight_loses_nothing() {
    let data = tempfile::tempdir().unwrap();
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_millis(40)))
        .mount(&receiver)
        .await;

    let mut server = start(data.path()).await;
    let client = reqwest::Client::new();
    let created = client
        .post(format!("{}/v1/integrations", server.url))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({
            "name": "Slow receiver", "plugin": "webhook", "events": ["*"],
            "settings": {"url": format!("{}/events", receiver.uri())},
            "secrets": {"webhook_secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);

    // Ingest in batches until the process dies under us.
    let ingest_url = format!("{}/v1/events", server.url);
    let ingesting = tokio::spawn(async move {
        let client = reqwest::Client::new();
        let mut acknowledged = HashSet::new();
        for _ in 0..40 {
            let events: Vec<Value> = (0..10).map(|_| fresh("seeds.earned.order")).collect();
            let sent = client
                .post(&ingest_url)
                .bearer_auth(INGEST_TOKEN)
                .json(&json!({ "events": events }))
                .send()
                .await;
            let Ok(response) = sent else { break };
            if response.status() != StatusCode::ACCEPTED {
                break;
            }
            let Ok(answer) = response.json::<Value>().await else {
                break;
            };
            for event in answer["events"].as_array().unwrap() {
                for delivery in event["deliveries"].as_array().unwrap() {
                    acknowledged.insert(delivery["id"].as_str().unwrap().to_owned());
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        acknowledged
    });

    // Kill once some, but not all, deliveries went out.
    let deadline = Instant::now() + PATIENCE;
    while seen_ids(&receiver).await.len() < 20 {
        assert!(Instant::now() < deadline, "nothing was delivered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.child.kill().expect("SIGKILL");
    server.child.wait().unwrap();
    let acknowledged = ingesting.await.unwrap();
    let before_restart = seen_ids(&receiver).await;
    assert!(!acknowledged.is_empty());
    assert!(
        before_restart.len() < acknowledged.len(),
        "the kill came before everything was delivered ({} of {})",
        before_restart.len(),
        acknowledged.len()
    );

    let mut server = start(data.path()).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = seen_ids(&receiver).await;
        let missing: Vec<&String> = acknowledged.difference(&seen).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} acknowledged deliveries never arrived",
            missing.len(),
            acknowledged.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}
