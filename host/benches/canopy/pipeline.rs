//! The server end to end, as a user runs it: the release `canopy` binary in its own process
//! (the embedded store in a temp directory, on redb, a new directory's engine; the bundled
//! plugins, default settings but for loopback receivers being allowed), a webhook integration
//! with signing on (hex HMAC and Standard Webhooks headers), and a fast receiver on loopback
//! that records when each event first arrives.
//!
//! 1. **Baseline**: a bare forwarder — one reqwest client POSTing the same prebuilt event
//!    bodies to the same receiver with the server's concurrency (its default workers).
//! 2. **Throughput**: 20,000 events ingested in batches of 100; events acknowledged per
//!    second, and deliveries per second from the first ingest to the last arrival; the CPU
//!    time (user + system) of the server per delivery, and of the benchmark process per
//!    delivery and per forwarded request, so the gap to the forwarder shows as a cost. Each
//!    round runs 1 and 2 on sled too (`--store sled`, the engine of earlier releases' data
//!    directories), with its own baseline, and prints redb against sled.
//!    `CANOPY_BENCH_ROUNDS=N` runs 1 and 2 N times (a fresh server each) and prints the median
//!    with the range.
//! 3. **Latency**: single-event requests offered at 1,000 per second for 10 s, open loop (a
//!    late request is measured from when it should have been sent); acknowledgement and
//!    ingest → delivered percentiles; then the same on a fresh server on sled.
//! 4. **Recovery**: 100,000 events ingested while the receiver hangs, the server SIGKILLed
//!    with all of them pending, the receiver back, the server restarted: time to `/healthz`,
//!    to the first delivery and to the last, and the restarted server's peak RSS (`VmHWM`)
//!    from start-up, holding all of them, to the last delivery. The first server's peak
//!    while the 100,000 were ingested is printed too, and its CPU per event ingested (the
//!    receiver hangs, so that is ingest's cost).
//!
//! Run alone: `cargo bench -p canopy --bench canopy -- pipeline`.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinSet;
use uuid::Uuid;

pub(crate) const ADMIN_TOKEN: &str = "bench-admin-token-0123456789";
const INGEST_TOKEN: &str = "bench-ingest-token-0123456789";
/// base64 of 32 bytes 0x2a.
pub(crate) const MASTER_KEY: &str = "KioqKioqKioqKioqKioqKioqKioqKioqKioqKioqKio=";
/// The server's default `--workers`; the baseline uses the same concurrency.
const WORKERS: usize = canopy::config::DEFAULT_WORKERS;
/// The engine of a new data directory, which every phase runs on.
const ENGINE: &str = "redb";
/// The other engine (data directories of earlier releases): throughput and latency again.
const OTHER: &str = "sled";

const THROUGHPUT_EVENTS: usize = 20_000;
const INGEST_BATCH: usize = 100;
const INGEST_CLIENTS: usize = 4;
const OFFERED_RATE: u64 = 1_000;
const LATENCY_EVENTS: usize = 10_000;
const PENDING: usize = 100_000;
const PENDING_BATCH: usize = 1_000;

const TARGET_RATIO: f64 = 0.25;
const TARGET_ACK_P99: Duration = Duration::from_millis(5);
const TARGET_RECOVERY: Duration = Duration::from_secs(5);
const TARGET_RSS_MB: f64 = 300.0;

/// How long any phase may take before the benchmark gives up.
const PATIENCE: Duration = Duration::from_secs(600);

pub fn run() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(bench());
}

/// The seed example event under a given id: what every benchmark client sends.
pub(crate) fn sample_events() -> impl Fn(Uuid) -> Value + Clone {
    let template: Value =
        serde_json::from_str(canopy_test_support::SAMPLE_EVENT).expect("sample event");
    move |id: Uuid| {
        let mut event = template.clone();
        event["id"] = json!(id.to_string());
        event
    }
}

async fn bench() {
    let receiver = Receiver::start().await;
    let client = reqwest::Client::new();
    let event = sample_events();
    let scratch = tempfile::tempdir().expect("temp dir");

    println!(
        "\nend to end: the canopy binary ({ENGINE}, bundled plugins, {WORKERS} workers), webhook \
         integration with HMAC and Standard Webhooks signing, loopback receiver"
    );

    // 1 and 2, in rounds: the baseline, then the server on a fresh data directory.
    let rounds: usize = std::env::var("CANOPY_BENCH_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(1);
    let mut runs = Vec::with_capacity(rounds);
    let mut other_runs = Vec::with_capacity(rounds);
    let mut server = None;
    for round in 0..rounds {
        if let Some(previous) = server.take() {
            Server::stop(previous);
        }
        // The same round on the other engine of the embedded store.
        let (other_run, on_other) = throughput(
            &receiver,
            &client,
            &event,
            &scratch.path().join(format!("throughput-{OTHER}-{round}")),
            &[("CANOPY_STORE", OTHER)],
        )
        .await;
        Server::stop(on_other);
        let (run, started) = throughput(
            &receiver,
            &client,
            &event,
            &scratch.path().join(format!("throughput-{round}")),
            &[("CANOPY_STORE", ENGINE)],
        )
        .await;
        if rounds > 1 {
            println!(
                "  round {}: forwarder {:.0}/s, delivered {:.0}/s, {:.3}×, server {:.0} µs CPU per delivery ({OTHER}: {:.0}/s, {:.3}×, {:.0} µs)",
                round + 1,
                run.baseline,
                run.delivered,
                run.ratio(),
                run.server_us,
                other_run.delivered,
                other_run.ratio(),
                other_run.server_us
            );
        }
        runs.push(run);
        other_runs.push(other_run);
        server = Some(started);
    }
    let server = server.expect("at least one round");
    let median = |f: fn(&Throughput) -> f64| spread(runs.iter().map(f).collect());
    let (baseline, delivered, ratio) = (
        median(|r| r.baseline),
        median(|r| r.delivered),
        median(Throughput::ratio),
    );
    let (server_us, client_us, forwarder_us) = (
        median(|r| r.server_us),
        median(|r| r.client_us),
        median(|r| r.forwarder_us),
    );
    println!(
        "throughput, {THROUGHPUT_EVENTS} events{}:",
        if rounds > 1 {
            format!(", median (min–max) of {rounds} rounds")
        } else {
            String::new()
        }
    );
    println!(
        "  bare forwarder baseline  {} requests/s   ({WORKERS} concurrent POSTs of the same bodies)",
        baseline.show(0)
    );
    println!(
        "  ingested                 {} events/s     (batches of {INGEST_BATCH}, {INGEST_CLIENTS} clients)",
        median(|r| r.ingested).show(0)
    );
    println!(
        "  delivered                {} deliveries/s {}× baseline   target ≥ {TARGET_RATIO}×  {}",
        delivered.show(0),
        ratio.show(3),
        verdict(ratio.median >= TARGET_RATIO)
    );
    println!(
        "  CPU per delivery: server {} µs; benchmark's ingest client and receiver {} µs",
        server_us.show(0),
        client_us.show(0)
    );
    println!(
        "  CPU per forwarded request: forwarder and receiver {} µs   (server ÷ forwarder: {:.1}×)",
        forwarder_us.show(0),
        server_us.median / forwarder_us.median
    );
    let on_other = |f: fn(&Throughput) -> f64| spread(other_runs.iter().map(f).collect());
    let (other_ratio, other_us) = (on_other(Throughput::ratio), on_other(|r| r.server_us));
    println!(
        "  on {OTHER} (--store {OTHER}): delivered {} deliveries/s {}× baseline, server {} µs CPU per delivery",
        on_other(|r| r.delivered).show(0),
        other_ratio.show(3),
        other_us.show(0)
    );
    println!(
        "  {ENGINE} against {OTHER}: {:.2}× the deliveries/s (as ratios to each round's baseline), {:.2}× the server CPU per delivery",
        ratio.median / other_ratio.median,
        server_us.median / other_us.median
    );

    // 3. Latency at a fixed offered rate.
    let latency_events = || -> Vec<(Uuid, String)> {
        (0..LATENCY_EVENTS)
            .map(|_| {
                let id = Uuid::now_v7();
                (id, event(id).to_string())
            })
            .collect()
    };
    let (mut acks, mut delivered) = offered(
        &receiver,
        &[server.intake()],
        latency_events(),
        OFFERED_RATE,
    )
    .await;
    let (ack50, ack99) = percentiles(&mut acks);
    let (del50, del99) = percentiles(&mut delivered);
    println!("latency, {LATENCY_EVENTS} single-event requests offered at {OFFERED_RATE}/s:");
    println!(
        "  ingest acknowledged      p50 {:>7}  p99 {:>7}   target p99 ≤ {}  {}",
        ms(ack50),
        ms(ack99),
        ms(TARGET_ACK_P99),
        verdict(ack99 <= TARGET_ACK_P99)
    );
    println!(
        "  ingest → delivered       p50 {:>7}  p99 {:>7}",
        ms(del50),
        ms(del99)
    );
    server.stop();
    // The same on the other engine, on a fresh server.
    let on_other = Server::start(
        &scratch.path().join(format!("latency-{OTHER}")),
        &[("CANOPY_STORE", OTHER)],
    )
    .await;
    on_other.webhook(&receiver.url).await;
    let (mut acks, mut delivered) = offered(
        &receiver,
        &[on_other.intake()],
        latency_events(),
        OFFERED_RATE,
    )
    .await;
    let ((rack50, rack99), (rdel50, rdel99)) =
        (percentiles(&mut acks), percentiles(&mut delivered));
    println!(
        "  on {OTHER}: acknowledged    p50 {:>7}  p99 {:>7}   → delivered p50 {:>7}  p99 {:>7}",
        ms(rack50),
        ms(rack99),
        ms(rdel50),
        ms(rdel99)
    );
    on_other.stop();

    // 4. Recovery with 100,000 pending deliveries.
    let data = scratch.path().join("recovery");
    // A long request timeout keeps the workers' first attempts hanging (not failed and
    // rescheduled) until the kill; after the restart the defaults apply.
    let server = Server::start(&data, &[("CANOPY_REQUEST_TIMEOUT", "1h")]).await;
    server.webhook(&receiver.url).await;
    receiver.hang(true);
    let batches = batches(&event, PENDING, PENDING_BATCH);
    let (started, cpu) = (Instant::now(), cpu_time(&server.child.id().to_string()));
    server.ingest_all(batches, 2).await;
    let fill_time = started.elapsed();
    let fill_cpu = cpu_time(&server.child.id().to_string()) - cpu;
    let filling = server.memory();
    server.kill();
    receiver.hang(false);
    receiver.reset();

    let started = Instant::now();
    let server = Server::start(&data, &[]).await;
    let up = started.elapsed();
    let first = receiver.wait_for(1).await - started;
    let last = receiver.wait_for(PENDING).await - started;
    let draining = server.memory();
    server.stop();
    let drain_rate = PENDING as f64 / (last - first).as_secs_f64();
    println!("recovery, {PENDING} pending deliveries (server SIGKILLed while its receiver hung):");
    println!(
        "  filled in                {:>9}      ({:.0} events/s, batches of {PENDING_BATCH})",
        secs(fill_time),
        PENDING as f64 / fill_time.as_secs_f64()
    );
    println!(
        "  server CPU per event ingested {:>4.0} µs",
        fill_cpu.as_secs_f64() * 1e6 / PENDING as f64
    );
    println!("  restart → /healthz       {:>9}", secs(up));
    println!(
        "  restart → first delivery {:>9}      target ≤ {}  {}",
        secs(first),
        secs(TARGET_RECOVERY),
        verdict(first <= TARGET_RECOVERY)
    );
    println!(
        "  restart → all delivered  {:>9}      ({drain_rate:.0} deliveries/s)",
        secs(last)
    );
    println!(
        "  peak RSS, restarted server holding and draining them {:>4.0} MB   target ≤ {TARGET_RSS_MB:.0} MB  {}",
        draining.peak_mb,
        verdict(draining.peak_mb <= TARGET_RSS_MB)
    );
    println!(
        "  peak RSS, first server while they were ingested      {:>4.0} MB   (bursts of {PENDING_BATCH}-event batches)",
        filling.peak_mb
    );
}

/// `events` new events (fresh ids) as ingest request bodies of `size` events each.
pub(crate) fn batches(event: &impl Fn(Uuid) -> Value, events: usize, size: usize) -> Vec<String> {
    (0..events / size)
        .map(|_| {
            let batch: Vec<Value> = (0..size).map(|_| event(Uuid::now_v7())).collect();
            json!({ "events": batch }).to_string()
        })
        .collect()
}

/// One round of the throughput phase: the figures, and the server (still running, for the
/// latency phase).
struct Throughput {
    baseline: f64,
    ingested: f64,
    delivered: f64,
    /// The server's CPU time (user + system, all threads) per delivery.
    server_us: f64,
    /// The benchmark process's CPU time per delivery (ingest client and receiver).
    client_us: f64,
    /// The benchmark process's CPU time per request while the bare forwarder ran (its client
    /// and the receiver).
    forwarder_us: f64,
}

impl Throughput {
    fn ratio(&self) -> f64 {
        self.delivered / self.baseline
    }
}

/// The bare forwarder, then the server with the same events: deliveries per second and the
/// CPU each costs.
async fn throughput(
    receiver: &Receiver,
    client: &reqwest::Client,
    event: &(impl Fn(Uuid) -> Value + Clone),
    data: &Path,
    env: &[(&str, &str)],
) -> (Throughput, Server) {
    let bodies: Vec<String> = (0..THROUGHPUT_EVENTS)
        .map(|_| event(Uuid::now_v7()).to_string())
        .collect();
    receiver.reset();
    let (started, cpu) = (Instant::now(), cpu_time("self"));
    forward(client, &receiver.url, bodies, WORKERS).await;
    let (baseline_time, forwarder_cpu) = (started.elapsed(), cpu_time("self") - cpu);
    assert_eq!(
        receiver.count(),
        THROUGHPUT_EVENTS,
        "the baseline lost requests"
    );

    let server = Server::start(data, env).await;
    server.webhook(&receiver.url).await;
    let batches = batches(event, THROUGHPUT_EVENTS, INGEST_BATCH);
    receiver.reset();
    let pid = server.child.id().to_string();
    let (server_cpu, client_cpu) = (cpu_time(&pid), cpu_time("self"));
    let started = Instant::now();
    server.ingest_all(batches, INGEST_CLIENTS).await;
    let ingest_time = started.elapsed();
    let last = receiver.wait_for(THROUGHPUT_EVENTS).await;
    let (server_cpu, client_cpu) = (cpu_time(&pid) - server_cpu, cpu_time("self") - client_cpu);
    let per = |cpu: Duration| cpu.as_secs_f64() * 1e6 / THROUGHPUT_EVENTS as f64;
    let run = Throughput {
        baseline: THROUGHPUT_EVENTS as f64 / baseline_time.as_secs_f64(),
        ingested: THROUGHPUT_EVENTS as f64 / ingest_time.as_secs_f64(),
        delivered: THROUGHPUT_EVENTS as f64 / (last - started).as_secs_f64(),
        server_us: per(server_cpu),
        client_us: per(client_cpu),
        forwarder_us: per(forwarder_cpu),
    };
    (run, server)
}

/// CPU time (user + system, every thread) a process has used so far: `self` or a pid.
pub(crate) fn cpu_time(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/<pid>/stat");
    // The fields after the command (which may hold spaces) in parentheses: utime and stime
    // are the 14th and 15th of the line, in clock ticks.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("stat") + 2..]
        .split_whitespace()
        .collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // SAFETY: sysconf reads a constant of the system.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros(ticks * 1_000_000 / per_second)
}

/// A figure over rounds: median, least and most.
#[derive(Clone, Copy)]
pub(crate) struct Spread {
    pub(crate) median: f64,
    min: f64,
    max: f64,
}

impl Spread {
    /// The median with its range when there was more than one round.
    pub(crate) fn show(&self, decimals: usize) -> String {
        if self.min == self.max {
            format!("{:>9.decimals$}", self.median)
        } else {
            format!(
                "{:>9.decimals$} ({:.decimals$}–{:.decimals$})",
                self.median, self.min, self.max
            )
        }
    }
}

pub(crate) fn spread(mut values: Vec<f64>) -> Spread {
    values.sort_by(f64::total_cmp);
    Spread {
        median: values[values.len() / 2],
        min: values[0],
        max: values[values.len() - 1],
    }
}

/// Open loop: single-event ingest requests (`events`: id and body) sent at `rate` per second,
/// request `i` through `intakes[i % len]`, each timed from when it was due, so a stalled server
/// cannot hide its backlog. The acknowledgement and ingest → first arrival of each.
pub(crate) async fn offered(
    receiver: &Receiver,
    intakes: &[Intake],
    events: Vec<(Uuid, String)>,
    rate: u64,
) -> (Vec<Duration>, Vec<Duration>) {
    receiver.reset();
    let interval = Duration::from_secs(1) / rate as u32;
    let start = Instant::now() + Duration::from_millis(100);
    let due = |i: usize| start + interval * i as u32;
    let mut ids = Vec::with_capacity(events.len());
    let mut requests = JoinSet::new();
    for (i, (id, body)) in events.into_iter().enumerate() {
        ids.push(id);
        tokio::time::sleep_until(due(i).into()).await;
        let send = intakes[i % intakes.len()].send(body);
        let due = due(i);
        requests.spawn(async move {
            send.await;
            Instant::now() - due
        });
    }
    let acks: Vec<Duration> = requests.join_all().await;
    receiver.wait_for(ids.len()).await;
    let arrivals = receiver.arrivals();
    let delivered = ids
        .iter()
        .enumerate()
        .map(|(i, id)| arrivals[id] - due(i))
        .collect();
    (acks, delivered)
}

/// The baseline: `concurrency` tasks POST the bodies in turn over one pooled client.
pub(crate) async fn forward(
    client: &reqwest::Client,
    url: &str,
    bodies: Vec<String>,
    concurrency: usize,
) {
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for _ in 0..concurrency {
        let (client, url, bodies, next) =
            (client.clone(), url.to_owned(), bodies.clone(), next.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else { break };
                let response = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .expect("the receiver answers");
                assert_eq!(response.status(), StatusCode::OK);
            }
        });
    }
    tasks.join_all().await;
}

/// The loopback receiver: answers 200 and records each event's first arrival, or holds every
/// request while told to hang.
pub(crate) struct Receiver {
    pub(crate) url: String,
    state: Arc<ReceiverState>,
}

struct ReceiverState {
    hang: watch::Sender<bool>,
    arrivals: Mutex<HashMap<Uuid, Instant>>,
}

#[derive(serde::Deserialize)]
struct EventId {
    id: Uuid,
}

async fn receive(State(state): State<Arc<ReceiverState>>, body: Bytes) -> StatusCode {
    let mut hang = state.hang.subscribe();
    if *hang.borrow_and_update() {
        let _ = hang.wait_for(|hang| !hang).await;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let Ok(event) = serde_json::from_slice::<EventId>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let now = Instant::now();
    lock(&state.arrivals).entry(event.id).or_insert(now);
    StatusCode::OK
}

impl Receiver {
    pub(crate) async fn start() -> Receiver {
        let state = Arc::new(ReceiverState {
            hang: watch::Sender::new(false),
            arrivals: Mutex::default(),
        });
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("receiver port");
        let url = format!("http://{}/hook", listener.local_addr().expect("address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { url, state }
    }

    pub(crate) fn reset(&self) {
        lock(&self.state.arrivals).clear();
    }

    pub(crate) fn hang(&self, hang: bool) {
        self.state.hang.send_replace(hang);
    }

    fn count(&self) -> usize {
        lock(&self.state.arrivals).len()
    }

    pub(crate) fn arrivals(&self) -> HashMap<Uuid, Instant> {
        lock(&self.state.arrivals).clone()
    }

    /// Waits until `n` distinct events have arrived; returns when the last of them did.
    pub(crate) async fn wait_for(&self, n: usize) -> Instant {
        let deadline = Instant::now() + PATIENCE;
        loop {
            {
                let arrivals = lock(&self.state.arrivals);
                if arrivals.len() >= n {
                    let mut times: Vec<Instant> = arrivals.values().copied().collect();
                    times.sort();
                    return times[n - 1];
                }
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {n} events arrived",
                self.count()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// The release `canopy serve` in its own process, on a data directory that outlives it.
pub(crate) struct Server {
    child: Child,
    pub(crate) url: String,
    pub(crate) client: reqwest::Client,
}

struct Memory {
    peak_mb: f64,
}

impl Server {
    pub(crate) async fn start(data: &Path, env: &[(&str, &str)]) -> Server {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        std::fs::create_dir_all(data).expect("data directory");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data.with_extension("log"))
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_canopy"))
            .arg("serve")
            .env("CANOPY_LISTEN", format!("127.0.0.1:{port}"))
            .env("CANOPY_DATA_DIR", data)
            .env("CANOPY_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("CANOPY_INGEST_TOKEN", INGEST_TOKEN)
            .env("CANOPY_MASTER_KEY", MASTER_KEY)
            .env("CANOPY_ALLOW_PRIVATE_NETWORKS", "true")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the canopy binary starts");
        let server = Server {
            child,
            url: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
        };
        let deadline = Instant::now() + PATIENCE;
        loop {
            let health = server.client.get(format!("{}/healthz", server.url)).send();
            if let Ok(r) = health.await
                && r.status().is_success()
            {
                return server;
            }
            assert!(Instant::now() < deadline, "the server did not come up");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A webhook integration for every event type, signed with a generated secret, allowed as
    /// many attempts in flight as the server has workers (one integration is the whole load
    /// here; its default cap of 10 is for sharing workers fairly).
    pub(crate) async fn webhook(&self, url: &str) {
        let response = self
            .client
            .post(format!("{}/v1/integrations", self.url))
            .bearer_auth(ADMIN_TOKEN)
            .json(
                &json!({"name": "bench", "plugin": "webhook", "events": ["*"],
                "settings": {"url": url, "auth": "hmac"}, "max_in_flight": WORKERS}),
            )
            .send()
            .await
            .expect("integration created");
        assert_eq!(response.status(), StatusCode::CREATED);
    }

    pub(crate) fn intake(&self) -> Intake {
        Intake {
            client: self.client.clone(),
            url: format!("{}/v1/events", self.url),
        }
    }

    /// Ingests every body, `clients` requests at a time.
    pub(crate) async fn ingest_all(&self, bodies: Vec<String>, clients: usize) {
        let bodies = Arc::new(Mutex::new(bodies));
        let mut tasks = JoinSet::new();
        for _ in 0..clients {
            let bodies = bodies.clone();
            let intake = self.intake();
            tasks.spawn(async move {
                loop {
                    let Some(body) = lock(&bodies).pop() else {
                        break;
                    };
                    intake.send(body).await;
                }
            });
        }
        tasks.join_all().await;
    }

    /// The process's peak resident set so far (`VmHWM`).
    fn memory(&self) -> Memory {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("/proc/<pid>/status");
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM");
        Memory {
            peak_mb: kib / 1024.0,
        }
    }

    fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("the server ends");
    }

    /// A graceful stop (SIGTERM).
    pub(crate) fn stop(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        let exit = self.child.wait().expect("the server ends");
        assert!(exit.success(), "the server exited with {exit}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends ingest requests.
#[derive(Clone)]
pub(crate) struct Intake {
    client: reqwest::Client,
    url: String,
}

impl Intake {
    /// Sends one ingest request; panics unless it is accepted.
    pub(crate) fn send(&self, body: String) -> impl Future<Output = ()> + Send + 'static {
        let request = self
            .client
            .post(&self.url)
            .bearer_auth(INGEST_TOKEN)
            .header("content-type", "application/json")
            .body(body);
        async move { accepted(request.send().await).await }
    }
}

/// Panics unless ingest answered 202.
async fn accepted(response: reqwest::Result<reqwest::Response>) {
    let response = response.expect("ingest answers");
    let status = response.status();
    if status != StatusCode::ACCEPTED {
        let body = response.text().await.unwrap_or_default();
        panic!("ingest answered {status}: {body}");
    }
}

/// p50 and p99 (nearest rank).
pub(crate) fn percentiles(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.50), at(0.99))
}

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

pub(crate) fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}
