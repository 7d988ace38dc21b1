//! Fair delivery between shops, measured on the release binary: shop B's events arrive at 20
//! a second while shop A has a backlog of 2,000 — first with A's receiver healthy, then with
//! it hanging past the request timeout (the default 10 s), then with A throttled to one
//! request every 2 seconds and 20,000 queued. B's ingest → delivered p50 and p99 in each case,
//! beside the healthy one, with the bound the test suite asserts (p99 under 1 s).
//!
//! Run alone: `cargo bench -p canopy --bench canopy -- fairness`.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use uuid::Uuid;

use super::pipeline::{ADMIN_TOKEN, Receiver, Server, ms, percentiles, verdict};

/// Shop B's offered rate and how long it is measured per case.
const B_RATE: u64 = 20;
const B_SECONDS: u64 = 10;
const A_BACKLOG: usize = 2_000;
const A_THROTTLED_BACKLOG: usize = 20_000;
const TARGET_P99: Duration = Duration::from_secs(1);

pub fn run() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(bench());
}

async fn bench() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let server = Server::start(&scratch.path().join("fairness"), &[]).await;
    let (a_receiver, b_receiver) = (Receiver::start().await, Receiver::start().await);
    for shop in ["a.example", "b.example"] {
        admin(
            &server,
            "POST",
            "/v1/shops",
            json!({"id": shop, "name": shop}),
        )
        .await;
    }
    let hook = |url: &str| json!({"name": "hook", "plugin": "webhook", "events": ["*"], "settings": {"url": url}});
    let a = admin(
        &server,
        "POST",
        "/v1/shops/a.example/integrations",
        hook(&a_receiver.url),
    )
    .await;
    let a = a["id"].as_str().expect("an id").to_owned();
    admin(
        &server,
        "POST",
        "/v1/shops/b.example/integrations",
        hook(&b_receiver.url),
    )
    .await;

    println!(
        "\nfairness: shop B's events at {B_RATE}/s for {B_SECONDS} s, ingest → delivered, while \
         shop A has a backlog (the canopy binary, default settings: {} workers, 10 in flight per \
         integration)",
        canopy::config::DEFAULT_WORKERS
    );
    backlog(&server, A_BACKLOG).await;
    let (healthy50, healthy99) = neighbour(&server, &b_receiver).await;
    println!(
        "  A healthy, {A_BACKLOG} queued                  B p50 {:>8}  p99 {:>8}",
        ms(healthy50),
        ms(healthy99)
    );

    a_receiver.hang(true);
    backlog(&server, A_BACKLOG).await;
    let (hanging50, hanging99) = neighbour(&server, &b_receiver).await;
    println!(
        "  A hanging past the timeout, {A_BACKLOG} queued B p50 {:>8}  p99 {:>8}  ({:.1}× healthy)  target p99 < {}  {}",
        ms(hanging50),
        ms(hanging99),
        hanging99.as_secs_f64() / healthy99.as_secs_f64(),
        ms(TARGET_P99),
        verdict(hanging99 < TARGET_P99)
    );

    a_receiver.hang(false);
    admin(
        &server,
        "PATCH",
        &format!("/v1/shops/a.example/integrations/{a}"),
        json!({"rate_limit": {"requests": 1, "per_seconds": 2}}),
    )
    .await;
    backlog(&server, A_THROTTLED_BACKLOG).await;
    let (throttled50, throttled99) = neighbour(&server, &b_receiver).await;
    println!(
        "  A at 1 request / 2 s, {A_THROTTLED_BACKLOG} queued   B p50 {:>8}  p99 {:>8}  ({:.1}× healthy)  target p99 < {}  {}",
        ms(throttled50),
        ms(throttled99),
        throttled99.as_secs_f64() / healthy99.as_secs_f64(),
        ms(TARGET_P99),
        verdict(throttled99 < TARGET_P99)
    );
    server.stop();
}

/// An admin call that must succeed; its answer.
async fn admin(server: &Server, method: &str, path: &str, body: Value) -> Value {
    let response = server
        .client
        .request(
            method.parse().expect("a method"),
            format!("{}{path}", server.url),
        )
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .expect("the server answers");
    let status = response.status();
    let answer: Value = response.json().await.unwrap_or_default();
    assert!(status.is_success(), "{method} {path}: {status} {answer}");
    answer
}

fn event(shop: &str, id: Uuid) -> Value {
    let mut event: Value =
        serde_json::from_str(canopy_test_support::SAMPLE_EVENT).expect("sample event");
    event["id"] = json!(id.to_string());
    event["shop"] = json!(shop);
    event
}

/// Queues `count` events for shop A.
async fn backlog(server: &Server, count: usize) {
    let batches: Vec<String> = (0..count / 1_000)
        .map(|_| {
            let batch: Vec<Value> = (0..1_000)
                .map(|_| event("a.example", Uuid::now_v7()))
                .collect();
            json!({ "events": batch }).to_string()
        })
        .collect();
    server.ingest_all(batches, 2).await;
}

/// Offers shop B's events at [`B_RATE`] and returns their ingest → delivered p50 and p99.
async fn neighbour(server: &Server, receiver: &Receiver) -> (Duration, Duration) {
    receiver.reset();
    let intake = server.intake();
    let interval = Duration::from_secs(1) / B_RATE as u32;
    let start = Instant::now() + Duration::from_millis(100);
    let mut sent = Vec::new();
    for i in 0..(B_RATE * B_SECONDS) as usize {
        let due = start + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let id = Uuid::now_v7();
        tokio::spawn(intake.send(event("b.example", id).to_string()));
        sent.push((id, due));
    }
    receiver.wait_for(sent.len()).await;
    let arrivals = receiver.arrivals();
    let mut latencies: Vec<Duration> = sent.iter().map(|(id, due)| arrivals[id] - *due).collect();
    percentiles(&mut latencies)
}
