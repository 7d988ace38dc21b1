//! The store's conformance suite: every backend, through the `Store` trait alone. Leases, their
//! expiry and their fences; the fair claim (round-robin across shops and integrations,
//! in-flight caps, rate limits); signals; shops and their tokens, shop-scoped lookups, bulk
//! retry, health statistics, plugin versions, the purge that never removes pending work;
//! reopening, and large and concurrent ingests.
//!
//! Each test is written once, as `async fn name(backend: &Backend)`, and [`conformance!`]
//! instantiates it per backend: `store::redb::name` and `store::sled::name` (the embedded store on
//! each of its engines) and `store::postgres::name`. The PostgreSQL
//! tests run on a new database of `CANOPY_TEST_POSTGRES`'s server (`scripts/test` starts one),
//! and are skipped, loudly, without it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use canopy::runtime::{RateLimit, component_digest};
use canopy::store::{
    Admission, AdmitAll, Attempt, Delivery, DeliveryDetail, DeliveryFilter, DeliveryStatus,
    EmbeddedStore, EngineKind, EventRecord, Integration, Lease, NewEvent, Outcome, Shop,
    ShopDeletion, ShopToken, Signal, Store, StoreError, Timestamp, TokenKind, new_id, pace,
};
use serde_json::json;
use uuid::Uuid;

use crate::harness;

// ---- backends ------------------------------------------------------------------------------

/// A store implementation the suite runs against.
enum Backend {
    /// The embedded store on one of its engines.
    Embedded(EngineKind),
    Postgres {
        server: String,
    },
}

/// What keeps a store's data for as long as a test needs it.
enum Data {
    Embedded(tempfile::TempDir, EngineKind),
    Postgres(harness::pg::Database),
}

impl Backend {
    /// A fresh, empty store.
    async fn open(&self) -> (Data, Arc<dyn Store>) {
        match self {
            Backend::Postgres { server } => {
                let database = harness::pg::Database::create(server);
                let store = canopy::store::PgStore::connect(&database.url)
                    .await
                    .expect("a PostgreSQL store connects");
                (Data::Postgres(database), Arc::new(store))
            }
            Backend::Embedded(engine) => {
                let dir = tempfile::tempdir().unwrap();
                let store = EmbeddedStore::open_on(dir.path(), Some(*engine))
                    .expect("an embedded store opens");
                (Data::Embedded(dir, *engine), Arc::new(store))
            }
        }
    }

    /// Another handle on the same data. For the embedded store, the store opened again, as
    /// after a restart (its engine's lock admits one handle: the caller has dropped every
    /// other first) — on the engine the directory holds, which must be the one it was made on;
    /// for PostgreSQL, a second store on the same database — another node.
    async fn reopen(&self, data: &Data) -> Arc<dyn Store> {
        match data {
            Data::Embedded(dir, engine) => {
                assert_eq!(EngineKind::found_in(dir.path()), Some(*engine));
                Arc::new(EmbeddedStore::open(dir.path()).expect("the embedded store reopens"))
            }
            Data::Postgres(database) => Arc::new(
                canopy::store::PgStore::connect(&database.url)
                    .await
                    .expect("a second PostgreSQL store connects"),
            ),
        }
    }

    /// Whether several handles may use the same data at once (several nodes).
    fn shares_data(&self) -> bool {
        match self {
            Backend::Embedded(_) => false,
            Backend::Postgres { .. } => true,
        }
    }
}

/// Instantiates each test for every backend, under the server's kind of runtime.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod redb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(&super::Backend::Embedded(canopy::store::EngineKind::Redb))
                        .await;
                }
            )*
        }

        mod sled {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(&super::Backend::Embedded(canopy::store::EngineKind::Sled))
                        .await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(server) = crate::harness::pg::server() else {
                        return;
                    };
                    super::$name(&super::Backend::Postgres { server }).await;
                }
            )*
        }
    };
}

conformance! {
    leases_hide_claimed_work_until_they_expire,
    claims_are_fenced_by_their_lease,
    an_expired_lease_records_until_another_claim_takes_it,
    outcomes_recorded_at_once_are_each_fenced_and_all_kept,
    failures_recorded_at_once_disable_at_the_threshold,
    claims_take_turns_across_shops_and_integrations_within_caps,
    work_its_rate_limit_refuses_stays_queued_and_says_when_to_look_again,
    a_rate_limit_holds_across_handles_on_the_same_data,
    writes_that_queue_work_and_plugin_changes_raise_signals,
    signals_reach_every_handle_on_the_same_data,
    a_shops_lookups_never_see_another_shops_data,
    requeue_matching_queues_the_shops_matching_failures_at_once,
    shops_tokens_and_a_cascading_deletion,
    health_is_read_from_statistics_of_every_attempt,
    plugin_versions_are_numbered_activated_rolled_back_and_deleted,
    what_was_ingested_survives_reopening,
    large_and_concurrent_ingests_are_all_durable,
    the_purge_removes_finished_work_only,
    deleting_an_integration_ends_its_queued_and_paused_deliveries,
}

/// The embedded store keeps leases in memory. A directory an older version wrote holds a
/// claimed delivery as it left it: the lease on its record, its queue entry moved to the
/// lease's end and an `L` key counting it in flight. Opened now, the delivery is due at once
/// (not when that lease would have ended), nothing counts as in flight, and the old keys are
/// gone. A claim by this version writes no lease to disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_leases_an_older_version_wrote_are_cleared_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let hook = integration(true);
    let (held, now) = {
        let store = EmbeddedStore::open_on(dir.path(), Some(EngineKind::Sled)).unwrap();
        store.create_integration(&hook).await.unwrap();
        store.insert_events(vec![event(&[&hook])]).await.unwrap();
        let now = Timestamp::now();
        let held = claim(&store, now, 10).await.remove(0);
        assert!(held.lease_until.is_some(), "the claim leases it");
        let shown = detail(&store, SHOP, held.id).await.delivery;
        assert_eq!(shown.lease_until, held.lease_until, "readers see the lease");
        store.flush().await.unwrap();
        (held, now)
    };
    let until = held.lease_until.unwrap();
    let due = held.next_attempt_at.unwrap();
    let (d_key, q_key, l_key) = {
        let id = held.id.as_bytes();
        let q = |at: Timestamp| [&b"Q"[..], hook.id.as_bytes(), &at.0.to_be_bytes(), id].concat();
        (
            [&b"D"[..], id].concat(),
            (q(due), q(until)),
            [&b"L"[..], hook.id.as_bytes(), id].concat(),
        )
    };
    {
        let db = raw_sled(dir.path());
        let mut record: serde_json::Value =
            serde_json::from_slice(&db.get(&d_key).unwrap().unwrap()).unwrap();
        assert!(
            record["lease_token"].is_null(),
            "no lease written by a claim"
        );
        assert!(
            db.get(&l_key).unwrap().is_none(),
            "no lease key written by a claim"
        );
        assert!(
            db.get(&q_key.0).unwrap().is_some(),
            "queued at its due time"
        );
        // As the older version wrote it.
        record["lease_until"] = serde_json::to_value(until).unwrap();
        record["lease_token"] = serde_json::to_value(lease(&held).token).unwrap();
        db.insert(&d_key, serde_json::to_vec(&record).unwrap())
            .unwrap();
        db.remove(&q_key.0).unwrap();
        db.insert(&q_key.1, &[]).unwrap();
        db.insert(&l_key, &until.0.to_be_bytes()).unwrap();
        db.flush().unwrap();
    }
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let depth = store.queue_depth(now).await.unwrap();
    assert_eq!((depth.due, depth.in_flight, depth.scheduled), (1, 0, 0));
    let again = claim(&store, now, 10).await;
    assert_eq!(
        ids(&again),
        [held.id],
        "due at once, not at the old lease's end"
    );
    drop(store);
    let db = raw_sled(dir.path());
    assert_eq!(
        db.scan_prefix(b"L").count(),
        0,
        "the old lease keys are gone"
    );
    assert!(db.get(&q_key.1).unwrap().is_none());
}

/// The store's sled database opened raw, to read and write what an older version left. A store
/// of this process that has just closed may hold sled's lock on the directory for a moment
/// (sled's IO threads let go of the database last): this waits for it, as the store's own open
/// does.
fn raw_sled(dir: &std::path::Path) -> ::sled::Db {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        match ::sled::open(dir) {
            Ok(db) => return db,
            Err(e) if std::time::Instant::now() > deadline => panic!("sled does not open: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// A move onto redb that did not finish left its partial file and a journal segment beside
/// it. The next move starts clean: it succeeds, leaves neither behind, and the moved store
/// opens with what was ingested.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_to_redb_clears_what_an_unfinished_one_left() {
    let dir = tempfile::tempdir().unwrap();
    let hook = integration(true);
    let new = event(&[&hook]);
    let id = new.record.id;
    {
        let store = EmbeddedStore::open_on(dir.path(), Some(EngineKind::Sled)).unwrap();
        store.create_integration(&hook).await.unwrap();
        store.insert_events(vec![new]).await.unwrap();
        store.flush().await.unwrap();
    }
    let left = [
        dir.path().join("canopy.redb.partial"),
        dir.path().join("canopy.redb.partial.journal.7"),
    ];
    for file in &left {
        std::fs::write(file, b"what a move cut short left").unwrap();
    }
    let store = EmbeddedStore::open_on(dir.path(), Some(EngineKind::Sled)).unwrap();
    let moved = tokio::task::spawn_blocking(move || store.move_to(EngineKind::Redb))
        .await
        .unwrap()
        .expect("the move");
    assert_eq!((moved.from, moved.to), (EngineKind::Sled, EngineKind::Redb));
    for file in &left {
        assert!(!file.exists(), "{} is left", file.display());
    }
    assert_eq!(EngineKind::found_in(dir.path()), Some(EngineKind::Redb));
    let store = EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(store.event(id).await.unwrap().unwrap().id, id);
    assert_eq!(claim(&store, Timestamp::now(), 10).await.len(), 1);
}

/// The PostgreSQL harness itself: each call makes a new, empty database of its own.
#[test]
fn postgres_test_databases_are_new_and_empty() {
    let Some(server) = harness::pg::server() else {
        return;
    };
    let one = harness::pg::Database::create(&server);
    let two = harness::pg::Database::create(&server);
    assert_ne!(one.name, two.name);
    assert_eq!(
        harness::pg::psql(&one.url, "SELECT current_database()"),
        one.name
    );
    let tables = "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'";
    assert_eq!(harness::pg::psql(&two.url, tables), "0");
}

// ---- fixtures ------------------------------------------------------------------------------

const SHOP: &str = "default";
/// How long a test's claims hold their deliveries unless it says otherwise.
const LEASE: Duration = Duration::from_secs(300);
/// The longest a test waits for a signal.
const SIGNAL_PATIENCE: Duration = Duration::from_secs(5);

fn integration_in(shop: &str, enabled: bool) -> Integration {
    let now = Timestamp::now();
    Integration {
        id: new_id(),
        shop: shop.into(),
        name: "Hook".into(),
        plugin: "webhook".into(),
        events: vec!["*".into()],
        settings: json!({}),
        secrets: BTreeMap::new(),
        enabled,
        disabled_reason: (!enabled).then(|| "disabled automatically".into()),
        consecutive_failures: 0,
        rate_limit: None,
        max_in_flight: None,
        created_at: now,
        updated_at: now,
    }
}

fn integration(enabled: bool) -> Integration {
    integration_in(SHOP, enabled)
}

fn event(integrations: &[&Integration]) -> NewEvent {
    event_of("tier.changed", integrations)
}

fn event_of(key: &str, integrations: &[&Integration]) -> NewEvent {
    let now = Timestamp::now();
    let mut record = EventRecord {
        id: new_id(),
        shop: integrations.first().map_or(SHOP.into(), |i| i.shop.clone()),
        event: key.into(),
        received_at: now,
        customer_email: Some("jane@example.com".into()),
        customer_name: Some("Jane Smith".into()),
        deliveries: vec![],
    };
    let deliveries: Vec<Delivery> = integrations
        .iter()
        .map(|i| Delivery::new(&record, i, now))
        .collect();
    record.deliveries = deliveries
        .iter()
        .map(|d| canopy::store::DeliveryRef {
            id: d.id,
            integration: d.integration_id,
            status: d.status,
        })
        .collect();
    NewEvent {
        json: format!(r#"{{"id":"{}"}}"#, record.id),
        record,
        deliveries,
    }
}

fn attempt(number: u32, outcome: DeliveryStatus) -> Attempt {
    Attempt {
        number,
        started_at: Timestamp::now(),
        duration_ms: 1,
        plugin_version: "1.0.0".into(),
        outcome,
        error: None,
        exchanges: vec![],
    }
}

fn finished(status: DeliveryStatus, signal: Signal) -> Outcome {
    Outcome {
        status,
        next_attempt_at: None,
        error: None,
        signal,
    }
}

fn succeeded() -> Outcome {
    finished(DeliveryStatus::Succeeded, Signal::Healthy)
}

fn retry_at(at: Timestamp) -> Outcome {
    Outcome {
        status: DeliveryStatus::Retrying,
        next_attempt_at: Some(at),
        error: Some("503".into()),
        signal: Signal::Failing,
    }
}

/// A day, in seconds.
const DAY: u64 = 86_400;

fn after(at: Timestamp, seconds: u64) -> Timestamp {
    at.saturating_add(Duration::from_secs(seconds))
}

/// The lease a claimed delivery carries.
fn lease(delivery: &Delivery) -> Lease {
    delivery
        .lease()
        .expect("a claimed delivery carries its lease")
}

/// Claims at `now` under a lease of [`LEASE`], without rate limits.
async fn claim(store: &dyn Store, now: Timestamp, limit: usize) -> Vec<Delivery> {
    store
        .claim_due(now, limit, now.saturating_add(LEASE), &AdmitAll)
        .await
        .unwrap()
        .claimed
}

fn ids(deliveries: &[Delivery]) -> Vec<Uuid> {
    deliveries.iter().map(|d| d.id).collect()
}

async fn add_shop(store: &dyn Store, id: &str) {
    assert!(
        store
            .create_shop(&Shop::new(id, id, Timestamp::now()))
            .await
            .unwrap()
    );
}

async fn detail(store: &dyn Store, shop: &str, id: Uuid) -> DeliveryDetail {
    store.delivery(shop, id).await.unwrap().expect("stored")
}

/// Limits one integration's attempts; every other integration goes unlimited.
struct Limited {
    integration: Uuid,
    limit: RateLimit,
}

impl Admission for Limited {
    fn rate_limit(&self, integration: &Integration) -> Option<RateLimit> {
        (integration.id == self.integration).then_some(self.limit)
    }
}

/// Lets a signal raised before now go by, so the next wait sees only what follows.
async fn settle(store: &dyn Store) {
    let _ = tokio::time::timeout(Duration::from_millis(100), store.signals().work()).await;
}

async fn woken(store: &dyn Store, by: &str) {
    tokio::time::timeout(SIGNAL_PATIENCE, store.signals().work())
        .await
        .unwrap_or_else(|_| panic!("{by} did not signal work"));
}

async fn plugins_changed(watch: &mut tokio::sync::watch::Receiver<u64>, by: &str) {
    tokio::time::timeout(SIGNAL_PATIENCE, watch.changed())
        .await
        .unwrap_or_else(|_| panic!("{by} did not signal a plugin change"))
        .expect("the store is open");
}

// ---- leases --------------------------------------------------------------------------------

async fn leases_hide_claimed_work_until_they_expire(backend: &Backend) {
    let (_data, store) = backend.open().await;
    let hook = integration(true);
    store.create_integration(&hook).await.unwrap();
    store
        .insert_events(vec![event(&[&hook]), event(&[&hook])])
        .await
        .unwrap();

    let now = Timestamp::now();
    let claimed = claim(&*store, now, 10).await;
    assert_eq!(claimed.len(), 2);
    assert!(claimed[0].id < claimed[1].id, "oldest first");
    let expiry = now.saturating_add(LEASE);
    let round = store.claim_due(now, 10, now, &AdmitAll).await.unwrap();
    assert!(round.claimed.is_empty(), "leased");
    assert_eq!(round.next_at, Some(expiry), "due again when the lease ends");
    let depth = store.queue_depth(now).await.unwrap();
    assert_eq!((depth.due, depth.in_flight, depth.scheduled), (0, 2, 0));

    // A worker that died leaves its leases to expire: hidden until then, claimable from then.
    let just_before = Timestamp(expiry.millis() - 1);
    assert!(claim(&*store, just_before, 10).await.is_empty());
    let again = claim(&*store, expiry, 10).await;
    assert_eq!(ids(&again), ids(&claimed));

    // A retry waits for its time.
    let later = after(expiry, 60);
    store
        .record_attempt(
            lease(&again[0]),
            attempt(1, DeliveryStatus::Retrying),
            retry_at(later),
            expiry,
            5,
        )
        .await
        .unwrap();
    assert!(
        claim(&*store, expiry, 10).await.is_empty(),
        "one waits for its retry, the other is leased"
    );
    let then = claim(&*store, later, 10).await;
    assert_eq!(ids(&then), [claimed[0].id]);
    assert_eq!(then[0].attempts, 1);
    let second_expiry = expiry.saturating_add(LEASE);
    assert_eq!(
        ids(&claim(&*store, second_expiry, 10).await),
        [claimed[1].id],
        "the other once its second lease ends"
    );
}

/// A worker whose lease expired and was claimed again by another records nothing: not an
/// attempt, not a release, not a pause. The current holder records as usual.
async fn claims_are_fenced_by_their_lease(backend: &Backend) {
    let (_data, store) = backend.open().await;
    let hook = integration(true);
    store.create_integration(&hook).await.unwrap();
    let events: Vec<NewEvent> = (0..3).map(|_| event(&[&hook])).collect();
    store.insert_events(events).await.unwrap();

    let t0 = Timestamp::now();
    let short = store
        .claim_due(t0, 10, after(t0, 1), &AdmitAll)
        .await
        .unwrap()
        .claimed;
    assert_eq!(short.len(), 3);
    let t1 = after(t0, 2);
    let current = claim(&*store, t1, 10).await;
    assert_eq!(ids(&current), ids(&short), "claimed again once expired");
    for (old, new) in short.iter().zip(&current) {
        assert_eq!(lease(old).delivery, lease(new).delivery);
        assert_ne!(
            lease(old).token,
            lease(new).token,
            "a new claim, a new token"
        );
    }
    let (sent, released, paused) = (&current[0], &current[1], &current[2]);
    let before: Vec<DeliveryDetail> = {
        let mut all = vec![];
        for d in &current {
            all.push(detail(&*store, SHOP, d.id).await);
        }
        all
    };

    // The first worker comes back late. Its failure would disable the integration at once
    // (threshold 1) if it were written.
    let late = store
        .record_attempt(
            lease(&short[0]),
            attempt(1, DeliveryStatus::Failed),
            finished(DeliveryStatus::Failed, Signal::Failing),
            t1,
            1,
        )
        .await;
    assert!(
        matches!(late, Err(StoreError::LeaseLost(id)) if id == sent.id),
        "{late:?}"
    );
    let release = store.release(lease(&short[1]), t1).await;
    assert!(
        matches!(release, Err(StoreError::LeaseLost(id)) if id == released.id),
        "{release:?}"
    );
    let pause = store.pause(lease(&short[2]), t1, "disabled").await;
    assert!(
        matches!(pause, Err(StoreError::LeaseLost(id)) if id == paused.id),
        "{pause:?}"
    );
    for (d, then) in current.iter().zip(&before) {
        assert_eq!(&detail(&*store, SHOP, d.id).await, then, "nothing written");
    }
    let unchanged = store.integration(SHOP, hook.id).await.unwrap().unwrap();
    assert!(unchanged.enabled);
    assert_eq!(unchanged.consecutive_failures, 0);
    let depth = store.queue_depth(t1).await.unwrap();
    assert_eq!(
        (depth.in_flight, depth.due),
        (3, 0),
        "still held by the new claims"
    );

    // The current holders record, release and pause.
    let recorded = store
        .record_attempt(
            lease(sent),
            attempt(1, DeliveryStatus::Succeeded),
            succeeded(),
            t1,
            1,
        )
        .await
        .unwrap();
    assert_eq!(recorded.status, DeliveryStatus::Succeeded);
    let sent_now = detail(&*store, SHOP, sent.id).await;
    assert_eq!(sent_now.delivery.status, DeliveryStatus::Succeeded);
    assert_eq!(sent_now.attempts.len(), 1);
    store.release(lease(released), t1).await.unwrap();
    store.pause(lease(paused), t1, "disabled").await.unwrap();
    assert_eq!(
        detail(&*store, SHOP, paused.id).await.delivery.status,
        DeliveryStatus::Paused
    );

    // A lease whose delivery ended holds nothing either.
    let twice = store
        .record_attempt(
            lease(sent),
            attempt(2, DeliveryStatus::Succeeded),
            succeeded(),
            t1,
            1,
        )
        .await;
    assert!(matches!(twice, Err(StoreError::LeaseLost(_))), "{twice:?}");
    assert_eq!(detail(&*store, SHOP, sent.id).await, sent_now);
    assert_eq!(
        ids(&claim(&*store, t1, 10).await),
        [released.id],
        "only the released one is due"
    );
}

/// Failures recorded at once (written together, on either store) cross the auto-disable
/// threshold exactly as one at a time would: the threshold's attempt disables the
/// integration, those before it stay retrying, it and those after are held as paused.
async fn failures_recorded_at_once_disable_at_the_threshold(backend: &Backend) {
    const THRESHOLD: u32 = 4;
    let (_data, store) = backend.open().await;
    let mut hook = integration(true);
    hook.max_in_flight = Some(32);
    store.create_integration(&hook).await.unwrap();
    let events: Vec<NewEvent> = (0..10).map(|_| event(&[&hook])).collect();
    store.insert_events(events).await.unwrap();
    let now = Timestamp::now();
    let held = claim(&*store, now, 10).await;
    assert_eq!(held.len(), 10);
    let mut writes = tokio::task::JoinSet::new();
    for d in &held {
        let (store, lease) = (store.clone(), lease(d));
        writes.spawn(async move {
            store
                .record_attempt(
                    lease,
                    attempt(1, DeliveryStatus::Retrying),
                    retry_at(after(now, 60)),
                    now,
                    THRESHOLD,
                )
                .await
                .unwrap()
        });
    }
    let recorded = writes.join_all().await;
    let count = |status| recorded.iter().filter(|r| r.status == status).count();
    assert_eq!(
        recorded.iter().filter(|r| r.integration_disabled).count(),
        1,
        "{recorded:?}"
    );
    assert_eq!(
        count(DeliveryStatus::Retrying),
        THRESHOLD as usize - 1,
        "{recorded:?}"
    );
    assert_eq!(
        count(DeliveryStatus::Paused),
        11 - THRESHOLD as usize,
        "{recorded:?}"
    );
    let off = store.integration(SHOP, hook.id).await.unwrap().unwrap();
    assert!(!off.enabled);
    assert_eq!(off.consecutive_failures, 10);
}

/// Many workers record at once (both stores write such outcomes together, in one transaction
/// or one sled batch): every current lease's outcome is kept with its attempt and counted in the
/// statistics, and a lost lease among them is refused alone, whether its outcome comes before
/// or after the current holder's.
async fn outcomes_recorded_at_once_are_each_fenced_and_all_kept(backend: &Backend) {
    let (_data, store) = backend.open().await;
    let hooks = [integration(true), integration(true)].map(|mut hook| {
        hook.max_in_flight = Some(32);
        hook
    });
    for hook in &hooks {
        store.create_integration(hook).await.unwrap();
    }
    let events: Vec<NewEvent> = (0..20).map(|_| event(&[&hooks[0], &hooks[1]])).collect();
    store.insert_events(events).await.unwrap();
    let t0 = Timestamp::now();
    // Half of them claimed under leases that expire, then taken over by new claims.
    let stale = store
        .claim_due(t0, 20, after(t0, 1), &AdmitAll)
        .await
        .unwrap()
        .claimed;
    assert_eq!(stale.len(), 20);
    let t1 = after(t0, 2);
    let held = claim(&*store, t1, 40).await;
    assert_eq!(held.len(), 40);
    assert!(
        stale.iter().all(|s| held.iter().any(|d| d.id == s.id)),
        "taken over"
    );
    let stale_leases: Vec<Lease> = stale.iter().map(lease).collect();

    let mut writes = tokio::task::JoinSet::new();
    for d in stale.iter().chain(&held).chain(&stale) {
        let (store, lease) = (store.clone(), lease(d));
        writes.spawn(async move {
            let result = store
                .record_attempt(
                    lease,
                    attempt(1, DeliveryStatus::Succeeded),
                    succeeded(),
                    t1,
                    5,
                )
                .await;
            (lease, result)
        });
    }
    let results = writes.join_all().await;
    for (lease, result) in &results {
        if stale_leases.contains(lease) {
            assert!(
                matches!(result, Err(StoreError::LeaseLost(id)) if *id == lease.delivery),
                "{result:?}"
            );
        } else {
            assert_eq!(result.as_ref().unwrap().status, DeliveryStatus::Succeeded);
        }
    }
    for d in &held {
        let now = detail(&*store, SHOP, d.id).await;
        assert_eq!(now.delivery.status, DeliveryStatus::Succeeded);
        assert_eq!(now.attempts.len(), 1, "one attempt, the current lease's");
    }
    for hook in &hooks {
        let health = store
            .integration_health(SHOP, hook.id, t1)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(health.last_hour.attempts, 20, "{health:?}");
    }
}

/// Expiry alone takes nothing away: until another claim takes the delivery, its worker's
/// lease still records and releases.
async fn an_expired_lease_records_until_another_claim_takes_it(backend: &Backend) {
    let (_data, store) = backend.open().await;
    let hook = integration(true);
    store.create_integration(&hook).await.unwrap();
    store
        .insert_events(vec![event(&[&hook]), event(&[&hook])])
        .await
        .unwrap();
    let t0 = Timestamp::now();
    let claimed = store
        .claim_due(t0, 10, after(t0, 1), &AdmitAll)
        .await
        .unwrap()
        .claimed;
    assert_eq!(claimed.len(), 2);

    let late = after(t0, 10);
    let recorded = store
        .record_attempt(
            lease(&claimed[0]),
            attempt(1, DeliveryStatus::Succeeded),
            succeeded(),
            late,
            5,
        )
        .await
        .unwrap();
    assert_eq!(recorded.status, DeliveryStatus::Succeeded);
    assert_eq!(detail(&*store, SHOP, claimed[0].id).await.attempts.len(), 1);
    store.release(lease(&claimed[1]), late).await.unwrap();
    assert_eq!(
        ids(&claim(&*store, late, 10).await),
        [claimed[1].id],
        "the released one is due; the recorded one is finished"
    );
}

// ---- the fair claim ------------------------------------------------------------------------

/// Two shops: A has one integration with a backlog and a cap of 2; B has two integrations
/// with a little work each. A claim takes one delivery from each shop in turn, and within B
/// from each integration in turn; A's cap holds however much A has queued.
async fn claims_take_turns_across_shops_and_integrations_within_caps(backend: &Backend) {
    let (_data, store) = backend.open().await;
    add_shop(&*store, "a.example").await;
    add_shop(&*store, "b.example").await;
    let mut a1 = integration_in("a.example", true);
    a1.max_in_flight = Some(2);
    let b1 = integration_in("b.example", true);
    let b2 = integration_in("b.example", true);
    for i in [&a1, &b1, &b2] {
        store.create_integration(i).await.unwrap();
    }
    // A's backlog is older than everything of B's.
    let backlog: Vec<NewEvent> = (0..10).map(|_| event(&[&a1])).collect();
    store.insert_events(backlog).await.unwrap();
    let b_work: Vec<NewEvent> = (0..3)
        .flat_map(|_| [event(&[&b1]), event(&[&b2])])
        .collect();
    store.insert_events(b_work).await.unwrap();

    let now = Timestamp::now();
    let first = claim(&*store, now, 6).await;
    let of = |claimed: &[Delivery], i: &Integration| {
        claimed.iter().filter(|d| d.integration_id == i.id).count()
    };
    assert_eq!(
        (of(&first, &a1), of(&first, &b1), of(&first, &b2)),
        (2, 2, 2),
        "A's cap, then B's two integrations in turn: {first:?}"
    );
    assert_ne!(
        first[0].shop, first[1].shop,
        "the first two claims go to different shops"
    );
    // A is at its cap: the next claim takes only B's remaining work.
    let second = claim(&*store, now, 10).await;
    assert_eq!((of(&second, &a1), second.len()), (0, 2));
    // An attempt of A ends: room for one more of A.
    let of_a = first
        .iter()
        .find(|d| d.integration_id == a1.id)
        .expect("claimed");
    store
        .record_attempt(
            lease(of_a),
            attempt(1, DeliveryStatus::Succeeded),
            succeeded(),
            now,
            5,
        )
        .await
        .unwrap();
    let third = claim(&*store, now, 10).await;
    assert_eq!((of(&third, &a1), third.len()), (1, 1));
}

/// A limit of 2 requests a minute: the burst is the window's whole allowance, then one
/// request every 30 s ([`pace`]). What it refuses stays queued, untouched, and the claim says
/// when it admits again.
async fn work_its_rate_limit_refuses_stays_queued_and_says_when_to_look_again(backend: &Backend) {
    let (_data, store) = backend.open().await;
    let limited = integration(true);
    let free = integration(true);
    for i in [&limited, &free] {
        store.create_integration(i).await.unwrap();
    }
    store
        .insert_events((0..20).map(|_| event(&[&limited])).collect())
        .await
        .unwrap();
    store.insert_events(vec![event(&[&free])]).await.unwrap();
    let limit = RateLimit {
        requests: 2,
        per_seconds: 60,
    };
    let gate = Limited {
        integration: limited.id,
        limit,
    };
    let now = Timestamp::now();
    let tat = pace(None, limit, now).unwrap();
    let tat = pace(Some(tat), limit, now).unwrap();
    let admits_at = pace(Some(tat), limit, now).unwrap_err();
    assert_eq!(admits_at, after(now, 30), "the rule itself");

    let lease_until = now.saturating_add(LEASE);
    let round = store.claim_due(now, 64, lease_until, &gate).await.unwrap();
    let of = |claimed: &[Delivery], i: &Integration| {
        claimed.iter().filter(|d| d.integration_id == i.id).count()
    };
    assert_eq!(
        (of(&round.claimed, &limited), of(&round.claimed, &free)),
        (2, 1),
        "the limited integration's burst, and everyone else's work"
    );
    assert_eq!(round.next_at, Some(admits_at));
    let depth = store.queue_depth(now).await.unwrap();
    assert_eq!(
        (depth.due, depth.in_flight),
        (18, 3),
        "what the limit refused was not touched"
    );
    let refused = store.claim_due(now, 64, lease_until, &gate).await.unwrap();
    assert!(refused.claimed.is_empty(), "the third is refused");
    assert_eq!(refused.next_at, Some(admits_at));
    let early = Timestamp(admits_at.millis() - 1);
    let still = store
        .claim_due(early, 64, lease_until, &gate)
        .await
        .unwrap();
    assert!(still.claimed.is_empty(), "not a millisecond early");

    let then = store
        .claim_due(admits_at, 64, lease_until, &gate)
        .await
        .unwrap();
    assert_eq!(of(&then.claimed, &limited), 1, "one more when pace says");
    let tat = pace(Some(tat), limit, admits_at).unwrap();
    let next = pace(Some(tat), limit, admits_at).unwrap_err();
    assert_eq!(then.next_at, Some(next), "and the next one 30 s later");
    let open = claim(&*store, admits_at, 64).await;
    assert_eq!(
        of(&open, &limited),
        7,
        "without the limit, what its in-flight cap of 10 leaves"
    );
}

/// Two handles on the same data (two nodes) share one limit: claims through both together
/// never exceed the allowance.
async fn a_rate_limit_holds_across_handles_on_the_same_data(backend: &Backend) {
    if !backend.shares_data() {
        return;
    }
    let (data, one) = backend.open().await;
    let two = backend.reopen(&data).await;
    let hook = integration(true);
    one.create_integration(&hook).await.unwrap();
    one.insert_events((0..20).map(|_| event(&[&hook])).collect())
        .await
        .unwrap();
    let gate = Limited {
        integration: hook.id,
        limit: RateLimit {
            requests: 3,
            per_seconds: 60,
        },
    };
    let claimed_at = |now: Timestamp| {
        let (one, two, gate) = (&one, &two, &gate);
        async move {
            let lease_until = now.saturating_add(LEASE);
            let mut claimed = 0;
            for _ in 0..4 {
                let (a, b) = tokio::join!(
                    one.claim_due(now, 1, lease_until, gate),
                    two.claim_due(now, 1, lease_until, gate)
                );
                claimed += a.unwrap().claimed.len() + b.unwrap().claimed.len();
            }
            claimed
        }
    };
    let now = Timestamp::now();
    assert_eq!(
        claimed_at(now).await,
        3,
        "the window's allowance, through both handles together"
    );
    assert_eq!(
        claimed_at(after(now, 20)).await,
        1,
        "then one per 20 s, through both"
    );
}

// ---- signals -------------------------------------------------------------------------------

/// New events, retries, released leases and resumed integrations wake the scheduler; plugin
/// versions added, activated or deleted wake the plugin registry.
async fn writes_that_queue_work_and_plugin_changes_raise_signals(backend: &Backend) {
    let (_data, store) = backend.open().await;
    let hook = integration(true);
    store.create_integration(&hook).await.unwrap();
    let new = event(&[&hook]);
    let id = new.deliveries[0].id;
    settle(&*store).await;
    store.insert_events(vec![new.clone()]).await.unwrap();
    woken(&*store, "a new event").await;
    // A duplicate queues nothing; whether it wakes anyone is the backend's business.
    assert!(store.insert_events(vec![new]).await.unwrap()[0].duplicate);

    let now = Timestamp::now();
    let claimed = claim(&*store, now, 1).await;
    store
        .record_attempt(
            lease(&claimed[0]),
            attempt(1, DeliveryStatus::Failed),
            finished(DeliveryStatus::Failed, Signal::Failing),
            now,
            0,
        )
        .await
        .unwrap();
    settle(&*store).await;
    assert!(store.requeue(SHOP, id, now).await.unwrap());
    woken(&*store, "a retry").await;

    let claimed = claim(&*store, now, 1).await;
    settle(&*store).await;
    store.release(lease(&claimed[0]), now).await.unwrap();
    woken(&*store, "a released lease").await;

    // Disabled mid-flight, the delivery is held paused; enabling resumes it.
    let claimed = claim(&*store, now, 1).await;
    store
        .update_integration(
            SHOP,
            hook.id,
            now,
            Box::new(|i: &mut Integration| {
                i.enabled = false;
                Ok(())
            }),
        )
        .await
        .unwrap();
    store
        .pause(lease(&claimed[0]), now, "the integration is disabled")
        .await
        .unwrap();
    settle(&*store).await;
    store
        .update_integration(
            SHOP,
            hook.id,
            now,
            Box::new(|i: &mut Integration| {
                i.enabled = true;
                Ok(())
            }),
        )
        .await
        .unwrap();
    woken(&*store, "a resumed integration").await;
    assert_eq!(ids(&claim(&*store, now, 1).await), [id], "it resumed");

    let mut plugins = store.signals().watch_plugins();
    plugins.borrow_and_update();
    store
        .add_plugin_version("webhook", "1.0.0", true, b"first build", now)
        .await
        .unwrap();
    plugins_changed(&mut plugins, "a new plugin version").await;
    store
        .add_plugin_version("webhook", "1.1.0", false, b"second build", now)
        .await
        .unwrap();
    plugins_changed(&mut plugins, "another version").await;
    store.activate_plugin_version("webhook", 1).await.unwrap();
    plugins_changed(&mut plugins, "a rollback").await;
    assert!(store.delete_plugin("webhook").await.unwrap());
    plugins_changed(&mut plugins, "a deleted plugin").await;
}

/// Nodes sharing the data hear each other's writes.
async fn signals_reach_every_handle_on_the_same_data(backend: &Backend) {
    if !backend.shares_data() {
        return;
    }
    let (data, one) = backend.open().await;
    let two = backend.reopen(&data).await;
    let hook = integration(true);
    one.create_integration(&hook).await.unwrap();
    let mut plugins = two.signals().watch_plugins();
    plugins.borrow_and_update();
    settle(&*two).await;
    one.insert_events(vec![event(&[&hook])]).await.unwrap();
    woken(&*two, "another node's new event").await;
    one.add_plugin_version("webhook", "1.0.0", true, b"build", Timestamp::now())
        .await
        .unwrap();
    plugins_changed(&mut plugins, "another node's plugin version").await;
}

// ---- shops, the log and retries ------------------------------------------------------------

async fn a_shops_lookups_never_see_another_shops_data(backend: &Backend) {
    let (_data, store) = backend.open().await;
    add_shop(&*store, "a.example").await;
    add_shop(&*store, "b.example").await;
    let a = integration_in("a.example", true);
    store.create_integration(&a).await.unwrap();
    let new = event(&[&a]);
    let delivery = new.deliveries[0].id;
    store.insert_events(vec![new]).await.unwrap();
    let now = Timestamp::now();
    let claimed = claim(&*store, now, 1).await;
    store
        .record_attempt(
            lease(&claimed[0]),
            attempt(1, DeliveryStatus::Failed),
            finished(DeliveryStatus::Failed, Signal::Failing),
            now,
            5,
        )
        .await
        .unwrap();

    assert!(
        store
            .integration("a.example", a.id)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .integration("b.example", a.id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .delivery("b.example", delivery)
            .await
            .unwrap()
            .is_none()
    );
    assert!(!store.requeue("b.example", delivery, now).await.unwrap());
    assert!(
        store
            .integration_health("b.example", a.id, now)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        !store
            .delete_integration("b.example", a.id, now)
            .await
            .unwrap()
    );
    let crafted = [
        DeliveryFilter::default(),
        DeliveryFilter {
            integration: Some(a.id),
            ..DeliveryFilter::default()
        },
        DeliveryFilter {
            customer: Some("jane@example.com".into()),
            ..DeliveryFilter::default()
        },
        DeliveryFilter {
            status: Some(DeliveryStatus::Failed),
            ..DeliveryFilter::default()
        },
        DeliveryFilter {
            event: Some("tier.changed".into()),
            ..DeliveryFilter::default()
        },
    ];
    for filter in &crafted {
        assert_eq!(
            store
                .deliveries("a.example", filter, None, 10)
                .await
                .unwrap()
                .len(),
            1
        );
        assert!(
            store
                .deliveries("b.example", filter, Some(Uuid::max()), 10)
                .await
                .unwrap()
                .is_empty(),
            "{filter:?}"
        );
        assert_eq!(
            store
                .requeue_matching("b.example", filter, now)
                .await
                .unwrap(),
            0
        );
    }
    assert_eq!(
        store
            .requeue_matching("a.example", &DeliveryFilter::default(), now)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .requeue_matching("a.example", &DeliveryFilter::default(), now)
            .await
            .unwrap(),
        0,
        "queued work is never queued twice"
    );
}

/// A bulk retry takes the failed and exhausted deliveries of one shop that its filter
/// matches, all in one call, and nothing else: not what succeeded, not what is still queued,
/// not another integration's or event's, not another shop's.
async fn requeue_matching_queues_the_shops_matching_failures_at_once(backend: &Backend) {
    let (_data, store) = backend.open().await;
    add_shop(&*store, "a.example").await;
    add_shop(&*store, "b.example").await;
    let hook = integration_in("a.example", true);
    let other = integration_in("a.example", true);
    let elsewhere = integration_in("b.example", true);
    for i in [&hook, &other, &elsewhere] {
        store.create_integration(i).await.unwrap();
    }
    let now = Timestamp::now();
    let failed = || finished(DeliveryStatus::Failed, Signal::Failing);
    let cases = [
        ("failed", event(&[&hook]), failed()),
        (
            "exhausted",
            event(&[&hook]),
            finished(DeliveryStatus::Exhausted, Signal::Failing),
        ),
        ("succeeded", event(&[&hook]), succeeded()),
        ("retrying", event(&[&hook]), retry_at(after(now, 3600))),
        (
            "another event",
            event_of("seeds.earned", &[&hook]),
            failed(),
        ),
        ("another integration", event(&[&other]), failed()),
        ("another shop", event(&[&elsewhere]), failed()),
    ];
    let mut outcomes = HashMap::new();
    let mut by_case = HashMap::new();
    for (case, new, outcome) in cases {
        let delivery = &new.deliveries[0];
        by_case.insert(case, (delivery.shop.clone(), delivery.id));
        outcomes.insert(delivery.id, outcome);
        store.insert_events(vec![new]).await.unwrap();
    }
    // Due from their creation, which came after `now`.
    let claimed = claim(&*store, Timestamp::now(), 64).await;
    assert_eq!(claimed.len(), outcomes.len());
    for delivery in &claimed {
        let outcome = outcomes.remove(&delivery.id).expect("one of ours");
        let status = outcome.status;
        store
            .record_attempt(lease(delivery), attempt(1, status), outcome, now, 0)
            .await
            .unwrap();
    }

    let filter = DeliveryFilter {
        integration: Some(hook.id),
        event: Some("tier.changed".into()),
        ..DeliveryFilter::default()
    };
    let requeue = |shop: &'static str, filter: DeliveryFilter| {
        let store = store.clone();
        async move { store.requeue_matching(shop, &filter, now).await.unwrap() }
    };
    assert_eq!(
        requeue("b.example", filter.clone()).await,
        0,
        "another shop's"
    );
    assert_eq!(requeue("a.example", filter.clone()).await, 2);
    let status = |case: &str| {
        let (store, (shop, id)) = (store.clone(), by_case[case].clone());
        async move { detail(&*store, &shop, id).await.delivery }
    };
    for case in ["failed", "exhausted"] {
        let queued = status(case).await;
        assert!(
            matches!(
                queued.status,
                DeliveryStatus::Pending | DeliveryStatus::Retrying
            ),
            "{case}: {queued:?}"
        );
        assert_eq!(queued.next_attempt_at, Some(now), "{case}: due now");
    }
    for (case, expected) in [
        ("succeeded", DeliveryStatus::Succeeded),
        ("retrying", DeliveryStatus::Retrying),
        ("another event", DeliveryStatus::Failed),
        ("another integration", DeliveryStatus::Failed),
        ("another shop", DeliveryStatus::Failed),
    ] {
        assert_eq!(status(case).await.status, expected, "{case}");
    }
    let mut due = ids(&claim(&*store, now, 64).await);
    due.sort();
    let mut requeued = vec![by_case["failed"].1, by_case["exhausted"].1];
    requeued.sort();
    assert_eq!(due, requeued, "exactly those are due");

    assert_eq!(requeue("a.example", filter).await, 0, "never queued twice");
    let succeeded_only = DeliveryFilter {
        status: Some(DeliveryStatus::Succeeded),
        ..DeliveryFilter::default()
    };
    assert_eq!(requeue("a.example", succeeded_only).await, 0);
    assert_eq!(
        requeue("a.example", DeliveryFilter::default()).await,
        2,
        "the rest of the shop's failures"
    );
    assert_eq!(requeue("b.example", DeliveryFilter::default()).await, 1);
}

async fn shops_tokens_and_a_cascading_deletion(backend: &Backend) {
    let (_data, store) = backend.open().await;
    assert!(
        store.shop("default").await.unwrap().is_some(),
        "the default shop exists from the start"
    );
    add_shop(&*store, "green.myshopify.com").await;
    assert!(
        !store
            .create_shop(&Shop::new("green.myshopify.com", "again", Timestamp::now()))
            .await
            .unwrap(),
        "an id is taken once"
    );
    let renamed = store
        .rename_shop("green.myshopify.com", "Green", Timestamp::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(renamed.name, "Green");
    let listed: Vec<String> = store
        .shops(None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(listed, ["default", "green.myshopify.com"]);
    assert_eq!(store.shops(Some("default"), 10).await.unwrap().len(), 1);

    let now = Timestamp::now();
    let token = ShopToken {
        id: new_id(),
        shop: "green.myshopify.com".into(),
        kind: TokenKind::Admin,
        hash: "ab".repeat(32),
        hint: "••••abab".into(),
        created_at: now,
        last_used_at: None,
        expires_at: None,
    };
    store.create_token(&token).await.unwrap();
    assert_eq!(
        store.token_by_hash(&token.hash).await.unwrap(),
        Some(token.clone())
    );
    assert_eq!(store.tokens("green.myshopify.com").await.unwrap().len(), 1);
    assert!(store.tokens("default").await.unwrap().is_empty());
    let expired = store
        .update_token(
            "green.myshopify.com",
            token.id,
            Box::new(move |t: &mut ShopToken| t.expires_at = Some(now)),
        )
        .await
        .unwrap()
        .unwrap();
    assert!(!expired.is_valid_at(now));

    let queued = integration_in("green.myshopify.com", true);
    let paused = integration_in("green.myshopify.com", false);
    for i in [&queued, &paused] {
        store.create_integration(i).await.unwrap();
    }
    let (one, two) = (event(&[&queued]), event(&[&paused]));
    let open = [one.deliveries[0].id, two.deliveries[0].id];
    store.insert_events(vec![one, two]).await.unwrap();
    assert_eq!(
        store
            .delete_shop("green.myshopify.com", false, now)
            .await
            .unwrap(),
        ShopDeletion::HasIntegrations(2)
    );
    assert_eq!(
        store
            .delete_shop("green.myshopify.com", true, now)
            .await
            .unwrap(),
        ShopDeletion::Deleted {
            integrations: 2,
            ended: 2
        }
    );
    for id in open {
        let ended = detail(&*store, "green.myshopify.com", id).await.delivery;
        assert_eq!(ended.status, DeliveryStatus::Failed);
        assert_eq!(ended.last_error.as_deref(), Some("the shop was deleted"));
    }
    assert!(
        claim(&*store, now, 10).await.is_empty(),
        "nothing of it is queued"
    );
    assert!(store.token_by_hash(&token.hash).await.unwrap().is_none());
    assert!(
        store
            .shop("green.myshopify.com")
            .await
            .unwrap()
            .unwrap()
            .is_deleted()
    );
    assert!(
        !store
            .create_shop(&Shop::new("green.myshopify.com", "new owner", now))
            .await
            .unwrap(),
        "the id stays taken while its log is kept"
    );
    // Once the purge has removed its log, the id is free again.
    // Two days on: a backend may keep the log to the day (PostgreSQL drops whole days).
    let later = after(now, 2 * DAY);
    let purged = store.purge(later, later).await.unwrap();
    assert_eq!((purged.deliveries, purged.shops), (2, 1));
    assert!(
        store
            .create_shop(&Shop::new("green.myshopify.com", "new owner", later))
            .await
            .unwrap()
    );
    assert!(
        store
            .deliveries("green.myshopify.com", &DeliveryFilter::default(), None, 10)
            .await
            .unwrap()
            .is_empty(),
        "a new shop with an old id sees no old log"
    );
}

async fn health_is_read_from_statistics_of_every_attempt(backend: &Backend) {
    let (_data, store) = backend.open().await;
    let hook = integration(true);
    store.create_integration(&hook).await.unwrap();
    store
        .insert_events((0..4).map(|_| event(&[&hook])).collect())
        .await
        .unwrap();
    let now = Timestamp::now();
    let claimed = claim(&*store, now, 4).await;
    let outcomes = [
        (DeliveryStatus::Succeeded, Signal::Healthy, 40),
        (DeliveryStatus::Succeeded, Signal::Healthy, 60),
        (DeliveryStatus::Failed, Signal::Failing, 3_000),
        (DeliveryStatus::Skipped, Signal::Neutral, 1),
    ];
    for (delivery, (status, signal, ms)) in claimed.iter().zip(outcomes) {
        let mut tried = attempt(1, status);
        tried.duration_ms = ms;
        store
            .record_attempt(lease(delivery), tried, finished(status, signal), now, 0)
            .await
            .unwrap();
    }
    let health = store
        .integration_health(SHOP, hook.id, now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            health.last_hour.attempts,
            health.last_hour.delivered,
            health.last_hour.failed
        ),
        (4, 2, 1)
    );
    assert_eq!(health.last_day.attempts, 4);
    assert_eq!(health.last_hour.success_rate, Some(2.0 / 3.0));
    assert_eq!(
        health.last_hour.p50_ms,
        Some(50),
        "1, 40, 60 and 3,000 ms: the second is in the 50 ms bucket"
    );
    assert_eq!(health.last_hour.p95_ms, Some(5_000));
    assert_eq!(health.last_success_at, Some(now));
    assert_eq!(health.last_failure_at, Some(now));
    assert_eq!(health.hourly.len(), 24);
    assert_eq!(health.hourly.last().unwrap().attempts, 4);
    assert_eq!(health.queue.due + health.queue.in_flight, 0);
    // A day later, the hour is empty and the day still counts them.
    let tomorrow = after(now, 23 * 3600);
    let later = store
        .integration_health(SHOP, hook.id, tomorrow)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((later.last_hour.attempts, later.last_day.attempts), (0, 4));
}

// ---- plugins -------------------------------------------------------------------------------

async fn active_version(store: &dyn Store, plugin: &str) -> Option<u32> {
    store
        .active_plugin_versions()
        .await
        .unwrap()
        .into_iter()
        .find(|v| v.plugin == plugin)
        .map(|v| v.number)
}

async fn plugin_versions_are_numbered_activated_rolled_back_and_deleted(backend: &Backend) {
    let (_data, store) = backend.open().await;
    let now = Timestamp::now();
    let first = store
        .add_plugin_version("webhook", "1.0.0", true, b"first build", now)
        .await
        .unwrap();
    assert_eq!(
        (first.number, first.version.as_str(), first.bundled),
        (1, "1.0.0", true)
    );
    assert_eq!(first.digest, component_digest(b"first build"));
    assert_eq!(first.size, b"first build".len());
    assert_eq!(active_version(&*store, "webhook").await, Some(1));
    let second = store
        .add_plugin_version("webhook", "1.1.0", false, b"second build", now)
        .await
        .unwrap();
    assert_eq!(second.number, 2);
    assert_eq!(active_version(&*store, "webhook").await, Some(2));

    // The active version's component again (two nodes installing one bundled build).
    let again = store
        .add_plugin_version("webhook", "1.1.0", true, b"second build", after(now, 1))
        .await
        .unwrap();
    assert_eq!(again, second, "nothing changes");
    assert_eq!(store.plugin_versions("webhook").await.unwrap().len(), 2);

    // Rollback.
    store.activate_plugin_version("webhook", 1).await.unwrap();
    assert_eq!(active_version(&*store, "webhook").await, Some(1));
    assert_eq!(
        store
            .plugin_component(&first.digest)
            .await
            .unwrap()
            .as_deref(),
        Some(&b"first build"[..])
    );
    assert!(
        store.activate_plugin_version("webhook", 9).await.is_err(),
        "no such version"
    );
    assert_eq!(active_version(&*store, "webhook").await, Some(1));
    // A build that is not the active one's is a new version, numbered after the last.
    let third = store
        .add_plugin_version("webhook", "1.1.0", false, b"second build", now)
        .await
        .unwrap();
    assert_eq!(third.number, 3);
    assert_eq!(active_version(&*store, "webhook").await, Some(3));
    let numbers: Vec<u32> = store
        .plugin_versions("webhook")
        .await
        .unwrap()
        .iter()
        .map(|v| v.number)
        .collect();
    assert_eq!(numbers, [1, 2, 3], "oldest first");

    // Another plugin numbers its own versions, and may share a component.
    let other = store
        .add_plugin_version("klaviyo", "1.0.0", true, b"first build", now)
        .await
        .unwrap();
    assert_eq!(other.number, 1);

    assert!(store.delete_plugin("webhook").await.unwrap());
    assert!(!store.delete_plugin("webhook").await.unwrap(), "gone");
    assert!(store.plugin_versions("webhook").await.unwrap().is_empty());
    assert_eq!(active_version(&*store, "webhook").await, None);
    assert!(store.plugin_removed("webhook").await.unwrap());
    assert!(!store.plugin_removed("klaviyo").await.unwrap());
    assert_eq!(active_version(&*store, "klaviyo").await, Some(1));
    assert!(
        store
            .plugin_component(&other.digest)
            .await
            .unwrap()
            .is_some(),
        "a component another plugin uses stays"
    );
}

// ---- durability ----------------------------------------------------------------------------

async fn what_was_ingested_survives_reopening(backend: &Backend) {
    let (data, store) = backend.open().await;
    let hook = integration(true);
    let new = event(&[&hook]);
    let id = new.record.id;
    store.create_integration(&hook).await.unwrap();
    let ingested = store.insert_events(vec![new.clone()]).await.unwrap();
    assert!(!ingested[0].duplicate);
    let again = store.insert_events(vec![new]).await.unwrap();
    assert!(again[0].duplicate, "the same id twice writes nothing");
    drop(store);

    let store = backend.reopen(&data).await;
    assert_eq!(store.event(id).await.unwrap().unwrap().id, id);
    assert_eq!(store.integrations(Some(SHOP)).await.unwrap(), vec![hook]);
    assert_eq!(claim(&*store, Timestamp::now(), 10).await.len(), 1);
}

/// A batch larger than a write chunk (sled's is 100 events), with a repeated id on each side
/// of a chunk boundary, and many concurrent writers (sharing flushes, for sled's group
/// commit): every event is stored once, every answer is right, and all of it is there after
/// reopening.
async fn large_and_concurrent_ingests_are_all_durable(backend: &Backend) {
    let (data, store) = backend.open().await;
    let hook = integration(true);
    let mut batch: Vec<NewEvent> = (0..250).map(|_| event(&[&hook])).collect();
    // Events 50 and 150 again at the end: repeats of ids stored in earlier chunks.
    let (first, second) = (batch[50].clone(), batch[150].clone());
    batch.push(first.clone());
    batch.push(second.clone());
    let mut ids: Vec<_> = batch[..250].iter().map(|e| e.record.id).collect();
    store.create_integration(&hook).await.unwrap();
    let ingested = store.insert_events(batch).await.unwrap();
    assert_eq!(ingested.len(), 252);
    assert_eq!(ingested.iter().filter(|i| i.duplicate).count(), 2);
    assert!(ingested[250].duplicate && ingested[251].duplicate);
    assert_eq!(ingested[250].record, ingested[50].record);

    let writers: Vec<_> = (0..64)
        .map(|_| {
            let store = store.clone();
            let new = event(&[&hook]);
            ids.push(new.record.id);
            tokio::spawn(async move { store.insert_events(vec![new]).await })
        })
        .collect();
    let all = tokio::time::timeout(Duration::from_secs(30), async {
        for writer in writers {
            let ingested = writer.await.unwrap().unwrap();
            assert!(!ingested[0].duplicate);
        }
    });
    all.await.expect("every concurrent ingest returns");
    drop(store);

    let store = backend.reopen(&data).await;
    for id in &ids {
        assert!(store.event(*id).await.unwrap().is_some(), "event {id} lost");
    }
    let depth = store.queue_depth(Timestamp::now()).await.unwrap();
    assert_eq!(depth.due, 250 + 64, "one queued delivery per stored event");
}

// ---- housekeeping --------------------------------------------------------------------------

async fn the_purge_removes_finished_work_only(backend: &Backend) {
    let (_data, store) = backend.open().await;
    let live = integration(true);
    let paused = integration(false);
    for i in [&live, &paused] {
        store.create_integration(i).await.unwrap();
    }
    // Event one: delivered. Event two: one delivery still retrying. Event three: paused.
    let one = event(&[&live]);
    let two = event(&[&live, &live]);
    let three = event(&[&paused]);
    let ids = [one.record.id, two.record.id, three.record.id];
    store.insert_events(vec![one, two, three]).await.unwrap();
    let now = Timestamp::now();
    let claimed = claim(&*store, now, 10).await;
    assert_eq!(claimed.len(), 3, "paused deliveries are not queued");
    store
        .record_attempt(
            lease(&claimed[0]),
            attempt(1, DeliveryStatus::Succeeded),
            succeeded(),
            now,
            5,
        )
        .await
        .unwrap();
    store
        .record_attempt(
            lease(&claimed[1]),
            attempt(1, DeliveryStatus::Failed),
            finished(DeliveryStatus::Failed, Signal::Failing),
            now,
            5,
        )
        .await
        .unwrap();
    store
        .record_attempt(
            lease(&claimed[2]),
            attempt(1, DeliveryStatus::Retrying),
            retry_at(after(now, 3600)),
            now,
            5,
        )
        .await
        .unwrap();

    // A cutoff before everything removes nothing.
    let none = store
        .purge(Timestamp(now.millis() - 60_000), now)
        .await
        .unwrap();
    assert_eq!((none.deliveries, none.events), (0, 0));

    // Two days on: a backend may keep the log to the day (PostgreSQL drops whole days).
    let cutoff = after(now, 2 * DAY);
    let purged = store.purge(cutoff, cutoff).await.unwrap();
    assert_eq!(purged.deliveries, 2, "the succeeded and the failed one");
    assert_eq!(purged.events, 1, "only the event with nothing left");
    assert!(store.delivery(SHOP, claimed[0].id).await.unwrap().is_none());
    assert!(store.event(ids[0]).await.unwrap().is_none());
    assert!(store.event_json(ids[0]).await.unwrap().is_none());
    assert!(
        store.event(ids[1]).await.unwrap().is_some(),
        "a delivery is still retrying"
    );
    assert!(
        store.event(ids[2]).await.unwrap().is_some(),
        "a delivery is paused"
    );
    let retrying = detail(&*store, SHOP, claimed[2].id).await;
    assert_eq!(retrying.attempts.len(), 1, "its attempts are kept");
    // The indexes forget what was purged.
    let succeeded = DeliveryFilter {
        status: Some(DeliveryStatus::Succeeded),
        ..DeliveryFilter::default()
    };
    assert!(
        store
            .deliveries(SHOP, &succeeded, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let by_customer = DeliveryFilter {
        customer: Some("jane smith".into()),
        ..DeliveryFilter::default()
    };
    assert_eq!(
        store
            .deliveries(SHOP, &by_customer, None, 10)
            .await
            .unwrap()
            .len(),
        2
    );
    let depth = store.queue_depth(now).await.unwrap();
    assert_eq!((depth.scheduled, depth.paused), (1, 1));
}

async fn deleting_an_integration_ends_its_queued_and_paused_deliveries(backend: &Backend) {
    let (_data, store) = backend.open().await;
    let paused = integration(false);
    let queued = integration(true);
    for i in [&paused, &queued] {
        store.create_integration(i).await.unwrap();
    }
    let (one, two) = (event(&[&paused]), event(&[&queued]));
    let (held, waiting) = (one.deliveries[0].id, two.deliveries[0].id);
    store.insert_events(vec![one, two]).await.unwrap();
    assert_eq!(
        detail(&*store, SHOP, held).await.delivery.status,
        DeliveryStatus::Paused
    );
    let now = Timestamp::now();
    for i in [&paused, &queued] {
        assert!(store.delete_integration(SHOP, i.id, now).await.unwrap());
        assert!(
            !store.delete_integration(SHOP, i.id, now).await.unwrap(),
            "already gone"
        );
    }
    for id in [held, waiting] {
        let ended = detail(&*store, SHOP, id).await.delivery;
        assert_eq!(ended.status, DeliveryStatus::Failed);
        assert_eq!(
            ended.last_error.as_deref(),
            Some("the integration was deleted")
        );
    }
    assert!(claim(&*store, now, 10).await.is_empty());
    assert_eq!(store.queue_depth(now).await.unwrap().paused, 0);
}
