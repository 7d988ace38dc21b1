//! A Canopy server for tests: `canopy::run` on a loopback port over the embedded store in a
//! temp directory (on the engine [`embedded_engine`] names, or a database of its own,
//! [`on_postgres`]), with the real bundled plugins, a
//! compressed retry schedule, and a client that speaks its API; and throwaway PostgreSQL
//! databases ([`pg`]).

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use canopy::Config;
use canopy::clock::Clock;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;
use wiremock::MockServer;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
pub const INGEST_TOKEN: &str = "test-ingest-token-0123456789";
/// base64 of 32 bytes 0x2a.
pub const MASTER_KEY: &str = "KioqKioqKioqKioqKioqKioqKioqKioqKioqKioqKio=";
/// The longest a test waits for something the server does by itself.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub struct Canopy {
    pub url: String,
    pub client: reqwest::Client,
    /// Keeps the data directory alive (for servers started with [`Canopy::start`]).
    _dir: Option<TempDir>,
    /// The server's own database, when the suite runs on PostgreSQL ([`on_postgres`]).
    _database: Option<pg::Database>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), canopy::server::ServeError>>>,
}

/// Test settings: a compressed schedule without jitter, loopback receivers allowed.
pub fn test_config(dir: &Path) -> Config {
    let mut config = Config::loopback(dir, ADMIN_TOKEN, INGEST_TOKEN, MASTER_KEY);
    config.delivery.retry_schedule = "50ms,100ms".into();
    config.delivery.retry_jitter = 0.0;
    config.delivery.allow_private_networks = true;
    config.delivery.request_timeout = Duration::from_secs(5);
    config.delivery.shutdown_grace = Duration::from_secs(2);
    config.plugin_limits.plugin_instances = 32;
    config
}

/// The variable that chooses the store of the end-to-end tests' servers:
/// - `postgres` (with [`pg::SERVER_VAR`] naming the server) gives every server the tests
///   start with [`Canopy::start`] or [`Canopy::start_in`] a database of its own instead of
///   the embedded store;
/// - `sled` or `redb` puts every embedded store on that engine;
/// - unset, the embedded store is on the engine of a new data directory (redb).
///
/// `scripts/test` runs end-to-end modules again on PostgreSQL and on sled.
pub const STORE_VAR: &str = "CANOPY_TEST_STORE";

/// Whether this run's servers keep their data in PostgreSQL (see [`STORE_VAR`]).
pub fn on_postgres() -> bool {
    store_var().as_deref() == Some("postgres")
}

/// The embedded engine this run asks for (see [`STORE_VAR`]): `--store sled` or `redb`.
pub fn embedded_engine() -> Option<String> {
    store_var().filter(|s| s != "postgres")
}

fn store_var() -> Option<String> {
    match std::env::var(STORE_VAR).as_deref() {
        Ok("") | Err(_) => None,
        Ok(s @ ("postgres" | "sled" | "redb")) => Some(s.to_owned()),
        Ok(other) => panic!("{STORE_VAR} is `{other}`: `postgres`, `sled` or `redb`"),
    }
}

/// The database of a data directory when the suite runs on PostgreSQL: made the first time,
/// the same one when a server is restarted on the directory. Kept until the run ends (the
/// throwaway server goes with it).
pub fn database_of(dir: &Path) -> String {
    static DATABASES: std::sync::Mutex<Vec<(std::path::PathBuf, pg::Database)>> =
        std::sync::Mutex::new(Vec::new());
    let mut databases = DATABASES.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, database)) = databases.iter().find(|(d, _)| d == dir) {
        return database.url.clone();
    }
    let server = pg::server().unwrap_or_else(|| panic!("{STORE_VAR}=postgres needs a server"));
    let database = pg::Database::create(&server);
    let url = database.url.clone();
    databases.push((dir.to_owned(), database));
    url
}

impl Canopy {
    /// A server on a fresh data directory (and a fresh database when the suite runs on
    /// PostgreSQL); `tweak` adjusts the test settings.
    pub async fn start(tweak: impl FnOnce(&mut Config)) -> Canopy {
        let dir = tempfile::tempdir().unwrap();
        let database = on_postgres().then(|| {
            let server =
                pg::server().unwrap_or_else(|| panic!("{STORE_VAR}=postgres needs a server"));
            pg::Database::create(&server)
        });
        let url = database.as_ref().map(|d| d.url.clone());
        let mut canopy = Canopy::launch(dir.path(), url, Clock::system(), tweak).await;
        canopy._dir = Some(dir);
        canopy._database = database;
        canopy
    }

    /// [`Canopy::start`] on `clock` (a manual one the test moves).
    pub async fn start_on_clock(clock: Clock, tweak: impl FnOnce(&mut Config)) -> Canopy {
        let dir = tempfile::tempdir().unwrap();
        let url = on_postgres().then(|| database_of(dir.path()));
        let mut canopy = Canopy::launch(dir.path(), url, clock, tweak).await;
        canopy._dir = Some(dir);
        canopy
    }

    /// A server on `dir` (which outlives it), restarted on the same data when `dir` was
    /// used before — in PostgreSQL, the directory's database.
    pub async fn start_in(dir: &Path, tweak: impl FnOnce(&mut Config)) -> Canopy {
        let url = on_postgres().then(|| database_of(dir));
        Canopy::launch(dir, url, Clock::system(), tweak).await
    }

    /// A server on the embedded store in `dir`, whatever the run's store (tests of the data
    /// directory itself).
    pub async fn start_embedded(dir: &Path, tweak: impl FnOnce(&mut Config)) -> Canopy {
        Canopy::launch(dir, None, Clock::system(), tweak).await
    }

    /// A server on `dir` and `clock`, its store in PostgreSQL at `database` when given.
    pub async fn launch(
        dir: &Path,
        database: Option<String>,
        clock: Clock,
        tweak: impl FnOnce(&mut Config),
    ) -> Canopy {
        let mut config = test_config(dir);
        config.store = database
            .or_else(embedded_engine)
            .map(canopy::crypto::secret::SecretValue::new);
        tweak(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(canopy::server::run_on(
            clock,
            Arc::new(config),
            listener,
            async {
                let _ = stopped.await;
            },
        ));
        let canopy = Canopy {
            url,
            client: reqwest::Client::new(),
            _dir: None,
            _database: None,
            stop: Some(stop),
            task: Some(task),
        };
        canopy.wait_until_up().await;
        canopy
    }

    async fn wait_until_up(&self) {
        // Starting compiles the bundled plugins: on 2 busy cores (the cluster test runs three
        // servers at once) that can take longer than other waits.
        let deadline = Instant::now() + 3 * PATIENCE;
        loop {
            if let Ok(r) = self
                .client
                .get(format!("{}/healthz", self.url))
                .send()
                .await
                && r.status().is_success()
            {
                return;
            }
            assert!(Instant::now() < deadline, "the server did not come up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the server and waits for it to finish.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().expect("clean shutdown");
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        call(&self.client, &self.url, method, path, token, body).await
    }

    pub async fn admin(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call(method, path, ADMIN_TOKEN, body).await
    }

    pub async fn ingest(&self, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, "/v1/events", INGEST_TOKEN, Some(body))
            .await
    }

    /// Creates an integration and returns its id.
    pub async fn integration(&self, body: Value) -> String {
        let (status, created) = self
            .admin(Method::POST, "/v1/integrations", Some(body))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        created["id"].as_str().unwrap().to_owned()
    }

    pub async fn delivery(&self, id: &str) -> Value {
        self.delivery_in("default", id).await
    }

    /// A delivery of a shop, with its attempts.
    pub async fn delivery_in(&self, shop: &str, id: &str) -> Value {
        let (status, delivery) = self
            .admin(
                Method::GET,
                &format!("/v1/shops/{shop}/deliveries/{id}"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{delivery}");
        delivery
    }

    /// Waits until the delivery has `status`, and returns it with its attempts.
    pub async fn delivery_with_status(&self, id: &str, status: &str) -> Value {
        self.delivery_with_status_in("default", id, status).await
    }

    /// Waits until a shop's delivery has `status`, and returns it with its attempts.
    pub async fn delivery_with_status_in(&self, shop: &str, id: &str, status: &str) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let delivery = self.delivery_in(shop, id).await;
            if delivery["status"] == status {
                return delivery;
            }
            assert!(
                Instant::now() < deadline,
                "delivery {id} never became {status}: {delivery:#}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        let response = self
            .client
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .unwrap();
        response.text().await.unwrap()
    }

    /// Waits until the `/metrics` text holds every one of `lines`, and returns it. A worker
    /// counts an outcome once the store has it on disk, which is after the API shows it.
    pub async fn metrics_containing(&self, lines: &[&str]) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let metrics = self.metrics().await;
            let missing: Vec<&&str> = lines.iter().filter(|l| !metrics.contains(**l)).collect();
            if missing.is_empty() {
                return metrics;
            }
            assert!(
                Instant::now() < deadline,
                "{missing:?} missing from:\n{metrics}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Ingests one event and returns the id of its only delivery.
    pub async fn ingest_one(&self, event: Value) -> String {
        let (status, answer) = self.ingest(event).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        let deliveries = answer["deliveries"].as_array().unwrap();
        assert_eq!(deliveries.len(), 1, "{answer}");
        deliveries[0]["id"].as_str().unwrap().to_owned()
    }
}

/// One API call: its status and JSON answer (`null` when empty, a string when not JSON).
pub async fn call(
    client: &reqwest::Client,
    base: &str,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = client
        .request(method, format!("{base}{path}"))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, value)
}

/// The sample event of a type, as JSON.
pub fn sample(kind: &str) -> Value {
    let kind: canopy_events::EventKind = kind.parse().unwrap();
    serde_json::from_str(kind.sample_json()).unwrap()
}

/// The sample event of a type under a fresh id.
pub fn fresh(kind: &str) -> Value {
    let mut event = sample(kind);
    event["id"] = json!(uuid::Uuid::now_v7().to_string());
    event
}

/// Waits until the receiver has seen `count` requests, and returns them.
pub async fn received(server: &wiremock::MockServer, count: usize) -> Vec<wiremock::Request> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let requests = server.received_requests().await.unwrap_or_default();
        if requests.len() >= count {
            return requests;
        }
        assert!(
            Instant::now() < deadline,
            "the receiver saw {} requests, not {count}",
            requests.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn header<'a>(request: &'a wiremock::Request, name: &str) -> &'a str {
    request
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name} header"))
}

impl Canopy {
    /// `PUT /v1/plugins/{id}` with component bytes.
    pub async fn upload(
        &self,
        id: &str,
        bytes: Vec<u8>,
        content_type: &str,
    ) -> (StatusCode, Value) {
        let response = self
            .client
            .put(format!("{}/v1/plugins/{id}", self.url))
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", content_type)
            .body(bytes)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

/// A receiver that accepts every POST with 200.
pub async fn accepting() -> MockServer {
    let server = MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(wiremock::ResponseTemplate::new(200))
        .mount(&server)
        .await;
    server
}

/// A receiver that answers its first `n` POSTs with `first`, and every one after with 200.
pub async fn answering_first(first: wiremock::ResponseTemplate, n: u64) -> MockServer {
    let server = MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(first)
        .up_to_n_times(n)
        .mount(&server)
        .await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(wiremock::ResponseTemplate::new(200))
        .mount(&server)
        .await;
    server
}

/// A webhook integration for every event type, sending to `url`.
pub fn webhook(url: String) -> Value {
    json!({"name": "Hook", "plugin": "webhook", "events": ["*"], "settings": {"url": url}})
}

// ---- the real binary ---------------------------------------------------------------------

/// The real `canopy` binary, serving on a loopback port.
pub struct Server {
    pub child: Child,
    pub url: String,
}

/// A server a test did not stop itself is killed when the test ends.
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        call(
            &reqwest::Client::new(),
            &self.url,
            method,
            path,
            token,
            body,
        )
        .await
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `canopy serve` on `data` and `port`, with the test tokens and settings.
pub fn serve(data: &std::path::Path, port: u16, key: &str, log: Stdio) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_canopy"));
    command
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("CANOPY_DATA_DIR", data)
        .env("CANOPY_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("CANOPY_INGEST_TOKEN", INGEST_TOKEN)
        .env("CANOPY_MASTER_KEY", key)
        .env("CANOPY_ALLOW_PRIVATE_NETWORKS", "true")
        .env("CANOPY_RETRY_SCHEDULE", "100ms,200ms,500ms,1s,2s")
        .env("CANOPY_WORKERS", "8")
        .env("CANOPY_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log);
    if let Some(engine) = embedded_engine() {
        command.env("CANOPY_STORE", engine);
    }
    command
}

/// Starts the binary on `data` and waits until it answers.
pub async fn start(data: &std::path::Path) -> Server {
    start_with(data, MASTER_KEY, Stdio::null(), &[]).await
}

pub async fn start_with(
    data: &std::path::Path,
    key: &str,
    log: Stdio,
    env: &[(&str, &str)],
) -> Server {
    let port = free_port();
    let child = serve(data, port, key, log)
        .envs(env.iter().copied())
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

/// The distinct `webhook-id`s (delivery ids) a receiver saw.
pub async fn seen_ids(receiver: &MockServer) -> HashSet<String> {
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

// ---- PostgreSQL ----------------------------------------------------------------------------

/// Throwaway databases for the store's PostgreSQL tests, on the server `CANOPY_TEST_POSTGRES`
/// names (`scripts/test` starts one with `scripts/pg-cluster`). They are made with `psql`, so
/// the tests need no PostgreSQL client of their own.
pub mod pg {
    use std::io::Write;
    use std::process::Command;
    use std::sync::Once;

    /// The URL of a server where its user may `CREATE DATABASE`, such as
    /// `postgres://canopy@127.0.0.1:54321/postgres`.
    pub const SERVER_VAR: &str = "CANOPY_TEST_POSTGRES";

    /// The server to test against. `None` when `CANOPY_TEST_POSTGRES` is not set, after one
    /// loud line on stderr; under CI (`CI` set) a missing server fails the test instead, so CI
    /// cannot skip the PostgreSQL tests without anyone noticing.
    pub fn server() -> Option<String> {
        if let Some(url) = std::env::var(SERVER_VAR)
            .ok()
            .filter(|u| !u.trim().is_empty())
        {
            return Some(url);
        }
        if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
            panic!("{SERVER_VAR} is not set, and CI does not skip the PostgreSQL store tests");
        }
        static SKIPPED: Once = Once::new();
        SKIPPED.call_once(|| {
            // Straight to the process's stderr: the test harness captures `eprintln!`.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: PostgreSQL store tests ({SERVER_VAR} is not set; scripts/test sets it)"
            );
        });
        None
    }

    /// A database of one test's own. Dropped with it when the test passed; kept for a look
    /// when it failed.
    pub struct Database {
        pub name: String,
        pub url: String,
        server: String,
    }

    impl Database {
        /// Creates a new, empty, uniquely named database on `server`.
        pub fn create(server: &str) -> Database {
            let name = format!("canopy_test_{}", uuid::Uuid::now_v7().simple());
            psql(server, &format!(r#"CREATE DATABASE "{name}""#));
            let mut url = url::Url::parse(server)
                .unwrap_or_else(|e| panic!("{SERVER_VAR} is not a URL ({e})"));
            url.set_path(&format!("/{name}"));
            Database {
                name,
                url: url.into(),
                server: server.to_owned(),
            }
        }
    }

    impl Drop for Database {
        fn drop(&mut self) {
            if std::thread::panicking() {
                let _ = writeln!(
                    std::io::stderr(),
                    "kept the failed test's database: {}",
                    self.url
                );
                return;
            }
            // Best effort; FORCE ends the sessions a store's pool may still hold.
            let _ = run(
                &self.server,
                &format!(r#"DROP DATABASE IF EXISTS "{}" WITH (FORCE)"#, self.name),
            );
        }
    }

    /// Runs SQL on the database at `url`; its rows, unaligned, without headers. Panics when
    /// psql fails.
    pub fn psql(url: &str, sql: &str) -> String {
        run(url, sql).unwrap_or_else(|e| panic!("psql `{sql}`: {e}"))
    }

    fn run(url: &str, sql: &str) -> Result<String, String> {
        let output = Command::new(canopy_test_support::psql())
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                url,
                "-c",
                sql,
            ])
            .env("PGCONNECT_TIMEOUT", "10")
            .output()
            .map_err(|e| format!("psql does not run ({e}); scripts/setup --tests installs it"))?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).trim().to_owned());
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }
}
