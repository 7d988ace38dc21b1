//! The delivery pipeline end to end: the real HTTP API, the real bundled plugins, a real
//! embedded store in a temp directory (redb, or sled with `CANOPY_TEST_STORE=sled`), and fake
//! receivers (`wiremock`) on loopback. Platform hosts reach the receivers through the egress
//! override, so the plugins are unchanged.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Sha256;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::{
    ADMIN_TOKEN, Canopy, INGEST_TOKEN, answering_first, fresh, header, received, sample,
};

const KLAVIYO_KEY: &str = "pk_live_klaviyo_0123456789abcdef";
const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const BEARER: &str = "bearer-token-0123456789";

/// The golden request of a plugin for a sample event (host/tests/golden).
fn golden(plugin: &str, event: &str) -> Value {
    let path = format!(
        "{}/tests/golden/{plugin}/{event}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let requests: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    requests[0].clone()
}

/// Checks that a received request is exactly the golden one, with secrets filled in.
fn assert_is_golden(request: &wiremock::Request, golden: &Value, secrets: &[(&str, &str)]) {
    let body: Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(body, golden["body"], "body");
    let url = url::Url::parse(golden["url"].as_str().unwrap()).unwrap();
    assert_eq!(request.url.path(), url.path());
    assert_eq!(request.url.query(), url.query());
    assert_eq!(request.method.as_str(), golden["method"]);
    for line in golden["headers"].as_array().unwrap() {
        let (name, value) = line.as_str().unwrap().split_once(": ").unwrap();
        let mut expected = value.to_owned();
        for (secret, plain) in secrets {
            expected = expected.replace(&format!("{{{{secret:{secret}}}}}"), plain);
        }
        assert_eq!(header(request, name), expected, "header {name}");
    }
}

fn routed(host: &str, server: &MockServer) -> canopy::delivery::sender::EgressOverride {
    format!("{host}={}", server.uri()).parse().unwrap()
}

async fn accepting(status: u16) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(status))
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn klaviyo_receives_exactly_the_expected_request_and_the_log_hides_the_key() {
    let receiver = accepting(202).await;
    let canopy = Canopy::start(|c| {
        c.delivery.allow_private_networks = false;
        c.delivery.egress_override = vec![routed("a.klaviyo.com", &receiver)];
    })
    .await;
    let integration = canopy
        .integration(json!({
            "name": "Klaviyo", "plugin": "klaviyo", "events": ["seeds.earned.order"],
            "secrets": {"api_key": KLAVIYO_KEY}
        }))
        .await;
    let delivery = canopy.ingest_one(sample("seeds.earned.order")).await;
    let done = canopy.delivery_with_status(&delivery, "succeeded").await;

    let requests = received(&receiver, 1).await;
    assert_eq!(requests.len(), 1);
    assert_is_golden(
        &requests[0],
        &golden("klaviyo", "seeds.earned.order"),
        &[("api_key", KLAVIYO_KEY)],
    );

    assert_eq!(done["integration_id"], integration);
    let attempt = &done["attempts"][0];
    assert_eq!(attempt["number"], 1);
    assert_eq!(attempt["outcome"], "succeeded");
    let exchange = &attempt["exchanges"][0];
    assert_eq!(exchange["response"]["status"], 202);
    assert_eq!(
        exchange["request"]["url"],
        "https://a.klaviyo.com/api/events"
    );
    assert!(
        exchange["request"]["headers"]
            .to_string()
            .contains("Klaviyo-API-Key [secret:api_key]"),
        "{exchange}"
    );
    let (_, integration_out) = canopy
        .admin(
            Method::GET,
            &format!("/v1/integrations/{integration}"),
            None,
        )
        .await;
    assert_eq!(integration_out["secrets"]["api_key"], "••••cdef");
    for shown in [done.to_string(), integration_out.to_string()] {
        assert!(!shown.contains(KLAVIYO_KEY), "the key leaked: {shown}");
    }
    canopy.stop().await;
}

#[tokio::test]
async fn omnisend_and_shopify_flow_receive_exactly_the_expected_requests() {
    let omnisend = accepting(202).await;
    let shopify = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/admin/api/2026-04/graphql.json"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"data": {"flowTriggerReceive": {"userErrors": []}}})),
        )
        .mount(&shopify)
        .await;
    let canopy = Canopy::start(|c| {
        c.delivery.egress_override = vec![
            routed("api.omnisend.com", &omnisend),
            routed("*.myshopify.com", &shopify),
        ];
    })
    .await;
    canopy
        .integration(json!({
            "name": "Omnisend", "plugin": "omnisend", "events": ["*"],
            "secrets": {"api_key": "omnisend-key-0123456789"}
        }))
        .await;
    canopy
        .integration(json!({
            "name": "Flow", "plugin": "shopify-flow", "events": ["tier.changed"],
            "settings": {"shop_domain": "green-shop.myshopify.com", "trigger_handle": "loyaltytree-event"},
            "secrets": {"access_token": "shpat_0123456789abcdef"}
        }))
        .await;

    let (status, answer) = canopy.ingest(sample("tier.changed")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let deliveries = answer["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 2, "both subscribe to tier.changed");
    for d in deliveries {
        canopy
            .delivery_with_status(d["id"].as_str().unwrap(), "succeeded")
            .await;
    }
    assert_is_golden(
        &received(&omnisend, 1).await[0],
        &golden("omnisend", "tier.changed"),
        &[("api_key", "omnisend-key-0123456789")],
    );
    assert_is_golden(
        &received(&shopify, 1).await[0],
        &golden("shopify-flow", "tier.changed"),
        &[("access_token", "shpat_0123456789abcdef")],
    );

    // Only Omnisend takes every event.
    let (_, answer) = canopy.ingest(fresh("referral.visit")).await;
    assert_eq!(answer["deliveries"].as_array().unwrap().len(), 1);
    canopy.stop().await;
}

fn hex_hmac(key: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Standard Webhooks verification, written from the specification: the signature is
/// base64(HMAC-SHA256(base64-decoded whsec key, "{id}.{timestamp}.{body}")).
fn standard_webhooks_signature(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> String {
    let key = BASE64
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

#[test]
fn the_standard_webhooks_check_reproduces_the_published_vector() {
    // From the Standard Webhooks specification's test vectors.
    let signature = standard_webhooks_signature(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "1614265330",
        br#"{"test": 2432232314}"#,
    );
    assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
}

#[tokio::test]
async fn webhook_requests_are_signed_and_keep_their_id_across_retries() {
    let receiver = answering_first(ResponseTemplate::new(503), 1).await;
    let canopy = Canopy::start(|c| {
        c.delivery.egress_override = vec![routed("hooks.example.com", &receiver)];
    })
    .await;
    let mut settings = json!({
        "url": "https://hooks.example.com/loyalty/{{ customer.email }}?type={{ event }}",
        "headers": {"X-Source": "loyaltytree"},
        "auth": "bearer",
    });
    settings["templates"] = json!({
        "seeds.earned.order": "{\"email\": {{ customer.email }}, \"seeds\": {{ amount }}, \"order\": {{ order_number }}, \"name\": {{ event_name }}}"
    });
    canopy
        .integration(json!({
            "name": "Hook", "plugin": "webhook", "events": ["seeds.earned.order"],
            "settings": settings,
            "secrets": {"token": BEARER, "webhook_secret": WEBHOOK_SECRET}
        }))
        .await;
    let delivery = canopy.ingest_one(sample("seeds.earned.order")).await;
    let done = canopy.delivery_with_status(&delivery, "succeeded").await;
    assert_eq!(done["attempts"].as_array().unwrap().len(), 2, "{done:#}");
    assert_eq!(done["attempts"][0]["outcome"], "retrying");

    let requests = received(&receiver, 2).await;
    assert_is_golden(
        &requests[1],
        &golden("webhook", "seeds.earned.order"),
        &[("token", BEARER)],
    );
    for request in &requests {
        assert_eq!(
            header(request, "webhook-id"),
            delivery,
            "the delivery id, on every try"
        );
        assert_eq!(
            header(request, "X-LoyaltyTree-Signature"),
            hex_hmac(WEBHOOK_SECRET.as_bytes(), &request.body)
        );
        let timestamp = header(request, "webhook-timestamp");
        assert_eq!(
            header(request, "webhook-signature"),
            standard_webhooks_signature(WEBHOOK_SECRET, &delivery, timestamp, &request.body)
        );
    }
    assert!(!done.to_string().contains(BEARER));
    canopy.stop().await;
}

#[tokio::test]
async fn failing_receivers_are_retried_on_schedule_until_exhausted() {
    let receiver = accepting(503).await;
    let canopy = Canopy::start(|_| {}).await;
    canopy.integration(webhook_to(&receiver, "/down")).await;
    let delivery = canopy.ingest_one(fresh("tier.changed")).await;
    let done = canopy.delivery_with_status(&delivery, "exhausted").await;
    let attempts = done["attempts"].as_array().unwrap();
    assert_eq!(
        attempts.len(),
        3,
        "the first attempt and the schedule's two retries"
    );
    assert_eq!(received(&receiver, 3).await.len(), 3);
    let started: Vec<u64> = attempts
        .iter()
        .map(|a| {
            canopy::store::Timestamp::parse(a["started_at"].as_str().unwrap())
                .unwrap()
                .millis()
        })
        .collect();
    assert!(
        started[1] - started[0] >= 50,
        "first retry after 50 ms: {started:?}"
    );
    assert!(
        started[2] - started[1] >= 100,
        "second retry after 100 ms: {started:?}"
    );
    assert_eq!(attempts[0]["outcome"], "retrying");
    assert_eq!(attempts[2]["outcome"], "exhausted");
    assert!(
        done["last_error"]
            .as_str()
            .unwrap()
            .contains("no retries left after 3 attempts"),
        "{done}"
    );
    canopy.stop().await;
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "7"))
        .mount(&receiver)
        .await;
    let canopy = Canopy::start(|c| c.delivery.retry_schedule = "50ms,1h".into()).await;
    canopy.integration(webhook_to(&receiver, "/busy")).await;
    let delivery = canopy.ingest_one(fresh("tier.changed")).await;
    let waiting = canopy.delivery_with_status(&delivery, "retrying").await;
    let started =
        canopy::store::Timestamp::parse(waiting["attempts"][0]["started_at"].as_str().unwrap())
            .unwrap();
    let next =
        canopy::store::Timestamp::parse(waiting["next_attempt_at"].as_str().unwrap()).unwrap();
    let delay = next.millis() - started.millis();
    assert!(
        (7_000..8_000).contains(&delay),
        "Retry-After: 7 replaces the 50 ms step: {delay} ms"
    );
    canopy.stop().await;
}

/// A generic webhook integration sending every event to `receiver` at `path`.
fn webhook_to(receiver: &MockServer, path: &str) -> Value {
    json!({
        "name": "Hook", "plugin": "webhook", "events": ["*"],
        "settings": {"url": format!("{}{path}", receiver.uri())}
    })
}

/// Workers keep integrations in memory between attempts (with their secrets opened): the
/// attempt after a change through the API uses the new settings and the new secret.
#[tokio::test]
async fn the_attempt_after_a_change_uses_what_the_api_saved() {
    const FIRST: &str = "whsec-first-0123456789abcdef";
    const SECOND: &str = "whsec-second-0123456789abcdef";
    let (first, second) = (accepting(200).await, accepting(200).await);
    let canopy = Canopy::start(|_| {}).await;
    let mut hook = webhook_to(&first, "/first");
    hook["secrets"] = json!({ "webhook_secret": FIRST });
    let integration = canopy.integration(hook).await;
    for _ in 0..2 {
        let delivery = canopy.ingest_one(fresh("tier.changed")).await;
        canopy.delivery_with_status(&delivery, "succeeded").await;
    }
    for request in received(&first, 2).await {
        assert_eq!(
            header(&request, "X-LoyaltyTree-Signature"),
            hex_hmac(FIRST.as_bytes(), &request.body)
        );
    }

    let (status, changed) = canopy
        .admin(
            Method::PATCH,
            &format!("/v1/integrations/{integration}"),
            Some(json!({
                "settings": {"url": format!("{}/second", second.uri())},
                "secrets": {"webhook_secret": SECOND},
            })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    let delivery = canopy.ingest_one(fresh("tier.changed")).await;
    canopy.delivery_with_status(&delivery, "succeeded").await;
    let sent = received(&second, 1).await;
    assert_eq!(sent[0].url.path(), "/second");
    assert_eq!(header(&sent[0], "webhook-id"), delivery);
    assert_eq!(
        header(&sent[0], "X-LoyaltyTree-Signature"),
        hex_hmac(SECOND.as_bytes(), &sent[0].body),
        "signed with the new secret"
    );
    assert_eq!(
        first.received_requests().await.unwrap().len(),
        2,
        "nothing more went to the old address"
    );
    canopy.stop().await;
}

#[tokio::test]
async fn five_failed_deliveries_disable_an_integration_and_paused_ones_go_out_on_re_enable() {
    let receiver = MockServer::start().await;
    let rejecting = Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400))
        .mount_as_scoped(&receiver)
        .await;
    let canopy = Canopy::start(|c| c.delivery.retry_schedule = String::new()).await;
    let integration = canopy.integration(webhook_to(&receiver, "/strict")).await;
    for _ in 0..5 {
        let delivery = canopy.ingest_one(fresh("tier.changed")).await;
        canopy.delivery_with_status(&delivery, "failed").await;
    }
    let (_, state) = canopy
        .admin(
            Method::GET,
            &format!("/v1/integrations/{integration}"),
            None,
        )
        .await;
    assert_eq!(state["enabled"], false, "{state}");
    assert_eq!(state["consecutive_failures"], 5);
    assert!(
        state["disabled_reason"]
            .as_str()
            .unwrap()
            .contains("5 consecutive")
    );

    // Events keep arriving while it is disabled: kept, paused.
    let (_, answer) = canopy.ingest(fresh("tier.changed")).await;
    let paused_at_ingest = answer["deliveries"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(answer["deliveries"][0]["status"], "paused");
    let paused = canopy.delivery(&paused_at_ingest).await;
    assert_eq!(paused["status"], "paused");
    assert_eq!(
        received(&receiver, 5).await.len(),
        5,
        "nothing sent while disabled"
    );

    drop(rejecting);
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let (status, enabled) = canopy
        .admin(
            Method::PATCH,
            &format!("/v1/integrations/{integration}"),
            Some(json!({"enabled": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{enabled}");
    assert_eq!(enabled["consecutive_failures"], 0);
    assert!(enabled.get("disabled_reason").is_none());
    canopy
        .delivery_with_status(&paused_at_ingest, "succeeded")
        .await;
    assert_eq!(received(&receiver, 6).await.len(), 6);
    canopy.stop().await;
}

#[tokio::test]
async fn customers_without_email_are_skipped_for_klaviyo() {
    let receiver = accepting(202).await;
    let canopy = Canopy::start(|c| {
        c.delivery.egress_override = vec![routed("a.klaviyo.com", &receiver)];
    })
    .await;
    canopy
        .integration(json!({
            "name": "Klaviyo", "plugin": "klaviyo", "events": ["*"],
            "secrets": {"api_key": KLAVIYO_KEY}
        }))
        .await;
    let mut anonymous = fresh("seeds.earned.visit");
    anonymous["customer"] = json!({"first_name": "Anon"});
    let delivery = canopy.ingest_one(anonymous).await;
    let skipped = canopy.delivery_with_status(&delivery, "skipped").await;
    assert_eq!(skipped["last_error"], "Klaviyo requires a customer email");
    assert_eq!(skipped["attempts"][0]["exchanges"], json!([]));
    assert!(receiver.received_requests().await.unwrap().is_empty());
    canopy.stop().await;
}

#[tokio::test]
async fn internal_destinations_are_refused_unless_allowed() {
    let receiver = accepting(200).await;
    let canopy = Canopy::start(|c| c.delivery.allow_private_networks = false).await;
    canopy.integration(webhook_to(&receiver, "/internal")).await;
    let port = receiver.address().port();
    canopy
        .integration(json!({
            "name": "By name", "plugin": "webhook", "events": ["*"],
            "settings": {"url": format!("http://localhost:{port}/by-name")}
        }))
        .await;
    let (_, answer) = canopy.ingest(fresh("tier.changed")).await;
    for d in answer["deliveries"].as_array().unwrap() {
        let failed = canopy
            .delivery_with_status(d["id"].as_str().unwrap(), "failed")
            .await;
        let error = failed["last_error"].as_str().unwrap();
        assert!(error.contains("internal address"), "{error}");
        assert_eq!(
            failed["attempts"].as_array().unwrap().len(),
            1,
            "not retried"
        );
    }
    assert!(receiver.received_requests().await.unwrap().is_empty());
    canopy.stop().await;
}

#[tokio::test]
async fn a_repeated_event_id_is_a_no_op_with_the_original_answer() {
    let receiver = accepting(200).await;
    let canopy = Canopy::start(|_| {}).await;
    canopy.integration(webhook_to(&receiver, "/once")).await;
    let event = fresh("gift_card.earned");
    let (first_status, first) = canopy.ingest(event.clone()).await;
    let (again_status, again) = canopy.ingest(event.clone()).await;
    assert_eq!(first_status, StatusCode::ACCEPTED);
    assert_eq!(again_status, StatusCode::OK);
    assert_eq!(again["deliveries"], first["deliveries"]);
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["duplicate"], true);
    let delivery = first["deliveries"][0]["id"].as_str().unwrap();
    canopy.delivery_with_status(delivery, "succeeded").await;
    // A batch repeating it (twice) adds nothing either.
    let (status, batch) = canopy
        .ingest(json!({"events": [event.clone(), event]}))
        .await;
    assert_eq!(status, StatusCode::OK, "{batch}");
    let (_, log) = canopy.admin(Method::GET, "/v1/deliveries", None).await;
    assert_eq!(log["deliveries"].as_array().unwrap().len(), 1);
    assert_eq!(receiver.received_requests().await.unwrap().len(), 1);
    canopy.stop().await;
}

#[tokio::test]
async fn batches_fan_out_and_metrics_count_them() {
    let receiver = accepting(200).await;
    let canopy = Canopy::start(|_| {}).await;
    canopy.integration(webhook_to(&receiver, "/batch")).await;
    let events: Vec<Value> = ["tier.changed", "eco.tree_planted", "referral.generated"]
        .iter()
        .map(|k| fresh(k))
        .collect();
    let (status, answer) = canopy.ingest(json!({ "events": events })).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let answers = answer["events"].as_array().unwrap();
    assert_eq!(answers.len(), 3);
    for (answer, event) in answers.iter().zip(&events) {
        assert_eq!(answer["id"], event["id"]);
        canopy
            .delivery_with_status(answer["deliveries"][0]["id"].as_str().unwrap(), "succeeded")
            .await;
    }
    canopy
        .metrics_containing(&[
            "canopy_events_ingested_total 3",
            "canopy_deliveries_total{status=\"succeeded\"} 3",
            "canopy_queue_depth{state=\"due\"} 0",
            "canopy_attempt_duration_seconds_count{plugin=\"webhook\"} 3",
            "canopy_plugin_call_duration_seconds_count{plugin=\"webhook\",call=\"transform\"} 3",
        ])
        .await;
    canopy.stop().await;
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_writes_nothing() {
    let canopy = Canopy::start(|c| c.delivery.max_ingest_body_kib = 64).await;
    let receiver = accepting(200).await;
    canopy.integration(webhook_to(&receiver, "/never")).await;
    let raw = |body: &'static str, token: &'static str| {
        let request = canopy
            .client
            .post(format!("{}/v1/events", canopy.url))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let (status, error) = raw("{\"event\": ", INGEST_TOKEN).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["error"]["code"], "invalid_json");
    let (status, error) = raw(
        r#"{"event":"seeds.lost","timestamp":"2026-02-06T14:30:00Z"}"#,
        INGEST_TOKEN,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["error"]["code"], "unknown_event");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("seeds.earned.order")
    );
    assert_eq!(
        error["error"]["details"]["valid_events"]
            .as_array()
            .unwrap()
            .len(),
        19
    );
    let (status, error) = raw(r#"{"timestamp":"2026-02-06T14:30:00Z"}"#, INGEST_TOKEN).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["error"]["code"], "missing_field");
    let (status, error) = raw(
        r#"{"event":"tier.changed","timestamp":"2026-02-06T14:30:00Z"}"#,
        "wrong",
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error["error"]["code"], "unauthorized");
    let (status, _) = raw(
        r#"{"event":"tier.changed","timestamp":"2026-02-06T14:30:00Z"}"#,
        ADMIN_TOKEN,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the admin token does not ingest"
    );
    let (status, error) = canopy
        .call(Method::GET, "/v1/deliveries", INGEST_TOKEN, None)
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the ingest token opens no admin route"
    );
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("admin token")
    );

    let big = json!({"event": "tier.changed", "timestamp": "2026-02-06T14:30:00Z", "note": "x".repeat(70_000)});
    let (status, error) = canopy.ingest(big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error["error"]["code"], "body_too_large");

    let too_many: Vec<Value> = (0..1001)
        .map(|_| json!({"event": "tier.changed"}))
        .collect();
    let (status, error) = canopy.ingest(json!({ "events": too_many })).await;
    assert!(status == StatusCode::BAD_REQUEST, "{status} {error}");

    // One bad event in a batch: nothing of the batch is written.
    let good = fresh("tier.changed");
    let (status, error) = canopy
        .ingest(json!({"events": [good.clone(), {"event": "tier.changed", "timestamp": "never"}]}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["error"]["details"]["index"], 1);
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("events[1]: ")
    );
    let (_, log) = canopy.admin(Method::GET, "/v1/deliveries", None).await;
    assert_eq!(log["deliveries"], json!([]), "nothing written");
    // The good event alone is new, so it was not stored by the failed batch.
    let (status, _) = canopy.ingest(good).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    canopy.stop().await;
}

#[tokio::test]
async fn integrations_are_checked_by_their_plugin() {
    let canopy = Canopy::start(|_| {}).await;
    let create = |body: Value| canopy.admin(Method::POST, "/v1/integrations", Some(body));
    let (status, error) = create(json!({"name": "x", "plugin": "nope", "events": ["*"]})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("klaviyo"),
        "{error}"
    );
    let (status, error) = create(json!({"name": "x", "plugin": "klaviyo", "events": ["*"]})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error["error"]["code"], "invalid_settings", "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("api_key"),
        "{error}"
    );
    let (status, error) = create(json!({
        "name": "x", "plugin": "klaviyo", "events": ["seeds.lost"], "secrets": {"api_key": KLAVIYO_KEY}
    }))
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error["error"]["code"], "unknown_event");
    let (status, error) = create(json!({
        "name": "x", "plugin": "klaviyo", "events": ["*"], "settings": {"api_key": KLAVIYO_KEY}
    }))
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error["error"]["code"], "secret_in_settings");
    let (status, error) = create(json!({
        "name": "x", "plugin": "klaviyo", "events": ["*"], "secrets": {"api_key": KLAVIYO_KEY, "other": "y"}
    }))
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error["error"]["code"], "unknown_secret");
    let (status, error) = canopy
        .call(Method::POST, "/v1/integrations", ADMIN_TOKEN, None)
        .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{error}");
    let (status, error) = canopy
        .admin(Method::GET, "/v1/integrations/not-an-id", None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    let (status, _) = canopy
        .admin(
            Method::GET,
            &format!("/v1/integrations/{}", uuid::Uuid::now_v7()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    canopy.stop().await;
}

#[tokio::test]
async fn the_delivery_log_filters_by_every_field() {
    let receiver = accepting(200).await;
    let canopy = Canopy::start(|_| {}).await;
    let a = canopy.integration(webhook_to(&receiver, "/a")).await;
    let b = canopy
        .integration(json!({
            "name": "B", "plugin": "webhook", "events": ["tier.changed"],
            "settings": {"url": format!("{}/b", receiver.uri())}
        }))
        .await;
    let mut other = fresh("tier.changed");
    other["customer"] = json!({"email": "ana@example.com", "display_name": "Ana Lima"});
    let (_, first) = canopy.ingest(fresh("tier.changed")).await;
    let (_, second) = canopy.ingest(other).await;
    let (_, third) = canopy.ingest(fresh("eco.tree_planted")).await;
    let all: Vec<String> = [&first, &second, &third]
        .iter()
        .flat_map(|a| a["deliveries"].as_array().unwrap().clone())
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(all.len(), 5);
    for id in &all {
        canopy.delivery_with_status(id, "succeeded").await;
    }
    let ids = |query: String| {
        let canopy = &canopy;
        async move {
            let (status, page) = canopy
                .admin(Method::GET, &format!("/v1/deliveries?{query}"), None)
                .await;
            assert_eq!(status, StatusCode::OK, "{page}");
            page["deliveries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    let newest_first: Vec<String> = all.iter().rev().cloned().collect();
    let mut everything = ids(String::new()).await;
    let mut sorted = everything.clone();
    sorted.sort();
    sorted.reverse();
    assert_eq!(everything, sorted, "newest first");
    everything.sort();
    let mut expected = newest_first.clone();
    expected.sort();
    assert_eq!(everything, expected);
    assert_eq!(ids(format!("integration={b}")).await.len(), 2);
    assert_eq!(ids(format!("integration={a}")).await.len(), 3);
    assert_eq!(ids("event=eco.tree_planted".into()).await.len(), 1);
    assert_eq!(ids("customer=ANA@example.com".into()).await.len(), 2);
    assert_eq!(ids("customer=ana%20lima".into()).await.len(), 2);
    assert_eq!(
        ids(format!("customer=ana@example.com&integration={b}"))
            .await
            .len(),
        1
    );
    assert_eq!(ids("status=succeeded".into()).await.len(), 5);
    assert_eq!(ids("status=failed".into()).await.len(), 0);
    assert_eq!(ids("from=2100-01-01T00:00:00Z".into()).await.len(), 0);
    assert_eq!(ids("to=2100-01-01T00:00:00Z".into()).await.len(), 5);
    // Pages of two, following the cursor, cover everything once.
    let mut paged = Vec::new();
    let mut cursor = String::new();
    loop {
        let (_, page) = canopy
            .admin(
                Method::GET,
                &format!("/v1/deliveries?limit=2{cursor}"),
                None,
            )
            .await;
        for d in page["deliveries"].as_array().unwrap() {
            paged.push(d["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(paged, ids(String::new()).await);
    let (status, error) = canopy
        .admin(Method::GET, "/v1/deliveries?status=lost", None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("exhausted")
    );
    canopy.stop().await;
}

#[tokio::test]
async fn shutdown_releases_attempts_that_do_not_finish_and_a_restart_sends_them() {
    let dir = tempfile::tempdir().unwrap();
    let slow = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(30)))
        .mount(&slow)
        .await;
    let canopy = Canopy::start_in(dir.path(), |c| {
        c.delivery.shutdown_grace = Duration::from_millis(200);
        c.delivery.request_timeout = Duration::from_secs(60);
    })
    .await;
    canopy.integration(webhook_to(&slow, "/slow")).await;
    let delivery = canopy.ingest_one(fresh("tier.changed")).await;
    received(&slow, 1).await;
    let stopping = std::time::Instant::now();
    canopy.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "bounded by the grace period"
    );

    let fast = accepting(200).await;
    let restarted = Canopy::start_in(dir.path(), |_| {}).await;
    // Point the integration at a receiver that answers; the released delivery goes out.
    let (_, list) = restarted.admin(Method::GET, "/v1/integrations", None).await;
    let id = list["integrations"][0]["id"].as_str().unwrap().to_owned();
    let (status, _) = restarted
        .admin(
            Method::PATCH,
            &format!("/v1/integrations/{id}"),
            Some(json!({"settings": {"url": format!("{}/fast", fast.uri())}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    restarted.delivery_with_status(&delivery, "succeeded").await;
    assert_eq!(received(&fast, 1).await.len(), 1);
    restarted.stop().await;
}

#[tokio::test]
async fn an_integration_is_paced_by_its_rate_limit() {
    let receiver = accepting(200).await;
    let canopy = Canopy::start(|_| {}).await;
    let mut hook = webhook_to(&receiver, "/paced");
    hook["rate_limit"] = json!({"requests": 2, "per_seconds": 3600});
    let integration = canopy.integration(hook).await;
    let mut deliveries = Vec::new();
    for _ in 0..3 {
        deliveries.push(canopy.ingest_one(fresh("tier.changed")).await);
    }
    for id in &deliveries[..2] {
        canopy.delivery_with_status(id, "succeeded").await;
    }
    // The third waits in the queue: never claimed, never put back, no attempt, no worker.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held = canopy.delivery(&deliveries[2]).await;
    assert_eq!(held["status"], "pending", "{held}");
    assert_eq!(held["attempts"], json!([]));
    assert!(held.get("lease_until").is_none(), "{held}");
    assert_eq!(
        held["updated_at"], held["created_at"],
        "never taken out and put back"
    );
    let (_, health) = canopy
        .admin(
            Method::GET,
            &format!("/v1/integrations/{integration}/health"),
            None,
        )
        .await;
    assert_eq!(health["queue"]["due"], 1, "{health}");
    assert_eq!(health["queue"]["in_flight"], 0, "{health}");
    assert_eq!(receiver.received_requests().await.unwrap().len(), 2);
    canopy.stop().await;
}

#[tokio::test]
async fn a_failed_delivery_can_be_retried_by_hand() {
    let receiver = MockServer::start().await;
    let rejecting = Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(422))
        .mount_as_scoped(&receiver)
        .await;
    let canopy = Canopy::start(|_| {}).await;
    canopy.integration(webhook_to(&receiver, "/later")).await;
    let delivery = canopy.ingest_one(fresh("tier.changed")).await;
    canopy.delivery_with_status(&delivery, "failed").await;
    drop(rejecting);
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let retry = format!("/v1/deliveries/{delivery}/retry");
    let (status, answer) = canopy.admin(Method::POST, &retry, None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let done = canopy.delivery_with_status(&delivery, "succeeded").await;
    assert_eq!(done["attempts"].as_array().unwrap().len(), 2);
    let (status, answer) = canopy.admin(Method::POST, &retry, None).await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a succeeded delivery is not sent again: {answer}"
    );
    canopy.stop().await;
}

#[tokio::test]
async fn admin_routes_name_what_is_wrong() {
    let canopy = Canopy::start(|_| {}).await;
    let unknown = uuid::Uuid::now_v7();
    let expect = |status: StatusCode, code: &'static str| {
        move |(got, body): (StatusCode, Value)| {
            assert_eq!(got, status, "{body}");
            assert_eq!(body["error"]["code"], code, "{body}");
        }
    };
    expect(StatusCode::NOT_FOUND, "not_found")(
        canopy
            .admin(Method::GET, &format!("/v1/deliveries/{unknown}"), None)
            .await,
    );
    expect(StatusCode::NOT_FOUND, "not_found")(
        canopy
            .admin(
                Method::POST,
                &format!("/v1/deliveries/{unknown}/retry"),
                None,
            )
            .await,
    );
    expect(StatusCode::BAD_REQUEST, "invalid_id")(
        canopy.admin(Method::GET, "/v1/deliveries/42", None).await,
    );
    expect(StatusCode::BAD_REQUEST, "invalid_query")(
        canopy
            .admin(Method::GET, "/v1/deliveries?limit=0", None)
            .await,
    );
    expect(StatusCode::BAD_REQUEST, "invalid_query")(
        canopy
            .admin(Method::GET, "/v1/deliveries?from=yesterday", None)
            .await,
    );
    expect(StatusCode::NOT_FOUND, "not_found")(
        canopy
            .admin(Method::DELETE, &format!("/v1/integrations/{unknown}"), None)
            .await,
    );
    expect(StatusCode::NOT_FOUND, "not_found")(
        canopy
            .admin(
                Method::PATCH,
                &format!("/v1/integrations/{unknown}"),
                Some(json!({"name": "x"})),
            )
            .await,
    );
    expect(StatusCode::NOT_FOUND, "not_found")(
        canopy.admin(Method::GET, "/v1/plugins/nope", None).await,
    );
    expect(StatusCode::NOT_FOUND, "not_found")(
        canopy.admin(Method::GET, "/v1/no-such-route", None).await,
    );
    let receiver = accepting(200).await;
    let id = canopy.integration(webhook_to(&receiver, "/x")).await;
    let path = format!("/v1/integrations/{id}");
    let patch = canopy
        .client
        .patch(format!("{}{path}", canopy.url))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(patch.status(), StatusCode::BAD_REQUEST);
    let body: Value = patch.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_json");
    expect(StatusCode::BAD_REQUEST, "invalid_body")(
        canopy
            .admin(Method::PATCH, &path, Some(json!({"colour": "green"})))
            .await,
    );
    expect(StatusCode::UNPROCESSABLE_ENTITY, "invalid_settings")(
        canopy
            .admin(
                Method::PATCH,
                &path,
                Some(json!({"settings": {"url": "ftp://x"}})),
            )
            .await,
    );
    let (_, unchanged) = canopy.admin(Method::GET, &path, None).await;
    assert!(
        unchanged["settings"]["url"]
            .as_str()
            .unwrap()
            .ends_with("/x"),
        "a refused change changes nothing"
    );
    canopy.stop().await;
}
