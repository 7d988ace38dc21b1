//! Shops through the real server: the platform manages shops and their tokens; an event
//! reaches only its own shop's integrations; a shop's token sees nothing of another shop (404
//! exactly as if it did not exist, also with crafted filters and cursors); per-shop ingest
//! tokens post only their shop's events; the previous release's data directory moves into the
//! `default` shop; and delivery is fair — a neighbour whose receiver hangs, or whose rate
//! limit is a trickle, does not delay another shop's events.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::harness::{Canopy, PATIENCE, accepting, fresh, received, webhook};

impl Canopy {
    /// Creates a shop as the platform admin.
    pub async fn shop(&self, id: &str) {
        let (status, shop) = self
            .admin(
                Method::POST,
                "/v1/shops",
                Some(json!({"id": id, "name": format!("Shop {id}")})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{shop}");
    }

    /// A new token of a shop, as the platform admin: its secret.
    pub async fn token(&self, shop: &str, kind: &str) -> String {
        let (status, token) = self
            .admin(
                Method::POST,
                &format!("/v1/shops/{shop}/tokens"),
                Some(json!({ "kind": kind })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{token}");
        token["secret"].as_str().unwrap().to_owned()
    }

    /// Creates an integration in a shop and returns its id.
    pub async fn integration_in(&self, shop: &str, body: Value) -> String {
        let (status, created) = self
            .admin(
                Method::POST,
                &format!("/v1/shops/{shop}/integrations"),
                Some(body),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        created["id"].as_str().unwrap().to_owned()
    }
}

/// An event of a shop.
fn event_of(shop: &str, kind: &str) -> Value {
    let mut event = fresh(kind);
    event["shop"] = json!(shop);
    event
}

#[tokio::test]
async fn the_platform_manages_shops_and_their_tokens() {
    let canopy = Canopy::start(|_| {}).await;
    canopy.shop("green.myshopify.com").await;
    let (status, again) = canopy
        .admin(
            Method::POST,
            "/v1/shops",
            Some(json!({"id": "green.myshopify.com", "name": "Again"})),
        )
        .await;
    assert_eq!(
        (status, again["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("shop_exists"))
    );
    for bad in ["Green", "-green", "green shop", "", "a/b"] {
        let (status, error) = canopy
            .admin(
                Method::POST,
                "/v1/shops",
                Some(json!({"id": bad, "name": "x"})),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad:?}: {error}");
        assert_eq!(error["error"]["code"], "invalid_shop_id");
    }
    let (_, renamed) = canopy
        .admin(
            Method::PATCH,
            "/v1/shops/green.myshopify.com",
            Some(json!({"name": "Green Shop"})),
        )
        .await;
    assert_eq!(renamed["name"], "Green Shop");
    let (_, list) = canopy.admin(Method::GET, "/v1/shops", None).await;
    let ids: Vec<&str> = list["shops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["default", "green.myshopify.com"]);

    // A shop admin token: its shop's routes, and nothing of the platform's.
    let (status, token) = canopy
        .admin(
            Method::POST,
            "/v1/shops/green.myshopify.com/tokens",
            Some(json!({"kind": "admin"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{token}");
    let secret = token["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("cnpa_"));
    let as_shop = |method: Method, path: &str| {
        let (canopy, secret, path) = (&canopy, secret.clone(), path.to_owned());
        async move { canopy.call(method, &path, &secret, None).await }
    };
    for (method, path) in [
        (Method::GET, "/v1/shops/green.myshopify.com/integrations"),
        (Method::GET, "/v1/shops/-/integrations"),
        (Method::GET, "/v1/integrations"),
        (Method::GET, "/v1/deliveries"),
        (Method::GET, "/v1/shops/green.myshopify.com"),
        (Method::GET, "/v1/plugins"),
        (Method::GET, "/v1/plugins/webhook"),
    ] {
        let (status, answer) = as_shop(method.clone(), path).await;
        assert_eq!(status, StatusCode::OK, "{method} {path}: {answer}");
    }
    for (method, path) in [
        (Method::GET, "/v1/shops"),
        (Method::GET, "/v1/shops/green.myshopify.com/tokens"),
        (Method::DELETE, "/v1/shops/green.myshopify.com"),
        (Method::DELETE, "/v1/plugins/webhook"),
        (Method::POST, "/v1/plugins/webhook/rollback"),
    ] {
        let (status, answer) = as_shop(method.clone(), path).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {answer}");
    }
    let (status, _) = as_shop(Method::GET, "/v1/shops/default/integrations").await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "another shop does not exist for it"
    );
    let (status, _) = canopy
        .call(
            Method::POST,
            "/v1/events",
            &secret,
            Some(fresh("tier.changed")),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "an admin token does not ingest"
    );

    // Listed by hint, with its last use; never the token itself.
    let (_, tokens) = canopy
        .admin(Method::GET, "/v1/shops/green.myshopify.com/tokens", None)
        .await;
    let listed = &tokens["tokens"][0];
    assert!(!tokens.to_string().contains(&secret[5..]));
    assert!(
        listed["hint"]
            .as_str()
            .unwrap()
            .ends_with(&secret[secret.len() - 4..])
    );
    assert!(listed["last_used_at"].is_string(), "{tokens}");

    // Rotation with a grace period: both work until it ends; without one, the old stops.
    let id = listed["id"].as_str().unwrap().to_owned();
    let (status, rotated) = canopy
        .admin(
            Method::POST,
            &format!("/v1/shops/green.myshopify.com/tokens/{id}/rotate"),
            Some(json!({"grace_seconds": 600})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{rotated}");
    let newer = rotated["secret"].as_str().unwrap().to_owned();
    for token in [&secret, &newer] {
        let (status, _) = canopy
            .call(Method::GET, "/v1/integrations", token, None)
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let (_, tokens) = canopy
        .admin(Method::GET, "/v1/shops/green.myshopify.com/tokens", None)
        .await;
    assert!(tokens["tokens"][0]["expires_at"].is_string(), "{tokens}");
    let newer_id = rotated["id"].as_str().unwrap().to_owned();
    let (status, rotated_again) = canopy
        .admin(
            Method::POST,
            &format!("/v1/shops/green.myshopify.com/tokens/{newer_id}/rotate"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = canopy
        .call(Method::GET, "/v1/integrations", &newer, None)
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "no grace: it stopped at once"
    );
    let newest = rotated_again["secret"].as_str().unwrap().to_owned();
    let newest_id = rotated_again["id"].as_str().unwrap().to_owned();
    let (status, _) = canopy
        .admin(
            Method::DELETE,
            &format!("/v1/shops/green.myshopify.com/tokens/{newest_id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = canopy
        .call(Method::GET, "/v1/integrations", &newest, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "revoked");

    // Deleting: refused with integrations unless cascading; the default shop never.
    let receiver = accepting().await;
    let hook = canopy
        .integration_in(
            "green.myshopify.com",
            webhook(format!("{}/green", receiver.uri())),
        )
        .await;
    let (status, refused) = canopy
        .admin(Method::DELETE, "/v1/shops/green.myshopify.com", None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert_eq!(refused["error"]["code"], "shop_has_integrations");
    let (status, deleted) = canopy
        .admin(
            Method::DELETE,
            "/v1/shops/green.myshopify.com?cascade=true",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    assert_eq!(deleted["integrations"], 1);
    let (status, _) = canopy
        .admin(
            Method::GET,
            &format!("/v1/shops/green.myshopify.com/integrations/{hook}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = canopy
        .ingest(event_of("green.myshopify.com", "tier.changed"))
        .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "its events are refused"
    );
    let (status, again) = canopy
        .admin(
            Method::POST,
            "/v1/shops",
            Some(json!({"id": "green.myshopify.com", "name": "New owner"})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "its id waits for the purge: {again}"
    );
    let (status, error) = canopy
        .admin(Method::DELETE, "/v1/shops/default", None)
        .await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("default_shop"))
    );
    canopy.stop().await;
}

#[tokio::test]
async fn a_shop_sees_and_reaches_only_its_own_data() {
    let (receiver_a, receiver_b) = (accepting().await, accepting().await);
    let canopy = Canopy::start(|_| {}).await;
    canopy.shop("a.example").await;
    canopy.shop("b.example").await;
    let hook_a = canopy
        .integration_in("a.example", webhook(format!("{}/a", receiver_a.uri())))
        .await;
    let hook_b = canopy
        .integration_in("b.example", webhook(format!("{}/b", receiver_b.uri())))
        .await;

    // A batch may mix shops; each event reaches only its own shop's integrations.
    let (status, answer) = canopy
        .ingest(json!({"events": [
            event_of("a.example", "tier.changed"),
            event_of("b.example", "tier.changed"),
            event_of("a.example", "review.submitted"),
        ]}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let deliveries: Vec<(String, String)> = answer["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let d = &e["deliveries"].as_array().unwrap()[0];
            (
                e["shop"].as_str().unwrap().to_owned(),
                d["integration"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        deliveries,
        [
            ("a.example".to_owned(), hook_a.clone()),
            ("b.example".to_owned(), hook_b.clone()),
            ("a.example".to_owned(), hook_a.clone())
        ]
    );
    assert_eq!(received(&receiver_a, 2).await.len(), 2);
    assert_eq!(received(&receiver_b, 1).await.len(), 1);

    // An unknown shop refuses the whole batch; nothing is written.
    let (status, error) = canopy
        .ingest(json!({"events": [
            event_of("a.example", "tier.changed"),
            event_of("nowhere.example", "tier.changed"),
        ]}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    assert_eq!(error["error"]["code"], "unknown_shop");
    assert_eq!(error["error"]["details"]["index"], 1);
    // The same id in another shop is a conflict, not a duplicate.
    let taken = event_of("a.example", "tier.changed");
    canopy.ingest(taken.clone()).await;
    let mut stolen = taken.clone();
    stolen["shop"] = json!("b.example");
    let (status, error) = canopy.ingest(stolen).await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("id_conflict"))
    );

    // A per-shop ingest token posts only its own shop's events.
    let ingest_a = canopy.token("a.example", "ingest").await;
    let own = canopy
        .call(
            Method::POST,
            "/v1/events",
            &ingest_a,
            Some(fresh("tier.changed")),
        )
        .await;
    assert_eq!(own.0, StatusCode::ACCEPTED, "{}", own.1);
    assert_eq!(
        own.1["shop"], "a.example",
        "an event without `shop` is the token's shop's"
    );
    for other in ["b.example", "default", "nowhere.example"] {
        let (status, _) = canopy
            .call(
                Method::POST,
                "/v1/events",
                &ingest_a,
                Some(event_of(other, "tier.changed")),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{other}");
    }

    // Shop A's admin token: B's resources do not exist, however they are named.
    let admin_a = canopy.token("a.example", "admin").await;
    let delivery_b = {
        let (_, page) = canopy
            .admin(Method::GET, "/v1/shops/b.example/deliveries", None)
            .await;
        page["deliveries"][0]["id"].as_str().unwrap().to_owned()
    };
    let b_paths = [
        (
            Method::GET,
            format!("/v1/shops/b.example/integrations/{hook_b}"),
        ),
        (
            Method::GET,
            format!("/v1/shops/a.example/integrations/{hook_b}"),
        ),
        (Method::GET, format!("/v1/integrations/{hook_b}")),
        (Method::PATCH, format!("/v1/integrations/{hook_b}")),
        (Method::DELETE, format!("/v1/integrations/{hook_b}")),
        (Method::POST, format!("/v1/integrations/{hook_b}/test")),
        (Method::GET, format!("/v1/integrations/{hook_b}/health")),
        (Method::GET, format!("/v1/deliveries/{delivery_b}")),
        (Method::POST, format!("/v1/deliveries/{delivery_b}/retry")),
        (
            Method::GET,
            format!("/v1/shops/b.example/deliveries/{delivery_b}"),
        ),
        (Method::GET, "/v1/shops/b.example/deliveries".to_owned()),
        (
            Method::POST,
            "/v1/shops/b.example/deliveries/retry".to_owned(),
        ),
        (Method::GET, "/v1/shops/b.example".to_owned()),
        (Method::GET, "/v1/shops/b.example/health".to_owned()),
    ];
    for (method, path) in b_paths {
        let body = (method == Method::PATCH).then(|| json!({"name": "mine"}));
        let (status, answer) = canopy.call(method.clone(), &path, &admin_a, body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {answer}");
        assert_eq!(answer["error"]["code"], "not_found");
    }
    // …also in lists, filters and cursors.
    for query in [
        String::new(),
        format!("?integration={hook_b}"),
        "?event=tier.changed".into(),
        "?customer=jane@example.com".into(),
        format!("?cursor={delivery_b}"),
        format!("?cursor={}", uuid::Uuid::max()),
    ] {
        let (status, page) = canopy
            .call(
                Method::GET,
                &format!("/v1/deliveries{query}"),
                &admin_a,
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{query}: {page}");
        let text = page.to_string();
        assert!(
            !text.contains(&hook_b) && !text.contains(&delivery_b),
            "{query}: {text}"
        );
        assert!(
            page["deliveries"]
                .as_array()
                .unwrap()
                .iter()
                .all(|d| d["shop"] == "a.example"),
            "{query}: {page}"
        );
    }
    let (_, mine) = canopy
        .call(Method::GET, "/v1/integrations", &admin_a, None)
        .await;
    assert_eq!(mine["integrations"].as_array().unwrap().len(), 1);
    assert_eq!(mine["integrations"][0]["id"], hook_a.as_str());
    // Creating in another shop's path is the same 404; a body cannot name a shop.
    let (status, _) = canopy
        .call(
            Method::POST,
            "/v1/shops/b.example/integrations",
            &admin_a,
            Some(webhook("http://127.0.0.1:9/x".into())),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let mut with_shop = webhook("http://127.0.0.1:9/x".into());
    with_shop["shop"] = json!("b.example");
    let (status, _) = canopy
        .call(Method::POST, "/v1/integrations", &admin_a, Some(with_shop))
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "`shop` is not a field of an integration"
    );
    canopy.stop().await;
}

#[tokio::test]
async fn the_health_route_reports_an_integrations_hour_day_and_queue() {
    let receiver = accepting().await;
    let canopy = Canopy::start(|_| {}).await;
    let hook = canopy
        .integration(webhook(format!("{}/h", receiver.uri())))
        .await;
    for _ in 0..3 {
        let delivery = canopy.ingest_one(fresh("tier.changed")).await;
        canopy.delivery_with_status(&delivery, "succeeded").await;
    }
    let (status, health) = canopy
        .admin(
            Method::GET,
            &format!("/v1/integrations/{hook}/health"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{health}");
    assert_eq!(health["last_hour"]["attempts"], 3);
    assert_eq!(health["last_hour"]["delivered"], 3);
    assert_eq!(health["last_hour"]["success_rate"], 1.0);
    assert!(health["last_hour"]["p95_ms"].is_number(), "{health}");
    assert!(health["last_success_at"].is_string());
    assert_eq!(health["hourly"].as_array().unwrap().len(), 24);
    assert_eq!(health["queue"]["due"], 0);
    let (_, all) = canopy
        .admin(Method::GET, "/v1/shops/default/health", None)
        .await;
    assert_eq!(all["integrations"][0]["integration"], hook.as_str());
    // The cap is the integration's own, within bounds.
    for bad in [0, 257] {
        let (status, error) = canopy
            .admin(
                Method::PATCH,
                &format!("/v1/integrations/{hook}"),
                Some(json!({"max_in_flight": bad})),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    }
    let (_, capped) = canopy
        .admin(
            Method::PATCH,
            &format!("/v1/integrations/{hook}"),
            Some(json!({"max_in_flight": 3})),
        )
        .await;
    assert_eq!(capped["max_in_flight"], 3);
    canopy.stop().await;
}

/// Extracts the previous release's data directory (`host/tests/fixtures/format-1`).
fn previous_release_data() -> (tempfile::TempDir, Value) {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/format-1");
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("tar")
        .arg("xzf")
        .arg(format!("{fixtures}/store.tar.gz"))
        .arg("-C")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    let manifest = serde_json::from_str(
        &std::fs::read_to_string(format!("{fixtures}/manifest.json")).unwrap(),
    )
    .unwrap();
    (dir, manifest)
}

#[tokio::test]
async fn the_previous_releases_data_moves_into_the_default_shop() {
    let (dir, manifest) = previous_release_data();
    let canopy =
        Canopy::start_embedded(dir.path(), |c| c.delivery.retry_schedule = "1h".into()).await;

    let (_, list) = canopy.admin(Method::GET, "/v1/integrations", None).await;
    let integrations: HashMap<String, Value> = list["integrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["id"].as_str().unwrap().to_owned(), i.clone()))
        .collect();
    for expected in manifest["integrations"].as_array().unwrap() {
        let id = expected["id"].as_str().unwrap();
        let found = &integrations[id];
        assert_eq!(found["shop"], "default");
        for field in [
            "name",
            "plugin",
            "events",
            "enabled",
            "disabled_reason",
            "rate_limit",
        ] {
            assert_eq!(
                found.get(field).unwrap_or(&Value::Null),
                &expected[field],
                "{field} of {id}"
            );
        }
        let secrets: Vec<&String> = found["secrets"].as_object().unwrap().keys().collect();
        assert_eq!(json!(secrets), expected["secrets"], "{id}");
    }
    assert_eq!(
        integrations.len(),
        manifest["integrations"].as_array().unwrap().len()
    );

    let (_, page) = canopy
        .admin(Method::GET, "/v1/deliveries?limit=100", None)
        .await;
    let deliveries: HashMap<String, Value> = page["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["id"].as_str().unwrap().to_owned(), d.clone()))
        .collect();
    let expected = manifest["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), expected.len(), "every delivery, once");
    for was in expected {
        let id = was["id"].as_str().unwrap();
        let now = &deliveries[id];
        assert_eq!(now["shop"], "default");
        assert_eq!(now["integration_id"], was["integration"]);
        let attempts = canopy.delivery(id).await["attempts"]
            .as_array()
            .unwrap()
            .len() as u64;
        let before = was["attempts"].as_u64().unwrap();
        if was["leased"] == true || was["status"] == "retrying" {
            // In flight when the old process died, or due again since: tried once more.
            assert!(attempts >= before, "the attempts of {id}");
            continue;
        }
        assert_eq!(now["status"], was["status"], "{id}");
        assert_eq!(attempts, before, "the attempts of {id}");
    }
    // Each filter index was rebuilt per shop.
    let (_, failed) = canopy
        .admin(Method::GET, "/v1/deliveries?status=failed", None)
        .await;
    let failed_before = expected.iter().filter(|d| d["status"] == "failed").count();
    assert_eq!(
        failed["deliveries"].as_array().unwrap().len(),
        failed_before
    );
    let (_, by_customer) = canopy
        .admin(
            Method::GET,
            "/v1/deliveries?customer=jane@example.com&limit=100",
            None,
        )
        .await;
    assert!(!by_customer["deliveries"].as_array().unwrap().is_empty());

    // Events are still recognised by id; the plugin versions and the secrets survived.
    let sample = crate::harness::sample("tier.changed");
    let (status, duplicate) = canopy.ingest(sample).await;
    assert_eq!(status, StatusCode::OK, "{duplicate}");
    assert_eq!(duplicate["duplicate"], true);
    let (_, versions) = canopy
        .admin(Method::GET, "/v1/plugins/echo/versions", None)
        .await;
    let numbers: Vec<(u64, bool)> = versions["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["number"].as_u64().unwrap(),
                v["active"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(numbers, [(1, true), (2, false)]);
    let receiver = accepting().await;
    let signed = manifest["integrations"][0]["id"].as_str().unwrap();
    canopy
        .admin(
            Method::PATCH,
            &format!("/v1/integrations/{signed}"),
            Some(json!({"settings": {"url": format!("{}/signed", receiver.uri())}})),
        )
        .await;
    let (_, tested) = canopy
        .admin(
            Method::POST,
            &format!("/v1/integrations/{signed}/test"),
            None,
        )
        .await;
    assert_eq!(tested["result"]["outcome"], "succeeded", "{tested}");
    let request = &received(&receiver, 1).await[0];
    let secret = manifest["secrets"]["webhook_secret"].as_str().unwrap();
    let expected_signature = {
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(&request.body);
        canopy::crypto::signing::hex(&mac.finalize().into_bytes())
    };
    assert_eq!(
        crate::harness::header(request, "x-loyaltytree-signature"),
        expected_signature,
        "the sealed secret opens with the same master key"
    );
    canopy.stop().await;

    // Once: a second start finds the new format and changes nothing.
    let canopy = Canopy::start_embedded(dir.path(), |_| {}).await;
    let (_, again) = canopy
        .admin(Method::GET, "/v1/deliveries?limit=100", None)
        .await;
    assert_eq!(
        again["deliveries"].as_array().unwrap().len(),
        expected.len()
    );
    let (_, shops) = canopy.admin(Method::GET, "/v1/shops", None).await;
    assert_eq!(shops["shops"].as_array().unwrap().len(), 1);
    canopy.stop().await;
}

// ---- fairness ---------------------------------------------------------------------------------

/// Records when each request arrived, by the `X-Sent-At` marker the test puts in the event
/// (the `order_id` field, echoed by the webhook's default body).
#[derive(Clone, Default)]
struct Arrivals(Arc<Mutex<HashMap<String, Instant>>>);

impl Respond for Arrivals {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or_default();
        if let Some(marker) = body["order_id"].as_str() {
            self.0
                .lock()
                .unwrap()
                .entry(marker.to_owned())
                .or_insert_with(Instant::now);
        }
        ResponseTemplate::new(200)
    }
}

/// Sends shop B's events at 20 a second for `seconds` and returns each one's ingest →
/// delivered latency, sorted.
async fn neighbour_latencies(canopy: &Canopy, arrivals: &Arrivals, seconds: u64) -> Vec<Duration> {
    let mut sent = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    for i in 0..seconds * 20 {
        tick.tick().await;
        let mut event = event_of("b.example", "seeds.earned.order");
        let marker = format!("b-{i}-{}", uuid::Uuid::now_v7());
        event["order_id"] = json!(marker);
        let at = Instant::now();
        let (status, answer) = canopy.ingest(event).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        sent.push((marker, at));
    }
    let deadline = Instant::now() + PATIENCE;
    loop {
        let seen = arrivals.0.lock().unwrap().len();
        if seen >= sent.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {seen} of {} of B's events arrived",
            sent.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let arrived = arrivals.0.lock().unwrap().clone();
    let mut latencies: Vec<Duration> = sent
        .iter()
        .map(|(marker, at)| arrived[marker].duration_since(*at))
        .collect();
    latencies.sort();
    latencies
}

fn p99(sorted: &[Duration]) -> Duration {
    sorted[(sorted.len() * 99).div_ceil(100) - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_or_throttled_neighbour_does_not_delay_another_shop() {
    let hanging = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(60)))
        .mount(&hanging)
        .await;
    let arrivals = Arrivals::default();
    let receiver_b = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(arrivals.clone())
        .mount(&receiver_b)
        .await;
    let canopy = Canopy::start(|c| {
        c.delivery.request_timeout = Duration::from_secs(2);
        c.delivery.retry_schedule = "1h".into();
        c.delivery.auto_disable_after = 0;
    })
    .await;
    canopy.shop("a.example").await;
    canopy.shop("b.example").await;
    let hook_a = canopy
        .integration_in("a.example", webhook(format!("{}/hangs", hanging.uri())))
        .await;
    canopy
        .integration_in("b.example", webhook(format!("{}/b", receiver_b.uri())))
        .await;

    // A: 2,000 deliveries due, its receiver hanging past the request timeout.
    for _ in 0..4 {
        let batch: Vec<Value> = (0..500)
            .map(|_| event_of("a.example", "tier.changed"))
            .collect();
        let (status, _) = canopy.ingest(json!({ "events": batch })).await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    let latencies = neighbour_latencies(&canopy, &arrivals, 5).await;
    assert!(
        p99(&latencies) < Duration::from_secs(1),
        "B's p99 with A hanging: {:?} (all: {latencies:?})",
        p99(&latencies)
    );

    // A throttled to one request every 2 seconds, with 20,000 queued.
    canopy
        .admin(
            Method::PATCH,
            &format!("/v1/shops/a.example/integrations/{hook_a}"),
            Some(json!({
                "rate_limit": {"requests": 1, "per_seconds": 2},
                "settings": {"url": format!("{}/trickle", receiver_b.uri())},
            })),
        )
        .await;
    for _ in 0..20 {
        let batch: Vec<Value> = (0..1000)
            .map(|_| event_of("a.example", "tier.changed"))
            .collect();
        let (status, _) = canopy.ingest(json!({ "events": batch })).await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    arrivals.0.lock().unwrap().clear();
    let latencies = neighbour_latencies(&canopy, &arrivals, 5).await;
    assert!(
        p99(&latencies) < Duration::from_secs(1),
        "B's p99 with A throttled: {:?} (all: {latencies:?})",
        p99(&latencies)
    );
    let (_, health) = canopy
        .admin(
            Method::GET,
            &format!("/v1/shops/a.example/integrations/{hook_a}/health"),
            None,
        )
        .await;
    assert!(
        health["queue"]["due"].as_u64().unwrap() > 19_000,
        "A's backlog waits in its queue: {health}"
    );
    canopy.stop().await;
}

// ---- a property: no sequence of operations by two shops leaks one's data to the other -----

mod no_leak {
    use std::sync::OnceLock;

    use axum::body::Body;
    use axum::http::Request;
    use proptest::prelude::*;
    use serde_json::{Value, json};
    use tower::ServiceExt;

    use crate::harness::{ADMIN_TOKEN, INGEST_TOKEN, test_config};

    struct Server {
        runtime: tokio::runtime::Runtime,
        app: axum::Router,
        _dir: tempfile::TempDir,
    }

    /// One server for every case (each case makes its own two shops).
    fn server() -> &'static Server {
        static SERVER: OnceLock<Server> = OnceLock::new();
        SERVER.get_or_init(|| {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            let dir = tempfile::tempdir().unwrap();
            let mut config = test_config(dir.path());
            if crate::harness::on_postgres() {
                config.store = Some(canopy::crypto::secret::SecretValue::new(
                    crate::harness::database_of(dir.path()),
                ));
            }
            let app = runtime
                .block_on(canopy::app::App::open(std::sync::Arc::new(config)))
                .unwrap();
            Server {
                app: canopy::server::app(app),
                runtime,
                _dir: dir,
            }
        })
    }

    fn call(method: &str, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
        let server = server();
        server.runtime.block_on(async {
            let mut request = Request::builder()
                .method(method)
                .uri(path)
                .header("authorization", format!("Bearer {token}"));
            if body.is_some() {
                request = request.header("content-type", "application/json");
            }
            let request = request
                .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
                .unwrap();
            let response = server.app.clone().oneshot(request).await.unwrap();
            let status = response.status().as_u16();
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 22)
                .await
                .unwrap();
            (
                status,
                serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            )
        })
    }

    /// What each shop owns, by id.
    #[derive(Default)]
    struct Owned {
        integrations: Vec<String>,
        deliveries: Vec<String>,
        events: Vec<String>,
    }

    impl Owned {
        fn ids(&self) -> impl Iterator<Item = &String> {
            self.integrations
                .iter()
                .chain(&self.deliveries)
                .chain(&self.events)
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        CreateIntegration { shop: usize },
        Ingest { shop: usize, count: usize },
        List { shop: usize, query: usize },
        Reach { shop: usize, what: usize },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..2usize).prop_map(|shop| Op::CreateIntegration { shop }),
            (0..2usize, 1..4usize).prop_map(|(shop, count)| Op::Ingest { shop, count }),
            (0..2usize, 0..6usize).prop_map(|(shop, query)| Op::List { shop, query }),
            (0..2usize, 0..8usize).prop_map(|(shop, what)| Op::Reach { shop, what }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        #[test]
        fn no_sequence_of_operations_shows_a_shop_anything_of_the_other(ops in prop::collection::vec(op(), 1..14)) {
            let case = uuid::Uuid::now_v7().simple().to_string();
            let shops = [format!("a-{case}"), format!("b-{case}")];
            let mut tokens = Vec::new();
            for shop in &shops {
                let (status, _) = call("POST", "/v1/shops", ADMIN_TOKEN, Some(json!({"id": shop, "name": shop})));
                prop_assert_eq!(status, 201);
                let (_, token) = call("POST", &format!("/v1/shops/{shop}/tokens"), ADMIN_TOKEN, Some(json!({"kind": "admin"})));
                tokens.push(token["secret"].as_str().unwrap().to_owned());
            }
            let mut owned = [Owned::default(), Owned::default()];
            for op in ops {
                let (shop, answer, status) = match op {
                    Op::CreateIntegration { shop } => {
                        let body = json!({"name": "Hook", "plugin": "webhook", "events": ["*"],
                                          "settings": {"url": "http://127.0.0.1:9/in"}});
                        let (status, answer) = call("POST", "/v1/integrations", &tokens[shop], Some(body));
                        prop_assert_eq!(status, 201, "{}", answer);
                        owned[shop].integrations.push(answer["id"].as_str().unwrap().to_owned());
                        (shop, answer, status)
                    }
                    Op::Ingest { shop, count } => {
                        let events: Vec<Value> = (0..count)
                            .map(|_| {
                                let mut e = crate::harness::fresh("tier.changed");
                                e["shop"] = json!(shops[shop]);
                                e
                            })
                            .collect();
                        let (status, answer) = call("POST", "/v1/events", INGEST_TOKEN, Some(json!({"events": events})));
                        prop_assert_eq!(status, 202, "{}", answer);
                        for event in answer["events"].as_array().unwrap() {
                            owned[shop].events.push(event["id"].as_str().unwrap().to_owned());
                            for d in event["deliveries"].as_array().unwrap() {
                                prop_assert!(owned[shop].integrations.contains(&d["integration"].as_str().unwrap().to_owned()));
                                owned[shop].deliveries.push(d["id"].as_str().unwrap().to_owned());
                            }
                        }
                        // The platform's token saw both; only the shop's own view is checked.
                        continue;
                    }
                    Op::List { shop, query } => {
                        let other = &owned[1 - shop];
                        let query = match query {
                            0 => String::new(),
                            1 => other.integrations.first().map(|i| format!("?integration={i}")).unwrap_or_default(),
                            2 => other.deliveries.first().map(|d| format!("?cursor={d}")).unwrap_or_default(),
                            3 => "?customer=jane@example.com&status=pending".into(),
                            4 => "?event=tier.changed&limit=500".into(),
                            _ => "?status=pending".into(),
                        };
                        let (status, answer) = call("GET", &format!("/v1/deliveries{query}"), &tokens[shop], None);
                        prop_assert_eq!(status, 200, "{}", answer);
                        (shop, answer, status)
                    }
                    Op::Reach { shop, what } => {
                        let other = &owned[1 - shop];
                        let (Some(integration), delivery) = (other.integrations.first(), other.deliveries.first()) else {
                            continue;
                        };
                        let delivery = delivery.cloned().unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
                        let other_shop = &shops[1 - shop];
                        let (method, path) = match what {
                            0 => ("GET", format!("/v1/integrations/{integration}")),
                            1 => ("DELETE", format!("/v1/integrations/{integration}")),
                            2 => ("POST", format!("/v1/integrations/{integration}/test")),
                            3 => ("GET", format!("/v1/deliveries/{delivery}")),
                            4 => ("POST", format!("/v1/deliveries/{delivery}/retry")),
                            5 => ("GET", format!("/v1/shops/{other_shop}/integrations")),
                            6 => ("GET", format!("/v1/shops/{other_shop}/deliveries/{delivery}")),
                            _ => ("GET", format!("/v1/integrations/{integration}/health")),
                        };
                        let (status, answer) = call(method, &path, &tokens[shop], None);
                        prop_assert_eq!(status, 404, "{} {}: {}", method, path, answer);
                        (shop, answer, status)
                    }
                };
                let text = answer.to_string();
                for id in owned[1 - shop].ids() {
                    prop_assert!(!text.contains(id.as_str()), "shop {} saw {} of the other shop ({}): {}", shop, id, status, text);
                }
                prop_assert!(!text.contains(&shops[1 - shop]), "{}", text);
            }
        }
    }
}
