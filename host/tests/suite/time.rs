//! The scheduler's time on a manual clock (`canopy::clock::Clock::manual`): retries due in
//! hours, a lease that expires under a hanging attempt, and the retention purge, without
//! waiting for any of them. The clock moves only when a test moves it, so the times an
//! attempt records say exactly when the scheduler started it.

use std::time::Duration;

use canopy::clock::Clock;
use canopy::store::Timestamp;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use wiremock::ResponseTemplate;

use crate::harness::{Canopy, PATIENCE, accepting, answering_first, fresh, received, webhook};

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3_600);
const DAY: Duration = Duration::from_secs(86_400);

fn started_at(attempt: &Value) -> Timestamp {
    Timestamp::parse(attempt["started_at"].as_str().unwrap()).unwrap()
}

/// Waits until the delivery has `n` attempts (the clock standing still meanwhile).
async fn with_attempts(canopy: &Canopy, id: &str, n: usize) -> Value {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let delivery = canopy.delivery(id).await;
        if delivery["attempts"].as_array().unwrap().len() >= n {
            return delivery;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never {n} attempts: {delivery:#}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn retries_fall_due_on_the_schedule_and_not_a_minute_before() {
    let t0 = Timestamp::now();
    let clock = Clock::manual(t0);
    let receiver = answering_first(ResponseTemplate::new(503), 2).await;
    let canopy = Canopy::start_on_clock(clock.clone(), |c| {
        c.delivery.retry_schedule = "1h,6h".into();
    })
    .await;
    let integration = canopy
        .integration(webhook(format!("{}/in", receiver.uri())))
        .await;
    let id = canopy.ingest_one(fresh("tier.changed")).await;

    let first = canopy.delivery_with_status(&id, "retrying").await;
    assert_eq!(started_at(&first["attempts"][0]), t0);
    assert_eq!(
        Timestamp::parse(first["next_attempt_at"].as_str().unwrap()),
        Some(t0.saturating_add(HOUR))
    );
    // 59 minutes on, it is scheduled, not due; the retry goes out when the hour is up.
    clock.advance(59 * MINUTE);
    let (_, health) = canopy
        .admin(
            Method::GET,
            &format!("/v1/integrations/{integration}/health"),
            None,
        )
        .await;
    assert_eq!(
        (&health["queue"]["due"], &health["queue"]["scheduled"]),
        (&json!(0), &json!(1)),
        "{health}"
    );
    clock.advance(MINUTE);
    let second = with_attempts(&canopy, &id, 2).await;
    assert_eq!(started_at(&second["attempts"][1]), t0.saturating_add(HOUR));
    assert_eq!(second["status"], "retrying");
    assert_eq!(
        Timestamp::parse(second["next_attempt_at"].as_str().unwrap()),
        Some(t0.saturating_add(7 * HOUR))
    );

    clock.advance(6 * HOUR);
    let done = canopy.delivery_with_status(&id, "succeeded").await;
    assert_eq!(
        started_at(&done["attempts"][2]),
        t0.saturating_add(7 * HOUR)
    );
    assert_eq!(received(&receiver, 3).await.len(), 3);
    canopy.stop().await;
}

#[tokio::test]
async fn an_attempt_that_outlives_its_lease_records_nothing_and_the_delivery_is_sent_again() {
    let t0 = Timestamp::now();
    let clock = Clock::manual(t0);
    // The first request is answered late (after its lease has ended, on the manual clock);
    // the next at once.
    let receiver = answering_first(
        ResponseTemplate::new(200).set_delay(Duration::from_secs(5)),
        1,
    )
    .await;
    let canopy = Canopy::start_on_clock(clock.clone(), |c| {
        c.delivery.lease = Some(MINUTE);
        c.delivery.request_timeout = Duration::from_secs(60);
    })
    .await;
    // Signed, so that each request carries its delivery id (`webhook-id`).
    let mut signed = webhook(format!("{}/in", receiver.uri()));
    signed["secrets"] = json!({"webhook_secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"});
    canopy.integration(signed).await;
    let id = canopy.ingest_one(fresh("tier.changed")).await;
    received(&receiver, 1).await;

    // The lease ends while the first attempt still waits: the delivery is claimed and sent
    // again, under a new lease.
    clock.advance(MINUTE + Duration::from_secs(1));
    let requests = received(&receiver, 2).await;
    let ids: Vec<&str> = requests
        .iter()
        .map(|r| crate::harness::header(r, "webhook-id"))
        .collect();
    assert_eq!(ids, [id.as_str(), id.as_str()], "the same delivery, twice");
    let done = canopy.delivery_with_status(&id, "succeeded").await;
    // The first attempt ends when its late answer comes; its outcome is not recorded: the
    // lease it held is lost.
    canopy
        .metrics_containing(&["canopy_leases_lost_total 1\n"])
        .await;
    let after = canopy.delivery(&id).await;
    assert_eq!(after, done);
    let attempts = after["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{after:#}");
    assert_eq!(
        started_at(&attempts[0]),
        t0.saturating_add(MINUTE + Duration::from_secs(1))
    );
    canopy.stop().await;
}

#[tokio::test]
async fn the_purge_removes_finished_work_past_the_retention_when_its_time_comes() {
    // 01:00 UTC today, so that each delivery below is on a day of its own (PostgreSQL keeps
    // the log by whole days).
    let day = DAY.as_millis() as u64;
    let t0 = Timestamp(Timestamp::now().0 / day * day + HOUR.as_millis() as u64);
    let clock = Clock::manual(t0);
    let receiver = accepting().await;
    let canopy = Canopy::start_on_clock(clock.clone(), |c| {
        c.delivery.retention = DAY;
        c.delivery.purge_interval = HOUR;
    })
    .await;
    canopy
        .integration(webhook(format!("{}/in", receiver.uri())))
        .await;
    let old = canopy.ingest_one(fresh("tier.changed")).await;
    canopy.delivery_with_status(&old, "succeeded").await;
    clock.advance(DAY);
    let recent = canopy.ingest_one(fresh("tier.changed")).await;
    canopy.delivery_with_status(&recent, "succeeded").await;

    // At 00:30 two days on, the retention's cutoff has passed the first delivery, not the
    // second: the purge that runs then removes only the first.
    clock.advance(DAY - 30 * MINUTE);
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let (status, _) = canopy
            .admin(Method::GET, &format!("/v1/deliveries/{old}"), None)
            .await;
        if status == StatusCode::NOT_FOUND {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never purged");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(canopy.delivery(&recent).await["status"], "succeeded");
    canopy.stop().await;
}
