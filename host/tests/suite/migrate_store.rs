//! `canopy migrate-store`: an install on the embedded store, with a second shop and its
//! tokens, sealed secrets, a rolled-back and a removed plugin, a few hundred delivered events
//! and open work, moved by the real binary into PostgreSQL, or from sled to redb and back;
//! then a server on the moved store answers exactly what the old one did and carries on with
//! the open work.

use std::process::Command;

use canopy_test_support::{ECHO_V1, ECHO_V2, component};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::{
    Canopy, INGEST_TOKEN, MASTER_KEY, answering_first, fresh, header, pg, received, webhook,
};

/// Events ingested into the default shop: more than one batch of the move.
const EVENTS: usize = 450;

/// What an admin sees of an install, through the API (but the `open` delivery): compared
/// before and after the move.
async fn view(canopy: &Canopy, acme_admin: &str, open: &str) -> Vec<(String, Value)> {
    let mut paths: Vec<String> = [
        "/v1/shops",
        "/v1/shops/acme.example/tokens",
        "/v1/integrations",
        "/v1/shops/acme.example/integrations",
        "/v1/plugins",
        "/v1/plugins/echo/versions",
        "/v1/shops/acme.example/deliveries?limit=100",
    ]
    .map(str::to_owned)
    .to_vec();
    // The whole default shop's log, page by page, and the details of its first deliveries.
    let mut cursor = String::new();
    loop {
        let page = format!("/v1/deliveries?limit=100{cursor}");
        let (status, listed) = canopy.admin(Method::GET, &page, None).await;
        assert_eq!(status, StatusCode::OK, "{listed}");
        paths.push(page);
        let deliveries = listed["deliveries"].as_array().unwrap();
        if cursor.is_empty() {
            for d in deliveries.iter().take(5) {
                paths.push(format!("/v1/deliveries/{}", d["id"].as_str().unwrap()));
            }
        }
        match listed["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    // A shop's own admin token still opens its shop (first: its last use, recorded at most
    // once a minute, is then the same in the token list before and after the move).
    let (status, own) = canopy
        .call(
            Method::GET,
            "/v1/shops/acme.example/integrations",
            acme_admin,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{own}");
    let mut seen = vec![("acme admin".to_owned(), own)];
    for p in paths {
        let (status, mut answer) = canopy.admin(Method::GET, &p, None).await;
        assert_eq!(status, StatusCode::OK, "{p}: {answer}");
        assert!(
            !answer.to_string().contains("lease_token"),
            "a worker's fence is not shown: {answer}"
        );
        if p.starts_with("/v1/shops/acme.example/deliveries") {
            // The delivery a worker held is open work: the new server sends it at once.
            answer["deliveries"]
                .as_array_mut()
                .unwrap()
                .retain(|d| d["id"] != open);
        }
        seen.push((p, answer));
    }
    seen
}

/// What a successful move of the [`install`] says (it names every record it moved, and
/// `also`); its output.
fn moved_all(moved: &std::process::Output, also: &[&str]) -> String {
    let stdout = String::from_utf8_lossy(&moved.stdout).into_owned();
    assert!(
        moved.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&moved.stderr)
    );
    let counted = [
        "2 shops".to_owned(),
        "3 integrations".to_owned(),
        format!("{} events", EVENTS + 1),
        format!("{} deliveries", EVENTS + 2),
        format!("{} attempts", EVENTS + 1),
        "the counts match".to_owned(),
    ];
    for said in counted
        .iter()
        .map(String::as_str)
        .chain(also.iter().copied())
    {
        assert!(stdout.contains(said), "{said}: {stdout}");
    }
    stdout
}

/// Every view of `after` is the one of `before` (`what`: the move between them).
fn assert_same_views(before: &[(String, Value)], after: &[(String, Value)], what: &str) {
    assert_eq!(before.len(), after.len());
    for ((path, was), (_, is)) in before.iter().zip(after) {
        assert_eq!(was, is, "{path} differs after {what}");
    }
}

/// An admin of acme asks for the failed delivery again; it succeeds (its detail).
async fn retried(canopy: &Canopy, failed: &str, acme_admin: &str) -> Value {
    let (status, _) = canopy
        .call(
            Method::POST,
            &format!("/v1/shops/acme.example/deliveries/{failed}/retry"),
            acme_admin,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    canopy
        .delivery_with_status_in("acme.example", failed, "succeeded")
        .await
}

fn migrate(from: &std::path::Path, to: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_canopy"))
        .args(["migrate-store", "--from"])
        .arg(from)
        .args(["--to", to])
        .env_remove("CANOPY_STORE")
        .output()
        .unwrap()
}

/// An install, stopped: what [`install`] made, and what its admin saw last.
struct Install {
    receiver: MockServer,
    /// Holds a slow receiver's connection open until the test ends.
    _slow: MockServer,
    acme_admin: String,
    /// A delivery that failed for good (410).
    failed: String,
    /// A delivery a worker held when the server stopped.
    released: String,
    before: Vec<(String, Value)>,
}

fn secret(value: &str) -> canopy::crypto::secret::SecretValue {
    canopy::crypto::secret::SecretValue::new(value.to_owned())
}

/// An install on the embedded store in `dir` (on `engine`, else the run's), as the module
/// docs describe it; stopped once everything but the held delivery is done.
async fn install(dir: &std::path::Path, engine: Option<&str>) -> Install {
    let receiver = MockServer::start().await;
    let slow = answering_first(
        ResponseTemplate::new(200).set_delay(std::time::Duration::from_secs(30)),
        1,
    )
    .await;
    Mock::given(method("POST"))
        .and(path("/ok"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    Mock::given(method("POST"))
        .and(path("/gone"))
        .respond_with(ResponseTemplate::new(410))
        .up_to_n_times(1)
        .mount(&receiver)
        .await;
    Mock::given(method("POST"))
        .and(path("/gone"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;

    // ---- an install on the embedded store -------------------------------------------------
    let old = Canopy::start_embedded(dir, |c| {
        if let Some(engine) = engine {
            c.store = Some(secret(engine));
        }
    })
    .await;
    old.shop("acme.example").await;
    let acme_admin = old.token("acme.example", "admin").await;
    let acme_ingest = old.token("acme.example", "ingest").await;
    let mut signed = webhook(format!("{}/ok", receiver.uri()));
    signed["secrets"] = json!({"webhook_secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"});
    old.integration(signed).await;
    let gone = old
        .integration_in("acme.example", webhook(format!("{}/gone", receiver.uri())))
        .await;
    // Held by a worker when the server stops: released, still open.
    let held = old
        .integration_in(
            "acme.example",
            json!({"name": "Slow", "plugin": "webhook", "events": ["tier.changed"],
                   "settings": {"url": format!("{}/slow", slow.uri())}}),
        )
        .await;
    // Plugins: echo at version 1 of 2 (a rollback), omnisend removed.
    for v in [ECHO_V1, ECHO_V2] {
        let (status, answer) = old.upload("echo", component(v), "application/wasm").await;
        assert!(status.is_success(), "{answer}");
    }
    let (status, _) = old
        .admin(Method::POST, "/v1/plugins/echo/rollback", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = old
        .admin(Method::DELETE, "/v1/plugins/omnisend", None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    for chunk in 0..EVENTS / 50 {
        let events: Vec<Value> = (0..50).map(|_| fresh("tier.changed")).collect();
        let (status, answer) = old
            .call(
                Method::POST,
                "/v1/events",
                INGEST_TOKEN,
                Some(json!({ "events": events })),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "chunk {chunk}: {answer}");
    }
    // acme: one event fails for good (410) at one integration, and is held by a worker at
    // another when the server stops.
    let mut event = fresh("tier.changed");
    event["shop"] = json!("acme.example");
    let (status, answer) = old
        .call(Method::POST, "/v1/events", &acme_ingest, Some(event))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let made = answer["deliveries"].as_array().unwrap();
    let id_of = |integration: &str| {
        made.iter()
            .find(|d| d["integration"] == integration)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (failed, released) = (id_of(&gone), id_of(&held));
    received(&receiver, EVENTS + 1).await;
    received(&slow, 1).await;
    let deadline = std::time::Instant::now() + crate::harness::PATIENCE;
    while old
        .admin(
            Method::GET,
            "/v1/deliveries?status=succeeded&limit=500",
            None,
        )
        .await
        .1["deliveries"]
        .as_array()
        .unwrap()
        .len()
        < EVENTS
    {
        assert!(std::time::Instant::now() < deadline, "not all delivered");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    old.delivery_with_status_in("acme.example", &failed, "failed")
        .await;
    let before = view(&old, &acme_admin, &released).await;
    old.stop().await;
    Install {
        receiver,
        _slow: slow,
        acme_admin,
        failed,
        released,
        before,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_install_moves_from_its_data_directory_into_postgresql() {
    let Some(server) = pg::server() else {
        return;
    };
    let database = pg::Database::create(&server);
    let dir = tempfile::tempdir().unwrap();
    let Install {
        receiver,
        _slow,
        acme_admin,
        failed,
        released,
        before,
    } = install(dir.path(), None).await;

    // ---- the move ---------------------------------------------------------------------------
    moved_all(&migrate(dir.path(), &database.url), &["2 tokens"]);
    // Into a database that holds data: refused, nothing changed.
    let again = migrate(dir.path(), &database.url);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already holds data"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    // Into another application's database: refused before anything is created in it.
    let foreign = pg::Database::create(&server);
    pg::psql(&foreign.url, "CREATE TABLE orders (id integer)");
    let refused = migrate(dir.path(), &foreign.url);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("already holds data"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert_eq!(
        pg::psql(
            &foreign.url,
            "SELECT string_agg(tablename, ',') FROM pg_tables WHERE schemaname = 'public'"
        ),
        "orders"
    );
    let missing = migrate(&dir.path().join("nothing"), &database.url);
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("no Canopy data directory"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );

    // ---- a server on the database -----------------------------------------------------------
    let moved_dir = tempfile::tempdir().unwrap();
    let new = Canopy::launch(
        moved_dir.path(),
        Some(database.url.clone()),
        canopy::clock::Clock::system(),
        |_| {},
    )
    .await;
    let after = view(&new, &acme_admin, &released).await;
    assert_same_views(&before, &after, "the move");

    // Open work carries on: the released delivery goes out, the failed one is retried.
    let retried = retried(&new, &failed, &acme_admin).await;
    assert_eq!(retried["attempts"].as_array().unwrap().len(), 2);
    let sent = new
        .delivery_with_status_in("acme.example", &released, "succeeded")
        .await;
    assert_eq!(sent["attempts"].as_array().unwrap().len(), 1);
    // A new event to the signed webhook is signed with the moved secret (it still opens).
    let count = receiver.received_requests().await.unwrap().len();
    new.ingest_one(fresh("tier.changed")).await;
    let requests = received(&receiver, count + 1).await;
    let last = requests.last().unwrap();
    assert!(header(last, "webhook-signature").starts_with("v1,"));
    new.stop().await;

    // In the database, the master key is rotated as in a data directory.
    let (_, new_key) = canopy::crypto::seal::MasterKey::generate();
    let rotated = Command::new(env!("CARGO_BIN_EXE_canopy"))
        .args(["rotate-key", "--store", &database.url])
        .env("CANOPY_MASTER_KEY", MASTER_KEY)
        .env("CANOPY_NEW_MASTER_KEY", &new_key)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&rotated.stdout);
    assert!(
        rotated.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    assert!(
        said.contains("re-encrypted 1 secrets of 3 integrations"),
        "{said}"
    );
    let rekeyed = Canopy::launch(
        moved_dir.path(),
        Some(database.url.clone()),
        canopy::clock::Clock::system(),
        |c| c.master_key = Some(canopy::crypto::secret::SecretValue::new(new_key)),
    )
    .await;
    let count = receiver.received_requests().await.unwrap().len();
    rekeyed.ingest_one(fresh("tier.changed")).await;
    let requests = received(&receiver, count + 1).await;
    assert!(header(requests.last().unwrap(), "webhook-signature").starts_with("v1,"));
    rekeyed.stop().await;
}

/// A server on the embedded store in `dir`, on the engine its files say (not the run's).
async fn on_its_engine(dir: &std::path::Path) -> Canopy {
    Canopy::start_embedded(dir, |c| c.store = None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_install_moves_from_sled_to_redb_and_back() {
    use canopy::store::{EmbeddedStore, EngineKind};
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let Install {
        receiver,
        _slow,
        acme_admin,
        failed,
        released,
        before,
    } = install(dir.path(), Some("sled")).await;
    assert_eq!(EngineKind::found_in(&store_dir), Some(EngineKind::Sled));

    // ---- sled → redb --------------------------------------------------------------------
    let moved = migrate(dir.path(), "redb");
    let stdout = moved_all(&moved, &["from sled to redb"]);
    assert_eq!(EngineKind::found_in(&store_dir), Some(EngineKind::Redb));
    // sled's files are set aside, whole, in the directory the command names.
    let backup = std::fs::read_dir(&store_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("sled-backup-")
        })
        .expect("a backup of sled's files");
    assert!(stdout.contains(&*backup.to_string_lossy()), "{stdout}");
    assert!(backup.join("db").is_file() && backup.join("conf").is_file());
    assert!(!store_dir.join("db").exists() && !store_dir.join("conf").exists());
    // Asking for the engine it no longer holds is refused, with the way out.
    let refused = EmbeddedStore::open_on(&store_dir, Some(EngineKind::Sled))
        .err()
        .expect("sled refused on a redb directory")
        .to_string();
    assert!(
        refused.contains("holds a redb store") && refused.contains("migrate-store"),
        "{refused}"
    );
    // Moving it again onto the engine it is on: refused, nothing changed.
    let again = migrate(dir.path(), "redb");
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already on redb"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    let redb = on_its_engine(dir.path()).await;
    let after = view(&redb, &acme_admin, &released).await;
    assert_same_views(&before, &after, "the move to redb");
    // Open work carries on; the moved secret still signs.
    let sent = redb
        .delivery_with_status_in("acme.example", &released, "succeeded")
        .await;
    assert_eq!(sent["attempts"].as_array().unwrap().len(), 1);
    let count = receiver.received_requests().await.unwrap().len();
    redb.ingest_one(fresh("tier.changed")).await;
    let requests = received(&receiver, count + 1).await;
    assert!(header(requests.last().unwrap(), "webhook-signature").starts_with("v1,"));
    retried(&redb, &failed, &acme_admin).await;
    let on_redb = view(&redb, &acme_admin, &released).await;
    redb.stop().await;

    // ---- redb → sled ----------------------------------------------------------------------
    let back = migrate(dir.path(), "sled");
    let stdout = String::from_utf8_lossy(&back.stdout);
    assert!(
        back.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&back.stderr)
    );
    assert!(stdout.contains("from redb to sled"), "{stdout}");
    assert!(
        stdout.contains(&format!("{} events", EVENTS + 2)),
        "{stdout}"
    );
    assert_eq!(EngineKind::found_in(&store_dir), Some(EngineKind::Sled));
    let sled = on_its_engine(dir.path()).await;
    let on_sled = view(&sled, &acme_admin, &released).await;
    assert_same_views(&on_redb, &on_sled, "the move back to sled");
    sled.stop().await;
}
