//! The four bundled destinations through the real runtime: a golden file of the exact request
//! for every plugin and every event type (`host/tests/golden/<plugin>/<event>.json`; run with
//! `CANOPY_BLESS=1` to rewrite them, then review the diff by hand), plus direct checks of the
//! properties that matter, the skip and config paths, and response interpretation.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use canopy::runtime::{
    Plugin, PluginConfig, PluginRequest, PluginResponse, Refusal, Runtime, Scope, Segment,
    SignatureRequest, Verdict, bundled,
};
use canopy_events::EventKind;
use serde_json::{Value, json};

use crate::server_limits;

fn plugin(id: &str) -> Arc<Plugin> {
    let runtime = Runtime::new(server_limits()).unwrap();
    let bytes = bundled::component(id).unwrap_or_else(|| panic!("{id} is bundled"));
    Arc::new(runtime.load(bytes).unwrap())
}

fn config(settings: Value, secrets: &[&str]) -> PluginConfig {
    PluginConfig {
        settings,
        secrets_present: secrets.iter().map(|s| (*s).to_owned()).collect(),
    }
}

/// The configuration each golden file is produced with.
fn golden_config(id: &str) -> PluginConfig {
    match id {
        "klaviyo" => config(json!({}), &["api_key"]),
        "omnisend" => config(json!({}), &["api_key"]),
        "shopify-flow" => config(
            json!({"shop_domain": "green-shop.myshopify.com", "trigger_handle": "loyaltytree-event"}),
            &["access_token"],
        ),
        "webhook" => config(
            json!({
                "url": "https://hooks.example.com/loyalty/{{ customer.email }}?type={{ event }}",
                "headers": {"X-Source": "loyaltytree"},
                "auth": "bearer",
                "templates": {
                    "seeds.earned.order": "{\"email\": {{ customer.email }}, \"seeds\": {{ amount }}, \"order\": {{ order_number }}, \"name\": {{ event_name }}}",
                    "review.submitted": "{\"review\": {{ review_id }}, \"text\": {{ body }}, \"photos\": {{ photos }}, \"missing\": {{ no_such_field }}}"
                }
            }),
            &["token", "webhook_secret"],
        ),
        other => panic!("no golden config for {other}"),
    }
}

fn transform(
    plugin: &Plugin,
    event: &str,
    config: &PluginConfig,
) -> Result<Vec<PluginRequest>, Refusal> {
    plugin
        .transform(Scope::Fresh, event, config)
        .expect("the plugin call succeeds")
        .value
}

fn body(request: &PluginRequest) -> Value {
    serde_json::from_slice(&request.body).expect("the body is JSON")
}

fn header(request: &PluginRequest, name: &str) -> Option<String> {
    request
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.redacted_value())
}

fn golden_path(plugin: &str, event: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(plugin)
        .join(format!("{event}.json"))
}

#[test]
fn every_plugin_matches_its_golden_request_for_every_event_type() {
    let bless = std::env::var_os("CANOPY_BLESS").is_some();
    let mut mismatches = Vec::new();
    for id in ["klaviyo", "omnisend", "shopify-flow", "webhook"] {
        let plugin = plugin(id);
        let config = golden_config(id);
        assert!(
            plugin
                .validate_config(Scope::Fresh, &config)
                .unwrap()
                .value
                .is_empty(),
            "{id}: the golden config is valid"
        );
        for kind in EventKind::ALL {
            let requests = transform(&plugin, kind.sample_json(), &config)
                .unwrap_or_else(|r| panic!("{id} refused {kind}: {r:?}"));
            // The form `canopy plugin test` keeps and compares.
            let rendered = canopy::plugin_test::review(&Ok(requests));
            let path = golden_path(id, kind.key());
            if bless {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, &rendered).unwrap();
            } else {
                let expected = std::fs::read_to_string(&path).unwrap_or_default();
                if expected != rendered {
                    mismatches.push(format!("{}\n--- got ---\n{rendered}", path.display()));
                }
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} golden file(s) differ (CANOPY_BLESS=1 rewrites them; review the diff):\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

fn sample(kind: EventKind) -> Value {
    serde_json::from_str(kind.sample_json()).unwrap()
}

fn anonymous(kind: EventKind) -> String {
    let mut event = sample(kind);
    event["customer"] = json!({"first_name": "Anon"});
    event.to_string()
}

// ---- Klaviyo ------------------------------------------------------------------------------

#[test]
fn klaviyo_builds_json_api_events_with_a_numeric_value() {
    let klaviyo = plugin("klaviyo");
    let config = golden_config("klaviyo");
    for kind in EventKind::ALL {
        let request = &transform(&klaviyo, kind.sample_json(), &config).unwrap()[0];
        assert_eq!(request.url, "https://a.klaviyo.com/api/events");
        assert_eq!(
            header(request, "authorization").as_deref(),
            Some("Klaviyo-API-Key {{secret:api_key}}")
        );
        assert_eq!(header(request, "revision").as_deref(), Some("2026-07-15"));
        assert_eq!(
            header(request, "content-type").as_deref(),
            Some("application/vnd.api+json")
        );
        let body = body(request);
        let attributes = &body["data"]["attributes"];
        assert_eq!(body["data"]["type"], "event");
        assert_eq!(
            attributes["metric"]["data"]["attributes"]["name"],
            kind.display_name()
        );
        assert_eq!(
            attributes["profile"]["data"]["attributes"]["email"],
            "jane@example.com"
        );
        assert_eq!(
            attributes["profile"]["data"]["attributes"]["external_id"],
            "7891234567890"
        );
        assert_eq!(attributes["unique_id"], sample(*kind)["id"]);
        assert_eq!(attributes["time"], sample(*kind)["timestamp"]);
        assert_eq!(attributes["properties"]["event_type"], kind.key());
        let value = &attributes["value"];
        assert!(
            value.is_null() || value.is_number(),
            "{kind}: value {value} is a number"
        );
    }
    let value_of = |kind: EventKind| {
        let request = &transform(&klaviyo, kind.sample_json(), &config).unwrap()[0];
        let attributes = body(request)["data"]["attributes"].clone();
        (
            attributes["value"].clone(),
            attributes["value_currency"].clone(),
        )
    };
    assert_eq!(
        value_of(EventKind::SeedsEarnedOrder),
        (json!(50), Value::Null)
    );
    assert_eq!(
        value_of(EventKind::ReviewApproved),
        (json!(25), Value::Null)
    );
    assert_eq!(
        value_of(EventKind::EcoProductAwarded),
        (json!(300), Value::Null)
    );
    assert_eq!(
        value_of(EventKind::GiftCardEarned),
        (json!(10.0), json!("USD"))
    );
    assert_eq!(
        value_of(EventKind::StoreCreditClaimed),
        (json!(5.0), json!("EUR"))
    );
    assert_eq!(value_of(EventKind::TierChanged), (Value::Null, Value::Null));

    let revision = config_with(json!({"revision": "2026-10-15"}), &["api_key"]);
    let request = &transform(&klaviyo, EventKind::TierChanged.sample_json(), &revision).unwrap()[0];
    assert_eq!(header(request, "revision").as_deref(), Some("2026-10-15"));
}

fn config_with(settings: Value, secrets: &[&str]) -> PluginConfig {
    config(settings, secrets)
}

#[test]
fn klaviyo_and_omnisend_skip_customers_without_email() {
    for (id, reason) in [
        ("klaviyo", "Klaviyo requires a customer email"),
        ("omnisend", "Omnisend requires a customer email"),
    ] {
        let plugin = plugin(id);
        let refused = transform(
            &plugin,
            &anonymous(EventKind::SeedsEarnedOrder),
            &golden_config(id),
        );
        assert_eq!(refused, Err(Refusal::Skip(reason.into())), "{id}");
    }
}

#[test]
fn klaviyo_validate_config_messages() {
    let klaviyo = plugin("klaviyo");
    let errors = |settings: Value, secrets: &[&str]| {
        klaviyo
            .validate_config(Scope::Fresh, &config(settings, secrets))
            .unwrap()
            .value
            .into_iter()
            .map(|e| (e.field, e.message))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        errors(json!({}), &[]),
        [(
            "api_key".to_owned(),
            "Private API key is required".to_owned()
        )]
    );
    assert_eq!(
        errors(json!({"revision": "latest"}), &["api_key"]),
        [(
            "revision".to_owned(),
            "API revision `latest` must be a date like 2026-07-15".to_owned()
        )]
    );
    assert!(errors(json!({"revision": "2026-07-15"}), &["api_key"]).is_empty());
}

fn response(status: u16, headers: &[(&str, &str)], body: Value) -> PluginResponse {
    PluginResponse {
        status,
        headers: headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect(),
        body: if body.is_null() {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        },
    }
}

fn verdict(plugin: &Plugin, response: PluginResponse) -> Verdict {
    plugin.interpret(Scope::Fresh, &response).unwrap().value
}

fn retry(after: Option<u64>, reason: &str) -> Verdict {
    Verdict::Retry {
        after: after.map(Duration::from_secs),
        reason: reason.into(),
    }
}

fn failed(reason: &str) -> Verdict {
    Verdict::Failed {
        reason: reason.into(),
    }
}

#[test]
fn klaviyo_interprets_its_responses() {
    let k = plugin("klaviyo");
    assert_eq!(
        verdict(&k, response(202, &[], Value::Null)),
        Verdict::Delivered
    );
    assert_eq!(
        verdict(
            &k,
            response(
                429,
                &[("Retry-After", "12")],
                json!({"errors":[{"detail":"Request was throttled."}]})
            )
        ),
        retry(Some(12), "Klaviyo answered HTTP 429")
    );
    assert_eq!(
        verdict(&k, response(429, &[], Value::Null)),
        retry(None, "Klaviyo answered HTTP 429")
    );
    assert_eq!(
        verdict(&k, response(503, &[], Value::Null)),
        retry(None, "Klaviyo answered HTTP 503")
    );
    assert_eq!(
        verdict(
            &k,
            response(
                401,
                &[],
                json!({"errors":[{"detail":"Incorrect authentication credentials."}]})
            )
        ),
        failed("invalid Klaviyo API key")
    );
    assert_eq!(
        verdict(&k, response(403, &[], Value::Null)),
        failed("invalid Klaviyo API key")
    );
    assert_eq!(
        verdict(
            &k,
            response(
                400,
                &[],
                json!({"errors":[{"id":"1","status":400,"code":"invalid","title":"Invalid input.","detail":"The email address is invalid.","source":{"pointer":"/data/attributes/profile/data/attributes/email"}}]})
            )
        ),
        failed("Klaviyo rejected the event (HTTP 400): The email address is invalid.")
    );
}

// ---- Omnisend -----------------------------------------------------------------------------

#[test]
fn omnisend_builds_v5_and_versioned_requests() {
    let omnisend = plugin("omnisend");
    let event = EventKind::SeedsEarnedOrder.sample_json();
    let v5 = &transform(&omnisend, event, &golden_config("omnisend")).unwrap()[0];
    assert_eq!(v5.url, "https://api.omnisend.com/v5/events");
    assert_eq!(
        header(v5, "x-api-key").as_deref(),
        Some("{{secret:api_key}}")
    );
    let b = body(v5);
    assert_eq!(b["eventName"], "Seeds Earned Order");
    assert_eq!(b["origin"], "api");
    assert_eq!(b["eventID"], sample(EventKind::SeedsEarnedOrder)["id"]);
    assert_eq!(b["eventTime"], "2026-02-06T14:30:00.000Z");
    assert_eq!(
        b["contact"],
        json!({"email":"jane@example.com","firstName":"Jane","lastName":"Smith"})
    );
    assert_eq!(b["properties"]["order_total"], "89.99");
    assert_eq!(b["properties"]["event_type"], "seeds.earned.order");
    assert_eq!(b["properties"]["shopify_customer_id"], "7891234567890");

    let versioned = config(json!({"api": "versioned"}), &["api_key"]);
    let request = &transform(&omnisend, event, &versioned).unwrap()[0];
    assert_eq!(request.url, "https://api.omnisend.com/api/events");
    assert_eq!(
        header(request, "authorization").as_deref(),
        Some("Omnisend-API-Key {{secret:api_key}}")
    );
    assert_eq!(
        header(request, "omnisend-version").as_deref(),
        Some("2026-03-15")
    );
    assert_eq!(header(request, "x-api-key"), None);
    assert_eq!(body(request), b, "same body on both APIs");

    let info = omnisend.info();
    assert_eq!(
        info.rate_limit.map(|r| (r.requests, r.per_seconds)),
        Some((400, 60))
    );
}

#[test]
fn omnisend_validate_and_interpret() {
    let o = plugin("omnisend");
    let errors: Vec<_> = o
        .validate_config(Scope::Fresh, &config(json!({"api": "v4"}), &[]))
        .unwrap()
        .value
        .into_iter()
        .map(|e| e.message)
        .collect();
    assert_eq!(
        errors,
        [
            "API key is required",
            "API must be `v5` or `versioned`, not `v4`"
        ]
    );

    assert_eq!(
        verdict(&o, response(202, &[], Value::Null)),
        Verdict::Delivered
    );
    assert_eq!(
        verdict(&o, response(429, &[("retry-after", "30")], Value::Null)),
        retry(
            Some(30),
            "Omnisend rate limit reached (400 requests per minute)"
        )
    );
    assert_eq!(
        verdict(&o, response(429, &[], Value::Null)),
        retry(
            None,
            "Omnisend rate limit reached (400 requests per minute)"
        )
    );
    assert_eq!(
        verdict(&o, response(500, &[], Value::Null)),
        retry(None, "Omnisend answered HTTP 500")
    );
    assert_eq!(
        verdict(&o, response(401, &[], Value::Null)),
        failed("invalid Omnisend API key")
    );
    assert_eq!(
        verdict(
            &o,
            response(
                400,
                &[],
                json!({"type":"about:blank","title":"Bad Request","status":400,"detail":"contact.email: invalid email format"})
            )
        ),
        failed("Omnisend rejected the event (HTTP 400): contact.email: invalid email format")
    );
}

// ---- Shopify Flow -------------------------------------------------------------------------

#[test]
fn shopify_flow_sends_readable_keys_and_the_customer_reference() {
    let flow = plugin("shopify-flow");
    let config = golden_config("shopify-flow");
    let request =
        &transform(&flow, EventKind::SeedsEarnedReview.sample_json(), &config).unwrap()[0];
    assert_eq!(
        request.url,
        "https://green-shop.myshopify.com/admin/api/2026-04/graphql.json"
    );
    assert_eq!(
        header(request, "x-shopify-access-token").as_deref(),
        Some("{{secret:access_token}}")
    );
    let b = body(request);
    assert!(
        b["query"]
            .as_str()
            .unwrap()
            .starts_with("mutation flowTriggerReceive($handle: String, $payload: JSON)")
    );
    assert_eq!(b["variables"]["handle"], "loyaltytree-event");
    let payload = &b["variables"]["payload"];
    assert_eq!(payload["Customer email"], "jane@example.com");
    assert_eq!(payload["Customer first name"], "Jane");
    assert_eq!(payload["Customer name"], "Jane Smith");
    assert_eq!(payload["Event type"], "seeds.earned.review");
    assert_eq!(payload["Event name"], "Seeds Earned Review");
    assert_eq!(payload["Amount"], 25);
    assert_eq!(payload["Product title"], "Bamboo Toothbrush Set");
    assert_eq!(payload["Product ID"], "8234567890123");
    assert_eq!(payload["Has photos"], true);
    assert_eq!(payload["customer_id"], 7891234567890u64);
    for key in payload.as_object().unwrap().keys() {
        assert!(
            !key.contains('_') || key == "customer_id",
            "readable key: {key}"
        );
    }

    let review = &transform(&flow, EventKind::ReviewSubmitted.sample_json(), &config).unwrap()[0];
    let payload = &body(review)["variables"]["payload"];
    assert_eq!(
        payload["Photos"],
        "https://cdn.example.com/reviews/rev_01J8Z3K4/1.jpg, https://cdn.example.com/reviews/rev_01J8Z3K4/2.jpg"
    );
    let referral =
        &transform(&flow, EventKind::ReferralSuccessful.sample_json(), &config).unwrap()[0];
    assert_eq!(
        body(referral)["variables"]["payload"]["Referred customer email"],
        "sam@example.com"
    );

    let mut huge = sample(EventKind::ReviewSubmitted);
    huge["body"] = json!("x".repeat(1_100_000));
    let refused = transform(&flow, &huge.to_string(), &config).unwrap_err();
    let Refusal::InvalidEvent(reason) = refused else {
        panic!("{refused:?}")
    };
    assert!(
        reason.contains("Flow accepts payloads under 1 MB"),
        "{reason}"
    );
}

#[test]
fn shopify_flow_validate_config_messages() {
    let flow = plugin("shopify-flow");
    let messages = |settings: Value, secrets: &[&str]| -> Vec<String> {
        flow.validate_config(Scope::Fresh, &config(settings, secrets))
            .unwrap()
            .value
            .into_iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect()
    };
    assert_eq!(
        messages(json!({}), &[]),
        [
            "shop_domain: Shop domain is required",
            "trigger_handle: Flow trigger handle is required",
            "access_token: Admin API access token is required"
        ]
    );
    assert_eq!(
        messages(
            json!({"shop_domain": "green-shop.com", "trigger_handle": "my handle", "api_version": "April"}),
            &["access_token"]
        ),
        [
            "shop_domain: Shop domain must look like your-store.myshopify.com, not `green-shop.com`",
            "api_version: Admin API version must look like 2026-04, not `April`",
            "trigger_handle: Flow trigger handle cannot contain spaces"
        ]
    );
}

#[test]
fn shopify_flow_reads_graphql_answers() {
    let f = plugin("shopify-flow");
    let ok = json!({"data":{"flowTriggerReceive":{"userErrors":[]}},"extensions":{"cost":{"requestedQueryCost":10}}});
    assert_eq!(verdict(&f, response(200, &[], ok)), Verdict::Delivered);
    let user_errors = json!({"data":{"flowTriggerReceive":{"userErrors":[{"field":["body"],"message":"Errors validating schema:\n  Invalid handle 'loyaltytree-evnt'.\n"}]}}});
    assert_eq!(
        verdict(&f, response(200, &[], user_errors)),
        failed(
            "Shopify Flow refused the trigger: body: Errors validating schema:\n  Invalid handle 'loyaltytree-evnt'.\n"
        )
    );
    let throttled = json!({"errors":[{"message":"Throttled","extensions":{"code":"THROTTLED","documentation":"https://shopify.dev/api/usage/rate-limits"}}],
        "extensions":{"cost":{"requestedQueryCost":10,"actualQueryCost":null,"throttleStatus":{"maximumAvailable":2000.0,"currentlyAvailable":0,"restoreRate":100.0}}}});
    assert_eq!(
        verdict(&f, response(200, &[], throttled)),
        retry(Some(1), "Shopify throttled the request (THROTTLED)")
    );
    let access = json!({"errors":[{"message":"Access denied for flowTriggerReceive field.","extensions":{"code":"ACCESS_DENIED"}}]});
    assert_eq!(
        verdict(&f, response(200, &[], access)),
        failed("Shopify GraphQL errors: Access denied for flowTriggerReceive field.")
    );
    assert_eq!(
        verdict(
            &f,
            response(
                401,
                &[],
                json!({"errors":"[API] Invalid API key or access token (unrecognized login or wrong password)"})
            )
        ),
        failed("invalid Shopify access token")
    );
    assert_eq!(
        verdict(&f, response(429, &[("Retry-After", "2.0")], Value::Null)),
        retry(None, "Shopify answered HTTP 429")
    );
    assert_eq!(
        verdict(&f, response(502, &[], Value::Null)),
        retry(None, "Shopify answered HTTP 502")
    );
    assert_eq!(
        verdict(&f, response(402, &[], json!({"errors":"Unavailable Shop"}))),
        failed("Shopify rejected the event (HTTP 402): Unavailable Shop")
    );
}

// ---- Generic webhook ----------------------------------------------------------------------

#[test]
fn webhook_sends_default_headers_signatures_and_encoded_url_variables() {
    let hook = plugin("webhook");
    let config = golden_config("webhook");
    let mut event = sample(EventKind::TierChanged);
    event["customer"]["email"] = json!("jane+vip@example.com");
    let request = &transform(&hook, &event.to_string(), &config).unwrap()[0];
    assert_eq!(
        request.url,
        "https://hooks.example.com/loyalty/jane%2Bvip%40example.com?type=tier.changed"
    );
    assert_eq!(
        header(request, "content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(
        header(request, "user-agent").as_deref(),
        Some("LoyaltyTree/1.0")
    );
    assert_eq!(
        header(request, "x-loyaltytree-event").as_deref(),
        Some("tier.changed")
    );
    assert_eq!(
        header(request, "x-loyaltytree-timestamp"),
        event["timestamp"].as_str().map(str::to_owned)
    );
    assert_eq!(header(request, "x-source").as_deref(), Some("loyaltytree"));
    assert_eq!(
        header(request, "authorization").as_deref(),
        Some("Bearer {{secret:token}}")
    );
    assert_eq!(
        request.signatures,
        [
            SignatureRequest::HmacSha256Hex {
                header: "X-LoyaltyTree-Signature".into(),
                secret: "webhook_secret".into()
            },
            SignatureRequest::StandardWebhooks {
                secret: "webhook_secret".into()
            },
        ]
    );
    // No template for tier.changed: the body is the canonical event, fields in their order.
    assert_eq!(
        String::from_utf8(request.body.clone()).unwrap(),
        event.to_string()
    );

    // Without a webhook secret nothing is signed; other auth methods.
    for (auth, extra, name, value) in [
        ("x-token", json!({}), "X-Token", "{{secret:token}}"),
        (
            "custom-header",
            json!({"auth_header": "X-Loyalty-Secret"}),
            "X-Loyalty-Secret",
            "{{secret:token}}",
        ),
    ] {
        let mut settings =
            json!({"url": "https://hooks.example.com/in", "auth": auth, "method": "PUT"});
        settings
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let request = &transform(
            &hook,
            EventKind::TierChanged.sample_json(),
            &config_with(settings, &["token"]),
        )
        .unwrap()[0];
        assert_eq!(header(request, name).as_deref(), Some(value), "{auth}");
        assert!(request.signatures.is_empty());
        assert_eq!(request.method.as_str(), "PUT");
        assert!(request.headers.iter().all(|h| {
            h.value
                .iter()
                .all(|s| !matches!(s, Segment::Secret(n) if n == "webhook_secret"))
        }));
    }

    // A URL without template syntax is sent as written (it skips rendering); one with a
    // comment is still rendered; a line break or carriage return at the end of the setting
    // is trimmed when it is read, either way.
    for (url, sent) in [
        (
            "https://hooks.example.com/in/a%20b?x={y}&z=1",
            "https://hooks.example.com/in/a%20b?x={y}&z=1",
        ),
        (
            "https://hooks.example.com/in{# note #}/x",
            "https://hooks.example.com/in/x",
        ),
        (
            "https://hooks.example.com/in\n",
            "https://hooks.example.com/in",
        ),
        (
            "https://hooks.example.com/in\r",
            "https://hooks.example.com/in",
        ),
    ] {
        let request = &transform(
            &hook,
            EventKind::TierChanged.sample_json(),
            &config_with(json!({ "url": url }), &[]),
        )
        .unwrap()[0];
        assert_eq!(request.url, sent, "{url:?}");
    }
}

#[test]
fn webhook_templates_render_json_escaped_values() {
    let hook = plugin("webhook");
    let config = golden_config("webhook");
    let request = &transform(&hook, EventKind::ReviewSubmitted.sample_json(), &config).unwrap()[0];
    assert_eq!(
        body(request),
        json!({
            "review": "rev_01J8Z3K4",
            "text": "Soft bristles, \"plastic-free\" packaging.\nWould buy again.",
            "photos": ["https://cdn.example.com/reviews/rev_01J8Z3K4/1.jpg", "https://cdn.example.com/reviews/rev_01J8Z3K4/2.jpg"],
            "missing": null
        })
    );
    let order = &transform(&hook, EventKind::SeedsEarnedOrder.sample_json(), &config).unwrap()[0];
    assert_eq!(
        body(order),
        json!({"email": "jane@example.com", "seeds": 50, "order": "1042", "name": "Seeds Earned Order"})
    );
}

#[test]
fn webhook_validate_config_messages() {
    let hook = plugin("webhook");
    let messages = |settings: Value, secrets: &[&str]| -> Vec<String> {
        hook.validate_config(Scope::Fresh, &config(settings, secrets))
            .unwrap()
            .value
            .into_iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect()
    };
    assert_eq!(messages(json!({}), &[]), ["url: Webhook URL is required"]);
    assert_eq!(
        messages(json!({"url": "ftp://x.test"}), &[]),
        ["url: Webhook URL must start with https:// or http://"]
    );
    assert_eq!(
        messages(
            json!({"url": "https://{{ customer.email }}.example.com/"}),
            &[]
        ),
        [
            "url: Webhook URL must name its host without variables (variables may follow in the path or query)"
        ]
    );
    assert_eq!(
        messages(
            json!({"url": "https://x.test", "templates": {"seeds.lost": "{}"}}),
            &[]
        )
        .len(),
        1
    );
    assert!(
        messages(json!({"url": "https://x.test", "templates": {"seeds.lost": "{}"}}), &[])[0]
            .starts_with("templates: body templates: unknown event type `seeds.lost`; valid types are: seeds.earned.order, ")
    );
    assert_eq!(
        messages(
            json!({"url": "https://x.test", "templates": {"tier.changed": "{\n  \"tier\": {{ new_tier }\n}"}}),
            &[]
        ),
        [
            "templates: the template for `tier.changed` has an error at line 2, column 23: unexpected `}`, expected end of variable block"
        ]
    );
    let not_json = messages(
        json!({"url": "https://x.test", "templates": {"tier.changed": "tier={{ new_tier }}"}}),
        &[],
    );
    assert_eq!(not_json.len(), 1);
    assert!(
        not_json[0]
            .starts_with("templates: the template for `tier.changed` does not produce valid JSON"),
        "{not_json:?}"
    );
    assert_eq!(
        messages(
            json!({"url": "https://x.test", "auth": "bearer", "method": "GET"}),
            &[]
        ),
        [
            "method: HTTP method must be one of POST, PUT, PATCH, not `GET`",
            "token: Token is required for bearer authentication"
        ]
    );
    assert_eq!(
        messages(
            json!({"url": "https://x.test", "auth": "hmac", "headers": {"bad header": "x"}}),
            &[]
        ),
        [
            "headers: `bad header` is not a valid header name",
            "webhook_secret: HMAC signature authentication needs a webhook secret"
        ]
    );
    assert_eq!(
        messages(
            json!({"url": "https://x.test", "auth": "custom-header"}),
            &["token"]
        ),
        ["auth_header: Custom auth header name is required for custom-header authentication"]
    );
}

#[test]
fn webhook_interprets_generic_responses() {
    let w = plugin("webhook");
    assert_eq!(
        verdict(&w, response(200, &[], Value::Null)),
        Verdict::Delivered
    );
    assert_eq!(
        verdict(&w, response(204, &[], Value::Null)),
        Verdict::Delivered
    );
    assert_eq!(
        verdict(&w, response(429, &[("retry-after", "60")], Value::Null)),
        retry(Some(60), "HTTP 429")
    );
    assert_eq!(
        verdict(&w, response(500, &[], Value::Null)),
        retry(None, "HTTP 500")
    );
    assert_eq!(
        verdict(&w, response(401, &[], Value::Null)),
        failed("the endpoint refused the request (HTTP 401): invalid token or signature")
    );
    assert_eq!(
        verdict(&w, response(422, &[], json!({"error": "unknown customer"}))),
        failed(r#"HTTP 422: {"error":"unknown customer"}"#)
    );
}

#[test]
fn bundled_plugins_describe_themselves() {
    let expected = [
        ("klaviyo", "Klaviyo", vec!["a.klaviyo.com"]),
        ("omnisend", "Omnisend", vec!["api.omnisend.com"]),
        ("shopify-flow", "Shopify Flow", vec!["*.myshopify.com"]),
        ("webhook", "Generic webhook", vec!["settings:url"]),
    ];
    for (id, name, hosts) in expected {
        let plugin = plugin(id);
        let info = plugin.info();
        assert_eq!((info.id.as_str(), info.name.as_str()), (id, name));
        assert_eq!(info.events, ["*"], "{id} takes all 19 event types");
        assert_eq!(info.allowed_hosts, hosts);
        assert!(info.settings.iter().any(|s| s.secret), "{id} has a secret");
        assert!(
            plugin.size() < 1 << 20,
            "{id} is {} bytes, over 1 MB",
            plugin.size()
        );
    }
}
