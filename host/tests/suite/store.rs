//! The sled store on its own: leases and their recovery, the queue, reopening, and the purge
//! that never removes pending work.

use std::collections::BTreeMap;
use std::time::Duration;

use canopy::store::{
    Attempt, Delivery, DeliveryFilter, DeliveryStatus, EventRecord, Integration, NewEvent, Outcome,
    Signal, SledStore, Store, Timestamp, new_id,
};
use serde_json::json;

fn integration(enabled: bool) -> Integration {
    let now = Timestamp::now();
    Integration {
        id: new_id(),
        name: "Hook".into(),
        plugin: "webhook".into(),
        events: vec!["*".into()],
        settings: json!({}),
        secrets: BTreeMap::new(),
        enabled,
        disabled_reason: (!enabled).then(|| "disabled automatically".into()),
        consecutive_failures: 0,
        rate_limit: None,
        created_at: now,
        updated_at: now,
    }
}

fn event(integrations: &[&Integration]) -> NewEvent {
    let now = Timestamp::now();
    let mut record = EventRecord {
        id: new_id(),
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

fn finished(status: DeliveryStatus) -> Outcome {
    Outcome {
        status,
        next_attempt_at: None,
        error: None,
        signal: Signal::Neutral,
    }
}

#[tokio::test]
async fn leases_hide_claimed_work_until_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    let hook = integration(true);
    store.create_integration(&hook).await.unwrap();
    store
        .insert_events(vec![event(&[&hook]), event(&[&hook])])
        .await
        .unwrap();

    let now = Timestamp::now();
    let lease = now.saturating_add(Duration::from_secs(300));
    let claimed = store.claim_due(now, 10, lease).await.unwrap();
    assert_eq!(claimed.len(), 2);
    assert!(claimed[0].id < claimed[1].id, "oldest first");
    assert!(
        store.claim_due(now, 10, lease).await.unwrap().is_empty(),
        "leased"
    );
    assert_eq!(store.next_due().await.unwrap(), Some(lease));
    let depth = store.queue_depth(now).await.unwrap();
    assert_eq!((depth.due, depth.scheduled), (0, 2));

    // A restart finds the leases of the process that died and makes them due at once.
    assert_eq!(store.recover_leases(now).await.unwrap(), 2);
    assert_eq!(store.claim_due(now, 10, lease).await.unwrap().len(), 2);

    // A retry waits for its time.
    let retry_at = now.saturating_add(Duration::from_secs(60));
    store
        .record_attempt(
            claimed[0].id,
            attempt(1, DeliveryStatus::Retrying),
            Outcome {
                status: DeliveryStatus::Retrying,
                next_attempt_at: Some(retry_at),
                error: Some("503".into()),
                signal: Signal::Failing,
            },
            now,
            5,
        )
        .await
        .unwrap();
    store.recover_leases(now).await.unwrap();
    let due_now = store.claim_due(now, 10, lease).await.unwrap();
    assert_eq!(due_now.len(), 1);
    assert_eq!(due_now[0].id, claimed[1].id);
    let later = store.claim_due(retry_at, 10, lease).await.unwrap();
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].id, claimed[0].id);
    assert_eq!(later[0].attempts, 1);
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
    assert_eq!(store.integrations().await.unwrap(), vec![hook]);
    let now = Timestamp::now();
    assert_eq!(
        store
            .claim_due(now, 10, now.saturating_add(Duration::from_secs(1)))
            .await
            .unwrap()
            .len(),
        1
    );
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
        let store = std::sync::Arc::new(SledStore::open(dir.path()).unwrap());
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
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
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
    let claimed = store
        .claim_due(now, 10, now.saturating_add(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 3, "paused deliveries are not queued");
    store
        .record_attempt(
            claimed[0].id,
            attempt(1, DeliveryStatus::Succeeded),
            finished(DeliveryStatus::Succeeded),
            now,
            5,
        )
        .await
        .unwrap();
    store
        .record_attempt(
            claimed[1].id,
            attempt(1, DeliveryStatus::Failed),
            finished(DeliveryStatus::Failed),
            now,
            5,
        )
        .await
        .unwrap();
    store
        .record_attempt(
            claimed[2].id,
            attempt(1, DeliveryStatus::Retrying),
            Outcome {
                status: DeliveryStatus::Retrying,
                next_attempt_at: Some(now.saturating_add(Duration::from_secs(3600))),
                error: None,
                signal: Signal::Failing,
            },
            now,
            5,
        )
        .await
        .unwrap();

    // A cutoff before everything removes nothing.
    let none = store.purge(Timestamp(now.millis() - 60_000)).await.unwrap();
    assert_eq!((none.deliveries, none.events), (0, 0));

    let purged = store
        .purge(now.saturating_add(Duration::from_secs(1)))
        .await
        .unwrap();
    assert_eq!(purged.deliveries, 2, "the succeeded and the failed one");
    assert_eq!(purged.events, 1, "only the event with nothing left");
    assert!(store.delivery(claimed[0].id).await.unwrap().is_none());
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
    let retrying = store.delivery(claimed[2].id).await.unwrap().unwrap();
    assert_eq!(retrying.attempts.len(), 1, "its attempts are kept");
    // The indexes forget what was purged.
    let succeeded = DeliveryFilter {
        status: Some(DeliveryStatus::Succeeded),
        ..DeliveryFilter::default()
    };
    assert!(
        store
            .deliveries(&succeeded, None, 10)
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
            .deliveries(&by_customer, None, 10)
            .await
            .unwrap()
            .len(),
        2
    );
    let depth = store.queue_depth(now).await.unwrap();
    assert_eq!((depth.scheduled, depth.paused), (1, 1));
}

#[tokio::test]
async fn deleting_an_integration_ends_its_paused_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    let paused = integration(false);
    store.create_integration(&paused).await.unwrap();
    let new = event(&[&paused]);
    let delivery = new.deliveries[0].id;
    store.insert_events(vec![new]).await.unwrap();
    assert_eq!(
        store
            .delivery(delivery)
            .await
            .unwrap()
            .unwrap()
            .delivery
            .status,
        DeliveryStatus::Paused
    );
    assert!(store.delete_integration(paused.id).await.unwrap());
    assert!(
        !store.delete_integration(paused.id).await.unwrap(),
        "already gone"
    );
    let ended = store.delivery(delivery).await.unwrap().unwrap().delivery;
    assert_eq!(ended.status, DeliveryStatus::Failed);
    assert_eq!(
        ended.last_error.as_deref(),
        Some("the integration was deleted")
    );
    assert_eq!(store.queue_depth(Timestamp::now()).await.unwrap().paused, 0);
}
