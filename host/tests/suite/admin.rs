//! The admin API: plugin upload, versions, rollback and deletion (and hot swap under load),
//! the Test button, bulk retry, generated HMAC secrets, secrets at rest, key rotation.

use std::sync::Arc;
use std::time::Instant;

use canopy_test_support::{ECHO_V1, ECHO_V2, WRONG_WORLD, component};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::files_under;
use crate::harness::{Canopy, MASTER_KEY, fresh, header, received};

async fn answering(status: u16) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(status))
        .mount(&server)
        .await;
    server
}

fn echo_routed(receiver: &MockServer) -> impl FnOnce(&mut canopy::Config) {
    let route = format!("echo.test={}", receiver.uri()).parse().unwrap();
    move |c: &mut canopy::Config| c.delivery.egress_override = vec![route]
}

async fn active_version(canopy: &Canopy, id: &str) -> Value {
    let (status, plugin) = canopy
        .admin(Method::GET, &format!("/v1/plugins/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{plugin}");
    plugin
}

#[tokio::test]
async fn plugins_are_uploaded_versioned_rolled_back_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let canopy = Canopy::start_in(dir.path(), |_| {}).await;
    let (_, list) = canopy.admin(Method::GET, "/v1/plugins", None).await;
    let ids: Vec<&str> = list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["klaviyo", "omnisend", "shopify-flow", "webhook"]);
    let klaviyo = active_version(&canopy, "klaviyo").await;
    assert_eq!(klaviyo["bundled"], true);
    assert_eq!(klaviyo["number"], 1);
    assert!(
        klaviyo["settings"].to_string().contains("api_key"),
        "the form schema"
    );

    let (status, v1) = canopy
        .upload("echo", component(ECHO_V1), "application/wasm")
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v1}");
    assert_eq!(
        (v1["version"].as_str(), v1["number"].as_u64()),
        (Some("1.0.0"), Some(1))
    );
    let (status, again) = canopy
        .upload("echo", component(ECHO_V1), "application/wasm")
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the same bytes again change nothing: {again}"
    );
    assert_eq!(again["number"], 1);
    let (status, v2) = canopy
        .upload("echo", component(ECHO_V2), "application/octet-stream")
        .await;
    assert_eq!(status, StatusCode::OK, "{v2}");
    assert_eq!(
        (v2["version"].as_str(), v2["number"].as_u64()),
        (Some("2.0.0"), Some(2))
    );

    // Refused uploads say why and change nothing.
    let refusals = [
        (
            b"not wasm at all".to_vec(),
            "application/wasm",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_plugin",
        ),
        (
            component(WRONG_WORLD),
            "application/wasm",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_plugin",
        ),
        (
            component(ECHO_V1),
            "text/plain",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            vec![0u8; (64 << 20) + 1],
            "application/wasm",
            StatusCode::PAYLOAD_TOO_LARGE,
            "plugin_too_large",
        ),
    ];
    for (bytes, content_type, status, code) in refusals {
        let (got, error) = canopy.upload("echo", bytes, content_type).await;
        assert_eq!(
            (got, error["error"]["code"].as_str()),
            (status, Some(code)),
            "{error}"
        );
    }
    let (_, error) = canopy
        .upload("echo", component(WRONG_WORLD), "application/wasm")
        .await;
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("9.0.0"),
        "{error}"
    );
    let (status, error) = canopy
        .upload("other", component(ECHO_V1), "application/wasm")
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error["error"]["code"], "plugin_id_mismatch");
    assert_eq!(active_version(&canopy, "echo").await["version"], "2.0.0");

    let (_, versions) = canopy
        .admin(Method::GET, "/v1/plugins/echo/versions", None)
        .await;
    let versions = versions["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[1]["active"], true);
    assert!(
        versions[0]["digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );

    let (status, back) = canopy
        .admin(Method::POST, "/v1/plugins/echo/rollback", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{back}");
    assert_eq!(back["version"], "1.0.0");
    let (status, _) = canopy
        .admin(Method::POST, "/v1/plugins/echo/rollback", None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "nothing before version 1");
    let (status, forward) = canopy
        .admin(
            Method::POST,
            "/v1/plugins/echo/rollback",
            Some(json!({"number": 2})),
        )
        .await;
    assert_eq!(
        (status, forward["version"].as_str()),
        (StatusCode::OK, Some("2.0.0"))
    );
    canopy
        .admin(Method::POST, "/v1/plugins/echo/rollback", None)
        .await;

    // Deleting a plugin in use is refused; a bundled one deleted stays deleted.
    let integration = canopy
        .integration(json!({"name": "Echo", "plugin": "echo", "events": ["*"]}))
        .await;
    let (status, error) = canopy.admin(Method::DELETE, "/v1/plugins/echo", None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&integration)
    );
    let (status, _) = canopy
        .admin(Method::DELETE, "/v1/plugins/omnisend", None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = canopy
        .admin(Method::DELETE, "/v1/plugins/omnisend", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    canopy.stop().await;

    // Uploaded plugins and the active version survive a restart.
    let restarted = Canopy::start_in(dir.path(), |_| {}).await;
    assert_eq!(active_version(&restarted, "echo").await["version"], "1.0.0");
    let (status, _) = restarted
        .admin(Method::GET, "/v1/plugins/omnisend", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "not reinstalled");
    let (status, _) = restarted
        .admin(
            Method::DELETE,
            &format!("/v1/integrations/{integration}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = restarted
        .admin(Method::DELETE, "/v1/plugins/echo", None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = restarted
        .admin(Method::GET, "/v1/plugins/echo/versions", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    restarted.stop().await;
}

#[tokio::test]
async fn a_hot_swap_under_load_loses_nothing_and_rollback_restores_v1() {
    let receiver = answering(200).await;
    let canopy = Canopy::start(echo_routed(&receiver)).await;
    canopy
        .upload("echo", component(ECHO_V1), "application/wasm")
        .await;
    canopy
        .integration(
            json!({"name": "Echo", "plugin": "echo", "events": ["*"], "settings": {"spin": 20000}}),
        )
        .await;

    // Events keep arriving, one after another, while v2 is uploaded.
    let canopy = Arc::new(canopy);
    let (acked, mut acks) = tokio::sync::mpsc::unbounded_channel();
    let swap_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ingesting = {
        let canopy = canopy.clone();
        let swap_done = swap_done.clone();
        tokio::spawn(async move {
            // Until ten events went in after the swap.
            let mut after = 0;
            while after < 10 {
                let swapped = swap_done.load(std::sync::atomic::Ordering::SeqCst);
                // When it was sent: an event sent after the upload returned can only be
                // attempted after it (one answered after it may have gone out before).
                let sent = Instant::now();
                let id = canopy.ingest_one(fresh("tier.changed")).await;
                let _ = acked.send((id, sent));
                if swapped {
                    after += 1;
                }
            }
        })
    };
    let mut flowing = Vec::new();
    while flowing.len() < 10 {
        flowing.push(acks.recv().await.unwrap());
    }
    let (status, v2) = canopy
        .upload("echo", component(ECHO_V2), "application/wasm")
        .await;
    assert_eq!(status, StatusCode::OK, "{v2}");
    let swapped = Instant::now();
    swap_done.store(true, std::sync::atomic::Ordering::SeqCst);
    ingesting.await.unwrap();
    while let Ok(ack) = acks.try_recv() {
        flowing.push(ack);
    }
    let version_of = |delivery: &Value| {
        delivery["attempts"][0]["plugin_version"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let mut after_swap = 0;
    for (id, at) in &flowing {
        let delivery = canopy.delivery_with_status(id, "succeeded").await;
        assert_eq!(
            delivery["attempts"].as_array().unwrap().len(),
            1,
            "none failed: {delivery}"
        );
        if *at > swapped {
            after_swap += 1;
            assert_eq!(version_of(&delivery), "2.0.0", "sent after the swap");
            assert_eq!(
                delivery["attempts"][0]["exchanges"][0]["request"]["url"],
                "https://echo.test/v2.0.0"
            );
        }
    }
    assert!(after_swap > 0, "some events came after the swap");
    let requests = received(&receiver, flowing.len()).await;
    assert_eq!(
        requests.len(),
        flowing.len(),
        "every delivery once, none failed"
    );

    // Version 2 no longer takes referral.visit: the `*` integration gets no delivery for it.
    let (status, answer) = canopy.ingest(fresh("referral.visit")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(answer["deliveries"], json!([]));

    let (status, back) = canopy
        .admin(Method::POST, "/v1/plugins/echo/rollback", None)
        .await;
    assert_eq!(
        (status, back["version"].as_str()),
        (StatusCode::OK, Some("1.0.0"))
    );
    let later = canopy.ingest_one(fresh("tier.changed")).await;
    let delivered = canopy.delivery_with_status(&later, "succeeded").await;
    assert_eq!(version_of(&delivered), "1.0.0");
    Arc::into_inner(canopy)
        .expect("the ingest task ended")
        .stop()
        .await;
}

#[tokio::test]
async fn test_sends_a_sample_through_the_real_path_and_stores_nothing() {
    let receiver = answering(204).await;
    let canopy = Canopy::start(|_| {}).await;
    let id = canopy
        .integration(json!({
            "name": "Hook", "plugin": "webhook", "events": ["review.approved", "tier.changed"],
            "settings": {"url": format!("{}/test", receiver.uri()), "auth": "bearer"},
            "secrets": {"token": "bearer-secret-0123456789"}
        }))
        .await;
    let (status, tested) = canopy
        .admin(Method::POST, &format!("/v1/integrations/{id}/test"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{tested}");
    assert_eq!(
        tested["event"], "review.approved",
        "the first subscribed type"
    );
    assert_eq!(tested["result"]["outcome"], "succeeded");
    let exchange = &tested["result"]["exchanges"][0];
    assert_eq!(exchange["response"]["status"], 204);
    assert!(
        exchange["request"]["headers"]
            .to_string()
            .contains("Bearer [secret:token]")
    );
    assert!(!tested.to_string().contains("bearer-secret-0123456789"));
    let sent = received(&receiver, 1).await;
    assert_eq!(
        header(&sent[0], "authorization"),
        "Bearer bearer-secret-0123456789"
    );
    assert_eq!(header(&sent[0], "x-loyaltytree-event"), "review.approved");

    let (_, tested) = canopy
        .admin(
            Method::POST,
            &format!("/v1/integrations/{id}/test?event=tier.changed"),
            None,
        )
        .await;
    assert_eq!(tested["event"], "tier.changed");
    let (status, _) = canopy
        .admin(
            Method::POST,
            &format!("/v1/integrations/{id}/test?event=eco.tree_planted"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "not subscribed");
    let (status, _) = canopy
        .admin(
            Method::POST,
            &format!("/v1/integrations/{}/test", uuid::Uuid::now_v7()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, log) = canopy.admin(Method::GET, "/v1/deliveries", None).await;
    assert_eq!(log["deliveries"], json!([]), "a test is not a delivery");

    // A failing destination is reported, with its answer.
    let down = answering(500).await;
    let (_, _) = canopy
        .admin(
            Method::PATCH,
            &format!("/v1/integrations/{id}"),
            Some(json!({"settings": {"url": format!("{}/down", down.uri()), "auth": "bearer"}})),
        )
        .await;
    let (_, tested) = canopy
        .admin(Method::POST, &format!("/v1/integrations/{id}/test"), None)
        .await;
    assert_eq!(tested["result"]["outcome"], "retry", "{tested}");
    assert_eq!(tested["result"]["exchanges"][0]["response"]["status"], 500);
    canopy.stop().await;
}

#[tokio::test]
async fn failed_deliveries_are_retried_by_filter_once() {
    let receiver = MockServer::start().await;
    let rejecting = Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400))
        .mount_as_scoped(&receiver)
        .await;
    let canopy = Canopy::start(|c| {
        c.delivery.retry_schedule = String::new();
        c.delivery.auto_disable_after = 0;
    })
    .await;
    let hook = json!({"name": "Hook", "plugin": "webhook", "events": ["*"],
                      "settings": {"url": format!("{}/bulk", receiver.uri())}});
    let id = canopy.integration(hook).await;
    let mut failed = Vec::new();
    for _ in 0..3 {
        let delivery = canopy.ingest_one(fresh("tier.changed")).await;
        canopy.delivery_with_status(&delivery, "failed").await;
        failed.push(delivery);
    }
    drop(rejecting);
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let (status, error) = canopy
        .admin(Method::POST, "/v1/deliveries/retry?status=succeeded", None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    let (status, answer) = canopy
        .admin(
            Method::POST,
            &format!("/v1/deliveries/retry?integration={id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["requeued"], 3);
    let (_, again) = canopy
        .admin(
            Method::POST,
            &format!("/v1/deliveries/retry?integration={id}"),
            None,
        )
        .await;
    assert_eq!(
        again["requeued"], 0,
        "already queued or delivered: never twice"
    );
    for delivery in &failed {
        canopy.delivery_with_status(delivery, "succeeded").await;
    }
    assert_eq!(received(&receiver, 6).await.len(), 6);
    canopy.stop().await;
}

#[tokio::test]
async fn an_hmac_webhook_without_a_secret_gets_one_shown_once() {
    let receiver = answering(200).await;
    let canopy = Canopy::start(|_| {}).await;
    let (status, created) = canopy
        .admin(
            Method::POST,
            "/v1/integrations",
            Some(
                json!({"name": "Signed", "plugin": "webhook", "events": ["*"],
                        "settings": {"url": format!("{}/signed", receiver.uri()), "auth": "hmac"}}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let secret = created["generated_secrets"]["webhook_secret"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        secret.starts_with("whsec_") && secret.len() == 6 + 32,
        "{secret}"
    );
    let id = created["id"].as_str().unwrap();
    let (_, shown) = canopy
        .admin(Method::GET, &format!("/v1/integrations/{id}"), None)
        .await;
    assert!(shown.get("generated_secrets").is_none());
    assert!(!shown.to_string().contains(&secret));
    assert!(
        shown["secrets"]["webhook_secret"]
            .as_str()
            .unwrap()
            .starts_with("••••")
    );

    let delivery = canopy.ingest_one(fresh("tier.changed")).await;
    canopy.delivery_with_status(&delivery, "succeeded").await;
    let request = &received(&receiver, 1).await[0];
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(&request.body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(header(request, "X-LoyaltyTree-Signature"), expected);
    canopy.stop().await;
}

const PLAIN_SECRETS: [&str; 3] = [
    "pk_live_VERY-distinctive-klaviyo-key-4711",
    "omni-DISTINCTIVE-api-key-0815",
    "whsec_dGhpcy1pcy1hLWRpc3RpbmN0aXZlLXNlY3JldA==",
];

fn forms_of(secret: &str) -> Vec<Vec<u8>> {
    use base64::Engine as _;
    let hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
    vec![
        secret.as_bytes().to_vec(),
        base64::engine::general_purpose::STANDARD
            .encode(secret)
            .into_bytes(),
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(secret)
            .into_bytes(),
        hex.into_bytes(),
    ]
}

#[tokio::test]
async fn no_secret_is_stored_in_clear_and_key_rotation_keeps_them_all() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = answering(200).await;
    let canopy = Canopy::start_embedded(dir.path(), |c| {
        c.delivery.egress_override = vec![
            format!("a.klaviyo.com={}", receiver.uri()).parse().unwrap(),
            format!("api.omnisend.com={}", receiver.uri())
                .parse()
                .unwrap(),
        ];
    })
    .await;
    canopy
        .integration(
            json!({"name": "K", "plugin": "klaviyo", "events": ["tier.changed"],
                            "secrets": {"api_key": PLAIN_SECRETS[0]}}),
        )
        .await;
    canopy
        .integration(
            json!({"name": "O", "plugin": "omnisend", "events": ["tier.changed"],
                            "secrets": {"api_key": PLAIN_SECRETS[1]}}),
        )
        .await;
    canopy
        .integration(
            json!({"name": "W", "plugin": "webhook", "events": ["tier.changed"],
                            "settings": {"url": format!("{}/w", receiver.uri())},
                            "secrets": {"webhook_secret": PLAIN_SECRETS[2]}}),
        )
        .await;
    let (_, answer) = canopy.ingest(fresh("tier.changed")).await;
    for d in answer["deliveries"].as_array().unwrap() {
        canopy
            .delivery_with_status(d["id"].as_str().unwrap(), "succeeded")
            .await;
    }
    canopy.stop().await;

    let files = files_under(dir.path());
    assert!(files.len() > 2, "the store wrote files: {files:?}");
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        for secret in PLAIN_SECRETS {
            for form in forms_of(secret) {
                assert!(
                    !bytes.windows(form.len()).any(|w| w == form),
                    "{} holds a form of a secret",
                    file.display()
                );
            }
        }
    }
    // The check itself finds a secret where one is.
    let probe = dir.path().join("probe");
    std::fs::write(&probe, format!("x{}y", PLAIN_SECRETS[1])).unwrap();
    let bytes = std::fs::read(&probe).unwrap();
    assert!(
        bytes
            .windows(PLAIN_SECRETS[1].len())
            .any(|w| w == PLAIN_SECRETS[1].as_bytes())
    );
    std::fs::remove_file(probe).unwrap();

    // Rotation: every secret is re-sealed under the new key; the old key is then refused.
    let old = canopy::crypto::seal::MasterKey::from_base64(MASTER_KEY).unwrap();
    let (new, new_text) = canopy::crypto::seal::MasterKey::generate();
    let rotated = canopy::app::rotate_key(dir.path(), None, &old, &new)
        .await
        .unwrap();
    assert_eq!((rotated.integrations, rotated.secrets), (3, 3));
    let refused =
        canopy::app::App::open(std::sync::Arc::new(crate::harness::test_config(dir.path())))
            .await
            .err()
            .expect("the old key no longer opens the data");
    assert!(refused.to_string().contains("master key does not match"));
    let error = canopy::app::rotate_key(dir.path(), None, &old, &new)
        .await
        .err()
        .unwrap();
    assert!(error.to_string().contains("master key does not match"));

    let received_before = receiver.received_requests().await.unwrap().len();
    let restarted = Canopy::start_embedded(dir.path(), |c| {
        c.master_key = Some(canopy::crypto::secret::SecretValue::new(new_text));
        c.delivery.egress_override = vec![
            format!("a.klaviyo.com={}", receiver.uri()).parse().unwrap(),
            format!("api.omnisend.com={}", receiver.uri())
                .parse()
                .unwrap(),
        ];
    })
    .await;
    let (_, answer) = restarted.ingest(fresh("tier.changed")).await;
    for d in answer["deliveries"].as_array().unwrap() {
        restarted
            .delivery_with_status(d["id"].as_str().unwrap(), "succeeded")
            .await;
    }
    let requests = received(&receiver, received_before + 3).await;
    let sent_keys: Vec<String> = requests[received_before..]
        .iter()
        .filter_map(|r| {
            r.headers
                .get("authorization")
                .or_else(|| r.headers.get("x-api-key"))
                .map(|v| v.to_str().unwrap().to_owned())
        })
        .collect();
    assert!(
        sent_keys.iter().any(|k| k.ends_with(PLAIN_SECRETS[0])),
        "{sent_keys:?}"
    );
    assert!(
        sent_keys.iter().any(|k| k == PLAIN_SECRETS[1]),
        "{sent_keys:?}"
    );
    restarted.stop().await;
}
