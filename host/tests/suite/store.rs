//! The store on its own, through the `Store` trait: leases and their recovery, the fair claim
//! (round-robin across shops and integrations, in-flight caps, admission), shops and their
//! tokens, shop-scoped lookups, bulk retry, health statistics, the purge that never removes
//! pending work; and, for sled, reopening and group commit.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use canopy::store::{
    Admission, AdmitAll, Admitted, Attempt, Delivery, DeliveryFilter, DeliveryStatus, EventRecord,
    Integration, NewEvent, Outcome, Shop, ShopDeletion, ShopToken, Signal, SledStore, Store,
    Timestamp, TokenKind, new_id,
};
use serde_json::json;
use uuid::Uuid;

const SHOP: &str = "default";

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
    let now = Timestamp::now();
    let mut record = EventRecord {
        id: new_id(),
        shop: integrations.first().map_or(SHOP.into(), |i| i.shop.clone()),
        event: "tier.changed".into(),
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

fn retry_at(at: Timestamp) -> Outcome {
    Outcome {
        status: DeliveryStatus::Retrying,
        next_attempt_at: Some(at),
        error: Some("503".into()),
        signal: Signal::Failing,
    }
}

async fn claim(store: &dyn Store, now: Timestamp, limit: usize) -> Vec<Delivery> {
    let lease = now.saturating_add(Duration::from_secs(300));
    store
        .claim_due(now, limit, lease, &AdmitAll)
        .await
        .unwrap()
        .claimed
}

async fn add_shop(store: &dyn Store, id: &str) {
    assert!(
        store
            .create_shop(&Shop::new(id, id, Timestamp::now()))
            .await
            .unwrap()
    );
}

fn fresh() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
    (dir, store)
}

#[tokio::test]
async fn leases_hide_claimed_work_until_recovered() {
    let (_dir, store) = fresh();
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
    let round = store.claim_due(now, 10, now, &AdmitAll).await.unwrap();
    assert!(round.claimed.is_empty(), "leased");
    assert_eq!(
        round.next_at,
        Some(now.saturating_add(Duration::from_secs(300))),
        "due again when the lease ends"
    );
    let depth = store.queue_depth(now).await.unwrap();
    assert_eq!((depth.due, depth.in_flight, depth.scheduled), (0, 2, 0));

    // A restart finds the leases of the process that died and makes them due at once.
    assert_eq!(store.recover_leases(now).await.unwrap(), 2);
    assert_eq!(claim(&*store, now, 10).await.len(), 2);

    // A retry waits for its time.
    let later = now.saturating_add(Duration::from_secs(60));
    store
        .record_attempt(
            claimed[0].id,
            attempt(1, DeliveryStatus::Retrying),
            retry_at(later),
            now,
            5,
        )
        .await
        .unwrap();
    store.recover_leases(now).await.unwrap();
    let due_now = claim(&*store, now, 10).await;
    assert_eq!(due_now.len(), 1);
    assert_eq!(due_now[0].id, claimed[1].id);
    let then = claim(&*store, later, 10).await;
    assert_eq!(then.len(), 1);
    assert_eq!(then[0].id, claimed[0].id);
    assert_eq!(then[0].attempts, 1);
}

/// Two shops: A has one integration with a backlog and a cap of 2; B has two integrations
/// with a little work each. A claim takes one delivery from each shop in turn, and within B
/// from each integration in turn; A's cap holds however much A has queued.
#[tokio::test]
async fn claims_take_turns_across_shops_and_integrations_within_caps() {
    let (_dir, store) = fresh();
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
    store
        .record_attempt(
            first[0].id,
            attempt(1, DeliveryStatus::Succeeded),
            finished(DeliveryStatus::Succeeded, Signal::Healthy),
            now,
            5,
        )
        .await
        .unwrap();
    let third = claim(&*store, now, 10).await;
    assert_eq!((of(&third, &a1), third.len()), (1, 1));
}

/// Refuses one integration until a given time; admits everyone else.
struct Throttled {
    integration: Uuid,
    until: Timestamp,
}

impl Admission for Throttled {
    fn admit(&self, integration: &Integration, wanted: u32) -> Admitted {
        if integration.id == self.integration {
            Admitted::At(self.until)
        } else {
            Admitted::Now(wanted)
        }
    }
}

#[tokio::test]
async fn work_its_admission_refuses_stays_queued_and_says_when_to_look_again() {
    let (_dir, store) = fresh();
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
    let now = Timestamp::now();
    let until = now.saturating_add(Duration::from_secs(2));
    let gate = Throttled {
        integration: limited.id,
        until,
    };
    let lease = now.saturating_add(Duration::from_secs(300));
    let round = store.claim_due(now, 64, lease, &gate).await.unwrap();
    assert_eq!(round.claimed.len(), 1);
    assert_eq!(round.claimed[0].integration_id, free.id);
    assert_eq!(round.next_at, Some(until));
    let depth = store.queue_depth(now).await.unwrap();
    assert_eq!(
        (depth.due, depth.in_flight),
        (20, 1),
        "the limited integration's work was not touched"
    );
    let open = store.claim_due(until, 64, lease, &AdmitAll).await.unwrap();
    assert_eq!(open.claimed.len(), 10, "then its default cap of 10");
}

#[tokio::test]
async fn a_shops_lookups_never_see_another_shops_data() {
    let (_dir, store) = fresh();
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
            claimed[0].id,
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

#[tokio::test]
async fn shops_tokens_and_a_cascading_deletion() {
    let (_dir, store) = fresh();
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
        let ended = store
            .delivery("green.myshopify.com", id)
            .await
            .unwrap()
            .unwrap()
            .delivery;
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
    let later = now.saturating_add(Duration::from_secs(60));
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

#[tokio::test]
async fn health_is_read_from_statistics_of_every_attempt() {
    let (_dir, store) = fresh();
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
            .record_attempt(delivery.id, tried, finished(status, signal), now, 0)
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
    let tomorrow = now.saturating_add(Duration::from_secs(23 * 3600));
    let later = store
        .integration_health(SHOP, hook.id, tomorrow)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((later.last_hour.attempts, later.last_day.attempts), (0, 4));
}

#[tokio::test]
async fn what_was_ingested_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let hook = integration(true);
    let new = event(&[&hook]);
    let id = new.record.id;
    {
        let store = SledStore::open(dir.path()).unwrap();
        store.create_integration(&hook).await.unwrap();
        let ingested = store.insert_events(vec![new.clone()]).await.unwrap();
        assert!(!ingested[0].duplicate);
        let again = store.insert_events(vec![new]).await.unwrap();
        assert!(again[0].duplicate, "the same id twice writes nothing");
    }
    let store = SledStore::open(dir.path()).unwrap();
    assert_eq!(store.event(id).await.unwrap().unwrap().id, id);
    assert_eq!(store.integrations(Some(SHOP)).await.unwrap(), vec![hook]);
    assert_eq!(claim(&store, Timestamp::now(), 10).await.len(), 1);
}

/// A batch larger than the store's write chunk (100 events), with a repeated id on each side
/// of a chunk boundary, and many concurrent writers sharing flushes (group commit): every
/// event is stored once, every answer is right, and all of it is there after reopening.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_and_concurrent_ingests_are_all_durable() {
    let dir = tempfile::tempdir().unwrap();
    let hook = integration(true);
    let mut batch: Vec<NewEvent> = (0..250).map(|_| event(&[&hook])).collect();
    // Events 50 and 150 again at the end: repeats of ids stored in earlier chunks.
    let (first, second) = (batch[50].clone(), batch[150].clone());
    batch.push(first.clone());
    batch.push(second.clone());
    let mut ids: Vec<_> = batch[..250].iter().map(|e| e.record.id).collect();
    {
        let store = Arc::new(SledStore::open(dir.path()).unwrap());
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
    }
    let store = SledStore::open(dir.path()).unwrap();
    for id in &ids {
        assert!(store.event(*id).await.unwrap().is_some(), "event {id} lost");
    }
    let depth = store.queue_depth(Timestamp::now()).await.unwrap();
    assert_eq!(depth.due, 250 + 64, "one queued delivery per stored event");
}

#[tokio::test]
async fn the_purge_removes_finished_work_only() {
    let (_dir, store) = fresh();
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
            claimed[0].id,
            attempt(1, DeliveryStatus::Succeeded),
            finished(DeliveryStatus::Succeeded, Signal::Healthy),
            now,
            5,
        )
        .await
        .unwrap();
    store
        .record_attempt(
            claimed[1].id,
            attempt(1, DeliveryStatus::Failed),
            finished(DeliveryStatus::Failed, Signal::Failing),
            now,
            5,
        )
        .await
        .unwrap();
    store
        .record_attempt(
            claimed[2].id,
            attempt(1, DeliveryStatus::Retrying),
            retry_at(now.saturating_add(Duration::from_secs(3600))),
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

    let cutoff = now.saturating_add(Duration::from_secs(1));
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
    let retrying = store.delivery(SHOP, claimed[2].id).await.unwrap().unwrap();
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

#[tokio::test]
async fn deleting_an_integration_ends_its_queued_and_paused_deliveries() {
    let (_dir, store) = fresh();
    let paused = integration(false);
    let queued = integration(true);
    for i in [&paused, &queued] {
        store.create_integration(i).await.unwrap();
    }
    let (one, two) = (event(&[&paused]), event(&[&queued]));
    let (held, waiting) = (one.deliveries[0].id, two.deliveries[0].id);
    store.insert_events(vec![one, two]).await.unwrap();
    let status = |store: Arc<dyn Store>, id| async move {
        store.delivery(SHOP, id).await.unwrap().unwrap().delivery
    };
    assert_eq!(
        status(store.clone(), held).await.status,
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
        let ended = status(store.clone(), id).await;
        assert_eq!(ended.status, DeliveryStatus::Failed);
        assert_eq!(
            ended.last_error.as_deref(),
            Some("the integration was deleted")
        );
    }
    assert!(claim(&*store, now, 10).await.is_empty());
    assert_eq!(store.queue_depth(now).await.unwrap().paused, 0);
}
