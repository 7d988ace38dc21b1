//! Cluster mode: the same end-to-end workload on the embedded store (one node) and on one
//! PostgreSQL database with 1, 2 and 3 `canopy serve` nodes, beside the bare forwarder, in
//! one run on one machine — so the figures say what PostgreSQL costs here and what more nodes
//! add (on 2 cores, the nodes, the database, the clients and the receiver share them all).
//! Then `canopy migrate-store` moves the embedded run's data directory into a new database.
//!
//! For each setup: a webhook integration with signing, [`EVENTS`] events ingested in
//! batches of 100 by 4 clients spread over the nodes (events/s acknowledged, deliveries/s
//! from the first ingest to the last arrival), then single-event requests offered at
//! [`OFFERED_RATE`]/s for [`LATENCY_EVENTS`] events, spread over the nodes (acknowledgement
//! and ingest → delivered percentiles).
//!
//! The database server: `CANOPY_BENCH_POSTGRES` (a URL whose user may create databases;
//! `scripts/bench` starts a throwaway one with `scripts/pg-cluster`). Without it this part says
//! so and is skipped.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use tokio::task::JoinSet;
use uuid::Uuid;

use crate::pipeline::{Receiver, Server, batches, forward, ms, offered, percentiles};

const SERVER_VAR: &str = "CANOPY_BENCH_POSTGRES";
const EVENTS: usize = 10_000;
const BATCH: usize = 100;
const CLIENTS: usize = 4;
const OFFERED_RATE: u64 = 500;
const LATENCY_EVENTS: usize = 2_500;
/// The server's default `--workers`; the baseline uses the same concurrency.
const WORKERS: usize = canopy::config::DEFAULT_WORKERS;

pub fn run() {
    let Some(server) = std::env::var(SERVER_VAR).ok().filter(|s| !s.is_empty()) else {
        println!(
            "\ncluster mode (PostgreSQL): SKIPPED — {SERVER_VAR} is not set (scripts/bench sets it)"
        );
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(bench(&server));
}

async fn bench(server: &str) {
    let receiver = Receiver::start().await;
    let event = super::pipeline::sample_events();
    let scratch = tempfile::tempdir().expect("temp dir");
    println!(
        "\ncluster mode: {EVENTS} events in batches of {BATCH} ({CLIENTS} clients), then \
         {LATENCY_EVENTS} single events offered at {OFFERED_RATE}/s; webhook with signing, \
         {WORKERS} workers per node"
    );

    let bodies: Vec<String> = (0..EVENTS)
        .map(|_| event(Uuid::now_v7()).to_string())
        .collect();
    receiver.reset();
    let started = Instant::now();
    forward(&reqwest::Client::new(), &receiver.url, bodies, WORKERS).await;
    let baseline = EVENTS as f64 / started.elapsed().as_secs_f64();
    println!("  bare forwarder baseline          {baseline:>7.0} requests/s");
    println!(
        "  {:<32} {:>7} {:>13} {:>8}   {:>22}   {:>22}",
        "store, nodes",
        "events/s",
        "deliveries/s",
        "×base",
        "ingest ack p50 / p99",
        "→ delivered p50 / p99"
    );

    let embedded_dir = scratch.path().join("embedded");
    let mut setups: Vec<(String, Option<String>, usize)> = vec![("embedded".into(), None, 1)];
    for nodes in 1..=3 {
        setups.push((
            "PostgreSQL".into(),
            Some(create_database(server, &format!("bench_{nodes}_nodes"))),
            nodes,
        ));
    }
    for (store, url, nodes) in setups {
        let mut servers = Vec::new();
        for n in 0..nodes {
            let data: PathBuf = match &url {
                None => embedded_dir.clone(),
                Some(_) => scratch.path().join(format!("{store}-{nodes}-{n}")),
            };
            let env: Vec<(&str, &str)> = url.iter().map(|u| ("CANOPY_STORE", u.as_str())).collect();
            servers.push(Server::start(&data, &env).await);
        }
        servers[0].webhook(&receiver.url).await;

        let batches = batches(&event, EVENTS, BATCH);
        receiver.reset();
        let started = Instant::now();
        let mut clients = JoinSet::new();
        for (i, chunk) in batches.chunks(batches.len() / CLIENTS).enumerate() {
            let intake = servers[i % nodes].intake();
            let chunk = chunk.to_vec();
            clients.spawn(async move {
                for body in chunk {
                    intake.send(body).await;
                }
            });
        }
        clients.join_all().await;
        let ingested = EVENTS as f64 / started.elapsed().as_secs_f64();
        let last = receiver.wait_for(EVENTS).await;
        let delivered = EVENTS as f64 / (last - started).as_secs_f64();

        let events: Vec<(Uuid, String)> = (0..LATENCY_EVENTS)
            .map(|_| {
                let id = Uuid::now_v7();
                (id, event(id).to_string())
            })
            .collect();
        let intakes: Vec<_> = servers.iter().map(Server::intake).collect();
        let (mut acks, mut latencies) = offered(&receiver, &intakes, events, OFFERED_RATE).await;
        let (ack50, ack99) = percentiles(&mut acks);
        let (del50, del99) = percentiles(&mut latencies);
        println!(
            "  {:<32} {ingested:>7.0} {delivered:>13.0} {:>7.3}×   {:>10} / {:>9}   {:>10} / {:>9}",
            format!("{store}, {nodes} node{}", if nodes == 1 { "" } else { "s" }),
            delivered / baseline,
            ms(ack50),
            ms(ack99),
            ms(del50),
            ms(del99),
        );
        for server in servers {
            server.stop();
        }
    }

    // The embedded run's data directory, moved into PostgreSQL.
    let target = create_database(server, "bench_migrated");
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_canopy"))
        .args(["migrate-store", "--from"])
        .arg(&embedded_dir)
        .args(["--to", &target])
        .output()
        .expect("canopy migrate-store runs");
    let took = started.elapsed();
    assert!(
        output.status.success(),
        "migrate-store failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let events = EVENTS + LATENCY_EVENTS;
    println!(
        "  migrate-store of that embedded data directory ({events} events, their deliveries and \
         attempts): {:.2} s, {:.0} events/s",
        took.as_secs_f64(),
        events as f64 / took.as_secs_f64()
    );
}

/// A new database on the server (dropped first if a previous run left it), by `psql`; its URL.
fn create_database(server: &str, name: &str) -> String {
    for sql in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        let status = Command::new(canopy_test_support::psql())
            .args([
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                server,
                "-c",
                &sql,
            ])
            .env("PGOPTIONS", "--client-min-messages=warning")
            .status()
            .expect("psql runs (scripts/setup --postgres installs it)");
        assert!(status.success(), "psql `{sql}` failed");
    }
    let mut url = url::Url::parse(server).expect("a PostgreSQL URL");
    url.set_path(&format!("/{name}"));
    url.into()
}
