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
    ADMIN_TOKEN, INGEST_TOKEN, MASTER_KEY, PATIENCE, answering_first, database_of, free_port,
    fresh, on_postgres, seen_ids, serve, start, start_with,
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
    webhook_to(&server.url, "Slow receiver", &receiver).await;

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

/// Creates a signed webhook integration for every event type, sending to `receiver`.
async fn webhook_to(server: &str, name: &str, receiver: &MockServer) {
    let created = reqwest::Client::new()
        .post(format!("{server}/v1/integrations"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({
            "name": name, "plugin": "webhook", "events": ["*"],
            "settings": {"url": format!("{}/events", receiver.uri())},
            "secrets": {"webhook_secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
}

/// Ingests `batches` batches of 5 events into `url`, or fewer if it stops answering; returns
/// the acknowledged delivery ids.
async fn ingest_until_down(url: String, batches: usize) -> HashSet<String> {
    let client = reqwest::Client::new();
    let mut acknowledged = HashSet::new();
    for _ in 0..batches {
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
            webhook_to(&server.url, "Receiver", &receiver).await;
        }
        let ingesting = tokio::spawn(ingest_until_down(format!("{}/v1/events", server.url), 200));
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

/// Answers 500 to every tenth request (so outcomes of every kind are pending: delivered,
/// retrying), 200 to the rest, each after 20 ms (a backlog of 300 takes 8 workers ~1 s).
struct MostlyOk(std::sync::atomic::AtomicUsize);

impl wiremock::Respond for MostlyOk {
    fn respond(&self, _: &wiremock::Request) -> ResponseTemplate {
        let n = self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let status = if n % 10 == 9 { 500 } else { 200 };
        ResponseTemplate::new(status).set_delay(Duration::from_millis(20))
    }
}

/// A gauge of a running server's `/metrics` (`name` with its labels, as exposed).
async fn gauge(client: &reqwest::Client, url: &str, name: &str) -> Option<u64> {
    let text = client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// The attempts a server's log says were recorded: `(delivery, attempt number)` of each
/// "delivery finished" and "delivery attempt failed" line (logged once the store answered).
fn logged_attempts(log: &std::path::Path) -> Vec<(String, u64)> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| {
            matches!(
                line["fields"]["message"].as_str(),
                Some("delivery finished" | "delivery attempt failed")
            )
        })
        .map(|line| {
            let fields = &line["fields"];
            (
                fields["delivery"].as_str().unwrap().to_owned(),
                fields["attempt"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Outcomes are written in groups and made durable before their workers hear of them. Kill
/// the server while the store holds outcomes not yet answered, three times: after a restart
/// every acknowledged delivery arrives, every attempt the log said was recorded is in the
/// delivery log and none was made twice, and the attempts sent but not recorded are at most
/// the ones in flight at the kills (a worker's one attempt each). A SIGKILL loses what the
/// process had not yet handed to the kernel; the flush before the answer (an fsync) is what
/// also covers a crash of the machine, which no test here can cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_with_outcomes_pending_loses_no_event_and_no_recorded_attempt() {
    const WORKERS: usize = 8;
    const KILLS: usize = 3;
    let data = tempfile::tempdir().unwrap();
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(MostlyOk(Default::default()))
        .mount(&receiver)
        .await;
    let store = on_postgres().then(|| database_of(data.path()));
    let workers = WORKERS.to_string();
    let mut env = vec![
        ("CANOPY_WORKERS", workers.as_str()),
        ("CANOPY_LOG", "info"),
        ("CANOPY_LOG_FORMAT", "json"),
        // Work a killed server held is due again this soon (on the embedded store, at once on restart).
        ("CANOPY_LEASE", "2s"),
    ];
    if let Some(url) = &store {
        env.push(("CANOPY_STORE", url.as_str()));
    }
    let client = reqwest::Client::new();
    let mut acknowledged = HashSet::new();
    let mut logs = Vec::new();
    let start = |round: usize, logs: &mut Vec<std::path::PathBuf>| {
        let log = data.path().with_extension(format!("{round}.log"));
        let file = std::fs::File::create(&log).unwrap();
        logs.push(log);
        start_with(data.path(), MASTER_KEY, Stdio::from(file), &env)
    };
    for round in 0..KILLS {
        let mut server = start(round, &mut logs).await;
        if round == 0 {
            webhook_to(&server.url, "Receiver", &receiver).await;
        }
        // A backlog, all of it acknowledged before the kill: no ingest flush comes after, so
        // outcomes are durable only if their own writes made them so.
        acknowledged.extend(ingest_until_down(format!("{}/v1/events", server.url), 60).await);
        // Kill as soon as the gauge shows outcomes in the store's hands, once some went out.
        let floor = seen_ids(&receiver).await.len() + 20;
        let deadline = Instant::now() + PATIENCE;
        loop {
            if seen_ids(&receiver).await.len() >= floor
                && gauge(&client, &server.url, "canopy_outcomes_pending").await > Some(0)
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: no outcome was ever pending"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        server.child.kill().unwrap();
        server.child.wait().unwrap();
    }
    // Restart and drain: every acknowledged delivery arrives, and nothing is left to retry.
    let server = start(KILLS, &mut logs).await;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let missing = acknowledged.difference(&seen_ids(&receiver).await).count();
        let mut open = 0;
        for state in ["due", "scheduled", "in_flight"] {
            let name = format!("canopy_queue_depth{{state=\"{state}\"}}");
            open += gauge(&client, &server.url, &name)
                .await
                .unwrap_or(u64::MAX / 4);
        }
        if missing == 0 && open == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} acknowledged deliveries never arrived; {open} still open",
            acknowledged.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Every attempt logged as recorded, in any run, is in the delivery log, and none was
    // logged twice (a recorded attempt lost at a kill would be made again under its number);
    // what was sent and not recorded is at most one attempt per worker per kill.
    let logged: Vec<(String, u64)> = logs.iter().flat_map(|log| logged_attempts(log)).collect();
    assert!(!logged.is_empty(), "the logs recorded no attempt");
    let mut once = HashSet::new();
    for attempt in &logged {
        assert!(
            once.insert(attempt),
            "attempt {} of {} was logged as recorded twice: it was lost after it was recorded",
            attempt.1,
            attempt.0
        );
    }
    let mut sent: std::collections::HashMap<String, u64> = Default::default();
    for request in receiver.received_requests().await.unwrap() {
        if let Some(id) = request.headers.get("webhook-id") {
            *sent.entry(id.to_str().unwrap().to_owned()).or_default() += 1;
        }
    }
    let mut recorded: std::collections::HashMap<String, Vec<u64>> = Default::default();
    for id in sent.keys() {
        let (status, detail) = server
            .call(
                reqwest::Method::GET,
                &format!("/v1/shops/default/deliveries/{id}"),
                ADMIN_TOKEN,
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "delivery {id}: {detail}");
        let numbers = detail["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["number"].as_u64().unwrap())
            .collect();
        recorded.insert(id.clone(), numbers);
    }
    for (delivery, attempt) in &logged {
        assert!(
            recorded[delivery].contains(attempt),
            "attempt {attempt} of {delivery} was logged as recorded, and is not in the delivery log"
        );
    }
    let unrecorded: u64 = sent
        .iter()
        .map(|(id, n)| n.saturating_sub(recorded[id].len() as u64))
        .sum();
    assert!(
        unrecorded <= (KILLS * WORKERS) as u64,
        "{unrecorded} attempts were sent and not recorded; at most {} were in flight at the kills",
        KILLS * WORKERS
    );
    drop(server);
}
