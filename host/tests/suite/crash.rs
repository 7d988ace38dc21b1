//! The real `canopy` binary. Crash safety: events are ingested while the receiver is slow,
//! the process is killed with SIGKILL mid-flight, restarted on the same data directory, and
//! every delivery acknowledged with a 202 reaches the receiver at least once (counted by
//! distinct `webhook-id`, which is the delivery id). Secrets: the logs never show one, and
//! `canopy rotate-key` re-encrypts them all.

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::{
    ADMIN_TOKEN, INGEST_TOKEN, MASTER_KEY, PATIENCE, answering_first, free_port, fresh, seen_ids,
    serve, start, start_with,
};

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

const TOKEN: &str = "bearer-SECRET-never-in-logs-6502";
const HMAC_SECRET: &str = "whsec_c2VjcmV0LW5ldmVyLWluLWxvZ3MtNjUwMg==";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_never_show_a_secret_and_rotate_key_keeps_every_one() {
    let data = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let log_path = logs.path().join("canopy.log");
    let receiver = answering_first(ResponseTemplate::new(500), 1).await;

    let log = std::fs::File::create(&log_path).unwrap();
    let mut server = start_with(
        data.path(),
        MASTER_KEY,
        log.into(),
        &[("CANOPY_LOG", "debug")],
    )
    .await;
    let client = reqwest::Client::new();
    let created: Value = client
        .post(format!("{}/v1/integrations", server.url))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({
            "name": "Hook", "plugin": "webhook", "events": ["*"],
            "settings": {"url": format!("{}/hook", receiver.uri()), "auth": "bearer"},
            "secrets": {"token": TOKEN, "webhook_secret": HMAC_SECRET}
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let integration = created["id"].as_str().unwrap().to_owned();
    let tested = client
        .post(format!("{}/v1/integrations/{integration}/test", server.url))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(tested.status(), StatusCode::OK);
    let answer: Value = client
        .post(format!("{}/v1/events", server.url))
        .bearer_auth(INGEST_TOKEN)
        .json(&fresh("tier.changed"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let delivery = answer["deliveries"][0]["id"].as_str().unwrap().to_owned();
    // The test send met the 500, so the delivery succeeds at once or after a retry.
    let deadline = Instant::now() + PATIENCE;
    while !seen_ids(&receiver).await.contains(&delivery) {
        assert!(Instant::now() < deadline, "the delivery never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The worker logs the outcome just after the receiver answers: wait for that line.
    let deadline = Instant::now() + PATIENCE;
    while !std::fs::read_to_string(&log_path)
        .unwrap()
        .contains(&format!("delivery={delivery}"))
    {
        assert!(
            Instant::now() < deadline,
            "no log line carries the delivery id:\n{}",
            std::fs::read_to_string(&log_path).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();

    let logged = std::fs::read_to_string(&log_path).unwrap();
    assert!(logged.contains(&integration));
    for secret in [TOKEN, HMAC_SECRET, &HMAC_SECRET[6..]] {
        assert!(
            !logged.contains(secret),
            "a secret reached the log:\n{logged}"
        );
    }

    // Rotate the key with the CLI; the old key is then refused, the new one works.
    let (_, new_key) = canopy::crypto::seal::MasterKey::generate();
    let rotated = Command::new(env!("CARGO_BIN_EXE_canopy"))
        .arg("rotate-key")
        .env("CANOPY_DATA_DIR", data.path())
        .env("CANOPY_MASTER_KEY", MASTER_KEY)
        .env("CANOPY_NEW_MASTER_KEY", &new_key)
        .output()
        .unwrap();
    assert!(rotated.status.success(), "{rotated:?}");
    assert_eq!(
        String::from_utf8_lossy(&rotated.stdout).trim(),
        "re-encrypted 2 secrets of 1 integrations; start the server with the new key"
    );
    let refused = serve(data.path(), free_port(), MASTER_KEY, Stdio::piped())
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("master key does not match"),
        "{refused:?}"
    );
    let mut server = start_with(data.path(), &new_key, Stdio::null(), &[]).await;
    let answer: Value = client
        .post(format!("{}/v1/events", server.url))
        .bearer_auth(INGEST_TOKEN)
        .json(&fresh("tier.changed"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let delivery = answer["deliveries"][0]["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let requests = receiver.received_requests().await.unwrap_or_default();
        if let Some(request) = requests
            .iter()
            .find(|r| r.headers.get("webhook-id").and_then(|v| v.to_str().ok()) == Some(&delivery))
        {
            let authorization = request
                .headers
                .get("authorization")
                .unwrap()
                .to_str()
                .unwrap();
            assert_eq!(
                authorization,
                format!("Bearer {TOKEN}"),
                "the secret survived rotation"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no delivery after rotation");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

/// Ingests batches into `url` until it stops answering; returns the acknowledged delivery ids.
async fn ingest_until_down(url: String) -> HashSet<String> {
    let client = reqwest::Client::new();
    let mut acknowledged = HashSet::new();
    for _ in 0..200 {
        let events: Vec<Value> = (0..5).map(|_| fresh("tier.changed")).collect();
        let Ok(response) = client
            .post(&url)
            .bearer_auth(INGEST_TOKEN)
            .json(&json!({ "events": events }))
            .send()
            .await
        else {
            break;
        };
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
    }
    acknowledged
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_sigkills_at_different_moments_lose_nothing() {
    let data = tempfile::tempdir().unwrap();
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_millis(25)))
        .mount(&receiver)
        .await;
    let mut acknowledged = HashSet::new();
    // Kill points vary: after 1, 13 and 29 more deliveries, so the kill lands in different
    // phases (mid-ingest, mid-send, right after a restart's recovery).
    for (round, more) in [1usize, 13, 29].into_iter().enumerate() {
        let mut server = start(data.path()).await;
        if round == 0 {
            let created = reqwest::Client::new()
                .post(format!("{}/v1/integrations", server.url))
                .bearer_auth(ADMIN_TOKEN)
                .json(&json!({
                    "name": "Receiver", "plugin": "webhook", "events": ["*"],
                    "settings": {"url": format!("{}/events", receiver.uri())},
                    "secrets": {"webhook_secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}
                }))
                .send()
                .await
                .unwrap();
            assert_eq!(created.status(), StatusCode::CREATED);
        }
        let ingesting = tokio::spawn(ingest_until_down(format!("{}/v1/events", server.url)));
        let target = seen_ids(&receiver).await.len() + more;
        let deadline = Instant::now() + PATIENCE;
        while seen_ids(&receiver).await.len() < target {
            assert!(
                Instant::now() < deadline,
                "round {round}: nothing delivered"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        acknowledged.extend(ingesting.await.unwrap());
    }
    let mut server = start(data.path()).await;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let seen = seen_ids(&receiver).await;
        let missing = acknowledged.difference(&seen).count();
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} acknowledged deliveries never arrived",
            acknowledged.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}
